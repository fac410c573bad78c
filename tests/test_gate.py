"""The silence gate skips what carries no change and wakes for everything that does."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edge.config.models import GateConfig
from edge.gate import SilenceGate, WarmLight
from tests.conftest import DATA, needs_shared

rng = np.random.default_rng(7)


def scene(h: int = 720, w: int = 1280) -> np.ndarray:
    base = np.zeros((h, w, 3), np.uint8)
    cv2.rectangle(base, (100, 100), (500, 600), (90, 120, 150), -1)
    cv2.circle(base, (900, 300), 150, (200, 180, 60), -1)
    return cv2.GaussianBlur(base, (0, 0), 5)


def noisy(img: np.ndarray, sigma: float = 4.0) -> np.ndarray:
    return np.clip(img.astype(np.int16) + rng.normal(0, sigma, img.shape).astype(np.int16), 0, 255).astype(
        np.uint8
    )


def test_still_scene_with_sensor_noise_is_skipped_but_refreshed() -> None:
    gate = SilenceGate(GateConfig(refresh_s=2.0))
    img = scene()
    reasons = [gate.check(noisy(img), i / 10).reason for i in range(100)]  # 10 s at 10 fps
    assert reasons[0] == "first"
    assert reasons.count("motion") == 0
    assert reasons.count("refresh") == 4  # at 2, 4, 6, 8 s (and never more often)
    assert gate.stats.skipped == 95


def test_gradual_light_change_is_not_motion() -> None:
    gate = SilenceGate(GateConfig(refresh_s=1000))
    img = scene().astype(np.int16)
    woke = [gate.check(np.clip(img + i, 0, 255).astype(np.uint8), i / 10).reason for i in range(60)]
    assert woke.count("motion") == 0


def test_moving_object_wakes_every_frame() -> None:
    gate = SilenceGate(GateConfig(refresh_s=1000))
    img = scene()
    gate.check(img, 0.0)
    woke = []
    for i in range(1, 20):
        frame = img.copy()
        cv2.rectangle(frame, (600 + 20 * i, 400), (680 + 20 * i, 600), (30, 30, 230), -1)
        woke.append(gate.check(frame, i / 10).reason)
    assert woke == ["motion"] * 19


def warm_room() -> np.ndarray:
    """A dim room with a warm lamp-lit wall and an orange sign."""
    img = np.full((450, 800, 3), (60, 80, 110), np.uint8)
    img[50:200, 100:400] = (90, 130, 170)
    cv2.rectangle(img, (500, 300), (560, 340), (40, 120, 150), -1)
    return img


def test_warm_light_sees_a_small_new_light_but_not_a_flash() -> None:
    """A flash (the whole picture brighter at once) makes every warm surface new and brighter: that is
    the lighting changing, not a flame, so no warm light is reported; a small new light is."""
    light = WarmLight(0.1, always_judge_light=True)
    room = warm_room()
    for _ in range(5):
        assert not light.update(room).any()
    flash = np.clip(room.astype(np.float32) * 1.5, 0, 255).astype(np.uint8)
    assert not light.update(flash).any() and light.relit
    assert not light.update(room).any() and light.relit  # and back
    for _ in range(3):
        light.update(room)
    flame = room.copy()
    cv2.circle(flame, (300, 380), 6, (80, 200, 255), -1)
    assert light.update(flame).any() and not light.relit


def test_active_event_and_request_wake_a_still_scene() -> None:
    gate = SilenceGate(GateConfig(refresh_s=1000, event_refresh_s=0.5))
    img = scene()
    gate.check(img, 0.0)
    assert gate.check(img, 0.1).wake is False
    # While an event is open a still scene is looked at every event_refresh_s, not every frame.
    woke = [gate.check(img, 0.1 * i, event_active=True).reason for i in range(2, 22)]
    assert woke.count("event") == 4 and woke.count("still") == 16
    assert gate.check(img, 2.25, requested=True).reason == "request"
    assert gate.stats.woke["request"] == 1


def test_disabled_gate_wakes_every_frame() -> None:
    gate = SilenceGate(GateConfig(enabled=False))
    img = scene()
    assert all(gate.check(img, i / 10).wake for i in range(10))


@needs_shared
def test_people_clip_empty_stretches_mostly_skipped_and_every_visit_wakes(ground_truth: dict) -> None:
    visits = [(61, 194), (228, 445), (506, 694), (745, 865), (925, 1196), (1235, 1358)]
    cap = cv2.VideoCapture(str(DATA / "people" / "intel_one-by-one-person-detection.mp4"))
    fps = cap.get(cv2.CAP_PROP_FPS)
    gate = SilenceGate(GateConfig())
    empty = skipped_empty = 0
    woke_at: list[int] = []
    index = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        decision = gate.check(frame, index / fps)
        if decision.wake:
            woke_at.append(index)
        if not any(a - 10 <= index <= b + 10 for a, b in visits):
            empty += 1
            skipped_empty += not decision.wake
        index += 1
    assert index == ground_truth["people/intel_one-by-one-person-detection.mp4"]["frames"]
    assert skipped_empty / empty >= 0.8
    for start, _ in visits:  # the gate is awake within a few frames of each arrival
        assert any(start - 10 <= i <= start + 5 for i in woke_at), start


@pytest.mark.parametrize("shape", [(720, 1280), (240, 426), (50, 60)])
def test_any_frame_size_and_a_size_change(shape: tuple[int, int]) -> None:
    gate = SilenceGate(GateConfig())
    assert gate.check(scene(*shape), 0.0).reason == "first"
    assert gate.check(scene(300, 300), 0.1).reason == "first"  # camera changed resolution

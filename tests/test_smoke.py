"""Smoke detector on the real shared media: plumes are found, people, cars, stills and look-alikes never.

Media come from ``../shared/data`` next to the repository (never copied into it); the tests skip with a
reason when that folder is missing. Each clip is decoded once per module. The smoke mosaics are 8x8
grids of separate 180x180 plume clips: each tile is fed to its own detector at its native size.
Tuning used the tiles with (row + col) even of the "detected" mosaic; the recall floor here is checked
on the other half only.
"""

from __future__ import annotations

import functools
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.config.models import SmokeConfig
from edge.reflex.smoke import SmokeDetector
from edge.types import Detection

SHARED = Path(__file__).resolve().parents[2] / "shared"
DATA = SHARED / "data"
pytestmark = pytest.mark.skipif(
    not DATA.is_dir(), reason=f"shared test media not found at {DATA} (expected ../shared next to the repo)"
)

DETECTED = "smoke/rise_smoke_mosaic_detected.mp4"
MISSED = "smoke/rise_smoke_mosaic_missed.mp4"
TILE = 180
CHECK_TILE_RECALL = 0.4
"""Measured 0.56 (18 of 32 check tiles report smoke within the 3 s clip); the floor leaves a margin."""
NO_SMOKE_CLIPS = (
    "non_fire_lookalike/intel_worker-zone-detection.gif",
    "non_fire_lookalike/intel_car-detection.mp4",
    "non_fire_lookalike/intel_fruit-and-vegetable-detection.gif",
    "people/intel_one-by-one-person-detection.mp4",
    "people/intel_store-aisle-detection.gif",
    "people/intel_person-bicycle-car-detection.gif",
)
STRIDES = (1, 2)
STILLS = (
    "non_fire_lookalike/sunset_udaipur.jpg",
    "non_fire_lookalike/street_market_hong_kong.jpg",
    "images/coffee.png",
    "images/chelsea.png",
    "images/astronaut.png",
)
STILL_FPS = 15.0
STILL_CALLS = 45


@functools.cache
def clip(name: str) -> tuple[tuple[np.ndarray, ...], float]:
    """All frames of a clip (decoded once per test session) and its frame rate."""
    cap = cv2.VideoCapture(str(DATA / name))
    fps = cap.get(cv2.CAP_PROP_FPS)
    assert cap.isOpened() and fps > 0, f"OpenCV cannot read {name}"
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    assert frames, f"no frames decoded from {name}"
    return tuple(frames), fps


def feed(frames: list[np.ndarray], fps: float, stride: int = 1) -> list[tuple[float, list[Detection]]]:
    """A fresh detector's (pts, detections) for every ``stride``-th frame."""
    det = SmokeDetector(SmokeConfig())
    return [(i / fps, det.detect(frames[i], i / fps)) for i in range(0, len(frames), stride)]


def tile(frames: tuple[np.ndarray, ...], r: int, c: int) -> list[np.ndarray]:
    return [np.ascontiguousarray(f[TILE * r : TILE * (r + 1), TILE * c : TILE * (c + 1)]) for f in frames]


def test_check_tiles_of_the_detected_mosaic_report_smoke() -> None:
    frames, fps = clip(DETECTED)
    check = [(r, c) for r in range(8) for c in range(8) if (r + c) % 2]
    found = [rc for rc in check if any(d for _, d in feed(tile(frames, *rc), fps))]
    recall = len(found) / len(check)
    assert recall >= CHECK_TILE_RECALL, f"check-tile recall {recall:.2f}: {found}"


def test_detections_are_well_formed_and_regions_match() -> None:
    frames, fps = clip(DETECTED)
    cfg = SmokeConfig()
    det = SmokeDetector(cfg)
    seen = 0
    for i, frame in enumerate(tile(frames, 3, 0)):
        found = det.detect(frame, i / fps)
        assert det.regions() == [d.box for d in found]
        for d in found:
            seen += 1
            assert (d.label, d.detector) == ("smoke", "smoke")
            assert cfg.min_score <= d.score <= 1.0
            assert 0 < d.extra["area"] <= 1
            x1, y1, x2, y2 = d.box
            assert 0 <= x1 < x2 <= TILE and 0 <= y1 < y2 <= TILE, d.box
    assert seen, "the plume of tile (3, 0) is smoke"


@pytest.mark.parametrize("name", (DETECTED, MISSED))
def test_whole_mosaic_reports_smoke_within_1_5_s(name: str) -> None:
    """All 64 plumes at once in one 1440x1440 stream (analysed at 480 px, 60 px a tile).
    Measured: first smoke at 0.75 s (detected mosaic) and 0.5 s (missed mosaic)."""
    frames, fps = clip(name)
    hits = [pts for pts, found in feed(list(frames), fps) if found]
    assert hits and hits[0] <= 1.5, hits[:3]


@pytest.mark.parametrize("name", NO_SMOKE_CLIPS)
def test_no_smoke_in_people_car_and_lookalike_clips(name: str) -> None:
    frames, fps = clip(name)
    for stride in STRIDES:
        fired = [
            (round(pts, 2), [d.box for d in found]) for pts, found in feed(list(frames), fps, stride) if found
        ]
        assert not fired, f"{name}, every {stride} frame(s): smoke at {fired[:5]}"


def still_variants(image: np.ndarray) -> list[tuple[str, list[np.ndarray]]]:
    """A still as a camera might deliver it: repeated, noisy, panned 1 px a frame, drifting by a fifth
    of a pixel a frame (clouds in a still sky), and brightening (exposure ramp)."""
    rng = np.random.default_rng(7)
    h, w = image.shape[:2]
    n = STILL_CALLS
    noisy = [np.clip(image + rng.normal(0, 4.0, image.shape), 0, 255).astype(np.uint8) for _ in range(n)]
    panned = [np.ascontiguousarray(image[:, i : w - n + i]) for i in range(n)]
    drift = [
        cv2.warpAffine(
            image, np.float32([[1, 0, -0.2 * i], [0, 1, -0.05 * i]]), (w, h), borderMode=cv2.BORDER_REFLECT
        )
        for i in range(n)
    ]
    brighter = [cv2.convertScaleAbs(image, alpha=1.0 + 0.5 * i / n) for i in range(n)]
    return [
        ("repeated", [image] * n),
        ("noisy", noisy),
        ("panned", panned),
        ("drift", drift),
        ("exposure", brighter),
    ]


@pytest.mark.parametrize("still", STILLS)
def test_still_images_never_smoke(still: str) -> None:
    image = cv2.imread(str(DATA / still))
    assert image is not None, f"cannot read {still}"
    for kind, frames in still_variants(image):
        det = SmokeDetector(SmokeConfig())
        fired = [i for i, frame in enumerate(frames) if det.detect(frame, i / STILL_FPS)]
        assert not fired, f"{still} {kind}: smoke at calls {fired}"


def test_one_call_never_detects_whatever_min_score() -> None:
    frames, _ = clip(DETECTED)
    assert SmokeDetector(SmokeConfig(min_score=0.01)).detect(tile(frames, 3, 0)[0], 0.0) == []


def test_damaged_frames_are_ignored() -> None:
    """A damaged frame reports nothing and changes no evidence; smoke is back soon after."""
    frames, fps = clip(DETECTED)
    plume = tile(frames, 3, 0)
    det = SmokeDetector(SmokeConfig())
    first = next((i for i, frame in enumerate(plume[:24]) if det.detect(frame, i / fps)), None)
    assert first is not None, "tile (3, 0) should report smoke by 2 s"
    assert det.regions(), "regions() gives where smoke is seen now"
    peak = det.peak_evidence
    smear = plume[first + 1].copy()
    smear[60:100] = np.random.default_rng(3).integers(0, 256, smear[60:100].shape, dtype=np.uint8)
    assert det.detect(smear, (first + 1) / fps, damaged=True) == []
    assert det.peak_evidence == pytest.approx(peak)
    assert det.regions() == []


def test_disabled_and_bad_input() -> None:
    frames, _ = clip(DETECTED)
    assert SmokeDetector(SmokeConfig(enabled=False)).detect(frames[0], 0.0) == []
    det = SmokeDetector(SmokeConfig())
    with pytest.raises(ValueError, match="BGR uint8"):
        det.detect(np.zeros((120, 160), np.uint8), 0.0)

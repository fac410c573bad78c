"""Two phases for fire and smoke: provisional at once, then confirmed or retracted by the device.

The red loop runs over the real house6 fire clip (../shared/data) with the real pixel fire detector,
into a real event log through the journal. The blue-loop side is the stand-in delegate of
tests/test_verify.py driving the real Verifier; the binary sensor's retained state is the real
RetainedState on a bus stand-in that records what would be published.
"""

from __future__ import annotations

import io
import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.bus.discovery import discovery_messages
from edge.bus.state import RetainedState
from edge.config import EdgeConfig
from edge.config.models import EventsConfig, FireConfig, RuleConfig
from edge.delegate import FinishedJob
from edge.instructions import parse
from edge.journal import Journal
from edge.outbox import OFF, ON, Topics
from edge.redloop import RedLoop
from edge.rules import Rule, Transition, default_rules
from edge.rules.events import CONFIRM_AFTER_S, CONFIRM_WITHIN_S
from edge.scan import JsonLines
from edge.store import EventLog
from edge.store.models import push_channel
from edge.types import AlertRecord, EventRecord, Frame
from edge.verify import CONFIRMED_SUFFIX, DID_NOT_HOLD_SUFFIX, NOT_VERIFIED_SUFFIX, RETRACTED_SUFFIX, Verifier
from tests.conftest import DATA
from tests.support import wait_until
from tests.test_instructions import CTX
from tests.test_verify import StandInDelegate

pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason=f"shared test media not found at {DATA}")

HOUSE6 = DATA / "fire" / "furg_house6.mp4"
QUIET = DATA / "non_fire_lookalike" / "intel_car-detection.mp4"
TOPICS = Topics("reflex", "dev1")
FIRE_TEXT = "Fire! Flames seen on yard"


def decode(path: Path, seconds: float, size: tuple[int, int] | None = None) -> list[tuple[float, np.ndarray]]:
    cap = cv2.VideoCapture(str(path))
    fps = cap.get(cv2.CAP_PROP_FPS)
    out: list[tuple[float, np.ndarray]] = []
    while len(out) < seconds * fps:
        ok, image = cap.read()
        if not ok:
            break
        out.append((1 / fps, image if size is None else cv2.resize(image, size)))
    cap.release()
    assert out, f"nothing decoded from {path}"
    return out


@pytest.fixture(scope="module")
def house6() -> list[tuple[float, np.ndarray]]:
    """(frame duration, BGR frame) of house6's first 11.5 s: past the first repeat (10 s)."""
    return decode(HOUSE6, 11.5)


@pytest.fixture(scope="module")
def quiet(house6: list[tuple[float, np.ndarray]]) -> list[tuple[float, np.ndarray]]:
    """A fire-free clip at house6's size."""
    h, w = house6[0][1].shape[:2]
    return decode(QUIET, 5.0, (w, h))


class Recorder:
    def __init__(self) -> None:
        self.transitions: list[Transition] = []

    def handle(self, tr: Transition, frame: Frame) -> None:
        self.transitions.append(tr)

    def alerts(self, rule: str = "fire") -> list[Transition]:
        return [t for t in self.transitions if t.kind == "alert" and t.event.rule == rule]


class StateBus:
    """What RetainedState uses of the Bus: `topics`, `device` and `set_state` (recorded)."""

    def __init__(self) -> None:
        self.topics = TOPICS
        self.device = "dev1"
        self.states: list[tuple[str, bytes | str]] = []
        self.lock = threading.Lock()

    def set_state(self, topic: str, payload: bytes | str, qos: int = 1) -> None:
        with self.lock:
            self.states.append((topic, payload))

    def on(self, topic: str) -> list[bytes | str]:
        return [p for t, p in self.states if t == topic]


class Rig:
    """A red loop for camera `yard` over a real event log: journal, retained state, recorder."""

    def __init__(self, tmp_path: Path, rules: list[RuleConfig]) -> None:
        self.events = EventLog(tmp_path / "data", reserve_bytes=0)
        self.events.ensure_camera("yard", "yard.mp4")
        for rule in rules:
            self.events.ensure_rule(rule)
        self.rules = [Rule(r) for r in rules]
        self.journal = Journal(self.events, TOPICS, self.rules)
        self.journal.confirmed_only = frozenset({"pager"})
        self.bus = StateBus()
        self.retained = RetainedState(self.bus)  # type: ignore[arg-type]
        self.journal.on_verdict = self.retained.verdict
        self.recorder = Recorder()
        self.delegate = StandInDelegate(self.events)
        self.stop = threading.Event()
        self.verifier = Verifier(self.journal, self.delegate, lambda: None, self.stop, after_s=0.0)  # type: ignore[arg-type]
        self.verifier.attach()
        sinks = [self.journal, self.retained, self.verifier, self.recorder]
        self.loop = RedLoop("yard", EdgeConfig(watch=[]), self.rules, None, sinks)
        self.index = 0
        self.pts = 0.0

    def feed(self, frames: list[tuple[float, np.ndarray]]) -> None:
        for duration, image in frames:
            self.loop.process(Frame("yard", self.index, self.pts, image, time.monotonic()))
            self.index += 1
            self.pts += duration

    def mqtt(self, aid: str) -> list[dict]:
        return [json.loads(m.payload) for m in self.events.outbox_pending(limit=1000) if m.message_id == aid]

    def pushed(self, channel: str, aid: str) -> list[str]:
        rows = self.events.outbox_pending(limit=1000, channel=push_channel(channel))
        return [json.loads(m.payload)["phase"] for m in rows if m.message_id == aid]

    def verdict(self, status: str, data: object, text: str = "") -> None:
        job = self.delegate.jobs[-1]
        for listener in self.delegate.listeners:
            listener(FinishedJob(job["job_id"], None, "yard", "verify", status, text, data, None, 40.0))

    def close(self) -> None:
        self.stop.set()
        self.journal.close()
        self.events.close()


def fire_rule(**kw: object) -> RuleConfig:
    (rule,) = default_rules(["fire"], FireConfig())
    return rule.model_copy(update={"push": ["hook", "pager"], **kw})


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path, [fire_rule(), RuleConfig(name="plain", label="fire", repeat_s=10)])
    yield r
    r.close()


def test_defaults_verify_fire_and_smoke_on_the_device() -> None:
    fire, smoke = default_rules(["fire", "smoke"], FireConfig())
    assert (fire.severity, fire.verify, fire.text) == ("critical", True, "Fire! Flames seen on {camera}")
    assert (smoke.severity, smoke.verify, smoke.text) == ("warning", True, "Smoke seen on {camera}")
    assert Rule(fire).device_verified and Rule(smoke).device_verified
    assert not Rule(RuleConfig(name="v", label="person", verify=True)).device_verified
    said = parse("Alert me immediately if a fire breaks out", None, CTX)
    assert said.rule is not None and said.rule["verify"] is True and said.rule["severity"] == "critical"


def test_house6_is_provisional_within_a_second_and_confirmed_within_three_under_the_same_ids(
    rig: Rig, house6: list[tuple[float, np.ndarray]]
) -> None:
    rig.feed(house6)
    plain = rig.recorder.alerts("plain")
    first, verdict, repeat = rig.recorder.alerts()
    assert first.alert is not None and verdict.alert is not None and repeat.alert is not None
    # Provisional at once: on the very frame the same fire alerts without verification.
    assert (first.alert.phase, first.alert.text, first.verdict) == ("provisional", FIRE_TEXT, None)
    assert first.pts <= 1.0 and first.frame == plain[0].frame and plain[0].alert is not None
    assert plain[0].alert.phase == "confirmed"
    # Confirmed once it held: the same alert and event.
    assert (verdict.alert.id, verdict.alert.event_id) == (first.alert.id, first.alert.event_id)
    assert verdict.alert.phase == "confirmed" and verdict.verdict == CONFIRMED_SUFFIX
    assert verdict.alert.text == FIRE_TEXT + CONFIRMED_SUFFIX
    assert first.pts + CONFIRM_AFTER_S <= verdict.pts <= 3.0
    assert (verdict.alert.pts, verdict.alert.frame) == (first.alert.pts, first.alert.frame)
    # The repeat 10 s later carries the phase.
    assert repeat.alert.id != first.alert.id and repeat.alert.event_id == first.alert.event_id
    assert repeat.pts - first.pts >= 10 and repeat.alert.phase == "confirmed"
    assert repeat.alert.text == FIRE_TEXT + CONFIRMED_SUFFIX

    # The journal: the alert row updated, a second message under the same id.
    assert [(m["phase"], m["text"]) for m in rig.mqtt(first.alert.id)] == [
        ("provisional", FIRE_TEXT), ("confirmed", FIRE_TEXT + CONFIRMED_SUFFIX)
    ]  # fmt: skip
    rows = {r["id"]: r for r in rig.events.alerts(event_id=first.alert.event_id)}
    assert rows[first.alert.id]["phase"] == "confirmed" and rows[repeat.alert.id]["phase"] == "confirmed"
    assert rows[first.alert.id]["text"] == FIRE_TEXT + CONFIRMED_SUFFIX
    assert rig.pushed("hook", first.alert.id) == ["provisional", "confirmed"]
    assert rig.pushed("pager", first.alert.id) == ["confirmed"]  # confirmed_only

    # The blue loop was asked too (a broker "is configured" here), about the provisional alert only.
    assert wait_until(lambda: rig.delegate.jobs, 5)
    assert [j["context"]["alert"]["id"] for j in rig.delegate.jobs] == [first.alert.id]

    # The binary sensor: ON with the confirmed phase, not with the provisional alert.
    sensor = TOPICS.active("yard", "fire")
    assert rig.bus.on(sensor) == [OFF, ON]
    assert rig.bus.on(TOPICS.active("yard", "plain")) == [ON]
    index = rig.bus.states.index((sensor, ON))
    assert rig.bus.states.index((TOPICS.active("yard", "plain"), ON)) < index
    messages = discovery_messages("reflex", "dev1", "homeassistant", ["yard"], {"fire": ["yard"]}, {}, "1")
    config = [p for t, p in messages if "/binary_sensor/" in t and p["state_topic"] == sensor]
    assert [p["device_class"] for p in config] == ["safety"]


def test_a_fire_that_stops_early_is_retracted_under_the_same_ids(
    rig: Rig, house6: list[tuple[float, np.ndarray]], quiet: list[tuple[float, np.ndarray]]
) -> None:
    rig.feed(house6[: int(0.8 * 30)])
    rig.feed(quiet)
    first, verdict = rig.recorder.alerts()
    assert first.alert is not None and verdict.alert is not None and first.alert.phase == "provisional"
    assert (verdict.alert.id, verdict.alert.event_id, verdict.alert.phase) == (
        first.alert.id, first.alert.event_id, "retracted"
    )  # fmt: skip
    assert verdict.alert.text == FIRE_TEXT + DID_NOT_HOLD_SUFFIX
    # Within the window, or with the event's end at the latest (the silence gate wakes the loop only
    # now and then once the picture is still: the verdict waits for the next look).
    ends = [t for t in rig.recorder.transitions if t.kind == "end" and t.event.rule == "fire"]
    order = rig.recorder.transitions
    assert len(ends) == 1 and order.index(ends[0]) > order.index(verdict)
    assert verdict.pts <= ends[0].pts <= 0.8 + EventsConfig().end_after_s + 0.5
    assert [m["phase"] for m in rig.mqtt(first.alert.id)] == ["provisional", "retracted"]
    (row,) = rig.events.alerts(event_id=first.alert.event_id)
    assert row["phase"] == "retracted" and row["text"] == FIRE_TEXT + DID_NOT_HOLD_SUFFIX
    assert rig.pushed("hook", first.alert.id) == ["provisional", "retracted"]
    assert rig.pushed("pager", first.alert.id) == []  # never confirmed: confirmed_only hears nothing
    assert ON not in rig.bus.on(TOPICS.active("yard", "fire"))

    # A blue-loop "confirmed" later never brings it back.
    assert wait_until(lambda: rig.delegate.jobs, 5)
    rig.verdict("done", {"confirmed": True}, "confirmed: flames in 3 of 8 keyframes")
    assert [m["phase"] for m in rig.mqtt(first.alert.id)] == ["provisional", "retracted"]
    assert rig.events.alerts(event_id=first.alert.event_id)[0]["phase"] == "retracted"


def test_a_region_the_detector_does_not_verify_is_retracted_when_the_window_passes(
    rig: Rig, house6: list[tuple[float, np.ndarray]]
) -> None:
    fire = rig.loop.pixels.fire
    assert fire is not None
    detect = fire.detect

    def unverified(*args: object, **kw: object) -> list:
        found = detect(*args, **kw)  # type: ignore[arg-type]
        for d in found:
            d.extra["verified"] = 0.0
        return found

    fire.detect = unverified  # type: ignore[method-assign]
    rig.feed(house6[: int(4.5 * 30)])
    first, verdict = rig.recorder.alerts()
    assert verdict.alert is not None and verdict.alert.phase == "retracted"
    assert verdict.alert.text == FIRE_TEXT + NOT_VERIFIED_SUFFIX
    assert first.pts + CONFIRM_WITHIN_S < verdict.pts <= first.pts + CONFIRM_WITHIN_S + 0.1


def test_a_blue_loop_confirmation_of_what_the_device_confirmed_is_not_said_twice(
    rig: Rig, house6: list[tuple[float, np.ndarray]], caplog: pytest.LogCaptureFixture
) -> None:
    rig.feed(house6[: int(2.5 * 30)])
    first, verdict = rig.recorder.alerts()
    assert first.alert is not None and verdict.alert is not None and verdict.alert.phase == "confirmed"
    assert wait_until(lambda: rig.delegate.jobs, 5)
    caplog.set_level(logging.INFO, logger="edge.verify")
    rig.verdict("done", {"confirmed": True}, "confirmed: flames")
    assert [m["phase"] for m in rig.mqtt(first.alert.id)] == ["provisional", "confirmed"]
    assert rig.pushed("pager", first.alert.id) == ["confirmed"]
    assert "the alert stays as it was" in caplog.text


def test_the_blue_loop_retracts_what_the_device_confirmed_out_loud(
    rig: Rig, house6: list[tuple[float, np.ndarray]]
) -> None:
    rig.feed(house6[: int(2.5 * 30)])
    first, verdict = rig.recorder.alerts()
    assert first.alert is not None and verdict.alert is not None and verdict.alert.phase == "confirmed"
    sensor = TOPICS.active("yard", "fire")
    assert rig.bus.on(sensor)[-1] == ON
    assert wait_until(lambda: rig.delegate.jobs, 5)

    rig.verdict("done", {"confirmed": False}, "retracted: a sunset through the window")
    msgs = rig.mqtt(first.alert.id)
    assert [m["phase"] for m in msgs] == ["provisional", "confirmed", "retracted"]
    assert msgs[-1]["text"] == FIRE_TEXT + RETRACTED_SUFFIX and msgs[-1]["event_id"] == first.alert.event_id
    assert rig.pushed("pager", first.alert.id) == ["confirmed", "retracted"]  # who heard it confirmed
    assert rig.pushed("hook", first.alert.id) == ["provisional", "confirmed", "retracted"]
    assert rig.events.alerts(event_id=first.alert.event_id)[0]["phase"] == "retracted"
    assert rig.bus.on(sensor)[-1] == OFF

    # The event goes on: its repeat carries the blue loop's retraction, not the device's mark.
    rig.feed(house6[int(2.5 * 30) :])
    repeat = rig.recorder.alerts()[-1]
    assert repeat.alert is not None and repeat.alert.id != first.alert.id and repeat.verdict is None
    assert (repeat.alert.phase, repeat.alert.text) == ("retracted", FIRE_TEXT + RETRACTED_SUFFIX)
    assert rig.bus.on(sensor)[-1] == OFF


def test_edge_scan_prints_the_phase_and_the_alert_id() -> None:
    out = io.StringIO()
    printer = JsonLines(out)
    ev = EventRecord(id="ev1", camera="yard", label="fire", rule="fire", score=0.9, box=None,
                     started_at=0.0, frame=17, pts=0.567)  # fmt: skip
    alert = AlertRecord(id="a1", event_id="ev1", rule="fire", camera="yard", label="fire",
                        severity="critical", text=FIRE_TEXT + CONFIRMED_SUFFIX, at=0.0, frame=17,
                        pts=0.567, phase="confirmed")  # fmt: skip
    frame = Frame("yard", 62, 2.069, np.zeros((2, 2, 3), np.uint8), 0.0)
    printer.handle(Transition("alert", ev, 62, 2.069, alert, verdict=CONFIRMED_SUFFIX), frame)
    line = json.loads(out.getvalue())
    assert line == {"type": "alert", "event_id": "ev1", "label": "fire", "frame": 62, "pts": 2.069,
                    "text": FIRE_TEXT + CONFIRMED_SUFFIX, "id": "a1", "phase": "confirmed"}  # fmt: skip

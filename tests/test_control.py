"""The control surface changes a running appliance: rules at runtime, the detect switch, asks.

Red loops run over the real people clip with the real detector; the event log is a real SQLite
file. The MQTT end of the detect switch runs `edge run` as its own process against real mosquitto.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import pytest

from edge.config import EdgeConfig, RuleConfig
from edge.config.models import ModelConfig
from edge.control import Control, ControlError
from edge.journal import Journal
from edge.live import LiveView
from edge.outbox import Topics
from edge.redloop import RedLoop
from edge.reflex import build_detector
from edge.rules import Rule, Transition
from edge.store import EventLog
from edge.types import Frame
from edge.wiring import known_labels
from tests.conftest import DATA, MODEL, REPO, needs_shared
from tests.support import Mosquitto, Subscriber, read_frames, wait_until
from tests.test_bus import Edge

pytestmark = needs_shared

PEOPLE = DATA / "people" / "intel_one-by-one-person-detection.mp4"
FIRST_VISIT = (61, 194)
"""Frames of the clip's first visit (tests/test_scan.py VISITS)."""
TOPICS = Topics("reflex", "dev1")


class Recorder:
    def __init__(self) -> None:
        self.transitions: list[Transition] = []

    def handle(self, tr: Transition, frame: Frame) -> None:
        self.transitions.append(tr)

    def kinds(self, rule: str) -> list[str]:
        return [t.kind for t in self.transitions if t.event.rule == rule]


@pytest.fixture(scope="module")
def frames() -> list[tuple[int, float, object]]:
    """The first 260 frames of the people clip (one whole visit and the quiet after it)."""
    return read_frames(PEOPLE, 260)


@pytest.fixture(scope="module")
def detector() -> object:
    return build_detector(ModelConfig(path=str(MODEL)), REPO)


class Rig:
    """One camera's red loop behind a control surface, on a real event log."""

    def __init__(self, data: Path, detector: object, config_rules: list[Rule]) -> None:
        self.cfg = EdgeConfig(watch=[], model=ModelConfig(path=str(MODEL)))
        self.events = EventLog(data, reserve_bytes=0)
        self.events.ensure_camera("lobby", str(PEOPLE))
        self.journal = Journal(self.events, TOPICS, config_rules)
        self.recorder = Recorder()
        self.control = Control(
            self.events, TOPICS, self.journal, known_labels=known_labels(self.cfg, REPO),
            detector=lambda: detector,
        )  # fmt: skip
        rules = self.control.load_rules(config_rules)
        self.live = LiveView()
        self.loop = RedLoop("lobby", self.cfg, rules, detector, [self.journal, self.recorder], live=self.live)
        self.control.attach({"lobby": self.loop}, None)

    def feed(self, frames: list, start: int, stop: int) -> None:
        for index, pts, image in frames[start:stop]:
            self.loop.process(Frame("lobby", index, pts, image, time.monotonic()))

    def close(self) -> None:
        self.journal.close()
        self.events.close()


@pytest.fixture
def rig(tmp_path: Path, detector: object) -> Iterator[Rig]:
    fire = Rule(RuleConfig(name="fire", label="fire"))
    rig = Rig(tmp_path / "data", detector, [fire])
    yield rig
    rig.close()


def test_a_rule_added_at_runtime_alerts_and_its_removal_ends_its_event(rig: Rig, frames: list) -> None:
    rig.feed(frames, 0, 90)  # someone walks in; nobody watches people yet
    assert rig.recorder.transitions == []
    rig.control.add_rule(RuleConfig(name="lobby-person", label="person", cameras=["lobby"]), "admin")
    rig.feed(frames, 90, 130)
    assert rig.recorder.kinds("lobby-person")[:2] == ["start", "alert"]
    rig.control.remove_rule("lobby-person")
    assert rig.recorder.kinds("lobby-person")[-1] == "end"  # ended at once, not 3 s later
    rig.feed(frames, 130, 160)
    assert rig.recorder.kinds("lobby-person").count("start") == 1  # and nothing more after removal
    stored = {row["rule"]: row for row in rig.events.events()}
    assert stored["lobby-person"]["ended_at"] is not None
    ends = [m for m in rig.events.outbox_pending(limit=100) if m.kind == "event" and ":end:" in m.message_id]
    assert len(ends) == 1  # the end goes out on MQTT like any other


def test_runtime_rules_survive_a_restart_and_config_rules_are_read_only(
    tmp_path: Path, detector: object
) -> None:
    fire = Rule(RuleConfig(name="fire", label="fire"))
    first = Rig(tmp_path / "data", detector, [fire])
    first.control.add_rule(RuleConfig(name="door", label="person"), "instruction")
    first.control.add_rule(RuleConfig(name="gone", label="car"), "admin")
    first.control.remove_rule("gone")
    with pytest.raises(ControlError, match="comes from the config file"):
        first.control.remove_rule("fire")
    with pytest.raises(ControlError, match="unknown label 'persn'"):
        first.control.add_rule(RuleConfig(name="typo", label="persn"), "admin")
    with pytest.raises(ControlError, match="exists already"):
        first.control.add_rule(RuleConfig(name="door", label="person"), "admin")
    first.close()

    again = Rig(tmp_path / "data", detector, [fire])
    try:
        origins = {e.rule.name: e.origin for e in again.control.rules()}
        assert origins == {"fire": "config", "door": "instruction"}
        assert {r.name for r in again.loop.events.rules} == {"fire", "door"}
    finally:
        again.close()


def test_detect_off_ends_the_open_event_and_on_starts_afresh(rig: Rig, frames: list) -> None:
    rig.control.add_rule(RuleConfig(name="person", label="person"), "admin")
    rig.feed(frames, 0, 110)
    assert rig.recorder.kinds("person")[0] == "start"
    rig.control.set_switch("lobby", "detect", False, by="test")
    assert rig.recorder.kinds("person")[-1] == "end"
    assert all(row["ended_at"] is not None for row in rig.events.events())
    rig.feed(frames, 110, 130)  # switched off: nothing is looked at
    assert rig.recorder.kinds("person").count("start") == 1
    rig.control.set_switch("lobby", "detect", True, by="test")
    rig.feed(frames, 130, 170)  # the person is still there: a new event, from a fresh gate
    assert rig.recorder.kinds("person").count("start") == 2
    assert rig.events.switches()["lobby"]["detect"] is True


def test_live_view_holds_every_label_and_a_fresh_look_on_request(rig: Rig, frames: list) -> None:
    rig.control.add_rule(RuleConfig(name="person", label="person"), "admin")
    rig.feed(frames, 0, 120)
    view = rig.live.get("lobby")
    assert view is not None and view.count("person") == 1
    assert view.frame > FIRST_VISIT[0] and view.tracks
    looked = rig.loop.request_look()
    assert not looked.is_set()
    rig.feed(frames, 120, 121)
    assert looked.is_set() and rig.live.get("lobby").frame == frames[120][0]
    keyframes = rig.live.keyframes["lobby"].last(60)
    assert 20 <= len(keyframes) <= 61  # ~2 a second of 12 s of video, bounded
    assert max(k.image.shape[1] for k in keyframes) <= 640
    assert keyframes[-1].jpeg()[:2] == b"\xff\xd8"


def test_the_detector_reports_every_label_it_saw(tmp_path: Path, detector: object) -> None:
    """A camera whose rules watch people still counts what else is in view (questions need it)."""
    rig = Rig(tmp_path / "data", detector, [Rule(RuleConfig(name="person", label="person"))])
    try:
        image = cv2.imread(str(DATA / "images" / "coffee.png"))
        for i in range(3):
            rig.loop.process(Frame("lobby", i, i * 0.1, image, time.monotonic()), requested=True)
        view = rig.live.get("lobby")
        assert view.count("cup") >= 1, view.counts  # seen and counted, though no rule watches cups
        assert "person" in view.counts  # the watched label is counted too (0 here)
        assert rig.recorder.transitions == []
    finally:
        rig.close()


# -- the MQTT end: `edge run` as a process ---------------------------------------------------------


def test_detect_off_over_mqtt_ends_the_event_and_clears_active(tmp_path: Path, mosquitto: Mosquitto) -> None:
    config = {
        "device": {"id": "dev1"},
        "data_dir": str(tmp_path / "data"),
        "cameras": {"yard": {"source": str(DATA / "fire" / "fdv_visual_fire.mp4"), "loop": True}},
        "watch": [],
        "rules": [{"name": "fire", "label": "fire", "repeat_s": 1.0, "severity": "critical"}],
        "mqtt": {"url": mosquitto.url, "stats_every_s": 1.0},
    }
    sub = Subscriber(mosquitto.port, ["reflex/dev1/#"])
    edge = Edge.running(config, tmp_path)
    try:
        active = "reflex/dev1/yard/active/fire"
        assert wait_until(lambda: sub.on(active) and sub.on(active)[-1] == b"ON", 30), edge.text()
        sub.client.publish("reflex/dev1/yard/detect/set", "OFF", qos=1)
        assert wait_until(lambda: sub.on(active)[-1] == b"OFF", 10), edge.text()
        ends = [e for e in sub.json_on("reflex/dev1/events") if e["type"] == "end"]
        assert len(ends) == 1 and ends[0]["rule"] == "fire"
        assert sub.on("reflex/dev1/yard/detect/state")[-1] == b"OFF"
        count_before = len(sub.json_on("reflex/dev1/alerts"))
        time.sleep(2.5)
        assert len(sub.json_on("reflex/dev1/alerts")) == count_before  # no alerts while off
        sub.client.publish("reflex/dev1/yard/detect/set", "ON", qos=1)
        assert wait_until(lambda: sub.on(active)[-1] == b"ON", 20), edge.text()
    finally:
        edge.stop()
        sub.close()
    assert json.loads(sub.on("reflex/dev1/alerts")[-1])["label"] == "fire"

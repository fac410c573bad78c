"""Instructions in plain words: the parser's table of phrasings, answers from live state and the event
log, control through the control surface, and a fire rule given over MQTT to an appliance that
watched nothing."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest

from edge.config import RuleConfig
from edge.instructions import Context, Router, parse
from edge.reflex import load_manifest
from edge.rules import Rule
from edge.types import Frame
from tests.conftest import DATA, REPO, needs_shared
from tests.support import Mosquitto, Subscriber, wait_until
from tests.test_bus import Edge
from tests.test_control import Rig, detector, frames  # noqa: F401  (fixtures)

LABELS = frozenset(load_manifest(REPO / "models" / "yolox_nano.yaml").labels) | {"fire", "smoke"}
"""The detector's labels, as the appliance knows them (the model manifest), and the pixel detector's."""
CTX = Context(
    LABELS,
    ("lobby", "door", "gate", "dock", "yard"),
    {"dock": {"loading-dock": [(0.0, 0.5), (1.0, 0.5), (1.0, 1.0), (0.0, 1.0)]}},
    (("fire", "fire", None, "config"), ("person-door", "person", ("door",), "instruction")),
)

# (text, kind, task or None, label or None, cameras or None)
TABLE = [
    # standing rules
    ("Alert me immediately if a fire breaks out", "rule", None, "fire", None),
    ("Tell me when someone is in the loading dock after 22:00", "rule", None, "person", ["dock"]),
    ("Let me know if a car stays at the gate for more than a minute", "rule", None, "car", ["gate"]),
    ("Notify me when a truck arrives at the gate", "rule", None, "truck", ["gate"]),
    ("Warn me about smoke in the yard", "rule", None, "smoke", ["yard"]),
    ("Watch for people at the door at night", "rule", None, "person", ["door"]),
    ("If someone enters the lobby, alert me", "rule", None, "person", ["lobby"]),
    ("Keep an eye out for dogs in the yard on weekends", "rule", None, "dog", ["yard"]),
    ("Send me an alert every 30 seconds while there is fire", "rule", None, "fire", None),
    ("alert me when a person is at the door between 9 and 17", "rule", None, "person", ["door"]),
    ("please notify me if anybody is on camera 1", "rule", None, "person", ["lobby"]),
    ("tell me whenever a bicycle is left at the gate for 5 minutes", "rule", None, "bicycle", ["gate"]),
    ("let us know when vehicles show up in the yard", "rule", None, "car", ["yard"]),
    ("warn me urgently if there are flames", "rule", None, "fire", None),
    ("watch out for a backpack in the lobby", "rule", None, "backpack", ["lobby"]),
    # questions about now
    ("How many people are in the lobby now?", "question", None, "person", ["lobby"]),
    ("Is anyone at the door?", "question", None, "person", ["door"]),
    ("count the bottles", "question", None, "bottle", None),
    ("are there any cars at the gate?", "question", None, "car", ["gate"]),
    ("how many vehicles are in the yard", "question", None, "car", ["yard"]),
    ("Is there a dog in the yard?", "question", None, "dog", ["yard"]),
    ("do you see any persons?", "question", None, "person", None),
    ("how many cups are on the table in the lobby?", "question", None, "cup", ["lobby"]),
    ("anyone in the loading dock?", "question", None, "person", ["dock"]),
    ("is there fire anywhere?", "question", None, "fire", None),
    ("number of trucks at the gate", "question", None, "truck", ["gate"]),
    ("can you see a cell phone on camera 1?", "question", None, "cell phone", ["lobby"]),
    # memory
    ("Who appeared in the last five minutes?", "memory", None, "person", None),
    ("Which two people appeared just now?", "memory", None, "person", None),
    ("When did the last person leave?", "memory", None, "person", None),
    ("Has there been any fire today?", "memory", None, "fire", None),
    ("did anyone come to the door in the last hour?", "memory", None, "person", ["door"]),
    ("how many people came in today?", "memory", None, "person", None),
    ("was there a car at the gate yesterday?", "memory", None, "car", ["gate"]),
    ("when was the last car at the gate?", "memory", None, "car", ["gate"]),
    ("who visited the lobby in the past 10 minutes?", "memory", None, "person", ["lobby"]),
    ("have there been any trucks in the yard today?", "memory", None, "truck", ["yard"]),
    # control
    ("stop alerting on camera 2", "control", "alerts_off", None, ["door"]),
    ("pause the lobby camera", "control", "pause", None, ["lobby"]),
    ("resume", "control", "resume", None, None),
    ("resume the lobby camera", "control", "resume", None, ["lobby"]),
    ("What are you watching for?", "control", "list_rules", None, None),
    ("stop the fire alerts", "control", "remove_rule", "fire", None),
    ("list the rules", "control", "list_rules", None, None),
    ("turn off detection on the yard camera", "control", "pause", None, ["yard"]),
    ("don't tell me about people at the door", "control", "remove_rule", "person", ["door"]),
    ("unmute the gate", "control", "alerts_on", None, ["gate"]),
    ("mute the yard", "control", "alerts_off", None, ["yard"]),
    # delegated
    ("describe what is happening in the lobby", "delegate", "describe", None, ["lobby"]),
    ("what is that person doing?", "delegate", "describe", "person", None),
    ("write an incident report of the last alert", "delegate", "report", None, None),
    ("what does the sign say?", "delegate", "read_text", None, None),
    ("read the text on the screen", "delegate", "read_text", None, None),
    ("reproduce this app screen as HTML", "delegate", "ui_html", None, None),
    ("summarize the last hour", "delegate", "report", None, None),
    ("explain why the alert fired", "delegate", "describe", None, None),
    ("what's going on at the gate?", "delegate", "describe", None, ["gate"]),
    ("what is written on the whiteboard in the lobby", "delegate", "read_text", None, ["lobby"]),
    ("transcribe the label on the box", "delegate", "read_text", None, None),
    # nonsense and what cannot be placed
    ("banana pancakes with syrup", "unknown", None, None, None),
    ("hello", "unknown", None, None, None),
    ("what is the meaning of life", "unknown", None, None, None),
    ("make me a sandwich", "unknown", None, None, None),
    ("alert me when the moon is full", "unknown", None, None, None),
    ("asdf qwerty", "unknown", None, None, None),
]


@pytest.mark.parametrize(("text", "kind", "task", "label", "cameras"), TABLE, ids=[t[0] for t in TABLE])
def test_the_router_places_each_phrasing(
    text: str, kind: str, task: str | None, label: str | None, cameras: list[str] | None
) -> None:
    d = parse(text, None, CTX)
    assert (
        d.kind,
        d.task,
        d.label if kind != "control" or label else None,
        d.cameras if cameras else None,
    ) == (kind, task, label, cameras), d
    assert d.summary


def test_compiled_rules_carry_zone_schedule_dwell_repeat_and_severity() -> None:
    dock = parse("Tell me when someone is in the loading dock after 22:00", None, CTX).rule
    assert dock is not None and dock["zone_name"] == "loading-dock" and dock["cameras"] == ["dock"]
    assert dock["zone"] == CTX.zones["dock"]["loading-dock"]
    assert dock["schedule"] == [{"start": "22:00:00", "end": "06:00:00"}]
    gate = parse("Let me know if a car stays at the gate for more than a minute", None, CTX).rule
    assert gate is not None and gate["dwell_s"] == 60 and gate["repeat_s"] == 0
    fire = parse("Alert me immediately if a fire breaks out", None, CTX)
    assert fire.rule is not None and fire.rule["repeat_s"] == 10 and fire.rule["severity"] == "critical"
    assert (
        fire.summary
        == "I will alert you when I see fire on any camera, and repeat every 10 s while it lasts."
    )
    RuleConfig.model_validate({k: v for k, v in dock.items() if v is not None})  # a valid rule


def test_memory_windows_follow_the_words() -> None:
    now = datetime(2026, 12, 1, 15, 30)
    five = parse("Who appeared in the last five minutes?", None, CTX, now)
    assert five.since == pytest.approx(now.timestamp() - 300)
    today = parse("Has there been any fire today?", None, CTX, now)
    assert today.since == datetime(2026, 12, 1).timestamp() and today.form == "any"
    assert parse("Which two people appeared just now?", None, CTX, now).limit == 2
    assert parse("When did the last person leave?", None, CTX, now).form == "last_end"


def test_edge_explain_prints_the_contract_json() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "edge", "explain", "Alert me immediately if a fire breaks out"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert set(doc) == {"kind", "summary", "label", "cameras", "rule", "task"}
    assert doc["kind"] == "rule" and doc["label"] == "fire" and doc["rule"]["repeat_s"] == 10
    out = subprocess.run(
        [sys.executable, "-m", "edge", "explain", "pause it", "--camera", "lobby"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert json.loads(out.stdout)["task"] == "pause"


# -- answers, in process, on the real clip and detector ----------------------------------------------


class Answers:
    def __init__(self) -> None:
        self.got: dict[str, list[dict]] = {}
        self.cond = threading.Condition()

    def __call__(self, ask_id: str | None, kind: str, text: str, **extra: object) -> None:
        with self.cond:
            self.got.setdefault(str(ask_id), []).append({"kind": kind, "text": text, **extra})
            self.cond.notify_all()

    def final(self, ask_id: str, timeout: float = 10) -> dict:
        with self.cond:
            self.cond.wait_for(lambda: any(a["kind"] != "ack" for a in self.got.get(ask_id, [])), timeout)
            return next(a for a in self.got[ask_id] if a["kind"] != "ack")


@pytest.fixture
def asking(tmp_path: Path, detector: object):  # noqa: F811
    rig = Rig(tmp_path / "data", detector, [Rule(RuleConfig(name="person", label="person"))])
    router = Router(rig.control, rig.live, rig.events, rig.control.known_labels)
    rig.control.router = router
    answers = Answers()
    rig.control.answer = answers  # type: ignore[method-assign]
    n = iter(range(1000))

    def ask(text: str, camera: str | None = None) -> dict:
        ask_id = f"t{next(n)}"
        rig.control.ask(ask_id, text, camera, "test")
        return answers.final(ask_id)

    yield rig, ask
    router.close()
    rig.close()


@needs_shared
def test_quick_questions_follow_the_live_view(asking, frames: list) -> None:  # noqa: F811
    rig, ask = asking
    rig.feed(frames, 0, 120)  # the first visitor is in view
    t0 = time.monotonic()
    answer = ask("How many people are in the lobby now?")
    assert time.monotonic() - t0 < 0.5
    assert answer["kind"] == "answer" and answer["data"]["counts"] == {"lobby": 1}, answer
    assert answer["text"] == "I see 1 person on lobby now."
    assert ask("is anyone in the lobby?")["text"].startswith("Yes")
    rig.feed(frames, 120, 225)  # gone
    assert ask("is anyone there?")["text"].startswith("No"), rig.live.get("lobby")
    assert ask("count the cars")["data"]["total"] == 0


@needs_shared
def test_a_stale_view_gets_a_fresh_look_first(asking, frames: list) -> None:  # noqa: F811
    rig, ask = asking
    rig.feed(frames, 0, 120)
    time.sleep(0.7)  # the last look is now older than 0.5 s
    fed = threading.Thread(target=lambda: (time.sleep(0.2), rig.feed(frames, 120, 122)))
    fed.start()
    answer = ask("how many people are in the lobby")
    fed.join()
    assert answer["data"]["counts"] == {"lobby": 1}
    assert rig.live.get("lobby").frame >= frames[120][0]  # the answer followed the fresh frame


@needs_shared
def test_rules_given_in_words_are_listed_and_removed(asking) -> None:
    rig, ask = asking
    answer = ask("Alert me immediately if a fire breaks out")
    assert (
        answer["text"]
        == "I will alert you when I see fire on any camera, and repeat every 10 s while it lasts."
    )
    assert {e.rule.name: e.origin for e in rig.control.rules()}["fire-any"] == "instruction"
    listed = ask("What are you watching for?")
    assert "fire on any camera" in listed["text"] and {r["name"] for r in listed["data"]["rules"]} >= {
        "fire-any"
    }
    assert ask("stop the fire alerts")["data"]["removed"] == ["fire-any"]
    assert "fire-any" not in {e.rule.name for e in rig.control.rules()}
    assert ask("stop the person alerts")["kind"] == "error"  # a config rule: changed in the file only
    assert ask("pause the lobby camera")["text"] == "Paused lobby."
    assert rig.loop.detect_enabled is False
    assert ask("resume")["text"] == "Watching again: lobby."
    assert rig.loop.detect_enabled is True
    assert ask("banana pancakes")["text"].startswith("I can watch for things")


@needs_shared
def test_who_appeared_lists_the_six_visits(asking) -> None:
    from edge.capture import open_source

    rig, ask = asking
    source = open_source(str(DATA / "people" / "intel_one-by-one-person-detection.mp4"))
    while (item := source.read()) is not None:
        rig.loop.process(Frame("lobby", item[0], item[1], item[2], time.monotonic()))
    source.close()
    rig.loop.finish()
    answer = ask("Who appeared in the last five minutes?")
    assert answer["text"].startswith("6 people appeared since "), answer["text"]
    assert len(answer["data"]["events"]) == 6 and answer["text"].count(" on lobby") == 6
    last = ask("when did the last person leave?")
    assert last["text"].startswith("The last person left lobby at ")
    assert len(ask("which two people appeared just now?")["data"]["events"]) == 2
    assert ask("has there been any fire today?")["text"].startswith("No")


# -- over MQTT: an appliance that watched nothing ------------------------------------------------------


@needs_shared
def test_a_fire_rule_given_over_mqtt_alerts_and_survives_a_restart(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    clip = tmp_path / "clips" / "yard.mp4"  # appears only after the instruction: the camera retries
    clip.parent.mkdir()
    config = {
        "device": {"id": "dev1"},
        "data_dir": str(tmp_path / "data"),
        "watch": [],
        "cameras": {"yard": {"source": str(clip), "reconnect_min_s": 0.2, "reconnect_max_s": 0.4}},
        "mqtt": {"url": mosquitto.url, "stats_every_s": 1.0},
    }
    sub = Subscriber(mosquitto.port, ["reflex/dev1/#"])
    edge = Edge.running(config, tmp_path)
    try:
        assert wait_until(lambda: sub.on("reflex/dev1/availability"), 30), edge.text()
        ask = {"id": "fire-1", "text": "Alert me immediately if a fire breaks out"}
        sub.client.publish("reflex/dev1/ask", json.dumps(ask), qos=1)
        assert wait_until(
            lambda: len([a for a in sub.json_on("reflex/dev1/answers") if a["id"] == "fire-1"]) >= 2, 10
        ), edge.text()
        answers = [a for a in sub.json_on("reflex/dev1/answers") if a["id"] == "fire-1"]
        assert [a["kind"] for a in answers] == ["ack", "answer"]
        assert answers[1]["text"].startswith("I will alert you when I see fire on any camera")
        shutil.copy(DATA / "fire" / "furg_house6.mp4", clip)
        assert wait_until(lambda: len(sub.json_on("reflex/dev1/alerts")) >= 2, 40), edge.text()
        alert = sub.json_on("reflex/dev1/alerts")[0]
        assert alert["text"].startswith("Fire!") and alert["severity"] == "critical"
    finally:
        edge.stop()
    import sqlite3

    with sqlite3.connect(tmp_path / "data" / "events.db") as db:
        first_pts = db.execute("SELECT min(pts) FROM alerts WHERE label = 'fire'").fetchone()[0]
        origin = db.execute("SELECT origin FROM rules WHERE name = 'fire-any'").fetchone()[0]
    assert first_pts <= 1.0 and origin == "instruction"  # within 1 s of stream time; stored

    edge = Edge(edge.config)  # restarted: the rule is still there, and said back in words and as data
    edge.start()
    try:
        assert wait_until(lambda: edge.text().count("MQTT connected") == 2, 30), edge.text()
        sub.client.publish(
            "reflex/dev1/ask", json.dumps({"id": "list-1", "text": "what are you watching for?"}), qos=1
        )
        assert wait_until(
            lambda: any(
                a["id"] == "list-1" and a["kind"] == "answer" for a in sub.json_on("reflex/dev1/answers")
            ),
            20,
        ), edge.text()
        listed = next(
            a for a in sub.json_on("reflex/dev1/answers") if a["id"] == "list-1" and a["kind"] == "answer"
        )
        assert "fire on any camera" in listed["text"]
        assert [r["name"] for r in listed["data"]["rules"]] == ["fire-any"]
    finally:
        edge.stop()
        sub.close()


@needs_shared
def test_an_ask_delivered_twice_is_answered_once_and_its_status_recorded(asking) -> None:
    rig, ask = asking
    answer = ask("count the cups")
    rig.control.ask("t0", "count the cups", None, "mqtt")  # QoS 1 re-delivery of the same id
    time.sleep(0.3)
    got = rig.control.answer.got["t0"]  # type: ignore[attr-defined]
    assert [a["kind"] for a in got] == ["ack", "answer"] and answer in got
    rows = {row["id"]: row for row in rig.events.asks(limit=10)}
    assert rows["t0"]["status"] == "answered"

"""The shadow narrator: a running commentary of a camera from the red loop's transitions, rate-limited
and merged, stopped in words; digests from the event log, on request and on a schedule. In process
with the real detector on the real people clip, then once over MQTT with `edge run` and mosquitto."""

from __future__ import annotations

import itertools
import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.capture import open_source
from edge.config import RuleConfig
from edge.instructions import Router, parse
from edge.narrator import Narrator
from edge.rules import Rule, Transition
from edge.types import EventRecord, Frame
from tests.conftest import MODEL, needs_shared
from tests.support import Mosquitto, Subscriber, wait_until
from tests.test_bus import Edge
from tests.test_control import PEOPLE, Rig, detector, frames  # noqa: F401  (fixtures)
from tests.test_instructions import CTX

pytestmark = needs_shared

# (text, kind, task, form, cameras, every_s)
TABLE = [
    ("narrate the lobby camera", "control", "narrate_on", None, ["lobby"], None),
    ("commentate", "control", "narrate_on", None, None, None),
    ("commentate on the gate", "control", "narrate_on", None, ["gate"], None),
    ("give me a running commentary of the door", "control", "narrate_on", None, ["door"], None),
    ("tell me what happens on camera 2 as it happens", "control", "narrate_on", None, ["door"], None),
    ("keep me posted on the yard", "control", "narrate_on", None, ["yard"], None),
    ("please narrate everything", "control", "narrate_on", None, None, None),
    ("stop narrating", "control", "narrate_off", None, None, None),
    ("stop narrating the lobby", "control", "narrate_off", None, ["lobby"], None),
    ("enough commentary", "control", "narrate_off", None, None, None),
    ("turn off the narration for the gate", "control", "narrate_off", None, ["gate"], None),
    ("give me a digest", "memory", None, "digest", None, None),
    ("summary of the last hour", "memory", None, "digest", None, None),
    ("digest of the lobby for the last 10 minutes", "memory", None, "digest", ["lobby"], None),
    ("today's digest for the gate", "memory", None, "digest", ["gate"], None),
    ("send me a digest every hour", "control", "digest_on", None, None, 3600.0),
    ("a digest of the gate every 30 minutes please", "control", "digest_on", None, ["gate"], 1800.0),
    ("send me an hourly summary", "control", "digest_on", None, None, 3600.0),
    ("daily digest of the yard", "control", "digest_on", None, ["yard"], 86400.0),
    ("stop the digest", "control", "digest_off", None, None, None),
    ("no more digests", "control", "digest_off", None, None, None),
    # what stays as it was
    ("summarize the last hour", "delegate", "report", None, None, None),
    ("write an incident report of the last alert", "delegate", "report", None, None, None),
    ("stop the fire alerts", "control", "remove_rule", None, None, None),
    ("pause the lobby camera", "control", "pause", None, ["lobby"], None),
]


@pytest.mark.parametrize(
    ("text", "kind", "task", "form", "cameras", "every"), TABLE, ids=[t[0] for t in TABLE]
)
def test_narration_and_digest_phrasings(
    text: str, kind: str, task: str | None, form: str | None, cameras: list[str] | None, every: float | None
) -> None:
    d = parse(text, None, CTX)
    assert (d.kind, d.task, d.form, d.cameras, d.every_s) == (kind, task, form, cameras, every), d
    assert d.summary


def test_a_digest_window_follows_the_words() -> None:
    from datetime import datetime

    now = datetime(2026, 12, 1, 15, 30)
    assert parse("give me a digest", None, CTX, now).since == now.timestamp() - 3600
    assert parse("digest of the last 10 minutes", None, CTX, now).since == now.timestamp() - 600
    assert parse("today's digest", None, CTX, now).since == datetime(2026, 12, 1).timestamp()


# -- in process: the red loop, the narrator, the router ------------------------------------------------


class Answers:
    """Stands in for control.answer: every answer and commentary line, with when it came."""

    def __init__(self) -> None:
        self.got: list[tuple[float, str, str, str, dict]] = []
        self.cond = threading.Condition()

    def __call__(self, ask_id: str | None, kind: str, text: str, **extra: object) -> None:
        with self.cond:
            self.got.append((time.monotonic(), str(ask_id), kind, text, dict(extra)))
            self.cond.notify_all()

    def final(self, ask_id: str, timeout: float = 10) -> tuple[str, str, dict]:
        with self.cond:
            self.cond.wait_for(
                lambda: any(g[1] == ask_id and g[2] in ("answer", "error") for g in self.got), timeout
            )
            done = [g for g in self.got if g[1] == ask_id and g[2] in ("answer", "error")]
            assert done, f"no answer to {ask_id}"
            return done[0][2], done[0][3], done[0][4].get("data") or {}

    def lines(self, ask_id: str | None = None) -> list[tuple[float, str, dict]]:
        with self.cond:
            return [
                (g[0], g[3], g[4].get("data") or {})
                for g in self.got
                if g[2] == "commentary" and (ask_id is None or g[1] == ask_id)
            ]

    def wait_lines(self, ask_id: str, n: int, timeout: float = 5) -> list[tuple[float, str, dict]]:
        with self.cond:
            self.cond.wait_for(lambda: len(self.lines(ask_id)) >= n, timeout)
        return self.lines(ask_id)


@pytest.fixture
def narrating(tmp_path: Path, detector: object) -> Iterator[tuple[Rig, Narrator, Answers, object]]:  # noqa: F811
    rules = [Rule(RuleConfig(name="person", label="person")), Rule(RuleConfig(name="fire", label="fire"))]
    rig = Rig(tmp_path / "data", detector, rules)
    router = Router(rig.control, rig.live, rig.events, rig.control.known_labels)
    rig.control.router = router
    narrator = Narrator(rig.control, rig.events, min_period_s=0.0)
    rig.loop.sinks.append(narrator)  # as the appliance does: a sink after the journal
    router.narrator = narrator
    answers = Answers()
    rig.control.answer = answers  # type: ignore[method-assign]
    n = iter(range(1000))

    def ask(text: str) -> tuple[str, str, str, dict]:
        ask_id = f"a{next(n)}"
        rig.control.ask(ask_id, text, None, "test")
        return (ask_id, *answers.final(ask_id))

    yield rig, narrator, answers, ask
    narrator.stop()
    router.close()
    rig.close()


CLOCK = r"\d\d:\d\d:\d\d"


def test_narration_says_who_entered_and_left_with_a_duration(narrating, frames: list) -> None:  # noqa: F811
    rig, _, answers, ask = narrating
    ask_id, kind, text, _ = ask("narrate the lobby camera")
    assert kind == "answer"
    assert text == 'I will narrate lobby: a line whenever something changes. Say "stop narrating" to end it.'
    rig.feed(frames, 0, 150)  # the first visitor walks in (frames 61-194)
    lines = answers.wait_lines(ask_id, 1)
    assert len(lines) == 1 and re.fullmatch(rf"{CLOCK} a person entered lobby", lines[0][1]), lines
    assert lines[0][2]["camera"] == "lobby" and lines[0][2]["counts"] == {"person": 1}
    rig.feed(frames, 150, 260)  # and leaves (the event ends 3 s after the last sighting); the next comes
    assert wait_until(lambda: "entered" in _said(answers, ask_id).partition(" left ")[2], 5)
    lines = answers.lines(ask_id)
    m = re.fullmatch(rf"{CLOCK} the person left lobby after (\d+) s(; .*)?", lines[1][1])
    assert m and 12 <= int(m.group(1)) <= 20, lines[1][1]  # in view ~13 s, plus the 3 s it takes to end
    if m.group(2):  # the next visitor came within the second: one line, merged
        assert m.group(2) == "; a person entered lobby; 1 person in lobby now" and len(lines) == 2
    else:
        assert re.fullmatch(rf"{CLOCK} a person entered lobby", lines[2][1]) and len(lines) == 3, lines
        assert lines[1][2]["counts"] == {}
    assert {g[1] for g in answers.got if g[2] == "commentary"} == {ask_id}  # on the narrate ask's id


def test_stop_narrating_ends_it_and_the_digest_counts_the_six_visits(narrating) -> None:
    rig, _, answers, ask = narrating
    ask_id, *_ = ask("narrate the lobby")
    source = open_source(str(PEOPLE))
    stopped_at = None
    while (item := source.read()) is not None:
        rig.loop.process(Frame("lobby", item[0], item[1], item[2], time.monotonic()))
        if stopped_at is None and item[0] == 300:  # the first visitor is gone, the second is in view
            assert wait_until(lambda: "entered" in _said(answers, ask_id).partition(" left ")[2], 5)
            _, kind, text, _ = ask("stop narrating")
            assert (kind, text) == ("answer", "Stopped narrating lobby.")
            stopped_at = len(answers.lines(ask_id))
    source.close()
    rig.loop.finish()
    time.sleep(1.2)  # a merged line would be due by now
    texts = [t for _, t, _ in answers.lines(ask_id)]
    assert len(texts) == stopped_at and 2 <= len(texts) <= 3, texts
    assert ask("stop narrating")[2] == "I was not narrating."

    _, kind, text, data = ask("give me a digest")
    assert (kind, text) == ("answer", "Last hour: 6 people, no fire."), text
    assert data["counts"] == {"person": 6}
    assert ask("summary of the last hour on the lobby camera")[2] == "Last hour on lobby: 6 people, no fire."


def _said(answers: Answers, ask_id: str) -> str:
    return " ".join(t for _, t, _ in answers.lines(ask_id))


def _tr(kind: str, event_id: str, label: str, track: int, pts: float, rule: str = "person") -> Transition:
    now = time.time()
    record = EventRecord(event_id, "lobby", label, rule, 0.9, None, now, 0, pts, track_id=track)
    if kind == "end":
        record.ended_at = now
    return Transition(kind, record, 0, pts)  # type: ignore[arg-type]


def test_lines_are_rate_limited_merged_and_count_each_object_once(narrating) -> None:
    _, narrator, answers, ask = narrating
    ask_id, *_ = ask("give me a running commentary of the lobby")
    frame = Frame("lobby", 0, 0.0, None, time.monotonic())  # type: ignore[arg-type]
    t = time.perf_counter()
    narrator.handle(_tr("start", "e1", "person", 1, 10.0), frame)
    cost = time.perf_counter() - t
    narrator.handle(_tr("start", "e1b", "person", 1, 10.0, rule="lobby-person"), frame)  # same person
    lines = answers.wait_lines(ask_id, 1)
    assert lines[0][1].endswith(" a person entered lobby"), lines
    for i in range(2, 5):  # three more people within a fraction of a second: one line, merged
        narrator.handle(_tr("start", f"e{i}", "person", i, 10.5), frame)
        time.sleep(0.05)
    narrator.handle(_tr("end", "e1", "person", 1, 22.0), frame)  # one rule's event ends: still there
    lines = answers.wait_lines(ask_id, 2)
    assert lines[1][1].endswith(" 3 people entered lobby; 4 people in lobby now"), lines
    narrator.handle(_tr("end", "e1b", "person", 1, 22.0, rule="lobby-person"), frame)
    narrator.handle(_tr("end", "e2", "person", 2, 23.0), frame)
    narrator.handle(_tr("start", "f1", "fire", 9, 23.0, rule="fire"), frame)
    lines = answers.wait_lines(ask_id, 3)
    assert lines[2][1].endswith(" 2 people left lobby; 2 people in lobby now; fire started on lobby"), lines
    assert lines[2][2]["counts"] == {"person": 2, "fire": 1}
    narrator.handle(_tr("end", "f1", "fire", 9, 27.0, rule="fire"), frame)
    narrator.handle(_tr("end", "e3", "person", 3, 28.0), frame)
    lines = answers.wait_lines(ask_id, 4)
    assert lines[3][1].endswith(" the fire on lobby ended after 4 s; the person left lobby after 18 s; "
                                "1 person in lobby now"), lines  # fmt: skip
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(lines)]
    assert min(gaps) >= 0.95, gaps  # at most one line per camera per second
    assert cost < 0.001  # the red loop's side is a queue put


def test_a_scheduled_digest_sends_lines_on_its_ask_until_stopped(narrating, frames: list) -> None:  # noqa: F811
    rig, _, answers, ask = narrating
    rig.feed(frames, 0, 260)  # a visit in the log, and the next begun
    ask_id, kind, text, data = ask("send me a digest every second")
    assert kind == "answer" and text.startswith("I will send you a digest of every camera every 1 s"), text
    assert text.endswith('Say "stop the digest" to end it.') and data["every_s"] == 1.0
    lines = answers.wait_lines(ask_id, 3, timeout=6)
    assert [t for _, t, _ in lines[:3]] == ["Last 1 s: no people, no fire."] * 3, lines
    # on a fixed schedule: a line sent late (a loaded machine) does not push the next ones back
    assert 1.5 <= lines[2][0] - lines[0][0] <= 2.7, lines
    _, kind, text, _ = ask("stop the digest")
    assert text == "Stopped 1 scheduled digest."
    count = len(answers.lines(ask_id))
    time.sleep(1.3)
    assert len(answers.lines(ask_id)) == count
    # the hour's digest sees the first visit and the second, begun
    assert ask("give me a digest")[2] == "Last hour: 2 people, no fire."


# -- over MQTT: `edge run` as a process ----------------------------------------------------------------


def test_narration_over_mqtt_sends_commentary_lines_on_the_ask_id(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    config = {
        "device": {"id": "dev1"},
        "data_dir": str(tmp_path / "data"),
        "cameras": {"lobby": {"source": str(PEOPLE)}},
        "watch": ["person"],
        "model": {"path": str(MODEL)},
        "mqtt": {"url": mosquitto.url, "stats_every_s": 1.0},
    }
    sub = Subscriber(mosquitto.port, ["reflex/dev1/#"])
    edge = Edge.running(config, tmp_path)

    def answers(ask_id: str, kind: str) -> list[dict]:
        return [a for a in sub.json_on("reflex/dev1/answers") if a["id"] == ask_id and a["kind"] == kind]

    try:
        assert wait_until(lambda: sub.on("reflex/dev1/availability"), 30), edge.text()
        ask = {"id": "narrate-1", "text": "narrate the lobby camera"}
        sub.client.publish("reflex/dev1/ask", json.dumps(ask), qos=1)
        assert wait_until(lambda: answers("narrate-1", "answer"), 10), edge.text()
        assert answers("narrate-1", "answer")[0]["text"].startswith("I will narrate lobby")
        assert wait_until(lambda: answers("narrate-1", "commentary"), 30), edge.text()
        line = answers("narrate-1", "commentary")[0]
        assert re.fullmatch(rf"{CLOCK} a person entered lobby", line["text"]), line
        assert line["v"] == 1 and line["data"]["camera"] == "lobby"
        sub.client.publish("reflex/dev1/ask", json.dumps({"id": "stop-1", "text": "stop narrating"}), qos=1)
        assert wait_until(lambda: answers("stop-1", "answer"), 10), edge.text()
        assert answers("stop-1", "answer")[0]["text"] == "Stopped narrating lobby."
    finally:
        edge.stop()
        sub.close()


def test_with_an_llm_blue_loop_an_arrival_line_is_followed_by_its_description(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """`blueloop.llm: true`: the narrator asks the blue loop (here a stand-in worker speaking the real
    protocol over real MQTT: the LLM cannot run here) to describe each arrival; the description
    follows the line on the same ask id. Without an arrival, nothing is asked."""
    from tests.test_delegate import Rig as DelegateRig
    from tests.test_delegate import Worker

    rig = DelegateRig(tmp_path / "data", mosquitto)
    worker = Worker(mosquitto.port)
    rig.start()
    narrator = Narrator(rig.control, rig.events, rate_s=0.1, enrich=rig.delegate)
    lines: list[tuple[str, str, dict]] = []
    rig.control.answer = lambda ask_id, kind, text, **extra: lines.append((kind, text, extra))  # type: ignore[method-assign]
    try:
        narrator.narrate_on("narrate-1", ["lobby"])
        narrator.handle(_tr("start", "e1", "person", 1, 1.0), None)  # type: ignore[arg-type]
        assert wait_until(lambda: any(extra.get("data", {}).get("enriched") for _, _, extra in lines), 15), (
            lines
        )
        kinds = [kind for kind, _, _ in lines]
        assert kinds and set(kinds) == {"commentary"}
        entered = next(text for _, text, _ in lines if "entered" in text)
        described = next(text for _, text, extra in lines if extra.get("data", {}).get("enriched"))
        assert "a person entered lobby" in entered
        assert "on lobby: I looked at" in described  # the worker's description, on the same ask
        assert [r["kind"] for r in worker.requests] == ["describe"]
        narrator.handle(_tr("end", "e1", "person", 1, 4.0), None)  # type: ignore[arg-type]
        time.sleep(1.0)
        assert len(worker.requests) == 1  # a departure asks nothing
    finally:
        narrator.stop()
        worker.close()
        rig.stop()

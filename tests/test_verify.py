"""Two-phase alerts: a rule with `verify: true` alerts at once as provisional; the blue loop's verdict
is the same alert id again, confirmed or retracted; `confirmed_only` push channels get confirmed ones.

The end-to-end test runs `edge run` and a real blue-loop server on a real mosquitto, with real webhook
receivers on loopback. The unit tests drive the Verifier with the delegate's FinishedJob (the delegate
itself is played by a small stand-in that stores the job as the real one does), over a real EventLog,
Journal and push workers.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from edge.bus.push import PushWorker, start_push_workers
from edge.config import parse_config
from edge.delegate import FinishedJob
from edge.journal import Journal
from edge.outbox import Topics
from edge.rules import Rule, Transition
from edge.store import EventLog
from edge.store.models import push_channel
from edge.types import AlertRecord, EventRecord
from edge.verify import Verifier
from tests.conftest import DATA, MODEL, REPO, needs_shared
from tests.support import Mosquitto, Subscriber, wait_until
from tests.test_bus import Edge
from tests.test_dual_loop import Blueloop
from tests.test_push import Receiver

PEOPLE = DATA / "people" / "intel_one-by-one-person-detection.mp4"
CONFIG = """
push:
  hook: {{type: webhook, url: "{hook}"}}
  pager: {{type: webhook, url: "{pager}", confirmed_only: true}}
rules:
  - name: visitor
    label: person
    verify: true
    push: [hook, pager]
"""


def bodies(receiver: Receiver) -> list[dict]:
    return [json.loads(r.body) for r in receiver.accepted]


class StandInDelegate:
    """What the Verifier uses of the Delegate: `submit` (the job stored as the real one stores it),
    `listen` and `events`."""

    def __init__(self, events: EventLog) -> None:
        self.events = events
        self.listeners: list[Any] = []
        self.jobs: list[dict] = []

    def listen(self, listener: Any) -> None:
        self.listeners.append(listener)

    def submit(self, ask_id: str | None, camera: str | None, kind: str, prompt: str, *, job_id: str,
               seconds: float, deadline_s: float, extra_context: dict) -> str:  # fmt: skip
        now = time.time()
        self.events.add_job(
            job_id,
            ask_id,
            camera,
            kind,
            prompt,
            created_at=now,
            deadline=now + deadline_s,
            seconds=seconds,
            context=extra_context,
        )
        self.jobs.append(
            {
                "job_id": job_id,
                "ask_id": ask_id,
                "camera": camera,
                "kind": kind,
                "seconds": seconds,
                "deadline_s": deadline_s,
                "context": extra_context,
            }
        )
        return job_id


class Rig:
    """EventLog + Journal + Verifier + two webhook receivers (`hook`, `pager` confirmed_only)."""

    def __init__(self, tmp_path: Path) -> None:
        self.hook, self.pager = Receiver().start(), Receiver().start()
        self.cfg = parse_config(CONFIG.format(hook=self.hook.url, pager=self.pager.url), "c.yaml")
        self.events = EventLog(tmp_path / "data")
        self.events.ensure_camera("lobby", "lobby.mp4")
        self.journal = Journal(self.events, Topics("reflex", "dev1"), [Rule(r) for r in self.cfg.rules])
        self.journal.confirmed_only = frozenset({"pager"})
        self.stop = threading.Event()
        self.delegate = StandInDelegate(self.events)
        self.workers: list[PushWorker] = []
        self.verifier = self.new_verifier()
        self.workers = start_push_workers(self.events, self.cfg, self.stop, poll_s=0.05)

    def new_verifier(self) -> Verifier:
        verifier = Verifier(self.journal, self.delegate, self.wake, self.stop, after_s=0.0)  # type: ignore[arg-type]
        verifier.attach()
        return verifier

    def wake(self) -> None:
        for worker in self.workers:
            worker.notify()

    def event(self, eid: str) -> EventRecord:
        ev = EventRecord(
            id=eid,
            camera="lobby",
            label="person",
            rule="visitor",
            score=0.9,
            box=(10.0, 20.0, 110.0, 220.0),
            started_at=time.time(),
            frame=1,
            pts=0.1,
        )
        self.journal.handle(Transition("start", ev, 1, 0.1), None)
        return ev

    def alert(self, ev: EventRecord, aid: str) -> AlertRecord:
        """A provisional alert as the red loop makes it (rule with verify), through the sinks in order."""
        rec = AlertRecord(id=aid, event_id=ev.id, rule="visitor", camera="lobby", label="person",
                          severity="warning", text="person on lobby", at=time.time(), frame=2, pts=0.2,
                          box=ev.box, phase="provisional")  # fmt: skip
        tr = Transition("alert", ev, 2, 0.2, rec)
        self.journal.handle(tr, None)
        self.verifier.handle(tr, None)  # type: ignore[arg-type]
        self.wake()
        return rec

    def verdict(self, job_id: str, status: str, data: object, text: str = "") -> None:
        for listener in self.delegate.listeners:
            listener(FinishedJob(job_id, None, "lobby", "verify", status, text, data, None, 40.0))

    def mqtt_phases(self, aid: str) -> list[str]:
        rows = self.events.outbox_pending(channel="mqtt")
        return [json.loads(m.payload)["phase"] for m in rows if m.message_id == aid]

    def close(self) -> None:
        self.stop.set()
        self.wake()
        for worker in self.workers:
            worker.join(5)
        self.journal.close()
        self.events.close()
        self.hook.stop()
        self.pager.stop()


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path)
    yield r
    r.close()


def test_a_retraction_reaches_normal_channels_and_never_a_confirmed_only_one(rig: Rig) -> None:
    ev = rig.event("ev1")
    rig.alert(ev, "a1")
    assert wait_until(lambda: rig.delegate.jobs, 5)
    job = rig.delegate.jobs[0]
    assert job["kind"] == "verify" and job["ask_id"] is None and job["camera"] == "lobby"
    assert job["deadline_s"] == 30.0 and job["seconds"] > 0
    assert job["context"]["label"] == "person"
    assert job["context"]["alert"]["id"] == "a1" and job["context"]["alert"]["phase"] == "provisional"
    assert wait_until(lambda: len(rig.hook.accepted) == 1, 5)

    rig.verdict(job["job_id"], "done", {"confirmed": False}, "retracted: no person seen in 0 of 8 keyframes")
    assert wait_until(lambda: len(rig.hook.accepted) == 2, 5), rig.hook.requests
    first, second = bodies(rig.hook)
    assert (first["id"], first["phase"], first["text"]) == ("a1", "provisional", "person on lobby")
    assert (second["id"], second["event_id"], second["phase"]) == ("a1", "ev1", "retracted")
    assert second["text"] == "person on lobby (retracted: not seen again)"
    assert rig.mqtt_phases("a1") == ["provisional", "retracted"]  # same message id, two messages
    (row,) = rig.events.alerts(event_id="ev1")
    assert row["phase"] == "retracted" and row["text"].endswith("(retracted: not seen again)")

    # A repeat of the event carries its phase (and asks nothing more); the pager still hears nothing.
    rig.alert(ev, "a2")
    assert wait_until(lambda: len(rig.hook.accepted) == 3, 5)
    assert bodies(rig.hook)[2]["phase"] == "retracted" and len(rig.delegate.jobs) == 1
    time.sleep(0.3)
    assert rig.pager.requests == []
    assert rig.events.outbox_pending(channel=push_channel("pager")) == []


def test_no_answer_keeps_the_alert_provisional_a_repeat_asks_again_and_confirmed_reaches_all(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="edge.verify")
    ev = rig.event("ev2")
    rig.alert(ev, "b1")
    assert wait_until(lambda: len(rig.delegate.jobs) == 1, 5)
    rig.verdict(rig.delegate.jobs[0]["job_id"], "timeout", None, "the blue loop did not answer within 30 s")
    assert "verification timed out" in caplog.text and "it stays provisional" in caplog.text
    assert rig.mqtt_phases("b1") == ["provisional"]
    assert rig.events.alerts(event_id="ev2")[0]["phase"] == "provisional"

    rig.alert(ev, "b2")  # the event's next repeat asks again
    assert wait_until(lambda: len(rig.delegate.jobs) == 2, 5)
    rig.verdict(rig.delegate.jobs[1]["job_id"], "done", {"confirmed": True}, "confirmed: a person seen")
    assert wait_until(lambda: len(rig.pager.accepted) == 1, 5), rig.pager.requests
    assert [(b["id"], b["phase"]) for b in bodies(rig.pager)] == [("b2", "confirmed")]
    assert bodies(rig.pager)[0]["text"] == "person on lobby (confirmed)"
    assert wait_until(lambda: len(rig.hook.accepted) == 3, 5)
    assert [(b["id"], b["phase"]) for b in bodies(rig.hook)] == [
        ("b1", "provisional"), ("b2", "provisional"), ("b2", "confirmed")
    ]  # fmt: skip

    rig.alert(ev, "b3")  # repeats of a confirmed event go everywhere, confirmed
    assert wait_until(lambda: len(rig.pager.accepted) == 2, 5)
    assert bodies(rig.pager)[1]["phase"] == "confirmed" and len(rig.delegate.jobs) == 2


def test_a_verdict_for_a_job_of_the_last_run_finds_its_alert_in_the_event_log(rig: Rig) -> None:
    ev = rig.event("ev3")
    rig.alert(ev, "c1")
    assert wait_until(lambda: rig.delegate.jobs, 5)
    rig.delegate.listeners.clear()
    rig.verifier = rig.new_verifier()  # a restart: the new verifier never saw the alert
    rig.verdict(rig.delegate.jobs[0]["job_id"], "done", {"confirmed": True})
    assert rig.mqtt_phases("c1") == ["provisional", "confirmed"]
    assert wait_until(lambda: [b["phase"] for b in bodies(rig.pager)] == ["confirmed"], 5)


def test_a_confirmed_only_channel_drops_rows_queued_before_it_was_set(rig: Rig) -> None:
    """Rows queued for the channel by an older configuration: only the confirmed one is sent."""
    rig.event("ev4")
    for aid, phase in (("d1", "provisional"), ("d2", "retracted"), ("d3", "confirmed")):
        rec = AlertRecord(
            id=aid,
            event_id="ev4",
            rule="visitor",
            camera="lobby",
            label="person",
            severity="warning",
            text="x",
            at=time.time(),
            frame=2,
            pts=0.2,
            phase=phase,
        )
        payload = {"v": 1, "id": aid, "event_id": "ev4", "phase": phase, "text": "x"}
        rig.events.alert(rec, payload, "reflex/dev1/alerts", push=("pager",))
    rig.wake()
    assert wait_until(lambda: len(rig.pager.accepted) == 1, 5)
    time.sleep(0.3)
    assert [b["id"] for b in bodies(rig.pager)] == ["d3"] and len(rig.pager.requests) == 1
    assert rig.events.outbox_pending(channel=push_channel("pager")) == []
    states = {a["id"]: a["deliveries"]["push:pager"]["state"] for a in rig.events.alert_deliveries()}
    assert states == {"d1": "dropped", "d2": "dropped", "d3": "delivered"}


def test_without_mqtt_nothing_is_asked_and_the_log_says_alerts_stay_provisional(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    rig.verifier = Verifier(rig.journal, rig.delegate, rig.wake, rig.stop, reachable=False)  # type: ignore[arg-type]
    ev = rig.event("ev5")
    rig.alert(ev, "e1")
    rig.alert(ev, "e2")
    time.sleep(0.2)
    assert rig.delegate.jobs == []
    assert caplog.text.count("no MQTT broker is configured") == 1 and "stay provisional" in caplog.text


@needs_shared
def test_a_verified_person_alert_goes_out_provisional_then_confirmed_by_the_blue_loop(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    hook, pager = Receiver().start(), Receiver().start()
    config = {
        "device": {"id": "dev1"}, "data_dir": str(tmp_path / "data"), "model": {"path": str(MODEL)},
        "cameras": {"lobby": {"source": str(PEOPLE), "loop": True}},
        "watch": [],
        "rules": [{"name": "visitor", "label": "person", "verify": True, "push": ["hook", "pager"]}],
        "push": {"hook": {"type": "webhook", "url": hook.url},
                 "pager": {"type": "webhook", "url": pager.url, "confirmed_only": True}},
        "mqtt": {"url": mosquitto.url},
    }  # fmt: skip
    path = tmp_path / "edge.yaml"
    path.write_text(yaml.safe_dump(config))
    sub = Subscriber(mosquitto.port, ["reflex/dev1/alerts"])
    worker = Blueloop(mosquitto.url, tmp_path)
    edge = Edge(path)
    edge.start()
    try:

        def phases() -> dict[str, list[str]]:
            out: dict[str, list[str]] = {}
            for a in sub.json_on("reflex/dev1/alerts"):
                out.setdefault(a["id"], []).append(a["phase"])
            return out

        def verified() -> bool:
            return any("confirmed" in p for p in phases().values())

        assert wait_until(verified, 45), edge.text() + worker.log.read_text()
        alerts = sub.json_on("reflex/dev1/alerts")
        first = alerts[0]
        assert first["phase"] == "provisional" and first["text"] == "Person on lobby"
        done = next(a for a in alerts if a["phase"] == "confirmed")
        assert done["id"] == first["id"] and done["event_id"] == first["event_id"]
        assert done["text"] == "Person on lobby (confirmed)"
        assert phases()[first["id"]] == ["provisional", "confirmed"]
        assert wait_until(lambda: any(b["phase"] == "confirmed" for b in bodies(pager)), 10)
        assert all(b["phase"] == "confirmed" for b in bodies(pager))
        assert wait_until(lambda: len(bodies(hook)) >= 2, 10)
        assert [(b["id"], b["phase"]) for b in bodies(hook)][:2] == [
            (first["id"], "provisional"), (first["id"], "confirmed")
        ]  # fmt: skip
        assert "verify" in worker.log.read_text()
    finally:
        edge.stop()
        worker.stop()
        sub.close()
        hook.stop()
        pager.stop()
    shown = subprocess.run(
        [sys.executable, "-m", "edge", "alerts", "--data", str(tmp_path / "data"), "--json"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=30,
        check=True,
    )
    rows = {r["id"]: r for r in map(json.loads, shown.stdout.splitlines())}
    assert rows[first["id"]]["phase"] == "confirmed"

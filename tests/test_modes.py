"""Modes (arm/disarm): which rules alert and which push channels deliver, switched from every surface.

Real parts throughout: red loops over the real people and fire clips with the real detector, a real
SQLite event log, a real mosquitto for the MQTT end (the appliance in this process, so a second one
can start on the same data folder), real HTTP receivers for push channels and the real admin app
served on a loopback port. The schedule runs on an injected clock.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from datetime import time as dtime
from pathlib import Path
from typing import Any

import pytest

from edge.appliance import Appliance
from edge.bus.push import start_push_workers
from edge.config import ConfigError, EdgeConfig
from edge.config.loader import parse_config
from edge.config.models import ModeConfig, ModelConfig, ModeSwitch, RuleConfig
from edge.control import Control, ControlError
from edge.instructions import Router
from edge.journal import Journal
from edge.live import LiveView
from edge.modes import ModeScheduler, last_switch, push_in_mode, rule_in_mode
from edge.outbox import Topics
from edge.redloop import RedLoop
from edge.reflex import build_detector
from edge.store import EventLog
from edge.timefmt import clock
from edge.types import Frame
from edge.wiring import build_rules, known_labels, needs_objects
from tests.admin_support import ADMIN, ADMIN_PW, api, csrf, set_up_admin
from tests.conftest import DATA, MODEL, REPO, needs_shared
from tests.support import Mosquitto, Receiver, Subscriber, read_frames, wait_until
from tests.test_control import PEOPLE, Recorder

TOPICS = Topics("reflex", "dev1")
FIRE = DATA / "fire" / "fdv_visual_fire.mp4"
ALL_DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


def config(tmp_path: Path, **extra: Any) -> EdgeConfig:
    return EdgeConfig.model_validate(
        {"device": {"id": "dev1"}, "data_dir": str(tmp_path / "data"), "watch": [],
         "model": {"path": str(MODEL)}, **extra}
    )  # fmt: skip


class ModeRig:
    """One camera's red loop behind a control surface with modes, on a real event log."""

    def __init__(self, cfg: EdgeConfig, objects: object, *, camera: str = "door", now: float | None = None):
        self.cfg = cfg
        self.camera = camera
        self.events = EventLog(Path(cfg.data_dir), reserve_bytes=0)
        self.events.ensure_camera(camera, "clip")
        rules = build_rules(cfg, REPO, allow_empty=True)
        self.journal = Journal(self.events, TOPICS, rules)
        self.recorder = Recorder()
        self.control = Control(
            self.events, TOPICS, self.journal, known_labels=known_labels(cfg, REPO), push_channels=cfg.push,
            detector=lambda: objects, modes=cfg.modes, mode=cfg.mode,
        )  # fmt: skip
        self.control.load_mode(cfg.mode_schedule, now=now)
        active = self.control.load_rules(rules)
        uses = objects if needs_objects(self.control.all_rules()) else None
        self.live = LiveView()
        self.loop = RedLoop(camera, cfg, active, uses, [self.journal, self.recorder], live=self.live)
        self.control.attach({camera: self.loop}, None)

    def feed(self, clip: list, start: int, stop: int) -> None:
        for index, pts, image in clip[start:stop]:
            self.loop.process(Frame(self.camera, index, pts, image, time.monotonic()))

    def alerts(self, rule: str) -> list[Any]:
        return [t.alert for t in self.recorder.transitions if t.kind == "alert" and t.event.rule == rule]

    def audit(self, action: str = "mode") -> list[tuple[str, dict]]:
        return [(r["who"], r["detail"]) for r in reversed(self.events.audit_log()) if r["action"] == action]

    def close(self) -> None:
        self.journal.close()
        self.events.close()


@pytest.fixture(scope="module")
def yolox() -> object:
    return build_detector(ModelConfig(path=str(MODEL)), REPO)


@pytest.fixture(scope="module")
def people() -> list[tuple[int, float, object]]:
    """The first 260 frames of the people clip: one whole visit (frames 61-194) and the quiet after."""
    return read_frames(PEOPLE, 260)


@pytest.fixture(scope="module")
def fire_frames() -> list[tuple[int, float, object]]:
    return read_frames(FIRE)


# -- the config and what a mode means ---------------------------------------------------------------


def test_the_config_has_home_away_night_and_refuses_unknown_names_in_one_line(tmp_path: Path) -> None:
    plain = EdgeConfig()
    assert list(plain.modes) == ["home", "away", "night"] and plain.mode == "home"
    assert all(m == ModeConfig() for m in plain.modes.values())  # every rule, every channel
    cfg = EdgeConfig(
        rules=[{"name": "door", "label": "person", "modes": ["away", "vacation"]}],
        modes={"home": {"rules": ["fire"]}, "vacation": {"push": []}},
        mode="vacation",
        mode_schedule=[{"mode": "night", "at": "23:00"}, {"mode": "home", "at": "07:00", "days": ["mon"]}],
    )
    assert list(cfg.modes) == ["home", "away", "night", "vacation"]  # the defaults, then the others
    assert cfg.modes["home"].rules == ["fire"] and cfg.modes["away"].rules is None
    assert cfg.mode_schedule[0].days == ALL_DAYS and cfg.mode_schedule[1].at == dtime(7, 0)

    def refused(text: str) -> str:
        """What `edge run` says of a config file: one line naming the file, line, key and problem."""
        with pytest.raises(ConfigError) as err:
            parse_config(text, "edge.yaml")
        said = str(err.value)
        assert "\n" not in said, said
        return said

    assert (
        refused("mode: vacation\n") == "edge.yaml:1: mode: unknown mode 'vacation' (modes: home, away, night)"
    )
    assert refused(
        "rules:\n  - {name: front-door, label: person}\nmodes:\n  away:\n    rules: [frontdoor]\n"
    ) == (
        "edge.yaml:5: modes.away.rules.0: mode 'away' names unknown rule 'frontdoor' (did you mean "
        "'front-door'?)"
    )
    assert refused("modes:\n  night: {push: [phone]}\n") == (
        "edge.yaml:2: modes.night.push.0: mode 'night' names unknown push channel 'phone' "
        "(push: none configured)"
    )
    assert refused("mode_schedule:\n  - {mode: nap, at: '13:00'}\n") == (
        "edge.yaml:2: mode_schedule.0.mode: mode_schedule switches to unknown mode 'nap' "
        "(modes: home, away, night)"
    )
    assert refused("rules:\n  - name: door\n    label: person\n    modes: [awya]\n") == (
        "edge.yaml:4: rules.0.modes.0: rule 'door' names unknown mode 'awya' (modes: home, away, night)"
    )
    assert "camera name 'mode' is reserved" in refused("cameras:\n  mode: {source: 'usb:0'}\n")
    assert "mode name 'Day Time' must be 1-63 characters" in refused("modes:\n  Day Time: {}\n")
    assert "hour value is outside expected range" in refused("mode_schedule: [{mode: home, at: '25:00'}]\n")


def test_what_a_mode_lets_through() -> None:
    modes = {"home": ModeConfig(rules=["door"], push=["siren"]), "away": ModeConfig()}
    person, door = RuleConfig(name="yard", label="person"), RuleConfig(name="door", label="person")
    fire, smoke = RuleConfig(name="fire", label="fire"), RuleConfig(name="smoke", label="smoke")
    only_away = RuleConfig(name="kitchen-fire", label="fire", modes=["away"])
    assert [rule_in_mode(r, "home", modes) for r in (person, door, fire, smoke, only_away)] == [
        False, True, True, True, False,
    ]  # fmt: skip
    assert all(rule_in_mode(r, "away", modes) for r in (person, door, fire, smoke, only_away))
    assert push_in_mode("siren", "home", modes) and not push_in_mode("phones", "home", modes)
    assert push_in_mode("phones", "away", modes)


def test_the_most_recent_scheduled_switch_counts() -> None:
    monday = date(2024, 1, 1)
    assert monday.weekday() == 0

    def at(day: date, hh: int, mm: int, ss: int = 0) -> float:
        return datetime.combine(day, dtime(hh, mm, ss)).timestamp()

    schedule = [
        ModeSwitch(mode="away", at=dtime(8, 0), days=["mon", "tue", "wed", "thu", "fri"]),
        ModeSwitch(mode="home", at=dtime(18, 0)),
        ModeSwitch(mode="night", at=dtime(23, 0), days=["sat"]),
    ]
    friday, saturday = monday + timedelta(days=4), monday + timedelta(days=5)
    assert last_switch(schedule, at(monday, 7, 59)) == (at(monday - timedelta(days=1), 18, 0), schedule[1])
    assert last_switch(schedule, at(monday, 8, 0)) == (at(monday, 8, 0), schedule[0])  # at the second
    assert last_switch(schedule, at(friday, 19, 0)) == (at(friday, 18, 0), schedule[1])
    assert last_switch(schedule, at(saturday, 23, 30)) == (at(saturday, 23, 0), schedule[2])
    assert last_switch(schedule, at(saturday, 12, 0)) == (at(friday, 18, 0), schedule[1])  # no away on sat
    assert last_switch([], at(monday, 12, 0)) is None


# -- switching over MQTT: at once, and after a restart ----------------------------------------------


@needs_shared
def test_switching_over_mqtt_changes_which_rules_alert_at_once_and_survives_a_restart(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """`guest` alerts at home only, `visitor` away only, both on the same person walking through the
    door; a switch while the person is in view ends the one's event and starts the other's at once.
    The webhook is an away-only channel. A second appliance on the same data folder starts in the mode
    last switched to, though the config says home."""
    hook = Receiver()
    cfg = config(
        tmp_path,
        cameras={"door": {"source": str(PEOPLE), "loop": True}},
        rules=[
            {"name": "guest", "label": "person", "push": ["hook"], "modes": ["home"]},
            {"name": "visitor", "label": "person", "push": ["hook"], "modes": ["away"]},
        ],
        modes={"home": {"push": []}},
        push={"hook": {"type": "webhook", "url": hook.url, "retry_min_s": 0.1}},
        mqtt={"url": mosquitto.url, "stats_every_s": 1.0},
    )
    sub = Subscriber(mosquitto.port, ["reflex/dev1/#"])

    def alerts(rule: str) -> list[dict]:
        return [a for a in sub.json_on("reflex/dev1/alerts") if a["rule"] == rule]

    def ends(rule: str) -> list[dict]:
        return [e for e in sub.json_on("reflex/dev1/events") if e["type"] == "end" and e["rule"] == rule]

    appliance = Appliance(cfg, REPO, build_rules(cfg, REPO))
    appliance.start()
    try:
        assert wait_until(lambda: sub.last("reflex/dev1/mode/state") == b"home", 20)
        assert wait_until(lambda: alerts("guest"), 40)  # home: the guest rule sees the first visit
        assert alerts("visitor") == [] and ends("guest") == []
        sub.publish("reflex/dev1/mode/set", "away")
        assert wait_until(lambda: ends("guest"), 5)  # at once: the guest event ended, not 3 s later
        assert wait_until(lambda: alerts("visitor"), 5)  # the same person, now the visitor rule's
        assert wait_until(lambda: sub.last("reflex/dev1/mode/state") == b"away", 5)
        assert sub.last("reflex/dev1/door/active/guest") == b"OFF"
        assert wait_until(lambda: [b["rule"] for b in hook.bodies] == ["visitor"], 10), hook.bodies
        assert appliance.control.mode == "away"

        sub.publish("reflex/dev1/mode/set", "vacation")
        assert wait_until(lambda: any(a["kind"] == "error" for a in sub.json_on("reflex/dev1/answers")), 5)
        error = next(a for a in sub.json_on("reflex/dev1/answers") if a["kind"] == "error")
        assert error["text"] == "reflex/dev1/mode/set: unknown mode 'vacation' (modes: home, away, night)"
        assert appliance.control.mode == "away"  # nothing changed
    finally:
        appliance.stop()
    assert sub.last("reflex/dev1/mode/state") == b"away"  # retained: the mode is still the mode

    sub.messages.clear()
    sub.publish("reflex/dev1/mode/set", "home", retain=True)  # retained: it would switch on every connect
    again = Appliance(cfg, REPO, build_rules(cfg, REPO))
    again.start()
    try:
        assert again.control.mode == "away"  # the stored mode wins over the config's `mode: home`
        assert wait_until(lambda: sub.json_on("reflex/dev1/answers"), 10)
        assert "retained mode command is not taken" in sub.json_on("reflex/dev1/answers")[0]["text"]
        assert again.control.mode == "away"
        assert {r.name for r in again.loops["door"].events.rules} == {"visitor"}
        assert wait_until(lambda: alerts("visitor"), 40)  # the clip starts again: the first visit
        assert alerts("guest") == []
        assert wait_until(lambda: sub.last("reflex/dev1/door/active/guest") == b"OFF", 5)
    finally:
        again.stop()
        sub.close()
        hook.close()
    audit = EventLog(Path(cfg.data_dir), reserve_bytes=0)
    try:
        rows = [(r["who"], r["detail"]) for r in reversed(audit.audit_log()) if r["action"] == "mode"]
    finally:
        audit.close()
    assert rows == [("mqtt", {"mode": "away", "was": "home"})]  # refused ones changed nothing


# -- fire in every mode ------------------------------------------------------------------------------


@needs_shared
def test_the_fire_rule_alerts_in_every_mode(tmp_path: Path, fire_frames: list) -> None:
    """Home lets no rule through, yet the fire rule alerts there; a fire rule that names its modes
    alerts only in those. A switch does not interrupt an open fire event."""
    cfg = config(
        tmp_path,
        rules=[
            {"name": "fire", "label": "fire", "repeat_s": 1.0, "severity": "critical"},
            {"name": "fire-away", "label": "fire", "modes": ["away"]},
        ],
        modes={"home": {"rules": []}, "night": {"rules": []}},
    )
    rig = ModeRig(cfg, None)
    try:
        windows = {}
        for n, mode in enumerate(["home", "away", "night"]):
            if mode != "home":
                rig.control.set_mode(mode, by="test")
            before = len(rig.alerts("fire"))
            rig.feed(fire_frames, n * 60, n * 60 + 60)  # 2 s of burning each
            windows[mode] = len(rig.alerts("fire")) - before
        assert all(count >= 1 for count in windows.values()), windows
        kinds = [t.kind for t in rig.recorder.transitions if t.event.rule == "fire"]
        assert kinds.count("start") == 1 and "end" not in kinds  # one fire event throughout
        away = [t.kind for t in rig.recorder.transitions if t.event.rule == "fire-away"]
        assert away[:2] == ["start", "alert"] and away[-1] == "end" and away.count("start") == 1
    finally:
        rig.close()


# -- instructions -------------------------------------------------------------------------------------


def answers(events: EventLog) -> list[dict]:
    return [json.loads(m.payload) for m in events.outbox_pending(limit=1000) if m.kind == "answer"]


@needs_shared
def test_instructions_switch_the_mode_and_say_what_changed(
    tmp_path: Path, yolox: object, people: list
) -> None:
    cfg = config(
        tmp_path,
        rules=[{"name": "fire", "label": "fire"}, {"name": "door", "label": "person"}],
        modes={"home": {"rules": []}, "night": {"rules": ["door"]}},
    )
    rig = ModeRig(cfg, yolox)
    router = Router(rig.control, rig.live, rig.events, rig.control.known_labels)
    rig.control.router = router

    def ask(text: str) -> dict:
        ask_id = rig.control.ask(None, text, None, "mqtt")
        assert wait_until(
            lambda: any(a["id"] == ask_id and a["kind"] != "ack" for a in answers(rig.events)), 10
        )
        return next(a for a in answers(rig.events) if a["id"] == ask_id and a["kind"] != "ack")

    try:
        rig.feed(people, 0, 90)  # someone walks in; home watches fire only
        assert rig.alerts("door") == []
        said = ask("I'm leaving")
        assert said["kind"] == "answer" and said["data"]["mode"] == "away"
        assert said["text"] == "Switched to away mode (was home). Now alerting on door."
        rig.feed(people, 90, 130)
        assert len(rig.alerts("door")) == 1  # at once: the person still there alerts now
        said = ask("what mode are you in?")
        state = said["data"]
        assert state["summary"] == "Alerting on fire, door." and state["set_by"] == "instruction"
        assert said["text"] == (
            f"I am in away mode (since {clock(state['set_at'])}, set by instruction). "
            "Alerting on fire, door. Modes: home, away, night."
        )
        assert ask("arm away")["text"].startswith("Already in away mode; nothing changed.")
        said = ask("Good night")
        assert said["data"]["mode"] == "night" and said["data"]["rules_off"] == []
        said = ask("arm vacation")
        assert (
            said["kind"] == "error" and said["text"] == "unknown mode 'vacation' (modes: home, away, night)"
        )
        said = ask("disarm")
        assert said["text"] == "Switched to home mode (was night). No longer alerting on door."
        assert rig.recorder.kinds("door")[-1] == "end"  # its event ended with the switch
        said = ask("what mode are you in?")
        assert said["data"]["summary"] == "Alerting on fire. Not alerting on door."  # fire: every mode
        assert said["text"].count("Not alerting on door.") == 1
        assert rig.audit() == [
            ("instruction", {"mode": "away", "was": "home"}),
            ("instruction", {"mode": "night", "was": "away"}),
            ("instruction", {"mode": "home", "was": "night"}),
        ]
    finally:
        router.close()
        rig.close()


MODE_PHRASES = [
    ("arm away", "away"), ("Arm night", "night"), ("arm home", "home"), ("disarm", "home"),
    ("Disarm the system", "home"), ("I'm home!", "home"), ("I’m home", "home"), ("we're back", "home"),
    ("I'm leaving", "away"), ("going out", "away"), ("We are going out now", "away"),
    ("Good night", "night"), ("goodnight!", "night"), ("arm", "away"), ("arm stay", "home"),
    ("switch to night mode", "night"), ("set the mode to away", "away"), ("night mode", "night"),
    ("turn on away mode", "away"), ("arm vacation", "vacation"), ("switch to vacation", "vacation"),
    ("party mode", "party"),  # said with "mode": taken as said, refused by name when it is not one
]  # fmt: skip


def test_the_parser_knows_the_mode_phrases_and_leaves_the_others_alone() -> None:
    from edge.instructions import Context, parse

    ctx = Context(
        frozenset({"person", "fire"}), ("lobby", "door"), modes=("home", "away", "night", "vacation")
    )
    for text, mode in MODE_PHRASES:
        decision = parse(text, None, ctx)
        assert (decision.kind, decision.task, decision.mode) == ("control", "set_mode", mode), text
    for text in ("what mode are you in?", "Which mode is on", "is the system armed?"):
        assert parse(text, None, ctx).task == "mode_state", text
    others = {
        "switch to lobby": "unknown",
        "alert me if someone is at the door": "rule",
        "pause the lobby camera": "control",
        "how many people are in the lobby?": "question",
    }
    for text, kind in others.items():
        decision = parse(text, None, ctx)
        assert decision.kind == kind and decision.task not in ("set_mode", "mode_state"), text


# -- the schedule --------------------------------------------------------------------------------------


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@needs_shared
def test_the_schedule_switches_at_its_time_with_an_injected_clock(
    tmp_path: Path, yolox: object, people: list
) -> None:
    monday = date(2024, 1, 1)
    clock = Clock(datetime.combine(monday, dtime(7, 59)).timestamp())
    cfg = config(
        tmp_path,
        rules=[{"name": "door", "label": "person"}],
        modes={"home": {"rules": []}},
        mode_schedule=[
            {"mode": "away", "at": "08:00", "days": ["mon", "tue", "wed", "thu", "fri"]},
            {"mode": "home", "at": "18:00"},
        ],
    )
    rig = ModeRig(cfg, yolox, now=clock())
    scheduler = ModeScheduler(rig.control, cfg.mode_schedule, clock=clock, every_s=0.02)
    stop = threading.Event()
    try:
        assert rig.control.mode == "home"
        rig.feed(people, 0, 90)
        clock.now += 59
        assert scheduler.tick() is None and rig.control.mode == "home"  # 07:59:59
        assert rig.alerts("door") == []
        clock.now += 2
        change = scheduler.tick()  # 08:00:01
        assert change is not None and change.mode == "away" and change.rules_on == ("door",)
        assert scheduler.tick() is None  # once
        rig.feed(people, 90, 130)
        assert len(rig.alerts("door")) == 1
        thread = threading.Thread(target=scheduler.run, args=(stop,), daemon=True)
        thread.start()  # the thread the appliance runs, on the same clock
        clock.now = datetime.combine(monday, dtime(18, 0, 1)).timestamp()
        assert wait_until(lambda: rig.control.mode == "home", 5)
        assert rig.recorder.kinds("door")[-1] == "end"
        clock.now = datetime.combine(monday, dtime(12, 0)).timestamp()  # the clock set back: nothing
        time.sleep(0.1)
        assert rig.control.mode == "home"
        assert rig.audit() == [("schedule", {"mode": "away", "was": "home"}),
                               ("schedule", {"mode": "home", "was": "away"})]  # fmt: skip
    finally:
        stop.set()
        rig.close()


def test_a_switch_missed_while_stopped_is_applied_at_start_only_when_it_is_the_latest(tmp_path: Path) -> None:
    data = tmp_path / "data"

    def control(schedule: list[ModeSwitch], now: float, mode: str = "home") -> tuple[Control, EventLog]:
        events = EventLog(data, reserve_bytes=0)
        made = Control(events, TOPICS, Journal(events, TOPICS, []), known_labels={"person"}, mode=mode)
        made.load_mode(schedule, now=now)
        return made, events

    first, events = control([], time.time(), mode="away")  # first start: the config's mode, stored
    assert first.mode == "away" and first.mode_state().set_by == "config"
    first.set_mode("home", by="user:alice")
    set_at = events.setting("mode")["set_at"]
    events.close()

    def at(offset_s: float) -> dtime:
        return datetime.fromtimestamp(set_at + offset_s).time()

    night = [ModeSwitch(mode="night", at=at(120))]
    kept, events = control(night, set_at + 60)  # the latest switch (yesterday's) is before the user's
    assert kept.mode == "home"
    events.close()
    missed, events = control(night, set_at + 3600)  # stopped across the 2-minute switch
    assert missed.mode == "night" and missed.mode_state().set_by == "schedule"
    rows = [(r["who"], r["detail"]["mode"]) for r in events.audit_log() if r["action"] == "mode"]
    assert rows[0] == ("schedule", "night")
    events.close()
    replayed = [ModeSwitch(mode="away", at=at(3 * 3600)), ModeSwitch(mode="home", at=at(4 * 3600))]
    again, events = control(replayed, set_at + 5 * 3600)  # two missed: only the latest, home, counts
    assert again.mode == "home"
    events.close()
    with pytest.raises(ControlError, match=r"^unknown mode 'nap' \(modes: home, away, night\)$"):
        control([], time.time(), mode="nap")


# -- push channels --------------------------------------------------------------------------------------


@needs_shared
def test_push_channels_the_mode_leaves_out_get_no_alerts(tmp_path: Path, yolox: object, people: list) -> None:
    """At night only the siren gets alerts, away the phones too. An alert is gated as it is queued:
    one raised at night does not reach the phones after a switch to away."""
    phones, siren = Receiver(), Receiver()
    cfg = config(
        tmp_path,
        rules=[{"name": "door", "label": "person", "repeat_s": 1.0, "push": ["phones", "siren"]}],
        push={"phones": {"type": "webhook", "url": phones.url, "retry_min_s": 0.1},
              "siren": {"type": "webhook", "url": siren.url, "retry_min_s": 0.1}},
        modes={"night": {"push": ["siren"]}},
        mode="night",
    )  # fmt: skip
    rig = ModeRig(cfg, yolox)
    stop = threading.Event()
    workers = start_push_workers(rig.events, cfg, stop, poll_s=0.05)
    try:
        rig.feed(people, 0, 110)
        at_night = [a.id for a in rig.alerts("door")]
        assert at_night
        assert wait_until(lambda: len(siren.bodies) == len(at_night), 10)
        change = rig.control.set_mode("away", by="test")
        assert change.words() == "Switched to away mode (was night). The same rules alert as before. " \
            "Alerting on door. Push alerts go to every push channel."  # fmt: skip
        rig.feed(people, 110, 150)  # 4 s more of the visit: repeats, now away
        away = [a.id for a in rig.alerts("door")][len(at_night) :]
        assert away
        assert wait_until(lambda: len(siren.bodies) == len(at_night) + len(away), 10)
        assert wait_until(lambda: len(phones.bodies) == len(away), 10)
        time.sleep(0.3)
        assert [b["id"] for b in phones.bodies] == away  # none of the night's alerts
        assert [b["id"] for b in siren.bodies] == at_night + away
        assert rig.events.outbox_depth(channel="push:phones") == 0  # nothing queued to go later either
    finally:
        stop.set()
        for worker in workers:
            worker.notify()
            worker.join(5)
        rig.close()
        phones.close()
        siren.close()


# -- the admin page and /api/mode -----------------------------------------------------------------------


@pytest.fixture
def admin_site(tmp_path: Path) -> Iterator[Any]:
    from tests.test_admin_core import running

    with running(tmp_path, "site") as site:
        client = site.client()
        set_up_admin(client)
        made = api(client, "POST", "/api/users", {"name": "victor", "password": "viewer password 1",
                                                  "role": "viewer"})  # fmt: skip
        assert made.status_code == 201, made.text
        yield site


def test_the_admin_page_and_api_switch_the_mode_and_each_switch_is_audited(admin_site: Any) -> None:
    from tests.test_admin_core import login

    site = admin_site
    admin, viewer = login(site, ADMIN, ADMIN_PW), login(site, "victor", "viewer password 1")
    page = admin.get("/").text
    assert 'id="mode-select"' in page and '<option value="home" selected>' in page
    assert 'id="mode-select"' not in viewer.get("/").text and 'id="mode-name">home<' in viewer.get("/").text

    form = {"mode": "away", "csrf_token": csrf(admin, "/")}
    switched = admin.post("/mode", data=form)
    assert switched.status_code == 302 and switched.headers["location"].endswith("/#mode")
    shown = admin.get("/").text
    assert "Switched to away mode (was home)." in shown and 'id="mode-name">away<' in shown
    assert admin.post("/mode", data={"mode": "night"}).status_code == 400  # no CSRF token: refused
    refused = admin.post("/mode", data={"mode": "party", "csrf_token": csrf(admin, "/")})
    assert refused.status_code == 302
    assert "unknown mode &#39;party&#39; (modes: home, away, night)" in admin.get("/").text

    state = viewer.get("/api/mode").json()
    assert isinstance(state["set_at"], float) and time.time() - 60 < state["set_at"] <= time.time()
    assert state == {"mode": "away", "modes": ["home", "away", "night"], "set_at": state["set_at"],
                     "set_by": "user:alice", "active_rules": [], "inactive_rules": [], "push": None,
                     "summary": "No rule alerts in this mode."}  # fmt: skip
    # The page says the API's summary (the dashboard's script shows it as it refreshes), then when.
    assert f'id="mode-rules">{state["summary"]} Set ' in viewer.get("/").text
    assert api(viewer, "PUT", "/api/mode", {"mode": "home"}).status_code == 403
    bad = api(admin, "PUT", "/api/mode", {"mode": "party"})
    assert bad.status_code == 400 and bad.json() == {
        "error": "unknown mode 'party' (modes: home, away, night)"
    }
    assert api(admin, "PUT", "/api/mode", {}).json() == {"error": 'give the mode as {"mode": "NAME"}'}
    token = api(admin, "POST", "/api/tokens", {"name": "ha"}).json()["token"]
    script = site.client(headers={"Authorization": f"Bearer {token}"})
    done = script.put("/api/mode", json={"mode": "night"})  # a token needs no CSRF token
    assert done.status_code == 200, done.text
    assert done.json()["mode"] == "night" and done.json()["was"] == "away" and done.json()["changed"]
    assert done.json()["state"]["set_by"] == "token:ha"
    assert script.put("/api/mode", json={"mode": "night"}).json()["changed"] is False
    rows = [
        (r["who"], r["detail"], r["remote"])
        for r in reversed(site.events.audit_log())
        if r["action"] == "mode"
    ]
    assert rows == [
        ("user:alice", {"mode": "away", "was": "home"}, "127.0.0.1"),
        ("token:ha", {"mode": "night", "was": "away"}, "127.0.0.1"),
    ]
    assert site.control.mode == "night"


# -- the event log ------------------------------------------------------------------------------------


def test_a_v5_event_log_gains_the_settings_table(tmp_path: Path) -> None:
    data = tmp_path / "data"
    EventLog(data, reserve_bytes=0).close()
    with sqlite3.connect(data / "events.db") as db:
        db.execute("DROP TABLE settings")
        db.execute("PRAGMA user_version = 5")
    log = EventLog(data, reserve_bytes=0)
    try:
        assert log.setting("mode") is None
        before = time.time()
        log.set_setting("mode", "night", "mqtt")
        kept = log.setting("mode")
        assert kept == {"value": "night", "set_by": "mqtt", "set_at": kept["set_at"]}
        assert before <= kept["set_at"] <= time.time()
    finally:
        log.close()
    with sqlite3.connect(data / "events.db") as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 6

"""What the admin page may call of the appliance: the event log's new tables, the control surface's
cameras, acknowledgements, test pushes, sentences and audit rows, grab_frame, and Appliance.status().

Real parts throughout: SQLite files under tmp_path, the real people clip and detector, a real
appliance (no broker), real HTTP for the push receiver and the admin server, real sockets for the
failing streams.
"""

from __future__ import annotations

import itertools
import json
import socket
import sqlite3
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.appliance import Appliance
from edge.bus.commands import Commands
from edge.bus.mqtt import Received
from edge.capture import Camera, CaptureError, grab_frame
from edge.capture.camera import FpsCap
from edge.cli import _apply_run_flags, build_parser
from edge.config import CameraConfig, ConfigError, EdgeConfig, RetentionConfig, RuleConfig, parse_config
from edge.config.models import AdminConfig, ModelConfig, WebhookConfig
from edge.control import Control, ControlError
from edge.instructions import Router
from edge.journal import Journal
from edge.live import LiveView
from edge.outbox import Topics
from edge.store import EventLog, StoreError, migrations
from edge.types import EventRecord
from edge.wiring import build_rules
from tests.conftest import DATA, MODEL, REPO, needs_shared
from tests.support import Mosquitto, Receiver, Subscriber, free_port, wait_until

PEOPLE = DATA / "people" / "intel_one-by-one-person-detection.mp4"
TOPICS = Topics("reflex", "dev1")
V5_TABLES = ("users", "api_tokens", "audit")
V5_COLUMNS = {"events": ("acked_at", "acked_by"), "cameras": ("origin", "config", "removed_at")}


@pytest.fixture
def log(tmp_path: Path) -> Iterator[EventLog]:
    events = EventLog(tmp_path / "data", reserve_bytes=0)
    yield events
    events.close()


def event(
    event_id: str, camera: str = "lobby", ended_at: float | None = None, at: float = 1000.0
) -> EventRecord:
    return EventRecord(
        id=event_id,
        camera=camera,
        label="person",
        rule="person",
        score=0.9,
        box=(0.1, 0.1, 0.5, 0.9),
        started_at=at,
        frame=1,
        pts=0.1,
        ended_at=ended_at,
    )


def columns(db: sqlite3.Connection, table: str) -> list[str]:
    return [row[1] for row in db.execute(f"PRAGMA table_info({table})")]


# -- the event log ----------------------------------------------------------------------------------


def test_a_v4_database_migrates_keeping_its_rows(tmp_path: Path) -> None:
    fresh = tmp_path / "fresh"
    EventLog(fresh, reserve_bytes=0).close()
    data = tmp_path / "data"
    EventLog(data, reserve_bytes=0).close()
    with sqlite3.connect(data / "events.db") as db:  # rewind to the v4 shape of the previous release
        for table in V5_TABLES:
            db.execute(f"DROP TABLE {table}")
        for table, names in V5_COLUMNS.items():
            for name in names:
                db.execute(f"ALTER TABLE {table} DROP COLUMN {name}")
        db.execute(
            "INSERT INTO cameras (name, source, created_at, detect, alerts) VALUES ('lobby', 'x', 1, 0, 1)"
        )
        db.execute(
            "INSERT INTO events (id, camera, label, rule, score, zones, started_at, frame, pts, updated_at) "
            "VALUES ('e-old', 'lobby', 'person', 'person', 0.8, '[]', 1000, 1, 0.1, 1000)"
        )
        db.execute("PRAGMA user_version = 4")
    log = EventLog(data, reserve_bytes=0)
    try:
        old = log.event("e-old")
        assert old is not None and old["acked_at"] is None and old["alerts"] == [] and old["job"] is None
        assert log.ack_event("e-old", "user:alice")
        assert log.switches()["lobby"] == {"detect": False, "alerts": True}  # kept through the step
        assert log.stored_cameras() == []  # an old camera row is a config camera
        assert log.add_user("alice", "hash", "admin") and log.user_count() == 1
    finally:
        log.close()
    with sqlite3.connect(data / "events.db") as db, sqlite3.connect(fresh / "events.db") as new:
        assert db.execute("PRAGMA user_version").fetchone()[0] == migrations.LATEST >= 5
        for table in (*V5_TABLES, *V5_COLUMNS):
            assert sorted(columns(db, table)) == sorted(columns(new, table)), table


def test_acknowledging_survives_later_updates_of_the_event(log: EventLog) -> None:
    log.ensure_camera("lobby", "clip.mp4")
    log.event_started(event("e1"))
    assert log.ack_event("e1", "user:alice")
    assert not log.ack_event("e1", "user:bob")  # the first acknowledgement stays
    assert not log.ack_event("nope", "user:bob")
    log.event_updated(event("e1"))
    log.event_ended(event("e1"))
    row = log.event("e1")
    assert row is not None and row["acked_by"] == "user:alice" and row["ended_at"] is not None


def test_events_filter_by_time_and_state_and_one_event_has_its_alerts_and_job(log: EventLog) -> None:
    from edge.outbox import alert_payload
    from edge.types import AlertRecord

    log.ensure_camera("lobby", "clip.mp4")
    log.event_started(event("old", at=1000.0, ended_at=1005.0))
    log.event_started(event("mid", at=2000.0))
    log.event_started(event("new", at=3000.0))
    log.ack_event("new", "user:alice")
    ids = lambda **kw: [e["id"] for e in log.events(**kw)]  # noqa: E731
    assert ids(since=1500.0, until=3000.0) == ["mid"]
    assert ids(state="open") == ["new", "mid"]
    assert ids(state="ended") == ["old"]
    assert ids(state="acked") == ["new"]
    assert ids(state="unacked") == ["mid", "old"]
    with pytest.raises(ValueError, match="unknown event state 'shut'"):
        log.events(state="shut")
    alert = AlertRecord(id="a1", event_id="mid", rule="person", camera="lobby", label="person",
                        severity="warning", text="person on lobby", at=2000.5, frame=2, pts=0.2,
                        box=(0.1, 0.1, 0.5, 0.9))  # fmt: skip
    log.alert(alert, alert_payload(alert), "reflex/dev1/alerts")
    context = {"label": "person", "alert": alert_payload(alert)}
    log.add_job("job-1", None, "lobby", "verify", "is it a person?", created_at=2001.0, deadline=2030.0,
                seconds=4.0, context=context)  # fmt: skip
    log.finish_job("job-1", "done", text="A person in a red coat.", html="<p>report</p>")
    mid = log.event("mid")
    assert mid is not None and [a["id"] for a in mid["alerts"]] == ["a1"]
    assert (
        mid["job"]["result_text"] == "A person in a red coat."
        and mid["job"]["html_path"] == "jobs/job-1.html"
    )
    assert log.event("old")["job"] is None and log.event("missing") is None


def test_one_ask_reads_like_an_item_of_asks(log: EventLog) -> None:
    log.add_instruction("q1", "how many people?", None, "admin")
    log.add_instruction("q2", "describe the lobby", "lobby", "mqtt")
    log.enqueue(
        "answer", "reflex/dev1/answers", {"v": 1, "id": "q1", "kind": "answer", "text": "2 people"}, "q1:a"
    )
    assert log.ask("q1") == next(a for a in log.asks() if a["id"] == "q1")
    assert [a["text"] for a in log.ask("q1")["answers"]] == ["2 people"]
    assert log.ask("q2")["answers"] == [] and log.ask("nope") is None


def test_runtime_cameras_are_stored_removed_softly_and_keep_their_switches(log: EventLog) -> None:
    log.ensure_camera("yard", "yard.mp4")  # a config camera
    log.save_camera("door", {"source": "rtsp://cam/door", "detect": True, "alerts": True})
    log.set_switch("door", "alerts", False)
    log.save_camera("door", {"source": "rtsp://cam/door2", "detect": True, "alerts": True})  # changed
    log.ensure_camera("door", "rtsp://cam/door2")  # the appliance registers it as it starts it
    assert log.stored_cameras() == [("door", {"source": "rtsp://cam/door2", "detect": True, "alerts": True})]
    assert log.switches()["door"]["alerts"] is False  # a change keeps the stored switch
    log.remove_camera("door")
    log.remove_camera("yard")  # a config camera is not the log's to remove
    assert log.stored_cameras() == []
    log.save_camera("door", {"source": "usb:0", "detect": False, "alerts": True})  # added again: afresh
    assert log.switches()["door"] == {"detect": False, "alerts": True}
    assert [name for name, _ in log.stored_cameras()] == ["door"]
    with pytest.raises(StoreError, match="config cameras"):
        log.save_camera("yard", {"source": "x"}, origin="config")


def test_users_tokens_and_the_audit_log(log: EventLog) -> None:
    assert log.user_count() == 0 and log.user("alice") is None
    assert log.add_user("alice", "argon2-hash", "admin")
    assert not log.add_user("alice", "other", "viewer")  # taken: nothing changes
    assert log.add_user("bob", "hash-b", "viewer")
    with pytest.raises(StoreError, match="unknown role 'root'"):
        log.add_user("eve", "h", "root")
    assert [u["name"] for u in log.users()] == ["alice", "bob"]
    assert all("password_hash" not in u for u in log.users())
    assert log.user("alice")["password_hash"] == "argon2-hash"
    assert log.set_password("alice", "new-hash") and log.user("alice")["password_hash"] == "new-hash"
    assert log.set_role("bob", "admin") and not log.set_role("nobody", "admin")

    log.add_token("t1", "ci-script", "bob", "sha-1")
    log.add_token("t2", "ha", "alice", "sha-2")
    found = log.token_by_hash("sha-1")
    assert (
        found is not None and found["id"] == "t1" and found["role"] == "admin" and "token_hash" not in found
    )
    log.touch_token("t1")
    assert log.tokens()[0]["last_used_at"] is not None and all("token_hash" not in t for t in log.tokens())
    assert log.revoke_token("t2") and not log.revoke_token("t2")
    assert log.token_by_hash("sha-2") is None
    assert log.remove_user("bob") and not log.remove_user("bob")
    assert log.token_by_hash("sha-1") is None and log.tokens() == []  # a removed user's tokens stop

    log.audit("user:alice", "user_add", {"user": "bob"}, "10.0.0.5")
    log.audit("mqtt", "switch", {"camera": "lobby"}, None)
    rows = log.audit_log()
    assert [(r["who"], r["action"], r["remote"]) for r in rows] == [
        ("mqtt", "switch", None),
        ("user:alice", "user_add", "10.0.0.5"),
    ]
    assert rows[1]["detail"] == {"user": "bob"} and rows[0]["at"] >= rows[1]["at"]
    assert len(log.audit_log(limit=1)) == 1
    log.apply_retention(RetentionConfig(max_age_days=1, min_free_mb=0), now=time.time() + 2 * 86_400)
    assert log.audit_log() == []  # pruned by age like the rest of the log


# -- grab_frame and the fps cap ---------------------------------------------------------------------


@pytest.mark.skipif(not PEOPLE.exists(), reason=f"test media not found in {DATA}")
def test_grab_frame_gives_one_frame_of_the_clip() -> None:
    image = grab_frame(str(PEOPLE))
    assert image.shape == (432, 768, 3)


def test_grab_frame_says_exactly_why_not(tmp_path: Path) -> None:
    missing = tmp_path / "gone.mp4"
    with pytest.raises(CaptureError, match=f"no such file: {missing}"):
        grab_frame(str(missing))
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all" * 100)
    with pytest.raises(CaptureError, match=r"junk\.mp4") as err:
        grab_frame(str(junk))
    assert "\n" not in str(err.value)
    port = free_port()  # nothing listens there
    started = time.monotonic()
    with pytest.raises(CaptureError) as err:
        grab_frame(f"rtsp://user:secret@127.0.0.1:{port}/stream", timeout_s=5)
    assert time.monotonic() - started < 3
    assert "connection refused" in str(err.value) and "secret" not in str(err.value)


def test_grab_frame_gives_up_on_time_on_a_camera_that_never_answers() -> None:
    """A camera that accepts the connection and then says nothing: FFmpeg would wait for it."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    port = server.getsockname()[1]
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                held.append(server.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    try:
        started = time.monotonic()
        with pytest.raises(CaptureError, match=r"no frame from rtsp://127\.0\.0\.1:\d+/s within 1 s"):
            grab_frame(f"rtsp://127.0.0.1:{port}/s", timeout_s=1)
        assert time.monotonic() - started < 1.5
    finally:
        server.close()
        for conn in held:
            conn.close()


def test_the_fps_cap_keeps_an_even_rate_of_stream_time() -> None:
    cap = FpsCap(10)
    kept = [i / 25 for i in range(250) if cap.keep(i / 25)]  # 10 s of a 25 fps stream
    assert len(kept) == 100
    assert min(b - a for a, b in itertools.pairwise(kept)) >= 0.08 - 1e-9
    assert FpsCap(None).keep(0.0) and FpsCap(None).keep(0.0)
    restarted = FpsCap(5)
    assert restarted.keep(100.0) and not restarted.keep(100.1)
    assert restarted.keep(3.0)  # the clock went back (a new stream): start over, not wait 97 s


@pytest.mark.skipif(not PEOPLE.exists(), reason=f"test media not found in {DATA}")
def test_a_capped_camera_hands_over_at_most_its_fps_of_a_file() -> None:
    camera = Camera("door", CameraConfig(source=str(PEOPLE), realtime=False, fps=2.5))
    camera.start()
    try:
        pts: list[float] = []
        while len(pts) < 8:
            frame = camera.get(timeout=5)
            assert frame is not None
            pts.append(frame.pts)
    finally:
        camera.stop()
    gaps = [b - a for a, b in itertools.pairwise(pts)]
    assert all(abs(g - 0.4) < 0.011 for g in gaps), gaps  # a 10 fps clip: every fourth frame
    assert camera.stats.capped >= 3 * 7 and camera.stats.dropped == 0


# -- the control surface without cameras ------------------------------------------------------------


def bare_control(events: EventLog, **push: WebhookConfig) -> Control:
    journal = Journal(events, TOPICS, [])
    return Control(events, TOPICS, journal, known_labels={"person", "fire", "smoke"}, push_channels=push)


def test_a_test_push_reaches_the_receiver_or_says_why_not(log: EventLog) -> None:
    receiver = Receiver()
    dead = f"http://127.0.0.1:{free_port()}/hook"
    control = bare_control(log, hook=WebhookConfig(type="webhook", url=receiver.url),
                           gone=WebhookConfig(type="webhook", url=dead))  # fmt: skip
    try:
        said = control.test_push("hook", by="user:alice", remote="10.0.0.5")
        assert said.startswith("test message delivered to hook")
        assert receiver.bodies[0]["test"] is True and "user:alice" in receiver.bodies[0]["text"]
        started = time.monotonic()
        with pytest.raises(ControlError, match="push gone: cannot connect: Connection refused"):
            control.test_push("gone", by="user:alice")
        assert time.monotonic() - started < 3
        with pytest.raises(ControlError, match="unknown push channel 'phone'"):
            control.test_push("phone", by="user:alice")
        assert log.outbox_pending(channel="push:hook") == []  # straight out, never through the outbox
        assert [(r["who"], r["action"], r["remote"]) for r in log.audit_log()] == [
            ("user:alice", "push.test", "10.0.0.5")
        ]
    finally:
        receiver.close()


def test_sentences_preview_and_become_admin_rules(log: EventLog) -> None:
    control = bare_control(log)
    control.load_rules([])
    control.router = Router(control, LiveView(), log, control.known_labels)
    try:
        preview = control.preview_rule("alert me if a fire breaks out", None)
        assert preview["kind"] == "rule" and preview["problem"] is None
        assert preview["rule_config"]["label"] == "fire" and preview["rule_config"]["verify"] is True
        rule = control.add_rule_from_text(
            "alert me if a fire breaks out", None, by="user:alice", remote="::1"
        )
        assert rule.cfg.model_dump(mode="json") == preview["rule_config"]
        assert {e.rule.name: e.origin for e in control.rules()} == {rule.name: "admin"}
        assert control.rule_source(rule.name) is None  # a runtime rule has no file line
        again = control.preview_rule("alert me if a fire breaks out", None)
        assert again["rule_config"]["name"] != rule.name  # the router picks a free name
        assert control.preview_rule("how many people are there?", None)["rule_config"] is None
        with pytest.raises(ControlError, match="that is not a rule"):
            control.add_rule_from_text("how many people are there?", None, by="user:alice")
        with pytest.raises(ControlError, match="unknown camera 'attic'"):
            control.preview_rule("alert me if a fire breaks out", "attic")
        assert [(r["who"], r["action"], r["remote"]) for r in log.audit_log()] == [
            ("user:alice", "rule.add", "::1")
        ]
    finally:
        control.router.close()


def test_a_config_rule_says_its_file_and_line_also_after_the_run_flags(tmp_path: Path, log: EventLog) -> None:
    text = "watch: []\nrules:\n  - name: door\n    label: person\n  - name: yard-fire\n    label: fire\n"
    cfg = parse_config(text, "site.yaml", tmp_path)
    args = build_parser().parse_args(["run", "--camera", "door=clip.mp4", "--admin", "127.0.0.1:8080"])
    cfg = _apply_run_flags(cfg, args)
    assert cfg.admin.listen == "127.0.0.1:8080" and list(cfg.cameras) == ["door"]
    control = bare_control(log)
    control.load_rules(build_rules(cfg, tmp_path, allow_empty=True))
    assert control.rule_source("door") == "site.yaml:3"
    assert control.rule_source("yard-fire") == "site.yaml:5"
    with pytest.raises(ControlError, match="no rule named 'gate'"):
        control.rule_source("gate")


def test_admin_settings_check_their_address() -> None:
    assert AdminConfig().listen is None
    with pytest.raises(ValueError, match="'8080' is not HOST:PORT"):
        AdminConfig(listen="8080")
    with pytest.raises(ValueError, match="cert and key go together"):
        AdminConfig(cert="a.pem")
    assert AdminConfig(listen="[::1]:8080").listen == "[::1]:8080"


# -- a running appliance ----------------------------------------------------------------------------


def appliance_config(tmp_path: Path, **extra: object) -> EdgeConfig:
    """No broker; one person rule; a config camera that is off (so nothing connects to it)."""
    return EdgeConfig(
        data_dir=str(tmp_path / "data"),
        device={"id": "dev1"},
        model=ModelConfig(path=str(MODEL)),
        watch=[],
        rules=[RuleConfig(name="person", label="person")],
        cameras={"gate": CameraConfig(source="rtsp://guard:hunter2@127.0.0.1:1/gate", enabled=False)},
        **extra,
    )


def start(cfg: EdgeConfig) -> Appliance:
    appliance = Appliance(cfg, REPO, build_rules(cfg, REPO, allow_empty=True))
    appliance.start()
    return appliance


def door_events(appliance: Appliance, **kw: object) -> list[dict]:
    return appliance.events.events(camera="door", **kw)


@needs_shared
def test_a_camera_added_at_runtime_captures_survives_a_restart_and_its_removal_ends_its_events(
    tmp_path: Path,
) -> None:
    cfg = appliance_config(tmp_path)
    door = CameraConfig(source=str(PEOPLE), realtime=False)
    first = start(cfg)
    try:
        with pytest.raises(ControlError, match="camera 'gate' comes from the config file"):
            first.control.remove_camera("gate", by="user:alice")
        with pytest.raises(ControlError, match="camera 'gate' comes from the config file"):
            first.control.add_camera("gate", door, by="user:alice", replace=True)
        with pytest.raises(ControlError, match="rule 'person' comes from the config file"):
            first.control.remove_rule("person", by="user:alice")
        with pytest.raises(ControlError, match="camera name 'Front Door' must be 1-63 characters"):
            first.control.add_camera("Front Door", door, by="user:alice")
        first.control.add_camera("door", door, by="user:alice", remote="10.0.0.5")
        with pytest.raises(ControlError, match="a camera named 'door' exists already"):
            first.control.add_camera("door", door, by="user:alice")
        assert [(e.name, e.origin) for e in first.control.camera_entries()] == [
            ("gate", "config"),
            ("door", "admin"),
        ]
        assert wait_until(lambda: door_events(first), 30)  # it captures at once: a person event
        assert first.live.keyframes["door"]
        assert_status_shape(first.status())
    finally:
        first.stop()

    again = start(cfg)
    try:
        assert [(e.name, e.origin) for e in again.control.camera_entries()] == [
            ("gate", "config"),
            ("door", "admin"),
        ]
        assert "door" in again.cameras and "door" in again.control.cameras()
        assert wait_until(lambda: door_events(again, state="open"), 30)  # capturing again, a new visit
        open_now = door_events(again, state="open")[0]["id"]
        assert again.control.acknowledge(open_now, by="token:ci-script", remote="10.0.0.6")
        assert not again.control.acknowledge(open_now, by="user:alice")
        with pytest.raises(ControlError, match="no event 'e-nope'"):
            again.control.acknowledge("e-nope", by="user:alice")
        Commands(again.topics, again.control, 4096)(Received("reflex/dev1/door/alerts/set", b"OFF"))
        again.control.remove_camera("door", by="user:alice", remote="10.0.0.5")
        assert door_events(again, state="open") == []  # ended at once
        assert again.events.event(open_now)["acked_by"] == "token:ci-script"
        assert (
            "door" not in again.cameras
            and "door" not in again.loops
            and "door" not in again.status()["cameras"]
        )
        ends = [
            m
            for m in again.events.outbox_pending(limit=500)
            if m.kind == "event" and open_now in m.message_id
        ]
        assert any(":end:" in m.message_id for m in ends)  # the end goes out like any other
        with pytest.raises(ControlError, match="no camera named 'door'"):
            again.control.remove_camera("door", by="user:alice")
    finally:
        again.stop()

    third = start(cfg)
    try:
        assert [e.name for e in third.control.camera_entries()] == ["gate"] and not third.cameras
        audit = [(r["who"], r["action"], r["remote"]) for r in reversed(third.events.audit_log())]
        assert audit == [
            ("user:alice", "camera.add", "10.0.0.5"),
            ("token:ci-script", "event.ack", "10.0.0.6"),
            ("mqtt", "switch", None),
            ("user:alice", "camera.remove", "10.0.0.5"),
        ]
        assert third.events.audit_log()[-1]["detail"]["source"] == str(PEOPLE)
    finally:
        third.stop()


def assert_status_shape(status: dict) -> None:
    assert set(status) == {"version", "uptime_s", "cameras", "outbox", "broker", "push", "blueloop"}
    assert isinstance(status["version"], str) and status["uptime_s"] > 0
    door, gate = status["cameras"]["door"], status["cameras"]["gate"]
    keys = {"online", "reason", "fps", "frames", "dropped_frames", "gate_skip_ratio", "inference_ms",
            "active_events", "detect", "alerts", "source", "origin"}  # fmt: skip
    assert set(door) == keys and set(gate) == keys
    assert door["origin"] == "admin" and door["online"] is True and door["reason"] == "connected"
    assert door["frames"] > 0 and door["detect"] is True and door["source"] == str(PEOPLE)
    assert isinstance(door["active_events"], int) and isinstance(door["gate_skip_ratio"], float)
    assert gate == {**gate, "origin": "config", "online": False, "reason": "disabled"}
    assert gate["source"] == "rtsp://guard:***@127.0.0.1:1/gate"  # never the password
    assert set(status["outbox"]) == {"depth", "held", "shed", "dropped"}
    assert status["outbox"]["depth"] > 0  # no broker: the person event waits
    assert status["broker"] == {"configured": False, "url": None, "connected": False}
    assert status["push"] == {}
    assert status["blueloop"] == {"broker_connected": False, "open_jobs": 0, "last_answer_at": None}
    json.dumps(status)  # what /api/status serves


@needs_shared
def test_the_appliance_serves_the_admin_page_and_says_why_it_cannot(tmp_path: Path) -> None:
    port = free_port()
    appliance = start(appliance_config(tmp_path, admin={"listen": f"127.0.0.1:{port}"}))
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=5) as answer:
            assert json.loads(answer.read()) == {"ok": True}
        taken = appliance_config(tmp_path / "second", admin={"listen": f"127.0.0.1:{port}"})
        with pytest.raises(ConfigError) as err:
            start(taken)
        assert str(err.value) == f"admin: cannot listen on 127.0.0.1:{port}: address already in use"
    finally:
        appliance.stop()
    with pytest.raises(OSError):  # stopped with the appliance
        urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2)


@needs_shared
def test_a_stored_camera_a_config_camera_now_names_is_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = appliance_config(tmp_path)
    earlier = EventLog(Path(cfg.data_dir), reserve_bytes=0)
    earlier.save_camera("gate", {"source": str(PEOPLE)})  # added on the page before the config named it
    earlier.close()
    again = start(cfg)
    try:
        assert [(e.name, e.origin) for e in again.control.camera_entries()] == [("gate", "config")]
        assert "stored admin camera 'gate' is shadowed by the config camera" in caplog.text
    finally:
        again.stop()


@needs_shared
def test_a_runtime_camera_appears_on_mqtt_and_home_assistant_and_leaves_no_retained_trace(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    sub = Subscriber(mosquitto.port, ["reflex/dev1/#", "homeassistant/#"])
    cfg = appliance_config(tmp_path, mqtt={"url": mosquitto.url, "stats_every_s": 1.0})
    appliance = start(cfg)
    status, device = "reflex/dev1/door/status", "homeassistant/device/reflex_dev1/config"

    def door_online() -> dict:  # the camera's component in the device's Home Assistant config
        return json.loads(sub.last(device) or b"{}").get("cmps", {}).get("door_online", {})

    try:
        appliance.control.add_camera("door", CameraConfig(source=str(PEOPLE), loop=True), by="user:alice")
        assert wait_until(lambda: sub.last(status) == b"online", 20)
        assert wait_until(lambda: door_online().get("state_topic") == status, 10)  # in Home Assistant at once
        assert wait_until(
            lambda: "door" in (sub.json_on("reflex/dev1/stats") or [{}])[-1].get("cameras", {}), 10
        )
        sub.publish("reflex/dev1/door/alerts/set", "OFF")
        assert wait_until(lambda: sub.last("reflex/dev1/door/alerts/state") == b"OFF", 10)
        appliance.control.remove_camera("door", by="user:alice")
        assert wait_until(lambda: door_online() == {"p": "binary_sensor"}, 10)  # HA removes it
        cleared = [status, "reflex/dev1/door/alerts/state", "reflex/dev1/door/detect/state"]
        assert wait_until(lambda: all(sub.last(t) == b"" for t in cleared), 10), [
            sub.last(t) for t in cleared
        ]
        assert wait_until(lambda: sub.last("reflex/dev1/door/person") == b"", 10)
    finally:
        appliance.stop()
        sub.close()
    stored = EventLog(Path(cfg.data_dir), reserve_bytes=0)
    try:
        audit = [(r["who"], r["action"]) for r in reversed(stored.audit_log())]
    finally:
        stored.close()
    assert audit == [("user:alice", "camera.add"), ("mqtt", "switch"), ("user:alice", "camera.remove")]


@needs_shared
def test_with_tls_the_admin_page_is_https_with_a_certificate_made_on_first_start(tmp_path: Path) -> None:
    import ssl

    port = free_port()
    appliance = start(appliance_config(tmp_path, admin={"listen": f"127.0.0.1:{port}", "tls": True}))
    try:
        trusting = ssl.create_default_context(cafile=str(tmp_path / "data" / "admin" / "tls.crt"))
        with urllib.request.urlopen(
            f"https://localhost:{port}/api/health", timeout=5, context=trusting
        ) as answer:
            assert json.loads(answer.read()) == {"ok": True}
        assert (tmp_path / "data" / "admin" / "tls.key").stat().st_mode & 0o077 == 0
    finally:
        appliance.stop()

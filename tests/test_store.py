"""Event log: schema, pragmas, outbox durability, concurrency, retention, snapshots, failures.

Everything runs against real SQLite files in tmp_path. A few tests reach `log._engine`: per-connection
pragmas (foreign_keys, max_page_count, query_only) can only be read or set from inside the pool.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from sqlalchemy import event
from sqlalchemy.engine import Connection

from edge.config.models import RetentionConfig, RuleConfig
from edge.outbox import alert_payload
from edge.store import DataLock, EventLog, OutboxMessage, RetentionReport, StoreError, migrations
from edge.store.ballast import RESERVE_BYTES, allocated
from edge.store.eventlog import MIB
from edge.types import AlertRecord, EventRecord

REPO = Path(__file__).resolve().parent.parent
DAY = 86_400.0
TOPIC = "reflex/dev/alerts"


def make_event(eid: str, camera: str = "lobby", label: str = "person", **kw: object) -> EventRecord:
    fields: dict = {
        "id": eid,
        "camera": camera,
        "label": label,
        "rule": f"{label}-rule",
        "score": 0.8,
        "box": (10.0, 20.0, 110.0, 220.0),
        "started_at": time.time(),
        "frame": 7,
        "pts": 0.7,
        "track_id": 3,
        "zones": ["door"],
    }
    fields.update(kw)
    return EventRecord(**fields)


def make_alert(aid: str, event_id: str, **kw: object) -> AlertRecord:
    fields: dict = {
        "id": aid,
        "event_id": event_id,
        "rule": "person-rule",
        "camera": "lobby",
        "label": "person",
        "severity": "warning",
        "text": "person on lobby",
        "at": time.time(),
        "frame": 9,
        "pts": 0.9,
        "box": (10.0, 20.0, 110.0, 220.0),
    }
    fields.update(kw)
    return AlertRecord(**fields)


def payload(alert: AlertRecord) -> dict:
    return {"v": 1, "id": alert.id, "event_id": alert.event_id, "text": alert.text, "at": alert.at}


def frame(h: int = 480, w: int = 640) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (h, w, 3), dtype=np.uint8)


def one_line(exc: StoreError) -> str:
    msg = str(exc)
    assert msg and "\n" not in msg, msg
    return msg


@pytest.fixture
def log(tmp_path: Path):
    store = EventLog(tmp_path / "data", reserve_bytes=MIB)  # small: pytest keeps its tmp folders
    store.ensure_camera("lobby", "rtsp://cam/lobby")
    store.ensure_camera("yard", "usb:0")
    yield store
    store.close()


def raw(log: EventLog) -> sqlite3.Connection:
    """An independent connection, as another process (the CLI) would open."""
    return sqlite3.connect(log.db_path)


# -- schema, pragmas, migrations --------------------------------------------------------------------


def test_schema_and_pragmas(log: EventLog) -> None:
    with raw(log) as db:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        indexes = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # incremental
        assert db.execute("PRAGMA user_version").fetchone()[0] == migrations.LATEST
    assert {"cameras", "rules", "events", "appearances", "alerts", "outbox", "snapshots"} <= tables
    assert {"ix_events_camera_started", "ix_outbox_pending"} <= indexes
    assert log.snapshot_dir.is_dir()
    with log._engine.connect() as conn:
        pragma = {
            name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()
            for name in ("journal_mode", "foreign_keys", "synchronous", "busy_timeout")
        }
    assert pragma == {"journal_mode": "wal", "foreign_keys": 1, "synchronous": 1, "busy_timeout": 10_000}


def test_foreign_keys_enforced_with_clear_error(log: EventLog) -> None:
    with pytest.raises(StoreError, match="FOREIGN KEY") as err:
        log.event_started(make_event("e1", camera="nowhere"))
    assert "e1" in one_line(err.value)


def test_migrations_idempotent(tmp_path: Path) -> None:
    data = tmp_path / "data"
    EventLog(data).close()
    with sqlite3.connect(data / "events.db") as db:
        schema = db.execute("SELECT sql FROM sqlite_master ORDER BY name").fetchall()
    again = EventLog(data)
    again.close()
    with sqlite3.connect(data / "events.db") as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == migrations.LATEST
        assert db.execute("SELECT sql FROM sqlite_master ORDER BY name").fetchall() == schema


def test_migration_steps_upgrade_old_databases(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the next schema change will do: append a step; old files run it, new files are stamped."""
    old = tmp_path / "old"
    EventLog(old).close()

    def note(conn: Connection) -> None:
        conn.exec_driver_sql("ALTER TABLE events ADD COLUMN note TEXT")

    following = migrations.LATEST + 1
    monkeypatch.setattr(migrations, "STEPS", [*migrations.STEPS, (following, note)])
    monkeypatch.setattr(migrations, "LATEST", following)
    EventLog(old).close()
    EventLog(old).close()  # the step runs once
    with sqlite3.connect(old / "events.db") as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == following
        assert "note" in [r[1] for r in db.execute("PRAGMA table_info(events)")]
    new = tmp_path / "new"
    EventLog(new).close()
    with sqlite3.connect(new / "events.db") as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == following


def test_v1_outbox_gains_channels_and_keeps_its_undelivered_rows(tmp_path: Path) -> None:
    """A database from before push channels: its queued messages stay queued, for MQTT."""
    data = tmp_path / "data"
    EventLog(data).close()
    with sqlite3.connect(data / "events.db") as db:  # rewind to the v1 shape
        db.execute("DROP INDEX ix_outbox_pending")
        db.execute("ALTER TABLE outbox DROP COLUMN channel")
        db.execute("ALTER TABLE outbox DROP COLUMN priority")
        db.execute("ALTER TABLE rules DROP COLUMN origin")
        db.execute("ALTER TABLE rules DROP COLUMN removed_at")
        db.execute("DROP TABLE instructions")
        db.execute(
            "INSERT INTO outbox (kind, topic, payload, message_id, created_at, attempts) "
            "VALUES ('alert', 'reflex/d/alerts', '{}', 'a-old', 1.0, 0)"
        )
        db.execute("PRAGMA user_version = 1")
    log = EventLog(data)
    try:
        pending = log.outbox_pending()
        assert [(m.message_id, m.channel) for m in pending] == [("a-old", "mqtt")]
        assert log.outbox_pending(channel="push:phone") == []
        assert [m.message_id for m in log.outbox_pending(priority=0)] == ["a-old"]  # v3: alerts drain first
    finally:
        log.close()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    EventLog(data).close()
    with sqlite3.connect(data / "events.db") as db:
        db.execute(f"PRAGMA user_version = {migrations.LATEST + 1}")
    with pytest.raises(StoreError, match="newer than this release") as err:
        EventLog(data)
    one_line(err.value)


# -- events, alerts, outbox -------------------------------------------------------------------------


def test_event_lifecycle_round_trip(log: EventLog) -> None:
    rule = RuleConfig(name="person-rule", label="person", zone=[(0, 0), (1, 0), (1, 1)])
    log.ensure_rule(rule)
    log.ensure_rule(rule)  # idempotent
    t0 = time.time()
    ev = make_event("e1", started_at=t0)
    log.event_started(ev)
    (row,) = log.events()
    assert row["id"] == "e1" and row["ended_at"] is None and row["snapshot"] is None
    assert row["box"] == [10.0, 20.0, 110.0, 220.0] and row["zones"] == ["door"] and row["track_id"] == 3

    rel = log.save_snapshot("e1", frame(), ev.box, "person", 0.8)
    ev.score, ev.box, ev.frame, ev.pts = np.float32(0.95), (12, 22, 112, 222), 30, 3.0
    log.event_updated(ev)  # ev.snapshot is None: must not clear the stored one
    (row,) = log.events()
    assert row["score"] == pytest.approx(0.95) and row["box"] == [12.0, 22.0, 112.0, 222.0]
    assert row["frame"] == 30 and row["snapshot"] == rel and row["ended_at"] is None

    log.event_ended(ev)
    (row,) = log.events()
    assert row["ended_at"] is not None and row["ended_at"] >= t0
    assert row["started_at"] == t0
    log.event_updated(ev)  # a late update never re-opens an ended event
    assert log.events()[0]["ended_at"] == row["ended_at"]
    json.dumps(log.events())  # plain dicts for the CLI's JSON output


def test_events_query_filters_newest_first(log: EventLog) -> None:
    base = 1_700_000_000.0
    log.event_started(make_event("a", started_at=base + 1))
    log.event_started(make_event("b", camera="yard", started_at=base + 2))
    log.event_started(make_event("c", label="fire", started_at=base + 3, box=None))
    log.event_ended(make_event("d", started_at=base + 4, ended_at=base + 9))
    assert [e["id"] for e in log.events()] == ["d", "c", "b", "a"]
    assert [e["id"] for e in log.events(limit=2)] == ["d", "c"]
    assert [e["id"] for e in log.events(camera="yard")] == ["b"]
    assert [e["id"] for e in log.events(label="fire")] == ["c"]
    assert [e["id"] for e in log.events(since=base + 2)] == ["d", "c", "b"]
    assert log.events(label="fire")[0]["box"] is None
    assert log.events(camera="yard", label="fire") == []


def test_alert_and_outbox_are_atomic_and_ordered(log: EventLog) -> None:
    log.event_started(make_event("e1"))
    a1, a2 = make_alert("a1", "e1"), make_alert("a2", "e1", severity="critical")
    id1 = log.alert(a1, payload(a1), TOPIC)
    id_ev = log.enqueue("event", "reflex/dev/events", {"v": 1, "id": "e1", "type": "new"}, "e1:start:7")
    id2 = log.alert(a2, payload(a2), TOPIC)
    assert id1 < id_ev < id2

    pending = log.outbox_pending()
    assert [m.id for m in pending] == [id1, id_ev, id2]
    assert [m.message_id for m in pending] == ["a1", "e1:start:7", "a2"]
    assert [m.kind for m in pending] == ["alert", "event", "alert"]
    assert isinstance(pending[0], OutboxMessage) and pending[0].topic == TOPIC
    assert json.loads(pending[0].payload) == payload(a1) and pending[0].attempts == 0
    assert [a["id"] for a in log.alerts()] == ["a2", "a1"]
    assert log.alerts(event_id="e1")[0]["severity"] == "critical"

    # An alert that cannot be stored leaves no outbox row behind (one transaction).
    with pytest.raises(StoreError, match="a3") as err:
        log.alert(make_alert("a3", "no-such-event"), {"v": 1}, TOPIC)
    one_line(err.value)
    assert log.outbox_depth() == 3 and len(log.alerts()) == 2
    with pytest.raises(StoreError, match="not JSON"):
        log.enqueue("event", "reflex/dev/events", {"v": 1, "when": object()}, "e1:bad")
    assert log.outbox_depth() == 3

    # A phase change re-uses the alert id: one alert row, a second message with the same message_id.
    confirmed = make_alert("a1", "e1", phase="retracted", text="false alarm")
    id3 = log.alert(confirmed, payload(confirmed), TOPIC)
    assert id3 > id2
    rows = log.alerts(event_id="e1")
    assert len(rows) == 2 and next(r for r in rows if r["id"] == "a1")["phase"] == "retracted"
    assert [m.message_id for m in log.outbox_pending()][-1] == "a1"


def test_outbox_delivery_bookkeeping(log: EventLog) -> None:
    log.event_started(make_event("e1"))
    ids = [log.alert(make_alert(f"a{i}", "e1"), {"v": 1, "n": i}, TOPIC) for i in range(5)]
    assert log.outbox_depth() == 5
    assert [m.id for m in log.outbox_pending(limit=2)] == ids[:2]

    log.mark_attempt(ids[0])
    log.mark_attempt(ids[0])
    assert log.outbox_pending(limit=1)[0].attempts == 2

    log.mark_delivered([ids[0], ids[2]])
    assert [m.id for m in log.outbox_pending()] == [ids[1], ids[3], ids[4]]
    assert log.outbox_depth() == 3
    with raw(log) as db:
        first = db.execute("SELECT delivered_at FROM outbox WHERE id = ?", (ids[0],)).fetchone()[0]
    log.mark_delivered([ids[0]])  # a duplicate PUBACK keeps the first time
    log.mark_delivered([])
    with raw(log) as db:
        assert db.execute("SELECT delivered_at FROM outbox WHERE id = ?", (ids[0],)).fetchone()[0] == first
        # dropped rows are not pending either
        db.execute("UPDATE outbox SET dropped_at = 1, drop_reason = 'test' WHERE id = ?", (ids[1],))
    assert [m.id for m in log.outbox_pending()] == [ids[3], ids[4]]


def test_appearances_batched(log: EventLog) -> None:
    log.event_started(make_event("e1"))
    now = time.time()
    rows = [("e1", "lobby", "person", 3, now + i, np.float32(0.5), (1, 2, 3, 4)) for i in range(300)]
    rows.append((None, "yard", "car", None, now, 0.7, (0.0, 0.0, 5.0, 5.0)))
    log.add_appearances(rows)
    log.add_appearances([])
    with raw(log) as db:
        assert db.execute("SELECT count(*) FROM appearances WHERE event_id = 'e1'").fetchone()[0] == 300
        assert (
            db.execute("SELECT box FROM appearances WHERE camera = 'yard'").fetchone()[0]
            == "[0.0,0.0,5.0,5.0]"
        )


def test_undelivered_alerts_survive_a_crash(tmp_path: Path) -> None:
    """A process that dies without close() (os._exit) loses none of its committed alerts."""
    data = tmp_path / "data"
    script = textwrap.dedent(
        f"""
        import os, time
        from pathlib import Path
        from edge.store import EventLog
        from edge.types import AlertRecord, EventRecord
        log = EventLog(Path({str(data)!r}))
        log.ensure_camera("lobby", "x")
        log.event_started(EventRecord("e1", "lobby", "fire", "fire", 0.9, None, time.time(), 1, 0.1))
        for i in range(3):
            a = AlertRecord(f"a{{i}}", "e1", "fire", "lobby", "fire", "critical", "Fire!", time.time(), i, 0)
            log.alert(a, {{"v": 1, "id": a.id}}, "reflex/dev/alerts")
        log.mark_delivered([1])
        os._exit(0)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-c", script], check=True, env=env, timeout=60)
    assert (data / "events.db-wal").exists()  # the crash left the WAL un-checkpointed

    reopened = EventLog(data)
    try:
        pending = reopened.outbox_pending()
        assert [m.message_id for m in pending] == ["a1", "a2"]
        assert json.loads(pending[0].payload) == {"v": 1, "id": "a1"}
        assert len(reopened.alerts()) == 3
    finally:
        reopened.close()


def test_concurrent_writers_never_see_database_locked(tmp_path: Path) -> None:
    """Camera threads sharing one EventLog, plus a second EventLog on the same file (as another process
    would), plus a reader: nothing raises, nothing is lost."""
    data = tmp_path / "data"
    shared, other = EventLog(data), EventLog(data)
    for name in ("cam0", "cam1", "cam2"):
        shared.ensure_camera(name, name)
    errors: list[BaseException] = []
    n = 40

    def writer(store: EventLog, camera: str) -> None:
        try:
            for i in range(n):
                eid = f"{camera}-{i}"
                store.event_started(make_event(eid, camera=camera))
                store.add_appearances([(eid, camera, "person", i, time.time(), 0.9, (0, 0, 1, 1))] * 5)
                store.alert(make_alert(f"{eid}-a", eid, camera=camera), {"v": 1}, TOPIC)
                store.event_ended(make_event(eid, camera=camera))
        except BaseException as exc:
            errors.append(exc)

    def reader() -> None:
        try:
            for _ in range(n):
                shared.events(limit=10)
                shared.outbox_depth()
                shared.mark_delivered([m.id for m in shared.outbox_pending(limit=5)])
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=writer, args=(shared, "cam0")),
        threading.Thread(target=writer, args=(shared, "cam1")),
        threading.Thread(target=writer, args=(other, "cam2")),
        threading.Thread(target=reader),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    try:
        assert not errors, errors
        assert len(shared.events(limit=1000)) == 3 * n
        assert len(shared.alerts(limit=1000)) == 3 * n
        with raw(shared) as db:
            assert db.execute("SELECT count(*) FROM outbox").fetchone()[0] == 3 * n
            assert db.execute("SELECT count(*) FROM appearances").fetchone()[0] == 3 * n * 5
    finally:
        shared.close()
        other.close()


# -- snapshots --------------------------------------------------------------------------------------


def test_snapshot_jpeg_has_frame_size_and_box(log: EventLog) -> None:
    log.event_started(make_event("e1"))
    image = np.full((360, 500, 3), 128, np.uint8)
    untouched = image.copy()
    rel = log.save_snapshot("e1", image, (50.0, 80.0, 200.0, 300.0), "person", 0.87)
    assert not Path(rel).is_absolute() and rel.startswith("lobby/")
    path = log.snapshot_dir / rel
    decoded = cv2.imread(str(path))
    assert decoded is not None and decoded.shape == (360, 500, 3)
    b, g, r = decoded[200, 50].astype(int)  # on the box's left edge: red
    assert r > 180 and g < 90 and b < 90
    assert np.array_equal(image, untouched)  # the caller's frame is not drawn on
    assert log.events()[0]["snapshot"] == rel
    assert not list(log.snapshot_dir.rglob("*.tmp"))
    with raw(log) as db:
        (size,) = db.execute("SELECT bytes FROM snapshots WHERE path = ?", (rel,)).fetchone()
    assert size == path.stat().st_size

    a = make_alert("a1", "e1")
    log.alert(a, payload(a), TOPIC)
    grey = log.save_snapshot("e1", np.zeros((120, 160), np.uint8), None, "fire", 0.5)
    assert log.alerts()[0]["snapshot"] == grey  # the alert's own picture, taken right after it
    assert cv2.imread(str(log.snapshot_dir / grey)).shape == (120, 160, 3)
    assert log.events()[0]["snapshot"] == grey  # the latest snapshot is the event's


def test_snapshot_errors(log: EventLog) -> None:
    with pytest.raises(StoreError, match="no such event"):
        log.save_snapshot("ghost", frame(), None, "person", 0.5)
    log.event_started(make_event("e1"))
    with pytest.raises(StoreError, match="uint8"):
        log.save_snapshot("e1", np.zeros((10, 10, 3), np.float32), None, "person", 0.5)
    (log.snapshot_dir / "lobby").write_text("a file where a folder should be")
    with pytest.raises(StoreError, match="e1") as err:
        log.save_snapshot("e1", frame(), None, "person", 0.5)
    one_line(err.value)
    assert log.events()[0]["snapshot"] is None


# -- retention --------------------------------------------------------------------------------------


def test_retention_by_age_keeps_undelivered_alerts(log: EventLog, caplog: pytest.LogCaptureFixture) -> None:
    now = time.time()
    later = now + 40 * DAY  # retention runs 40 days from now: everything written "now" is old
    cfg = RetentionConfig(max_age_days=30, min_free_mb=0)

    log.event_ended(make_event("old-delivered", started_at=now - 10, ended_at=now))
    a = make_alert("a-delivered", "old-delivered")
    log.mark_delivered([log.alert(a, payload(a), TOPIC)])
    old_snap = log.save_snapshot("old-delivered", frame(), None, "person", 0.8)
    log.add_appearances([("old-delivered", "lobby", "person", 1, now, 0.8, (0, 0, 1, 1))])

    log.event_ended(make_event("old-pending", started_at=now - 10, ended_at=now))
    b = make_alert("a-pending", "old-pending")
    log.alert(b, payload(b), TOPIC)
    kept_snap = log.save_snapshot("old-pending", frame(), None, "person", 0.8)

    log.event_ended(make_event("recent", started_at=later - DAY, ended_at=later - DAY + 5))
    log.event_started(make_event("orphan", started_at=now))  # never ended (crash), never updated again
    log.add_appearances(
        [
            (None, "yard", "car", None, now, 0.5, (0, 0, 1, 1)),
            (None, "yard", "car", None, later, 0.5, (0, 0, 1, 1)),
        ]
    )

    with caplog.at_level(logging.WARNING, logger="edge.store"):
        report = log.apply_retention(cfg, now=later)

    assert isinstance(report, RetentionReport)
    assert report.events_deleted == 2  # old-delivered, orphan
    assert report.snapshots_deleted == 1 and report.bytes_freed > 0
    assert report.undelivered_kept == 1
    assert "never acknowledged" in caplog.text
    assert sorted(e["id"] for e in log.events()) == ["old-pending", "recent"]
    assert not (log.snapshot_dir / old_snap).exists()
    assert (log.snapshot_dir / kept_snap).exists()
    assert [al["id"] for al in log.alerts()] == ["a-pending"]
    assert [m.message_id for m in log.outbox_pending()] == ["a-pending"]
    with raw(log) as db:
        assert db.execute("SELECT count(*) FROM outbox").fetchone()[0] == 1  # delivered row pruned
        assert db.execute("SELECT count(*) FROM appearances").fetchone()[0] == 1  # the recent stray one
        assert db.execute("SELECT count(*) FROM snapshots").fetchone()[0] == 1

    # once the broker acknowledges, the next pass may delete it
    log.mark_delivered([m.id for m in log.outbox_pending()])
    report = log.apply_retention(cfg, now=later)
    assert report.events_deleted == 1 and report.undelivered_kept == 0
    assert not (log.snapshot_dir / kept_snap).exists()


def test_full_outbox_sheds_event_messages_first_then_oldest_alerts_loudly(
    log: EventLog, caplog: pytest.LogCaptureFixture
) -> None:
    log.event_started(make_event("e1"))
    for i in range(300):
        log.enqueue("event", "reflex/dev/events", {"v": 1, "n": i}, f"e1:update:{i}")
    alerts = [make_alert(f"a{i:04d}", "e1") for i in range(1200)]
    for alert in alerts:
        log.alert(alert, payload(alert), TOPIC, push=("phone",) if alert.id < "a0005" else ())
    cfg = RetentionConfig(max_age_days=30, min_free_mb=0, outbox_max_messages=1000)
    with caplog.at_level(logging.ERROR, logger="edge.store.eventlog"):
        report = log.apply_retention(cfg)
    assert (report.shed_messages, report.shed_alerts) == (300, 200)
    assert "OUTBOX FULL" in caplog.text and "200" in caplog.text
    pending = log.outbox_pending(limit=2000)
    assert [m.message_id for m in pending] == [a.id for a in alerts[200:]], "the newest 1000 alerts stay"
    assert log.outbox_depth(channel="push:phone") == 5, "a small channel is not shed for a big one"
    assert log.outbox_dropped() == 500
    assert log.apply_retention(cfg).shed_alerts == 0, "under the limit nothing more is shed"


def test_retention_gives_database_space_back(log: EventLog) -> None:
    now = time.time()
    for i in range(10):
        log.event_ended(make_event(f"e{i}", started_at=now, ended_at=now))
        log.add_appearances([(f"e{i}", "lobby", "person", i, now, 0.5, (0, 0, 1, 1))] * 3000)
    log.apply_retention(RetentionConfig(min_free_mb=0), now=now)  # checkpoints: sizes below are settled
    before = log.db_path.stat().st_size
    report = log.apply_retention(RetentionConfig(max_age_days=1, min_free_mb=0), now=now + 2 * DAY)
    assert report.events_deleted == 10
    after = log.db_path.stat().st_size
    print(f"\nevents.db {before} -> {after} bytes")
    assert after < before / 2


def _snapshot_bytes(log: EventLog) -> int:
    return sum(p.stat().st_size for p in log.snapshot_dir.rglob("*.jpg"))


def test_retention_by_disk_deletes_oldest_snapshots_first(log: EventLog) -> None:
    cfg = RetentionConfig(max_age_days=30, min_free_mb=1)
    now = time.time()
    log.event_ended(make_event("pending", started_at=now - 100, ended_at=now - 90))
    b = make_alert("a-pending", "pending")
    log.alert(b, payload(b), TOPIC)
    protected = log.save_snapshot("pending", frame(), None, "person", 0.8)
    paths = []
    for i in range(3):
        log.event_ended(make_event(f"e{i}", started_at=now + i, ended_at=now + i + 1))
        paths.append(log.save_snapshot(f"e{i}", frame(), (10, 10, 50, 50), "person", 0.8))
    sizes = [(log.snapshot_dir / p).stat().st_size for p in paths]
    total = _snapshot_bytes(log)

    # Free space grows with the bytes deleted; the two oldest unprotected snapshots are enough.
    def free() -> int:
        return MIB - sizes[0] - sizes[1] + (total - _snapshot_bytes(log))

    report = log.apply_retention(cfg, now=now, free_bytes=free)
    assert report.snapshots_deleted == 2 and report.bytes_freed == sizes[0] + sizes[1]
    assert report.events_deleted == 0
    assert not (log.snapshot_dir / paths[0]).exists() and not (log.snapshot_dir / paths[1]).exists()
    assert (log.snapshot_dir / paths[2]).exists() and (log.snapshot_dir / protected).exists()
    snaps = {e["id"]: e["snapshot"] for e in log.events()}
    assert snaps == {"pending": protected, "e0": None, "e1": None, "e2": paths[2]}


def test_retention_by_disk_then_oldest_ended_events(log: EventLog, caplog: pytest.LogCaptureFixture) -> None:
    """With space that never comes back: all unprotected snapshots go, then ended events, then it stops
    (warning) instead of looping; open events and undelivered alerts stay."""
    now = time.time()
    log.event_ended(make_event("pending", started_at=now - 100, ended_at=now - 90))
    b = make_alert("a-pending", "pending")
    log.alert(b, payload(b), TOPIC)
    log.save_snapshot("pending", frame(), None, "person", 0.8)
    for i in range(3):
        log.event_ended(make_event(f"e{i}", started_at=now + i, ended_at=now + i + 1))
        log.save_snapshot(f"e{i}", frame(), None, "person", 0.8)
    log.event_started(make_event("open", started_at=now + 10))

    with caplog.at_level(logging.WARNING, logger="edge.store"):
        report = log.apply_retention(RetentionConfig(min_free_mb=1), now=now, free_bytes=lambda: 0)
    assert report.snapshots_deleted == 3 and report.events_deleted == 3
    assert sorted(e["id"] for e in log.events()) == ["open", "pending"]
    assert log.outbox_depth() == 1
    assert "still below" in caplog.text


def test_retention_with_enough_space_deletes_nothing(log: EventLog) -> None:
    log.event_ended(make_event("e1", ended_at=time.time()))
    log.save_snapshot("e1", frame(), None, "person", 0.8)
    report = log.apply_retention(RetentionConfig(min_free_mb=1), free_bytes=lambda: 10 * MIB)
    assert report == RetentionReport()
    report = log.apply_retention(RetentionConfig(min_free_mb=0.001))  # the real disk
    assert report.snapshots_deleted == 0


# -- failures ---------------------------------------------------------------------------------------


def test_open_fails_cleanly_where_a_folder_is_a_file(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder")
    with pytest.raises(StoreError, match="cannot open the event log") as err:
        EventLog(blocker / "data")
    one_line(err.value)


def test_open_fails_cleanly_in_a_read_only_folder(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("running as root: file permissions do not stop root from writing")
    data = tmp_path / "data"
    data.mkdir()
    data.chmod(0o500)
    try:
        with pytest.raises(StoreError, match="cannot open the event log") as err:
            EventLog(data)
        one_line(err.value)
    finally:
        data.chmod(0o700)


def _per_connection(log: EventLog, pragma: str) -> None:
    """Apply `pragma` to every connection from now on (pool emptied first)."""
    log._engine.dispose()
    event.listen(log._engine, "connect", lambda dbapi, _record: dbapi.execute(pragma))


def _read_only(log: EventLog) -> str:
    return "PRAGMA query_only = ON"


def _disk_full(log: EventLog) -> str:
    """No page may be added to the file: SQLite answers SQLITE_FULL, exactly as on a full disk."""
    with raw(log) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        pages = db.execute("PRAGMA page_count").fetchone()[0]
    return f"PRAGMA max_page_count = {pages}"


@pytest.mark.parametrize(
    ("limit", "reason"),
    [(_read_only, "readonly database"), (_disk_full, "database or disk is full")],
    ids=["read-only", "disk-full"],
)
def test_write_failures_raise_store_error_and_reads_go_on(
    log: EventLog, limit: Callable[[EventLog], str], reason: str
) -> None:
    log.event_started(make_event("e1"))
    _per_connection(log, limit(log))

    rows = [("e1", "lobby", "person", 1, time.time(), 0.5, (0.0, 0.0, 1.0, 1.0))] * 5000
    with pytest.raises(StoreError, match=reason) as err:
        log.add_appearances(rows)
    assert "appearances" in one_line(err.value)
    with pytest.raises(StoreError, match=reason):
        for i in range(200):  # the full-disk case needs a few alerts before a page runs out
            log.alert(make_alert(f"a{i}", "e1"), {"v": 1, "pad": "x" * 2000}, TOPIC)
    depth = log.outbox_depth()
    assert len(log.alerts(limit=1000)) == depth  # no alert without its outbox row, or vice versa
    assert log.events()[0]["id"] == "e1"  # reads keep working


# -- speed ------------------------------------------------------------------------------------------


def test_alert_commit_latency(log: EventLog) -> None:
    """A measurement (printed; run with -s), with only a generous sanity bound."""
    log.event_started(make_event("e1"))
    times = []
    for i in range(300):
        alert = make_alert(f"a{i}", "e1")
        body = payload(alert)
        t0 = time.perf_counter()
        log.alert(alert, body, TOPIC)
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    median = statistics.median(times)
    print(f"\nalert() commit latency: median {median:.3f} ms, p99 {times[int(len(times) * 0.99)]:.3f} ms")
    assert median < 50


# -- one appliance per data folder ------------------------------------------------------------------

HOLDER = """
import subprocess, sys, time
from edge.store import DataLock
DataLock(sys.argv[1]).acquire()
child = subprocess.Popen(["sleep", "60"])  # a helper process must not inherit the lock
print(child.pid, flush=True)
time.sleep(60)
"""


def test_data_lock_one_appliance_per_folder_across_processes(tmp_path: Path) -> None:
    data = tmp_path / "var"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(data)], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None
    child = int(holder.stdout.readline())
    try:
        with pytest.raises(StoreError) as err:
            DataLock(data).acquire()
        assert one_line(err.value) == (
            f"data folder {data} is in use by another appliance (pid {holder.pid}); "
            "stop it or use another --data"
        )
        holder.kill()  # a crash: nothing cleans up, and nothing needs to
        holder.wait(timeout=10)
        assert (data / ".lock").read_text().strip() == str(holder.pid)  # the dead holder's pid is left
        lock = DataLock(data)
        lock.acquire()  # although the holder's child process is still running
        assert (data / ".lock").read_text() == f"{os.getpid()}\n"
        lock.release()
    finally:
        holder.kill()
        holder.wait(timeout=10)
        os.kill(child, signal.SIGKILL)


def test_data_lock_within_one_process_and_release(tmp_path: Path) -> None:
    data = tmp_path / "new" / "var"  # created on acquire
    with DataLock(data) as first:
        assert first.locked and first.holder() == os.getpid()
        first.acquire()  # again: a no-op
        with pytest.raises(StoreError, match=rf"in use by another appliance \(pid {os.getpid()}\)"):
            DataLock(data).acquire()
    assert not first.locked and (data / ".lock").read_text() == ""
    second = DataLock(data)
    second.acquire()
    second.release()
    second.release()  # twice: harmless


def test_data_lock_on_a_file_fails_in_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder")
    with pytest.raises(StoreError, match="cannot lock the data folder") as err:
        DataLock(blocker / "var").acquire()
    one_line(err.value)


# -- full disk: the reserve -------------------------------------------------------------------------


def test_event_log_keeps_a_real_disk_reserve(tmp_path: Path) -> None:
    data = tmp_path / "data"
    store = EventLog(data)
    reserve = data / ".reserve"
    assert store.reserve_bytes == RESERVE_BYTES == 16 * MIB and store.reserve_armed
    assert store.reserve_path == reserve
    assert reserve.stat().st_size == 16 * MIB
    assert reserve.stat().st_blocks * 512 >= 16 * MIB  # bytes on disk, not a sparse file
    assert not store.disk_full
    store.close()
    inode = reserve.stat().st_ino
    EventLog(data).close()  # reopening keeps the file it finds
    reader = EventLog(data, reserve_bytes=0)  # a reader (the CLI) leaves it alone
    assert not reader.reserve_armed
    reader.close()
    assert reserve.stat().st_ino == inode and allocated(reserve) == 16 * MIB
    EventLog(data, reserve_bytes=2 * MIB).close()  # a smaller reserve configured: trimmed
    assert allocated(reserve) == reserve.stat().st_size == 2 * MIB


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """Mount a fresh tmpfs of the given size (a real file system that really fills up)."""
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        where = tmp_path / f"disk{len(mounted)}"
        where.mkdir()
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs to fill (needs root): {done.stderr.strip()}")
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        if subprocess.run(["umount", str(where)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(where)], check=False)


def fill(path: Path) -> None:
    """Write to `path` until the file system has not one byte left."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        for size in (MIB, 64 * 1024, 4096, 512, 1):
            block = b"\xa5" * size
            with pytest.raises(OSError) as err:
                while True:
                    os.write(fd, block)
            assert err.value.errno == 28  # ENOSPC
    finally:
        os.close(fd)
    assert shutil.disk_usage(path.parent).free == 0


def real_alert(aid: str, **kw: object) -> tuple[AlertRecord, dict]:
    """An alert as the red loop makes it, with the exact payload the bus publishes."""
    alert = make_alert(aid, "e1", text="person in the lobby at the front door after hours", **kw)
    return alert, alert_payload(alert)


def alerts_until_full(store: EventLog, prefix: str, cap: int = 100_000) -> tuple[int, StoreError | None]:
    """Alerts (MQTT + one push channel each) committed before a write fails."""
    for n in range(cap):
        alert, body = real_alert(f"{prefix}{n}")
        try:
            store.alert(alert, body, TOPIC, push=["phones"])
        except StoreError as exc:
            return n, exc
    return cap, None


def test_full_disk_alerts_keep_committing_on_the_reserve(
    small_disk: Callable[[str], Path], caplog: pytest.LogCaptureFixture
) -> None:
    counts = {}
    for reserve in (0, 2 * MIB):
        disk = small_disk("8m")
        store = EventLog(disk / "data", reserve_bytes=reserve, reserve_margin_bytes=MIB)
        try:
            assert store.reserve_armed == bool(reserve)
            store.ensure_camera("lobby", "rtsp://cam/lobby")
            store.event_started(make_event("e1"))
            before, _ = alerts_until_full(store, "before", cap=50)
            fill(disk / "filler")
            caplog.clear()
            with caplog.at_level(logging.ERROR, logger="edge.store"):
                counts[reserve], err = alerts_until_full(store, "after")
            assert err is not None and "database or disk is full" in one_line(err)
            assert store.disk_full  # for the stats: alerts now go to the journal's memory
            # every alert that did commit is whole: its row and both outbox rows
            assert len(store.alerts(limit=10**6)) == store.outbox_depth() == before + counts[reserve]
            assert store.outbox_depth("push:phones") == before + counts[reserve]
            released = [r.getMessage() for r in caplog.records if "reserve" in r.getMessage()]
            if reserve:
                assert released == [
                    "disk full: released the 2 MiB reserve to keep committing alerts; free some space"
                ]
                assert not store.reserve_path.exists() and not store.reserve_armed
        finally:
            store.close()
    print(f"\nalerts committed once the disk was full: {counts[2 * MIB]} with a 2 MiB reserve, "
          f"{counts[0]} without")  # fmt: skip
    assert counts[0] == 0
    assert counts[2 * MIB] >= 500  # ~1000 per MiB here (alert row + MQTT and push rows)


def test_reserve_pauses_snapshots_and_is_rearmed_once_space_is_back(
    small_disk: Callable[[str], Path], caplog: pytest.LogCaptureFixture
) -> None:
    disk = small_disk("8m")
    store = EventLog(disk / "data", reserve_bytes=2 * MIB, reserve_margin_bytes=MIB)
    try:
        store.ensure_camera("lobby", "rtsp://cam/lobby")
        store.event_started(make_event("e1"))
        fill(disk / "filler")
        alert, body = real_alert("first")
        with caplog.at_level(logging.ERROR, logger="edge.store"):
            store.alert(alert, body, TOPIC)  # commits, on the reserve
        assert not store.disk_full and not store.reserve_armed
        assert any("released the 2 MiB reserve" in r.getMessage() for r in caplog.records)
        with pytest.raises(StoreError, match="snapshots wait until space is freed") as err:
            store.save_snapshot("e1", frame(), (10, 20, 110, 220), "person", 0.9)  # the space is for alerts
        one_line(err.value)
        assert not store.rearm_reserve()  # still no room

        (disk / "filler").unlink()  # someone frees space
        store.apply_retention(RetentionConfig(min_free_mb=0))
        assert store.reserve_armed and allocated(store.reserve_path) == 2 * MIB
        rel = store.save_snapshot("e1", frame(), (10, 20, 110, 220), "person", 0.9)
        assert (store.snapshot_dir / rel).is_file()

        fill(disk / "filler")  # and it works the next time too
        caplog.clear()
        with caplog.at_level(logging.ERROR, logger="edge.store"):
            n, _ = alerts_until_full(store, "again", cap=200)
        assert n == 200 and len(caplog.records) == 1 and not store.disk_full
    finally:
        store.close()


def test_reserve_released_once_for_camera_threads_that_fill_the_disk_together(
    small_disk: Callable[[str], Path], caplog: pytest.LogCaptureFixture
) -> None:
    disk = small_disk("8m")
    store = EventLog(disk / "data", reserve_bytes=2 * MIB, reserve_margin_bytes=MIB)
    failures: list[str] = []
    try:
        store.ensure_camera("lobby", "rtsp://cam/lobby")
        store.event_started(make_event("e1"))
        fill(disk / "filler")
        start = threading.Barrier(4)

        def camera(name: str) -> None:
            start.wait()
            for i in range(100):
                alert, body = real_alert(f"{name}-{i}")
                try:
                    store.alert(alert, body, TOPIC, push=["phones"])
                except StoreError as exc:
                    failures.append(str(exc))

        with caplog.at_level(logging.ERROR, logger="edge.store"):
            threads = [threading.Thread(target=camera, args=(f"cam{i}",)) for i in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        assert failures == []  # none of the threads saw the disk full
        assert len(store.alerts(limit=1000)) == 400
        assert [r.getMessage() for r in caplog.records] == [
            "disk full: released the 2 MiB reserve to keep committing alerts; free some space"
        ]
    finally:
        store.close()


def test_retention_deletes_old_finished_jobs_and_their_reports_but_keeps_open_ones(log: EventLog) -> None:
    now = time.time()
    old = now - 40 * DAY
    for job_id, created in (("old-done", old), ("old-open", old), ("new-done", now)):
        log.add_job(job_id, None, None, "report", "write a report", created_at=created, deadline=created + 60,
                    seconds=10)  # fmt: skip
    log.finish_job("old-done", "done", text="ok", html="<html>old</html>")
    log.finish_job("new-done", "done", text="ok", html="<html>new</html>")
    old_page = log.data_dir / log.job("old-done")["html_path"]
    assert old_page.is_file()
    report = log.apply_retention(RetentionConfig(max_age_days=30, min_free_mb=0), now=now)
    assert report.jobs_deleted == 1 and "1 blue-loop jobs deleted" in str(report)
    assert log.job("old-done") is None and not old_page.exists()  # the report went with its job
    assert log.job("old-open") is not None  # still waiting for its answer or its timeout
    assert (log.data_dir / log.job("new-done")["html_path"]).is_file()

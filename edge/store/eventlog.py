"""The event log: events, appearances, alerts, snapshots and the MQTT outbox in one SQLite file.

It also keeps what the admin page needs to survive a restart: the cameras added on the page (their
whole config), acknowledgements of events, the page's users and API tokens (hashes only) and the
audit log of every change (pruned by age with the rest).

One `EventLog` is shared by every thread of the appliance (a writer per camera, the MQTT publisher
draining the outbox, the CLI and admin page reading). Each call opens a short session; writes also
take an in-process lock, because handing the SQLite write lock over through a Python lock is
immediate, while SQLite's own busy handler sleeps in steps of milliseconds, which would show up in
the frame-to-alert latency. Other processes on the same file are serialised by BEGIN IMMEDIATE and
busy_timeout (see db.py).

Ordering the callers rely on: `ensure_camera` before events of that camera, `event_started` before
alerts and snapshots of that event (foreign keys); `alert()` before `save_snapshot()` so JPEG encoding
never delays the alert commit. Every failure surfaces as `StoreError` with a one-line message.

Full disk: a ballast file (`ballast.Reserve`, `data_dir/.reserve`) holds back a little space. A write
that fails for lack of space deletes it and is tried once more, so alerts go on committing while
someone frees space; sightings (`add_appearances`) and snapshot JPEGs never spend it, and snapshots
pause until it is written again (`rearm_reserve`, also at the end of every `apply_retention`).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar, cast

import numpy as np
from sqlalchemy import Insert, Table, and_, func, insert, or_, select, update
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, sessionmaker

from edge.config.models import RetentionConfig, RuleConfig
from edge.outbox.payloads import priority_of
from edge.store import retention
from edge.store.ballast import RESERVE_BYTES, RESERVE_NAME, Reserve, mib
from edge.store.db import WRITE_OPTION, StoreError, dumps, guard, is_disk_full, make_engine
from edge.store.migrations import migrate
from edge.store.models import (
    JOB_OPEN,
    JOB_STATUSES,
    MQTT,
    ROLES,
    Alert,
    ApiToken,
    Appearance,
    Audit,
    Camera,
    Event,
    Instruction,
    Job,
    Outbox,
    Rule,
    Setting,
    Snapshot,
    User,
    push_channel,
    undelivered,
)
from edge.store.retention import RetentionReport
from edge.store.snapshots import relative_path, remove_file, render_jpeg, safe_name, write_atomic
from edge.types import AlertRecord, Box, EventRecord

log = logging.getLogger(__name__)

DAY_S = 86_400.0
MIB = 1024 * 1024
DELETE_BATCH = 100
"""Events or snapshots deleted per transaction: retention must not hold the write lock for long."""
RECLAIM_PAGES = 2048
"""Free pages handed back per reclaim (8 MiB of 4 KiB pages): bounds the time the write lock is held."""
WAL_PAGES = 1000
"""SQLite's default wal_autocheckpoint."""
WAL_PAGES_ON_RESERVE = 32
"""wal_autocheckpoint while the disk is full and alerts live on the reserve."""
_WAL_PAGES_KEY = "reflex_wal_autocheckpoint"
TOUCH_EVERY_S = 60.0
"""A token's `last_used_at` is rewritten at most this often: not one write per API request."""

AppearanceRow = tuple[str | None, str, str, int | None, float, float, Box]
"""(event_id, camera, label, track_id, at, score, box)."""

CAMERAS = cast(Table, Camera.__table__)
RULES = cast(Table, Rule.__table__)
EVENTS = cast(Table, Event.__table__)
APPEARANCES = cast(Table, Appearance.__table__)
ALERTS = cast(Table, Alert.__table__)
OUTBOX = cast(Table, Outbox.__table__)
SNAPSHOTS = cast(Table, Snapshot.__table__)
INSTRUCTIONS = cast(Table, Instruction.__table__)
JOBS = cast(Table, Job.__table__)
USERS = cast(Table, User.__table__)
TOKENS = cast(Table, ApiToken.__table__)
AUDIT = cast(Table, Audit.__table__)
SETTINGS = cast(Table, Setting.__table__)

EVENT_STATES = ("open", "ended", "acked", "unacked")
"""What `events(state=...)` filters by: still going on, over, acknowledged, not acknowledged yet."""


def _upsert(table: Table, keep: tuple[str, ...] = (), coalesce: tuple[str, ...] = ()) -> Insert:
    """INSERT ... ON CONFLICT(pk) DO UPDATE, built once and reused (no per-call statement building).

    `keep` columns keep their first value; `coalesce` columns are only overwritten by non-NULL values
    (an update never clears a snapshot or re-opens an ended event).
    """
    stmt = sqlite_insert(table)
    pk = [c.name for c in table.primary_key]
    sets: dict[str, Any] = {}
    for col in table.c:
        if col.name in pk or col.name in keep:
            continue
        new = stmt.excluded[col.name]
        sets[col.name] = func.coalesce(new, col) if col.name in coalesce else new
    return stmt.on_conflict_do_update(index_elements=pk, set_=sets)


_CAMERA_UPSERT = _upsert(CAMERAS, keep=("created_at", "detect", "alerts", "origin", "config", "removed_at"))
_RULE_UPSERT = _upsert(RULES)
_SETTING_UPSERT = _upsert(SETTINGS)
_EVENT_UPSERT = _upsert(
    EVENTS, keep=("camera", "started_at", "acked_at", "acked_by"), coalesce=("ended_at", "snapshot")
)
_ALERT_UPSERT = _upsert(ALERTS, keep=("event_id",), coalesce=("snapshot",))
_OUTBOX_INSERT = insert(OUTBOX)


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    """One message for the publisher; publish `payload` as is, then `mark_delivered([id])` on PUBACK."""

    id: int
    """Delivery order."""
    channel: str
    """'mqtt' or 'push:NAME'."""
    kind: str
    topic: str
    payload: str
    """JSON text, identical on every retry."""
    message_id: str
    """Stable id consumers de-duplicate by."""
    created_at: float
    attempts: int


def _json_text(payload: dict, what: str) -> str:
    """The payload as the JSON text to publish; a value JSON cannot carry is the caller's bug, said
    as a StoreError so that it is logged like any other failed write."""
    try:
        return dumps(payload)
    except (TypeError, ValueError) as exc:
        raise StoreError(f"{what}: payload is not JSON: {exc}") from exc


def _box(box: Box | None) -> list[float] | None:
    return None if box is None else [float(v) for v in box]


def _delivery_state(row: Any) -> dict:
    """One outbox row as `alert_deliveries` shows it."""
    if row.delivered_at is not None:
        return {"state": "delivered", "at": row.delivered_at, "attempts": row.attempts}
    if row.dropped_at is not None:
        return {"state": "dropped", "at": row.dropped_at, "reason": row.drop_reason}
    return {"state": "pending", "attempts": row.attempts, "queued_at": row.created_at}


P = ParamSpec("P")
R = TypeVar("R")


def _spends_reserve(method: Callable[Concatenate[EventLog, P], R]) -> Callable[Concatenate[EventLog, P], R]:
    """A write that, failing for lack of disk space, releases the reserve and is tried once more.

    Safe to repeat: the failed attempt's transaction was rolled back as a whole.
    """

    @functools.wraps(method)
    def wrapper(self: EventLog, /, *args: P.args, **kwargs: P.kwargs) -> R:
        releases = self._reserve.releases
        try:
            return method(self, *args, **kwargs)
        except StoreError as exc:
            if not is_disk_full(exc) or not self._reserve.release(releases):
                raise
        return method(self, *args, **kwargs)

    return wrapper


class EventLog:
    """Thread-safe facade over the event database and the snapshot folder under `data_dir`."""

    def __init__(
        self,
        data_dir: Path,
        *,
        reserve_bytes: int = RESERVE_BYTES,
        reserve_margin_bytes: int | None = None,
    ) -> None:
        """Open (or create) `data_dir/events.db` and `data_dir/snapshots`, migrating the schema.

        `reserve_bytes`: size of the disk reserve `data_dir/.reserve`, written now if free space
        covers it plus `reserve_margin_bytes` (default: the reserve's size again). 0 disables it and
        leaves an existing reserve file alone: readers (the CLI) pass 0.
        """
        self.data_dir = Path(data_dir)
        self.db_path = self.data_dir / "events.db"
        self.snapshot_dir = self.data_dir / "snapshots"
        self._lock = threading.Lock()
        margin = reserve_bytes if reserve_margin_bytes is None else reserve_margin_bytes
        self._reserve = Reserve(self.data_dir / RESERVE_NAME, reserve_bytes, margin)
        self.disk_full = False
        """True when the last write failed for lack of disk space and the reserve is used up (or
        there is none): alerts are being held in memory. For the stats."""
        with guard(f"cannot open the event log in {self.data_dir}"):
            self.snapshot_dir.mkdir(parents=True, exist_ok=True)
            self._engine = make_engine(self.db_path)
            try:
                migrate(self._engine)
            except BaseException:
                self._engine.dispose()
                raise
        self._writer = sessionmaker(self._engine.execution_options(**{WRITE_OPTION: True}))
        self._reader = sessionmaker(self._engine)
        if reserve_bytes and not self._reserve.arm():
            log.warning(
                "event log: not enough free space in %s for the %s MiB disk reserve; "
                "it is written once there is",
                self.data_dir,
                mib(reserve_bytes),
            )

    # -- the disk reserve -----------------------------------------------------------------------

    @property
    def reserve_path(self) -> Path:
        return self._reserve.path

    @property
    def reserve_bytes(self) -> int:
        """The configured reserve size (0: none)."""
        return self._reserve.size

    @property
    def reserve_armed(self) -> bool:
        """The reserve file is on disk, ready to be given back."""
        return self._reserve.armed

    def rearm_reserve(self) -> bool:
        """Write the reserve again if it was used and free space is back above reserve + margin;
        returns whether it is armed. Snapshots resume once it is."""
        if not self._reserve.size or self._reserve.armed:
            return self._reserve.armed
        if self._reserve.arm():
            log.warning("event log: disk space is back; the %s MiB reserve is in place again",
                        mib(self._reserve.size))  # fmt: skip
        return self._reserve.armed

    def _running_on_reserve(self) -> bool:
        return self._reserve.size > 0 and self._reserve.releases > 0 and not self._reserve.armed

    def _wal_budget(self, session: Session) -> None:
        """While running on the reserve, checkpoint the WAL every few pages, so that it keeps being
        rewritten from its start instead of growing into the reserve (each commit appends whole
        pages: tens of KiB per alert); the reserve then goes to alert rows. Set per connection, and
        only when it changes."""
        pages = WAL_PAGES_ON_RESERVE if self._running_on_reserve() else WAL_PAGES
        conn = session.connection()
        if conn.info.get(_WAL_PAGES_KEY, WAL_PAGES) != pages:
            conn.exec_driver_sql(f"PRAGMA wal_autocheckpoint = {pages}")
            conn.info[_WAL_PAGES_KEY] = pages

    # -- sessions -------------------------------------------------------------------------------

    @contextmanager
    def _write(self, what: str) -> Iterator[Session]:
        """One short write transaction, committed on exit (durable against a process crash)."""
        try:
            with guard(what), self._lock, self._writer() as session, session.begin():
                self._wal_budget(session)
                yield session
        except StoreError as exc:
            if is_disk_full(exc):
                self.disk_full = not self._reserve.armed
            raise
        self.disk_full = False

    @contextmanager
    def _read(self, what: str) -> Iterator[Session]:
        """One short read transaction on a consistent snapshot; never blocks writers (WAL)."""
        with guard(what), self._reader() as session:
            yield session

    # -- cameras, rules, events -----------------------------------------------------------------

    @_spends_reserve
    def ensure_camera(self, name: str, source: str, *, detect: bool = True, alerts: bool = True) -> None:
        """Register a camera (or update its source) so events can reference it. `detect` and `alerts`
        are the switches' initial states; once a camera exists, its stored switches win."""
        row = {"name": name, "source": source, "created_at": time.time(), "detect": detect, "alerts": alerts}
        with self._write(f"cannot store camera {name!r}") as s:
            s.execute(_CAMERA_UPSERT, row)

    @_spends_reserve
    def set_switch(self, camera: str, switch: str, on: bool) -> None:
        """Persist an MQTT switch (`detect` or `alerts`) so it survives a restart."""
        if switch not in ("detect", "alerts"):
            raise StoreError(f"unknown switch {switch!r}")
        with self._write(f"cannot store switch {switch} of camera {camera!r}") as s:
            s.execute(update(CAMERAS).where(CAMERAS.c.name == camera).values({switch: bool(on)}))

    def switches(self) -> dict[str, dict[str, bool]]:
        """camera -> {'detect': bool, 'alerts': bool}, as last set."""
        stmt = select(CAMERAS.c.name, CAMERAS.c.detect, CAMERAS.c.alerts)
        with self._read("cannot read camera switches") as s:
            return {name: {"detect": bool(d), "alerts": bool(a)} for name, d, a in s.execute(stmt)}

    @_spends_reserve
    def add_instruction(self, instruction_id: str, text: str, camera: str | None, origin: str) -> bool:
        """Store an instruction; False if that id was already stored (a QoS 1 re-delivery)."""
        row = {
            "id": instruction_id,
            "text": text,
            "camera": camera,
            "origin": origin,
            "received_at": time.time(),
            "status": "received",
        }
        stmt = sqlite_insert(INSTRUCTIONS).values(row).on_conflict_do_nothing(index_elements=["id"])
        with self._write(f"cannot store instruction {instruction_id!r}") as s:
            return s.execute(stmt).rowcount == 1

    def set_instruction_status(self, instruction_id: str, status: str) -> None:
        """'answered', 'delegated' or 'failed', once the router has dealt with it (edge asks shows it)."""
        stmt = update(INSTRUCTIONS).where(INSTRUCTIONS.c.id == instruction_id).values(status=status)
        with self._write(f"cannot update instruction {instruction_id!r}") as s:
            s.execute(stmt)

    @_spends_reserve
    def ensure_rule(self, rule: RuleConfig, origin: str = "config") -> None:
        """Record the rule as it is now (so events naming it can be explained later) with its origin:
        'config' rules are only recorded, 'admin' and 'instruction' rules live here (see stored_rules)."""
        row = {
            "name": rule.name,
            "label": rule.label,
            "config": rule.model_dump(mode="json"),
            "updated_at": time.time(),
            "origin": origin,
            "removed_at": None,
        }
        with self._write(f"cannot store rule {rule.name!r}") as s:
            s.execute(_RULE_UPSERT, row)

    def remove_rule(self, name: str) -> None:
        """Mark a runtime rule removed; the row stays, so its old events stay explainable."""
        with self._write(f"cannot remove rule {name!r}") as s:
            s.execute(update(RULES).where(RULES.c.name == name).values(removed_at=time.time()))

    def stored_rules(self) -> list[tuple[RuleConfig, str]]:
        """The runtime rules (origin 'admin' or 'instruction') not removed, oldest first."""
        stmt = (
            select(RULES.c.config, RULES.c.origin)
            .where(RULES.c.origin != "config", RULES.c.removed_at.is_(None))
            .order_by(RULES.c.updated_at)
        )
        with self._read("cannot read stored rules") as s:
            rows = list(s.execute(stmt))
        return [(RuleConfig.model_validate(config), origin) for config, origin in rows]

    @_spends_reserve
    def save_camera(self, name: str, cfg: dict[str, Any], origin: str = "admin") -> None:
        """Store a camera added (or changed) at runtime with its whole config (CameraConfig as JSON),
        so it is started again after a restart. Its stored switches stay as they were, except for a
        camera that is new or was removed: that one starts with the config's `detect` and `alerts`."""
        if origin == "config":
            raise StoreError(f"camera {name!r}: config cameras are recorded with ensure_camera")
        now = time.time()
        values = {"source": str(cfg.get("source", "")), "origin": origin, "config": cfg, "removed_at": None}
        fresh = {"detect": bool(cfg.get("detect", True)), "alerts": bool(cfg.get("alerts", True))}
        with self._write(f"cannot store camera {name!r}") as s:
            removed = s.execute(select(CAMERAS.c.removed_at).where(CAMERAS.c.name == name)).first()
            if removed is None:
                s.execute(insert(CAMERAS), {"name": name, "created_at": now, **values, **fresh})
            else:
                again = fresh if removed.removed_at is not None else {}
                s.execute(update(CAMERAS).where(CAMERAS.c.name == name).values(**values, **again))

    def remove_camera(self, name: str) -> None:
        """Mark a runtime camera removed (not started again); the row stays for its old events."""
        stmt = (
            update(CAMERAS)
            .where(CAMERAS.c.name == name, CAMERAS.c.origin != "config")
            .values(removed_at=time.time())
        )
        with self._write(f"cannot remove camera {name!r}") as s:
            s.execute(stmt)

    def stored_cameras(self) -> list[tuple[str, dict[str, Any]]]:
        """The runtime cameras (added on the admin page) not removed, oldest first: (name, config)."""
        stmt = (
            select(CAMERAS.c.name, CAMERAS.c.config)
            .where(
                CAMERAS.c.origin != "config", CAMERAS.c.removed_at.is_(None), CAMERAS.c.config.is_not(None)
            )
            .order_by(CAMERAS.c.created_at, CAMERAS.c.name)
        )
        with self._read("cannot read stored cameras") as s:
            return [(name, dict(config)) for name, config in s.execute(stmt)]

    @staticmethod
    def _event_row(ev: EventRecord, ended_at: float | None) -> dict:
        return {
            "id": ev.id,
            "camera": ev.camera,
            "label": ev.label,
            "rule": ev.rule,
            "score": float(ev.score),
            "box": _box(ev.box),
            "zones": list(ev.zones),
            "track_id": ev.track_id,
            "started_at": float(ev.started_at),
            "ended_at": ended_at,
            "frame": int(ev.frame),
            "pts": float(ev.pts),
            "snapshot": ev.snapshot,
            "updated_at": time.time(),
        }

    @_spends_reserve
    def _write_event(self, ev: EventRecord, ended_at: float | None, what: str) -> None:
        with self._write(f"cannot store {what} of event {ev.id} (camera {ev.camera!r})") as s:
            s.execute(_EVENT_UPSERT, self._event_row(ev, ended_at))

    @_spends_reserve
    def event_transition(
        self,
        ev: EventRecord,
        transition: str,
        message: tuple[str, dict, str] | None = None,
        *,
        sighting: bool = True,
        delivered: bool = False,
    ) -> None:
        """Store a start/update/end, the sighting behind it and its outbox message in ONE commit.

        The red loop calls this just before an event's first alert, so one commit instead of three
        is time off the frame-to-alert latency. `message` is (topic, payload, message_id);
        `sighting=False` records no appearance (ending an event nobody saw end).
        """
        ended_at = time.time() if transition == "end" and ev.ended_at is None else ev.ended_at
        what = f"cannot store {transition} of event {ev.id} (camera {ev.camera!r})"
        text = _json_text(message[1], what) if message else None
        with self._write(what) as s:
            s.execute(_EVENT_UPSERT, self._event_row(ev, ended_at))
            if sighting and ev.box is not None:
                seen = {
                    "event_id": ev.id,
                    "camera": ev.camera,
                    "label": ev.label,
                    "track_id": ev.track_id,
                    "at": time.time(),
                    "score": float(ev.score),
                    "box": _box(ev.box),
                }
                s.execute(insert(APPEARANCES), [seen])
            if message is not None and text is not None:
                self._enqueue(s, "event", message[0], text, message[2], delivered=delivered)

    def event_started(self, ev: EventRecord) -> None:
        """Insert the event (an upsert, so a repeated start after a restart is harmless)."""
        self._write_event(ev, ev.ended_at, "start")

    def event_updated(self, ev: EventRecord) -> None:
        """Rewrite score, box, zones, frame... of a running event; never clears its snapshot."""
        self._write_event(ev, ev.ended_at, "update")

    def event_ended(self, ev: EventRecord) -> None:
        """Close the event; `ended_at` defaults to now when the record has none."""
        self._write_event(ev, time.time() if ev.ended_at is None else ev.ended_at, "end")

    def add_appearances(self, rows: list[AppearanceRow]) -> None:
        """Insert many sightings in one transaction (one executemany: cheap per row)."""
        if not rows:
            return
        params = [
            {
                "event_id": event_id,
                "camera": camera,
                "label": label,
                "track_id": track_id,
                "at": float(at),
                "score": float(score),
                "box": _box(box),
            }
            for event_id, camera, label, track_id, at, score, box in rows
        ]
        with self._write(f"cannot store {len(rows)} appearances") as s:
            s.execute(insert(APPEARANCES), params)

    # -- alerts and the outbox ------------------------------------------------------------------

    @staticmethod
    def _enqueue(
        session: Session,
        kind: str,
        topic: str,
        payload: str,
        message_id: str,
        channel: str = MQTT,
        *,
        delivered: bool = False,
    ) -> int:
        """`delivered`: the message already reached its channel from memory while the database was
        failing; the row is the record of it, never sent again."""
        now = time.time()
        row = {
            "channel": channel,
            "kind": kind,
            "priority": int(priority_of(kind)),
            "topic": topic,
            "payload": payload,
            "message_id": message_id,
            "created_at": now,
            "attempts": 0,
            "delivered_at": now if delivered else None,
        }
        return int(session.execute(_OUTBOX_INSERT, row).inserted_primary_key[0])

    @_spends_reserve
    def alert(
        self,
        alert: AlertRecord,
        payload: dict,
        topic: str,
        push: Iterable[str] = (),
        *,
        delivered: bool = False,
    ) -> int:
        """Store the alert and its outbox rows in ONE committed transaction; returns the MQTT row's id.

        The commit is on the frame-to-alert latency path, so this does a few prepared statements and
        nothing else (no reads, no JPEG). The same alert id again (a phase change) updates the alert
        row and queues a new message with the same message_id. `push` names the push channels (from
        the rule) that get a row of their own, with the same payload. `delivered`: MQTT already
        acknowledged it from memory (see `_enqueue`).
        """
        what = f"cannot store alert {alert.id} of event {alert.event_id}"
        text = _json_text(payload, what)
        row = {
            "id": alert.id,
            "event_id": alert.event_id,
            "rule": alert.rule,
            "camera": alert.camera,
            "label": alert.label,
            "severity": alert.severity,
            "text": alert.text,
            "at": float(alert.at),
            "phase": alert.phase,
            "frame": int(alert.frame),
            "pts": float(alert.pts),
            "box": _box(alert.box),
            "snapshot": alert.snapshot,
        }
        with self._write(what) as s:
            s.execute(_ALERT_UPSERT, row)
            for name in push:
                self._enqueue(s, "alert", topic, text, alert.id, push_channel(name))
            return self._enqueue(s, "alert", topic, text, alert.id, delivered=delivered)

    @_spends_reserve
    def enqueue(self, kind: str, topic: str, payload: dict, message_id: str) -> int:
        """Queue any other message (event transitions...) behind the alerts already queued."""
        what = f"cannot queue {kind} message {message_id}"
        text = _json_text(payload, what)
        with self._write(what) as s:
            return self._enqueue(s, kind, topic, text, message_id)

    def outbox_pending(
        self, limit: int = 100, channel: str = MQTT, after: int = 0, priority: int | None = None
    ) -> list[OutboxMessage]:
        """Undelivered, not dropped messages of one channel in delivery (id) order, ids above `after`;
        only those of one `priority` when given (the bus drains priorities in turn)."""
        cols = [OUTBOX.c[f.name] for f in fields(OutboxMessage)]
        where = and_(undelivered(), OUTBOX.c.channel == channel, OUTBOX.c.id > after)
        if priority is not None:
            where = and_(where, OUTBOX.c.priority == priority)
        stmt = select(*cols).where(where).order_by(OUTBOX.c.id).limit(limit)
        with self._read("cannot read the outbox") as s:
            return [OutboxMessage(**row._mapping) for row in s.execute(stmt)]

    @_spends_reserve
    def mark_delivered(self, outbox_ids: list[int]) -> None:
        """Record the broker's acknowledgement; repeated acks keep the first time."""
        if not outbox_ids:
            return
        now = time.time()
        with self._write(f"cannot mark {len(outbox_ids)} outbox messages delivered") as s:
            for start in range(0, len(outbox_ids), retention.CHUNK):
                chunk = outbox_ids[start : start + retention.CHUNK]
                s.execute(
                    update(OUTBOX)
                    .where(OUTBOX.c.id.in_(chunk), OUTBOX.c.delivered_at.is_(None))
                    .values(delivered_at=now)
                )

    @_spends_reserve
    def mark_attempt(self, outbox_id: int) -> None:
        """Count a publish attempt (for back-off and for spotting messages the broker keeps refusing)."""
        with self._write(f"cannot count an attempt for outbox message {outbox_id}") as s:
            s.execute(update(OUTBOX).where(OUTBOX.c.id == outbox_id).values(attempts=OUTBOX.c.attempts + 1))

    @_spends_reserve
    def drop_message(self, outbox_id: int, reason: str) -> None:
        """Mark one undelivered outbox row dropped: it must never be sent (`reason` says why)."""
        with self._write(f"cannot drop outbox message {outbox_id}") as s:
            s.execute(
                update(OUTBOX)
                .where(OUTBOX.c.id == outbox_id, undelivered())
                .values(dropped_at=time.time(), drop_reason=reason)
            )

    def outbox_dropped(self) -> int:
        """Messages that will never be delivered because they were shed or their channel removed."""
        stmt = select(func.count()).select_from(OUTBOX).where(OUTBOX.c.dropped_at.is_not(None))
        with self._read("cannot read the outbox") as s:
            return int(s.scalar(stmt) or 0)

    @_spends_reserve
    def drop_unknown_push_channels(self, configured: set[str]) -> dict[str, int]:
        """Mark undelivered rows of push channels not in `configured` as dropped; channel -> count.

        Nobody can send them any more; left in place they would pin their alerts against retention.
        """
        keep = [push_channel(name) for name in configured]
        where = and_(undelivered(), OUTBOX.c.channel.like("push:%"), OUTBOX.c.channel.not_in(keep))
        count = select(OUTBOX.c.channel, func.count()).where(where).group_by(OUTBOX.c.channel)
        with self._write("cannot drop outbox rows of removed push channels") as s:
            dropped = {channel: int(n) for channel, n in s.execute(count)}
            if dropped:
                reason = "push channel no longer configured"
                s.execute(update(OUTBOX).where(where).values(dropped_at=time.time(), drop_reason=reason))
        return dropped

    def outbox_depth(self, channel: str | None = MQTT) -> int:
        """How many messages wait for `channel` (None: for any channel); published in the stats topic."""
        where = undelivered() if channel is None else and_(undelivered(), OUTBOX.c.channel == channel)
        with self._read("cannot read the outbox") as s:
            return int(s.scalar(select(func.count()).select_from(OUTBOX).where(where)) or 0)

    # -- snapshots ------------------------------------------------------------------------------

    def save_snapshot(
        self, event_id: str, image: np.ndarray, box: Box | None, label: str, score: float
    ) -> str:
        """Write the annotated JPEG and make it the snapshot of the event and of its alerts that have
        none yet; returns its path relative to the snapshot folder.

        Encoding and the file write happen outside the write lock, so camera threads keep committing.
        """
        what = f"cannot save a snapshot of event {event_id}"
        with self._read(what) as s:
            camera = s.scalar(select(EVENTS.c.camera).where(EVENTS.c.id == event_id))
        if camera is None:
            raise StoreError(f"{what}: no such event (event_started must come first)")
        if self._running_on_reserve() and not self.rearm_reserve():
            raise StoreError(f"{what}: the disk is full; snapshots wait until space is freed, "
                             "the reserve is kept for alerts")  # fmt: skip
        try:
            jpeg = render_jpeg(image, box, label, score)
        except (ValueError, TypeError, AttributeError) as exc:
            raise StoreError(f"{what}: {exc}") from exc
        now = time.time()
        rel = relative_path(camera, event_id, now)
        with guard(what):
            write_atomic(self.snapshot_dir / rel, jpeg)
        try:
            with self._write(what) as s:
                s.execute(
                    insert(SNAPSHOTS),
                    {"event_id": event_id, "path": rel, "created_at": now, "bytes": len(jpeg)},
                )
                s.execute(update(EVENTS).where(EVENTS.c.id == event_id).values(snapshot=rel))
                s.execute(  # the alert just committed (alert() comes first) gets this picture too
                    update(ALERTS)
                    .where(ALERTS.c.event_id == event_id, ALERTS.c.snapshot.is_(None))
                    .values(snapshot=rel)
                )
        except StoreError:
            with contextlib.suppress(OSError):  # no file without a row: retention could never find it
                remove_file(self.snapshot_dir, rel)
            raise
        return rel

    # -- queries --------------------------------------------------------------------------------

    def events(
        self,
        *,
        limit: int = 50,
        camera: str | None = None,
        label: str | None = None,
        since: float | None = None,
        until: float | None = None,
        state: str | None = None,
    ) -> list[dict]:
        """Events started at or after `since` and before `until`, newest first, as JSON-ready dicts.
        `state` (EVENT_STATES): 'open' (not ended), 'ended', 'acked' or 'unacked'; an unknown one is a
        ValueError (the caller passed what a person typed)."""
        stmt = select(EVENTS).order_by(EVENTS.c.started_at.desc(), EVENTS.c.id.desc()).limit(limit)
        if camera is not None:
            stmt = stmt.where(EVENTS.c.camera == camera)
        if label is not None:
            stmt = stmt.where(EVENTS.c.label == label)
        if since is not None:
            stmt = stmt.where(EVENTS.c.started_at >= since)
        if until is not None:
            stmt = stmt.where(EVENTS.c.started_at < until)
        if state is not None:
            filters = {
                "open": EVENTS.c.ended_at.is_(None),
                "ended": EVENTS.c.ended_at.is_not(None),
                "acked": EVENTS.c.acked_at.is_not(None),
                "unacked": EVENTS.c.acked_at.is_(None),
            }
            if state not in filters:
                raise ValueError(f"unknown event state {state!r} (expected one of {', '.join(EVENT_STATES)})")
            stmt = stmt.where(filters[state])
        with self._read("cannot read events") as s:
            return [dict(row._mapping) for row in s.execute(stmt)]

    def event(self, event_id: str) -> dict | None:
        """One event with its `alerts` (oldest first) and `job`: the newest blue-loop job about it (a
        verification of its alert: status, result text and data, the HTML report's path), or None."""
        about = func.json_extract(JOBS.c.context, "$.alert.event_id")
        with self._read(f"cannot read event {event_id}") as s:
            row = s.execute(select(EVENTS).where(EVENTS.c.id == event_id)).first()
            if row is None:
                return None
            alerts = s.execute(
                select(ALERTS).where(ALERTS.c.event_id == event_id).order_by(ALERTS.c.at, ALERTS.c.id)
            )
            job = s.execute(
                select(JOBS).where(about == event_id).order_by(JOBS.c.created_at.desc()).limit(1)
            ).first()
            return {
                **row._mapping,
                "alerts": [dict(a._mapping) for a in alerts],
                "job": dict(job._mapping) if job is not None else None,
            }

    def ack_event(self, event_id: str, by: str) -> bool:
        """Acknowledge an event (once: the first acknowledgement stays); False when there is no such
        event or it was acknowledged already."""
        stmt = (
            update(EVENTS)
            .where(EVENTS.c.id == event_id, EVENTS.c.acked_at.is_(None))
            .values(acked_at=time.time(), acked_by=by)
        )
        with self._write(f"cannot acknowledge event {event_id}") as s:
            return s.execute(stmt).rowcount == 1

    def open_events(self) -> list[EventRecord]:
        """Events with no end, oldest first. At start-up these were left open by a crash or power cut."""
        stmt = select(EVENTS).where(EVENTS.c.ended_at.is_(None)).order_by(EVENTS.c.started_at)
        with self._read("cannot read open events") as s:
            rows = [row._mapping for row in s.execute(stmt)]
        return [
            EventRecord(
                id=r["id"],
                camera=r["camera"],
                label=r["label"],
                rule=r["rule"],
                score=r["score"],
                box=tuple(r["box"]) if r["box"] else None,
                started_at=r["started_at"],
                frame=r["frame"],
                pts=r["pts"],
                track_id=r["track_id"],
                zones=list(r["zones"] or []),
                ended_at=r["updated_at"],  # the last moment it was known to be going on
                snapshot=r["snapshot"],
            )
            for r in rows
        ]

    def alerts(self, *, event_id: str | None = None, limit: int = 100) -> list[dict]:
        """Alerts, newest first, optionally of one event, as JSON-ready dicts."""
        stmt = select(ALERTS).order_by(ALERTS.c.at.desc(), ALERTS.c.id.desc()).limit(limit)
        if event_id is not None:
            stmt = stmt.where(ALERTS.c.event_id == event_id)
        with self._read("cannot read alerts") as s:
            return [dict(row._mapping) for row in s.execute(stmt)]

    def alert_deliveries(
        self, limit: int = 50, camera: str | None = None, since: float | None = None
    ) -> list[dict]:
        """Alerts at or after `since`, newest first, each with `deliveries`: channel -> state.

        Channels are the outbox's ('mqtt' first, then 'push:NAME' sorted), states one of
        ``{"state": "delivered", "at": t, "attempts": n}``, ``{"state": "pending", "attempts": n,
        "queued_at": t}``, ``{"state": "dropped", "at": t, "reason": text}``. An alert queued again
        (a phase change) shows its newest message per channel. Channels whose rows retention already
        pruned are absent.
        """
        stmt = select(ALERTS).order_by(ALERTS.c.at.desc(), ALERTS.c.id.desc()).limit(limit)
        if camera is not None:
            stmt = stmt.where(ALERTS.c.camera == camera)
        if since is not None:
            stmt = stmt.where(ALERTS.c.at >= since)
        cols = (
            OUTBOX.c.message_id,
            OUTBOX.c.channel,
            OUTBOX.c.created_at,
            OUTBOX.c.attempts,
            OUTBOX.c.delivered_at,
            OUTBOX.c.dropped_at,
            OUTBOX.c.drop_reason,
        )
        with self._read("cannot read alert deliveries") as s:  # one snapshot: alerts and their rows
            alerts = [dict(row._mapping) for row in s.execute(stmt)]
            states: dict[str, dict[str, dict]] = {a["id"]: {} for a in alerts}
            ids = list(states)
            for start in range(0, len(ids), retention.CHUNK):
                chunk = ids[start : start + retention.CHUNK]
                where = and_(OUTBOX.c.kind == "alert", OUTBOX.c.message_id.in_(chunk))
                for m in s.execute(select(*cols).where(where).order_by(OUTBOX.c.id)):
                    states[m.message_id][m.channel] = _delivery_state(m)  # newest row wins
        for a in alerts:
            found = states[a["id"]]
            a["deliveries"] = {ch: found[ch] for ch in sorted(found, key=lambda c: (c != MQTT, c))}
        return alerts

    def outbox_backlog(self) -> dict[str, dict[str, int]]:
        """What waits per channel: {'mqtt': {'alerts': 3, 'other': 5}, 'push:NAME': {...}}; channels
        with nothing waiting are absent (an empty dict: everything delivered or dropped)."""
        is_alert = (OUTBOX.c.kind == "alert").label("is_alert")
        stmt = (
            select(OUTBOX.c.channel, is_alert, func.count())
            .where(undelivered())
            .group_by(OUTBOX.c.channel, is_alert)
        )
        backlog: dict[str, dict[str, int]] = {}
        with self._read("cannot read the outbox") as s:
            for channel, alert, n in s.execute(stmt):
                backlog.setdefault(channel, {"alerts": 0, "other": 0})["alerts" if alert else "other"] += n
        return dict(sorted(backlog.items(), key=lambda item: (item[0] != MQTT, item[0])))

    # -- delegated (blue-loop) jobs -------------------------------------------------------------

    @_spends_reserve
    def add_job(
        self,
        job_id: str,
        ask_id: str | None,
        camera: str | None,
        kind: str,
        prompt: str,
        *,
        created_at: float,
        deadline: float,
        seconds: float,
        context: dict | None = None,
    ) -> bool:
        """Store a new job (status 'queued', no request yet); False if that id is stored already.
        `context`: extra context the caller gave, kept for a rebuild of the request after a restart."""
        row = {
            "job_id": job_id,
            "ask_id": ask_id,
            "camera": camera,
            "kind": kind,
            "prompt": prompt,
            "status": "queued",
            "created_at": created_at,
            "deadline": deadline,
            "seconds": seconds,
            "context": context,
            "attempts": 0,
        }
        stmt = sqlite_insert(JOBS).values(row).on_conflict_do_nothing(index_elements=["job_id"])
        with self._write(f"cannot store job {job_id}") as s:
            return s.execute(stmt).rowcount == 1

    def queue_job_request(self, job_id: str, topic: str, payload: dict, frames: int) -> int:
        """Queue the job's request (outbox kind 'blue_request', message id = the job id: workers
        de-duplicate by it) and record it, in one commit; returns its size in bytes, 0 when the job
        is no longer open (nothing queued). Large, so it never spends the disk reserve."""
        what = f"cannot queue the request of job {job_id}"
        text = _json_text(payload, what)
        with self._write(what) as s:
            changed = s.execute(
                update(JOBS)
                .where(JOBS.c.job_id == job_id, JOBS.c.status.in_(JOB_OPEN))
                .values(attempts=1, frames=frames, request_bytes=len(text))
            ).rowcount
            if not changed:
                return 0
            self._enqueue(s, "blue_request", topic, text, job_id)
        return len(text)

    def requeue_job(self, job_id: str) -> bool:
        """Resend: queue the job's latest request again (same bytes, same message id), count the
        attempt and set the job back to 'queued'. False if the job is not open or has no request."""
        latest = (
            select(OUTBOX.c.topic, OUTBOX.c.payload)
            .where(OUTBOX.c.kind == "blue_request", OUTBOX.c.message_id == job_id)
            .order_by(OUTBOX.c.id.desc())
            .limit(1)
        )
        with self._write(f"cannot queue job {job_id} again") as s:
            request = s.execute(latest).first()
            if request is None:
                return False
            changed = s.execute(
                update(JOBS)
                .where(JOBS.c.job_id == job_id, JOBS.c.status.in_(JOB_OPEN))
                .values(attempts=JOBS.c.attempts + 1, status="queued")
            ).rowcount
            if not changed:
                return False
            self._enqueue(s, "blue_request", request.topic, request.payload, job_id)
        return True

    def last_worker_answer(self) -> float | None:
        """When a blue-loop worker last answered a job (a result or its error), None if never: the
        appliance cannot see the workers themselves, only what comes back from them."""
        stmt = select(func.max(JOBS.c.finished_at)).where(JOBS.c.worker_ms.is_not(None))
        with self._read("cannot read the jobs") as s:
            return s.scalar(stmt)

    def open_jobs(self) -> list[dict]:
        """Jobs waiting for a result, oldest first, as dicts, each with `delivered_at`: when the
        broker acknowledged its latest request (None: not yet, or no request queued)."""
        delivered = (
            select(OUTBOX.c.delivered_at)
            .where(OUTBOX.c.kind == "blue_request", OUTBOX.c.message_id == JOBS.c.job_id)
            .order_by(OUTBOX.c.id.desc())
            .limit(1)
            .correlate(JOBS)
            .scalar_subquery()
            .label("delivered_at")
        )
        stmt = select(JOBS, delivered).where(JOBS.c.status.in_(JOB_OPEN)).order_by(JOBS.c.created_at)
        with self._read("cannot read the open jobs") as s:
            return [dict(row._mapping) for row in s.execute(stmt)]

    def mark_job_sent(self, job_id: str, at: float) -> None:
        """The broker acknowledged the job's latest request at `at`."""
        with self._write(f"cannot mark job {job_id} sent") as s:
            s.execute(
                update(JOBS)
                .where(JOBS.c.job_id == job_id, JOBS.c.status.in_(JOB_OPEN))
                .values(status="sent", sent_at=at)
            )

    @_spends_reserve
    def finish_job(
        self,
        job_id: str,
        status: str,
        *,
        text: str | None = None,
        data: Any = None,
        html: str | None = None,
        worker_ms: float | None = None,
        error: str | None = None,
    ) -> dict | None:
        """Record the end of a job, once: returns the job (a dict, as stored now) when this call
        ended it, None when it had ended already or is unknown (a re-delivered or late result). A
        request still waiting for the broker is dropped: it is of no use any more. The HTML of a
        result is saved as `jobs/JOB_ID.html` under the data folder."""
        if status not in JOB_STATUSES or status in JOB_OPEN:
            raise StoreError(f"job {job_id}: {status!r} is not a final status")
        now = time.time()
        page = html.encode() if html else None
        what = f"cannot store the result of job {job_id}"
        with self._write(what) as s:
            created = s.scalar(
                select(JOBS.c.created_at).where(JOBS.c.job_id == job_id, JOBS.c.status.in_(JOB_OPEN))
            )
            if created is None:
                return None
            values = {
                "status": status,
                "finished_at": now,
                "elapsed_ms": round((now - created) * 1000.0, 1),
                "worker_ms": worker_ms,
                "result_text": text,
                "result_data": data,
                "html_bytes": len(page) if page is not None else None,
                "error": error,
            }
            s.execute(update(JOBS).where(JOBS.c.job_id == job_id).values(values))
            s.execute(
                update(OUTBOX)
                .where(OUTBOX.c.kind == "blue_request", OUTBOX.c.message_id == job_id, undelivered())
                .values(dropped_at=now, drop_reason=f"job {status}")
            )
            job = dict(s.execute(select(JOBS).where(JOBS.c.job_id == job_id)).one()._mapping)
        if page is not None:
            rel = f"jobs/{safe_name(job_id)}.html"
            try:
                write_atomic(self.data_dir / rel, page)
                with self._write(what) as s:
                    s.execute(update(JOBS).where(JOBS.c.job_id == job_id).values(html_path=rel))
                job["html_path"] = rel
            except (OSError, StoreError) as exc:
                log.error("job %s: its HTML result (%d bytes) was not saved: %s", job_id, len(page), exc)
        return job

    def job(self, job_id: str) -> dict | None:
        """One job as a dict, or None."""
        with self._read(f"cannot read job {job_id}") as s:
            row = s.execute(select(JOBS).where(JOBS.c.job_id == job_id)).first()
        return dict(row._mapping) if row is not None else None

    def asks(self, limit: int = 50) -> list[dict]:
        """Instructions, newest first, each with its `answers` (the outbox rows of kind 'answer'
        whose payload id is the instruction's id, in order: kind, text, job_id, data, queued_at,
        delivered_at) and its `jobs` (as stored)."""
        stmt = select(INSTRUCTIONS).order_by(INSTRUCTIONS.c.received_at.desc()).limit(limit)
        with self._read("cannot read the instructions") as s:
            return self._with_answers(s, [dict(row._mapping) for row in s.execute(stmt)])

    def ask(self, ask_id: str) -> dict | None:
        """One instruction as an item of `asks()` (with its answers and jobs), or None."""
        stmt = select(INSTRUCTIONS).where(INSTRUCTIONS.c.id == ask_id)
        with self._read(f"cannot read instruction {ask_id!r}") as s:
            found = self._with_answers(s, [dict(row._mapping) for row in s.execute(stmt)])
        return found[0] if found else None

    @staticmethod
    def _with_answers(s: Session, asks: list[dict]) -> list[dict]:
        """The instructions, in the order given, each with its `answers` and `jobs`."""
        if not asks:
            return []
        ask_id = func.json_extract(OUTBOX.c.payload, "$.id")
        by_id = {a["id"]: {**a, "answers": [], "jobs": []} for a in asks}
        ids = list(by_id)
        since = min(a["received_at"] for a in asks) - 1.0  # answers come after their ask
        for start in range(0, len(ids), retention.CHUNK):
            chunk = ids[start : start + retention.CHUNK]
            cols = (ask_id.label("ask_id"), OUTBOX.c.payload, OUTBOX.c.created_at, OUTBOX.c.delivered_at)
            answers = (
                select(*cols)
                .where(OUTBOX.c.kind == "answer", OUTBOX.c.created_at >= since, ask_id.in_(chunk))
                .order_by(OUTBOX.c.id)
            )
            for row in s.execute(answers):
                payload = json.loads(row.payload)
                by_id[row.ask_id]["answers"].append(
                    {
                        "kind": payload.get("kind"),
                        "text": payload.get("text"),
                        "job_id": payload.get("job_id"),
                        "data": payload.get("data"),
                        "queued_at": row.created_at,
                        "delivered_at": row.delivered_at,
                    }
                )
            jobs = select(JOBS).where(JOBS.c.ask_id.in_(chunk)).order_by(JOBS.c.created_at)
            for row in s.execute(jobs):
                by_id[row.ask_id]["jobs"].append(dict(row._mapping))
        return list(by_id.values())

    # -- admin page: users, API tokens, the audit log -----------------------------------------------

    def add_user(self, name: str, password_hash: str, role: str) -> bool:
        """A new account; False when the name is taken (nothing changes then)."""
        self._check_role(role)
        now = time.time()
        row = {"name": name, "password_hash": password_hash, "role": role, "created_at": now,
               "password_changed_at": now}  # fmt: skip
        stmt = sqlite_insert(USERS).values(row).on_conflict_do_nothing(index_elements=["name"])
        with self._write(f"cannot add user {name!r}") as s:
            return s.execute(stmt).rowcount == 1

    def user(self, name: str) -> dict | None:
        """One account, with its password hash (for checking a login), or None."""
        with self._read(f"cannot read user {name!r}") as s:
            row = s.execute(select(USERS).where(USERS.c.name == name)).first()
        return dict(row._mapping) if row is not None else None

    def users(self) -> list[dict]:
        """Every account, by name, without password hashes."""
        cols = [c for c in USERS.c if c.name != "password_hash"]
        with self._read("cannot read users") as s:
            return [dict(row._mapping) for row in s.execute(select(*cols).order_by(USERS.c.name))]

    def user_count(self) -> int:
        with self._read("cannot read users") as s:
            return int(s.scalar(select(func.count()).select_from(USERS)) or 0)

    def set_password(self, name: str, password_hash: str) -> bool:
        """False when there is no such user."""
        values = {"password_hash": password_hash, "password_changed_at": time.time()}
        with self._write(f"cannot change the password of {name!r}") as s:
            return s.execute(update(USERS).where(USERS.c.name == name).values(values)).rowcount == 1

    def set_role(self, name: str, role: str) -> bool:
        """False when there is no such user."""
        self._check_role(role)
        with self._write(f"cannot change the role of {name!r}") as s:
            return s.execute(update(USERS).where(USERS.c.name == name).values(role=role)).rowcount == 1

    def remove_user(self, name: str) -> bool:
        """Delete an account and revoke its tokens, in one commit; False when there is no such user."""
        with self._write(f"cannot remove user {name!r}") as s:
            s.execute(
                update(TOKENS)
                .where(TOKENS.c.user == name, TOKENS.c.revoked_at.is_(None))
                .values(revoked_at=time.time())
            )
            return s.execute(USERS.delete().where(USERS.c.name == name)).rowcount == 1

    @staticmethod
    def _check_role(role: str) -> None:
        if role not in ROLES:
            raise StoreError(f"unknown role {role!r} (expected one of {', '.join(ROLES)})")

    def add_token(self, token_id: str, name: str, user: str, token_hash: str) -> None:
        """Store a new API token by its hash (sha256 hex of the token, which is not kept)."""
        row = {
            "id": token_id,
            "name": name,
            "user": user,
            "token_hash": token_hash,
            "created_at": time.time(),
        }
        with self._write(f"cannot store token {name!r}") as s:
            s.execute(insert(TOKENS), row)

    def token_by_hash(self, token_hash: str) -> dict | None:
        """The unrevoked token of an existing user with this hash (without the hash), with its user's
        `role`; None otherwise."""
        cols = [c for c in TOKENS.c if c.name != "token_hash"]
        stmt = (
            select(*cols, USERS.c.role)
            .join(USERS, USERS.c.name == TOKENS.c.user)
            .where(TOKENS.c.token_hash == token_hash, TOKENS.c.revoked_at.is_(None))
        )
        with self._read("cannot read tokens") as s:
            row = s.execute(stmt).first()
        return dict(row._mapping) if row is not None else None

    def tokens(self) -> list[dict]:
        """The tokens not revoked, oldest first, without their hashes: id, name, user, created_at,
        last_used_at, revoked_at."""
        cols = [c for c in TOKENS.c if c.name != "token_hash"]
        stmt = select(*cols).where(TOKENS.c.revoked_at.is_(None)).order_by(TOKENS.c.created_at)
        with self._read("cannot read tokens") as s:
            return [dict(row._mapping) for row in s.execute(stmt)]

    def revoke_token(self, token_id: str) -> bool:
        """False when there is no such token or it was revoked already."""
        stmt = (
            update(TOKENS)
            .where(TOKENS.c.id == token_id, TOKENS.c.revoked_at.is_(None))
            .values(revoked_at=time.time())
        )
        with self._write(f"cannot revoke token {token_id!r}") as s:
            return s.execute(stmt).rowcount == 1

    def touch_token(self, token_id: str) -> None:
        """Note that the token was just used (shown in the token list)."""
        now = time.time()
        stale = or_(TOKENS.c.last_used_at.is_(None), TOKENS.c.last_used_at < now - TOUCH_EVERY_S)
        stmt = update(TOKENS).where(TOKENS.c.id == token_id, stale).values(last_used_at=now)
        with self._write(f"cannot note the use of token {token_id!r}") as s:
            s.execute(stmt)

    @_spends_reserve
    def audit(self, who: str, action: str, detail: dict[str, Any], remote: str | None) -> None:
        """One row of the audit log: who did what (action + detail), now, from where."""
        row = {"at": time.time(), "who": who, "action": action, "detail": detail, "remote": remote}
        with self._write(f"cannot write the audit log ({action} by {who})") as s:
            s.execute(insert(AUDIT), row)

    # -- runtime settings (the mode) ----------------------------------------------------------------

    @_spends_reserve
    def set_setting(self, key: str, value: Any, by: str) -> None:
        """Store a runtime setting (JSON `value`), set now by `by`; it survives restarts."""
        row = {"key": key, "value": value, "set_at": time.time(), "set_by": by}
        with self._write(f"cannot store setting {key!r}") as s:
            s.execute(_SETTING_UPSERT, row)

    def setting(self, key: str) -> dict | None:
        """{'value', 'set_at', 'set_by'} of a stored setting, None when it was never set."""
        stmt = select(SETTINGS.c.value, SETTINGS.c.set_at, SETTINGS.c.set_by).where(SETTINGS.c.key == key)
        with self._read(f"cannot read setting {key!r}") as s:
            row = s.execute(stmt).first()
        return dict(row._mapping) if row is not None else None

    def audit_log(self, limit: int = 200) -> list[dict]:
        """The latest changes, newest first: at, who, action, detail, remote."""
        stmt = select(AUDIT.c.at, AUDIT.c.who, AUDIT.c.action, AUDIT.c.detail, AUDIT.c.remote)
        with self._read("cannot read the audit log") as s:
            return [dict(row._mapping) for row in s.execute(stmt.order_by(AUDIT.c.id.desc()).limit(limit))]

    # -- retention ------------------------------------------------------------------------------

    def apply_retention(
        self,
        cfg: RetentionConfig,
        now: float | None = None,
        *,
        free_bytes: Callable[[], int] | None = None,
    ) -> RetentionReport:
        """Delete by age, then by disk space; undelivered outbox rows and their alerts always stay.

        `free_bytes` reports free bytes on the data disk (default: shutil.disk_usage); tests inject
        one instead of filling a real disk. "MB" in `min_free_mb` means MiB. Last, however it went,
        the disk reserve is written again if it was used and there is room for it.
        """
        try:
            return self._apply_retention(cfg, time.time() if now is None else now, free_bytes)
        finally:
            self.rearm_reserve()

    def _apply_retention(
        self, cfg: RetentionConfig, now: float, free_bytes: Callable[[], int] | None
    ) -> RetentionReport:
        report = RetentionReport()
        with self._write("outbox shedding failed") as s:
            report.shed_messages, report.shed_alerts = retention.shed_outbox(s, cfg.outbox_max_messages, now)
        if report.shed_alerts:
            log.error(
                "OUTBOX FULL: dropped the %d oldest undelivered alerts (and %d other messages) to stay "
                "under %d per channel: the broker has not acknowledged anything for a long time",
                report.shed_alerts,
                report.shed_messages,
                cfg.outbox_max_messages,
            )
        elif report.shed_messages:
            log.error(
                "outbox full: dropped the %d oldest undelivered event messages (alerts kept)",
                report.shed_messages,
            )
        self._retain_by_age(now - cfg.max_age_days * DAY_S, report)
        need = int(cfg.min_free_mb * MIB)
        if need > 0:
            self._retain_by_disk(need, free_bytes or self._disk_free, report)
        self._reclaim()
        if report.undelivered_kept:
            log.warning(
                "event log: kept %d outbox messages older than %g days because the broker never "
                "acknowledged them (is MQTT reachable?)",
                report.undelivered_kept,
                cfg.max_age_days,
            )
        if report.events_deleted or report.snapshots_deleted or report.jobs_deleted:
            log.info("event log retention: %s", report)
        return report

    def _disk_free(self) -> int:
        with guard(f"cannot measure free space under {self.data_dir}"):
            return shutil.disk_usage(self.data_dir).free

    def _retain_by_age(self, cutoff: float, report: RetentionReport) -> None:
        """In batches of short transactions, so camera threads can commit alerts in between."""
        with self._write("retention by age failed") as s:
            report.undelivered_kept = retention.count_old_undelivered(s, cutoff)
            retention.prune_outbox(s, cutoff)
            s.execute(AUDIT.delete().where(AUDIT.c.at < cutoff))
        while True:
            with self._write("retention by age failed") as s:
                ids = retention.expired_events(s, cutoff, DELETE_BATCH)
                paths = retention.delete_events(s, ids)
            if not ids:
                break
            report.events_deleted += len(ids)
            self._remove_files(paths, report)
        while True:
            with self._write("retention by age failed") as s:
                if not retention.delete_stray_appearances(s, cutoff, DELETE_BATCH * 10):
                    break
        self._retain_jobs(cutoff, report)

    def _retain_jobs(self, cutoff: float, report: RetentionReport) -> None:
        """Finished blue-loop jobs older than the cutoff go, with their saved HTML results; open jobs
        stay (they are answered or timed out first)."""
        while True:
            with self._write("retention of jobs failed") as s:
                rows = s.execute(
                    select(JOBS.c.job_id, JOBS.c.html_path)
                    .where(JOBS.c.status.not_in(JOB_OPEN), JOBS.c.created_at < cutoff)
                    .limit(DELETE_BATCH)
                ).all()
                if rows:
                    s.execute(JOBS.delete().where(JOBS.c.job_id.in_([job_id for job_id, _ in rows])))
            if not rows:
                return
            report.jobs_deleted += len(rows)
            with guard("cannot delete job results"):
                for _, rel in rows:
                    if rel:
                        path = self.data_dir / rel
                        if path.is_file():
                            report.bytes_freed += path.stat().st_size
                            path.unlink()

    def _retain_by_disk(self, need: int, free: Callable[[], int], report: RetentionReport) -> None:
        """Oldest snapshot files first (they hold nearly all the bytes), then oldest ended events.

        Event rounds stop when a round gives no space back: then something else fills the disk, and
        deleting more history would only destroy evidence without helping.
        """
        while free() < need:
            with self._read("retention by disk failed") as s:
                batch = retention.oldest_snapshots(s, DELETE_BATCH)
            if not batch:
                break
            removed: list[tuple[int, str]] = []
            with guard("retention by disk failed"):
                for sid, path in batch:
                    if free() >= need:
                        break
                    report.bytes_freed += remove_file(self.snapshot_dir, path)
                    removed.append((sid, path))
            with self._write("retention by disk failed") as s:
                retention.forget_snapshots(s, removed)
            report.snapshots_deleted += len(removed)
        while (before := free()) < need:
            with self._write("retention by disk failed") as s:
                ids = retention.oldest_ended_events(s, DELETE_BATCH)
                paths = retention.delete_events(s, ids)
            if not ids:
                break
            report.events_deleted += len(ids)
            self._remove_files(paths, report)
            self._reclaim()
            if free() <= before:
                log.warning("event log: deleting old events frees no disk space; something else fills it")
                break
        if free() < need:
            log.warning("event log: free disk space is still below %d MiB after retention", need // MIB)

    def _remove_files(self, paths: list[str], report: RetentionReport) -> None:
        with guard("cannot delete snapshot files"):
            for path in paths:
                report.bytes_freed += remove_file(self.snapshot_dir, path)
                report.snapshots_deleted += 1

    def _reclaim(self) -> None:
        """Give freed database pages back to the file system, in bounded steps.

        An incremental vacuum moves free pages to the end of the file (a short write, under the
        write lock); a PASSIVE checkpoint then copies the WAL into the file and truncates it. PASSIVE
        never waits for readers or blocks writers, unlike TRUNCATE, which would stall alert commits.
        executescript, because the sqlite3 module's execute() steps this pragma only once (one page).
        """
        raw = self._engine.raw_connection()
        try:
            with guard("cannot reclaim database space"):
                with self._lock:
                    raw.driver_connection.executescript(f"PRAGMA incremental_vacuum({RECLAIM_PAGES});")
                raw.driver_connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        finally:
            raw.close()

    def close(self) -> None:
        """Close every pooled connection (SQLite checkpoints the WAL when the last one closes)."""
        self._engine.dispose()

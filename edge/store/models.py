"""Tables of the event log (SQLAlchemy 2 typed declarative mapping).

Timestamps are wall-clock epoch seconds (REAL) so that rows compare directly with `time.time()` and
with the `at`/`started_at` fields of the MQTT payloads. Boxes and zones are JSON lists, as published.
Indexes exist only where a query needs one: every index costs time on the write path of a small device.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    ColumnElement,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    and_,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    """Declarative base; `Base.metadata` is what migration v1 creates."""


class Camera(Base):
    """A camera the appliance has seen; detect/alerts are the persisted MQTT switches."""

    __tablename__ = "cameras"

    name: Mapped[str] = mapped_column(String, primary_key=True)
    source: Mapped[str] = mapped_column(String)
    created_at: Mapped[float] = mapped_column(Float)
    detect: Mapped[bool] = mapped_column(Boolean, default=True, server_default=text("1"))
    alerts: Mapped[bool] = mapped_column(Boolean, default=True, server_default=text("1"))
    origin: Mapped[str] = mapped_column(String, default="config", server_default=text("'config'"))
    """'config' (the YAML file or a flag: only recorded here) or 'admin' (added on the admin page:
    this row is its home, and it is started from here after a restart)."""
    config: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    """An admin camera's whole CameraConfig (JSON); None for config cameras."""
    removed_at: Mapped[float | None] = mapped_column(Float)
    """Set when an admin camera is removed; the row stays, so its old events keep their camera."""


class Rule(Base):
    """Every rule the appliance has run: config rules as configured when events named it (so old events
    stay explainable after edits), and the runtime rules (admin page, instructions) themselves."""

    __tablename__ = "rules"

    name: Mapped[str] = mapped_column(String, primary_key=True)
    label: Mapped[str] = mapped_column(String)
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_at: Mapped[float] = mapped_column(Float)
    origin: Mapped[str] = mapped_column(String, default="config", server_default=text("'config'"))
    """'config' (the YAML file: recorded here, changed only there), 'admin' or 'instruction' (this
    table is their home: they are loaded from here at start-up)."""
    removed_at: Mapped[float | None] = mapped_column(Float)
    """Set when an admin or instruction rule is removed; the row stays so old events stay explainable."""


class Event(Base):
    """One real-world happening, written at start and rewritten on update and end."""

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_camera_started", "camera", "started_at"),
        Index("ix_events_label_started", "label", "started_at"),
        Index("ix_events_started", "started_at"),
    )

    id: Mapped[str] = mapped_column(String, primary_key=True)
    camera: Mapped[str] = mapped_column(ForeignKey("cameras.name"))
    label: Mapped[str] = mapped_column(String)
    rule: Mapped[str] = mapped_column(String)
    score: Mapped[float] = mapped_column(Float)
    box: Mapped[list[float] | None] = mapped_column(JSON)
    zones: Mapped[list[str]] = mapped_column(JSON)
    track_id: Mapped[int | None] = mapped_column(Integer)
    started_at: Mapped[float] = mapped_column(Float)
    ended_at: Mapped[float | None] = mapped_column(Float)
    frame: Mapped[int] = mapped_column(Integer)
    pts: Mapped[float] = mapped_column(Float)
    snapshot: Mapped[str | None] = mapped_column(String)
    """Path relative to the snapshot folder."""
    updated_at: Mapped[float] = mapped_column(Float)
    acked_at: Mapped[float | None] = mapped_column(Float)
    """When someone acknowledged the event (admin page); None: not yet."""
    acked_by: Mapped[str | None] = mapped_column(String)
    """Who did ('admin:alice', 'token:ci-script')."""


class Appearance(Base):
    """Who/what was seen where and when (one row per sampled track sighting), for later questions."""

    __tablename__ = "appearances"
    __table_args__ = (
        Index("ix_appearances_camera_at", "camera", "at"),
        Index("ix_appearances_at", "at"),
        Index("ix_appearances_event", "event_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str | None] = mapped_column(ForeignKey("events.id"))
    camera: Mapped[str] = mapped_column(String)
    label: Mapped[str] = mapped_column(String)
    track_id: Mapped[int | None] = mapped_column(Integer)
    at: Mapped[float] = mapped_column(Float)
    score: Mapped[float] = mapped_column(Float)
    box: Mapped[list[float]] = mapped_column(JSON)


class Alert(Base):
    """An alert as published; the same id rewritten means a phase change (provisional -> confirmed)."""

    __tablename__ = "alerts"
    __table_args__ = (Index("ix_alerts_event", "event_id"), Index("ix_alerts_at", "at"))

    id: Mapped[str] = mapped_column(String, primary_key=True)
    event_id: Mapped[str] = mapped_column(ForeignKey("events.id"))
    rule: Mapped[str] = mapped_column(String)
    camera: Mapped[str] = mapped_column(String)
    label: Mapped[str] = mapped_column(String)
    severity: Mapped[str] = mapped_column(String)
    text: Mapped[str] = mapped_column(Text)
    at: Mapped[float] = mapped_column(Float)
    phase: Mapped[str] = mapped_column(String)
    frame: Mapped[int] = mapped_column(Integer)
    pts: Mapped[float] = mapped_column(Float)
    box: Mapped[list[float] | None] = mapped_column(JSON)
    snapshot: Mapped[str | None] = mapped_column(String)


MQTT = "mqtt"
"""The outbox channel the MQTT bus drains."""


def push_channel(name: str) -> str:
    """The outbox channel of push channel `name` (a webhook or ntfy entry of the config)."""
    return f"push:{name}"


class Outbox(Base):
    """Messages waiting for (or done with) the broker; the id is the delivery order.

    AUTOINCREMENT keeps ids increasing even after retention deletes the newest delivered rows, so a
    reused id can never reorder deliveries. The payload is the exact JSON text to publish, so every
    retry sends the same bytes.
    """

    __tablename__ = "outbox"
    __table_args__ = (
        Index(
            "ix_outbox_pending",
            "channel",
            "priority",
            "id",
            sqlite_where=text("delivered_at IS NULL AND dropped_at IS NULL"),
        ),
        Index("ix_outbox_message_id", "message_id"),
        Index("ix_outbox_created", "created_at"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    channel: Mapped[str] = mapped_column(String, default=MQTT, server_default=text(f"'{MQTT}'"))
    """Who delivers it: 'mqtt' (the broker), or 'push:NAME' (a webhook or ntfy channel of the config).
    Each channel drains its own rows in id order, so a dead webhook never holds up MQTT."""
    kind: Mapped[str] = mapped_column(String)
    """'alert', 'event', ... (what the payload is)."""
    priority: Mapped[int] = mapped_column(Integer, default=2, server_default=text("2"))
    """Channels drain lower priorities first (alerts 0, answers 1, events 2, bulk 3), each in id order."""
    topic: Mapped[str] = mapped_column(String)
    payload: Mapped[str] = mapped_column(Text)
    message_id: Mapped[str] = mapped_column(String)
    """Stable id consumers de-duplicate by (the alert id for alerts)."""
    created_at: Mapped[float] = mapped_column(Float)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    delivered_at: Mapped[float | None] = mapped_column(Float)
    dropped_at: Mapped[float | None] = mapped_column(Float)
    drop_reason: Mapped[str | None] = mapped_column(String)


def undelivered() -> ColumnElement[bool]:
    """Outbox rows still to publish (matches the partial index ix_outbox_pending)."""
    return and_(Outbox.delivered_at.is_(None), Outbox.dropped_at.is_(None))


class Instruction(Base):
    """An instruction (question, request) received from MQTT, the CLI or the admin page."""

    __tablename__ = "instructions"
    __table_args__ = (Index("ix_instructions_received", "received_at"),)

    id: Mapped[str] = mapped_column(String, primary_key=True)
    """The sender's id, echoed in every answer."""
    text: Mapped[str] = mapped_column(Text)
    camera: Mapped[str | None] = mapped_column(String)
    origin: Mapped[str] = mapped_column(String)
    """'mqtt', 'cli', 'admin'."""
    received_at: Mapped[float] = mapped_column(Float)
    status: Mapped[str] = mapped_column(String)
    """'received' until the instructions engine takes it ('answered', 'delegated', 'failed')."""


class Snapshot(Base):
    """A JPEG file under the snapshot folder; `bytes` lets retention account for freed space."""

    __tablename__ = "snapshots"
    __table_args__ = (Index("ix_snapshots_event", "event_id"), Index("ix_snapshots_created", "created_at"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(ForeignKey("events.id"))
    path: Mapped[str] = mapped_column(String)
    """Relative to the snapshot folder, '/'-separated."""
    created_at: Mapped[float] = mapped_column(Float)
    bytes: Mapped[int] = mapped_column(Integer)


JOB_STATUSES = ("queued", "sent", "done", "failed", "timeout")
JOB_OPEN = ("queued", "sent")
"""A job still waiting for its result: its request waits for the broker (queued) or went out (sent)."""


class Job(Base):
    """A delegated (blue-loop) job: what was asked, its request's fate and its result.

    The request itself (JPEG keyframes, context) is an outbox row of kind 'blue_request' whose
    message_id is the job id; a resend queues the same payload again under the same id.
    """

    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_open", "status", sqlite_where=text("status IN ('queued', 'sent')")),
        Index("ix_jobs_ask", "ask_id"),
        Index("ix_jobs_created", "created_at"),
    )

    job_id: Mapped[str] = mapped_column(String, primary_key=True)
    ask_id: Mapped[str | None] = mapped_column(String)
    """The instruction it answers (None: a job of the device's own, e.g. verifying an alert)."""
    camera: Mapped[str | None] = mapped_column(String)
    kind: Mapped[str] = mapped_column(String)
    """describe, report, read_text, ui_html, ..."""
    prompt: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String)
    """queued / sent / done / failed / timeout (JOB_STATUSES)."""
    created_at: Mapped[float] = mapped_column(Float)
    deadline: Mapped[float] = mapped_column(Float)
    """Wall-clock epoch seconds after which the job is answered `timeout`."""
    seconds: Mapped[float] = mapped_column(Float, default=10.0)
    """How many seconds of keyframes were asked for."""
    context: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    """Extra context the caller gave (beyond recent events and counts), for a rebuild after a restart."""
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    """Requests queued for it (1 + resends); 0 until its request is built."""
    frames: Mapped[int | None] = mapped_column(Integer)
    request_bytes: Mapped[int | None] = mapped_column(Integer)
    """Size of the request's JSON; None until the request is queued."""
    sent_at: Mapped[float | None] = mapped_column(Float)
    """When the broker last acknowledged its request."""
    finished_at: Mapped[float | None] = mapped_column(Float)
    elapsed_ms: Mapped[float | None] = mapped_column(Float)
    """Created -> result, as the device saw it."""
    worker_ms: Mapped[float | None] = mapped_column(Float)
    """The worker's own `elapsed_ms`."""
    result_text: Mapped[str | None] = mapped_column(Text)
    result_data: Mapped[Any | None] = mapped_column(JSON)
    html_path: Mapped[str | None] = mapped_column(String)
    """The result's HTML, saved under the data folder (relative path), when it had one."""
    html_bytes: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    """Why it failed or timed out, in words."""


ROLES = ("admin", "viewer")
"""Admin page roles: `admin` may change everything, `viewer` only reads."""


class User(Base):
    """An admin page account. Only an argon2 hash of the password is kept."""

    __tablename__ = "users"

    name: Mapped[str] = mapped_column(String, primary_key=True)
    password_hash: Mapped[str] = mapped_column(String)
    role: Mapped[str] = mapped_column(String)
    """'admin' or 'viewer' (ROLES)."""
    created_at: Mapped[float] = mapped_column(Float)
    password_changed_at: Mapped[float] = mapped_column(Float)


class ApiToken(Base):
    """A bearer token for scripts, acting as its user. Kept as the sha256 of the token only: the token
    itself is shown once, when it is made."""

    __tablename__ = "api_tokens"
    __table_args__ = (Index("ix_api_tokens_hash", "token_hash", unique=True),)

    id: Mapped[str] = mapped_column(String, primary_key=True)
    name: Mapped[str] = mapped_column(String)
    user: Mapped[str] = mapped_column(String)
    token_hash: Mapped[str] = mapped_column(String)
    created_at: Mapped[float] = mapped_column(Float)
    last_used_at: Mapped[float | None] = mapped_column(Float)
    revoked_at: Mapped[float | None] = mapped_column(Float)


class Audit(Base):
    """Who changed what, when, from where: every change made through the control surface or the admin
    page's accounts. The id is the order of the changes."""

    __tablename__ = "audit"
    __table_args__ = (Index("ix_audit_at", "at"), {"sqlite_autoincrement": True})

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[float] = mapped_column(Float)
    who: Mapped[str] = mapped_column(String)
    """'admin:alice', 'token:ci-script', 'mqtt', 'instruction', ..."""
    action: Mapped[str] = mapped_column(String)
    """'camera.add', 'rule.remove', 'event.ack', 'user_add', ..."""
    detail: Mapped[dict[str, Any]] = mapped_column(JSON)
    remote: Mapped[str | None] = mapped_column(String)
    """The address the change came from (None: not over the network, or not known)."""


class Setting(Base):
    """A runtime setting that survives restarts and is not a row of its own kind: the mode (key
    'mode'). `value` is JSON; who set it and when are kept beside it (the audit log has the history)."""

    __tablename__ = "settings"

    key: Mapped[str] = mapped_column(String, primary_key=True)
    value: Mapped[Any] = mapped_column(JSON)
    set_at: Mapped[float] = mapped_column(Float)
    set_by: Mapped[str] = mapped_column(String)

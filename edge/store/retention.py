"""Retention queries: what may be deleted, and deleting it consistently.

The one hard rule: an outbox row that the broker has not acknowledged is never deleted here, and
neither is the alert it carries nor that alert's event (with its snapshots): a long broker outage
delays alerts, it must not turn into lost alerts because the disk filled up or the data aged.
`EventLog.apply_retention` decides when to call these; each function works inside the caller's
write transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy import Select, and_, delete, func, or_, select, update
from sqlalchemy.orm import Session

from edge.store.models import Alert, Appearance, Event, Outbox, Snapshot, undelivered

T = TypeVar("T")

CHUNK = 500
"""Ids per IN (...) list: below the 999-variable limit of older SQLite builds (Jetson's Ubuntu)."""


@dataclass(slots=True)
class RetentionReport:
    """What one retention pass did."""

    events_deleted: int = 0
    snapshots_deleted: int = 0
    """Snapshot files deleted (with their rows)."""
    bytes_freed: int = 0
    """Bytes of snapshot files deleted (database pages freed are not counted)."""
    undelivered_kept: int = 0
    """Outbox rows past the age limit kept because the broker never acknowledged them."""
    shed_messages: int = 0
    """Undelivered event/answer messages dropped because a channel's outbox was over its limit."""
    shed_alerts: int = 0
    """Undelivered alerts dropped for the same reason (only once no other message was left to shed)."""
    jobs_deleted: int = 0
    """Finished blue-loop jobs past the age limit, with their saved HTML results."""

    def __str__(self) -> str:
        """For the log: what was done, in words ('nothing to do' when nothing was)."""
        parts = [
            f"{self.events_deleted} events deleted" if self.events_deleted else "",
            f"{self.snapshots_deleted} snapshots deleted ({self.bytes_freed / 1048576:.1f} MiB)"
            if self.snapshots_deleted
            else "",
            f"{self.undelivered_kept} undelivered messages kept past the age limit"
            if self.undelivered_kept
            else "",
            f"{self.shed_messages} event messages shed" if self.shed_messages else "",
            f"{self.shed_alerts} alerts shed" if self.shed_alerts else "",
            f"{self.jobs_deleted} blue-loop jobs deleted" if self.jobs_deleted else "",
        ]
        return ", ".join(p for p in parts if p) or "nothing to do"


def protected_events() -> Select[tuple[str]]:
    """Ids of events that have an alert still waiting in the outbox."""
    return (
        select(Alert.event_id)
        .join(Outbox, and_(Outbox.message_id == Alert.id, Outbox.kind == "alert"))
        .where(undelivered())
    )


def _chunks(items: Sequence[T]) -> list[Sequence[T]]:
    return [items[i : i + CHUNK] for i in range(0, len(items), CHUNK)]


def expired_events(session: Session, cutoff: float, limit: int) -> list[str]:
    """Events that ended before `cutoff`, or open events not updated since then.

    The second case catches events orphaned by a crash or power cut: nothing will ever end them, and
    an event that is really still going on is updated regularly.
    """
    stmt = (
        select(Event.id)
        .where(
            func.coalesce(Event.ended_at, Event.updated_at) < cutoff,
            Event.id.not_in(protected_events()),
        )
        .limit(limit)
    )
    return list(session.scalars(stmt))


def oldest_ended_events(session: Session, limit: int) -> list[str]:
    """The oldest ended, unprotected events (disk-space retention after the snapshots are gone)."""
    stmt = (
        select(Event.id)
        .where(Event.ended_at.is_not(None), Event.id.not_in(protected_events()))
        .order_by(Event.started_at)
        .limit(limit)
    )
    return list(session.scalars(stmt))


def oldest_snapshots(session: Session, limit: int) -> list[tuple[int, str]]:
    """(id, path) of the oldest snapshots not belonging to a protected event."""
    stmt = (
        select(Snapshot.id, Snapshot.path)
        .where(Snapshot.event_id.not_in(protected_events()))
        .order_by(Snapshot.created_at, Snapshot.id)
        .limit(limit)
    )
    return [(row.id, row.path) for row in session.execute(stmt)]


def delete_events(session: Session, ids: Sequence[str]) -> list[str]:
    """Delete events with their appearances, alerts and snapshot rows; returns the snapshot paths,
    whose files the caller removes after the commit."""
    paths: list[str] = []
    for chunk in _chunks(ids):
        paths += session.scalars(select(Snapshot.path).where(Snapshot.event_id.in_(chunk)))
        session.execute(delete(Snapshot).where(Snapshot.event_id.in_(chunk)))
        session.execute(delete(Appearance).where(Appearance.event_id.in_(chunk)))
        session.execute(delete(Alert).where(Alert.event_id.in_(chunk)))
        session.execute(delete(Event).where(Event.id.in_(chunk)))
    return paths


def forget_snapshots(session: Session, snapshots: Sequence[tuple[int, str]]) -> None:
    """Drop rows of snapshot files already deleted, and the references events and alerts hold."""
    for chunk in _chunks(snapshots):
        ids = [sid for sid, _ in chunk]
        paths = [path for _, path in chunk]
        session.execute(delete(Snapshot).where(Snapshot.id.in_(ids)))
        session.execute(update(Event).where(Event.snapshot.in_(paths)).values(snapshot=None))
        session.execute(update(Alert).where(Alert.snapshot.in_(paths)).values(snapshot=None))


def delete_stray_appearances(session: Session, cutoff: float, limit: int) -> int:
    """Delete up to `limit` appearances older than `cutoff` that belong to no event; returns how many."""
    oldest = select(Appearance.id).where(Appearance.event_id.is_(None), Appearance.at < cutoff).limit(limit)
    result = session.execute(delete(Appearance).where(Appearance.id.in_(oldest)))
    return int(result.rowcount)


def prune_outbox(session: Session, cutoff: float) -> None:
    """Delete delivered or deliberately dropped outbox rows older than `cutoff`."""
    session.execute(
        delete(Outbox).where(
            Outbox.created_at < cutoff,
            or_(Outbox.delivered_at.is_not(None), Outbox.dropped_at.is_not(None)),
        )
    )


def count_old_undelivered(session: Session, cutoff: float) -> int:
    """Outbox rows older than `cutoff` that retention keeps because they are not delivered yet."""
    stmt = select(func.count()).select_from(Outbox).where(Outbox.created_at < cutoff, undelivered())
    return int(session.scalar(stmt) or 0)


def shed_outbox(session: Session, max_rows: int, now: float) -> tuple[int, int]:
    """Keep at most `max_rows` undelivered rows per channel: mark the oldest dropped, alerts last.

    Returns (other messages shed, alerts shed). Dropped rows stay in the table (with the reason), so
    what was shed can be shown and counted; only an explicit delivery or retention removes them.
    """
    shed = {"other": 0, "alert": 0}
    depth = select(Outbox.channel, func.count()).where(undelivered()).group_by(Outbox.channel)
    for channel, count in session.execute(depth).all():
        excess = int(count) - max_rows
        for kind in ("other", "alert"):
            if excess <= 0:
                break
            is_kind = Outbox.kind == "alert" if kind == "alert" else Outbox.kind != "alert"
            oldest = (
                select(Outbox.id)
                .where(undelivered(), Outbox.channel == channel, is_kind)
                .order_by(Outbox.id)
                .limit(excess)
            )
            ids = list(session.scalars(oldest))
            for chunk in _chunks(ids):
                session.execute(
                    update(Outbox)
                    .where(Outbox.id.in_(chunk))
                    .values(dropped_at=now, drop_reason=f"outbox over {max_rows} undelivered messages")
                )
            shed[kind] += len(ids)
            excess -= len(ids)
    return shed["other"], shed["alert"]

"""JSON payloads exactly as DESIGN.md's MQTT contract states them, and the messages that carry them.

A `Message` is what the journal and the control surface hand to the outbox: topic, payload, the
message id consumers de-duplicate by, and a delivery priority. Channels drain by priority and, within
one priority, in the order messages were queued: an alert never waits behind a blue-loop job carrying
JPEG keyframes, and events of one kind are never reordered.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from edge.outbox.ids import answer_message_id, event_message_id
from edge.outbox.topics import Topics
from edge.types import AlertRecord, Box, EventRecord

PAYLOAD_VERSION = 1
EVENT_TYPES = {"start": "new", "update": "update", "end": "end"}
"""Red-loop transition -> the `type` of an events message."""
SWITCHES = ("detect", "alerts")
ON, OFF = "ON", "OFF"
ONLINE, OFFLINE = "online", "offline"
ANSWER_KINDS = ("ack", "answer", "result", "error", "commentary")


class Priority(IntEnum):
    """Lower drains first."""

    ALERT = 0
    ANSWER = 1
    EVENT = 2
    BULK = 3
    """Blue-loop requests and anything else large."""


KIND_PRIORITY = {"alert": Priority.ALERT, "answer": Priority.ANSWER, "event": Priority.EVENT}


def priority_of(kind: str) -> Priority:
    return KIND_PRIORITY.get(kind, Priority.BULK)


@dataclass(frozen=True, slots=True)
class Message:
    kind: str
    """'alert', 'event', 'answer', 'blue_request', ..."""
    topic: str
    payload: dict[str, Any]
    message_id: str

    @property
    def priority(self) -> Priority:
        return priority_of(self.kind)


def rounded_box(box: Box | None) -> list[float] | None:
    """A box as every payload carries it: pixels to 0.1."""
    return [round(v, 1) for v in box] if box is not None else None


def event_payload(record: EventRecord, transition: str) -> dict[str, Any]:
    return {
        "v": PAYLOAD_VERSION,
        "id": record.id,
        "type": EVENT_TYPES[transition],
        "camera": record.camera,
        "label": record.label,
        "rule": record.rule,
        "score": round(record.score, 3),
        "box": rounded_box(record.box),
        "zones": list(record.zones),
        "started_at": record.started_at,
        "ended_at": record.ended_at,
        "snapshot": record.snapshot,
    }


def alert_payload(alert: AlertRecord) -> dict[str, Any]:
    return {
        "v": PAYLOAD_VERSION,
        "id": alert.id,
        "event_id": alert.event_id,
        "rule": alert.rule,
        "camera": alert.camera,
        "label": alert.label,
        "severity": alert.severity,
        "text": alert.text,
        "at": alert.at,
        "phase": alert.phase,
    }


def answer_payload(ask_id: str | None, kind: str, text: str, **extra: Any) -> dict[str, Any]:
    if kind not in ANSWER_KINDS:
        raise ValueError(f"unknown answer kind {kind!r}")
    return {"v": PAYLOAD_VERSION, "id": ask_id, "kind": kind, "text": text, **extra}


def blue_request_payload(
    *,
    job_id: str,
    device: str,
    camera: str | None,
    ask_id: str | None,
    kind: str,
    prompt: str,
    frames: list[dict[str, Any]],
    recent_events: list[dict[str, Any]],
    counts: dict[str, Any],
    deadline: float,
) -> dict[str, Any]:
    return {
        "v": PAYLOAD_VERSION,
        "job_id": job_id,
        "device": device,
        "camera": camera,
        "ask_id": ask_id,
        "kind": kind,
        "prompt": prompt,
        "frames": frames,
        "context": {"recent_events": recent_events, "counts": counts},
        "deadline": deadline,
    }


RESULT_STATUSES = ("done", "failed", "timeout")
"""The `status` of a blue-loop result."""


def blue_result_payload(
    job_id: str, status: str, text: str, data: Any, elapsed_ms: float, html: str | None = None
) -> dict[str, Any]:
    """What a blue-loop worker publishes on `…/blue/result` (the worker side of the contract)."""
    if status not in RESULT_STATUSES:
        raise ValueError(f"unknown result status {status!r}")
    out: dict[str, Any] = {
        "v": PAYLOAD_VERSION,
        "job_id": job_id,
        "status": status,
        "text": text,
        "data": data,
        "elapsed_ms": round(max(elapsed_ms, 0.0), 1),
    }
    if html is not None:
        out["html"] = html
    return out


def stats_payload(
    device: str, cameras: dict[str, dict[str, object]], outbox_depth: int, outbox_shed: int, **extra: Any
) -> dict[str, Any]:
    return {
        "v": PAYLOAD_VERSION,
        "device": device,
        "at": round(time.time(), 3),
        "cameras": cameras,
        "outbox_depth": outbox_depth,
        "outbox_shed": outbox_shed,
        **extra,
    }


def event_message(topics: Topics, record: EventRecord, transition: str, frame: int) -> Message:
    return Message(
        "event",
        topics.events,
        event_payload(record, transition),
        event_message_id(record.id, transition, frame),
    )


def alert_message(topics: Topics, alert: AlertRecord) -> Message:
    """The alert id is the message id: a phase change re-sends the same id with the new phase."""
    return Message("alert", topics.alerts, alert_payload(alert), alert.id)


def answer_message(topics: Topics, ask_id: str | None, kind: str, text: str, **extra: Any) -> Message:
    payload = answer_payload(ask_id, kind, text, **extra)
    return Message("answer", topics.answers, payload, answer_message_id(ask_id, kind))

"""MQTT topics and JSON payloads exactly as DESIGN.md's MQTT contract states them.

Built in one place so that the outbox rows written by the red loop and the messages a consumer
receives cannot drift apart.
"""

from __future__ import annotations

from typing import Any

from edge.types import AlertRecord, Box, EventRecord

PAYLOAD_VERSION = 1
EVENT_TYPES = {"start": "new", "update": "update", "end": "end"}
"""Red-loop transition -> the `type` of an events message."""


def _box(box: Box | None) -> list[float] | None:
    return [round(v, 1) for v in box] if box is not None else None


def topic(prefix: str, device: str, *parts: str) -> str:
    """`{prefix}/{device}/...`. The device's topics, all under that root:

    availability                      online/offline, retained, also the Last Will
    events, alerts                    JSON, QoS 1, from the outbox
    stats                             JSON, QoS 0, retained
    ask, answers                      instructions in, answers out
    {camera}/{label}                  current count, retained
    {camera}/snapshot                 JPEG of the latest alert, retained
    {camera}/status                   camera online/offline, retained
    {camera}/active/{rule}            ON while an event of that rule is open, retained
    {camera}/{detect|alerts}/set      switch commands in (ON/OFF)
    {camera}/{detect|alerts}/state    switch states, retained
    """
    return "/".join((prefix, device, *parts))


SWITCHES = ("detect", "alerts")
ON, OFF = "ON", "OFF"
ONLINE, OFFLINE = "online", "offline"


def event_payload(record: EventRecord, transition: str) -> dict[str, Any]:
    return {
        "v": PAYLOAD_VERSION,
        "id": record.id,
        "type": EVENT_TYPES[transition],
        "camera": record.camera,
        "label": record.label,
        "rule": record.rule,
        "score": round(record.score, 3),
        "box": _box(record.box),
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

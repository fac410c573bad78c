"""What leaves the device: topics, message ids and payloads, each made in exactly one place.

The red loop, the journal, the bus, the control surface and (later) the blue-loop client all build
their messages here, so an outbox row written today and the message a consumer receives cannot
drift apart, and nothing but this package spells a topic string or a message id. Pure functions and
value types only: no MQTT client, no database (the journal and the bus import this, never the
reverse).
"""

from edge.outbox.ids import answer_message_id, event_message_id, new_ask_id, new_id, new_job_id
from edge.outbox.memory import MemoryQueue
from edge.outbox.payloads import (
    OFF,
    OFFLINE,
    ON,
    ONLINE,
    PAYLOAD_VERSION,
    SWITCHES,
    Message,
    Priority,
    alert_message,
    alert_payload,
    answer_message,
    answer_payload,
    blue_request_payload,
    blue_result_payload,
    event_message,
    event_payload,
    stats_payload,
)
from edge.outbox.topics import Topics

__all__ = [
    "OFF",
    "OFFLINE",
    "ON",
    "ONLINE",
    "PAYLOAD_VERSION",
    "SWITCHES",
    "MemoryQueue",
    "Message",
    "Priority",
    "Topics",
    "alert_message",
    "alert_payload",
    "answer_message",
    "answer_message_id",
    "answer_payload",
    "blue_request_payload",
    "blue_result_payload",
    "event_message",
    "event_message_id",
    "event_payload",
    "new_ask_id",
    "new_id",
    "new_job_id",
    "stats_payload",
]

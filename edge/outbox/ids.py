"""Every id that leaves the device is made here.

Event and alert ids sort by time and are unique across restarts and devices (consumers de-duplicate
and order by them). Message ids are what an outbox row is de-duplicated by: the same logical message
re-sent after a reconnect carries the same one.
"""

from __future__ import annotations

import secrets
import time
import uuid


def new_id() -> str:
    """Time-ordered, unique across restarts and devices: events, alerts."""
    return f"{time.time_ns() // 1_000_000:x}-{secrets.token_hex(4)}"


def new_ask_id(kind: str = "ask") -> str:
    """For an ask that came without an id (it is returned in every answer); `edge ask` uses 'cli'."""
    return f"{kind}-{uuid.uuid4().hex[:12]}"


def new_job_id() -> str:
    """A blue-loop job."""
    return f"job-{new_id()}"


def event_message_id(event_id: str, transition: str, frame: int) -> str:
    """One `events` message: the event's state after `transition` at `frame`."""
    return f"{event_id}:{transition}:{frame}"


def answer_message_id(ask_id: str | None, kind: str) -> str:
    """One answer of an ask. Unique per answer (an ask may get several commentary lines)."""
    return f"answer:{ask_id}:{kind}:{time.time_ns()}"

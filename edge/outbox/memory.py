"""Messages the event log could not take (full disk, read-only file system), kept in memory.

MQTT needs no disk: while the database refuses writes, the bus still publishes these, in priority
order, and records each PUBACK here. When the database works again the journal writes the held
transitions, marking already-acknowledged messages delivered so that they are not sent twice.
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass

from edge.outbox.payloads import Message


@dataclass(slots=True)
class Held:
    token: int
    message: Message
    acked: bool = False


class MemoryQueue:
    """Thread-safe: the journal (camera threads) puts and removes, the bus publishes and acks."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: dict[int, Held] = {}
        self._tokens = itertools.count(1)

    def put(self, message: Message) -> int:
        with self._lock:
            token = next(self._tokens)
            self._items[token] = Held(token, message)
            return token

    def pending(self, exclude: set[int] | frozenset[int] = frozenset()) -> list[Held]:
        """Not yet acknowledged and not in `exclude` (in flight), by priority then age."""
        with self._lock:
            items = [h for t, h in self._items.items() if t not in exclude and not h.acked]
        return sorted(items, key=lambda h: (h.message.priority, h.token))

    def ack(self, token: int) -> None:
        with self._lock:
            held = self._items.get(token)
            if held is not None:
                held.acked = True

    def acked(self, token: int) -> bool:
        with self._lock:
            held = self._items.get(token)
            return held is not None and held.acked

    def remove(self, token: int) -> None:
        with self._lock:
            self._items.pop(token, None)

    def unacked(self) -> list[Message]:
        with self._lock:
            return [h.message for h in self._items.values() if not h.acked]

    def unacked_count(self) -> int:
        """Messages still to publish. (A method, not `__len__`: an empty queue must not be falsy, or
        `memory or MemoryQueue()` would quietly replace the appliance's shared queue.)"""
        with self._lock:
            return sum(1 for h in self._items.values() if not h.acked)

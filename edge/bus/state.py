"""Live state for MQTT: what is true *now*, published retained (DESIGN.md's MQTT table).

A red-loop sink plus hooks for counts, snapshots, camera status and switches. Everything here only
hands values to `Bus.set_state`, which publishes changes and re-publishes all of them on every
connect.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections import Counter
from pathlib import Path

from edge.bus.mqtt import Bus
from edge.bus.payloads import OFF, OFFLINE, ON, ONLINE, PAYLOAD_VERSION
from edge.rules import Transition
from edge.types import Frame


class LiveState:
    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self._open: Counter[tuple[str, str]] = Counter()
        """(camera, rule) -> events open now; the rule's binary sensor is ON while above zero."""

    def handle(self, tr: Transition, frame: Frame) -> None:
        ev = tr.event
        key = (ev.camera, ev.rule)
        if tr.kind == "start":
            self._open[key] += 1
        elif tr.kind == "end":
            self._open[key] = max(0, self._open[key] - 1)
        if tr.kind in ("start", "end"):
            self.bus.set_state(self.bus.topic(ev.camera, "active", ev.rule), ON if self._open[key] else OFF)

    def rule_idle(self, camera: str, rule: str) -> None:
        """Say OFF for a rule with no open event (at start-up, so a stale retained ON is cleared)."""
        if not self._open[(camera, rule)]:
            self.bus.set_state(self.bus.topic(camera, "active", rule), OFF)

    def counts(self, camera: str, counts: dict[str, int]) -> None:
        for label, n in counts.items():
            self.bus.set_state(self.bus.topic(camera, label), str(n))

    def snapshot(self, camera: str, path: Path) -> None:
        with contextlib.suppress(OSError):  # retention removed it already; the next alert brings one
            self.bus.set_state(self.bus.topic(camera, "snapshot"), path.read_bytes())

    def camera_status(self, camera: str, online: bool) -> None:
        self.bus.set_state(self.bus.topic(camera, "status"), ONLINE if online else OFFLINE)

    def switch(self, camera: str, switch: str, on: bool) -> None:
        self.bus.set_state(self.bus.topic(camera, switch, "state"), ON if on else OFF)

    def stats(self, cameras: dict[str, dict[str, object]], outbox_depth: int, outbox_shed: int) -> None:
        payload = {
            "v": PAYLOAD_VERSION,
            "device": self.bus.device,
            "at": round(time.time(), 3),
            "cameras": cameras,
            "outbox_depth": outbox_depth,
            "outbox_shed": outbox_shed,
        }
        self.bus.set_state(self.bus.topic("stats"), json.dumps(payload), qos=0)

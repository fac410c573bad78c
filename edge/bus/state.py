"""Retained state for MQTT: what is true *now*, published retained (DESIGN.md's MQTT table).

A red-loop sink plus hooks for counts, snapshots, camera status, switches and rules. Everything here
only hands values to `Bus.set_state`, which publishes changes and re-publishes all of them on every
connect. On a clean stop, `at_stop()` says what a stopped appliance knows (nothing in view, cameras
offline, no rule active) so the broker never keeps a stale "person 1".

A rule's `active` topic (its Home Assistant binary sensor) is ON while an event of the rule is open,
except that an event whose alert is verified on the device (fire, smoke: `Transition.awaits_verdict`)
counts only once its alert is confirmed, and an event whose alert is retracted (by either loop) stops
counting: an automation on the sensor (a siren) follows confirmed fire, never a provisional one.
Verdicts come from the journal (`verdict`, any thread), once it has taken them.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path

from edge.bus.mqtt import Bus
from edge.outbox import OFF, OFFLINE, ON, ONLINE, stats_payload
from edge.rules import Transition
from edge.types import AlertRecord, Frame


class RetainedState:
    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.topics = bus.topics
        self._open: Counter[tuple[str, str]] = Counter()
        """(camera, rule) -> events open now that count; the rule's binary sensor is ON while above zero."""
        self._events: dict[str, tuple[tuple[str, str], bool]] = {}
        """Event id -> ((camera, rule), counts) of the events open now."""
        self._lock = threading.Lock()
        self._counts: dict[str, dict[str, int]] = {}
        self._occupancy: dict[str, dict[str, dict[str, int]]] = {}
        """Camera -> zone -> label -> objects inside, as last published."""
        self._lines: dict[str, set[tuple[str, str]]] = {}
        """Camera -> (line, label) of the line counts published."""

    def handle(self, tr: Transition, frame: Frame) -> None:
        ev = tr.event
        key = (ev.camera, ev.rule)
        if tr.kind not in ("start", "end"):
            return
        with self._lock:
            if tr.kind == "start":
                counts = not tr.awaits_verdict
                self._events[ev.id] = (key, counts)
            else:
                counts = self._events.pop(ev.id, (key, True))[1]
            if counts:
                self._open[key] = max(0, self._open[key] + (1 if tr.kind == "start" else -1))
            self.bus.set_state(self.topics.active(ev.camera, ev.rule), ON if self._open[key] else OFF)

    def verdict(self, alert: AlertRecord) -> None:
        """An alert's phase change the journal took: its open event counts while confirmed."""
        with self._lock:
            entry = self._events.get(alert.event_id)
            counts = alert.phase == "confirmed"
            if entry is None or entry[1] == counts:
                return
            key = entry[0]
            self._events[alert.event_id] = (key, counts)
            self._open[key] = max(0, self._open[key] + (1 if counts else -1))
            self.bus.set_state(self.topics.active(*key), ON if self._open[key] else OFF)

    def rule_idle(self, camera: str, rule: str) -> None:
        """Say OFF for a rule with no open event (at start-up, so a stale retained ON is cleared)."""
        if not self._open[(camera, rule)]:
            self.bus.set_state(self.topics.active(camera, rule), OFF)

    def rule_removed(self, camera: str, rule: str) -> None:
        """A removed rule's sensor topic is cleared, not left saying OFF forever."""
        with self._lock:
            self._open.pop((camera, rule), None)
            self._events = {e: v for e, v in self._events.items() if v[0] != (camera, rule)}
            self.bus.set_state(self.topics.active(camera, rule), b"")

    def _numbers(self, known: dict[str, int], now: Mapping[str, int], topic: Callable[[str], str]) -> None:
        """Publish label -> n, each on `topic(label)`, where `known` holds what was published last (kept
        up to date here): a label no longer there is cleared, not left saying its last number."""
        for label in set(known) - set(now):
            self.bus.set_state(topic(label), b"")
            del known[label]
        for label, n in now.items():
            known[label] = n
            self.bus.set_state(topic(label), str(n))

    def counts(self, camera: str, counts: dict[str, int]) -> None:
        """A camera's counts (label -> objects in view); a label no rule watches any more is cleared."""
        known = self._counts.setdefault(camera, {})
        self._numbers(known, counts, lambda label: self.topics.count(camera, label))

    def lines(self, camera: str, line: str, label: str, counts: dict) -> None:
        """A line's crossings since `since` (local midnight, or the start that day): {in, out, since}."""
        self._lines.setdefault(camera, set()).add((line, label))
        payload = {"v": 1, "in": counts["in"], "out": counts["out"], "since": counts["since"]}
        self.bus.set_state(self.topics.line(camera, line, label), json.dumps(payload))

    def lines_removed(self, camera: str) -> None:
        """A removed camera's line counts are cleared, not left saying the day's numbers forever."""
        for line, label in self._lines.pop(camera, set()):
            self.bus.set_state(self.topics.line(camera, line, label), b"")

    def zones(self, camera: str, occupancy: dict[str, dict[str, int]]) -> None:
        """A camera's whole occupancy (zone -> label -> n): each published; a zone or label no longer
        there is cleared (its rule went away, the camera was removed: `{}`)."""
        known = self._occupancy.setdefault(camera, {})

        def topic(zone: str) -> Callable[[str], str]:
            return lambda label: self.topics.occupancy(camera, zone, label)

        for zone in [z for z in known if z not in occupancy]:
            self._numbers(known.pop(zone), {}, topic(zone))
        for zone, labels in occupancy.items():
            self._numbers(known.setdefault(zone, {}), labels, topic(zone))

    def snapshot(self, camera: str, path: Path) -> None:
        with contextlib.suppress(OSError):  # retention removed it already; the next alert brings one
            self.bus.set_state(self.topics.snapshot(camera), path.read_bytes())

    def camera_status(self, camera: str, online: bool) -> None:
        self.bus.set_state(self.topics.status(camera), ONLINE if online else OFFLINE)

    def switch(self, camera: str, switch: str, on: bool) -> None:
        self.bus.set_state(self.topics.switch_state(camera, switch), ON if on else OFF)

    def mode(self, name: str) -> None:
        """The mode on now (Home Assistant's mode `select` shows it)."""
        self.bus.set_state(self.topics.mode_state, name)

    def stats(self, cameras: dict[str, dict[str, object]], outbox_depth: int, outbox_shed: int,
              **extra: object) -> None:  # fmt: skip
        payload = stats_payload(self.bus.device, cameras, outbox_depth, outbox_shed, **extra)
        self.bus.set_state(self.topics.stats, json.dumps(payload), qos=0)

    def at_stop(self, cameras: list[str]) -> None:
        """Clean stop: counts and occupancy 0, cameras offline, rules inactive (published before
        `offline`). Line counts stay: they are still the day's."""
        for camera in cameras:
            self.counts(camera, dict.fromkeys(self._counts.get(camera, {}), 0))
            zones = self._occupancy.get(camera, {})
            self.zones(camera, {zone: dict.fromkeys(labels, 0) for zone, labels in zones.items()})
            self.camera_status(camera, False)
        for (camera, rule), n in list(self._open.items()):
            if n:
                self._open[(camera, rule)] = 0
                self.bus.set_state(self.topics.active(camera, rule), OFF)

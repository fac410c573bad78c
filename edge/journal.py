"""The journal: writes red-loop transitions to the event log and the outbox, alerts first to disk.

An alert is committed to the outbox before anything tries to publish it, so a broker outage or a
crash delays it but never loses it. If the database itself fails (full disk, read-only), the
transition is held in memory, said loudly, and written when the database works again.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path

from edge.bus.payloads import alert_payload, event_payload, topic
from edge.config.models import EdgeConfig
from edge.rules import Transition
from edge.store import EventLog, StoreError
from edge.types import Frame

log = logging.getLogger("edge.journal")

HELD_MAX = 10_000
"""Transitions held in memory while the database is failing; alerts are never the ones shed."""
SNAPSHOTS_QUEUED = 32
"""Snapshots waiting for the JPEG writer; past this a snapshot is skipped, never an alert."""


class Journal:
    def __init__(self, events: EventLog, cfg: EdgeConfig) -> None:
        self.log = events
        self.prefix = cfg.mqtt.prefix
        self.device = cfg.device.id
        self.events_topic = topic(self.prefix, self.device, "events")
        # Rule name -> the push channels that get its alerts (default --watch rules have none).
        self.push: dict[str, tuple[str, ...]] = {rule.name: tuple(rule.push) for rule in cfg.rules}
        self.held: deque[tuple[Transition, Frame]] = deque()
        self.shed = 0
        self.snapshots_skipped = 0
        self.on_snapshot: Callable[[str, Path], None] | None = None
        """Called (snapshot thread) with (camera, JPEG path) once an alert's snapshot is on disk."""
        # JPEG encoding takes milliseconds; it runs beside the red loop so it never delays an alert.
        self._snapshots: queue.Queue[tuple[Transition, Frame] | None] = queue.Queue(SNAPSHOTS_QUEUED)
        self._writer = threading.Thread(target=self._write_snapshots, name="snapshots", daemon=True)
        self._writer.start()

    def close(self) -> None:
        """Write the snapshots still queued, then stop the writer."""
        self._snapshots.put(None)
        self._writer.join(timeout=30)

    def handle(self, transition: Transition, frame: Frame) -> None:
        if self.held:
            self._retry_held()
        if self.held:
            self._hold(transition, frame)
            return
        try:
            self._write(transition, frame)
        except StoreError as exc:
            log.error("event log write failed, holding %s in memory: %s", transition.kind, exc)
            self._hold(transition, frame)

    def _write(self, tr: Transition, frame: Frame) -> None:
        ev = tr.event
        if tr.kind == "alert" and tr.alert is not None:
            alert = tr.alert
            self.log.alert(
                alert,
                alert_payload(alert),
                topic(self.prefix, self.device, "alerts"),
                push=self.push.get(alert.rule, ()),
            )
            log.warning("ALERT %s [%s] %s (event %s)", alert.camera, alert.severity, alert.text, ev.id)
            try:
                self._snapshots.put_nowait((tr, frame))
            except queue.Full:
                self.snapshots_skipped += 1
                log.error("snapshot writer behind: no snapshot for alert %s", alert.id)
            return
        message_id = f"{ev.id}:{tr.kind}:{tr.frame}"
        self.log.event_transition(ev, tr.kind, (self.events_topic, event_payload(ev, tr.kind), message_id))

    def _write_snapshots(self) -> None:
        while (item := self._snapshots.get()) is not None:
            tr, frame = item
            ev, alert = tr.event, tr.alert
            assert alert is not None
            try:
                ev.snapshot = self.log.save_snapshot(ev.id, frame.image, alert.box, alert.label, ev.score)
            except StoreError as exc:
                log.error("snapshot for alert %s not saved: %s", alert.id, exc)
                continue
            if self.on_snapshot is not None:
                self.on_snapshot(alert.camera, self.log.snapshot_dir / ev.snapshot)

    def _hold(self, tr: Transition, frame: Frame) -> None:
        if len(self.held) >= HELD_MAX:
            # Shed the oldest non-alert transition; alerts stay whatever it costs in memory.
            for i, (old, _) in enumerate(self.held):
                if old.kind != "alert":
                    del self.held[i]
                    self.shed += 1
                    log.error("event log unavailable: shed an event %s to keep alerts", old.kind)
                    break
        self.held.append((tr, frame))

    def _retry_held(self) -> None:
        while self.held:
            tr, frame = self.held[0]
            try:
                self._write(tr, frame)
            except StoreError:
                return
            self.held.popleft()
        log.warning("event log writable again; held transitions written")

"""The journal: writes red-loop transitions to the event log and the outbox, alerts first to disk.

An alert is committed to the outbox before anything tries to publish it, so a broker outage or a
crash delays it but never loses it. If the database itself fails (full disk, read-only), the
transition is held in memory, said loudly, and its MQTT message is put on the memory queue, which the
bus publishes too (MQTT needs no disk). Held transitions are written as soon as the database works
again (on the next transition, or the housekeeping's retry), already-acknowledged messages marked
delivered; at a clean stop, any alert that still could not be saved is logged in full, never dropped
silently.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edge.outbox import MemoryQueue, Topics, alert_message, event_message
from edge.rules import Rule, Transition
from edge.store import EventLog, StoreError
from edge.types import AlertRecord, EventRecord, Frame
from edge.verify import unmarked

log = logging.getLogger("edge.journal")

HELD_MAX = 10_000
"""Transitions held in memory while the database is failing; alerts are never the ones shed."""
HELD_FRAMES = 32
"""Held alerts that keep their frame for a snapshot written later (a frame is megabytes)."""
HELD_REPORT_EVERY = 50
"""While transitions are held, say so again every this many."""
SNAPSHOTS_QUEUED = 32
"""Snapshots waiting for the JPEG writer; past this a snapshot is skipped, never an alert."""
VERIFIED_KEEP = 4096
"""Two-phase alerts remembered (push channels of a provisional alert, verdicts of events)."""


@dataclass(slots=True)
class _Held:
    transition: Transition
    frame: Frame | None
    token: int
    """Its message on the memory queue."""


class Journal:
    def __init__(
        self, events: EventLog, topics: Topics, rules: list[Rule], memory: MemoryQueue | None = None
    ) -> None:
        self.log = events
        self.topics = topics
        self.memory = memory if memory is not None else MemoryQueue()
        self.push: dict[str, tuple[str, ...]] = {}
        """Rule name -> the push channels that get its alerts (default --watch rules have none)."""
        self.rules_changed(rules)
        self.confirmed_only: frozenset[str] = frozenset()
        """Push channels that get an alert only once it is confirmed (never provisional/retracted)."""
        self.push_allowed: Callable[[str], bool] = lambda channel: True
        """Whether a push channel gets a new alert now (the control surface's: the current mode's
        channels). Asked when an alert is queued, not when it is sent: an alert raised while armed
        still reaches the phone after a disarm, and its verdict goes where the alert went."""
        self._provisional_push: OrderedDict[str, tuple[str, ...]] = OrderedDict()
        """Provisional alert id -> its rule's push channels then: its phase change goes to the same."""
        self._verdicts: OrderedDict[str, tuple[str, str]] = OrderedDict()
        """Event id -> (phase, text suffix) once verified: its later alerts (repeats) carry them."""
        self._told_confirmed: OrderedDict[str, None] = OrderedDict()
        """Alert ids published as confirmed: a later retraction goes to `confirmed_only` channels too."""
        self.on_verdict: Callable[[AlertRecord], None] | None = None
        """Called with every phase change the journal took (either loop's verdict), after writing it:
        the Home Assistant binary sensor of a device-verified rule follows it."""
        self._verify_lock = threading.Lock()
        self.held: deque[_Held] = deque()
        self.shed = 0
        self.snapshots_skipped = 0
        self.on_snapshot: Callable[[str, Path], None] | None = None
        """Called (snapshot thread) with (camera, JPEG path) once an alert's snapshot is on disk."""
        self._held_lock = threading.Lock()
        # JPEG encoding takes milliseconds; it runs beside the red loop so it never delays an alert.
        self._snapshots: queue.Queue[tuple[Transition, Frame] | None] = queue.Queue(SNAPSHOTS_QUEUED)
        self._writer = threading.Thread(target=self._write_snapshots, name="snapshots", daemon=True)
        self._writer.start()

    def rules_changed(self, rules: list[Rule]) -> None:
        self.push = {rule.name: tuple(rule.cfg.push) for rule in rules}

    def close(self) -> None:
        """Write what is held if the database lets us, then the snapshots still queued."""
        self.retry()
        self._snapshots.put(None)
        self._writer.join(timeout=30)

    def report_unsaved(self) -> None:
        """At the very end (after the bus had its last chance to publish from memory): every alert
        that never reached the event log is logged in full, with whether MQTT got it."""
        with self._held_lock:
            held = list(self.held)
        alerts = [h for h in held if h.transition.kind == "alert" and h.transition.alert is not None]
        for h in alerts:
            alert = h.transition.alert
            assert alert is not None
            published = "published to MQTT" if self.memory.acked(h.token) else "NOT published"
            log.error("ALERT NOT SAVED (event log unavailable), %s: %s %s [%s] %s at %.3f (id %s)", published,
                      alert.camera, alert.label, alert.severity, alert.text, alert.at, alert.id)  # fmt: skip
        if held:
            log.error("stopping with %d transition(s) (%d alerts) the event log could not take", len(held),
                      len(alerts))  # fmt: skip

    @property
    def held_count(self) -> int:
        return len(self.held)

    def handle(self, transition: Transition, frame: Frame | None) -> None:
        """Write a red-loop transition. An alert's phase change (`transition.verdict`: the device's, or
        the blue loop's through `verified`) is taken if it changes anything (see `_take`); a later
        alert of a verified event (a repeat) is given the event's phase and mark."""
        self._handle(transition, frame)

    def _handle(self, transition: Transition, frame: Frame | None) -> bool:
        """`handle`; False for a phase change not taken."""
        alert = transition.alert
        if alert is not None and transition.verdict is not None:
            if not self._take(alert, transition.verdict):
                return False
            frame = None  # the alert's snapshot was taken with its provisional message
        elif alert is not None and alert.event_id in self._verdicts:
            with self._verify_lock:  # a repeat of a verified event: its current phase
                verdict = self._verdicts.get(alert.event_id)
            if verdict is not None and alert.phase != verdict[0]:
                alert.phase, alert.text = verdict[0], unmarked(alert.text) + verdict[1]
        self._commit(transition, frame)
        if alert is not None and transition.verdict is not None and self.on_verdict is not None:
            self.on_verdict(alert)
        return True

    def _commit(self, transition: Transition, frame: Frame | None) -> None:
        if self.held:
            self.retry()
            if self.held:
                self._hold(transition, frame)
                return
        try:
            self._write(transition, frame)
        except StoreError as exc:
            log.error(
                "event log write failed, holding %s in memory (MQTT still gets it): %s", transition.kind, exc
            )
            self._hold(transition, frame)

    def verified(self, alert: AlertRecord, suffix: str) -> bool:
        """The blue loop's verdict: `alert` is the provisional alert with its new phase and text
        (`suffix` added). It goes the way of the device's verdicts (a red-loop transition with
        `verdict`): False when it changes nothing (see `_take`)."""
        event = EventRecord(id=alert.event_id, camera=alert.camera, label=alert.label, rule=alert.rule,
                            score=0.0, box=alert.box, started_at=alert.at, frame=alert.frame,
                            pts=alert.pts)  # fmt: skip
        return self._handle(Transition("alert", event, alert.frame, alert.pts, alert, verdict=suffix), None)

    def _take(self, alert: AlertRecord, suffix: str) -> bool:
        """Record a verdict on `alert`'s event, if it changes anything: a first verdict is taken, a
        retraction overrules a confirmation (the blue loop calling off what the device confirmed, or
        the other way round), and a retraction is final (nothing brings the alert back, and the same
        verdict again is not sent twice). A taken verdict is written under the alert's id (the alert
        row updated, a new message with the same message_id), held in memory like any alert if the log
        fails; the event's later alerts carry its phase and suffix."""
        with self._verify_lock:
            before = self._verdicts.get(alert.event_id)
            if before is not None and (before[0] == "retracted" or before[0] == alert.phase):
                log.info("alert %s: %s verdict not taken, the alert is %s already", alert.id, alert.phase,
                         before[0])  # fmt: skip
                return False
            self._verdicts[alert.event_id] = (alert.phase, suffix)
            self._verdicts.move_to_end(alert.event_id)
            while len(self._verdicts) > VERIFIED_KEEP:
                self._verdicts.popitem(last=False)
            if alert.phase == "confirmed":
                self._told_confirmed[alert.id] = None
                while len(self._told_confirmed) > VERIFIED_KEEP:
                    self._told_confirmed.popitem(last=False)
        return True

    def _push_of(self, alert: AlertRecord) -> tuple[str, ...]:
        """The push channels that get this alert message: all of its rule's while confirmed, those
        without `confirmed_only` while provisional or retracted (unless it was confirmed before: who
        heard the confirmation hears its retraction). A phase change goes to the channels its
        provisional alert was queued for (the rule may have changed since)."""
        with self._verify_lock:
            names = self._provisional_push.get(alert.id)
            if names is None:
                names = tuple(n for n in self.push.get(alert.rule, ()) if self.push_allowed(n))
                if alert.phase == "provisional" and names:
                    self._provisional_push[alert.id] = names
                    while len(self._provisional_push) > VERIFIED_KEEP:
                        self._provisional_push.popitem(last=False)
            told = alert.phase == "retracted" and alert.id in self._told_confirmed
        if alert.phase == "confirmed" or told:
            return names
        return tuple(n for n in names if n not in self.confirmed_only)

    def retry(self) -> None:
        """Write held transitions, oldest first, until one fails (called from any thread)."""
        with self._held_lock:
            if not self.held:
                return
            written = 0
            while self.held:
                h = self.held[0]
                try:
                    self._write(h.transition, h.frame, delivered=self.memory.acked(h.token))
                except StoreError:
                    break
                self.memory.remove(h.token)
                self.held.popleft()
                written += 1
            if written and not self.held:
                log.warning("event log writable again; %d held transition(s) written", written)

    def _write(self, tr: Transition, frame: Frame | None, *, delivered: bool = False) -> None:
        ev = tr.event
        if tr.kind == "alert" and tr.alert is not None:
            alert = tr.alert
            message = alert_message(self.topics, alert)
            self.log.alert(alert, message.payload, message.topic, push=self._push_of(alert),
                           delivered=delivered)  # fmt: skip
            log.warning("ALERT %s [%s] %s (event %s)", alert.camera, alert.severity, alert.text, ev.id)
            if frame is None:
                return
            try:
                self._snapshots.put_nowait((tr, frame))
            except queue.Full:
                self.snapshots_skipped += 1
                log.error("snapshot writer behind: no snapshot for alert %s", alert.id)
            return
        message = event_message(self.topics, ev, tr.kind, tr.frame)
        self.log.event_transition(ev, tr.kind, (message.topic, message.payload, message.message_id),
                                  delivered=delivered)  # fmt: skip

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

    def _hold(self, tr: Transition, frame: Frame | None) -> None:
        is_alert = tr.kind == "alert" and tr.alert is not None
        if is_alert:
            assert tr.alert is not None
            message = alert_message(self.topics, tr.alert)
        else:
            message = event_message(self.topics, tr.event, tr.kind, tr.frame)
        with self._held_lock:
            if len(self.held) >= HELD_MAX:
                # Shed the oldest non-alert transition; alerts stay whatever it costs in memory.
                for i, old in enumerate(self.held):
                    if old.transition.kind != "alert":
                        del self.held[i]
                        self.memory.remove(old.token)
                        self.shed += 1
                        log.error(
                            "event log unavailable: shed an event %s to keep alerts", old.transition.kind
                        )
                        break
            with_frames = sum(1 for h in self.held if h.frame is not None)
            keep = frame if is_alert and with_frames < HELD_FRAMES else None
            self.held.append(_Held(tr, keep, self.memory.put(message)))
            if len(self.held) % HELD_REPORT_EVERY == 0:
                log.error("event log still failing: %d transitions held in memory (MQTT still gets them)",
                          len(self.held))  # fmt: skip

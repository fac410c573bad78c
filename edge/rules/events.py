"""Event state machine: one real-world happening is one event, with start / update / end.

Hysteresis on both sides: an event starts only after `min_hits` sightings (and the rule's dwell
time), and ends only after its object has been missing for `end_after_s`. Alerts follow the rule:
one at the start unless the rule is cooling down, repeats while the event lasts when asked, and
none for objects that have become stationary (a parked car is news once).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from edge.config.models import EventsConfig
from edge.outbox.ids import new_id
from edge.rules.rules import Rule
from edge.rules.tracker import AREA_LABELS, MAX_CENTRE_JUMP, Track, centre, diagonal, iou
from edge.types import AlertRecord, Box, EventRecord

PARKED_MEMORY_S = 600.0
"""How long the place of a stationary object is remembered after its track is lost."""
PARKED_IOU = 0.6


@dataclass(slots=True)
class Transition:
    kind: Literal["start", "update", "end", "alert"]
    event: EventRecord
    frame: int
    pts: float
    alert: AlertRecord | None = None


@dataclass(slots=True)
class _Candidate:
    since_pts: float
    last_pts: float
    hits: int = 0


@dataclass(slots=True)
class _Open:
    rule: Rule
    record: EventRecord
    last_seen_pts: float
    last_update_pts: float
    last_alert_pts: float | None = None
    stationary: bool = False
    seen_now: bool = field(default=False)


class EventMachine:
    """One per camera."""

    def __init__(
        self,
        camera: str,
        rules: list[Rule],
        cfg: EventsConfig,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.camera = camera
        self.rules = [r for r in rules if r.applies_to(camera)]
        self.cfg = cfg
        self.min_hits = cfg.min_hits
        """Sightings before an event starts; 1 for still sources (each frame is its own picture)."""
        self.clock = clock
        self._open: dict[tuple[str, int], _Open] = {}
        self._candidates: dict[tuple[str, int], _Candidate] = {}
        self._last_alert_pts: dict[str, float] = {}
        self._parked: list[tuple[str, Box, float]] = []

    @property
    def active(self) -> bool:
        """True while an event is open or a track is on its way to becoming one."""
        return bool(self._open or self._candidates)

    @property
    def labels(self) -> set[str]:
        return {r.label for r in self.rules}

    def open_events(self) -> list[EventRecord]:
        return [o.record for o in self._open.values()]

    def set_rules(self, rules: list[Rule], frame: int, pts: float) -> list[Transition]:
        """Take new rules at runtime. Open events of a rule that is gone end now (their `end` is
        returned, to be published); those of a changed rule go on under its new settings."""
        mine = [r for r in rules if r.applies_to(self.camera)]
        by_name = {r.name: r for r in mine}
        out: list[Transition] = []
        now = self.clock()
        for key in list(self._open):
            rule = by_name.get(key[0])
            if rule is None:
                self._end(key, frame, pts, now, out)
            else:
                self._open[key].rule = rule
        self._candidates = {k: c for k, c in self._candidates.items() if k[0] in by_name}
        self._parked = [p for p in self._parked if p[0] in by_name]
        self.rules = mine
        return out

    def step(self, seen: list[Track], frame: int, pts: float, width: int, height: int) -> list[Transition]:
        now = self.clock()
        local = datetime.fromtimestamp(now)
        out: list[Transition] = []
        for o in self._open.values():
            o.seen_now = False
        for rule in self.rules:
            if not rule.in_schedule(local):
                continue
            for track in seen:
                if rule.matches(track, width, height):
                    self._sighting(rule, track, frame, pts, now, out)
        self._close_stale(frame, pts, now, out)
        return out

    def finish(self, frame: int, pts: float) -> list[Transition]:
        """End every open event (end of a file, shutdown)."""
        out: list[Transition] = []
        now = self.clock()
        for key in list(self._open):
            self._end(key, frame, pts, now, out)
        self._candidates.clear()
        return out

    def _sighting(
        self, rule: Rule, track: Track, frame: int, pts: float, now: float, out: list[Transition]
    ) -> None:
        key = (rule.name, track.id)
        current = self._open.get(key) or self._adopt(rule, track, pts)
        if current is not None:
            self._continue(current, track, frame, pts, now, out)
            return
        cand = self._candidates.setdefault(key, _Candidate(pts, pts))
        cand.hits += 1
        cand.last_pts = pts
        if cand.hits < self.min_hits or pts - cand.since_pts < rule.cfg.dwell_s:
            return
        if self._is_parked(rule, track, pts):
            return
        del self._candidates[key]
        record = EventRecord(
            id=new_id(),
            camera=self.camera,
            label=track.label,
            rule=rule.name,
            score=track.score,
            box=track.box,
            started_at=now,
            frame=frame,
            pts=pts,
            track_id=track.id,
            zones=[rule.cfg.zone_name or rule.name] if rule.cfg.zone else [],
        )
        opened = _Open(rule, record, pts, pts, seen_now=True)
        self._open[key] = opened
        out.append(Transition("start", record, frame, pts))
        cooling = pts - self._last_alert_pts.get(rule.name, float("-inf")) < rule.cfg.cooldown_s
        if not cooling:
            self._alert(opened, frame, pts, now, out)

    def _adopt(self, rule: Rule, track: Track, pts: float) -> _Open | None:
        """Give a lost event to a new track that appears where it was: the same object, new id."""
        for (rule_name, tid), o in list(self._open.items()):
            if rule_name != rule.name or o.seen_now or tid == track.id or o.record.box is None:
                continue
            box = o.record.box
            (ax, ay), (bx, by) = centre(box), centre(track.box)
            near = ((ax - bx) ** 2 + (ay - by) ** 2) ** 0.5 <= MAX_CENTRE_JUMP * 2 * diagonal(box)
            if iou(box, track.box) > 0 or near:
                del self._open[(rule_name, tid)]
                o.record.track_id = track.id
                self._open[(rule.name, track.id)] = o
                return o
        return None

    def _continue(
        self, o: _Open, track: Track, frame: int, pts: float, now: float, out: list[Transition]
    ) -> None:
        o.seen_now = True
        o.last_seen_pts = pts
        o.record.box = track.box
        o.record.score = max(o.record.score, track.score)
        o.stationary = (
            track.label not in AREA_LABELS and track.stationary_for(pts) >= self.cfg.stationary_after_s
        )
        if pts - o.last_update_pts >= self.cfg.update_every_s:
            o.last_update_pts = pts
            out.append(Transition("update", o.record, frame, pts))
        repeat = o.rule.cfg.repeat_s
        due = o.last_alert_pts is not None and pts - o.last_alert_pts >= repeat
        if repeat > 0 and due and not o.stationary:
            self._alert(o, frame, pts, now, out)

    def _alert(self, o: _Open, frame: int, pts: float, now: float, out: list[Transition]) -> None:
        o.last_alert_pts = pts
        self._last_alert_pts[o.rule.name] = pts
        alert = AlertRecord(
            id=new_id(),
            event_id=o.record.id,
            rule=o.rule.name,
            camera=self.camera,
            label=o.record.label,
            severity=o.rule.cfg.severity,
            text=o.rule.alert_text(self.camera),
            at=now,
            frame=frame,
            pts=pts,
            box=o.record.box,
            phase="provisional" if o.rule.cfg.verify else "confirmed",
        )
        out.append(Transition("alert", o.record, frame, pts, alert))

    def _close_stale(self, frame: int, pts: float, now: float, out: list[Transition]) -> None:
        limit = self.cfg.end_after_s
        for key, cand in list(self._candidates.items()):
            if pts - cand.last_pts > limit:
                del self._candidates[key]
        for key, o in list(self._open.items()):
            if pts - o.last_seen_pts > limit:
                self._end(key, frame, pts, now, out)
        self._parked = [p for p in self._parked if pts - p[2] <= PARKED_MEMORY_S]

    def _end(self, key: tuple[str, int], frame: int, pts: float, now: float, out: list[Transition]) -> None:
        o = self._open.pop(key)
        o.record.ended_at = now
        if o.stationary and o.record.box is not None:
            self._parked.append((o.rule.name, o.record.box, o.last_seen_pts))
        out.append(Transition("end", o.record, frame, pts))

    def _is_parked(self, rule: Rule, track: Track, pts: float) -> bool:
        """A stationary object seen again where it was parked is not a new event."""
        if track.moved_pts > track.first_pts:
            return False
        for i, (name, box, _) in enumerate(self._parked):
            if name == rule.name and iou(box, track.box) >= PARKED_IOU:
                self._parked[i] = (name, box, pts)
                return True
        return False

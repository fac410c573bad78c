"""Event state machine: one real-world happening is one event, with start / update / end.

Hysteresis on both sides: an event starts only after `min_hits` sightings (and the rule's dwell
time), and ends only after its object has been missing for `end_after_s`. Alerts follow the rule:
one at the start unless the rule is cooling down, repeats while the event lasts when asked, and
none for objects that have become stationary (a parked car is news once).

Device verification (a `verify` rule on fire or smoke): the event's first alert goes out at once as
`provisional`, on the very frame it would alert without verification. The machine then keeps looking,
with no I/O: once the region has been seen for CONFIRM_AFTER_S, in at least MIN_SHARE of the frames
looked at since, and the detector's closer look says it is real (`Track.verified`, from
`Detection.extra["verified"]`), the same alert (id, event id) follows as `confirmed`, its text marked
like the blue loop's verdicts (edge.verify). If the event ends first, or CONFIRM_WITHIN_S pass without
that, it follows as `retracted` with the reason. Such a phase change is a Transition of kind "alert"
whose `verdict` is the text mark; the event's later repeats carry the phase. An event that only stops
because the file ended, the rule went away or detection was switched off keeps its alert provisional:
only evidence retracts.

Crossing rules (a rule with `line`) take no sightings: the camera's line counter (edge.rules.lines)
hands `step` the crossings of the frame, and each crossing of the rule's line, label and direction is
one event of its own: `start` and its alert at the crossing's frame (unless the rule is cooling down),
`end` CROSSING_HOLD_S of stream time later. The alert text names the line and the direction.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Literal

from edge.config.models import EventsConfig, LineConfig
from edge.outbox.ids import new_id
from edge.rules.lines import Crossing
from edge.rules.rules import Rule
from edge.rules.tracker import AREA_LABELS, MAX_CENTRE_JUMP, Track, centre, diagonal, iou
from edge.types import AlertRecord, Box, EventRecord
from edge.verify import CONFIRMED_SUFFIX, DID_NOT_HOLD_SUFFIX, NOT_VERIFIED_SUFFIX

PARKED_MEMORY_S = 600.0
"""How long the place of a stationary object is remembered after its track is lost."""
PARKED_IOU = 0.6
CONFIRM_AFTER_S = 1.5
"""Device verification: stream seconds the region must keep being seen after the provisional alert."""
CONFIRM_WITHIN_S = 3.0
"""Device verification: not confirmed this long after the provisional alert, the alert is retracted."""
MIN_SHARE = 0.6
"""Device verification: share of the frames looked at since the provisional alert that saw the region."""
VERIFIED_MIN = 0.5
"""`Track.verified` at or above this: the detector's closer look says the region is real."""
CROSSING_HOLD_S = 2.0
"""A crossing rule's event ends this many stream seconds after its crossing: long enough for the event
log and Home Assistant's binary sensor to show it, short enough that the next crossing is news."""


@dataclass(slots=True)
class Transition:
    kind: Literal["start", "update", "end", "alert"]
    event: EventRecord
    frame: int
    pts: float
    alert: AlertRecord | None = None
    verdict: str | None = None
    """An alert's phase change (an alert already published, same id): the mark its text was given."""
    awaits_verdict: bool = False
    """A `start` whose first alert is verified on the device: followers of confirmed alerts only (the
    Home Assistant binary sensor) wait for its `confirmed`."""


@dataclass(slots=True)
class _Check:
    """Device verification of an event's provisional alert, while no verdict is known."""

    alert: AlertRecord
    looks: int = 1
    """Frames looked at since the alert (the alert's own included)."""
    hits: int = 1
    """Of them, frames that saw the event's region."""


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
    check: _Check | None = None
    verdict: tuple[str, str] | None = None
    """(phase, text mark) once the device verified the event's alert: its repeats carry them."""
    hold_until: float | None = None
    """A crossing's event: the stream time it ends at (it has no sightings to end it)."""
    direction: str | None = None
    """A crossing's event: "in" or "out"."""


class EventMachine:
    """One per camera."""

    def __init__(
        self,
        camera: str,
        rules: list[Rule],
        cfg: EventsConfig,
        clock: Callable[[], float] = time.time,
        lines: Mapping[str, LineConfig] | None = None,
    ) -> None:
        """`lines`: the camera's lines (config `cameras.*.lines`), for crossing rules' directions."""
        self.camera = camera
        self.lines = dict(lines or {})
        self.rules = [r for r in rules if r.applies_to(camera)]
        self.cfg = cfg
        self.min_hits = cfg.min_hits
        """Sightings before an event starts; 1 for still sources (each frame is its own picture)."""
        self.clock = clock
        self._open: dict[tuple[str, int], _Open] = {}
        self._candidates: dict[tuple[str, int], _Candidate] = {}
        self._last_alert_pts: dict[str, float] = {}
        self._parked: list[tuple[str, Box, float]] = []
        self._crossings = 0

    @property
    def active(self) -> bool:
        """True while an event is open or a track is on its way to becoming one."""
        return bool(self._open or self._candidates)

    @property
    def settled(self) -> bool:
        """True while an event is open and no new track is on its way to becoming one: the state in
        which the red loop may cap how often it looks (gate.event_max_looks_per_s)."""
        return bool(self._open) and not self._candidates

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

    def step(
        self,
        seen: list[Track],
        frame: int,
        pts: float,
        width: int,
        height: int,
        crossings: Sequence[Crossing] = (),
    ) -> list[Transition]:
        now = self.clock()
        local = datetime.fromtimestamp(now)
        out: list[Transition] = []
        for o in self._open.values():
            o.seen_now = False
            if o.check is not None:
                o.check.looks += 1
        for rule in self.rules:
            if not rule.in_schedule(local):
                continue
            if rule.cfg.line is not None:
                for c in crossings:
                    line = self.lines.get(c.line)
                    if (c.line == rule.cfg.line and c.label == rule.label and line is not None
                            and rule.alerts_on(c.direction, line.direction)
                            and rule.matches(c.track, width, height)):  # fmt: skip
                        self._crossed(rule, c, frame, pts, now, out)
                continue
            for track in seen:
                if rule.matches(track, width, height):
                    self._sighting(rule, track, frame, pts, now, out)
        for o in self._open.values():
            if o.check is not None and pts - o.check.alert.pts > CONFIRM_WITHIN_S:
                held = o.check.hits >= MIN_SHARE * o.check.looks
                self._verdict(o, NOT_VERIFIED_SUFFIX if held else DID_NOT_HOLD_SUFFIX, frame, pts, out)
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
        zones = [rule.cfg.zone_name or rule.name] if rule.cfg.zone else []
        self._start(key, rule, track, frame, pts, now, out, zones=zones, verifies=rule.device_verified)

    def _crossed(
        self, rule: Rule, c: Crossing, frame: int, pts: float, now: float, out: list[Transition]
    ) -> None:
        """A crossing of a crossing rule's line: an event of its own, alerting at once (edge.rules.lines
        made sure it is one crossing)."""
        self._crossings += 1
        key = (rule.name, -self._crossings)  # a key no track id takes
        self._start(key, rule, c.track, frame, pts, now, out, hold_until=pts + CROSSING_HOLD_S,
                    direction=c.direction)  # fmt: skip

    def _start(
        self,
        key: tuple[str, int],
        rule: Rule,
        track: Track,
        frame: int,
        pts: float,
        now: float,
        out: list[Transition],
        *,
        zones: list[str] | None = None,
        verifies: bool = False,
        hold_until: float | None = None,
        direction: str | None = None,
    ) -> None:
        """Open an event of `rule` under `key`, from `track` as seen now: its `start`, and its first alert
        unless the rule is cooling down. `verifies`: the start says its alert awaits the device's verdict
        (a sighting of a device-verified rule; a crossing's start never does). `hold_until` and
        `direction`: a crossing's event (see _Open)."""
        record = EventRecord(id=new_id(), camera=self.camera, label=track.label, rule=rule.name,
                             score=track.score, box=track.box, started_at=now, frame=frame, pts=pts,
                             track_id=track.id, zones=zones or [])  # fmt: skip
        opened = _Open(rule, record, pts, pts, seen_now=True, hold_until=hold_until, direction=direction)
        self._open[key] = opened
        cooling = pts - self._last_alert_pts.get(rule.name, float("-inf")) < rule.cfg.cooldown_s
        out.append(Transition("start", record, frame, pts, awaits_verdict=verifies and not cooling))
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
        check = o.check
        if check is not None:
            check.hits += 1
            held = pts - check.alert.pts >= CONFIRM_AFTER_S and check.hits >= MIN_SHARE * check.looks
            if held and track.verified >= VERIFIED_MIN:
                self._verdict(o, CONFIRMED_SUFFIX, frame, pts, out)
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
            text=o.rule.alert_text(self.camera, o.direction),
            at=now,
            frame=frame,
            pts=pts,
            box=o.record.box,
            phase="provisional" if o.rule.cfg.verify else "confirmed",
        )
        if o.verdict is not None:  # a repeat of an event the device verified already
            alert.phase, alert.text = o.verdict[0], alert.text + o.verdict[1]
        elif o.check is None and o.rule.device_verified:
            o.check = _Check(replace(alert))
        out.append(Transition("alert", o.record, frame, pts, alert))

    def _verdict(self, o: _Open, mark: str, frame: int, pts: float, out: list[Transition]) -> None:
        """The device's verdict on the event's provisional alert: the same alert, phase and text changed."""
        assert o.check is not None
        phase = "confirmed" if mark == CONFIRMED_SUFFIX else "retracted"
        changed = replace(o.check.alert, phase=phase, text=o.check.alert.text + mark)
        o.check, o.verdict = None, (phase, mark)
        out.append(Transition("alert", o.record, frame, pts, changed, verdict=mark))

    def _close_stale(self, frame: int, pts: float, now: float, out: list[Transition]) -> None:
        limit = self.cfg.end_after_s
        for key, cand in list(self._candidates.items()):
            if pts - cand.last_pts > limit:
                del self._candidates[key]
        for key, o in list(self._open.items()):
            if o.hold_until is not None:
                if pts >= o.hold_until:
                    self._end(key, frame, pts, now, out)
                continue
            if pts - o.last_seen_pts > limit:
                if o.check is not None:  # gone before it held
                    self._verdict(o, DID_NOT_HOLD_SUFFIX, frame, pts, out)
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

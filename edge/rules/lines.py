"""Tripwires: crossings of a camera's named lines by tracked objects' feet, and in/out counts.

A line is a polyline in relative coordinates (config `cameras.*.lines`). "in" is crossing from its left
side to its right side, looking along it from its first point to its last, in image coordinates (x
right, y down); "out" the other way. An object stands where its feet are: the bottom centre of its box.

One crossing is counted once, whatever the detector's jitter does:
- Hysteresis: a track takes a side only where its feet are clearly off the line, at least LINE_BAND of
  the frame's shorter side away from it; positions in that band on the line say nothing. A crossing is
  a track clearly on one side, then clearly on the other.
- A new side must hold for CONFIRM_LOOKS looks of the track in a row (looks in the band do not break
  the run, a look back on the old side does): a box whose bottom edge jumps for one frame (a leg
  missed) does not cross and come back.
- Only the segments count: the way from the last place clearly on the old side to the first clearly on
  the new must cut one of the line's segments. A track that walks round the end of a line changes
  sides without crossing it.
- A track the tracker lost and found again keeps its id (edge.rules.tracker) and so its side. A track
  that appears under a new id right where a track of its label vanished (within ADOPT_JUMP of that
  track's box diagonal, before the lost one would expire) takes over the lost one's side: a person
  found again is neither counted again nor missed when they crossed while unseen.

Counts per line and label run since local midnight (the device's time zone) and start again at the next
one. The appliance keeps them in the event log on every change (`stored`) and takes today's back after
a restart (`restore`); on a day with nothing kept they run since the counter started (`since` says
which). The clock is injectable for tests. All the work is a few multiplications per track and line
segment, and a camera without lines has no counter at all.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from datetime import time as dtime
from typing import Literal

from edge.config.models import LineConfig
from edge.rules.tracker import AREA_LABELS, Track, diagonal, feet

LINE_BAND = 0.015
"""Half-width of the band around a line where a track takes no side, as a fraction of the frame's
shorter side (6.5 px at 768x432)."""
CONFIRM_LOOKS = 2
"""Looks of a track clearly on the new side, in a row, before its crossing counts."""
ADOPT_JUMP = 0.5
"""A new track this close (in box diagonals of the lost one) to where a track vanished takes its side."""

Point = tuple[float, float]
Direction = Literal["in", "out"]
CountsHook = Callable[[str, str, dict[str, object]], None]
"""(line, label, {"in": n, "out": n, "since": ISO-8601}) when a count changed or the day began."""


@dataclass(frozen=True, slots=True)
class Crossing:
    """One track crossing one line, in one direction, at the frame where the crossing held."""

    line: str
    label: str
    direction: Direction
    track: Track
    pts: float


@dataclass(slots=True)
class _Standing:
    """Where one track stands with one line."""

    label: str
    last_pts: float
    feet: Point
    """Its feet at its last look (relative), band or not: where a lost track vanished."""
    diag: float
    """Its box diagonal at its last look, in pixels."""
    side: int = 0
    """-1 left, +1 right, 0 not clearly on a side yet."""
    at: Point = (0.0, 0.0)
    """The last place it was clearly on `side` (relative)."""
    pending: int = 0
    """Looks in a row clearly on the other side."""
    pending_at: Point = (0.0, 0.0)
    """The first of those places (relative)."""


def _cross(ax: float, ay: float, bx: float, by: float, px: float, py: float) -> float:
    return (bx - ax) * (py - ay) - (by - ay) * (px - ax)


def side_of(p: Point, polyline: list[Point]) -> tuple[int, float]:
    """(side, distance) of p from the polyline, both in p's units: side +1 right, -1 left (image
    coordinates, looking from the first point to the last), taken from the nearest segment."""
    px, py = p
    best = (math.inf, 0.0)  # (distance, signed perpendicular of the nearest segment)
    for (ax, ay), (bx, by) in itertools.pairwise(polyline):
        dx, dy = bx - ax, by - ay
        length2 = dx * dx + dy * dy
        t = max(0.0, min(1.0, ((px - ax) * dx + (py - ay) * dy) / length2))
        dist = math.hypot(px - (ax + t * dx), py - (ay + t * dy))
        perp = _cross(ax, ay, bx, by, px, py) / math.sqrt(length2)
        # At a shared corner both segments are as near: the one the point is more clearly beside says.
        if dist < best[0] - 1e-9 or (abs(dist - best[0]) <= 1e-9 and abs(perp) > abs(best[1])):
            best = (dist, perp)
    return (1 if best[1] > 0 else -1 if best[1] < 0 else 0), best[0]


def cuts(p: Point, q: Point, polyline: Iterable[Point]) -> bool:
    """Whether the way from p to q cuts (or touches) a segment of the polyline."""
    points = list(polyline)
    for a, b in itertools.pairwise(points):
        d1, d2 = _cross(*a, *b, *p), _cross(*a, *b, *q)
        d3, d4 = _cross(*p, *q, *a), _cross(*p, *q, *b)
        if d1 * d2 <= 0 and d3 * d4 <= 0:
            if d1 == d2 == 0:  # collinear: only when they overlap
                lo, hi = sorted((a, b))
                if max(p, q) < lo or min(p, q) > hi:
                    continue
            return True
    return False


def midnight_after(now: float) -> float:
    """The next local midnight after `now` (epoch seconds; the device's time zone, DST included)."""
    day = datetime.fromtimestamp(now).date() + timedelta(days=1)
    return datetime.combine(day, dtime()).timestamp()


def midnight_before(now: float) -> float:
    """The local midnight that began `now`'s day."""
    return datetime.combine(datetime.fromtimestamp(now).date(), dtime()).timestamp()


def local_iso(at: float) -> str:
    """ISO-8601 local time with its UTC offset: 2025-06-01T00:00:00+02:00."""
    return datetime.fromtimestamp(at).astimezone().isoformat(timespec="seconds")


class LineCounter:
    """One camera's lines: crossings per frame, in/out counts per line and label since midnight."""

    def __init__(
        self,
        lines: Mapping[str, LineConfig],
        *,
        max_age_s: float,
        clock: Callable[[], float] = time.time,
        on_counts: CountsHook | None = None,
    ) -> None:
        """`max_age_s`: how long the tracker keeps a lost track (what a track's standing is kept for)."""
        self.lines = dict(lines)
        self.max_age_s = max_age_s
        self.clock = clock
        self.on_counts = on_counts
        self._extra: dict[str, frozenset[str]] = {}
        self._standing: dict[tuple[str, int], _Standing] = {}
        self._pixels: tuple[int, int, dict[str, list[Point]]] = (0, 0, {})
        now = clock()
        self.since = now
        """When the counts began: the local midnight, or the start on the day the counter started."""
        self._next_midnight = midnight_after(now)
        self._counts: dict[tuple[str, str], dict[str, int]] = {
            (name, label): {"in": 0, "out": 0} for name, line in self.lines.items() for label in line.labels
        }
        self.changes = 0
        """Goes up whenever a count changes (a crossing, midnight, `restore`): what was built from the
        counts (the live view's lines) holds until it moves."""

    # -- what it follows ------------------------------------------------------------------------------

    def watch(self, extra: Mapping[str, Iterable[str]]) -> None:
        """Labels crossing rules want per line besides the line's own (their crossings are found, not
        counted). Unknown lines are ignored: a rule's line that this camera lacks never crosses."""
        self._extra = {line: frozenset(labels) for line, labels in extra.items() if line in self.lines}

    def labels_of(self, line: str) -> frozenset[str]:
        return frozenset(self.lines[line].labels) | self._extra.get(line, frozenset())

    @property
    def labels(self) -> set[str]:
        """Every label a line here follows (the tracker must track them)."""
        return {label for name in self.lines for label in self.labels_of(name)}

    def forget_tracks(self) -> None:
        """The tracker started again (detection switched back on): its ids mean other objects now."""
        self._standing.clear()

    # -- counts ---------------------------------------------------------------------------------------

    def counts(self) -> dict[tuple[str, str], dict[str, object]]:
        """(line, label) -> {"in", "out", "since"} now."""
        since = local_iso(self.since)
        return {key: {**c, "since": since} for key, c in self._counts.items()}

    def totals(self) -> dict[tuple[str, str], tuple[int, int]]:
        """(line, label) -> (in, out) now, without the cost of formatting `since`."""
        return {key: (c["in"], c["out"]) for key, c in self._counts.items()}

    def stored(self) -> dict[str, object]:
        """The counts as the event log keeps them (`restore` takes them back after a restart)."""
        return {"since": self.since, "counts": {f"{line}/{label}": [c["in"], c["out"]]
                                                 for (line, label), c in self._counts.items()}}  # fmt: skip

    def restore(self, stored: Mapping[str, object]) -> bool:
        """Counts kept before a restart (`stored`), taken back when they are from today: a restart
        does not zero the day's counts. Lines or labels no longer configured are left out, new ones
        start at 0; counts from an earlier day, or unreadable, are ignored. True when restored."""
        try:
            since = float(stored["since"])  # type: ignore[arg-type]
            counts = dict(stored["counts"])  # type: ignore[call-overload]
        except (KeyError, TypeError, ValueError):
            return False
        now = self.clock()
        if not midnight_before(now) <= since <= now:
            return False
        for key, c in self._counts.items():
            kept = counts.get(f"{key[0]}/{key[1]}")
            if isinstance(kept, list) and len(kept) == 2 and all(isinstance(n, int) and n >= 0 for n in kept):
                c["in"], c["out"] = kept
        self.since = min(self.since, since)
        self.changes += 1
        return True

    def tick(self, now: float | None = None) -> bool:
        """Start the counts again if local midnight has passed; True when it did (and said so)."""
        now = self.clock() if now is None else now
        if now < self._next_midnight:
            return False
        self.since = midnight_before(now)
        self._next_midnight = midnight_after(now)
        self.changes += 1
        for key, c in self._counts.items():
            c["in"] = c["out"] = 0
            self._say(key)
        return True

    def _say(self, key: tuple[str, str]) -> None:
        if self.on_counts is not None:
            self.on_counts(key[0], key[1], {**self._counts[key], "since": local_iso(self.since)})

    # -- the frame path -------------------------------------------------------------------------------

    def step(self, seen: Iterable[Track], pts: float, width: int, height: int) -> list[Crossing]:
        """The crossings of this frame's tracks (those the tracker saw in it)."""
        self.tick()
        polylines = self._polylines(width, height)
        band = LINE_BAND * min(width, height)
        tracks = [t for t in seen if t.label not in AREA_LABELS]
        out: list[Crossing] = []
        for name, poly in polylines.items():
            labels = self.labels_of(name)
            mine = [t for t in tracks if t.label in labels]
            ids = {t.id for t in mine}
            for track in mine:
                at = feet(track.box, width, height)
                st = self._standing.get((name, track.id)) or self._adopt(name, track, at, ids, width, height)
                diag = diagonal(track.box)
                if st is None:
                    st = self._standing[(name, track.id)] = _Standing(track.label, pts, at, diag)
                st.last_pts, st.feet, st.diag = pts, at, diag
                direction = self._look(st, at, poly, band, width, height)
                if direction is not None:
                    out.append(Crossing(name, track.label, direction, track, pts))
                    key = (name, track.label)
                    if key in self._counts:
                        self._counts[key][direction] += 1
                        self.changes += 1
                        self._say(key)
        self._standing = {k: s for k, s in self._standing.items() if pts - s.last_pts <= self.max_age_s}
        return out

    def _look(
        self, st: _Standing, feet: Point, poly: list[Point], band: float, width: int, height: int
    ) -> Direction | None:
        side, dist = side_of((feet[0] * width, feet[1] * height), poly)
        if dist < band or side == 0:
            return None  # on the line: says nothing
        if st.side == 0 or side == st.side:
            st.side, st.at, st.pending = side, feet, 0
            return None
        if st.pending == 0:
            st.pending_at = feet
        st.pending += 1
        if st.pending < CONFIRM_LOOKS:
            return None
        relative = [(x / width, y / height) for x, y in poly]
        crossed = cuts(st.at, st.pending_at, relative)
        was = st.side
        st.side, st.at, st.pending = side, feet, 0
        if not crossed:
            return None  # round the end of the line
        return "in" if was < 0 else "out"

    def _adopt(
        self, line: str, track: Track, feet: Point, present: set[int], width: int, height: int
    ) -> _Standing | None:
        """The standing of a track of this label that vanished where this new one appears."""
        best: tuple[float, tuple[str, int]] | None = None
        for key, st in self._standing.items():
            if (
                key[0] != line
                or key[1] in present
                or st.label != track.label
                or st.last_pts >= track.first_pts
            ):
                continue
            jump = math.hypot((feet[0] - st.feet[0]) * width, (feet[1] - st.feet[1]) * height) / st.diag
            if jump <= ADOPT_JUMP and (best is None or jump < best[0]):
                best = (jump, key)
        if best is None:
            return None
        st = self._standing.pop(best[1])
        self._standing[(line, track.id)] = st
        return st

    def _polylines(self, width: int, height: int) -> dict[str, list[Point]]:
        """The lines in pixels of this frame size (kept while the size stays)."""
        w, h, polys = self._pixels
        if (w, h) != (width, height):
            polys = {n: [(x * width, y * height) for x, y in line.points] for n, line in self.lines.items()}
            self._pixels = (width, height, polys)
        return polys

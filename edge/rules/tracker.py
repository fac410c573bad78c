"""Tracker: stable ids for detections across frames.

A greedy IoU matcher with a centre-distance fallback, per label. That is enough for a fixed security
camera at 5-30 fps, costs microseconds, and keeps a lost track alive for a grace period so a person
who is missed for a few frames keeps their id (and so their event). Area labels such as fire are not
objects with an identity: all of a camera's fire regions form one track whose box is their union.

Rules may take fire/smoke from one source only (RuleConfig.source: the pixel detector or an extra
model). Filtering the detections per rule would need a tracker per rule; instead, beside that one region
(source "any": the counted one, shown live, what an "any" rule sees) the tracker keeps a view per source
that saw the label in this frame: the union of only that source's regions, under the same track id (one
fire is one happening for the narrator and the event log, whoever saw it). A "pixel" or "model" rule
matches only its view (Rule.matches), so its event's box, score, sightings and end follow that source
alone. The views are not in `tracks`: counts and the live view are as before.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from edge.types import Box, Detection

AREA_LABELS = frozenset({"fire", "smoke"})
"""Labels tracked as one region per camera rather than as individual objects."""
PIXEL_DETECTORS = frozenset({"fire", "smoke"})
"""`Detection.detector` of the built-in pixel detectors; any other detector of an area label is a model
(an extra model's detections carry its manifest name, which may not be one of these)."""

MIN_IOU = 0.2
MAX_CENTRE_JUMP = 0.75
"""Fallback match: centre moved less than this many box diagonals since last seen."""
MOVE_TOLERANCE = 0.1
"""A track whose centre stays within this many box diagonals is not moving."""


def iou(a: Box, b: Box) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def centre(box: Box) -> tuple[float, float]:
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2


def feet(box: Box, width: float, height: float) -> tuple[float, float]:
    """Where an object stands, relative to a `width` x `height` frame: the bottom centre of its box.
    Zone membership and line crossings are decided at this point, not the box's centre: a person's box
    grows and shrinks at the top and sides as they turn or raise an arm, their feet stay on the floor,
    and the floor is what an admin draws a zone or a tripwire on."""
    return (box[0] + box[2]) / 2 / width, box[3] / height


def diagonal(box: Box) -> float:
    return float(((box[2] - box[0]) ** 2 + (box[3] - box[1]) ** 2) ** 0.5) or 1.0


def union_box(boxes: Iterable[Box]) -> Box:
    bs = list(boxes)
    return (min(b[0] for b in bs), min(b[1] for b in bs), max(b[2] for b in bs), max(b[3] for b in bs))


@dataclass(slots=True)
class Track:
    id: int
    label: str
    box: Box
    score: float
    first_pts: float
    last_pts: float
    hits: int = 1
    best_score: float = 0.0
    anchor: Box = field(default=(0.0, 0.0, 0.0, 0.0))
    """Where the track was when it last moved; compared to tell stationary objects."""
    moved_pts: float = 0.0
    verified: float = 1.0
    """The detector's closer look at the region in its last sighting (`Detection.extra["verified"]`, 1.0
    when the detector makes none): what device verification of fire and smoke alerts asks for."""
    source: str = "any"
    """Area tracks: "any" (the region of every detector) or a view of only "pixel" or "model" ones (see
    the module docstring). Objects: "any"."""

    def stationary_for(self, pts: float) -> float:
        return pts - self.moved_pts


class Tracker:
    def __init__(self, max_age_s: float) -> None:
        self.max_age_s = max_age_s
        self.tracks: dict[int, Track] = {}
        self._views: dict[tuple[str, str], Track] = {}
        """(label, "pixel" | "model") -> that source's view of the label's area track."""
        self._next_id = 1

    def update(self, detections: list[Detection], pts: float) -> list[Track]:
        """Match detections to tracks; return the tracks seen in this frame."""
        seen: list[Track] = []
        area = [d for d in detections if d.label in AREA_LABELS]
        objects = [d for d in detections if d.label not in AREA_LABELS]
        for label in {d.label for d in area}:
            group = [d for d in area if d.label == label]
            merged = Detection(label, max(d.score for d in group), union_box(d.box for d in group), "fire",
                               {"verified": max(d.extra.get("verified", 1.0) for d in group)})  # fmt: skip
            track = next((t for t in self.tracks.values() if t.label == label), None)
            whole = self._refresh(track, merged, pts) if track else self._new(merged, pts)
            seen.append(whole)
            for source in ("pixel", "model"):
                part = [d for d in group if ("pixel" if d.detector in PIXEL_DETECTORS else "model") == source]
                if part:
                    seen.append(self._view(whole, source, part, pts))
        seen.extend(self._match_objects(objects, pts))
        self._expire(pts)
        return seen

    @property
    def active(self) -> bool:
        return bool(self.tracks)

    def _match_objects(self, detections: list[Detection], pts: float) -> list[Track]:
        candidates = [t for t in self.tracks.values() if t.label not in AREA_LABELS]
        pairs: list[tuple[float, int, int]] = []
        for di, det in enumerate(detections):
            for track in candidates:
                if track.label != det.label:
                    continue
                overlap = iou(track.box, det.box)
                if overlap >= MIN_IOU:
                    pairs.append((overlap + 1.0, di, track.id))
                    continue
                (cx, cy), (dx, dy) = centre(track.box), centre(det.box)
                jump = ((cx - dx) ** 2 + (cy - dy) ** 2) ** 0.5 / diagonal(track.box)
                if jump <= MAX_CENTRE_JUMP:
                    pairs.append((1.0 - jump, di, track.id))
        pairs.sort(reverse=True)
        used_d: set[int] = set()
        used_t: set[int] = set()
        seen: list[Track] = []
        for _, di, tid in pairs:
            if di in used_d or tid in used_t:
                continue
            used_d.add(di)
            used_t.add(tid)
            seen.append(self._refresh(self.tracks[tid], detections[di], pts))
        seen.extend(self._new(det, pts) for di, det in enumerate(detections) if di not in used_d)
        return seen

    def _new(self, det: Detection, pts: float) -> Track:
        track = Track(self._next_id, det.label, det.box, det.score, pts, pts, 1, det.score, det.box, pts,
                      det.extra.get("verified", 1.0))  # fmt: skip
        self._next_id += 1
        self.tracks[track.id] = track
        return track

    def _refresh(self, track: Track, det: Detection, pts: float) -> Track:
        track.box, track.score, track.last_pts = det.box, det.score, pts
        track.verified = det.extra.get("verified", 1.0)
        track.hits += 1
        track.best_score = max(track.best_score, det.score)
        (ax, ay), (cx, cy) = centre(track.anchor), centre(det.box)
        if ((ax - cx) ** 2 + (ay - cy) ** 2) ** 0.5 > MOVE_TOLERANCE * diagonal(track.anchor):
            track.anchor, track.moved_pts = det.box, pts
        return track

    def _view(self, whole: Track, source: str, group: list[Detection], pts: float) -> Track:
        """The source's view of an area track: its regions only, the whole track's id."""
        verified = {"verified": max(d.extra.get("verified", 1.0) for d in group)}
        box = union_box(d.box for d in group)
        det = Detection(whole.label, max(d.score for d in group), box, source, verified)
        view = self._views.get((whole.label, source))
        if view is not None and view.id == whole.id:
            return self._refresh(view, det, pts)
        view = Track(whole.id, det.label, det.box, det.score, pts, pts, 1, det.score, det.box, pts,
                     verified=verified["verified"], source=source)  # fmt: skip
        self._views[(whole.label, source)] = view
        return view

    def _expire(self, pts: float) -> None:
        for tid in [t.id for t in self.tracks.values() if pts - t.last_pts > self.max_age_s]:
            del self.tracks[tid]
        for key in [k for k, t in self._views.items() if pts - t.last_pts > self.max_age_s]:
            del self._views[key]

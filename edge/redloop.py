"""The red loop for one camera: gate -> reflex engine -> tracker -> rules -> event log.

`RedLoop.process` is called once per captured frame, from that camera's thread. Everything it needs
is per camera except the object detector, which is shared: each camera pre-processes and decodes on
its own thread, and one inference worker (edge.reflex.worker) runs the model for all of them, in turn.
While a camera's events are open its object detector looks at most `gate.event_max_looks_per_s` a
second (`LookCap`): an open event needs a look now and then, not one per frame, and the detector's
time is what every other camera waits for. The pixel detectors (fire, smoke) are the camera's own and
are not capped; only while both are idle (no watch, no evidence) do frames the gate woke for motion
alone reach them at most `gate.pixel_idle_looks_per_s` (`RedLoop._pixels_due`).

Runtime changes (a switch, a rule added or removed, a fresh look asked for) come from the control
surface on other threads. They take the loop's lock, which `process` holds per frame, so a change
lands between two frames and its effects (an event ended because its rule went away) are emitted
through the same sinks, in order, before the next frame.

A camera with lines (config `cameras.*.lines`) has a line counter (edge.rules.lines): its crossings go
to the event machine (crossing rules) and its in/out counts to `on_lines`. A camera with zones keeps
their occupancy (tracks whose feet are inside, per zone and watched label, held like the counts) for
`on_occupancy` and the live view. A camera with neither does none of this work.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

from edge.config.models import CameraConfig, EdgeConfig
from edge.gate import GateDecision, SilenceGate
from edge.live import CameraView, KeyframeRing, LineView, LiveView, TrackView
from edge.metrics import Histogram, StageTimes
from edge.reflex.engine import DetectResult
from edge.reflex.pixels import LocalPixels, PixelPool, Pixels
from edge.reflex.worker import Deferred
from edge.rules import AREA_LABELS, EventMachine, Rule, Track, Tracker, Transition
from edge.rules.lines import LineCounter
from edge.rules.rules import point_in_polygon
from edge.rules.tracker import feet
from edge.types import Detection, Frame

log = logging.getLogger("edge.redloop")

COUNT_HOLD_S = 1.0
"""Seconds a track may go unseen and still be counted in the retained per-label counts."""


IDLE_EVIDENCE = 0.05
"""Peak evidence (0-1) below which a pixel detector that does not watch counts as idle (a third of the
level that keeps a watch going): from there on, motion alone wakes it at gate.pixel_idle_looks_per_s."""

CAPPED_REASONS = frozenset({"motion", "warm", "event", "refresh"})
"""Gate wake-ups the look-rate cap may skip while an event is open; never the first look, a look someone
asked for, or every frame of a camera whose gate is off."""


class LookCap:
    """At most `rate` looks a second of stream time (pts): one look per cell of a grid of 1/rate
    seconds, shifted by `phase` (a fraction of a cell). Each camera's grid has its own phase (from its
    name), so cameras that see the same thing at the same moment (a fleet started together, a light
    switched on in a hall of them) ask the shared detector at different frames instead of all at once.
    0: every look is due."""

    SLACK_S = 1e-3
    """Timestamps are rounded: a frame this early still counts as on time."""

    __slots__ = ("_cell", "interval", "phase")

    def __init__(self, rate: float, phase: float = 0.0) -> None:
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self.phase = (phase % 1.0) * self.interval
        self._cell: int | None = None

    @classmethod
    def for_camera(cls, rate: float, camera: str) -> LookCap:
        return cls(rate, zlib.crc32(camera.encode()) / 2**32)

    def _cell_of(self, pts: float) -> int:
        return math.floor((pts - self.phase + self.SLACK_S) / self.interval)

    def due(self, pts: float) -> bool:
        """May the camera look at `pts`? (Yes once per cell; also when the stream's clock started over.)"""
        return not self.interval or self._cell is None or self._cell_of(pts) != self._cell

    def took(self, pts: float) -> None:
        """The camera looked at `pts` (for whatever reason): no capped look again in this cell."""
        if self.interval:
            self._cell = self._cell_of(pts)


def _submit(detector: object, image: np.ndarray, labels: set[str] | None) -> Any:
    """Queue a frame on a detector that can run while the red loop goes on (ObjectDetector.submit);
    None for one that only detects in one call (a test's fake): it runs when its result is wanted."""
    submit = getattr(detector, "submit", None)
    return submit(image, labels) if submit is not None else None


class Detector(Protocol):
    def detect(self, image: np.ndarray, labels: set[str] | None = None) -> DetectResult: ...


class ModelDetector(Detector, Protocol):
    """An extra model (config `extra_models`, e.g. fire/smoke): a detector that says what it knows."""

    labels: tuple[str, ...]


class Sink(Protocol):
    """Where transitions go: the event log, stdout (edge scan), the bus's retained state."""

    def handle(self, transition: Transition, frame: Frame) -> None: ...


CountsHook = Callable[[str, dict[str, int]], None]
"""(camera, {label: objects in view}) after a woken frame changed a count."""
LinesHook = Callable[[str, str, str, dict[str, object]], None]
"""(camera, line, label, {"in", "out", "since"}) when a line's count changed or a new day began."""
OccupancyHook = Callable[[str, dict[str, dict[str, int]]], None]
"""(camera, {zone: {label: objects inside}}) after a woken frame changed an occupancy."""


class RedLoop:
    def __init__(
        self,
        camera: str,
        cfg: EdgeConfig,
        rules: list[Rule],
        detector: Detector | None,
        sinks: list[Sink],
        *,
        live: LiveView | None = None,
        models: Sequence[ModelDetector] = (),
        camera_cfg: CameraConfig | None = None,
        pixel_pool: PixelPool | None = None,
    ) -> None:
        """`models`: the extra models (edge.wiring.load_models), shared by every camera like `detector`.
        `camera_cfg`: the camera's config, for its zones and lines (default: `cfg.cameras[camera]`).
        `pixel_pool`: where the fire and smoke detectors run (edge.reflex.pixels; default: here)."""
        self.camera = camera
        self.cfg = cfg
        setup = camera_cfg if camera_cfg is not None else cfg.cameras.get(camera)
        self.zones: dict[str, list[tuple[float, float]]] = dict(setup.zones) if setup is not None else {}
        lines = dict(setup.lines) if setup is not None else {}
        self.gate = SilenceGate(cfg.gate)
        self.tracker = Tracker(cfg.events.end_after_s)
        self.events = EventMachine(camera, rules, cfg.events, lines=lines)
        self.lines: LineCounter | None = None
        if lines:
            self.lines = LineCounter(lines, max_age_s=cfg.events.end_after_s, on_counts=self._line_counts)
        self._lines_view: tuple[int, tuple[LineView, ...]] = (-1, ())
        """(`LineCounter.changes` when built, the live view's lines then)."""
        self.on_lines: LinesHook | None = None
        self.on_occupancy: OccupancyHook | None = None
        self.occupancy: dict[str, dict[str, int]] = {}
        """Zone -> label -> tracked objects whose feet are inside now (labels the camera's rules watch).
        Replaced whole when it changes, never changed in place: the live view shares it uncopied."""
        self._inside: dict[tuple[str, int], float] = {}
        """(zone, track id) -> stream time its feet were last seen inside."""
        self.detector = detector
        self._pixel_pool = pixel_pool
        self.pixels: Pixels | None = None
        """The camera's fire and smoke detectors, here or in a worker process (None until a rule wants
        one)."""
        self.pixel_labels: set[str] = set()
        """Area labels (fire, smoke) that rules here take from the pixel detectors."""
        self.object_labels: set[str] = set()
        self.models = list(models)
        self.model_labels: list[tuple[ModelDetector, set[str]]] = []
        """The extra models this camera's rules need, each with the labels they take from it."""
        self.sinks = sinks
        self.live = live
        self.keyframes: KeyframeRing | None = live.add_camera(camera) if live is not None else None
        self.detect_enabled = True
        self.alerts_enabled = True
        """The `alerts` switch: off, events are still logged and published but raise no alert."""
        self.on_counts: CountsHook | None = None
        self.counts: dict[str, int] = {}
        self.times = StageTimes()
        self.alert_latency = Histogram()
        self.frames = 0
        self.inferred = 0
        self.capped = 0
        """Frames the gate woke on that the object detector did not look at: over the look-rate cap
        (gate.event_max_looks_per_s) while the camera's events were open."""
        self._looks = LookCap.for_camera(cfg.gate.event_max_looks_per_s, camera)
        self._pixel_looks = LookCap.for_camera(cfg.gate.pixel_idle_looks_per_s, camera)
        self.pixel_idle = 0
        """Frames the gate woke for motion alone that the idle pixel detectors did not look at
        (gate.pixel_idle_looks_per_s)."""
        self.deferred = 0
        """Object looks given up while they waited for the shared detector, because the camera's next
        frame had arrived (the look went on with that frame instead: `nudge`)."""
        self._key: int | None = None
        self.last_frame: Frame | None = None
        self.last_look = 0.0
        """time.monotonic() of the last frame any detector ran on (0: none yet)."""
        self._lock = threading.RLock()
        self._look_requests: list[threading.Event] = []
        self._detections: tuple[Detection, ...] = ()
        self._objects_at = 0.0
        self._rules_changed()

    # -- runtime changes (control surface, any thread) ---------------------------------------------

    def set_rules(self, rules: list[Rule], detector: Detector | None = None) -> None:
        """Replace the camera's rules between two frames; events of a removed rule end now."""
        with self._lock:
            if detector is not None:
                self.detector = detector
            frame = self.last_frame
            index, pts = (frame.index, frame.pts) if frame is not None else (0, 0.0)
            ended = self.events.set_rules(rules, index, pts)
            self._rules_changed()
            if frame is not None:
                self._emit(ended, frame)

    def _rules_changed(self) -> None:
        """Work out which detectors the camera's rules need, and which labels it counts."""
        wanted = set(self.events.labels)
        if self.lines is not None:  # crossing rules' labels are followed over their line; lines' own too
            crossing: dict[str, set[str]] = {}
            for rule in self.events.rules:
                if rule.cfg.line is not None:
                    crossing.setdefault(rule.cfg.line, set()).add(rule.label)
            self.lines.watch(crossing)
            wanted |= self.lines.labels
        self.object_labels = wanted - AREA_LABELS
        # Extra models: each runs for the labels a rule here may take from a model (source any / model).
        from_models = {r.label for r in self.events.rules if r.cfg.source != "pixel"}
        needed = ((m, from_models & set(m.labels)) for m in self.models)
        self.model_labels = [(m, labels) for m, labels in needed if labels]
        in_models = {label for m in self.models for label in m.labels}
        for rule in self.events.rules:
            if rule.cfg.source == "model" and rule.label not in in_models:
                raise ValueError(f"rule {rule.name!r} on {self.camera} takes {rule.label!r} from a model, "
                                 "but no extra model has that label")  # fmt: skip
        pixel = {r.label for r in self.events.rules if r.cfg.source != "model"}
        if self.object_labels - in_models and self.detector is None:
            raise ValueError(
                f"rules on {self.camera} need the object detector for {sorted(self.object_labels)}"
            )
        self.pixel_labels = pixel & AREA_LABELS
        self.gate.warm = "fire" in self.pixel_labels
        fire = self.cfg.fire if self.cfg.fire.enabled and "fire" in self.pixel_labels else None
        # Smoke also runs for a fire rule alone: where smoke rises, the fire detector looks for small
        # flames at its base (early evidence of a fire too far or too hidden to show much flame).
        smoke = self.cfg.smoke if self.cfg.smoke.enabled and self.pixel_labels else None
        if self.pixels is None and (fire is not None or smoke is not None):
            pool = self._pixel_pool
            self.pixels = pool.open(self.camera) if pool is not None else LocalPixels()
        if self.pixels is not None:
            self.pixels.configure(fire, smoke)
        self.counts = {label: self.counts.get(label, 0) for label in sorted(wanted)}
        if self.zones:
            held = self.occupancy
            self.occupancy = {
                zone: {label: held.get(zone, {}).get(label, 0) for label in sorted(self.object_labels)}
                for zone in self.zones
            }

    def set_detect(self, on: bool) -> None:
        """The `detect` switch. Off ends the camera's open events now (nobody is looking any more);
        on starts from a clean gate and fire history (the scene may have changed meanwhile)."""
        with self._lock:
            if on == self.detect_enabled:
                return
            self.detect_enabled = on
            frame = self.last_frame
            if not on and frame is not None:
                self._emit(self.events.finish(frame.index, frame.pts), frame)
            self.tracker = Tracker(self.cfg.events.end_after_s)
            self._inside.clear()
            if self.lines is not None:
                self.lines.forget_tracks()
            self.gate = SilenceGate(self.cfg.gate, warm=self.gate.warm)
            if self.pixels is not None:
                self.pixels.reset()

    def set_still(self, still: bool) -> None:
        """A still source (an image, a folder of pictures): one sighting is enough for an event,
        since every frame is a separate picture and there is no second look at the same moment."""
        with self._lock:
            self.events.min_hits = 1 if still else self.cfg.events.min_hits

    def request_look(self) -> threading.Event:
        """Wake the detectors on the next frame; the event is set once that frame was looked at."""
        done = threading.Event()
        with self._lock:
            self._look_requests.append(done)
        return done

    # -- the frame path (camera thread) ----------------------------------------------------------

    def process(self, frame: Frame, *, requested: bool = False) -> list[Transition]:
        with self._lock:
            return self._process(frame, requested)

    def _process(self, frame: Frame, requested: bool) -> list[Transition]:
        self._key = threading.get_ident()  # whose looks wait in the shared models' lines (nudge)
        self.frames += 1
        previous, self.last_frame = self.last_frame, frame
        if frame.decode_ms:
            self.times.add("decode", frame.decode_ms)
        if self.keyframes is not None:
            self.keyframes.offer(frame.image, frame.pts, frame.index)
        if self.lines is not None:
            self.lines.tick()  # midnight: the counts start again, seen or not
        if not self.detect_enabled:
            return []
        asked, self._look_requests = self._look_requests, []
        t0 = time.perf_counter()
        busy = self.events.active or self.tracker.active
        decision = self.gate.check(
            frame.image, frame.pts, event_active=busy, requested=requested or bool(asked)
        )
        t1 = time.perf_counter()
        self.times.add("gate", (t1 - t0) * 1000)
        woke = decision.wake
        # While the camera's events are open, the object detector (shared by every camera) looks at most
        # gate.event_max_looks_per_s; the pixel detectors still get every frame the gate wakes.
        objects = woke and (
            decision.reason not in CAPPED_REASONS or not self.events.settled or self._looks.due(frame.pts)
        )
        if objects:
            self._looks.took(frame.pts)
        elif woke:
            self.capped += 1
        watching = self._pixel_watching(frame.pts)
        if not woke and not watching:
            self.times.add("skip", (t1 - t0) * 1000)
            self._done(frame)
            return []
        # A frame the gate skipped still goes to a fire detector that is watching a flicker build up;
        # one the gate woke for motion alone may not go to idle pixel detectors (gate.pixel_idle_looks_per_s).
        pixels = watching or self._pixels_due(frame.pts, decision)
        if pixels:
            self._pixel_looks.took(frame.pts)
        elif self.pixels is not None and self.pixels.active:
            self.pixel_idle += 1
        if objects or pixels:
            self.inferred += 1
            self.last_look = time.monotonic()
        # New warm light woke the gate: the frame before it, which the gate let go, is where the
        # fire detector's first comparison starts (what appeared is change in place, edge.reflex.fire).
        before = previous if decision.warm and _just_before(previous, frame) else None
        detections, looked = self._detect(
            frame, objects=objects, pixels=pixels, asked=bool(asked), before=before
        )
        t2 = time.perf_counter()
        height, width = frame.image.shape[:2]
        seen = self.tracker.update(detections, frame.pts)
        crossings = self.lines.step(seen, frame.pts, width, height) if self.lines is not None else []
        transitions = self.events.step(seen, frame.index, frame.pts, width, height, crossings)
        if self.zones and looked:
            self._occupy(seen, frame.pts, width, height)
        self._count(frame, looked)
        self.times.add("rules", (time.perf_counter() - t2) * 1000)
        self._emit(transitions, frame)
        self._done(frame)
        for done in asked:
            done.set()
        return transitions

    def _detect(
        self, frame: Frame, *, objects: bool, pixels: bool = True, asked: bool, before: Frame | None = None
    ) -> tuple[list[Detection], bool]:
        """Objects of every label (the live view shows them all), and fire; returns what the tracker
        follows (watched object labels and fire), and whether the object detector's look counts (False
        when it was deferred for a newer frame). A camera whose rules watch no objects runs the object
        detector only when someone asks for a look. `objects`: the object detector and the extra
        models look (the gate woke, within the look-rate cap); `pixels`: the pixel detectors run (the
        gate woke, within their idle rate, or they watch), while the shared model runs. `before`: the
        frame just before this one, which the gate let go, for the fire detector after new warm light
        woke the gate (`FireDetector.detect`)."""
        wants = objects and self.detector is not None and (self.object_labels or asked)
        look = _submit(self.detector, frame.image, None) if wants else None
        # Extra models (config extra_models): on woken frames, for the labels rules here take from them.
        model_looks = (
            [(m, labels, _submit(m, frame.image, labels)) for m, labels in self.model_labels]
            if objects
            else []
        )
        pixel: list[Detection] = []
        if pixels and self.pixels is not None and self.pixels.active:
            earlier = (before.image, before.pts) if before is not None else None
            seen = self.pixels.look(frame.image, frame.pts, frame.damaged, earlier)
            if seen.smoke_ms is not None:
                self.times.add("smoke", seen.smoke_ms)
                if "smoke" in self.pixel_labels:
                    pixel.extend(seen.smoke)
            if seen.fire_ms is not None:
                self.times.add("fire", seen.fire_ms)
                pixel.extend(seen.fire)
        detections: list[Detection] = []
        looked = objects
        if wants:
            assert self.detector is not None
            try:
                result = look.result() if look is not None else self.detector.detect(frame.image, None)
            except Deferred:  # this camera's newer frame arrived while the look still waited in line
                self.deferred += 1
                looked = False
            else:
                self.times.add("preprocess", result.preprocess_ms)
                self.times.add("infer", result.infer_ms)
                self.times.add("post", result.post_ms)
                self.times.add("wait", result.wait_ms)
                self._detections = tuple(result.detections)
                self._objects_at = time.time()
                detections.extend(d for d in result.detections if d.label in self.object_labels)
        for model, labels, model_look in model_looks:
            try:
                result = model_look.result() if model_look is not None else model.detect(frame.image, labels)
            except Deferred:
                continue
            self.times.add("model", result.preprocess_ms + result.infer_ms + result.post_ms)
            detections.extend(result.detections)
        return detections + pixel, looked

    def nudge(self) -> None:
        """The camera's next frame arrived (called by its capture thread): a look of this camera still
        waiting in line for a shared model is given up for it (newest frame wins; see
        edge.reflex.worker). Never for a lossless scan, which must see every frame whole."""
        key = self._key
        if key is None:
            return
        for detector in (self.detector, *self.models):
            defer = getattr(detector, "defer", None)
            if defer is not None:
                defer(key)

    def _pixels_due(self, pts: float, decision: GateDecision) -> bool:
        """Do the pixel detectors look at this frame the gate woke? Always, unless it woke for motion
        alone (no new warm light) while neither detector watches or holds evidence: then at most
        gate.pixel_idle_looks_per_s (a person walking through wakes every frame, and an idle fire or
        smoke detector needs a look now and then to notice a candidate, not ten)."""
        if decision.reason != "motion" or decision.warm or not self._pixel_looks.interval:
            return True
        if self.pixels is not None and self.pixels.peak_evidence >= IDLE_EVIDENCE:
            return True
        return self._pixel_looks.due(pts)

    def _pixel_watching(self, pts: float) -> bool:
        """A pixel detector needs this frame although the gate skips it (a flicker or a plume builds)."""
        return self.pixels is not None and self.pixels.watching(pts)

    def _count(self, frame: Frame, objects: bool) -> None:
        """Objects of each label in view now (fire: 1 while burning), for retained counts and the
        live view. A track missed for up to COUNT_HOLD_S still counts, so one missed detection does not
        flap the count; a fire-only look says nothing about people, so their counts wait for an object
        look. Labels no rule tracks are counted from the last object look as it was."""
        if self.on_counts is None and self.live is None:  # nobody reads counts (edge scan): no work
            return
        pts = frame.pts
        tracked: Counter[str] = Counter(
            t.label for t in self.tracker.tracks.values() if pts - t.last_pts <= COUNT_HOLD_S
        )
        counts = dict(self.counts)
        for label in counts:
            if objects or label in AREA_LABELS:
                counts[label] = tracked[label]
        if counts != self.counts:
            self.counts = counts
            if self.on_counts is not None:
                self.on_counts(self.camera, dict(counts))
        if self.live is None:
            return
        everything = Counter(d.label for d in self._detections if d.label not in counts)
        everything.update(counts)
        height, width = frame.image.shape[:2]
        self.live.publish(
            CameraView(
                camera=self.camera,
                at=time.time(),
                frame=frame.index,
                pts=pts,
                width=width,
                height=height,
                detections=self._detections,
                objects_at=self._objects_at,
                tracks=tuple(
                    TrackView(t.id, t.label, t.box, t.score, t.first_pts, t.last_pts)
                    for t in self.tracker.tracks.values()
                ),
                counts=dict(everything),
                occupancy=self.occupancy,
                zones=self.zones,
                lines=self._line_views(),
            )
        )

    def _occupy(self, seen: Sequence[Track], pts: float, width: int, height: int) -> None:
        """Objects whose feet are inside each zone now, per watched label. A track counts in a zone
        until COUNT_HOLD_S after its feet were last seen inside, like the counts: neither one missed
        detection nor one box whose bottom edge jumps over the zone's edge flaps it. Only after an
        object look; `seen`: the tracks the tracker saw in it (only they are anywhere new)."""
        occupancy = {zone: dict.fromkeys(labels, 0) for zone, labels in self.occupancy.items()}
        tracks = self.tracker.tracks
        for t in seen:
            if t.label in self.object_labels:  # area labels (fire, smoke) stand nowhere
                x, y = feet(t.box, width, height)
                for zone, polygon in self.zones.items():
                    if point_in_polygon(x, y, polygon):
                        self._inside[(zone, t.id)] = pts
        for (zone, tid), at in list(self._inside.items()):
            track = tracks.get(tid)
            if track is None or pts - at > COUNT_HOLD_S or zone not in occupancy:
                del self._inside[(zone, tid)]
            elif track.label in occupancy[zone]:
                occupancy[zone][track.label] += 1
        if occupancy != self.occupancy:
            self.occupancy = occupancy
            if self.on_occupancy is not None:
                self.on_occupancy(self.camera, {zone: dict(n) for zone, n in occupancy.items()})

    def _line_views(self) -> tuple[LineView, ...]:
        """The lines with today's counts, for the live view (nothing without lines). Built again only
        when a count changed (`LineCounter.changes`), not on every published look."""
        if self.lines is None:
            return ()
        if self._lines_view[0] == self.lines.changes:
            return self._lines_view[1]
        counts: dict[str, dict[str, tuple[int, int]]] = {}
        for (line, label), n in self.lines.totals().items():
            counts.setdefault(line, {})[label] = n
        lines = self.lines.lines.items()
        views = tuple(LineView(name, tuple(c.points), counts.get(name, {})) for name, c in lines)
        self._lines_view = (self.lines.changes, views)
        return views

    def _line_counts(self, line: str, label: str, counts: dict[str, object]) -> None:
        if self.on_lines is not None:
            self.on_lines(self.camera, line, label, counts)

    @property
    def lines_watched(self) -> dict[str, list[str]]:
        """Line -> the labels it counts (Home Assistant's in/out sensors)."""
        return {name: list(line.labels) for name, line in self.lines.lines.items()} if self.lines else {}

    @property
    def zones_watched(self) -> dict[str, list[str]]:
        """Zone -> the labels its occupancy counts (Home Assistant's occupancy sensors)."""
        return {zone: list(labels) for zone, labels in self.occupancy.items()}

    def _done(self, frame: Frame) -> None:
        """Frame age when the red loop is done with it: grows if the loop falls behind its camera."""
        self.times.add("lag", (time.monotonic() - frame.arrived) * 1000)

    def close(self) -> None:
        """The camera is gone: its pixel detectors' place (here or in a worker) is given up."""
        with self._lock:
            if self.pixels is not None:
                self.pixels.close()
                self.pixels = None

    def finish(self, reason: str = "") -> list[Transition]:
        """End open events at the last frame seen (end of a file, shutdown)."""
        with self._lock:
            if self.last_frame is None:
                return []
            frame = self.last_frame
            transitions = self.events.finish(frame.index, frame.pts)
            if transitions and reason:
                log.info("camera %s: %s; ended %d open event(s)", self.camera, reason,
                         sum(1 for t in transitions if t.kind == "end"))  # fmt: skip
            self._emit(transitions, frame)
            return transitions

    def _emit(self, transitions: list[Transition], frame: Frame) -> None:
        for tr in transitions:
            if tr.kind == "alert" and not self.alerts_enabled:
                continue
            t = time.perf_counter()
            for sink in self.sinks:
                sink.handle(tr, frame)
            self.times.add("store", (time.perf_counter() - t) * 1000)
            if tr.kind == "alert" and tr.verdict is None:  # a phase change is no new alert
                self.alert_latency.add((time.monotonic() - frame.arrived) * 1000)

    def summary(self, wall_s: float) -> dict[str, object]:
        lat = self.alert_latency
        return {
            "frames": self.frames,
            "frames_inferred": self.inferred,
            "frames_capped": self.capped,
            "frames_pixel_idle": self.pixel_idle,
            "frames_deferred": self.deferred,
            "gate_skip_ratio": round(1 - self.inferred / self.frames, 4) if self.frames else 0.0,
            "fps": round(self.frames / wall_s, 2) if wall_s > 0 else 0.0,
            "stage_ms": self.times.summary(),
            "alert_latency_ms": {"p50": round(lat.percentile(50), 3), "p99": round(lat.percentile(99), 3)},
        }


def _just_before(previous: Frame | None, frame: Frame) -> bool:
    """`previous` is the sound frame right before `frame` in the same stream."""
    return (
        previous is not None
        and not previous.damaged
        and previous.index == frame.index - 1
        and frame.pts > previous.pts
        and previous.image.shape == frame.image.shape
    )

"""The red loop for one camera: gate -> reflex engine -> tracker -> rules -> event log.

`RedLoop.process` is called once per captured frame, from that camera's thread. Everything it needs
is per camera except the object detector, which is shared behind a lock (one inference session
serves every camera: two sessions on two cores would only fight for them).
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from typing import Protocol

import numpy as np

from edge.config.models import EdgeConfig
from edge.gate import SilenceGate
from edge.reflex.fire import FireDetector
from edge.rules import AREA_LABELS, EventMachine, Rule, Tracker, Transition
from edge.types import Detection, Frame

COUNT_HOLD_S = 1.0
"""Seconds a track may go unseen and still be counted in the retained per-label counts."""
SAMPLES_KEPT = 200_000
"""Timing samples kept per stage: a day of one camera's woken frames, a few MB."""


class Detector(Protocol):
    last_timing: dict[str, float]

    def detect(self, image: np.ndarray, labels: set[str] | None = None) -> list[Detection]: ...


class Sink(Protocol):
    """Where transitions go: the event log, stdout (edge scan), the bus's live state."""

    def handle(self, transition: Transition, frame: Frame) -> None: ...


CountsHook = Callable[[str, dict[str, int]], None]
"""(camera, {label: objects in view}) after a woken frame changed a count."""


def percentile(values: Iterable[float], q: float) -> float:
    data = list(values)
    return float(np.percentile(data, q)) if data else 0.0


class StageTimes:
    """Per-stage milliseconds, bounded, summarised as median and p99."""

    def __init__(self) -> None:
        self.samples: dict[str, deque[float]] = defaultdict(lambda: deque(maxlen=SAMPLES_KEPT))

    def add(self, stage: str, ms: float) -> None:
        self.samples[stage].append(ms)

    def summary(self) -> dict[str, dict[str, float]]:
        return {
            stage: {"p50": round(percentile(v, 50), 3), "p99": round(percentile(v, 99), 3)}
            for stage, v in self.samples.items()
            if v
        }


class RedLoop:
    def __init__(
        self,
        camera: str,
        cfg: EdgeConfig,
        rules: list[Rule],
        detector: Detector | None,
        sinks: list[Sink],
        engine_lock: threading.Lock | None = None,
    ) -> None:
        self.camera = camera
        self.cfg = cfg
        self.gate = SilenceGate(cfg.gate)
        self.tracker = Tracker(cfg.events.end_after_s)
        self.events = EventMachine(camera, rules, cfg.events)
        wanted = self.events.labels
        self.object_labels = wanted - AREA_LABELS
        if self.object_labels and detector is None:
            raise ValueError(f"rules on {camera} need the object detector for {sorted(self.object_labels)}")
        self.detector = detector if self.object_labels else None
        self.fire = FireDetector(cfg.fire) if cfg.fire.enabled and wanted & AREA_LABELS else None
        self.sinks = sinks
        self.engine_lock = engine_lock
        self.detect_enabled = True
        self.alerts_enabled = True
        """The `alerts` switch: off, events are still logged and published but raise no alert."""
        self.on_counts: CountsHook | None = None
        self.counts: dict[str, int] = dict.fromkeys(sorted(wanted), 0)
        self.times = StageTimes()
        self.alert_latency_ms: deque[float] = deque(maxlen=SAMPLES_KEPT)
        self.frames = 0
        self.inferred = 0
        self.last_frame: Frame | None = None

    def process(self, frame: Frame, *, requested: bool = False) -> list[Transition]:
        self.frames += 1
        self.last_frame = frame
        if frame.decode_ms:
            self.times.add("decode", frame.decode_ms)
        if not self.detect_enabled:
            return []
        t0 = time.perf_counter()
        busy = self.events.active or self.tracker.active
        decision = self.gate.check(frame.image, frame.pts, event_active=busy, requested=requested)
        t1 = time.perf_counter()
        self.times.add("gate", (t1 - t0) * 1000)
        objects = decision.wake
        if not objects and not (self.fire is not None and self.fire.watching(frame.pts)):
            self.times.add("skip", (t1 - t0) * 1000)
            self._done(frame)
            return []
        # A frame the gate skipped still goes to a fire detector that is watching a flicker build up.
        self.inferred += 1
        detections = self._detect(frame, objects=objects)
        t2 = time.perf_counter()
        height, width = frame.image.shape[:2]
        seen = self.tracker.update(detections, frame.pts)
        transitions = self.events.step(seen, frame.index, frame.pts, width, height)
        self._count(frame.pts, objects)
        self.times.add("rules", (time.perf_counter() - t2) * 1000)
        self._emit(transitions, frame)
        self._done(frame)
        return transitions

    def _count(self, pts: float, objects: bool) -> None:
        """Objects of each watched label in view now (fire: 1 while burning), for retained counts.

        A track missed for up to COUNT_HOLD_S still counts, so one missed detection does not flap the
        count; a fire-only look says nothing about people, so their counts wait for an object look.
        """
        if self.on_counts is None:  # nobody publishes counts (edge scan): no work on the frame path
            return
        counts = dict(self.counts)
        for label in counts:
            if objects or label in AREA_LABELS:
                counts[label] = sum(
                    1
                    for t in self.tracker.tracks.values()
                    if t.label == label and pts - t.last_pts <= COUNT_HOLD_S
                )
        if counts != self.counts:
            self.counts = counts
            self.on_counts(self.camera, dict(counts))

    def _done(self, frame: Frame) -> None:
        """Frame age when the red loop is done with it: grows if the loop falls behind its camera."""
        self.times.add("lag", (time.monotonic() - frame.arrived) * 1000)

    def finish(self) -> list[Transition]:
        """End open events at the last frame seen (end of a file, shutdown)."""
        if self.last_frame is None:
            return []
        frame = self.last_frame
        transitions = self.events.finish(frame.index, frame.pts)
        self._emit(transitions, frame)
        return transitions

    def _detect(self, frame: Frame, *, objects: bool) -> list[Detection]:
        detections: list[Detection] = []
        if objects and self.detector is not None:
            with self.engine_lock or nullcontext():
                detections.extend(self.detector.detect(frame.image, self.object_labels))
                timing = dict(self.detector.last_timing)
            for stage in ("preprocess_ms", "infer_ms", "post_ms"):
                if stage in timing:
                    self.times.add(stage.removesuffix("_ms"), timing[stage])
        if self.fire is not None:
            t = time.perf_counter()
            detections.extend(self.fire.detect(frame.image, frame.pts))
            self.times.add("fire", (time.perf_counter() - t) * 1000)
        return detections

    def _emit(self, transitions: list[Transition], frame: Frame) -> None:
        for tr in transitions:
            if tr.kind == "alert" and not self.alerts_enabled:
                continue
            t = time.perf_counter()
            for sink in self.sinks:
                sink.handle(tr, frame)
            self.times.add("store", (time.perf_counter() - t) * 1000)
            if tr.kind == "alert":
                self.alert_latency_ms.append((time.monotonic() - frame.arrived) * 1000)

    def summary(self, wall_s: float) -> dict[str, object]:
        lat = list(self.alert_latency_ms)
        return {
            "frames": self.frames,
            "frames_inferred": self.inferred,
            "gate_skip_ratio": round(1 - self.inferred / self.frames, 4) if self.frames else 0.0,
            "fps": round(self.frames / wall_s, 2) if wall_s > 0 else 0.0,
            "stage_ms": self.times.summary(),
            "alert_latency_ms": {"p50": round(percentile(lat, 50), 3), "p99": round(percentile(lat, 99), 3)},
        }

"""Live state you can read: what each camera sees now, and its recent keyframes.

The red loop publishes one immutable `CameraView` per look (a woken frame), replacing the last one
in a single assignment, so readers on any thread (quick questions, the admin page, the blue-loop
client) get a consistent picture without taking a lock the red loop waits on. The view holds the
latest detections of *every* label the detector saw (not only watched ones), so "count the
bottles" works on a camera whose rules watch people.

Keyframes are a bounded ring of downscaled frames, about two a second for the last 30 s, kept as
raw pixels (a resize costs a fraction of a millisecond) and JPEG-encoded only when someone asks.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field

import cv2
import numpy as np

from edge.types import Box, Detection

KEYFRAME_EVERY_S = 0.5
KEYFRAME_KEEP_S = 30.0
KEYFRAME_MAX_WIDTH = 640
"""60 frames of 640x360 BGR are ~41 MB per camera; the ring never holds more."""


@dataclass(frozen=True, slots=True)
class TrackView:
    id: int
    label: str
    box: Box
    score: float
    first_pts: float
    last_pts: float


@dataclass(frozen=True, slots=True)
class LineView:
    """One tripwire as the live view draws it: relative points, and today's in/out per label."""

    name: str
    points: tuple[tuple[float, float], ...]
    counts: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Label -> (in, out) since midnight."""


@dataclass(frozen=True, slots=True)
class CameraView:
    """One camera's latest look."""

    camera: str
    at: float
    """Wall-clock epoch seconds of the look (0: none yet)."""
    frame: int = -1
    pts: float = 0.0
    width: int = 0
    height: int = 0
    detections: tuple[Detection, ...] = ()
    """Every detection of the last object look, all labels."""
    objects_at: float = 0.0
    """When the object detector last ran (a fire-only look leaves `detections` as they were)."""
    tracks: tuple[TrackView, ...] = ()
    counts: dict[str, int] = field(default_factory=dict)
    """Label -> objects in view now: tracked labels held for a second, others from the last look."""
    occupancy: dict[str, dict[str, int]] = field(default_factory=dict)
    """Zone -> label -> tracked objects whose feet are inside now (the labels the camera's rules watch),
    held like `counts`."""
    zones: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    """The camera's zones (relative polygons), drawn on the live view."""
    lines: tuple[LineView, ...] = ()
    """The camera's lines with today's counts, drawn on the live view."""

    def count(self, label: str) -> int:
        return self.counts.get(label, 0)


@dataclass(frozen=True, slots=True)
class Keyframe:
    at: float
    """Wall-clock epoch seconds."""
    pts: float
    frame: int
    image: np.ndarray
    """BGR, at most KEYFRAME_MAX_WIDTH wide."""

    def jpeg(self, quality: int = 85) -> bytes:
        ok, data = cv2.imencode(".jpg", self.image, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise ValueError("JPEG encoding failed")
        return data.tobytes()


class KeyframeRing:
    """Recent frames of one camera; `offer()` is called on every frame and is nearly free between
    keyframes (one clock comparison)."""

    def __init__(
        self,
        every_s: float = KEYFRAME_EVERY_S,
        keep_s: float = KEYFRAME_KEEP_S,
        max_width: int = KEYFRAME_MAX_WIDTH,
    ) -> None:
        self.every_s = every_s
        self.max_width = max_width
        self._ring: deque[Keyframe] = deque(maxlen=max(1, int(keep_s / every_s) + 1))
        self._last = float("-inf")
        self._lock = threading.Lock()

    def offer(self, image: np.ndarray, pts: float, frame: int) -> None:
        if pts - self._last < self.every_s and pts >= self._last:
            return
        self._last = pts
        h, w = image.shape[:2]
        if w > self.max_width:
            small = cv2.resize(
                image, (self.max_width, max(1, h * self.max_width // w)), interpolation=cv2.INTER_AREA
            )
        else:
            small = image.copy()
        with self._lock:
            self._ring.append(Keyframe(time.time(), pts, frame, small))

    def last(self, seconds: float) -> list[Keyframe]:
        """Keyframes of the last `seconds` (wall clock), oldest first."""
        since = time.time() - seconds
        with self._lock:
            return [k for k in self._ring if k.at >= since]

    def __len__(self) -> int:
        with self._lock:
            return len(self._ring)


class LiveView:
    """Every camera's latest `CameraView` and keyframe ring; written by red loops, read by anyone."""

    def __init__(self) -> None:
        self._views: dict[str, CameraView] = {}
        self.keyframes: dict[str, KeyframeRing] = {}

    def add_camera(self, camera: str) -> KeyframeRing:
        self._views.setdefault(camera, CameraView(camera, 0.0))
        return self.keyframes.setdefault(camera, KeyframeRing())

    def publish(self, view: CameraView) -> None:
        self._views[view.camera] = view  # one assignment: readers see the old view or the new one

    def get(self, camera: str) -> CameraView | None:
        return self._views.get(camera)

    def cameras(self) -> list[str]:
        return sorted(self._views)

"""The silence gate: decides per frame whether the reflex engine runs.

Most camera frames show nothing new. The gate compares a small grey thumbnail with a running
background and lets a frame through only when it carries a change, while an event is active, on a
periodic refresh, or on an explicit request. A skipped frame costs a resize, a blur and a count:
well under a millisecond at 720p.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import cv2
import numpy as np

from edge.config.models import GateConfig

WARM_R_MIN = 140
WARM_RISE = 25
WARM_CHANGE = 10
WARM_MIN_PIXELS = 2
"""Warm light wakes the engine (see `SilenceGate._warm_light`) when at least ``WARM_MIN_PIXELS`` pixels
of the double-size thumbnail have red >= ``WARM_R_MIN``, ``WARM_RISE`` above the running background
and ``WARM_CHANGE`` off the previous frame."""

WAKE_REASONS = ("first", "motion", "warm", "event", "refresh", "request", "off")


@dataclass(slots=True)
class GateDecision:
    wake: bool
    reason: str
    """Why the engine runs ('first', 'motion', 'event', 'refresh', 'request', 'off') or 'still'."""
    changed: float
    """Fraction of thumbnail pixels that differ from the background."""


@dataclass(slots=True)
class GateStats:
    frames: int = 0
    skipped: int = 0
    woke: Counter[str] = field(default_factory=Counter)

    @property
    def skip_ratio(self) -> float:
        return self.skipped / self.frames if self.frames else 0.0


class SilenceGate:
    """One per camera: it keeps that camera's background."""

    def __init__(self, cfg: GateConfig) -> None:
        self.cfg = cfg
        self.stats = GateStats()
        self._background: np.ndarray | None = None
        self._previous: np.ndarray | None = None
        self._size: tuple[int, int] | None = None
        self._source_shape: tuple[int, ...] = ()
        self._last_wake_pts = float("-inf")
        self._half: np.ndarray | None = None
        self._red_previous: np.ndarray | None = None
        self._red_background: np.ndarray | None = None

    def thumbnail(self, image: np.ndarray) -> np.ndarray:
        """Grey, downscaled and blurred: sensor noise averages out before it is compared."""
        if self._size is None or image.shape != self._source_shape:
            self._source_shape = image.shape
            h, w = image.shape[:2]
            width = min(self.cfg.width, w)
            self._size = (width, max(1, round(h * width / w)))
        width, height = self._size
        # A cheap linear step to twice the size, then an area step: close to INTER_AREA's noise
        # averaging at a tenth of its cost on 720p.
        half = cv2.resize(image, (width * 2, height * 2), interpolation=cv2.INTER_LINEAR)
        self._half = half
        small = cv2.resize(half, (width, height), interpolation=cv2.INTER_AREA)
        grey = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY) if small.ndim == 3 else small
        return cv2.GaussianBlur(grey, (3, 3), 0)

    def check(
        self, image: np.ndarray, pts: float, *, event_active: bool = False, requested: bool = False
    ) -> GateDecision:
        self.stats.frames += 1
        grey = self.thumbnail(image)
        previous = self._previous
        self._previous = grey
        if self._background is None or previous is None or self._background.shape != grey.shape:
            self._background = grey.astype(np.float32)
            return self._wake("first", 1.0, pts)
        background = self._background
        changed = self._changed_fraction(grey, background, previous)
        cv2.accumulateWeighted(grey, background, self.cfg.background_alpha)
        warm = self._warm_light()
        if not self.cfg.enabled:
            return self._wake("off", changed, pts)
        if requested:
            return self._wake("request", changed, pts)
        if changed >= self.cfg.area_threshold:
            return self._wake("motion", changed, pts)
        if warm >= WARM_MIN_PIXELS:
            return self._wake("warm", changed, pts)
        since = pts - self._last_wake_pts
        if event_active and since >= self.cfg.event_refresh_s:
            return self._wake("event", changed, pts)
        if since >= self.cfg.refresh_s:
            return self._wake("refresh", changed, pts)
        self.stats.skipped += 1
        return GateDecision(False, "still", changed)

    def _changed_fraction(self, grey: np.ndarray, background: np.ndarray, previous: np.ndarray) -> float:
        """Pixels that differ from the background *and* from the previous frame.

        The background alone keeps a "ghost" of someone who just left for as long as it takes to
        fade; the previous frame alone misses nothing that moves but sees sensor noise. A pixel must
        differ from both to count. Each comparison first removes the global brightness shift, so a
        cloud or a dimmer is not motion.
        """
        thr = self.cfg.pixel_threshold
        current = grey.astype(np.float32)
        level = float(current.mean())
        vs_background = cv2.absdiff(current, background + (level - float(background.mean())))
        before = previous.astype(np.float32)
        vs_previous = cv2.absdiff(current, before + (level - float(before.mean())))
        moving = cv2.min(vs_background, vs_previous)
        return cv2.countNonZero(cv2.threshold(moving, thr, 255, cv2.THRESH_BINARY)[1]) / moving.size

    def _warm_light(self) -> int:
        """Pixels of the double-size thumbnail where warm light is new and changing.

        A small flame far away covers a few thumbnail pixels, too few to pass as motion, and its light
        is spread by the optics; the fire detector must see it now, not at the next refresh. So red
        light that is warm (red >= green >= blue), well above its own running background and changing
        since the previous frame wakes the engine. A lamp or a sunset is old light; the floor a person
        just uncovered is new but soon stops changing from frame to frame.
        """
        half = self._half
        if half is None or half.ndim != 3:
            return 0
        blue, green, red = cv2.split(half)
        previous, background = self._red_previous, self._red_background
        self._red_previous = red
        if previous is None or background is None or background.shape != red.shape:
            self._red_background = red.astype(np.float32)
            return 0
        rising = (red.astype(np.float32) - background) >= WARM_RISE
        cv2.accumulateWeighted(red, background, self.cfg.background_alpha)
        changing = cv2.absdiff(red, previous) >= WARM_CHANGE
        warm = (red >= WARM_R_MIN) & (red >= green) & (green >= blue)
        return int(np.count_nonzero(rising & changing & warm))

    def _wake(self, reason: str, changed: float, pts: float) -> GateDecision:
        self.stats.woke[reason] += 1
        self._last_wake_pts = pts
        return GateDecision(True, reason, changed)

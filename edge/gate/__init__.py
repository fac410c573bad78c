"""The silence gate: decides per frame whether the reflex engine runs.

Most camera frames show nothing new. The gate compares a small grey thumbnail with a running
background and lets a frame through only when it carries a change, while an event is active, on a
periodic refresh, or on an explicit request. A skipped frame costs a resize, a blur and a count:
well under a millisecond at 720p.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from edge.config.models import GateConfig

WARM_R_MIN = 140
WARM_RISE = 25
WARM_CHANGE = 10
WARM_MIN_PIXELS = 2
"""Warm light (see `WarmLight`) wakes the engine when at least ``WARM_MIN_PIXELS`` pixels of the
double-size thumbnail have red >= ``WARM_R_MIN``, ``WARM_RISE`` above the running background and
``WARM_CHANGE`` off the previous frame."""
RELIGHT_SHARE = 0.04
RELIGHT_MIN_LEVEL = 16
RELIGHT_SAMPLES = 4096
"""Brightness that rose or fell by more than this share over most of the picture between two frames
(the median of the per-pixel ratio, darker pixels counted as ``RELIGHT_MIN_LEVEL``, over about
``RELIGHT_SAMPLES`` pixels unless the caller picks a step) is the lighting changing: a flash,
headlights, a light switched on or auto-exposure (see `relit`). Flames change their own few pixels:
the fire clips stay within 0.02."""

WAKE_REASONS = ("first", "motion", "warm", "event", "refresh", "request", "off")


@dataclass(slots=True)
class GateDecision:
    wake: bool
    reason: str
    """Why the engine runs ('first', 'motion', 'event', 'refresh', 'request', 'off') or 'still'."""
    changed: float
    """Fraction of thumbnail pixels that differ from the background."""
    warm: bool = False
    """New, changing warm light was seen (see `WarmLight`), whatever the reason given: a frame that
    woke for motion may show it too."""


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

    def __init__(self, cfg: GateConfig, *, warm: bool = False) -> None:
        """`warm`: also wake on new, changing warm light (`WarmLight`), for a camera that watches fire;
        it costs a colour split per frame, so a camera that watches no fire does not pay it."""
        self.cfg = cfg
        self.stats = GateStats()
        self._background: np.ndarray | None = None
        self._previous: np.ndarray | None = None
        self._size: tuple[int, int] | None = None
        self._source_shape: tuple[int, ...] = ()
        self._last_wake_pts = float("-inf")
        self._half: np.ndarray | None = None
        self.warm = warm
        self._warm = WarmLight(cfg.background_alpha)

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
        half = self._half if self.warm else None
        warm = int(np.count_nonzero(self._warm.update(half))) if half is not None and half.ndim == 3 else 0
        if not self.cfg.enabled:
            return self._wake("off", changed, pts)
        if requested:
            return self._wake("request", changed, pts)
        lit = warm >= WARM_MIN_PIXELS
        if changed >= self.cfg.area_threshold:
            return self._wake("motion", changed, pts, lit)
        if lit:
            return self._wake("warm", changed, pts, lit)
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

    def _wake(self, reason: str, changed: float, pts: float, warm: bool = False) -> GateDecision:
        self.stats.woke[reason] += 1
        self._last_wake_pts = pts
        return GateDecision(True, reason, changed, warm)


class WarmLight:
    """Where warm light is new and changing, frame by frame: the silence gate's warm channel (on its
    double-size thumbnail) and the fire detector's zoom opener (on its fine image) ask the same.

    A small flame far away covers a few thumbnail pixels, too few to pass as motion, and its light is
    spread by the optics; it must be looked at now, not at the next refresh. Red light that is warm
    (red >= green >= blue, red >= ``WARM_R_MIN``), ``WARM_RISE`` above its own running background and
    ``WARM_CHANGE`` off the previous frame counts. A lamp or a sunset is old light; the floor a person
    just uncovered is new but soon stops changing from frame to frame.
    """

    def __init__(self, alpha: float, *, always_judge_light: bool = False) -> None:
        """`alpha`: the running background's weight per call. `always_judge_light`: set `relit` on
        every call (otherwise only on calls that see new, changing warm light, which is all the gate
        needs and keeps its skipped frames cheap)."""
        self._alpha = alpha
        self._always_judge_light = always_judge_light
        self._previous: np.ndarray | None = None
        self._background: np.ndarray | None = None
        self.relit = False
        """The last call saw the lighting of the whole picture change (see ``RELIGHT_SHARE``)."""

    def update(self, image: np.ndarray, channels: Sequence[np.ndarray] | None = None) -> np.ndarray:
        """Bool map of new, changing warm light in a BGR image (all False on the first call or a new
        size). `channels`: ``cv2.split(image)`` when the caller has it already."""
        blue, green, red = channels if channels is not None else cv2.split(image)
        previous, background = self._previous, self._background
        self._previous = red
        self.relit = False
        if previous is None or background is None or background.shape != red.shape:
            self._background = red.astype(np.float32)
            return np.zeros(red.shape, bool)
        # Warm and changing are 8-bit tests; the float test of the rise over the background is made
        # only where they hold somewhere (most frames of a scene without warm light have none).
        warm = (red >= WARM_R_MIN) & (red >= green) & (green >= blue)
        warm &= cv2.absdiff(red, previous) >= WARM_CHANGE
        if self._always_judge_light or warm.any():
            self.relit = relit(red, previous)
        if self.relit:
            warm[:] = False
        if not warm.any():
            cv2.accumulateWeighted(red, background, self._alpha)
            return warm
        rising = cv2.subtract(red, background, dtype=cv2.CV_32F) >= WARM_RISE
        cv2.accumulateWeighted(red, background, self._alpha)
        return rising & warm


def relit(now: np.ndarray, before: np.ndarray, step: int | None = None) -> bool:
    """The lighting of the whole picture changed between `before` and `now` (one channel or grey, the
    same size; see ``RELIGHT_SHARE``): then no change in it can be judged as a change of the scene.
    The gate's warm channel, the fire detector's zoom opener and the pixel detectors' flicker and
    smoke judgements all ask this. `step`: the pixel step of the sample."""
    if step is None:
        step = max(1, int(math.sqrt(now.size / RELIGHT_SAMPLES)))
    ratio = now[::step, ::step].astype(np.float32) / np.maximum(before[::step, ::step], RELIGHT_MIN_LEVEL)
    # Most calls see steady light: fewer than half of the ratios reach either bound, so the median lies
    # clearly between them, and counting says so at a fraction of the cost of finding it.
    margin = 1e-4
    n = ratio.size
    if (
        2 * np.count_nonzero(ratio >= 1.0 + RELIGHT_SHARE - margin) < n
        and 2 * np.count_nonzero(ratio <= 1.0 - RELIGHT_SHARE + margin) < n
    ):
        return False
    return abs(float(np.median(ratio)) - 1.0) > RELIGHT_SHARE

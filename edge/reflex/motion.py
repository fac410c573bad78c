"""Motion compensation shared by the pixel detectors (fire, smoke): what of a change motion explains,
and when a change is a decoder smear rather than anything in the scene.

Both detectors ask the same question of two grey frames: which brightness change is *not* explained
by things moving? They answer it the same way, so the code exists once: dense optical flow (DIS,
ultrafast preset: ~0.3 ms at 256x144) warps the reference onto the current frame, and a change counts
only where the pixel lies outside the 3x3 range of both the warped and the unwarped reference.
"""

from __future__ import annotations

from typing import NamedTuple

import cv2
import numpy as np

_K3 = np.ones((3, 3), np.uint8)

SMEAR_SHARE = 0.25
"""A call whose unexplained change covers this share of the frame is a smear or a cut, not flicker
nor smoke: the fire clips stay below 0.12 (drone pan, flames over a fifth of the frame, every 3rd frame)."""
SMEAR_ROW_SHARE = 0.6
SMEAR_ROWS = 2
"""A lost H.264 slice smears whole rows of macroblocks: this many analysis rows with unexplained change
over this share of their width are a smear. Flames leave at most half a row (a fire front seen from a
drone, every 3rd frame), a passing person or car far less."""


class Watch(NamedTuple):
    """A pixel detector's watch as its last look left it: while it holds, the detector needs every
    frame, even those the silence gate skips. Plain data, so a red loop can ask it of a detector that
    runs in another process (edge.reflex.pixels) without a round trip."""

    since: float | None
    """Stream time the watch began (None: no watch)."""
    span_s: float
    """It holds this long after `since` whatever the evidence..."""
    peak: float
    """...and after that while the highest evidence anywhere (0-1) is at least `keep`."""
    keep: float

    def holds(self, pts: float) -> bool:
        if self.since is None:
            return False
        return pts - self.since <= self.span_s or self.peak >= self.keep


class Shrinks:
    """A frame's area-averaged shrinks by whole factors, each made once: the fire and smoke detectors
    both shrink a 768-wide frame by 3, and that resize was the largest single cost of a look after
    the optical flow (0.46 ms of its 8 ms at 768x432 on a 2-core EPYC)."""

    def __init__(self, image: np.ndarray) -> None:
        self.image = image
        self._made: dict[int, np.ndarray] = {}

    def by(self, factor: int) -> np.ndarray:
        """`image` shrunk by `factor` (``cv2.resize`` with ``fx = fy = 1 / factor``, ``INTER_AREA``:
        OpenCV's exact block average when the factor divides both sides)."""
        if factor == 1:
            return self.image
        if factor not in self._made:
            f = 1.0 / factor
            self._made[factor] = cv2.resize(self.image, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
        return self._made[factor]


class Warper:
    """One per analysis (it keeps the flow engine and the pixel grid of the last size it saw)."""

    def __init__(self) -> None:
        self._flow = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)
        self._grid: tuple[np.ndarray, np.ndarray] | None = None

    def warp(self, grey: np.ndarray, ref: np.ndarray) -> np.ndarray:
        """`ref` moved by the optical flow from `grey` to it: how `grey` would look if only motion
        had happened since `ref`."""
        return self._remap(ref, self._flow.calc(grey, ref, None))

    def warp_moving(self, grey: np.ndarray, ref: np.ndarray, min_px: float) -> tuple[np.ndarray, np.ndarray]:
        """`warp`, and where the flow moves the picture by at least `min_px` pixels (bool). When the
        picture moves as a whole (most of it by at least half of that: a pan, a drifting drone),
        everything counts as moving: the flow engine's estimate of a pan varies around its true
        value, and where it falls short it is still the pan. (Counting, not a median: this runs on
        every comparison of the fire detector's thumbnail, zoom windows and looks.)"""
        flow = self._flow.calc(grey, ref, None)
        length = cv2.magnitude(flow[..., 0], flow[..., 1])
        sample = length[::2, ::2]
        if 2 * np.count_nonzero(sample >= min_px / 2) > sample.size:
            moving = np.ones(length.shape, bool)
        else:
            moving = length >= min_px
        return self._remap(ref, flow), moving

    def _remap(self, ref: np.ndarray, flow: np.ndarray) -> np.ndarray:
        h, w = ref.shape
        if self._grid is None or self._grid[0].shape != (h, w):
            self._grid = (
                np.tile(np.arange(w, dtype=np.float32), (h, 1)),
                np.tile(np.arange(h, dtype=np.float32)[:, None], (1, w)),
            )
        return cv2.remap(
            ref,
            self._grid[0] + flow[..., 0],
            self._grid[1] + flow[..., 1],
            cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE,
        )


def outside(grey: np.ndarray, ref: np.ndarray, threshold: float) -> np.ndarray:
    """True where ``grey`` lies more than ``threshold`` outside the range of ``ref``'s 3x3 neighbourhood."""
    above = cv2.subtract(grey, cv2.dilate(ref, _K3)) > threshold
    below = cv2.subtract(cv2.erode(ref, _K3), grey) > threshold
    return above | below


def smeared(unexplained: np.ndarray) -> bool:
    """True when unexplained change (0/1 map) is too widespread, or too row-shaped, to be flame flicker
    or smoke: a decoder smear (a lost H.264 slice) or a cut."""
    if unexplained.mean() >= SMEAR_SHARE:
        return True
    rows = unexplained.mean(axis=1, dtype=np.float32)
    return int(np.count_nonzero(rows >= SMEAR_ROW_SHARE)) >= SMEAR_ROWS


def median_u8(values: np.ndarray) -> float:
    """``np.median`` of uint8 values (the noise level of a difference image), from their histogram:
    the same value at a tenth of the time at analysis sizes."""
    counts = np.bincount(values.ravel(), minlength=256).cumsum()
    n = int(counts[-1])
    low = int(np.searchsorted(counts, (n - 1) // 2 + 1))
    high = int(np.searchsorted(counts, n // 2 + 1))
    return (low + high) / 2


def unchanged(grey: np.ndarray, ref: np.ndarray, level: float) -> bool:
    """True when no pixel of `grey` differs from `ref` by more than `level`: then no change beyond a
    threshold of at least `level` exists, whatever the flow, and the flow need not be computed."""
    return float(cv2.absdiff(grey, ref).max()) <= level

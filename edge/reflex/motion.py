"""Motion compensation shared by the pixel detectors (fire, smoke): what of a change motion explains.

Both detectors ask the same question of two grey frames: which brightness change is *not* explained
by things moving? They answer it the same way, so the code exists once: dense optical flow (DIS,
ultrafast preset: ~0.3 ms at 256x144) warps the reference onto the current frame, and a change counts
only where the pixel lies outside the 3x3 range of both the warped and the unwarped reference.
"""

from __future__ import annotations

import cv2
import numpy as np

_K3 = np.ones((3, 3), np.uint8)


class Warper:
    """One per analysis (it keeps the flow engine and the pixel grid of the last size it saw)."""

    def __init__(self) -> None:
        self._flow = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)
        self._grid: tuple[np.ndarray, np.ndarray] | None = None

    def warp(self, grey: np.ndarray, ref: np.ndarray) -> np.ndarray:
        """`ref` moved by the optical flow from `grey` to it: how `grey` would look if only motion
        had happened since `ref`."""
        flow = self._flow.calc(grey, ref, None)
        h, w = grey.shape
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

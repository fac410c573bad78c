"""YOLOX anchor-free head, exported with decode_in_inference=False: rows are raw box regressions.

Row layout: [tx, ty, tw, th, obj, p_0 .. p_{C-1}] for every grid cell of every stride, strides in
order, each grid row-major (y outer). The box is ((tx+gx)*s, (ty+gy)*s, exp(tw)*s, exp(th)*s) as centre
and size; a cell's score is obj * max_c p_c and its class the argmax.
"""

from __future__ import annotations

import numpy as np


class YoloxDecoder:
    """Vectorised decode that only does box maths for cells whose objectness could pass the threshold."""

    def __init__(
        self, width: int, height: int, strides: list[int], num_classes: int, scores_activated: bool
    ) -> None:
        grids, cell_strides = [], []
        for s in strides:
            gw, gh = width // s, height // s
            gx, gy = np.meshgrid(np.arange(gw), np.arange(gh))  # gy outer, gx inner
            grids.append(np.stack((gx, gy), -1).reshape(-1, 2))
            cell_strides.append(np.full((gw * gh, 1), s))
        self._grid = np.concatenate(grids).astype(np.float32)
        self._stride = np.concatenate(cell_strides).astype(np.float32)
        self.rows = len(self._grid)
        self.num_classes = num_classes
        self._activated = scores_activated

    def shape_problem(self, shape: tuple[int, ...]) -> str | None:
        # Only the size is checked, as before: exporters differ in how they batch the rows.
        width = 5 + self.num_classes
        return None if int(np.prod(shape)) == self.rows * width else f"{self.rows} rows of {width}"

    def __call__(
        self, output: np.ndarray, threshold: float, class_mask: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        p = output.reshape(self.rows, 5 + self.num_classes)
        if not self._activated:
            p = p.copy()
            p[:, 4:] = 1.0 / (1.0 + np.exp(-p[:, 4:]))
        # Class probabilities are <= 1, so obj alone rules out almost every cell before any argmax.
        idx = np.flatnonzero(p[:, 4] > threshold)
        cand = p[idx]
        class_ids = cand[:, 5:].argmax(axis=1)
        scores = cand[:, 4] * cand[np.arange(len(cand)), 5 + class_ids]
        keep = scores > threshold
        if class_mask is not None:
            keep &= class_mask[class_ids]
        idx, cand, class_ids, scores = idx[keep], cand[keep], class_ids[keep], scores[keep]
        stride = self._stride[idx]
        centre = (cand[:, :2] + self._grid[idx]) * stride
        half = np.exp(cand[:, 2:4]) * stride / 2
        boxes = np.concatenate((centre - half, centre + half), axis=1)
        return boxes, scores, class_ids

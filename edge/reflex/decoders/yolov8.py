"""Ultralytics YOLOv8 / YOLO11 detection head, as `yolo export format=onnx` leaves it.

Output (1, 4 + C, N): for each of N anchor points (every cell of every stride's grid, strides in
order), rows cx, cy, w, h in model-input pixels (the graph has already applied the grid and DFL), then
the C class scores. There is no objectness: a box's score is its best class score and its class the
argmax. Some exporters and converters leave it transposed, (1, N, 4 + C); both are read, told apart
by which axis holds 4 + C.
"""

from __future__ import annotations

import math

import numpy as np


class Yolov8Decoder:
    """Vectorised decode: the best class score of every anchor first, box maths only for those that pass."""

    def __init__(
        self, width: int, height: int, strides: list[int], num_classes: int, scores_activated: bool
    ) -> None:
        self.rows = sum((width // s) * (height // s) for s in strides)
        self.num_classes = num_classes
        self._activated = scores_activated
        self._empty = (np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))

    def _channels_first(self, shape: tuple[int, ...]) -> bool | None:
        """True for (1, 4 + C, N), False for (1, N, 4 + C), None for anything else."""
        dims = tuple(shape)
        if len(dims) == 3 and dims[0] == 1:
            dims = dims[1:]
        width = 4 + self.num_classes
        if dims == (width, self.rows):
            return True
        if dims == (self.rows, width):
            return False
        return None

    def shape_problem(self, shape: tuple[int, ...]) -> str | None:
        if self._channels_first(shape) is not None:
            return None
        width, rows = 4 + self.num_classes, self.rows
        return f"(1, {width}, {rows}) or (1, {rows}, {width}): {rows} boxes of 4 + {self.num_classes} classes"

    def __call__(
        self, output: np.ndarray, threshold: float, class_mask: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        p = output.reshape(output.shape[-2:])
        if not self._channels_first(output.shape):
            p = p.T  # a view: (4 + C, N) either way
        cls = p[4:]
        wanted = None
        if class_mask is not None:  # only the wanted classes compete: the best wanted one names the box
            wanted = np.flatnonzero(class_mask)
            if not len(wanted):
                return self._empty
            cls = cls[wanted]
        # The sigmoid is monotonic: logits are compared with logit(threshold), and only winners activated.
        limit = threshold if self._activated else math.log(threshold / (1.0 - threshold))
        best = cls.max(axis=0)
        idx = np.flatnonzero(best > limit)
        if not len(idx):
            return self._empty
        class_ids = cls[:, idx].argmax(axis=0)
        scores = best[idx].astype(np.float32)
        if not self._activated:
            scores = 1.0 / (1.0 + np.exp(-scores))
        if wanted is not None:
            class_ids = wanted[class_ids]
        xywh = p[:4, idx].T.astype(np.float32)
        half = xywh[:, 2:4] / 2
        boxes = np.concatenate((xywh[:, :2] - half, xywh[:, :2] + half), axis=1)
        return boxes, scores, class_ids

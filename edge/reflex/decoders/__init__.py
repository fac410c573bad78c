"""Output decoders: turn a model's raw output tensor into candidate boxes, one family per module."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from edge.reflex.manifest import ModelManifest


class Decoder(Protocol):
    rows: int
    """Candidate boxes the raw output holds (grid cells, anchor points); a mismatch means the manifest is
    not this model's."""

    def shape_problem(self, shape: tuple[int, ...]) -> str | None:
        """None when a raw output of this shape is one this decoder reads; else what it expects instead
        (words for the one-line error, e.g. "3549 rows of 85")."""
        ...

    def __call__(
        self, output: np.ndarray, threshold: float, class_mask: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return boxes (K, 4) x1,y1,x2,y2 in model-input pixels, scores (K,), class ids (K,)."""
        ...


def make_decoder(manifest: ModelManifest) -> Decoder:
    """The decoder for the manifest's family, with its grids precomputed."""
    # DecoderSpec.family is a Literal, so validation already refused any family not handled here.
    spec = manifest.decoder
    if spec.family == "yolov8":
        from edge.reflex.decoders.yolov8 import Yolov8Decoder

        return Yolov8Decoder(
            width=manifest.input.width,
            height=manifest.input.height,
            strides=spec.strides,
            num_classes=len(manifest.labels),
            scores_activated=spec.scores == "sigmoid_applied",
        )
    from edge.reflex.decoders.yolox import YoloxDecoder

    return YoloxDecoder(
        width=manifest.input.width,
        height=manifest.input.height,
        strides=spec.strides,
        num_classes=len(manifest.labels),
        scores_activated=spec.scores == "sigmoid_applied",
    )

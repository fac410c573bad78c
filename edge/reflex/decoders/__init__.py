"""Output decoders: turn a model's raw output tensor into candidate boxes, one family per module."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from edge.reflex.manifest import ModelManifest


class Decoder(Protocol):
    rows: int
    """Rows the raw output must have (grid cells); a mismatch means the manifest is not this model's."""

    def __call__(
        self, output: np.ndarray, threshold: float, class_mask: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return boxes (K, 4) x1,y1,x2,y2 in model-input pixels, scores (K,), class ids (K,)."""
        ...


def make_decoder(manifest: ModelManifest) -> Decoder:
    """The decoder for the manifest's family, with its grids precomputed."""
    # DecoderSpec.family is a Literal, so validation already refused anything but "yolox".
    from edge.reflex.decoders.yolox import YoloxDecoder

    return YoloxDecoder(
        width=manifest.input.width,
        height=manifest.input.height,
        strides=manifest.decoder.strides,
        num_classes=len(manifest.labels),
        scores_activated=manifest.decoder.scores == "sigmoid_applied",
    )

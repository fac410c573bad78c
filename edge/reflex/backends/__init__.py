"""Inference backends behind one small interface, so the detector does not care what runs the graph.

Backend modules are imported only when chosen: importing onnxruntime or TensorRT costs start-up time
and memory that a process using only the fire detector (or the CLI's --help) should not pay.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Protocol

import numpy as np


class BackendError(Exception):
    """A backend that cannot be opened or run; str() is a one-line message for users."""


class Backend(Protocol):
    name: str
    """"onnxruntime" or "tensorrt"."""
    providers: list[str]
    """What actually runs the graph (execution providers in use), for health output."""

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        """NCHW float32 in, the model's raw output out (its layout is the decoder family's: yolox
        (1, N, 5 + classes), yolov8 (1, 4 + classes, N))."""
        ...


def engine_path(model_path: Path) -> Path:
    """Where the native TensorRT engine for a model lives: beside it, as <stem>.engine."""
    return model_path.with_suffix(".engine")


def _tensorrt_importable() -> bool:
    try:
        import pycuda.driver  # noqa: F401
        import tensorrt  # noqa: F401
    except ImportError:
        return False
    return True


def open_backend(
    kind: Literal["auto", "onnxruntime", "tensorrt"], model_path: Path, threads: int = 0
) -> Backend:
    """Open the configured backend; "auto" takes native TensorRT only when an engine was built for it."""
    if kind == "auto":
        use_trt = engine_path(model_path).is_file() and _tensorrt_importable()
        kind = "tensorrt" if use_trt else "onnxruntime"
    if kind == "tensorrt":
        from edge.reflex.backends.tensorrt import TensorRTBackend

        return TensorRTBackend(engine_path(model_path))
    from edge.reflex.backends.onnxruntime import OnnxRuntimeBackend

    return OnnxRuntimeBackend(model_path, threads=threads, cache_dir=model_path.parent)

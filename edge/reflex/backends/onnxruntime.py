"""ONNX Runtime backend: TensorRT or CUDA execution providers where present, CPU everywhere else."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from edge.reflex.backends import BackendError


def _providers(cache_dir: Path) -> list[str | tuple[str, dict[str, Any]]]:
    """Fastest first, only those this onnxruntime build has, so one wheel list works on every device."""
    available = set(ort.get_available_providers())
    chosen: list[str | tuple[str, dict[str, Any]]] = []
    if "TensorrtExecutionProvider" in available:
        # Building a TensorRT engine takes minutes on a Jetson; the cache makes that a one-time cost.
        chosen.append(
            (
                "TensorrtExecutionProvider",
                {
                    "trt_engine_cache_enable": True,
                    "trt_engine_cache_path": str(cache_dir),
                    "trt_fp16_enable": True,
                },
            )
        )
    if "CUDAExecutionProvider" in available:
        chosen.append("CUDAExecutionProvider")
    chosen.append("CPUExecutionProvider")
    return chosen


class OnnxRuntimeBackend:
    """One InferenceSession; ONNX Runtime's run() is thread-safe, so cameras may share it."""

    name = "onnxruntime"

    def __init__(self, model_path: Path, threads: int = 0, cache_dir: Path | None = None) -> None:
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads > 0:
            opts.intra_op_num_threads = threads
        try:
            self._session = ort.InferenceSession(
                str(model_path), sess_options=opts, providers=_providers(cache_dir or model_path.parent)
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors (Fail, InvalidProtobuf, ...)
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise BackendError(f"{model_path}: onnxruntime cannot load the model: {first}") from None
        self.providers: list[str] = self._session.get_providers()
        self._input = self._session.get_inputs()[0].name
        self._output = self._session.get_outputs()[0].name

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        return self._session.run([self._output], {self._input: tensor})[0]

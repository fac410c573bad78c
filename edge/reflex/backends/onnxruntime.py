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


def planned_providers() -> list[str]:
    """The execution providers a session would use here, fastest first (without opening one)."""
    return [p if isinstance(p, str) else p[0] for p in _providers(Path("."))]


OPTIMIZATION = {
    "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
"""Graph optimisation levels by name (tools/compare_backends runs one model at two of them)."""


class OnnxRuntimeBackend:
    """One InferenceSession; ONNX Runtime's run() is thread-safe, so cameras may share it."""

    name = "onnxruntime"

    def __init__(
        self,
        model_path: Path,
        threads: int = 0,
        cache_dir: Path | None = None,
        *,
        optimization: str = "all",
        providers: list[str] | None = None,
        reason: str = "",
    ) -> None:
        """providers: these execution providers (by name, e.g. ["CPUExecutionProvider"]) instead of the
        fastest this build has."""
        self.reason = reason
        opts = ort.SessionOptions()
        if optimization not in OPTIMIZATION:
            raise BackendError(
                f"unknown graph optimisation level {optimization!r} (one of {', '.join(OPTIMIZATION)})"
            )
        opts.graph_optimization_level = OPTIMIZATION[optimization]
        if threads > 0:
            opts.intra_op_num_threads = threads
        chosen = providers if providers is not None else _providers(cache_dir or model_path.parent)
        try:
            self._session = ort.InferenceSession(str(model_path), sess_options=opts, providers=chosen)
        except Exception as exc:  # onnxruntime raises its own untyped errors (Fail, InvalidProtobuf, ...)
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise BackendError(f"{model_path}: onnxruntime cannot load the model: {first}") from None
        self.providers: list[str] = self._session.get_providers()
        self._input = self._session.get_inputs()[0].name
        self._output = self._session.get_outputs()[0].name

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        return self._session.run([self._output], {self._input: tensor})[0]

"""ONNX Runtime backend: TensorRT or CUDA execution providers where present, CPU everywhere else."""

from __future__ import annotations

import os
import threading
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


DYNAMIC_BATCH = 8
"""Most frames one inference takes from a model whose input batch dimension is dynamic."""
LEAN_THREADS = 1
"""Threads of a lean session: one core, no spinning (see OnnxRuntimeBackend)."""
MAX_LANES = 4
"""Most lean sessions (inferences at once while many cameras share the model)."""


def lean_lanes() -> int:
    """Lean sessions to keep: one per core (at most MAX_LANES), each a lane of the inference worker."""
    return max(1, min(MAX_LANES, os.cpu_count() or 1))


class OnnxRuntimeBackend:
    """One InferenceSession; ONNX Runtime's run() is thread-safe, so cameras may share it.

    On the CPU with `threads: 0` (the default) it also keeps lean sessions of the same model, one per
    core, for when many cameras share it (`infer_busy`, which the inference worker calls then, one lane
    per session). ONNX Runtime's default session runs an inference on every core and keeps its threads
    spinning between operators and after the run: the fastest one inference can be (YOLOX-Nano on 2
    cores: about 9 ms instead of 14), but at a few inferences a second it burns about three times the
    CPU of one thread that sleeps when it has nothing to do (about 40 ms of CPU per inference, against
    14), CPU that other cameras' decoding, gates and pixel detectors need, and under load its threads
    wait for each other (25-45 ms an inference with 8 cameras). One camera gets the fast session; many
    get the lean ones, several inferences at once, each on one core.
    """

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
        first = self._session.get_inputs()[0]
        self._input = first.name
        self._output = self._session.get_outputs()[0].name
        batch = first.shape[0] if first.shape else 1
        self.max_batch = batch if isinstance(batch, int) and batch > 0 else DYNAMIC_BATCH
        """Most frames one inference may take: the model's fixed batch size (1 for most exports), or
        DYNAMIC_BATCH when its batch dimension is dynamic."""
        self._model_path = model_path
        self._level = opts.graph_optimization_level
        lean = threads == 0 and self.providers == ["CPUExecutionProvider"]
        self.lanes = lean_lanes() if lean else 1
        """Inferences the worker may run at once while many cameras share the model (one per lean
        session; each is opened when its lane first runs, so a detector one camera uses pays nothing)."""
        self._lean: list[ort.InferenceSession | None] = [None] * self.lanes if lean else []
        self._lean_locks = [threading.Lock() for _ in self._lean]

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        return self._session.run([self._output], {self._input: tensor})[0]

    def infer_busy(self, tensor: np.ndarray, lane: int = 0) -> np.ndarray:
        """The same inference while many cameras share the model: lane `lane`'s lean session where
        there is one."""
        if not self._lean:
            return self.infer(tensor)
        lane %= len(self._lean)
        session = self._lean[lane]
        if session is None:
            with self._lean_locks[lane]:
                session = self._lean[lane]
                if session is None:
                    opts = ort.SessionOptions()
                    opts.graph_optimization_level = self._level
                    opts.intra_op_num_threads = LEAN_THREADS
                    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
                    session = ort.InferenceSession(str(self._model_path), sess_options=opts,
                                                   providers=self.providers)  # fmt: skip
                    self._lean[lane] = session
        return session.run([self._output], {self._input: tensor})[0]

"""Inference backends behind one small interface, so the detector does not care what runs the graph.

Backend modules are imported only when chosen: importing onnxruntime or TensorRT costs start-up time
and memory that a process using only the fire detector (or the CLI's --help) should not pay.

`auto` picks native TensorRT where it can run (tensorrt 10+ and pycuda import, and a CUDA device is
there), else ONNX Runtime (its CUDA execution provider where onnxruntime-gpu offers it, else the CPU),
and every backend carries the one-line reason it was chosen, for `edge doctor` and the startup log.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np

from edge.reflex.backends.cache import engine_key, gpu_identity

if TYPE_CHECKING:
    from edge.config.models import ModelConfig
    from edge.reflex.manifest import ModelManifest

log = logging.getLogger("edge.reflex")

BackendKind = Literal["auto", "onnxruntime", "tensorrt"]
TRT_MIN_MAJOR = 10
NOT_INSTALLED = "tensorrt not installed (pip install .[jetson] on the device)"


class BackendError(Exception):
    """A backend that cannot be opened or run; str() is a one-line message for users."""


class Backend(Protocol):
    name: str
    """"onnxruntime" or "tensorrt"."""
    providers: list[str]
    """What actually runs the graph (execution providers in use), for health output."""
    reason: str
    """Why this backend runs the model (one line): the configured choice, or what `auto` found."""

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        """NCHW float32 in, the model's raw output out (its layout is the decoder family's: yolox
        (1, N, 5 + classes), yolov8 (1, 4 + classes, N))."""
        ...


@dataclass(frozen=True)
class TensorRTProbe:
    """Whether native TensorRT can run here, and if not, why not (one line)."""

    available: bool
    reason: str
    version: str | None = None
    """tensorrt.__version__ when it imports."""
    gpu: str | None = None
    """gpu_identity() of CUDA device 0 when there is one."""


@functools.cache
def probe_tensorrt() -> TensorRTProbe:
    """Import tensorrt and pycuda and look for a CUDA device; cached (it is asked once per process)."""
    try:
        import tensorrt as trt
    except ImportError:
        return TensorRTProbe(False, NOT_INSTALLED)
    except Exception as exc:  # a wheel without its libnvinfer: OSError, or whatever its loader raises
        return TensorRTProbe(False, f"tensorrt cannot be imported: {_first_line(exc)}")
    version = str(getattr(trt, "__version__", "unknown"))
    try:
        major = int(version.split(".")[0])
    except ValueError:
        major = 0
    if major < TRT_MIN_MAJOR:
        return TensorRTProbe(
            False, f"tensorrt {version} is too old (TensorRT {TRT_MIN_MAJOR}+ needed: JetPack 6)", version
        )
    try:
        import pycuda.driver as cuda
    except ImportError:
        return TensorRTProbe(False, "pycuda not installed (pip install .[jetson] on the device)", version)
    except Exception as exc:
        return TensorRTProbe(False, f"pycuda cannot be imported: {_first_line(exc)}", version)
    try:
        cuda.init()
        count = cuda.Device.count()
        if count < 1:
            return TensorRTProbe(False, "no CUDA device", version)
        device = cuda.Device(0)
        gpu = gpu_identity(device.name(), device.compute_capability())
    except Exception as exc:  # pycuda.driver.Error (no driver, no device, no permission on /dev/nvidia*)
        return TensorRTProbe(False, f"no CUDA device ({_first_line(exc)})", version)
    return TensorRTProbe(True, f"tensorrt {version} and CUDA device {gpu} found", version, gpu)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@dataclass(frozen=True)
class BackendChoice:
    kind: Literal["onnxruntime", "tensorrt"]
    reason: str
    probe: TensorRTProbe | None = None
    """The TensorRT probe, when the choice asked for one."""


def choose_backend(kind: BackendKind) -> BackendChoice:
    """What `model.backend` resolves to here, and why; raises BackendError for a `tensorrt` that
    cannot run. Opens nothing (edge doctor asks this without loading a model)."""
    if kind == "onnxruntime":
        return BackendChoice("onnxruntime", "configured (model.backend: onnxruntime)")
    probe = probe_tensorrt()
    if kind == "tensorrt":
        if not probe.available:
            raise BackendError(f"model.backend is tensorrt, but {probe.reason}")
        return BackendChoice("tensorrt", f"configured (model.backend: tensorrt); {probe.reason}", probe)
    if probe.available:
        return BackendChoice("tensorrt", probe.reason, probe)
    return BackendChoice("onnxruntime", probe.reason, probe)


@dataclass(frozen=True)
class TensorRTSettings:
    """How the TensorRT engine is built (from ModelConfig: precision, dla_core, calibration_frames,
    engine_cache)."""

    precision: Literal["fp16", "int8", "fp32"] = "fp16"
    dla_core: int | None = None
    calibration_frames: Path | None = None
    cache_dir: Path | None = None
    """None: beside the model file."""
    workspace_mb: int = 1024
    """Builder scratch memory limit: a Jetson's GPU memory is its RAM, shared with everything else."""

    @classmethod
    def from_config(cls, cfg: ModelConfig | None) -> TensorRTSettings:
        if cfg is None:
            return cls()
        return cls(
            precision=cfg.precision,
            dla_core=cfg.dla_core,
            calibration_frames=Path(cfg.calibration_frames) if cfg.calibration_frames else None,
            cache_dir=Path(cfg.engine_cache) if cfg.engine_cache else None,
        )

    def cache_for(self, model_path: Path) -> Path:
        return self.cache_dir or model_path.parent


def expected_engine_key(
    probe: TensorRTProbe, onnx_sha256: str, settings: TensorRTSettings, calibration: str | None = None
) -> str | None:
    """The key the engine for this model would have here (None where TensorRT cannot run)."""
    if not (probe.available and probe.version and probe.gpu):
        return None
    return engine_key(
        onnx_sha256, probe.version, probe.gpu, settings.precision, settings.dla_core, calibration=calibration
    )


def open_backend(
    kind: BackendKind,
    model_path: Path,
    threads: int = 0,
    *,
    model_cfg: ModelConfig | None = None,
    manifest: ModelManifest | None = None,
) -> Backend:
    """Open the configured backend. `auto` takes native TensorRT where it can run, building the engine
    on first use (minutes on a Jetson, then cached); if that fails it falls back to ONNX Runtime and
    says why. An explicit `tensorrt` that cannot run is a BackendError.

    model_cfg gives the TensorRT settings (precision, DLA core, calibration frames, engine cache);
    manifest the ONNX sha256 (already verified) and the pre-processing INT8 calibration needs.
    """
    choice = choose_backend(kind)
    if choice.kind == "tensorrt":
        from edge.reflex.backends.tensorrt import TensorRTBackend

        try:
            return TensorRTBackend(
                model_path,
                settings=TensorRTSettings.from_config(model_cfg),
                manifest=manifest,
                onnx_sha256=manifest.sha256 if manifest is not None else None,
                reason=choice.reason,
            )
        except Exception as exc:  # BackendError, or whatever TensorRT or the CUDA driver raised
            why = str(exc) if isinstance(exc, BackendError) else f"{type(exc).__name__}: {_first_line(exc)}"
            if kind == "tensorrt":
                raise BackendError(f"TensorRT could not run {model_path.name}: {why}") from exc
            log.warning("TensorRT could not run %s (%s); falling back to ONNX Runtime", model_path.name, why)
            choice = BackendChoice("onnxruntime", f"tensorrt failed: {why}", choice.probe)
    from edge.reflex.backends.onnxruntime import OnnxRuntimeBackend

    cache_dir = TensorRTSettings.from_config(model_cfg).cache_for(model_path)  # its TensorRT EP's cache
    backend = OnnxRuntimeBackend(model_path, threads=threads, cache_dir=cache_dir)
    backend.reason = choice.reason
    return backend

"""Native TensorRT backend (TensorRT 10 Python API + pycuda): builds its engine on the device itself.

From the manifest's ONNX it builds an engine (FP16 by default; INT8 calibrated on the installer's own
frames; optionally on a DLA core with GPU fallback), files it in the engine cache under the key of
what it was built from (edge.reflex.backends.cache: a stale engine is rebuilt, never loaded), and
runs it with pinned host buffers, one CUDA stream and execute_async_v3 on tensor addresses. It returns
the raw output like the ONNX Runtime backend, so the decoder (and the Detections) are the same.

pycuda rather than cuda-python: it is what the `jetson` extra and the JetPack install script provide
(a virtualenv that sees the system tensorrt/pycuda), and its page-locked numpy arrays, allocations and
streams are exactly the three things this needs, each one call. cuda-python would do as well (its
cudart calls map one to one); only this module would change.

NOT RUN where it was written (no GPU there): tests/test_tensorrt.py runs it where tensorrt, pycuda
and a CUDA device are present, and tools/gpu_check.sh builds, times and compares it in one go.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edge.reflex.backends import BackendError, TensorRTSettings, probe_tensorrt
from edge.reflex.backends.cache import (
    calibration_digest,
    calibration_frames,
    engine_filename,
    engine_key,
    gpu_identity,
    load_or_build,
)

if TYPE_CHECKING:
    from edge.reflex.manifest import ModelManifest

log = logging.getLogger("edge.reflex")

CALIBRATION_MAX_FRAMES = 500
"""More frames than this add calibration time, not accuracy."""
CALIBRATION_MIN_FRAMES = 50


def _import() -> tuple[Any, Any]:
    probe = probe_tensorrt()
    if not probe.available:
        raise BackendError(f"TensorRT backend unavailable: {probe.reason}")
    import pycuda.driver as cuda
    import tensorrt as trt

    return trt, cuda


_LOGGER: Any = None


def _logger(trt: Any) -> Any:
    """One TensorRT logger for the process (TensorRT keeps the first it is given), warnings and errors."""
    global _LOGGER
    if _LOGGER is None:
        _LOGGER = trt.Logger(trt.Logger.WARNING)
    return _LOGGER


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def calibration_tensors(
    manifest: ModelManifest, folder: Path, limit: int = CALIBRATION_MAX_FRAMES
) -> Iterator[np.ndarray]:
    """The calibration frames through the model's own pre-processing (edge.reflex.engine.Preprocessor),
    one (1, 3, H, W) float32 tensor each; unreadable files are skipped with a warning."""
    import cv2

    from edge.reflex.engine import Preprocessor

    pre = Preprocessor(manifest)
    for path in calibration_frames(folder)[:limit]:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            log.warning("calibration: cannot read %s; skipped", path)
            continue
        tensor, _ = pre(image)
        yield tensor.copy()


def _calibrator(trt: Any, cuda: Any, batches: Iterator[np.ndarray], cache_file: Path) -> Any:
    """An IInt8EntropyCalibrator2 over `batches`, keeping its cache in cache_file (a second build with
    the same frames, TensorRT and ONNX skips calibration)."""

    class Calibrator(trt.IInt8EntropyCalibrator2):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self._batches = batches
            self._device: Any = None
            self.count = 0

        def get_batch_size(self) -> int:
            return 1

        def get_batch(self, names: list[str]) -> list[int] | None:
            try:
                batch = np.ascontiguousarray(next(self._batches), dtype=np.float32)
            except StopIteration:
                return None
            if self._device is None:
                self._device = cuda.mem_alloc(batch.nbytes)
            cuda.memcpy_htod(self._device, batch)
            self.count += 1
            return [int(self._device)] * len(names)

        def read_calibration_cache(self) -> bytes | None:
            return cache_file.read_bytes() if cache_file.is_file() else None

        def write_calibration_cache(self, cache: Any) -> None:
            tmp = cache_file.with_name(cache_file.name + ".part")
            tmp.write_bytes(bytes(cache))
            tmp.replace(cache_file)

    return Calibrator()


def build_plan(
    trt: Any,
    cuda: Any,
    onnx_path: Path,
    settings: TensorRTSettings,
    manifest: ModelManifest | None,
    calibration_cache: Path | None,
) -> bytes:
    """Parse the ONNX and build a serialized engine (a plan) as `settings` say. A CUDA context must
    be current (INT8 calibration allocates device memory)."""
    logger = _logger(trt)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch: the only kind in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):  # from the file: finds external weights beside it
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise BackendError(
            f"{onnx_path}: TensorRT cannot parse the ONNX: {'; '.join(errors) or 'unknown error'}"
        )
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings.workspace_mb << 20)

    profile = None
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        shape = tuple(tensor.shape)
        if any(d < 0 for d in shape):  # dynamic axes: fix them to the manifest's input size, batch 1
            if manifest is None:
                raise BackendError(
                    f"{onnx_path}: dynamic input {tensor.name} {shape} needs the model manifest"
                )
            fixed = (1, 3, manifest.input.height, manifest.input.width)
            if profile is None:
                profile = builder.create_optimization_profile()
            profile.set_shape(tensor.name, fixed, fixed, fixed)
    if profile is not None:
        config.add_optimization_profile(profile)

    calibrator = None
    if settings.precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)  # int8 too: layers without an int8 kernel run fp16, not fp32
    if settings.precision == "int8":
        if manifest is None or settings.calibration_frames is None or calibration_cache is None:
            raise BackendError("precision int8 needs calibration_frames and the model manifest")
        frames = calibration_frames(settings.calibration_frames)
        if not frames and not calibration_cache.is_file():
            raise BackendError(f"no JPEG/PNG frames in {settings.calibration_frames} to calibrate INT8 with")
        if 0 < len(frames) < CALIBRATION_MIN_FRAMES:
            log.warning(
                "INT8 calibration on only %d frames (%s); a few hundred from day and night are better",
                len(frames),
                settings.calibration_frames,
            )
        config.set_flag(trt.BuilderFlag.INT8)
        calibrator = _calibrator(
            trt, cuda, calibration_tensors(manifest, settings.calibration_frames), calibration_cache
        )
        config.int8_calibrator = calibrator
        if profile is not None:
            config.set_calibration_profile(profile)
    if settings.dla_core is not None:
        if builder.num_DLA_cores <= settings.dla_core:
            raise BackendError(
                f"dla_core {settings.dla_core}: this device has {builder.num_DLA_cores} DLA core(s)"
            )
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = settings.dla_core
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)  # layers the DLA cannot run go to the GPU

    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise BackendError(f"{onnx_path}: TensorRT could not build an engine (see its log above)")
    if calibrator is not None:
        log.info("INT8 calibrated on %d frames", calibrator.count)
    return bytes(plan)


class TensorRTBackend:
    """An engine from the cache (built there first if needed), run on its own CUDA stream.

    infer() may be called from any thread: it makes the device's primary context current around the
    work and holds a lock, because the pinned buffers and the execution context are reused.
    """

    name = "tensorrt"

    def __init__(
        self,
        model_path: Path,
        *,
        settings: TensorRTSettings | None = None,
        manifest: ModelManifest | None = None,
        onnx_sha256: str | None = None,
        reason: str = "",
        rebuild: bool = False,
    ) -> None:
        settings = settings or TensorRTSettings()
        trt, cuda = _import()
        self._trt, self._cuda = trt, cuda
        self.reason = reason
        self.settings = settings
        self._lock = threading.Lock()
        if not model_path.is_file():
            raise BackendError(f"model file not found: {model_path}")
        sha256 = onnx_sha256 or _file_sha256(model_path)

        cuda.init()
        device = cuda.Device(0)
        self.gpu = gpu_identity(device.name(), device.compute_capability())
        calibration = None
        if settings.precision == "int8" and settings.calibration_frames is not None:
            calibration = calibration_digest(settings.calibration_frames)
        self.key = engine_key(
            sha256, trt.__version__, self.gpu, settings.precision, settings.dla_core, calibration=calibration
        )
        cache_dir = settings.cache_for(model_path)
        self.engine_file = cache_dir / engine_filename(model_path.stem, self.key)
        calibration_cache = None
        if calibration is not None:
            calib_key = hashlib.sha256(f"{sha256}:{trt.__version__}:{calibration}".encode()).hexdigest()[:16]
            calibration_cache = cache_dir / f"{model_path.stem}.{calib_key}.calib"
        meta = {
            "model": model_path.name,
            "onnx_sha256": sha256,
            "tensorrt": trt.__version__,
            "gpu": self.gpu,
            "precision": settings.precision,
            "dla_core": settings.dla_core,
            "calibration": calibration,
        }

        self._ctx = device.retain_primary_context()
        self._ctx.push()
        try:

            def build() -> bytes:
                log.info(
                    "building the TensorRT engine for %s (%s%s) on %s: a one-time wait, minutes on a Jetson",
                    model_path.name,
                    settings.precision,
                    f", DLA {settings.dla_core}" if settings.dla_core is not None else "",
                    self.gpu,
                )
                return build_plan(trt, cuda, model_path, settings, manifest, calibration_cache)

            plan, self.built, self.build_s = load_or_build(
                self.engine_file, self.key, build, meta, force=rebuild
            )
            self._runtime = trt.Runtime(_logger(trt))
            if settings.dla_core is not None:
                self._runtime.DLA_core = settings.dla_core
            engine = self._runtime.deserialize_cuda_engine(plan)
            if engine is None and not self.built:
                log.warning("%s would not deserialize; rebuilding it", self.engine_file)
                plan, self.built, self.build_s = load_or_build(
                    self.engine_file, self.key, build, meta, force=True
                )
                engine = self._runtime.deserialize_cuda_engine(plan)
            if engine is None:
                raise BackendError(f"{self.engine_file}: TensorRT cannot load the engine it built")
            self._engine = engine
            self._context = engine.create_execution_context()
            self._stream = cuda.Stream()
            self._setup_tensors(manifest)
        except BaseException:
            self._ctx.pop()
            self._ctx.detach()
            raise
        self._ctx.pop()
        dla = f" DLA{settings.dla_core}+GPU" if settings.dla_core is not None else ""
        self.providers: list[str] = [f"TensorRT {trt.__version__} {settings.precision}{dla} on {self.gpu}"]

    def _setup_tensors(self, manifest: ModelManifest | None) -> None:
        """Pinned host and device buffers for every I/O tensor, their addresses given to the context."""
        trt, cuda, engine, context = self._trt, self._cuda, self._engine, self._context
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or not outputs:
            raise BackendError(
                f"{self.engine_file}: expected one input and an output, got {inputs} -> {outputs}"
            )
        for name in inputs:
            shape = tuple(engine.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                if manifest is None:
                    raise BackendError(f"dynamic input {name} {shape} needs the model manifest")
                shape = (1, 3, manifest.input.height, manifest.input.width)
                context.set_input_shape(name, shape)
        self._host: dict[str, np.ndarray] = {}
        self._device: dict[str, Any] = {}
        for name in names:
            shape = tuple(context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise BackendError(f"{self.engine_file}: output {name} has a data-dependent shape {shape}")
            dtype = trt.nptype(engine.get_tensor_dtype(name))
            self._host[name] = cuda.pagelocked_empty(shape, dtype)
            self._device[name] = cuda.mem_alloc(max(1, self._host[name].nbytes))
            context.set_tensor_address(name, int(self._device[name]))
        self._input, self._output = inputs[0], outputs[0]
        self.input_shape = tuple(self._host[self._input].shape)
        self.output_shape = tuple(self._host[self._output].shape)

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        cuda = self._cuda
        with self._lock:
            self._ctx.push()
            try:
                host_in, host_out = self._host[self._input], self._host[self._output]
                if tensor.shape != host_in.shape:
                    raise ValueError(f"input {tensor.shape} does not fit the engine's {host_in.shape}")
                np.copyto(host_in, tensor, casting="same_kind")
                cuda.memcpy_htod_async(self._device[self._input], host_in, self._stream)
                if not self._context.execute_async_v3(self._stream.handle):
                    raise BackendError(f"{self.engine_file}: TensorRT execution failed")
                cuda.memcpy_dtoh_async(host_out, self._device[self._output], self._stream)
                self._stream.synchronize()
                return host_out.astype(np.float32, copy=True)
            finally:
                self._ctx.pop()

    def close(self) -> None:
        """Free the device memory and release the context (also done when the process ends)."""
        with self._lock:
            if self._ctx is None:
                return
            self._ctx.push()
            try:
                self._device.clear()
                self._host.clear()
                del self._context, self._engine
            finally:
                self._ctx.pop()
                self._ctx.detach()
                self._ctx = None

"""Native TensorRT backend (TensorRT 10 API) for Jetson: runs an engine built on the device itself.

UNTESTED here: TensorRT and a GPU are not available where this was written. It is a deliberately short
skeleton (fixed shapes, one input, one output, device 0); a later issue completes and tests it on a Jetson.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edge.reflex.backends import BackendError


def _import() -> tuple[Any, Any]:
    try:
        import pycuda.driver as cuda
        import tensorrt as trt
    except ImportError:
        raise BackendError("TensorRT is not installed (pip install .[jetson] on the device)") from None
    return trt, cuda


class TensorRTBackend:
    """Deserialises an engine file and runs it with execute_async_v3 on its own CUDA stream."""

    name = "tensorrt"

    def __init__(self, engine_file: Path) -> None:
        if not engine_file.is_file():
            raise BackendError(
                f"TensorRT engine not found: {engine_file}; build it on the device, e.g. "
                f"trtexec --onnx={engine_file.with_suffix('.onnx')} --saveEngine={engine_file} --fp16"
            )
        trt, cuda = _import()
        self._cuda = cuda
        cuda.init()
        # An explicit context (not pycuda.autoinit) so infer() can be called from any worker thread.
        self._ctx = cuda.Device(0).make_context()
        try:
            runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
            self._engine = runtime.deserialize_cuda_engine(engine_file.read_bytes())
            if self._engine is None:
                raise BackendError(
                    f"{engine_file}: TensorRT cannot load this engine (built with another TensorRT "
                    "version or GPU?); rebuild it on this device"
                )
            self._context = self._engine.create_execution_context()
            self._stream = cuda.Stream()
            self._host: dict[str, np.ndarray] = {}
            self._device: dict[str, Any] = {}
            for i in range(self._engine.num_io_tensors):
                tname = self._engine.get_tensor_name(i)
                shape = tuple(self._engine.get_tensor_shape(tname))
                dtype = trt.nptype(self._engine.get_tensor_dtype(tname))
                self._host[tname] = cuda.pagelocked_empty(shape, dtype)
                self._device[tname] = cuda.mem_alloc(self._host[tname].nbytes)
                self._context.set_tensor_address(tname, int(self._device[tname]))
                if self._engine.get_tensor_mode(tname) == trt.TensorIOMode.INPUT:
                    self._input = tname
                else:
                    self._output = tname
        finally:
            self._ctx.pop()
        self.providers: list[str] = [f"TensorRT {trt.__version__}"]

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        cuda = self._cuda
        self._ctx.push()
        try:
            np.copyto(self._host[self._input], tensor)
            cuda.memcpy_htod_async(self._device[self._input], self._host[self._input], self._stream)
            self._context.execute_async_v3(self._stream.handle)
            cuda.memcpy_dtoh_async(self._host[self._output], self._device[self._output], self._stream)
            self._stream.synchronize()
            return self._host[self._output].copy()
        finally:
            self._ctx.pop()

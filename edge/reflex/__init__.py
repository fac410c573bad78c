"""Reflex engine: the per-frame detectors of the red loop.

Names are loaded on first use (PEP 562): tools/fetch_model must run on a bare python3 that has only
pydantic and pyyaml, and nothing should pay for OpenCV or onnxruntime before a detector is built.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edge.reflex.backends import Backend, BackendError
    from edge.reflex.engine import DetectResult, Letterbox, ObjectDetector, build_detector
    from edge.reflex.manifest import (
        ModelError,
        ModelManifest,
        fetch_model,
        load_manifest,
        resolve_model_path,
        verify_sha256,
    )

_EXPORTS = {
    "Backend": "edge.reflex.backends",
    "BackendError": "edge.reflex.backends",
    "DetectResult": "edge.reflex.engine",
    "Letterbox": "edge.reflex.engine",
    "ObjectDetector": "edge.reflex.engine",
    "build_detector": "edge.reflex.engine",
    "ModelError": "edge.reflex.manifest",
    "ModelManifest": "edge.reflex.manifest",
    "fetch_model": "edge.reflex.manifest",
    "load_manifest": "edge.reflex.manifest",
    "resolve_model_path": "edge.reflex.manifest",
    "verify_sha256": "edge.reflex.manifest",
}

__all__ = [
    "Backend",
    "BackendError",
    "DetectResult",
    "Letterbox",
    "ModelError",
    "ModelManifest",
    "ObjectDetector",
    "build_detector",
    "fetch_model",
    "load_manifest",
    "resolve_model_path",
    "verify_sha256",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)

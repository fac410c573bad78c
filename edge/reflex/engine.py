"""The object detector of the reflex engine: frame in, Detections in frame pixels out.

Everything that depends on the model (input size, pre-processing, decoding, labels) comes from its
manifest, and everything that can be computed once (grids, buffers, label masks) is computed once:
this runs on every frame the gate lets through, so its cost is alert latency.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Hashable
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from edge.config.models import ModelConfig
from edge.reflex.backends import Backend, open_backend
from edge.reflex.decoders import make_decoder
from edge.reflex.manifest import ModelError, ModelManifest, load_manifest, resolve_model_path, verify_sha256
from edge.reflex.worker import InferenceWorker, Pending
from edge.types import Detection

REPO_ROOT = Path(__file__).resolve().parents[2]
log = logging.getLogger("edge.reflex")


class DetectResult(NamedTuple):
    """What one detect() call saw, and what it cost (each stage apart, because each is tuned apart)."""

    detections: list[Detection]
    preprocess_ms: float
    infer_ms: float
    post_ms: float
    wait_ms: float = 0.0
    """Queued behind other cameras' inferences (the shared worker) before the model took this frame."""


class Letterbox(NamedTuple):
    """How a frame was placed in the model input: input = frame * scale + pad, per axis."""

    scale_x: float
    scale_y: float
    pad_x: float
    pad_y: float


class Preprocessor:
    """A frame into the model's input, as its manifest says: letterbox, channel order, scale, mean/std.

    The detector's own, and the one INT8 calibration of the TensorRT engine feeds its frames through,
    so the engine is calibrated on exactly what it will see. Reuses its buffers: not thread-safe.
    """

    def __init__(self, manifest: ModelManifest) -> None:
        self.manifest = manifest
        width, height = manifest.input.width, manifest.input.height
        pre = manifest.preprocess
        self._canvas = np.full((height, width, 3), pre.pad_value, np.uint8)
        self.tensor = np.empty((1, 3, height, width), np.float32)
        """The input buffer: (1, 3, height, width) float32, rewritten by every call."""
        self._geometry: tuple[int, int] | None = None
        self._letterbox = Letterbox(1.0, 1.0, 0.0, 0.0)
        self._resized = (width, height)
        self._mean = None if pre.mean is None else np.array(pre.mean, np.float32).reshape(3, 1, 1)
        self._std = None if pre.std is None else np.array(pre.std, np.float32).reshape(3, 1, 1)

    def _place(self, h: int, w: int) -> None:
        """Work out where a frame of this size goes in the input; redone only when the size changes."""
        width, height = self.manifest.input.width, self.manifest.input.height
        pre = self.manifest.preprocess
        if pre.letterbox == "stretch":
            self._resized = (width, height)
            self._letterbox = Letterbox(width / w, height / h, 0.0, 0.0)
        else:
            r = min(height / h, width / w)
            nw, nh = max(1, min(width, int(w * r))), max(1, min(height, int(h * r)))
            dx, dy = ((width - nw) // 2, (height - nh) // 2) if pre.letterbox == "centre" else (0, 0)
            self._resized = (nw, nh)
            self._letterbox = Letterbox(r, r, float(dx), float(dy))
            self._canvas.fill(pre.pad_value)
        self._geometry = (h, w)

    def __call__(self, image: np.ndarray) -> tuple[np.ndarray, Letterbox]:
        """BGR uint8 frame -> model input tensor, exactly as the manifest says, and where the frame went.

        The tensor is a reused buffer, valid until the next call.
        """
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected a BGR uint8 HxWx3 frame, got {image.dtype} {image.shape}")
        h, w = image.shape[:2]
        if self._geometry != (h, w):
            self._place(h, w)
        nw, nh = self._resized
        x0, y0 = int(self._letterbox.pad_x), int(self._letterbox.pad_y)
        # Resize straight into the canvas; the padding around it was filled by _place() and stays.
        dst = self._canvas[y0 : y0 + nh, x0 : x0 + nw]
        cv2.resize(image, (nw, nh), dst=dst, interpolation=cv2.INTER_LINEAR)
        pre = self.manifest.preprocess
        chw = self._canvas.transpose(2, 0, 1)
        np.copyto(self.tensor[0], chw[::-1] if pre.colour == "rgb" else chw)
        if pre.scale == "unit":
            self.tensor *= np.float32(1.0 / 255.0)
        if self._mean is not None:
            self.tensor -= self._mean
        if self._std is not None:
            self.tensor /= self._std
        return self.tensor, self._letterbox


class ObjectDetector:
    """One model, one backend, shared by every camera: each caller's thread pre-processes its frame
    into its own buffer and decodes its own result, and one inference worker (edge.reflex.worker) runs
    the model for all of them, fairly, batching where the model allows it."""

    def __init__(
        self,
        manifest: ModelManifest,
        model_path: Path,
        cfg: ModelConfig,
        backend: Backend | None = None,
        *,
        name: str = "objects",
    ) -> None:
        self.manifest = manifest
        self.model_path = model_path
        self.name = name
        """What its Detections carry as `detector`: "objects" for the main model, the manifest's name for
        an extra model (config `extra_models`), so rules can tell a model's fire from the pixel detector's."""
        self.labels: tuple[str, ...] = tuple(manifest.labels)
        """Class names the model knows; a label not in here (e.g. "fire") is never an object detection."""
        self.score_threshold = cfg.score_threshold
        self.nms_iou = cfg.nms_iou
        if backend is None:
            backend = open_backend(cfg.backend, model_path, cfg.threads, model_cfg=cfg, manifest=manifest)
            log.info(
                "model %s: %s on %s (%s)",
                manifest.name,
                backend.name,
                ", ".join(backend.providers),
                getattr(backend, "reason", "") or "given",
            )
        self.backend: Backend = backend
        self._decoder = make_decoder(manifest)
        self._label_ids = {name: i for i, name in enumerate(self.labels)}
        self._masks: dict[frozenset[str], np.ndarray] = {}
        self._local = threading.local()
        """Each calling thread's Preprocessor (it reuses its buffers; a camera's red loop is one thread)."""
        self._check_output()
        self.worker = InferenceWorker(self.backend, name=f"detector-{name}")

    def _check_output(self) -> None:
        """Run once on a blank input: warms the backend up and proves the manifest describes this model."""
        inp = self.manifest.input
        out = self.backend.infer(np.zeros((1, 3, inp.height, inp.width), np.float32))
        want = self._decoder.shape_problem(tuple(out.shape))  # the decoder knows its family's layout
        if want is not None:
            raise ModelError(
                f"{self.model_path}: model output {tuple(out.shape)} does not fit manifest "
                f"{self.manifest.name!r} (expects {want})"
            )

    def preprocess(self, image: np.ndarray) -> tuple[np.ndarray, Letterbox]:
        """BGR uint8 frame -> model input tensor, exactly as the manifest says, and where the frame went.

        The tensor is this thread's reused buffer, valid until its next call.
        """
        pre = getattr(self._local, "pre", None)
        if pre is None:
            pre = self._local.pre = Preprocessor(self.manifest)
        return pre(image)

    def _class_mask(self, labels: set[str] | None) -> np.ndarray | None:
        if labels is None:
            return None
        key = frozenset(labels)
        mask = self._masks.get(key)
        if mask is None:
            mask = np.zeros(len(self.labels), bool)
            mask[[self._label_ids[name] for name in key if name in self._label_ids]] = True
            self._masks[key] = mask
        return mask

    def detect(
        self, image: np.ndarray, labels: set[str] | None = None, *, key: Hashable | None = None
    ) -> DetectResult:
        """Objects in a BGR frame, best first, boxes in frame pixels clipped to the frame, with the
        time each stage took. Pre-processing and decoding run on the calling thread; the inference on
        the shared worker, which serves every camera in turn.

        `labels` keeps only those classes (None: all); names the model does not know, such as "fire",
        simply match nothing, so a camera's watch list can be passed as it is. `key`: whose request this
        is (default: the calling thread, one per camera); a newer request of the same key replaces one
        still waiting, which raises Superseded.
        """
        return self.submit(image, labels, key=key).result()

    def submit(
        self, image: np.ndarray, labels: set[str] | None = None, *, key: Hashable | None = None
    ) -> Look:
        """`detect` in two halves: pre-process and queue the frame now, `.result()` later. The caller's
        thread may do other work meanwhile (the red loop runs its pixel detectors while the model runs);
        this thread's input buffer stays the request's until then."""
        t0 = time.perf_counter()
        tensor, lb = self.preprocess(image)
        request = self.worker.submit(tensor, threading.get_ident() if key is None else key)
        return Look(self, image.shape[:2], labels, lb, request, (time.perf_counter() - t0) * 1e3)

    def defer(self, key: Hashable) -> bool:
        """`key`'s request still waiting in line is given up for its camera's newer frame (its caller
        gets Deferred, and its next request takes the place in line); see InferenceWorker.defer."""
        return self.worker.defer(key)

    def _decode(self, output: np.ndarray, shape: tuple[int, ...], labels: set[str] | None,
                lb: Letterbox) -> list[Detection]:  # fmt: skip
        boxes, scores, class_ids = self._decoder(output, self.score_threshold, self._class_mask(labels))
        keep = self._nms(boxes, scores, class_ids)
        h, w = shape[:2]
        frame_boxes = (boxes[keep] - (lb.pad_x, lb.pad_y, lb.pad_x, lb.pad_y)) / (
            lb.scale_x,
            lb.scale_y,
            lb.scale_x,
            lb.scale_y,
        )
        np.clip(frame_boxes, 0.0, (w, h, w, h), out=frame_boxes)
        return [
            Detection(label=self.labels[c], score=s, box=(x1, y1, x2, y2), detector=self.name)
            for (x1, y1, x2, y2), s, c in zip(
                frame_boxes.tolist(), scores[keep].tolist(), class_ids[keep].tolist(), strict=True
            )
        ]

    def _nms(self, boxes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray) -> np.ndarray:
        """Per-class NMS in one call: shifting each class by more than all boxes span keeps classes apart.

        Same result as NMSBoxesBatched, but NMSBoxes also exists in the older OpenCV builds of JetPack.
        """
        if len(scores) < 2:
            return np.arange(len(scores))
        span = float(boxes.max() - boxes.min()) + 1.0
        shifted = boxes + (class_ids * span)[:, None]
        xywh = np.concatenate((shifted[:, :2], shifted[:, 2:] - shifted[:, :2]), axis=1)
        return np.asarray(cv2.dnn.NMSBoxes(xywh, scores, 0.0, self.nms_iou), dtype=np.int64).reshape(-1)


class Look:
    """A frame queued for the shared model (ObjectDetector.submit); `result()` waits and decodes."""

    __slots__ = ("_detector", "_labels", "_lb", "_pre_ms", "_shape", "request")

    def __init__(self, detector: ObjectDetector, shape: tuple[int, ...], labels: set[str] | None,
                 lb: Letterbox, request: Pending, pre_ms: float) -> None:  # fmt: skip
        self._detector, self._shape, self._labels, self._lb = detector, shape, labels, lb
        self.request = request
        self._pre_ms = pre_ms

    def result(self) -> DetectResult:
        """What the model saw (raises Deferred, Superseded, or what the model raised)."""
        output = self.request.result()
        t0 = time.perf_counter()
        found = self._detector._decode(output, self._shape, self._labels, self._lb)
        post_ms = (time.perf_counter() - t0) * 1e3
        return DetectResult(found, self._pre_ms, self.request.infer_ms, post_ms, self.request.wait_ms)


def locate_model(cfg: ModelConfig, base_dir: Path) -> tuple[ModelManifest, Path]:
    """The manifest and model file a ModelConfig names (the file not checked yet); ModelError if the
    manifest is bad or the file is missing.

    A loaded config's paths are already absolute (edge.config resolves them against the config file's
    folder, taking a relative manifest that is not there from this checkout). A ModelConfig built in code
    may still hold relative ones: they are resolved against base_dir the same way. Without model.path the
    model is the manifest's file in cache/ beside the manifest (models/cache/ for the bundled one), where
    tools/fetch_model puts it.
    """
    from edge.config.models import resolve_manifest  # (hoist to the imports above when integrating)

    manifest_path = resolve_manifest(cfg.manifest, base_dir)
    manifest = load_manifest(manifest_path)
    if cfg.path:
        model_path = resolve_model_path(manifest, cfg.path, base_dir)
    else:
        model_path = manifest_path.parent / "cache" / manifest.file
    if not model_path.is_file():
        raise ModelError(f"model file not found: {model_path}; run tools/fetch_model or set model.path")
    return manifest, model_path


def build_detector(cfg: ModelConfig, base_dir: Path, *, extra: bool = False) -> ObjectDetector:
    """Load the manifest, find and verify the model file (locate_model), and open the configured backend.

    extra: an extra model (config `extra_models`): its detections are named after its manifest.
    Raises ModelError (or BackendError) with a one-line message.
    """
    manifest, model_path = locate_model(cfg, base_dir)
    verify_sha256(model_path, manifest.sha256)
    return ObjectDetector(manifest, model_path, cfg, name=manifest.name if extra else "objects")

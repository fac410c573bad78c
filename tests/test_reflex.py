"""The object detector: shipped manifest, model integrity, pre-processing, decoding and real results.

Real-model tests use ../shared/models (never copied into the repo; a copy goes to tmp_path only where a
test needs to serve or rename it) and reproduce the verified results table of its README.
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from edge.config.models import ModelConfig
from edge.reflex.backends import BackendError, open_backend
from edge.reflex.engine import ObjectDetector, build_detector
from edge.reflex.manifest import ModelError, ModelManifest, load_manifest, verify_sha256

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
MODELS = SHARED / "models"
MODEL = MODELS / "yolox_nano.onnx"
DATA = SHARED / "data"
MANIFEST = REPO / "models" / "yolox_nano.yaml"
FETCH = REPO / "tools" / "fetch_model"

needs_shared = pytest.mark.skipif(
    not MODEL.is_file(), reason=f"shared test model not found at {MODEL} (see DESIGN.md)"
)


class FakeBackend:
    """Returns a fixed output and keeps the inputs, so pre-processing and decoding are checked exactly."""

    name = "fake"

    def __init__(self, output: np.ndarray | None = None) -> None:
        self.providers = ["none"]
        self.output = np.zeros((1, 3549, 85), np.float32) if output is None else output
        self.inputs: list[np.ndarray] = []

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        self.inputs.append(tensor.copy())
        return self.output


@pytest.fixture(scope="module")
def manifest() -> ModelManifest:
    return load_manifest(MANIFEST)


@pytest.fixture(scope="module")
def detector() -> ObjectDetector:
    if not MODEL.is_file():
        pytest.skip(f"shared test model not found at {MODEL}")
    return build_detector(ModelConfig(path=str(MODEL)), REPO)


def _fake_detector(manifest: ModelManifest, output: np.ndarray | None = None, **cfg: float) -> ObjectDetector:
    return ObjectDetector(manifest, Path("unused.onnx"), ModelConfig(**cfg), backend=FakeBackend(output))


# --- manifest ------------------------------------------------------------------------------------


@needs_shared
def test_manifest_matches_shared_readme(manifest: ModelManifest) -> None:
    readme = (MODELS / "README.md").read_text()
    sha = re.search(r"`yolox_nano\.onnx` \| [\d,]+ \| `([0-9a-f]{64})`", readme)
    assert sha and manifest.sha256 == sha.group(1)
    assert "`images`: float32 `[1, 3, 416, 416]` (NCHW)" in readme
    assert "`output`: float32 `[1, 3549, 85]`" in readme
    assert manifest.labels == (MODELS / "coco_labels.txt").read_text().splitlines()
    assert manifest.file == "yolox_nano.onnx"
    assert "Kazuhito00/YOLOX-ONNX-TFLite-Sample/3d4f1119d0694200671c08069ecb847aa0d8495a" in manifest.url
    assert manifest.url.endswith("/model/yolox_nano.onnx")
    assert (manifest.input.width, manifest.input.height) == (416, 416)
    assert (manifest.input.layout, manifest.input.dtype) == ("NCHW", "float32")
    pre = manifest.preprocess
    assert (pre.colour, pre.scale, pre.letterbox, pre.pad_value) == ("bgr", "raw", "top_left", 114)
    assert pre.mean is None and pre.std is None
    assert manifest.decoder.family == "yolox"
    assert manifest.decoder.strides == [8, 16, 32]
    assert manifest.decoder.scores == "sigmoid_applied"
    assert len(manifest.labels) == 80 and manifest.labels[0] == "person" and manifest.labels[15] == "cat"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"treshold": 0.3}, "treshold: unknown key 'treshold'"),
        ({"sha256": "abc"}, "sha256: String should match pattern"),
        ({"file": "../evil.onnx"}, "file: Value error, file must be a plain file name"),
        ({"decoder": {"family": "yolov5", "strides": [8], "scores": "logits"}}, "decoder.family"),
        ({"preprocess": {"colour": "bgr", "scale": "raw", "letterbox": "centred"}}, "preprocess.letterbox"),
        ({"input": {"width": 420, "height": 416}}, "not a multiple of stride 8"),
    ],
)
def test_bad_manifest_is_one_line(tmp_path: Path, change: dict, expected: str) -> None:
    data = yaml.safe_load(MANIFEST.read_text()) | change
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ModelError) as err:
        load_manifest(path)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{path}: ") and expected in msg


def test_missing_manifest_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"model manifest not found$"):
        load_manifest(tmp_path / "nope.yaml")


# --- model file integrity ----------------------------------------------------------------------------


@needs_shared
def test_shared_model_sha256_verifies(manifest: ModelManifest) -> None:
    verify_sha256(MODEL, manifest.sha256)


@needs_shared
def test_wrong_sha256_is_one_line_error() -> None:
    with pytest.raises(ModelError) as err:
        verify_sha256(MODEL, "0" * 64)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(f"{MODEL}: sha256 mismatch (expected {'0' * 64}, got 695e750a")


def test_missing_model_file_is_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "nope.onnx"
    with pytest.raises(ModelError) as err:
        build_detector(ModelConfig(path=str(missing)), REPO)
    assert str(err.value) == f"model file not found: {missing}; run tools/fetch_model or set model.path"


def test_default_model_path_is_cache_under_base(tmp_path: Path) -> None:
    # The shipped manifest is found through the checkout; the default model is its models/cache/.
    if (REPO / "models" / "cache" / "yolox_nano.onnx").exists():
        pytest.skip("a fetched model exists in models/cache/")
    with pytest.raises(ModelError, match=r"model file not found: .*models/cache/yolox_nano\.onnx; run tools"):
        build_detector(ModelConfig(), tmp_path)


# --- pre-processing (no model needed) -------------------------------------------------------------------


def test_preprocess_top_left_and_114_padding(manifest: ModelManifest) -> None:
    det = _fake_detector(manifest)
    wide = np.empty((100, 200, 3), np.uint8)
    wide[:] = (10, 20, 30)  # B, G, R
    tensor, lb = det.preprocess(wide)
    assert tensor.shape == (1, 3, 416, 416) and tensor.dtype == np.float32
    assert (lb.scale_x, lb.scale_y, lb.pad_x, lb.pad_y) == (2.08, 2.08, 0.0, 0.0)
    # 200x100 -> 416x208, pasted at the top-left; BGR order and raw 0-255 values are kept.
    for channel, value in enumerate((10, 20, 30)):
        assert np.all(tensor[0, channel, :208] == value)
    assert np.all(tensor[0, :, 208:] == 114)

    # A different frame shape reuses the canvas: the old picture must not show through the new padding.
    tall = np.full((200, 100, 3), 50, np.uint8)
    tensor, lb = det.preprocess(tall)
    assert lb.scale_x == 2.08
    assert np.all(tensor[0, :, :, :208] == 50)
    assert np.all(tensor[0, :, :, 208:] == 114)


def test_preprocess_matches_reference_bilinear(manifest: ModelManifest) -> None:
    det = _fake_detector(manifest)
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 256, (720, 1280, 3), np.uint8)
    tensor, _ = det.preprocess(frame)
    ref = np.full((416, 416, 3), 114, np.uint8)
    ref[:234, :416] = cv2.resize(frame, (416, 234), interpolation=cv2.INTER_LINEAR)
    assert np.array_equal(tensor[0], ref.transpose(2, 0, 1).astype(np.float32))


@pytest.mark.parametrize("letterbox", ["centre", "stretch"])
def test_preprocess_variants(manifest: ModelManifest, letterbox: str) -> None:
    pre = manifest.preprocess.model_copy(
        update={"colour": "rgb", "scale": "unit", "mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)}
    )
    pre = pre.model_copy(update={"letterbox": letterbox, "pad_value": 0})
    det = _fake_detector(manifest.model_copy(update={"preprocess": pre}))
    frame = np.empty((100, 200, 3), np.uint8)
    frame[:] = (255, 0, 51)  # B, G, R
    tensor, lb = det.preprocess(frame)
    # rgb: channel 0 is R; unit then (x - 0.5) / 0.25.
    expected = [(51 / 255 - 0.5) / 0.25, (0 - 0.5) / 0.25, (1 - 0.5) / 0.25]
    pad = (0 - 0.5) / 0.25
    if letterbox == "centre":
        assert (lb.pad_x, lb.pad_y) == (0.0, 104.0)
        body, top, bottom = tensor[0, :, 104:312], tensor[0, :, :104], tensor[0, :, 312:]
        assert np.allclose(top, pad) and np.allclose(bottom, pad)
    else:
        assert (lb.scale_x, lb.scale_y, lb.pad_y) == (2.08, 4.16, 0.0)
        body = tensor[0]
    for c in range(3):
        assert np.allclose(body[c], expected[c], atol=1e-5)


def test_preprocess_rejects_non_bgr(manifest: ModelManifest) -> None:
    det = _fake_detector(manifest)
    with pytest.raises(ValueError, match="expected a BGR uint8 HxWx3 frame"):
        det.preprocess(np.zeros((10, 10), np.uint8))


# --- decoding and NMS (fake output, exact numbers) ---------------------------------------------------


def _row(stride: int, gx: int, gy: int) -> int:
    offsets = {8: 0, 16: 52 * 52, 32: 52 * 52 + 26 * 26}
    return offsets[stride] + gy * (416 // stride) + gx


def test_decode_nms_and_mapping(manifest: ModelManifest) -> None:
    out = np.zeros((1, 3549, 85), np.float32)

    def put(stride: int, gx: int, gy: int, t: tuple[float, ...], obj: float, cls: int) -> None:
        r = out[0, _row(stride, gx, gy)]
        r[:4], r[4], r[5 + cls] = t, obj, 1.0

    put(32, 5, 5, (0.5, 0.5, np.log(2), np.log(2)), 0.9, 0)  # person: centre 176, 64x64 -> 144..208
    put(32, 6, 5, (-0.4, 0.5, np.log(2), np.log(2)), 0.8, 0)  # next cell, centre 179: suppressed
    put(16, 11, 11, (0.0, 0.0, np.log(4), np.log(4)), 0.7, 16)  # dog on the same spot: other class, kept
    put(8, 0, 0, (0.0, 0.0, np.log(4), np.log(4)), 0.6, 2)  # car at the corner: 32x32 around (0,0), clipped
    put(8, 40, 40, (0.0, 0.0, 0.0, 0.0), 0.29, 0)  # below the 0.3 threshold
    det = _fake_detector(manifest, out)
    frame = np.zeros((832, 832, 3), np.uint8)  # ratio 0.5: frame pixels are letterbox pixels * 2
    result = det.detect(frame)
    found = result.detections
    assert [(d.label, round(d.score, 3)) for d in found] == [("person", 0.9), ("dog", 0.7), ("car", 0.6)]
    assert found[0].box == pytest.approx((288, 288, 416, 416))
    assert found[1].box == pytest.approx((288, 288, 416, 416))
    assert found[2].box == pytest.approx((0, 0, 32, 32))
    assert all(d.detector == "objects" for d in found)
    assert min(result.preprocess_ms, result.infer_ms, result.post_ms) >= 0.0
    assert [d.label for d in det.detect(frame, {"dog", "car", "fire"}).detections] == ["dog", "car"]
    assert det.detect(frame, {"fire"}).detections == []


def test_decode_logits(manifest: ModelManifest) -> None:
    out = np.full((1, 3549, 85), -20.0, np.float32)
    out[0, :, :4] = 0.0
    out[0, _row(32, 6, 6), 4:6] = (3.0, 3.0)  # sigmoid(3)^2 = 0.907
    decoder = manifest.decoder.model_copy(update={"scores": "logits"})
    det = _fake_detector(manifest.model_copy(update={"decoder": decoder}), out)
    found = det.detect(np.zeros((416, 416, 3), np.uint8)).detections
    assert [(d.label, round(d.score, 3)) for d in found] == [("person", 0.907)]
    assert found[0].box == pytest.approx((176, 176, 208, 208))


def test_output_that_does_not_fit_the_manifest(manifest: ModelManifest) -> None:
    with pytest.raises(ModelError, match=r"model output \(1, 8400, 85\) does not fit manifest 'yolox-nano'"):
        _fake_detector(manifest, np.zeros((1, 8400, 85), np.float32))


# --- real model: the verified results of ../shared/models/README.md -----------------------------------

# (image, [(label, score, box or None)]); score ±0.01, box ±3 px.
VERIFIED = [
    ("images/astronaut.png", [("person", 0.926, (11, 20, 368, 507))]),
    ("images/coffee.png", [("cup", 0.898, (162, 16, 420, 294)), ("dining table", 0.738, (0, 0, 598, 397))]),
    ("images/chelsea.png", [("cat", 0.621, (0, 0, 449, 300))]),  # [-13, -16, 449, 300] clipped
    ("non_fire_lookalike/sunset_udaipur.jpg", []),
    ("images/rocket.jpg", []),
]


@needs_shared
@pytest.mark.parametrize(("image", "expected"), VERIFIED, ids=[v[0] for v in VERIFIED])
def test_verified_results(detector: ObjectDetector, image: str, expected: list) -> None:
    found = detector.detect(cv2.imread(str(DATA / image))).detections
    assert len(found) == len(expected), [(d.label, d.score, d.box) for d in found]
    for d, (label, score, box) in zip(found, expected, strict=True):
        assert d.label == label
        assert d.score == pytest.approx(score, abs=0.01)
        assert d.box == pytest.approx(box, abs=3)


@needs_shared
def test_street_market_nine_people(detector: ObjectDetector) -> None:
    frame = cv2.imread(str(DATA / "non_fire_lookalike" / "street_market_hong_kong.jpg"))
    found = detector.detect(frame).detections
    assert [d.label for d in found] == ["person"] * 9
    assert found[0].score == pytest.approx(0.710, abs=0.01)
    assert found[0].box == pytest.approx((1013, 484, 1173, 767), abs=3)
    assert found[-1].score == pytest.approx(0.31, abs=0.01)
    h, w = frame.shape[:2]
    assert all(0 <= d.box[0] < d.box[2] <= w and 0 <= d.box[1] < d.box[3] <= h for d in found)


@needs_shared
def test_labels_filter(detector: ObjectDetector) -> None:
    frame = cv2.imread(str(DATA / "images" / "coffee.png"))
    every = detector.detect(frame).detections
    assert [d.label for d in detector.detect(frame, {"cup"}).detections] == ["cup"]
    assert detector.detect(frame, {"cup"}).detections[0] == next(d for d in every if d.label == "cup")
    assert detector.detect(frame, {"person", "fire"}).detections == []
    assert detector.detect(frame, set()).detections == []
    assert "person" in detector.labels and "fire" not in detector.labels


@needs_shared
def test_backend_choice(tmp_path: Path) -> None:
    model = tmp_path / "yolox_nano.onnx"
    shutil.copyfile(MODEL, model)
    (tmp_path / "yolox_nano.engine").write_bytes(b"not an engine")  # e.g. a trtexec engine: never loaded
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        # No TensorRT: auto falls back and says why, an explicit choice says what to install
        # (tests/test_tensorrt.py covers the other reasons and the engine cache).
        backend = open_backend("auto", model, threads=1)
        assert backend.name == "onnxruntime" and backend.providers[-1] == "CPUExecutionProvider"
        assert backend.reason == "tensorrt not installed (pip install .[jetson] on the device)"
        with pytest.raises(BackendError, match=r"^model\.backend is tensorrt, but tensorrt not installed"):
            open_backend("tensorrt", model)
    backend = open_backend("onnxruntime", model, threads=1)
    assert backend.name == "onnxruntime" and backend.reason == "configured (model.backend: onnxruntime)"


@needs_shared
def test_corrupt_model_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00garbage")
    with pytest.raises(BackendError) as err:
        open_backend("onnxruntime", bad)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{bad}: onnxruntime cannot load the model")


@needs_shared
def test_detect_speed_720p(detector: ObjectDetector) -> None:
    """Prints, does not assert: speed is a benchmark's job (tools/bench), not a pass/fail test."""
    frame = cv2.imread(str(DATA / "non_fire_lookalike" / "street_market_hong_kong.jpg"))
    frame = cv2.resize(frame, (1280, 720))
    for _ in range(5):
        detector.detect(frame)
    totals, stages = [], []
    for _ in range(30):
        result = detector.detect(frame)
        stages.append(result)
        totals.append(result.preprocess_ms + result.infer_ms + result.post_ms)
    parts = {
        k: statistics.median(getattr(s, k) for s in stages) for k in ("preprocess_ms", "infer_ms", "post_ms")
    }
    print(
        f"\ndetect() 1280x720 median {statistics.median(totals):.2f} ms "
        + " ".join(f"{k} {v:.2f}" for k, v in parts.items())
        + f" ({detector.backend.name}, {detector.backend.providers[0]})"
    )


# --- tools/fetch_model -------------------------------------------------------------------------------


@pytest.fixture
def served_model(tmp_path: Path) -> Iterator[str]:
    """A copy of the shared model served by a local http.server; yields its URL."""
    if not MODEL.is_file():
        pytest.skip(f"shared test model not found at {MODEL}")
    root = tmp_path / "srv"
    root.mkdir()
    shutil.copyfile(MODEL, root / "yolox_nano.onnx")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/yolox_nano.onnx"
    finally:
        server.shutdown()
        server.server_close()


def _manifest_with(tmp_path: Path, **change: str) -> Path:
    data = load_manifest(MANIFEST).model_dump(mode="json") | change
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _fetch(*args: str | Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    cmd = [sys.executable, str(FETCH), *map(str, args), "--timeout", "10"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env, check=False)


def test_fetch_model_is_executable() -> None:
    assert os.access(FETCH, os.X_OK)
    assert FETCH.read_text().startswith("#!/usr/bin/env python3\n")


def test_fetch_model_downloads_and_verifies(tmp_path: Path, served_model: str) -> None:
    dest = tmp_path / "dest"
    result = _fetch(_manifest_with(tmp_path, url=served_model), "--dest", dest)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(dest / "yolox_nano.onnx")
    assert sorted(p.name for p in dest.iterdir()) == ["yolox_nano.onnx"]
    verify_sha256(dest / "yolox_nano.onnx", load_manifest(MANIFEST).sha256)
    # Already there and verified: kept without downloading (the URL is dead now).
    again = _fetch(_manifest_with(tmp_path, url="http://127.0.0.1:1/gone.onnx"), "--dest", dest)
    assert again.returncode == 0, again.stderr


def test_fetch_model_hash_mismatch(tmp_path: Path, served_model: str) -> None:
    dest = tmp_path / "dest"
    result = _fetch(_manifest_with(tmp_path, url=served_model, sha256="1" * 64), "--dest", dest)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"fetch_model: sha256 mismatch for {served_model}")
    assert list(dest.iterdir()) == []  # nothing installed, no partial file left


def test_fetch_model_unreachable(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again below: connection refused
    url = f"http://127.0.0.1:{port}/yolox_nano.onnx"
    dest = tmp_path / "dest"
    result = _fetch(_manifest_with(tmp_path, url=url), "--dest", dest)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"fetch_model: cannot download {url}: ")
    assert list(dest.iterdir()) == []

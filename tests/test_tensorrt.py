"""The TensorRT backend: engine-cache keys and lookup, backend selection, build_engine/compare_backends.

Everything that can be decided without TensorRT is tested everywhere: the cache key, that a stale
engine is never loaded (rebuilt instead), why `auto` picks what it picks (with stand-in tensorrt and
pycuda modules for the cases this machine is not), INT8 calibration frames through the model's own
pre-processing, and tools/compare_backends on the real model (ONNX Runtime against itself with other
settings: they must agree exactly). The tests that build and run a real engine need tensorrt, pycuda
and a CUDA GPU, and are skipped with that reason elsewhere (tools/gpu_check.sh runs them on a device).
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import types
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.config import ConfigError, load_config
from edge.config.models import ModelConfig
from edge.reflex.backends import (
    NOT_INSTALLED,
    BackendError,
    TensorRTProbe,
    TensorRTSettings,
    choose_backend,
    expected_engine_key,
    open_backend,
    probe_tensorrt,
)
from edge.reflex.backends.cache import (
    MAGIC,
    cache_state,
    calibration_digest,
    engine_filename,
    engine_key,
    gpu_identity,
    load_or_build,
    read_engine,
    read_header,
    write_engine,
)
from edge.reflex.engine import ObjectDetector, build_detector
from edge.reflex.manifest import load_manifest
from tests.conftest import DATA, MODEL, REPO, needs_shared

MANIFEST = REPO / "models" / "yolox_nano.yaml"
BUILD = REPO / "tools" / "build_engine"
COMPARE = REPO / "tools" / "compare_backends"
SHA = "695e750a5d5754bb5a8d5325643b59282191a7e7a564e435a415fd3c578eab14"
CLIP = DATA / "people" / "intel_one-by-one-person-detection.mp4"


def _gpu_available() -> bool:
    probe_tensorrt.cache_clear()
    return probe_tensorrt().available


needs_gpu = pytest.mark.skipif(not _gpu_available(), reason="TensorRT and a CUDA GPU are not available here")


@pytest.fixture
def fresh_probe() -> object:
    """probe_tensorrt() asked afresh (it is cached per process), and afresh again afterwards."""
    probe_tensorrt.cache_clear()
    yield
    probe_tensorrt.cache_clear()


# --- the key --------------------------------------------------------------------------------------------

BASE = {
    "onnx_sha256": SHA,
    "trt_version": "10.3.0",
    "gpu_name": "Orin (sm_87)",
    "precision": "fp16",
    "dla_core": None,
}


def test_engine_key_changes_with_each_input_and_only_then() -> None:
    key = engine_key(**BASE)
    assert key == engine_key(**BASE)  # a pure function: same inputs, same key
    assert len(key) == 16 and all(c in "0123456789abcdef" for c in key)
    assert engine_key(**{**BASE, "onnx_sha256": SHA.upper()}) == key  # the same sha256, spelt otherwise
    changed = {
        "onnx_sha256": "0" * 64,
        "trt_version": "10.3.1",
        "gpu_name": "Orin (sm_72)",  # same name, other compute capability
        "precision": "int8",
        "dla_core": 0,
    }
    keys = {key}
    for name, value in changed.items():
        other = engine_key(**{**BASE, name: value})
        assert other != key, name
        keys.add(other)
    assert len(keys) == 1 + len(changed)  # each change gives its own key
    assert engine_key(**{**BASE, "dla_core": 1}) != engine_key(**{**BASE, "dla_core": 0})
    # The calibration frames matter to an int8 engine only.
    assert engine_key(**BASE, calibration="a" * 64) == key
    int8 = {**BASE, "precision": "int8"}
    assert engine_key(**int8, calibration="a" * 64) != engine_key(**int8, calibration="b" * 64)


def test_gpu_identity_and_file_name() -> None:
    assert gpu_identity("Orin", (8, 7)) == "Orin (sm_87)"
    assert gpu_identity("NVIDIA  GeForce RTX 4090 ", (8, 9)) == "NVIDIA GeForce RTX 4090 (sm_89)"
    key = engine_key(**BASE)
    assert engine_filename("yolox_nano", key) == f"yolox_nano.{key}.engine"


def test_expected_key_needs_a_usable_tensorrt() -> None:
    settings = TensorRTSettings(precision="fp16")
    ok = TensorRTProbe(True, "found", "10.3.0", "Orin (sm_87)")
    assert expected_engine_key(ok, SHA, settings) == engine_key(**BASE)
    assert expected_engine_key(TensorRTProbe(False, NOT_INSTALLED), SHA, settings) is None


# --- the cache: a stale engine is never loaded ----------------------------------------------------------


def test_engine_file_round_trip_and_refusals(tmp_path: Path) -> None:
    key = engine_key(**BASE)
    path = tmp_path / engine_filename("yolox_nano", key)
    write_engine(path, key, b"PLAN\nbytes\x00\xff", {"precision": "fp16"})
    assert read_engine(path, key) == b"PLAN\nbytes\x00\xff"
    assert read_header(path) == {"key": key, "precision": "fp16"}
    assert read_engine(path, engine_key(**{**BASE, "trt_version": "10.4.0"})) is None  # another key
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp file left
    (tmp_path / "raw.engine").write_bytes(b"a trtexec engine, not ours")
    assert read_engine(tmp_path / "raw.engine", key) is None
    (tmp_path / "cut.engine").write_bytes(MAGIC + b'{"key": "')
    assert read_engine(tmp_path / "cut.engine", key) is None and read_header(tmp_path / "cut.engine") is None
    assert read_engine(tmp_path / "missing.engine", key) is None


def test_cache_state_none_fresh_stale(tmp_path: Path) -> None:
    key = engine_key(**BASE)
    old = engine_key(**{**BASE, "trt_version": "10.0.1"})
    assert cache_state(tmp_path, "yolox_nano", key).state == "none"
    assert cache_state(tmp_path / "absent", "yolox_nano", key).state == "none"
    write_engine(tmp_path / engine_filename("yolox_nano", old), old, b"old plan")
    write_engine(tmp_path / engine_filename("other_model", key), key, b"another model's plan")
    state = cache_state(tmp_path, "yolox_nano", key)
    assert state.state == "stale" and [p.name for p in state.stale] == [engine_filename("yolox_nano", old)]
    assert state.path == tmp_path / engine_filename("yolox_nano", key)
    write_engine(state.path, key, b"new plan", {"build_s": 12.5})
    state = cache_state(tmp_path, "yolox_nano", key)
    assert state.state == "fresh" and state.meta is not None and state.meta["build_s"] == 12.5
    # An engine under the right name but built for another key (renamed, copied) is stale, not fresh.
    write_engine(state.path, old, b"renamed old plan")
    assert cache_state(tmp_path, "yolox_nano", key).state == "stale"


def test_stale_engine_is_rebuilt_not_loaded(tmp_path: Path) -> None:
    key = engine_key(**BASE)
    path = tmp_path / engine_filename("yolox_nano", key)
    builds: list[int] = []

    def build() -> bytes:
        builds.append(1)
        return b"fresh plan"

    # A file at the right name whose header says another key (an engine copied from another device).
    write_engine(path, engine_key(**{**BASE, "gpu_name": "Xavier (sm_72)"}), b"foreign plan")
    plan, built, _ = load_or_build(path, key, build, {"precision": "fp16", "dla_core": None})
    assert (plan, built, len(builds)) == (b"fresh plan", True, 1)
    assert read_engine(path, key) == b"fresh plan"
    # Fresh now: loaded, not built.
    plan, built, seconds = load_or_build(path, key, build, {"precision": "fp16", "dla_core": None})
    assert (plan, built, seconds, len(builds)) == (b"fresh plan", False, 0.0, 1)
    # force (a plan TensorRT would not deserialize): built again.
    assert load_or_build(path, key, build, {"precision": "fp16", "dla_core": None}, force=True)[1]
    assert len(builds) == 2


def test_an_unwritable_cache_still_gives_the_plan(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "not-a-folder").write_text("")
    key = engine_key(**BASE)
    path = tmp_path / "not-a-folder" / engine_filename("yolox_nano", key)
    with caplog.at_level(logging.WARNING, logger="edge.reflex"):
        plan, built, _ = load_or_build(path, key, lambda: b"plan", {})
    assert (plan, built) == (b"plan", True)
    assert any("rebuilt at every start; set model.engine_cache" in m for m in caplog.messages)


def test_rebuild_removes_superseded_engines_of_the_same_precision_only(tmp_path: Path) -> None:
    def meta(**kw: object) -> dict:
        return {"precision": "fp16", "dla_core": None, **kw}

    old_trt = engine_key(**{**BASE, "trt_version": "10.0.1"})
    int8 = engine_key(**{**BASE, "precision": "int8"})
    write_engine(tmp_path / engine_filename("yolox_nano", old_trt), old_trt, b"old", meta())
    write_engine(tmp_path / engine_filename("yolox_nano", int8), int8, b"int8", meta(precision="int8"))
    write_engine(tmp_path / engine_filename("yolox_tiny", old_trt), old_trt, b"other model", meta())
    key = engine_key(**BASE)
    load_or_build(tmp_path / engine_filename("yolox_nano", key), key, lambda: b"new", meta())
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [
            engine_filename("yolox_nano", key),
            engine_filename("yolox_nano", int8),
            engine_filename("yolox_tiny", old_trt),
        ]
    )


# --- selection: auto falls back to ONNX Runtime and says why -------------------------------------------


def _fake_tensorrt(monkeypatch: pytest.MonkeyPatch, version: str = "10.3.0") -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__=version))


def _fake_pycuda(monkeypatch: pytest.MonkeyPatch, *, count: int = 1, init_error: str | None = None) -> None:
    driver = types.ModuleType("pycuda.driver")

    def init() -> None:
        if init_error:
            raise RuntimeError(init_error)

    class Device:
        def __init__(self, n: int) -> None:
            self.n = n

        @staticmethod
        def count() -> int:
            return count

        def name(self) -> str:
            return "Orin"

        def compute_capability(self) -> tuple[int, int]:
            return (8, 7)

    driver.init = init  # type: ignore[attr-defined]
    driver.Device = Device  # type: ignore[attr-defined]
    package = types.ModuleType("pycuda")
    package.driver = driver  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pycuda", package)
    monkeypatch.setitem(sys.modules, "pycuda.driver", driver)


@pytest.mark.usefixtures("fresh_probe")
def test_auto_without_tensorrt_is_onnxruntime_and_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # not importable, on every machine
    choice = choose_backend("auto")
    assert (choice.kind, choice.reason) == (
        "onnxruntime",
        "tensorrt not installed (pip install .[jetson] on the device)",
    )
    assert choose_backend("onnxruntime").reason == "configured (model.backend: onnxruntime)"
    with pytest.raises(BackendError, match=r"^model\.backend is tensorrt, but tensorrt not installed \(pip"):
        choose_backend("tensorrt")


@pytest.mark.usefixtures("fresh_probe")
@pytest.mark.parametrize(
    ("setup", "reason"),
    [
        ({"version": "8.5.2"}, "tensorrt 8.5.2 is too old (TensorRT 10+ needed: JetPack 6)"),
        ({"pycuda": None}, "pycuda not installed (pip install .[jetson] on the device)"),
        ({"count": 0}, "no CUDA device"),
        (
            {"init_error": "cuInit failed: no CUDA-capable device is detected"},
            "no CUDA device (cuInit failed: no CUDA-capable device is detected)",
        ),
    ],
)
def test_auto_reasons_for_each_missing_piece(
    monkeypatch: pytest.MonkeyPatch, setup: dict, reason: str
) -> None:
    _fake_tensorrt(monkeypatch, setup.get("version", "10.3.0"))
    if "pycuda" in setup:
        monkeypatch.setitem(sys.modules, "pycuda", None)
        monkeypatch.setitem(sys.modules, "pycuda.driver", None)
    else:
        _fake_pycuda(monkeypatch, count=setup.get("count", 1), init_error=setup.get("init_error"))
    choice = choose_backend("auto")
    assert (choice.kind, choice.reason) == ("onnxruntime", reason)


@pytest.mark.usefixtures("fresh_probe")
def test_auto_takes_tensorrt_when_everything_is_there(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_tensorrt(monkeypatch)
    _fake_pycuda(monkeypatch)
    choice = choose_backend("auto")
    assert choice.kind == "tensorrt"
    assert choice.reason == "tensorrt 10.3.0 and CUDA device Orin (sm_87) found"
    assert choice.probe is not None and (choice.probe.version, choice.probe.gpu) == ("10.3.0", "Orin (sm_87)")


@needs_shared
@pytest.mark.usefixtures("fresh_probe")
def test_open_backend_falls_back_and_the_detector_logs_why(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    backend = open_backend("auto", MODEL, threads=1)
    assert backend.name == "onnxruntime" and backend.providers[-1] == "CPUExecutionProvider"
    assert backend.reason == NOT_INSTALLED
    with caplog.at_level(logging.INFO, logger="edge.reflex"):
        detector = build_detector(ModelConfig(path=str(MODEL), threads=1), REPO)
    assert detector.backend.name == "onnxruntime"
    assert f"model yolox-nano: onnxruntime on CPUExecutionProvider ({NOT_INSTALLED})" in caplog.messages
    with pytest.raises(BackendError, match="tensorrt not installed"):
        open_backend("tensorrt", MODEL)


@needs_shared
@pytest.mark.usefixtures("fresh_probe")
def test_auto_falls_back_when_the_engine_cannot_be_built(monkeypatch: pytest.MonkeyPatch) -> None:
    """TensorRT present but failing (an ONNX op it cannot parse, a driver error): auto runs ONNX Runtime
    and says why; an explicit tensorrt is one BackendError line."""
    import edge.reflex.backends.tensorrt as trt_backend

    _fake_tensorrt(monkeypatch)
    _fake_pycuda(monkeypatch)

    class Failing:
        def __init__(self, *args: object, **kwargs: object) -> None:
            raise RuntimeError("pycuda._driver.LogicError: cuMemAlloc failed: out of memory\nmore")

    monkeypatch.setattr(trt_backend, "TensorRTBackend", Failing)
    backend = open_backend("auto", MODEL, threads=1)
    assert backend.name == "onnxruntime"
    assert (
        backend.reason
        == "tensorrt failed: RuntimeError: pycuda._driver.LogicError: cuMemAlloc failed: out of memory"
    )
    with pytest.raises(BackendError, match=r"^TensorRT could not run yolox_nano\.onnx: RuntimeError: pycuda"):
        open_backend("tensorrt", MODEL)


# --- config ---------------------------------------------------------------------------------------------


def test_model_config_tensorrt_settings(tmp_path: Path) -> None:
    cfg = ModelConfig()
    assert (cfg.precision, cfg.dla_core, cfg.calibration_frames, cfg.engine_cache) == (
        "fp16",
        None,
        None,
        None,
    )
    with pytest.raises(ValueError, match="precision int8 needs calibration_frames"):
        ModelConfig(precision="int8")
    with pytest.raises(ValueError, match="DLA core runs fp16 or int8 only"):
        ModelConfig(precision="fp32", dla_core=0)
    with pytest.raises(ValueError):
        ModelConfig(dla_core=-1)
    (tmp_path / "edge.yaml").write_text(
        "model:\n  precision: int8\n  dla_core: 1\n"
        "  calibration_frames: site-frames\n  engine_cache: engines\n"
    )
    loaded, _ = load_config(tmp_path / "edge.yaml")
    assert loaded.model.calibration_frames == str(tmp_path / "site-frames")
    assert loaded.model.engine_cache == str(tmp_path / "engines")
    settings = TensorRTSettings.from_config(loaded.model)
    assert settings == TensorRTSettings("int8", 1, tmp_path / "site-frames", tmp_path / "engines")
    assert settings.cache_for(Path("/m/yolox_nano.onnx")) == tmp_path / "engines"
    assert TensorRTSettings().cache_for(Path("/m/yolox_nano.onnx")) == Path("/m")
    (tmp_path / "bad.yaml").write_text("model:\n  precision: int4\n")
    with pytest.raises(ConfigError, match="precision"):
        load_config(tmp_path / "bad.yaml")


# --- INT8 calibration frames ----------------------------------------------------------------------------


@needs_shared
def test_calibration_frames_go_through_the_models_own_preprocessing(tmp_path: Path) -> None:
    from edge.reflex.backends.tensorrt import calibration_tensors
    from tests.test_reflex import FakeBackend

    cap = cv2.VideoCapture(str(CLIP))
    images = []
    for i in range(30):
        ok, image = cap.read()
        assert ok
        if i % 10 == 0:
            images.append(image)
            cv2.imwrite(str(tmp_path / f"frame{i:03d}.jpg"), image)
    cap.release()
    (tmp_path / "notes.txt").write_text("not a frame")
    manifest = load_manifest(MANIFEST)
    tensors = list(calibration_tensors(manifest, tmp_path))
    assert len(tensors) == 3 and all(t.shape == (1, 3, 416, 416) and t.dtype == np.float32 for t in tensors)
    fake = FakeBackend()
    detector = ObjectDetector(manifest, Path("unused.onnx"), ModelConfig(), backend=fake)
    for path, tensor in zip(sorted(tmp_path.glob("*.jpg")), tensors, strict=True):
        expected, _ = detector.preprocess(cv2.imread(str(path)))
        np.testing.assert_array_equal(tensor, expected)
    digest = calibration_digest(tmp_path)
    assert digest == calibration_digest(tmp_path)
    cv2.imwrite(str(tmp_path / "frame999.jpg"), images[0][::-1])
    assert calibration_digest(tmp_path) != digest  # a new frame, a new int8 engine key


# --- the tools ------------------------------------------------------------------------------------------


@pytest.mark.skipif(_gpu_available(), reason="TensorRT can run here: test_build_engine_on_gpu covers it")
def test_build_engine_says_tensorrt_is_missing_in_one_line() -> None:
    result = subprocess.run(
        [sys.executable, str(BUILD), "--model", str(MODEL)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("build_engine: cannot build a TensorRT engine here: ")
    assert "tensorrt not installed" in lines[0] or "CUDA" in lines[0] or "pycuda" in lines[0]


@needs_shared
def test_compare_backends_onnxruntime_against_itself_agrees() -> None:
    cmd = [
        sys.executable,
        str(COMPARE),
        str(CLIP),
        "--model",
        str(MODEL),
        "--every",
        "5",
        "--max-frames",
        "40",
        "--a",
        "onnxruntime:threads=1,provider=cpu",
        "--b",
        "onnxruntime:threads=2,opt=basic,provider=cpu",
        "--json",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=240, check=False)
    assert result.returncode == 0, result.stderr + result.stdout
    report = json.loads(result.stdout)
    assert report["agree"] and report["problems"] == []
    assert report["frames"] == 40
    assert report["detections"]["paired"] == report["detections"]["a"] == report["detections"]["b"] >= 20
    assert report["iou"]["worst"] >= 0.999 and report["score_diff"]["worst"] <= 1e-3
    assert report["only_a"]["count"] == report["only_b"]["count"] == 0


@needs_shared
def test_compare_backends_reports_disagreement_and_bad_specs(tmp_path: Path) -> None:
    from edge.types import Detection

    tool = _load_tool(COMPARE)
    pair, verdict = tool.pair, tool.verdict

    a = [Detection("person", 0.9, (0, 0, 100, 100)), Detection("car", 0.35, (0, 0, 50, 50))]
    b = [Detection("person", 0.7, (10, 0, 110, 100)), Detection("dog", 0.8, (0, 0, 50, 50))]
    pairs, only_a, only_b = pair(a, b)
    assert [(p[0].label, round(p[2], 3)) for p in pairs] == [("person", round(90 / 110, 3))]
    assert [d.label for d in only_a] == ["car"] and [d.label for d in only_b] == ["dog"]
    result = {
        "frames": 1,
        "iou": {"worst": 0.818, "worst_at": "x#0"},
        "score_diff": {"worst": 0.2},
        "only_a": {"best_score": 0.35, "best_at": "x#0 car"},
        "only_b": {"best_score": 0.8, "best_at": "x#0 dog"},
    }
    agree, problems = verdict(result, 0.9, 0.05, 0.3)
    assert not agree and len(problems) == 3  # IoU, score, and the dog only b saw; the borderline car is fine
    bad = subprocess.run(
        [sys.executable, str(COMPARE), str(CLIP), "--model", str(MODEL), "--b", "onnx"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bad.returncode == 2 and "backend must be onnxruntime or tensorrt" in bad.stderr


# --- on a GPU -------------------------------------------------------------------------------------------


@needs_gpu
@needs_shared
def test_tensorrt_engine_builds_caches_and_matches_onnxruntime(tmp_path: Path) -> None:
    from edge.reflex.backends.tensorrt import TensorRTBackend

    manifest = load_manifest(MANIFEST)
    settings = TensorRTSettings(precision="fp16", cache_dir=tmp_path)
    first = TensorRTBackend(MODEL, settings=settings, manifest=manifest, onnx_sha256=SHA)
    assert (
        first.built
        and first.engine_file.is_file()
        and cache_state(tmp_path, "yolox_nano", first.key).state == "fresh"
    )
    assert first.output_shape == (1, 3549, 85)
    second = TensorRTBackend(MODEL, settings=settings, manifest=manifest, onnx_sha256=SHA)
    assert not second.built and second.key == first.key
    cfg = ModelConfig(path=str(MODEL))
    frame = cv2.imread(str(DATA / "images" / "coffee.png"))
    trt_found = ObjectDetector(manifest, MODEL, cfg, backend=second).detect(frame).detections
    ort_found = (
        ObjectDetector(manifest, MODEL, cfg, backend=open_backend("onnxruntime", MODEL))
        .detect(frame)
        .detections
    )
    strong = [d for d in ort_found if d.score > 0.5]
    assert strong
    for d in strong:
        match = max((t for t in trt_found if t.label == d.label), key=lambda t: _iou(t.box, d.box))
        assert _iou(match.box, d.box) > 0.9 and abs(match.score - d.score) < 0.05
    # A stale engine under the fresh name (another key in its header) is rebuilt, never loaded.
    write_engine(first.engine_file, "0" * 16, b"not a plan")
    third = TensorRTBackend(MODEL, settings=settings, manifest=manifest, onnx_sha256=SHA)
    assert third.built
    for backend in (first, second, third):
        backend.close()


@needs_gpu
@needs_shared
def test_compare_backends_tensorrt_against_onnxruntime(tmp_path: Path) -> None:
    cmd = [
        sys.executable,
        str(COMPARE),
        "--model",
        str(MODEL),
        "--a",
        f"tensorrt:cache={tmp_path}",
        "--b",
        "onnxruntime:provider=cpu",
        "--every",
        "10",
        "--max-frames",
        "60",
        "--json",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
    assert result.returncode == 0, result.stderr + result.stdout
    assert json.loads(result.stdout)["agree"]


def _load_tool(path: Path) -> types.ModuleType:
    """A tool from tools/ (no .py suffix) as a module, for its pure helpers."""
    import importlib.machinery
    import importlib.util

    loader = importlib.machinery.SourceFileLoader(f"tool_{path.name}", str(path))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)

"""Bring your own fire/smoke model (issue 8): a YOLOv8/YOLO11-layout ONNX model as an extra detector.

The models are tiny ONNX graphs built here with `onnx.helper`: their output is a known tensor of boxes and
scores added to zero times the mean of the input, so ONNX Runtime really runs them on every frame, and
what the decoder must find is known exactly. Each is saved to tmp_path with its manifest (and sha256).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from edge.capture import open_source
from edge.cli import main
from edge.config import ConfigError, load_config
from edge.config.models import EventsConfig, ExtraModelConfig, RuleConfig
from edge.redloop import RedLoop
from edge.reflex.engine import ObjectDetector, build_detector
from edge.reflex.manifest import ModelError
from edge.rules import EventMachine, Rule, Tracker, Transition
from edge.types import Detection, Frame
from edge.wiring import build_rules, known_labels, load_detector, load_models

onnx = pytest.importorskip("onnx", reason="onnx builds the test graphs: pip install -e .[dev]")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
PEOPLE = REPO.parent / "shared" / "data" / "people" / "intel_one-by-one-person-detection.mp4"

SIZE = 320
"""Square model input, as Ultralytics exports it."""
N = (SIZE // 8) ** 2 + (SIZE // 16) ** 2 + (SIZE // 32) ** 2
"""Anchor points of strides 8, 16, 32: 1600 + 400 + 100."""
LABELS = ["smoke", "fire", "other"]
FLAMES = {"name": "flames", "label": "fire", "source": "model"}
"""A rule that takes fire from a model only."""
Scores = tuple[float, ...]


def head(*boxes: tuple[tuple[float, float, float, float], Scores], fill: float = 0.0) -> np.ndarray:
    """A YOLOv8 output (1, 4 + C, N): anchor i holds boxes[i] = ((cx, cy, w, h) in input pixels, scores)."""
    out = np.full((1, 4 + len(LABELS), N), fill, np.float32)
    out[0, :4] = 1.0  # every other anchor: a 1x1 box at (1, 1) that scores nothing
    for i, (xywh, scores) in enumerate(boxes):
        out[0, :4, 100 + i] = xywh
        out[0, 4:, 100 + i] = scores
    return out


def save_model(folder: Path, output: np.ndarray, *, name: str = "byo-fire", **decoder: str) -> Path:
    """Write the graph to folder/cache/<name>.onnx and its manifest to folder/<name>.yaml; the manifest."""
    images = helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, SIZE, SIZE])
    out = helper.make_tensor_value_info("output0", TensorProto.FLOAT, list(output.shape))
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["mean"], keepdims=0),
        helper.make_node("Mul", ["mean", "zero"], ["nothing"]),
        helper.make_node("Add", ["known", "nothing"], ["output0"]),
    ]
    consts = [numpy_helper.from_array(output, "known"), numpy_helper.from_array(np.float32(0.0), "zero")]
    graph = helper.make_graph(nodes, "yolov8-layout", [images], [out], initializer=consts)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    onnx.checker.check_model(model)
    data = model.SerializeToString()
    (folder / "cache").mkdir(parents=True, exist_ok=True)
    (folder / "cache" / f"{name}.onnx").write_bytes(data)
    manifest = {
        "name": name,
        "file": f"{name}.onnx",
        "url": f"https://example.invalid/{name}.onnx",
        "sha256": hashlib.sha256(data).hexdigest(),
        "input": {"width": SIZE, "height": SIZE},
        "preprocess": {"colour": "rgb", "scale": "unit", "letterbox": "centre", "pad_value": 114},
        "decoder": {"family": "yolov8", **decoder},
        "labels": LABELS,
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(manifest, sort_keys=False))
    return path


def load(folder: Path, output: np.ndarray, **decoder: str) -> ObjectDetector:
    manifest = save_model(folder, output, **decoder)
    return build_detector(ExtraModelConfig(manifest=str(manifest), backend="onnxruntime"), folder, extra=True)


FIRE = ((160.0, 160.0, 100.0, 60.0), (0.1, 0.8, 0.3))
"""Fire (the best of three classes) at input 110..210 x 130..190."""
FIRE_NEXT = ((164.0, 162.0, 100.0, 60.0), (0.1, 0.6, 0.0))
"""Almost the same box, less sure: NMS drops it."""
SMOKE_THERE = ((160.0, 160.0, 100.0, 60.0), (0.65, 0.5, 0.0))
"""The same place, but smoke is its best class: another class, kept."""
SMOKE = ((40.0, 60.0, 40.0, 20.0), (0.7, 0.05, 0.1))
"""Smoke at input 20..60 x 50..70, inside the top padding band's edge."""
FAINT = ((250.0, 250.0, 30.0, 30.0), (0.29, 0.29, 0.29))
"""Below the 0.3 score threshold in every class."""


def test_yolov8_boxes_land_in_frame_pixels_through_the_letterbox(tmp_path: Path) -> None:
    det = load(tmp_path, head(FIRE, FIRE_NEXT, SMOKE_THERE, SMOKE, FAINT))
    assert det.backend.name == "onnxruntime" and det.labels == tuple(LABELS)
    # 640x480 into 320x320: scale 0.5, 320x240 centred, so 40 rows of padding above: frame = (in - pad) * 2.
    frame = np.zeros((480, 640, 3), np.uint8)
    found = det.detect(frame).detections
    assert [(d.label, round(d.score, 3)) for d in found] == [("fire", 0.8), ("smoke", 0.7), ("smoke", 0.65)]
    assert found[0].box == pytest.approx((220, 180, 420, 300))
    assert found[1].box == pytest.approx((40, 20, 120, 60))
    assert found[2].box == pytest.approx((220, 180, 420, 300))
    assert {d.detector for d in found} == {"byo-fire"}, "an extra model's detections carry its manifest name"
    # Only the wanted classes compete: SMOKE_THERE is then a fire of 0.5 on FIRE's spot, which NMS drops.
    assert [(d.label, round(d.score, 3)) for d in det.detect(frame, {"fire"}).detections] == [("fire", 0.8)]
    assert det.detect(frame, {"person"}).detections == []


def test_transposed_layout_and_logits(tmp_path: Path) -> None:
    out = head(FIRE, SMOKE, fill=-20.0)
    out[0, 4:, 100:102] = np.log(out[0, 4:, 100:102] / (1 - out[0, 4:, 100:102]))  # the same scores as logits
    det = load(tmp_path, np.ascontiguousarray(out.transpose(0, 2, 1)), scores="logits")
    found = det.detect(np.zeros((480, 640, 3), np.uint8)).detections
    assert [(d.label, round(d.score, 3)) for d in found] == [("fire", 0.8), ("smoke", 0.7)]
    assert found[0].box == pytest.approx((220, 180, 420, 300))


@pytest.mark.parametrize("shape", [(1, 4 + len(LABELS), N - 100), (1, 5 + len(LABELS), N), (1, N, 85)])
def test_wrong_output_shape_is_a_one_line_model_error(tmp_path: Path, shape: tuple[int, ...]) -> None:
    with pytest.raises(ModelError) as err:
        load(tmp_path, np.zeros(shape, np.float32))
    msg = str(err.value)
    assert "\n" not in msg
    assert f"model output {shape} does not fit manifest 'byo-fire'" in msg
    assert f"(expects (1, 7, {N}) or (1, {N}, 7): {N} boxes of 4 + 3 classes)" in msg


def write_config(folder: Path, rules: list[dict], *, extra: bool = True, **more: object) -> Path:
    """A config file beside the model: the manifest is given relative to it, as an installer would."""
    folder.mkdir(parents=True, exist_ok=True)
    cfg: dict[str, object] = {"watch": [], "rules": rules, **more}
    if extra:
        save_model(folder, head(FIRE))
        cfg["extra_models"] = [{"manifest": "byo-fire.yaml", "backend": "onnxruntime"}]
    path = folder / "edge.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def test_model_labels_are_known_and_source_errors_name_the_rule(tmp_path: Path) -> None:
    path = write_config(tmp_path, [FLAMES])
    cfg, base = load_config(path)
    assert {"other", "fire", "smoke", "person"} <= known_labels(cfg, base)
    assert [(r.name, r.cfg.source) for r in build_rules(cfg, base)] == [("flames", "model")]

    bare = write_config(tmp_path / "bare", [FLAMES], extra=False)
    cfg, base = load_config(bare)
    with pytest.raises(ConfigError) as err:
        build_rules(cfg, base)
    assert str(err.value) == (
        f"{bare}:5: rules.0.source: rule 'flames' takes 'fire' from a model (source: model), "
        "but no extra_models manifest has the label 'fire'"
    )
    wrong = write_config(tmp_path / "wrong", [{"name": "door", "label": "person", "source": "pixel"}])
    cfg, base = load_config(wrong)
    with pytest.raises(ConfigError, match=r"rules.0.source: rule 'door': source 'pixel' is for fire and"):
        build_rules(cfg, base)


def test_an_extra_model_may_not_take_a_built_in_detector_name(tmp_path: Path) -> None:
    save_model(tmp_path, head(FIRE), name="fire")
    (tmp_path / "edge.yaml").write_text(yaml.safe_dump({"extra_models": [{"manifest": "fire.yaml"}]}))
    cfg, base = load_config(tmp_path / "edge.yaml")
    with pytest.raises(ConfigError, match=r"extra_models.0.manifest: manifest name 'fire' is taken"):
        known_labels(cfg, base)


def test_cli_config_error_and_explain(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bare = write_config(tmp_path, [FLAMES], extra=False)
    assert main(["scan", "--config", str(bare), str(tmp_path / "edge.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("edge: error: ")
    assert "rule 'flames' takes 'fire' from a model" in err

    good = write_config(tmp_path / "good", [FLAMES])
    assert main(["explain", "alert me if a fire breaks out", "--config", str(good)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["kind"] == "rule" and doc["label"] == "fire"
    assert RuleConfig.model_validate(doc["rule"]).source == "any", "instruction rules take fire from both"


@pytest.mark.skipif(not PEOPLE.is_file(), reason=f"test clip not found at {PEOPLE} (../shared is missing)")
def test_a_model_fire_rule_alerts_where_the_pixel_detector_sees_none(tmp_path: Path) -> None:
    """The people clip has no fire; the test model "sees" one on every frame it is given."""
    rules = [
        {"name": "fire-model", "label": "fire", "source": "model", "severity": "critical"},
        {"name": "fire-pixel", "label": "fire", "source": "pixel", "severity": "critical"},
    ]
    cfg, base = load_config(write_config(tmp_path, rules))
    red_rules = build_rules(cfg, base)
    assert load_detector(cfg, base, red_rules) is None, "no rule wants the COCO model"
    models = load_models(cfg, base, red_rules)
    assert [m.name for m in models] == ["byo-fire"]
    seen: list[Transition] = []

    class Record:
        def handle(self, tr: Transition, frame: Frame) -> None:
            seen.append(tr)

    loop = RedLoop("door", cfg, red_rules, None, [Record()], models=models)
    source = open_source(str(PEOPLE))
    try:
        for _ in range(200):  # 20 s: a person walks in at frame 61
            item = source.read()
            assert item is not None
            loop.process(Frame("door", item[0], item[1], item[2], time.monotonic()))
    finally:
        source.close()
    loop.finish()
    starts = [t for t in seen if t.kind == "start"]
    assert [t.event.rule for t in starts] == ["fire-model"], "one fire event, from the model only"
    event = starts[0].event
    assert event.label == "fire" and event.frame <= 40  # min_hits=2 looks; the gate looks every 2 s at least
    # The model's box is FIRE's, mapped back through this clip's letterbox (768x432 -> 320x180, centred).
    scale, pad = SIZE / 768, (SIZE - 432 * SIZE / 768) / 2
    x1, y1, x2, y2 = 110 / scale, (130 - pad) / scale, 210 / scale, (190 - pad) / scale
    assert event.box == pytest.approx((x1, y1, x2, y2), abs=3)
    assert any(t.kind == "alert" and t.event.rule == "fire-model" for t in seen)
    assert loop.times.get("model") is not None and loop.times.get("model").count >= 2


def test_each_rule_sees_the_fire_of_its_source_as_one_event() -> None:
    """Pixel and model regions of one fire: any = their union, pixel / model = their own, one track id."""
    cfg = EventsConfig()
    rules = [Rule(RuleConfig(name=s, label="fire", source=s)) for s in ("any", "pixel", "model")]
    tracker, machine = Tracker(cfg.end_after_s), EventMachine("door", rules, cfg, clock=lambda: 1e9)
    pixel = Detection("fire", 0.6, (100, 100, 200, 200), "fire")
    model = Detection("fire", 0.9, (150, 120, 260, 220), "byo-fire")
    frames = [[pixel, model]] * 5 + [[model]] * 50  # then only the model sees it, for 5 s
    out: list[Transition] = []
    at_start: dict[str, tuple] = {}  # (box, score, track id) as the event started (the record lives on)
    for i, dets in enumerate(frames):
        now = machine.step(tracker.update(dets, i / 10), i, i / 10, 640, 480)
        at_start |= {
            t.event.rule: (t.event.box, t.event.score, t.event.track_id) for t in now if t.kind == "start"
        }
        out += now
    out += machine.finish(len(frames) - 1, (len(frames) - 1) / 10)
    assert sorted(t.event.rule for t in out if t.kind == "start") == ["any", "model", "pixel"]
    assert len({track for _, _, track in at_start.values()}) == 1, "one fire, one track id"
    assert at_start["pixel"][:2] == ((100, 100, 200, 200), 0.6)
    assert at_start["model"][:2] == ((150, 120, 260, 220), 0.9)
    assert at_start["any"][:2] == ((100, 100, 260, 220), 0.9)
    ends = {t.event.rule: t.frame for t in out if t.kind == "end"}
    assert ends["pixel"] < 40 and ends["any"] == ends["model"] == len(frames) - 1  # pixel's ends 3 s after
    assert [t.label for t in tracker.tracks.values()] == ["fire"], "the counted, shown region stays one"


@pytest.mark.skipif(not PEOPLE.is_file(), reason=f"test clip not found at {PEOPLE} (../shared is missing)")
def test_edge_scan_takes_fire_from_the_extra_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`edge scan --config` as an installer runs it, on the clip's first 8 s (copied to tmp_path)."""
    capture, excerpt = cv2.VideoCapture(str(PEOPLE)), tmp_path / "excerpt.mp4"
    writer = cv2.VideoWriter(str(excerpt), cv2.VideoWriter_fourcc(*"mp4v"), 10, (768, 432))
    for _ in range(80):
        ok, image = capture.read()
        assert ok
        writer.write(image)
    writer.release()
    capture.release()
    rules = [FLAMES, {"name": "fire-pixel", "label": "fire", "source": "pixel"}]
    config = write_config(tmp_path, rules)
    # A child process, as users run it (scan() binds sys.stdout when imported: capsys cannot take it over).
    cmd = [sys.executable, "-m", "edge", "scan", "--config", str(config), str(excerpt)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    starts = [ln for ln in lines if ln["type"] == "start"]
    assert len(starts) == 1 and starts[0]["label"] == "fire" and starts[0]["pts"] <= 2.0
    assert lines[-1]["type"] == "summary" and lines[-1]["frames"] == 80 and "model" in lines[-1]["stage_ms"]

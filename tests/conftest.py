"""Shared test fixtures: where the real media and model live (../shared beside the repo)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import cv2
import pytest

from tests.support import MjpegServer, Mosquitto, free_port

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
DATA = SHARED / "data"
MODEL = SHARED / "models" / "yolox_nano.onnx"

needs_shared = pytest.mark.skipif(
    not MODEL.exists(), reason=f"test media and model not found in {SHARED} (see DESIGN.md)"
)


@pytest.fixture(scope="session")
def ground_truth() -> dict:
    return json.loads((DATA / "ground_truth.json").read_text())


@pytest.fixture
def mjpeg_server() -> Iterator[MjpegServer]:
    if not DATA.is_dir():
        pytest.skip(f"test media not found in {DATA}")
    capture = cv2.VideoCapture(str(DATA / "non_fire_lookalike" / "intel_car-detection.mp4"))
    jpegs = []
    for _ in range(25):
        ok, image = capture.read()
        assert ok
        jpegs.append(cv2.imencode(".jpg", cv2.resize(image, (384, 216)))[1].tobytes())
    capture.release()
    server = MjpegServer(jpegs, free_port())
    server.start()
    yield server
    if not server._stopped.is_set():
        server.stop()


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A real broker on a free port (Debian's mosquitto; `./reflex test` and .ci/run install it)."""
    if shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists():
        pytest.fail("mosquitto is not installed: run the tests with ./reflex test (it installs it)")
    broker = Mosquitto(tmp_path)
    broker.start()
    yield broker
    broker.kill()

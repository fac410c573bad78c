"""Shared test fixtures: where the real media and model live (../shared beside the repo)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

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

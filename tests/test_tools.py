"""tools/fetch_model --from: installing an offline copy (a USB stick on site), run as the real tool.

The model is read from ../shared/models (never copied into the repo); a corrupted copy goes to tmp_path.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

from edge.reflex.manifest import load_manifest
from tests.conftest import MODEL, REPO, needs_shared

FETCH = REPO / "tools" / "fetch_model"
SHA256 = load_manifest(REPO / "models" / "yolox_nano.yaml").sha256


def _fetch_from(source: Path, dest: Path) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, str(FETCH), "--from", str(source), "--dest", str(dest)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@needs_shared
def test_fetch_model_from_file_installs_the_verified_copy(tmp_path: Path) -> None:
    dest = tmp_path / "cache"
    result = _fetch_from(MODEL, dest)
    assert result.returncode == 0, result.stderr
    installed = dest / "yolox_nano.onnx"
    assert result.stdout.strip() == str(installed)
    assert result.stderr == ""
    assert sorted(p.name for p in dest.iterdir()) == ["yolox_nano.onnx"]  # no temp file left
    assert _sha256(installed) == SHA256


@needs_shared
def test_fetch_model_from_file_replaces_a_corrupt_installed_model(tmp_path: Path) -> None:
    dest = tmp_path / "cache"
    dest.mkdir()
    (dest / "yolox_nano.onnx").write_bytes(b"truncated")
    usb = tmp_path / "usb" / "YOLOX Nano (copy).onnx"  # any name: installed under the manifest's
    usb.parent.mkdir()
    shutil.copyfile(MODEL, usb)
    result = _fetch_from(usb, dest)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in dest.iterdir()) == ["yolox_nano.onnx"]
    assert _sha256(dest / "yolox_nano.onnx") == SHA256


@needs_shared
def test_fetch_model_from_corrupted_copy_installs_nothing(tmp_path: Path) -> None:
    corrupt = tmp_path / "yolox_nano.onnx"
    data = bytearray(MODEL.read_bytes())
    data[len(data) // 2] ^= 0xFF
    corrupt.write_bytes(data)
    dest = tmp_path / "cache"
    result = _fetch_from(corrupt, dest)
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"fetch_model: sha256 mismatch for {corrupt} ")
    assert f"expected {SHA256[:12]}" in lines[0]
    assert f"got {_sha256(corrupt)[:12]}" in lines[0]
    assert list(dest.iterdir()) == []  # nothing installed, no partial file left


def test_fetch_model_from_missing_file_is_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "usb" / "yolox_nano.onnx"
    dest = tmp_path / "cache"
    result = _fetch_from(missing, dest)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == f"fetch_model: offline copy not found: {missing}\n"
    assert not dest.exists()

"""Model manifests: where a model comes from, how to prove it is the right file, and how to feed it.

A manifest is the single place that knows a model's pre-processing and output layout, so swapping a
model is a YAML change, and a file that does not match its sha256 never reaches the detector (a wrong
file would not crash; it would silently miss intruders).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

CACHE_DIR = Path("models") / "cache"
"""Default home of downloaded models and built engines, relative to the base folder."""

_CHUNK = 1 << 20


class ModelError(Exception):
    """A model or manifest the appliance cannot use; str() is a one-line message for users."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InputSpec(_Strict):
    width: int = Field(gt=0)
    height: int = Field(gt=0)
    layout: Literal["NCHW"] = "NCHW"
    dtype: Literal["float32"] = "float32"


class PreprocessSpec(_Strict):
    colour: Literal["bgr", "rgb"]
    """Channel order the model expects; frames arrive BGR (OpenCV order)."""
    scale: Literal["raw", "unit"]
    """raw: 0-255 as decoded; unit: divided by 255."""
    mean: tuple[float, float, float] | None = None
    """Subtracted after scaling, in the model's channel order."""
    std: tuple[float, float, float] | None = None
    """Divided after the mean, in the model's channel order."""
    letterbox: Literal["top_left", "centre", "stretch"]
    pad_value: int = Field(114, ge=0, le=255)


class DecoderSpec(_Strict):
    family: Literal["yolox", "yolov8"]
    """The output layout. yolox: grid rows [tx, ty, tw, th, obj, p_0 .. p_C-1]. yolov8: the Ultralytics
    YOLOv8 / YOLO11 ONNX export, (1, 4 + C, N) (or (1, N, 4 + C)) of cx, cy, w, h in input pixels and
    the class scores, no objectness."""
    strides: list[int] = Field(min_length=1)
    """yolox: required. yolov8: optional, [8, 16, 32] (P3-P5) unless given; they fix N."""
    scores: Literal["sigmoid_applied", "logits"]
    """Whether objectness and class scores leave the graph already in [0, 1] (yolov8: optional,
    sigmoid_applied, as Ultralytics exports it)."""

    @model_validator(mode="before")
    @classmethod
    def _yolov8_defaults(cls, data: object) -> object:
        if isinstance(data, dict) and data.get("family") == "yolov8":
            return {"strides": [8, 16, 32], "scores": "sigmoid_applied", **data}
        return data

    @field_validator("strides")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if any(s <= 0 for s in v):
            raise ValueError("strides must be positive")
        return v


class ModelManifest(_Strict):
    name: str
    file: str
    """File name (no folders) of the model in the cache."""
    url: str
    """Official source; tools/fetch_model downloads it."""
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    input: InputSpec
    preprocess: PreprocessSpec
    decoder: DecoderSpec
    labels: list[str] = Field(min_length=1)
    """labels[i] is the name of class id i."""

    @field_validator("file")
    @classmethod
    def _plain_name(cls, v: str) -> str:
        if not v or Path(v).name != v:
            raise ValueError("file must be a plain file name, without folders")
        return v

    @field_validator("labels")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        seen: set[str] = set()
        for label in v:
            if label in seen:
                raise ValueError(f"label {label!r} is listed twice")
            seen.add(label)
        return v

    @model_validator(mode="after")
    def _grid_fits(self) -> ModelManifest:
        for s in self.decoder.strides:
            if self.input.width % s or self.input.height % s:
                size = f"{self.input.width}x{self.input.height}"
                raise ValueError(f"input {size} is not a multiple of stride {s}")
        return self


def load_manifest(path: str | Path) -> ModelManifest:
    """Read and validate a manifest, turning any problem into one line that names the file."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"{p}: model manifest not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelError(f"{p}: cannot read model manifest: {exc}") from None
    except yaml.YAMLError as exc:
        raise ModelError(f"{p}: not valid YAML: {str(exc).splitlines()[0]}") from None
    try:
        return ModelManifest.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "(top level)"
        msg = f"unknown key '{first['loc'][-1]}'" if first["type"] == "extra_forbidden" else first["msg"]
        raise ModelError(f"{p}: {where}: {msg}") from None


def resolve_model_path(manifest: ModelManifest, cfg_path_override: str | None, base_dir: Path) -> Path:
    """The model file to load: the config's model.path if set, else models/cache/<file>, under base_dir."""
    path = Path(cfg_path_override) if cfg_path_override else CACHE_DIR / manifest.file
    return path if path.is_absolute() else base_dir / path


def _copy_hashing(src: BinaryIO, out: BinaryIO | None = None) -> str:
    """Read src to the end (copying it to out, if given) and return its sha256 in hex."""
    digest = hashlib.sha256()
    while chunk := src.read(_CHUNK):
        digest.update(chunk)
        if out is not None:
            out.write(chunk)
    return digest.hexdigest()


def _file_sha256(path: Path) -> str:
    with path.open("rb") as f:
        return _copy_hashing(f)


_verified: set[tuple[str, int, int, str]] = set()
"""(path, size, mtime_ns, sha256) already checked: several cameras share one model file."""


def verify_sha256(path: Path, expected: str) -> None:
    """Raise ModelError unless the sha256 is `expected`; an unchanged file that passed is not re-read."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ModelError(f"model file not found: {path}; run tools/fetch_model or set model.path") from None
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, expected)
    if key in _verified:
        return
    actual = _file_sha256(path)
    if actual != expected:
        raise ModelError(
            f"{path}: sha256 mismatch (expected {expected}, got {actual}); "
            "the file is corrupt or not this manifest's model, run tools/fetch_model again"
        )
    _verified.add(key)


def fetch_model(
    manifest: ModelManifest, dest_dir: Path, timeout: float = 60.0, *, from_file: Path | None = None
) -> Path:
    """Install the manifest's model into dest_dir, moving it into place only after its sha256 matches.

    By default it is downloaded from the manifest's url, and a file that is already there and verifies is
    kept, so provisioning can run this every time. With from_file (an offline copy, e.g. on a USB stick)
    that file is copied instead, always checked, and installed under the manifest's file name.
    """
    if from_file is not None:
        if not from_file.is_file():
            missing = "is not a file" if from_file.exists() else "not found"
            raise ModelError(f"offline copy {missing}: {from_file}")
        return _install_verified(manifest, dest_dir, str(from_file), lambda: from_file.open("rb"), "read")
    target = dest_dir / manifest.file
    if target.is_file():
        with contextlib.suppress(ModelError):
            verify_sha256(target, manifest.sha256)
            return target
    url = manifest.url
    return _install_verified(
        manifest, dest_dir, url, lambda: urllib.request.urlopen(url, timeout=timeout), "download"
    )


def _install_verified(
    manifest: ModelManifest, dest_dir: Path, source: str, open_source: Callable[[], BinaryIO], verb: str
) -> Path:
    """Copy open_source() into dest_dir/<manifest.file> atomically (temp file + rename) if its sha256 matches.

    On any failure nothing is installed and no partial file is left; an existing file there is untouched.
    """
    target = dest_dir / manifest.file
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=dest_dir, prefix=f".{manifest.file}.", suffix=".part")
    except OSError as exc:
        raise ModelError(f"cannot write to {dest_dir}: {exc.strerror or exc}") from None
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, open_source() as src:
            actual = _copy_hashing(src, out)
            out.flush()
            os.fsync(out.fileno())
        if actual != manifest.sha256:
            raise ModelError(
                f"sha256 mismatch for {source} (expected {manifest.sha256[:12]}..., got {actual[:12]}...); "
                "nothing was installed"
            )
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; the model is no secret and a service user reads it
        os.replace(tmp, target)
    except urllib.error.HTTPError as exc:
        raise ModelError(f"cannot {verb} {source}: HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise ModelError(f"cannot {verb} {source}: {exc.reason} (offline?)") from None
    except OSError as exc:  # TimeoutError included
        raise ModelError(f"cannot {verb} {source}: {exc.strerror or exc}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return target

"""The TensorRT engine cache: which engine file belongs to which build inputs, without TensorRT.

A TensorRT engine is only valid for the exact ONNX file, TensorRT version, GPU (and its compute
capability), precision and DLA core it was built with; loading one built for anything else at best
fails and at worst runs wrong. So every engine is filed under a key of all of them:

- the file name carries the key (`<model stem>.<key>.engine`), so an engine for other inputs is simply
  never looked up, and
- the file starts with a header line holding the key and what it was built from, checked on every
  load, so a renamed or copied engine is refused as well (it is rebuilt).

Everything here is plain Python and file I/O, so it is tested where TensorRT is not installed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

log = logging.getLogger("edge.reflex")

MAGIC = b"REFLEX-TRT-ENGINE 1\n"
"""First line of every cached engine; the second is its JSON metadata, the TensorRT plan follows."""
_HEADER_MAX = 64 * 1024
KEY_LENGTH = 16
"""Hex digits of the key (64 bits): plenty to tell a handful of builds apart, short enough to read."""
CALIBRATION_SUFFIXES = {".jpg", ".jpeg", ".png"}


def gpu_identity(name: str, capability: tuple[int, int] | None = None) -> str:
    """What names a GPU in the key: its name and compute capability, e.g. "Orin (sm_87)"."""
    name = " ".join(name.split())
    return f"{name} (sm_{capability[0]}{capability[1]})" if capability else name


def engine_key(
    onnx_sha256: str,
    trt_version: str,
    gpu_name: str,
    precision: str,
    dla_core: int | None,
    *,
    calibration: str | None = None,
) -> str:
    """The key of an engine: changes when any input changes, and only then.

    gpu_name: gpu_identity() (name and compute capability). calibration: for int8, the digest of the
    calibration frames (calibration_digest()); ignored for fp16/fp32, whose engines do not depend on it.
    """
    inputs = {
        "format": 1,
        "onnx_sha256": onnx_sha256.lower(),
        "tensorrt": trt_version,
        "gpu": gpu_name,
        "precision": precision,
        "dla_core": dla_core,
        "calibration": calibration if precision == "int8" else None,
    }
    canonical = json.dumps(inputs, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:KEY_LENGTH]


def engine_filename(model_stem: str, key: str) -> str:
    """The cache file of an engine: `<model stem>.<key>.engine` (yolox_nano.0123456789abcdef.engine)."""
    return f"{model_stem}.{key}.engine"


def calibration_frames(folder: Path) -> list[Path]:
    """The images of an INT8 calibration folder (JPEG/PNG, any depth), in a stable order."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in CALIBRATION_SUFFIXES and p.is_file())


def calibration_digest(folder: Path) -> str:
    """sha256 over the calibration frames (relative names and contents): new frames, new key."""
    digest = hashlib.sha256()
    for path in calibration_frames(folder):
        digest.update(str(path.relative_to(folder)).encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def engines_of(cache_dir: Path, model_stem: str) -> list[Path]:
    """Every cached engine of one model, whatever its key."""
    pattern = re.compile(re.escape(model_stem) + rf"\.[0-9a-f]{{{KEY_LENGTH}}}\.engine")
    try:
        return sorted(p for p in cache_dir.iterdir() if pattern.fullmatch(p.name))
    except OSError:
        return []


def read_header(path: Path) -> dict[str, Any] | None:
    """The metadata of a cached engine, or None when the file is missing or not one of ours."""
    try:
        with path.open("rb") as f:
            if f.read(len(MAGIC)) != MAGIC:
                return None
            line = f.readline(_HEADER_MAX)
    except OSError:
        return None
    try:
        meta = json.loads(line)
    except ValueError:
        return None
    return meta if isinstance(meta, dict) and isinstance(meta.get("key"), str) else None


def read_engine(path: Path, key: str) -> bytes | None:
    """The TensorRT plan in `path` if it was built for `key`; None when missing, foreign or stale."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if not data.startswith(MAGIC):
        return None
    end = data.find(b"\n", len(MAGIC), len(MAGIC) + _HEADER_MAX)
    if end < 0:
        return None
    try:
        meta = json.loads(data[len(MAGIC) : end])
    except ValueError:
        return None
    if not isinstance(meta, dict) or meta.get("key") != key:
        return None
    plan = data[end + 1 :]
    return plan if plan else None


def write_engine(path: Path, key: str, plan: bytes, meta: dict[str, Any] | None = None) -> None:
    """Store a plan under its key atomically (temp file + rename): a crash never leaves half an engine."""
    header = {**(meta or {}), "key": key}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(MAGIC + json.dumps(header, sort_keys=True).encode() + b"\n")
            out.write(plan)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@dataclass(frozen=True)
class CacheState:
    """What the cache holds for one model and key."""

    state: Literal["fresh", "stale", "none"]
    """fresh: an engine for this key; stale: only engines for other inputs (they are rebuilt, never
    loaded); none: no engine for this model yet."""
    path: Path
    """The file the engine for this key is (or will be) in."""
    stale: list[Path] = field(default_factory=list)
    """Engines of this model built for other inputs (or not ours, or damaged)."""
    meta: dict[str, Any] | None = None
    """The fresh engine's metadata (when built, how long it took, what from)."""


def cache_state(cache_dir: Path, model_stem: str, key: str) -> CacheState:
    path = cache_dir / engine_filename(model_stem, key)
    meta = read_header(path)
    fresh = meta is not None and meta.get("key") == key
    stale = [p for p in engines_of(cache_dir, model_stem) if not (fresh and p == path)]
    if fresh:
        return CacheState("fresh", path, stale, meta)
    return CacheState("stale" if stale else "none", path, stale)


def _superseded(cache_dir: Path, model_stem: str, keep: Path, meta: dict[str, Any]) -> list[Path]:
    """Engines of this model for the same precision and DLA core but older inputs (another ONNX,
    TensorRT or GPU): replaced by the new build. Other precisions are left for whoever uses them."""
    same = ("precision", "dla_core")
    out = []
    for path in engines_of(cache_dir, model_stem):
        if path == keep:
            continue
        other = read_header(path)
        if other is None or all(other.get(k) == meta.get(k) for k in same):
            out.append(path)
    return out


def load_or_build(
    path: Path,
    key: str,
    build: Callable[[], bytes],
    meta: dict[str, Any] | None = None,
    *,
    force: bool = False,
) -> tuple[bytes, bool, float]:
    """The plan for `key`: read from `path` when it was built for that key, else built, stored there,
    and the engines it supersedes removed. Returns (plan, built, build seconds; 0 when read)."""
    if not force:
        plan = read_engine(path, key)
        if plan is not None:
            return plan, False, 0.0
        if path.exists():
            log.warning("%s: not an engine for this model, TensorRT and GPU (stale); rebuilding", path)
    t0 = time.monotonic()
    plan = build()
    seconds = time.monotonic() - t0
    header = {**(meta or {}), "built_at": time.time(), "build_s": round(seconds, 1)}
    try:
        write_engine(path, key, plan, header)
    except OSError as exc:  # run with it all the same; only the next start pays the build again
        log.warning(
            "cannot keep the engine in %s (%s): it is rebuilt at every start; set model.engine_cache "
            "to a writable folder",
            path.parent,
            exc.strerror or exc,
        )
        return plan, True, seconds
    stem = path.name[: -len(engine_filename("", key))]
    for old in _superseded(path.parent, stem, path, header):
        with contextlib.suppress(OSError):
            old.unlink()
            log.info("removed superseded engine %s", old)
    return plan, True, seconds

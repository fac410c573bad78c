"""Alert snapshots: the frame with the box and label drawn, stored as JPEG files next to the database.

Files are written to a temporary name, flushed to disk and renamed into place, so a reader (the admin
page, the MQTT snapshot publisher) or a power cut never sees half a JPEG.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import time
from pathlib import Path

import cv2
import numpy as np

from edge.types import Box

JPEG_QUALITY = 85
BOX_COLOUR = (0, 0, 255)  # BGR red: the colour staff read as "alert"
TEXT_COLOUR = (255, 255, 255)
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def safe_name(value: str) -> str:
    """A file-name-safe form of a camera name or event id (ids come from code, but never trust a path)."""
    cleaned = _UNSAFE.sub("_", value).lstrip(".")
    return cleaned or "_"


def relative_path(camera: str, event_id: str, now: float) -> str:
    """'<camera>/<YYYY-MM-DD>/<event>-<microseconds>.jpg': per camera and local day, so an installer can
    browse it and retention empties whole day folders."""
    day = time.strftime("%Y-%m-%d", time.localtime(now))
    return f"{safe_name(camera)}/{day}/{safe_name(event_id)}-{int(now * 1_000_000)}.jpg"


def _as_bgr(image: np.ndarray) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.size == 0:
        raise ValueError("snapshot image must be a non-empty uint8 array")
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim == 3 and image.shape[2] == 3:
        return image.copy()
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    raise ValueError(f"snapshot image has shape {image.shape}; expected H x W, H x W x 3 or H x W x 4")


def render_jpeg(image: np.ndarray, box: Box | None, label: str, score: float) -> bytes:
    """JPEG bytes of a copy of `image` with the box and '<label> <score>' drawn (the caller's frame is
    untouched: other stages may still read it)."""
    canvas = _as_bgr(image)
    height, width = canvas.shape[:2]
    scale = max(0.4, min(height, width) / 720)
    thickness = max(1, round(2 * scale))
    line = max(2, round(3 * scale))  # survives JPEG chroma subsampling and phone-sized previews
    caption = f"{label} {score:.2f}"
    (text_w, text_h), baseline = cv2.getTextSize(caption, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    if box is None:
        x, y = 0, 0
    else:
        x1, y1, x2, y2 = (round(float(v)) for v in box)
        x1, x2 = sorted((min(max(x1, 0), width - 1), min(max(x2, 0), width - 1)))
        y1, y2 = sorted((min(max(y1, 0), height - 1), min(max(y2, 0), height - 1)))
        cv2.rectangle(canvas, (x1, y1), (x2, y2), BOX_COLOUR, line)
        x = x1
        y = y1 - text_h - baseline if y1 >= text_h + baseline else y1  # above the box, else inside it
    x = min(x, max(width - text_w, 0))
    cv2.rectangle(canvas, (x, y), (x + text_w, y + text_h + baseline), BOX_COLOUR, cv2.FILLED)
    cv2.putText(
        canvas, caption, (x, y + text_h), cv2.FONT_HERSHEY_SIMPLEX, scale, TEXT_COLOUR, thickness, cv2.LINE_AA
    )
    ok, buf = cv2.imencode(".jpg", canvas, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise ValueError("OpenCV could not encode the snapshot as JPEG")
    return buf.tobytes()


def write_atomic(path: Path, data: bytes, mode: int = 0o666) -> None:
    """Write `data` to `path` via a fsynced temporary file and a rename (all or nothing). `mode`: the
    file's permissions (less the umask) from the moment it exists, e.g. 0o600 for a secret; the
    temporary file has a name of its own and is created new (never an existing file or link)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def remove_file(root: Path, relative: str) -> int:
    """Delete a snapshot file and its day folder once empty; returns the bytes freed (0 if gone)."""
    path = root / relative
    try:
        size = path.stat().st_size
        path.unlink()
    except FileNotFoundError:
        return 0
    with contextlib.suppress(OSError):  # not empty yet: later snapshots of that day remain
        path.parent.rmdir()
    return size

"""Blue-loop jobs and results (DESIGN.md "Blue-loop job (contract)").

A request is checked whole against edge/outbox/schemas/blue_request.json before any reasoner sees it;
a job that cannot be used gets a `failed` result that says why, when its job_id and device can be
read (the device also comes from the request topic), and is otherwise logged once and dropped.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np

import edge.outbox
from edge.outbox import blue_result_payload

SCHEMAS = Path(edge.outbox.__file__).resolve().parent / "schemas"
KINDS = ("describe", "report", "read_text", "ui_html", "verify")
"""Task kinds the reasoners know; any other kind is answered `failed`, saying which ones exist."""
NEED_FRAMES = frozenset({"report", "read_text", "ui_html", "verify"})
"""`describe` can speak from the context alone (recent events, counts); the others look at frames."""
MAX_FRAMES = 64


class JobError(ValueError):
    """The request cannot be worked on; the message is the `failed` result's text."""


@dataclass(frozen=True, slots=True)
class Frame:
    ts: float
    jpeg: bytes

    def image(self) -> np.ndarray:
        """The decoded BGR frame (decoded on demand: a report over many frames holds only JPEGs)."""
        image = cv2.imdecode(np.frombuffer(self.jpeg, np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            raise JobError(f"frame at {self.ts}: not a decodable JPEG")
        return image

    def b64(self) -> str:
        return base64.b64encode(self.jpeg).decode("ascii")


@dataclass(slots=True)
class Job:
    job_id: str
    device: str
    camera: str | None
    ask_id: str | None
    kind: str
    prompt: str
    frames: list[Frame]
    context: dict[str, Any]
    deadline: float
    received: float = field(default_factory=time.time)

    @property
    def remaining_s(self) -> float:
        return self.deadline - time.time()

    def expired(self) -> bool:
        return time.time() >= self.deadline


@dataclass(slots=True)
class Result:
    status: str  # done | failed | timeout
    text: str
    data: Any = None
    html: str | None = None

    def payload(self, job_id: str, elapsed_ms: float) -> dict[str, Any]:
        return blue_result_payload(job_id, self.status, self.text, self.data, elapsed_ms, self.html)


@cache
def _validator() -> Any:
    from jsonschema import Draft202012Validator

    schema = json.loads((SCHEMAS / "blue_request.json").read_text())
    return Draft202012Validator(schema)


def _where(error: Any) -> str:
    path = ""
    for part in error.absolute_path:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "request"


def identify(raw: bytes, topic_device: str | None) -> tuple[str | None, str | None, Any]:
    """(job_id, device, parsed JSON or None): what can be read of a request, even a broken one."""
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None, None, None
    if not isinstance(doc, dict):
        return None, None, doc
    job_id = doc.get("job_id") if isinstance(doc.get("job_id"), str) and doc.get("job_id") else None
    device = doc.get("device") if isinstance(doc.get("device"), str) and doc.get("device") else None
    return job_id, device or topic_device, doc


def parse_job(doc: Any, device: str) -> Job:
    """A checked Job from a request document, or JobError listing every problem found."""
    if not isinstance(doc, dict):
        raise JobError("malformed job: the request is not a JSON object")
    problems = sorted(_validator().iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))
    if problems:
        listed = "; ".join(f"{_where(e)}: {e.message}" for e in problems[:5])
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise JobError(f"malformed job: {listed}{more}")
    kind = doc["kind"]
    frames = []
    for i, item in enumerate(doc["frames"][:MAX_FRAMES]):
        try:
            jpeg = base64.b64decode(item["jpeg_b64"], validate=True)
        except (binascii.Error, ValueError):
            raise JobError(f"malformed job: frames[{i}].jpeg_b64 is not base64") from None
        if not jpeg.startswith(b"\xff\xd8"):
            raise JobError(f"malformed job: frames[{i}] is not a JPEG")
        frames.append(Frame(float(item["ts"]), jpeg))
    if kind in NEED_FRAMES and not frames:
        raise JobError(f"malformed job: a {kind} job needs at least one frame and has none")
    return Job(
        job_id=doc["job_id"],
        device=device,
        camera=doc["camera"],
        ask_id=doc["ask_id"],
        kind=kind,
        prompt=doc["prompt"],
        frames=frames,
        context=doc["context"],
        deadline=float(doc["deadline"]),
    )


def unknown_kind(kind: str) -> Result:
    return Result("failed", f"unknown job kind {kind!r}: this server does {', '.join(KINDS)}")

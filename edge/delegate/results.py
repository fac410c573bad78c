"""A blue-loop result as it arrives on `…/blue/result`, checked against the contract
(edge/outbox/schemas/blue_result.json) by hand: jsonschema is a test-only dependency."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from edge.outbox import PAYLOAD_VERSION
from edge.outbox.payloads import RESULT_STATUSES

MAX_RESULT_BYTES = 32 * 1024 * 1024
MAX_ID = 200


class ResultError(ValueError):
    """A message on blue/result that is not a result, in one line."""


@dataclass(frozen=True, slots=True)
class JobResult:
    job_id: str
    status: str
    """done / failed / timeout."""
    text: str
    data: Any
    html: str | None
    elapsed_ms: float


def parse_result(payload: bytes, max_bytes: int = MAX_RESULT_BYTES) -> JobResult:
    if len(payload) > max_bytes:
        raise ResultError(f"{len(payload)} bytes, more than the {max_bytes} accepted")
    try:
        data = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ResultError(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ResultError("not a JSON object")
    missing = [k for k in ("v", "job_id", "status", "text", "data", "elapsed_ms") if k not in data]
    if missing:
        raise ResultError(f"missing {', '.join(missing)}")
    if data["v"] != PAYLOAD_VERSION:
        raise ResultError(f"v is {data['v']!r}, expected {PAYLOAD_VERSION}")
    job_id = data["job_id"]
    if not isinstance(job_id, str) or not 0 < len(job_id) <= MAX_ID:
        raise ResultError("job_id must be a non-empty string")
    if data["status"] not in RESULT_STATUSES:
        known = ", ".join(RESULT_STATUSES)
        raise ResultError(f"job {job_id}: status {data['status']!r} is not one of {known}")
    if not isinstance(data["text"], str):
        raise ResultError(f"job {job_id}: text must be a string")
    elapsed = data["elapsed_ms"]
    if isinstance(elapsed, bool) or not isinstance(elapsed, (int, float)) or elapsed < 0:
        raise ResultError(f"job {job_id}: elapsed_ms must be a number >= 0")
    html = data.get("html")
    if html is not None and not isinstance(html, str):
        raise ResultError(f"job {job_id}: html must be a string")
    return JobResult(job_id, data["status"], data["text"], data["data"], html or None, float(elapsed))

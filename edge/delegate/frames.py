"""Keyframes for a job: a few, evenly spread, within a byte budget.

A job's request is one MQTT message behind the alerts; it must stay small enough that a LAN broker
and a worker take it in a moment. So at most MAX_FRAMES frames of the asked window, evenly spread
(first and last included), and at most MAX_JPEG_BYTES of JPEG in all: the JPEG quality is lowered
first, then frames are left out (still evenly spread) until it fits.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from edge.live import Keyframe

MAX_FRAMES = 8
MAX_JPEG_BYTES = 1_500_000
QUALITIES = (85, 70, 55, 40)
"""JPEG qualities tried in turn until the frames fit the budget."""

T = TypeVar("T")


def spread(items: Sequence[T], n: int) -> list[T]:
    """`n` of `items`, evenly spread, first and last included (all of them when there are few)."""
    if n <= 0 or not items:
        return []
    if len(items) <= n:
        return list(items)
    if n == 1:
        return [items[-1]]
    step = (len(items) - 1) / (n - 1)
    return [items[round(i * step)] for i in range(n)]


@dataclass(frozen=True, slots=True)
class EncodedFrames:
    frames: list[dict[str, Any]]
    """[{ts, jpeg_b64}] as the request carries them, oldest first."""
    jpeg_bytes: int
    quality: int


def encode_frames(
    keyframes: Sequence[Keyframe], max_frames: int = MAX_FRAMES, max_bytes: int = MAX_JPEG_BYTES
) -> EncodedFrames:
    chosen = spread(keyframes, max_frames)
    jpegs: list[bytes] = []
    quality = QUALITIES[0]
    for quality in QUALITIES:
        jpegs = [k.jpeg(quality) for k in chosen]
        if sum(map(len, jpegs)) <= max_bytes:
            break
    pairs = list(zip(chosen, jpegs, strict=True))
    while pairs and sum(len(j) for _, j in pairs) > max_bytes:
        pairs = spread(pairs, len(pairs) - 1)
    return EncodedFrames(
        [{"ts": round(k.at, 3), "jpeg_b64": base64.b64encode(j).decode("ascii")} for k, j in pairs],
        sum(len(j) for _, j in pairs),
        quality,
    )

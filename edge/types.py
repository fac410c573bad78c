"""Value types that travel between red-loop stages.

Kept in one small module so that capture, gate, reflex, rules and store agree on one shape without
importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

Box = tuple[float, float, float, float]
"""x1, y1, x2, y2 in pixels of the original frame."""


@dataclass(slots=True)
class Frame:
    """One decoded picture with the facts later stages need to be honest about timing."""

    camera: str
    index: int
    """0-based decoded frame index in the stream."""
    pts: float
    """Stream time in seconds from the stream start."""
    image: np.ndarray
    """BGR uint8, H x W x 3 (OpenCV order)."""
    arrived: float
    """time.monotonic() when capture handed the frame over; alert latency is measured from here."""
    decode_ms: float = 0.0
    damaged: bool = False
    """The decoder skipped or concealed data just before or in this frame (it may show smears until the
    next keyframe): detectors that compare frames over time must not learn from it."""
    origin: str | None = None
    """For a picture source (an image, a folder of images): the file name this frame was read from."""


@dataclass(slots=True)
class Detection:
    """One thing a detector saw in one frame."""

    label: str
    score: float
    box: Box
    detector: str = "objects"
    extra: dict[str, float] = field(default_factory=dict)


@dataclass(slots=True)
class EventRecord:
    """One real-world happening (a person walking through, a fire) as the event log keeps it."""

    id: str
    camera: str
    label: str
    rule: str
    score: float
    box: Box | None
    started_at: float
    """Wall-clock epoch seconds."""
    frame: int
    pts: float
    track_id: int | None = None
    zones: list[str] = field(default_factory=list)
    ended_at: float | None = None
    snapshot: str | None = None
    """Path of the event's best snapshot, relative to the snapshot folder."""


@dataclass(slots=True)
class AlertRecord:
    """One alert as published (and first written to the outbox)."""

    id: str
    event_id: str
    rule: str
    camera: str
    label: str
    severity: str
    text: str
    at: float
    """Wall-clock epoch seconds."""
    frame: int
    pts: float
    box: Box | None = None
    phase: str = "confirmed"
    snapshot: str | None = None

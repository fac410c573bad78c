"""Pydantic models for the one YAML config file.

Every model forbids unknown keys so that a typo in the field ("treshold") is an error that names the
key and its line, not a setting silently ignored on a security device.
"""

from __future__ import annotations

import re
from datetime import time as dtime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def _check_name(value: str, what: str) -> str:
    if not NAME_RE.match(value):
        raise ValueError(
            f"{what} {value!r} must be 1-63 characters of a-z, 0-9, '_' or '-' "
            "(it becomes part of MQTT topics)"
        )
    return value


CameraName = Annotated[str, AfterValidator(lambda v: _check_name(v, "camera name"))]


class DeviceConfig(Strict):
    id: str = "reflex-edge"

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        return _check_name(v, "device id")


class CameraConfig(Strict):
    source: str
    """File, folder, image, rtsp://, http(s)://, usb:N / /dev/videoN, or csi://N (jetson-utils)."""
    loop: bool = False
    """Replay a file source forever (demos, soak tests)."""
    realtime: bool = True
    """Pace file sources at their native fps, as a camera would deliver them."""
    enabled: bool = True
    detect: bool = True
    alerts: bool = True
    reconnect_min_s: float = Field(1.0, gt=0)
    reconnect_max_s: float = Field(30.0, gt=0)


class GateConfig(Strict):
    enabled: bool = True
    width: int = Field(160, ge=32, le=1280)
    """Width of the grey thumbnail the gate compares; cost grows with its area."""
    pixel_threshold: int = Field(20, ge=1, le=255)
    """Grey-level difference (0-255) that counts a thumbnail pixel as changed."""
    area_threshold: float = Field(0.002, gt=0, lt=1)
    """Fraction of changed thumbnail pixels that wakes the engine."""
    background_alpha: float = Field(0.05, gt=0, le=1)
    """How fast the running background follows the scene (gradual light change)."""
    refresh_s: float = Field(2.0, gt=0)
    """Wake at least this often even in a still scene (still intruder, slowly growing fire)."""
    event_refresh_s: float = Field(0.5, gt=0)
    """While an event is open, wake at least this often even without motion: a still intruder stays
    seen, and one who left is found gone within a few looks instead of every frame until it ends."""


class ModelConfig(Strict):
    manifest: str = "models/yolox_nano.yaml"
    path: str | None = None
    """Model file; defaults to the manifest's file under models/cache/."""
    backend: Literal["auto", "onnxruntime", "tensorrt"] = "auto"
    threads: int = Field(0, ge=0)
    """Inference threads (0: the runtime's default)."""
    score_threshold: float = Field(0.3, gt=0, lt=1)
    nms_iou: float = Field(0.45, gt=0, lt=1)


class FireConfig(Strict):
    enabled: bool = True
    min_score: float = Field(0.5, gt=0, lt=1)


class Schedule(Strict):
    days: list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]] = Field(
        default_factory=lambda: ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
    )
    start: dtime = dtime(0, 0)
    end: dtime = dtime(23, 59, 59)


class RuleConfig(Strict):
    name: str
    label: str
    cameras: list[str] | None = None
    """None: every camera."""
    min_score: float = Field(0.5, gt=0, le=1)
    min_area: float = Field(0.0, ge=0, le=1)
    """Smallest box area as a fraction of the frame."""
    zone: list[tuple[float, float]] | None = None
    """Polygon in relative coordinates (0-1); the box's bottom centre must be inside."""
    dwell_s: float = Field(0.0, ge=0)
    schedule: list[Schedule] | None = None
    """None: always active."""
    cooldown_s: float = Field(0.0, ge=0)
    """Quiet time after an event's alert before a new event of this rule on the camera alerts."""
    repeat_s: float = Field(0.0, ge=0)
    """Repeat the alert while the event lasts (0: alert once)."""
    severity: Literal["info", "warning", "critical"] = "warning"
    text: str | None = None
    """Alert text; default '{label} on {camera}'."""

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _check_name(v, "rule name")

    @field_validator("zone")
    @classmethod
    def _zone(cls, v: list[tuple[float, float]] | None) -> list[tuple[float, float]] | None:
        if v is None:
            return v
        if len(v) < 3:
            raise ValueError("a zone needs at least 3 points")
        for x, y in v:
            if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
                raise ValueError(f"zone point ({x}, {y}) is outside 0..1 (relative coordinates)")
        return v


class EventsConfig(Strict):
    min_hits: int = Field(2, ge=1)
    """Frames a track must be seen in before its event starts (one-frame flukes never alert)."""
    end_after_s: float = Field(3.0, gt=0)
    """An event ends after its object has not been seen for this long (hysteresis)."""
    update_every_s: float = Field(5.0, gt=0)
    stationary_after_s: float = Field(30.0, gt=0)
    """A track that has not moved for this long is stationary and is not re-alerted."""


class RetentionConfig(Strict):
    max_age_days: float = Field(30.0, gt=0)
    min_free_mb: float = Field(500.0, ge=0)
    """Delete the oldest snapshots and events while free disk space is below this."""


class MqttConfig(Strict):
    url: str | None = None
    """mqtt[s]://[user:pass@]host:port; None: alerts wait in the outbox until one is set."""
    prefix: str = "reflex"


class AdminConfig(Strict):
    listen: str = "127.0.0.1:8080"


class EdgeConfig(Strict):
    device: DeviceConfig = Field(default_factory=DeviceConfig)
    data_dir: str = "var"
    """Database and snapshots, relative to the config file's folder when relative."""
    cameras: dict[CameraName, CameraConfig] = Field(default_factory=dict)
    gate: GateConfig = Field(default_factory=GateConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    fire: FireConfig = Field(default_factory=FireConfig)
    watch: list[str] = Field(default_factory=lambda: ["person", "fire"])
    """Labels that get a default rule when `rules` does not name them."""
    rules: list[RuleConfig] = Field(default_factory=list)
    events: EventsConfig = Field(default_factory=EventsConfig)
    retention: RetentionConfig = Field(default_factory=RetentionConfig)
    mqtt: MqttConfig = Field(default_factory=MqttConfig)
    admin: AdminConfig = Field(default_factory=AdminConfig)

    @model_validator(mode="after")
    def _rules_unique(self) -> EdgeConfig:
        seen: set[str] = set()
        for rule in self.rules:
            if rule.name in seen:
                raise ValueError(f"two rules are named {rule.name!r}")
            seen.add(rule.name)
            for cam in rule.cameras or []:
                if self.cameras and cam not in self.cameras:
                    raise ValueError(f"rule {rule.name!r} names unknown camera {cam!r}")
        return self

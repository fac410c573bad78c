"""Pydantic models for the one YAML config file.

Every model forbids unknown keys so that a typo in the field ("treshold") is an error that names the
key and its line, not a setting silently ignored on a security device.
"""

from __future__ import annotations

import re
from datetime import time as dtime
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

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
    push: list[str] = Field(default_factory=list)
    """Push channels (names under `push:`) that get this rule's alerts, besides MQTT."""

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _check_name(v, "rule name")

    @field_validator("push")
    @classmethod
    def _push(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("a push channel is listed twice")
        return v

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
    outbox_max_messages: int = Field(200_000, ge=1000)
    """Undelivered messages kept per delivery channel (months of alerts). Past it the oldest event
    messages are shed first, then the oldest alerts: each shed is logged as an error, counted in
    `stats.outbox_shed` and kept in the database as a dropped row."""


class MqttConfig(Strict):
    url: str | None = None
    """mqtt[s]://[user:pass@]host:port; None: alerts wait in the outbox until one is set. mqtts uses
    TLS (port 8883 by default); user and password in the URL are an alternative to the fields below."""
    prefix: str = "reflex"
    username: str | None = None
    password: SecretStr | None = None
    password_file: str | None = None
    """Read the password from this file (keeps it out of the config, e.g. a systemd credential)."""
    ca_file: str | None = None
    """CA bundle that signed the broker's certificate (default: the system's)."""
    cert_file: str | None = None
    key_file: str | None = None
    """Client certificate and key, for brokers that authenticate devices by certificate."""
    tls_insecure: bool = False
    """Skip the broker hostname check (test benches with self-signed certificates only)."""
    protocol: Literal["auto", "5", "3.1.1"] = "auto"
    """auto: MQTT 5, falling back to 3.1.1 when the broker refuses it."""
    keepalive_s: int = Field(30, ge=5, le=3600)
    client_id: str | None = None
    """Default: reflex-{device id}."""
    reconnect_min_s: float = Field(0.5, gt=0)
    reconnect_max_s: float = Field(30.0, gt=0)
    discovery: bool = True
    """Publish Home Assistant MQTT discovery configs."""
    discovery_prefix: str = "homeassistant"
    stats_every_s: float = Field(10.0, gt=0)
    max_command_bytes: int = Field(4096, ge=64)
    """Larger `ask` or switch payloads are refused with an error answer."""

    @field_validator("prefix", "discovery_prefix")
    @classmethod
    def _topic_level(cls, v: str) -> str:
        if not v or any(c in v for c in "#+\x00") or v.startswith("/") or v.endswith("/"):
            raise ValueError(f"{v!r} is not a usable MQTT topic prefix")
        return v


PushName = Annotated[str, AfterValidator(lambda v: _check_name(v, "push channel name"))]
HEADER_NAME_RE = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
RESERVED_HEADERS = {"host", "content-length", "content-type", "x-reflex-signature", "x-reflex-timestamp"}


def _http_url(value: str, what: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{what} must be an http:// or https:// URL with a host")
    if parts.username or parts.password:
        raise ValueError(f"{what} must not carry user:password (use the channel's own fields)")
    return value


class PushBase(Strict):
    url: str
    timeout_s: float = Field(10.0, gt=0, le=300)
    """Give up on one request after this long (it is retried like any failure)."""
    retry_min_s: float = Field(1.0, gt=0)
    retry_max_s: float = Field(60.0, gt=0)
    """Back-off between retries of a failed message: doubles from retry_min_s up to retry_max_s,
    jittered. Messages wait in the outbox meanwhile; none is skipped or reordered."""

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        return _http_url(v, "url")

    @model_validator(mode="after")
    def _retry_range(self) -> PushBase:
        if self.retry_max_s < self.retry_min_s:
            raise ValueError("retry_max_s must be at least retry_min_s")
        return self


class WebhookConfig(PushBase):
    """HTTP POST of the alert JSON (the MQTT alert payload, byte for byte)."""

    type: Literal["webhook"]
    secret: SecretStr | None = None
    """Signs each body: header `X-Reflex-Signature: sha256=<hex HMAC-SHA256 of the body>`."""
    headers: dict[str, str] = Field(default_factory=dict)
    """Extra request headers (e.g. Authorization for the receiver)."""

    @field_validator("headers")
    @classmethod
    def _headers(cls, v: dict[str, str]) -> dict[str, str]:
        for name, value in v.items():
            if not HEADER_NAME_RE.match(name):
                raise ValueError(f"{name!r} is not a valid HTTP header name")
            if name.lower() in RESERVED_HEADERS:
                raise ValueError(f"header {name!r} is set by the appliance and cannot be overridden")
            if any(c in value for c in "\r\n\x00") or not value.isascii():
                raise ValueError(f"header {name!r}: the value must be one line of ASCII")
        return v


class NtfyPriority(Strict):
    """ntfy priority (1 min .. 5 max/urgent) for each alert severity."""

    info: int = Field(3, ge=1, le=5)
    warning: int = Field(4, ge=1, le=5)
    critical: int = Field(5, ge=1, le=5)


class NtfyConfig(PushBase):
    """An ntfy topic (ntfy.sh or self-hosted): title, message, priority, the snapshot attached."""

    type: Literal["ntfy"]
    token: SecretStr | None = None
    """Access token (sent as `Authorization: Bearer ...`)."""
    username: str | None = None
    password: SecretStr | None = None
    priority: NtfyPriority = Field(default_factory=NtfyPriority)
    attach_snapshot: bool = True
    """Attach the alert's JPEG (waits up to ~2 s for it, then sends without)."""

    @field_validator("url")
    @classmethod
    def _topic(cls, v: str) -> str:
        if not urlsplit(v).path.strip("/"):
            raise ValueError("url must name the topic, e.g. https://ntfy.sh/mytopic")
        return v

    @model_validator(mode="after")
    def _auth(self) -> NtfyConfig:
        if self.token is not None and (self.username is not None or self.password is not None):
            raise ValueError("give either token or username/password, not both")
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together")
        return self


PUSH_TYPES: dict[str, type[PushBase]] = {"webhook": WebhookConfig, "ntfy": NtfyConfig}


def _push_by_type(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    """Validate a push channel as the model its `type` names, so that errors point at the key
    itself (push.phones.url, with its line) rather than at a union branch (push.phones.ntfy.url)."""
    if not isinstance(value, dict):
        return handler(value)
    model = PUSH_TYPES.get(value.get("type"))
    if model is None:
        error = PydanticCustomError("push_type", "type must be one of: " + ", ".join(PUSH_TYPES))
        where = ("type",) if "type" in value else ()
        raise ValidationError.from_exception_data(
            "push", [{"type": error, "loc": where, "input": value.get("type")}]
        )
    return model.model_validate(value)


PushChannelConfig = Annotated[
    WebhookConfig | NtfyConfig, Field(discriminator="type"), WrapValidator(_push_by_type)
]
"""A push channel: a union discriminated by `type` (webhook | ntfy)."""


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
    push: dict[PushName, PushChannelConfig] = Field(default_factory=dict)
    """Push channels (webhook, ntfy) by name; rules list the names that get their alerts."""

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
        for i, rule in enumerate(self.rules):
            for j, channel in enumerate(rule.push):
                if channel not in self.push:
                    known = ", ".join(sorted(self.push)) or "none configured"
                    error = PydanticCustomError(
                        "push_channel",
                        "rule {rule} names unknown push channel {channel} (push: {known})",
                        {"rule": repr(rule.name), "channel": repr(channel), "known": known},
                    )
                    where = ("rules", i, "push", j)
                    raise ValidationError.from_exception_data(
                        "push", [{"type": error, "loc": where, "input": channel}]
                    )
        return self

"""Pydantic models for the one YAML config file.

Every model forbids unknown keys so that a typo in the field ("treshold") is an error that names the
key and its line, not a setting silently ignored on a security device.
"""

from __future__ import annotations

import difflib
import itertools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import time as dtime
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
CHECKOUT = Path(__file__).resolve().parents[2]
"""The source checkout (or installed tree) that ships models/: where a relative manifest is looked up when
it is not beside the config, so a config kept in /etc still finds the bundled manifest."""

Loc = tuple[str | int, ...]
"""A config location as pydantic reports it: ("rules", 0, "label") is rules.0.label."""


def dotted(loc: Loc) -> str:
    return ".".join(str(p) for p in loc) or "(top level)"


def closest_line(loc: Loc, lines: Mapping[Loc, int]) -> int | None:
    """The line of loc, or of the nearest enclosing key the file has (a missing key is reported at the
    line of the section that lacks it)."""
    for end in range(len(loc), -1, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return None


def format_problem(where: str | None, loc: Loc, msg: str) -> str:
    """One problem as users see it: `FILE:LINE: dotted.key: message` (without `FILE:LINE: ` when the
    setting did not come from a file)."""
    return f"{where}: {dotted(loc)}: {msg}" if where else f"{dotted(loc)}: {msg}"


def did_you_mean(value: str, known: Iterable[str], what: str) -> str:
    """A short hint for an unknown name: the close matches, else the known names (a few, when many)."""
    names = sorted(set(known))
    close = difflib.get_close_matches(value, names, n=3, cutoff=0.6)
    if close:
        return "did you mean " + " or ".join(repr(c) for c in close) + "?"
    if not names:
        return f"no {what} configured"
    if len(names) <= 12:
        return f"known {what}: {', '.join(names)}"
    return f"known {what}: {', '.join(names[:10])}, ... ({len(names)} in all)"


@dataclass(frozen=True, eq=False)
class Origin:
    """Where a model was read from: the file, its whole line map, and the model's own location in it.

    Kept on each model (a private attribute) so that checks made after loading (labels known only from
    the model manifest) can still name the line, also for rules read from a separate rules file and
    swapped into another config. Not part of the config's value: any two origins compare equal.
    """

    source: str
    lines: Mapping[Loc, int]
    prefix: Loc = ()
    replaced: frozenset[str] = field(default_factory=frozenset)

    def where(self, loc: Loc) -> str | None:
        if loc and loc[0] in self.replaced:
            return None  # set after loading (model_copy(update=...)): the file's line would be a lie
        full = (*self.prefix, *loc)
        # A section the file lacks gets no line: the top of the file would only mislead.
        line = closest_line(full, self.lines) if full[:1] in self.lines or not full else None
        return f"{self.source}:{line}" if line else self.source

    def replacing(self, keys: Iterable[str]) -> Origin:
        return Origin(self.source, self.lines, self.prefix, self.replaced | frozenset(keys))

    def __eq__(self, other: object) -> bool:
        return other is None or isinstance(other, Origin)

    __hash__ = None  # type: ignore[assignment]


_M = TypeVar("_M", bound="Strict")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    _origin: Origin | None = PrivateAttr(default=None)

    def where(self, loc: Loc = ()) -> str | None:
        """'FILE:LINE' of the setting at loc (relative to this model), 'FILE' when the file has no line
        for it, None when it was not read from a file (flags, code, a key replaced after loading)."""
        origin, rest = self._origin_of(loc)
        return origin.where(rest) if origin is not None else None

    def file_of(self, loc: Loc = ()) -> str | None:
        """The file the setting at loc was read from (None: not from a file)."""
        origin, rest = self._origin_of(loc)
        return origin.source if origin is not None and origin.where(rest) is not None else None

    def _origin_of(self, loc: Loc) -> tuple[Origin | None, Loc]:
        """The origin of the innermost model on the way to loc, and loc relative to that model: a rule
        read from a rules file and put into another config keeps its own file's lines."""
        origin, rest = self._origin, loc
        node: Any = self
        for i, part in enumerate(loc):
            try:
                node = getattr(node, str(part)) if isinstance(node, BaseModel) else node[part]
            except (AttributeError, KeyError, IndexError, TypeError):
                break
            if isinstance(node, Strict):
                if node._origin is None:
                    return None, loc  # built in code and put in after loading
                origin, rest = node._origin, loc[i + 1 :]
        return origin, rest

    def problem(self, loc: Loc, msg: str) -> str:
        """The one-line report of a problem with the setting at loc: `FILE:LINE: dotted.key: message`."""
        return format_problem(self.where(loc), loc, msg)

    def model_copy(self: _M, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> _M:
        """Copy as pydantic does, forgetting the file lines of the keys that update replaces."""
        copy = super().model_copy(update=update, deep=deep)
        if update and self._origin is not None:
            copy._origin = self._origin.replacing(k for k in update if isinstance(k, str))
        return copy

    def __setattr__(self, name: str, value: Any) -> None:
        """Assign as pydantic does (validated), forgetting the file line of the key assigned."""
        super().__setattr__(name, value)
        if not name.startswith("_") and self._origin is not None:
            self._origin = self._origin.replacing([name])


def set_origin(obj: Any, source: str, lines: Mapping[Loc, int], prefix: Loc = ()) -> None:
    """Record on every model in obj where in the file (source, its line map) it was read from."""
    if isinstance(obj, Strict):
        obj._origin = Origin(source, lines, prefix)
        for name in type(obj).model_fields:
            set_origin(getattr(obj, name), source, lines, (*prefix, name))
    elif isinstance(obj, (list, tuple)):
        for i, item in enumerate(obj):
            set_origin(item, source, lines, (*prefix, i))
    elif isinstance(obj, dict):
        for key, item in obj.items():
            set_origin(item, source, lines, (*prefix, key))


def resolve_path(value: str, base_dir: Path) -> str:
    """An absolute path: value itself when absolute, else value under base_dir."""
    path = Path(value)
    return str(path if path.is_absolute() else (base_dir / path).resolve())


def resolve_manifest(value: str, base_dir: Path) -> Path:
    """The model manifest: value under base_dir (the config's folder), or, when a relative manifest is
    not there but the checkout has it, the checkout's (the bundled models/yolox_nano.yaml)."""
    path = Path(value)
    if path.is_absolute():
        return path
    here = (base_dir / path).resolve()
    shipped = CHECKOUT / path
    return shipped if not here.exists() and shipped.exists() else here


def _base_dir(info: ValidationInfo) -> Path | None:
    """The folder relative paths are resolved against, given by the loader as validation context;
    None for a model built in code (its paths stay as given)."""
    context = info.context if isinstance(info.context, dict) else {}
    base = context.get("base_dir")
    return Path(base) if base is not None else None


def _absolute(value: str | None, info: ValidationInfo) -> str | None:
    base = _base_dir(info)
    return resolve_path(value, base) if value is not None and base is not None else value


def _check_name(value: str, what: str) -> str:
    if not NAME_RE.match(value):
        raise ValueError(
            f"{what} {value!r} must be 1-63 characters of a-z, 0-9, '_' or '-' "
            "(it becomes part of MQTT topics)"
        )
    return value


RESERVED_CAMERA_NAMES = frozenset({"mode"})
"""Device-level topics that a camera's `{prefix}/{dev}/{camera}/...` topics would collide with
(`mode/set`, `mode/state`)."""


def _check_camera_name(value: str) -> str:
    _check_name(value, "camera name")
    if value in RESERVED_CAMERA_NAMES:
        raise ValueError(f"camera name {value!r} is reserved (the device's {value}/set and /state topics)")
    return value


CameraName = Annotated[str, AfterValidator(_check_camera_name)]


class DeviceConfig(Strict):
    id: str = "reflex-edge"

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        return _check_name(v, "device id")


def check_polygon(v: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """A zone polygon: at least 3 points, in relative coordinates (0-1)."""
    if len(v) < 3:
        raise ValueError("a zone needs at least 3 points")
    for x, y in v:
        if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
            raise ValueError(f"zone point ({x}, {y}) is outside 0..1 (relative coordinates)")
    return v


LINE_AREA_LABELS = frozenset({"fire", "smoke"})
"""Labels that are regions, not objects with feet (edge.rules.tracker.AREA_LABELS): no line counts them."""


class LineConfig(Strict):
    """A tripwire: a polyline in relative coordinates (0-1) that tracked objects' feet cross.

    "in" is crossing from the line's LEFT side to its RIGHT side, looking along it from its first point
    to its last, in image coordinates (x right, y down): for a line drawn left to right across the
    picture, "in" is walking down the picture (towards the camera), "out" walking up it."""

    points: list[tuple[float, float]]
    direction: Literal["in", "out", "both"] = "both"
    """The crossings a rule on this line alerts on unless the rule says (its in/out counts keep both)."""
    labels: list[str] = Field(default_factory=lambda: ["person"])
    """Labels counted crossing it (in/out counts since midnight, on MQTT)."""

    @field_validator("points")
    @classmethod
    def _points(cls, v: list[tuple[float, float]]) -> list[tuple[float, float]]:
        if len(v) < 2:
            raise ValueError("a line needs at least 2 points")
        for x, y in v:
            if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
                raise ValueError(f"line point ({x}, {y}) is outside 0..1 (relative coordinates)")
        if any(a == b for a, b in itertools.pairwise(v)):
            raise ValueError("a line has the same point twice in a row")
        return v

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("a line needs at least one label")
        if len(set(v)) != len(v):
            raise ValueError("a label is listed twice")
        for label in v:
            if label in LINE_AREA_LABELS:
                raise ValueError(f"{label!r} is an area, not an object with feet: a line cannot count it")
        return v


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
    fps: float | None = Field(None, gt=0)
    """At most this many frames a second reach the red loop: the capture thread drops the others (a
    file still plays at its own speed). None: every frame the source delivers."""
    zones: dict[str, list[tuple[float, float]]] = Field(default_factory=dict)
    """Named zones of this camera's picture (polygons, relative 0-1): instructions name them ("the
    loading dock"), rules copy their polygon."""
    lines: dict[str, LineConfig] = Field(default_factory=dict)
    """Named tripwires of this camera's picture: in/out counts per label since midnight, and rules
    with `line` alert on crossings."""

    @field_validator("zones")
    @classmethod
    def _zones(cls, v: dict[str, list[tuple[float, float]]]) -> dict[str, list[tuple[float, float]]]:
        for name, polygon in v.items():
            _check_name(name, "zone name")
            check_polygon(polygon)
        return v

    @field_validator("lines")
    @classmethod
    def _lines(cls, v: dict[str, LineConfig]) -> dict[str, LineConfig]:
        for name in v:
            _check_name(name, "line name")
        return v


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
    event_max_looks_per_s: float = Field(2.0, ge=0)
    """While one of the camera's events is open (and no new track is on its way to becoming one), the
    object detector looks at this camera at most this often, however much moves: an open event needs a
    look now and then to stay open and to repeat its alerts, not one per frame, and the detector is
    shared by every camera. Sightings that start events are never capped, nor is the first look, a
    look someone asked for, or a camera whose gate is off. The fire and smoke detectors are not capped:
    they run on every frame the gate wakes, as before. 0: no cap."""
    pixel_idle_looks_per_s: float = Field(2.0, ge=0)
    """While neither pixel detector (fire, smoke) watches a candidate or holds evidence, frames the
    gate woke for motion alone (no new warm light) go to them at most this often (stream time): a
    person walking through wakes every frame, and an idle detector needs only a look now and then to
    find a candidate, whereupon it watches every frame again. Warm light, refreshes, events and
    requests always reach them. 0: every frame the gate wakes."""

    @model_validator(mode="after")
    def _cap_over_refresh(self) -> GateConfig:
        rate = self.event_max_looks_per_s
        if rate and rate * self.event_refresh_s < 1.0 - 1e-9:
            raise ValueError(
                f"event_max_looks_per_s ({rate:g}) allows fewer looks than event_refresh_s "
                f"({self.event_refresh_s:g} s) asks for: make it at least {1 / self.event_refresh_s:g}, or 0"
            )
        return self


class ModelConfig(Strict):
    manifest: str = Field("models/yolox_nano.yaml", validate_default=True)
    """Relative: beside the config file, else the one shipped in the checkout (models/yolox_nano.yaml)."""
    path: str | None = None
    """Model file; defaults to the manifest's file in cache/ beside the manifest (models/cache/)."""
    backend: Literal["auto", "onnxruntime", "tensorrt"] = "auto"
    """auto: native TensorRT where tensorrt, pycuda and a CUDA GPU are present, else ONNX Runtime (its
    CUDA execution provider where onnxruntime-gpu offers it, else the CPU). `edge doctor` says which
    and why."""
    threads: int = Field(0, ge=0)
    """Inference threads. 0 (the default): on the CPU, ONNX Runtime's fastest (every core, spinning)
    while one camera uses the model, and a lean single-threaded session without spinning while several
    share it (a third of the CPU per inference); with a GPU, the runtime's default."""
    score_threshold: float = Field(0.3, gt=0, lt=1)
    nms_iou: float = Field(0.45, gt=0, lt=1)
    precision: Literal["fp16", "int8", "fp32"] = "fp16"
    """TensorRT engine precision. int8 needs `calibration_frames` (the installer's own camera frames)."""
    dla_core: int | None = Field(None, ge=0)
    """TensorRT: run on this DLA core (Jetson AGX/NX Orin), layers it cannot run fall back to the GPU.
    DLA runs fp16 or int8 only."""
    calibration_frames: str | None = None
    """INT8: a folder of JPEG/PNG frames from this site's cameras (a few hundred, day and night); they go
    through the model's own pre-processing to build the calibration cache."""
    engine_cache: str | None = None
    """Folder of built TensorRT engines (default: beside the model file). Each engine's name carries
    the key of what it was built from (ONNX sha256, TensorRT version, GPU, precision, DLA core), so an
    engine built for anything else is never loaded: it is rebuilt."""

    @field_validator("manifest")
    @classmethod
    def _manifest(cls, v: str, info: ValidationInfo) -> str:
        base = _base_dir(info)
        return str(resolve_manifest(v, base)) if base is not None else v

    @field_validator("path", "calibration_frames", "engine_cache")
    @classmethod
    def _path(cls, v: str | None, info: ValidationInfo) -> str | None:
        return _absolute(v, info)

    @model_validator(mode="after")
    def _tensorrt_settings(self) -> ModelConfig:
        if self.precision == "int8" and not self.calibration_frames:
            raise ValueError(
                "precision int8 needs calibration_frames: a folder of frames from this site's cameras"
            )
        if self.dla_core is not None and self.precision == "fp32":
            raise ValueError("a DLA core runs fp16 or int8 only: set precision to fp16 or int8")
        return self


class ExtraModelConfig(ModelConfig):
    """A further detector beside `model` (config `extra_models`), typically a fire/smoke model: a YOLOX
    or YOLOv8/YOLO11 ONNX export with its own manifest (decoder family, labels)."""

    manifest: str
    """Required here (no default: a forgotten manifest must not silently load the COCO model twice)."""


class FireConfig(Strict):
    enabled: bool = True
    min_score: float = Field(0.5, gt=0, lt=1)


class SmokeConfig(Strict):
    """Pixel smoke detector (edge.reflex.smoke): soft, low-saturation regions that grow or drift and
    blur what is behind them. ``min_score`` is the persistence evidence (0-1) a region needs."""

    enabled: bool = True
    min_score: float = Field(0.5, gt=0, lt=1)


class CapacityConfig(Strict):
    pixel_processes: Annotated[int, Field(ge=0, le=32)] | Literal["auto"] = "auto"
    """Worker processes for the fire and smoke detectors of every camera but the first
    (edge.reflex.pixels): their work per frame holds Python's interpreter lock, so with several cameras
    one process falls behind while cores stay idle. "auto": one per core but one, at most 4 (none on a
    single core). 0: every camera's detectors in the appliance process."""

    def processes(self, cores: int | None) -> int:
        if self.pixel_processes != "auto":
            return self.pixel_processes
        return max(0, min((cores or 1) - 1, 4))


Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
DAYS: tuple[Day, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
"""Monday first, as `datetime.weekday()` counts."""


class Schedule(Strict):
    days: list[Day] = Field(default_factory=lambda: list(DAYS))
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
    zone_name: str | None = None
    """The camera zone the polygon was taken from (an instruction naming "the loading dock")."""
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
    verify: bool = False
    """Two-phase alerts: the alert goes out at once as `provisional`, the blue loop checks the
    camera's keyframes, and the same alert id follows as `confirmed` or `retracted`."""
    source: Literal["any", "pixel", "model"] = "any"
    """Which detector's fire/smoke this rule takes: pixel = the built-in pixel detector, model = an extra
    model's detections of that label (`extra_models`), any = both. Only fire and smoke rules may set it
    (checked with the labels, in edge.wiring.build_rules)."""
    line: str | None = None
    """A crossing rule: it alerts once per crossing of this line (`cameras.*.lines`) of the cameras it
    applies to, each crossing one short event (edge.rules.events); it cannot also have a zone."""
    direction: Literal["in", "out", "both"] | None = None
    """The crossings of `line` it alerts on; None: the line's own `direction`."""
    modes: list[str] | None = None
    """The modes (`modes:`) in which this rule alerts. None: as the modes' own `rules` lists say, and
    a fire or smoke rule in every mode."""

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
        return None if v is None else check_polygon(v)

    @model_validator(mode="after")
    def _line_or_zone(self) -> RuleConfig:
        if self.line is not None and self.zone is not None:
            raise ValueError("a rule watches a zone or a line, not both")
        if self.direction is not None and self.line is None:
            raise ValueError("direction is for a rule with a line")
        return self

    @field_validator("modes")
    @classmethod
    def _modes(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and len(set(v)) != len(v):
            raise ValueError("a mode is listed twice")
        return v


class ModeConfig(Strict):
    """One mode (arm/disarm): which rules alert and which push channels deliver while it is on."""

    rules: list[str] | None = None
    """Names of the rules that alert in this mode; None: every rule. Fire and smoke rules alert in every
    mode whatever this says, unless the rule's own `modes` says otherwise."""
    push: list[str] | None = None
    """Push channels that deliver in this mode; None: every channel (MQTT always gets every alert)."""


DEFAULT_MODES = ("home", "away", "night")
"""The modes every appliance has (each with every rule and channel until the config narrows it)."""


class ModeSwitch(Strict):
    """One entry of `mode_schedule`: at `at` (device local time) on `days`, switch to `mode`."""

    mode: str
    at: dtime
    days: list[Day] = Field(default_factory=lambda: list(DAYS))


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
    reconnect_max_s: float = Field(1.5, gt=0)
    """Longest wait between tries to reach the broker: alerts flow again within ~2 s of its return.
    A refused connection (credentials) is retried no faster than every 30 s whatever this says."""
    discovery: bool = True
    """Publish Home Assistant MQTT discovery configs."""
    discovery_prefix: str = "homeassistant"
    discovery_style: Literal["device", "entity"] = "device"
    """device: one retained config for the whole device (Home Assistant 2024.11 and later); entity: one
    config per entity, for older Home Assistant. Switching clears the other style's configs."""
    stats_every_s: float = Field(10.0, gt=0)
    max_command_bytes: int = Field(4096, ge=64)
    """Larger `ask` or switch payloads are refused with an error answer."""

    @field_validator("password_file", "ca_file", "cert_file", "key_file")
    @classmethod
    def _files(cls, v: str | None, info: ValidationInfo) -> str | None:
        return _absolute(v, info)

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
    confirmed_only: bool = False
    """Send an alert only once it is confirmed: never a `provisional` one of a rule that verifies,
    never a `retracted` one (alerts of rules without verification are confirmed at once)."""

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


def host_port(value: str) -> tuple[str, int]:
    """`HOST:PORT` (an IPv6 host in brackets: `[::1]:8080`) as (host, port); ValueError in one line."""
    host, sep, port = value.strip().rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{value!r} is not HOST:PORT (e.g. 0.0.0.0:8080)")
    return host, int(port)


class AdminConfig(Strict):
    """The admin web page (edge.admin), served by the appliance itself."""

    listen: str | None = None
    """"HOST:PORT"; None: no admin page (edge run --admin sets it)."""
    tls: bool = False
    """Serve https with a self-signed certificate made on first start."""
    cert: str | None = None
    """Or your own certificate and key files (PEM)."""
    key: str | None = None
    session_hours: float = 12
    login_lockout_after: int = 10
    """Wrong passwords from one address/user within the window..."""
    login_lockout_s: float = 300
    """...lock logins from it for this long."""

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str | None) -> str | None:
        if v is not None:
            host_port(v)
        return v

    @field_validator("cert", "key")
    @classmethod
    def _files(cls, v: str | None, info: ValidationInfo) -> str | None:
        return _absolute(v, info)

    @model_validator(mode="after")
    def _pair(self) -> AdminConfig:
        if (self.cert is None) != (self.key is None):
            raise ValueError("cert and key go together")
        return self


class BlueLoopConfig(Strict):
    """What the appliance may expect of the blue-loop workers on its broker."""

    llm: bool = False
    """The workers run an LLM reasoner (`--reasoner openai`): commentary lines about someone or something
    that entered are followed by the blue loop's description of it."""


class EdgeConfig(Strict):
    device: DeviceConfig = Field(default_factory=DeviceConfig)
    data_dir: str = Field("var", validate_default=True)
    """Database and snapshots, relative to the config file's folder when relative (made absolute when the
    config is loaded)."""
    cameras: dict[CameraName, CameraConfig] = Field(default_factory=dict)
    gate: GateConfig = Field(default_factory=GateConfig)
    model: ModelConfig = Field(default_factory=dict, validate_default=True)
    """(Its default is validated like a given section, so that its default manifest is resolved too.)"""
    extra_models: list[ExtraModelConfig] = Field(default_factory=list)
    """Further detectors beside `model`, e.g. a fire/smoke model (YOLOX or YOLOv8/YOLO11 ONNX), each
    with its own manifest and labels. Their detections carry `detector=<manifest name>`; a camera runs
    one on the frames the gate wakes while a rule there wants one of its labels; rules pick the source of
    fire/smoke with `source`. Their labels are known labels for rules."""
    fire: FireConfig = Field(default_factory=FireConfig)
    smoke: SmokeConfig = Field(default_factory=SmokeConfig)
    capacity: CapacityConfig = Field(default_factory=CapacityConfig)
    watch: list[str] = Field(default_factory=lambda: ["person", "fire"])
    """Labels that get a default rule when `rules` does not name them."""
    rules: list[RuleConfig] = Field(default_factory=list)
    events: EventsConfig = Field(default_factory=EventsConfig)
    retention: RetentionConfig = Field(default_factory=RetentionConfig)
    mqtt: MqttConfig = Field(default_factory=MqttConfig)
    admin: AdminConfig = Field(default_factory=AdminConfig)
    blueloop: BlueLoopConfig = Field(default_factory=BlueLoopConfig)
    push: dict[PushName, PushChannelConfig] = Field(default_factory=dict)
    """Push channels (webhook, ntfy) by name; rules list the names that get their alerts."""
    modes: dict[str, ModeConfig] = Field(default_factory=dict, validate_default=True)
    """Modes (arm/disarm) by name, over the defaults home, away and night (which are always there, with
    every rule and push channel unless narrowed here). Exactly one is on at a time."""
    mode: str = "home"
    """The mode at the first start; after that the mode last switched to (stored) wins."""
    mode_schedule: list[ModeSwitch] = Field(default_factory=list)
    """Timed mode switches (e.g. night at 23:00, home at 07:00 on weekdays)."""

    @field_validator("data_dir")
    @classmethod
    def _data_dir(cls, v: str, info: ValidationInfo) -> str:
        base = _base_dir(info)
        return resolve_path(v, base) if base is not None else v

    @field_validator("modes")
    @classmethod
    def _modes(cls, v: dict[str, ModeConfig]) -> dict[str, ModeConfig]:
        """The default modes, each replaced by the config's mode of that name, then the config's others."""
        for name in v:
            _check_name(name, "mode name")
        return {**{name: ModeConfig() for name in DEFAULT_MODES}, **v}

    @model_validator(mode="after")
    def _rules_refer_to_known_names(self) -> EdgeConfig:
        """Rule names are unique and a rule's cameras and push channels exist; every such problem is
        reported at the offending value (rules.1.cameras.0, with its line), all of them at once."""
        errors: list[InitErrorDetails] = []

        def problem(loc: Loc, kind: str, msg: str, value: str) -> None:
            error = PydanticCustomError(kind, "{msg}", {"msg": msg})  # msg as a value: no {} expanded in it
            errors.append({"type": error, "loc": loc, "input": value})

        first: dict[str, int] = {}
        for i, rule in enumerate(self.rules):
            if rule.name in first:
                problem(
                    ("rules", i, "name"),
                    "rule_name",
                    f"two rules are named {rule.name!r} (the first is rules.{first[rule.name]})",
                    rule.name,
                )
            first.setdefault(rule.name, i)
            for j, cam in enumerate(rule.cameras or []):
                if self.cameras and cam not in self.cameras:
                    hint = did_you_mean(cam, self.cameras, "cameras")
                    problem(
                        ("rules", i, "cameras", j),
                        "rule_camera",
                        f"rule {rule.name!r} names unknown camera {cam!r} ({hint})",
                        cam,
                    )
            for j, channel in enumerate(rule.push):
                if channel not in self.push:
                    known = ", ".join(sorted(self.push)) or "none configured"
                    problem(
                        ("rules", i, "push", j),
                        "push_channel",
                        f"rule {rule.name!r} names unknown push channel {channel!r} (push: {known})",
                        channel,
                    )
            if rule.line is not None:
                for cam in rule.cameras or list(self.cameras):
                    lines = self.cameras[cam].lines if cam in self.cameras else None
                    if lines is not None and rule.line not in lines:
                        hint = did_you_mean(rule.line, lines, f"lines of {cam}")
                        msg = f"rule {rule.name!r} watches line {rule.line!r}, which {cam!r} lacks ({hint})"
                        problem(("rules", i, "line"), "rule_line", msg, rule.line)
        for loc, kind, msg, value in _mode_problems(self):
            problem(loc, kind, msg, value)
        if errors:
            raise ValidationError.from_exception_data("EdgeConfig", errors)
        return self


def _mode_problems(cfg: EdgeConfig) -> list[tuple[Loc, str, str, str]]:
    """(where, kind, one-line message, value) for each mode, rule or push channel name in `modes`,
    `mode`, `mode_schedule` and the rules' `modes` that does not exist."""
    out: list[tuple[Loc, str, str, str]] = []
    modes = ", ".join(cfg.modes)
    covered = {r.label for r in cfg.rules}
    rules = {r.name for r in cfg.rules} | {w for w in cfg.watch if w not in covered}  # + default rules
    for name, mode in cfg.modes.items():
        for j, rule in enumerate(mode.rules or []):
            if rule not in rules:
                hint = did_you_mean(rule, rules, "rules")
                msg = f"mode {name!r} names unknown rule {rule!r} ({hint})"
                out.append((("modes", name, "rules", j), "mode_rule", msg, rule))
        for j, channel in enumerate(mode.push or []):
            if channel not in cfg.push:
                known = ", ".join(sorted(cfg.push)) or "none configured"
                msg = f"mode {name!r} names unknown push channel {channel!r} (push: {known})"
                out.append((("modes", name, "push", j), "mode_push", msg, channel))
    if cfg.mode not in cfg.modes:
        out.append((("mode",), "mode", f"unknown mode {cfg.mode!r} (modes: {modes})", cfg.mode))
    for i, switch in enumerate(cfg.mode_schedule):
        if switch.mode not in cfg.modes:
            msg = f"mode_schedule switches to unknown mode {switch.mode!r} (modes: {modes})"
            out.append((("mode_schedule", i, "mode"), "mode", msg, switch.mode))
    for i, rule in enumerate(cfg.rules):
        for j, mode_name in enumerate(rule.modes or []):
            if mode_name not in cfg.modes:
                msg = f"rule {rule.name!r} names unknown mode {mode_name!r} (modes: {modes})"
                out.append((("rules", i, "modes", j), "rule_mode", msg, mode_name))
    return out

"""Home Assistant MQTT discovery: the config messages that make one device's entities appear in HA.

Pure functions, no MQTT client: the appliance publishes what `discovery_configs` returns, each payload
as compact JSON (`config_json`), **retained, QoS 1**, after every (re)connect (HA also re-reads
retained configs when it restarts). Every entity belongs to one HA device
(`identifiers: ["reflex_<device>"]`) and is available while `{prefix}/{device}/availability` says
`online`. Two styles (`mqtt.discovery_style`):

- **device** (the default; Home Assistant 2024.11 and later): ONE message on
  `<discovery_prefix>/device/reflex_<device>/config` with the device (`dev`), the origin (`o`), the
  availability (`avty`) and every entity under `cmps`, keyed by its object id, each naming its
  platform (`p`). A component removed since the last announcement stays in `cmps` as `{"p": ...}`
  alone, which is how HA is told to remove it.
- **entity** (older Home Assistant): one message per entity on
  `<discovery_prefix>/<component>/reflex_<device>/<object_id>/config`, each with the device,
  origin and availability.

Both styles give each entity the same object id and unique id, and HA derives the same discovery id
from either topic (`reflex_<device> <object_id>`), so a switch keeps every entity, its history and
what the user changed about it (name, area). The switch follows Home Assistant's documented migration
(`discovery_cleanup`): `{"migrate_discovery": true}` on the old topics (HA unloads the entities and
keeps their registry entries), the new configs again, then an empty retained payload on the old topics.
All of a device's configs, in both styles, match `discovery_filters()`: the bus reads what is
retained under them after each connect and hands what is not current to `discovery_cleanup`.

Entities (object ids; `{camera}`, `{rule}`, `{label}`, `{line}`, `{zone}` made topic-safe):

binary_sensor  {camera}_{rule}_active   ON while an event of the rule is open  ({camera}/active/{rule})
                                        (device-verified fire/smoke: once its alert is confirmed)
binary_sensor  {camera}_online          camera stream online/offline           ({camera}/status)
sensor         {camera}_{label}_count   current count                          ({camera}/{label})
image          {camera}_snapshot        JPEG of the latest alert               ({camera}/snapshot)
switch         {camera}_detect          detection on/off                       ({camera}/detect/set|state)
switch         {camera}_alerts          alerts on/off                          ({camera}/alerts/set|state)
sensor         {camera}_fps             frames per second, from `stats`
sensor         outbox_depth             alerts waiting for the broker, from `stats`
event          alerts                   every alert                            (alerts)
select         mode                     the mode (arm/disarm)                  (mode/set|state)
sensor         {camera}_{line}_{label}_in, _out
                                        crossings of the line since midnight   ({camera}/line/{line}/{label})
sensor         {camera}_{zone}_{label}_occupancy
                                        how many are in the zone now           ({camera}/zone/{zone}/{label})

The alerts event entity's event type is the alert's severity (`info`, `warning`, `critical`) once the
alert is real: a rule without verification alerts `confirmed` at once, a verified rule (fire, smoke)
when it is confirmed. A verified rule's first, provisional alert is `provisional` and a verdict that
takes it back is `retracted`. So an automation triggered by `critical` runs once per alert and only on
a real one, one that wants to act early listens to `provisional` too, and the rule, camera, label,
text, phase and ids are the event's attributes (conditions: "rule is front_door"). Severities rather
than rule names: the event types stay the same when rules are added or removed at runtime.

A fire or smoke rule verified on the device (`verify`, the default for fire and smoke) turns its alert
binary sensor ON only once the alert is confirmed, never on the provisional alert, and OFF when the
alert is retracted (edge.bus.state): a Home Assistant automation on it (a siren, lights) follows
confirmed alerts only. MQTT alerts and push channels still get the provisional alert at once.

Entity ids are suggested with `default_entity_id` (`<component>.reflex_<device>_<object_id>`), which
replaced the deprecated `object_id` option in Home Assistant 2025.10; older versions ignore it and
derive the entity id from the device and entity names.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from edge.outbox import OFF, OFFLINE, ON, ONLINE, SWITCHES, Topics
from edge.store.snapshots import write_atomic

MANUFACTURER = "Reflex Edge"
DEFAULT_MODEL = "Reflex Edge appliance"
SAFETY_LABELS = frozenset({"fire", "smoke"})
OCCUPANCY_LABELS = frozenset({"person"})
COMPONENTS = ("binary_sensor", "sensor", "image", "switch", "event", "select")
STYLES = ("device", "entity")
Style = Literal["device", "entity"]

EVENT_TYPES = ("info", "warning", "critical", "provisional", "retracted")
"""The alerts event entity's event types (see the module docstring)."""
EVENT_TEMPLATE = (
    "{% set a = value_json %}"
    "{{ dict(a, event_type=a.phase if a.phase in ['provisional', 'retracted'] else a.severity) | tojson }}"
)
"""The alert JSON as the event's attributes, plus its `event_type`."""
MIGRATE = b'{"migrate_discovery":true}'
"""Home Assistant's discovery migration request: unload the entities of this topic, keep their registry
entries (history, names, areas), so the same entities can come back from the other style's topic."""

_UNSAFE = re.compile(r"[^a-zA-Z0-9_-]+")
_SWITCH_NAMES = {"detect": "detection", "alerts": "alerts"}

Component = tuple[str, str, dict[str, Any]]
"""(platform, object id, the entity's own config)."""


def topic_id(text: str) -> str:
    """`text` reduced to what HA accepts in a discovery topic level: [a-zA-Z0-9_-]."""
    return _UNSAFE.sub("_", text).strip("_") or "x"


def node_id(device: str) -> str:
    """The discovery topics' node id for this device (`reflex_<device>`)."""
    return f"reflex_{topic_id(device)}"


def discovery_topic(discovery_prefix: str, component: str, device: str, object_id: str) -> str:
    return f"{discovery_prefix}/{component}/{node_id(device)}/{object_id}/config"


def device_topic(discovery_prefix: str, device: str) -> str:
    """The one topic of device-based discovery."""
    return f"{discovery_prefix}/device/{node_id(device)}/config"


def discovery_filter(discovery_prefix: str, device: str) -> str:
    """Subscription filter that matches every per-entity discovery config this device publishes."""
    return f"{discovery_prefix}/+/{node_id(device)}/+/config"


def discovery_filters(discovery_prefix: str, device: str) -> tuple[str, str]:
    """What matches every discovery config of this device in either style (the retained sweep)."""
    return discovery_filter(discovery_prefix, device), device_topic(discovery_prefix, device)


def config_json(payload: Mapping[str, Any]) -> str:
    """A config payload as published: compact JSON."""
    return json.dumps(payload, separators=(",", ":"))


def _entity_slug(device: str, object_id: str) -> str:
    return re.sub(r"[^a-z0-9_]+", "_", f"reflex_{device}_{object_id}".lower()).strip("_")


def _jinja(text: str) -> str:
    """A Jinja string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _device_class(rule: str, label: str | None) -> str | None:
    what = label or rule
    if what in SAFETY_LABELS:
        return "safety"
    if what in OCCUPANCY_LABELS:
        return "occupancy"
    return None


def _common(
    topics: Topics, device: str, sw_version: str, model: str, device_name: str | None
) -> dict[str, Any]:
    return {
        "availability": [
            {"topic": topics.availability, "payload_available": ONLINE, "payload_not_available": OFFLINE}
        ],
        "device": {
            "identifiers": [f"reflex_{device}"],
            "name": device_name or f"Reflex Edge {device}",
            "manufacturer": MANUFACTURER,
            "model": model,
            "sw_version": sw_version,
        },
        "origin": {"name": MANUFACTURER, "sw_version": sw_version},
    }


def _components(
    topics: Topics,
    device: str,
    cameras: list[str],
    rules: Mapping[str, list[str]],
    labels: Mapping[str, list[str]],
    rule_labels: Mapping[str, str],
    lines: Mapping[str, Mapping[str, list[str]]],
    zones: Mapping[str, Mapping[str, list[str]]],
    modes: Sequence[str],
) -> list[Component]:
    """Every entity of the device, in a stable order. The entities that were there before the
    device-based style came first, so a name that folds onto another keeps the object id it had."""
    out: list[Component] = []
    used: set[str] = set()
    stats_topic = topics.stats

    def add(component: str, parts: tuple[str, ...], name: str, config: dict[str, Any]) -> None:
        object_id = "_".join(topic_id(p) for p in parts)
        if object_id in used:  # two names that only differ where topic_id() folded them
            digest = hashlib.sha1("\x00".join((component, *parts)).encode()).hexdigest()[:8]
            object_id = f"{object_id}_{digest}"
        used.add(object_id)
        own = {
            "name": name,
            "unique_id": f"reflex_{device}_{object_id}",
            "default_entity_id": f"{component}.{_entity_slug(device, object_id)}",
            **config,
            "qos": 1,
        }
        out.append((component, object_id, own))

    for camera in cameras:
        for rule, rule_cameras in rules.items():
            if camera not in rule_cameras:
                continue
            config: dict[str, Any] = {
                "state_topic": topics.active(camera, rule),
                "payload_on": ON,
                "payload_off": OFF,
                "icon": "mdi:alarm-light",
            }
            device_class = _device_class(rule, rule_labels.get(rule))
            if device_class:
                config["device_class"] = device_class
                del config["icon"]
            add("binary_sensor", (camera, rule, "active"), f"{camera} {rule} alert", config)
        add(
            "binary_sensor",
            (camera, "online"),
            f"{camera} online",
            {
                "state_topic": topics.status(camera),
                "payload_on": ONLINE,
                "payload_off": OFFLINE,
                "device_class": "connectivity",
                "entity_category": "diagnostic",
            },
        )
        for label in labels.get(camera, []):
            add(
                "sensor",
                (camera, label, "count"),
                f"{camera} {label} count",
                {
                    "state_topic": topics.count(camera, label),
                    "state_class": "measurement",
                    "unit_of_measurement": "objects",
                    "icon": "mdi:counter",
                },
            )
        add(
            "image",
            (camera, "snapshot"),
            f"{camera} snapshot",
            {"image_topic": topics.snapshot(camera), "content_type": "image/jpeg"},
        )
        for switch in SWITCHES:
            add(
                "switch",
                (camera, switch),
                f"{camera} {_SWITCH_NAMES.get(switch, switch)}",
                {
                    "command_topic": topics.switch_set(camera, switch),
                    "state_topic": topics.switch_state(camera, switch),
                    "payload_on": ON,
                    "payload_off": OFF,
                    "state_on": ON,
                    "state_off": OFF,
                    "optimistic": False,
                    "retain": False,
                    "icon": "mdi:cctv" if switch == "detect" else "mdi:bell-ring",
                },
            )
        add(
            "sensor",
            (camera, "fps"),
            f"{camera} fps",
            {
                "state_topic": stats_topic,
                # "None" is HA's payload for "unknown" (a camera not in this stats message yet).
                "value_template": (
                    f"{{{{ value_json.cameras[{_jinja(camera)}].fps "
                    f"if {_jinja(camera)} in value_json.cameras else 'None' }}}}"
                ),
                "state_class": "measurement",
                "unit_of_measurement": "fps",
                "suggested_display_precision": 1,
                "entity_category": "diagnostic",
                "icon": "mdi:speedometer",
            },
        )
    add(
        "sensor",
        ("outbox_depth",),
        "outbox depth",
        {
            "state_topic": stats_topic,
            "value_template": "{{ value_json.outbox_depth }}",
            "state_class": "measurement",
            "unit_of_measurement": "messages",
            "entity_category": "diagnostic",
            "icon": "mdi:tray-full",
        },
    )
    add(
        "event",
        ("alerts",),
        "alerts",
        {
            "state_topic": topics.alerts,
            "event_types": list(EVENT_TYPES),
            "value_template": EVENT_TEMPLATE,
            "icon": "mdi:bell-alert",
        },
    )
    if modes:
        add(
            "select",
            ("mode",),
            "mode",
            {
                "command_topic": topics.mode_set,
                "state_topic": topics.mode_state,
                "options": list(modes),
                "optimistic": False,
                "retain": False,
                "icon": "mdi:shield-home",
            },
        )
    for camera in cameras:
        for line, line_labels in lines.get(camera, {}).items():
            for label in line_labels:
                for direction in ("in", "out"):
                    add(
                        "sensor",
                        (camera, line, label, direction),
                        f"{camera} {line} {label} {direction}",
                        {
                            "state_topic": topics.line(camera, line, label),
                            # ['in']: `in` is a Jinja keyword.
                            "value_template": f"{{{{ value_json[{_jinja(direction)}] }}}}",
                            "json_attributes_topic": topics.line(camera, line, label),
                            "json_attributes_template": "{{ {'since': value_json.since} | tojson }}",
                            "state_class": "total_increasing",  # back to 0 at midnight: a new cycle
                            "unit_of_measurement": "crossings",
                            "icon": "mdi:login" if direction == "in" else "mdi:logout",
                        },
                    )
        for zone, zone_labels in zones.get(camera, {}).items():
            for label in zone_labels:
                add(
                    "sensor",
                    (camera, zone, label, "occupancy"),
                    f"{camera} {zone} {label} occupancy",
                    {
                        "state_topic": topics.occupancy(camera, zone, label),
                        "state_class": "measurement",
                        "unit_of_measurement": "objects",
                        "icon": "mdi:account-group",
                    },
                )
    return out


def _collect(
    prefix: str,
    device: str,
    cameras: list[str],
    rules: Mapping[str, list[str]],
    labels: Mapping[str, list[str]],
    rule_labels: Mapping[str, str] | None,
    lines: Mapping[str, Mapping[str, list[str]]] | None,
    zones: Mapping[str, Mapping[str, list[str]]] | None,
    modes: Sequence[str] | None,
) -> list[Component]:
    return _components(
        Topics(prefix, device), device, cameras, rules, labels, rule_labels or {}, lines or {}, zones or {},
        modes or (),
    )  # fmt: skip


def discovery_messages(
    prefix: str,
    device: str,
    discovery_prefix: str,
    cameras: list[str],
    rules: Mapping[str, list[str]],
    labels: Mapping[str, list[str]],
    sw_version: str,
    *,
    rule_labels: Mapping[str, str] | None = None,
    lines: Mapping[str, Mapping[str, list[str]]] | None = None,
    zones: Mapping[str, Mapping[str, list[str]]] | None = None,
    modes: Sequence[str] | None = None,
    model: str = DEFAULT_MODEL,
    device_name: str | None = None,
) -> list[tuple[str, dict[str, Any]]]:
    """(config topic, config payload) for every entity of the device: per-entity discovery.

    `rules`: rule name -> the cameras it applies to (already expanded: a rule for every camera lists
    them all). `labels`: camera -> the labels whose counts it publishes. `rule_labels`: rule name ->
    the label it watches, used for the alert sensor's device class (fire/smoke: safety, person:
    occupancy); without it the rule name is taken as the label. `lines`: camera -> line -> the labels
    it counts (an in and an out sensor each); `zones`: camera -> zone -> the labels whose occupancy it
    publishes; `modes`: the mode names (the select's options; none: no select). Cameras not in
    `cameras` are ignored. Order is stable for the same input.
    """
    common = _common(Topics(prefix, device), device, sw_version, model, device_name)
    return [
        (discovery_topic(discovery_prefix, platform, device, object_id), {**own, **common})
        for platform, object_id, own in _collect(
            prefix, device, cameras, rules, labels, rule_labels, lines, zones, modes
        )
    ]


def device_discovery_message(
    prefix: str,
    device: str,
    discovery_prefix: str,
    cameras: list[str],
    rules: Mapping[str, list[str]],
    labels: Mapping[str, list[str]],
    sw_version: str,
    *,
    rule_labels: Mapping[str, str] | None = None,
    lines: Mapping[str, Mapping[str, list[str]]] | None = None,
    zones: Mapping[str, Mapping[str, list[str]]] | None = None,
    modes: Sequence[str] | None = None,
    announced_before: Mapping[str, str] | None = None,
    model: str = DEFAULT_MODEL,
    device_name: str | None = None,
) -> tuple[str, dict[str, Any]]:
    """(topic, payload) of device-based discovery: the same entities as `discovery_messages`, in one
    config. `announced_before`: object id -> platform of the components announced before (this run or
    the last); each that is gone now stays in `cmps` as `{"p": platform}` alone, which removes it from
    Home Assistant."""
    common = _common(Topics(prefix, device), device, sw_version, model, device_name)
    cmps: dict[str, dict[str, Any]] = {
        object_id: {"p": platform, **own}
        for platform, object_id, own in _collect(
            prefix, device, cameras, rules, labels, rule_labels, lines, zones, modes
        )
    }
    for object_id, platform in (announced_before or {}).items():
        cmps.setdefault(object_id, {"p": platform})
    payload = {"dev": common["device"], "o": common["origin"], "avty": common["availability"], "cmps": cmps}
    return device_topic(discovery_prefix, device), payload


def discovery_configs(
    style: Style, *args: Any, announced_before: Mapping[str, str] | None = None, **kwargs: Any
) -> list[tuple[str, dict[str, Any]]]:
    """The configs to publish in `style`, arguments as `discovery_messages`. `announced_before` is for
    the device style (see `device_discovery_message`); in the entity style the caller clears the
    configs of entities that are gone."""
    if style == "device":
        return [device_discovery_message(*args, announced_before=announced_before, **kwargs)]
    if style == "entity":
        return discovery_messages(*args, **kwargs)
    raise ValueError(f"unknown discovery style {style!r} (styles: {', '.join(STYLES)})")


def components_of(messages: Iterable[tuple[str, Mapping[str, Any]]]) -> dict[str, str]:
    """object id -> platform of the components that `messages` (either style) announce; removal
    placeholders (`{"p": ...}` alone) are not announcements."""
    out: dict[str, str] = {}
    for topic, payload in messages:
        if "cmps" in payload:
            out.update({oid: c["p"] for oid, c in payload["cmps"].items() if len(c) > 1})
        else:
            levels = topic.split("/")
            out[levels[-2]] = levels[-4]
    return out


def parse_topic(discovery_prefix: str, device: str, topic: str) -> tuple[str, str | None] | None:
    """("device", None) for this device's device-based topic, (platform, object id) for one of its
    per-entity topics, None for any other topic."""
    if topic == device_topic(discovery_prefix, device):
        return "device", None
    levels = topic.split("/")
    base = discovery_prefix.split("/")
    n = len(base)
    if (
        len(levels) == n + 4
        and levels[:n] == base
        and levels[n + 1] == node_id(device)
        and levels[-1] == "config"
    ):
        return levels[n], levels[n + 2]
    return None


def discovery_cleanup(
    style: Style,
    discovery_prefix: str,
    device: str,
    current: Sequence[tuple[str, Mapping[str, Any]]],
    stale: Iterable[str],
) -> list[tuple[str, bytes, bool]]:
    """What to publish, in this order, about retained configs of this device (`stale`: found on the
    broker, not among the `current` ones) as (topic, payload, retain).

    The other style's configs of entities that are still there are migrated as Home Assistant
    documents it: `{"migrate_discovery": true}` (not retained) on their topics, every current config
    again, then an empty retained payload on the old topics. The configs of entities that are gone are
    cleared (HA removes those entities). Nothing to do: [].
    """
    stale = sorted(set(stale))
    have = components_of(current)
    migrating: list[str] = []
    for topic in stale:
        parsed = parse_topic(discovery_prefix, device, topic)
        if parsed is None:
            continue
        platform, object_id = parsed
        if style == "entity":
            migrate = platform == "device"
        else:
            migrate = object_id is not None and have.get(object_id) == platform
        if migrate:
            migrating.append(topic)
    out: list[tuple[str, bytes, bool]] = [(topic, MIGRATE, False) for topic in migrating]
    if migrating:
        out += [(topic, config_json(payload).encode(), True) for topic, payload in current]
    out += [(topic, b"", True) for topic in stale]
    return out


def load_announced(path: Path) -> dict[str, str]:
    """The components (object id -> platform) announced by the last run, as `save_announced` kept
    them; {} when there is no such file or it cannot be read (then nothing is removed)."""
    try:
        data = json.loads(path.read_text())
        return {str(k): str(v) for k, v in data["components"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def save_announced(path: Path, components: Mapping[str, str]) -> None:
    """Keep what was announced, so the next run can remove from Home Assistant the components that are
    gone by then (a camera taken out of the config). Written whole (edge.store.snapshots.write_atomic):
    a power cut leaves the last file or this one, never half of one, which would read as nothing
    announced and leave a removed camera's entities in Home Assistant for good. Raises OSError."""
    write_atomic(path, json.dumps({"components": dict(components)}, sort_keys=True).encode())

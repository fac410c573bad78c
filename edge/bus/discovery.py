"""Home Assistant MQTT discovery: the config messages that make one device's entities appear in HA.

Pure functions, no MQTT client: the bus publishes what `discovery_messages` returns, each payload as
compact JSON, **retained, QoS 1**, after every (re)connect (HA also re-reads retained configs when it
restarts). Every entity belongs to one HA device (`identifiers: ["reflex_<device>"]`) and is
available while `{prefix}/{device}/availability` says `online`.

Topics are `<discovery_prefix>/<component>/<node_id>/<object_id>/config` with
`node_id = reflex_<device>`, so all of a device's configs match `discovery_filter()`. The bus
subscribes to that filter and clears (empty retained payload) every config it receives that is not
among the ones it publishes: entities of a removed camera or rule disappear from Home Assistant.

Entities (object ids; `{camera}`, `{rule}`, `{label}` made topic-safe):

binary_sensor  {camera}_{rule}_active   ON while an event of the rule is open  ({camera}/active/{rule})
                                        (device-verified fire/smoke: once its alert is confirmed)
binary_sensor  {camera}_online          camera stream online/offline           ({camera}/status)
sensor         {camera}_{label}_count   current count                          ({camera}/{label})
image          {camera}_snapshot        JPEG of the latest alert               ({camera}/snapshot)
switch         {camera}_detect          detection on/off                       ({camera}/detect/set|state)
switch         {camera}_alerts          alerts on/off                          ({camera}/alerts/set|state)
sensor         {camera}_fps             frames per second, from `stats`
sensor         outbox_depth             alerts waiting for the broker, from `stats`

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
import re
from typing import Any

from edge.outbox import OFF, OFFLINE, ON, ONLINE, SWITCHES, Topics

MANUFACTURER = "Reflex Edge"
DEFAULT_MODEL = "Reflex Edge appliance"
SAFETY_LABELS = frozenset({"fire", "smoke"})
OCCUPANCY_LABELS = frozenset({"person"})
COMPONENTS = ("binary_sensor", "sensor", "image", "switch")

_UNSAFE = re.compile(r"[^a-zA-Z0-9_-]+")
_SWITCH_NAMES = {"detect": "detection", "alerts": "alerts"}


def topic_id(text: str) -> str:
    """`text` reduced to what HA accepts in a discovery topic level: [a-zA-Z0-9_-]."""
    return _UNSAFE.sub("_", text).strip("_") or "x"


def node_id(device: str) -> str:
    """The discovery topics' node id for this device (`reflex_<device>`)."""
    return f"reflex_{topic_id(device)}"


def discovery_topic(discovery_prefix: str, component: str, device: str, object_id: str) -> str:
    return f"{discovery_prefix}/{component}/{node_id(device)}/{object_id}/config"


def discovery_filter(discovery_prefix: str, device: str) -> str:
    """Subscription filter that matches every discovery config this device publishes."""
    return f"{discovery_prefix}/+/{node_id(device)}/+/config"


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


def discovery_messages(
    prefix: str,
    device: str,
    discovery_prefix: str,
    cameras: list[str],
    rules: dict[str, list[str]],
    labels: dict[str, list[str]],
    sw_version: str,
    *,
    rule_labels: dict[str, str] | None = None,
    model: str = DEFAULT_MODEL,
    device_name: str | None = None,
) -> list[tuple[str, dict[str, Any]]]:
    """(config topic, config payload) for every entity of the device.

    `rules`: rule name -> the cameras it applies to (already expanded: a rule for every camera lists
    them all). `labels`: camera -> the labels whose counts it publishes. `rule_labels`: rule name ->
    the label it watches, used for the alert sensor's device class (fire/smoke: safety, person:
    occupancy); without it the rule name is taken as the label. Cameras not in `cameras` are ignored.
    Order is stable for the same input.
    """
    rule_labels = rule_labels or {}
    topics = Topics(prefix, device)
    availability_topic = topics.availability
    common: dict[str, Any] = {
        "availability": [
            {
                "topic": availability_topic,
                "payload_available": ONLINE,
                "payload_not_available": OFFLINE,
            }
        ],
        "device": {
            "identifiers": [f"reflex_{device}"],
            "name": device_name or f"Reflex Edge {device}",
            "manufacturer": MANUFACTURER,
            "model": model,
            "sw_version": sw_version,
        },
        "origin": {"name": MANUFACTURER, "sw_version": sw_version},
        "qos": 1,
    }
    stats_topic = topics.stats
    messages: list[tuple[str, dict[str, Any]]] = []
    used: set[str] = set()

    def add(component: str, parts: tuple[str, ...], name: str, config: dict[str, Any]) -> None:
        object_id = "_".join(topic_id(p) for p in parts)
        if object_id in used:  # two names that only differ where topic_id() folded them
            digest = hashlib.sha1("\x00".join((component, *parts)).encode()).hexdigest()[:8]
            object_id = f"{object_id}_{digest}"
        used.add(object_id)
        payload = {
            "name": name,
            "unique_id": f"reflex_{device}_{object_id}",
            "default_entity_id": f"{component}.{_entity_slug(device, object_id)}",
            **config,
            **common,
        }
        messages.append((discovery_topic(discovery_prefix, component, device, object_id), payload))

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
    return messages

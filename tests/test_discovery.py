"""Home Assistant discovery configs (edge/bus/discovery.py) and the payload JSON Schemas."""

from __future__ import annotations

import json
import re
from importlib.resources import files
from pathlib import Path
from typing import get_args

import jsonschema
import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment
from paho.mqtt.client import topic_matches_sub

from edge.bus.discovery import (
    MIGRATE,
    components_of,
    config_json,
    device_discovery_message,
    discovery_cleanup,
    discovery_configs,
    discovery_filter,
    discovery_filters,
    discovery_messages,
    load_announced,
    parse_topic,
    save_announced,
)
from edge.config.models import RuleConfig
from edge.outbox import Topics, alert_payload, event_payload
from edge.types import AlertRecord, EventRecord

DEV = "lobby-1"
CAMERAS = ["front", "yard"]
RULES = {"fire": ["front", "yard"], "person": ["front"], "loiter": ["yard"], "car": ["yard"]}
LABELS = {"front": ["person", "fire"], "yard": ["person", "traffic light"]}
LINES = {"front": {"side gate": ["person", "car"]}}
ZONES = {"yard": {"loading_dock": ["person"]}, "front": {}}
MODES = ["home", "away", "night"]
# HA's discovery topic matcher (homeassistant/components/mqtt/discovery.py), anchored.
HA_TOPIC = re.compile(
    r"^homeassistant/(?P<component>\w+)/(?:(?P<node_id>[a-zA-Z0-9_-]+)/)?(?P<object_id>[a-zA-Z0-9_-]+)/config$"
)
REQUIRED = {
    "binary_sensor": ("state_topic",),
    "sensor": ("state_topic",),
    "switch": ("command_topic", "state_topic"),
    "image": ("image_topic",),
    "event": ("state_topic",),
    "select": ("command_topic", "state_topic"),
}
AVAILABILITY = [
    {
        "topic": "reflex/lobby-1/availability",
        "payload_available": "online",
        "payload_not_available": "offline",
    }
]
DEVICE = {
    "identifiers": ["reflex_lobby-1"],
    "name": "Reflex Edge lobby-1",
    "manufacturer": "Reflex Edge",
    "model": "Reflex Edge appliance",
    "sw_version": "0.1.0",
}
ENV = ImmutableSandboxedEnvironment()  # what HA renders value templates with
SEVERITIES = list(get_args(RuleConfig.model_fields["severity"].annotation))
"""The severities a rule may be configured with."""
ALERT_SCHEMA = json.loads(files("edge.outbox").joinpath("schemas", "alert.json").read_text())
PHASES = ALERT_SCHEMA["properties"]["phase"]["enum"]
"""An alert's phases, as the alert payload's schema (the MQTT contract) has them."""


def arguments(**kw):
    args = {
        "prefix": "reflex",
        "device": DEV,
        "discovery_prefix": "homeassistant",
        "cameras": CAMERAS,
        "rules": RULES,
        "labels": LABELS,
        "sw_version": "0.1.0",
        "rule_labels": {"loiter": "person"},
        "lines": LINES,
        "zones": ZONES,
        "modes": MODES,
    }
    args.update(kw)
    return args


def messages(**kw):
    return discovery_messages(**arguments(**kw))


def by_uid(msgs):
    return {cfg["unique_id"]: (t, cfg) for t, cfg in msgs}


def render(template: str, payload: dict) -> str:
    return ENV.from_string(template).render(value_json=payload)


def test_every_config_is_complete_and_tied_to_one_device():
    msgs = messages()
    assert msgs
    for t, cfg in msgs:
        m = HA_TOPIC.match(t)
        assert m, t
        component = m["component"]
        assert component in REQUIRED
        assert m["node_id"] == "reflex_lobby-1"
        assert json.loads(json.dumps(cfg)) == cfg  # plain JSON
        assert cfg["name"] and cfg["unique_id"].startswith("reflex_lobby-1_")
        assert re.fullmatch(rf"{component}\.[a-z0-9_]+", cfg["default_entity_id"]), cfg["default_entity_id"]
        assert "object_id" not in cfg  # deprecated by HA 2025.10, default_entity_id replaces it
        assert cfg["availability"] == AVAILABILITY
        assert cfg["device"] == DEVICE
        assert cfg["origin"] == {"name": "Reflex Edge", "sw_version": "0.1.0"}
        assert cfg["qos"] == 1
        for key in REQUIRED[component]:
            assert cfg[key].startswith("reflex/lobby-1/"), (key, cfg)
    uids = [cfg["unique_id"] for _, cfg in msgs]
    assert len(set(uids)) == len(uids)
    topics = [t for t, _ in msgs]
    assert len(set(topics)) == len(topics)
    entity_ids = [cfg["default_entity_id"] for _, cfg in msgs]
    assert len(set(entity_ids)) == len(entity_ids)
    assert messages() == msgs  # stable


def test_entities_follow_the_topic_layout():
    ents = by_uid(messages())
    count = dict.fromkeys(REQUIRED, 0)
    for t, _ in ents.values():
        count[t.split("/")[1]] += 1
    # binary: alerts front fire+person, yard fire+loiter+car; online x2
    # sensor: counts 4 + fps 2 + outbox + side gate in/out for person and car 4 + loading dock person 1
    assert count == {"binary_sensor": 7, "sensor": 12, "image": 2, "switch": 4, "event": 1, "select": 1}

    t, fire = ents["reflex_lobby-1_front_fire_active"]
    assert t == "homeassistant/binary_sensor/reflex_lobby-1/front_fire_active/config"
    assert fire["state_topic"] == Topics("reflex", DEV).active("front", "fire")
    assert (fire["payload_on"], fire["payload_off"], fire["device_class"]) == ("ON", "OFF", "safety")
    assert ents["reflex_lobby-1_front_person_active"][1]["device_class"] == "occupancy"
    assert ents["reflex_lobby-1_yard_loiter_active"][1]["device_class"] == "occupancy"  # via rule_labels
    assert "device_class" not in ents["reflex_lobby-1_yard_car_active"][1]
    assert "reflex_lobby-1_yard_person_active" not in ents  # the person rule is for front only

    online = ents["reflex_lobby-1_yard_online"][1]
    assert online["state_topic"] == "reflex/lobby-1/yard/status"
    assert (online["payload_on"], online["payload_off"]) == ("online", "offline")
    assert (online["device_class"], online["entity_category"]) == ("connectivity", "diagnostic")

    t, light = ents["reflex_lobby-1_yard_traffic_light_count"]
    assert t.endswith("/yard_traffic_light_count/config")
    assert light["state_topic"] == "reflex/lobby-1/yard/traffic light"  # the topic as published
    assert light["state_class"] == "measurement"

    snap = ents["reflex_lobby-1_front_snapshot"][1]
    assert snap["image_topic"] == "reflex/lobby-1/front/snapshot"
    assert snap["content_type"] == "image/jpeg"
    assert "url_topic" not in snap and "state_topic" not in snap

    for switch in ("detect", "alerts"):
        sw = ents[f"reflex_lobby-1_yard_{switch}"][1]
        assert sw["command_topic"] == f"reflex/lobby-1/yard/{switch}/set"
        assert sw["state_topic"] == f"reflex/lobby-1/yard/{switch}/state"
        assert (sw["payload_on"], sw["payload_off"]) == ("ON", "OFF")

    t, alerts = ents["reflex_lobby-1_alerts"]
    assert t == "homeassistant/event/reflex_lobby-1/alerts/config"
    assert alerts["state_topic"] == "reflex/lobby-1/alerts"
    # One event type per severity a rule can be configured with, then the phases that are not (yet, or
    # any more) that severity: a severity added to the config must reach Home Assistant too.
    assert alerts["event_types"] == [*SEVERITIES, *(p for p in PHASES if p != "confirmed")]

    t, mode = ents["reflex_lobby-1_mode"]
    assert t == "homeassistant/select/reflex_lobby-1/mode/config"
    assert (mode["command_topic"], mode["state_topic"]) == (
        "reflex/lobby-1/mode/set",
        "reflex/lobby-1/mode/state",
    )
    assert mode["options"] == MODES and mode["retain"] is False and mode["optimistic"] is False
    assert "reflex_lobby-1_mode" not in by_uid(messages(modes=None))  # no modes: no select

    for direction in ("in", "out"):
        t, gate = ents[f"reflex_lobby-1_front_side_gate_car_{direction}"]
        assert t == f"homeassistant/sensor/reflex_lobby-1/front_side_gate_car_{direction}/config"
        assert (
            gate["state_topic"] == gate["json_attributes_topic"] == "reflex/lobby-1/front/line/side gate/car"
        )
        assert gate["state_class"] == "total_increasing"  # back to 0 at midnight: a new cycle, not a drop
    t, dock = ents["reflex_lobby-1_yard_loading_dock_person_occupancy"]
    assert dock["state_topic"] == "reflex/lobby-1/yard/zone/loading_dock/person"
    assert (dock["state_class"], dock["unit_of_measurement"]) == ("measurement", "objects")


def test_stats_sensors_render_against_a_stats_message():
    ents = by_uid(messages())
    stats = {
        "v": 1,
        "device": DEV,
        "at": 1.0,
        "cameras": {
            "front": {
                "fps": 12.5,
                "gate_skip_ratio": 0.9,
                "inference_ms": 8.0,
                "dropped_frames": 0,
                "online": True,
            }
        },
        "outbox_depth": 3,
        "outbox_shed": 0,
    }

    def fps(uid: str) -> str:
        cfg = ents[uid][1]
        assert cfg["state_topic"] == "reflex/lobby-1/stats"
        return render(cfg["value_template"], stats)

    assert fps("reflex_lobby-1_front_fps") == "12.5"
    assert fps("reflex_lobby-1_yard_fps") == "None"  # HA's "unknown", not an error
    assert fps("reflex_lobby-1_outbox_depth") == "3"


def _alert(phase: str, severity: str = "critical") -> dict:
    return alert_payload(
        AlertRecord(id="al1", event_id="ev1", rule="fire", camera="front", label="fire", severity=severity,
                    text="Fire! <flames> on 'front'", at=1700000001.0, frame=13, pts=0.52, phase=phase)
    )  # fmt: skip


def test_the_alert_event_says_the_severity_once_an_alert_is_real_and_carries_the_alert():
    cfg = by_uid(messages())["reflex_lobby-1_alerts"][1]
    seen = {}
    for phase in PHASES:
        for severity in SEVERITIES:
            alert = _alert(phase, severity)
            event = json.loads(render(cfg["value_template"], alert))
            seen[(phase, severity)] = event.pop("event_type")
            assert event == alert  # every field of the alert is an attribute of the event
    assert seen[("confirmed", "critical")] == "critical" and seen[("confirmed", "info")] == "info"
    assert seen[("provisional", "critical")] == "provisional"  # not yet "critical": a verdict follows
    assert seen[("retracted", "warning")] == "retracted"
    assert seen == {(p, s): s if p == "confirmed" else p for p in PHASES for s in SEVERITIES}
    # Home Assistant drops an event whose type the config does not declare: every alert the appliance
    # can send has one it declares, and it declares none that no alert has.
    assert set(seen.values()) == set(cfg["event_types"])


def test_line_and_occupancy_sensors_render_against_their_payloads():
    ents = by_uid(messages())
    counts = {"v": 1, "in": 4, "out": 3, "since": "2025-06-01T00:00:00+02:00"}
    for direction, want in (("in", "4"), ("out", "3")):
        cfg = ents[f"reflex_lobby-1_front_side_gate_person_{direction}"][1]
        assert render(cfg["value_template"], counts) == want
        assert json.loads(render(cfg["json_attributes_template"], counts)) == {"since": counts["since"]}
    assert "value_template" not in ents["reflex_lobby-1_yard_loading_dock_person_occupancy"][1]  # plain "2"


def test_device_discovery_is_one_config_with_the_same_entities():
    per_entity = messages()
    topic, payload = device_discovery_message(**arguments())
    assert topic == "homeassistant/device/reflex_lobby-1/config"
    assert topic_matches_sub(discovery_filters("homeassistant", DEV)[1], topic)
    assert HA_TOPIC.match(topic)["component"] == "device"  # what HA subscribes to: device/+/config
    assert set(payload) == {"dev", "o", "avty", "cmps"}
    assert payload["dev"] == DEVICE and payload["avty"] == AVAILABILITY
    assert payload["o"] == {"name": "Reflex Edge", "sw_version": "0.1.0"}
    assert len(payload["cmps"]) == len(per_entity)
    for t, cfg in per_entity:
        platform, _node, object_id = t.split("/")[1:4]
        component = payload["cmps"][object_id]  # the same object ids: HA's discovery ids match
        assert component.pop("p") == platform
        assert component == {k: v for k, v in cfg.items() if k not in ("device", "origin", "availability")}
    assert discovery_configs("device", **arguments()) == [device_discovery_message(**arguments())]
    assert discovery_configs("entity", **arguments()) == per_entity
    with pytest.raises(ValueError, match="unknown discovery style 'yaml'"):
        discovery_configs("yaml", **arguments())


def test_components_announced_before_and_gone_now_are_removed_with_their_platform_alone():
    before = components_of([device_discovery_message(**arguments())])
    assert before["front_fire_active"] == "binary_sensor" and before["alerts"] == "event"
    assert components_of(messages()) == before  # either style names the same components
    _, payload = device_discovery_message(**arguments(cameras=["front"]), announced_before=before)
    cmps = payload["cmps"]
    assert cmps["yard_online"] == {"p": "binary_sensor"}  # the removed camera's entities
    assert cmps["yard_loading_dock_person_occupancy"] == {"p": "sensor"}
    assert len(cmps["front_online"]) > 1  # still there: its whole config
    assert components_of([("t", payload)]) == components_of(messages(cameras=["front"]))


def test_announced_components_survive_a_restart_in_a_file(tmp_path: Path):
    path = tmp_path / "ha_discovery.json"
    assert load_announced(path) == {}  # no file yet: nothing to remove
    save_announced(path, {"front_online": "binary_sensor"})
    assert load_announced(path) == {"front_online": "binary_sensor"}
    assert not list(tmp_path.glob("*.tmp"))
    path.write_text("{not json")
    assert load_announced(path) == {}


def test_every_config_of_the_device_and_no_other_matches_the_cleanup_filter():
    """The bus clears retained configs under this filter that it no longer publishes."""
    wildcard = discovery_filter("homeassistant", DEV)
    assert all(topic_matches_sub(wildcard, t) for t, _ in messages(rule_labels=None))
    other = discovery_messages("reflex", "other", "homeassistant", ["front"], {}, {}, "x")
    assert other and not any(topic_matches_sub(wildcard, t) for t, _ in other)
    device = device_discovery_message(**arguments())[0]
    assert not any(topic_matches_sub(f, device_discovery_message(**arguments(device="other"))[0])
                   for f in discovery_filters("homeassistant", DEV))  # fmt: skip
    assert parse_topic("homeassistant", DEV, device) == ("device", None)
    assert parse_topic("homeassistant", DEV, messages()[0][0]) == ("binary_sensor", "front_fire_active")
    assert parse_topic("homeassistant", DEV, "homeassistant/sensor/reflex_other/x/config") is None


def test_switching_to_the_device_style_migrates_the_entities_as_home_assistant_documents():
    current = discovery_configs("device", **arguments())
    old = [t for t, _ in messages()]
    gone = "homeassistant/binary_sensor/reflex_lobby-1/attic_online/config"  # a camera removed meanwhile
    steps = discovery_cleanup("device", "homeassistant", DEV, current, [*old, gone])
    markers = [t for t, p, retain in steps if p == MIGRATE and not retain]
    assert sorted(markers) == sorted(old)  # every entity still there: unloaded, registry kept
    n = len(markers)
    assert steps[n] == (current[0][0], config_json(current[0][1]).encode(), True)  # then the device config
    assert sorted(t for t, p, retain in steps[n + 1 :] if p == b"" and retain) == sorted([*old, gone])
    assert len(steps) == n + 1 + len(old) + 1
    assert discovery_cleanup("device", "homeassistant", DEV, current, []) == []


def test_switching_back_to_entities_rolls_the_device_config_back():
    current = discovery_configs("entity", **arguments())
    device = device_discovery_message(**arguments())[0]
    gone = "homeassistant/sensor/reflex_lobby-1/attic_fps/config"
    steps = discovery_cleanup("entity", "homeassistant", DEV, current, [device, gone])
    assert steps[0] == (device, MIGRATE, False)
    assert steps[1 : 1 + len(current)] == [(t, config_json(p).encode(), True) for t, p in current]
    assert sorted(steps[1 + len(current) :]) == sorted([(device, b"", True), (gone, b"", True)])
    # Only removed entities' configs left over (the same style): they are cleared, nothing migrates.
    assert discovery_cleanup("entity", "homeassistant", DEV, current, [gone]) == [(gone, b"", True)]


def test_names_that_fold_to_the_same_id_stay_unique():
    msgs = messages(cameras=["a_b", "a"], rules={"c": ["a_b"], "b_c": ["a"]}, labels={}, rule_labels=None,
                    lines={}, zones={})  # fmt: skip
    uids = [cfg["unique_id"] for _, cfg in msgs]
    assert len(set(uids)) == len(uids)
    assert all(HA_TOPIC.match(t) for t, _ in msgs)
    cmps = device_discovery_message(**arguments(cameras=["a_b", "a"], rules={"c": ["a_b"], "b_c": ["a"]},
                                                labels={}, lines={}, zones={}))[1]["cmps"]  # fmt: skip
    assert len(cmps) == len(msgs)


# --- JSON Schemas -----------------------------------------------------------------------------------

SCHEMAS = ("event", "alert", "answer", "ask", "stats", "blue_request", "blue_result", "line")


def schema(name: str) -> dict:
    return json.loads(files("edge.outbox").joinpath("schemas", f"{name}.json").read_text())


def validator(name: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(schema(name), format_checker=jsonschema.FormatChecker())


def valid(name: str, doc: dict) -> bool:
    return validator(name).is_valid(doc)


@pytest.mark.parametrize("name", SCHEMAS)
def test_schemas_are_draft_2020_12(name):
    s = schema(name)
    assert s["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(s)
    if name != "ask":  # incoming instructions may omit the version
        assert "v" in s["required"] and s["properties"]["v"] == {"const": 1}


def _event(**kw) -> EventRecord:
    args = dict(
        id="ev1",
        camera="front",
        label="person",
        rule="person",
        score=0.87654,
        box=(10.04, 20.0, 110.0, 220.0),
        started_at=1700000000.5,
        frame=12,
        pts=0.48,
        zones=["door"],
    )
    args.update(kw)
    return EventRecord(**args)


def test_event_and_alert_payloads_validate():
    for transition in ("start", "update", "end"):
        doc = event_payload(_event(ended_at=1700000010.0 if transition == "end" else None), transition)
        validator("event").validate(doc)
    validator("event").validate(event_payload(_event(label="fire", rule="fire", box=None), "start"))
    validator("event").validate(event_payload(_event(snapshot="2024/ev1.jpg"), "update"))
    for phase in ("provisional", "confirmed", "retracted"):
        alert = AlertRecord(
            id="al1",
            event_id="ev1",
            rule="fire",
            camera="front",
            label="fire",
            severity="critical",
            text="Fire! Flames seen on front",
            at=1700000001.0,
            frame=13,
            pts=0.52,
            phase=phase,
        )
        validator("alert").validate(alert_payload(alert))


def test_outgoing_event_and_alert_refuse_unknown_keys_and_bad_values():
    doc = event_payload(_event(), "start")
    assert not valid("event", {**doc, "extra": 1})
    assert not valid("event", {**doc, "v": 2})
    assert not valid("event", {**doc, "type": "start"})  # the wire says new/update/end
    assert not valid("event", {**doc, "box": [1, 2, 3]})
    assert not valid("event", {k: v for k, v in doc.items() if k != "snapshot"})
    alert = {
        "v": 1,
        "id": "a",
        "event_id": "e",
        "rule": "r",
        "camera": "c",
        "label": "l",
        "severity": "warning",
        "text": "t",
        "at": 1.0,
        "phase": "confirmed",
    }
    assert valid("alert", alert)
    assert not valid("alert", {**alert, "severity": "panic"})
    assert not valid("alert", {**alert, "phase": "maybe"})
    assert not valid("alert", {**alert, "box": None})


def test_the_other_payloads():
    assert valid("ask", {"id": "q1", "text": "how many people are in the lobby?"})
    assert valid("ask", {"v": 1, "id": "q1", "text": "describe", "camera": "lobby"})
    assert not valid("ask", {"id": "q1"})
    assert not valid("ask", {"id": "q1", "text": "x", "camera": "Bad Name"})
    for kind in ("ack", "answer", "result", "error"):
        assert valid("answer", {"v": 1, "id": "q1", "kind": kind, "text": "Please wait a moment"})
    assert valid(
        "answer", {"v": 1, "id": "q1", "kind": "result", "text": "ok", "data": {"n": 2}, "job_id": "j1"}
    )
    assert not valid("answer", {"v": 1, "id": "q1", "kind": "maybe", "text": "x"})
    stats = {
        "v": 1,
        "device": DEV,
        "at": 1700000000.0,
        "cameras": {
            "front": {
                "fps": 12.5,
                "gate_skip_ratio": 0.93,
                "inference_ms": 8.1,
                "dropped_frames": 4,
                "online": True,
            },
            "yard": {
                "fps": 0,
                "gate_skip_ratio": 0,
                "inference_ms": None,
                "dropped_frames": 0,
                "online": False,
            },
        },
        "outbox_depth": 0,
        "outbox_shed": 0,
    }
    assert valid("stats", stats)
    assert not valid("stats", {**stats, "outbox_depth": -1})
    assert not valid("stats", {**stats, "cameras": {"front": {"fps": 1}}})
    request = {
        "v": 1,
        "job_id": "j1",
        "device": DEV,
        "camera": "front",
        "ask_id": "q1",
        "kind": "describe",
        "prompt": "describe what the person did",
        "frames": [{"ts": 1700000000.0, "jpeg_b64": "/9j/4AAQ"}],
        "context": {"recent_events": [{"id": "ev1", "label": "person"}], "counts": {"person": 1}},
        "deadline": 1700000060.0,
    }
    assert valid("blue_request", request)
    assert not valid("blue_request", {**request, "frames": [{"ts": 1.0}]})
    result = {"v": 1, "job_id": "j1", "status": "done", "text": "A person walked in.", "data": None}
    assert valid("blue_result", {**result, "elapsed_ms": 812.0})
    assert valid("blue_result", {**result, "elapsed_ms": 812.0, "html": "<p>report</p>"})
    assert not valid("blue_result", result)  # elapsed_ms missing
    assert not valid("blue_result", {**result, "elapsed_ms": 1, "status": "ok"})

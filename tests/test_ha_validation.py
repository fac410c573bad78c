"""Home Assistant discovery as the appliance really publishes it, on a real broker, checked with Home
Assistant's own code (tools/ha_validate, run by the Python of a venv with `homeassistant` installed:
REFLEX_HA_PYTHON, else .venv-ha, which `.ci/run` makes).

The appliance runs in-process with cameras (whose streams are unreachable: discovery needs no
pictures), rules, a tripwire, zones and modes, in both discovery styles. What is retained under the
discovery prefix afterwards is exactly what a Home Assistant starting now would read.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from edge.appliance import Appliance
from edge.bus.discovery import MIGRATE, device_topic, discovery_messages
from edge.config.models import EdgeConfig
from edge.outbox import alert_payload
from edge.types import AlertRecord
from edge.wiring import build_rules
from tests.conftest import MODEL, REPO, needs_shared
from tests.support import Mosquitto, Subscriber, wait_until

HA_PYTHON = os.environ.get("REFLEX_HA_PYTHON") or str(REPO / ".venv-ha" / "bin" / "python")
needs_ha = pytest.mark.skipif(
    not Path(HA_PYTHON).exists(),
    reason=f"no Home Assistant to check with: {HA_PYTHON} does not exist (set REFLEX_HA_PYTHON to the python "
    "of a venv with homeassistant installed; .ci/run makes .venv-ha)",
)
VALIDATE = REPO / "tools" / "ha_validate"
DEV = "ha1"
ROOT = f"reflex/{DEV}"
DEVICE_TOPIC = device_topic("homeassistant", DEV)
UNREACHABLE = "rtsp://127.0.0.1:1/{}"


def config(
    tmp_path: Path, broker: Mosquitto, style: str, cameras: tuple[str, ...] = ("front", "yard")
) -> EdgeConfig:
    all_cameras: dict[str, Any] = {
        "front": {
            "source": UNREACHABLE.format("front"),
            "zones": {"porch": [(0.0, 0.5), (1.0, 0.5), (1.0, 1.0), (0.0, 1.0)]},
            "lines": {"side_gate": {"points": [(0.1, 0.6), (0.9, 0.6)], "labels": ["person", "car"]}},
        },
        "yard": {
            "source": UNREACHABLE.format("yard"),
            "zones": {"loading_dock": [(0.0, 0.0), (0.5, 0.0), (0.5, 0.5)]},
        },
    }
    return EdgeConfig.model_validate(
        {
            "device": {"id": DEV},
            "data_dir": str(tmp_path / "data"),
            "model": {"path": str(MODEL)},
            "watch": [],
            "cameras": {name: all_cameras[name] for name in cameras},
            "rules": [
                {"name": "fire", "label": "fire", "severity": "critical"},
                {"name": "person", "label": "person"},
                {
                    "name": "came_in",
                    "label": "person",
                    "cameras": ["front"],
                    "line": "side_gate",
                    "direction": "in",
                    "severity": "info",
                },
            ],
            "modes": {"home": {"rules": ["came_in"]}, "away": {}, "night": {"rules": ["person"]}},
            "mode": "away",
            "mqtt": {
                "url": broker.url,
                "discovery_style": style,
                "reconnect_min_s": 0.2,
                "reconnect_max_s": 1.0,
            },
        }
    )


def run_appliance(cfg: EdgeConfig, until: Any, timeout: float = 30.0) -> None:
    """Start the appliance, wait for `until()` (what the broker holds), stop it."""
    appliance = Appliance(cfg, REPO, build_rules(cfg, REPO, allow_empty=True))
    appliance.start()
    try:
        assert wait_until(until, timeout), "the appliance did not publish what was expected in time"
    finally:
        appliance.stop()


def retained(broker: Mosquitto, topics: list[str] | None = None) -> dict[str, bytes]:
    """What the broker holds retained now (non-empty), as a client connecting now gets it."""
    sub = Subscriber(
        broker.port, topics or ["homeassistant/#", f"{ROOT}/#"], client_id=f"retained-{time.time()}"
    )
    try:
        count = -1
        while count != len(sub.messages):  # until a quiet 0.3 s
            count = len(sub.messages)
            time.sleep(0.3)
        return {t: p for t, p, r in sub.messages if r and p}
    finally:
        sub.close()


def discovery(held: dict[str, bytes]) -> dict[str, bytes]:
    return {t: p for t, p in held.items() if t.startswith("homeassistant/")}


def entity_topics(held: dict[str, bytes]) -> set[str]:
    return {t for t in discovery(held) if t != DEVICE_TOPIC}


def validate(messages: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([HA_PYTHON, str(VALIDATE)], input=json.dumps(messages), capture_output=True,
                          text=True, timeout=120)  # fmt: skip


def as_text(held: dict[str, bytes]) -> dict[str, Any]:
    """Retained messages for the validator: text ones (the snapshot JPEGs are no template's input)."""
    out: dict[str, Any] = {}
    for topic, payload in held.items():
        try:
            out[topic] = payload.decode()
        except UnicodeDecodeError:
            continue
    return out


def alerts() -> list[str]:
    """Alerts as the appliance formats them (edge.outbox), each phase and severity: the event entity's
    input (alerts are not retained, so the broker holds none)."""
    out = []
    for phase, severity in (("confirmed", "info"), ("confirmed", "critical"), ("provisional", "critical"),
                            ("retracted", "warning")):  # fmt: skip
        alert = AlertRecord(id="al1", event_id="ev1", rule="came_in", camera="front", label="person",
                            severity=severity, text="Someone came in through the side gate", at=1.0,
                            frame=1, pts=0.1, phase=phase)  # fmt: skip
        out.append(json.dumps(alert_payload(alert)))
    return out


def accepted(stdout: str) -> set[str]:
    """The object ids (entity style: `OK  homeassistant/<platform>/<node>/<object id>/config`) and
    component ids (device style: `OK  homeassistant/device/<node>/config [<component id>]`) the
    validator accepted."""
    ids = set()
    for line in stdout.splitlines():
        m = re.fullmatch(r"OK\s+(\S+)(?: \[([^\]]+)\])?", line)
        if m is None:  # an error, a removal or migration request, the summary
            continue
        topic, component = m.groups()
        if component is not None:
            ids.add(component)
        elif topic != DEVICE_TOPIC:
            ids.add(topic.split("/")[3])
    return ids


@needs_shared
def test_switching_discovery_style_moves_every_entity_and_never_leaves_both(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    # An older release's per-entity configs, retained (Home Assistant shows these entities now).
    run_appliance(config(tmp_path, mosquitto, "entity"), lambda: len(entity_topics(retained(mosquitto))) > 20)
    before = retained(mosquitto)
    old = entity_topics(before)
    assert DEVICE_TOPIC not in before
    assert f"homeassistant/sensor/reflex_{DEV}/front_side_gate_car_in/config" in old
    assert f"homeassistant/sensor/reflex_{DEV}/yard_loading_dock_person_occupancy/config" in old
    assert f"homeassistant/select/reflex_{DEV}/mode/config" in old

    # Device style now: Home Assistant's migration, in its order, then only the device config is left.
    watch = Subscriber(mosquitto.port, ["homeassistant/#"], client_id="watch-switch")
    try:
        cleared = lambda: all(watch.last(t) == b"" for t in old)  # noqa: E731
        run_appliance(config(tmp_path, mosquitto, "device"), cleared, timeout=40)
        log = [(t, p) for t, p, r in watch.messages if not r]  # what was published while we watched
    finally:
        watch.close()
    for topic in old:
        marker = log.index((topic, MIGRATE))
        clear = log.index((topic, b""))
        again = [i for i, (t, p) in enumerate(log) if t == DEVICE_TOPIC and p and marker < i < clear]
        assert again, f"{topic}: the device config is not published again between the migration and the clear"
    held = retained(mosquitto)
    assert entity_topics(held) == set()
    cmps = json.loads(held[DEVICE_TOPIC])["cmps"]
    assert {t.split("/")[3] for t in old} == set(cmps)  # the same object ids: the same HA entities
    for topic in old:
        config_before = json.loads(before[topic])
        assert cmps[topic.split("/")[3]]["unique_id"] == config_before["unique_id"]

    # A camera taken out of the config: its components leave Home Assistant after the restart.
    run_appliance(
        config(tmp_path, mosquitto, "device", cameras=("front",)),
        lambda: json.loads(retained(mosquitto, [DEVICE_TOPIC]).get(DEVICE_TOPIC, b"{}")).get("cmps", {})
        .get("yard_online") == {"p": "binary_sensor"},
    )  # fmt: skip
    cmps = json.loads(retained(mosquitto)[DEVICE_TOPIC])["cmps"]
    assert cmps["yard_loading_dock_person_occupancy"] == {"p": "sensor"}
    assert len(cmps["front_online"]) > 1

    # And back to per-entity configs (older Home Assistant): the device config is rolled back.
    watch = Subscriber(mosquitto.port, ["homeassistant/#"], client_id="watch-back")
    try:
        run_appliance(
            config(tmp_path, mosquitto, "entity"), lambda: watch.last(DEVICE_TOPIC) == b"", timeout=40
        )
        log = [(t, p) for t, p, r in watch.messages if not r]
    finally:
        watch.close()
    assert log.index((DEVICE_TOPIC, MIGRATE)) < log.index((DEVICE_TOPIC, b""))
    held = retained(mosquitto)
    assert DEVICE_TOPIC not in held
    assert entity_topics(held) == old  # both cameras again, as at first


@needs_ha
@needs_shared
@pytest.mark.parametrize("style", ["device", "entity"])
def test_home_assistant_accepts_every_config_the_appliance_publishes(
    tmp_path: Path, mosquitto: Mosquitto, style: str
) -> None:
    published = (lambda: DEVICE_TOPIC in retained(mosquitto)) if style == "device" else (
        lambda: len(entity_topics(retained(mosquitto))) > 20)  # fmt: skip
    run_appliance(config(tmp_path, mosquitto, style), published)
    held = retained(mosquitto)
    assert f"{ROOT}/front/line/side_gate/person" in held and f"{ROOT}/mode/state" in held
    result = validate({**as_text(held), f"{ROOT}/alerts": alerts()})
    assert result.returncode == 0, result.stdout + result.stderr
    summary = result.stdout.strip().splitlines()[-1]
    assert summary.startswith("Home Assistant 2025.") and summary.endswith(": accepted"), summary
    checked = int(summary.split(": ")[1].split()[0])
    want = len(json.loads(held[DEVICE_TOPIC])["cmps"]) if style == "device" else len(discovery(held))
    assert checked == want, summary
    rendered = int(summary.split(", ")[1].split()[0])
    assert rendered >= 20, summary  # counts, lines, occupancy, mode, switches, alerts went through templates
    ok = accepted(result.stdout)
    # Every config by its exact name (a substring would let "alerts" pass as "front_alerts"), and no other.
    if style == "device":  # a component that is its platform alone is a removal, not a config
        configs = {k for k, c in json.loads(held[DEVICE_TOPIC])["cmps"].items() if set(c) != {"p"}}
    else:
        configs = {t.split("/")[3] for t in entity_topics(held)}
    assert ok == configs, (sorted(configs - ok), sorted(ok - configs))
    assert {"alerts", "mode", "front_side_gate_person_in", "yard_loading_dock_person_occupancy"} <= ok


@needs_ha
def test_the_validator_rejects_what_home_assistant_would() -> None:
    """The check can fail: each broken config is named with Home Assistant's reason."""
    args = ("reflex", DEV, "homeassistant", ["front"], {"fire": ["front"]}, {"front": ["person"]}, "1")
    good = {t: json.dumps(c) for t, c in discovery_messages(*args, modes=["home", "away"])}
    ok = validate({**good, f"{ROOT}/mode/state": "away", f"{ROOT}/front/person": "2"})
    assert ok.returncode == 0, ok.stdout + ok.stderr

    def broken(suffix: str, change: dict[str, Any], samples: dict[str, str] | None = None
               ) -> subprocess.CompletedProcess[str]:  # fmt: skip
        topic = next(t for t in good if t.endswith(suffix))
        bad = {**json.loads(good[topic]), **change}
        return validate({**good, topic: json.dumps(bad), **(samples or {})})

    mode_state, count = {f"{ROOT}/mode/state": "away"}, {f"{ROOT}/front/person": "2"}
    cases = [
        (broken("/front_person_count/config", {"state_class": "sometimes"}), "state_class"),
        (broken("/front_person_count/config", {"stat_clas": "measurement"}), "ignores stat_clas"),
        (broken("/front_detect/config", {"command_topic": f"{ROOT}/+/detect/set"}), "command_topic"),
        (broken("/mode/config", {"options": ["home"]}, mode_state), "not one of the options"),
        (
            broken("/front_person_count/config", {"value_template": "{{ value_json.n }}"}, count),
            "not a number",
        ),
    ]
    for result, why in cases:
        assert result.returncode == 1, result.stdout
        errors = [line for line in result.stdout.splitlines() if line.startswith("ERROR")]
        assert len(errors) == 1 and why in errors[0], errors
    both = validate({**good, DEVICE_TOPIC: json.dumps({"dev": {"ids": ["x"]}, "o": {"name": "x"}, "cmps": {
        "front_online": {"p": "binary_sensor", "unique_id": "u", "state_topic": "reflex/x"}}})})  # fmt: skip
    assert both.returncode == 1 and "announced by" in both.stdout, both.stdout

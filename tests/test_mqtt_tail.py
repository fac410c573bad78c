"""tools/mqtt_tail against a real mosquitto, run as an installer runs it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import paho.mqtt.client as mqtt

from edge.bus.discovery import discovery_messages
from tests.support import free_port

TAIL = Path(__file__).resolve().parent.parent / "tools" / "mqtt_tail"
JPEG = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 20 + b"\xff\xd9"
STATS = {
    "v": 1,
    "device": "dev1",
    "at": 1700000000.0,
    "cameras": {
        "lobby": {
            "fps": 12.5,
            "gate_skip_ratio": 0.9,
            "inference_ms": 8.0,
            "dropped_frames": 0,
            "online": True,
        }
    },
    "outbox_depth": 2,
    "outbox_shed": 0,
}


def publish(port: int, messages: list[tuple[str, bytes | str, int, bool]]) -> None:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        for topic, payload, qos, retain in messages:
            client.publish(topic, payload, qos=qos, retain=retain).wait_for_publish(5)
    finally:
        client.disconnect()
        client.loop_stop()


def retained_device(port: int) -> None:
    publish(
        port,
        [
            ("reflex/dev1/availability", "online", 1, True),
            ("reflex/dev1/stats", json.dumps(STATS), 0, True),
            ("reflex/dev1/lobby/snapshot", JPEG, 1, True),
            ("other/dev1/availability", "online", 1, True),  # outside the prefix: not shown
        ],
    )


def tail(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(TAIL), *args], capture_output=True, text=True, timeout=timeout)


def test_pretty_output_shows_retained_json_jpeg_and_live_alert(mosquitto):
    retained_device(mosquitto.port)
    proc = subprocess.Popen(
        [sys.executable, str(TAIL), mosquitto.url, "--count", "4", "--timeout", "10"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert "listening on" in proc.stderr.readline()  # subscribed: now a live message reaches it
    alert = {"v": 1, "id": "a1", "event_id": "e1", "text": "Fire! Flames seen on lobby"}
    publish(mosquitto.port, [("reflex/dev1/alerts", json.dumps(alert), 1, False)])
    out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    lines = out.splitlines()
    header = r"^\d\d:\d\d:\d\d\.\d{3}  "
    assert any(line.endswith("reflex/dev1/availability  qos=1  retained  online") for line in lines), out
    assert any(
        line.endswith(f"reflex/dev1/lobby/snapshot  qos=1  retained  <JPEG {len(JPEG)} bytes>")
        for line in lines
    ), out
    assert any(line.endswith("reflex/dev1/stats  qos=0  retained") for line in lines), out
    assert '      "outbox_depth": 2,' in lines  # pretty JSON, indented under its header
    assert '          "fps": 12.5,' in lines
    assert any(line.endswith("reflex/dev1/alerts  qos=1") for line in lines), out  # live: not retained
    assert '      "text": "Fire! Flames seen on lobby"' in lines
    assert "other/dev1" not in out
    assert len([line for line in lines if re.match(header, line)]) == 4


def test_json_lines_and_home_assistant_configs(mosquitto):
    retained_device(mosquitto.port)
    configs = discovery_messages("reflex", "dev1", "homeassistant", ["lobby"], {"fire": ["lobby"]}, {}, "0.1")
    publish(mosquitto.port, [(t, json.dumps(c), 1, True) for t, c in configs])
    want = 3 + len(configs)
    result = tail(
        mosquitto.url, "--device", "dev1", "--ha", "--json", "--count", str(want), "--timeout", "10"
    )
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) == want
    by_topic = {r["topic"]: r for r in rows}
    assert set(by_topic) == {
        "reflex/dev1/availability",
        "reflex/dev1/stats",
        "reflex/dev1/lobby/snapshot",
        *(t for t, _ in configs),
    }
    assert all(r["retained"] and isinstance(r["at"], float) and r["time"] for r in rows)
    assert by_topic["reflex/dev1/availability"] | {"at": 0, "time": ""} == {
        "at": 0,
        "time": "",
        "topic": "reflex/dev1/availability",
        "retained": True,
        "qos": 1,
        "kind": "text",
        "bytes": 6,
        "payload": "online",
    }
    stats = by_topic["reflex/dev1/stats"]
    assert (stats["kind"], stats["qos"], stats["payload"]) == ("json", 0, STATS)
    snap = by_topic["reflex/dev1/lobby/snapshot"]
    assert (snap["kind"], snap["bytes"], snap["payload"]) == ("jpeg", len(JPEG), None)
    topic0, config0 = configs[0]
    assert by_topic[topic0]["payload"] == config0


def test_timeout_before_count_and_unreachable_broker(mosquitto):
    publish(mosquitto.port, [("reflex/dev1/availability", "offline", 1, True)])
    started = time.monotonic()
    result = tail(mosquitto.url, "--count", "2", "--timeout", "1", "--json")
    assert result.returncode == 1
    assert json.loads(result.stdout)["payload"] == "offline"
    assert "1 s passed with 1 of 2 messages" in result.stderr
    assert time.monotonic() - started < 10

    result = tail(f"mqtt://user:s3cret@127.0.0.1:{free_port()}", "--timeout", "5")
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith("mqtt_tail: error: cannot connect to mqtt://user:***@127.0.0.1:")
    assert "s3cret" not in result.stderr

    result = tail("http://127.0.0.1:1883")
    assert result.returncode == 2 and "mqtt[s]://" in result.stderr

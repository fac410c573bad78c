"""The appliance on a real mosquitto broker, as Home Assistant or a building system sees it.

`edge run` runs as its own process on a real fire clip; a separate MQTT client subscribes. The
broker is killed and restarted, the appliance is SIGKILLed, commands are fuzzed: every alert must
still arrive (after de-duplication by id), in order, and nothing may crash.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import DATA, REPO
from tests.support import Mosquitto, Subscriber, free_port, wait_until

pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason=f"test media not found in {DATA}")

CLIP = DATA / "fire" / "fdv_visual_fire.mp4"
"""24 s of grass fire, flame from the first frame."""
DEV = "dev1"
ROOT = f"reflex/{DEV}"
ALERT_KEYS = {"v", "id", "event_id", "rule", "camera", "label", "severity", "text", "at", "phase"}
EVENT_KEYS = {"v", "id", "type", "camera", "label", "rule", "score", "box", "zones", "started_at", "ended_at",
              "snapshot"}  # fmt: skip


def write_config(tmp_path: Path, port: int, *, realtime: bool = True, loop: bool = False,
                 repeat_s: float = 1.0) -> Path:  # fmt: skip
    config = {
        "device": {"id": DEV},
        "data_dir": str(tmp_path / "data"),
        "cameras": {"yard": {"source": str(CLIP), "realtime": realtime, "loop": loop}},
        "watch": [],
        "rules": [{"name": "fire", "label": "fire", "repeat_s": repeat_s, "severity": "critical"}],
        "mqtt": {
            "url": f"mqtt://127.0.0.1:{port}",
            "reconnect_min_s": 0.2,
            "reconnect_max_s": 1.0,
            "stats_every_s": 1.0,
        },
    }
    path = tmp_path / "edge.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


class Edge:
    """`edge run --config FILE` as a process, its log in a file."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self.log = config.parent / "edge.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def running(cls, config: dict, folder: Path) -> Edge:
        """Write `config` as folder/edge.yaml and start `edge run` on it."""
        path = folder / "edge.yaml"
        path.write_text(yaml.safe_dump(config))
        edge = cls(path)
        edge.start()
        return edge

    def start(self) -> None:
        with self.log.open("a") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "edge", "run", "--config", str(self.config)],
                stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )  # fmt: skip

    def text(self) -> str:
        return self.log.read_text()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)


@pytest.fixture
def edge_proc() -> Iterator[list[Edge]]:
    started: list[Edge] = []
    yield started
    for edge in started:
        if edge.alive():
            edge.kill()


def db_rows(tmp_path: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(f"file:{tmp_path / 'data' / 'events.db'}?mode=ro", uri=True, timeout=10) as db:
        return db.execute(sql).fetchall()


def alert_ids_in_outbox(tmp_path: Path, undelivered_only: bool = False) -> list[str]:
    where = " AND delivered_at IS NULL" if undelivered_only else ""
    sql = f"SELECT message_id FROM outbox WHERE kind = 'alert' AND channel = 'mqtt'{where} ORDER BY id"
    return [r[0] for r in db_rows(tmp_path, sql)]


def unique(ids: list[str]) -> list[str]:
    """De-duplicate by id keeping first arrival order, as a consumer does."""
    return list(dict.fromkeys(ids))


def test_alerts_events_and_state_arrive_as_documented_and_last_will_says_offline(
    tmp_path: Path, mosquitto: Mosquitto, edge_proc: list[Edge]
) -> None:
    sub = Subscriber(mosquitto.port, [f"{ROOT}/#", "homeassistant/#"])
    stale = f"homeassistant/binary_sensor/reflex_{DEV}/gone_online/config"  # a camera removed since
    sub.publish(stale, json.dumps({"unique_id": "reflex_dev1_gone_online"}), retain=True)
    edge = Edge(write_config(tmp_path, mosquitto.port))
    edge_proc.append(edge)
    edge.start()
    try:
        assert wait_until(lambda: sub.on(f"{ROOT}/alerts"), 30), edge.text()
        alert = sub.json_on(f"{ROOT}/alerts")[0]
        assert set(alert) == ALERT_KEYS
        assert alert["v"] == 1 and alert["camera"] == "yard" and alert["label"] == "fire"
        assert alert["severity"] == "critical" and alert["phase"] == "confirmed" and alert["rule"] == "fire"
        # Alerts leave first (their own priority and in-flight slots); the event follows.
        assert wait_until(lambda: sub.on(f"{ROOT}/events"), 10)
        event = sub.json_on(f"{ROOT}/events")[0]
        assert set(event) == EVENT_KEYS and event["type"] == "new" and event["id"] == alert["event_id"]
        assert sub.last(f"{ROOT}/availability") == b"online"
        assert wait_until(lambda: (sub.last(f"{ROOT}/yard/snapshot") or b"")[:2] == b"\xff\xd8", 10)
        assert wait_until(lambda: sub.last(f"{ROOT}/yard/fire") == b"1", 10)
        assert wait_until(lambda: sub.last(f"{ROOT}/yard/active/fire") == b"ON", 10)
        assert sub.last(f"{ROOT}/yard/status") == b"online"
        assert sub.last(f"{ROOT}/yard/detect/state") == b"ON"
        assert wait_until(lambda: sub.on(f"{ROOT}/stats"), 5)
        stats = sub.json_on(f"{ROOT}/stats")[-1]
        assert stats["v"] == 1 and stats["cameras"]["yard"]["fps"] >= 0 and "outbox_depth" in stats

        assert_home_assistant_sees_the_device(sub)
        late = Subscriber(mosquitto.port, ["homeassistant/#"], client_id="home-assistant-restarted")
        try:  # Home Assistant started later still finds every entity: the (device) config is retained
            assert wait_until(lambda: any(t == f"homeassistant/device/reflex_{DEV}/config" for t, _, r in
                                          late.messages if r), 5)  # fmt: skip
            assert all(retained for _, _, retained in late.messages)
        finally:
            late.close()
        assert wait_until(lambda: sub.last(stale) == b"", 5), "a stale discovery config is removed"

        edge.kill()  # no goodbye: the broker publishes the Last Will
        assert wait_until(lambda: sub.last(f"{ROOT}/availability") == b"offline", 10)
        edge.start()
        assert wait_until(lambda: sub.last(f"{ROOT}/availability") == b"online", 20), edge.text()
        ended = lambda: {e["id"]: e for e in sub.json_on(f"{ROOT}/events") if e["type"] == "end"}  # noqa: E731
        assert wait_until(lambda: event["id"] in ended(), 10), "the event the crash left open is ended"
        assert event["started_at"] < ended()[event["id"]]["ended_at"] < time.time()
        started = lambda: [e["id"] for e in sub.json_on(f"{ROOT}/events") if e["type"] == "new"]  # noqa: E731
        assert wait_until(lambda: len(started()) == 2, 15), "the fire, seen again after the restart"
        second = started()[-1]
        assert second != event["id"] and second not in ended()
        assert edge.stop() == 0
        assert wait_until(lambda: sub.last(f"{ROOT}/availability") == b"offline", 10)
        assert second in ended(), "a clean stop ends open events and publishes that before going offline"
        assert sub.last(f"{ROOT}/yard/active/fire") == b"OFF"
    finally:
        sub.close()


def assert_home_assistant_sees_the_device(sub: Subscriber) -> None:
    """The device's discovery config (device-based, the default) is retained, valid JSON, and its
    components point at topics that really carry state (tests/test_ha_validation.py runs Home
    Assistant's own checks on it)."""
    device = json.loads(sub.last(f"homeassistant/device/reflex_{DEV}/config") or b"{}")
    assert device["avty"][0]["topic"] == f"{ROOT}/availability"
    assert device["dev"]["identifiers"] == [f"reflex_{DEV}"]
    configs = {object_id: c for object_id, c in device["cmps"].items() if len(c) > 1}
    by_id = {c["unique_id"]: (t, c) for t, c in configs.items()}
    want = {f"reflex_{DEV}_{x}" for x in ("yard_fire_active", "yard_online", "yard_fire_count",
                                          "yard_snapshot", "yard_detect", "yard_alerts")}  # fmt: skip
    assert want <= set(by_id), sorted(by_id)
    for config_topic, config in configs.items():
        state = config.get("state_topic") or config.get("image_topic")
        assert state and sub.on(state), f"{config_topic}: nothing published on {state}"
    assert by_id[f"reflex_{DEV}_yard_detect"][1]["command_topic"] == f"{ROOT}/yard/detect/set"
    assert by_id[f"reflex_{DEV}_yard_snapshot"][1]["content_type"] == "image/jpeg"


def test_broker_killed_three_times_mid_clip_loses_no_alert(tmp_path: Path, edge_proc: list[Edge]) -> None:
    broker = Mosquitto(tmp_path, persistence=True)
    broker.start()
    sub = Subscriber(broker.port, [f"{ROOT}/alerts"], client_id="consumer", persistent=True)
    edge = Edge(write_config(tmp_path, broker.port, repeat_s=0.5))
    edge_proc.append(edge)
    try:
        assert wait_until(lambda: sub.client.is_connected(), 5)
        time.sleep(2.5)  # the consumer's session reaches the broker's autosave (every second)
        edge.start()
        assert wait_until(lambda: sub.on(f"{ROOT}/alerts"), 30), edge.text()
        kills = []
        for _ in range(3):
            time.sleep(3.0)
            kills.append(time.time())
            broker.kill()
            time.sleep(1.5)  # alerts raised now wait in the outbox
            broker.start()
        assert wait_until(lambda: "end of file" in edge.text(), 60), edge.text()
        assert wait_until(lambda: not alert_ids_in_outbox(tmp_path, undelivered_only=True), 30)
        produced = alert_ids_in_outbox(tmp_path)
        wait_until(lambda: len(unique([a["id"] for a in sub.json_on(f"{ROOT}/alerts")])) >= len(produced), 20)
        received = unique([a["id"] for a in sub.json_on(f"{ROOT}/alerts")])
        assert len(produced) >= 20, "the clip should raise an alert every 0.5 s"
        missing = [(i, [round(k - delivered, 2) for k in kills]) for i, delivered in
                   db_rows(tmp_path, "SELECT message_id, delivered_at FROM outbox WHERE kind = 'alert'")
                   if i not in received]  # fmt: skip
        assert received == unique(produced), f"lost (id, s from delivery to each broker kill): {missing}"
        assert edge.text().count("MQTT connected") >= 4, "the appliance reconnected after each outage"
        assert edge.stop() == 0
    finally:
        sub.close()
        broker.kill()


def test_alerts_waiting_in_the_outbox_survive_sigkill(tmp_path: Path, edge_proc: list[Edge]) -> None:
    port = free_port()  # no broker there yet
    edge = Edge(write_config(tmp_path, port, realtime=False, repeat_s=0.5))
    edge_proc.append(edge)
    edge.start()
    db = tmp_path / "data" / "events.db"

    def backlog() -> int:
        try:
            return len(alert_ids_in_outbox(tmp_path, undelivered_only=True))
        except sqlite3.OperationalError:  # the appliance is still creating the database
            return 0

    assert wait_until(lambda: db.exists() and backlog() >= 3, 60), edge.text()
    edge.kill()
    waiting = alert_ids_in_outbox(tmp_path, undelivered_only=True)

    broker = Mosquitto(tmp_path, port=port)
    broker.start()
    sub = Subscriber(port, [f"{ROOT}/alerts"])
    try:
        assert wait_until(lambda: sub.client.is_connected(), 5)
        edge.start()
        received = lambda: {a["id"] for a in sub.json_on(f"{ROOT}/alerts")}  # noqa: E731
        assert wait_until(lambda: set(waiting) <= received(), 30), edge.text()
        first = unique([a["id"] for a in sub.json_on(f"{ROOT}/alerts")])[: len(waiting)]
        assert first == waiting, "the backlog goes out first, in the order it was raised"
    finally:
        sub.close()
        broker.kill()


def fuzz_commands(seed: int) -> list[tuple[str, bytes]]:
    """Commands that must each be refused: random bytes, wrong JSON types, huge, unknown targets."""
    rng = random.Random(seed)
    ask, detect = f"{ROOT}/ask", f"{ROOT}/yard/detect/set"
    cases: list[tuple[str, bytes]] = [
        (ask, b"not json"),
        (ask, b"[1, 2, 3]"),
        (ask, b'"just a string"'),
        (ask, b"null"),
        (ask, json.dumps({"id": "q1", "text": 5}).encode()),
        (ask, json.dumps({"id": 123, "text": "how many people?"}).encode()),
        (ask, json.dumps({"id": "q2", "text": ""}).encode()),
        (ask, json.dumps({"id": "q3", "text": "hello", "camera": "garage"}).encode()),
        (ask, json.dumps({"id": "q4", "text": "hello", "sudo": True}).encode()),
        (ask, json.dumps({"id": "q5", "text": "x" * 200_000}).encode()),
        (ask, b"\xff\xfe\x00garbage"),
        (detect, b"MAYBE"),
        (detect, b"\x00\x01\x02"),
        (detect, b"O" * 100_000),
        (f"{ROOT}/garage/detect/set", b"ON"),
        (f"{ROOT}/yard/lights/set", b"ON"),
    ]
    for _ in range(20):
        noise = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300)))
        cases.append((rng.choice([ask, detect]), noise))
    return cases


def test_fuzzed_commands_get_errors_and_change_nothing_while_switches_persist(
    tmp_path: Path, mosquitto: Mosquitto, edge_proc: list[Edge]
) -> None:
    sub = Subscriber(mosquitto.port, [f"{ROOT}/#"])
    edge = Edge(write_config(tmp_path, mosquitto.port, loop=True))
    edge_proc.append(edge)
    edge.start()
    try:
        assert wait_until(lambda: sub.last(f"{ROOT}/yard/detect/state") == b"ON", 30), edge.text()
        cases = fuzz_commands(seed=7)
        for topic, payload in cases:
            sub.publish(topic, payload)
        errors = lambda: [a for a in sub.json_on(f"{ROOT}/answers") if a["kind"] == "error"]  # noqa: E731
        assert wait_until(lambda: len(errors()) >= len(cases), 30), (len(errors()), len(cases))
        assert len(errors()) == len(cases)
        assert all(a["v"] == 1 and a["text"] for a in errors())
        assert {a["id"] for a in errors()} >= {"q1", "q2", "q3", "q4"}, "errors reach the asker by id"
        assert edge.alive(), edge.text()
        assert sub.on(f"{ROOT}/yard/detect/state") == [b"ON"], "no fuzzed command flipped a switch"

        sub.publish(f"{ROOT}/ask", json.dumps({"id": "q-ok", "text": "How many people are in the yard?"}))
        assert wait_until(lambda: any(a["id"] == "q-ok" and a["kind"] == "answer"
                                      for a in sub.json_on(f"{ROOT}/answers")), 10)  # fmt: skip
        stored = lambda: db_rows(tmp_path, "SELECT id, text, status FROM instructions")  # noqa: E731
        answered = [("q-ok", "How many people are in the yard?", "answered")]
        assert wait_until(lambda: stored() == answered, 5), stored()
        cli = subprocess.run(
            [sys.executable, "-m", "edge", "ask", "Describe the fire", "--camera", "yard", "--config",
             str(edge.config), "--timeout", "3"],
            capture_output=True, text=True, timeout=60, cwd=REPO,
        )  # fmt: skip
        assert cli.returncode == 0, cli.stderr
        assert cli.stdout == "ack: Please wait a moment.\n"
        assert "Describe the fire" in [r[0] for r in db_rows(tmp_path, "SELECT text FROM instructions")]

        sub.publish(f"{ROOT}/yard/detect/set", b"off")
        assert wait_until(lambda: sub.last(f"{ROOT}/yard/detect/state") == b"OFF", 10)
        assert edge.stop() == 0
        seen = len(sub.messages)
        edge.start()  # the switch survives the restart
        assert wait_until(
            lambda: sub.on(f"{ROOT}/availability")[-1:] == [b"online"] and len(sub.messages) > seen, 30
        )
        time.sleep(1.0)
        after = [p for t, p, _ in sub.messages[seen:] if t == f"{ROOT}/yard/detect/state"]
        assert after and set(after) == {b"OFF"}, after
    finally:
        sub.close()

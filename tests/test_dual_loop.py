"""The two loops together: `edge run` and a real blue-loop server process on a real broker.

A delegated job runs on the blue loop while the red loop keeps alerting and answering quick questions
from its live state.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.conftest import DATA, MODEL, REPO, needs_shared
from tests.support import Mosquitto, Subscriber, wait_until
from tests.test_bus import Edge

pytestmark = needs_shared


def _sign(path: Path) -> Path:
    img = np.full((360, 720, 3), 255, np.uint8)
    cv2.putText(img, "NO PARKING", (40, 130), cv2.FONT_HERSHEY_SIMPLEX, 2.5, (0, 0, 0), 5, cv2.LINE_AA)
    cv2.putText(img, "Exit 4 Gate B", (40, 250), cv2.FONT_HERSHEY_SIMPLEX, 2.0, (0, 0, 0), 4, cv2.LINE_AA)
    cv2.imwrite(str(path), img)
    return path


class Blueloop:
    def __init__(self, url: str, workdir: Path, *extra: str) -> None:
        self.log = workdir / "blueloop.log"
        with self.log.open("a") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "blueloop", "--mqtt", url, "--model-file", str(MODEL),
                 "--reports", str(workdir / "reports"), "--client-id", f"bl-{workdir.name}", *extra],
                stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )  # fmt: skip

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def _answers(sub: Subscriber, ask_id: str) -> list[dict]:
    return [a for a in sub.json_on("reflex/dev1/answers") if a.get("id") == ask_id]


@pytest.fixture
def dual(tmp_path: Path, mosquitto: Mosquitto):
    config = {
        "device": {"id": "dev1"}, "data_dir": str(tmp_path / "data"),
        "model": {"path": str(MODEL)},
        "cameras": {
            "yard": {"source": str(DATA / "fire" / "fdv_visual_fire.mp4"), "loop": True},
            "sign": {"source": str(_sign(tmp_path / "sign.png")), "loop": True},
            "lobby": {"source": str(DATA / "people" / "intel_one-by-one-person-detection.mp4"), "loop": True},
        },
        "watch": [], "rules": [{"name": "fire", "label": "fire", "repeat_s": 1.0, "severity": "critical"},
                               {"name": "person", "label": "person", "cameras": ["lobby"]}],
        "mqtt": {"url": mosquitto.url, "stats_every_s": 1.0},
    }  # fmt: skip
    sub = Subscriber(mosquitto.port, ["reflex/dev1/#"])
    edge = Edge.running(config, tmp_path)
    assert wait_until(lambda: edge.text().count("MQTT connected") == 1, 30), edge.text()
    yield edge, sub, mosquitto, tmp_path
    edge.stop()
    sub.close()


def test_what_does_the_sign_say_comes_back_from_the_blue_loop(dual) -> None:
    edge, sub, broker, tmp_path = dual
    worker = Blueloop(broker.url, tmp_path)
    try:
        time.sleep(2.0)  # the sign camera's keyframe ring fills (one frame every 0.5 s)
        sub.client.publish("reflex/dev1/ask", json.dumps({"id": "sign-1", "text": "what does the sign say?",
                                                          "camera": "sign"}), qos=1)  # fmt: skip
        assert wait_until(lambda: any(a["kind"] == "result" for a in _answers(sub, "sign-1")), 60), (
            edge.text() + worker.log.read_text())  # fmt: skip
        ack, result = _answers(sub, "sign-1")[0], _answers(sub, "sign-1")[-1]
        assert ack["kind"] == "ack" and ack["job_id"] == result["job_id"]
        assert "NO PARKING" in result["text"].upper() and "GATE B" in result["text"].upper(), result
    finally:
        worker.stop()


def test_quick_questions_and_fire_alerts_go_on_while_a_slow_job_runs(dual) -> None:
    edge, sub, broker, tmp_path = dual
    worker = Blueloop(broker.url, tmp_path, "--slow-ms", "5000")
    try:
        assert wait_until(lambda: len(sub.json_on("reflex/dev1/alerts")) >= 1, 30), edge.text()
        sub.client.publish("reflex/dev1/ask", json.dumps({"id": "rep-1", "text": "write an incident report",
                                                          "camera": "yard"}), qos=1)  # fmt: skip
        assert wait_until(lambda: _answers(sub, "rep-1"), 5)
        started = time.monotonic()
        alerts_before = len(sub.json_on("reflex/dev1/alerts"))
        latencies = []
        for i in range(8):  # while the job runs (5 s): questions answered in milliseconds
            ask_id = f"q{i}"
            sent = time.monotonic()
            text = "is there fire in the yard?" if i % 2 else "how many people are in the lobby?"
            sub.client.publish("reflex/dev1/ask", json.dumps({"id": ask_id, "text": text}), qos=1)
            assert wait_until(
                lambda ask_id=ask_id: any(a["kind"] == "answer" for a in _answers(sub, ask_id)), 5
            )
            latencies.append(time.monotonic() - sent)
            answer = next(a for a in _answers(sub, ask_id) if a["kind"] == "answer")
            if i % 2:
                assert answer["text"].startswith("Yes"), answer
            else:  # the clip has one visitor at a time: 0 or 1, and the words say the number counted
                n = answer["data"]["counts"]["lobby"]
                assert (
                    n in (0, 1) and answer["text"] == f"I see {'1 person' if n else '0 people'} on lobby now."
                )
            time.sleep(0.3)
        assert not any(a["kind"] == "result" for a in _answers(sub, "rep-1")), "the job was not slow"
        # ask -> answer over the broker while the 5 s job runs: tens of ms on a fast box, up to ~0.2 s
        # on a slow 2-core one whose red loop watches a burning clip on every frame; never the job's time.
        assert statistics.median(latencies) < 0.75, latencies
        assert wait_until(lambda: any(a["kind"] == "result" for a in _answers(sub, "rep-1")), 30), (
            worker.log.read_text()
        )
        assert len(sub.json_on("reflex/dev1/alerts")) - alerts_before >= int(time.monotonic() - started) - 2
        result = next(a for a in _answers(sub, "rep-1") if a["kind"] == "result")
        assert "<html" in result.get("html", "").lower()
    finally:
        worker.stop()

"""The blue-loop server as a real process (`python -m blueloop`) against a real mosquitto, with jobs
published as the appliance would, and a real HTTP server on loopback playing an OpenAI-compatible
model server."""

from __future__ import annotations

import base64
import contextlib
import json
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.conftest import DATA, MODEL, REPO, needs_shared
from tests.support import Mosquitto, Subscriber, free_port, wait_until

pytestmark = needs_shared

PEOPLE = DATA / "people" / "intel_one-by-one-person-detection.mp4"
DEVICE = "dev1"


def jpeg_b64(image: np.ndarray) -> str:
    return base64.b64encode(cv2.imencode(".jpg", image)[1].tobytes()).decode("ascii")


def job(
    kind: str, images: list[np.ndarray], *, deadline_s: float = 30.0, prompt: str = "", **context
) -> dict:
    now = time.time()
    return {
        "v": 1,
        "job_id": f"{kind}-{uuid.uuid4().hex[:8]}",
        "device": DEVICE,
        "camera": "lobby",
        "ask_id": "ask-1",
        "kind": kind,
        "prompt": prompt,
        "frames": [{"ts": now - len(images) + i, "jpeg_b64": jpeg_b64(im)} for i, im in enumerate(images)],
        "context": {"recent_events": [], "counts": {}, **context},
        "deadline": now + deadline_s,
    }


class Server:
    """One `python -m blueloop` process, its log in a file."""

    def __init__(self, tmp: Path, broker: Mosquitto, *args: str, name: str = "bl") -> None:
        self.health_port = free_port()
        self.log_path = tmp / f"{name}.log"
        self.argv = [
            sys.executable,
            "-m",
            "blueloop",
            "--mqtt",
            broker.url,
            "--client-id",
            name,
            "--health",
            f"127.0.0.1:{self.health_port}",
            *args,
        ]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Server:
        self.proc = subprocess.Popen(self.argv, cwd=REPO, stderr=self.log_path.open("ab"))
        assert wait_until(lambda: (self.health() or {}).get("connected") is True, 30), self.log()
        return self

    def health(self) -> dict | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/health", timeout=1) as r:
                return json.loads(r.read())
        except (OSError, ValueError):
            return None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()


class Device:
    """Plays the appliance: publishes jobs, collects results."""

    def __init__(self, broker: Mosquitto, name: str) -> None:
        self.sub = Subscriber(broker.port, [f"reflex/{DEVICE}/blue/result"], client_id=name)
        assert wait_until(lambda: self.sub.client.is_connected(), 5)
        time.sleep(0.1)

    def send(self, doc: dict | bytes) -> None:
        body = doc if isinstance(doc, bytes) else json.dumps(doc)
        self.sub.publish(f"reflex/{DEVICE}/blue/request", body)

    def results(self) -> dict[str, dict]:
        return {r["job_id"]: r for r in self.sub.json_on(f"reflex/{DEVICE}/blue/result")}

    def result(self, job_id: str, timeout: float = 20) -> dict:
        assert wait_until(lambda: job_id in self.results(), timeout), f"no result for {job_id}"
        return self.results()[job_id]

    def ask(self, doc: dict, timeout: float = 20) -> dict:
        self.send(doc)
        return self.result(doc["job_id"], timeout)


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    b = Mosquitto(tmp_path_factory.mktemp("broker"))
    b.start()
    yield b
    b.kill()


@pytest.fixture(scope="module")
def local(broker: Mosquitto, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Device]]:
    tmp = tmp_path_factory.mktemp("local")
    server = Server(
        tmp,
        broker,
        "--model-file",
        str(MODEL),
        "--reports",
        str(tmp / "reports"),
        "--concurrency",
        "2",
        name="bl-local",
    ).start()
    device = Device(broker, "device-local")
    yield server, device
    device.sub.close()
    server.stop()


def near(hex_colour: str, rgb: tuple[int, int, int], tolerance: int = 8) -> bool:
    got = [int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)]
    return all(abs(a - b) <= tolerance for a, b in zip(got, rgb, strict=True))


def sign() -> np.ndarray:
    img = np.full((300, 800, 3), 255, np.uint8)
    cv2.putText(img, "NO PARKING", (40, 120), cv2.FONT_HERSHEY_SIMPLEX, 2.5, (0, 0, 0), 5, cv2.LINE_AA)
    cv2.putText(img, "Exit 4 Gate B", (40, 240), cv2.FONT_HERSHEY_SIMPLEX, 2.0, (0, 0, 0), 4, cv2.LINE_AA)
    return img


def app_screen() -> np.ndarray:
    """A title bar, a line of text, two buttons."""
    img = np.full((400, 640, 3), 245, np.uint8)
    cv2.rectangle(img, (0, 0), (640, 64), (120, 60, 20), -1)
    cv2.putText(img, "Settings", (24, 44), cv2.FONT_HERSHEY_SIMPLEX, 1.2, (255, 255, 255), 2, cv2.LINE_AA)
    cv2.putText(
        img, "Backup finished today", (24, 170), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (30, 30, 30), 2, cv2.LINE_AA
    )
    cv2.rectangle(img, (24, 300), (284, 360), (200, 200, 200), -1)
    cv2.putText(img, "Cancel", (100, 342), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (20, 20, 20), 2, cv2.LINE_AA)
    cv2.rectangle(img, (356, 300), (616, 360), (80, 160, 40), -1)
    cv2.putText(img, "Save", (450, 342), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (255, 255, 255), 2, cv2.LINE_AA)
    return img


def people_frames(indices: tuple[int, ...] = (276, 345, 414)) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(PEOPLE))
    frames = []
    for i in indices:
        capture.set(cv2.CAP_PROP_POS_FRAMES, i)
        ok, image = capture.read()
        assert ok
        frames.append(image)
    capture.release()
    return frames


# -- local reasoner ------------------------------------------------------------------------------


def test_read_text_returns_the_printed_text(local: tuple[Server, Device]) -> None:
    _, device = local
    result = device.ask(job("read_text", [sign()]))
    assert result["status"] == "done", result
    assert result["text"].splitlines() == ["NO PARKING", "Exit 4 Gate B"]
    assert result["data"]["lines"] == ["NO PARKING", "Exit 4 Gate B"]
    assert result["elapsed_ms"] > 0


def test_ui_html_reproduces_the_screen_in_reading_order(local: tuple[Server, Device]) -> None:
    _, device = local
    result = device.ask(job("ui_html", [app_screen()]))
    assert result["status"] == "done", result
    html = result["html"]
    at = [html.find(t) for t in ("Settings", "Backup finished today", "Cancel", "Save")]
    assert all(i > 0 for i in at) and at == sorted(at), at
    page = re.search(r'class="screen" style="[^"]*background:(#[0-9a-f]{6})', html)
    assert page and near(page.group(1), (245, 245, 245)), html  # the sampled page colour
    panels = re.findall(
        r'class="panel" style="position:absolute;left:(\d+)px;top:(\d+)px;[^"]*background:(#\w+)', html
    )
    assert any(near(c, (20, 60, 120)) and (x, y) == ("0", "0") for x, y, c in panels), panels  # the title bar
    assert any(near(c, (40, 160, 80)) for _, _, c in panels), panels  # the green button
    save = next(b for b in result["data"]["blocks"] if b["text"] == "Save")
    assert 356 <= save["box"][0] < save["box"][2] <= 616 and near(save["background"], (40, 160, 80))
    assert near(save["colour"], (255, 255, 255), 16)


def test_describe_and_report_mention_the_person(local: tuple[Server, Device], tmp_path: Path) -> None:
    _, device = local
    now = time.time()
    events = [
        {
            "id": "e1",
            "type": "end",
            "camera": "lobby",
            "label": "person",
            "rule": "person",
            "started_at": now - 30,
            "ended_at": now - 18,
        }
    ]
    frames = people_frames()
    described = device.ask(job("describe", frames, recent_events=events, counts={"person": 1}))
    assert described["status"] == "done", described
    text = described["text"]
    assert text.startswith("A person in view"), text
    stamp = time.strftime("%H:%M:%S", time.localtime(now - 30))
    assert f"a person entered at {stamp} and stayed 12 s" in text, text
    report = device.ask(
        job("report", frames, recent_events=events, counts={"person": 1}, prompt="<b>what?</b>")
    )
    assert report["status"] == "done", report
    html = report["html"]
    assert html.count('src="data:image/jpeg;base64,') == 3 and "person" in html
    assert "&lt;b&gt;what?&lt;/b&gt;" in html and "<b>what?" not in html  # escaped
    saved = Path(report["data"]["path"])
    assert saved.read_text() == html and report["data"]["path"] in report["text"]


def test_verify_confirms_a_person_and_retracts_a_car(local: tuple[Server, Device]) -> None:
    _, device = local
    frames = people_frames()
    yes = device.ask(job("verify", frames, label="person"))
    no = device.ask(job("verify", frames, label="car"))
    assert yes["status"] == "done" and yes["data"]["confirmed"] is True, yes
    assert no["status"] == "done" and no["data"]["confirmed"] is False, no


def test_deadline_passed_gives_timeout(local: tuple[Server, Device]) -> None:
    _, device = local
    result = device.ask(job("describe", [sign()], deadline_s=-5))
    assert result["status"] == "timeout" and "deadline" in result["text"], result


def test_malformed_jobs_fail_with_a_clear_text(local: tuple[Server, Device]) -> None:
    server, device = local
    device.send(b"{not json")
    no_frames = job("read_text", [])
    bad_deadline = {**job("describe", [sign()]), "deadline": "soon"}
    missing = job("describe", [sign()])
    del missing["context"]
    not_jpeg = job("read_text", [sign()])
    not_jpeg["frames"][0]["jpeg_b64"] = base64.b64encode(b"hello").decode()
    unknown = job("dance", [sign()])
    for doc in (no_frames, bad_deadline, missing, not_jpeg, unknown):
        device.send(doc)
    expect = {
        no_frames["job_id"]: "needs at least one frame",
        bad_deadline["job_id"]: "deadline: 'soon' is not of type 'number'",
        missing["job_id"]: "'context' is a required property",
        not_jpeg["job_id"]: "frames[0] is not a JPEG",
        unknown["job_id"]: "unknown job kind 'dance'",
    }
    for job_id, words in expect.items():
        result = device.result(job_id)
        assert result["status"] == "failed" and words in result["text"], result
    assert "describe, report, read_text, ui_html, verify" in device.results()[unknown["job_id"]]["text"]
    assert server.log().count("dropped a malformed job") == 1  # the unreadable one: logged once
    # the worker goes on working
    assert device.ask(job("read_text", [sign()]))["status"] == "done"


def test_health_endpoint(local: tuple[Server, Device]) -> None:
    server, device = local
    device.ask(job("describe", [sign()]))
    health = server.health()
    assert health is not None
    assert {"ok", "connected", "jobs_running", "jobs_done", "jobs_failed"} <= health.keys()
    assert health["ok"] is True and health["connected"] is True and health["jobs_done"] >= 1
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"http://127.0.0.1:{server.health_port}/nope", timeout=2)
    assert err.value.code == 404


def test_bad_flags_are_one_line_errors(tmp_path: Path) -> None:
    for argv, words in (
        (["--concurrency", "0", "--mqtt", "mqtt://127.0.0.1:1"], "--concurrency: must be at least 1"),
        (["--reasoner", "openai", "--mqtt", "mqtt://127.0.0.1:1"], "--reasoner openai needs --base-url"),
        (["--mqtt", "http://x"], "expected mqtt[s]://"),
        (["--mqtt", "mqtt://127.0.0.1:1", "--model-file", str(tmp_path / "no.onnx")], "no such file"),
    ):
        run = subprocess.run(
            [sys.executable, "-m", "blueloop", *argv], cwd=REPO, capture_output=True, text=True, timeout=60
        )
        lines = run.stderr.strip().splitlines()
        assert run.returncode == 2 and len(lines) == 1, run.stderr
        assert lines[0].startswith("blueloop: error:") and words in lines[0], lines[0]


# -- two workers ---------------------------------------------------------------------------------


def test_two_workers_share_jobs_and_killing_one_loses_none(mosquitto: Mosquitto, tmp_path: Path) -> None:
    common = ("--model-file", str(MODEL), "--concurrency", "1", "--slow-ms", "700")
    a = Server(tmp_path, mosquitto, *common, name="bl-a")
    b = Server(tmp_path, mosquitto, *common, name="bl-b")
    for s in (a, b):
        s.proc = subprocess.Popen(s.argv, cwd=REPO, stderr=s.log_path.open("ab"))
    try:
        for s in (a, b):
            assert wait_until(lambda s=s: (s.health() or {}).get("connected") is True, 30), s.log()
        device = Device(mosquitto, "device-share")
        small = cv2.resize(sign(), (200, 75))
        jobs = [job("describe", [small], deadline_s=60) for _ in range(10)]
        for doc in jobs:
            device.send(doc)
        # a is mid-job (and has done at least one): kill it
        assert wait_until(
            lambda: (
                (a.health() or {}).get("jobs_done", 0) >= 1 and (a.health() or {}).get("jobs_running") == 1
            ),
            20,
        ), a.log()
        a.kill()
        a_took = a.log().count("describe done") + 1  # the one it was killed in
        a.start()  # its restart (systemd's Restart=always) gets the unacknowledged job back
        assert wait_until(lambda: all(d["job_id"] in device.results() for d in jobs), 40), (
            sorted(device.results()),
            a.log(),
            b.log(),
        )
        assert all(device.results()[d["job_id"]]["status"] == "done" for d in jobs)
        b_took = b.log().count("describe done")
        assert a_took >= 2 and b_took >= 1, (a_took, b_took)
        # a deadline that passes while the (slow) reasoner works: `timeout` at the deadline
        late = job("describe", [small], deadline_s=0.3)
        result = device.ask(late, timeout=10)
        assert result["status"] == "timeout" and result["elapsed_ms"] < 650, result
        device.sub.close()
    finally:
        a.stop()
        b.stop()


# -- openai reasoner -----------------------------------------------------------------------------


class ChatServer:
    """An OpenAI-compatible chat-completions server on loopback. What it does is chosen by a marker
    in the job's prompt: #ok, #html, #500-once, #400, #slow-once, #slow-always."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict, dict]] = []  # (headers, body)
        self.seen: dict[str, int] = {}
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                intro = body["messages"][1]["content"][0]["text"]
                marker = next((m for m in intro.split() if m.startswith("#")), "#ok")
                with outer._lock:
                    outer.requests.append((dict(self.headers), body))
                    n = outer.seen[marker] = outer.seen.get(marker, 0) + 1
                if marker == "#500-once" and n == 1:
                    return self._send(500, {"error": {"message": "upstream overloaded"}})
                if marker == "#400":
                    return self._send(400, {"error": {"message": "image input not supported by this model"}})
                if marker == "#slow-always" or (marker == "#slow-once" and n == 1):
                    time.sleep(1.6)
                content = "A person walks in from the left."
                if marker == "#html":
                    content = (
                        "Here it is:\n```html\n<!DOCTYPE html><html><body><h1>Settings</h1></body></html>"
                    )
                    content += "\n```"
                return self._send(
                    200,
                    {
                        "id": "x",
                        "object": "chat.completion",
                        "model": body["model"],
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": content},
                                "finish_reason": "stop",
                            }
                        ],
                    },
                )

            def _send(self, status: int, doc: dict) -> None:
                data = json.dumps(doc).encode()
                with contextlib.suppress(OSError):  # the client may have timed out and gone
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_openai_reasoner_against_a_chat_completions_server(mosquitto: Mosquitto, tmp_path: Path) -> None:
    chat = ChatServer()
    key = tmp_path / "key"
    key.write_text("sk-test-123\n")
    server = Server(
        tmp_path,
        mosquitto,
        "--reasoner",
        "openai",
        "--base-url",
        f"http://127.0.0.1:{chat.port}/v1",
        "--model",
        "test-vlm",
        "--api-key-file",
        str(key),
        "--timeout",
        "1",
        "--retries",
        "2",
        "--concurrency",
        "4",
        name="bl-openai",
    ).start()
    device = Device(mosquitto, "device-openai")
    try:
        frames = people_frames((276, 345))
        ok = job("describe", frames, prompt="#ok what happens?")
        html = job("ui_html", [app_screen()], prompt="#html")
        flaky = job("describe", frames[:1], prompt="#500-once")
        refused = job("read_text", [sign()], prompt="#400")
        slow_once = job("describe", frames[:1], prompt="#slow-once")
        too_slow = job("describe", frames[:1], prompt="#slow-always", deadline_s=3)
        for doc in (ok, html, flaky, refused, slow_once, too_slow):
            device.send(doc)

        result = device.result(ok["job_id"])
        assert result["status"] == "done" and result["text"] == "A person walks in from the left.", result
        headers, body = next(
            (h, b) for h, b in chat.requests if "#ok" in b["messages"][1]["content"][0]["text"]
        )
        assert headers["Authorization"] == "Bearer sk-test-123"
        assert body["model"] == "test-vlm"
        assert body["messages"][0]["role"] == "system" and "Describe" in body["messages"][0]["content"]
        parts = body["messages"][1]["content"]
        assert {p["type"] for p in parts} == {"text", "image_url"}
        urls = [p["image_url"]["url"] for p in parts if p["type"] == "image_url"]
        assert len(urls) == 2 and all(u.startswith("data:image/jpeg;base64,") for u in urls)
        assert urls[0].split(",", 1)[1] == ok["frames"][0]["jpeg_b64"]

        result = device.result(html["job_id"])
        assert result["status"] == "done" and result["html"].startswith("<!DOCTYPE html>"), result
        assert "Settings" in result["html"] and "```" not in result["html"]

        result = device.result(flaky["job_id"])
        assert result["status"] == "done" and chat.seen["#500-once"] == 2, result

        result = device.result(refused["job_id"])
        assert result["status"] == "failed" and "400" in result["text"], result
        assert "image input not supported by this model" in result["text"] and chat.seen["#400"] == 1

        result = device.result(slow_once["job_id"])
        assert result["status"] == "done" and chat.seen["#slow-once"] == 2, result

        result = device.result(too_slow["job_id"])
        assert result["status"] == "timeout", result
        assert "openai/describe timeout" in server.log() or "describe timeout" in server.log()
    finally:
        device.sub.close()
        server.stop()
        chat.close()

"""Test helpers that play the outside world: a live IP camera stream, an MQTT broker, free ports,
patient waits."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion


def read_frames(path: Path, limit: int | None = None) -> list[tuple[int, float, object]]:
    """The first `limit` (index, pts, image) items of a clip (all of them when None), read once so
    several tests can run the red loop over the same frames."""
    from edge.capture import open_source

    source = open_source(str(path))
    out: list[tuple[int, float, object]] = []
    try:
        while (limit is None or len(out) < limit) and (item := source.read()) is not None:
            out.append(item)
    finally:
        source.close()
    return out


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


class Receiver:
    """A push receiver (a webhook endpoint) on a free port: answers 200 and keeps the JSON bodies it got."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        received = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                received.append(json.loads(self.rfile.read(length) or b"{}"))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class MjpegServer:
    """Serves JPEG frames as multipart/x-mixed-replace at `fps` until stopped (like an IP camera)."""

    def __init__(self, jpegs: list[bytes], port: int, fps: float = 25.0) -> None:
        self.jpegs, self.port, self.fps = jpegs, port, fps
        self._stopped = threading.Event()
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        server_ref = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                n = 0
                try:
                    while not server_ref._stopped.is_set():
                        jpeg = server_ref.jpegs[n % len(server_ref.jpegs)]
                        head = b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(
                            jpeg
                        )
                        self.wfile.write(head + jpeg + b"\r\n")
                        n += 1
                        time.sleep(1 / server_ref.fps)
                except OSError:  # the client went away
                    pass

            def log_message(self, *args: object) -> None:
                pass

        self._stopped.clear()
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    def stop(self) -> None:
        """Drop every client connection and stop listening, as a camera losing power would."""
        assert self._server is not None
        self._stopped.set()
        self._server.shutdown()
        self._server.server_close()


class Mosquitto:
    """A real mosquitto broker on a free loopback port, which a test can kill and start again."""

    def __init__(self, workdir: Path, port: int | None = None, persistence: bool = False, listener: str = "",
                 anonymous: bool = True) -> None:  # fmt: skip
        """`persistence`: keep sessions and queued messages across a kill (saved every second);
        `listener`: extra lines for the listener (TLS files, password_file)."""
        self.workdir = workdir
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.conf = workdir / "mosquitto.conf"
        store = (
            f"persistence true\npersistence_location {workdir}/\nautosave_interval 1\n"
            if persistence
            else "persistence false\n"
        )
        self.conf.write_text(
            ("user root\n" if os.geteuid() == 0 else "")  # read the test's files; no privilege drop
            + f"listener {self.port} 127.0.0.1\n{listener}"
            f"allow_anonymous {'true' if anonymous else 'false'}\n"
            f"{store}"
            "max_queued_messages 100000\n"
            f"log_dest file {workdir / 'mosquitto.log'}\n"
        )

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.proc = subprocess.Popen(
            [binary, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        if not wait_until(self._listening, 10):
            raise RuntimeError(f"mosquitto did not start on port {self.port}")

    def _listening(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL: the broker vanishes without a goodbye, as a crashed or unplugged one does."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None


class Subscriber:
    """A separate MQTT client that records everything it receives, as a consumer of the device would.

    `persistent=True` keeps its session (MQTT 3.1.1 clean_session=False) so that on a broker with
    persistence nothing published while it was reconnecting is missed.
    """

    def __init__(self, port: int, topics: list[str], client_id: str = "test-subscriber",
                 persistent: bool = False, tls: tuple[Path, str, str] | None = None) -> None:  # fmt: skip
        """`tls`: (CA file, user name, password) for a broker with TLS and passwords."""
        self.messages: list[tuple[str, bytes, bool]] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=not persistent,
            protocol=mqtt.MQTTv311,
        )  # fmt: skip
        self.client.reconnect_delay_set(0.05, 0.2)
        if tls is not None:
            self.client.tls_set(ca_certs=str(tls[0]))
            self.client.username_pw_set(tls[1], tls[2])
        self.topics = topics

        def on_connect(client: mqtt.Client, *_: object) -> None:
            client.subscribe([(t, 1) for t in self.topics])

        def on_message(client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
            with self._lock:
                self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))

        self.client.on_connect = on_connect
        self.client.on_message = on_message
        self.client.connect("localhost" if tls else "127.0.0.1", port, keepalive=5)
        self.client.loop_start()

    def on(self, topic: str) -> list[bytes]:
        with self._lock:
            return [p for t, p, _ in self.messages if t == topic]

    def json_on(self, topic: str) -> list[dict]:
        return [json.loads(p) for p in self.on(topic)]

    def last(self, topic: str) -> bytes | None:
        got = self.on(topic)
        return got[-1] if got else None

    def publish(self, topic: str, payload: bytes | str, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


class OldBroker:
    """Plays an MQTT 3.1.1-only broker in front of a real one: an MQTT 5 CONNECT gets the 3.1.1 answer
    "unacceptable protocol version" (CONNACK return code 1) and the connection is closed; a 3.1.1
    connection is passed through to the real broker byte for byte."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.refused_v5 = 0
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        head = conn.recv(4096)  # fixed header, remaining length, "\x00\x04MQTT", protocol level
        at = 1
        while head[at] & 0x80:
            at += 1
        level = head[at + 1 + 6]
        if level == 5:
            self.refused_v5 += 1
            conn.sendall(b"\x20\x02\x00\x01")
            conn.close()
            return
        upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
        upstream.sendall(head)
        for a, b in ((conn, upstream), (upstream, conn)):
            threading.Thread(target=_pipe, args=(a, b), daemon=True).start()

    def close(self) -> None:
        self._server.close()


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

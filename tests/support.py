"""Test helpers that play the outside world: a live IP camera stream, free ports, patient waits."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


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

"""GET /health -> {ok, connected, jobs_running, jobs_done, jobs_failed, ...} for load balancers,
systemd watchdogs and people. `ok` is true while the worker is connected to the broker."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

log = logging.getLogger("blueloop.health")


class HealthServer:
    def __init__(self, host: str, port: int, snapshot: Callable[[], dict]) -> None:
        self.snapshot = snapshot
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] != "/health":
                    self._send(404, {"error": "not found; try GET /health"})
                    return
                self._send(200, outer.snapshot())

            def _send(self, status: int, doc: dict) -> None:
                body = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True

    @property
    def address(self) -> str:
        host, port = self.server.server_address[:2]
        return f"{host}:{port}"

    def start(self) -> None:
        threading.Thread(target=self.server.serve_forever, name="blueloop-health", daemon=True).start()
        log.info("health on http://%s/health", self.address)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

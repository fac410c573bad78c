"""A camera's pixel detectors (fire, smoke), in the appliance's process or in a worker process.

Why worker processes: the pixel detectors' work per frame is NumPy and OpenCV on small arrays with
Python between the calls, and most of it holds the interpreter lock. With fire watched, one process
falls behind at 8-10 cameras while a core stays idle (README, "Capacity"). A `PixelPool` runs the
detectors of every camera but the first in worker processes (config `capacity.pixel_processes`):

- **stateful, so pinned**: a camera's detectors live in one worker for as long as the camera runs;
  the red loop sends each frame they look at (raw bytes over a Unix socket, about 1 MB at 768x432) and
  gets their detections back, while the shared object detector looks at the same frame;
- **the same answers**: a worker runs the same detectors on the same frames, so a camera's events are
  those of an in-process scan. What the red loop asks between frames (is a watch going on, how high
  is the evidence) comes back with each answer as plain data (`edge.reflex.motion.Watch`);
- **the first camera stays here**: a one-camera appliance pays for no copy and no extra process; the
  pool starts with the second camera that runs a pixel detector;
- **nothing lost**: a worker that dies or stops answering (`REPLY_TIMEOUT_S`) is ended, and each of its
  cameras goes on with detectors in this process from a clean history (the frame in hand included),
  which the log says once per camera. A worker ends by itself when the appliance is gone (its stdin
  closes).

Run as `python -m edge.reflex.pixels ADDRESS` (by `PixelPool` only), it is a worker: the first line of
its stdin is the connection key, it listens on the Unix socket ADDRESS, prints `ready`, and serves each
camera that connects on a thread of its own.
"""

from __future__ import annotations

import logging
import os
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import AuthenticationError, Client, Connection, Listener
from typing import Any

import numpy as np

from edge.config.models import FireConfig, SmokeConfig
from edge.reflex.fire import FireDetector
from edge.reflex.motion import Shrinks, Watch
from edge.reflex.smoke import SmokeDetector
from edge.types import Detection

log = logging.getLogger(__name__)

START_TIMEOUT_S = 60.0
"""A worker that has not said `ready` by then (imports NumPy and OpenCV: about a second) failed to start."""
REPLY_TIMEOUT_S = 10.0
"""A worker that takes longer than this to answer (a look takes about 10 ms) is taken as hung."""

Before = tuple[np.ndarray, float] | None
"""(image, pts) of the frame just before the one looked at, which the gate let go (FireDetector.detect)."""


class PixelWorkerError(RuntimeError):
    """A pixel detector raised in its worker process (the message says what, as it said there)."""


@dataclass(slots=True)
class PixelLook:
    """What the pixel detectors saw in one frame, and what each look cost (ms; None: it did not run)."""

    smoke: list[Detection] = field(default_factory=list)
    fire: list[Detection] = field(default_factory=list)
    smoke_ms: float | None = None
    fire_ms: float | None = None


class LocalPixels:
    """A camera's fire and smoke detectors in this process."""

    def __init__(self, on_close: Callable[[], None] | None = None) -> None:
        self.fire: FireDetector | None = None
        self.smoke: SmokeDetector | None = None
        self._on_close = on_close

    @property
    def active(self) -> bool:
        return self.fire is not None or self.smoke is not None

    def configure(self, fire: FireConfig | None, smoke: SmokeConfig | None) -> None:
        """Run the detectors that get a config and drop the others; one that runs keeps its history."""
        self.fire = (self.fire or FireDetector(fire)) if fire is not None else None
        self.smoke = (self.smoke or SmokeDetector(smoke)) if smoke is not None else None

    def reset(self) -> None:
        """Forget everything seen (detection switched back on: the scene may have changed)."""
        for detector in (self.fire, self.smoke):
            if detector is not None:
                detector.reset()

    def look(self, image: np.ndarray, pts: float, damaged: bool, before: Before) -> PixelLook:
        """Smoke first: where it rises, the fire detector looks for small flames at its base."""
        out = PixelLook()
        shrinks = Shrinks(image)  # both shrink a frame by the same factor: made once
        if self.smoke is not None:
            t = time.perf_counter()
            out.smoke = self.smoke.detect(image, pts, damaged=damaged, shrinks=shrinks)
            out.smoke_ms = (time.perf_counter() - t) * 1000
        if self.fire is not None:
            t = time.perf_counter()
            hints = [d.box for d in out.smoke]
            out.fire = self.fire.detect(
                image, pts, damaged=damaged, hints=hints, before=before, shrinks=shrinks
            )
            out.fire_ms = (time.perf_counter() - t) * 1000
        return out

    def watches(self) -> list[Watch]:
        return [d.watch() for d in (self.fire, self.smoke) if d is not None]

    def watching(self, pts: float) -> bool:
        """A detector needs the frame at `pts` although the gate skips it (a flicker or a plume builds)."""
        return any(w.holds(pts) for w in self.watches())

    @property
    def peak_evidence(self) -> float:
        return max((w.peak for w in self.watches()), default=0.0)

    def close(self) -> None:
        if self._on_close is not None:
            self._on_close()
            self._on_close = None


class RemotePixels:
    """A camera's fire and smoke detectors in a worker process of a `PixelPool`; the same interface as
    `LocalPixels`. Used by one red loop at a time (it holds its lock around every call)."""

    def __init__(self, worker: _Worker, camera: str) -> None:
        self.camera = camera
        self._worker = worker
        self._conn: Connection | None = worker.connect()
        self._configs: tuple[FireConfig | None, SmokeConfig | None] = (None, None)
        self._watches: list[Watch] = []
        self._local: LocalPixels | None = None
        """Detectors here, once the worker failed."""

    @property
    def active(self) -> bool:
        return any(c is not None for c in self._configs)

    @property
    def remote(self) -> bool:
        """Still in the worker (False once it failed and the detectors run here)."""
        return self._local is None

    def configure(self, fire: FireConfig | None, smoke: SmokeConfig | None) -> None:
        self._configs = (fire, smoke)
        if self._local is None:
            self._call(("configure", fire, smoke))
        if self._local is not None:
            self._local.configure(fire, smoke)

    def reset(self) -> None:
        if self._local is None:
            self._call(("reset",))
        if self._local is not None:
            self._local.reset()

    def look(self, image: np.ndarray, pts: float, damaged: bool, before: Before) -> PixelLook:
        if self._local is None and self._conn is not None:
            try:
                shapes = (image.shape, None if before is None else (before[0].shape, before[1]))
                self._conn.send(("look", pts, damaged, shapes))
                self._conn.send_bytes(_flat(image))
                if before is not None:
                    self._conn.send_bytes(_flat(before[0]))
                look, self._watches = self._reply()
                return look
            except (OSError, EOFError, TimeoutError) as exc:
                self._fail(exc)
        assert self._local is not None
        return self._local.look(image, pts, damaged, before)

    def watching(self, pts: float) -> bool:
        if self._local is not None:
            return self._local.watching(pts)
        return any(w.holds(pts) for w in self._watches)

    @property
    def peak_evidence(self) -> float:
        if self._local is not None:
            return self._local.peak_evidence
        return max((w.peak for w in self._watches), default=0.0)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
            self._worker.cameras -= 1

    def _call(self, message: tuple) -> Any:
        if self._conn is None:
            return None
        try:
            self._conn.send(message)
            return self._reply()
        except (OSError, EOFError, TimeoutError) as exc:
            self._fail(exc)
            return None

    def _reply(self) -> Any:
        assert self._conn is not None
        if not self._conn.poll(REPLY_TIMEOUT_S):
            raise TimeoutError(f"no answer in {REPLY_TIMEOUT_S:.0f} s")
        kind, value = self._conn.recv()
        if kind == "error":
            raise PixelWorkerError(value)
        return value

    def _fail(self, exc: BaseException) -> None:
        why = str(exc) or type(exc).__name__
        log.error("camera %s: the worker process of its fire and smoke detectors failed (%s); they "
                  "run in the appliance process from now on, their history started again", self.camera,
                  why)  # fmt: skip
        self.close()
        self._worker.end()
        self._local = LocalPixels()
        self._local.configure(*self._configs)


Pixels = LocalPixels | RemotePixels


class _Worker:
    """One worker process and how to reach it."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.authkey = secrets.token_bytes(32)
        self.cameras = 0
        self._ready = False
        self.process = subprocess.Popen(
            [sys.executable, "-m", "edge.reflex.pixels", address],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdin is not None
        self.process.stdin.write(self.authkey.hex() + "\n")
        self.process.stdin.flush()  # kept open: the worker ends when it closes (the appliance is gone)

    def connect(self) -> Connection:
        if not self._ready:
            self._wait_ready()
        conn = Client(self.address, family="AF_UNIX", authkey=self.authkey)
        self.cameras += 1
        return conn

    def _wait_ready(self) -> None:
        out = self.process.stdout
        assert out is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise OSError(f"the pixel worker exited at start (status {self.process.returncode})")
            ready, _, _ = select.select([out], [], [], 0.2)
            if ready:
                line = out.readline()
                if line.strip() == "ready":
                    self._ready = True
                    return
                if not line:
                    continue
        raise TimeoutError(f"the pixel worker did not start in {START_TIMEOUT_S:.0f} s")

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def end(self) -> None:
        """Stop the process (hung, or the appliance stops); its cameras' connections break."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=5)
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()


class PixelPool:
    """The worker processes for the pixel detectors of every camera but the first. `processes` 0: no
    workers, every camera's detectors run in this process (as on one core, or in `edge scan`)."""

    def __init__(self, processes: int) -> None:
        self.processes = processes
        self._workers: list[_Worker] = []
        self._dir: str | None = None
        self._local: str | None = None
        """The camera whose detectors run here (None: the next camera's will)."""
        self._lock = threading.Lock()

    def open(self, camera: str) -> Pixels:
        """Detectors for `camera`, here or in the worker with the fewest cameras (started on first need)."""
        with self._lock:
            if self.processes <= 0 or self._local in (None, camera):
                self._local = camera
                return LocalPixels(on_close=lambda: self._release(camera))
            try:
                worker = self._worker()
                return RemotePixels(worker, camera)
            except (OSError, TimeoutError, AuthenticationError) as exc:
                log.error("camera %s: no pixel worker process (%s); its fire and smoke detectors run in the "
                          "appliance process", camera, exc)  # fmt: skip
                return LocalPixels()

    def _release(self, camera: str) -> None:
        with self._lock:
            if self._local == camera:
                self._local = None

    def _worker(self) -> _Worker:
        self._workers = [w for w in self._workers if w.alive]
        if self._dir is None:
            self._dir = tempfile.mkdtemp(prefix="reflex-pixels-")
        while len(self._workers) < self.processes:
            address = os.path.join(self._dir, f"worker-{secrets.token_hex(4)}.sock")
            self._workers.append(_Worker(address))
        return min(self._workers, key=lambda w: w.cameras)

    def close(self) -> None:
        with self._lock:
            for worker in self._workers:
                worker.end()
            self._workers = []
            if self._dir is not None:
                shutil.rmtree(self._dir, ignore_errors=True)
                self._dir = None


# -- the worker process -------------------------------------------------------------------------------


def _serve(conn: Connection) -> None:
    """One camera's detectors, for as long as its connection lasts."""
    pixels = LocalPixels()
    with conn:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                return
            try:
                if message[0] == "look":
                    _, pts, damaged, (shape, before_meta) = message
                    image = _receive_image(conn, shape)
                    before = None
                    if before_meta is not None:
                        before = (_receive_image(conn, before_meta[0]), before_meta[1])
                    look = pixels.look(image, pts, damaged, before)
                    reply: tuple = ("ok", (look, pixels.watches()))
                elif message[0] == "configure":
                    pixels.configure(message[1], message[2])
                    reply = ("ok", None)
                elif message[0] == "reset":
                    pixels.reset()
                    reply = ("ok", None)
                else:
                    reply = ("error", f"unknown request {message[0]!r}")
            except (EOFError, OSError):
                return
            except Exception as exc:  # the detector's own error goes back to its red loop
                log.exception("pixel detectors")
                reply = ("error", f"{type(exc).__name__}: {exc}")
            try:
                conn.send(reply)
            except (EOFError, OSError):
                return


def _flat(image: np.ndarray) -> memoryview:
    """The image's bytes as one flat buffer (Connection.send_bytes counts a 3-D view by its rows)."""
    return np.ascontiguousarray(image).reshape(-1).data


def _receive_image(conn: Connection, shape: tuple[int, ...]) -> np.ndarray:
    buffer = bytearray(int(np.prod(shape)))
    conn.recv_bytes_into(buffer)
    return np.frombuffer(buffer, np.uint8).reshape(shape)


def _exit_when_orphaned() -> None:
    sys.stdin.read()  # EOF: the appliance closed it or is gone
    os._exit(0)


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.WARNING, format="pixel worker %(process)d: %(levelname)s %(message)s")
    if len(argv) != 1:
        print("usage: python -m edge.reflex.pixels ADDRESS (started by PixelPool)", file=sys.stderr)
        return 2
    # Ctrl-C and systemd's SIGTERM reach the whole process group: the appliance stops its cameras
    # first and then ends its workers, so a worker waits for that (or for its stdin to close).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    authkey = bytes.fromhex(sys.stdin.readline().strip())
    listener = Listener(argv[0], family="AF_UNIX", authkey=authkey)
    threading.Thread(target=_exit_when_orphaned, daemon=True).start()
    print("ready", flush=True)
    while True:
        try:
            conn = listener.accept()
        except (AuthenticationError, OSError) as exc:
            log.warning("refused a connection: %s", exc)
            continue
        threading.Thread(target=_serve, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    # Served from the module by its own name, so what it sends unpickles as edge.reflex.pixels's.
    from edge.reflex import pixels

    sys.exit(pixels.main(sys.argv[1:]))

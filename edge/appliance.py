"""`edge run`: the appliance. One capture thread and one red-loop thread per camera.

Cameras that die are retried by their capture thread and reported; nothing here stops because one
camera, frame or database write failed. Alerts go to the event log and its outbox; the bus drains the
outbox when a broker is configured.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from edge.capture import Camera
from edge.config import EdgeConfig
from edge.journal import Journal
from edge.redloop import RedLoop
from edge.rules import Rule
from edge.store import EventLog, StoreError
from edge.wiring import load_detector

log = logging.getLogger("edge.appliance")

RETENTION_EVERY_S = 600.0
STATS_EVERY_S = 60.0


class Appliance:
    def __init__(self, cfg: EdgeConfig, base_dir: Path, rules: list[Rule]) -> None:
        self.cfg = cfg
        self.data_dir = Path(cfg.data_dir) if Path(cfg.data_dir).is_absolute() else base_dir / cfg.data_dir
        self.rules = rules
        self.stop_event = threading.Event()
        self.events = EventLog(self.data_dir)
        self.journal = Journal(self.events, cfg)
        self.detector = load_detector(cfg, base_dir, rules)
        self.engine_lock = threading.Lock()
        self.cameras: dict[str, Camera] = {}
        self.loops: dict[str, RedLoop] = {}
        self.threads: list[threading.Thread] = []

    def start(self) -> None:
        for rule in self.rules:
            self.events.ensure_rule(rule.cfg)
        for name, cam_cfg in self.cfg.cameras.items():
            if not cam_cfg.enabled:
                continue
            self.events.ensure_camera(name, cam_cfg.source)
            loop = RedLoop(name, self.cfg, self.rules, self.detector, [self.journal], self.engine_lock)
            loop.detect_enabled = cam_cfg.detect
            camera = Camera(name, cam_cfg, on_status=self._camera_status)
            self.cameras[name], self.loops[name] = camera, loop
            camera.start()
            self._spawn(f"redloop-{name}", self._camera_loop, camera, loop)
        self._spawn("housekeeping", self._housekeeping)
        log.info(
            "running %d camera(s), data in %s, outbox depth %d%s",
            len(self.cameras),
            self.data_dir,
            self.events.outbox_depth(),
            "" if self.cfg.mqtt.url else " (no MQTT broker configured: alerts wait in the outbox)",
        )

    def run_until_stopped(self) -> None:
        self.start()
        try:
            while not self.stop_event.wait(1.0):
                pass
        finally:
            self.stop()

    def stop(self) -> None:
        self.stop_event.set()
        for camera in self.cameras.values():
            camera.stop()
        for thread in self.threads:
            thread.join(timeout=5)
        for loop in self.loops.values():
            loop.finish()
        self.journal.close()
        self.events.close()

    def _spawn(self, name: str, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        self.threads.append(thread)
        thread.start()

    def _camera_loop(self, camera: Camera, loop: RedLoop) -> None:
        while not self.stop_event.is_set():
            frame = camera.get(timeout=0.5)
            if frame is None:
                continue
            try:
                loop.process(frame)
            except Exception:  # one bad frame must not stop a camera's red loop
                log.exception("red loop error on %s frame %d; continuing", camera.name, frame.index)

    def _camera_status(self, camera: str, online: bool, reason: str) -> None:
        if online:
            log.info("camera %s online: %s", camera, reason)
        elif reason == "end of file":
            log.info("camera %s: end of file (use --loop to replay it)", camera)
        else:
            log.warning("camera %s offline: %s (retrying)", camera, reason)

    def _housekeeping(self) -> None:
        last_retention = 0.0
        while not self.stop_event.wait(STATS_EVERY_S if last_retention else 1.0):
            now = time.monotonic()
            if now - last_retention >= RETENTION_EVERY_S:
                last_retention = now
                try:
                    report = self.events.apply_retention(self.cfg.retention)
                    log.info("retention: %s", report)
                except StoreError as exc:
                    log.error("retention failed: %s", exc)
            for name, camera in self.cameras.items():
                loop = self.loops[name]
                s = camera.stats
                log.info(
                    "stats %s: %s fps, %d frames, %d dropped, gate skip %.0f%%, online=%s",
                    name,
                    f"{s.fps:.1f}",
                    loop.frames,
                    s.dropped,
                    100 * loop.gate.stats.skip_ratio,
                    s.online,
                )

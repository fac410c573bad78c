"""Housekeeping: the appliance's periodic chores, on one thread of their own.

Held transitions are retried (a disk that filled up may have room again), retention runs every
RETENTION_EVERY_S, stats go to MQTT every `mqtt.stats_every_s` and to the log every minute. A chore
that fails is logged and tried again next time; it never stops the others. The loop beats its heart
(edge.notify) while it waits and after each chore: a chore that hangs stops systemd's watchdog pings.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from edge.bus.state import RetainedState
from edge.capture import Camera
from edge.config import CameraConfig, EdgeConfig
from edge.journal import Journal
from edge.notify import NO_HEART, Heart
from edge.redloop import RedLoop
from edge.store import EventLog, StoreError

log = logging.getLogger("edge.housekeeping")

RETENTION_EVERY_S = 600.0
LOG_STATS_EVERY_S = 60.0
RETRY_HELD_EVERY_S = 5.0
RETENTION_ALLOW_S = 300.0
"""How long one retention pass may rightly take before its silence counts as a hang: it deletes in
batches and reclaims space, which on a large log on an SD card takes far longer than a stats report."""


class Housekeeping:
    def __init__(
        self,
        cfg: EdgeConfig,
        events: EventLog,
        journal: Journal,
        cameras: dict[str, Camera],
        loops: dict[str, RedLoop],
        retained: RetainedState | None,
        heart: Heart = NO_HEART,
    ) -> None:
        self.cfg = cfg
        self.heart = heart
        self.events = events
        self.journal = journal
        self.cameras = cameras
        self.loops = loops
        self.retained = retained

    def run(self, stop: threading.Event) -> None:
        """Until `stop`: the first pass after a second, then every few seconds."""
        every = min(LOG_STATS_EVERY_S, self.cfg.mqtt.stats_every_s) if self.retained else LOG_STATS_EVERY_S
        every = min(every, RETRY_HELD_EVERY_S)
        last_retention = last_log = float("-inf")
        heart = self.heart
        while not heart.wait(stop, every if last_retention > float("-inf") else 1.0):
            now = time.monotonic()
            try:
                self.journal.retry()
            except Exception:  # a bug here must not end retention and stats
                log.exception("retrying held transitions failed")
            heart.beat()
            if now - last_retention >= RETENTION_EVERY_S:
                last_retention = now
                heart.allow(RETENTION_ALLOW_S)
                try:
                    self.events.apply_retention(self.cfg.retention)  # it logs what it did, if anything
                except StoreError as exc:
                    log.error("retention failed: %s", exc)
                heart.beat()
            to_log = now - last_log >= LOG_STATS_EVERY_S
            if to_log:
                last_log = now
            try:
                self.report_stats(to_log)
            except Exception:  # stats are never worth stopping retention for
                log.exception("stats report failed; trying again next time")

    def report_stats(self, to_log: bool) -> None:
        cameras: dict[str, dict[str, object]] = {}
        for name, camera in list(self.cameras.items()):  # a copy: cameras come and go at runtime
            loop = self.loops.get(name)
            if loop is None:
                continue
            numbers = camera_numbers(camera, loop)
            cameras[name] = {key: numbers[key] for key in STATS_KEYS}
            if to_log:
                log.info("stats %s: %.1f fps, %d frames, %d dropped, gate skip %.0f%%, online=%s", name,
                         numbers["fps"], numbers["frames"], numbers["dropped_frames"],
                         100 * loop.gate.stats.skip_ratio, numbers["online"])  # fmt: skip
        if self.retained is not None:
            outbox = outbox_numbers(self.events, self.journal)
            disk_full = bool(outbox["held"]) or self.events.disk_full
            self.retained.stats(cameras, outbox["depth"], outbox["shed"], outbox_held=outbox["held"],
                                disk_full=disk_full)  # fmt: skip


STATS_KEYS = ("fps", "gate_skip_ratio", "inference_ms", "dropped_frames", "online")
"""What the MQTT stats topic carries of `camera_numbers` (schemas/stats.json)."""


def camera_numbers(camera: Camera, loop: RedLoop) -> dict[str, Any]:
    """One camera's health numbers, computed once for both who show them: the MQTT stats topic
    (STATS_KEYS of them) and the admin page's dashboard (all of them)."""
    s = camera.stats
    infer = loop.times.get("infer")
    median = infer.recent_median() if infer is not None else None
    return {
        "online": s.online,
        "reason": s.reason,
        "fps": round(s.fps, 2),
        "frames": loop.frames,
        "dropped_frames": s.dropped,
        "gate_skip_ratio": round(loop.gate.stats.skip_ratio, 4),
        "inference_ms": round(median, 2) if median is not None else None,
        "active_events": _open_events(loop),
        "detect": loop.detect_enabled,
        "alerts": loop.alerts_enabled,
    }


def idle_numbers(cfg: CameraConfig, reason: str) -> dict[str, Any]:
    """`camera_numbers` of a camera that does not run (disabled): offline, saying why, nothing counted."""
    return {
        "online": False,
        "reason": reason,
        "fps": 0.0,
        "frames": 0,
        "dropped_frames": 0,
        "gate_skip_ratio": 0.0,
        "inference_ms": None,
        "active_events": 0,
        "detect": cfg.detect,
        "alerts": cfg.alerts,
    }


def _open_events(loop: RedLoop) -> int:
    """Events open on the camera now. Read from another thread than the red loop's, which may change
    them meanwhile: then read again."""
    for _ in range(3):
        try:
            return len(loop.events.open_events())
        except RuntimeError:  # "dictionary changed size during iteration"
            continue
    return 0


def outbox_numbers(events: EventLog, journal: Journal) -> dict[str, int]:
    """What waits and what was given up, as the MQTT stats and the dashboard show it: `depth` (MQTT
    messages waiting, including `held`: those the event log could not take, kept in memory), `shed`
    (messages given up to keep alerts: dropped outbox rows plus transitions shed from memory) and
    `dropped` (the outbox rows alone)."""
    held = journal.held_count
    try:
        depth, dropped = events.outbox_depth(), events.outbox_dropped()
    except StoreError:
        depth, dropped = 0, 0
    return {"depth": depth + held, "held": held, "shed": dropped + journal.shed, "dropped": dropped}

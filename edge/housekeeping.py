"""Housekeeping: the appliance's periodic chores, on one thread of their own.

Held transitions are retried (a disk that filled up may have room again), retention runs every
RETENTION_EVERY_S, stats go to MQTT every `mqtt.stats_every_s` and to the log every minute. A chore
that fails is logged and tried again next time; it never stops the others.
"""

from __future__ import annotations

import logging
import threading
import time

from edge.bus.state import RetainedState
from edge.capture import Camera
from edge.config import EdgeConfig
from edge.journal import Journal
from edge.redloop import RedLoop
from edge.store import EventLog, StoreError

log = logging.getLogger("edge.housekeeping")

RETENTION_EVERY_S = 600.0
LOG_STATS_EVERY_S = 60.0
RETRY_HELD_EVERY_S = 5.0


class Housekeeping:
    def __init__(
        self,
        cfg: EdgeConfig,
        events: EventLog,
        journal: Journal,
        cameras: dict[str, Camera],
        loops: dict[str, RedLoop],
        retained: RetainedState | None,
    ) -> None:
        self.cfg = cfg
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
        while not stop.wait(every if last_retention > float("-inf") else 1.0):
            now = time.monotonic()
            try:
                self.journal.retry()
            except Exception:  # a bug here must not end retention and stats
                log.exception("retrying held transitions failed")
            if now - last_retention >= RETENTION_EVERY_S:
                last_retention = now
                try:
                    self.events.apply_retention(self.cfg.retention)  # it logs what it did, if anything
                except StoreError as exc:
                    log.error("retention failed: %s", exc)
            to_log = now - last_log >= LOG_STATS_EVERY_S
            if to_log:
                last_log = now
            try:
                self.report_stats(to_log)
            except Exception:  # stats are never worth stopping retention for
                log.exception("stats report failed; trying again next time")

    def report_stats(self, to_log: bool) -> None:
        cameras: dict[str, dict[str, object]] = {}
        for name, camera in self.cameras.items():
            loop = self.loops[name]
            s = camera.stats
            infer = loop.times.get("infer")
            median = infer.recent_median() if infer is not None else None
            cameras[name] = {
                "fps": round(s.fps, 2),
                "gate_skip_ratio": round(loop.gate.stats.skip_ratio, 4),
                "inference_ms": round(median, 2) if median is not None else None,
                "dropped_frames": s.dropped,
                "online": s.online,
            }
            if to_log:
                skip = 100 * loop.gate.stats.skip_ratio
                log.info("stats %s: %.1f fps, %d frames, %d dropped, gate skip %.0f%%, online=%s",
                         name, s.fps, loop.frames, s.dropped, skip, s.online)  # fmt: skip
        if self.retained is not None:
            held = self.journal.held_count
            try:
                depth, dropped = self.events.outbox_depth(), self.events.outbox_dropped()
            except StoreError:
                depth, dropped = 0, 0
            disk_full = bool(held) or self.events.disk_full
            self.retained.stats(cameras, depth + held, dropped + self.journal.shed, outbox_held=held,
                                disk_full=disk_full)  # fmt: skip

"""`edge run`: the appliance. One capture thread and one red-loop thread per camera, the bus.

Cameras that die are retried by their capture thread and reported; nothing here stops because one
camera, frame, command or database write failed. Alerts go to the event log and its outbox first; the
MQTT bus (when a broker is configured) and the push workers drain the outbox.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from itertools import islice
from pathlib import Path

from edge import __version__
from edge.bus.commands import Commands
from edge.bus.discovery import discovery_filter, discovery_messages
from edge.bus.mqtt import Bus, BusConfigError
from edge.bus.payloads import event_payload, topic
from edge.bus.push import PushWorker, start_push_workers
from edge.bus.state import LiveState
from edge.capture import Camera
from edge.config import ConfigError, EdgeConfig
from edge.journal import Journal
from edge.redloop import RedLoop, Sink, percentile
from edge.rules import Rule, Transition
from edge.store import EventLog, StoreError
from edge.types import Frame
from edge.wiring import load_detector

log = logging.getLogger("edge.appliance")

RETENTION_EVERY_S = 600.0
LOG_STATS_EVERY_S = 60.0


class Appliance:
    def __init__(
        self, cfg: EdgeConfig, base_dir: Path, rules: list[Rule], observers: Sequence[Sink] = ()
    ) -> None:
        """`observers` see every transition after it is stored (tools/bench times alerts with one)."""
        self.cfg = cfg
        self.data_dir = Path(cfg.data_dir) if Path(cfg.data_dir).is_absolute() else base_dir / cfg.data_dir
        self.rules = rules
        self.observers = list(observers)
        self.stop_event = threading.Event()
        self.detector = load_detector(cfg, base_dir, rules)
        self.events = EventLog(self.data_dir)
        self.journal = Journal(self.events, cfg)
        self.engine_lock = threading.Lock()
        self.cameras: dict[str, Camera] = {}
        self.loops: dict[str, RedLoop] = {}
        self.threads: list[threading.Thread] = []
        self.bus: Bus | None = None
        self.push_workers: list[PushWorker] = []
        self.live: LiveState | None = None
        if cfg.mqtt.url:
            try:
                self.bus = Bus(cfg.mqtt, cfg.device.id, self.events)
            except BusConfigError as exc:
                self.events.close()
                raise ConfigError(f"mqtt: {exc}") from None
            self.live = LiveState(self.bus)
            self.bus.on_command = Commands(
                cfg.mqtt.prefix,
                cfg.device.id,
                lambda: set(self.loops),
                self.events,
                self.set_switch,
                self._answer,
                cfg.mqtt.max_command_bytes,
            )
            self.journal.on_snapshot = self.live.snapshot

    def start(self) -> None:
        for rule in self.rules:
            self.events.ensure_rule(rule.cfg)
        self._end_orphaned_events()
        sinks: list[Sink] = [self.journal] if self.live is None else [self.journal, self.live]
        sinks += [*self.observers, _Wake(self._wake_deliverers)]
        for name, cam_cfg in self.cfg.cameras.items():
            if cam_cfg.enabled:
                self.events.ensure_camera(name, cam_cfg.source, detect=cam_cfg.detect, alerts=cam_cfg.alerts)
                loop = RedLoop(name, self.cfg, self.rules, self.detector, sinks, self.engine_lock)
                self.cameras[name] = Camera(name, cam_cfg, on_status=self._camera_status)
                self.loops[name] = loop
        # Switches set over MQTT survive restarts: the stored state wins over the config's default.
        for name, switches in self.events.switches().items():
            for switch, on in switches.items():
                if name in self.loops:
                    self.set_switch(name, switch, on, persist=False)
        if self.bus is not None:
            self._announce_to_home_assistant(self.bus)
        if self.live is not None:
            for name, loop in self.loops.items():
                loop.on_counts = self.live.counts
                self.live.counts(name, loop.counts)
                self.live.camera_status(name, False)
                for rule in self.rules:
                    if rule.applies_to(name):
                        self.live.rule_idle(name, rule.name)
        for name, camera in self.cameras.items():
            camera.start()
            self._spawn(f"redloop-{name}", self._camera_loop, camera, self.loops[name])
        self._drop_removed_push_channels()
        self.push_workers = start_push_workers(self.events, self.cfg, self.stop_event)
        if self.bus is not None:
            self.bus.start()
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
        for worker in self.push_workers:
            worker.notify()  # out of its idle wait: it sees the stop at once
            worker.join(timeout=5)
        if self.bus is not None:
            self.bus.stop()
        self.events.close()

    def set_switch(self, camera: str, switch: str, on: bool, *, persist: bool = True) -> None:
        """Flip a camera's `detect` or `alerts` switch (MQTT command, admin page, start-up)."""
        if persist:  # first: a switch that cannot be stored is refused, not half-applied
            self.events.set_switch(camera, switch, on)
            log.info("camera %s: %s switched %s", camera, switch, "on" if on else "off")
        loop = self.loops[camera]
        if switch == "detect":
            loop.detect_enabled = on
        else:
            loop.alerts_enabled = on
        if self.live is not None:
            self.live.switch(camera, switch, on)

    def _answer(self, payload: dict[str, object]) -> None:
        """Queue an answer on …/answers through the outbox (QoS 1, survives an outage)."""
        message_id = f"answer:{payload.get('id')}:{payload['kind']}:{time.time_ns()}"
        self.events.enqueue("answer", topic(self.cfg.mqtt.prefix, self.cfg.device.id, "answers"), payload,
                            message_id)  # fmt: skip
        if self.bus is not None:
            self.bus.notify()

    def _end_orphaned_events(self) -> None:
        """Events a crash left open will never see their end: end them now, at their last update, and
        tell the consumers (no red loop runs yet, so every open event in the log is such an orphan)."""
        try:
            orphans = self.events.open_events()
            for ev in orphans:
                message = (self.journal.events_topic, event_payload(ev, "end"), f"{ev.id}:end:{ev.frame}")
                self.events.event_transition(ev, "end", message, sighting=False)
        except StoreError as exc:
            log.error("cannot end events left open by the last run: %s", exc)
            return
        if orphans:
            log.warning("ended %d event(s) left open by the previous run (crash or power cut)", len(orphans))

    def _wake_deliverers(self) -> None:
        """A transition was just committed to the outbox: deliver it now, not at the next poll."""
        if self.bus is not None:
            self.bus.notify()
        for worker in self.push_workers:
            worker.notify()

    def _announce_to_home_assistant(self, bus: Bus) -> None:
        """Discovery configs are retained state: re-published on every connect, stale ones cleared."""
        if not self.cfg.mqtt.discovery:
            return
        cameras = sorted(self.loops)
        messages = discovery_messages(
            self.cfg.mqtt.prefix,
            self.cfg.device.id,
            self.cfg.mqtt.discovery_prefix,
            cameras,
            {rule.name: [c for c in cameras if rule.applies_to(c)] for rule in self.rules},
            {name: list(loop.counts) for name, loop in self.loops.items()},
            __version__,
            rule_labels={rule.name: rule.cfg.label for rule in self.rules},
        )
        for config_topic, payload in messages:
            bus.set_state(config_topic, json.dumps(payload, separators=(",", ":")))
        bus.cleanup_filter = discovery_filter(self.cfg.mqtt.discovery_prefix, self.cfg.device.id)

    def _drop_removed_push_channels(self) -> None:
        """Rows of a push channel that is no longer configured can never be sent: say so, loudly."""
        try:
            dropped = self.events.drop_unknown_push_channels(set(self.cfg.push))
        except StoreError as exc:
            log.error("cannot check the outbox for removed push channels: %s", exc)
            return
        for channel, count in dropped.items():
            log.error("outbox: %d alert(s) for %s will not be pushed: that channel is no longer configured",
                      count, channel)  # fmt: skip

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
        if self.live is not None:
            self.live.camera_status(camera, online)
        if online:
            log.info("camera %s online: %s", camera, reason)
        elif reason == "end of file":
            log.info("camera %s: end of file (use --loop to replay it)", camera)
        else:
            log.warning("camera %s offline: %s (retrying)", camera, reason)

    def _housekeeping(self) -> None:
        """Retention every RETENTION_EVERY_S; stats to MQTT every stats_every_s, to the log every minute."""
        every = min(LOG_STATS_EVERY_S, self.cfg.mqtt.stats_every_s) if self.live else LOG_STATS_EVERY_S
        last_retention = last_log = float("-inf")
        while not self.stop_event.wait(every if last_retention > float("-inf") else 1.0):
            now = time.monotonic()
            if now - last_retention >= RETENTION_EVERY_S:
                last_retention = now
                try:
                    report = self.events.apply_retention(self.cfg.retention)
                    log.info("retention: %s", report)
                except StoreError as exc:
                    log.error("retention failed: %s", exc)
            to_log = now - last_log >= LOG_STATS_EVERY_S
            if to_log:
                last_log = now
            try:
                self._report_stats(to_log)
            except Exception:  # stats are never worth stopping retention for
                log.exception("stats report failed; trying again next time")

    def _report_stats(self, to_log: bool) -> None:
        cameras: dict[str, dict[str, object]] = {}
        for name, camera in self.cameras.items():
            loop = self.loops[name]
            s = camera.stats
            infer = loop.times.samples.get("infer")
            cameras[name] = {
                "fps": round(s.fps, 2),
                "gate_skip_ratio": round(loop.gate.stats.skip_ratio, 4),
                "inference_ms": round(percentile(islice(reversed(infer), 200), 50), 2) if infer else None,
                "dropped_frames": s.dropped,
                "online": s.online,
            }
            if to_log:
                log.info(
                    "stats %s: %s fps, %d frames, %d dropped, gate skip %.0f%%, online=%s",
                    name,
                    f"{s.fps:.1f}",
                    loop.frames,
                    s.dropped,
                    100 * loop.gate.stats.skip_ratio,
                    s.online,
                )
        if self.live is not None:
            try:
                depth, dropped = self.events.outbox_depth(), self.events.outbox_dropped()
            except StoreError:
                depth, dropped = -1, 0
            self.live.stats(cameras, depth, dropped + self.journal.shed)


class _Wake:
    """The last red-loop sink: runs after the journal has committed a transition's outbox rows."""

    def __init__(self, wake: Callable[[], None]) -> None:
        self.wake = wake

    def handle(self, transition: Transition, frame: Frame) -> None:
        self.wake()

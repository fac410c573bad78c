"""`edge run`: the appliance's setup root. It builds the parts in clear steps and starts them.

One capture thread and one red-loop thread per camera, the bus, the push workers, housekeeping and,
with `admin.listen`, the admin web page. Runtime changes (cameras, switches, rules, asks) go through
`self.control`; the appliance only does what the control surface asks of it as its `CameraHost`:
start or stop one camera's capture and red loop.
Cameras that die are retried by their capture thread and reported; nothing stops because one camera,
frame, command or database write failed. Alerts go to the event log and its outbox first; the MQTT
bus (when a broker is configured) and the push workers drain the outbox.

Under systemd (`Type=notify`, edge.notify) the appliance says READY=1 once its cameras and the bus have
started (not once the broker answers: alerts wait in the outbox meanwhile), keeps a STATUS= line, says
STOPPING=1 as it stops, and pings the watchdog only while every red loop, the bus thread and the
housekeeping thread beat: a hung loop gets the process restarted. Each of those loops gets its heart
from `self.hearts` here.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from edge import __version__
from edge.bus.commands import Commands
from edge.bus.discovery import (
    components_of,
    config_json,
    discovery_cleanup,
    discovery_configs,
    discovery_filters,
    load_announced,
    save_announced,
)
from edge.bus.mqtt import Bus, BusConfigError
from edge.bus.push import PushWorker, start_push_workers
from edge.bus.state import RetainedState
from edge.capture import Camera
from edge.config import CameraConfig, ConfigError, EdgeConfig
from edge.config.models import host_port
from edge.control import Control, ControlError
from edge.delegate import Delegate
from edge.housekeeping import Housekeeping, camera_numbers, idle_numbers, outbox_numbers
from edge.instructions import Router
from edge.journal import Journal
from edge.live import LiveView
from edge.modes import ModeScheduler
from edge.narrator import Narrator
from edge.notify import Heart, Heartbeats, Notifier, Watchdog
from edge.outbox import SWITCHES, MemoryQueue, Topics, event_message
from edge.pipeline import feed
from edge.redact import redact
from edge.redloop import Detector, RedLoop, Sink
from edge.reflex import build_detector
from edge.reflex.pixels import PixelPool
from edge.rules import Rule, Transition
from edge.rules.lines import LineCounter, local_iso
from edge.store import DataLock, EventLog, StoreError
from edge.store.db import one_line
from edge.store.models import push_channel
from edge.types import Frame
from edge.verify import Verifier
from edge.wiring import known_labels, load_models, needs_objects

LINE_COUNTS_KEY = "line_counts:"
"""Event-log setting per camera (this + its name) holding today's line counts (LineCounter.stored)."""

log = logging.getLogger("edge.appliance")


class Appliance:
    def __init__(
        self, cfg: EdgeConfig, base_dir: Path, rules: list[Rule], observers: Sequence[Sink] = ()
    ) -> None:
        """`rules` are the config's (origin `config`); `observers` see every transition after it is
        stored (tools/bench times alerts with one)."""
        self.cfg = cfg
        self.base_dir = base_dir
        self.config_rules = rules
        self.observers = list(observers)
        self.stop_event = threading.Event()
        self.data_dir = Path(cfg.data_dir) if Path(cfg.data_dir).is_absolute() else base_dir / cfg.data_dir
        self.topics = Topics(cfg.mqtt.prefix, cfg.device.id)
        self.cameras: dict[str, Camera] = {}
        self.loops: dict[str, RedLoop] = {}
        """Capturing cameras and their red loops, shared with the control surface and housekeeping;
        cameras added or removed at runtime come and go here (start_camera, stop_camera)."""
        self._feeds: dict[str, tuple[threading.Thread, threading.Event, Heart]] = {}
        """Each camera's red-loop thread, the event that ends it (one camera stops on its own) and its
        heart."""
        self.notifier = Notifier()
        watchdog_s = self.notifier.watchdog_s
        self.hearts = Heartbeats(max_age=watchdog_s / 2 if watchdog_s else None)
        """The watched loops' heartbeats: every red loop, the bus thread, housekeeping."""
        self.watchdog = Watchdog(self.notifier, self.hearts, self._status_line)
        self._sinks: list[Sink] = []
        self._running = False
        self._started_at: float | None = None
        self._announced: set[str] = set()
        self._discovery: list[tuple[str, dict[str, Any]]] = []
        """The discovery configs published now (the sweep migrates the other style's to these)."""
        self._components: dict[str, str] | None = None
        """Components (object id -> platform) announced last, this run or (None yet) the last one."""
        self.admin: Any = None
        """The admin page's server (edge.admin.server.AdminServer) while it runs."""
        self.threads: list[threading.Thread] = []
        self.push_workers: list[PushWorker] = []
        self.live = LiveView()
        self._detector: Detector | None = None
        self.narrator: Narrator | None = None
        self.router: Router | None = None
        self.pixel_pool = PixelPool(cfg.capacity.processes(os.cpu_count()))
        """Worker processes for the fire and smoke detectors of every camera but the first (started
        with the second such camera)."""
        self._init_store()
        try:
            self._init_control()
            self._init_bus()
            self._init_delegate()
            self._init_verifier()
        except BaseException:
            self.pixel_pool.close()
            self._close_store()
            raise

    # -- setup steps ------------------------------------------------------------------------------

    def _init_store(self) -> None:
        """One appliance per data folder (a second would fight the first for the broker), then the
        event log and the journal that writes to it."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.lock = DataLock(self.data_dir)
        self.lock.acquire()
        try:
            self.events = EventLog(self.data_dir)
        except BaseException:
            self.lock.release()
            raise
        self.memory = MemoryQueue()
        self.journal = Journal(self.events, self.topics, self.config_rules, self.memory)

    def _init_control(self) -> None:
        self.control = Control(
            self.events,
            self.topics,
            self.journal,
            known_labels=known_labels(self.cfg, self.base_dir),
            push_channels=self.cfg.push,
            detector=self._load_detector,
            notify=self._wake_deliverers,
            modes=self.cfg.modes,
            mode=self.cfg.mode,
        )
        self.control.load_mode(self.cfg.mode_schedule)  # before the rules: the mode decides which run
        self.rules = self.control.load_rules(self.config_rules)
        if needs_objects(self.control.all_rules()):  # loaded for every mode: arming is instant
            self._load_detector()
        self.models = load_models(self.cfg, self.base_dir)  # all of them: runtime rules may want one
        self.control.model_labels = {label for m in self.models for label in m.labels}

    def _init_bus(self) -> None:
        self.bus: Bus | None = None
        self.retained: RetainedState | None = None
        if not self.cfg.mqtt.url:
            return
        try:
            self.bus = Bus(self.cfg.mqtt, self.topics, self.events, self.memory)
        except BusConfigError as exc:
            raise ConfigError(f"mqtt: {exc}") from None
        self.retained = RetainedState(self.bus)
        Commands(self.topics, self.control, self.cfg.mqtt.max_command_bytes).subscribe(self.bus)
        self.journal.on_snapshot = self.retained.snapshot
        self.journal.on_verdict = self.retained.verdict  # binary sensors follow confirmed fire and smoke
        self.control.on_rules_changed = self._announce_to_home_assistant

    def _init_delegate(self) -> None:
        """The blue-loop client: delegated jobs go out through the outbox (bulk priority, after the
        alerts), results come back on blue/result and answer their asks."""
        self.delegate = Delegate(self.events, self.topics, self.control, self.live)
        self.control.delegate = self.delegate
        if self.bus is not None:
            self.delegate.subscribe(self.bus)

    def _init_verifier(self) -> None:
        """Two-phase alerts: provisional alerts of rules with `verify` get a blue-loop `verify` job
        (the verifier is a red-loop sink after the journal); its verdict is the same alert again,
        confirmed or retracted. Fire and smoke are verified on the device as well (the red loop's
        event machine); the journal combines the two verdicts. `confirmed_only` push channels get
        confirmed alerts only."""
        self.journal.confirmed_only = frozenset(n for n, c in self.cfg.push.items() if c.confirmed_only)
        self.verifier = Verifier(self.journal, self.delegate, self._wake_deliverers, self.stop_event,
                                 reachable=self.bus is not None)  # fmt: skip
        self.verifier.attach()
        self.observers.append(self.verifier)

    def _init_cameras(self) -> None:
        """The config's cameras, then those added on the admin page (stored in the event log)."""
        sinks: list[Sink] = [self.journal] if self.retained is None else [self.journal, self.retained]
        sinks += [*self.observers, _Wake(self._wake_deliverers)]
        enrich = self.delegate if self.cfg.blueloop.llm and self.bus is not None else None
        self.narrator = Narrator(self.control, self.events, enrich=enrich)  # queues transitions, own thread
        sinks.append(self.narrator)
        self._sinks = sinks
        runtime = self.control.load_cameras(self.cfg.cameras)
        for name, cam_cfg in [*self.cfg.cameras.items(), *((e.name, e.cfg) for e in runtime)]:
            if not cam_cfg.enabled:
                log.info("camera %s is disabled; not capturing", name)
                continue
            self._build_camera(name, cam_cfg)
        self.control.attach(self.loops, self.retained)
        self.control.host = self
        self.control.apply_stored_switches()

    def _build_camera(self, name: str, cfg: CameraConfig) -> None:
        """A camera's capture and red loop, registered (not started yet)."""
        self.events.ensure_camera(name, cfg.source, detect=cfg.detect, alerts=cfg.alerts)
        rules = self.control.active_rules()
        wants_objects = needs_objects([r for r in rules if r.applies_to(name)]) or bool(cfg.lines)
        detector = self._load_detector() if wants_objects else self._detector
        loop = RedLoop(name, self.cfg, rules, detector, self._sinks, live=self.live, models=self.models,
                       camera_cfg=cfg, pixel_pool=self.pixel_pool)  # fmt: skip
        self.loops[name] = loop
        if loop.lines is not None:
            self._restore_line_counts(name, loop.lines)
            loop.on_lines = self._line_counts
        self.cameras[name] = Camera(name, cfg, on_status=self._camera_status)

    def _run_camera(self, name: str) -> None:
        camera, loop, stop = self.cameras[name], self.loops[name], threading.Event()
        heart = self.hearts.heart(f"red loop {name}")
        camera.start()
        thread = threading.Thread(target=self._feed, args=(camera, loop, stop, heart), name=f"redloop-{name}",
                                  daemon=True)  # fmt: skip
        self._feeds[name] = (thread, stop, heart)
        thread.start()

    def _feed(self, camera: Camera, loop: RedLoop, stop: threading.Event, heart: Heart) -> None:
        """A camera's red-loop thread. Its heart is forgotten when the loop ends as meant (stopped, or
        the end of a file); a loop killed by an exception keeps it, so the watchdog restarts us."""
        feed(camera, loop, stop, heart)
        self.hearts.forget(heart)

    def _init_instructions(self) -> None:
        """Asks in plain words: rules, questions, memory, control, delegated work."""
        entries = self.control.camera_entries()
        zones = {e.name: dict(e.cfg.zones) for e in entries if e.cfg.zones}
        self.router = Router(self.control, self.live, self.events, self.control.known_labels, zones)
        self.control.router = self.router
        self.router.narrator = self.narrator

    def _init_retained_state(self) -> None:
        if self.retained is None:
            return
        self._announce_to_home_assistant()
        self.retained.mode(self.control.mode)
        for name in self.loops:
            self._retain_camera(name)
        # A removed camera's retained topics (counts, JPEG, status) and removed entities are cleared.
        assert self.bus is not None
        self.bus.sweep(self.topics("#"))
        if self.cfg.mqtt.discovery:
            for topic_filter in discovery_filters(self.cfg.mqtt.discovery_prefix, self.cfg.device.id):
                self.bus.sweep(topic_filter, self._stale_discovery)

    def _restore_line_counts(self, name: str, counter: LineCounter) -> None:
        """Today's line counts from before a restart (edge.rules.lines), when the event log has them."""
        try:
            stored = self.events.setting(LINE_COUNTS_KEY + name)
        except StoreError as exc:
            log.error("camera %s: cannot read its stored line counts; they start at 0: %s", name, exc)
            return
        if stored is not None and counter.restore(stored["value"]):
            log.info("camera %s: line counts since %s taken back", name, local_iso(counter.since))

    def _line_counts(self, camera: str, line: str, label: str, counts: dict[str, object]) -> None:
        """A line count changed (on the camera's red loop): retained on MQTT and kept in the event log,
        so a restart does not zero the day's counts. A store that fails is said, never raised into
        the red loop."""
        if self.retained is not None:
            self.retained.lines(camera, line, label, counts)
        loop = self.loops.get(camera)
        if loop is None or loop.lines is None:
            return
        try:
            self.events.set_setting(LINE_COUNTS_KEY + camera, loop.lines.stored(), "red loop")
        except StoreError as exc:
            log.error("camera %s: cannot store its line counts: %s", camera, exc)

    def _retain_camera(self, name: str) -> None:
        """A camera's retained MQTT state as it starts: its counts, offline, its rules idle."""
        assert self.retained is not None
        loop = self.loops[name]
        loop.on_counts = self.retained.counts
        self.retained.counts(name, loop.counts)
        loop.on_occupancy = self.retained.zones
        self.retained.zones(name, loop.occupancy)
        if loop.lines is not None:
            for (line, label), counts in loop.lines.counts().items():
                self.retained.lines(name, line, label, counts)
        self.retained.camera_status(name, False)
        for rule in self.control.all_rules():  # also those the mode leaves out: they say OFF
            if rule.applies_to(name):
                self.retained.rule_idle(name, rule.name)

    def start(self) -> None:
        """Start everything, the admin page (when configured) last: a port it cannot listen on is a
        one-line ConfigError, after stopping what had started."""
        self._started_at = time.monotonic()
        self._end_orphaned_events()
        self._init_cameras()
        self._init_instructions()
        self._init_retained_state()
        for name in list(self.cameras):
            self._run_camera(name)
        self._running = True
        self._drop_removed_push_channels()
        self.push_workers = start_push_workers(self.events, self.cfg, self.stop_event)
        self.delegate.start()
        if self.bus is not None:
            self.bus.start(self.hearts.heart("bus"))
        chores = Housekeeping(self.cfg, self.events, self.journal, self.cameras, self.loops, self.retained,
                              self.hearts.heart("housekeeping"))  # fmt: skip
        self._spawn("housekeeping", chores.run, self.stop_event)
        self._spawn("modes", ModeScheduler(self.control, self.cfg.mode_schedule).run, self.stop_event)
        if self.cfg.admin.listen:
            try:
                self._start_admin(self.cfg.admin.listen)
            except BaseException:
                self.stop()
                raise
        log.info(
            "running %d camera(s), data in %s, outbox depth %d%s",
            len(self.cameras),
            self.data_dir,
            self.events.outbox_depth(),
            "" if self.cfg.mqtt.url else " (no MQTT broker configured: alerts wait in the outbox)",
        )
        self.watchdog.start()  # READY=1: cameras and bus started; the broker may still be connecting

    def run_until_stopped(self) -> None:
        self.start()
        try:
            while not self.stop_event.wait(1.0):
                pass
        finally:
            self.stop()

    def stop(self) -> None:
        """The admin page, cameras, then red loops (open events end), the journal, the push workers,
        the bus (which says what a stopped appliance knows, then `offline`), and the event log last."""
        self.stop_event.set()
        self.watchdog.stop("stopping: open events end, queued messages go out first")
        if self.admin is not None:
            self.admin.stop()
            self.admin = None
        self._running = False
        for _, stop, _ in self._feeds.values():
            stop.set()
        for camera in self.cameras.values():
            camera.stop()
        for thread in [*self.threads, *(t for t, _, _ in self._feeds.values())]:
            thread.join(timeout=5)
        if self.narrator is not None:
            self.narrator.stop()  # before the loops end their events: a stop is not "left after 12 s"
        for loop in self.loops.values():
            loop.finish()
            loop.close()
        self.pixel_pool.close()
        if self.router is not None:
            self.router.close()
        self.journal.close()
        for worker in self.push_workers:
            worker.notify()  # out of its idle wait: it sees the stop at once
            worker.join(timeout=5)
        if self.retained is not None:
            self.retained.at_stop(sorted(self.loops))
        self.delegate.stop()
        if self.bus is not None:
            self.bus.stop()
        self.journal.report_unsaved()
        self._close_store()
        self.notifier.close()

    def _close_store(self) -> None:
        self.events.close()
        self.lock.release()

    # -- cameras at runtime (the control surface's CameraHost) ---------------------------------------

    def start_camera(self, name: str, cfg: CameraConfig) -> None:
        """A camera added (or changed) at runtime: capture, red loop and red-loop thread registered
        where the control surface and housekeeping see them, a keyframe ring in the live view, its
        retained MQTT state and Home Assistant entities announced. Called by Control, under its lock."""
        if self.stop_event.is_set():
            raise ControlError("the appliance is stopping")
        if name in self.loops:
            self.stop_camera(name)
        self._build_camera(name, cfg)
        try:
            if self.retained is not None:
                self._retain_camera(name)
            self.control.apply_stored_switches(name)
            if self.router is not None and cfg.zones:
                self.router.zones[name] = dict(cfg.zones)
            if self._running:
                self._run_camera(name)
        except BaseException:
            self.stop_camera(name)
            raise
        self._announce_to_home_assistant()

    def stop_camera(self, name: str) -> None:
        """A camera removed (or about to change) at runtime: its threads end, its open events end (and
        say so on MQTT), its retained topics and Home Assistant entities are cleared."""
        camera, loop = self.cameras.pop(name, None), self.loops.pop(name, None)
        thread, stop, heart = self._feeds.pop(name, (None, None, None))
        if heart is not None:
            self.hearts.forget(heart)  # removed on purpose: not a hung red loop, even if slow to end
        if stop is not None:
            stop.set()
        if thread is not None:
            thread.join(timeout=5)
        if camera is not None:
            camera.stop()
        if loop is None:
            return
        loop.finish("camera removed")
        loop.close()
        self.live.keyframes.pop(name, None)
        if self.router is not None:
            self.router.zones.pop(name, None)
        if self.retained is not None and self.bus is not None:
            self.retained.counts(name, {})
            self.retained.zones(name, {})
            self.retained.lines_removed(name)
            for rule in self.control.all_rules():
                if rule.applies_to(name):
                    self.retained.rule_removed(name, rule.name)
            for topic in (self.topics.status(name), self.topics.snapshot(name),
                          *(self.topics.switch_state(name, switch) for switch in SWITCHES)):  # fmt: skip
                self.bus.set_state(topic, b"")
        self._announce_to_home_assistant()

    # -- the admin page ------------------------------------------------------------------------------

    def _start_admin(self, listen: str) -> None:
        """Serve the admin page on `listen` (HOST:PORT), over TLS with `admin.cert`/`key` or, with
        `admin.tls`, a self-signed certificate made on first start under <data_dir>/admin."""
        from edge.admin import create_app
        from edge.admin.server import AdminServer, ensure_self_signed
        from edge.admin.services import AdminServices

        settings = self.cfg.admin
        host, port = host_port(listen)
        services = AdminServices(self.control, self.events, self.live, self.cfg, self.data_dir, self.status)
        try:  # its files under <data_dir>/admin (secret key, certificate), the certificate loaded
            tls: tuple[str, str] | None = None
            if settings.cert and settings.key:
                tls = (settings.cert, settings.key)
            elif settings.tls:
                cert, key = ensure_self_signed(self.data_dir / "admin")
                tls = (str(cert), str(key))
            server = AdminServer(create_app(services, settings), host, port, tls)
        except OSError as exc:
            raise ConfigError(f"admin: {one_line(exc)}") from None
        try:
            server.start()
        except OSError as exc:
            raise ConfigError(f"admin: cannot listen on {listen}: {_os_reason(exc)}") from None
        self.admin = server

    def status(self) -> dict[str, Any]:
        """The dashboard's numbers (the admin page's /api/status): cameras (all of them, running or
        not), outbox, broker, push channels, blue loop. Never raises: a number the event log cannot
        give now is 0."""
        cameras: dict[str, dict[str, Any]] = {}
        for entry in self.control.camera_entries():
            camera, loop = self.cameras.get(entry.name), self.loops.get(entry.name)
            if camera is not None and loop is not None:
                numbers = camera_numbers(camera, loop)
            else:
                numbers = idle_numbers(entry.cfg, "disabled" if not entry.cfg.enabled else "not running")
            cameras[entry.name] = {**numbers, "source": redact(entry.cfg.source), "origin": entry.origin}
        try:
            backlog = self.events.outbox_backlog()
        except StoreError:
            backlog = {}
        try:
            open_jobs, answered = len(self.events.open_jobs()), self.events.last_worker_answer()
        except StoreError:
            open_jobs, answered = 0, None
        connected = self.bus is not None and self.bus.connected.is_set()
        url = self.cfg.mqtt.url
        return {
            "version": __version__,
            "uptime_s": round(time.monotonic() - self._started_at, 1) if self._started_at else 0.0,
            "cameras": cameras,
            "outbox": outbox_numbers(self.events, self.journal),
            "broker": {"configured": bool(url), "url": redact(url) if url else None, "connected": connected},
            "push": {
                name: {
                    "kind": cfg.type,
                    "pending": sum(backlog.get(push_channel(name), {}).values()),
                    "confirmed_only": cfg.confirmed_only,
                }
                for name, cfg in self.cfg.push.items()
            },
            "blueloop": {"broker_connected": connected, "open_jobs": open_jobs, "last_answer_at": answered},
        }

    # -- helpers for the steps ---------------------------------------------------------------------

    def _load_detector(self) -> Detector:
        """The shared object detector, loaded on first need (also when a runtime rule first needs it)."""
        if self._detector is None:
            if not self._running:
                self.notifier.send("STATUS=starting: loading the object detector")
            self._detector = build_detector(self.cfg.model, self.base_dir)
        return self._detector

    def _end_orphaned_events(self) -> None:
        """Events a crash left open will never see their end: end them now, at their last update, and
        tell the consumers (no red loop runs yet, so every open event in the log is such an orphan)."""
        try:
            orphans = self.events.open_events()
            for ev in orphans:
                message = event_message(self.topics, ev, "end", ev.frame)
                self.events.event_transition(ev, "end", (message.topic, message.payload, message.message_id),
                                             sighting=False)  # fmt: skip
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

    def _announce_to_home_assistant(self) -> None:
        """Discovery configs are retained state: re-published on every connect. What is gone is removed
        from Home Assistant at once (device style: a `{"p": ...}` placeholder, also for what the last
        run announced; entity style: an empty config); the sweep migrates the other style's configs."""
        if self.bus is None or not self.cfg.mqtt.discovery:
            return
        mqtt_cfg = self.cfg.mqtt
        rules = self.control.all_rules()  # a rule the mode leaves out keeps its entity (OFF)
        loops = dict(self.loops)
        cameras = sorted(loops)
        components_file = self.data_dir / "ha_discovery.json"
        if self._components is None:
            self._components = load_announced(components_file)
        messages = discovery_configs(
            mqtt_cfg.discovery_style,
            mqtt_cfg.prefix,
            self.cfg.device.id,
            mqtt_cfg.discovery_prefix,
            cameras,
            {rule.name: [c for c in cameras if rule.applies_to(c)] for rule in rules},
            {name: list(loop.counts) for name, loop in loops.items()},
            __version__,
            rule_labels={rule.name: rule.cfg.label for rule in rules},
            lines={name: loop.lines_watched for name, loop in loops.items()},
            zones={name: loop.zones_watched for name, loop in loops.items()},
            modes=list(self.cfg.modes),
            announced_before=self._components,
        )  # fmt: skip
        announced = set()
        for config_topic, payload in messages:
            self.bus.set_state(config_topic, config_json(payload))
            announced.add(config_topic)
        for gone in self._announced - announced:  # a removed camera's or rule's entities, at once
            self.bus.set_state(gone, b"")
        self._announced, self._discovery = announced, messages
        components = components_of(messages)
        if components != self._components:
            self._components = components
            try:
                save_announced(components_file, components)
            except OSError as exc:
                log.warning("cannot keep the Home Assistant entities in %s: %s", components_file, exc)

    def _stale_discovery(self, stale: dict[str, bytes]) -> None:
        """Retained discovery configs of ours that are not current, from the sweep: the other style's
        are migrated (Home Assistant keeps the entities), those of removed entities cleared."""
        assert self.bus is not None
        mqtt_cfg = self.cfg.mqtt
        steps = discovery_cleanup(mqtt_cfg.discovery_style, mqtt_cfg.discovery_prefix, self.cfg.device.id,
                                  self._discovery, stale)  # fmt: skip
        migrated = sum(1 for _, payload, retain in steps if not retain)
        if migrated:
            log.info("Home Assistant discovery: moving %d config(s) to the %s style", migrated,
                     mqtt_cfg.discovery_style)  # fmt: skip
        self.bus.publish_once(steps)

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

    def _status_line(self) -> str:
        """systemd's STATUS= line (`systemctl status reflex-edge`): "3 cameras (2 online), broker
        connected". Reads no database: it must not wait on a busy event log."""
        online = sum(1 for camera in list(self.cameras.values()) if camera.stats.online)
        total = len(self.cameras)
        cameras = f"{total} camera{'' if total == 1 else 's'} ({online} online)"
        if self.bus is None:
            return f"{cameras}, no broker configured: alerts wait in the outbox"
        if self.bus.connected.is_set():
            return f"{cameras}, broker connected"
        return f"{cameras}, broker not connected: alerts wait in the outbox"

    def _spawn(self, name: str, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        self.threads.append(thread)
        thread.start()

    def _camera_status(self, camera: str, online: bool, reason: str) -> None:
        """The capture thread logs the change itself; here it only becomes retained state (not for a
        camera removed meanwhile: its status topic was cleared)."""
        if self.retained is not None and camera in self.cameras:
            self.retained.camera_status(camera, online)


def _os_reason(exc: OSError) -> str:
    """'address already in use', also from cheroot, which wraps the errno's text in a sentence of its
    own ("No socket could be created -- (('0.0.0.0', 80): [Errno 13] Permission denied)")."""
    found = re.search(r"\[Errno -?\d+\] ([^)]+)", str(exc))
    why = exc.strerror or (found.group(1) if found else str(exc))
    return why.strip().lower()


class _Wake:
    """The last red-loop sink: runs after the journal has committed a transition's outbox rows."""

    def __init__(self, wake: Callable[[], None]) -> None:
        self.wake = wake

    def handle(self, transition: Transition, frame: Frame) -> None:
        self.wake()

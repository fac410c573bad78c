"""`edge run`: the appliance's setup root. It builds the parts in clear steps and starts them.

One capture thread and one red-loop thread per camera, the bus, the push workers and housekeeping.
Runtime changes (switches, rules, asks) go through `self.control`; nothing in here implements them.
Cameras that die are retried by their capture thread and reported; nothing stops because one camera,
frame, command or database write failed. Alerts go to the event log and its outbox first; the MQTT
bus (when a broker is configured) and the push workers drain the outbox.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from edge import __version__
from edge.bus.commands import Commands
from edge.bus.discovery import discovery_filter, discovery_messages
from edge.bus.mqtt import Bus, BusConfigError
from edge.bus.push import PushWorker, start_push_workers
from edge.bus.state import RetainedState
from edge.capture import Camera
from edge.config import ConfigError, EdgeConfig
from edge.control import Control
from edge.delegate import Delegate
from edge.housekeeping import Housekeeping
from edge.instructions import Router
from edge.journal import Journal
from edge.live import LiveView
from edge.narrator import Narrator
from edge.outbox import MemoryQueue, Topics, event_message
from edge.pipeline import feed
from edge.redloop import Detector, RedLoop, Sink
from edge.reflex import build_detector
from edge.rules import Rule, Transition
from edge.store import DataLock, EventLog, StoreError
from edge.types import Frame
from edge.verify import Verifier
from edge.wiring import known_labels, load_models, needs_objects

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
        self.threads: list[threading.Thread] = []
        self.push_workers: list[PushWorker] = []
        self.live = LiveView()
        self._detector: Detector | None = None
        self.narrator: Narrator | None = None
        self.router: Router | None = None
        self._init_store()
        try:
            self._init_control()
            self._init_bus()
            self._init_delegate()
            self._init_verifier()
        except BaseException:
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
        )
        self.rules = self.control.load_rules(self.config_rules)
        if needs_objects(self.rules):
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
        sinks: list[Sink] = [self.journal] if self.retained is None else [self.journal, self.retained]
        sinks += [*self.observers, _Wake(self._wake_deliverers)]
        enrich = self.delegate if self.cfg.blueloop.llm and self.bus is not None else None
        self.narrator = Narrator(self.control, self.events, enrich=enrich)  # queues transitions, own thread
        sinks.append(self.narrator)
        for name, cam_cfg in self.cfg.cameras.items():
            if not cam_cfg.enabled:
                log.info("camera %s is disabled; not capturing", name)
                continue
            self.events.ensure_camera(name, cam_cfg.source, detect=cam_cfg.detect, alerts=cam_cfg.alerts)
            self.loops[name] = RedLoop(name, self.cfg, self.rules, self._detector, sinks, live=self.live,
                                       models=self.models)  # fmt: skip
            self.cameras[name] = Camera(name, cam_cfg, on_status=self._camera_status)
        self.control.attach(self.loops, self.retained)
        self.control.apply_stored_switches()

    def _init_instructions(self) -> None:
        """Asks in plain words: rules, questions, memory, control, delegated work."""
        zones = {name: dict(cam.zones) for name, cam in self.cfg.cameras.items() if cam.zones}
        self.router = Router(self.control, self.live, self.events, self.control.known_labels, zones)
        self.control.router = self.router
        self.router.narrator = self.narrator

    def _init_retained_state(self) -> None:
        if self.retained is None:
            return
        self._announce_to_home_assistant()
        for name, loop in self.loops.items():
            loop.on_counts = self.retained.counts
            self.retained.counts(name, loop.counts)
            self.retained.camera_status(name, False)
            for rule in self.rules:
                if rule.applies_to(name):
                    self.retained.rule_idle(name, rule.name)
        # A removed camera's retained topics (counts, JPEG, status) and removed entities are cleared.
        assert self.bus is not None
        self.bus.sweep(self.topics("#"))
        if self.cfg.mqtt.discovery:
            self.bus.sweep(discovery_filter(self.cfg.mqtt.discovery_prefix, self.cfg.device.id))

    def start(self) -> None:
        self._end_orphaned_events()
        self._init_cameras()
        self._init_instructions()
        self._init_retained_state()
        for name, camera in self.cameras.items():
            camera.start()
            self._spawn(f"redloop-{name}", feed, camera, self.loops[name], self.stop_event)
        self._drop_removed_push_channels()
        self.push_workers = start_push_workers(self.events, self.cfg, self.stop_event)
        self.delegate.start()
        if self.bus is not None:
            self.bus.start()
        chores = Housekeeping(self.cfg, self.events, self.journal, self.cameras, self.loops, self.retained)
        self._spawn("housekeeping", chores.run, self.stop_event)
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
        """Cameras, then red loops (open events end), the journal, the push workers, the bus (which
        says what a stopped appliance knows, then `offline`), and the event log last."""
        self.stop_event.set()
        for camera in self.cameras.values():
            camera.stop()
        for thread in self.threads:
            thread.join(timeout=5)
        if self.narrator is not None:
            self.narrator.stop()  # before the loops end their events: a stop is not "left after 12 s"
        for loop in self.loops.values():
            loop.finish()
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

    def _close_store(self) -> None:
        self.events.close()
        self.lock.release()

    # -- helpers for the steps ---------------------------------------------------------------------

    def _load_detector(self) -> Detector:
        """The shared object detector, loaded on first need (also when a runtime rule first needs it)."""
        if self._detector is None:
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
        """Discovery configs are retained state: re-published on every connect, stale ones cleared."""
        if self.bus is None or not self.cfg.mqtt.discovery:
            return
        rules = self.control.active_rules()
        cameras = sorted(self.loops)
        messages = discovery_messages(
            self.cfg.mqtt.prefix,
            self.cfg.device.id,
            self.cfg.mqtt.discovery_prefix,
            cameras,
            {rule.name: [c for c in cameras if rule.applies_to(c)] for rule in rules},
            {name: list(loop.counts) for name, loop in self.loops.items()},
            __version__,
            rule_labels={rule.name: rule.cfg.label for rule in rules},
        )
        for config_topic, payload in messages:
            self.bus.set_state(config_topic, json.dumps(payload, separators=(",", ":")))

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

    def _camera_status(self, camera: str, online: bool, reason: str) -> None:
        """The capture thread logs the change itself; here it only becomes retained state."""
        if self.retained is not None:
            self.retained.camera_status(camera, online)


class _Wake:
    """The last red-loop sink: runs after the journal has committed a transition's outbox rows."""

    def __init__(self, wake: Callable[[], None]) -> None:
        self.wake = wake

    def handle(self, transition: Transition, frame: Frame) -> None:
        self.wake()

"""The control surface: the one place where a running appliance changes.

Cameras, camera switches, rules, asks and answers, acknowledgements and test pushes. The MQTT
commands, the `edge` CLI, the admin page and the instruction router all call this; none of them
reaches into the red loops, the event log or the bus directly. The only call back up into the
appliance is the narrow `CameraHost` (start or stop one camera). So every change is checked the same
way (a one-line `ControlError` when it cannot be made, nothing half-applied), stored before it takes
effect where it must survive a restart, published the same way, and written to the audit log once it
is made: who (`by`: 'admin:alice', 'token:ci-script', 'mqtt', 'instruction') and from where
(`remote`, an address).

Rules and cameras carry an origin: `config` ones come from the YAML file (or a flag) and are
read-only here; `admin` and `instruction` rules and `admin` cameras are stored in the event log,
loaded at start-up and changeable at runtime.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from pydantic import TypeAdapter, ValidationError

from edge.bus.push import PushError, make_channel
from edge.config.models import CameraConfig, CameraName, PushChannelConfig, RuleConfig
from edge.journal import Journal
from edge.outbox import PAYLOAD_VERSION, SWITCHES, Topics, answer_message, new_ask_id, new_id, new_job_id
from edge.redact import redact
from edge.redloop import Detector, RedLoop
from edge.rules import AREA_LABELS, Rule
from edge.store import EventLog, OutboxMessage, StoreError
from edge.store.models import push_channel

if TYPE_CHECKING:
    from edge.delegate import Delegate

log = logging.getLogger("edge.control")

ORIGINS = ("config", "admin", "instruction")
ACK_TEXT = "Please wait a moment."
TEST_PUSH_TIMEOUT_S = 5.0
"""A test push answers within this (or the channel's own `timeout_s`, if shorter): someone waits."""
_CAMERA_NAME: TypeAdapter[str] = TypeAdapter(CameraName)


class ControlError(ValueError):
    """A change that cannot be made, in one line for the person or program that asked."""


@dataclass(frozen=True, slots=True)
class RuleEntry:
    rule: Rule
    origin: str


@dataclass(frozen=True, slots=True)
class CameraEntry:
    name: str
    cfg: CameraConfig
    origin: str
    """'config' (the YAML file or `--camera`: read-only here) or 'admin' (added at runtime, stored)."""


_Entry = TypeVar("_Entry", RuleEntry, CameraEntry)


class CameraHost(Protocol):
    """What the control surface needs of whoever runs the cameras (the appliance, a test rig)."""

    def start_camera(self, name: str, cfg: CameraConfig) -> None:
        """Capture `name` now, into a red loop of its own (registered where Control sees it in `loops`)."""
        ...

    def stop_camera(self, name: str) -> None:
        """Stop capturing `name` (no-op when it does not run); its open events end, its retained state
        is cleared."""
        ...


class AskRouter(Protocol):
    """What the control surface needs of the instruction router."""

    def route(self, text: str, camera: str | None) -> Any: ...
    def execute(self, ask_id: str, text: str, decision: Any, job_id: str | None) -> None: ...


class StateSink(Protocol):
    """What the control surface tells the retained MQTT state (bus.state.RetainedState fits)."""

    def switch(self, camera: str, switch: str, on: bool) -> None: ...
    def rule_idle(self, camera: str, rule: str) -> None: ...
    def rule_removed(self, camera: str, rule: str) -> None: ...


class Control:
    def __init__(
        self,
        events: EventLog,
        topics: Topics,
        journal: Journal,
        *,
        known_labels: set[str],
        push_channels: Mapping[str, PushChannelConfig] | Iterable[str] = (),
        detector: Callable[[], Detector | None] = lambda: None,
        notify: Callable[[], None] = lambda: None,
    ) -> None:
        """`push_channels`: the config's push channels (their settings let `test_push` send), or only
        their names; `detector` gives the shared object detector, loading it on first need (a rule
        for an object label added to a fire-only appliance); `notify` wakes the deliverers after an
        outbox write."""
        self.events = events
        self.topics = topics
        self.journal = journal
        self.known_labels = known_labels
        self.model_labels: set[str] = set()
        """Labels the extra models (config `extra_models`) know: what a `source: model` rule may ask for."""
        self.push_config: dict[str, PushChannelConfig] = (
            dict(push_channels) if isinstance(push_channels, Mapping) else {}
        )
        self.push_channels = set(push_channels)
        self._detector = detector
        self.notify = notify
        self.loops: dict[str, RedLoop] = {}
        self.state: StateSink | None = None
        self.on_rules_changed: Callable[[], None] | None = None
        """Called after any rule change (the appliance re-announces Home Assistant discovery)."""
        self.router: AskRouter | None = None
        """The instruction router (edge.instructions): decides what an ask is, then answers it through
        `answer()`. Without one, an ask gets its `ack` and is stored."""
        self.delegate: Delegate | None = None
        """The blue-loop client (edge.delegate), set by the appliance: `delegate.submit(...)`."""
        self.host: CameraHost | None = None
        """Starts and stops cameras added or removed at runtime (the appliance)."""
        self._rules: dict[str, RuleEntry] = {}
        self._cameras: dict[str, CameraEntry] = {}
        self._lock = threading.RLock()

    # -- setup -------------------------------------------------------------------------------------

    def load_rules(self, config_rules: list[Rule]) -> list[Rule]:
        """The config's rules, recorded with origin `config`, plus the stored runtime rules. A stored
        rule whose name a config rule now takes is skipped, said once."""
        with self._lock:
            for rule in config_rules:
                self.events.ensure_rule(rule.cfg, "config")
                self._rules[rule.name] = RuleEntry(rule, "config")
            try:
                stored = self.events.stored_rules()
            except StoreError as exc:
                log.error("cannot load the stored rules (admin page, instructions): %s", exc)
                stored = []
            for cfg, origin in stored:
                if cfg.name in self._rules:
                    log.warning(
                        "stored %s rule %r is shadowed by the config rule of that name", origin, cfg.name
                    )
                    continue
                problem = self._problem(cfg)
                if problem:
                    log.error("stored %s rule %r not loaded: %s", origin, cfg.name, problem)
                    continue
                self._rules[cfg.name] = RuleEntry(Rule(cfg), origin)
            return self.active_rules()

    def load_cameras(self, config_cameras: Mapping[str, CameraConfig]) -> list[CameraEntry]:
        """Record the config's cameras (origin `config`) and load the stored runtime ones; returns the
        runtime ones, for the appliance to start with the others. A stored camera whose name a config
        camera now takes is skipped, said once; one whose stored config no longer validates too."""
        with self._lock:
            for name, cfg in config_cameras.items():
                self._cameras[name] = CameraEntry(name, cfg, "config")
            try:
                stored = self.events.stored_cameras()
            except StoreError as exc:
                log.error("cannot load the cameras added on the admin page: %s", exc)
                stored = []
            loaded = []
            for name, data in stored:
                if name in self._cameras:
                    log.warning("stored admin camera %r is shadowed by the config camera of that name", name)
                    continue
                try:
                    cfg = CameraConfig.model_validate(data)
                except ValidationError as exc:
                    log.error("stored admin camera %r not loaded: %s", name, _first_error(exc))
                    continue
                entry = self._cameras[name] = CameraEntry(name, cfg, "admin")
                loaded.append(entry)
            return loaded

    def attach(self, loops: dict[str, RedLoop], state: StateSink | None) -> None:
        self.loops = loops
        self.state = state

    # -- cameras and switches ----------------------------------------------------------------------

    def cameras(self) -> list[str]:
        """The cameras capturing now (a disabled one is not among them)."""
        return sorted(self.loops)

    def camera_entries(self) -> list[CameraEntry]:
        """Every camera with its config and origin, running or not: the config's first, in their
        order, then the runtime ones in the order they were added. Without the lock (one copy of a
        dict is atomic): the dashboard asks every 2 s, also while a camera change waits for a
        stream to close."""
        return list(self._cameras.values())

    def add_camera(
        self, name: str, cfg: CameraConfig, *, by: str, remote: str | None = None, replace: bool = False
    ) -> CameraEntry:
        """Add (or, with `replace`, change) a runtime camera: stored first, then capturing at once
        (unless `enabled` is off), and started again after every restart."""
        try:
            _CAMERA_NAME.validate_python(name)
        except ValidationError as exc:
            raise ControlError(_first_error(exc)) from None
        with self._lock:
            existing = self._cameras.get(name)
            _check_addable("camera", name, existing, replace)
            host = self._camera_host()
            try:
                self.events.save_camera(name, cfg.model_dump(mode="json"))
            except StoreError as exc:
                raise ControlError(f"cannot store camera {name!r}: {exc}") from None
            if existing is not None:
                host.stop_camera(name)
            entry = self._cameras[name] = CameraEntry(name, cfg, "admin")
            try:
                if cfg.enabled:
                    host.start_camera(name, cfg)
            except Exception as exc:
                self._undo_camera(name, existing)
                why = " ".join(str(exc).split()) or type(exc).__name__
                raise ControlError(f"camera {name!r} cannot start: {why}") from None
            done = "changed" if existing else "added"
            log.info("camera %s %s (by %s): %s%s", name, done, by, redact(cfg.source),
                     "" if cfg.enabled else " (disabled)")  # fmt: skip
        detail = {"camera": name, "source": redact(cfg.source), "enabled": cfg.enabled, "fps": cfg.fps}
        self._audit(by, f"camera.{'change' if existing else 'add'}", detail, remote)
        return entry

    def _undo_camera(self, name: str, previous: CameraEntry | None) -> None:
        """A camera that would not start: put back what was there before (nothing, or its old config)."""
        try:
            if previous is None:
                del self._cameras[name]
                self.events.remove_camera(name)
                return
            self._cameras[name] = previous
            self.events.save_camera(name, previous.cfg.model_dump(mode="json"))
            if previous.cfg.enabled:
                self._camera_host().start_camera(name, previous.cfg)
        except Exception:
            log.exception("camera %s: undoing a failed change failed too", name)

    def remove_camera(self, name: str, *, by: str, remote: str | None = None) -> None:
        """Remove a runtime camera: it stops now, its open events end, it is not started again."""
        with self._lock:
            _check_removable("camera", name, self._cameras.get(name))
            host = self._camera_host()
            try:
                self.events.remove_camera(name)
            except StoreError as exc:
                raise ControlError(f"cannot remove camera {name!r}: {exc}") from None
            del self._cameras[name]
            host.stop_camera(name)
            log.info("camera %s removed (by %s)", name, by)
        self._audit(by, "camera.remove", {"camera": name}, remote)

    def _camera_host(self) -> CameraHost:
        if self.host is None:
            raise ControlError("cameras cannot be changed here: nothing runs them (edge run does)")
        return self.host

    def set_switch(
        self,
        camera: str,
        switch: str,
        on: bool,
        *,
        by: str = "mqtt",
        remote: str | None = None,
        persist: bool = True,
    ) -> None:
        """Flip a camera's `detect` or `alerts` switch. Stored first: a switch that cannot be stored
        is refused, not half-applied. `detect` off ends the camera's open events. `persist=False`
        (re-applying a stored switch at start-up) neither stores nor audits it."""
        if switch not in SWITCHES:
            raise ControlError(f"unknown switch {switch!r} (expected one of {', '.join(SWITCHES)})")
        loop = self.loops.get(camera)
        if loop is None:
            raise ControlError(f"unknown camera {camera!r}")
        with self._lock:
            if persist:
                try:
                    self.events.set_switch(camera, switch, on)
                except StoreError as exc:
                    raise ControlError(f"cannot store the switch: {exc}") from None
                log.info("camera %s: %s switched %s (by %s)", camera, switch, "on" if on else "off", by)
            if switch == "detect":
                loop.set_detect(on)
            else:
                loop.alerts_enabled = on
            if self.state is not None:
                self.state.switch(camera, switch, on)
        self.notify()
        if persist:
            self._audit(by, "switch", {"camera": camera, "switch": switch, "on": on}, remote)

    def apply_stored_switches(self, camera: str | None = None) -> None:
        """Switches set at runtime survive restarts: the stored state wins over the config's default.
        `camera`: only that camera's (one just started)."""
        for name, switches in self.events.switches().items():
            if name in self.loops and camera in (None, name):
                for switch, on in switches.items():
                    self.set_switch(name, switch, on, persist=False)

    # -- rules -------------------------------------------------------------------------------------

    def rules(self) -> list[RuleEntry]:
        with self._lock:
            return list(self._rules.values())

    def active_rules(self) -> list[Rule]:
        with self._lock:
            return [e.rule for e in self._rules.values()]

    def rule_source(self, name: str) -> str | None:
        """'FILE:LINE' of a config rule (None: a runtime rule, or a default rule of `watch`, which no
        line says)."""
        with self._lock:
            entry = self._rules.get(name)
        if entry is None:
            raise ControlError(f"no rule named {name!r}")
        return entry.rule.cfg.where() if entry.origin == "config" else None

    def add_rule(
        self,
        cfg: RuleConfig,
        origin: str,
        *,
        replace: bool = False,
        by: str = "admin",
        remote: str | None = None,
    ) -> Rule:
        """Add (or, with `replace`, change) a runtime rule; active on its cameras at once, stored so it
        survives restarts."""
        if origin not in ("admin", "instruction"):
            raise ControlError(f"rules of origin {origin!r} cannot be added at runtime")
        with self._lock:
            existing = self._rules.get(cfg.name)
            _check_addable("rule", cfg.name, existing, replace)
            problem = self._problem(cfg)
            if problem:
                raise ControlError(f"rule {cfg.name!r}: {problem}")
            rule = Rule(cfg)
            detector = self._detector_for(rule)
            try:
                self.events.ensure_rule(cfg, origin)
            except StoreError as exc:
                raise ControlError(f"cannot store rule {cfg.name!r}: {exc}") from None
            self._rules[cfg.name] = RuleEntry(rule, origin)
            self._apply(detector)
            if self.state is not None:
                for camera in self.loops:
                    if rule.applies_to(camera):
                        self.state.rule_idle(camera, rule.name)
            where = ", ".join(cfg.cameras) if cfg.cameras else "every camera"
            done = "changed" if existing else "added"
            log.info("rule %s %s (%s, by %s): %s on %s", cfg.name, done, origin, by, cfg.label, where)
        self._rules_changed()
        detail = {"rule": cfg.name, "label": cfg.label, "cameras": cfg.cameras, "origin": origin}
        self._audit(by, f"rule.{'change' if existing else 'add'}", detail, remote)
        return rule

    def preview_rule(self, text: str, camera: str | None) -> dict[str, Any]:
        """What the router would make of `text`, without doing it: its decision (the `edge explain`
        contract) plus, when that is a rule, `rule_config` (the RuleConfig as JSON) and `problem`
        (why it could not be added as it is; None when it could)."""
        decision = self._decide(text, camera)
        out: dict[str, Any] = {**decision.contract(), "rule_config": None, "problem": None}
        if decision.kind == "rule":
            cfg = self._rule_of(decision)
            out["rule_config"] = cfg.model_dump(mode="json")
            with self._lock:
                taken = cfg.name in self._rules
            out["problem"] = f"a rule named {cfg.name!r} exists already" if taken else self._problem(cfg)
        return out

    def add_rule_from_text(
        self, text: str, camera: str | None, *, by: str, remote: str | None = None
    ) -> Rule:
        """Add the rule a sentence describes ("alert me if someone is at the door after 22:00") as an
        `admin` rule, exactly as `preview_rule` showed it."""
        decision = self._decide(text, camera)
        if decision.kind != "rule":
            raise ControlError(f"that is not a rule: {decision.summary}")
        return self.add_rule(self._rule_of(decision), "admin", by=by, remote=remote)

    def _decide(self, text: str, camera: str | None) -> Any:
        if self.router is None:
            raise ControlError("sentences need the instruction router, which is not running here")
        if not text.strip():
            raise ControlError("the sentence is empty")
        if camera is not None and camera not in self.loops:
            raise ControlError(f"unknown camera {camera!r}")
        return self.router.route(text.strip(), camera)

    @staticmethod
    def _rule_of(decision: Any) -> RuleConfig:
        try:
            return decision.rule_config()
        except ValidationError as exc:
            raise ControlError(f"the rule made of that sentence is not valid: {_first_error(exc)}") from None

    def remove_rule(self, name: str, *, by: str = "admin", remote: str | None = None) -> None:
        """Remove a runtime rule; its open events end now (and say so on MQTT)."""
        with self._lock:
            entry = _check_removable("rule", name, self._rules.get(name))
            try:
                self.events.remove_rule(name)
            except StoreError as exc:
                raise ControlError(f"cannot remove rule {name!r}: {exc}") from None
            del self._rules[name]
            self._apply(None)
            if self.state is not None:
                for camera in self.loops:
                    if entry.rule.applies_to(camera):
                        self.state.rule_removed(camera, name)
            log.info("rule %s removed (by %s)", name, by)
        self._rules_changed()
        self._audit(by, "rule.remove", {"rule": name}, remote)

    def _problem(self, cfg: RuleConfig) -> str | None:
        if cfg.label not in self.known_labels:
            return f"unknown label {cfg.label!r}"
        if cfg.source != "any" and cfg.label not in AREA_LABELS:
            return f"source {cfg.source!r} is for fire and smoke only"
        if cfg.source == "model" and cfg.label not in self.model_labels:
            return f"no extra model has the label {cfg.label!r} (source: model)"
        for camera in cfg.cameras or []:
            if self.loops and camera not in self.loops:
                return f"unknown camera {camera!r}"
        for channel in cfg.push:
            if channel not in self.push_channels:
                return f"unknown push channel {channel!r}"
        return None

    def _detector_for(self, rule: Rule) -> Detector | None:
        if rule.label in AREA_LABELS:
            return None
        try:
            detector = self._detector()
        except Exception as exc:
            raise ControlError(f"the object detector is not available: {exc}") from None
        if detector is None:
            raise ControlError(f"label {rule.label!r} needs the object detector, which is not loaded")
        return detector

    def _apply(self, detector: Detector | None) -> None:
        rules = self.active_rules()
        self.journal.rules_changed(rules)
        for loop in self.loops.values():
            loop.set_rules(rules, detector)
        self.notify()

    def _rules_changed(self) -> None:
        if self.on_rules_changed is not None:
            try:
                self.on_rules_changed()
            except Exception:
                log.exception("after a rule change")

    # -- asks and answers ---------------------------------------------------------------------------

    def ask(
        self,
        ask_id: str | None,
        text: str,
        camera: str | None,
        origin: str,
        *,
        by: str | None = None,
        remote: str | None = None,
    ) -> str:
        """Store an instruction and acknowledge it at once; the router (when there is one) answers it.
        `by` defaults to the origin ('mqtt', 'cli'); what the instruction changes (a rule, a switch) is
        audited again as by 'instruction'."""
        ask_id = ask_id or new_ask_id()
        if camera is not None and camera not in self.loops:
            raise ControlError(f"unknown camera {camera!r}")
        try:
            new = self.events.add_instruction(ask_id, text, camera, origin)
        except StoreError as exc:
            raise ControlError(f"cannot store the instruction: {exc}") from None
        if not new:  # the same ask again (an MQTT QoS 1 re-delivery): it was answered already
            log.info("ask %s received again; already answered", ask_id)
            return ask_id
        router = self.router
        if router is None:
            self.answer(ask_id, "ack", ACK_TEXT)
        else:
            decision = router.route(text, camera)  # pure and quick: the ack still leaves at once
            job_id = new_job_id() if decision.kind == "delegate" else None
            self.answer(ask_id, "ack", ACK_TEXT, **({"job_id": job_id} if job_id else {}))
            router.execute(ask_id, text, decision, job_id)
        # Audited after the ack and a quick answer are queued: the audit row is one more write
        # transaction, and it must not stand between a person and "how many people are there?".
        self._audit(by or origin, "ask", {"id": ask_id, "text": text[:200], "camera": camera}, remote)
        return ask_id

    def answer(self, ask_id: str | None, kind: str, text: str, **extra: Any) -> None:
        """Queue an answer on …/answers through the outbox (QoS 1, survives an outage). When the
        event log cannot take it, it goes out from memory: an ask is always answered."""
        message = answer_message(self.topics, ask_id, kind, text, **extra)
        try:
            self.events.enqueue(message.kind, message.topic, message.payload, message.message_id)
        except StoreError as exc:
            log.error("answer to %s sent from memory (event log: %s)", ask_id, exc)
            self.journal.memory.put(message)
        self.notify()

    # -- events, push channels, the audit log -------------------------------------------------------

    def acknowledge(self, event_id: str, *, by: str, remote: str | None = None) -> bool:
        """Acknowledge an event; False when it was acknowledged already (the first one stays)."""
        try:
            done = self.events.ack_event(event_id, by)
            if not done and self.events.event(event_id) is None:
                raise ControlError(f"no event {event_id!r}")
        except StoreError as exc:
            raise ControlError(f"cannot acknowledge event {event_id!r}: {exc}") from None
        if done:
            log.info("event %s acknowledged (by %s)", event_id, by)
            self._audit(by, "event.ack", {"event": event_id}, remote)
        return done

    def test_push(self, channel: str, *, by: str, remote: str | None = None) -> str:
        """Send one test message on a push channel now, and wait for the receiver's answer (at most
        TEST_PUSH_TIMEOUT_S): the one-line result, or a ControlError saying why it failed. It goes
        straight out, not through the outbox: a test must not queue behind real alerts or be
        retried. The payload is shaped like an alert with `"test": true` and rule/label `test`."""
        cfg = self.push_config.get(channel)
        if cfg is None:
            known = ", ".join(sorted(self.push_config)) or "none configured"
            raise ControlError(f"unknown push channel {channel!r} (push channels: {known})")
        timeout = min(cfg.timeout_s, TEST_PUSH_TIMEOUT_S)
        sender = make_channel(channel, cfg.model_copy(update={"timeout_s": timeout}))
        now = time.time()
        payload = {
            "v": PAYLOAD_VERSION,
            "id": f"test-{new_id()}",
            "event_id": None,
            "rule": "test",
            "camera": self.topics.device,
            "label": "test",
            "severity": "info",
            "text": f"Test message from Reflex Edge {self.topics.device} (sent by {by})",
            "at": now,
            "phase": "confirmed",
            "test": True,
        }
        message = OutboxMessage(0, push_channel(channel), "alert", self.topics.alerts, json.dumps(payload),
                                payload["id"], now, 0)  # fmt: skip
        try:
            sender.send(message, None)
        except PushError as exc:
            log.warning("push %s: test message not delivered: %s", channel, exc)
            raise ControlError(f"push {channel}: {exc}") from None
        log.info("push %s: test message delivered (by %s)", channel, by)
        self._audit(by, "push.test", {"channel": channel}, remote)
        return f"test message delivered to {channel} ({sender.describe()})"

    def _audit(self, by: str, action: str, detail: dict[str, Any], remote: str | None) -> None:
        """One audit row for a change that was made. The change stands even when the row cannot be
        written (a full disk): that is said in the log instead."""
        try:
            self.events.audit(by, action, detail, remote)
        except StoreError as exc:
            log.error("audit log: %s %s by %s from %s not recorded: %s", action, detail, by, remote, exc)


def _check_addable(kind: str, name: str, existing: _Entry | None, replace: bool) -> None:
    """Refuse adding a rule or camera (`kind`) whose name is taken: always by a config-file one,
    by a runtime one unless this is a change (`replace`)."""
    if existing is not None and existing.origin == "config":
        raise ControlError(f"{kind} {name!r} comes from the config file; change it there")
    if existing is not None and not replace:
        raise ControlError(f"a {kind} named {name!r} exists already")


def _check_removable(kind: str, name: str, entry: _Entry | None) -> _Entry:
    """The runtime rule or camera (`kind`) to remove; refused when there is none or it comes from the
    config file."""
    if entry is None:
        raise ControlError(f"no {kind} named {name!r}")
    if entry.origin == "config":
        raise ControlError(f"{kind} {name!r} comes from the config file; remove it there")
    return entry


def _first_error(exc: ValidationError) -> str:
    """A pydantic error as one line: 'fps: Input should be greater than 0'."""
    first = exc.errors()[0]
    msg = str(first["msg"]).removeprefix("Value error, ")
    where = ".".join(str(p) for p in first["loc"])
    return f"{where}: {msg}" if where else msg

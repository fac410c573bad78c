"""The control surface: the one place where a running appliance changes.

Camera switches, rules, asks and answers. The MQTT commands, the `edge` CLI and, later, the admin
page and the instruction router all call this; none of them reaches into the red loops, the event
log or the bus directly, and nothing here calls back up into the appliance. So every change is
checked the same way (a one-line `ControlError` when it cannot be made, nothing half-applied),
stored before it takes effect where it must survive a restart, and published the same way.

Rules carry an origin: `config` rules come from the YAML file and are read-only here; `admin` and
`instruction` rules are stored in the event log, loaded at start-up and changeable at runtime.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from edge.config.models import RuleConfig
from edge.journal import Journal
from edge.outbox import SWITCHES, Topics, answer_message, new_ask_id, new_job_id
from edge.redloop import Detector, RedLoop
from edge.rules import AREA_LABELS, Rule
from edge.store import EventLog, StoreError

if TYPE_CHECKING:
    from edge.delegate import Delegate

log = logging.getLogger("edge.control")

ORIGINS = ("config", "admin", "instruction")
ACK_TEXT = "Please wait a moment."


class ControlError(ValueError):
    """A change that cannot be made, in one line for the person or program that asked."""


@dataclass(frozen=True, slots=True)
class RuleEntry:
    rule: Rule
    origin: str


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
        push_channels: Iterable[str] = (),
        detector: Callable[[], Detector | None] = lambda: None,
        notify: Callable[[], None] = lambda: None,
    ) -> None:
        """`detector` gives the shared object detector, loading it on first need (a rule for an
        object label added to a fire-only appliance); `notify` wakes the deliverers after an outbox
        write."""
        self.events = events
        self.topics = topics
        self.journal = journal
        self.known_labels = known_labels
        self.model_labels: set[str] = set()
        """Labels the extra models (config `extra_models`) know: what a `source: model` rule may ask for."""
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
        self._rules: dict[str, RuleEntry] = {}
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

    def attach(self, loops: dict[str, RedLoop], state: StateSink | None) -> None:
        self.loops = loops
        self.state = state

    # -- cameras and switches ----------------------------------------------------------------------

    def cameras(self) -> list[str]:
        return sorted(self.loops)

    def set_switch(
        self, camera: str, switch: str, on: bool, *, by: str = "mqtt", persist: bool = True
    ) -> None:
        """Flip a camera's `detect` or `alerts` switch. Stored first: a switch that cannot be stored
        is refused, not half-applied. `detect` off ends the camera's open events."""
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

    def apply_stored_switches(self) -> None:
        """Switches set at runtime survive restarts: the stored state wins over the config's default."""
        for camera, switches in self.events.switches().items():
            if camera in self.loops:
                for switch, on in switches.items():
                    self.set_switch(camera, switch, on, persist=False)

    # -- rules -------------------------------------------------------------------------------------

    def rules(self) -> list[RuleEntry]:
        with self._lock:
            return list(self._rules.values())

    def active_rules(self) -> list[Rule]:
        with self._lock:
            return [e.rule for e in self._rules.values()]

    def add_rule(self, cfg: RuleConfig, origin: str, *, replace: bool = False) -> Rule:
        """Add (or, with `replace`, change) a runtime rule; active on its cameras at once, stored so it
        survives restarts."""
        if origin not in ("admin", "instruction"):
            raise ControlError(f"rules of origin {origin!r} cannot be added at runtime")
        with self._lock:
            existing = self._rules.get(cfg.name)
            if existing is not None and existing.origin == "config":
                raise ControlError(f"rule {cfg.name!r} comes from the config file; change it there")
            if existing is not None and not replace:
                raise ControlError(f"a rule named {cfg.name!r} exists already")
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
            log.info("rule %s %s (%s): %s on %s", cfg.name, done, origin, cfg.label, where)
        self._rules_changed()
        return rule

    def remove_rule(self, name: str, *, by: str = "admin") -> None:
        """Remove a runtime rule; its open events end now (and say so on MQTT)."""
        with self._lock:
            entry = self._rules.get(name)
            if entry is None:
                raise ControlError(f"no rule named {name!r}")
            if entry.origin == "config":
                raise ControlError(f"rule {name!r} comes from the config file; remove it there")
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

    def ask(self, ask_id: str | None, text: str, camera: str | None, origin: str) -> str:
        """Store an instruction and acknowledge it at once; the router (when there is one) answers it."""
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
            return ask_id
        decision = router.route(text, camera)  # pure and quick: the ack still leaves at once
        job_id = new_job_id() if decision.kind == "delegate" else None
        self.answer(ask_id, "ack", ACK_TEXT, **({"job_id": job_id} if job_id else {}))
        router.execute(ask_id, text, decision, job_id)
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

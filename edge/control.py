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

The mode (arm/disarm, edge.modes) decides which of the rules are active: the red loops run only
those (`active_rules`), exactly as if the others were removed, and push channels the mode leaves out
get no new alerts (`push_allowed`, asked by the journal as it queues an alert). The mode is stored, so
it survives a restart, and every switch is audited like any other change.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from pydantic import TypeAdapter, ValidationError

from edge.bus.push import PushError, make_channel
from edge.config.models import (
    DEFAULT_MODES,
    CameraConfig,
    CameraName,
    ModeConfig,
    ModeSwitch,
    PushChannelConfig,
    RuleConfig,
)
from edge.journal import Journal
from edge.modes import ModeChange, ModeState, last_switch, push_in_mode, rule_in_mode
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
MODE_KEY = "mode"
"""The event log setting that holds the current mode."""
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
    def mode(self, name: str) -> None: ...


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
        modes: Mapping[str, ModeConfig] | None = None,
        mode: str | None = None,
    ) -> None:
        """`push_channels`: the config's push channels (their settings let `test_push` send), or only
        their names; `detector` gives the shared object detector, loading it on first need (a rule
        for an object label added to a fire-only appliance); `notify` wakes the deliverers after an
        outbox write. `modes`: the config's modes (default: home, away and night, each with every
        rule and channel); `mode`: the one on until `load_mode` finds a stored one (default: the
        first mode). The journal asks `push_allowed` before it queues an alert for a push channel."""
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
        self._modes: dict[str, ModeConfig] = (
            dict(modes) if modes else {name: ModeConfig() for name in DEFAULT_MODES}
        )
        self._mode = mode if mode is not None else next(iter(self._modes))
        if self._mode not in self._modes:
            raise ControlError(f"unknown mode {self._mode!r} (modes: {', '.join(self._modes)})")
        self._mode_set: dict[str, Any] = {"set_at": None, "set_by": "config"}
        """When the current mode was switched to, and by whom (the stored setting's)."""
        journal.push_allowed = self.push_allowed

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
            self.journal.rules_changed(self.all_rules())  # stored rules' push channels too
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
            if existing is not None:
                self._check_lines_kept(name, existing.cfg, cfg)
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
        detail = {"camera": name, "source": redact(cfg.source), "enabled": cfg.enabled, "fps": cfg.fps,
                  "lines": sorted(cfg.lines)}  # fmt: skip
        self._audit(by, f"camera.{'change' if existing else 'add'}", detail, remote)
        return entry

    def _check_lines_kept(self, name: str, old: CameraConfig, new: CameraConfig) -> None:
        """Refuse a camera change that drops a line of the camera a crossing rule on it watches."""
        for entry in self._rules.values():
            cfg = entry.rule.cfg
            gone = cfg.line is not None and cfg.line in old.lines and cfg.line not in new.lines
            if gone and (cfg.cameras is None or name in cfg.cameras):
                raise ControlError(
                    f"line {cfg.line!r} of camera {name!r} is watched by rule {cfg.name!r}; "
                    "change or remove the rule first"
                )

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
        """The rules in force now: those the current mode lets alert (what the red loops run)."""
        with self._lock:
            return [e.rule for e in self._rules.values() if rule_in_mode(e.rule.cfg, self._mode, self._modes)]

    def all_rules(self) -> list[Rule]:
        """Every rule, active in the current mode or not (Home Assistant keeps an entity for each)."""
        with self._lock:
            return [e.rule for e in self._rules.values()]

    def rule_modes(self, cfg: RuleConfig) -> list[str]:
        """The modes in which rule `cfg` alerts, in the modes' order (edge.modes.rule_in_mode)."""
        return [mode for mode in self._modes if rule_in_mode(cfg, mode, self._modes)]

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
        for mode in cfg.modes or []:
            if mode not in self._modes:
                return f"unknown mode {mode!r} (modes: {', '.join(self._modes)})"
        if cfg.line is not None:
            for name, entry in list(self._cameras.items()):
                if (cfg.cameras is None or name in cfg.cameras) and cfg.line not in entry.cfg.lines:
                    return f"camera {name!r} has no line {cfg.line!r}"
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

    # -- modes (arm/disarm) -------------------------------------------------------------------------

    @property
    def mode(self) -> str:
        """The mode on now. Read under the lock: `set_mode` names the new mode and then applies its
        rules (ending the events of rules it leaves out) in one locked step, so whoever sees the new
        mode also sees its rules in force."""
        with self._lock:
            return self._mode

    @property
    def modes(self) -> list[str]:
        """Every mode's name, in the config's order (home, away, night first)."""
        return list(self._modes)

    def push_allowed(self, channel: str) -> bool:
        """Whether push channel `channel` gets new alerts in the current mode (the journal asks)."""
        return push_in_mode(channel, self._mode, self._modes)

    def mode_state(self) -> ModeState:
        """The mode as the admin page, the API and "what mode are you in?" show it: the mode, every
        mode, when and by whom it was set, the rules that alert and those that do not, the push
        channels that deliver (None: all)."""
        with self._lock:
            active = {r.name for r in self.active_rules()}
            push = self._modes[self._mode].push
            return ModeState(
                mode=self._mode,
                modes=tuple(self._modes),
                set_at=self._mode_set["set_at"],
                set_by=self._mode_set["set_by"],
                active_rules=tuple(n for n in self._rules if n in active),
                inactive_rules=tuple(n for n in self._rules if n not in active),
                push=None if push is None else tuple(c for c in push if c in self.push_channels),
            )

    def load_mode(self, schedule: Sequence[ModeSwitch] = (), now: float | None = None) -> str:
        """The mode at start-up, before the rules are loaded: the stored one (the config's `mode` on
        the very first start, or when the stored mode is no longer configured, stored then). When the
        stored mode was set before the most recent scheduled switch (`schedule`), that switch was missed
        while the appliance was down and is applied now, by `schedule`; earlier missed switches are
        not replayed (edge.modes)."""
        now = time.time() if now is None else now
        try:
            stored = self.events.setting(MODE_KEY)
        except StoreError as exc:
            log.error("cannot read the stored mode; starting in %s: %s", self._mode, exc)
            return self._mode
        name = stored["value"] if stored is not None else None
        if stored is not None and name in self._modes:
            self._mode, self._mode_set = name, {"set_at": stored["set_at"], "set_by": stored["set_by"]}
        else:
            if stored is not None:
                log.warning("stored mode %r is not configured any more; starting in %s", name, self._mode)
            self._keep_mode(self._mode, "config")
        missed = last_switch(schedule, now)
        set_at = self._mode_set["set_at"] or now
        if missed is not None and set_at < missed[0] and missed[1].mode != self._mode:
            was = self._mode
            self._keep_mode(missed[1].mode, "schedule")
            self._mode = missed[1].mode
            log.info("mode %s: the scheduled switch at %s happened while stopped (was %s)", self._mode,
                     time.strftime("%a %H:%M", time.localtime(missed[0])), was)  # fmt: skip
            self._audit("schedule", "mode", {"mode": self._mode, "was": was, "missed_at": missed[0]}, None)
        else:
            log.debug("mode %s (set by %s)", self._mode, self._mode_set["set_by"])
        return self._mode

    def _store_mode(self, name: str, by: str) -> None:
        """Store the mode (raises StoreError) and remember when and by whom it was set."""
        self.events.set_setting(MODE_KEY, name, by)
        self._mode_set = {"set_at": time.time(), "set_by": by}

    def _keep_mode(self, name: str, by: str) -> None:
        """`_store_mode` at start-up, where a full disk must not stop the appliance: said instead."""
        try:
            self._store_mode(name, by)
        except StoreError as exc:
            self._mode_set = {"set_at": time.time(), "set_by": by}
            log.error("mode %s not stored (it holds until the next restart): %s", name, exc)

    def set_mode(self, name: str, *, by: str, remote: str | None = None) -> ModeChange:
        """Switch to mode `name`: stored first (a mode that cannot be stored is refused), then every
        red loop runs the new mode's rules at once (events of a rule that goes inactive end now, its
        Home Assistant sensor says OFF), the retained mode state is published and the switch audited.
        The mode already on changes nothing and is not audited. ControlError for an unknown mode."""
        if not isinstance(name, str) or name not in self._modes:
            shown = name if isinstance(name, str) else type(name).__name__
            raise ControlError(f"unknown mode {shown!r} (modes: {', '.join(self._modes)})")
        with self._lock:
            was = self._mode
            before = [r.name for r in self.active_rules()]
            if name == was:
                return self._change(name, was, before)
            after = [e.rule for e in self._rules.values() if rule_in_mode(e.rule.cfg, name, self._modes)]
            objects = [r for r in after if r.label not in AREA_LABELS and r.name not in before]
            detector = self._detector_for(objects[0]) if objects else None
            try:
                self._store_mode(name, by)
            except StoreError as exc:
                raise ControlError(f"cannot store the mode: {exc}") from None
            self._mode = name
            self._apply(detector)
            change = self._change(name, was, before)
            if self.state is not None:
                for camera in self.loops:
                    for rule in self.all_rules():
                        if rule.applies_to(camera) and rule.name in (*change.rules_on, *change.rules_off):
                            self.state.rule_idle(camera, rule.name)  # OFF: its events ended (or none yet)
                self.state.mode(name)
            push = "every push channel" if change.push is None else f"push: {', '.join(change.push) or '-'}"
            log.info("mode %s (was %s, by %s): %d rule(s) alert, %s", name, was, by, len(change.active), push)
        self._rules_changed()
        self._audit(by, "mode", {"mode": name, "was": was}, remote)
        return change

    def _change(self, name: str, was: str, before: list[str]) -> ModeChange:
        active = [r.name for r in self.active_rules()]
        push, push_was = self._modes[name].push, self._modes[was].push
        if not self.push_channels:  # nothing to say about channels that do not exist
            push = push_was = None
        return ModeChange(
            mode=name,
            was=was,
            rules_on=tuple(n for n in active if n not in before),
            rules_off=tuple(n for n in before if n not in active),
            active=tuple(active),
            push=None if push is None else tuple(push),
            push_was=None if push_was is None else tuple(push_was),
        )

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

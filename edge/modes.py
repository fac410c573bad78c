"""Modes (arm/disarm): which rules alert and which push channels deliver now, and the timed switches.

Exactly one mode is on at a time (`Control.mode`); every surface switches it through
`Control.set_mode`. What a mode means is decided here, in two pure functions, so the control surface,
the admin page and the tests agree on it:

- a rule alerts in a mode when its own `modes` lists that mode; without `modes`, a fire or smoke rule
  alerts in every mode (a fire does not wait for someone to arm the house), and any other rule when the
  mode's `rules` is None (every rule) or names it;
- a push channel delivers in a mode when the mode's `push` is None (every channel) or names it. MQTT
  always gets every alert of an active rule: it is the appliance's own record and Home Assistant's feed.

The schedule (`mode_schedule`) is a list of (mode, time of day, days). `ModeScheduler` looks at it every
second on a thread of its own, with an injectable clock, and switches (by `schedule`) when a scheduled
time has passed since it last looked. A switch missed while the process was down is not replayed,
with one exception handled at start-up by `Control.load_mode`: when the stored mode was set before the
most recent scheduled switch time, that switch is applied (the mode the schedule says is on now wins
over one switched to before it). Only the most recent one counts, so a week offline does not replay a
week of switches. Times are the device's local time; a scheduled time that does not exist on a day
(a daylight-saving gap) happens at the same wall-clock time an hour later, as Python's local time says.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from edge.config.models import DAYS, ModeConfig, ModeSwitch, RuleConfig
from edge.rules import AREA_LABELS

if TYPE_CHECKING:
    from edge.control import Control

log = logging.getLogger("edge.modes")

SCHEDULE_EVERY_S = 1.0
"""How often the scheduler looks at the clock: a scheduled switch happens within this of its time."""
LOOK_BACK_DAYS = 8
"""How far back `last_switch` searches: every weekday once, and a day more for the one just before."""


def rule_in_mode(cfg: RuleConfig, mode: str, modes: Mapping[str, ModeConfig]) -> bool:
    """Whether rule `cfg` alerts while `mode` is on (see the module docstring)."""
    if cfg.modes is not None:
        return mode in cfg.modes
    if cfg.label in AREA_LABELS:
        return True
    names = modes[mode].rules if mode in modes else None
    return names is None or cfg.name in names


def push_in_mode(channel: str, mode: str, modes: Mapping[str, ModeConfig]) -> bool:
    """Whether push channel `channel` delivers new alerts while `mode` is on."""
    names = modes[mode].push if mode in modes else None
    return names is None or channel in names


@dataclass(frozen=True, slots=True)
class ModeChange:
    """What a switch changed (or, with `mode == was`, that it changed nothing)."""

    mode: str
    was: str
    rules_on: tuple[str, ...]
    """Rules that alert from now on and did not before."""
    rules_off: tuple[str, ...]
    """Rules that alerted before and do not any more (their open events ended)."""
    active: tuple[str, ...]
    """Every rule that alerts in the new mode."""
    push: tuple[str, ...] | None
    """The push channels that deliver in the new mode (None: every channel)."""
    push_was: tuple[str, ...] | None = None
    """Those that delivered before."""

    @property
    def changed(self) -> bool:
        return self.mode != self.was

    def words(self) -> str:
        """The answer to the person who switched: what is on now and what changed."""
        if not self.changed:
            return f"Already in {self.mode} mode; nothing changed. {_alerting(self.active)}"
        said = [f"Switched to {self.mode} mode (was {self.was})."]
        if self.rules_on:
            said.append(f"Now alerting on {', '.join(self.rules_on)}.")
        if self.rules_off:
            said.append(f"No longer alerting on {', '.join(self.rules_off)}.")
        if not self.rules_on and not self.rules_off:
            said.append(f"The same rules alert as before. {_alerting(self.active)}")
        if self.push != self.push_was:
            to = "every push channel" if self.push is None else ", ".join(self.push) or "no push channel"
            said.append(f"Push alerts go to {to}.")
        return " ".join(said)

    def data(self) -> dict[str, Any]:
        """The change as JSON (the answer's `data`, the API's body)."""
        return {
            "mode": self.mode,
            "was": self.was,
            "changed": self.changed,
            "rules_on": list(self.rules_on),
            "rules_off": list(self.rules_off),
            "active_rules": list(self.active),
            "push": None if self.push is None else list(self.push),
        }


@dataclass(frozen=True, slots=True)
class ModeState:
    """The mode on now, as every surface shows it (`Control.mode_state`): the instruction router's
    answer to "what mode are you in?", the dashboard's Mode card and `/api/mode`."""

    mode: str
    modes: tuple[str, ...]
    """Every mode, in the config's order."""
    set_at: float | None
    """When it was switched to (epoch seconds; None: never switched, the config's)."""
    set_by: str
    """Who switched it: mqtt, instruction, schedule, user:NAME, token:NAME, config."""
    active_rules: tuple[str, ...]
    """The rules that alert in it."""
    inactive_rules: tuple[str, ...]
    """The rules it leaves out."""
    push: tuple[str, ...] | None
    """The push channels that deliver in it (None: every channel)."""

    @property
    def summary(self) -> str:
        """What the mode lets through, in one line: "Alerting on fire, door. Not alerting on yard.
        Push: siren." Made here only, so the answer, the page and the API say the same. When and by
        whom it was set is not in it: the page says that in the browser's own time."""
        said = [_alerting(self.active_rules)]
        if self.inactive_rules:
            said.append(f"Not alerting on {', '.join(self.inactive_rules)}.")
        if self.push is not None:
            said.append(f"Push: {', '.join(self.push) or 'none'}.")
        return " ".join(said)

    def data(self) -> dict[str, Any]:
        """The state as JSON (`/api/mode`, the answer's `data`), its summary included."""
        return {
            "mode": self.mode,
            "modes": list(self.modes),
            "set_at": self.set_at,
            "set_by": self.set_by,
            "active_rules": list(self.active_rules),
            "inactive_rules": list(self.inactive_rules),
            "push": None if self.push is None else list(self.push),
            "summary": self.summary,
        }


def _alerting(active: Iterable[str]) -> str:
    names = list(active)
    return f"Alerting on {', '.join(names)}." if names else "No rule alerts in this mode."


def last_switch(schedule: Sequence[ModeSwitch], now: float) -> tuple[float, ModeSwitch] | None:
    """The most recent scheduled switch at or before `now` (epoch seconds) and its time, in the
    device's local time; None without a schedule. Of two at the same moment the later listed wins."""
    if not schedule:
        return None
    today = datetime.fromtimestamp(now).date()
    best: tuple[float, ModeSwitch] | None = None
    for back in range(LOOK_BACK_DAYS):
        day = today - timedelta(days=back)
        weekday = DAYS[day.weekday()]
        for switch in schedule:
            if weekday not in switch.days:
                continue
            at = datetime.combine(day, switch.at).timestamp()
            if at <= now and (best is None or at >= best[0]):
                best = (at, switch)
        if best is not None:
            break  # the latest day with a switch holds the latest switch
    return best


class ModeScheduler:
    """Applies `mode_schedule`: switches the mode (by `schedule`) when a scheduled time has passed
    since the last look. `clock` gives epoch seconds (time.time; a test's own clock)."""

    def __init__(
        self,
        control: Control,
        schedule: Sequence[ModeSwitch],
        *,
        clock: Callable[[], float] = time.time,
        every_s: float = SCHEDULE_EVERY_S,
    ) -> None:
        self.control = control
        self.schedule = list(schedule)
        self.clock = clock
        self.every_s = every_s
        self._last = clock()
        """When it last looked: a switch at or before this was handled (or was before the start)."""

    def tick(self) -> ModeChange | None:
        """Look once: the change made, or None when no scheduled time passed since the last look (or
        the switch was refused, which is logged). A clock set back starts counting from its new time."""
        from edge.control import ControlError

        now, last = self.clock(), self._last
        self._last = now
        if now <= last:
            return None
        found = last_switch(self.schedule, now)
        if found is None or found[0] <= last:
            return None
        at, switch = found
        try:
            change = self.control.set_mode(switch.mode, by="schedule")
        except ControlError as exc:
            log.error("scheduled switch to %s at %s not made: %s", switch.mode, switch.at, exc)
            return None
        if change.changed:
            log.info(
                "scheduled switch at %s: %s", datetime.fromtimestamp(at).strftime("%a %H:%M"), switch.mode
            )
        return change

    def run(self, stop: threading.Event) -> None:
        """Until `stop`: a look every `every_s`. A bug in one look is logged, never the end of the
        schedule."""
        if not self.schedule:
            return
        while not stop.wait(self.every_s):
            try:
                self.tick()
            except Exception:
                log.exception("mode schedule: a look failed; trying again")

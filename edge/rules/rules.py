"""Admin rules: which tracked detections matter, where and when."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from edge.config.models import FireConfig, RuleConfig
from edge.rules.tracker import AREA_LABELS, Track, centre, feet

if TYPE_CHECKING:
    from edge.config.models import SmokeConfig

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

FIRE_REPEAT_S = 10.0
"""Fire keeps alerting while it burns: people must not read one message and forget it."""


def default_rules(watch: list[str], fire: FireConfig, smoke: SmokeConfig | None = None) -> list[RuleConfig]:
    """One rule per watched label for quick starts (`--watch fire,person`). Fire (critical) and smoke
    (warning: smoke is often steam, dust or fog) are verified on the device (`verify`): the alert goes
    out at once as provisional and is confirmed or retracted within seconds (edge.rules.events)."""
    rules = []
    for label in watch:
        if label in AREA_LABELS:
            is_fire = label == "fire"
            rules.append(
                RuleConfig(
                    name=label,
                    label=label,
                    min_score=fire.min_score if is_fire or smoke is None else smoke.min_score,
                    repeat_s=FIRE_REPEAT_S,
                    severity="critical" if is_fire else "warning",
                    text="Fire! Flames seen on {camera}" if is_fire else "Smoke seen on {camera}",
                    verify=True,
                )
            )
        else:
            rules.append(RuleConfig(name=label, label=label))
    return rules


def point_in_polygon(x: float, y: float, polygon: list[tuple[float, float]]) -> bool:
    inside = False
    n = len(polygon)
    for i in range(n):
        x1, y1 = polygon[i]
        x2, y2 = polygon[(i + 1) % n]
        if (y1 > y) != (y2 > y) and x < (x2 - x1) * (y - y1) / (y2 - y1) + x1:
            inside = not inside
    return inside


class Rule:
    """A validated RuleConfig with the checks the event machine asks of every tracked detection."""

    def __init__(self, cfg: RuleConfig) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.label = cfg.label

    @property
    def device_verified(self) -> bool:
        """Its alerts are verified on the device: `verify` on an area label (fire, smoke)."""
        return self.cfg.verify and self.label in AREA_LABELS

    def applies_to(self, camera: str) -> bool:
        return self.cfg.cameras is None or camera in self.cfg.cameras

    def in_schedule(self, now: datetime) -> bool:
        if not self.cfg.schedule:
            return True
        day, clock = DAY_NAMES[now.weekday()], now.time()
        for window in self.cfg.schedule:
            if day not in window.days:
                continue
            if window.start <= window.end:
                if window.start <= clock <= window.end:
                    return True
            elif clock >= window.start or clock <= window.end:  # overnight window, e.g. 22:00-06:00
                return True
        return False

    def matches(self, track: Track, frame_w: int, frame_h: int) -> bool:
        if track.label != self.label or track.score < self.cfg.min_score:
            return False
        if track.label in AREA_LABELS and track.source != self.cfg.source:
            return False  # fire/smoke: the region of the rule's source (edge.rules.tracker docstring)
        x1, y1, x2, y2 = track.box
        if (x2 - x1) * (y2 - y1) < self.cfg.min_area * frame_w * frame_h:
            return False
        if self.cfg.zone is None:
            return True
        # Objects stand where their feet are; a fire region counts where its centre is.
        if track.label in AREA_LABELS:
            cx, cy = centre(track.box)
            return point_in_polygon(cx / frame_w, cy / frame_h, self.cfg.zone)
        return point_in_polygon(*feet(track.box, frame_w, frame_h), self.cfg.zone)

    def alert_text(self, camera: str, direction: str | None = None) -> str:
        """The rule's text; a crossing rule's default names the line and the way it was crossed."""
        default = (
            "{Label} on {camera}"
            if self.cfg.line is None
            else "{Label} crossed {line} ({direction}) on {camera}"
        )
        template = self.cfg.text or default
        return template.format(camera=camera, label=self.label, Label=self.label.capitalize(), rule=self.name,
                               line=self.cfg.line or "", direction=direction or "")  # fmt: skip

    def alerts_on(self, direction: str, line_direction: str) -> bool:
        """A crossing rule: whether a crossing that way alerts (the rule's direction, else the line's)."""
        wanted = self.cfg.direction or line_direction
        return wanted in ("both", direction)

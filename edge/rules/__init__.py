"""Tracking, admin rules and the event state machine of the red loop."""

from edge.rules.events import EventMachine, Transition
from edge.rules.rules import Rule, default_rules
from edge.rules.tracker import AREA_LABELS, Track, Tracker

__all__ = ["AREA_LABELS", "EventMachine", "Rule", "Track", "Tracker", "Transition", "default_rules"]

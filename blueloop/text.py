"""Words for people: labels, counts and local times, shared by the templated reasoner outputs."""

from __future__ import annotations

from collections import Counter
from datetime import datetime

_PLURALS = {"person": "people", "mouse": "mice", "knife": "knives", "sheep": "sheep", "skis": "skis"}


def plural(label: str, n: int) -> str:
    if n == 1:
        return label
    if label in _PLURALS:
        return _PLURALS[label]
    if label.endswith(("s", "x", "ch", "sh")):
        return label + "es"
    return label + "s"


def counted(label: str, n: int) -> str:
    """1 -> "a person" / "an umbrella", 3 -> "3 people"."""
    if n == 1:
        return ("an " if label[:1] in "aeiou" else "a ") + label
    return f"{n} {plural(label, n)}"


def listing(parts: list[str]) -> str:
    if not parts:
        return ""
    if len(parts) == 1:
        return parts[0]
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def counts_phrase(counts: Counter[str] | dict[str, int]) -> str:
    """{"person": 2, "car": 1} -> "2 people and a car" (most numerous first)."""
    items = sorted(((k, v) for k, v in counts.items() if v > 0), key=lambda kv: (-kv[1], kv[0]))
    return listing([counted(k, v) for k, v in items])


def clock(epoch: float) -> str:
    """Local time of day, as the device's users read it."""
    return datetime.fromtimestamp(epoch).strftime("%H:%M:%S")


def duration(seconds: float) -> str:
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    m, s = divmod(s, 60)
    return f"{m} min {s} s" if s else f"{m} min"

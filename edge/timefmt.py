"""Times as people read them: the device's local time, the date only when it is not the same day."""

from __future__ import annotations

from datetime import datetime


def clock(epoch: float | None, day_of: float | None = None) -> str:
    """'10:02:03', or '2026-11-30 10:02:03' when `epoch` is not on the day of `day_of` (default: now);
    '-' for no time."""
    if epoch is None:
        return "-"
    moment = datetime.fromtimestamp(epoch)
    day = datetime.fromtimestamp(day_of).date() if day_of is not None else datetime.now().date()
    return moment.strftime("%H:%M:%S" if moment.date() == day else "%Y-%m-%d %H:%M:%S")

"""What the admin web app may use of the running appliance.

The web app reads the live state and the event log and changes things only through the control
surface, exactly like an MQTT command or an instruction. Bundling those handles in one dataclass
keeps the app factory free of globals: the appliance (or a test) builds one `AdminServices` and the
app keeps it in `app.extensions["reflex"]`; views reach it with `current_services()`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flask import current_app

if TYPE_CHECKING:
    from edge.config import EdgeConfig
    from edge.control import Control
    from edge.live import LiveView
    from edge.store import EventLog


@dataclass
class AdminServices:
    control: Control
    """Every change: rules, cameras, switches, asks, acknowledgements, test pushes."""
    events: EventLog
    """Reads: events, alerts, asks, audit log, users, tokens."""
    live: LiveView
    """Current views and keyframes of every camera."""
    cfg: EdgeConfig
    data_dir: Path
    status: Callable[[], dict[str, Any]]
    """The dashboard numbers: version, uptime_s, cameras, outbox, broker, push, blueloop
    (`Appliance.status()`; served as /api/status)."""


def current_services() -> AdminServices:
    """The AdminServices of the app serving this request."""
    return current_app.extensions["reflex"]

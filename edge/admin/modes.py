"""The mode (arm/disarm) on the admin page: the dashboard's selector and `/api/mode`.

Both go through `Control.set_mode`, like the MQTT `mode/set` command, an instruction and the schedule,
so a switch here is stored, applied to every camera at once and audited (who: `user:NAME` for a
session, `token:NAME` for an API token). Switching is for admins; anyone logged in may read the mode.
The selector is a plain form (CSRF field, works without JavaScript): POST, then back to the dashboard
with what changed, or why it was refused, as a flashed line.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, flash, jsonify, redirect, request, url_for

from edge.admin.auth import admin_required, login_required_any
from edge.admin.pages import actor, current_services, json_body, one_line, remote_addr
from edge.control import ControlError

bp = Blueprint("modes", __name__)


@bp.post("/mode")
@admin_required
def switch() -> Any:
    """The dashboard's mode selector."""
    name = request.form.get("mode", "")
    try:
        change = current_services().control.set_mode(name, by=actor(), remote=remote_addr())
    except ControlError as exc:
        flash(one_line(str(exc)), "error")
    else:
        flash(change.words(), "ok")
    return redirect(url_for("dashboard.index") + "#mode")


@bp.get("/api/mode")
@login_required_any
def api_mode() -> Any:
    return jsonify(current_services().control.mode_state().data())


@bp.put("/api/mode")
@admin_required
def api_set_mode() -> Any:
    """Switch the mode: {"mode": "away"}. The answer is what changed plus the mode's state; an unknown
    mode is a 400 naming the modes."""
    name = json_body().get("mode")
    if not isinstance(name, str) or not name:
        raise ControlError('give the mode as {"mode": "NAME"}')
    control = current_services().control
    change = control.set_mode(name, by=actor(), remote=remote_addr())
    return jsonify({**change.data(), "state": control.mode_state().data()})

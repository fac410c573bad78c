"""Cameras: list, add, change, remove, and "test connection" before saving.

Every change goes through the control surface (`add_camera` / `remove_camera`), which refuses
config-file cameras and stores runtime ones so they come back after a restart. A runtime camera's lines
(tripwires) are drawn on its picture in the form (cameras.js) and posted as one JSON field, `lines`
(CameraConfig.lines); a config-file camera's page shows them read-only. Sources are shown
with any URL password masked; a form sent back with the masked source keeps the stored one, so
editing a camera never needs its password again and the page never shows it.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import cv2
from flask import Blueprint, Response, jsonify, render_template, request
from flask.typing import ResponseReturnValue
from pydantic import ValidationError

from edge.admin.auth import admin_required, login_required_any
from edge.admin.dashboard import latest_keyframe
from edge.admin.draw import encode
from edge.admin.pages import (
    actor,
    api_refusal,
    current_services,
    form_post,
    is_admin,
    json_body,
    json_error,
    json_field,
    one_line,
    remote_addr,
)
from edge.config.models import LINE_AREA_LABELS, CameraConfig
from edge.control import CameraEntry, ControlError
from edge.redact import redact

bp = Blueprint("cameras", __name__)

TEST_TIMEOUT_S = 10.0
TEST_MAX_WIDTH = 640


def _entries() -> dict[str, CameraEntry]:
    return {e.name: e for e in current_services().control.camera_entries()}


def camera_row(entry: CameraEntry, status: dict[str, Any]) -> dict[str, Any]:
    """One camera as the list and `GET /api/cameras` show it: no password, ever."""
    cfg = entry.cfg
    state = status.get("cameras", {}).get(entry.name, {})
    return {
        "name": entry.name,
        "source": redact(cfg.source),
        "origin": entry.origin,
        "enabled": cfg.enabled,
        "loop": cfg.loop,
        "fps": cfg.fps,
        "detect": cfg.detect,
        "alerts": cfg.alerts,
        "zones": {name: [list(p) for p in poly] for name, poly in cfg.zones.items()},
        "lines": {name: line.model_dump(mode="json") for name, line in cfg.lines.items()},
        "online": bool(state.get("online", False)),
        "reason": state.get("reason", ""),
    }


def _unmask(source: str, existing: CameraEntry | None) -> str:
    """The stored source when the form sent back its masked form (the password is never shown)."""
    if existing is not None and "***" in source and source == redact(existing.cfg.source):
        return existing.cfg.source
    return source


def _config(values: dict[str, Any], existing: CameraEntry | None) -> CameraConfig:
    """A CameraConfig from the form/API values on top of the existing camera's: the form sets source,
    fps, enabled and loop, and an edit keeps every other field (zones, switches...) as it was.
    ValidationError when a value is wrong."""
    base = existing.cfg.model_dump(mode="json") if existing is not None else {}
    for key, value in values.items():
        if key == "name":
            continue
        base[key] = value
    if "source" in base and isinstance(base["source"], str):
        base["source"] = _unmask(base["source"].strip(), existing)
    return CameraConfig.model_validate(base)


def _form_values() -> dict[str, Any]:
    form = request.form
    values: dict[str, Any] = {
        "source": form.get("source", ""),
        "enabled": form.get("enabled") in ("on", "1", "true"),
        "loop": form.get("loop") in ("on", "1", "true"),
    }
    fps = form.get("fps", "").strip()
    try:
        values["fps"] = float(fps) if fps else None
    except ValueError:
        raise ValueError(f"fps: {fps!r} is not a number") from None
    if "lines" in form:  # a form without the field (an old page) keeps the camera's lines
        values["lines"] = _lines_field(form.get("lines", ""))
    return values


def _lines_field(text: str) -> dict[str, Any]:
    """The form's `lines` field: {name: {points, direction, labels}} as JSON ("" : no lines)."""
    return json_field(text, dict, "lines: not a JSON object of lines") or {}


def _lines_json(form: dict[str, Any]) -> str:
    """The form's lines as the hidden field holds them (a row's dict, or the posted text kept)."""
    lines = form.get("lines")
    if isinstance(lines, str):
        return lines
    return json.dumps(lines or {})


def _render(
    error: str | None = None,
    editing: str | None = None,
    form: dict | None = None,
    readonly: dict[str, Any] | None = None,
) -> str:
    services = current_services()
    status = services.status()
    entries = _entries()
    rows = [camera_row(e, status) for e in entries.values()]  # config cameras first, as the control has them
    if form is None and editing and editing in entries:
        form = {**camera_row(entries[editing], status), "name": editing}
    form = form or {"enabled": True}
    labels = sorted(set(services.control.known_labels) - LINE_AREA_LABELS)
    return render_template(
        "cameras.html",
        rows=rows,
        error=error,
        editing=editing,
        form=form,
        lines_json=_lines_json(form),
        line_labels=labels,
        readonly=readonly,
        readonly_lines_json=json.dumps(readonly["lines"]) if readonly else "",
        admin=is_admin(),
    )


@bp.get("/cameras")
@login_required_any
def index() -> str:
    return _render()


@bp.get("/cameras/<name>")
@login_required_any
def edit(name: str) -> ResponseReturnValue:
    entry = _entries().get(name)
    if entry is None:
        return _render(error=f"no camera named {name!r}"), 404
    if entry.origin == "config" or not is_admin():  # read-only, lines and all (a config one: in the file)
        return _render(readonly=camera_row(entry, current_services().status()))
    return _render(editing=name)


@bp.post("/cameras")
@login_required_any
@admin_required
def save() -> ResponseReturnValue:
    """The form: add, or change when `replace` is set (the edit form)."""
    name = request.form.get("name", "").strip()
    replace = request.form.get("replace") == "1"
    editing = name if replace else None
    shown = {**request.form.to_dict(), "enabled": "enabled" in request.form, "loop": "loop" in request.form}

    def change() -> None:
        cfg = _config(_form_values(), _entries().get(name) if replace else None)
        current_services().control.add_camera(name, cfg, by=actor(), remote=remote_addr(), replace=replace)

    return form_post(change, _render, "cameras.index", editing=editing, form=shown)


@bp.post("/cameras/<name>/delete")
@login_required_any
@admin_required
def delete(name: str) -> ResponseReturnValue:
    return form_post(
        lambda: current_services().control.remove_camera(name, by=actor(), remote=remote_addr()),
        _render,
        "cameras.index",
    )


# -- API ----------------------------------------------------------------------------------------------


@bp.get("/api/cameras")
@login_required_any
def api_list() -> Response:
    status = current_services().status()
    return jsonify({"cameras": [camera_row(e, status) for e in _entries().values()]})


def _api_save(name: str, body: dict[str, Any], replace: bool) -> ResponseReturnValue:
    entries = _entries()
    existing = entries.get(name) if replace else None
    if replace and existing is None:
        return json_error(f"no camera named {name!r}", 404)
    try:
        cfg = _config(body, existing)
        current_services().control.add_camera(name, cfg, by=actor(), remote=remote_addr(), replace=replace)
    except (ValidationError, ControlError) as exc:
        return api_refusal(exc)
    entry = _entries().get(name)
    row = camera_row(entry, current_services().status()) if entry is not None else {"name": name}
    return jsonify(row), 200 if replace else 201


@bp.post("/api/cameras")
@login_required_any
@admin_required
def api_add() -> ResponseReturnValue:
    body = json_body()
    name = body.get("name")
    if not isinstance(name, str) or not name:
        return json_error("a camera needs a name")
    return _api_save(name, body, replace=False)


@bp.put("/api/cameras/<name>")
@login_required_any
@admin_required
def api_put(name: str) -> ResponseReturnValue:
    body = json_body()
    if body.get("name", name) != name:
        return json_error("a camera cannot be renamed; add it under the new name and remove the old one")
    return _api_save(name, body, replace=True)


@bp.delete("/api/cameras/<name>")
@login_required_any
@admin_required
def api_delete(name: str) -> ResponseReturnValue:
    try:
        current_services().control.remove_camera(name, by=actor(), remote=remote_addr())
    except ControlError as exc:
        status = 404 if str(exc).startswith("no camera") or "unknown camera" in str(exc) else 400
        return json_error(str(exc), status)
    return jsonify({"ok": True})


@bp.put("/api/cameras/<name>/switches/<switch>")
@login_required_any
@admin_required
def api_switch(name: str, switch: str) -> ResponseReturnValue:
    """Pause or resume a camera's detection or alerts (the same switch as MQTT's …/detect/set);
    `{"on": true|false}`."""
    on = json_body().get("on")
    if not isinstance(on, bool):
        return json_error('expected {"on": true} or {"on": false}')
    try:
        current_services().control.set_switch(name, switch, on, by=actor(), remote=remote_addr())
    except ControlError as exc:
        return json_error(str(exc), 404 if "unknown camera" in str(exc) else 400)
    return jsonify({"camera": name, "switch": switch, "on": on})


@bp.post("/api/cameras/test")
@login_required_any
@admin_required
def api_test() -> ResponseReturnValue:
    """Grab one frame from a source (before it is saved) and show it, or say exactly why not.

    Admin only: it makes the appliance open a file or URL of the caller's choosing."""
    from edge.capture import CaptureError, grab_frame

    body = json_body()
    source = body.get("source")
    if not isinstance(source, str) or not source.strip():
        return json_error("give a source to test")
    existing = _entries().get(body.get("camera") or body.get("name") or "")
    source = _unmask(source.strip(), existing)
    try:
        image = grab_frame(source, timeout_s=TEST_TIMEOUT_S)
    except CaptureError as exc:
        return jsonify({"ok": False, "error": one_line(str(exc))})
    height, width = image.shape[:2]
    shown = image
    if width > TEST_MAX_WIDTH:
        shown = cv2.resize(image, (TEST_MAX_WIDTH, max(1, height * TEST_MAX_WIDTH // width)))
    data = base64.b64encode(encode(shown)).decode()
    return jsonify({"ok": True, "width": width, "height": height, "jpeg": f"data:image/jpeg;base64,{data}"})


@bp.get("/api/cameras/<name>/snapshot.jpg")
@login_required_any
def api_snapshot(name: str) -> ResponseReturnValue:
    """The camera's latest keyframe without boxes (what the zone editor draws on)."""
    live = current_services().live
    keyframe = latest_keyframe(live, name) if name in live.keyframes else None
    if keyframe is None:
        return json_error(f"no picture from camera {name!r} yet", 404)
    response = Response(encode(keyframe.image), mimetype="image/jpeg")
    response.headers["Cache-Control"] = "no-store"
    return response

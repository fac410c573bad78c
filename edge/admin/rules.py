"""Rules: the list, the edit form (zone drawn on the camera's picture, or a line of the camera and a
direction for a crossing rule), and rules from a sentence. The list says in which modes each rule alerts
(Control.rule_modes) and whether it alerts now (the mode on now).

Rules from the config file are shown read-only with the file and line they come from; runtime
rules (origin `admin` or `instruction`) are changed through the control surface, which checks a rule
the same way whether it comes from this page, MQTT or an instruction. The form is a plain HTML form
post (it works without script); only the zone editor and "From a sentence" need the page's script.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Response, jsonify, render_template, request
from flask.typing import ResponseReturnValue
from pydantic import ValidationError

from edge.admin.auth import admin_required, login_required_any
from edge.admin.pages import (
    actor,
    api_refusal,
    control_status,
    current_services,
    form_post,
    is_admin,
    json_body,
    json_error,
    json_field,
    remote_addr,
    sentence,
)
from edge.config.models import RuleConfig
from edge.control import ControlError

bp = Blueprint("rules", __name__)

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
SEVERITIES = ("info", "warning", "critical")
NUMBERS = ("min_score", "min_area", "dwell_s", "cooldown_s", "repeat_s")
DIRECTIONS = ("in", "out", "both")


def rule_row(entry: Any) -> dict[str, Any]:
    """One rule as the list and `GET /api/rules` show it: its config plus where it comes from."""
    control = current_services().control
    cfg = entry.rule.cfg.model_dump(mode="json")
    source = control.rule_source(entry.rule.name) if entry.origin == "config" else None
    active_in = control.rule_modes(entry.rule.cfg)
    return {**cfg, "origin": entry.origin, "source": source, "active_in": active_in,
            "active": control.mode in active_in}  # fmt: skip


def _rules() -> dict[str, Any]:
    return {e.rule.name: e for e in current_services().control.rules()}


def _number(form: Any, key: str) -> float | None:
    text = (form.get(key) or "").strip()
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{key}: {text!r} is not a number") from None


def form_to_config(form: Any) -> dict[str, Any]:
    """The form's fields as RuleConfig values (ValueError for what cannot even be read)."""
    values: dict[str, Any] = {"name": (form.get("name") or "").strip(), "label": form.get("label") or ""}
    camera = (form.get("camera") or "").strip()
    values["cameras"] = [c.strip() for c in camera.split(",") if c.strip()] or None
    for key in NUMBERS:
        number = _number(form, key)
        if number is not None:
            values[key] = number
    zone = (form.get("zone") or "").strip()
    points = json_field(zone, list, "zone: not a list of points")
    if points is not None:
        values["zone"] = points or None
    line = (form.get("line") or "").strip()
    if line:  # a crossing rule: the line (and direction) instead of a zone
        values["line"] = line
        direction = (form.get("direction") or "").strip()
        if direction:
            if direction not in DIRECTIONS:
                raise ValueError(f"direction: {direction!r} is not one of {', '.join(DIRECTIONS)}")
            values["direction"] = direction
    zone_name = (form.get("zone_name") or "").strip()
    if zone_name and values.get("zone") and zone == (form.get("zone_was") or "").strip():
        values["zone_name"] = zone_name  # the zone is still the named camera zone it was copied from
    days = [d for d in form.getlist("days") if d in DAYS]
    start, end = (form.get("start") or "").strip(), (form.get("end") or "").strip()
    schedule: list[dict[str, Any]] = []
    if days or start or end:
        schedule.append({"days": days or list(DAYS), "start": start or "00:00", "end": end or "23:59:59"})
    rest = (form.get("schedule_rest") or "").strip()
    if rest:
        try:
            schedule += [s for s in json.loads(rest) if isinstance(s, dict)]
        except (ValueError, TypeError):
            raise ValueError("schedule: the other schedule windows could not be read") from None
    values["schedule"] = schedule or None
    severity = form.get("severity") or "warning"
    values["severity"] = severity
    values["verify"] = form.get("verify") in ("on", "1", "true")
    values["push"] = form.getlist("push")
    text = (form.get("text") or "").strip()
    values["text"] = text or None
    source = form.get("source") or "any"
    if source != "any":
        values["source"] = source
    return values


def _form_of(cfg: dict[str, Any]) -> dict[str, Any]:
    """A rule config as the form shows it (first schedule window in the fields, the rest kept)."""
    form = dict(cfg)
    form["camera"] = ",".join(cfg.get("cameras") or [])
    form["zone"] = json.dumps(cfg.get("zone")) if cfg.get("zone") else ""
    form["zone_was"] = form["zone"]
    form["line"] = cfg.get("line") or ""
    form["direction"] = cfg.get("direction") or ""
    schedule = cfg.get("schedule") or []
    first = schedule[0] if schedule else {}
    form["days"] = first.get("days", [])
    form["start"] = (first.get("start") or "")[:5]
    form["end"] = (first.get("end") or "")[:8]
    form["schedule_rest"] = json.dumps(schedule[1:]) if len(schedule) > 1 else ""
    return form


def _camera_options(rules: dict[str, Any]) -> list[str]:
    """The cameras, plus any several-camera value an existing rule has (kept when it is edited)."""
    cameras = list(current_services().control.cameras())
    options = list(cameras)
    for entry in rules.values():
        several = entry.rule.cfg.cameras or []
        if len(several) > 1:
            value = ",".join(several)
            if value not in options:
                options.append(value)
    return options


def _line_options() -> list[tuple[str, list[str]]]:
    """Every line name of the cameras, with the cameras that have it (the form's line choice; the page's
    script offers only the chosen camera's)."""
    found: dict[str, list[str]] = {}
    for entry in current_services().control.camera_entries():
        for name in entry.cfg.lines:
            found.setdefault(name, []).append(entry.name)
    return sorted(found.items())


def _render(
    *,
    error: str | None = None,
    editing: str | None = None,
    form: dict[str, Any] | None = None,
    readonly: dict[str, Any] | None = None,
) -> str:
    control = current_services().control
    rules = _rules()
    rows = [rule_row(e) for e in sorted(rules.values(), key=lambda e: e.rule.name)]
    return render_template(
        "rules.html",
        rows=rows,
        error=error,
        editing=editing,
        form=form or {"label": "person", "severity": "warning", "min_score": 0.5},
        readonly=readonly,
        labels=sorted(control.known_labels),
        cameras=control.cameras(),
        camera_options=_camera_options(rules),
        line_options=_line_options(),
        directions=DIRECTIONS,
        mode=control.mode,
        channels=sorted(control.push_channels),
        days=DAYS,
        severities=SEVERITIES,
        admin=is_admin(),
    )


@bp.get("/rules")
@login_required_any
def index() -> str:
    return _render()


@bp.get("/rules/<name>")
@login_required_any
def edit(name: str) -> ResponseReturnValue:
    entry = _rules().get(name)
    if entry is None:
        return _render(error=f"no rule named {name!r}"), 404
    row = rule_row(entry)
    if entry.origin == "config":
        return _render(readonly=row)
    return _render(editing=name, form=_form_of(row))


@bp.post("/rules")
@login_required_any
@admin_required
def save() -> ResponseReturnValue:
    """The form: add, or change when `replace` is set (the edit form). Errors are shown next to the
    form with what was typed kept."""
    replace = request.form.get("replace") == "1"
    shown = {
        **request.form.to_dict(),
        "days": request.form.getlist("days"),
        "push": request.form.getlist("push"),
    }
    shown["verify"] = "verify" in request.form
    editing = shown.get("name") if replace else None

    def change() -> None:
        cfg = RuleConfig.model_validate(form_to_config(request.form))
        current_services().control.add_rule(cfg, "admin", replace=replace, by=actor(), remote=remote_addr())

    return form_post(change, _render, "rules.index", editing=editing, form=shown)


@bp.post("/rules/<name>/delete")
@login_required_any
@admin_required
def delete(name: str) -> ResponseReturnValue:
    return form_post(
        lambda: current_services().control.remove_rule(name, by=actor(), remote=remote_addr()),
        _render,
        "rules.index",
    )


# -- API ----------------------------------------------------------------------------------------------


@bp.get("/api/rules")
@login_required_any
def api_list() -> Response:
    rules = sorted(_rules().values(), key=lambda e: e.rule.name)
    return jsonify({"rules": [rule_row(e) for e in rules]})


def _api_save(body: dict[str, Any], replace: bool) -> ResponseReturnValue:
    try:
        cfg = RuleConfig.model_validate(body)
        current_services().control.add_rule(cfg, "admin", replace=replace, by=actor(), remote=remote_addr())
    except (ValidationError, ControlError) as exc:
        return api_refusal(exc)
    entry = _rules().get(cfg.name)
    return jsonify(rule_row(entry) if entry is not None else cfg.model_dump(mode="json")), (
        200 if replace else 201
    )


@bp.post("/api/rules")
@login_required_any
@admin_required
def api_add() -> ResponseReturnValue:
    return _api_save(json_body(), replace=False)


@bp.put("/api/rules/<name>")
@login_required_any
@admin_required
def api_put(name: str) -> ResponseReturnValue:
    body = {"name": name, **json_body()}
    if body["name"] != name:
        return json_error("a rule cannot be renamed; add it under the new name and remove the old one")
    if name not in _rules():
        return json_error(f"no rule named {name!r}", 404)
    return _api_save(body, replace=True)


@bp.delete("/api/rules/<name>")
@login_required_any
@admin_required
def api_delete(name: str) -> ResponseReturnValue:
    try:
        current_services().control.remove_rule(name, by=actor(), remote=remote_addr())
    except ControlError as exc:
        return json_error(str(exc), 404 if str(exc).startswith("no rule") else 400)
    return jsonify({"ok": True})


def _sentence() -> tuple[str, str | None]:
    return sentence(json_body(), "type a sentence first, e.g. 'alert me if a person enters'")


@bp.post("/api/rules/preview")
@login_required_any
def api_preview() -> ResponseReturnValue:
    """What the router would make of a sentence, changing nothing (so a viewer may try it too)."""
    try:
        text, camera = _sentence()
        return jsonify(current_services().control.preview_rule(text, camera))
    except ControlError as exc:
        return json_error(str(exc))


@bp.post("/api/rules/from-text")
@login_required_any
@admin_required
def api_from_text() -> ResponseReturnValue:
    """Save the rule a sentence compiles to (the same compile the preview showed)."""
    try:
        text, camera = _sentence()
        rule = current_services().control.add_rule_from_text(text, camera, by=actor(), remote=remote_addr())
    except ControlError as exc:
        return json_error(str(exc), control_status(str(exc)))
    name = getattr(getattr(rule, "cfg", rule), "name", None)
    entry = _rules().get(name) if isinstance(name, str) else None
    return jsonify(rule_row(entry) if entry is not None else {"ok": True}), 201

"""Events: the filtered list, one event with its snapshot, alerts and blue-loop result, and
acknowledging it.

Snapshots are the JPEG files the journal wrote when the event alerted, with the event's box already
drawn on the full frame (edge.store.snapshots.render_jpeg): they are served as they are, or scaled
down for the list's thumbnails. A blue-loop report is HTML from another machine, so it is served in a
CSP sandbox (no script, its own origin): it can show, never act as this page.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, jsonify, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from edge.admin.auth import admin_required, login_required_any
from edge.admin.draw import thumbnail
from edge.admin.pages import actor, current_services, is_admin, json_error, one_line, remote_addr
from edge.control import ControlError

bp = Blueprint("events", __name__)

STATES = ("open", "ended", "acked", "unacked")
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
THUMB_MAX = 640
REPORT_CSP = "sandbox; default-src 'none'; img-src data:; style-src 'unsafe-inline'; frame-ancestors 'none'"
"""A blue-loop report may style itself but never run script or load anything."""


def parse_time(value: str | None, what: str) -> float | None:
    """Epoch seconds from '1733100000', '2024-12-02T10:00' (the appliance's local time) or ''."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise ValueError(f"{what}: {text!r} is neither epoch seconds nor a date and time") from None


def _filters(args: Any) -> dict[str, Any]:
    """The query's filters as EventLog.events() keywords (ValueError with a one-line reason)."""
    state = (args.get("state") or "").strip() or None
    if state is not None and state not in STATES:
        raise ValueError(f"state: expected one of {', '.join(STATES)}")
    limit_text = (args.get("limit") or "").strip()
    try:
        limit = int(limit_text) if limit_text else DEFAULT_LIMIT
    except ValueError:
        raise ValueError(f"limit: {limit_text!r} is not a whole number") from None
    return {
        "camera": (args.get("camera") or "").strip() or None,
        "label": (args.get("label") or "").strip() or None,
        "since": parse_time(args.get("since"), "since"),
        "until": parse_time(args.get("until"), "until"),
        "state": state,
        "limit": max(1, min(limit, MAX_LIMIT)),
    }


def event_json(ev: dict[str, Any]) -> dict[str, Any]:
    """An event as the API gives it: the stored row plus links to its pictures."""
    out = dict(ev)
    out["snapshot_url"] = url_for("events.api_snapshot", event_id=ev["id"]) if ev.get("snapshot") else None
    return out


def blue_result(ev: dict[str, Any]) -> dict[str, Any] | None:
    """The blue-loop job of an event, as the page shows it: status, description, report link."""
    job = ev.get("job") or ev.get("result")
    if not job:
        jobs = ev.get("jobs") or []
        job = jobs[-1] if jobs else None
    if not isinstance(job, dict):
        return None
    data = job.get("result_data")
    description = job.get("result_text") or job.get("text") or job.get("description")
    if not description and isinstance(data, dict):
        description = data.get("description") or data.get("text")
    has_report = bool(job.get("html_path"))
    return {
        "job_id": job.get("job_id"),
        "kind": job.get("kind"),
        "status": job.get("status"),
        "description": description,
        "error": job.get("error"),
        "data": data,
        "report_url": url_for("events.report", event_id=ev["id"]) if has_report else None,
    }


@bp.get("/events")
@login_required_any
def index() -> ResponseReturnValue:
    error = None
    try:
        filters = _filters(request.args)
    except ValueError as exc:
        error, filters = one_line(str(exc)), {"limit": DEFAULT_LIMIT}
    rows = current_services().events.events(**filters)
    control = current_services().control
    labels = sorted({r["label"] for r in rows} | set(control.known_labels))
    return render_template(
        "events.html",
        rows=rows,
        error=error,
        args=request.args,
        cameras=control.cameras(),
        labels=labels,
        states=STATES,
        admin=is_admin(),
    ), (400 if error else 200)


@bp.get("/events/<event_id>")
@login_required_any
def detail(event_id: str) -> ResponseReturnValue:
    ev = current_services().events.event(event_id)
    if ev is None:
        return render_template("events_detail.html", ev=None, error=f"no event {event_id!r}"), 404
    return render_template("events_detail.html", ev=ev, result=blue_result(ev), error=None, admin=is_admin())


@bp.post("/events/<event_id>/ack")
@login_required_any
@admin_required
def ack(event_id: str) -> ResponseReturnValue:
    try:
        current_services().control.acknowledge(event_id, by=actor(), remote=remote_addr())
    except ControlError as exc:
        ev = current_services().events.event(event_id)
        page = render_template(
            "events_detail.html",
            ev=ev,
            result=blue_result(ev) if ev else None,
            error=one_line(str(exc)),
            admin=is_admin(),
        )
        return page, 404 if ev is None else 400
    return redirect(url_for("events.detail", event_id=event_id))


def _file_under(root: Path, relative: str) -> Path | None:
    """`root / relative` if it stays inside `root` and exists (a stored path is never trusted)."""
    path = (root / relative).resolve()
    try:
        path.relative_to(root.resolve())
    except ValueError:
        return None
    return path if path.is_file() else None


@bp.get("/events/<event_id>/report")
@login_required_any
def report(event_id: str) -> ResponseReturnValue:
    ev = current_services().events.event(event_id)
    result = blue_result(ev) if ev else None
    job = (ev or {}).get("job") or ((ev or {}).get("jobs") or [None])[-1] or {}
    rel = job.get("html_path") if isinstance(job, dict) else None
    path = _file_under(current_services().data_dir, rel) if rel else None
    if result is None or path is None:
        return json_error(f"event {event_id!r} has no blue-loop report", 404)
    response = Response(path.read_bytes(), mimetype="text/html")
    response.headers["Content-Security-Policy"] = REPORT_CSP
    return response


# -- API ----------------------------------------------------------------------------------------------


@bp.get("/api/events")
@login_required_any
def api_list() -> ResponseReturnValue:
    try:
        filters = _filters(request.args)
    except ValueError as exc:
        return json_error(str(exc))
    return jsonify({"events": [event_json(ev) for ev in current_services().events.events(**filters)]})


@bp.get("/api/events/<event_id>")
@login_required_any
def api_event(event_id: str) -> ResponseReturnValue:
    ev = current_services().events.event(event_id)
    if ev is None:
        return json_error(f"no event {event_id!r}", 404)
    return jsonify({**event_json(ev), "blue_result": blue_result(ev)})


@bp.post("/api/events/<event_id>/ack")
@login_required_any
@admin_required
def api_ack(event_id: str) -> ResponseReturnValue:
    if current_services().events.event(event_id) is None:
        return json_error(f"no event {event_id!r}", 404)
    try:
        done = current_services().control.acknowledge(event_id, by=actor(), remote=remote_addr())
    except ControlError as exc:
        return json_error(str(exc))
    event = event_json(current_services().events.event(event_id) or {"id": event_id})
    return jsonify({"ok": True, "acknowledged": done, "event": event})


@bp.get("/api/events/<event_id>/snapshot.jpg")
@login_required_any
def api_snapshot(event_id: str) -> ResponseReturnValue:
    """The event's snapshot (box drawn); `?w=N` scales it down to at most N pixels wide."""
    events = current_services().events
    ev = events.event(event_id)
    if ev is None:
        return json_error(f"no event {event_id!r}", 404)
    path = _file_under(events.snapshot_dir, ev["snapshot"]) if ev.get("snapshot") else None
    if path is None:
        return json_error(f"event {event_id!r} has no snapshot", 404)
    jpeg = path.read_bytes()
    width = request.args.get("w", "")
    if width.isdigit() and 16 <= int(width) <= THUMB_MAX:
        try:
            jpeg = thumbnail(jpeg, int(width))
        except ValueError as exc:
            return json_error(f"event {event_id!r}: snapshot unreadable: {exc}", 404)
    response = Response(jpeg, mimetype="image/jpeg")
    response.headers["Cache-Control"] = "private, max-age=60"  # a later alert may give a new one
    response.headers["Last-Modified"] = time.strftime(
        "%a, %d %b %Y %H:%M:%S GMT", time.gmtime(path.stat().st_mtime)
    )
    return response

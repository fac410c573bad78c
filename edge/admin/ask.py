"""Ask: type an instruction, see its answers arrive without reloading (server-sent events).

An ask from this page goes through the control surface exactly like one on MQTT: it is stored,
acknowledged at once ("Please wait a moment.") and answered by the router, the blue loop or the
narrator. The answers are the outbox rows of the ask, so the stream only reads the event log: it
polls `EventLog.ask(id)` (a short read transaction that never blocks a writer, and no lock a red
loop waits on), sends each new answer once, in order, and ends after the final one. A commentary
ask ("narrate the lobby") never has a last answer: its stream stays open until the client leaves.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Response, jsonify, render_template, request
from flask.typing import ResponseReturnValue

from edge.admin.auth import admin_required, login_required_any
from edge.admin.pages import (
    actor,
    current_services,
    is_admin,
    json_body,
    json_error,
    remote_addr,
    sentence,
    stopping,
)
from edge.control import ControlError
from edge.store import StoreError

log = logging.getLogger("edge.admin")

bp = Blueprint("ask", __name__)

FINAL_KINDS = ("answer", "result", "error")
POLL_S = 0.25
KEEPALIVE_S = 10.0
RECENT = 20
RETRY_MS = 3000


def is_commentary(answers: list[dict[str, Any]]) -> bool:
    """Whether the ask started a running commentary or a scheduled digest: its answers go on."""
    for answer in answers:
        if answer.get("kind") == "commentary":
            return True
        data = answer.get("data")
        if (
            answer.get("kind") == "answer"
            and isinstance(data, dict)
            and ("narrating" in data or "every_s" in data)
        ):
            return True
    return False


def finished(answers: list[dict[str, Any]]) -> bool:
    """The ask has had its final answer and nothing more will come."""
    return any(a.get("kind") in FINAL_KINDS for a in answers) and not is_commentary(answers)


def sse(answer: dict[str, Any], number: int) -> str:
    """One answer as one SSE event; `id` lets a reconnecting EventSource skip what it has."""
    return f"id: {number}\ndata: {json.dumps(answer, default=str, separators=(',', ':'))}\n\n"


@bp.get("/ask")
@login_required_any
def index() -> str:
    try:
        recent = current_services().events.asks(limit=RECENT)
    except StoreError as exc:
        log.error("admin page: cannot read recent asks: %s", exc)
        recent = []
    return render_template(
        "ask.html", recent=recent, cameras=current_services().control.cameras(), admin=is_admin()
    )


@bp.post("/api/asks")
@login_required_any
@admin_required
def api_ask() -> ResponseReturnValue:
    try:
        text, camera = sentence(json_body(), "type an instruction or a question first")
        ask_id = current_services().control.ask(None, text, camera, "admin", by=actor(), remote=remote_addr())
    except ControlError as exc:
        return json_error(str(exc))
    return jsonify({"id": ask_id}), 201


@bp.get("/api/asks")
@login_required_any
def api_asks() -> ResponseReturnValue:
    limit = request.args.get("limit", "")
    n = int(limit) if limit.isdigit() else 50
    return jsonify({"asks": current_services().events.asks(limit=max(1, min(n, 500)))})


@bp.get("/api/asks/<ask_id>")
@login_required_any
def api_get(ask_id: str) -> ResponseReturnValue:
    ask = current_services().events.ask(ask_id)
    if ask is None:
        return json_error(f"no ask {ask_id!r}", 404)
    return jsonify(ask)


@bp.get("/api/asks/<ask_id>/stream")
@login_required_any
def api_stream(ask_id: str) -> ResponseReturnValue:
    """`text/event-stream` of the ask's answers: `data: {answer}` each, in order; a comment line every
    KEEPALIVE_S so proxies and the browser keep the connection; `event: end` after the final answer."""
    events = current_services().events
    if events.ask(ask_id) is None:
        return json_error(f"no ask {ask_id!r}", 404)
    last = request.headers.get("Last-Event-ID", "")
    start = int(last) if last.isdigit() else 0
    stop = stopping()

    def stream() -> Iterator[str]:
        sent = start
        beat = time.monotonic()
        yield f"retry: {RETRY_MS}\n\n"
        while not stop.is_set():
            try:
                ask = events.ask(ask_id)
            except StoreError as exc:  # a busy or failing disk: try again on the next poll
                log.warning("ask %s stream: %s", ask_id, exc)
                ask = None
            answers = (ask or {}).get("answers") or []
            if len(answers) > sent:
                for number, answer in enumerate(answers[sent:], start=sent + 1):
                    yield sse(answer, number)
                sent = len(answers)
                beat = time.monotonic()
            if ask is not None and finished(answers):
                yield "event: end\ndata: {}\n\n"
                return
            if time.monotonic() - beat >= KEEPALIVE_S:
                yield ": keep-alive\n\n"
                beat = time.monotonic()
            stop.wait(POLL_S)

    response = Response(stream(), mimetype="text/event-stream")
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Accel-Buffering"] = "no"
    return response

"""Errors as the admin page answers them: one line, in the shape the caller reads.

Under /api every error is `{"error": "one line"}` with its 4xx/5xx status; pages get error.html. A
`ControlError` (a change the control surface refused) is the caller's mistake, so 400 (409 for
"exists already"), never a 500; a pydantic `ValidationError` (a bad JSON body) is a 400 naming the
field; a `StoreError` (disk full, database locked) is 503: try again later.
"""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify, render_template, request
from pydantic import ValidationError
from werkzeug.exceptions import HTTPException

from edge.admin.accounts import AccountError
from edge.control import ControlError
from edge.store import StoreError

log = logging.getLogger("edge.admin")


def one_line(message: object) -> str:
    text = " ".join(str(message).split())
    return text[:500] or "error"


def error_response(status: int, message: object, headers: dict[str, str] | None = None) -> Response:
    """The error in the caller's shape: JSON for /api (and for clients that ask for JSON), a page
    otherwise."""
    text = one_line(message)
    path = request.path
    api = path.startswith("/api/") or path == "/api"
    wants_json = api or request.accept_mimetypes.best == "application/json"
    if wants_json:
        response = jsonify(error=text)
    else:
        response = Response(render_template("error.html", status=status, message=text), mimetype="text/html")
    response.status_code = status
    if status == 401 and wants_json:
        response.headers["WWW-Authenticate"] = 'Bearer realm="reflex-edge"'
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


def validation_message(exc: ValidationError) -> str:
    """A pydantic error in one line: 'field: why; field: why' (the first three)."""
    parts = []
    for err in exc.errors()[:3]:
        where = ".".join(str(p) for p in err.get("loc", ())) or "value"
        why = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{where}: {why}")
    return "; ".join(parts) or "invalid value"


def control_status(message: object) -> int:
    """A refused change is 400; a name taken already is 409."""
    return 409 if "exists already" in str(message) else 400


def init_app(app: Flask) -> None:
    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        keep = {k: v for k, v in exc.get_headers() if k.lower() not in ("content-type", "content-length")}
        return error_response(exc.code or 500, exc.description or exc.name, keep)

    @app.errorhandler(ControlError)
    def control_error(exc: ControlError) -> Response:
        return error_response(control_status(exc), exc)

    @app.errorhandler(AccountError)
    def account_error(exc: AccountError) -> Response:
        return error_response(exc.status, exc)

    @app.errorhandler(ValidationError)
    def invalid(exc: ValidationError) -> Response:
        return error_response(400, validation_message(exc))

    @app.errorhandler(StoreError)
    def store_error(exc: StoreError) -> Response:
        log.error("admin page: event log: %s", exc)
        return error_response(503, f"the event log cannot do that now: {exc}")

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:
        log.exception("admin page: %s %s failed", request.method, request.path)
        return error_response(500, "internal error (the appliance log has the details)")

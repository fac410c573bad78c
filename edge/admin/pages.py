"""The appliance's own pages (dashboard, cameras, rules, events, ask) and what they share.

Each area is a blueprint module (`bp`) that `create_app` mounts by name. They take their shared
helpers from here (some defined in auth, errors and services and gathered here). There is no module
state: everything a view needs comes from `current_app` (the `AdminServices` the factory stored)
and the request.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from flask import current_app, jsonify, redirect, request, url_for
from flask.typing import ResponseReturnValue
from pydantic import ValidationError

from edge.admin.auth import actor, remote_addr
from edge.admin.errors import control_status, one_line, validation_message
from edge.admin.server import STOPPING_KEY
from edge.admin.services import current_services
from edge.control import ControlError

__all__ = [  # shared by the area modules: defined in auth, errors and services, gathered here
    "actor",
    "control_status",
    "current_services",
    "one_line",
    "remote_addr",
    "validation_message",
]

T = TypeVar("T", list, dict)


def stopping() -> threading.Event:
    """Set when the server stops (AdminServer.stop): long streams (MJPEG, SSE) watch it and end at
    once instead of holding a server thread until their client leaves."""
    return current_app.extensions.setdefault(STOPPING_KEY, threading.Event())


def is_admin() -> bool:
    """Whether the current user may change things (templates hide forms a viewer cannot use)."""
    from flask_login import current_user

    role = getattr(current_user, "role", None)
    return role == "admin" or bool(getattr(current_user, "is_admin", False))


def json_error(message: str, status: int = 400) -> ResponseReturnValue:
    """The API's one error shape: {"error": "one line"} with a 4xx status."""
    return jsonify({"error": one_line(message)}), status


def json_body() -> dict[str, Any]:
    """The request's JSON object ({} when there is none; a non-object is refused by the caller)."""
    data = request.get_json(silent=True)
    return data if isinstance(data, dict) else {}


def json_field(text: str, kind: type[T], error: str) -> T | None:
    """A form field holding JSON that the page's script writes (a rule's zone, a camera's lines): the
    value, None when the field is blank; ValueError(`error`) when it is not JSON of the `kind` wanted,
    so the form is shown again saying so (form_post)."""
    if not text.strip():
        return None
    try:
        value = json.loads(text)
    except ValueError:
        raise ValueError(error) from None
    if not isinstance(value, kind):
        raise ValueError(error)
    return value


def form_post(
    change: Callable[[], object], render: Callable[..., str], done: str, **shown: Any
) -> ResponseReturnValue:
    """A form post that changes something: make the change and go to the endpoint `done`, or show
    the page again (`render(error=..., **shown)`, 400) saying in one line why it was refused.
    `shown`: what `render` needs to keep the form as it was sent (editing=, form=)."""
    try:
        change()
    except ValidationError as exc:
        return render(error=validation_message(exc), **shown), 400
    except (ControlError, ValueError) as exc:
        return render(error=one_line(str(exc)), **shown), 400
    return redirect(url_for(done))


def api_refusal(exc: ValidationError | ControlError) -> ResponseReturnValue:
    """A change the API refused: a wrong value (ValidationError) is 400 naming the field; a change
    the control surface refused is 400, or 409 for a name taken already."""
    if isinstance(exc, ValidationError):
        return json_error(validation_message(exc))
    return json_error(str(exc), control_status(str(exc)))


def sentence(body: dict[str, Any], missing: str) -> tuple[str, str | None]:
    """The typed text (stripped) and the optional camera of a JSON body (the ask box, a rule from a
    sentence); a ControlError when they are not usable, `missing` when there is no text."""
    text = body.get("text")
    camera = body.get("camera") or None
    if not isinstance(text, str) or not text.strip():
        raise ControlError(missing)
    if camera is not None and not isinstance(camera, str):
        raise ControlError("camera: expected a camera name")
    return text.strip(), camera

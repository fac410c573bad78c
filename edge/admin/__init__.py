"""The admin web page: a Flask app the appliance serves itself (edge run --admin HOST:PORT).

`create_app(services, settings)` builds the app: one blueprint per area, Flask-Login sessions and
bearer API tokens, CSRF on every state-changing request that carries a session, security headers on
every response, and one-line errors (`{"error": "..."}` for /api). There are no module globals
holding state: everything lives on the app (`app.extensions["reflex"]` is the `AdminServices`), so
two apps (two tests) never share anything.

Each area module (edge/admin/dashboard.py, ...) defines a module-level `bp = Blueprint(...)` and
decorates every view with `edge.admin.auth.login_required_any` (and `admin_required` for changes and
admin-only reads); a guard refuses any route without that marker, so a forgotten decorator fails
closed. `edge.admin.services.current_services()` gives the `AdminServices` of the current app;
`edge.admin.auth.actor()` / `remote_addr()` give the `by=` / `remote=` of control calls. A
`ControlError` raised in a view becomes a 400 (409 for "exists already") in the right shape.
"""

from __future__ import annotations

import importlib
import logging
import threading
from datetime import timedelta
from typing import TYPE_CHECKING

from flask import Flask

from edge.admin.services import AdminServices
from edge.timefmt import clock

if TYPE_CHECKING:
    from edge.config.models import AdminConfig

log = logging.getLogger("edge.admin")

BLUEPRINTS = ("auth", "settings", "dashboard", "modes", "cameras", "rules", "events", "ask")
"""Modules of edge.admin that each define `bp`, one per area of the page."""


def create_app(services: AdminServices, settings: AdminConfig, *, testing: bool = False) -> Flask:
    """The admin app over one running appliance (or a test's real parts).

    `settings.tls` (or an own `cert`) makes the session cookie Secure; `settings.session_hours` is the
    session lifetime; the secret key is kept in `<data_dir>/admin/secret_key` so sessions survive a
    restart."""
    from edge.admin import auth, errors
    from edge.admin.server import STOPPING_KEY, load_secret_key

    app = Flask(__name__, static_folder="static", template_folder="templates")
    tls = bool(settings.tls or settings.cert)
    app.config.update(
        SECRET_KEY=load_secret_key(services.data_dir / "admin"),
        TESTING=testing,
        SESSION_COOKIE_NAME="reflex_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=tls,
        PERMANENT_SESSION_LIFETIME=timedelta(hours=settings.session_hours),
        SESSION_REFRESH_EACH_REQUEST=False,
        # Flask-WTF: the token is bound to the session; checked by auth.guard, not on every POST, so
        # that bearer-token requests (no cookie, nothing to forge) go through.
        WTF_CSRF_CHECK_DEFAULT=False,
        WTF_CSRF_TIME_LIMIT=None,
        WTF_CSRF_SSL_STRICT=True,
        MAX_CONTENT_LENGTH=4 * 1024 * 1024,
        JSON_SORT_KEYS=False,
    )
    app.extensions["reflex"] = services
    app.extensions["reflex.admin"] = settings
    app.extensions[STOPPING_KEY] = threading.Event()
    app.add_template_filter(clock, "clock")  # {{ epoch | clock }}: "10:02:03" or "2026-11-30 10:02:03"
    auth.init_app(app, settings)
    errors.init_app(app)
    for name in BLUEPRINTS:
        app.register_blueprint(importlib.import_module(f"edge.admin.{name}").bp)
    return app

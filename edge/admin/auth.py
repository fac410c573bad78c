"""Who may use the admin page: sessions, API tokens, roles, CSRF and the login rate limit.

Every request passes `guard` (a `before_request` of the app) first. It lets through only the
explicitly public endpoints (`PUBLIC_ENDPOINTS`: login, setup, static files, /api/health) without
authentication, so a view whose decorator was forgotten fails closed: pages redirect to /login, /api
answers 401. Viewers are refused every state-changing method (403) wherever it is routed, and every
state-changing request that came with a session must carry the CSRF token (a form field
`csrf_token` or the `X-CSRFToken` header; `static/app.js` `api()` sends it). A request with
`Authorization: Bearer <token>` is authenticated by the token alone: no cookie is read or set, so
there is nothing a cross-site page could forge and CSRF does not apply.

The decorators `login_required_any` and `admin_required` go on every view anyway: they say in the
code what a view needs, and `admin_required` adds the admin-only reads (users, tokens, audit).
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar, cast

from flask import (
    Blueprint,
    Flask,
    Response,
    abort,
    current_app,
    jsonify,
    redirect,
    render_template,
    request,
    send_file,
    session,
    url_for,
)
from flask_login import AnonymousUserMixin, LoginManager, UserMixin, current_user, login_user, logout_user
from flask_wtf.csrf import CSRFProtect

from edge.admin.accounts import MAX_NAME, AccountError, Accounts
from edge.admin.services import current_services
from edge.config.models import host_port

log = logging.getLogger("edge.admin")

PUBLIC_ENDPOINTS = frozenset({"static", "auth.login", "auth.setup", "auth.health"})
"""The only endpoints served without a session or token. Everything else, including a 404, needs one."""
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
VIEWER_MAY_POST = frozenset({"auth.logout"})
"""State-changing endpoints a viewer may use (logging out changes only their own session)."""
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}
OPENAPI = Path(__file__).with_name("openapi.json")

F = TypeVar("F", bound=Callable[..., Any])

bp = Blueprint("auth", __name__)


# -- who is asking -----------------------------------------------------------------------------------


class User(UserMixin):
    """A logged-in user (by session or token). The session id includes a fingerprint of the password
    hash, so changing a password (or removing and re-adding the user) ends that user's sessions."""

    def __init__(self, row: dict[str, Any], token: dict[str, Any] | None = None) -> None:
        self.name: str = row["name"]
        self.role: str = row["role"]
        self.token = token
        self._fingerprint = hashlib.sha256(row.get("password_hash", "").encode()).hexdigest()[:16]

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def get_id(self) -> str:
        return f"{self._fingerprint}|{self.name}"


class Anonymous(AnonymousUserMixin):
    """Nobody logged in: no name, no role, no token (so views may read these without checks)."""

    name = None
    role = None
    token = None
    is_admin = False


def accounts() -> Accounts:
    return current_app.extensions["reflex.accounts"]


def limiter() -> LoginLimiter:
    return current_app.extensions["reflex.limiter"]


def actor() -> str:
    """The `by=` of control and account calls: `user:NAME` for a session, `token:NAME` for a token."""
    token = getattr(current_user, "token", None)
    if token is not None:
        return f"token:{token['name']}"
    if current_user.is_authenticated:
        return f"user:{current_user.name}"
    return "anonymous"


def remote_addr() -> str | None:
    """The `remote=` of control and account calls: the peer address (no proxy headers are trusted:
    the appliance serves the page itself)."""
    return request.remote_addr


def is_api() -> bool:
    return request.path == "/api" or request.path.startswith("/api/")


# -- decorators ---------------------------------------------------------------------------------------


def unauthenticated() -> Response:
    """Pages go to the login page (and come back after it); /api answers 401."""
    if is_api():
        abort(401, "login required: a session cookie or an Authorization: Bearer token")
    target = request.path + (f"?{request.query_string.decode('latin-1')}" if request.query_string else "")
    return redirect(url_for("auth.login", next=target))


def forbidden() -> None:
    abort(403, "admins only: your account is a viewer")


def login_required_any(view: F) -> F:
    """Any logged-in user, by session or token. Pages redirect to /login, /api answers 401."""

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not current_user.is_authenticated:
            return unauthenticated()
        return view(*args, **kwargs)

    wrapper.reflex_auth = "any"  # type: ignore[attr-defined]
    return cast(F, wrapper)


def admin_required(view: F) -> F:
    """Admins only (403 for a viewer); implies login_required_any."""

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not current_user.is_authenticated:
            return unauthenticated()
        if not current_user.is_admin:
            forbidden()
        return view(*args, **kwargs)

    wrapper.reflex_auth = "admin"  # type: ignore[attr-defined]
    return cast(F, wrapper)


def public(view: F) -> F:
    """Marks a view served without login. Only the endpoints in PUBLIC_ENDPOINTS are actually let
    through by the guard; this marker only documents it."""
    view.reflex_auth = "public"  # type: ignore[attr-defined]
    return view


# -- login rate limit ----------------------------------------------------------------------------------


class LoginLimiter:
    """Locks logins from one address or for one user name after `after` failures within `window_s`,
    for `window_s` seconds.

    Kept in memory: a restart forgets it, which is acceptable (a restart takes longer than a few
    guesses and is itself logged), and it costs no disk writes an attacker could drive. The maps are
    bounded: old entries are dropped when they grow past `MAX_KEYS`."""

    MAX_KEYS = 10_000

    def __init__(self, after: int, window_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.after = max(1, after)
        self.window_s = window_s
        self.clock = clock
        self._fails: dict[str, deque[float]] = {}
        self._locked: dict[str, float] = {}
        self._lock = threading.Lock()

    @staticmethod
    def keys(name: str, address: str | None) -> tuple[str, ...]:
        return (f"user:{name.casefold()[:MAX_NAME]}", f"addr:{address or '?'}")

    def locked_for(self, keys: Iterable[str]) -> float:
        """Seconds left of the longest lock on any of the keys (0: not locked)."""
        now = self.clock()
        with self._lock:
            return max([self._locked.get(k, now) - now for k in keys] + [0.0])

    def failed(self, keys: Iterable[str]) -> bool:
        """Count one failure on each key; True when this failure locked one of them."""
        now = self.clock()
        locked = False
        with self._lock:
            self._prune(now)
            for key in keys:
                fails = self._fails.setdefault(key, deque())
                fails.append(now)
                while fails and fails[0] <= now - self.window_s:
                    fails.popleft()
                if len(fails) >= self.after:
                    self._locked[key] = now + self.window_s
                    fails.clear()
                    locked = True
        return locked

    def succeeded(self, name: str) -> None:
        """A good login clears its user name's count (not its address's: one valid account must not
        reset the count of guesses at others from the same address)."""
        with self._lock:
            self._fails.pop(self.keys(name, None)[0], None)

    def _prune(self, now: float) -> None:
        if len(self._fails) + len(self._locked) < self.MAX_KEYS:
            return
        self._locked = {k: t for k, t in self._locked.items() if t > now}
        self._fails = {k: f for k, f in self._fails.items() if f and f[-1] > now - self.window_s}
        if len(self._fails) >= self.MAX_KEYS // 2:  # a flood of distinct names: forget the oldest half
            keep = sorted(self._fails.items(), key=lambda kv: kv[1][-1])[len(self._fails) // 2 :]
            self._fails = dict(keep)


def loopback(host: str) -> bool:
    """Whether only this machine can reach an address (then /setup needs no code)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def lockout_message(seconds: float) -> str:
    """The design's message; "(locked)" so a reader (and a test) sees at once what happened."""
    return f"Too many failed logins; try again in {max(1, math.ceil(seconds))} s (locked)"


# -- wiring ---------------------------------------------------------------------------------------------


def init_app(app: Flask, settings: Any) -> None:
    """Login manager, CSRF, accounts, rate limit, the guard and the security headers."""
    services = app.extensions["reflex"]
    app.extensions["reflex.accounts"] = found = Accounts(services.events)
    if settings.listen and not loopback(host_port(settings.listen)[0]):
        code = found.require_setup_code(services.data_dir / "admin")
        if code is not None:
            log.warning("admin page: no account yet; create it at /setup with the setup code %s "
                        "(also in %s)", code, found.setup_code_file)  # fmt: skip
    app.extensions["reflex.limiter"] = LoginLimiter(settings.login_lockout_after, settings.login_lockout_s)
    csrf = CSRFProtect(app)
    manager = LoginManager(app)
    manager.session_protection = "basic"
    manager.anonymous_user = Anonymous

    @manager.user_loader
    def load_session_user(user_id: str) -> User | None:
        if "Authorization" in request.headers:  # a token request is the token's alone
            return None
        _, _, name = user_id.partition("|")
        row = accounts().user(name)
        if row is None:
            return None
        user = User(row)
        return user if user.get_id() == user_id else None

    @manager.request_loader
    def load_token_user(req: Any) -> User | None:
        header = req.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        row = accounts().resolve_token(token.strip())
        if row is None:
            return None
        return User({"name": row["user"], "role": row["role"]}, token=row)

    @manager.unauthorized_handler
    def unauthorized() -> Response:
        return unauthenticated()

    @app.before_request
    def guard() -> Response | None:
        if request.endpoint in PUBLIC_ENDPOINTS:
            if request.endpoint == "auth.setup" and accounts().has_users():
                abort(404)  # gone for good, whatever the request (not even a CSRF answer)
            if request.method not in SAFE_METHODS:
                csrf.protect()
            return None
        if not accounts().has_users():
            if is_api():
                abort(401, "no admin account yet: open /setup in a browser")
            return redirect(url_for("auth.setup"))
        if not current_user.is_authenticated:
            return unauthenticated()
        if request.method not in SAFE_METHODS:
            if not current_user.is_admin and request.endpoint not in VIEWER_MAY_POST:
                forbidden()
            if current_user.token is None:
                csrf.protect()
        return None

    @app.after_request
    def headers(response: Response) -> Response:
        for header, value in SECURITY_HEADERS.items():  # a view's own, stricter policy stays (reports)
            response.headers.setdefault(header, value)
        if request.endpoint != "static" and "Cache-Control" not in response.headers:
            response.headers["Cache-Control"] = "no-store"
        return response


# -- routes ---------------------------------------------------------------------------------------------


def _next_target() -> str:
    """Where to go after login: only a path on this site (no //host, no scheme): no open redirect."""
    target = request.values.get("next", "")
    if not target.startswith("/") or target.startswith("//") or "\\" in target or "\n" in target:
        return "/"
    return target


def _start_session(row: dict[str, Any]) -> None:
    session.clear()
    login_user(User(row))
    session.permanent = True


@bp.route("/setup", methods=["GET", "POST"])
@public
def setup() -> Any:
    """The first admin account: no default password. Gone (404) once any user exists."""
    if accounts().has_users():
        abort(404)
    error = None
    name = ""
    if request.method == "POST":
        name = request.form.get("username", "")
        password = request.form.get("password", "")
        keys = LoginLimiter.keys("", remote_addr())[1:]  # the address: guessing the code is guessing
        wait = limiter().locked_for(keys)
        if wait > 0:
            return _setup_page(lockout_message(wait), name), 429
        if not accounts().setup_code_ok(request.form.get("code", "")):
            current_services().events.audit("anonymous", "auth.setup_code_wrong", {}, remote_addr())
            if limiter().failed(keys):
                return _setup_page(lockout_message(limiter().locked_for(keys)), name), 429
            return _setup_page("Wrong setup code (it is in the appliance's log)", name), 401
        try:
            accounts().create_first_admin(name, password, request.form.get("password2", ""),
                                          remote=remote_addr())  # fmt: skip
        except AccountError as exc:
            if exc.status == 404:
                abort(404)
            error = str(exc)
        else:
            _start_session(accounts().user(name) or {})
            return redirect("/")
    return _setup_page(error, name), 400 if error else 200


def _setup_page(error: str | None, name: str) -> str:
    return render_template("setup.html", error=error, username=name, code=accounts().setup_code is not None)


@bp.route("/login", methods=["GET", "POST"])
@public
def login() -> Any:
    if not accounts().has_users():
        return redirect(url_for("auth.setup"))
    if current_user.is_authenticated and current_user.token is None and request.method == "GET":
        return redirect(_next_target())
    if request.method == "GET":
        return render_template("login.html", error=None, username="", next=_next_target())
    name = request.form.get("username", "")
    password = request.form.get("password", "")
    remote = remote_addr()
    events = current_services().events
    keys = LoginLimiter.keys(name, remote)
    wait = limiter().locked_for(keys)
    status = 200
    if wait > 0:
        error, status = lockout_message(wait), 429
    elif (row := accounts().verify(name, password)) is not None:
        limiter().succeeded(name)
        _start_session(row)
        events.audit(f"user:{row['name']}", "auth.login", {"user": row["name"]}, remote)
        log.info("admin page: %s logged in from %s", row["name"], remote)
        return redirect(_next_target())
    else:
        who = {"user": name[:MAX_NAME]}
        events.audit("anonymous", "auth.login_failed", who, remote)
        if limiter().failed(keys):
            settings = current_app.extensions["reflex.admin"]
            events.audit("anonymous", "auth.locked", {**who, "for_s": settings.login_lockout_s}, remote)
            log.warning("admin page: logins locked for %r / %s after failed logins", name[:MAX_NAME], remote)
            error, status = lockout_message(limiter().locked_for(keys)), 429
        else:
            error, status = "Wrong user name or password", 401
    page = render_template("login.html", error=error, username=name[:MAX_NAME], next=_next_target())
    return page, status


@bp.route("/logout", methods=["POST"])
@login_required_any
def logout() -> Any:
    if current_user.token is None:
        current_services().events.audit(actor(), "auth.logout", {"user": current_user.name},
                                                       remote_addr())  # fmt: skip
        logout_user()
        session.clear()
    return redirect(url_for("auth.login"))


@bp.get("/api/health")
@public
def health() -> Any:
    return jsonify(ok=True)


@bp.get("/api/me")
@login_required_any
def me() -> Any:
    token = current_user.token
    return jsonify(
        name=current_user.name,
        role=current_user.role,
        via="token" if token is not None else "session",
        **({"token": {"id": token["id"], "name": token["name"]}} if token is not None else {}),
    )


@bp.get("/api/openapi.json")
@login_required_any
def openapi() -> Any:
    return send_file(OPENAPI, mimetype="application/json", max_age=0)

"""Settings: what the appliance is configured with, users and API tokens, the audit log.

The MQTT broker, push channels, blue loop and retention are shown from the config file (read-only:
they change there, and the file stays the one source of truth) with every password, token and header
value masked. Each push channel has "Send test push", which goes through the control surface like
every other change. Users, tokens and the audit log are for admins only; the pages post plain forms
(work without JavaScript) and the same operations are under /api for scripts.
"""

from __future__ import annotations

import re
from typing import Any

from flask import Blueprint, flash, jsonify, redirect, render_template, request, url_for
from flask_login import current_user

from edge.admin.accounts import ROLES, AccountError, Accounts
from edge.admin.auth import accounts, actor, admin_required, login_required_any, remote_addr
from edge.admin.services import current_services
from edge.config import EdgeConfig
from edge.redact import redact

bp = Blueprint("settings", __name__)

MASK = "***"
AUDIT_PAGE = 200
AUDIT_MAX = 5000


# -- the config, masked --------------------------------------------------------------------------


def _secret(value: Any) -> str | None:
    """A secret as shown: *** when set, None when not (never its value, nor its length)."""
    return MASK if value else None


def settings_view(cfg: EdgeConfig) -> dict[str, Any]:
    """The settings shown on the page and by GET /api/settings, with every secret masked."""
    mqtt = cfg.mqtt
    push: dict[str, Any] = {}
    for name, channel in cfg.push.items():
        entry: dict[str, Any] = {
            "type": channel.type,
            "url": redact(channel.url),
            "confirmed_only": channel.confirmed_only,
            "timeout_s": channel.timeout_s,
        }
        if channel.type == "webhook":
            entry["secret"] = _secret(channel.secret)
            entry["headers"] = {key: MASK for key in channel.headers}
        else:
            entry["token"] = _secret(channel.token)
            entry["username"] = channel.username
            entry["password"] = _secret(channel.password)
            entry["attach_snapshot"] = channel.attach_snapshot
        push[name] = entry
    admin = cfg.admin
    return {
        "device": {"id": cfg.device.id},
        "mqtt": {
            "url": redact(mqtt.url) if mqtt.url else None,
            "prefix": mqtt.prefix,
            "username": mqtt.username,
            "password": _secret(mqtt.password or mqtt.password_file),
            "password_file": mqtt.password_file,
            "ca_file": mqtt.ca_file,
            "client_certificate": bool(mqtt.cert_file),
            "tls_insecure": mqtt.tls_insecure,
            "protocol": mqtt.protocol,
            "discovery": mqtt.discovery,
            "discovery_prefix": mqtt.discovery_prefix,
            "discovery_style": mqtt.discovery_style,
        },
        "push": push,
        "blueloop": {"llm": cfg.blueloop.llm},
        "retention": cfg.retention.model_dump(mode="json"),
        "admin": {
            "listen": admin.listen,
            "tls": bool(admin.tls or admin.cert),
            "own_certificate": bool(admin.cert),
            "session_hours": admin.session_hours,
            "login_lockout_after": admin.login_lockout_after,
            "login_lockout_s": admin.login_lockout_s,
        },
    }


def _status() -> dict[str, Any]:
    """The live numbers (broker connected, blue loop reachable, push pending); {} when they cannot be
    had: the settings page still shows the config."""
    try:
        return current_services().status()
    except Exception:
        return {}


# -- pages ---------------------------------------------------------------------------------------


def _render(*, token: dict[str, Any] | None = None, status: int = 200) -> Any:
    admin = current_user.is_admin
    page = render_template(
        "settings.html",
        settings=settings_view(current_services().cfg),
        status=_status(),
        users=accounts().users() if admin else [],
        tokens=accounts().tokens() if admin else [],
        roles=ROLES,
        new_token=token,
    )
    return page, status


@bp.get("/settings")
@login_required_any
def index() -> Any:
    return _render()


def _form_action(change: Any, done: str, anchor: str = "#users-section") -> Any:
    """Run an account change posted by a form; back to the page with what happened (POST, redirect,
    GET: a reload does not post again)."""
    try:
        change()
    except AccountError as exc:
        flash(str(exc), "error")
    else:
        flash(done, "ok")
    return redirect(url_for("settings.index") + anchor)


@bp.post("/settings/users")
@admin_required
def add_user() -> Any:
    name = request.form.get("username", "")
    role = request.form.get("role", "viewer")

    def change() -> None:
        accounts().add_user(name, request.form.get("password", ""), role, by=actor(), remote=remote_addr())

    return _form_action(change, f"User {name} added ({role}).")


@bp.post("/settings/users/remove")
@admin_required
def remove_user() -> Any:
    name = request.form.get("username", "")

    def change() -> None:
        accounts().remove_user(name, by=actor(), remote=remote_addr(), me=current_user.name)

    return _form_action(change, f"User {name} removed.")


@bp.post("/settings/users/role")
@admin_required
def set_role() -> Any:
    name = request.form.get("username", "")
    role = request.form.get("role", "")

    def change() -> None:
        accounts().set_role(name, role, by=actor(), remote=remote_addr())

    return _form_action(change, f"User {name} is now {role}.")


@bp.post("/settings/users/password")
@admin_required
def set_password() -> Any:
    name = request.form.get("username", "")

    def change() -> None:
        accounts().set_password(name, request.form.get("password", ""), by=actor(), remote=remote_addr())

    return _form_action(change, f"Password of {name} changed.")


@bp.post("/settings/tokens")
@admin_required
def make_token() -> Any:
    """Rendered, not redirected: the token is in this one answer and nowhere else (not in the session
    cookie, not in the database)."""
    user = request.form.get("user") or current_user.name
    try:
        token = accounts().make_token(request.form.get("name", ""), user, by=actor(), remote=remote_addr())
    except AccountError as exc:
        flash(str(exc), "error")
        return redirect(url_for("settings.index") + "#tokens-section")
    return _render(token=token, status=201)


@bp.post("/settings/tokens/revoke")
@admin_required
def revoke_token() -> Any:
    token_id = request.form.get("id", "")

    def change() -> None:
        accounts().revoke_token(token_id, by=actor(), remote=remote_addr())

    return _form_action(change, "Token revoked.", "#tokens-section")


@bp.get("/settings/audit")
@admin_required
def audit() -> Any:
    limit = _limit(request.args.get("limit"), AUDIT_PAGE)
    return render_template(
        "settings_audit.html", rows=current_services().events.audit_log(limit=limit), limit=limit
    )


def _limit(value: str | None, default: int) -> int:
    try:
        return max(1, min(AUDIT_MAX, int(value))) if value else default
    except ValueError:
        raise AccountError(f"limit must be a whole number, not {value!r}") from None


# -- JSON API ------------------------------------------------------------------------------------


def _body() -> dict[str, Any]:
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise AccountError("the body must be a JSON object")
    return data


def _text(data: dict[str, Any], key: str, default: str | None = None) -> str:
    value = data.get(key, default)
    if not isinstance(value, str):
        raise AccountError(f"{key} must be a string" if key in data else f"{key} is missing")
    return value


def _accounts() -> Accounts:
    return accounts()


def _user_in_path(name: str) -> str:
    """A user name from the URL path. cheroot leaves an encoded slash (%2F) encoded in the path (so
    it cannot change which route matches); user names may hold slashes, so decode it here."""
    return re.sub("%2[fF]", "/", name)


@bp.get("/api/settings")
@login_required_any
def api_settings() -> Any:
    return jsonify(settings_view(current_services().cfg))


@bp.get("/api/users")
@admin_required
def api_users() -> Any:
    return jsonify(users=_accounts().users())


@bp.post("/api/users")
@admin_required
def api_add_user() -> Any:
    data = _body()
    name = _text(data, "name", data.get("username"))
    role = _text(data, "role", "viewer")
    _accounts().add_user(name, _text(data, "password"), role, by=actor(), remote=remote_addr())
    return jsonify(name=name, role=role), 201


@bp.patch("/api/users/<path:name>")
@admin_required
def api_change_user(name: str) -> Any:
    name = _user_in_path(name)
    data = _body()
    if "role" not in data and "password" not in data:
        raise AccountError("give role and/or password")
    if "password" in data:
        _accounts().set_password(name, _text(data, "password"), by=actor(), remote=remote_addr())
    if "role" in data:
        _accounts().set_role(name, _text(data, "role"), by=actor(), remote=remote_addr())
    row = _accounts().user(name) or {}
    return jsonify(name=name, role=row.get("role"))


@bp.delete("/api/users/<path:name>")
@admin_required
def api_remove_user(name: str) -> Any:
    name = _user_in_path(name)
    _accounts().remove_user(name, by=actor(), remote=remote_addr(), me=current_user.name)
    return jsonify(ok=True)


@bp.get("/api/tokens")
@admin_required
def api_tokens() -> Any:
    return jsonify(tokens=_accounts().tokens())


@bp.post("/api/tokens")
@admin_required
def api_make_token() -> Any:
    data = _body()
    user = _text(data, "user", current_user.name)
    return jsonify(_accounts().make_token(_text(data, "name"), user, by=actor(), remote=remote_addr())), 201


@bp.delete("/api/tokens/<token_id>")
@admin_required
def api_revoke_token(token_id: str) -> Any:
    _accounts().revoke_token(token_id, by=actor(), remote=remote_addr())
    return jsonify(ok=True)


@bp.get("/api/audit")
@admin_required
def api_audit() -> Any:
    limit = _limit(request.args.get("limit"), AUDIT_PAGE)
    return jsonify(audit=current_services().events.audit_log(limit=limit))


@bp.post("/api/push/<channel>/test")
@admin_required
def api_test_push(channel: str) -> Any:
    """Send one test message on a push channel now (a ControlError, e.g. an unknown channel or the
    service refusing it, is a 400 with its reason)."""
    result = current_services().control.test_push(channel, by=actor(), remote=remote_addr())
    return jsonify(ok=True, channel=channel, result=result)

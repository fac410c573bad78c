"""The admin page's core: accounts, sessions, tokens, roles, CSRF, lockout, headers, TLS, settings.

Real parts throughout: a real event log on a SQLite file, a real control surface, the real app served
by the real cheroot server on a loopback port, driven over real HTTP with httpx (no Flask test
client, so cookies, headers and TLS are what a browser gets).
"""

from __future__ import annotations

import json
import re
import ssl
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from argon2 import PasswordHasher
from cryptography import x509

from edge.admin import create_app
from edge.admin.auth import PUBLIC_ENDPOINTS
from edge.admin.server import AdminServer, ensure_self_signed, load_secret_key
from edge.admin.services import AdminServices
from edge.config import EdgeConfig
from edge.control import Control
from edge.journal import Journal
from edge.live import LiveView
from edge.outbox import Topics
from edge.store import EventLog
from tests.admin_support import ADMIN, ADMIN_PW, CSRF_META, api, csrf, set_up_admin
from tests.support import Receiver, free_port

TOPICS = Topics("reflex", "dev1")
VIEWER, VIEWER_PW = "victor", "viewer password 1"
STATE_CHANGING = ("POST", "PUT", "PATCH", "DELETE")


class Site:
    """One appliance's admin page over real parts, on a free loopback port."""

    def __init__(self, data: Path, receiver: Receiver, *, tls: bool = False, **admin: Any) -> None:
        self.cfg = EdgeConfig(
            watch=[],
            data_dir=str(data),
            mqtt={"url": "mqtt://edge:hunter2-mqtt@127.0.0.1:1"},
            push={
                "hook": {"type": "webhook", "url": receiver.url, "secret": "webhook-secret-1",
                         "headers": {"Authorization": "Bearer header-secret-2"}},
                "phones": {"type": "ntfy", "url": f"http://127.0.0.1:{free_port()}/alerts",
                           "token": "ntfy-secret-3", "timeout_s": 2},
            },
            admin={"listen": "127.0.0.1:8080", "tls": tls} | admin,
        )  # fmt: skip
        self.events = EventLog(data, reserve_bytes=0)
        self.journal = Journal(self.events, TOPICS, [])
        self.control = Control(self.events, TOPICS, self.journal, known_labels={"person", "fire"},
                               push_channels=self.cfg.push)  # fmt: skip
        self.control.load_rules([])
        self.control.attach({}, None)
        self.services = AdminServices(
            control=self.control, events=self.events, live=LiveView(), cfg=self.cfg, data_dir=data,
            status=lambda: {"version": "test", "uptime_s": 1.0, "cameras": {},
                            "outbox": {"depth": 0, "held": 0, "shed": 0, "dropped": 0},
                            "broker": {"configured": True, "url": None, "connected": False},
                            "push": {},
                            "blueloop": {"broker_connected": False, "open_jobs": 0, "last_answer_at": None}},
        )  # fmt: skip
        self.app = create_app(self.services, self.cfg.admin, testing=True)
        cert = ensure_self_signed(data / "admin") if tls else None
        self.server = AdminServer(self.app, "127.0.0.1", free_port(), cert)
        self.server.start()
        self.url = self.server.url

    def client(self, **kw: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, follow_redirects=False, timeout=10, verify=False, **kw)

    def close(self) -> None:
        self.server.stop()
        self.journal.close()
        self.events.close()


def login(site: Site, name: str, password: str) -> httpx.Client:
    client = site.client()
    answer = client.post(
        "/login", data={"username": name, "password": password, "csrf_token": csrf(client, "/login")}
    )
    assert answer.status_code == 302, answer.text
    return client


def url_for_rule(rule: Any) -> str:
    """A concrete URL for a routing rule: every variable part filled with a plausible value."""
    path = rule.rule
    for arg in rule.arguments:
        converter = rule._converters[arg]
        value = "1" if type(converter).__name__ in ("IntegerConverter", "FloatConverter") else "x"
        path = re.sub(rf"<(?:[^<>:]+:)?{arg}>", value, path)
    return path


@contextmanager
def running(tmp_path: Path, name: str, **admin: Any) -> Iterator[Site]:
    receiver = Receiver()
    site = Site(tmp_path / name, receiver, **admin)
    try:
        yield site
    finally:
        site.close()
        receiver.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """An appliance whose first admin exists (made through /setup) and which has one viewer."""
    with running(tmp_path_factory.mktemp("admin"), "data") as site:
        client = site.client()
        set_up_admin(client)
        made = api(client, "POST", "/api/users", {"name": VIEWER, "password": VIEWER_PW, "role": "viewer"})
        assert made.status_code == 201, made.text
        yield site


@pytest.fixture(scope="module")
def admin(site: Site) -> httpx.Client:
    return login(site, ADMIN, ADMIN_PW)


@pytest.fixture(scope="module")
def viewer(site: Site) -> httpx.Client:
    return login(site, VIEWER, VIEWER_PW)


# -- first visit ------------------------------------------------------------------------------------


def test_the_first_visit_makes_the_admin_and_then_setup_is_gone(tmp_path: Path) -> None:
    with running(tmp_path, "fresh") as site:
        client = site.client()
        assert client.get("/").headers["location"].endswith("/setup")  # no default password anywhere
        assert client.get("/login").headers["location"].endswith("/setup")
        assert client.get("/api/me").status_code == 401
        page = client.get("/setup")
        assert page.status_code == 200 and 'id="setup-form"' in page.text
        token = CSRF_META.search(page.text).group(1)
        form = {"username": "root", "password": "long enough 1", "password2": "long enough 1"}
        assert client.post("/setup", data=form).status_code == 400  # no CSRF token
        short = client.post(
            "/setup", data={**form, "password": "short", "password2": "short", "csrf_token": token}
        )
        assert short.status_code == 400 and "at least 10 characters" in short.text
        differ = client.post("/setup", data={**form, "password2": "long enough 2", "csrf_token": token})
        assert differ.status_code == 400 and "differ" in differ.text
        made = client.post("/setup", data={**form, "csrf_token": token})
        assert made.status_code == 302 and made.headers["location"] == "/"
        assert client.get("/api/me").json() == {"name": "root", "role": "admin", "via": "session"}
        assert client.get("/setup").status_code == 404  # for the admin...
        assert site.client().get("/setup").status_code == 404  # ...and for anybody else
        assert site.client().post("/setup", data={**form, "csrf_token": token}).status_code == 404
        assert [u["name"] for u in site.events.users()] == ["root"]
        assert site.events.audit_log()[-1]["action"] == "user.setup"
        assert not (site.services.data_dir / "admin" / "setup-code").exists()  # loopback: no code


def test_a_page_others_can_reach_asks_for_the_setup_code_from_the_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """On 0.0.0.0 whoever reaches the page first must not become its admin: /setup also wants the
    one-time code that only the appliance's log (and a 0600 file beside the database) shows."""
    with caplog.at_level("WARNING", "edge.admin"), running(tmp_path, "lan", listen="0.0.0.0:8443") as site:
        code_file = site.services.data_dir / "admin" / "setup-code"
        code = code_file.read_text().strip()
        assert code in caplog.text and oct(code_file.stat().st_mode & 0o777) == "0o600"
        client = site.client()
        page = client.get("/setup")
        assert 'name="code"' in page.text
        form = {"username": "root", "password": "long enough 1", "password2": "long enough 1"}
        form["csrf_token"] = CSRF_META.search(page.text).group(1)
        assert client.post("/setup", data=form).status_code == 401  # no code
        wrong = client.post("/setup", data={**form, "code": "0000-0000-0000"})
        assert wrong.status_code == 401 and "Wrong setup code" in wrong.text and not site.events.users()
        made = client.post("/setup", data={**form, "code": code.upper()})
        assert made.status_code == 302 and [u["name"] for u in site.events.users()] == ["root"]
        assert not code_file.exists()
        assert [r["action"] for r in site.events.audit_log()][:2] == ["user.setup", "auth.setup_code_wrong"]


# -- nothing without login ---------------------------------------------------------------------------


def test_every_route_needs_a_session_or_token(site: Site) -> None:
    anonymous = site.client()
    checked = 0
    for rule in site.app.url_map.iter_rules():
        if rule.endpoint in PUBLIC_ENDPOINTS:
            continue
        view = site.app.view_functions[rule.endpoint]
        assert getattr(view, "reflex_auth", None) in ("any", "admin"), f"{rule.endpoint}: no auth decorator"
        url = url_for_rule(rule)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            answer = anonymous.request(method, url)
            if rule.rule.startswith("/api/"):
                assert answer.status_code == 401, (method, url, answer.status_code)
                assert set(answer.json()) == {"error"}
            else:
                assert answer.status_code == 302, (method, url, answer.status_code)
                assert "/login?next=" in answer.headers["location"]
            checked += 1
    assert checked >= 20
    forged = anonymous.get("/api/me", headers={"Authorization": "Bearer not-a-token"})
    assert forged.status_code == 401
    assert anonymous.get("/nothing-here").status_code == 302  # unknown paths fail closed too
    assert anonymous.get("/api/health").json() == {"ok": True}


def test_login_goes_back_where_it_was_asked_but_never_off_site(site: Site) -> None:
    client = site.client()
    page = client.get("/settings")
    assert page.headers["location"] == "/login?next=/settings"
    token = csrf(client, "/login")
    form = {"username": ADMIN, "password": ADMIN_PW, "csrf_token": token}
    assert client.post("/login", data={**form, "next": "/settings"}).headers["location"] == "/settings"
    other = site.client()
    form["csrf_token"] = csrf(other, "/login")
    assert other.post("/login", data={**form, "next": "//evil.example/"}).headers["location"] == "/"


# -- roles -------------------------------------------------------------------------------------------


def test_a_viewer_reads_but_changes_nothing(site: Site, viewer: httpx.Client) -> None:
    assert viewer.get("/api/me").json()["role"] == "viewer"
    token = csrf(viewer, "/settings")
    refused = 0
    for rule in site.app.url_map.iter_rules():
        if rule.endpoint in PUBLIC_ENDPOINTS or rule.endpoint == "auth.logout":
            continue
        for method in sorted(rule.methods & set(STATE_CHANGING)):
            answer = viewer.request(method, url_for_rule(rule), headers={"X-CSRFToken": token}, json={},
                                    data=None)  # fmt: skip
            assert answer.status_code == 403, (method, rule.rule, answer.status_code, answer.text[:200])
            refused += 1
    assert refused >= 8
    for path in ("/settings/audit", "/api/users", "/api/tokens", "/api/audit"):
        assert viewer.get(path).status_code == 403, path
    page = viewer.get("/settings")
    assert page.status_code == 200 and 'id="user-form"' not in page.text and "Send test push" not in page.text
    assert viewer.get("/api/settings").status_code == 200
    assert viewer.get("/api/users/x", headers={"Accept": "application/json"}).status_code == 405


def test_tokens_authenticate_scripts_until_revoked(site: Site, admin: httpx.Client) -> None:
    made = api(admin, "POST", "/api/tokens", {"name": "ci-script"})
    assert made.status_code == 201, made.text
    token = made.json()
    listed = admin.get("/api/tokens").json()["tokens"]
    assert [t["name"] for t in listed if t["id"] == token["id"]] == ["ci-script"]
    assert all("token" not in t and "token_hash" not in t for t in listed)  # shown once, never again
    stored = b"".join(p.read_bytes() for p in Path(site.cfg.data_dir).rglob("*") if p.is_file())
    assert token["token"].encode() not in stored  # only its sha256 is kept

    script = site.client(headers={"Authorization": f"Bearer {token['token']}"})
    me = script.get("/api/me")
    assert me.status_code == 200 and me.json()["via"] == "token" and me.json()["role"] == "admin"
    assert "set-cookie" not in me.headers  # a token request carries no session
    added = script.post("/api/users", json={"name": "bot-made", "password": "made by a script"})
    assert added.status_code == 201  # no CSRF token needed: nothing a browser could forge
    used = {t["id"]: t["last_used_at"] for t in admin.get("/api/tokens").json()["tokens"]}
    assert used[token["id"]] is not None  # the list says when a token was last used

    viewer_token = api(admin, "POST", "/api/tokens", {"name": "ha", "user": VIEWER}).json()
    ha = site.client(headers={"Authorization": f"Bearer {viewer_token['token']}"})
    assert ha.get("/api/settings").status_code == 200
    assert ha.post("/api/users", json={"name": "x", "password": "yyyyyyyyyyyy"}).status_code == 403

    assert api(admin, "DELETE", f"/api/tokens/{token['id']}").status_code == 200
    assert script.get("/api/me").status_code == 401
    assert api(admin, "DELETE", f"/api/tokens/{token['id']}").status_code == 404
    actions = [row["action"] for row in site.events.audit_log()]
    assert {"token.add", "token.revoke", "user.add"} <= set(actions)
    by_script = [
        r for r in site.events.audit_log() if r["action"] == "user.add" and r["detail"]["user"] == "bot-made"
    ]
    assert by_script[0]["who"] == "token:ci-script" and by_script[0]["remote"] == "127.0.0.1"


# -- CSRF ---------------------------------------------------------------------------------------------


def test_a_post_without_the_csrf_token_is_rejected(site: Site, admin: httpx.Client) -> None:
    form = {"username": "mallory", "password": "forged password", "role": "admin"}
    forged = admin.post("/settings/users", data=form)
    assert forged.status_code == 400 and "CSRF" in forged.text
    assert (
        admin.post("/api/users", json={"name": "mallory", "password": "forged password"}).status_code == 400
    )
    assert site.events.user("mallory") is None
    wrong = admin.post("/settings/users", data={**form, "csrf_token": "not-the-token"})
    assert wrong.status_code == 400
    made = admin.post(
        "/settings/users", data={**form, "role": "viewer", "csrf_token": csrf(admin, "/settings")}
    )
    assert made.status_code == 302 and site.events.user("mallory")["role"] == "viewer"
    assert "User mallory added" in admin.get("/settings").text  # the flash after the redirect


# -- output is escaped, headers are set ------------------------------------------------------------


def test_a_user_named_like_a_script_is_shown_as_text(site: Site, admin: httpx.Client) -> None:
    name = "<script>alert(1)</script>"
    made = admin.post(
        "/settings/users",
        data={
            "username": name,
            "password": "xss password 1",
            "role": "viewer",
            "csrf_token": csrf(admin, "/settings"),
        },
    )
    assert made.status_code == 302
    page = admin.get("/settings").text
    assert name not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    audit = admin.get("/settings/audit").text
    assert name not in audit and "&lt;script&gt;" in audit
    removed = api(admin, "DELETE", "/api/users/" + quote(name, safe=""))
    assert removed.status_code == 200, removed.text
    assert site.events.user(name) is None


def test_security_headers_on_every_response(site: Site, admin: httpx.Client) -> None:
    anonymous = site.client()
    answers = [
        anonymous.get("/login"), anonymous.get("/static/app.css"), anonymous.get("/api/health"),
        anonymous.get("/api/me"), admin.get("/settings"), admin.get("/no-such-page"),
        admin.get("/api/nothing"),
    ]  # fmt: skip
    for answer in answers:
        csp = answer.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp and "script-src 'self'" in csp
        assert answer.headers["x-frame-options"] == "DENY"
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["referrer-policy"] == "same-origin"
    assert admin.get("/api/nothing").json() == {"error": admin.get("/api/nothing").json()["error"]}

    # No inline script or style in any page (the CSP would block it): every plain GET page there is.
    pages = [r.rule for r in site.app.url_map.iter_rules() if "GET" in r.methods and not r.arguments
             and not r.rule.startswith(("/api/", "/static"))]  # fmt: skip
    for path in [*pages, "/settings/audit"]:
        answer = admin.get(path)
        if answer.headers.get("content-type", "").startswith("text/html"):
            html = answer.text
            assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), path
            assert not re.search(r"\sstyle=|<style|\son[a-z]+=", html, re.I), path
            assert not re.search(r"(src|href)=\"(https?:)?//", html), path  # nothing from elsewhere


def test_session_cookie_flags_and_logout(site: Site) -> None:
    client = site.client()
    answer = client.post(
        "/login", data={"username": VIEWER, "password": VIEWER_PW, "csrf_token": csrf(client, "/login")}
    )
    cookie = answer.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
    assert "Expires=" in cookie  # session_hours, not a browser-session cookie that lives for ever
    assert client.get("/api/me").status_code == 200
    assert client.post("/logout").status_code == 400  # logging out is a POST with the CSRF token too
    out = client.post("/logout", data={"csrf_token": csrf(client, "/settings")})
    assert out.status_code == 302
    assert client.get("/api/me").status_code == 401
    actions = [(r["action"], r["detail"].get("user")) for r in site.events.audit_log()]
    assert ("auth.logout", VIEWER) in actions and ("auth.login", VIEWER) in actions


def test_a_new_password_ends_the_old_sessions(site: Site, admin: httpx.Client) -> None:
    assert (
        api(admin, "POST", "/api/users", {"name": "paula", "password": "first password"}).status_code == 201
    )
    paula = login(site, "paula", "first password")
    assert paula.get("/api/me").status_code == 200
    changed = api(admin, "PATCH", "/api/users/paula", {"password": "second password", "role": "admin"})
    assert changed.status_code == 200 and changed.json()["role"] == "admin"
    assert paula.get("/api/me").status_code == 401
    assert login(site, "paula", "second password").get("/api/me").json()["role"] == "admin"
    assert api(admin, "DELETE", f"/api/users/{ADMIN}").json() == {
        "error": "you cannot remove your own account"
    }
    assert (
        api(admin, "POST", "/api/users", {"name": "paula", "password": "again password"}).status_code == 409
    )
    assert (
        api(admin, "POST", "/api/users", {"name": "q", "password": "x"})
        .json()["error"]
        .startswith("the password")
    )


def test_an_old_password_hash_is_upgraded_at_login(site: Site, admin: httpx.Client) -> None:
    assert api(admin, "POST", "/api/users", {"name": "olga", "password": "olga password"}).status_code == 201
    weak = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash("olga password")
    site.events.set_password("olga", weak)
    login(site, "olga", "olga password")
    stored = site.events.user("olga")["password_hash"]
    assert stored != weak and not PasswordHasher().check_needs_rehash(stored)
    assert PasswordHasher().verify(stored, "olga password")


# -- settings -------------------------------------------------------------------------------------------


def test_settings_show_the_config_with_secrets_masked(site: Site, admin: httpx.Client) -> None:
    shown = admin.get("/api/settings").json()
    assert shown["mqtt"]["url"] == "mqtt://edge:***@127.0.0.1:1"
    assert shown["push"]["hook"]["secret"] == "***" and shown["push"]["hook"]["headers"] == {
        "Authorization": "***"
    }
    assert shown["push"]["phones"]["token"] == "***"
    assert shown["retention"]["max_age_days"] == 30
    page = admin.get("/settings").text
    for secret in ("hunter2-mqtt", "webhook-secret-1", "header-secret-2", "ntfy-secret-3"):
        assert secret not in page and secret not in json.dumps(shown)
    assert 'id="push-test-hook"' in page and 'data-api-post="/api/push/hook/test"' in page


def test_send_test_push(site: Site, admin: httpx.Client) -> None:
    sent = api(admin, "POST", "/api/push/hook/test")
    assert sent.status_code == 200, sent.text
    assert sent.json()["ok"] is True and "hook" in sent.json()["result"]
    failed = api(admin, "POST", "/api/push/phones/test")  # nothing listens there
    assert (
        failed.status_code == 400 and list(failed.json()) == ["error"] and "\n" not in failed.json()["error"]
    )
    unknown = api(admin, "POST", "/api/push/nope/test")
    assert unknown.status_code == 400 and "unknown push channel" in unknown.json()["error"]
    rows = [r for r in site.events.audit_log() if r["action"] == "push.test"]
    assert rows and rows[0]["who"] == f"user:{ADMIN}"


def test_the_audit_log_lists_the_changes(site: Site, admin: httpx.Client) -> None:
    assert (
        api(admin, "POST", "/api/users", {"name": "audited", "password": "audit password"}).status_code == 201
    )
    assert api(admin, "PATCH", "/api/users/audited", {"role": "admin"}).status_code == 200
    assert api(admin, "DELETE", "/api/users/audited").status_code == 200
    rows = admin.get("/api/audit?limit=50").json()["audit"]
    mine = [r["action"] for r in rows if r["detail"].get("user") == "audited"]
    assert mine == ["user.remove", "user.role", "user.add"]  # newest first
    assert all(r["who"] == f"user:{ADMIN}" and r["remote"] == "127.0.0.1" for r in rows[:3])
    page = admin.get("/settings/audit").text
    table = page[page.index('id="audit"') :]
    assert table.count("<tr>") >= 4 and "user.remove" in table and "audited" in table
    assert admin.get("/api/audit?limit=lots").status_code == 400


def test_openapi_describes_every_api_route_and_nothing_else(site: Site, admin: httpx.Client) -> None:
    """Scripts and Home Assistant read the API from this file: a route it omits, or a path it names that
    does not exist, is a broken promise."""
    doc = admin.get("/api/openapi.json").json()
    assert doc["openapi"].startswith("3.1") and {"session", "bearer"} <= set(
        doc["components"]["securitySchemes"]
    )
    described = {
        (method.upper(), path)
        for path, ops in doc["paths"].items()
        for method in ops
        if method in ("get", "post", "put", "patch", "delete")
    }
    served = set()
    for rule in site.app.url_map.iter_rules():
        if rule.rule.startswith("/api/"):
            path = re.sub(r"<(?:[^<>:]+:)?([^<>]+)>", r"{\1}", rule.rule)
            path = re.sub(r"\{(?:token_id|event_id|ask_id)\}", "{id}", path)
            served |= {(method, path) for method in rule.methods - {"HEAD", "OPTIONS"}}
    assert len(served) >= 30
    assert served == described, (sorted(served - described), sorted(described - served))


# -- lockout, TLS, the secret key -------------------------------------------------------------------------


LOCKOUT_S = 8.0


def test_ten_wrong_passwords_lock_the_login_for_a_while(tmp_path: Path) -> None:
    # The ten failures must fall within the window: argon2 takes ~0.3 s a check on a slow 2-core box.
    with running(tmp_path, "locked", login_lockout_after=10, login_lockout_s=LOCKOUT_S) as site:
        client = site.client()
        form = {"username": "boss", "password": "boss password", "password2": "boss password"}
        assert client.post("/setup", data={**form, "csrf_token": csrf(client, "/setup")}).status_code == 302
        guesser = site.client()
        token = csrf(guesser, "/login")
        guess = {"username": "boss", "csrf_token": token}
        answers = [guesser.post("/login", data={**guess, "password": f"guess {i}"}) for i in range(10)]
        assert [a.status_code for a in answers[:9]] == [401] * 9
        assert all("Wrong user name or password" in a.text for a in answers[:9])
        right = guesser.post(
            "/login", data={"username": "boss", "password": "boss password", "csrf_token": token}
        )
        assert right.status_code == 429
        error = re.search(r'<p id="login-error"[^>]*>([^<]*)</p>', right.text).group(1)
        wait = int(re.fullmatch(r"Too many failed logins; try again in (\d+) s \(locked\)", error).group(1))
        assert 1 <= wait <= LOCKOUT_S, error
        other = site.client()  # another name from the same address is locked too (the address is)
        assert (
            other.post(
                "/login", data={"username": "x", "password": "y", "csrf_token": csrf(other, "/login")}
            ).status_code
            == 429
        )
        elsewhere = site.client(transport=httpx.HTTPTransport(local_address="127.0.0.2"))
        form = {"username": "boss", "password": "boss password", "csrf_token": csrf(elsewhere, "/login")}
        assert elsewhere.post("/login", data=form).status_code == 429  # and the user name is, anywhere
        actions = [r["action"] for r in site.events.audit_log(limit=50)]
        assert actions.count("auth.login_failed") == 10 and actions.count("auth.locked") == 1
        time.sleep(LOCKOUT_S + 0.1)
        again = guesser.post(
            "/login", data={"username": "boss", "password": "boss password", "csrf_token": token}
        )
        assert again.status_code == 302


def test_tls_serves_https_with_a_self_signed_certificate(tmp_path: Path) -> None:
    with running(tmp_path, "tls", tls=True) as site:
        assert site.url.startswith("https://127.0.0.1:")
        key = tmp_path / "tls" / "admin" / "tls.key"
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        assert ensure_self_signed(key.parent) == (key.parent / "tls.crt", key)  # made once, kept
        client = site.client()
        assert client.get("/api/health").json() == {"ok": True}
        pem = ssl.get_server_certificate(("127.0.0.1", site.server.port))
        cert = x509.load_pem_x509_certificate(pem.encode())
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert "127.0.0.1" in [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
        assert "localhost" in san.get_values_for_type(x509.DNSName)
        assert (cert.not_valid_after_utc - cert.not_valid_before_utc).days >= 3649
        form = {"username": "root", "password": "tls password", "password2": "tls password"}
        token = csrf(client, "/setup")
        refused = client.post("/setup", data={**form, "csrf_token": token})
        assert refused.status_code == 400 and "referrer" in refused.text.lower()  # https: same-origin only
        made = client.post(
            "/setup", data={**form, "csrf_token": token}, headers={"Referer": f"{site.url}/setup"}
        )
        assert made.status_code == 302 and "Secure" in made.headers["set-cookie"]
        try:  # plain http on the TLS port: refused (cheroot says so in plain text, or just hangs up)
            plain = httpx.get(site.url.replace("https", "http") + "/api/health", timeout=5)
        except httpx.TransportError:
            pass
        else:
            assert plain.status_code == 400


def test_the_secret_key_is_made_once_and_kept_private(tmp_path: Path) -> None:
    first = load_secret_key(tmp_path / "admin")
    assert len(first) >= 32 and load_secret_key(tmp_path / "admin") == first
    assert stat.S_IMODE((tmp_path / "admin" / "secret_key").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "admin").stat().st_mode) == 0o700

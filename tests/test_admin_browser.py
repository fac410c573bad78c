"""The admin web page in real Chromium against a real `edge run` process.

One appliance (a real `edge run` with the admin page on a free loopback port, a real mosquitto, the
people clip, the real detector) serves the whole module, and the tests run in file order like one
admin's afternoon: the account is created on first visit, a viewer and a token are made, a camera is
added and a zone drawn on its snapshot, the person walking there becomes an event, a line is drawn on
the camera's snapshot and a crossing rule watches it, the page resists
forged posts and hostile names, a heavy question goes to a real blue-loop worker, every page is
photographed at laptop and phone size, and finally the login locks after ten wrong passwords (last,
because a lockout keyed by address would lock every later login too).
"""

from __future__ import annotations

import json
import re
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from tests.browser import SIZES, Recorder, launch, shoot
from tests.conftest import DATA, MODEL, REPO, needs_shared
from tests.support import Mosquitto, Subscriber, free_port, wait_until
from tests.test_blueloop import Server as Blueloop
from tests.test_bus import Edge

pytestmark = needs_shared

PEOPLE = DATA / "people" / "intel_one-by-one-person-detection.mp4"
SHOTS = REPO / "test-artifacts" / "screenshots"
DEVICE = "hall1"
ADMIN, ADMIN_PW = "alice", "correct horse battery"
VIEWER, VIEWER_PW = "victor", "only looking 123"
CAMERA = "lobby"
RULE = "walkway-person"
XSS = "<script>alert(1)</script>"
# The floor the visitors walk on: most of the lower picture (a person counts where their feet are).
ZONE = [(0.03, 0.55), (0.97, 0.55), (0.97, 0.98), (0.03, 0.98)]
# A tripwire across the walkway, drawn left to right: walking down the picture (towards the camera) is "in".
LINE, LINE_POINTS = "walkway-line", [(0.05, 0.7), (0.95, 0.7)]
CROSSING = "walkway-crossing"

PAGES = ["/", "/cameras", "/rules", "/events", "/events/1", "/ask", "/settings", "/settings/audit",
         f"/cameras/{CAMERA}/live.mjpeg"]  # fmt: skip
# Every /api route the pages use (the OpenAPI file must list at least these; each needs a login).
API = [
    ("GET", "/api/me"), ("GET", "/api/users"), ("POST", "/api/users"), ("DELETE", "/api/users/{name}"),
    ("GET", "/api/tokens"), ("POST", "/api/tokens"), ("DELETE", "/api/tokens/{id}"), ("GET", "/api/audit"),
    ("GET", "/api/settings"), ("POST", "/api/push/{channel}/test"), ("GET", "/api/status"),
    ("GET", "/api/cameras"), ("POST", "/api/cameras"), ("POST", "/api/cameras/test"),
    ("PUT", "/api/cameras/{name}"), ("DELETE", "/api/cameras/{name}"),
    ("GET", "/api/cameras/{name}/snapshot.jpg"), ("GET", "/api/cameras/{name}/live.jpg"),
    ("GET", "/api/rules"), ("POST", "/api/rules"), ("PUT", "/api/rules/{name}"),
    ("DELETE", "/api/rules/{name}"), ("POST", "/api/rules/preview"),
    ("GET", "/api/events"), ("GET", "/api/events/{id}"), ("POST", "/api/events/{id}/ack"),
    ("GET", "/api/events/{id}/snapshot.jpg"),
    ("GET", "/api/asks"), ("POST", "/api/asks"), ("GET", "/api/asks/{id}"), ("GET", "/api/asks/{id}/stream"),
]  # fmt: skip
# What a viewer's page could send (with a valid session and CSRF token): every one is a change.
CHANGES = [
    ("POST", "/api/cameras", {"name": "sneaky", "source": str(PEOPLE)}),
    ("PUT", f"/api/cameras/{CAMERA}", {"source": str(PEOPLE)}),
    ("DELETE", f"/api/cameras/{CAMERA}", None),
    ("POST", "/api/rules", {"name": "sneaky", "label": "person"}),
    ("PUT", f"/api/rules/{RULE}", {"name": RULE, "label": "person"}),
    ("DELETE", f"/api/rules/{RULE}", None),
    ("POST", "/api/users", {"username": "mallory", "password": "mallory password", "role": "admin"}),
    ("DELETE", f"/api/users/{ADMIN}", None),
    ("POST", "/api/tokens", {"name": "sneaky"}),
    ("DELETE", "/api/tokens/1", None),
    ("POST", "/api/events/1/ack", None),
    ("POST", "/api/push/phone/test", None),
    ("POST", "/api/asks", {"text": f"stop alerting on {CAMERA}", "camera": CAMERA}),
]

VIEWER_BUTTONS = [
    ("/cameras", ["#camera-save", "#camera-test", "#line-new"]),
    ("/rules", ["#rule-save", "#rule-preview-save", "#zone-clear"]),
    ("/settings", ["#user-form [type=submit]", "#token-form [type=submit]"]),
    ("/ask", ["#ask-submit"]),
]
AUDITED = [  # (what, the action says, the row names)
    ("camera added", r"camera", CAMERA),
    ("rule saved", r"rule", RULE),
    ("user added", r"user", VIEWER),
    ("token made", r"token", "ci-script"),
]
SHOT_PAGES = [("dashboard", "/"), ("cameras", "/cameras"), ("camera", f"/cameras/{CAMERA}"),
              ("rules", "/rules"), ("events", "/events"),
              ("event", "/events/<event>"), ("ask", "/ask"), ("settings", "/settings"),
              ("audit", "/settings/audit")]  # fmt: skip

expect.set_options(timeout=15_000)


@dataclass
class Appliance:
    edge: Edge
    url: str
    broker: Mosquitto
    folder: Path

    def tail(self, lines: int = 60) -> str:
        return "\n--- edge.log (tail) ---\n" + "\n".join(self.edge.text().splitlines()[-lines:])


class State:
    """What one test leaves for the next (the module is one story; see the docstring)."""

    event_id: str | None = None
    layout: list[str] = []  # noqa: RUF012 (filled by the tests, read by the screenshot test)
    shot: set[str] = set()  # noqa: RUF012


@pytest.fixture(scope="module")
def appliance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Appliance]:
    folder = tmp_path_factory.mktemp("admin")
    broker = Mosquitto(folder)
    broker.start()
    port = free_port()
    config = {
        "device": {"id": DEVICE}, "data_dir": str(folder / "data"), "model": {"path": str(MODEL)},
        "watch": [], "rules": [], "mqtt": {"url": broker.url, "stats_every_s": 1.0},
        "admin": {"listen": f"127.0.0.1:{port}"},
    }  # fmt: skip
    edge = Edge.running(config, folder)
    url = f"http://127.0.0.1:{port}"
    app = Appliance(edge, url, broker, folder)

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(f"{url}/api/health", timeout=1) as r:
                return json.loads(r.read()) == {"ok": True}
        except (OSError, ValueError):
            return False

    try:
        assert wait_until(lambda: healthy() or not edge.alive(), 60) and edge.alive(), (
            f"the admin page did not answer on {url}/api/health" + app.tail()
        )
        yield app
    finally:
        if edge.alive():
            edge.stop()
        broker.kill()


@pytest.fixture(scope="module")
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = launch(playwright)
        yield browser
        browser.close()


def new_context(browser: Browser, app: Appliance, recorder: Recorder) -> BrowserContext:
    context = browser.new_context(base_url=app.url, viewport={"width": 1280, "height": 800})
    context.set_default_timeout(20_000)
    return recorder.watch(context)


def log_in(page: Page, user: str, password: str) -> None:
    """Through the login form (a context that is logged in already is sent on from /login)."""
    page.goto("/login")
    if urlparse(page.url).path != "/login":
        return
    page.locator("#login-form [name=username]").fill(user)
    page.locator("#login-form [name=password]").fill(password)
    page.locator("#login-submit").click()
    expect(page).not_to_have_url(re.compile(r"/login"))


def csrf(page: Page) -> str:
    token = page.locator('meta[name="csrf-token"]').get_attribute("content")
    assert token, f"no <meta name=csrf-token> on {page.url}"
    return token


def wait_image(page: Page, selector: str, timeout_s: float, src: str = "") -> None:
    """Until the <img> has really loaded a picture (a broken or pending one has naturalWidth 0);
    `src`: from an address containing this (the camera's picture, not a stand-in)."""
    page.wait_for_function(
        """([sel, src]) => {
            const i = document.querySelector(sel);
            return !!i && i.complete && i.naturalWidth > 0 && i.currentSrc.includes(src);
        }""",
        arg=[selector, src],
        timeout=timeout_s * 1000,
    )


def no_changes_possible(page: Page, selectors: list[str]) -> list[str]:
    """The selectors a viewer can still use: present, visible and enabled."""
    usable = []
    for sel in selectors:
        loc = page.locator(sel)
        if loc.count() and loc.first.is_visible() and loc.first.is_enabled():
            usable.append(f"{sel} on {urlparse(page.url).path}")
    return usable


@pytest.fixture(scope="module")
def admin(chromium: Browser, appliance: Appliance, recorder: Recorder) -> Iterator[BrowserContext]:
    """The admin's browser, logged in (the account is created first if the first test did not run)."""
    context = new_context(chromium, appliance, recorder)
    page = context.new_page()
    page.goto("/setup")  # 404 once the account exists
    if page.locator("#setup-form").count():
        create_admin(page)
    log_in(page, ADMIN, ADMIN_PW)
    page.close()
    yield context
    context.close()


def create_admin(page: Page, password: str = ADMIN_PW, password2: str = ADMIN_PW) -> None:
    form = page.locator("#setup-form")
    form.locator("[name=username]").fill(ADMIN)
    form.locator("[name=password]").fill(password)
    form.locator("[name=password2]").fill(password2)
    page.locator("#setup-submit").click()


def test_a_fresh_appliance_asks_for_the_admin_account_and_then_nothing_opens_without_a_login(
    appliance: Appliance, chromium: Browser, recorder: Recorder
) -> None:
    context = new_context(chromium, appliance, recorder)
    page = context.new_page()
    for path in [*PAGES, "/login"]:
        page.goto(path)
        assert urlparse(page.url).path == "/setup", f"{path} on a fresh appliance went to {page.url}"
    for old in SHOTS.glob("*.png"):  # the artifacts are this run's pictures only
        old.unlink()
    State.layout += shoot(page, "setup", SHOTS, "/setup")
    State.shot.add("setup")
    page.set_viewport_size({"width": 1280, "height": 800})

    # A short password and a mistyped second one are refused (by the page and by the server, which
    # a script posting the form directly meets); nobody is created.
    create_admin(page, password="short", password2="short")
    expect(page).to_have_url(re.compile(r"/setup"))
    page.goto("/setup")
    create_admin(page, password2=ADMIN_PW + "!")
    expect(page).to_have_url(re.compile(r"/setup"))
    expect(page.locator("#setup-error")).to_contain_text(re.compile(r"match|same|differ", re.I))
    for password, password2 in [("short", "short"), (ADMIN_PW, ADMIN_PW + "!")]:
        fields = {"csrf_token": csrf(page), "username": ADMIN, "password": password, "password2": password2}
        refused = context.request.post("/setup", form=fields, max_redirects=0)
        assert refused.status == 400, (password, refused.status)
    page.goto("/")
    assert urlparse(page.url).path == "/setup", "a refused setup created an account anyway"

    page.goto("/setup")
    create_admin(page)
    expect(page).not_to_have_url(re.compile(r"/setup"))
    assert context.request.get("/setup", max_redirects=0).status == 404, "/setup still open after setup"

    # Without a session or token: pages redirect to the login, the API answers 401 JSON.
    anon = new_context(chromium, appliance, recorder)
    login = anon.request.get("/login")
    headers = login.headers
    assert "script-src 'self'" in headers.get("content-security-policy", ""), headers
    assert "frame-ancestors 'none'" in headers["content-security-policy"], headers
    assert headers.get("x-content-type-options") == "nosniff", headers
    open_pages = []
    for path in PAGES:
        r = anon.request.get(path, max_redirects=0)
        where = r.headers.get("location", "")
        if not (r.status in (302, 303) and "/login" in where and "next=" in where):
            open_pages.append(f"{path}: {r.status} {where}")
    assert not open_pages, f"pages that do not send a stranger to the login: {open_pages}"
    wrong = unprotected(anon, API)
    assert not wrong, f"API routes that answer without a login: {wrong}"

    # The admin makes a viewer and a token on the settings page.
    log_in(page, ADMIN, ADMIN_PW)
    page.goto("/settings")
    users = page.locator("#user-form")
    users.locator("[name=username]").fill(VIEWER)
    users.locator("[name=password]").fill(VIEWER_PW)
    users.locator("[name=role]").select_option("viewer")
    users.locator("[type=submit]").click()
    expect(page.locator("#users")).to_contain_text(VIEWER)
    expect(page.locator("#users tr", has_text=VIEWER)).to_contain_text("viewer")
    tokens = page.locator("#token-form")
    tokens.locator("[name=name]").fill("ci-script")
    tokens.locator("[type=submit]").click()
    shown = page.locator("#token-value")
    expect(shown).to_be_visible()
    token = (shown.input_value() if shown.evaluate("e => 'value' in e") else shown.inner_text()).strip()
    assert len(token) >= 32, f"token shown as {token!r}"

    # The token works for scripts; the OpenAPI file lists every route, and each needs a login.
    bearer = {"Authorization": f"Bearer {token}"}
    me = anon.request.get("/api/me", headers=bearer)
    assert me.status == 200 and ADMIN in me.text(), me.text()
    spec = anon.request.get("/api/openapi.json", headers=bearer)
    assert spec.status == 200, spec.text()
    base = urlparse((spec.json().get("servers") or [{}])[0].get("url", "")).path.rstrip("/")
    paths = {p if p.startswith("/api/") else base + p: ops for p, ops in spec.json()["paths"].items()}
    listed = {(m.upper(), re.sub(r"\{[^}]*\}", "{}", p)) for p, ops in paths.items() for m in ops
              if m in ("get", "post", "put", "delete", "patch")}  # fmt: skip
    missing = {(m, re.sub(r"\{[^}]*\}", "{}", p)) for m, p in API} - listed
    assert not missing, f"routes the OpenAPI file does not describe: {sorted(missing)}"
    wrong = unprotected(anon, [(m, p) for m, p in sorted(listed) if p != "/api/health"])
    assert not wrong, f"routes in the OpenAPI file that answer without a login: {wrong}"
    assert anon.request.get("/api/openapi.json").status == 401

    # A viewer sees the pages but can change nothing: the buttons are gone, the calls are 403.
    viewer = new_context(chromium, appliance, recorder)
    vpage = viewer.new_page()
    log_in(vpage, VIEWER, VIEWER_PW)
    usable = []
    for path, buttons in VIEWER_BUTTONS:
        vpage.goto(path)
        expect(vpage.locator("#nav-dashboard")).to_be_visible()
        usable += no_changes_possible(vpage, buttons)
    assert not usable, f"change buttons a viewer can press: {usable}"
    assert viewer.request.get("/api/status").status == 200, "a viewer cannot even read the status"
    token_header = {"X-CSRFToken": csrf(vpage)}
    allowed = []
    for method, path, body in CHANGES:
        r = viewer.request.fetch(path, method=method, data=body, headers=token_header)
        if r.status != 403:
            allowed.append(f"{method} {path}: {r.status} {r.text()[:100]}")
    assert not allowed, f"changes a viewer's session was not refused with 403: {allowed}"
    names = [u["name"] for u in anon.request.get("/api/users", headers=bearer).json()["users"]]
    assert "mallory" not in names and ADMIN in names, names
    for context_ in (context, anon, viewer):
        context_.close()


def unprotected(anon: BrowserContext, routes: list[tuple[str, str]]) -> list[str]:
    """The routes that answer a request with no session and no token other than 401 JSON with an error
    (path parameters filled with a plausible value)."""
    wrong = []
    for method, route in routes:
        path = re.sub(r"\{[^}]*\}", "1", route).replace("/cameras/1", f"/cameras/{CAMERA}")
        body = {} if method in ("POST", "PUT", "PATCH") else None
        r = anon.request.fetch(path, method=method, data=body, max_redirects=0)
        try:
            error = r.json().get("error")
        except ValueError:
            error = None
        if r.status != 401 or not error:
            wrong.append(f"{method} {path}: {r.status} {r.text()[:80]!r}")
    return wrong


def test_the_admin_adds_a_camera_draws_a_zone_and_a_person_walking_there_becomes_an_event(
    appliance: Appliance, admin: BrowserContext
) -> None:
    sub = Subscriber(appliance.broker.port, [f"reflex/{DEVICE}/#"], client_id="admin-browser-test")
    page = admin.new_page()
    try:
        page.goto("/cameras")
        form = page.locator("#camera-form")
        form.locator("[name=name]").fill(CAMERA)
        # "Test connection" says exactly why a source does not work...
        form.locator("[name=source]").fill(str(PEOPLE.with_name("no-such-clip.mp4")))
        page.locator("#camera-test").click()
        result = page.locator("#camera-test-result")
        expect(result).to_contain_text(re.compile(r"no such file|not found|does not exist", re.I))
        # ...and shows the frame when it does.
        form.locator("[name=source]").fill(str(PEOPLE))
        form.locator("[name=enabled]").check()
        form.locator("[name=loop]").check()
        page.locator("#camera-test").click()
        wait_image(page, "#camera-test-result img", 20)
        expect(result).to_contain_text("768")  # the clip's size: 768 x 432
        expect(result).to_contain_text("432")
        page.locator("#camera-save").click()
        expect(page.locator(f'tr[data-camera="{CAMERA}"]')).to_be_visible()

        # The zone is drawn by clicking four corners of the floor on the camera's snapshot.
        page.goto("/rules")
        form = page.locator("#rule-form")
        form.locator("[name=name]").fill(RULE)
        form.locator("select[name=label]").select_option("person")
        form.locator("select[name=camera]").select_option(CAMERA)
        # The camera's first keyframe (it started seconds ago; a blank stand-in shows until then).
        wait_image(page, "#zone-snapshot", 40, src="/snapshot.jpg")
        snapshot = page.locator("#zone-snapshot")
        box = snapshot.bounding_box()
        assert box and box["width"] > 100, box

        def tap(x: float, y: float) -> None:  # where a user clicks, whatever is drawn on top
            snapshot.click(position={"x": x * box["width"], "y": y * box["height"]}, force=True)

        for x, y in [*ZONE, (0.5, 0.2)]:
            tap(x, y)
        page.locator("#zone-undo").click()  # the stray fifth point goes
        zone = json.loads(form.locator("[name=zone]").input_value())
        assert len(zone) == 4, zone
        for (x, y), (zx, zy) in zip(ZONE, zone, strict=True):
            assert abs(x - zx) < 0.02 and abs(y - zy) < 0.02, (ZONE, zone)
        polygon = page.locator("#zone-svg polygon, #zone-svg polyline").first
        expect(polygon).to_be_attached()
        assert len(re.findall(r"[-\d.]+[ ,]+[-\d.]+", polygon.get_attribute("points") or "")) == 4
        page.locator("#rule-save").click()
        expect(page.locator(f'tr[data-rule="{RULE}"]')).to_be_visible()
        saved = next(r for r in admin.request.get("/api/rules").json()["rules"] if r["name"] == RULE)
        assert saved["label"] == "person" and len(saved["zone"]) == 4, saved

        # The clip plays on the dashboard: the picture changes, fps above zero, the broker connected.
        page.goto("/")
        card = page.locator(f"#camera-{CAMERA}")
        expect(card.locator(".online")).to_have_text("online", timeout=30_000)
        pictures: set[int] = set()
        deadline = time.monotonic() + 20
        while len(pictures) < 3 and time.monotonic() < deadline:
            if (digest := card.locator("img.live").evaluate(PIXEL_DIGEST)) is not None:
                pictures.add(digest)
            page.wait_for_timeout(500)
        assert len(pictures) >= 3, f"the live view showed {len(pictures)} different pictures in 20 s"
        assert wait_until(lambda: number(card.locator(".fps").inner_text()) > 0, 10), card.inner_text()
        state = page.locator("#broker-state").inner_text()
        assert re.search(r"\bconnected\b", state, re.I) and not re.search(r"not connected", state, re.I), (
            state
        )

        # A person walks on the floor: an alert of this rule on MQTT, the event on the Events page, which
        # the admin has open: a banner there says a new event came and its link shows it.
        page.goto("/events")
        topic = f"reflex/{DEVICE}/alerts"
        assert wait_until(lambda: any(a["rule"] == RULE for a in sub.json_on(topic)), 90), (
            f"no alert of {RULE} on {topic}" + appliance.tail()
        )
        alert = next(a for a in sub.json_on(topic) if a["rule"] == RULE)
        assert alert["camera"] == CAMERA and alert["label"] == "person", alert
        State.event_id = str(alert["event_id"])
        row = page.locator(f'tr[data-event="{State.event_id}"]')
        if not row.count():  # it started after the page was loaded (it may have come just before)
            expect(page.locator("#events-new")).to_be_visible(timeout=15_000)
            expect(page.locator("#events-new")).to_contain_text("new event")
            page.locator("#events-new a").click()
        expect(row).to_be_visible()
        expect(row).to_contain_text("person")
        expect(row).to_contain_text(CAMERA)
        wait_image(page, f'tr[data-event="{State.event_id}"] img.snapshot', 10)
        page.goto(f"/events/{State.event_id}")
        wait_image(page, "#event-snapshot", 10)
        expect(page.locator("#event-ack")).to_be_enabled()

        # An Events page left open on "from now on" tells of the next visit without a reload.
        page.goto(f"/events?since={time.time():.0f}")
        expect(page.locator("tr[data-event]")).to_have_count(0)
        expect(page.locator("#events-new")).to_be_visible(timeout=60_000)
        page.locator("#events-new a").click()
        expect(page.locator("tr[data-event]").first).to_contain_text("person")

        # The dashboard's Alerts button mutes the camera's alerts and unmutes them (the switch MQTT has).
        page.goto("/")
        button = page.locator(f'#camera-{CAMERA} button.switch-toggle[data-switch="alerts"]')
        expect(button).to_have_text("Alerts: on")
        button.click()
        expect(button).to_have_text("Alerts: off")
        assert admin.request.get("/api/status").json()["cameras"][CAMERA]["alerts"] is False
        button.click()
        expect(button).to_have_text("Alerts: on")
        assert admin.request.get("/api/status").json()["cameras"][CAMERA]["alerts"] is True
    finally:
        page.close()
        sub.close()


def test_the_admin_draws_a_line_on_the_cameras_snapshot_and_a_crossing_rule_watches_it(
    appliance: Appliance, admin: BrowserContext
) -> None:
    page = admin.new_page()
    try:
        page.goto(f"/cameras/{CAMERA}")
        wait_image(page, "#line-snapshot", 40, src="/snapshot.jpg")
        snapshot = page.locator("#line-snapshot")
        box = snapshot.bounding_box()
        assert box and box["width"] > 100, box

        def at(x: float, y: float) -> dict[str, float]:
            return {"x": x * box["width"], "y": y * box["height"]}

        status = page.locator("#line-status")
        snapshot.click(position=at(0.5, 0.5), force=True)  # before New line: it says what to do
        expect(status).to_contain_text("New line")
        page.locator("#line-new").click()  # without a name: it asks for one
        expect(status).to_contain_text("Name the line")
        page.locator("#line-name").fill(LINE)
        page.locator("#line-new").click()
        (x0, y0), (x1, y1) = LINE_POINTS
        snapshot.click(position=at(x0, y0), force=True)
        snapshot.click(position=at(0.5, 0.2), force=True)
        page.locator("#line-undo").click()  # the stray point goes
        snapshot.dblclick(position=at(x1, y1), force=True)  # the last point, and the line is done
        item = page.locator(f'#line-list li[data-line="{LINE}"]')
        expect(item).to_contain_text("2 points")
        drawn = page.locator(f'#line-svg g[data-line="{LINE}"]')
        expect(drawn.locator("polyline")).to_have_count(1)
        # The "in" arrow points to the right-hand side walking from the first point to the last: down here.
        line_y = drawn.locator("circle.first").bounding_box()["y"]
        word = drawn.locator("text.line-in")
        expect(word).to_have_text("in")
        assert word.bounding_box()["y"] > line_y + 5, (word.bounding_box(), line_y)
        assert drawn.locator("text.line-out").bounding_box()["y"] < line_y - 5
        item.locator("select.line-direction").select_option("in")
        expect(drawn.locator("text.line-out.faded")).to_have_count(1)  # out no longer alerts
        item.locator("input.line-labels").fill("person")
        lines = json.loads(page.locator("#camera-form [name=lines]").input_value())
        assert lines[LINE]["direction"] == "in" and len(lines[LINE]["points"]) == 2, lines
        for (x, y), (lx, ly) in zip(LINE_POINTS, lines[LINE]["points"], strict=True):
            assert abs(x - lx) < 0.02 and abs(y - ly) < 0.02, (LINE_POINTS, lines)
        page.locator("#camera-save").click()
        expect(page.locator(f'tr[data-camera="{CAMERA}"] td.lines')).to_contain_text(LINE)

        # The camera's config has the line (the API shows what the control surface holds), and the camera
        # still captures (it was restarted with the line).
        camera = next(c for c in admin.request.get("/api/cameras").json()["cameras"] if c["name"] == CAMERA)
        saved = camera["lines"][LINE]
        assert saved["direction"] == "in" and saved["labels"] == ["person"] and len(saved["points"]) == 2, (
            camera
        )
        assert wait_until(lambda: admin.request.get(f"/api/cameras/{CAMERA}/live.jpg").status == 200, 30)
        page.goto(f"/cameras/{CAMERA}")  # drawn again from the saved config
        expect(page.locator(f'#line-svg g[data-line="{LINE}"] text.line-in')).to_have_text("in")

        # A crossing rule on it: the line is offered for the camera, the zone editor gives way to it.
        page.goto("/rules")
        form = page.locator("#rule-form")
        form.locator("[name=name]").fill(CROSSING)
        form.locator("select[name=label]").select_option("person")
        form.locator("select[name=camera]").select_option(CAMERA)
        expect(form.locator("select[name=direction]")).to_be_disabled()
        form.locator("select[name=line]").select_option(LINE)
        expect(page.locator("#zone-editor")).to_be_hidden()
        form.locator("select[name=direction]").select_option("in")
        page.locator("#rule-save").click()
        row = page.locator(f'tr[data-rule="{CROSSING}"]')
        expect(row).to_be_visible()
        expect(row.locator("td.zone")).to_contain_text(f"line {LINE}")
        expect(row.locator("td.modes")).to_contain_text("home")
        rule = next(r for r in admin.request.get("/api/rules").json()["rules"] if r["name"] == CROSSING)
        assert (rule["line"], rule["direction"], rule["zone"], rule["cameras"]) == (
            LINE,
            "in",
            None,
            [CAMERA],
        )
    finally:
        page.close()


POST_FORMS = """() => [...document.querySelectorAll('form')]
  .filter((f) => f.method.toLowerCase() === 'post')
  .map((f) => ({
    action: new URL(f.action).pathname,
    fields: Object.fromEntries([...new FormData(f)].filter(([, v]) => typeof v === 'string')),
  }))"""

PIXEL_DIGEST = """img => {
  if (!img.complete || !img.naturalWidth) return null;
  const c = document.createElement('canvas');
  c.width = img.naturalWidth; c.height = img.naturalHeight;
  const g = c.getContext('2d');
  g.drawImage(img, 0, 0);
  const d = g.getImageData(0, 0, c.width, c.height).data;
  let h = 0;
  for (let i = 0; i < d.length; i += 97) h = (h * 31 + d[i]) | 0;
  return h;
}"""


def number(text: str) -> float:
    m = re.search(r"\d+(?:\.\d+)?", text)
    return float(m.group()) if m else 0.0


def test_forged_posts_are_refused_and_hostile_names_show_as_text(
    appliance: Appliance, chromium: Browser, admin: BrowserContext, recorder: Recorder
) -> None:
    page = admin.new_page()
    try:
        page.goto("/rules")
        token = csrf(page)
        # A call with the admin's session but no CSRF token (what a forged cross-site post carries).
        forged = admin.request.post("/api/rules", data={"name": "forged", "label": "person"})
        assert forged.status in (400, 403), (forged.status, forged.text())
        names = [r["name"] for r in admin.request.get("/api/rules").json()["rules"]]
        assert "forged" not in names, names

        # The camera form posted without its csrf_token (as a forged form on another site would be).
        page.goto("/cameras")
        form = page.locator("#camera-form")
        form.locator("[name=name]").fill("forged")
        form.locator("[name=source]").fill(str(PEOPLE))
        form.locator("[name=csrf_token]").evaluate("input => input.remove()")
        with page.expect_response(lambda r: r.request.method == "POST") as posted:
            page.locator("#camera-save").click()
        assert posted.value.status in (400, 403), posted.value.status
        page.goto("/cameras")
        expect(page.locator('tr[data-camera="forged"]')).to_have_count(0)

        # A login form posted without its csrf_token: the right password does not log anyone in.
        stranger = new_context(chromium, appliance, recorder)
        spage = stranger.new_page()
        spage.goto("/login")
        spage.evaluate(
            """([user, password]) => {
                const form = document.createElement('form');
                form.method = 'post'; form.action = '/login';
                for (const [k, v] of [['username', user], ['password', password]]) {
                  const input = document.createElement('input');
                  input.type = 'hidden'; input.name = k; input.value = v; form.appendChild(input);
                }
                document.body.appendChild(form);
            }""",
            [ADMIN, ADMIN_PW],
        )
        with spage.expect_response(lambda r: r.request.method == "POST") as posted:
            spage.evaluate("() => document.body.lastElementChild.submit()")
        assert posted.value.status in (400, 403), posted.value.status
        assert stranger.request.get("/api/me").status == 401, "a login without CSRF token got a session"
        stranger.close()

        # A rule named like a script shows as its text, and nothing runs. Rule names are limited to
        # a-z, 0-9, '_' and '-' (they go into MQTT topics and Home Assistant ids), so the name is refused
        # and the refusal, which quotes it, shows it as text. Its alert text is free: it shows in the list.
        page.goto("/rules")
        form = page.locator("#rule-form")
        form.locator("[name=name]").fill(XSS)
        form.locator("select[name=label]").select_option("person")
        form.locator("[name=text]").fill(XSS)
        page.locator("#rule-save").click()
        expect(page.locator("#rule-error").filter(has_text=XSS)).to_be_visible()
        assert page.locator("tr[data-rule]").filter(has_text=XSS).count() == 0
        made = admin.request.post(
            "/api/rules",
            data={"name": "script-text", "label": "person", "cameras": [CAMERA], "text": XSS},
            headers={"X-CSRFToken": token},
        )
        assert made.ok, made.text()
        page.goto("/rules")
        expect(page.locator('tr[data-rule="script-text"]')).to_contain_text(XSS)
        ran = page.evaluate(
            "() => [...document.scripts].filter(s => s.textContent.includes('alert(1)')).length"
        )
        assert ran == 0, "a rule's name or text became a <script> element"
        page.goto("/ask")
        form = page.locator("#ask-form")
        form.locator("textarea[name=text]").fill("<img src=x onerror=alert(2)>")
        page.locator("#ask-submit").click()
        expect(page.locator("#ask-answers li").first).to_be_visible()
        assert page.locator("img[src=x]").count() == 0, "the question became an <img> element"
        for path in ("/", "/events", "/rules", "/ask"):
            page.goto(path)
        page.wait_for_timeout(1500)  # the dashboard's and lists' scripts have filled the pages in
        assert not recorder.dialogs, f"a page ran a script from data: {recorder.dialogs}"

        # The audit log names every change: who, what, from where.
        page.goto("/settings/audit")
        audit = [r.locator("td").all_inner_texts() for r in page.locator("#audit tr").all()]
        audit = [cells for cells in audit if len(cells) >= 4]  # who, action, at, remote (, detail)
        for what, action, name in AUDITED:
            rows = [c for c in audit if re.search(action, c[1], re.I) and name in " ".join(c)]
            assert rows, f"the audit log has no row for {what}: {audit[:20]}"
            who, _, at, remote = rows[-1][:4]  # the oldest: the change itself, not a later edit
            assert ADMIN in who and remote == "127.0.0.1" and at.strip(), f"{what}: {rows[-1]}"
        flat = " ".join(" ".join(c) for c in audit)
        assert "forged" not in flat and "mallory" not in flat and "sneaky" not in flat, audit

        # A viewer looking at the event cannot acknowledge it.
        assert State.event_id, "the camera test made no event"
        viewer = new_context(chromium, appliance, recorder)
        vpage = viewer.new_page()
        log_in(vpage, VIEWER, VIEWER_PW)
        vpage.goto(f"/events/{State.event_id}")
        wait_image(vpage, "#event-snapshot", 10)
        assert not no_changes_possible(vpage, ["#event-ack"]), "a viewer can press Acknowledge"
        ack = viewer.request.post(f"/api/events/{State.event_id}/ack", headers={"X-CSRFToken": csrf(vpage)})
        assert ack.status == 403, (ack.status, ack.text())

        # Every form the admin's pages post (the list cannot go stale: it is read from the pages), posted
        # by the viewer with the viewer's own CSRF token, is refused; promoting themselves above all.
        forms = []
        for path in ("/cameras", "/rules", f"/events/{State.event_id}", "/settings"):
            page.goto(path)
            forms += page.evaluate(POST_FORMS)
        forms = [f for f in forms if f["action"] != "/logout"]
        assert len(forms) >= 8, forms  # add/remove camera and rule, ack, users, roles, tokens
        vtoken = csrf(vpage)
        allowed = []
        for f in forms:
            fields = {**f["fields"], "csrf_token": vtoken}
            if fields.get("username") == VIEWER and "role" in fields:
                fields["role"] = "admin"
            r = viewer.request.post(f["action"], form=fields, max_redirects=0)
            if r.status != 403:
                allowed.append(f"POST {f['action']}: {r.status}")
        assert not allowed, f"forms a viewer could post: {allowed}"
        users = admin.request.get("/api/users").json()["users"]
        assert {u["name"]: u["role"] for u in users}.get(VIEWER) == "viewer", users
        viewer.close()
    finally:
        page.close()


def test_a_heavy_question_says_please_wait_then_shows_the_result_while_the_dashboard_keeps_refreshing(
    appliance: Appliance, admin: BrowserContext
) -> None:
    folder = appliance.folder / "blueloop"
    folder.mkdir(exist_ok=True)
    reports = str(folder / "reports")
    args = ("--model-file", str(MODEL), "--reports", reports, "--slow-ms", "6000")
    worker = Blueloop(folder, appliance.broker, *args, name="bl-admin").start()
    dashboard, ask = admin.new_page(), admin.new_page()
    try:
        dashboard.goto("/")
        expect(dashboard.locator("#refreshed-at")).not_to_be_empty()
        ask.goto("/ask")
        ask.evaluate("() => { window.stillTheSamePage = true }")
        form = ask.locator("#ask-form")
        form.locator("textarea[name=text]").fill(f"describe what you see on {CAMERA}")
        form.locator("select[name=camera]").select_option(CAMERA)
        ask.locator("#ask-submit").click()
        expect(ask.locator("#ask-answers li[data-kind=ack]").first).to_contain_text("Please wait a moment")
        results = ask.locator("#ask-answers li[data-kind=result]")
        assert results.count() == 0, "the result came before the job could have run"
        refreshes = {dashboard.locator("#refreshed-at").inner_text()}
        deadline = time.monotonic() + 60
        while not results.count() and time.monotonic() < deadline:
            refreshes.add(dashboard.locator("#refreshed-at").inner_text())
            ask.wait_for_timeout(250)
        assert results.count(), "no result on the Ask page within 60 s" + appliance.tail() + worker.log()
        assert results.first.inner_text().strip(), "an empty result"
        assert ask.evaluate("() => window.stillTheSamePage === true"), "the Ask page reloaded"
        assert len(refreshes) >= 3, f"the dashboard refreshed {len(refreshes) - 1} times in a 5 s job"
    finally:
        dashboard.close()
        ask.close()
        worker.stop()


def test_a_mode_switched_over_mqtt_shows_on_an_open_dashboard_without_a_reload(
    appliance: Appliance, admin: BrowserContext
) -> None:
    page = admin.new_page()
    sub = Subscriber(appliance.broker.port, [f"reflex/{DEVICE}/mode/state"], client_id="admin-mode-test")
    try:
        page.goto("/")
        page.evaluate("() => { window.stillTheSamePage = true }")
        was = page.locator("#mode-name").inner_text()
        other = "night" if was != "night" else "away"
        sub.publish(f"reflex/{DEVICE}/mode/set", other)
        expect(page.locator("#mode-name")).to_have_text(other, timeout=10_000)
        expect(page.locator("#mode-rules")).to_contain_text("by mqtt")
        expect(page.locator("#mode-select")).to_have_value(other)
        assert page.evaluate("() => window.stillTheSamePage === true"), "the dashboard reloaded"
        sub.publish(f"reflex/{DEVICE}/mode/set", was)  # as it was, for the tests after this one
        expect(page.locator("#mode-name")).to_have_text(was, timeout=10_000)
    finally:
        page.close()
        sub.close()


def test_every_page_at_laptop_and_phone_size_has_nothing_overflowing_or_overlapping(
    appliance: Appliance, chromium: Browser, admin: BrowserContext, recorder: Recorder
) -> None:
    assert "setup" in State.shot, "the setup page is photographed by the first test: run the whole module"
    problems = list(State.layout)
    stranger = new_context(chromium, appliance, recorder)
    problems += shoot(stranger.new_page(), "login", SHOTS, "/login")
    stranger.close()
    event = State.event_id or str(admin.request.get("/api/events").json()["events"][0]["id"])
    page = admin.new_page()
    for name, path in SHOT_PAGES:
        problems += shoot(page, name, SHOTS, path.replace("<event>", event))
    page.close()
    names = ["setup", "login"] + [name for name, _ in SHOT_PAGES]
    missing = [
        f"{n}-{w}x{h}" for n in names for w, h in SIZES.values() if not (SHOTS / f"{n}-{w}x{h}.png").exists()
    ]
    assert not missing, missing
    assert not problems, "layout problems:\n" + "\n".join(problems)
    assert not recorder.csp_violations, recorder.csp_violations
    assert not recorder.dialogs, recorder.dialogs


def test_ten_wrong_passwords_lock_the_login(
    appliance: Appliance, chromium: Browser, recorder: Recorder
) -> None:
    context = new_context(chromium, appliance, recorder)
    page = context.new_page()
    page.goto("/login")
    for attempt in range(1, 11):
        page.locator("#login-form [name=username]").fill(ADMIN)
        page.locator("#login-form [name=password]").fill(f"guess number {attempt}")
        page.locator("#login-submit").click()
        error = page.locator("#login-error")
        expect(error).to_be_visible()
        if attempt < 10:
            assert not re.search(r"locked|too many", error.inner_text(), re.I), (attempt, error.inner_text())
    # Now even the right password is refused, with a message that says why.
    page.locator("#login-form [name=username]").fill(ADMIN)
    page.locator("#login-form [name=password]").fill(ADMIN_PW)
    page.locator("#login-submit").click()
    expect(page.locator("#login-error")).to_contain_text(re.compile(r"locked|too many", re.I))
    expect(page).to_have_url(re.compile(r"/login"))
    assert context.request.get("/api/me").status == 401
    context.close()

"""The admin page's own pages: dashboard and live view, cameras, rules and zones, events, asks.

Real parts throughout: the real admin app on the real cheroot server on a loopback port, driven over
real HTTP with httpx (cookies, CSRF tokens and streams as a browser meets them); behind it a real
control surface, instruction router and red loop with the real detector, fed the real people clip
frame by frame from the test (so what the loop has seen at each step is known), on a real SQLite
event log whose journal writes real snapshot files.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest

from edge.admin import create_app
from edge.admin.server import AdminServer
from edge.admin.services import AdminServices
from edge.capture import CaptureStats, open_source
from edge.config import EdgeConfig, RuleConfig
from edge.config.models import ModelConfig
from edge.control import Control
from edge.housekeeping import outbox_numbers
from edge.instructions import Router
from edge.journal import Journal
from edge.live import LiveView
from edge.narrator import Narrator
from edge.outbox import Topics
from edge.redloop import RedLoop
from edge.reflex import build_detector
from edge.rules import Rule
from edge.store import EventLog
from edge.types import Frame
from edge.wiring import known_labels
from tests.admin_support import ADMIN, api, csrf, set_up_admin
from tests.conftest import DATA, MODEL, REPO, needs_shared
from tests.support import free_port, wait_until

pytestmark = needs_shared

PEOPLE = DATA / "people" / "intel_one-by-one-person-detection.mp4"
TOPICS = Topics("reflex", "pages1")
CAMERA = "lobby"
XSS = "<script>alert(1)</script>"
IN_VIEW = 120
"""By this frame the clip's first visitor has been in view for a while (tests/test_scan.py VISITS)."""
DOOR = {"points": [[0.05, 0.62], [0.95, 0.62]], "direction": "in", "labels": ["person"]}
"""The config camera's line: across the floor (walking down the picture is "in")."""


class Rig:
    """The lobby camera's red loop behind a control surface and router, served by the admin page."""

    def __init__(self, data: Path, detector: object) -> None:
        self.cfg = EdgeConfig(
            watch=[],
            data_dir=str(data),
            model=ModelConfig(path=str(MODEL)),
            cameras={CAMERA: {"source": str(PEOPLE), "lines": {"door": DOOR}}},
            admin={"listen": "127.0.0.1:8080"},
        )
        self.events = EventLog(data, reserve_bytes=0)
        self.events.ensure_camera(CAMERA, str(PEOPLE))
        fire = Rule(RuleConfig(name="fire", label="fire"))
        self.journal = Journal(self.events, TOPICS, [fire])
        self.control = Control(
            self.events, TOPICS, self.journal, known_labels=known_labels(self.cfg, REPO),
            detector=lambda: detector,
        )  # fmt: skip
        rules = self.control.load_rules([fire])
        self.control.load_cameras(self.cfg.cameras)
        self.live = LiveView()
        self.narrator = Narrator(self.control, self.events)
        sinks = [self.journal, self.narrator]
        self.loop = RedLoop(CAMERA, self.cfg, rules, detector, sinks, live=self.live)
        self.control.attach({CAMERA: self.loop}, None)
        self.router = Router(self.control, self.live, self.events, self.control.known_labels)
        self.router.narrator = self.narrator
        self.control.router = self.router
        self.capture = CaptureStats(online=True, reason="connected")
        self.started = time.monotonic()
        self.services = AdminServices(self.control, self.events, self.live, self.cfg, data, self.status)
        self.server = self.serve()
        self.url = self.server.url

    def serve(self) -> AdminServer:
        """An admin app and server over this rig (a second one shares the accounts and sessions)."""
        server = AdminServer(
            create_app(self.services, self.cfg.admin, testing=True), "127.0.0.1", free_port()
        )
        server.start()
        return server

    def status(self) -> dict[str, Any]:
        """The dashboard's numbers in Appliance.status()'s shape, from the loop's own counters."""
        infer = self.loop.times.get("infer")
        median = infer.recent_median() if infer is not None else None
        camera = {
            "online": self.capture.online, "reason": self.capture.reason, "fps": self.capture.fps,
            "frames": self.loop.frames, "dropped_frames": 0,
            "gate_skip_ratio": round(self.loop.gate.stats.skip_ratio, 4),
            "inference_ms": round(median, 2) if median is not None else None,
            "active_events": len(self.loop.events.open_events()),
            "detect": self.loop.detect_enabled, "alerts": self.loop.alerts_enabled,
            "source": str(PEOPLE), "origin": "config",
        }  # fmt: skip
        return {
            "version": "test",
            "uptime_s": time.monotonic() - self.started,
            "cameras": {CAMERA: camera},
            "outbox": outbox_numbers(self.events, self.journal),
            "broker": {"configured": False, "url": None, "connected": False},
            "push": {},
            "blueloop": {"broker_connected": False, "open_jobs": 0, "last_answer_at": None},
        }

    def feed(self, frames: list, start: int, stop: int) -> None:
        t0 = time.monotonic()
        for index, pts, image in frames[start:stop]:
            self.loop.process(Frame(CAMERA, index, pts, image, time.monotonic()))
        self.capture.fps = round((stop - start) / max(time.monotonic() - t0, 1e-3), 1)

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, follow_redirects=False, timeout=20)

    def close(self) -> None:
        self.server.stop()
        self.narrator.stop()
        self.router.close()
        self.journal.close()
        self.events.close()


def form(client: httpx.Client, path: str, fields: dict[str, Any], page: str = "/rules") -> httpx.Response:
    """A classic form post with the csrf_token field the page's form carries."""
    return client.post(path, data={**fields, "csrf_token": csrf(client, page)})


def jpeg_size(data: bytes) -> tuple[int, int]:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None, "not a JPEG"
    return image.shape[1], image.shape[0]


@pytest.fixture(scope="module")
def frames() -> list[tuple[int, float, np.ndarray]]:
    """The first frames of the people clip: the quiet start and the first visitor walking in."""
    source = open_source(str(PEOPLE))
    out = []
    while len(out) < IN_VIEW + 20 and (item := source.read()) is not None:
        out.append(item)
    source.close()
    return out


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory, frames: list) -> Iterator[Rig]:
    detector = build_detector(ModelConfig(path=str(MODEL)), REPO)
    rig = Rig(tmp_path_factory.mktemp("pages") / "data", detector)
    try:
        rig.control.add_rule(RuleConfig(name="lobby-person", label="person", cameras=[CAMERA]), "admin")
        rig.feed(frames, 0, IN_VIEW)
        yield rig
    finally:
        rig.close()


@pytest.fixture(scope="module")
def admin(rig: Rig) -> httpx.Client:
    """The first admin, made on the /setup page; a session cookie from then on."""
    client = rig.client()
    set_up_admin(client)
    return client


# -- dashboard and live view -------------------------------------------------------------------------


def test_the_live_view_is_the_latest_keyframe_with_the_current_boxes(rig: Rig, admin: httpx.Client) -> None:
    keyframe = rig.live.keyframes[CAMERA].last(60)[-1]
    height, width = keyframe.image.shape[:2]
    live = admin.get(f"/api/cameras/{CAMERA}/live.jpg")
    assert live.status_code == 200 and live.headers["content-type"] == "image/jpeg", live.text[:200]
    assert live.headers["cache-control"] == "no-store"
    assert jpeg_size(live.content) == (width, height)
    # The snapshot (what the zone editor draws on) is the same picture without boxes: a person is in
    # view, so the two differ where the box is drawn.
    plain = admin.get(f"/api/cameras/{CAMERA}/snapshot.jpg")
    assert plain.status_code == 200 and jpeg_size(plain.content) == (width, height)
    assert any(t.label == "person" for t in rig.live.get(CAMERA).tracks)
    drawn = cv2.imdecode(np.frombuffer(live.content, np.uint8), cv2.IMREAD_COLOR).astype(int)
    bare = cv2.imdecode(np.frombuffer(plain.content, np.uint8), cv2.IMREAD_COLOR).astype(int)
    assert (np.abs(drawn - bare).max(axis=2) > 60).sum() > 200, "no box drawn on the live view"

    missing = admin.get("/api/cameras/nowhere/live.jpg")
    assert missing.status_code == 404 and "nowhere" in missing.json()["error"]


def test_the_mjpeg_stream_sends_pictures_until_the_client_leaves(rig: Rig, admin: httpx.Client) -> None:
    with admin.stream("GET", f"/cameras/{CAMERA}/live.mjpeg") as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("multipart/x-mixed-replace; boundary=")
        boundary = stream.headers["content-type"].split("boundary=")[1].encode()
        got = b""
        for chunk in stream.iter_bytes():
            got += chunk
            if got.count(b"--" + boundary) >= 1 and b"\xff\xd9" in got:
                break
    part = got.split(b"\r\n\r\n", 1)[1]
    assert part.startswith(b"\xff\xd8"), "the part is not a JPEG"


def test_the_dashboard_shows_each_camera_and_the_status_numbers(rig: Rig, admin: httpx.Client) -> None:
    page = admin.get("/")
    assert page.status_code == 200, page.text[:300]
    html = page.text
    markers = [f'id="camera-{CAMERA}"', 'class="live"', 'class="online', 'id="outbox-depth"',
               'id="outbox-shed"', 'id="broker-state"', 'id="refreshed-at"', "dashboard.js"]  # fmt: skip
    for marker in markers:
        assert marker in html, marker
    assert "<script>" not in html and " style=" not in html, "inline script or style on the dashboard"
    status = admin.get("/api/status").json()
    assert status["cameras"][CAMERA]["frames"] == IN_VIEW
    assert status["cameras"][CAMERA]["online"] is True


def test_the_dashboard_pauses_and_resumes_a_cameras_detection(rig: Rig, admin: httpx.Client) -> None:
    """The Detection / Alerts buttons flip the camera's switches through the control surface (stored,
    audited, the red loop itself paused), and the card shows what the appliance now does."""
    assert 'class="secondary switch-toggle" data-switch="detect"' in admin.get("/").text
    url = f"/api/cameras/{CAMERA}/switches/detect"
    try:
        paused = api(admin, "PUT", url, {"on": False})
        assert paused.status_code == 200
        assert paused.json() == {"camera": CAMERA, "switch": "detect", "on": False}
        assert rig.loop.detect_enabled is False and rig.events.switches()[CAMERA]["detect"] is False
        assert admin.get("/api/status").json()["cameras"][CAMERA]["detect"] is False
        assert 'data-switch="detect"\n            aria-pressed="false">Detection: off' in admin.get("/").text
        assert rig.events.audit_log()[0]["action"] == "switch"
        assert rig.events.audit_log()[0]["who"] == f"user:{ADMIN}"
        assert api(admin, "PUT", url, {"on": "no"}).status_code == 400
        assert api(admin, "PUT", f"/api/cameras/{CAMERA}/switches/lights", {"on": True}).status_code == 400
        assert api(admin, "PUT", "/api/cameras/attic/switches/detect", {"on": True}).status_code == 404
    finally:
        assert api(admin, "PUT", url, {"on": True}).json()["on"] is True
    assert rig.loop.detect_enabled is True


# -- cameras -----------------------------------------------------------------------------------------


def test_cameras_are_listed_masked_and_test_connection_says_why_not(rig: Rig, admin: httpx.Client) -> None:
    cameras = admin.get("/api/cameras").json()["cameras"]
    assert [(c["name"], c["origin"]) for c in cameras] == [(CAMERA, "config")]
    html = admin.get("/cameras").text
    assert f'data-camera="{CAMERA}"' in html and "the config file" in html and "read-only" in html

    bad = api(admin, "POST", "/api/cameras/test", {"source": str(PEOPLE.with_name("no-such-clip.mp4"))})
    assert bad.status_code == 200 and bad.json()["ok"] is False
    assert re.search(r"no such file|not found|does not exist", bad.json()["error"], re.I), bad.json()
    good = api(admin, "POST", "/api/cameras/test", {"source": str(PEOPLE)}).json()
    assert good["ok"] is True and good["jpeg"].startswith("data:image/jpeg;base64,")
    assert (good["width"], good["height"]) == (
        rig.loop.last_frame.image.shape[1],
        rig.loop.last_frame.image.shape[0],
    )

    # A config camera is read-only: one line, 400, in the API's error shape.
    changed = api(admin, "PUT", f"/api/cameras/{CAMERA}", {"source": str(PEOPLE)})
    assert changed.status_code == 400 and "config file" in changed.json()["error"], changed.text


def test_a_config_cameras_lines_are_listed_and_shown_read_only(rig: Rig, admin: httpx.Client) -> None:
    camera = admin.get("/api/cameras").json()["cameras"][0]
    assert camera["lines"] == {"door": DOOR}, camera
    page = admin.get(f"/cameras/{CAMERA}")
    assert page.status_code == 200, page.text[:300]
    html = page.text
    assert 'id="camera-readonly"' in html and "config file" in html and 'data-line="door"' in html
    assert 'data-readonly="1"' in html and "in · person" in html
    assert html.count('id="line-editor"') == 1  # the add form below has none: one editor per page
    assert re.search(r'<td class="lines">\s*door <span class="muted">\(in\)</span>', html), (
        "no line in the list"
    )
    changed = api(admin, "PUT", f"/api/cameras/{CAMERA}", {"lines": {}})
    assert changed.status_code == 400 and "config file" in changed.json()["error"], changed.text
    assert rig.control.camera_entries()[0].cfg.lines["door"].direction == "in"


# -- rules -------------------------------------------------------------------------------------------


ZONE = [[0.1, 0.5], [0.9, 0.5], [0.9, 0.95], [0.1, 0.95]]


def test_rules_are_added_changed_and_removed_through_the_api_with_a_zone(
    rig: Rig, admin: httpx.Client
) -> None:
    made = api(
        admin, "POST", "/api/rules", {"name": "floor", "label": "person", "cameras": [CAMERA], "zone": ZONE}
    )
    assert made.status_code == 201, made.text
    assert made.json()["zone"] == ZONE and made.json()["origin"] == "admin"
    again = api(admin, "POST", "/api/rules", {"name": "floor", "label": "person"})
    assert again.status_code == 409 and "exists already" in again.json()["error"]
    changed = api(admin, "PUT", "/api/rules/floor", {"label": "person", "zone": ZONE, "min_score": 0.7})
    assert changed.status_code == 200, changed.text
    rules = {r["name"]: r for r in admin.get("/api/rules").json()["rules"]}
    assert rules["floor"]["min_score"] == 0.7 and rules["floor"]["zone"] == ZONE
    assert rules["fire"]["origin"] == "config"
    assert rig.control.rules()[-1].rule.cfg.zone == [tuple(p) for p in ZONE]  # the loop has it too
    wrong = api(admin, "POST", "/api/rules", {"name": "bad-zone", "label": "person", "zone": [[0.1, 0.1]]})
    assert wrong.status_code == 400 and "3 points" in wrong.json()["error"], wrong.text
    config = api(admin, "DELETE", "/api/rules/fire")
    assert config.status_code == 400 and "config file" in config.json()["error"]
    assert api(admin, "DELETE", "/api/rules/floor").status_code == 200
    assert "floor" not in {r["name"] for r in admin.get("/api/rules").json()["rules"]}
    assert api(admin, "DELETE", "/api/rules/floor").status_code == 404


def test_the_rule_form_saves_a_zone_and_shows_refusals_as_text(rig: Rig, admin: httpx.Client) -> None:
    fields = {"name": "walkway", "label": "person", "camera": CAMERA, "min_score": "0.6",
              "severity": "critical", "zone": json.dumps(ZONE), "days": ["mon", "tue"], "start": "08:00",
              "end": "18:00", "text": XSS}  # fmt: skip
    saved = form(admin, "/rules", fields)
    assert saved.status_code == 302, saved.text[:500]
    rule = next(r for r in admin.get("/api/rules").json()["rules"] if r["name"] == "walkway")
    assert rule["zone"] == ZONE and rule["severity"] == "critical" and rule["cameras"] == [CAMERA]
    assert rule["schedule"] == [{"days": ["mon", "tue"], "start": "08:00:00", "end": "18:00:00"}]
    html = admin.get("/rules").text
    assert 'data-rule="walkway"' in html
    assert XSS not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html  # the alert text, as text

    # A name that cannot be a rule's (it becomes part of MQTT topics) is refused next to the form,
    # with what was typed kept, and shown as text.
    refused = form(admin, "/rules", {**fields, "name": XSS})
    assert refused.status_code == 400
    assert XSS not in refused.text and "&lt;script&gt;" in refused.text
    assert re.search(r'id="rule-error"[^>]*>[^<]*rule name', refused.text), "no error next to the form"
    # The edit page of a runtime rule has the form filled in; a config rule is read-only.
    edit = admin.get("/rules/walkway").text
    assert 'name="replace" value="1"' in edit and "[[0.1, 0.5]" in edit
    assert 'id="rule-readonly"' in admin.get("/rules/fire").text
    assert form(admin, "/rules/walkway/delete", {}).status_code == 302


def test_a_crossing_rule_takes_a_line_and_a_direction_and_the_list_says_in_which_modes_rules_alert(
    rig: Rig, admin: httpx.Client
) -> None:
    html = admin.get("/rules").text
    assert re.search(r'<option value="door" data-cameras="lobby"[^>]*>door \(lobby\)</option>', html), (
        "the camera's line is not offered"
    )
    fields = {"name": "door-out", "label": "person", "camera": CAMERA, "line": "door", "direction": "out",
              "min_score": "0.5", "severity": "info"}  # fmt: skip
    saved = form(admin, "/rules", fields)
    assert saved.status_code == 302, saved.text[:500]
    rule = next(r for r in admin.get("/api/rules").json()["rules"] if r["name"] == "door-out")
    assert (rule["line"], rule["direction"], rule["zone"]) == ("door", "out", None), rule
    assert rule["active_in"] == ["home", "away", "night"] and rule["active"] is True, rule
    loop_rule = next(r for r in rig.loop.events.rules if r.name == "door-out")
    assert loop_rule.cfg.line == "door"  # the red loop runs it
    edit = admin.get("/rules/door-out").text
    assert re.search(r'<option value="door" data-cameras="lobby" selected>', edit), "the line is not chosen"
    assert re.search(r'<option value="out" selected>', edit), "the direction is not chosen"

    # Refusals are one line next to the form: a line the camera lacks (from the control surface), a
    # zone and a line at once, a direction that is not one.
    refusals = [
        ({"name": "gate-in", "line": "gate"}, "rule 'gate-in': camera 'lobby' has no line 'gate'"),
        ({"name": "both", "zone": json.dumps(ZONE)}, "a rule watches a zone or a line, not both"),
        ({"name": "sideways", "direction": "sideways"}, "direction: 'sideways' is not one of in, out, both"),
    ]
    for change, message in refusals:
        refused = form(admin, "/rules", {**fields, **change})
        assert refused.status_code == 400, change
        error = re.search(r'<p id="rule-error"[^>]*>([^<]*)</p>', refused.text).group(1)
        assert message in error.replace("&#39;", "'") and "\n" not in error, (change, error)
    api_refused = api(admin, "POST", "/api/rules", {"name": "loose", "label": "person", "direction": "in"})
    assert (
        api_refused.status_code == 400
        and "direction is for a rule with a line" in api_refused.json()["error"]
    )
    unknown = api(admin, "POST", "/api/rules", {"name": "gate", "label": "person", "line": "gate"})
    assert (
        unknown.status_code == 400
        and unknown.json()["error"] == "rule 'gate': camera 'lobby' has no line 'gate'"
    )

    # The list: the line and direction, and in which modes each rule alerts (the one on now in bold).
    away = api(admin, "POST", "/api/rules", {"name": "away-only", "label": "person", "modes": ["away"]})
    assert away.status_code == 201 and away.json()["active_in"] == ["away"] and away.json()["active"] is False
    html = admin.get("/rules").text
    row = re.search(r'<tr data-rule="door-out">.*?</tr>', html, re.S).group()
    assert "line door" in row and "(out)" in row and "<strong>home</strong>, away, night" in row, row
    row = re.search(r'<tr data-rule="away-only">.*?</tr>', html, re.S).group()
    assert '<td class="modes">away <span class="badge muted">off now</span></td>' in row, row
    fire = re.search(r'<tr data-rule="fire">.*?</tr>', html, re.S).group()
    assert "<strong>home</strong>, away, night" in fire, fire  # fire alerts in every mode
    for name in ("door-out", "away-only"):
        assert api(admin, "DELETE", f"/api/rules/{name}").status_code == 200


def test_a_sentence_is_previewed_as_a_rule_and_saved(rig: Rig, admin: httpx.Client) -> None:
    before = {r["name"] for r in admin.get("/api/rules").json()["rules"]}
    preview = api(
        admin, "POST", "/api/rules/preview", {"text": "alert me if a person enters", "camera": CAMERA}
    )
    assert preview.status_code == 200, preview.text
    shown = preview.json()
    assert shown["kind"] == "rule" and shown["rule_config"]["label"] == "person", shown
    assert {r["name"] for r in admin.get("/api/rules").json()["rules"]} == before, (
        "a preview changed the rules"
    )
    saved = api(
        admin, "POST", "/api/rules/from-text", {"text": "alert me if a person enters", "camera": CAMERA}
    )
    assert saved.status_code == 201, saved.text
    assert saved.json()["name"] == shown["rule_config"]["name"] and saved.json()["origin"] == "admin"
    question = api(admin, "POST", "/api/rules/from-text", {"text": "how many people are there?"})
    assert question.status_code == 400 and "not a rule" in question.json()["error"]
    assert api(admin, "DELETE", f"/api/rules/{saved.json()['name']}").status_code == 200


# -- events ------------------------------------------------------------------------------------------


def test_events_are_listed_shown_with_their_snapshot_and_acknowledged(rig: Rig, admin: httpx.Client) -> None:
    assert wait_until(lambda: any(e["snapshot"] for e in rig.events.events()), 10), "no snapshot written"
    listed = admin.get("/api/events", params={"camera": CAMERA, "label": "person"}).json()["events"]
    event = next(e for e in listed if e["snapshot"])
    event_id = event["id"]
    assert event["rule"] == "lobby-person" and event["snapshot_url"].endswith("/snapshot.jpg")

    html = admin.get("/events").text
    assert f'data-event="{event_id}"' in html and 'class="snapshot"' in html
    detail = admin.get(f"/events/{event_id}").text
    assert 'id="event-snapshot"' in detail and 'id="event-ack"' in detail
    one = admin.get(f"/api/events/{event_id}").json()
    assert one["alerts"] and one["alerts"][0]["rule"] == "lobby-person"

    # The snapshot is the full frame with the event's box drawn on it; ?w= scales it down.
    frame = rig.loop.last_frame.image
    snapshot = admin.get(f"/api/events/{event_id}/snapshot.jpg")
    assert snapshot.status_code == 200 and snapshot.headers["content-type"] == "image/jpeg"
    assert jpeg_size(snapshot.content) == (frame.shape[1], frame.shape[0])
    thumb = admin.get(f"/api/events/{event_id}/snapshot.jpg", params={"w": 160})
    assert jpeg_size(thumb.content)[0] == 160
    assert admin.get("/api/events/no-such-event/snapshot.jpg").status_code == 404

    assert [e["id"] for e in admin.get("/api/events", params={"state": "acked"}).json()["events"]] == []
    acked = api(admin, "POST", f"/api/events/{event_id}/ack")
    assert acked.status_code == 200 and acked.json()["event"]["acked_by"] == f"user:{ADMIN}", acked.text
    assert [e["id"] for e in admin.get("/api/events", params={"state": "acked"}).json()["events"]] == [
        event_id
    ]
    assert event_id not in [
        e["id"] for e in admin.get("/api/events", params={"state": "unacked"}).json()["events"]
    ]
    page = admin.get(f"/events/{event_id}").text
    assert re.search(r'id="event-ack"\s+disabled', page) and f"user:{ADMIN}" in page
    assert form(admin, f"/events/{event_id}/ack", {}, page=f"/events/{event_id}").status_code == 302
    # The blue loop's verification of the event: its description on the page, its report in a sandbox.
    now = time.time()
    context = {"label": "person", "alert": {"event_id": event_id}}
    rig.events.add_job("job-1", None, CAMERA, "verify", "check", created_at=now, deadline=now + 60,
                       seconds=6, context=context)  # fmt: skip
    report = "<h1>Verified</h1><script>alert(3)</script>"
    rig.events.finish_job("job-1", "done", text="A woman walks across the lobby.", html=report)
    page = admin.get(f"/events/{event_id}").text
    assert 'id="event-result"' in page and "A woman walks across the lobby." in page
    shown = admin.get(f"/events/{event_id}/report")
    assert shown.status_code == 200 and shown.text == report
    csp = shown.headers["content-security-policy"]
    assert csp.startswith("sandbox;") and "script-src" not in csp, csp  # its inline script never runs
    assert admin.get(f"/api/events/{event_id}").json()["blue_result"]["description"].startswith("A woman")

    bad = admin.get("/api/events", params={"state": "sideways"})
    assert bad.status_code == 400 and "state" in bad.json()["error"]
    assert api(admin, "POST", "/api/events/no-such-event/ack").status_code == 404


# -- asks --------------------------------------------------------------------------------------------


def sse_events(client: httpx.Client, path: str, headers: dict[str, str] | None = None) -> list[dict]:
    """Every `data:` event of a stream, until the server ends it."""
    got: list[dict] = []
    with client.stream("GET", path, headers=headers or {}) as stream:
        assert stream.status_code == 200 and stream.headers["content-type"].startswith("text/event-stream")
        event = "message"
        for line in stream.iter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and event == "message":
                got.append(json.loads(line.split(":", 1)[1]))
            elif line == "":
                if event == "end":
                    break
                event = "message"
    return got


def test_an_ask_streams_its_ack_then_its_answer_in_order(rig: Rig, admin: httpx.Client) -> None:
    made = api(admin, "POST", "/api/asks", {"text": "how many people are in the lobby?", "camera": CAMERA})
    assert made.status_code == 201, made.text
    ask_id = made.json()["id"]
    started = time.monotonic()
    answers = sse_events(admin, f"/api/asks/{ask_id}/stream")
    assert time.monotonic() - started < 15
    assert [a["kind"] for a in answers] == ["ack", "answer"], answers
    assert answers[0]["text"] == "Please wait a moment."
    assert re.search(r"\b1 person\b|\d+ people", answers[1]["text"]), answers[1]
    # A reconnecting EventSource sends the last id it saw and gets only what came after.
    assert [a["kind"] for a in sse_events(admin, f"/api/asks/{ask_id}/stream", {"Last-Event-ID": "1"})] == [
        "answer"
    ]
    stored = admin.get(f"/api/asks/{ask_id}").json()
    assert stored["origin"] == "admin" and [a["kind"] for a in stored["answers"]] == ["ack", "answer"]
    assert ask_id in [a["id"] for a in admin.get("/api/asks").json()["asks"]]
    page = admin.get("/ask").text
    assert 'id="ask-form"' in page and 'id="ask-answers"' in page and f'data-ask="{ask_id}"' in page

    hostile = api(admin, "POST", "/api/asks", {"text": "<img src=x onerror=alert(2)>"})
    assert hostile.status_code == 201
    assert "<img src=x" not in admin.get("/ask").text
    assert api(admin, "POST", "/api/asks", {"text": "hello", "camera": "nowhere"}).status_code == 400
    assert admin.get("/api/asks/no-such-ask/stream").status_code == 404


def test_a_narration_stream_stays_open_until_the_server_stops(rig: Rig, admin: httpx.Client) -> None:
    """A narration's answers go on after its first answer: its stream is not ended by it. It ends when
    the client leaves or the server stops (a stream never holds a server thread past a stop)."""
    made = api(admin, "POST", "/api/asks", {"text": "narrate the lobby", "camera": CAMERA})
    assert made.status_code == 201, made.text
    path = f"/api/asks/{made.json()['id']}/stream"
    got: list[str] = []
    reading = admin.stream("GET", path, timeout=httpx.Timeout(10, read=2))
    with pytest.raises(httpx.ReadTimeout), reading as stream:  # nothing more for 2 s, and no end either
        for line in stream.iter_lines():
            got.append(line)
    data = [json.loads(line[5:]) for line in got if line.startswith("data:")]
    assert [a["kind"] for a in data] == ["ack", "answer"] and "narrate" in data[1]["text"], got
    assert "event: end" not in got

    second = rig.serve()  # the same appliance's page on a second server, stopped while streaming
    client = httpx.Client(base_url=second.url, cookies=admin.cookies, timeout=httpx.Timeout(10, read=8))
    try:
        with client.stream("GET", path) as stream:
            lines = stream.iter_lines()
            assert next(line for line in lines if line.startswith("data:"))
            stopped = time.monotonic()
            threading.Thread(target=second.stop, daemon=True).start()
            rest = list(lines)  # the stream ends (no ReadTimeout) soon after the stop
        assert time.monotonic() - stopped < 6 and "event: end" not in rest
    finally:
        client.close()
        second.stop()


# -- cameras on a running appliance --------------------------------------------------------------------


def test_a_camera_added_on_the_page_captures_and_its_password_is_never_shown(tmp_path: Path) -> None:
    """A real appliance (no broker) serving its admin page: a camera added through the form starts at
    once; a camera URL's password never reaches a page or the API, and an edit that sends the masked
    source back keeps the stored password."""
    from edge.appliance import Appliance
    from edge.config.models import CameraConfig
    from edge.wiring import build_rules

    port = free_port()
    gate = "rtsp://guard:hunter2@127.0.0.1:1/gate"
    cfg = EdgeConfig(
        data_dir=str(tmp_path / "data"), device={"id": "pages2"}, model=ModelConfig(path=str(MODEL)),
        watch=[], cameras={"gate": CameraConfig(source=gate, enabled=False)},
        admin={"listen": f"127.0.0.1:{port}"},
    )  # fmt: skip
    appliance = Appliance(cfg, REPO, build_rules(cfg, REPO, allow_empty=True))
    appliance.start()
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", follow_redirects=False, timeout=20)
    try:
        set_up_admin(client)
        added = form(client, "/cameras", {"name": "door", "source": str(PEOPLE), "enabled": "on"}, "/cameras")
        assert added.status_code == 302, added.text[:500]
        assert wait_until(lambda: client.get("/api/cameras/door/live.jpg").status_code == 200, 30)
        assert jpeg_size(client.get("/api/cameras/door/snapshot.jpg").content)[0] > 0

        secret = "rtsp://yard:s3cret-pass@127.0.0.1:1/yard"
        made = api(client, "POST", "/api/cameras", {"name": "yard", "source": secret, "enabled": False})
        assert made.status_code == 201 and made.json()["source"] == "rtsp://yard:***@127.0.0.1:1/yard", (
            made.text
        )
        listed = {c["name"]: c for c in client.get("/api/cameras").json()["cameras"]}
        assert (
            listed["gate"]["source"] == "rtsp://guard:***@127.0.0.1:1/gate"
            and listed["gate"]["origin"] == "config"
        )
        assert listed["door"]["origin"] == "admin"
        for path in ("/cameras", "/cameras/yard", "/api/cameras", "/api/status", "/"):
            text = client.get(path).text
            assert "s3cret-pass" not in text and "hunter2" not in text, path
        edit = {"name": "yard", "replace": "1", "source": "rtsp://yard:***@127.0.0.1:1/yard", "fps": "5"}
        assert form(client, "/cameras", edit, "/cameras/yard").status_code == 302
        yard = next(e for e in appliance.control.camera_entries() if e.name == "yard")
        assert yard.cfg.source == secret and yard.cfg.fps == 5 and not yard.cfg.enabled

        refused = form(client, "/cameras", {"name": "gate", "replace": "1", "source": "x.mp4"}, "/cameras")
        assert refused.status_code == 400 and "config file" in refused.text
        assert form(client, "/cameras/door/delete", {}, "/cameras").status_code == 302
        assert api(client, "DELETE", "/api/cameras/yard").status_code == 200
        assert [c["name"] for c in client.get("/api/cameras").json()["cameras"]] == ["gate"]
        assert client.get("/api/cameras/door/live.jpg").status_code == 404
    finally:
        client.close()
        appliance.stop()


WALKWAY = {"points": [[0.02, 0.6], [0.5, 0.64], [0.98, 0.6]], "direction": "both", "labels": ["person"]}


def test_a_runtime_cameras_lines_are_saved_through_the_control_surface_and_watched_by_crossing_rules(
    tmp_path: Path,
) -> None:
    """Lines of a camera added on the page: posted with the form (the JSON the line editor fills in) and
    through the API, checked by the config's own rules, applied by the control surface (the camera's red
    loop counts them at once) and audited; a line a crossing rule watches cannot be taken away."""
    from edge.appliance import Appliance
    from edge.config.models import CameraConfig
    from edge.wiring import build_rules

    port = free_port()
    cfg = EdgeConfig(
        data_dir=str(tmp_path / "data"), device={"id": "pages3"}, model=ModelConfig(path=str(MODEL)),
        watch=[], cameras={"gate": CameraConfig(source=str(PEOPLE), enabled=False)},
        admin={"listen": f"127.0.0.1:{port}"},
    )  # fmt: skip
    appliance = Appliance(cfg, REPO, build_rules(cfg, REPO, allow_empty=True))
    appliance.start()
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", follow_redirects=False, timeout=20)

    def door() -> CameraConfig:
        return next(e for e in appliance.control.camera_entries() if e.name == "door").cfg

    def post(fields: dict[str, Any]) -> httpx.Response:
        return form(client, "/cameras", {"source": str(PEOPLE), "enabled": "on", **fields}, "/cameras")

    try:
        set_up_admin(client)
        added = post({"name": "door", "lines": json.dumps({"walkway": WALKWAY})})
        assert added.status_code == 302, added.text[:500]
        assert door().lines["walkway"].model_dump(mode="json") == WALKWAY
        loop = appliance.control.loops["door"]
        assert loop.lines is not None and list(loop.lines.lines) == ["walkway"]  # counted at once
        listed = {c["name"]: c for c in client.get("/api/cameras").json()["cameras"]}
        assert listed["door"]["lines"] == {"walkway": WALKWAY} and listed["gate"]["lines"] == {}
        edit = client.get("/cameras/door").text
        assert 'id="line-editor"' in edit and "data-readonly" not in edit
        hidden = re.search(r'<input type="hidden" name="lines" value="([^"]*)">', edit).group(1)
        assert json.loads(hidden.replace("&#34;", '"').replace("&quot;", '"')) == {"walkway": WALKWAY}

        # A line the config would refuse is refused next to the form, in one line; nothing changes.
        bad = {"walkway": {**WALKWAY, "points": [[0.1, 0.1]]}}
        refused = post({"name": "door", "replace": "1", "lines": json.dumps(bad)})
        assert refused.status_code == 400
        error = re.search(r'<p id="camera-error"[^>]*>([^<]*)</p>', refused.text).group(1)
        assert "a line needs at least 2 points" in error, error
        assert post({"name": "door", "replace": "1", "lines": "[1, 2"}).status_code == 400
        assert len(door().lines["walkway"].points) == 3

        # The API takes lines too; a PUT without them keeps them, as a form without the field does.
        exit_line = {"points": [[0.1, 0.3], [0.1, 0.9]], "direction": "out", "labels": ["person"]}
        put = api(client, "PUT", "/api/cameras/door", {"lines": {"walkway": WALKWAY, "exit": exit_line}})
        assert put.status_code == 200 and set(put.json()["lines"]) == {"walkway", "exit"}, put.text
        wrong = api(client, "PUT", "/api/cameras/door", {"lines": {"exit": {**exit_line, "direction": "up"}}})
        assert wrong.status_code == 400 and "direction" in wrong.json()["error"], wrong.text
        assert api(client, "PUT", "/api/cameras/door", {"fps": 5}).json()["lines"]["exit"] == exit_line
        assert post({"name": "door", "replace": "1"}).status_code == 302 and set(door().lines) == {
            "walkway",
            "exit",
        }
        assert set(appliance.control.loops["door"].lines.lines) == {"walkway", "exit"}

        # A crossing rule on the line; the line it watches cannot go while it does.
        rule = {
            "name": "walkway-in",
            "label": "person",
            "cameras": ["door"],
            "line": "walkway",
            "direction": "in",
        }
        made = api(client, "POST", "/api/rules", rule)
        assert made.status_code == 201 and made.json()["line"] == "walkway", made.text
        nope = api(client, "POST", "/api/rules", {**rule, "name": "nope", "line": "nope"})
        assert (
            nope.status_code == 400
            and nope.json()["error"] == "rule 'nope': camera 'door' has no line 'nope'"
        )
        kept = post({"name": "door", "replace": "1", "lines": json.dumps({"exit": exit_line})})
        assert kept.status_code == 400 and "watched by rule" in kept.text and "walkway" in set(door().lines)
        assert api(client, "DELETE", "/api/rules/walkway-in").status_code == 200
        assert post({"name": "door", "replace": "1", "lines": ""}).status_code == 302
        assert door().lines == {} and appliance.control.loops["door"].lines is None

        changes = [r for r in appliance.events.audit_log() if r["action"].startswith("camera.")]
        assert [r["detail"]["lines"] for r in reversed(changes)] == [
            ["walkway"],
            ["exit", "walkway"],
            ["exit", "walkway"],
            ["exit", "walkway"],
            [],
        ], changes
        assert all(r["who"] == f"user:{ADMIN}" for r in changes)
    finally:
        client.close()
        appliance.stop()

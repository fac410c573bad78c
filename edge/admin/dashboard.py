"""The dashboard: every camera's state and live view, and the delivery numbers, at a glance.

The live picture is drawn on the server (edge.admin.draw): `/api/cameras/<name>/live.jpg` is the
latest keyframe with the current boxes, which the page's script reloads every second; the same
pictures also come as one `multipart/x-mixed-replace` stream for clients that prefer MJPEG. Both only
read the live view (one attribute read, no lock the red loop waits on) and the keyframe ring (a lock
held for a list copy).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from flask import Blueprint, Response, abort, jsonify, render_template
from flask.typing import ResponseReturnValue

from edge.admin.auth import login_required_any
from edge.admin.draw import live_jpeg
from edge.admin.pages import current_services, is_admin, json_error, stopping
from edge.live import Keyframe, LiveView

bp = Blueprint("dashboard", __name__)

MJPEG_EVERY_S = 0.5
"""~2 fps: the keyframe ring holds about two pictures a second, more would repeat them."""
MJPEG_RESEND_S = 5.0
"""An unchanged picture is sent again this often (see frames())."""
BOUNDARY = "reflexframe"


def latest_keyframe(live: LiveView, camera: str) -> Keyframe | None:
    """The camera's newest keyframe however old (a camera that stopped still shows its last
    picture; the card says it is offline)."""
    ring = live.keyframes.get(camera)
    if ring is None:
        return None
    frames = ring.last(float("inf"))
    return frames[-1] if frames else None


def _no_store(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/")
@login_required_any
def index() -> str:
    services = current_services()
    status, mode = services.status(), services.control.mode_state()
    now_text = time.strftime("%H:%M:%S")
    return render_template("dashboard.html", status=status, now_text=now_text, admin=is_admin(), mode=mode)


@bp.get("/api/status")
@login_required_any
def api_status() -> Response:
    return _no_store(jsonify(current_services().status()))


@bp.get("/api/cameras/<name>/live.jpg")
@login_required_any
def live_jpg(name: str) -> ResponseReturnValue:
    live = current_services().live
    if name not in live.keyframes:
        return json_error(f"unknown camera {name!r}", 404)
    keyframe = latest_keyframe(live, name)
    if keyframe is None:
        return json_error(f"no picture from camera {name!r} yet", 404)
    return _no_store(Response(live_jpeg(keyframe, live.get(name)), mimetype="image/jpeg"))


@bp.get("/cameras/<name>/live.mjpeg")
@login_required_any
def live_mjpeg(name: str) -> ResponseReturnValue:
    """The live view as MJPEG at ~2 fps. Ends when the client goes away (the next write fails and the
    server closes the generator) or when the server stops."""
    live = current_services().live
    if name not in live.keyframes:
        abort(404, f"unknown camera {name!r}")
    stop = stopping()

    def frames() -> Iterator[bytes]:
        last_at, sent = -1.0, 0.0
        while not stop.is_set() and name in live.keyframes:  # a removed camera ends its stream
            keyframe = latest_keyframe(live, name)
            # A new picture, or the same one again now and then: only a write notices a viewer who
            # left, so a stream of a camera that sends nothing new frees its thread within seconds.
            if keyframe is not None and (keyframe.at != last_at or time.monotonic() - sent >= MJPEG_RESEND_S):
                last_at, sent = keyframe.at, time.monotonic()
                jpeg = live_jpeg(keyframe, live.get(name))
                head = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n"
                yield head.encode() + jpeg + b"\r\n"
            stop.wait(MJPEG_EVERY_S)

    response = Response(frames(), mimetype=f"multipart/x-mixed-replace; boundary={BOUNDARY}")
    response.headers["X-Accel-Buffering"] = "no"
    return _no_store(response)


def uptime_words(seconds: float) -> str:
    """'3 d 4 h', '2 h 5 min', '40 s': what a person reads at a glance."""
    s = int(seconds)
    if s >= 86400:
        return f"{s // 86400} d {s % 86400 // 3600} h"
    if s >= 3600:
        return f"{s // 3600} h {s % 3600 // 60} min"
    if s >= 60:
        return f"{s // 60} min {s % 60} s"
    return f"{s} s"


@bp.app_template_filter("uptime")
def _uptime_filter(seconds: float) -> str:
    return uptime_words(float(seconds or 0))

"""`edge scan`: the red loop over one file or stream, as JSON Lines on stdout (DESIGN.md contract).

Every frame of a file is processed (nothing is dropped) unless `--realtime` asks for camera-like
pacing, where a slow engine drops stale frames exactly as it would on a live camera. The frames go
through the same capture thread and loop body (`edge.pipeline.feed`) as a camera of `edge run`. An
image or a folder of images needs one sighting per event (each frame is its own picture), and each
line of a folder scan names the file it came from. An alert line also carries the alert's `id` and
`phase`: a verified rule's (fire, smoke) alert is printed again, same `id` and `event_id`, when the
device confirms or retracts it, at the frame and `pts` of the verdict. Events and
alerts are committed to an event log (a temporary one unless `--data` is given), so the reported
alert latency includes the durable write a real alert pays for.
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO

from edge.capture import Camera, open_source
from edge.config import CameraConfig, EdgeConfig
from edge.journal import Journal
from edge.outbox import Topics
from edge.outbox.payloads import rounded_box
from edge.pipeline import feed
from edge.redloop import RedLoop
from edge.rules import Rule, Transition
from edge.store import EventLog
from edge.types import Frame
from edge.wiring import load_detector, load_models


class JsonLines:
    """Prints transitions in the `edge scan` JSON Lines contract."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out

    def handle(self, tr: Transition, frame: Frame) -> None:
        ev = tr.event
        if tr.kind == "alert" and tr.alert is not None:
            line = {
                "type": "alert",
                "event_id": ev.id,
                "label": ev.label,
                "frame": tr.frame,
                "pts": round(tr.pts, 3),
                "text": tr.alert.text,
                "id": tr.alert.id,
                "phase": tr.alert.phase,
            }
        else:
            line = {
                "type": tr.kind,
                "event_id": ev.id,
                "label": ev.label,
                "frame": tr.frame,
                "pts": round(tr.pts, 3),
                "score": round(ev.score, 3),
                "box": rounded_box(ev.box),
                "camera": ev.camera,
            }
        if frame.origin is not None:  # a folder of pictures: which one this line is about
            line["file"] = frame.origin
        self.write(line)

    def write(self, line: dict[str, object]) -> None:
        self.out.write(json.dumps(line) + "\n")
        self.out.flush()


def camera_name(source: str) -> str:
    stem = Path(source.split("?")[0].rstrip("/")).stem or "scan"
    name = re.sub(r"[^a-z0-9_-]+", "-", stem.lower()).strip("-_")[:63]
    return name or "scan"


def scan(
    source: str,
    cfg: EdgeConfig,
    base_dir: Path,
    rules: list[Rule],
    *,
    realtime: bool = False,
    data_dir: Path | None = None,
    camera: str | None = None,
    out: IO[str] = sys.stdout,
) -> dict[str, object]:
    """Run the red loop over `source`; return the summary (also printed as the last line)."""
    name = camera or camera_name(source)
    open_source(source).close()  # a bad source fails here, with its one-line SourceError
    detector = load_detector(cfg, base_dir, rules)
    models = load_models(cfg, base_dir, rules)
    printer = JsonLines(out)
    with tempfile.TemporaryDirectory(prefix="edge-scan-") as tmp:
        events = EventLog(data_dir or Path(tmp), reserve_bytes=0)  # a scan keeps no disk reserve
        try:
            events.ensure_camera(name, source)
            for rule in rules:
                events.ensure_rule(rule.cfg)
            journal = Journal(events, Topics(cfg.mqtt.prefix, cfg.device.id), rules)
            loop = RedLoop(name, cfg, rules, detector, [journal, printer], models=models)
            # The same loop body as `edge run`; lossless unless --realtime asks for camera pacing.
            frames = Camera(name, CameraConfig(source=source, realtime=realtime))
            started = time.perf_counter()
            frames.start()
            try:
                feed(frames, loop, threading.Event())
            finally:
                frames.stop()
            summary = {"type": "summary", **loop.summary(time.perf_counter() - started)}
            journal.close()
        finally:
            events.close()
    printer.write(summary)
    return summary

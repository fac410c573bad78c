"""The shadow narrator: a running commentary of a camera, and digests of what happened.

"narrate the lobby camera" turns on a commentary: from then on, a line on `…/answers` with
`kind: commentary` and the id of that ask whenever something changes on the camera ("10:02:03 a
person entered lobby", "10:02:15 the person left lobby after 12 s", "2 people in lobby now", fire
started and ended). The lines are made from the red loop's transitions: the narrator is a red-loop
sink whose `handle()` only copies a few fields into a queue (microseconds); its own thread keeps the
state (who is in view, per camera and label: several rules on one object count it once), merges
what happened within `rate_s` (at most one line per camera per second) and sends the lines.

Digests ("give me a digest", "summary of the last hour") are worked out from the event log by
`digest()`: "Last hour: 4 people, 1 car, no fire." A scheduled digest ("send me a digest every
hour") is a commentary line each period on that ask's id, sent by the same thread.

Nothing here is stored: after a restart, narration and scheduled digests are off.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from edge.instructions.vocabulary import plural, plural_noun
from edge.rules import AREA_LABELS, Transition
from edge.timefmt import clock
from edge.types import Frame

if TYPE_CHECKING:
    from edge.control import Control
    from edge.delegate import Delegate, FinishedJob
    from edge.store import EventLog

log = logging.getLogger("edge.narrator")

RATE_S = 1.0
"""At most one commentary line per camera per this many seconds; what happens meanwhile is merged."""
MIN_PERIOD_S = 60.0
"""The shortest period of a scheduled digest (tests set less)."""
ENRICH_PROMPT = "In one sentence: who or what just appeared on this camera, and what are they doing?"
DEFAULT_PERIOD_S = 3600.0
STOP_HINT = 'Say "stop narrating" to end it.'


@dataclass(slots=True)
class _Change:
    what: str
    """'entered' or 'left'."""
    label: str
    at: float
    """Wall-clock epoch seconds."""
    duration_s: float | None = None


@dataclass(slots=True)
class _Digest:
    cameras: list[str] | None
    every_s: float
    next_at: float


@dataclass(slots=True)
class _Camera:
    """What the narrator thread knows of one camera."""

    holders: dict[tuple[str, Any], dict[str, float]] = field(default_factory=dict)
    """(label, track id) -> {event id: start pts}: one object, however many rules see it."""
    started: dict[tuple[str, Any], float] = field(default_factory=dict)
    """(label, track id) -> pts of its first event start."""
    counts: Counter[str] = field(default_factory=Counter)
    said: dict[str, int] = field(default_factory=dict)
    """Counts as the last line (or the narration's start) left them."""
    pending: list[_Change] = field(default_factory=list)
    last_line: float = float("-inf")


class Narrator:
    """A red-loop sink and the thread that turns its transitions into commentary lines."""

    def __init__(
        self,
        control: Control,
        events: EventLog,
        *,
        rate_s: float = RATE_S,
        min_period_s: float = MIN_PERIOD_S,
        enrich: Delegate | None = None,
    ) -> None:
        """`enrich`: the delegate client, when the blue loop runs an LLM: each line about an arrival
        is followed by the blue loop's description of the scene (a `describe` job of 3 s of keyframes)."""
        self.control = control
        self.enrich = enrich
        self._enriching: dict[str, tuple[list[str], str]] = {}
        """job id -> (the narrate asks it answers, camera)."""
        if enrich is not None:
            enrich.listen(self._described)
        self.events = events
        self.rate_s = rate_s
        self.min_period_s = min_period_s
        self._queue: queue.SimpleQueue[tuple | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._narrations: dict[str | None, str] = {}
        """camera (None: every camera) -> the ask id its lines answer."""
        self._digests: dict[str, _Digest] = {}
        self._open: dict[str, tuple[str, tuple[str, Any]]] = {}
        """event id -> (camera, object key)."""
        self._cameras: dict[str, _Camera] = {}
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="narrator", daemon=True)
        self._thread.start()

    # -- the red loop's side: microseconds ---------------------------------------------------------

    def handle(self, transition: Transition, frame: Frame) -> None:
        kind = transition.kind
        if kind == "start" or kind == "end":
            ev = transition.event
            at = ev.started_at if kind == "start" else (ev.ended_at or time.time())
            self._queue.put((kind, ev.camera, ev.label, ev.id, ev.track_id, at, transition.pts))

    # -- the router's side -------------------------------------------------------------------------

    def narrate_on(self, ask_id: str, cameras: list[str] | None) -> tuple[str, dict[str, Any]]:
        with self._lock:
            for camera in cameras or [None]:
                self._narrations[camera] = ask_id
            for name, cam in self._cameras.items():
                if cameras is None or name in cameras:
                    cam.said = dict(cam.counts)
                    cam.pending.clear()
            now = {name: dict(+cam.counts) for name, cam in self._cameras.items()
                   if cameras is None or name in cameras}  # fmt: skip
        where = ", ".join(cameras) if cameras else "every camera"
        text = f"I will narrate {where}: a line whenever something changes. {STOP_HINT}"
        unwatched = [c for c in cameras or self.control.cameras() if not self._watched([c])]
        if unwatched:
            text += (
                f" (I am not watching for anything on {', '.join(unwatched)} yet, so there is little "
                'to say there: tell me what matters, e.g. "alert me if someone enters".)'
            )
        self._queue.put(None)
        return text, {"narrating": cameras, "counts": now}

    def narrate_off(self, cameras: list[str] | None) -> tuple[str, dict[str, Any]]:
        with self._lock:
            if cameras is None:
                stopped = list(self._narrations)
                self._narrations.clear()
            else:
                stopped = [c for c in cameras if self._narrations.pop(c, None) is not None]
                if not stopped and None in self._narrations:  # "stop narrating the lobby" of "all"
                    del self._narrations[None]
                    stopped = [None]
            for name, cam in self._cameras.items():
                if not self._narrated(name):
                    cam.pending.clear()
        if not stopped:
            return "I was not narrating" + (f" {', '.join(cameras)}." if cameras else "."), {"stopped": []}
        names = ["every camera" if c is None else c for c in stopped]
        return f"Stopped narrating {', '.join(names)}.", {"stopped": stopped}

    def digest_on(self, ask_id: str, cameras: list[str] | None, every_s: float | None) -> tuple[str, dict]:
        every = max(every_s or DEFAULT_PERIOD_S, self.min_period_s)
        with self._lock:
            self._digests[ask_id] = _Digest(cameras, every, time.time() + every)
        self._queue.put(None)
        where = ", ".join(cameras) if cameras else "every camera"
        shortest = " (the shortest period)" if every_s is not None and every_s < every else ""
        text = (
            f"I will send you a digest of {where} {_every(every)}{shortest}, the first at "
            f'{clock(time.time() + every)}. Say "stop the digest" to end it.'
        )
        return text, {"every_s": every, "cameras": cameras}

    def digest_off(self, cameras: list[str] | None) -> tuple[str, dict]:
        with self._lock:
            stopped = [a for a, d in self._digests.items()
                       if cameras is None or d.cameras is None or set(cameras) & set(d.cameras)]  # fmt: skip
            for ask_id in stopped:
                del self._digests[ask_id]
        if not stopped:
            return "There is no scheduled digest to stop.", {"stopped": []}
        return f"Stopped {len(stopped)} scheduled digest{'s' if len(stopped) != 1 else ''}.", {
            "stopped": stopped
        }

    def narrating(self) -> dict[str | None, str]:
        with self._lock:
            return dict(self._narrations)

    def stop(self) -> None:
        """No more lines. Narration is not stored: whoever listened is told it ends here."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        self._queue.put(None)
        self._thread.join(timeout=5)
        with self._lock:
            listeners = set(self._narrations.values()) | set(self._digests)
            self._narrations.clear()
            self._digests.clear()
        for ask_id in sorted(listeners):
            self._send(ask_id, f"{clock(time.time())} the appliance is stopping: this commentary ends "
                               "(it is off after a restart).", {"stopped": True})  # fmt: skip

    # -- the narrator's thread ---------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                item = self._queue.get(timeout=self._wait())
            except queue.Empty:
                item = None
            try:
                with self._lock:
                    while item is not None:
                        self._take(*item)
                        try:
                            item = self._queue.get_nowait()
                        except queue.Empty:
                            item = None
                    lines = self._due_lines(time.time())
                    digests = self._due_digests(time.time())
                for ask_ids, text, data in lines:
                    for ask_id in ask_ids:
                        self._send(ask_id, text, data)
                    self._ask_for_description(ask_ids, data)
                for ask_id, d in digests:
                    text, data = digest(self.events, d.cameras, time.time() - d.every_s,
                                        self._watched(d.cameras), window=_window(d.every_s))  # fmt: skip
                    self._send(ask_id, text, data)
            except Exception:
                log.exception("narrator")

    def _wait(self) -> float:
        with self._lock:
            due = [c.last_line + self.rate_s for c in self._cameras.values() if c.pending]
            due += [d.next_at for d in self._digests.values()]
        if not due:
            return 1.0
        return min(1.0, max(0.0, min(due) - time.time()))

    def _take(self, kind: str, camera: str, label: str, event_id: str, track_id: Any, at: float,
              pts: float) -> None:  # fmt: skip
        cam = self._cameras.setdefault(camera, _Camera())
        if kind == "start":
            key = (label, track_id if track_id is not None else event_id)
            self._open[event_id] = (camera, key)
            holders = cam.holders.setdefault(key, {})
            first = not holders
            holders[event_id] = pts
            if first:
                cam.started[key] = pts
                cam.counts[label] += 1
                if self._narrated(camera):
                    cam.pending.append(_Change("entered", label, at))
            return
        opened = self._open.pop(event_id, None)
        if opened is None:
            return
        key = opened[1]
        holders = cam.holders.get(key, {})
        holders.pop(event_id, None)
        if holders:
            return
        cam.holders.pop(key, None)
        started = cam.started.pop(key, pts)
        cam.counts[label] = max(0, cam.counts[label] - 1)
        if self._narrated(camera):
            cam.pending.append(_Change("left", label, at, max(0.0, pts - started)))

    def _narrated(self, camera: str) -> bool:
        return camera in self._narrations or None in self._narrations

    def _due_lines(self, now: float) -> list[tuple[list[str], str, dict]]:
        out = []
        for name, cam in self._cameras.items():
            if not cam.pending or now < cam.last_line + self.rate_s:
                continue
            ask_ids = list(
                dict.fromkeys(a for a in (self._narrations.get(name), self._narrations.get(None)) if a)
            )
            changes, cam.pending = cam.pending, []
            if not ask_ids:
                continue
            text, counts = self._line(name, cam, changes)
            cam.last_line = now
            data = {
                "camera": name,
                "at": changes[0].at,
                "changes": [
                    {"what": c.what, "label": c.label, "at": c.at, "duration_s": c.duration_s}
                    for c in changes
                ],
                "counts": counts,
            }
            out.append((ask_ids, text, data))
        return out

    def _line(self, camera: str, cam: _Camera, changes: list[_Change]) -> tuple[str, dict[str, int]]:
        """'10:02:03 a person entered lobby; 2 people in lobby now'."""
        parts: list[str] = []
        groups = list(dict.fromkeys((c.what, c.label) for c in changes))
        for label in dict.fromkeys(c.label for c in changes):
            for what in [w for w, lb in groups if lb == label]:
                parts.append(
                    _said(what, label, camera, [c for c in changes if (c.what, c.label) == (what, label)])
                )
            if label in AREA_LABELS:
                continue
            entered = sum(1 for c in changes if c.label == label and c.what == "entered")
            left = sum(1 for c in changes if c.label == label and c.what == "left")
            old, new = cam.said.get(label, 0), cam.counts[label]
            obvious = (old == 0 and not left and new == entered) or (new == 0 and not entered and old == left)
            if not obvious:
                parts.append(_now(new, label, camera))
        cam.said = dict(cam.counts)
        return f"{clock(changes[0].at)} " + "; ".join(parts), {k: v for k, v in cam.counts.items() if v}

    def _due_digests(self, now: float) -> list[tuple[str, _Digest]]:
        due = []
        for ask_id, d in self._digests.items():
            if now >= d.next_at:
                d.next_at = max(d.next_at + d.every_s, now)
                due.append((ask_id, d))
        return due

    def _watched(self, cameras: list[str] | None) -> set[str]:
        return {
            rule.label
            for rule in self.control.active_rules()
            if cameras is None or any(rule.applies_to(c) for c in cameras)
        }

    def _ask_for_description(self, ask_ids: list[str], data: dict) -> None:
        """Enrichment: someone or something arrived, so the blue loop's LLM describes the scene."""
        if self.enrich is None or not any(c["what"] == "entered" for c in data["changes"]):
            return
        try:
            job_id = self.enrich.submit(
                None, data["camera"], "describe", ENRICH_PROMPT, seconds=3, deadline_s=30
            )
        except Exception:
            log.exception("commentary: no description asked for %s", data["camera"])
            return
        with self._lock:
            self._enriching[job_id] = (list(ask_ids), data["camera"])

    def _described(self, job: FinishedJob) -> None:
        """A job ended (the delegate's listener): a description for a commentary line becomes a line."""
        with self._lock:
            wanted = self._enriching.pop(job.job_id, None)
        if wanted is None:  # not ours
            return
        ask_ids, camera = wanted
        if job.status != "done" or not job.text.strip():
            log.info("commentary on %s: the blue loop gave no description (%s)", camera, job.status)
            return
        with self._lock:
            listening = set(self._narrations.values())
        for ask_id in ask_ids:
            if ask_id in listening:  # still narrating
                self._send(ask_id, f"{clock(time.time())} on {camera}: {job.text.strip()}",
                           {"camera": camera, "enriched": True, "job_id": job.job_id})  # fmt: skip

    def _send(self, ask_id: str, text: str, data: dict) -> None:
        try:
            self.control.answer(ask_id, "commentary", text, data=data)
        except Exception:
            log.exception("commentary line for %s not sent", ask_id)


# -- words ------------------------------------------------------------------------------------------


def _said(what: str, label: str, camera: str, group: list[_Change]) -> str:
    n = len(group)
    if label in AREA_LABELS:
        if what == "entered":
            return f"{label} started on {camera}"
        return f"the {label} on {camera} ended after {_span(group[-1].duration_s or 0.0)}"
    if what == "entered":
        return f"{_a(label)} entered {camera}" if n == 1 else f"{plural(n, label)} entered {camera}"
    if n == 1:
        return f"the {label} left {camera} after {_span(group[0].duration_s or 0.0)}"
    return f"{plural(n, label)} left {camera}"


def _now(n: int, label: str, camera: str) -> str:
    if n:
        return f"{plural(n, label)} in {camera} now"
    return f"nobody in {camera} now" if label == "person" else f"no {plural_noun(label)} in {camera} now"


def _a(label: str) -> str:
    return f"{'an' if label[0] in 'aeiou' else 'a'} {label}"


def _span(seconds: float) -> str:
    """12 s, 3 min, 3 min 5 s, 2 h, 1 h 5 min."""
    s = round(seconds)
    if s < 60:
        return f"{seconds:.1f} s" if 0 < seconds < 1 else f"{s} s"
    if s < 3600:
        m, r = divmod(s, 60)
        return f"{m} min" + (f" {r} s" if r else "")
    h, r = divmod(s, 3600)
    return f"{h} h" + (f" {r // 60} min" if r // 60 else "")


def _every(seconds: float) -> str:
    """'every hour', 'every 30 min', 'every 2 s'."""
    if seconds == 3600:
        return "every hour"
    if seconds == 86400:
        return "every day"
    if seconds == 60:
        return "every minute"
    return f"every {_span(seconds) if seconds >= 1 else f'{seconds:g} s'}"


def _window(seconds: float, since: float | None = None) -> str:
    """'Last hour', 'Last 10 minutes', 'Today'."""
    if since is not None:
        midnight = datetime.now().replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
        if abs(since - midnight) < 1:
            return "Today"
    s = round(seconds / 60) * 60 if seconds >= 120 else round(seconds)  # asked a moment ago
    if s and s % 86400 == 0:
        return "Last day" if s == 86400 else f"Last {s // 86400} days"
    if s and s % 3600 == 0:
        return "Last hour" if s == 3600 else f"Last {s // 3600} hours"
    if s and s % 60 == 0:
        return "Last minute" if s == 60 else f"Last {s // 60} minutes"
    return f"Last {seconds:g} s"


def digest(
    events: EventLog,
    cameras: list[str] | None,
    since: float,
    watched: set[str],
    *,
    window: str | None = None,
) -> tuple[str, dict[str, Any]]:
    """'Last hour: 4 people, 1 car, no fire.' from the event log. An object seen by several rules at
    once counts once; a watched label with nothing counts as 'no ...'."""
    window = window or _window(time.time() - since, since)
    rows: list[dict] = []
    for camera in cameras or [None]:
        rows += events.events(limit=10000, camera=camera, since=since)
    visits = _visits(rows)
    by_label: dict[str, Counter[str]] = {}
    last: dict[str, dict] = {}
    for row in visits:
        by_label.setdefault(row["label"], Counter())[row["camera"]] += 1
        if row["label"] not in last or row["started_at"] > last[row["label"]]["started_at"]:
            last[row["label"]] = row
    objects = sorted(
        (lb for lb in set(by_label) | watched if lb not in AREA_LABELS),
        key=lambda lb: (lb != "person", -sum(by_label.get(lb, Counter()).values()), lb),
    )
    parts = []
    for label in objects:
        per = by_label.get(label, Counter())
        n = sum(per.values())
        if not n:
            parts.append(f"no {plural_noun(label)}")
            continue
        detail = f" ({', '.join(f'{c} {k}' for c, k in sorted(per.items()))})" if len(per) > 1 else ""
        parts.append(f"{plural(n, label)}{detail}")
    for label in ("fire", "smoke"):
        n = sum(by_label.get(label, Counter()).values())
        if n:
            row = last[label]
            times = "once" if n == 1 else f"{n} times"
            parts.append(f"{label} {times} (the last at {clock(row['started_at'])} on {row['camera']})")
        elif label in watched:
            parts.append(f"no {label}")
    where = f" on {cameras[0]}" if cameras and len(cameras) == 1 else ""
    if not parts:
        text = f"{window}{where}: nothing to report (I am not watching for anything yet)."
    else:
        text = f"{window}{where}: {', '.join(parts)}."
    data = {
        "since": since,
        "cameras": cameras,
        "counts": {lb: sum(per.values()) for lb, per in by_label.items()},
        "per_camera": {lb: dict(per) for lb, per in by_label.items()},
    }
    return text, data


def _visits(rows: list[dict]) -> list[dict]:
    """Events of one object seen by several rules at once (same camera, label, track, overlapping
    times) count as one visit."""
    rows = sorted(rows, key=lambda r: r["started_at"])
    out: list[dict] = []
    open_until: dict[tuple, float] = {}
    for row in rows:
        key = (row["camera"], row["label"], row.get("track_id"))
        end = row.get("ended_at") or float("inf")
        if row.get("track_id") is not None and key in open_until and row["started_at"] <= open_until[key]:
            open_until[key] = max(open_until[key], end)
            continue
        open_until[key] = end
        out.append(row)
    return out


__all__ = ["Narrator", "digest"]

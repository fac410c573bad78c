"""The instruction router: carries out what the parser decided, through the control surface.

Rules become runtime rules of origin `instruction`; questions are answered from the live view (a fresh
look first when the camera's last one is older than FRESH_S); memory from the event log; control
through the switches and rules; delegated work goes to the blue loop's delegate client. Every ask
gets exactly one final answer (`answer`, `result` via the delegate, or `error`). Answers are worked
out on a small pool of threads, never on the MQTT command thread or a red loop.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from datetime import time as dtime
from typing import TYPE_CHECKING, Any

from edge.control import Control, ControlError
from edge.instructions.parse import HELP, Context, Decision, parse, rule_words
from edge.instructions.vocabulary import plural, plural_noun, spoken
from edge.live import CameraView, LiveView
from edge.rules.rules import point_in_polygon
from edge.rules.tracker import feet
from edge.store import EventLog, StoreError
from edge.timefmt import clock

if TYPE_CHECKING:
    from edge.narrator import Narrator

log = logging.getLogger("edge.instructions")

FRESH_S = 0.5
"""A camera's look older than this is refreshed before a question is answered."""
LOOK_WAIT_S = 1.5
"""How long a question waits for the fresh look (a camera at 2 fps, a busy detector)."""
WORKERS = 4
NARRATION = ("narrate_on", "narrate_off", "digest_on", "digest_off")
"""Control tasks the narrator (edge/narrator.py) carries out."""


class Router:
    def __init__(
        self,
        control: Control,
        live: LiveView,
        events: EventLog,
        labels: set[str],
        zones: dict[str, dict[str, list[tuple[float, float]]]] | None = None,
    ) -> None:
        self.control = control
        self.live = live
        self.events = events
        self.labels = frozenset(labels)
        self.zones = zones or {}
        self._pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="ask")
        self.narrator: Narrator | None = None
        """The running commentary and scheduled digests (edge.narrator), set by the appliance."""

    def context(self) -> Context:
        rules = tuple(
            (e.rule.name, e.rule.label, tuple(e.rule.cfg.cameras) if e.rule.cfg.cameras else None, e.origin)
            for e in self.control.rules()
        )
        lines = {name: tuple(loop.lines.lines) for name, loop in self.control.loops.items() if loop.lines}
        return Context(self.labels, tuple(self.control.cameras()), self.zones, rules,
                       modes=tuple(self.control.modes), lines=lines)  # fmt: skip

    def route(self, text: str, camera: str | None) -> Decision:
        return parse(text, camera, self.context())

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=False)

    # -- carrying out -----------------------------------------------------------------------------

    def execute(self, ask_id: str, text: str, decision: Decision, job_id: str | None) -> None:
        """Answer in the background; one final answer whatever happens."""
        self._pool.submit(self._answer, ask_id, text, decision, job_id)

    def _answer(self, ask_id: str, text: str, decision: Decision, job_id: str | None) -> None:
        started = time.monotonic()
        try:
            kind, reply, data = self._work(ask_id, text, decision, job_id)
        except ControlError as exc:
            kind, reply, data = "error", str(exc), None
        except StoreError as exc:
            kind, reply, data = "error", f"the event log cannot answer right now: {exc}", None
        except Exception as exc:  # a bug must still answer the ask
            log.exception("ask %s failed", ask_id)
            kind, reply, data = "error", f"internal error: {type(exc).__name__}", None
        status = "delegated" if kind is None else "failed" if kind == "error" else "answered"
        try:
            self.control.events.set_instruction_status(ask_id, status)
        except StoreError as exc:
            log.error("ask %s: %s", ask_id, exc)
        if kind is None:  # delegated: the delegate client answers with the result
            return
        extra: dict[str, Any] = {"data": data} if data is not None else {}
        self.control.answer(ask_id, kind, reply, **extra)
        log.info(
            "ask %s (%s) answered in %.1f ms: %s",
            ask_id,
            decision.kind,
            (time.monotonic() - started) * 1000,
            reply[:120],
        )

    def _work(self, ask_id: str, text: str, d: Decision, job_id: str | None) -> tuple[str | None, str, Any]:
        if d.kind == "rule":
            assert d.rule is not None
            cfg = d.rule_config()
            self.control.add_rule(cfg, "instruction", by="instruction")
            return "answer", rule_words(d.rule), {"rule": cfg.model_dump(mode="json")}
        if d.kind == "question" and d.line is not None:
            return self._line_counts(d)
        if d.kind == "question":
            return self._question(d)
        if d.kind == "memory":
            return self._memory(d)
        if d.kind == "control" and d.task in NARRATION:
            return self._narration(ask_id, d)
        if d.kind == "control":
            return self._control(d)
        if d.kind == "delegate":
            if self.control.delegate is None:
                return (
                    "error",
                    (
                        "that needs the blue loop (a blue-loop server on MQTT), and this appliance has "
                        "no MQTT broker configured"
                    ),
                    None,
                )
            camera = d.cameras[0] if d.cameras else (self.control.cameras() or [None])[0]
            self.control.delegate.submit(ask_id, camera, d.task or "describe", text, job_id=job_id)
            return None, "", None
        return (
            "answer",
            d.summary if d.summary.startswith("I can") else f"Sorry, {d.summary}",
            {"kind": "unknown"},
        )

    def _question(self, d: Decision) -> tuple[str, str, Any]:
        assert d.label is not None
        cameras = d.cameras or self.control.cameras()
        if not cameras:
            return "answer", "I have no cameras to look with.", None
        if d.zone is not None:  # only the cameras that have that zone
            cameras = [c for c in cameras if d.zone in self.zones.get(c, {})] or cameras
        self._refresh(cameras, d.label)
        counts: dict[str, int] = {}
        for camera in cameras:
            view = self.live.get(camera)
            if view is None:
                counts[camera] = 0
            elif d.zone is not None:
                counts[camera] = self._in_zone(view, camera, d.zone, d.label)
            else:
                counts[camera] = view.count(d.label)
        total = sum(counts.values())
        where = cameras[0] if len(cameras) == 1 else "all cameras"
        if d.zone is not None:
            where = f"the {spoken(d.zone)} on {where}"
        if d.form == "any":
            if total:
                seen = ", ".join(f"{plural(n, d.label)} on {c}" for c, n in counts.items() if n)
                text = f"Yes: {seen}."
            else:
                thing = plural_noun(d.label)
                text = f"No, I see no {thing} {'in' if d.zone else 'on'} {where}."
        else:
            detail = (
                "" if len(cameras) == 1 else " (" + ", ".join(f"{c}: {n}" for c, n in counts.items()) + ")"
            )
            text = f"I see {plural(total, d.label)} {'in' if d.zone else 'on'} {where} now{detail}."
        data: dict[str, Any] = {"label": d.label, "counts": counts, "total": total}
        if d.zone is not None:
            data["zone"] = d.zone
        return "answer", text, data

    def _line_counts(self, d: Decision) -> tuple[str, str, Any]:
        """A line's crossings since midnight, from its camera's line counter."""
        assert d.line is not None and d.label is not None and d.cameras
        camera, label = d.cameras[0], d.label
        loop = self.control.loops.get(camera)
        counter = loop.lines if loop is not None else None
        line = spoken(d.line)
        counts = counter.counts().get((d.line, label)) if counter is not None else None
        if counter is None or counts is None:
            return "answer", f"I do not count {plural_noun(label)} on the {line} on {camera}.", None
        since = datetime.fromisoformat(str(counts["since"]))
        window = "today" if since.time() == dtime() else f"since {since:%H:%M}"
        n_in, n_out = int(counts["in"]), int(counts["out"])  # type: ignore[call-overload]
        if d.form == "line_in":
            text = f"{plural(n_in, label)} came in through the {line} on {camera} {window}."
        elif d.form == "line_out":
            text = f"{plural(n_out, label)} went out through the {line} on {camera} {window}."
        else:
            text = f"The {line} on {camera} {window}: {plural(n_in, label)} in, {plural(n_out, label)} out."
        data = {
            "camera": camera,
            "line": d.line,
            "label": label,
            "in": n_in,
            "out": n_out,
            "since": counts["since"],
        }
        return "answer", text[0].upper() + text[1:], data

    def _in_zone(self, view: CameraView, camera: str, zone: str, label: str) -> int:
        """Objects of `label` in a camera zone now: its occupancy (tracked labels, held like the counts),
        else the last look's detections whose feet are inside (a label no rule there tracks)."""
        held = view.occupancy.get(zone, {})
        if label in held:
            return held[label]
        polygon = self.zones.get(camera, {}).get(zone)
        if polygon is None or not view.width or not view.height:
            return 0
        w, h = view.width, view.height
        mine = (d for d in view.detections if d.label == label)
        return sum(1 for d in mine if point_in_polygon(*feet(d.box, w, h), polygon))

    def _refresh(self, cameras: list[str], label: str) -> None:
        """Wake the gate for a fresh look where the last one is older than FRESH_S, and wait for it.
        Fire and smoke are fresh after any look; objects after an object-detector look."""
        waits = []
        for camera in cameras:
            view = self.live.get(camera)
            loop = self.control.loops.get(camera)
            last = (view.at if label in ("fire", "smoke") else view.objects_at) if view is not None else 0.0
            if loop is None or time.time() - last <= FRESH_S:
                continue
            if loop.detect_enabled:
                waits.append(loop.request_look())
        deadline = time.monotonic() + LOOK_WAIT_S
        for done in waits:
            done.wait(max(0.0, deadline - time.monotonic()))

    def _narration(self, ask_id: str, d: Decision) -> tuple[str, str, Any]:
        narrator = self.narrator
        if narrator is None:
            return "error", "narration needs the running appliance (edge run); it is not on here", None
        if d.task == "narrate_on":
            text, data = narrator.narrate_on(ask_id, d.cameras)
        elif d.task == "narrate_off":
            text, data = narrator.narrate_off(d.cameras)
        elif d.task == "digest_on":
            text, data = narrator.digest_on(ask_id, d.cameras, d.every_s)
        else:
            text, data = narrator.digest_off(d.cameras)
        return "answer", text, data

    def _digest(self, d: Decision) -> tuple[str, str, Any]:
        """'Last hour: 4 people, 1 car, no fire.' from the event log (edge.narrator.digest)."""
        from edge.narrator import digest  # the narrator imports this module

        watched = {
            rule.label
            for rule in self.control.active_rules()
            if not d.cameras or any(rule.applies_to(c) for c in d.cameras)
        }
        since = d.since if d.since is not None else time.time() - 3600.0
        text, data = digest(self.events, d.cameras, since, watched)
        return "answer", text, data

    def _memory(self, d: Decision) -> tuple[str, str, Any]:
        if d.form == "digest":
            return self._digest(d)
        label = d.label or "person"
        cameras = d.cameras or [None]
        rows: list[dict] = []
        for camera in cameras:
            rows += self.events.events(limit=500, camera=camera, label=label, since=d.since)
        rows.sort(key=lambda r: r["started_at"])
        thing = plural_noun(label)
        window = "" if d.since is None else f" since {clock(d.since)}"
        if d.form == "any":
            if not rows:
                return "answer", f"No, no {thing}{window}.", {"events": []}
            last = rows[-1]
            text = (
                f"Yes: {len(rows)} {label} event{'s' if len(rows) != 1 else ''}{window}, the last at "
                f"{clock(last['started_at'])} on {last['camera']}."
            )
            return "answer", text, {"events": [_event(r) for r in rows]}
        if d.form in ("last_end", "last_start"):
            key = "ended_at" if d.form == "last_end" else "started_at"
            done = [r for r in rows if r.get(key)]
            if not done:
                return (
                    "answer",
                    f"I have no {thing} {'leaving' if key == 'ended_at' else 'arriving'} in the log.",
                    None,
                )
            last = max(done, key=lambda r: r[key])
            verb = "left" if key == "ended_at" else "appeared"
            return (
                "answer",
                f"The last {label} {verb} {last['camera']} at {clock(last[key])}.",
                {"event": _event(last)},
            )
        if d.limit:
            rows = rows[-d.limit :]
        if not rows:
            return "answer", f"No {thing} appeared{window}.", {"events": []}
        items = [f"{clock(r['started_at'])}–{clock(r.get('ended_at')) if r.get('ended_at') else 'now'} "
                 f"on {r['camera']}" for r in rows]  # fmt: skip
        text = f"{plural(len(rows), label).capitalize()} appeared{window}: " + "; ".join(items) + "."
        return "answer", text, {"events": [_event(r) for r in rows]}

    def _mode(self, d: Decision) -> tuple[str, str, Any]:
        """'arm away' / "I'm home": switch (by `instruction`) and say what changed; 'what mode are you
        in?': the mode and what it lets alert."""
        if d.task == "set_mode":
            assert d.mode is not None
            change = self.control.set_mode(d.mode, by="instruction")
            return "answer", change.words(), change.data()
        state = self.control.mode_state()
        since = f" (since {clock(state.set_at)}, set by {state.set_by})" if state.set_at else ""
        text = f"I am in {state.mode} mode{since}. {state.summary} Modes: {', '.join(state.modes)}."
        return "answer", text, state.data()

    def _control(self, d: Decision) -> tuple[str, str, Any]:
        if d.task in ("set_mode", "mode_state"):
            return self._mode(d)
        if d.task == "list_rules":
            entries = self.control.rules()
            if not entries:
                return (
                    "answer",
                    'I am not watching for anything yet. Tell me what matters, e.g. "alert me if a '
                    'fire breaks out".',
                    {"rules": []},
                )
            said = []
            for e in entries:
                data = e.rule.cfg.model_dump(mode="json")
                what = rule_words(data)[len("I will alert you when I see ") : -1]
                said.append(f"{what} ({e.origin}, rule {e.rule.name})")
            rules = [{**e.rule.cfg.model_dump(mode="json"), "origin": e.origin} for e in entries]
            return "answer", "I am watching for: " + "; ".join(said) + ".", {"rules": rules}
        if d.task == "remove_rule":
            removable = [
                n
                for n in d.rules
                if any(e.rule.name == n and e.origin != "config" for e in self.control.rules())
            ]
            fixed = [n for n in d.rules if n not in removable]
            for name in removable:
                self.control.remove_rule(name, by="instruction")
            if removable:
                note = f" ({', '.join(fixed)} come from the config file and stay)" if fixed else ""
                return "answer", f"Removed {', '.join(removable)}{note}.", {"removed": removable}
            if fixed:
                return (
                    "error",
                    f"{', '.join(fixed)} come{'s' if len(fixed) == 1 else ''} from the config file; "
                    'remove it there, or say "stop alerting on CAMERA".',
                    None,
                )
            return (
                "answer",
                f"There is no {d.label or ''} rule to remove.".replace("  ", " "),
                {"removed": []},
            )
        switch, on = {
            "pause": ("detect", False),
            "resume": ("detect", True),
            "alerts_off": ("alerts", False),
            "alerts_on": ("alerts", True),
        }[d.task or ""]
        cameras = d.cameras or self.control.cameras()
        for camera in cameras:
            self.control.set_switch(camera, switch, on, by="instruction")
            if d.task == "resume":
                self.control.set_switch(camera, "alerts", True, by="instruction")
        verb = {
            "pause": "Paused",
            "resume": "Watching again:",
            "alerts_off": "No alerts from",
            "alerts_on": "Alerting again on",
        }[d.task or ""]
        return "answer", f"{verb} {', '.join(cameras)}.", {"cameras": cameras, switch: on}


def _event(row: dict) -> dict:
    return {
        "id": row["id"],
        "camera": row["camera"],
        "label": row["label"],
        "started_at": row["started_at"],
        "ended_at": row.get("ended_at"),
        "started": clock(row["started_at"]),
        "ended": clock(row.get("ended_at")),
    }


__all__ = ["HELP", "Router"]

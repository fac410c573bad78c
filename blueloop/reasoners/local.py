"""The `local` reasoner: CPU only, no LLM. The project's own detector (a closer look than the red
loop's), OCR, and templates: what a cheap LAN box or the appliance's own host can answer."""

from __future__ import annotations

import logging
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from blueloop.jobs import Job, JobError, Result, unknown_kind
from blueloop.render import report_html, screen_html
from blueloop.text import clock, counted, counts_phrase, duration, listing
from blueloop.vision import HiresDetector, Ocr, TextBlock, reading_lines
from edge.types import Detection

log = logging.getLogger("blueloop.local")

OCR_FRAMES = 3
"""read_text looks at up to this many frames (first, middle, last) and keeps the one with most text."""
MAX_EVENTS = 8


class Timeout(Exception):
    """The job's deadline passed between two steps (the worker has already answered `timeout`)."""


class LocalReasoner:
    name = "local"

    def __init__(self, model_file: str | None, reports: Path, slow_ms: int = 0) -> None:
        self.detector = HiresDetector(model_file)
        self.ocr = Ocr()
        self.reports = reports
        self.slow_ms = slow_ms

    def warm(self) -> None:
        self.ocr.warm()

    def reason(self, job: Job) -> Result:
        handler = {
            "describe": self.describe,
            "report": self.report,
            "read_text": self.read_text,
            "ui_html": self.ui_html,
            "verify": self.verify,
        }.get(job.kind)
        if handler is None:
            return unknown_kind(job.kind)
        if self.slow_ms:  # a deliberately slow reasoner (tests: a job still running when a worker dies)
            end = time.monotonic() + self.slow_ms / 1000
            while time.monotonic() < end:
                _check(job)
                time.sleep(0.02)
        try:
            return handler(job)
        except Timeout:
            return Result("timeout", f"the {job.kind} job passed its deadline")
        except JobError as exc:
            return Result("failed", str(exc))

    # -- looking ---------------------------------------------------------------------------------

    def _looks(self, job: Job) -> list[tuple[float, np.ndarray, list[Detection]]]:
        out = []
        for frame in job.frames:
            _check(job)
            image = frame.image()
            out.append((frame.ts, image, self.detector.detect(image)))
        return out

    def _summary(self, job: Job, looks: list[tuple[float, np.ndarray, list[Detection]]]) -> tuple[str, dict]:
        sentences = []
        peak_ts, peak = None, Counter()
        for ts, _, dets in looks:
            tally = Counter(d.label for d in dets)
            if peak_ts is None or sum(tally.values()) >= sum(peak.values()):
                peak_ts, peak = ts, tally
        if peak_ts is not None:
            if peak:
                where = ""
                only = [d for ts, _, dets in looks if ts == peak_ts for d in dets]
                if len(only) == 1:
                    w = next(img.shape[1] for ts, img, _ in looks if ts == peak_ts)
                    where = " " + _side(only[0], w)
                sentences.append(f"{_cap(counts_phrase(peak))} in view{where} at {clock(peak_ts)}")
            else:
                sentences.append(f"Nothing the detector knows is in view at {clock(peak_ts)}")
            if len(looks) > 1:
                sentences[-1] += (
                    f" (the busiest of {len(looks)} keyframes, {clock(looks[0][0])} to {clock(looks[-1][0])})"
                )
        events = _latest_events(job.context.get("recent_events") or [])
        said = []
        for e in events[-MAX_EVENTS:]:
            label, start, end = str(e.get("label") or "object"), e.get("started_at"), e.get("ended_at")
            if not isinstance(start, (int, float)):
                continue
            cam = f" on {e['camera']}" if e.get("camera") and e.get("camera") != job.camera else ""
            if isinstance(end, (int, float)):
                said.append(
                    f"{counted(label, 1)} entered{cam} at {clock(start)} and stayed {duration(end - start)}"
                )
            else:
                said.append(f"{counted(label, 1)} entered{cam} at {clock(start)} and is still in view")
        if said:
            sentences.append(listing(said))
        counts = _int_counts(job.context.get("counts") or {})
        if counts:
            sentences.append(f"The appliance counts {counts_phrase(counts)} now")
        elif "counts" in job.context and job.context.get("counts") == {}:
            pass
        text = "; ".join(sentences[:2]) + ("." if sentences else "")
        if len(sentences) > 2:
            text += " " + ". ".join(sentences[2:]) + "."
        data = {
            "peak": {"ts": peak_ts, "counts": dict(peak)},
            "frames": [
                {
                    "ts": ts,
                    "objects": [
                        {"label": d.label, "score": round(d.score, 3), "box": [round(v, 1) for v in d.box]}
                        for d in dets
                    ],
                }
                for ts, _, dets in looks
            ],
            "events": len(events),
        }
        return text or "Nothing to describe: no frames and no recent events.", data

    # -- kinds -----------------------------------------------------------------------------------

    def describe(self, job: Job) -> Result:
        text, data = self._summary(job, self._looks(job))
        return Result("done", text, data)

    def report(self, job: Job) -> Result:
        looks = self._looks(job)
        summary, data = self._summary(job, looks)
        _check(job)
        title = f"Incident report: {job.camera or job.device}"
        page = report_html(
            title=title,
            summary=summary,
            prompt=job.prompt,
            device=job.device,
            camera=job.camera,
            frames=looks,
            events=_latest_events(job.context.get("recent_events") or [])[-50:],
            counts=job.context.get("counts") or {},
        )
        folder = self.reports / _safe(job.device)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{time.strftime('%Y%m%d-%H%M%S')}-{_safe(job.job_id)}.html"
        path.write_text(page, encoding="utf-8")
        data["path"] = str(path.resolve())
        return Result("done", f"{title}. {summary} Saved to {data['path']}.", data, page)

    def _ocr_best(self, job: Job) -> tuple[float, np.ndarray, list[TextBlock]]:
        picks = sorted({0, len(job.frames) // 2, len(job.frames) - 1})[:OCR_FRAMES]
        best = None
        for i in picks:
            _check(job)
            image = job.frames[i].image()
            blocks = self.ocr.read(image)
            weight = sum(len(b.text) * b.score for b in blocks)
            if best is None or weight > best[0]:
                best = (weight, job.frames[i].ts, image, blocks)
        assert best is not None
        return best[1], best[2], best[3]

    def read_text(self, job: Job) -> Result:
        ts, _, blocks = self._ocr_best(job)
        lines = [" ".join(b.text for b in line) for line in reading_lines(blocks)]
        data = {
            "lines": lines,
            "frame_ts": ts,
            "blocks": [
                {"text": b.text, "box": [round(v, 1) for v in b.box], "score": round(b.score, 3)}
                for b in blocks
            ],
        }
        if not lines:
            return Result("done", f"I see no readable text at {clock(ts)}.", data)
        return Result("done", "\n".join(lines), data)

    def ui_html(self, job: Job) -> Result:
        frame = job.frames[-1]
        image = frame.image()
        blocks = self.ocr.read(image)
        _check(job)
        page, items = screen_html(image, blocks)
        texts = [it["text"] for it in items]
        text = f"The screen as HTML ({image.shape[1]}x{image.shape[0]}, {len(texts)} text blocks)"
        text += (": " + " / ".join(texts)) if texts else "; no text found on it."
        return Result(
            "done", text, {"blocks": items, "width": image.shape[1], "height": image.shape[0]}, page
        )

    def verify(self, job: Job) -> Result:
        label = _label_to_verify(job)
        if label is None:
            raise JobError("verify: no label to check (context.label, context.alert.label or a recent event)")
        if label in ("fire", "smoke"):
            return self._verify_fire(job, label)
        if label not in self.detector.labels:
            raise JobError(f"verify: the detector does not know {label!r}")
        looks = self._looks(job)
        seen = [ts for ts, _, dets in looks if any(d.label == label for d in dets)]
        need = 1 if len(looks) <= 2 else 2
        confirmed = len(seen) >= need
        best = max((d.score for _, _, dets in looks for d in dets if d.label == label), default=0.0)
        verdict = "confirmed" if confirmed else "retracted"
        text = (
            f"{verdict}: {counted(label, 1) if confirmed else 'no ' + label} seen in "
            f"{len(seen)} of {len(looks)} keyframes on a closer look"
            + (f" (best score {best:.2f})" if seen else "")
        )
        return Result(
            "done",
            text,
            {
                "confirmed": confirmed,
                "label": label,
                "frames_seen": len(seen),
                "frames": len(looks),
                "best_score": round(best, 3),
            },
        )

    def _verify_fire(self, job: Job, label: str) -> Result:
        from edge.config.models import FireConfig
        from edge.reflex.fire import FireDetector

        fire = FireDetector(FireConfig())
        hits = 0
        for frame in job.frames:
            _check(job)
            hits += bool(fire.detect(frame.image(), frame.ts - job.frames[0].ts))
        confirmed = hits > 0
        text = (
            f"{'confirmed' if confirmed else 'retracted'}: fire seen in {hits} of {len(job.frames)} keyframes"
        )
        return Result(
            "done",
            text,
            {"confirmed": confirmed, "label": label, "frames_seen": hits, "frames": len(job.frames)},
        )


def _check(job: Job) -> None:
    if job.expired():
        raise Timeout


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _side(d: Detection, width: int) -> str:
    cx = (d.box[0] + d.box[2]) / 2 / max(width, 1)
    return "on the left" if cx < 1 / 3 else ("on the right" if cx > 2 / 3 else "in the middle")


def _latest_events(events: list[Any]) -> list[dict]:
    """One entry per event id (the latest transition wins), oldest start first."""
    by_id: dict[str, dict] = {}
    for i, e in enumerate(events):
        if isinstance(e, dict):
            by_id[str(e.get("id", f"#{i}"))] = e
    return sorted(
        by_id.values(),
        key=lambda e: e.get("started_at") if isinstance(e.get("started_at"), (int, float)) else 0,
    )


def _int_counts(counts: dict) -> dict[str, int]:
    out: dict[str, int] = {}
    for k, v in counts.items():
        if isinstance(v, bool):
            continue
        if isinstance(v, int):
            out[k] = v
        elif isinstance(v, dict):  # per camera
            out[k] = sum(n for n in v.values() if isinstance(n, int) and not isinstance(n, bool))
    return out


def _label_to_verify(job: Job) -> str | None:
    ctx = job.context
    for value in (
        ctx.get("label"),
        (ctx.get("alert") or {}).get("label") if isinstance(ctx.get("alert"), dict) else None,
    ):
        if isinstance(value, str) and value:
            return value
    events = _latest_events(ctx.get("recent_events") or [])
    return str(events[-1]["label"]) if events and events[-1].get("label") else None


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:80] or "_"

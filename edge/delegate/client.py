"""The delegate client: jobs for the blue loop, and their results answering the asks.

Why it is built this way:

- **The caller never waits.** `submit()` (called by the instruction router right after its `ack`)
  stores a small job row and hands the rest to the delegate's own thread: JPEG encoding, the recent
  events, and the request (often a megabyte) go into the outbox there. It takes a fraction of a
  millisecond plus one small SQLite commit, and never touches the network.
- **The outbox carries the request.** Kind `blue_request` drains at bulk priority, after alerts,
  answers and events, so no job ever delays an alert, and a broker outage delays a job without losing
  it. The outbox row's message id is the job id: the PUBACK tells the job it was sent, and a resend
  queues the same bytes under the same id (workers de-duplicate by it).
- **Exactly one final answer per ask.** A job is ended by one conditional write (open -> done, failed
  or timeout); only the caller that made it answers. A result delivered twice (QoS 1), a second
  worker's result and a result after the deadline find the job ended and are ignored, logged once.
- **A restart forgets no job.** Jobs live in SQLite. At start, jobs past their deadline are answered
  `timeout`; a job whose request was never built is built from what the camera ring holds now; the
  others wait for their result and are resent when due.
- **One small thread** does the building, the sent/resend bookkeeping and the deadlines (a few
  reads of a tiny table every TICK_S while jobs are open); results arrive on the bus's command thread.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from edge.delegate.frames import MAX_FRAMES, MAX_JPEG_BYTES, encode_frames, spread
from edge.delegate.results import MAX_RESULT_BYTES, JobResult, ResultError, parse_result
from edge.live import Keyframe, LiveView
from edge.outbox import Topics, blue_request_payload, new_job_id
from edge.store import EventLog, StoreError

if TYPE_CHECKING:
    from edge.bus.mqtt import Bus, Received
    from edge.control import Control

log = logging.getLogger("edge.delegate")

DEADLINE_S = 60.0
RESEND_AFTER_S = 15.0
"""A job whose request went out this long ago without a result is queued again (same job id)."""
MAX_ATTEMPTS = 4
"""Requests per job at most (the first and three resends)."""
RECENT_EVENTS = 20
TICK_S = 0.2
"""How often open jobs are checked for sends, resends and deadlines."""
REMEMBER = 1024
"""Ignored results remembered (so each is logged once)."""


@dataclass(frozen=True, slots=True)
class FinishedJob:
    """A job that has ended, as the listeners get it (whether or not it answered an ask)."""

    job_id: str
    ask_id: str | None
    camera: str | None
    kind: str
    status: str
    """done / failed / timeout."""
    text: str
    data: Any
    html: str | None
    elapsed_ms: float | None


@dataclass(slots=True)
class _Pending:
    """A submitted job whose request is not built yet."""

    job_id: str
    ask_id: str | None
    camera: str | None
    kind: str
    prompt: str
    created_at: float
    deadline: float
    seconds: float
    keyframes: list[Keyframe]
    counts: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)
    stored: bool = True


def local_time(epoch: float | None) -> str | None:
    """ISO 8601 in the device's local time, with its UTC offset ('2025-05-01T22:03:04+02:00')."""
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch).astimezone().isoformat(timespec="seconds")


def event_context(row: dict[str, Any]) -> dict[str, Any]:
    """An event-log row as a job's context carries it (epoch seconds and local-time strings)."""
    return {
        "id": row["id"],
        "camera": row["camera"],
        "label": row["label"],
        "rule": row["rule"],
        "score": round(float(row["score"]), 3),
        "box": row["box"],
        "zones": row["zones"],
        "started_at": row["started_at"],
        "ended_at": row["ended_at"],
        "started": local_time(row["started_at"]),
        "ended": local_time(row["ended_at"]),
        "snapshot": row["snapshot"],
    }


class Delegate:
    """One per appliance. `submit()` from any thread; `subscribe(bus)` before the bus starts."""

    def __init__(
        self,
        events: EventLog,
        topics: Topics,
        control: Control,
        live: LiveView,
        *,
        resend_after_s: float = RESEND_AFTER_S,
        max_attempts: int = MAX_ATTEMPTS,
        max_frames: int = MAX_FRAMES,
        max_jpeg_bytes: int = MAX_JPEG_BYTES,
        recent_events: int = RECENT_EVENTS,
        max_result_bytes: int = MAX_RESULT_BYTES,
        tick_s: float = TICK_S,
    ) -> None:
        """`control` answers the asks (`answer()`) and wakes the bus after an outbox write
        (`notify()`); `live` has the cameras' keyframe rings and counts."""
        self.events = events
        self.topics = topics
        self.control = control
        self.live = live
        self.resend_after_s = resend_after_s
        self.max_attempts = max_attempts
        self.max_frames = max_frames
        self.max_jpeg_bytes = max_jpeg_bytes
        self.recent_events = recent_events
        self.max_result_bytes = max_result_bytes
        self.tick_s = tick_s
        self._listeners: list[Callable[[FinishedJob], None]] = []
        """Called (delegate or bus command thread) when any job ends: two-phase alerts, commentary."""
        self._queue: queue.Queue[_Pending] = queue.Queue()
        self._preparing: set[str] = set()
        self._unsaved: dict[str, tuple[str, JobResult | None, str | None]] = {}
        """Jobs answered while the event log refused to record their end: recorded when it can."""
        self._lock = threading.Lock()
        self._check_lock = threading.RLock()
        self._said: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_store_error = ""

    # -- wiring --------------------------------------------------------------------------------

    def subscribe(self, bus: Bus) -> None:
        bus.subscribe(self.topics.blue_result, self.on_result)

    def start(self) -> None:
        """Pick up the jobs of the last run, then run the delegate thread."""
        try:
            left = self.events.open_jobs()
        except StoreError as exc:
            log.error("cannot read the jobs of the last run: %s", exc)
            left = []
        if left:
            log.info("%d blue-loop job(s) still open from the last run", len(left))
        self._check_quietly()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="delegate", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Build what was submitted (so it survives), then stop; open jobs stay stored."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    # -- submitting ----------------------------------------------------------------------------

    def listen(self, listener: Callable[[FinishedJob], None]) -> None:
        """Call `listener` with every job that ends (whether or not it answered an ask); each listener
        picks the jobs that are its own (the verifier: kind verify; the narrator: its describe jobs)."""
        self._listeners.append(listener)

    def submit(
        self,
        ask_id: str | None,
        camera: str | None,
        kind: str,
        prompt: str,
        *,
        job_id: str | None = None,
        seconds: float = 10,
        deadline_s: float = DEADLINE_S,
        extra_context: dict | None = None,
    ) -> str:
        """Delegate a job; returns its id at once (the caller has sent, or sends, the `ack` with it).

        The job takes the camera's keyframes of the last `seconds` (all cameras' counts and events
        when `camera` is None, and no frames) and must be answered within `deadline_s`. Never blocks
        on the network: one small SQLite write, the rest happens on the delegate thread."""
        job_id = job_id or new_job_id()
        now = time.time()
        ring = self.live.keyframes.get(camera) if camera is not None else None
        keyframes = spread(ring.last(seconds), self.max_frames) if ring is not None else []
        pending = _Pending(
            job_id,
            ask_id,
            camera,
            kind,
            prompt,
            now,
            now + deadline_s,
            float(seconds),
            keyframes,
            self._counts(camera),
            dict(extra_context or {}),
        )
        with self._lock:
            self._preparing.add(job_id)
        try:
            if not self._store(pending):
                log.warning("job %s is stored already; not submitted again", job_id)
                with self._lock:
                    self._preparing.discard(job_id)
                return job_id
        except StoreError as exc:
            log.error("job %s: %s (tried again on the delegate thread)", job_id, exc)
            pending.stored = False
        self._queue.put(pending)
        self._wake.set()
        return job_id

    def _store(self, p: _Pending) -> bool:
        return self.events.add_job(
            p.job_id,
            p.ask_id,
            p.camera,
            p.kind,
            p.prompt,
            created_at=p.created_at,
            deadline=p.deadline,
            seconds=p.seconds,
            context=p.extra or None,
        )

    def _counts(self, camera: str | None) -> dict[str, Any]:
        if camera is not None:
            view = self.live.get(camera)
            return dict(view.counts) if view is not None else {}
        views = {name: self.live.get(name) for name in self.live.cameras()}
        return {name: dict(view.counts) for name, view in views.items() if view is not None}

    def _prepare(self, p: _Pending) -> None:
        """Build the request and queue it (delegate thread)."""
        try:
            encoded = encode_frames(p.keyframes, self.max_frames, self.max_jpeg_bytes)
            recent = self.events.events(limit=self.recent_events, camera=p.camera)
            payload = blue_request_payload(
                job_id=p.job_id,
                device=self.topics.device,
                camera=p.camera,
                ask_id=p.ask_id,
                kind=p.kind,
                prompt=p.prompt,
                frames=encoded.frames,
                recent_events=[event_context(row) for row in reversed(recent)],
                counts=p.counts,
                deadline=round(p.deadline, 3),
            )
            payload["context"].update(p.extra)
            if not p.stored:
                self._store(p)
            size = self.events.queue_job_request(
                p.job_id, self.topics.blue_request, payload, len(encoded.frames)
            )
        except (StoreError, ValueError) as exc:
            self._give_up(p, f"the job could not be queued for the blue loop: {exc}")
            return
        finally:
            with self._lock:
                self._preparing.discard(p.job_id)
        if size:
            log.info(
                "job %s (%s, camera %s): request queued, %d frame(s), %d KiB of JPEG at quality %d",
                p.job_id,
                p.kind,
                p.camera or "-",
                len(encoded.frames),
                encoded.jpeg_bytes // 1024,
                encoded.quality,
            )
            self.control.notify()

    def _give_up(self, p: _Pending, why: str) -> None:
        log.error("job %s: %s", p.job_id, why)
        try:
            if self._finish(p.job_id, "failed", error=why):
                return
            if self.events.job(p.job_id) is not None:
                return  # it had ended already (its deadline): answered then
        except StoreError:
            with self._check_lock:  # its end is recorded once the log works (no deadline answer)
                self._unsaved[p.job_id] = ("failed", None, why)
        if p.ask_id is not None:  # still answered (from memory if need be)
            self.control.answer(p.ask_id, "error", why, job_id=p.job_id)

    # -- the delegate thread --------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            self._build_submitted()
            if self._stop.is_set():
                return
            self._check_quietly()
            self._wake.wait(self.tick_s)
            self._wake.clear()

    def _build_submitted(self) -> None:
        while True:
            try:
                pending = self._queue.get_nowait()
            except queue.Empty:
                return
            self._prepare(pending)

    def _check_quietly(self) -> None:
        try:
            self.check()
            self._last_store_error = ""
        except StoreError as exc:
            if str(exc) != self._last_store_error:
                log.error("blue-loop jobs: %s (retrying)", exc)
            self._last_store_error = str(exc)
        except Exception:
            log.exception("blue-loop jobs: checking the open jobs failed")

    def check(self, now: float | None = None) -> None:
        """One pass over the open jobs: record sends, resend the silent ones, end those past their
        deadline. The delegate thread runs it every TICK_S."""
        with self._check_lock:
            self._record_unsaved()
            now = time.time() if now is None else now
            for job in self.events.open_jobs():
                job_id = job["job_id"]
                if job_id in self._unsaved:
                    continue
                if job["deadline"] <= now:
                    self._deadline_passed(job)
                    continue
                if job["request_bytes"] is None:
                    with self._lock:
                        building = job_id in self._preparing
                    if not building:  # submitted by the last run, which stopped before building it
                        self._prepare(self._pending_of(job))
                    continue
                delivered = job["delivered_at"]
                if delivered is None:
                    continue  # waiting for the broker
                if job["status"] != "sent" or job["sent_at"] != delivered:
                    self.events.mark_job_sent(job_id, delivered)
                due = now - delivered >= self.resend_after_s and job["attempts"] < self.max_attempts
                if due and self.events.requeue_job(job_id):
                    log.warning(
                        "job %s: no result %.0f s after its request went out; sending it "
                        "again (attempt %d of %d)",
                        job_id,
                        now - delivered,
                        job["attempts"] + 1,
                        self.max_attempts,
                    )
                    self.control.notify()

    def _pending_of(self, job: dict[str, Any]) -> _Pending:
        """A job of the last run whose request was never built: the frames are what the ring has now."""
        camera = job["camera"]
        ring = self.live.keyframes.get(camera) if camera is not None else None
        keyframes = spread(ring.last(job["seconds"]), self.max_frames) if ring is not None else []
        with self._lock:
            self._preparing.add(job["job_id"])
        return _Pending(
            job["job_id"],
            job["ask_id"],
            camera,
            job["kind"],
            job["prompt"],
            job["created_at"],
            job["deadline"],
            job["seconds"],
            keyframes,
            self._counts(camera),
            dict(job.get("context") or {}),
        )

    def _deadline_passed(self, job: dict[str, Any]) -> None:
        allowed = job["deadline"] - job["created_at"]
        why = f"the blue loop did not answer within {allowed:.0f} s"
        if job["sent_at"] is None and job["delivered_at"] is None:
            why += " (its request never reached the MQTT broker)"
        self._finish(job["job_id"], "timeout", error=why)

    def _record_unsaved(self) -> None:
        for job_id, (status, result, error) in list(self._unsaved.items()):
            self._save(job_id, status, result, error)
            del self._unsaved[job_id]

    # -- results -------------------------------------------------------------------------------

    def on_result(self, received: Received) -> None:
        """A message on …/blue/result (bus command thread)."""
        try:
            result = parse_result(received.payload, self.max_result_bytes)
        except ResultError as exc:
            self._say_once("malformed", str(exc), "blue/result: ignored a malformed result: %s", exc)
            return
        if result.status == "done":
            error = None
        else:
            said = result.text.strip() or "no reason given"
            error = (
                f"the blue loop could not do it: {said}"
                if result.status == "failed"
                else f"the blue loop ran out of time: {said}"
            )
        try:
            ended = self._finish(result.job_id, result.status, result=result, error=error)
        except StoreError as exc:
            self._answer_unsaved(result, error, exc)
            return
        if ended:
            return
        try:
            job = self.events.job(result.job_id)
        except StoreError:
            job = None
        if job is None:
            self._say_once(
                "unknown", result.job_id, "blue/result: ignored a result for unknown job %s", result.job_id
            )
        else:
            self._say_once(
                "again",
                result.job_id,
                "job %s: ignored another result (the job is %s "
                "already: a re-delivery, a resend's second worker or too late)",
                result.job_id,
                job["status"],
            )

    def _answer_unsaved(self, result: JobResult, error: str | None, exc: StoreError) -> None:
        """The event log refuses the result: answer it now anyway (an ask is always answered), and
        record the job's end when the log works again (no deadline answer meanwhile)."""
        with self._check_lock:
            if result.job_id in self._unsaved:
                return
            log.error("job %s: its result cannot be stored yet (%s); answering it anyway", result.job_id, exc)
            self._unsaved[result.job_id] = (result.status, result, error)
        ask_id = None
        try:
            job = self.events.job(result.job_id)
            ask_id = job["ask_id"] if job else None
        except StoreError:
            pass
        if ask_id is not None:
            self._answer_ask(ask_id, result.job_id, result.status, result, error)

    def _finish(
        self, job_id: str, status: str, *, result: JobResult | None = None, error: str | None = None
    ) -> bool:
        """End the job (once) and answer its ask; False if it had ended already or is unknown."""
        job = self._save(job_id, status, result, error)
        if job is None:
            return False
        if job["ask_id"] is not None:
            self._answer_ask(job["ask_id"], job_id, status, result, error)
        elapsed = job["elapsed_ms"]
        log.info("job %s: %s after %.0f ms (%d request(s))", job_id, status, elapsed or 0, job["attempts"])
        if self._listeners:
            text = result.text if result is not None and status == "done" else (error or "")
            finished = FinishedJob(
                job_id,
                job["ask_id"],
                job["camera"],
                job["kind"],
                status,
                text,
                result.data if result else None,
                result.html if result else None,
                elapsed,
            )
            for listener in self._listeners:
                try:
                    listener(finished)
                except Exception:  # one listener's bug must not keep the job's end from the others
                    log.exception("job %s: a listener failed", job_id)
        return True

    def _save(self, job_id: str, status: str, result: JobResult | None, error: str | None) -> dict | None:
        if result is None:
            return self.events.finish_job(job_id, status, error=error)
        return self.events.finish_job(
            job_id,
            status,
            text=result.text,
            data=result.data,
            html=result.html,
            worker_ms=result.elapsed_ms,
            error=error,
        )

    def _answer_ask(
        self, ask_id: str, job_id: str, status: str, result: JobResult | None, error: str | None
    ) -> None:
        if status == "done" and result is not None:
            extra: dict[str, Any] = {"job_id": job_id, "data": result.data}
            if result.html:
                extra["html"] = result.html
            self.control.answer(ask_id, "result", result.text, **extra)
        else:
            self.control.answer(ask_id, "error", error or f"the job ended {status}", job_id=job_id)

    def _say_once(self, what: str, key: str, message: str, *args: object) -> None:
        with self._lock:
            if (what, key) in self._said:
                return
            self._said[(what, key)] = None
            while len(self._said) > REMEMBER:
                self._said.popitem(last=False)
        log.warning(message, *args)

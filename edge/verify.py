"""Two-phase alerts: a rule with `verify: true` alerts at once as `provisional`, the blue loop looks again.

Why it is built this way:

- **The alert is never late.** The red loop publishes the provisional alert exactly as any other;
  the verifier is a red-loop sink after the journal that only takes note (a dict and a queue, no
  I/O). Its own thread waits AFTER_S so the job also carries keyframes from just after the alert,
  then submits a `verify` job (BEFORE_S + AFTER_S of the camera's keyframes, `context.label` and
  `context.alert`, deadline DEADLINE_S) through the delegate.
- **The verdict is the same alert again.** `confirmed` / `retracted` comes back as the same alert id
  and event id with the new phase and the text marked ("... (confirmed)", "... (retracted: not seen
  again)"), written through the journal (alert row updated, a new outbox message); the event's later
  repeats carry that phase. Push channels with `confirmed_only` are served at write time (journal).
- **No answer is not a "no".** A job that times out, fails or answers no verdict leaves the alert
  provisional and says so in the log; a later repeat of the same event (repeat_s) asks again, up to
  TRIES jobs per event. An alert is only ever retracted by a verdict, and then out loud (a message
  with the reason), never by silence. Without an MQTT broker there is no blue loop to ask: one log
  line per rule, the alerts stay provisional.
- **Fire and smoke are verified on the device too** (edge.rules.events: a longer look in the red loop,
  no I/O), and still asked here when a broker is configured. The two verdicts combine in the journal
  (`Journal._take`), whichever comes first: the first verdict is published at once; a later retraction
  overrules a confirmation (the blue loop calling off what the device confirmed, published with its
  reason); a retraction is final (a blue-loop "confirmed" never brings back an alert the device
  retracted), and the same verdict twice is published once.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

from edge.outbox import alert_payload, new_job_id
from edge.store import StoreError
from edge.types import AlertRecord, Frame

if TYPE_CHECKING:
    from edge.delegate import Delegate, FinishedJob
    from edge.journal import Journal
    from edge.rules import Transition

log = logging.getLogger("edge.verify")

KIND = "verify"
DEADLINE_S = 30.0
"""A verification not answered by then leaves its alert provisional."""
BEFORE_S = 2.0
AFTER_S = 2.0
"""The job's keyframes: from BEFORE_S before the alert to AFTER_S after it (it is submitted then)."""
TRIES = 3
"""Verification jobs per event at most (a later repeat asks again after a timeout or failure)."""
REMEMBER = 4096
CONFIRMED_SUFFIX = " (confirmed)"
RETRACTED_SUFFIX = " (retracted: not seen again)"
"""The blue loop's marks; the device's own verdicts (edge.rules.events) use CONFIRMED_SUFFIX too."""
DID_NOT_HOLD_SUFFIX = " (retracted: did not hold)"
"""Device verification: the region was not seen in enough frames of the hold time, or its event ended."""
NOT_VERIFIED_SUFFIX = " (retracted: not verified on the device)"
"""Device verification: the region held, but the detector's closer look never confirmed it."""
SUFFIXES = (CONFIRMED_SUFFIX, RETRACTED_SUFFIX, DID_NOT_HOLD_SUFFIX, NOT_VERIFIED_SUFFIX)


def unmarked(text: str) -> str:
    """An alert text without its verdict mark."""
    for suffix in SUFFIXES:
        if text.endswith(suffix):
            return text[: -len(suffix)]
    return text


def verdict_of(data: object) -> bool | None:
    """`data.confirmed` of a verify result, None when it carries no verdict."""
    confirmed = data.get("confirmed") if isinstance(data, dict) else None
    return confirmed if isinstance(confirmed, bool) else None


class Verifier:
    """One per appliance: a red-loop sink (`handle`) and a listener of the delegate's ended jobs."""

    def __init__(
        self,
        journal: Journal,
        delegate: Delegate,
        notify: Callable[[], None],
        stop: threading.Event,
        *,
        reachable: bool = True,
        deadline_s: float = DEADLINE_S,
        before_s: float = BEFORE_S,
        after_s: float = AFTER_S,
    ) -> None:
        """`notify` wakes the bus and push workers after a phase change is committed; `reachable`:
        False when no MQTT broker is configured (no blue loop can answer)."""
        self.journal = journal
        self.delegate = delegate
        self.notify = notify
        self.stop = stop
        self.reachable = reachable
        self.deadline_s = deadline_s
        self.before_s = before_s
        self.after_s = after_s
        self._lock = threading.Lock()
        self._tries: OrderedDict[str, int] = OrderedDict()
        """Event id -> verification jobs asked for it."""
        self._busy: set[str] = set()
        """Events with a job queued or running, or verified already."""
        self._jobs: dict[str, AlertRecord] = {}
        """Job id -> the provisional alert it verifies."""
        self._said: set[str] = set()
        self._queue: queue.Queue[tuple[float, AlertRecord]] = queue.Queue()
        self._thread: threading.Thread | None = None

    def attach(self) -> None:
        """Hear of every job that ends; verdicts of verify jobs are ours."""
        self.delegate.listen(self.on_finished)

    # -- red loop side ----------------------------------------------------------------------------

    def handle(self, transition: Transition, frame: Frame) -> None:
        """A red-loop transition, after the journal committed it: note a provisional alert."""
        alert = transition.alert
        if transition.kind != "alert" or alert is None or alert.phase != "provisional":
            return
        if not self.reachable:
            if alert.rule not in self._said:
                from edge.rules import AREA_LABELS  # (edge.rules imports this module's marks)

                self._said.add(alert.rule)
                if alert.label in AREA_LABELS:
                    log.info("rule %s: no MQTT broker is configured, so its alerts are verified on the "
                             "device only (no blue loop to ask)", alert.rule)  # fmt: skip
                else:
                    log.warning(
                        "rule %s asks for verification, but no MQTT broker is configured (the blue loop "
                        "is reached over MQTT): its alerts stay provisional",
                        alert.rule,
                    )
            return
        with self._lock:
            tries = self._tries.get(alert.event_id, 0)
            if alert.event_id in self._busy or tries >= TRIES:
                return
            self._busy.add(alert.event_id)
            self._tries[alert.event_id] = tries + 1
            self._tries.move_to_end(alert.event_id)
            while len(self._tries) > REMEMBER:
                self._busy.discard(self._tries.popitem(last=False)[0])
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="verify", daemon=True)
                self._thread.start()
        self._queue.put((time.monotonic() + self.after_s, replace(alert)))

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                due, alert = self._queue.get(timeout=0.5)
            except queue.Empty:
                continue
            if self.stop.wait(max(0.0, due - time.monotonic())):
                return
            try:
                self.submit(alert)
            except Exception:
                log.exception("alert %s: the verification job could not be submitted", alert.id)
                with self._lock:
                    self._busy.discard(alert.event_id)

    def submit(self, alert: AlertRecord) -> str:
        """Ask the blue loop to verify `alert` now (the camera's last BEFORE_S + AFTER_S of keyframes)."""
        job_id = new_job_id()
        with self._lock:
            self._jobs[job_id] = alert
        prompt = (
            f"Verify an alert: is there really {alert.label} in view on camera {alert.camera} in these "
            f'keyframes? The appliance said "{alert.text}". Answer with JSON {{"confirmed": true or false, '
            f'"reason": "..."}}.'
        )
        self.delegate.submit(
            None,
            alert.camera,
            KIND,
            prompt,
            job_id=job_id,
            seconds=self.before_s + self.after_s,
            deadline_s=self.deadline_s,
            extra_context={"label": alert.label, "alert": alert_payload(alert)},
        )
        log.info("alert %s (%s on %s): verification job %s submitted", alert.id, alert.label, alert.camera,
                 job_id)  # fmt: skip
        return job_id

    # -- results ----------------------------------------------------------------------------------

    def on_finished(self, job: FinishedJob) -> None:
        """Any delegated job ended (delegate or bus thread): a verify job's verdict becomes the
        alert's phase change."""
        if job.kind != KIND:
            return
        with self._lock:
            alert = self._jobs.pop(job.job_id, None)
        if alert is None:
            alert = self._stored_alert(job.job_id)
            if alert is None:
                return
        confirmed = verdict_of(job.data) if job.status == "done" else None
        if confirmed is None:
            with self._lock:
                self._busy.discard(alert.event_id)
                again = self._tries.get(alert.event_id, TRIES) < TRIES
            what = "timed out" if job.status == "timeout" else ("failed" if job.status == "failed" else
                                                                "gave no verdict")  # fmt: skip
            log.warning("alert %s (%s on %s): verification %s (%s); it stays provisional%s", alert.id,
                        alert.label, alert.camera, what, job.text or "no reason given",
                        "; a repeat of the event asks again" if again else "")  # fmt: skip
            return
        self.phase_change(alert, confirmed, job.text)

    def phase_change(self, alert: AlertRecord, confirmed: bool, why: str = "") -> AlertRecord:
        """Write the verdict: the same alert id with phase confirmed / retracted and its text marked."""
        suffix = CONFIRMED_SUFFIX if confirmed else RETRACTED_SUFFIX
        changed = replace(alert, phase="confirmed" if confirmed else "retracted", text=alert.text + suffix)
        with self._lock:
            self._busy.add(alert.event_id)  # verified: never asked again
        if not self.journal.verified(changed, suffix):
            log.info("alert %s (%s on %s): the blue loop says %s (%s); the alert stays as it was",
                     alert.id, alert.label, alert.camera, changed.phase, why or "-")  # fmt: skip
            return changed
        log.warning("alert %s (%s on %s) %s by the blue loop: %s", alert.id, alert.label, alert.camera,
                    changed.phase, why or "-")  # fmt: skip
        self.notify()
        return changed

    def _stored_alert(self, job_id: str) -> AlertRecord | None:
        """The provisional alert of a verify job of the last run, from the event log (also when the
        device confirmed it meanwhile: the blue loop may still call it off)."""
        try:
            job = self.delegate.events.job(job_id)
            ctx = (job or {}).get("context") or {}
            ref = ctx.get("alert") if isinstance(ctx, dict) else None
            if not isinstance(ref, dict) or not isinstance(ref.get("event_id"), str):
                log.warning("verify job %s: no alert in its context; verdict ignored", job_id)
                return None
            rows = self.delegate.events.alerts(event_id=ref["event_id"])
        except StoreError as exc:
            log.error("verify job %s: its alert cannot be read: %s", job_id, exc)
            return None
        row = next((r for r in rows if r["id"] == ref.get("id")), None)
        if row is None or row["phase"] not in ("provisional", "confirmed"):
            return None
        box = row["box"]
        return AlertRecord(
            id=row["id"],
            event_id=row["event_id"],
            rule=row["rule"],
            camera=row["camera"],
            label=row["label"],
            severity=row["severity"],
            text=unmarked(row["text"]),
            at=row["at"],
            frame=row["frame"],
            pts=row["pts"],
            box=tuple(box) if box else None,
            phase="provisional",
            snapshot=row["snapshot"],
        )

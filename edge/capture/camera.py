"""One capture thread per camera: newest frame wins, a dead source is retried forever.

Hand-over is a 1-slot buffer, never a queue, so a slow consumer sees fresh frames instead of a
backlog that makes alerts late. How a frame waits for the consumer depends on the source:

- live streams (rtsp/http/usb/csi), and files with `realtime: true` (paced at their fps like a camera):
  a frame not taken before the next one arrives is overwritten and counted in `stats.dropped`;
- files with `realtime: false` are **lossless**: the reader waits until the previous frame was taken,
  so an offline scan with a slow consumer still sees every frame exactly once, in order.

Frames keep increasing `index` and `pts` across reconnects, so later stages see one continuous stream.
Each frame carries `damaged` (it follows undecodable data) and `origin` (the picture file, for image
and folder sources) from its source. A finite source that ran out sets `finished` once its last frame
was taken; from then on `get()` returns None at once. Each change between online and offline is logged
once, as one line, by this module (``edge.capture``).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edge.backoff import Backoff
from edge.capture.sources import IMAGE_EXTS, SourceError, open_source
from edge.config.models import CameraConfig
from edge.types import Frame

log = logging.getLogger("edge.capture")

StatusCallback = Callable[[str, bool, str], None]
"""on_status(camera, online, reason)."""

FPS_WINDOW = 30
"""Hand-overs the measured fps is averaged over."""
MAX_PACE_WAIT_S = 10.0
"""Longest single wait when pacing a file (guards against a wild timestamp)."""
LATE_RESET_S = 0.5
"""A paced file this far behind its clock re-anchors instead of bursting to catch up."""
STOP_JOIN_S = 12.0
"""stop() waits this long: a blocked open or read returns within its FFmpeg timeout."""
JITTER = 0.1
"""Backoff delays vary by this fraction so cameras behind one switch do not retry in lockstep."""


@dataclass(slots=True)
class CaptureStats:
    """A snapshot of one camera's capture counters."""

    frames: int = 0
    """Frames handed over to the 1-slot buffer."""
    dropped: int = 0
    """Frames overwritten before anyone took them."""
    corrupt: int = 0
    """Undecodable frames the source skipped."""
    reconnects: int = 0
    """Re-open attempts after a failure."""
    capped: int = 0
    """Frames left out on purpose to keep to the camera's `fps` cap (not a sign of overload)."""
    online: bool = False
    reason: str = "connecting"
    """Why the camera is online or offline now, in words ('connected', 'end of file', the error)."""
    last_error: str | None = None
    fps: float = 0.0
    """Measured hand-over rate over the last FPS_WINDOW frames."""


class FpsCap:
    """Keeps a stream to at most `fps` frames a second of stream time (pts), by leaving frames out.

    By stream time, not the wall clock: a paced file still plays at its own speed and an offline scan
    keeps the same frames on every run. Due times advance by whole intervals, so 25 fps capped at 10
    keeps an even 10 a second, not every third frame (8.3)."""

    SLACK_S = 1e-3
    """Timestamps are rounded: a frame this early still counts as on time."""

    def __init__(self, fps: float | None) -> None:
        self.interval = 1.0 / fps if fps else 0.0
        self._due: float | None = None

    def keep(self, pts: float) -> bool:
        if not self.interval:
            return True
        due = self._due
        if due is not None and pts + self.SLACK_S < due:
            if pts + self.SLACK_S >= due - self.interval:
                return False  # too soon after the last frame kept
            due = None  # earlier than the last frame kept: the clock started over
        following = (due if due is not None else pts) + self.interval
        self._due = following if following > pts else pts + self.interval  # after a gap: from now
        return True


class Camera:
    """Reads one source on its own thread; `get()` returns the newest frame not yet returned."""

    def __init__(self, name: str, cfg: CameraConfig, on_status: StatusCallback | None = None) -> None:
        self.name = name
        self.cfg = cfg
        self._on_status = on_status
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._slot: Frame | None = None
        self._ended = False
        self._online: bool | None = None  # None until the first open attempt settles it
        self._stats = CaptureStats()
        self._corrupt_before = 0  # from sources already closed
        self._arrivals: deque[float] = deque(maxlen=FPS_WINDOW)
        self._next_index = 0
        self._last_pts: float | None = None
        self._last_arrival = 0.0
        self._still: bool | None = None  # known once a source opened
        self._lossless = False
        self.on_arrival: Callable[[], None] | None = None
        """Called on the capture thread after each frame is handed over, unless lossless (the red loop's
        `nudge`: a look still waiting for the shared detector goes on with the newer frame)."""

    def start(self) -> None:
        """Start the capture thread (a disabled camera stays idle)."""
        if not self.cfg.enabled:
            log.info("camera %s is disabled; not capturing", self.name)
            return
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name=f"capture-{self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and close the source (the thread closes it, never mid-read)."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(STOP_JOIN_S)
            if self._thread.is_alive():
                log.warning("capture thread of %s did not stop within %.0f s", self.name, STOP_JOIN_S)

    def get(self, timeout: float) -> Frame | None:
        """The newest frame not yet returned; None after `timeout` seconds, at the end, or once stopped."""
        with self._cond:
            self._cond.wait_for(lambda: self._slot is not None or self._ended or self._stop.is_set(), timeout)
            frame, self._slot = self._slot, None
            if frame is not None:
                self._cond.notify_all()  # a lossless reader waits for the slot to empty
                if self._lossless:
                    # An offline scan reads ahead of its consumer: the frame "arrives" when the red loop
                    # can take it (as if decoded just now), not when it was read ahead into the slot.
                    frame.arrived = time.monotonic() - frame.decode_ms / 1000.0
            return frame

    @property
    def finished(self) -> bool:
        """True for good once a finite (non-loop) source reached its end and its last frame was taken
        (or dropped): the stream ended, no frame will follow, and `get()` returns None without waiting.

        A consumer loop: ``while not camera.finished: frame = camera.get(timeout)`` (None = no frame yet).
        Live streams and looping files never finish; they reconnect or replay instead.
        """
        with self._cond:
            return self._ended and self._slot is None

    @property
    def still(self) -> bool:
        """True when every frame is an independent picture (an image, a folder of images), not video.

        Known for sure once the source opened; before that it is inferred from the configured source:
        an image file extension, or an existing directory.
        """
        with self._cond:
            if self._still is not None:
                return self._still
        spec = self.cfg.source.strip()
        if "://" in spec or spec.lower().startswith(("usb:", "/dev/video")):
            return False
        path = Path(spec).expanduser()
        return path.suffix.lower() in IMAGE_EXTS or path.is_dir()

    @property
    def stats(self) -> CaptureStats:
        """A consistent copy of the counters, for health output and the MQTT stats topic."""
        with self._cond:
            span = self._arrivals[-1] - self._arrivals[0] if self._arrivals else 0.0
            fps = (len(self._arrivals) - 1) / span if span > 0 else 0.0
            return dataclasses.replace(self._stats, fps=fps)

    # --- capture thread -------------------------------------------------------------------------

    def _run(self) -> None:
        """Open, pump, and on any failure report, back off and retry; the thread never dies of a source."""
        failures = 0
        while not self._stop.is_set():
            if failures:
                delay = self._backoff(failures)
                log.debug("camera %s: retry %d in %.1f s", self.name, failures, delay)
                if self._stop.wait(delay):
                    break
                with self._cond:
                    self._stats.reconnects += 1
            delivered = self._stats.frames
            try:
                ended = self._session()
            except SourceError as exc:
                self._set_online(False, str(exc))
            except Exception as exc:  # a bug or an OpenCV error must not kill the camera
                # one line (with the traceback) when the camera goes offline, not one per retry
                self._set_online(False, f"capture error: {type(exc).__name__}: {exc}", exc_info=True)
            else:
                if ended:
                    self._end()
                return
            failures = 1 if self._stats.frames > delivered else failures + 1  # backoff restarts after frames

    def _session(self) -> bool:
        """Open the source and hand frames over until it ends (True) or stop() (False); raises on failure."""
        source = open_source(self.cfg.source, loop=self.cfg.loop)
        with self._cond:
            self._still = source.still
        try:
            self._set_online(True, "connected")
            lossless = self._lossless = not source.is_live and not self.cfg.realtime
            paced = not source.is_live and self.cfg.realtime
            index_base, pts_base = self._continuation()
            anchor: tuple[float, float] | None = None
            cap = FpsCap(self.cfg.fps)
            while not self._stop.is_set():
                started = time.monotonic()
                item = source.read()
                decode_ms = (time.monotonic() - started) * 1000.0
                with self._cond:
                    self._stats.corrupt = self._corrupt_before + source.corrupt
                if item is None:
                    if source.is_live:
                        raise SourceError(f"stream {source.name} ended")
                    return True
                index, pts, image = item
                if not cap.keep(pts):
                    with self._cond:
                        self._stats.capped += 1
                    continue
                if paced:
                    anchor = self._pace(anchor, pts)
                frame = Frame(
                    self.name,
                    index + index_base,
                    pts + pts_base,
                    image,
                    0.0,
                    decode_ms,
                    damaged=source.last_damaged,
                    origin=source.last_origin,
                )
                self._hand_over(frame, lossless=lossless)
            return False
        finally:
            self._corrupt_before += source.corrupt
            source.close()

    def _continuation(self) -> tuple[int, float]:
        """Index and pts offsets that make a reopened source continue where the last one stopped."""
        if self._last_pts is None:
            return 0, 0.0
        return self._next_index, self._last_pts + (time.monotonic() - self._last_arrival)

    def _pace(self, anchor: tuple[float, float] | None, pts: float) -> tuple[float, float]:
        """Sleep until `pts` is due on the wall clock; returns the (wall, pts) anchor to pace against."""
        now = time.monotonic()
        if anchor is None:
            return now, pts
        due = anchor[0] + (pts - anchor[1])
        if now - due > LATE_RESET_S:
            return now, pts
        if due > now:
            self._stop.wait(min(due - now, MAX_PACE_WAIT_S))
        return anchor

    def _hand_over(self, frame: Frame, *, lossless: bool) -> None:
        with self._cond:
            if lossless:
                self._cond.wait_for(lambda: self._slot is None or self._stop.is_set())
                if self._stop.is_set():
                    return
            elif self._slot is not None:
                self._stats.dropped += 1
            # Arrival is when the compressed frame came in, before its decode: latency counts decoding.
            frame.arrived = time.monotonic() - frame.decode_ms / 1000.0
            self._slot = frame
            self._stats.frames += 1
            self._arrivals.append(frame.arrived)
            self._next_index, self._last_pts, self._last_arrival = frame.index + 1, frame.pts, frame.arrived
            self._cond.notify_all()
        arrival = self.on_arrival
        if arrival is not None and not lossless:
            try:
                arrival()
            except Exception:
                log.exception("on_arrival callback failed for %s", self.name)

    def _end(self) -> None:
        """A finite source ran out: wake waiting consumers and report the camera offline for good."""
        with self._cond:
            self._ended = True
            self._cond.notify_all()
        self._set_online(False, "end of file", error=False)

    def _set_online(self, online: bool, reason: str, *, error: bool = True, exc_info: bool = False) -> None:
        """Record the state; report it (log and on_status) only when it changes, once per outage.

        The one log line reads "camera NAME online: connected", "camera NAME offline (retrying): REASON"
        or "camera NAME finished: end of file"; REASON is the source's own one-line message (which
        names the source, not the camera), so nothing in the line is said twice. Retries of an outage
        already reported are logged at debug level only.
        """
        with self._cond:
            changed = self._online is not online
            self._online = self._stats.online = online
            self._stats.reason = reason
            if not online:
                self._arrivals.clear()
                if error:
                    self._stats.last_error = reason
        if not changed:
            log.debug("camera %s still offline: %s", self.name, reason, exc_info=exc_info)
            return
        if online:
            log.info("camera %s online: %s", self.name, reason)
        elif not error:
            log.info("camera %s finished: %s", self.name, reason)
        else:
            log.warning("camera %s offline (retrying): %s", self.name, reason, exc_info=exc_info)
        if self._on_status is not None:
            try:
                self._on_status(self.name, online, reason)
            except Exception:
                log.exception("on_status callback failed for %s", self.name)

    def _backoff(self, failures: int) -> float:
        """Exponential delay from reconnect_min_s to reconnect_max_s, with a little jitter."""
        return Backoff(self.cfg.reconnect_min_s, self.cfg.reconnect_max_s, JITTER).delay(failures)

"""The one loop body from a camera's frames to its red loop, shared by `edge run` and `edge scan`.

A `Camera` (capture thread, newest frame wins, or lossless for an offline scan) hands frames over;
this feeds them to the red loop until it is told to stop or the source ends for good. At the end of
a finite source the camera's open events end there, and the log says the source ended.

Under systemd's watchdog (edge.notify) the loop beats its heart on every pass, also when no frame came:
a camera that sends nothing is its capture thread's to report, while this loop is alive and waiting.
Only a pass that does not come back (stuck inside `process`) stops the beats.
"""

from __future__ import annotations

import logging
import threading

from edge.capture import Camera
from edge.notify import NO_HEART, Heart
from edge.redloop import RedLoop

log = logging.getLogger("edge.pipeline")

GET_TIMEOUT_S = 0.5
"""How long one wait for a frame lasts: the stop flag and the end of a source are seen this quickly."""


def feed(camera: Camera, loop: RedLoop, stop: threading.Event, heart: Heart = NO_HEART) -> None:
    """Frames of `camera` into `loop` until `stop` or the end of a finite source. A live (or paced)
    camera's newer frame nudges the loop (`RedLoop.nudge`): a look still waiting in line for the shared
    detector goes on with it, so no camera falls behind its stream while the detector is busy."""
    camera.on_arrival = loop.nudge
    still: bool | None = None
    while not stop.is_set():
        heart.beat()
        frame = camera.get(timeout=GET_TIMEOUT_S)
        if frame is None:
            if camera.finished:
                loop.finish("source ended")
                return
            continue
        if still is None:
            still = camera.still
            loop.set_still(still)
        try:
            loop.process(frame)
        except Exception:  # one bad frame must not stop a camera's red loop
            log.exception("red loop error on %s frame %d; continuing", camera.name, frame.index)

"""Capture: frame sources (files, images, folders, rtsp/http, USB, CSI) and one thread per camera.

`open_source()` is the synchronous reader (`edge scan`), `grab_frame()` one frame within a time limit
(the admin page's "test connection"); `Camera` wraps it in a thread that keeps only
the newest frame, paces files like a camera, and reconnects dead sources with backoff (`edge run`).
"""

from edge.capture.camera import Camera, CaptureStats
from edge.capture.sources import CaptureError, FrameSource, SourceError, grab_frame, open_source

__all__ = [
    "Camera",
    "CaptureError",
    "CaptureStats",
    "FrameSource",
    "SourceError",
    "grab_frame",
    "open_source",
]

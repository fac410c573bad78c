"""Pictures for the admin page: the live keyframe with what the red loop sees now drawn on it.

Drawn on the server, not in the browser, so the live view is one plain `<img>` (or an MJPEG stream)
that works on any phone without canvas code, and the boxes always match the picture they were
drawn on. Boxes come in pixels of the camera's full frame (`CameraView.width` x `height`) while the
keyframe ring holds downscaled copies, so every box is scaled to the picture it is drawn on.

The camera's zones (with how many are inside now) and lines (with today's in/out, and an arrow across
the first segment pointing the "in" way: from the line's left side to its right) are drawn under the
boxes, in relative coordinates, so they fit any picture size.
"""

from __future__ import annotations

import cv2
import numpy as np

from edge.live import CameraView, Keyframe
from edge.rules.tracker import iou
from edge.types import Box

JPEG_QUALITY = 80
TRACK_COLOUR = (0, 0, 255)
"""BGR red: a tracked object of a watched label (what rules alert on), as on alert snapshots."""
SEEN_COLOUR = (0, 200, 0)
"""BGR green: anything else the detector saw on its last look."""
TEXT_COLOUR = (255, 255, 255)
TRACK_FRESH_S = 1.0
"""A track not seen for longer than this (stream seconds) is not drawn: it is held, not in view."""
DETECTIONS_FRESH_S = 2.0
"""Detections of an object look older than this (wall clock) are not drawn on a newer picture."""
SAME_BOX_IOU = 0.5
"""A detection that overlaps a drawn track this much is that track: drawn once."""
ZONE_COLOUR = (0, 215, 255)
"""BGR amber: a camera zone."""
LINE_COLOUR = (255, 200, 0)
"""BGR cyan-blue: a tripwire."""


def boxes_of(view: CameraView | None, at: float) -> list[tuple[Box, str, tuple[int, int, int]]]:
    """What to draw on a picture taken at `at` (epoch s): fresh tracks, then the last look's other
    detections; each (box in full-frame pixels, caption, colour)."""
    if view is None or view.at <= 0:
        return []
    out: list[tuple[Box, str, tuple[int, int, int]]] = []
    drawn: list[tuple[Box, str]] = []
    for track in view.tracks:
        if view.pts - track.last_pts <= TRACK_FRESH_S:
            out.append((track.box, f"{track.label} {track.score:.2f}", TRACK_COLOUR))
            drawn.append((track.box, track.label))
    if view.objects_at and abs(at - view.objects_at) <= DETECTIONS_FRESH_S:
        for det in view.detections:
            if any(label == det.label and iou(box, det.box) >= SAME_BOX_IOU for box, label in drawn):
                continue
            out.append((det.box, f"{det.label} {det.score:.2f}", SEEN_COLOUR))
    return out


def annotate(
    image: np.ndarray,
    boxes: list[tuple[Box, str, tuple[int, int, int]]],
    frame_size: tuple[int, int] | None = None,
) -> np.ndarray:
    """A copy of `image` with each box and caption drawn; `frame_size` (width, height) is the size
    the boxes are measured in (None: the image's own)."""
    canvas = image.copy()
    height, width = canvas.shape[:2]
    fw, fh = frame_size if frame_size and frame_size[0] > 0 and frame_size[1] > 0 else (width, height)
    sx, sy = width / fw, height / fh
    scale = max(0.45, min(width, height) / 700)  # readable on a 640 px keyframe shown on a phone
    thickness = max(1, round(2 * scale))
    for box, caption, colour in boxes:
        x1 = int(min(max(box[0] * sx, 0), width - 1))
        y1 = int(min(max(box[1] * sy, 0), height - 1))
        x2 = int(min(max(box[2] * sx, 0), width - 1))
        y2 = int(min(max(box[3] * sy, 0), height - 1))
        cv2.rectangle(canvas, (x1, y1), (x2, y2), colour, max(2, thickness))
        (tw, th), base = cv2.getTextSize(caption, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
        ty = y1 - th - base if y1 >= th + base else y1  # above the box, else inside it
        tx = min(x1, max(width - tw, 0))
        cv2.rectangle(canvas, (tx, ty), (tx + tw, ty + th + base), colour, cv2.FILLED)
        cv2.putText(
            canvas,
            caption,
            (tx, ty + th),
            cv2.FONT_HERSHEY_SIMPLEX,
            scale,
            TEXT_COLOUR,
            thickness,
            cv2.LINE_AA,
        )
    return canvas


def overlay(image: np.ndarray, view: CameraView | None) -> np.ndarray:
    """`image` with the view's zones and lines drawn (the same image when the camera has neither)."""
    if view is None or not (view.zones or view.lines):
        return image
    canvas = image.copy()
    height, width = canvas.shape[:2]
    scale = max(0.4, min(width, height) / 800)
    thickness = max(1, round(2 * scale))

    def px(p: tuple[float, float]) -> tuple[int, int]:
        return round(p[0] * (width - 1)), round(p[1] * (height - 1))

    def caption(text: str, at: tuple[int, int], colour: tuple[int, int, int]) -> None:
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
        x, y = min(max(at[0], 0), max(width - tw, 0)), min(max(at[1], th + base), height - 1)
        cv2.rectangle(canvas, (x, y - th - base), (x + tw, y), colour, cv2.FILLED)
        cv2.putText(
            canvas, text, (x, y - base), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thickness, cv2.LINE_AA
        )

    for name, polygon in view.zones.items():
        points = np.array([px(p) for p in polygon], np.int32)
        cv2.polylines(canvas, [points], True, ZONE_COLOUR, thickness, cv2.LINE_AA)
        inside = ", ".join(f"{label} {n}" for label, n in view.occupancy.get(name, {}).items())
        caption(
            f"{name}: {inside}" if inside else name, px(min(polygon, key=lambda p: (p[1], p[0]))), ZONE_COLOUR
        )
    for line in view.lines:
        points = [px(p) for p in line.points]
        cv2.polylines(canvas, [np.array(points, np.int32)], False, LINE_COLOUR, thickness + 1, cv2.LINE_AA)
        (ax, ay), (bx, by) = points[0], points[1]
        mx, my = (ax + bx) / 2, (ay + by) / 2
        length = max(1.0, float(np.hypot(bx - ax, by - ay)))
        nx, ny = -(by - ay) / length, (bx - ax) / length  # towards the right side: the way "in" goes
        reach = max(12.0, 0.05 * min(width, height))
        tail, tip = (
            (round(mx - nx * reach), round(my - ny * reach)),
            (round(mx + nx * reach), round(my + ny * reach)),
        )
        cv2.arrowedLine(canvas, tail, tip, LINE_COLOUR, thickness, cv2.LINE_AA, tipLength=0.4)
        counts = ", ".join(f"{label} in {i} out {o}" for label, (i, o) in line.counts.items())
        caption(f"{line.name}: {counts}" if counts else line.name, points[0], LINE_COLOUR)
    return canvas


def encode(image: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return data.tobytes()


def live_jpeg(keyframe: Keyframe, view: CameraView | None) -> bytes:
    """The keyframe as JPEG with the camera's current boxes drawn, scaled to the keyframe's size."""
    boxes = boxes_of(view, keyframe.at)
    size = (view.width, view.height) if view is not None else None
    image = overlay(keyframe.image, view)
    return encode(annotate(image, boxes, size) if boxes else image)


def thumbnail(jpeg: bytes, width: int) -> bytes:
    """A JPEG at most `width` pixels wide (the events table shows many; full snapshots are large)."""
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError("not a JPEG picture")
    h, w = image.shape[:2]
    if w <= width:
        return jpeg
    small = cv2.resize(image, (width, max(1, h * width // w)), interpolation=cv2.INTER_AREA)
    return encode(small)

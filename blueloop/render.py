"""HTML the local reasoner writes: the incident report and the screen reproduction. Every text that
came from outside (labels, OCR, prompts, camera names) goes through html.escape."""

from __future__ import annotations

import base64
import time
from html import escape

import cv2
import numpy as np

from blueloop.text import clock, counts_phrase, duration
from blueloop.vision import TextBlock, reading_order
from edge.types import Detection

_STYLE = """body{font-family:system-ui,sans-serif;margin:2em;color:#222}
h1{font-size:1.4em}table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:.2em .6em;text-align:left}
figure{display:inline-block;margin:.5em}figcaption{font-size:.85em;color:#555}img{max-width:640px}"""


def draw_boxes(image: np.ndarray, detections: list[Detection]) -> np.ndarray:
    out = image.copy()
    for d in detections:
        x1, y1, x2, y2 = (round(v) for v in d.box)
        cv2.rectangle(out, (x1, y1), (x2, y2), (0, 0, 255), 2)
        cv2.putText(
            out,
            f"{d.label} {d.score:.2f}",
            (x1, max(12, y1 - 4)),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.5,
            (0, 0, 255),
            1,
            cv2.LINE_AA,
        )
    return out


def data_uri(image: np.ndarray, quality: int = 85) -> str:
    ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("cannot encode a JPEG")
    return "data:image/jpeg;base64," + base64.b64encode(jpeg.tobytes()).decode("ascii")


def report_html(
    *,
    title: str,
    summary: str,
    prompt: str,
    device: str,
    camera: str | None,
    frames: list[tuple[float, np.ndarray, list[Detection]]],
    events: list[dict],
    counts: dict,
) -> str:
    """A self-contained page: keyframes with boxes (inline JPEG data URIs), a timeline, counts."""
    rows = []
    for e in events:
        start = e.get("started_at")
        end = e.get("ended_at")
        stayed = (
            duration(end - start) if isinstance(start, (int, float)) and isinstance(end, (int, float)) else ""
        )
        rows.append(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>".format(
                escape(clock(start)) if isinstance(start, (int, float)) else "",
                escape(clock(end)) if isinstance(end, (int, float)) else "still open",
                escape(str(e.get("label", ""))),
                escape(str(e.get("camera", "") or "")),
                escape(str(e.get("rule", "") or "")),
                escape(stayed),
            )
        )
    count_rows = "".join(
        f"<tr><td>{escape(str(k))}</td><td>{escape(_count(v))}</td></tr>" for k, v in sorted(counts.items())
    )
    figures = []
    for ts, image, dets in frames:
        seen = counts_phrase(_tally(dets)) or "nothing detected"
        figures.append(
            f'<figure><img alt="keyframe {escape(clock(ts))}" src="{data_uri(draw_boxes(image, dets))}">'
            f"<figcaption>{escape(clock(ts))}: {escape(seen)}</figcaption></figure>"
        )
    where = f"camera {escape(camera)} on " if camera else ""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body>\n"
        f"<h1>{escape(title)}</h1>\n"
        f"<p>{where}device {escape(device)}, written {escape(time.strftime('%Y-%m-%d %H:%M:%S'))}"
        + (f"; asked: “{escape(prompt)}”" if prompt else "")
        + "</p>\n"
        f"<h2>Summary</h2>\n<p>{escape(summary)}</p>\n"
        "<h2>Timeline</h2>\n"
        + (
            "<table><tr><th>start</th><th>end</th><th>label</th><th>camera</th><th>rule</th><th>stayed</th></tr>"
            + "".join(rows)
            + "</table>\n"
            if rows
            else "<p>No recent events.</p>\n"
        )
        + "<h2>Counts</h2>\n"
        + (
            f"<table><tr><th>label</th><th>count</th></tr>{count_rows}</table>\n"
            if count_rows
            else "<p>None.</p>\n"
        )
        + f"<h2>Keyframes ({len(frames)})</h2>\n"
        + "\n".join(figures)
        + "\n</body></html>\n"
    )


def _count(v: object) -> str:
    if isinstance(v, dict):
        return ", ".join(f"{k}: {n}" for k, n in v.items())
    return str(v)


def _tally(dets: list[Detection]) -> dict[str, int]:
    out: dict[str, int] = {}
    for d in dets:
        out[d.label] = out.get(d.label, 0) + 1
    return out


def _hex(bgr: np.ndarray) -> str:
    b, g, r = (int(v) for v in np.clip(bgr, 0, 255))
    return f"#{r:02x}{g:02x}{b:02x}"


def _page_colour(image: np.ndarray) -> np.ndarray:
    """The most common colour (quantised to 32 levels per channel, then averaged within its bin)."""
    q = (image >> 3).reshape(-1, 3).astype(np.int32)
    keys = (q[:, 0] << 10) | (q[:, 1] << 5) | q[:, 2]
    top = np.bincount(keys).argmax()
    return image.reshape(-1, 3)[keys == top].mean(axis=0)


def _ring(image: np.ndarray, box: tuple[int, int, int, int], pad: int) -> np.ndarray:
    h, w = image.shape[:2]
    x1, y1, x2, y2 = box
    ox1, oy1, ox2, oy2 = max(0, x1 - pad), max(0, y1 - pad), min(w, x2 + pad), min(h, y2 + pad)
    outer = image[oy1:oy2, ox1:ox2].reshape(-1, 3)
    mask = np.ones((oy2 - oy1, ox2 - ox1), bool)
    mask[max(0, y1 - oy1) : y2 - oy1, max(0, x1 - ox1) : x2 - ox1] = False
    ring = outer[mask.reshape(-1)]
    return ring if len(ring) else outer


def _distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float32) - b.astype(np.float32)).sum())


def screen_html(image: np.ndarray, blocks: list[TextBlock]) -> tuple[str, list[dict]]:
    """The screen as HTML: the page colour sampled, coloured panels (title bars, buttons) found by
    flood fill around each text, and absolutely positioned text blocks where they stand, in reading
    order in the document. Returns (html, the blocks as data)."""
    h, w = image.shape[:2]
    page = _page_colour(image)
    panels: list[tuple[int, int, int, int, np.ndarray]] = []
    items = []
    for b in reading_order(blocks):
        x1, y1, x2, y2 = (round(v) for v in b.box)
        x1, y1, x2, y2 = max(0, x1), max(0, y1), min(w, max(x2, x1 + 1)), min(h, max(y2, y1 + 1))
        behind = np.median(_ring(image, (x1, y1, x2, y2), 3), axis=0)
        inside = image[y1:y2, x1:x2].reshape(-1, 3).astype(np.float32)
        far = np.abs(inside - behind).sum(axis=1)
        ink = np.median(inside[far >= np.percentile(far, 85)], axis=0) if len(inside) else 255 - behind
        if _distance(behind, page) > 40:
            panel = _panel(image, (x1, y1, x2, y2), behind)
            if panel is not None and not any(_same(panel, p) for p in panels):
                panels.append((*panel, behind))
        font = max(8, round((y2 - y1) * 0.8))
        items.append(
            {
                "text": b.text,
                "box": [x1, y1, x2, y2],
                "colour": _hex(ink),
                "background": _hex(behind),
                "font_px": font,
            }
        )
    parts = [
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>Screen</title></head>',
        '<body style="margin:0">',
        f'<div class="screen" style="position:relative;width:{w}px;height:{h}px;background:{_hex(page)};'
        'overflow:hidden;font-family:sans-serif">',
    ]
    for x1, y1, x2, y2, colour in panels:
        parts.append(
            f'<div class="panel" style="position:absolute;left:{x1}px;top:{y1}px;width:{x2 - x1}px;'
            f'height:{y2 - y1}px;background:{_hex(colour)}"></div>'
        )
    for it in items:
        x1, y1, x2, y2 = it["box"]
        parts.append(
            f'<div class="text" style="position:absolute;left:{x1}px;top:{y1}px;width:{x2 - x1}px;'
            f"height:{y2 - y1}px;color:{it['colour']};font-size:{it['font_px']}px;line-height:{y2 - y1}px;"
            f'white-space:nowrap">{escape(it["text"])}</div>'
        )
    parts.append("</div></body></html>\n")
    return "\n".join(parts), items


def _panel(
    image: np.ndarray, box: tuple[int, int, int, int], colour: np.ndarray
) -> tuple[int, int, int, int] | None:
    """The uniform region of `colour` around a text box (a button, a bar), or None."""
    h, w = image.shape[:2]
    x1, y1, x2, y2 = box
    seed = None
    for sx, sy in (
        (x1 - 2, (y1 + y2) // 2),
        (x2 + 1, (y1 + y2) // 2),
        ((x1 + x2) // 2, y1 - 2),
        ((x1 + x2) // 2, y2 + 1),
    ):
        if 0 <= sx < w and 0 <= sy < h and _distance(image[sy, sx], colour) < 30:
            seed = (sx, sy)
            break
    if seed is None:
        return None
    mask = np.zeros((h + 2, w + 2), np.uint8)
    flags = 4 | cv2.FLOODFILL_MASK_ONLY | cv2.FLOODFILL_FIXED_RANGE | (255 << 8)
    cv2.floodFill(image.copy(), mask, seed, (0, 0, 0), (12, 12, 12), (12, 12, 12), flags)
    ys, xs = np.nonzero(mask[1:-1, 1:-1])
    if len(xs) == 0:
        return None
    px1, py1, px2, py2 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
    if (px2 - px1) * (py2 - py1) > 0.6 * w * h:
        return None
    return px1, py1, px2, py2


def _same(a: tuple[int, int, int, int], b: tuple) -> bool:
    return all(abs(int(u) - int(v)) <= 2 for u, v in zip(a[:4], b[:4], strict=True))

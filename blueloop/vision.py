"""What the local reasoner sees: a higher-resolution detector pass and OCR in reading order.

The red loop runs the detector once per frame at the model's input size (416 px for YOLOX-Nano), so a
person far from a 640 px camera is a few dozen input pixels tall. Here there is time to look closer:
the whole frame plus an overlapping grid of tiles, each tile scaled up to the model's input, merged
with a per-label suppression that keeps the larger box of a pair where one holds the other (a tile
sees only part of an object cut by its edge).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

import numpy as np

from edge.types import Detection

log = logging.getLogger("blueloop.vision")

MIN_SCORE = 0.35
"""Detections reported by the blue loop (the detector's own threshold keeps candidates from 0.3)."""
TILE_OVERLAP = 0.2
TILE_SMALL = 0.12
"""A detection found only in a tile counts if it covers at most this share of the tile..."""
TILE_MIN_SCORE = 0.6
"""...and scores at least this."""
MIN_OCR_SCORE = 0.5


@dataclass(frozen=True, slots=True)
class TextBlock:
    text: str
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in frame pixels
    score: float

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]


class HiresDetector:
    """The project's own detector (edge.reflex.build_detector), run over the frame and its tiles."""

    def __init__(self, model_file: str | None) -> None:
        from edge.config.models import ModelConfig
        from edge.reflex import build_detector
        from edge.reflex.engine import REPO_ROOT

        self.detector = build_detector(ModelConfig(path=model_file), REPO_ROOT)
        self.labels = set(self.detector.labels)
        self.input_size = max(self.detector.manifest.input.width, self.detector.manifest.input.height)

    def detect(self, image: np.ndarray) -> list[Detection]:
        h, w = image.shape[:2]
        found = list(self.detector.detect(image).detections)
        whole = len(found)
        grid = 1 if max(h, w) < 0.6 * self.input_size else (2 if max(h, w) <= 1.6 * self.input_size else 3)
        if grid > 1:
            tw, th = int(w / (grid - (grid - 1) * TILE_OVERLAP)), int(h / (grid - (grid - 1) * TILE_OVERLAP))
            for gy in range(grid):
                for gx in range(grid):
                    x0 = min(w - tw, int(gx * tw * (1 - TILE_OVERLAP)))
                    y0 = min(h - th, int(gy * th * (1 - TILE_OVERLAP)))
                    tile = np.ascontiguousarray(image[y0 : y0 + th, x0 : x0 + tw])
                    for d in self.detector.detect(tile).detections:
                        x1, y1, x2, y2 = d.box
                        box = (x1 + x0, y1 + y0, x2 + x0, y2 + y0)
                        # A tile sees little context: alone it may only add small objects (what it is
                        # for), and it must be sure of them; larger ones must agree with the full view.
                        small = _area(d.box) <= TILE_SMALL * tw * th and d.score >= TILE_MIN_SCORE
                        if small or any(_holds(f, box, d.label) for f in found[:whole]):
                            found.append(Detection(d.label, d.score, box))
        return merge([d for d in found if d.score >= MIN_SCORE])


def _area(b: tuple[float, float, float, float]) -> float:
    return max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])


def _holds(full: Detection, box: tuple[float, float, float, float], label: str) -> bool:
    """The tile's box is (mostly) inside a whole-frame detection of the same label."""
    if full.label != label:
        return False
    ix = max(0.0, min(full.box[2], box[2]) - max(full.box[0], box[0]))
    iy = max(0.0, min(full.box[3], box[3]) - max(full.box[1], box[1]))
    return ix * iy >= 0.6 * max(_area(box), 1e-6)


def merge(found: list[Detection]) -> list[Detection]:
    """Greedy per-label suppression by IoU > 0.5 or containment > 0.6; the larger box of a pair stays,
    with the higher score."""
    kept: list[Detection] = []
    for d in sorted(found, key=lambda d: -d.score):
        for i, k in enumerate(kept):
            if k.label != d.label:
                continue
            ix = max(0.0, min(k.box[2], d.box[2]) - max(k.box[0], d.box[0]))
            iy = max(0.0, min(k.box[3], d.box[3]) - max(k.box[1], d.box[1]))
            inter = ix * iy
            a, b = _area(k.box), _area(d.box)
            if inter / max(a + b - inter, 1e-6) > 0.5 or inter / max(min(a, b), 1e-6) > 0.6:
                if b > a:
                    kept[i] = Detection(k.label, k.score, d.box)
                break
        else:
            kept.append(d)
    return kept


class Ocr:
    """RapidOCR (PP-OCR models shipped inside the `rapidocr` wheel: nothing is downloaded)."""

    def __init__(self) -> None:
        self._engine = None
        self._lock = threading.Lock()

    def _load(self):
        if self._engine is None:
            logging.getLogger("RapidOCR").setLevel(logging.WARNING)
            from rapidocr import RapidOCR

            self._engine = RapidOCR()
        return self._engine

    def warm(self) -> None:
        with self._lock:
            self._load()

    def read(self, image: np.ndarray) -> list[TextBlock]:
        with self._lock:
            out = self._load()(image)
        if out is None or out.boxes is None or out.txts is None:
            return []
        blocks = []
        for quad, text, score in zip(out.boxes, out.txts, out.scores, strict=False):
            text = str(text).strip()
            if not text or float(score) < MIN_OCR_SCORE:
                continue
            pts = np.asarray(quad, np.float32).reshape(-1, 2)
            x1, y1 = pts.min(axis=0).tolist()
            x2, y2 = pts.max(axis=0).tolist()
            blocks.append(TextBlock(text, (x1, y1, x2, y2), float(score)))
        return blocks


def reading_lines(blocks: list[TextBlock]) -> list[list[TextBlock]]:
    """Blocks grouped into lines (a block joins a line it overlaps vertically by half its height),
    lines top to bottom, blocks in a line left to right."""
    lines: list[list[TextBlock]] = []
    spans: list[list[float]] = []
    for b in sorted(blocks, key=lambda b: (b.box[1] + b.box[3]) / 2):
        for line, span in zip(lines, spans, strict=True):
            overlap = min(span[1], b.box[3]) - max(span[0], b.box[1])
            if overlap >= 0.5 * min(b.height, span[1] - span[0]):
                line.append(b)
                span[0], span[1] = min(span[0], b.box[1]), max(span[1], b.box[3])
                break
        else:
            lines.append([b])
            spans.append([b.box[1], b.box[3]])
    order = sorted(range(len(lines)), key=lambda i: spans[i][0])
    return [sorted(lines[i], key=lambda b: b.box[0]) for i in order]


def reading_order(blocks: list[TextBlock]) -> list[TextBlock]:
    return [b for line in reading_lines(blocks) for b in line]

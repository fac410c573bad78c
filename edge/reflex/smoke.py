"""Pixel-level smoke detector: soft, colourless change that keeps going where motion cannot explain it.

Smoke has no colour of its own to key on (grey, white or dark, tinted like the rest of the scene), so
a pixel only counts as smoke when these hold together:

1. it is **colourless**: low saturation after a grey-world white balance of the frame (so a plume under
   a blue-tinted dusk sky is still grey), in most frames of the last ``WINDOW_S`` seconds;
2. it is **soft**: the local gradient energy of the current frame is low. Smoke blurs what is behind
   it and has no sharp edge of its own, while people, cars, fruit and the detail of a still carry
   sharp edges wherever they change;
3. it keeps **changing in a way motion does not explain**: each frame is compared with the frame
   ``LAG_S`` earlier, both as it was and warped by dense optical flow (DIS), with 1 px of slack. A
   rigid object (a car, a person's torso, produce on a belt) and a panned or drifting still are
   explained by the flow; billowing smoke thins, thickens and changes shape, which no flow explains.
   This must happen in a good part of the window: a person walking by changes a place once, a plume
   keeps changing it. Sensor noise raises the threshold, frames whose overall exposure changed are not
   judged, and the frame edge (where a pan brings in new content) is ignored;
4. it **lies in a region**: flags are spread a little, and only regions of at least
   ``MIN_REGION_SHARE`` of the frame count (a plume is a blob, noise is specks);
5. it **persists**: per-pixel evidence is an exponential moving average of the flags with time
   constant ``EVIDENCE_TAU_S`` seconds of stream time; a region is reported once its evidence reaches
   ``cfg.min_score``, and the score *is* that evidence.

A slow background model (running average of the grey image over ``BACKGROUND_TAU_S`` seconds) tells,
from a single frame, whether soft colourless change is there at all: it starts a *watch* (see
``watching``), so that the red loop feeds every frame while smoke may be building, even when the
silence gate would skip them. ``regions()`` says where smoke is seen now (frame pixels): the fire
detector can take it as early evidence (flames under smoke).

All timing uses ``pts`` (stream seconds), so the detector behaves the same whatever the call rate
(>= ~4 calls a second). One call, or a still repeated, never reports smoke: evidence needs change
between frames, and history is dropped across gaps longer than ``MAX_GAP_S``. Work happens on a
downscaled copy (about ``WORK_WIDTH`` pixels wide, ``LARGE_WORK_WIDTH`` for frames of
``LARGE_FRAME_WIDTH`` and up) and history is bounded, so cost and memory do not
grow with time.

Broken video must not look like smoke: frames the capture layer marks ``damaged`` are ignored, and
the detector also spots a smear itself (unexplained change over a large share of the frame, or across
nearly the full width of several rows, as lost H.264 slices do) and learns nothing for ``SMEAR_HOLD_S``
after one, as the fire detector does.
"""

from __future__ import annotations

import math
from collections import deque
from typing import NamedTuple

import cv2
import numpy as np

from edge.config.models import SmokeConfig
from edge.gate import relit
from edge.reflex.motion import Shrinks, Warper, Watch, median_u8, outside, smeared, unchanged
from edge.types import Detection

WORK_WIDTH = 256
"""Analysis width: frames are shrunk by an integer factor (area averaging) to about this width."""
LARGE_FRAME_WIDTH = 1400
"""Frames at least this wide (1440 px and up) are analysed at about ``LARGE_WORK_WIDTH`` instead: they
usually show a wider or more distant view, where a plume covers fewer pixels of a 256 px copy."""
LARGE_WORK_WIDTH = 480
MIN_WORK_SIDE = 16
"""Smaller analysis images carry too little detail for optical flow; such frames are ignored."""
GREY_BLUR = 5
"""Gaussian kernel (analysis pixels) applied to the grey image: removes the shimmer of aliased fine
texture when a still moves by a pixel, keeps plume-sized changes."""

SAT_MAX = 0.3
"""Highest saturation ((max - min) / max of the white-balanced colour) of a smoke pixel."""
WB_GAIN_MAX = 1.6
"""Grey-world white-balance gains are clamped to [1 / this, this]: enough to neutralise a dusk or
camera colour cast, not enough to turn a scene that is truly one colour (an orange floor) grey."""
DARK_MIN = 20
"""Pixels darker than this (0-255) carry no usable colour or texture: not smoke candidates."""
SOFT_GRAD = 24.0
"""Highest local gradient energy (Sobel magnitude of the blurred grey image, box-averaged over
``SOFT_BOX`` pixels) of a smoke pixel. Edges of people, cars and sharp detail lie far above."""
SOFT_BOX = 5
"""Box (analysis pixels) over which the gradient energy is averaged."""

LAG_S = 0.25
"""Each frame is compared with the newest stored frame at least this old: smoke changes slowly, so
the lag is longer than the fire detector's, and the change measured does not depend on the call rate."""
MAX_LAG_S = 0.6
"""No comparison with an older frame: optical flow loses fast objects across longer steps."""
WINDOW_S = 1.0
"""Statistics window: a plume keeps changing for longer than a passer-by changes one place."""
MAX_GAP_S = 0.7
"""A longer gap between calls (the silence gate's refresh in a still scene) discards the history."""
STALE_EVIDENCE_S = 1.5
"""Calls that cannot judge keep the evidence as it is, but not for longer than this."""
MAX_HISTORY = 64
"""Hard cap on stored frames and window entries: memory is bounded at any call rate."""

MIN_CHANGE = 4
"""Grey-level change (0-255) beyond what motion explains that counts as a change event; distant,
thin plumes change by only a few levels."""
NOISE_FACTOR = 4.0
"""The threshold rises to this multiple of the median motion-compensated difference of the frame."""
EDGE_MARGIN = GREY_BLUR // 2 + 1
"""Analysis pixels along the frame edge where change is ignored (a pan brings in new content there)."""
MIN_CHANGE_FRACTION = 0.3
"""A pixel is churning when at least this share of the window's comparisons (and at least 2) show
unexplained, soft, colourless change."""
MIN_COLOURLESS_FRACTION = 0.8
"""... and it was colourless in at least this share of the window's frames."""
SHARP_GRAD = 64.0
"""Gradient energy above which moving detail is *sharp*: the edge of an opaque object."""
RIGID_REACH = 31
"""Side (analysis pixels of a ``WORK_WIDTH`` copy; a wider copy scales it) of the square around sharp
detail moving as optical flow predicts (a person, a car, produce on a belt) in which no smoke is judged:
such objects drag soft, colourless change along (shadows on a wall, reflections on wet asphalt, the belt
behind a fruit) that would look like churn. Specks get less (``SPECK_REACH``)."""
MOVER_JOIN = 5
"""Moving sharp detail closer than about this (analysis pixels) belongs to one mover."""
SPECK_SIDE = 12
"""A mover whose moving sharp detail spans fewer analysis pixels than this (either way) is a speck..."""
SPECK_REACH = 9
"""... and is guarded over a square of this side only."""
RIGID_HOLD_S = 1.5
"""... for this long after the rigid motion was last seen there (a shadow lingers behind its caster)."""
FLAG_SPREAD = 7
"""Flags are spread over a disc of this diameter (analysis pixels): smoke churns in patches, and a
pixel's evidence is the churn of its neighbourhood now."""

EVIDENCE_TAU_S = 0.3
"""Time constant of the per-pixel evidence average. Only pixels churning *now* (and often in the
window) add to it, so a place a shadow crossed once fades within a few tenths of a second."""
EVIDENCE_MAX_STEP_S = 0.15
"""Longest time step one call may add to the evidence (slow call rates need several flagged calls)."""
REGION_JOIN = 5
"""Smoke pixels closer than about this (analysis pixels) are reported as one region."""
MIN_REGION_SHARE = 0.004
"""Smaller regions (share of the analysis image) are specks, not smoke worth an alert."""
MIN_REGION_PIXELS = 12
"""... and never fewer analysis pixels than this."""
REGION_REF_PIXELS = 256 * 144
"""The share is taken of at most this many analysis pixels (a 720p frame's copy): a larger analysis
image (a large frame) needs a plume of the same size in analysis pixels, not of the same share."""

BACKGROUND_TAU_S = 3.0
"""Time constant (stream seconds) of the slow background (running average of the grey image)."""
BACKGROUND_CHANGE = 8
"""Grey-level difference from the background that marks soft colourless change for a watch."""
WATCH_CHANGE_NOW = 2
"""Grey-level change since the previous call that a watch-starting pixel must also show."""
WATCH_S = 2.0
"""Once soft colourless change is seen, the detector asks for every frame for this long."""
WATCH_KEEP_EVIDENCE = 0.15
"""While evidence anywhere is at least this, the watch goes on."""

SMEAR_HOLD_S = 1.0
"""After a smear nothing is learned for this long (stream seconds): the decoder builds on it."""

LABEL_SMOKE = "smoke"
DETECTOR_NAME = "smoke"

_K_SPREAD = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (FLAG_SPREAD, FLAG_SPREAD))
_K_RIGID = np.ones((RIGID_REACH, RIGID_REACH), np.uint8)
_K_MOVER_JOIN = np.ones((MOVER_JOIN, MOVER_JOIN), np.uint8)
_K_SPECK = np.ones((SPECK_REACH, SPECK_REACH), np.uint8)
_K_JOIN = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (REGION_JOIN, REGION_JOIN))


class _Past(NamedTuple):
    """One earlier analysis frame: the reference for a later comparison."""

    pts: float
    grey: np.ndarray
    energy: np.ndarray


class _Flags(NamedTuple):
    """What one call saw, kept for the window."""

    pts: float
    churn: np.ndarray
    """uint8 0/1: soft, colourless change that motion does not explain."""
    colourless: np.ndarray
    """uint8 0/1: colourless (and not too dark)."""


class SmokeDetector:
    """Stateful per camera."""

    def __init__(self, cfg: SmokeConfig) -> None:
        self._cfg = cfg
        self._warper = Warper()
        self._scale = (1.0, 1.0)
        self.reset()

    def reset(self) -> None:
        """Forget everything seen (new stream, camera moved, detection switched back on)."""
        self._past: deque[_Past] = deque(maxlen=MAX_HISTORY)
        self._window: deque[_Flags] = deque()
        self._n_churn: np.ndarray | None = None
        self._n_colourless: np.ndarray | None = None
        self._evidence: np.ndarray | None = None
        self._background: np.ndarray | None = None
        self._background_pts: float | None = None
        self._watch_grey: np.ndarray | None = None
        self._last_pts: float | None = None
        self._judged_pts: float | None = None
        self._last_result: list[Detection] = []
        self._watch_since: float | None = None
        self._smear_pts: float | None = None
        self._rigid_pts: np.ndarray | None = None
        self._k_rigid = _K_RIGID

    @property
    def peak_evidence(self) -> float:
        """Highest evidence anywhere in the picture now (0-1): the margin to ``min_score`` for tuning."""
        return 0.0 if self._evidence is None else float(self._evidence.max())

    def watching(self, pts: float) -> bool:
        """True while the detector needs every frame at ``pts``, even ones the silence gate skips."""
        return self.watch().holds(pts)

    def watch(self) -> Watch:
        return Watch(self._watch_since, WATCH_S, self.peak_evidence, WATCH_KEEP_EVIDENCE)

    def regions(self) -> list[tuple[float, float, float, float]]:
        """Boxes (x1, y1, x2, y2, frame pixels) where smoke is reported now, from the last call."""
        return [d.box for d in self._last_result]

    def detect(
        self, image: np.ndarray, pts: float, damaged: bool = False, shrinks: Shrinks | None = None
    ) -> list[Detection]:
        """Return smoke regions in ``image`` (BGR uint8) at stream time ``pts`` (seconds).

        ``shrinks``: `Shrinks` of ``image`` shared with the fire detector, so a shrink both make is
        made once.

        ``damaged`` (``Frame.damaged``): the decoder skipped or concealed data just before or in this
        frame. Such a frame is ignored; so is any frame within ``SMEAR_HOLD_S`` of a smear the detector
        saw itself.
        """
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected a BGR uint8 HxWx3 image, got {image.dtype} {image.shape}")
        if not self._cfg.enabled:
            return []
        if self._last_pts is not None and pts == self._last_pts:
            return list(self._last_result)
        if damaged or (self._smear_pts is not None and 0 <= pts - self._smear_pts <= SMEAR_HOLD_S):
            return self._ignore(pts)
        self._smear_pts = None

        small = _shrink(image, shrinks)
        h, w = small.shape[:2]
        if min(h, w) < MIN_WORK_SIDE:
            return []
        background = self._background
        background_pts = self._background_pts
        if self._evidence is None or self._evidence.shape != (h, w) or self._discontinuous(pts):
            self.reset()
            self._start(h, w)
            if background is not None and background.shape == (h, w):
                # The slow background survives a gap: it is what the watch compares a refresh with.
                self._background, self._background_pts = background, background_pts
        self._last_pts = pts
        self._scale = (image.shape[1] / w, image.shape[0] / h)

        grey = cv2.GaussianBlur(cv2.cvtColor(small, cv2.COLOR_BGR2GRAY), (GREY_BLUR, GREY_BLUR), 0)
        colourless = _colourless(small)
        energy = _gradient_energy(grey)
        soft = energy <= SOFT_GRAD
        candidate = colourless & soft
        self._update_watch(grey, candidate, pts)
        ref = self._reference(pts)
        self._past.append(_Past(pts, grey, energy))

        if ref is not None:
            judged = self._unexplained(grey, ref.grey)
            unexplained = None if judged is None else judged[0]
            if unexplained is None:
                # An exposure change: nothing can be judged, and the background must be relearnt.
                self._background = grey.astype(np.float32)
                self._background_pts = pts
            else:
                if smeared(unexplained):
                    self._smear_pts = pts
                    return self._ignore(pts)
                # Sharp detail that changed: the edge of an opaque object moving (flow is unreliable on
                # a person crossing a plain wall, so whether flow explains it does not matter here).
                rigid = (judged[1] & (energy > SHARP_GRAD)).astype(np.uint8)
                assert self._rigid_pts is not None
                self._rigid_pts[_guard(rigid, self._k_rigid) > 0] = pts
                free = (pts - self._rigid_pts) > RIGID_HOLD_S
                churn = (unexplained > 0) & candidate & free
                n = self._push(_Flags(pts, churn.astype(np.uint8), colourless.astype(np.uint8)))
                assert self._n_churn is not None and self._n_colourless is not None
                churning = (
                    (self._n_churn >= max(2, MIN_CHANGE_FRACTION * n))
                    & (self._n_colourless >= MIN_COLOURLESS_FRACTION * n)
                    & candidate
                    & free
                    & churn
                )
                since = pts - (ref.pts if self._judged_pts is None else self._judged_pts)
                self._judged_pts = pts
                self._accumulate(cv2.dilate(churning.astype(np.uint8), _K_SPREAD), since)

        self._last_result = self._regions(colourless)
        return list(self._last_result)

    # -- steps -------------------------------------------------------------------------------------

    def _ignore(self, pts: float) -> list[Detection]:
        """Learn nothing from this frame and forget the frames before it; the evidence stays."""
        self._past.clear()
        self._window.clear()
        if self._n_churn is not None and self._n_colourless is not None:
            self._n_churn[:] = 0
            self._n_colourless[:] = 0
        self._last_pts = pts
        self._last_result = []
        return []

    def _discontinuous(self, pts: float) -> bool:
        """True when ``pts`` does not continue the stream we hold (jumped back, or a long gap)."""
        if self._last_pts is not None and (pts < self._last_pts or pts - self._last_pts > MAX_GAP_S):
            return True
        return self._judged_pts is not None and pts - self._judged_pts > STALE_EVIDENCE_S

    def _start(self, h: int, w: int) -> None:
        self._n_churn = np.zeros((h, w), np.uint8)
        self._n_colourless = np.zeros((h, w), np.uint8)
        self._evidence = np.zeros((h, w), np.float32)
        self._rigid_pts = np.full((h, w), -np.inf, np.float32)
        # A large frame's analysis copy shows a mover bigger (in pixels): its guard grows with it.
        reach = max(RIGID_REACH, round(RIGID_REACH * w / WORK_WIDTH) | 1)
        self._k_rigid = np.ones((reach, reach), np.uint8)

    def _update_watch(self, grey: np.ndarray, candidate: np.ndarray, pts: float) -> None:
        """Blend ``grey`` into the slow background; start a watch on soft colourless change from it."""
        if self._background is None or self._background_pts is None or pts < self._background_pts:
            self._background = grey.astype(np.float32)
            self._background_pts = pts
            return
        changed = cv2.absdiff(grey.astype(np.float32), self._background) >= BACKGROUND_CHANGE
        # ... and still changing now: smoke churns, while the floor a person just uncovered differs
        # from the slow background for seconds but no longer changes (a ghost, not a plume).
        if self._watch_grey is not None and self._watch_grey.shape == grey.shape:
            changed &= cv2.absdiff(grey, self._watch_grey) >= WATCH_CHANGE_NOW
        self._watch_grey = grey.copy()
        if np.count_nonzero(changed & candidate) >= self._min_pixels(grey.size):
            if self._watch_since is None:
                self._watch_since = pts
        elif self.peak_evidence < WATCH_KEEP_EVIDENCE:
            self._watch_since = None
        alpha = 1.0 - math.exp(-(pts - self._background_pts) / BACKGROUND_TAU_S)
        cv2.accumulateWeighted(grey, self._background, alpha)
        self._background_pts = pts

    def _reference(self, pts: float) -> _Past | None:
        """The newest stored frame at least ``LAG_S`` older than ``pts``, if not too old."""
        for past in reversed(self._past):
            if past.pts <= pts - LAG_S + 1e-6:
                return past if pts - past.pts <= MAX_LAG_S else None
        return None

    def _unexplained(self, grey: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """0/1 map of brightness change that motion (with 1 px of slack) does not explain, and a
        bool map of any change beyond 1 px of slack; or None when the overall exposure changed
        (nothing can be judged then)."""
        if relit(grey, ref, step=2):
            return None
        if unchanged(grey, ref, MIN_CHANGE):
            return np.zeros_like(grey), np.zeros(grey.shape, bool)
        warped = self._warper.warp(grey, ref)
        noise = median_u8(cv2.absdiff(grey, warped)[::2, ::2])
        threshold = max(MIN_CHANGE, NOISE_FACTOR * noise)
        changed = outside(grey, ref, threshold)
        unexplained = (changed & outside(grey, warped, threshold)).astype(np.uint8)
        m = EDGE_MARGIN
        unexplained[:m] = 0
        unexplained[-m:] = 0
        unexplained[:, :m] = 0
        unexplained[:, -m:] = 0
        return unexplained, changed

    def _push(self, flags: _Flags) -> int:
        """Add one call's flags to the window (running sums), drop what fell out; return its length."""
        assert self._n_churn is not None and self._n_colourless is not None
        self._window.append(flags)
        self._n_churn += flags.churn
        self._n_colourless += flags.colourless
        while self._window[0].pts < flags.pts - WINDOW_S or len(self._window) > MAX_HISTORY:
            old = self._window.popleft()
            self._n_churn -= old.churn
            self._n_colourless -= old.colourless
        return len(self._window)

    def _accumulate(self, flags: np.ndarray, dt: float) -> None:
        """Blend one judgement into the evidence, weighted by the (capped) time it stands for."""
        assert self._evidence is not None
        keep = math.exp(-min(dt, EVIDENCE_MAX_STEP_S) / EVIDENCE_TAU_S)
        self._evidence *= keep
        self._evidence += (1.0 - keep) * flags

    @staticmethod
    def _min_pixels(size: int) -> int:
        return max(MIN_REGION_PIXELS, round(MIN_REGION_SHARE * min(size, REGION_REF_PIXELS)))

    def _regions(self, colourless: np.ndarray) -> list[Detection]:
        """Colourless pixels whose evidence reaches min_score, grouped into boxes."""
        assert self._evidence is not None
        hot = (self._evidence >= self._cfg.min_score) & colourless
        if not hot.any():
            return []
        h, w = hot.shape
        sx, sy = self._scale
        least = self._min_pixels(h * w)
        count, labels, stats, _ = cv2.connectedComponentsWithStats(cv2.dilate(hot.astype(np.uint8), _K_JOIN))
        out: list[Detection] = []
        for i in range(1, count):
            x, y, bw, bh = (int(v) for v in stats[i, :4])
            mine = (labels[y : y + bh, x : x + bw] == i) & hot[y : y + bh, x : x + bw]
            pixels = int(mine.sum())
            if pixels < least:
                continue
            ys, xs = np.nonzero(mine)
            score = float(self._evidence[y : y + bh, x : x + bw][mine].max())
            box = (
                (x + xs.min()) * sx,
                (y + ys.min()) * sy,
                (x + xs.max() + 1) * sx,
                (y + ys.max() + 1) * sy,
            )
            out.append(
                Detection(
                    label=LABEL_SMOKE,
                    score=min(1.0, score),
                    box=box,
                    detector=DETECTOR_NAME,
                    extra={"area": pixels / (h * w)},
                )
            )
        return out


_LEVELS = np.repeat(np.arange(256, dtype=np.uint8).reshape(1, 256, 1), 3, axis=2)
"""Every 8-bit level in each of 3 channels: the table `_colourless` white-balances through."""


def _colourless(small: np.ndarray) -> np.ndarray:
    """True where the white-balanced colour has low saturation and is not too dark."""
    means = np.array(cv2.mean(small)[:3], np.float32)
    gains = np.clip(means.mean() / np.maximum(means, 1.0), 1.0 / WB_GAIN_MAX, WB_GAIN_MAX)
    # The gains applied through a table of every level (made by the same multiply): the same
    # pixels at a third of the cost of multiplying each one.
    table = cv2.multiply(_LEVELS, (*(float(g) for g in gains), 0.0), dtype=cv2.CV_8U)
    balanced = cv2.LUT(small, table)
    b, g, r = cv2.split(balanced)
    top = cv2.max(cv2.max(b, g), r)
    spread = cv2.subtract(top, cv2.min(cv2.min(b, g), r))
    return (top >= DARK_MIN) & (spread.astype(np.float32) <= SAT_MAX * top)


def _gradient_energy(grey: np.ndarray) -> np.ndarray:
    """Local gradient energy: Sobel magnitude, box-averaged over ``SOFT_BOX`` pixels."""
    gx = cv2.Sobel(grey, cv2.CV_32F, 1, 0)
    gy = cv2.Sobel(grey, cv2.CV_32F, 0, 1)
    return cv2.blur(cv2.magnitude(gx, gy), (SOFT_BOX, SOFT_BOX))


def _guard(rigid: np.ndarray, k_rigid: np.ndarray) -> np.ndarray:
    """Where no smoke is judged around moving sharp detail ``rigid`` (0/1): ``RIGID_REACH`` around a
    mover of some size, only ``SPECK_REACH`` around a speck (a sharp bit of plume edge, a small far-off
    mover), so that a small plume is not blanked by its own edge."""
    if not rigid.any():
        return rigid
    joined = cv2.dilate(rigid, _K_MOVER_JOIN)
    _, labels, stats, _ = cv2.connectedComponentsWithStats(joined, connectivity=8)
    large = np.maximum(stats[:, cv2.CC_STAT_WIDTH], stats[:, cv2.CC_STAT_HEIGHT]) >= SPECK_SIDE
    large[0] = False
    big = large[labels].view(np.uint8) & rigid
    out = cv2.dilate(rigid - big, _K_SPECK)
    return cv2.bitwise_or(out, cv2.dilate(big, k_rigid))


def _shrink(image: np.ndarray, shrinks: Shrinks | None = None) -> np.ndarray:
    """Downscale by the integer factor that gets closest to the analysis width (see ``WORK_WIDTH``,
    ``LARGE_FRAME_WIDTH``): a bilinear step to twice the target, then 2x2 area averaging (close to
    area averaging over the whole factor, at a fraction of the cost). Below a factor of 4 it is area
    averaging alone, which is what `Shrinks.by` makes when the factor divides both sides."""
    w = image.shape[1]
    factor = max(1, round(w / (LARGE_WORK_WIDTH if w >= LARGE_FRAME_WIDTH else WORK_WIDTH)))
    if factor == 1:
        return image
    h = image.shape[0]
    if shrinks is not None and shrinks.image is image and factor < 4 and w % factor == 0 and h % factor == 0:
        return shrinks.by(factor)
    size = (max(1, w // factor), max(1, h // factor))
    if factor >= 4:
        image = cv2.resize(image, (2 * size[0], 2 * size[1]), interpolation=cv2.INTER_LINEAR)
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)

"""Pixel-level fire detector: fire colour + in-place flicker + a luminous core + persistence.

Colour alone cannot tell flame from a sunset, a wooden floor or a hi-vis vest (see the data README),
so a pixel only counts as flame when four things hold at once:

1. it is fire-coloured (red-dominant: R high, R >= G, R well above B) in the current frame **and** in
   every frame of the last ``WINDOW_S`` seconds: flames stay put and keep their colour, while a moving
   vest, orange or red car uncovers other colours behind it;
2. its brightness changes in a way that motion cannot explain, in a good part of that window: each
   frame is compared with the frame ``FLICKER_LAG_S`` earlier, both as it was and warped by dense
   optical flow (DIS), with 1 px of slack; a change either comparison explains is motion. So a panned
   camera, a drone's drift, a walking person or a passing car leave almost nothing, while flame
   brightness that rises and falls in place remains. Sensor noise raises the threshold, frames whose
   overall exposure changed are not judged, and the frame edge (where a pan brings in new content)
   is ignored;
3. it lies next to a luminous core (very bright red *and* fairly bright green: orange-yellow-white
   light), which flames have and dyed or painted surfaces (vests, cars, fruit, floors) lack;
4. the above keeps happening at the same place: per-pixel evidence is an exponential moving average
   of the flags with time constant ``EVIDENCE_TAU_S`` seconds of stream time, and a region is reported
   once its evidence reaches ``cfg.min_score``; the detection score *is* that evidence.

All timing uses ``pts`` (stream seconds), so the detector behaves the same whether it is called on
every frame, every 2nd or every 3rd frame (or irregularly, as a loaded red loop drops frames). One
call, or a still image repeated, never reports fire: evidence needs unexplained change between frames,
and history is dropped across gaps longer than ``MAX_GAP_S`` (the gate's refresh in a still scene).
Work happens on a downscaled copy (about ``WORK_WIDTH`` pixels wide) and history is bounded, so cost
and memory do not grow with time. Smoke is not detected (not attempted yet).

Broken video must not look like fire: a decoder that lost data conceals it with smears (blocks of
stale or garbage picture, often colourful and bright) that then "flicker" as later frames update
them from broken references. Frames the capture layer marks ``damaged`` are ignored, and the detector
also spots a smear itself (a sudden change that motion cannot explain over a large share of the frame,
or across nearly the full width of several rows, as lost H.264 slices do; flame flicker is local) and
learns nothing for ``SMEAR_HOLD_S`` after one. Ignoring means: no evidence added, no detection
reported, and the frame history dropped so that no later frame is compared with the smear.
"""

from __future__ import annotations

import math
from collections import deque
from typing import NamedTuple

import cv2
import numpy as np

from edge.config.models import FireConfig
from edge.types import Detection

WORK_WIDTH = 256
"""Analysis width. Frames are shrunk by an integer factor (OpenCV's fast area-averaging path) to about
this width: flames stay several pixels wide, and a 720p call costs ~1.5 ms."""
MIN_WORK_SIDE = 16
"""Smaller analysis images carry too little detail for optical flow; such frames are ignored."""
GREY_BLUR = 5
"""Gaussian kernel (analysis pixels) applied to the grey image before change detection. Shrinking
aliases fine texture, so a still panned by a pixel makes sharp detail shimmer like flicker; the blur
removes that shimmer and keeps the flame-sized brightness changes."""

FIRE_R_MIN = 110
"""Red level (0-255) a fire-coloured pixel needs at least (dim embers and shadows are not flame)."""
FIRE_RB_MIN = 40
"""Red must exceed blue by this much: rejects grey, white and pink-grey walls that are merely warm."""
CORE_R_MIN = 230
CORE_G_MIN = 150
"""A luminous core pixel: red near saturation with plenty of green (orange, yellow or white light).
Orange vests, red cars, citrus fruit, skin and wood stay far below this green level at full red."""
CORE_REACH = 7
"""Side (analysis pixels) of the square in which a flickering pixel must see a core pixel."""

FLICKER_LAG_S = 0.09
"""Each frame is compared with the newest stored frame at least this old, so the change measured
does not depend on the call rate (30, 15 or 10 calls a second all compare frames ~0.1 s apart)."""
MAX_LAG_S = 0.25
"""No comparison with an older frame: across longer steps optical flow loses fast objects (a passing
car), and what it cannot follow would look like flicker. Callers need >= ~4 calls a second."""
WINDOW_S = 0.5
"""Flicker statistics window: several flicker cycles even at 10 calls a second."""
MAX_GAP_S = 0.4
"""A longer gap between calls (the silence gate's periodic refresh in a still scene) means the history
no longer shows the same moment: everything is discarded rather than compared across the gap."""
STALE_EVIDENCE_S = 1.0
"""Calls that cannot judge flicker keep the evidence as it is, but not for longer than this."""
MAX_HISTORY = 32
"""Hard cap on stored frames (60 calls a second x ``WINDOW_S`` fits): memory is bounded at any rate."""

MIN_CHANGE = 6
"""Grey-level change (0-255) beyond what motion explains that counts as a flicker event; the flames of
the house clip vary by ~10-20 levels within half a second."""
NOISE_FACTOR = 4.0
"""The threshold rises to this multiple of the median motion-compensated difference of the frame, so
sensor noise or a noisy still never counts as flicker."""
MAX_EXPOSURE_CHANGE = 0.04
"""A frame whose overall brightness changed by more than this share (auto-exposure, a flickering
light) cannot show flicker of its own and is judged flicker-free. Fire clips stay within 0.02."""
GAIN_MIN_LEVEL = 16
"""Darker reference pixels are clamped to this level when measuring the brightness change ratio."""
EDGE_MARGIN = GREY_BLUR // 2 + 1
"""Analysis pixels along the frame edge where change is ignored: in a pan, new content enters there,
and the grey blur carries it ``GREY_BLUR // 2`` pixels inwards."""
MIN_FLICKER_EVENTS = 2
MIN_FLICKER_FRACTION = 0.2
"""A pixel flickers when at least this many, and this share, of the window's comparisons show
unexplained change: one change is an edge passing by, flame keeps changing."""
FLAG_SPREAD = 5
"""Flags are spread over a disc of this diameter (analysis pixels): flicker moves around inside a
flame, so the evidence of one place is the flicker of its neighbourhood."""

EVIDENCE_TAU_S = 0.3
"""Time constant of the per-pixel evidence average. From silence to continuous flicker the evidence
reaches 0.5 after ~0.2 s: the persistence a region needs with the default min_score."""
EVIDENCE_MAX_STEP_S = 0.1
"""Longest time step one call may add to the evidence: at slow call rates a single flagged frame must
not jump the evidence over the threshold on its own (three flagged calls are needed)."""
REGION_JOIN = 5
"""Flame pixels closer than about this (analysis pixels) are reported as one region."""
MIN_REGION_PIXELS = 8
"""Smaller regions (analysis pixels) are specks, not a fire worth an alert."""

WATCH_S = 1.0
"""Flicker needs consecutive frames, which a still scene's silence gate does not let through (it wakes
every ``refresh_s``). So once fire-coloured light next to a luminous core is seen, the detector asks
for every frame for this long (stream seconds): evidence of a real fire reaches ``min_score`` in about
half of it, a lamp or a sunset shows none and the watch ends."""
WATCH_KEEP_EVIDENCE = 0.15
"""While evidence anywhere is at least this, the watch goes on: a fire is watched for as long as it
burns, whatever the gate decides."""

SMEAR_SHARE = 0.25
"""A call whose unexplained change covers this share of the frame is a smear or a cut, not flicker:
the fire clips stay below 0.12 (drone pan, flames over a fifth of the frame, every 3rd frame)."""
SMEAR_ROW_SHARE = 0.6
SMEAR_ROWS = 2
"""A lost H.264 slice smears whole rows of macroblocks: this many analysis rows with unexplained change
over this share of their width are a smear. Flames leave at most half a row (a fire front seen from a
drone, every 3rd frame), a passing person or car far less."""
SMEAR_HOLD_S = 1.0
"""After a smear, the decoder keeps building on the broken picture until its next keyframe (typically
every 1-2 s): nothing is learned for this long (stream seconds)."""

LABEL_FIRE = "fire"
DETECTOR_NAME = "fire"

_K3 = np.ones((3, 3), np.uint8)
_K_CORE = np.ones((CORE_REACH, CORE_REACH), np.uint8)
_K_SPREAD = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (FLAG_SPREAD, FLAG_SPREAD))
_K_JOIN = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (REGION_JOIN, REGION_JOIN))


class _Past(NamedTuple):
    """One earlier analysis frame: the reference for a later comparison."""

    pts: float
    grey: np.ndarray


class _Flags(NamedTuple):
    """What one call saw, kept for the flicker window."""

    pts: float
    unexplained: np.ndarray
    """uint8 0/1: brightness change that motion does not explain."""
    colour: np.ndarray
    """uint8 0/1: fire-coloured."""


class FireDetector:
    """Stateful per camera."""

    def __init__(self, cfg: FireConfig) -> None:
        self._cfg = cfg
        # Ultrafast DIS: ~0.3 ms at 256x144; the finer presets cost more and changed no result here.
        self._flow = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)
        self._grid: tuple[np.ndarray, np.ndarray] | None = None
        self.reset()

    def reset(self) -> None:
        """Forget everything seen (new stream, camera moved, detection switched back on)."""
        self._past: deque[_Past] = deque(maxlen=MAX_HISTORY)
        self._window: deque[_Flags] = deque()
        self._n_unexplained: np.ndarray | None = None
        self._n_colour: np.ndarray | None = None
        self._evidence: np.ndarray | None = None
        self._last_pts: float | None = None
        self._judged_pts: float | None = None
        self._last_result: list[Detection] = []
        self._watch_since: float | None = None
        self._smear_pts: float | None = None

    @property
    def peak_evidence(self) -> float:
        """Highest evidence anywhere in the picture now (0-1): the margin to ``min_score`` for tuning."""
        return 0.0 if self._evidence is None else float(self._evidence.max())

    def watching(self, pts: float) -> bool:
        """True while the detector needs every frame at ``pts``, even ones the silence gate skips."""
        if self._watch_since is None:
            return False
        return pts - self._watch_since <= WATCH_S or self.peak_evidence >= WATCH_KEEP_EVIDENCE

    def detect(self, image: np.ndarray, pts: float, damaged: bool = False) -> list[Detection]:
        """Return flame regions in ``image`` (BGR uint8) at stream time ``pts`` (seconds).

        ``damaged`` (``Frame.damaged``): the decoder skipped or concealed data just before or in this
        frame. Such a frame is ignored (see the module notes); so is any frame within ``SMEAR_HOLD_S``
        of a smear the detector saw itself.
        """
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected a BGR uint8 HxWx3 image, got {image.dtype} {image.shape}")
        if not self._cfg.enabled:
            return []
        if self._last_pts is not None and pts == self._last_pts:
            return list(self._last_result)  # the same moment again: nothing new to learn
        if damaged or (self._smear_pts is not None and 0 <= pts - self._smear_pts <= SMEAR_HOLD_S):
            return self._ignore(pts)
        self._smear_pts = None

        small = _shrink(image)
        h, w = small.shape[:2]
        if min(h, w) < MIN_WORK_SIDE:
            return []
        if self._evidence is None or self._evidence.shape != (h, w) or self._discontinuous(pts):
            self.reset()
            self._start(h, w)
        self._last_pts = pts

        blue, green, red = cv2.split(small)
        grey = cv2.GaussianBlur(cv2.cvtColor(small, cv2.COLOR_BGR2GRAY), (GREY_BLUR, GREY_BLUR), 0)
        colour = ((red >= FIRE_R_MIN) & (red >= green) & (cv2.subtract(red, blue) >= FIRE_RB_MIN)).astype(
            np.uint8
        )
        core = ((red >= CORE_R_MIN) & (green >= CORE_G_MIN)).astype(np.uint8)
        candidate = (colour > 0) & (cv2.dilate(core, _K_CORE) > 0)
        if np.count_nonzero(candidate) >= MIN_REGION_PIXELS:
            if self._watch_since is None:
                self._watch_since = pts
        elif self.peak_evidence < WATCH_KEEP_EVIDENCE:
            self._watch_since = None
        ref = self._reference(pts)
        self._past.append(_Past(pts, grey))

        if ref is not None:
            unexplained = self._unexplained(grey, ref.grey) if candidate.any() else np.zeros_like(colour)
            if _smeared(unexplained):
                self._smear_pts = pts
                return self._ignore(pts)
            n = self._push(_Flags(pts, unexplained, colour))
            flickering = (
                candidate
                & (self._n_colour == n)
                & (self._n_unexplained >= max(MIN_FLICKER_EVENTS, MIN_FLICKER_FRACTION * n))
            )
            since = pts - (ref.pts if self._judged_pts is None else self._judged_pts)
            self._judged_pts = pts
            self._accumulate(cv2.dilate(flickering.astype(np.uint8), _K_SPREAD), since)

        self._last_result = self._regions(colour, image.shape[1] / w, image.shape[0] / h)
        return list(self._last_result)

    # -- steps -------------------------------------------------------------------------------------

    def _ignore(self, pts: float) -> list[Detection]:
        """Learn nothing from this frame and forget the frames before it; the evidence stays as it was
        (it came from sound frames and goes stale after ``STALE_EVIDENCE_S`` without judgement)."""
        self._past.clear()
        self._window.clear()
        if self._n_unexplained is not None and self._n_colour is not None:
            self._n_unexplained[:] = 0
            self._n_colour[:] = 0
        self._last_pts = pts
        self._last_result = []
        return []

    def _discontinuous(self, pts: float) -> bool:
        """True when ``pts`` does not continue the stream we hold (jumped back, or a long gap)."""
        if self._last_pts is not None and (pts < self._last_pts or pts - self._last_pts > MAX_GAP_S):
            return True
        # Evidence is only as fresh as the last call that could judge flicker.
        return self._judged_pts is not None and pts - self._judged_pts > STALE_EVIDENCE_S

    def _start(self, h: int, w: int) -> None:
        self._n_unexplained = np.zeros((h, w), np.uint8)
        self._n_colour = np.zeros((h, w), np.uint8)
        self._evidence = np.zeros((h, w), np.float32)

    def _reference(self, pts: float) -> _Past | None:
        """The newest stored frame at least ``FLICKER_LAG_S`` older than ``pts``, if not too old."""
        for past in reversed(self._past):
            if past.pts <= pts - FLICKER_LAG_S + 1e-6:
                return past if pts - past.pts <= MAX_LAG_S else None
        return None

    def _unexplained(self, grey: np.ndarray, ref: np.ndarray) -> np.ndarray:
        """0/1 map of brightness change that motion (with 1 px of slack) does not explain.

        Motion is tried two ways and either may explain a change: dense optical flow (large or
        non-rigid motion: people, cars, a drone's drift) and no motion at all (sub-pixel drift, and
        smooth or saturated areas such as a sunset sky, where flow is unreliable).
        """
        flow = self._flow.calc(grey, ref, None)
        h, w = grey.shape
        if self._grid is None or self._grid[0].shape != (h, w):
            self._grid = (
                np.tile(np.arange(w, dtype=np.float32), (h, 1)),
                np.tile(np.arange(h, dtype=np.float32)[:, None], (1, w)),
            )
        warped = cv2.remap(
            ref,
            self._grid[0] + flow[..., 0],
            self._grid[1] + flow[..., 1],
            cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE,
        )
        # Auto-exposure or a flickering light scales the whole picture. Undoing the gain fails where
        # channels clip, i.e. on bright orange, so such a frame is judged flicker-free instead.
        sample_now = grey[::2, ::2].astype(np.float32)
        sample_ref = np.maximum(warped[::2, ::2], GAIN_MIN_LEVEL).astype(np.float32)
        if abs(float(np.median(sample_now / sample_ref)) - 1.0) > MAX_EXPOSURE_CHANGE:
            return np.zeros_like(grey)
        noise = float(np.median(cv2.absdiff(grey, warped)[::2, ::2]))
        threshold = max(MIN_CHANGE, NOISE_FACTOR * noise)
        unexplained = (_outside(grey, warped, threshold) & _outside(grey, ref, threshold)).astype(np.uint8)
        # Content entering at the frame edge (camera pan) is new, not flicker.
        m = EDGE_MARGIN
        unexplained[:m] = 0
        unexplained[-m:] = 0
        unexplained[:, :m] = 0
        unexplained[:, -m:] = 0
        return unexplained

    def _push(self, flags: _Flags) -> int:
        """Add one call's flags to the window (running sums), drop what fell out; return its length."""
        assert self._n_unexplained is not None and self._n_colour is not None
        self._window.append(flags)
        self._n_unexplained += flags.unexplained
        self._n_colour += flags.colour
        while self._window[0].pts < flags.pts - WINDOW_S or len(self._window) > MAX_HISTORY:
            old = self._window.popleft()
            self._n_unexplained -= old.unexplained
            self._n_colour -= old.colour
        return len(self._window)

    def _accumulate(self, flags: np.ndarray, dt: float) -> None:
        """Blend one judgement into the evidence, weighted by the (capped) time it stands for.

        Calls that cannot judge (no reference frame of the right age) leave the evidence as it is:
        not knowing is not the same as seeing no flicker.
        """
        assert self._evidence is not None
        keep = math.exp(-min(dt, EVIDENCE_MAX_STEP_S) / EVIDENCE_TAU_S)
        self._evidence *= keep
        self._evidence += (1.0 - keep) * flags

    def _regions(self, colour: np.ndarray, sx: float, sy: float) -> list[Detection]:
        """Fire-coloured pixels whose evidence reaches min_score, grouped into boxes."""
        assert self._evidence is not None
        hot = (self._evidence >= self._cfg.min_score) & (colour > 0)
        if not hot.any():
            return []
        h, w = hot.shape
        count, labels, stats, _ = cv2.connectedComponentsWithStats(cv2.dilate(hot.astype(np.uint8), _K_JOIN))
        out: list[Detection] = []
        for i in range(1, count):
            x, y, bw, bh = (int(v) for v in stats[i, :4])
            mine = (labels[y : y + bh, x : x + bw] == i) & hot[y : y + bh, x : x + bw]
            pixels = int(mine.sum())
            if pixels < MIN_REGION_PIXELS:
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
                    label=LABEL_FIRE,
                    score=min(1.0, score),
                    box=box,
                    detector=DETECTOR_NAME,
                    extra={"area": pixels / (h * w)},
                )
            )
        return out


def _smeared(unexplained: np.ndarray) -> bool:
    """True when unexplained change is too widespread, or too row-shaped, to be flame flicker."""
    if unexplained.mean() >= SMEAR_SHARE:
        return True
    rows = unexplained.mean(axis=1, dtype=np.float32)
    return int(np.count_nonzero(rows >= SMEAR_ROW_SHARE)) >= SMEAR_ROWS


def _outside(grey: np.ndarray, ref: np.ndarray, threshold: float) -> np.ndarray:
    """True where ``grey`` lies more than ``threshold`` outside the range of ``ref``'s 3x3 neighbourhood."""
    above = cv2.subtract(grey, cv2.dilate(ref, _K3)) > threshold
    below = cv2.subtract(cv2.erode(ref, _K3), grey) > threshold
    return above | below


def _shrink(image: np.ndarray) -> np.ndarray:
    """Downscale by the integer factor that gets closest to ``WORK_WIDTH`` (area averaging)."""
    factor = max(1, round(image.shape[1] / WORK_WIDTH))
    if factor == 1:
        return image
    return cv2.resize(image, None, fx=1.0 / factor, fy=1.0 / factor, interpolation=cv2.INTER_AREA)

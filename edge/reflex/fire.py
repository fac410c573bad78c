"""Pixel-level fire detector: fire colour + in-place flicker + a luminous core + persistence.

Colour alone cannot tell flame from a sunset, a wooden floor or a hi-vis vest (see the data README),
so a pixel only counts as flame when four things hold at once:

1. it is fire-coloured (red-dominant: R high, R >= G, R well above B) in the current frame **and** in
   every frame of the last ``WINDOW_S`` seconds: flames stay put and keep their colour, while a moving
   vest, orange or red car uncovers other colours behind it;
2. its brightness changes in a way that motion cannot explain, in a good part of that window: each
   frame is compared with the frame ``FLICKER_LAG_S`` earlier, both as it was and warped by dense
   optical flow (DIS, edge.reflex.motion), with 1 px of slack; a change either comparison explains is
   motion, but the flow only where it moves the picture by ``MIN_FLOW`` or more. So a panned camera,
   a drone's drift, a walking person or a passing car leave almost nothing, while flame brightness
   that rises and falls in place remains. Sensor noise raises the threshold, frames whose overall
   exposure changed are not judged, and the frame edge (where a pan brings in new content) is
   ignored. And it turns: within ``TURN_WINDOW_S`` it got brighter, and
   darker, at least ``MIN_EACH_WAY`` times each (an edge passing by changes a pixel once each way);
3. it lies next to a luminous core (very bright red *and* fairly bright green: orange-yellow-white
   light), which flames have and dyed or painted surfaces (vests, cars, fruit, floors) lack;
4. the above keeps happening at the same place: per-pixel evidence is an exponential moving average
   of the flags with time constant ``EVIDENCE_TAU_S`` seconds of stream time, and a region is reported
   once its evidence reaches ``cfg.min_score``; the detection score *is* that evidence.

Small candidates get a closer look (`FireDetector._zoom_in`): zoom windows on the fine image, where no
core is asked for; each reported region gets a longer full-resolution look that decides
`extra["verified"]` (`FireDetector._verify`); smoke regions (edge.reflex.smoke) open zoom windows at
their base. A candidate that was watched and showed nothing starts no new watch while it looks the same,
unless the thumbnail sees it change in a way motion does not explain (``CHANGING_EVENTS``): that is
news anywhere, and gets a zoom window first.

All timing uses ``pts`` (stream seconds), so the detector behaves the same whether it is called on
every frame, every 2nd or every 3rd frame (or irregularly, as a loaded red loop drops frames). One
call, or a still image repeated, never reports fire: evidence needs unexplained change between frames,
and history is dropped across gaps longer than ``MAX_GAP_S`` (the gate's refresh in a still scene).
Work happens on a downscaled copy (about ``WORK_WIDTH`` pixels wide), zoom windows and looks are
capped in number and size, and history is bounded, so cost and memory do not grow with time.

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
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import cv2
import numpy as np

from edge.config.models import FireConfig
from edge.gate import WarmLight, relit
from edge.reflex.motion import Shrinks, Warper, Watch, median_u8, outside, smeared, unchanged
from edge.types import Box, Detection

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
MIN_FLOW = 1.5
"""Optical flow explains a change only where it moves the picture by at least this (analysis pixels
between a frame and its reference). Below it the flow engine is fitting a small flame's flicker, not
following anything: on a still background DIS warps the flame's earlier shape onto its new one, and
with the 1 px of slack nothing was left to see (a distant flame's look at full resolution: 15-45
changed pixels against no motion, none against the flow). Sub-pixel drift is what the no-motion
comparison's slack is for; in a pan the whole picture counts as moving (`Warper.warp_moving`). Tuned on
the `tune` scenes with 3 variants each (onset runs OK of 27, rule in zoom windows and looks only: 1.0
px +1, 1.5 px +3, 1.75 and 2.0 px +4, 2.5 px +5, each from 1.75 px on with a sea-glitter variant
false; at 1.5 px on the thumbnail too: +4, no look-alike run changed)."""
NOISE_FACTOR = 4.0
"""The threshold rises to this multiple of the median motion-compensated difference of the frame, so
sensor noise or a noisy still never counts as flicker."""
EDGE_MARGIN = GREY_BLUR // 2 + 1
"""Analysis pixels along the frame edge where change is ignored: in a pan, new content enters there,
and the grey blur carries it ``GREY_BLUR // 2`` pixels inwards."""
MIN_FLICKER_EVENTS = 2
MIN_FLICKER_FRACTION = 0.2
"""A pixel flickers when at least this many, and this share, of the window's comparisons show
unexplained change: one change is an edge passing by, flame keeps changing."""
MIN_EACH_WAY = 3
TURN_WINDOW_S = 1.2
"""Brightenings, and darkenings, a flickering pixel needs within the last ``TURN_WINDOW_S``: flame
light rises and falls again and again in place; an edge that passes by (a silhouette against a sunset,
a foot on a wooden floor) changes a pixel once each way, a swing twice."""
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

SMEAR_HOLD_S = 1.0
"""After a smear, the decoder keeps building on the broken picture until its next keyframe (typically
every 1-2 s): nothing is learned for this long (stream seconds)."""

MIN_CANDIDATE_PIXELS = 2
"""Thumbnail pixels of candidate (fire colour next to a core, on the thumbnail or on the fine image)
that start a watch: a small flame far away covers only a few."""
STILLS_KEPT = 8
"""Dismissed candidates remembered (a scene that returns to how it looked, e.g. after a person walked
through, matches one of them)."""
STILL_NEW_SHARE = 0.2
"""Candidate pixels outside a dismissed candidate, as a share of it, that still count as the same one
(noise and the relative cores of a textured surface come and go at its edges)."""
LARGE_STILL_SHARE = 0.05
"""A still candidate covering at least this share of the thumbnail (a sunset sky, a lit facade) would
hide a new small flame from ``STILL_NEW_SHARE``: a flame adds a handful of pixels to thousands. Beside
or on such a still, new, changing warm light is news on its own: while it stays still it shows none
(a warm-toned picture under sensor noise shows none), a flame on it does. Smaller stills (a lamp, the
wooden floor of a room people walk through) keep the share rule alone: their specks of new warm light
come and go with every visitor, and would keep the detector watching."""
STILL_CHANGE = 4.0
"""Mean grey change (0-255) over a dismissed candidate below which it is the same still object: flame
changes by far more between two gate refreshes, sensor noise by far less."""

RELATIVE_CORE_R_MIN = 170
RELATIVE_CORE_CONTRAST = 45
RELATIVE_CORE_SIDE = 9
"""On the fine image, a pixel with red at least ``RELATIVE_CORE_R_MIN`` that exceeds the mean red of
the ``RELATIVE_CORE_SIDE`` square around it by ``RELATIVE_CORE_CONTRAST`` is a (small) flame core."""

ZOOM_WIDTH = 800
"""Width of the fine image on which small candidates are found and looked at. A flame of a few
pixels on the thumbnail has its core averaged away there; on the fine image (about full resolution
for 720p-class streams) it keeps its luminous core and its flicker."""
ZOOM_R_MIN = 150
"""Inside a zoom window a fire-coloured pixel with at least this red is a candidate: no core is asked
for there (the window was opened on a core or on new, changing warm light), flicker decides."""
WARM_BACKGROUND_ALPHA = 0.1
"""Weight per call of the running background of the fine image's warm light (`edge.gate.WarmLight`:
new, changing warm light opens a zoom window)."""
ZOOM_MAX_SIDE = 10
"""Candidates up to this side (thumbnail pixels) get a zoomed-in look of their own; bigger ones are
judged well enough on the thumbnail."""
ZOOM_CONTEXT = 4
ZOOM_MIN_SIDE = 48
"""Side of a zoom window (fine pixels): this many times the candidate's side, at least the minimum,
so the window holds enough background to measure noise and exposure against."""
ZOOMS_MAX = 4
"""Zoom windows at most per camera (cost stays bounded whatever the scene)."""
CHANGING_EVENTS = 1
CHANGING_REACH = 5
"""A candidate is *changing* where, within ``CHANGING_REACH`` (thumbnail pixels), the thumbnail's own
analysis saw brightness change that motion does not explain on at least ``CHANGING_EVENTS`` of the
comparisons in its window. The thumbnail is too coarse to judge a small flame's flicker, but it sees
that something changes in place there, and nothing else in a room where people walk and stand does
(optical flow explains them). A changing candidate starts a watch even beside a dismissed still, is
first for a zoom window, and takes over a window in which nothing changes (see `FireDetector._zoom_in`):
a flame starting beside a person standing against a white wall (hair, skin and the floor line are
candidates too) waited a whole watch for a window, and was then taken for part of the still."""
ZOOM_KEEP_S = 1.0
"""A zoom window whose candidate has not been seen for this long and holds no evidence is dropped."""
ZOOM_MAX_PAN = 0.5
"""Zoom windows are closed while the whole picture moves by more than this (thumbnail pixels since
the last call): a panning camera or a drone."""
ZOOM_TRIAL_S = 1.0
"""A zoom window with no evidence after this long is dismissed (see `FireDetector._zoom_in`): a flame
reaches the watch-keeping evidence in about a third of it."""
STILL_PIXEL_CHANGE = 12
STILL_MIN_CHANGED = 4
"""A dismissed zoom window looks different once at least ``STILL_MIN_CHANGED`` of its fine pixels
changed by more than ``STILL_PIXEL_CHANGE`` grey levels: a new flame of a few pixels is enough."""
DISMISSED_MAX = 64
"""Dismissed windows remembered per camera (oldest forgotten first)."""

VERIFY_HOLD_S = 1.0
VERIFY_SHARE = 0.6
"""The full-resolution look verifies once it has run ``VERIFY_HOLD_S`` (stream seconds) and its
evidence reached ``min_score`` on at least ``VERIFY_SHARE`` of its calls in that time (a small flame's
flicker comes and goes)."""
VERIFY_SERIES_S = 2.0
"""Length of the brightness signal tested for periodicity."""
VERIFY_CONTEXT = ZOOM_CONTEXT
VERIFY_MIN_SIDE = ZOOM_MIN_SIDE
VERIFY_MAX_SIDE = 128
"""The look covers the region and as much context as a zoom window (frame pixels), at most this many
pixels on a side (a larger region is looked at with a pixel step). With less, a small flame fills its
own look, and the look's noise and exposure measures, taken over the crop, are the flame's flicker:
the look then judges its own flame flicker-free."""
VERIFY_MAX = 3
"""Looks at most per camera (the strongest regions get one; a region without one is not verified)."""
VERIFY_KEEP_S = 1.0
"""A look with no detection in it for this long is dropped."""
PERIODIC_STEP_S = 0.05
PERIODIC_MIN_LAG_S = 0.2
PERIODIC_CORRELATION = 0.6
"""Brightness is periodic when its normalised autocorrelation reaches this at some lag of at least
``PERIODIC_MIN_LAG_S`` (resampled every ``PERIODIC_STEP_S``): strobes, beacons and swinging things
reach 0.8-1, flame flicker stays well below."""
PERIODIC_REPEATS = 3
"""Lags tried are at most the series' length over this: a period is only believed once it repeated
within the series. At longer lags few samples overlap, and a small flame's flicker matched itself
by chance (with half the series: a pasted house6 flame's look on 8 of its 37 calls, the real house6
window flame on 6% of its 2 s windows; now 1 call and 3%, a red strobe still on 55%)."""

SMOKE_BASE_SHARE = 0.3
"""Share of a smoke region's height, at its bottom and below it, searched for the flames it rises from."""

LABEL_FIRE = "fire"
DETECTOR_NAME = "fire"

_K_CORE = np.ones((CORE_REACH, CORE_REACH), np.uint8)
_K_SPREAD = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (FLAG_SPREAD, FLAG_SPREAD))
_K_CHANGING = np.ones((CHANGING_REACH, CHANGING_REACH), np.uint8)
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


class _Turns(NamedTuple):
    """Where one call's picture got brighter or darker than its reference (beyond the change
    threshold), kept for the longer ``TURN_WINDOW_S``."""

    pts: float
    brighter: np.ndarray
    darker: np.ndarray


class _Step(NamedTuple):
    """What one analysis call found (masks at the analysis scale)."""

    colour: np.ndarray
    """uint8 0/1: fire-coloured now."""
    smeared: bool = False
    """The change since the reference frame is a decoder smear or a cut, not flicker."""


def _masks(
    image: np.ndarray, relative: bool = False, channels: Sequence[np.ndarray] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(fire colour uint8 0/1, candidate bool) of one BGR image at its own scale.

    `relative` (the fine image): a pixel far brighter in red than its surroundings is a core as well.
    A flame of a few pixels is imaged with its light spread over its neighbours, so its core rarely
    reaches the absolute levels, but it still outshines what is around it; surfaces only reflect.
    `channels`: ``cv2.split(image)`` when the caller has it already.
    """
    blue, green, red = channels if channels is not None else cv2.split(image)
    colour = (red >= FIRE_R_MIN) & (red >= green) & (cv2.subtract(red, blue) >= FIRE_RB_MIN)
    core = (red >= CORE_R_MIN) & (green >= CORE_G_MIN)
    if relative:
        around = cv2.blur(red, (RELATIVE_CORE_SIDE, RELATIVE_CORE_SIDE))
        core |= (red >= RELATIVE_CORE_R_MIN) & (cv2.subtract(red, around) >= RELATIVE_CORE_CONTRAST)
    near_core = cv2.dilate(core.view(np.uint8), _K_CORE) > 0
    return colour.view(np.uint8), colour & near_core


class _Analysis:
    """Flicker evidence over one picture at one scale: the whole frame's thumbnail, or a zoomed-in crop
    of it at (near) full resolution around a small candidate. Everything here is the flicker and
    persistence logic of the module notes; `FireDetector` decides what to look at."""

    def __init__(self, cfg: FireConfig, *, judge_smears: bool) -> None:
        self._cfg = cfg
        self._judge_smears = judge_smears
        self._warper = Warper()  # ultrafast DIS: finer presets cost more and changed no result here
        self.reset()

    def reset(self) -> None:
        self._past: deque[_Past] = deque(maxlen=MAX_HISTORY)
        self._window: deque[_Flags] = deque()
        self._n_unexplained: np.ndarray | None = None
        self._n_brighter: np.ndarray | None = None
        self._n_colour: np.ndarray | None = None
        self._turns: deque[_Turns] = deque()
        self._n_darker: np.ndarray | None = None
        self._evidence: np.ndarray | None = None
        self._last_pts: float | None = None
        self._judged_pts: float | None = None

    @property
    def peak_evidence(self) -> float:
        return 0.0 if self._evidence is None else float(self._evidence.max())

    def changing(self) -> np.ndarray | None:
        """bool map: unexplained change on ``CHANGING_EVENTS`` or more comparisons of the window,
        spread by ``CHANGING_REACH``; None before any comparison."""
        if self._n_unexplained is None or not self._window:
            return None
        hot = (self._n_unexplained >= CHANGING_EVENTS).view(np.uint8)
        return cv2.dilate(hot, _K_CHANGING) > 0 if hot.any() else hot.view(bool)

    def forget(self, pts: float) -> None:
        """Learn nothing from this moment and forget the frames before it; the evidence stays as it was
        (it came from sound frames and goes stale after ``STALE_EVIDENCE_S`` without judgement)."""
        self._past.clear()
        self._window.clear()
        if self._n_unexplained is not None and self._n_colour is not None:
            self._n_unexplained[:] = 0
            assert self._n_brighter is not None and self._n_darker is not None
            self._n_brighter[:] = 0
            self._n_darker[:] = 0
            self._turns.clear()
            self._n_colour[:] = 0
        self._last_pts = pts

    def step(
        self, small: np.ndarray, pts: float, masks: tuple[np.ndarray, np.ndarray] | None = None
    ) -> _Step:
        """Judge one call; `masks` are `_masks(small)` when the caller computed them already."""
        h, w = small.shape[:2]
        if self._evidence is None or self._evidence.shape != (h, w) or self._discontinuous(pts):
            self.reset()
            self._start(h, w)
        self._last_pts = pts
        colour, candidate = masks if masks is not None else _masks(small)
        grey = cv2.GaussianBlur(cv2.cvtColor(small, cv2.COLOR_BGR2GRAY), (GREY_BLUR, GREY_BLUR), 0)
        ref = self._reference(pts)
        self._past.append(_Past(pts, grey))
        if ref is not None:
            if candidate.any():
                unexplained, up, down = self._unexplained(grey, ref.grey)
            else:
                unexplained = up = down = np.zeros_like(colour)
            if self._judge_smears and smeared(unexplained):
                return _Step(colour, smeared=True)
            n = self._push(_Flags(pts, unexplained, colour), _Turns(pts, up, down))
            assert (
                self._n_colour is not None
                and self._n_unexplained is not None
                and self._n_brighter is not None
            )
            # Flame light rises and falls in place within the window; an edge that moves past (a
            # silhouette, a swinging object) changes a pixel one way per pass.
            flickering = (
                candidate
                & (self._n_colour == n)
                & (self._n_unexplained >= max(MIN_FLICKER_EVENTS, MIN_FLICKER_FRACTION * n))
                & (self._n_brighter >= MIN_EACH_WAY)
                & (self._n_darker >= MIN_EACH_WAY)
            )
            since = pts - (ref.pts if self._judged_pts is None else self._judged_pts)
            self._judged_pts = pts
            self._accumulate(cv2.dilate(flickering.astype(np.uint8), _K_SPREAD), since)
        return _Step(colour)

    def _discontinuous(self, pts: float) -> bool:
        """True when ``pts`` does not continue the stream we hold (jumped back, or a long gap)."""
        if self._last_pts is not None and (pts < self._last_pts or pts - self._last_pts > MAX_GAP_S):
            return True
        # Evidence is only as fresh as the last call that could judge flicker.
        return self._judged_pts is not None and pts - self._judged_pts > STALE_EVIDENCE_S

    def _start(self, h: int, w: int) -> None:
        self._n_unexplained = np.zeros((h, w), np.uint8)
        self._n_brighter = np.zeros((h, w), np.uint8)
        self._n_colour = np.zeros((h, w), np.uint8)
        self._n_darker = np.zeros((h, w), np.uint8)
        self._evidence = np.zeros((h, w), np.float32)

    def _reference(self, pts: float) -> _Past | None:
        """The newest stored frame at least ``FLICKER_LAG_S`` older than ``pts``, if not too old."""
        for past in reversed(self._past):
            if past.pts <= pts - FLICKER_LAG_S + 1e-6:
                return past if pts - past.pts <= MAX_LAG_S else None
        return None

    def _unexplained(self, grey: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """0/1 maps of brightness change that motion (with 1 px of slack) does not explain, and of
        where the picture got brighter, and darker, than the reference at all (the turns).

        Motion is tried two ways and either may explain a change: dense optical flow (large or
        non-rigid motion: people, cars, a drone's drift) and no motion at all (sub-pixel drift, and
        smooth or saturated areas such as a sunset sky, where flow is unreliable).
        """
        if unchanged(grey, ref, MIN_CHANGE):
            zero = np.zeros_like(grey)
            return zero, zero, zero
        warped, moving = self._warper.warp_moving(grey, ref, MIN_FLOW)
        # Auto-exposure or a flickering light scales the whole picture. Undoing the gain fails where
        # channels clip, i.e. on bright orange, so such a frame is judged flicker-free instead.
        if relit(grey, warped, step=2):
            return np.zeros_like(grey), np.zeros_like(grey), np.zeros_like(grey)
        noise = median_u8(cv2.absdiff(grey, warped)[::2, ::2])
        threshold = max(MIN_CHANGE, NOISE_FACTOR * noise)
        by_flow = outside(grey, warped, threshold) | ~moving  # a flow under MIN_FLOW explains nothing
        unexplained = (by_flow & outside(grey, ref, threshold)).astype(np.uint8)
        # Content entering at the frame edge (camera pan) is new, not flicker.
        m = EDGE_MARGIN
        unexplained[:m] = 0
        unexplained[-m:] = 0
        unexplained[:, :m] = 0
        unexplained[:, -m:] = 0
        up = (cv2.subtract(grey, ref) > threshold).view(np.uint8)
        down = (cv2.subtract(ref, grey) > threshold).view(np.uint8)
        return unexplained, up, down

    def _push(self, flags: _Flags, turns: _Turns) -> int:
        """Add one call's flags to the windows (running sums), drop what fell out; return the length
        of the flicker window."""
        assert self._n_unexplained is not None and self._n_colour is not None
        assert self._n_brighter is not None and self._n_darker is not None
        self._window.append(flags)
        self._n_unexplained += flags.unexplained
        self._n_colour += flags.colour
        while self._window[0].pts < flags.pts - WINDOW_S or len(self._window) > MAX_HISTORY:
            old = self._window.popleft()
            self._n_unexplained -= old.unexplained
            self._n_colour -= old.colour
        self._turns.append(turns)
        self._n_brighter += turns.brighter
        self._n_darker += turns.darker
        while self._turns[0].pts < flags.pts - TURN_WINDOW_S or len(self._turns) > 2 * MAX_HISTORY:
            old_turns = self._turns.popleft()
            self._n_brighter -= old_turns.brighter
            self._n_darker -= old_turns.darker
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

    def regions(self, colour: np.ndarray, scale: float, offset: tuple[float, float] = (0.0, 0.0),
                frame_area: float | None = None) -> list[Detection]:  # fmt: skip
        """Fire-coloured pixels whose evidence reaches min_score, grouped into boxes in frame pixels
        (analysis pixel * scale + offset); `area` is a share of `frame_area` analysis pixels."""
        if self._evidence is None:
            return []
        hot = (self._evidence >= self._cfg.min_score) & (colour > 0)
        if not hot.any():
            return []
        h, w = hot.shape
        total = frame_area or float(h * w)
        count, labels, stats, _ = cv2.connectedComponentsWithStats(cv2.dilate(hot.astype(np.uint8), _K_JOIN))
        out: list[Detection] = []
        ox, oy = offset
        for i in range(1, count):
            x, y, bw, bh = (int(v) for v in stats[i, :4])
            mine = (labels[y : y + bh, x : x + bw] == i) & hot[y : y + bh, x : x + bw]
            pixels = int(mine.sum())
            if pixels < MIN_REGION_PIXELS:
                continue
            ys, xs = np.nonzero(mine)
            score = float(self._evidence[y : y + bh, x : x + bw][mine].max())
            box = (
                ox + (x + xs.min()) * scale,
                oy + (y + ys.min()) * scale,
                ox + (x + xs.max() + 1) * scale,
                oy + (y + ys.max() + 1) * scale,
            )
            out.append(
                Detection(
                    label=LABEL_FIRE,
                    score=min(1.0, score),
                    box=box,
                    detector=DETECTOR_NAME,
                    extra={"area": pixels / total},
                )
            )
        return out


@dataclass(slots=True)
class _Zoom:
    """A zoomed-in look at one small candidate: its window on the fine image and its own analysis."""

    box: tuple[int, int, int, int]
    """x0, y0, x1, y1 on the fine image."""
    analysis: _Analysis
    since: float
    """pts the window was opened."""
    seen: float
    """pts a candidate was last seen in it."""
    proved: bool = False
    """Its evidence reached ``WATCH_KEEP_EVIDENCE`` once: it is kept while its candidate is seen."""


@dataclass(slots=True)
class _Verification:
    """The longer, full-resolution look at one reported region that decides `extra["verified"]`."""

    box: tuple[int, int, int, int]
    """x0, y0, x1, y1 in frame pixels."""
    step: int
    """Pixel step of the look (1: full resolution; more only to cap the cost of a large region)."""
    analysis: _Analysis
    series: deque[tuple[float, float]]
    """(pts, mean grey of the look): the brightness signal tested for periodicity."""
    since: float
    seen: float
    held: deque[tuple[float, bool]] = field(default_factory=deque)
    """(pts, evidence >= min_score) of the look's calls over the last ``VERIFY_HOLD_S``."""


class _Dismissed(NamedTuple):
    """A zoom window that showed nothing, and what the fine grey image looked like there."""

    box: tuple[int, int, int, int]
    grey: np.ndarray


class _Still(NamedTuple):
    """A fire-coloured candidate that was watched and showed nothing: what it looked like then."""

    grey: np.ndarray
    candidate: np.ndarray


class FireDetector:
    """Stateful per camera."""

    def __init__(self, cfg: FireConfig) -> None:
        self._cfg = cfg
        self._main = _Analysis(cfg, judge_smears=True)
        self.reset()

    def reset(self) -> None:
        """Forget everything seen (new stream, camera moved, detection switched back on)."""
        self._main.reset()
        self._zooms: list[_Zoom] = []
        self._dismissed: deque[_Dismissed] = deque(maxlen=DISMISSED_MAX)
        self._last_pts: float | None = None
        self._last_result: list[Detection] = []
        self._watch_since: float | None = None
        self._smear_pts: float | None = None
        self._stills: deque[_Still] = deque(maxlen=STILLS_KEPT)
        self._watched: _Still | None = None
        self._warm = WarmLight(WARM_BACKGROUND_ALPHA, always_judge_light=True)
        self._verifications: list[_Verification] = []
        self._grey_before: np.ndarray | None = None
        self._fine_before: tuple[float, np.ndarray] | None = None
        """(pts, fine image) of the last call, for the first comparison of a window opened now."""

    @property
    def peak_evidence(self) -> float:
        """Highest evidence anywhere in the picture now (0-1): the margin to ``min_score`` for tuning."""
        return max([self._main.peak_evidence] + [z.analysis.peak_evidence for z in self._zooms])

    def watching(self, pts: float) -> bool:
        """True while the detector needs every frame at ``pts``, even ones the silence gate skips."""
        return self.watch().holds(pts)

    def watch(self) -> Watch:
        return Watch(self._watch_since, WATCH_S, self.peak_evidence, WATCH_KEEP_EVIDENCE)

    def detect(
        self,
        image: np.ndarray,
        pts: float,
        damaged: bool = False,
        hints: Sequence[Box] = (),
        before: tuple[np.ndarray, float] | None = None,
        shrinks: Shrinks | None = None,
    ) -> list[Detection]:
        """Return flame regions in ``image`` (BGR uint8) at stream time ``pts`` (seconds).

        ``shrinks``: `Shrinks` of ``image`` shared with the smoke detector (a shrink both make is made
        once).

        ``before``: (image, pts) of the frame just before this one when the caller has it and did not
        call with it (the silence gate let it go). After a gap the thumbnail's analysis starts from
        it, so its first comparison is made now: a flame that appeared since is change in place at
        once (``CHANGING_EVENTS``), before its flicker shows on the thumbnail.

        ``hints``: smoke regions (frame pixels) the smoke detector sees now. Flames at their base are
        looked for with zoom windows even before they show a core (see `_open_at_smoke`).

        ``damaged`` (``Frame.damaged``): the decoder skipped or concealed data just before or in this
        frame. Such a frame is ignored (see the module notes); so is any frame within ``SMEAR_HOLD_S``
        of a smear the detector saw itself.
        """
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected a BGR uint8 HxWx3 image, got {image.dtype} {image.shape}")
        if not self._cfg.enabled:
            return []
        if (
            before is not None
            and not damaged
            and before[0].shape == image.shape
            and 0 < pts - before[1] <= MAX_LAG_S
            and (self._last_pts is None or before[1] - self._last_pts > MAX_GAP_S)
        ):
            # Only the thumbnail's analysis starts from it: it is what sees change in place.
            earlier = _shrink(before[0])
            if min(earlier.shape[:2]) >= MIN_WORK_SIDE:
                self._main.step(earlier, before[1])
        return self._look(image, pts, damaged, hints, shrinks)

    def _look(
        self, image: np.ndarray, pts: float, damaged: bool, hints: Sequence[Box], shrinks: Shrinks | None
    ) -> list[Detection]:
        """`detect` on one frame, its input checked."""
        if self._last_pts is not None and pts == self._last_pts:
            return list(self._last_result)  # the same moment again: nothing new to learn
        if self._last_pts is not None and pts < self._last_pts:
            self.reset()  # the stream started again
        if damaged or (self._smear_pts is not None and 0 <= pts - self._smear_pts <= SMEAR_HOLD_S):
            return self._ignore(pts)
        self._smear_pts = None

        small = _shrink(image, shrinks)
        h, w = small.shape[:2]
        if min(h, w) < MIN_WORK_SIDE:
            return []
        self._last_pts = pts
        scale = image.shape[1] / w
        masks = _masks(small)
        fine, fine_scale = _fine(image, shrinks)
        fine_channels = cv2.split(fine)
        fine_masks = _masks(fine, relative=True, channels=fine_channels) if fine is not small else masks
        warm = self._warm.update(fine, fine_channels)
        opener = fine_masks[1] | warm
        if self._warm.relit:
            # The lighting of the whole picture changed (a flash, headlights): every highlight is
            # new and brighter, so cores and warm light open nothing on this frame; the windows
            # stay free for a flame that is still there once the light settles.
            opener[:] = False
        if hints:
            _open_at_smoke(opener, fine_masks[0], hints, fine_scale)
        candidate = masks[1] | _pool(opener, (w, h))
        grey_now = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
        self._watch_decision(pts, candidate, grey_now, warm, self._main.changing())

        step = self._main.step(small, pts, masks)
        if step.smeared:
            self._smear_pts = pts
            return self._ignore(pts)
        found = self._main.regions(step.colour, scale)
        zooming = self._watch_since is not None and fine_scale < scale
        if self._panning(grey_now, needed=zooming or bool(self._zooms)):
            # A window fixed in the frame while the picture pans shows texture sliding through it,
            # which its small crop cannot follow: the thumbnail judges a moving picture alone.
            self._zooms.clear()
        elif zooming:
            area = float(h * w) * scale**2
            changing = self._main.changing()
            zoomed = self._zoom_in(
                fine, fine_masks[0], opener, warm, fine_scale, pts, found, area, scale / fine_scale, changing
            )
            found.extend(zoomed)
        self._verify(image, pts, found)
        self._fine_before = (pts, fine)
        self._last_result = found
        return list(found)

    # -- steps -------------------------------------------------------------------------------------

    def _ignore(self, pts: float) -> list[Detection]:
        """Learn nothing from this frame and forget the frames before it (see `_Analysis.forget`)."""
        self._main.forget(pts)
        self._fine_before = None
        for zoom in self._zooms:
            zoom.analysis.forget(pts)
        self._last_pts = pts
        self._last_result = []
        return []

    def _watch_decision(
        self,
        pts: float,
        candidate: np.ndarray,
        grey: np.ndarray,
        warm: np.ndarray,
        changing: np.ndarray | None,
    ) -> None:
        """Start, keep or end the watch (see ``WATCH_S``). A candidate that was watched and showed
        nothing, and still looks exactly as it did then, is a still object: it starts no new watch,
        so a lamp or a yellow sign in a still scene costs one watch, not one every gate refresh.
        A changing candidate (``CHANGING_EVENTS``; `changing` as of the last call) is news beside any
        still, and keeps the watch going."""
        peak = self.peak_evidence
        in_change = (
            changing is not None and changing.shape == candidate.shape and bool((candidate & changing).any())
        )
        if (
            self._watch_since is not None
            and pts - self._watch_since > WATCH_S
            and peak < WATCH_KEEP_EVIDENCE
            and not in_change
        ):
            # The watch ended with nothing: remember the candidate as it looked in its last watched
            # frame (this frame may be a later gate wake-up that already shows something new).
            self._watch_since = None
            if self._watched is not None:
                self._stills.append(self._watched)
            self._dismiss_zooms()
        if np.count_nonzero(candidate) < MIN_CANDIDATE_PIXELS:
            if peak < WATCH_KEEP_EVIDENCE:
                self._watch_since = None
            return
        if self._watch_since is None and (in_change or not self._unchanged_still(candidate, grey, warm)):
            self._watch_since = pts
            self._stills.clear()  # something new: what was dismissed may not look the same again
        if self._watch_since is not None:
            self._watched = _Still(grey, candidate)

    def _dismiss_zooms(self) -> None:
        """The watch ended with nothing: its zoom windows had the watch for their trial. They are
        dismissed with their look (the last watched fine image), rather than left open unjudged until
        the next watch, where they would hold every window while a new candidate waits for one."""
        before = self._fine_before
        if before is not None:
            grey = _LazyGrey(before[1])
            for zoom in self._zooms:
                if not zoom.proved:
                    self._dismissed.append(_Dismissed(zoom.box, grey.crop(zoom.box)))
        self._zooms.clear()

    def _unchanged_still(self, candidate: np.ndarray, grey: np.ndarray, warm: np.ndarray) -> bool:
        """The candidate is one that was watched and showed nothing, and it looks as it did then.
        `warm`: new, changing warm light (`WarmLight`, on the fine image) now; beside a large still
        (``LARGE_STILL_SHARE``) any of it, beside or on the still, is news."""
        news: bool | None = None  # new warm light on the thumbnail: found once and only if needed
        for still in self._stills:
            if still.grey.shape != grey.shape:
                continue
            if np.count_nonzero(still.candidate) >= LARGE_STILL_SHARE * still.candidate.size:
                if news is None:
                    size = (grey.shape[1], grey.shape[0])
                    news = bool(warm.any()) and np.count_nonzero(_pool(warm, size)) >= MIN_CANDIDATE_PIXELS
                if news:
                    continue  # new warm light beside or on a large still
            near = cv2.dilate(still.candidate.view(np.uint8), _K_CORE) > 0
            if np.count_nonzero(candidate & ~near) > STILL_NEW_SHARE * np.count_nonzero(still.candidate):
                continue  # fire-coloured light where there was none
            if float(cv2.absdiff(grey, still.grey)[near].mean()) < STILL_CHANGE:
                return True
        return False

    def _panning(self, grey: np.ndarray, needed: bool = True) -> bool:
        """True when the whole thumbnail moved since the last call by more than ``ZOOM_MAX_PAN``
        (phase correlation: one global shift, a fraction of a millisecond at thumbnail size).
        Not `needed` (no zoom window open, none to open): only the frame is kept for the next call."""
        now = grey.astype(np.float32)
        before, self._grey_before = self._grey_before, now
        if not needed or before is None or before.shape != now.shape:
            return False
        (dx, dy), _ = cv2.phaseCorrelate(before, now)
        return math.hypot(dx, dy) > ZOOM_MAX_PAN

    def _verify(self, image: np.ndarray, pts: float, found: list[Detection]) -> None:
        """Give each detection `extra["verified"]` (1.0 or 0.0) from a longer look at its region.

        The look is a flicker analysis of its own on the full-resolution crop of the region (what a
        provisional alert saw on the thumbnail or a zoom window is checked again at a finer scale),
        and the region's brightness over the last ``VERIFY_SERIES_S``: flame flickers irregularly,
        while flashing lights, a swinging object or a rotating beacon repeat themselves. Verified
        means: the fine look's evidence has held ``min_score`` for ``VERIFY_HOLD_S`` and the
        brightness is not periodic. The event machine confirms or retracts the alert from this.
        """
        ih, iw = image.shape[:2]
        for d in sorted(found, key=lambda d: -d.score):
            cx, cy = (d.box[0] + d.box[2]) / 2, (d.box[1] + d.box[3]) / 2
            look = next((v for v in self._verifications if _inside(cx, cy, v.box)), None)
            if look is None and len(self._verifications) < VERIFY_MAX:
                bw, bh = d.box[2] - d.box[0], d.box[3] - d.box[1]
                side = max(VERIFY_MIN_SIDE, VERIFY_CONTEXT * max(bw, bh))
                x0, y0 = int(max(0, cx - side / 2)), int(max(0, cy - side / 2))
                x1, y1 = int(min(iw, cx + side / 2)), int(min(ih, cy + side / 2))
                look = _Verification(
                    (x0, y0, x1, y1),
                    max(1, math.ceil(max(x1 - x0, y1 - y0) / VERIFY_MAX_SIDE)),
                    _Analysis(self._cfg, judge_smears=False),
                    deque(),
                    pts,
                    pts,
                )
                self._verifications.append(look)
            if look is not None:
                look.seen = pts
        keep = []
        for look in self._verifications:
            if pts - look.seen > VERIFY_KEEP_S:
                continue
            keep.append(look)
            x0, y0, x1, y1 = look.box
            crop = np.ascontiguousarray(image[y0 : y1 : look.step, x0 : x1 : look.step])
            if min(crop.shape[:2]) < MIN_WORK_SIDE:
                continue
            look.analysis.step(crop, pts, _window_masks(crop))
            look.series.append((pts, float(crop.mean())))
            while look.series and look.series[0][0] < pts - VERIFY_SERIES_S:
                look.series.popleft()
            look.held.append((pts, look.analysis.peak_evidence >= self._cfg.min_score))
            while look.held and look.held[0][0] < pts - VERIFY_HOLD_S:
                look.held.popleft()
        self._verifications = keep
        for d in found:
            cx, cy = (d.box[0] + d.box[2]) / 2, (d.box[1] + d.box[3]) / 2
            look = next((v for v in self._verifications if _inside(cx, cy, v.box)), None)
            verified = look is not None and _held(look, pts) and not _periodic(look.series)
            d.extra["verified"] = 1.0 if verified else 0.0

    def _zoom_in(
        self,
        fine: np.ndarray,
        colour: np.ndarray,
        opener: np.ndarray,
        warm: np.ndarray,
        fine_scale: float,
        pts: float,
        found: list[Detection],
        frame_area: float,
        ratio: float,
        changing: np.ndarray | None,
    ) -> list[Detection]:
        """Small candidates, looked at on the fine image (see ``ZOOM_WIDTH``).

        A zoom window that showed no evidence for ``ZOOM_TRIAL_S`` is dismissed: its place is
        remembered with its look, and a candidate there opens a window again only once that look
        changed. So the grain of a wooden floor or a still lamp costs one trial, and a window is free
        for the flame that starts later next to them.
        """
        fh, fw = fine.shape[:2]
        # Grey is pointwise: crops of it are taken from the crops of `fine` they are needed for.
        grey = _LazyGrey(fine)
        # New, changing warm light first, as specks of its own: a flame starting now on a textured
        # still would otherwise join the still's cores into one component too big for a window.
        # Then the rest, largest first; those too big for a zoom window are judged on the
        # thumbnail. A busy scene holds hundreds of specks: what follows is done on arrays, not one
        # speck at a time.
        warm_stats = _specks(warm)
        first = len(warm_stats)
        stats = np.concatenate([warm_stats, _specks(opener)])
        cx = stats[:, cv2.CC_STAT_LEFT] + stats[:, cv2.CC_STAT_WIDTH] / 2
        cy = stats[:, cv2.CC_STAT_TOP] + stats[:, cv2.CC_STAT_HEIGHT] / 2
        in_change = _at(changing, cx / ratio, cy / ratio)
        key = stats[:, cv2.CC_STAT_AREA].astype(np.int64)
        key[:first] += int(fh * fw)
        key[in_change] += 2 * int(fh * fw)
        order = np.argsort(-key, kind="stable")
        order = order[np.maximum(stats[order, cv2.CC_STAT_WIDTH], stats[order, cv2.CC_STAT_HEIGHT])
                      <= ZOOM_MAX_SIDE * ratio]  # fmt: skip
        px, py, in_change = cx[order], cy[order], in_change[order]
        free = np.ones(order.size, bool)
        for zoom in self._zooms:  # a candidate in a window keeps the first window it lies in
            inside = free & _inside_all(px, py, zoom.box)
            if inside.any():
                zoom.seen = pts
                free &= ~inside
        if (len(self._zooms) < ZOOMS_MAX or (free & in_change).any()) and free.any() and self._dismissed:
            for dismissed in self._dismissed:  # a dismissed place that looks the same opens nothing
                inside = free & _inside_all(px, py, dismissed.box)
                if inside.any() and _same_look(grey, dismissed):
                    free &= ~inside
        opened: list[_Zoom] = []
        before = self._fine_before
        if before is not None and (before[1].shape != fine.shape or not 0 < pts - before[0] <= MAX_LAG_S):
            before = None
        for i in np.flatnonzero(free):
            if any(_inside(float(px[i]), float(py[i]), z.box) for z in opened):
                continue
            full = len(self._zooms) >= ZOOMS_MAX
            if full and not (in_change[i] and self._take_over(grey, changing, ratio)):
                break
            bw, bh = (int(v) for v in stats[order[i], 2:4])
            side = min(max(ZOOM_MIN_SIDE, ZOOM_CONTEXT * max(bw, bh)), fw, fh)
            x0 = int(min(max(0, px[i] - side / 2), fw - side))
            y0 = int(min(max(0, py[i] - side / 2), fh - side))
            box = (x0, y0, x0 + side, y0 + side)
            zoom = _Zoom(box, _Analysis(self._cfg, judge_smears=False), pts, pts)
            if before is not None:
                # The window starts from the previous call's picture too: its first comparison is
                # made now, as if it had been open a frame earlier.
                old = np.ascontiguousarray(before[1][y0 : y0 + side, x0 : x0 + side])
                zoom.analysis.step(old, before[0], _window_masks(old))
            opened.append(zoom)
            self._zooms.append(zoom)
        out: list[Detection] = []
        keep: list[_Zoom] = []
        for zoom in self._zooms:
            x0, y0, x1, y1 = zoom.box
            crop = np.ascontiguousarray(fine[y0:y1, x0:x1])
            step = zoom.analysis.step(crop, pts, _window_masks(crop, colour[y0:y1, x0:x1]))
            evidence = zoom.analysis.peak_evidence >= WATCH_KEEP_EVIDENCE
            zoom.proved = zoom.proved or evidence
            if not zoom.proved and pts - zoom.since > ZOOM_TRIAL_S:
                self._dismissed.append(_Dismissed(zoom.box, grey.crop(zoom.box)))
            elif evidence or pts - zoom.seen <= ZOOM_KEEP_S:
                keep.append(zoom)
            for d in zoom.analysis.regions(step.colour, fine_scale, (x0 * fine_scale, y0 * fine_scale),
                                           frame_area / fine_scale**2):  # fmt: skip
                cx, cy = (d.box[0] + d.box[2]) / 2, (d.box[1] + d.box[3]) / 2
                if not any(_inside(cx, cy, f.box) for f in found):
                    out.append(d)
        self._zooms = keep
        return out

    def _take_over(self, grey: _LazyGrey, changing: np.ndarray | None, ratio: float) -> bool:
        """Free a window for a changing candidate (see ``CHANGING_EVENTS``): the oldest one that never
        showed evidence and in which nothing changes now is dismissed with its look, as at the end of
        its trial. False when there is none."""
        if changing is None:
            return False
        victims = [z for z in self._zooms if not z.proved and not _any_in(changing, z.box, ratio)]
        if not victims:
            return False
        victim = min(victims, key=lambda z: z.since)
        self._dismissed.append(_Dismissed(victim.box, grey.crop(victim.box)))
        self._zooms.remove(victim)
        return True


def _any_in(mask: np.ndarray, box: tuple[int, int, int, int], ratio: float) -> bool:
    """Any of `mask` (bool, at 1/`ratio` of the box's scale) inside `box` (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = box
    return bool(mask[int(y0 / ratio) : math.ceil(y1 / ratio), int(x0 / ratio) : math.ceil(x1 / ratio)].any())


def _at(mask: np.ndarray | None, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """`mask` (bool) at the points (x, y) of its own scale; all False without a mask."""
    if mask is None or x.size == 0:
        return np.zeros(x.shape, bool)
    h, w = mask.shape
    return mask[np.clip(y.astype(np.int64), 0, h - 1), np.clip(x.astype(np.int64), 0, w - 1)]


def _window_masks(crop: np.ndarray, colour: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """`_masks` of a zoom window or a look (see ``ZOOM_R_MIN``: no core asked for); `colour`: the
    crop's fire colour when the caller has it already."""
    if colour is None:
        colour, _ = _masks(crop)
    return colour, (colour > 0) & (crop[..., 2] >= ZOOM_R_MIN)


def _open_at_smoke(opener: np.ndarray, colour: np.ndarray, hints: Sequence[Box], fine_scale: float) -> None:
    """Mark, in `opener`, the fire-coloured pixels at the base of each smoke region (its lowest
    ``SMOKE_BASE_SHARE``, widened by half): a plume rises from its fire, so a small flame there is
    worth a zoom window before it shows a core."""
    fh, fw = opener.shape
    for x1, y1, x2, y2 in hints:
        w, h = (x2 - x1) / fine_scale, (y2 - y1) / fine_scale
        cx = (x1 + x2) / 2 / fine_scale
        bx0, bx1 = int(max(0, cx - w * 0.75)), int(min(fw, cx + w * 0.75))
        by0 = int(max(0, y2 / fine_scale - h * SMOKE_BASE_SHARE))
        by1 = int(min(fh, y2 / fine_scale + h * SMOKE_BASE_SHARE))
        if bx1 > bx0 and by1 > by0:
            opener[by0:by1, bx0:bx1] |= colour[by0:by1, bx0:bx1] > 0


def _held(look: _Verification, pts: float) -> bool:
    """The look has run ``VERIFY_HOLD_S`` and its evidence held on ``VERIFY_SHARE`` of those calls."""
    if pts - look.since < VERIFY_HOLD_S or not look.held:
        return False
    return sum(held for _, held in look.held) >= VERIFY_SHARE * len(look.held)


def _periodic(series: deque[tuple[float, float]]) -> bool:
    """True when a brightness signal repeats itself (see ``PERIODIC_CORRELATION``)."""
    if len(series) < 8 or series[-1][0] - series[0][0] < VERIFY_SERIES_S * 0.75:
        return False
    t = np.fromiter((p for p, _ in series), np.float64)
    v = np.fromiter((m for _, m in series), np.float64)
    grid = np.arange(t[0], t[-1], PERIODIC_STEP_S)
    x = np.interp(grid, t, v)
    x -= np.polyval(np.polyfit(grid - grid[0], x, 1), grid - grid[0])
    energy = float(np.dot(x, x))
    if energy <= 1e-6 * len(x):
        return False  # no change at all: nothing that repeats
    lags = range(max(1, round(PERIODIC_MIN_LAG_S / PERIODIC_STEP_S)), len(x) // PERIODIC_REPEATS + 1)
    best = max((float(np.dot(x[:-k], x[k:])) / energy * len(x) / (len(x) - k) for k in lags), default=0.0)
    return best >= PERIODIC_CORRELATION


class _LazyGrey:
    """The grey version of the fine image, converted only where a crop of it is asked for."""

    def __init__(self, fine: np.ndarray) -> None:
        self._fine = fine

    def crop(self, box: tuple[int, int, int, int]) -> np.ndarray:
        x0, y0, x1, y1 = box
        return cv2.cvtColor(np.ascontiguousarray(self._fine[y0:y1, x0:x1]), cv2.COLOR_BGR2GRAY)


def _same_look(grey: _LazyGrey, dismissed: _Dismissed) -> bool:
    """True when the fine grey image still looks, inside a dismissed window, as it did then."""
    crop = grey.crop(dismissed.box)
    if crop.shape != dismissed.grey.shape:
        return False
    return cv2.countNonZero(cv2.threshold(cv2.absdiff(crop, dismissed.grey), STILL_PIXEL_CHANGE, 1,
                                          cv2.THRESH_BINARY)[1]) < STILL_MIN_CHANGED  # fmt: skip


def _inside(x: float, y: float, box: tuple[float, float, float, float]) -> bool:
    return box[0] <= x <= box[2] and box[1] <= y <= box[3]


def _inside_all(x: np.ndarray, y: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    """`_inside` for arrays of points."""
    return (box[0] <= x) & (x <= box[2]) & (box[1] <= y) & (y <= box[3])


def _specks(mask: np.ndarray) -> np.ndarray:
    """Stats rows (x, y, w, h, area; OpenCV's order) of the specks of a bool mask, pixels closer than
    ``REGION_JOIN`` joined, in mask coordinates. Labelled only inside the box that holds the mask's
    pixels (with the join's margin): the same specks as over the whole mask, at a fraction of the
    cost when they cover a corner of it."""
    if not mask.any():
        return np.zeros((0, 5), np.int32)
    h, w = mask.shape
    m = REGION_JOIN // 2 + 1
    bx, by, bw, bh = cv2.boundingRect(mask.view(np.uint8))
    x0, y0 = max(0, bx - m), max(0, by - m)
    joined = cv2.dilate(mask[y0 : min(h, by + bh + m), x0 : min(w, bx + bw + m)].view(np.uint8), _K_JOIN)
    # 16-bit labels (when they cannot run out) are the same labels, found three times faster.
    ltype = cv2.CV_16U if cv2.countNonZero(joined) < 65535 else cv2.CV_32S
    _, _, stats, _ = cv2.connectedComponentsWithStats(joined, ltype=ltype)
    stats = stats[1:]
    stats[:, 0] += x0
    stats[:, 1] += y0
    return stats


def _pool(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A fine bool mask shrunk to `size` (w, h): True where any fine pixel of the block is."""
    if mask.shape[1] == size[0] and mask.shape[0] == size[1]:
        return mask
    f = mask.shape[1] // size[0]
    if mask.shape[1] == f * size[0] and mask.shape[0] == f * size[1]:
        # Whole blocks: the maximum over each is a dilation sampled once per block (3x faster).
        a = f // 2
        return cv2.dilate(mask.view(np.uint8), np.ones((f, f), np.uint8))[a::f, a::f] > 0
    return cv2.resize(mask.astype(np.uint8) * 255, size, interpolation=cv2.INTER_AREA) > 0


def _fine(image: np.ndarray, shrinks: Shrinks | None = None) -> tuple[np.ndarray, float]:
    """The image for the small-candidate search (about ``ZOOM_WIDTH`` wide) and its scale factor."""
    factor = max(1, round(image.shape[1] / ZOOM_WIDTH))
    return _shrinks_of(image, shrinks).by(factor), float(factor)


def _shrink(image: np.ndarray, shrinks: Shrinks | None = None) -> np.ndarray:
    """Downscale by the integer factor that gets closest to ``WORK_WIDTH`` (area averaging);
    `shrinks`: `Shrinks` of `image` when the caller shares them."""
    return _shrinks_of(image, shrinks).by(max(1, round(image.shape[1] / WORK_WIDTH)))


def _shrinks_of(image: np.ndarray, shrinks: Shrinks | None) -> Shrinks:
    """`shrinks` when they are `image`'s, new ones otherwise."""
    return shrinks if shrinks is not None and shrinks.image is image else Shrinks(image)

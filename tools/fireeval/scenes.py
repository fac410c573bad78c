"""Made test sequences for the fire detector, built from the real footage in ../shared/data.

Licensed fire footage is scarce, so the hard cases of issue 8 are composed from the clips we have:
look-alikes (emergency lights, sea glitter at sunset, a runner's silhouette against a warm sky, a
swaying orange object, a still lamp) where no fire is anywhere, and slow onsets where a small real
flame, cut frame by frame from a fire clip so that it flickers for real, appears after a few quiet
seconds in a quiet real scene (alone, beside a car, after a flash, under a black smoke column).

Every scene is deterministic (seeded; the same frames on every run and machine) and lazy: frames are
made one at a time from a few cached source pieces, so memory stays bounded. Each kind has a "tune"
variant and a "check" variant on other footage, background, size, seed and timing, so a detector tuned
on the tune split is checked on sequences it was not tuned on.

``Scene.frames(fire=False)`` makes the same sequence without the fire (flame and its smoke): its frames
equal the real ones before ``first_flame`` and differ from it on, which the tests use to check that the
stated first flame is the first frame that shows one.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from tools.fireeval import DATA

LOOKALIKE_KINDS = (
    "flashing_lights",
    "sea_reflections",
    "silhouette_sunset",
    "swaying_orange",
    "still_yellow",
)
ONSET_KINDS = ("small_flame", "flame_under_vehicle", "flash_then_flame", "flame_under_smoke")
KINDS = LOOKALIKE_KINDS + ONSET_KINDS

Frames = Iterator[np.ndarray]


@dataclass(frozen=True)
class Scene:
    name: str
    kind: str
    split: str
    """"tune" or "check"."""
    fps: float
    count: int
    """Frames in the sequence."""
    make: Callable[[bool], Frames]
    """make(fire) yields the BGR uint8 frames; fire=False leaves out the flame and its smoke."""
    first_flame: int | None
    """Index of the first frame showing a flame; None for a look-alike."""
    ambiguous: bool
    description: str
    remake: Callable[[int], Scene] | None = field(default=None, compare=False, repr=False)
    """remake(k): its k-th variant (see `variant`); None for a variant itself."""

    def frames(self, fire: bool = True) -> Frames:
        return self.make(fire)

    @property
    def still(self) -> bool:
        return False  # a camera watching a scene, not a picture source


# -- sources (decoded once per process, only the pieces used) -------------------------------------


def _path(data: Path, rel: str) -> str:
    path = data / rel
    if not path.exists():
        raise FileNotFoundError(f"shared test media missing: {path}")
    return str(path)


def read_frames(path: str, start: int = 0, stop: int | None = None) -> Iterator[np.ndarray]:
    """BGR frames [start, stop) of a video or GIF; GIFs fall back to Pillow when OpenCV cannot read them."""
    cap = cv2.VideoCapture(path)
    ok, frame = cap.read() if cap.isOpened() else (False, None)
    if not ok:
        cap.release()
        if not path.lower().endswith(".gif"):
            raise OSError(f"OpenCV cannot read {path}")
        from PIL import Image, ImageSequence

        with Image.open(path) as im:
            for index, page in enumerate(ImageSequence.Iterator(im)):
                if stop is not None and index >= stop:
                    break
                if index >= start:
                    yield cv2.cvtColor(np.asarray(page.convert("RGB")), cv2.COLOR_RGB2BGR)
        return
    index = 0
    try:
        while ok and (stop is None or index < stop):
            if index >= start:
                yield frame
            ok, frame = cap.read()
            index += 1
    finally:
        cap.release()


@functools.lru_cache(maxsize=16)
def _clip(data: Path, rel: str, start: int, stop: int, step: int = 1) -> tuple[np.ndarray, ...]:
    frames = tuple(f for i, f in enumerate(read_frames(_path(data, rel), start, stop)) if i % step == 0)
    if not frames:
        raise OSError(f"no frames {start}-{stop} in {rel}")
    for f in frames:
        f.setflags(write=False)
    return frames


@functools.lru_cache(maxsize=8)
def _image(data: Path, rel: str) -> np.ndarray:
    image = cv2.imread(_path(data, rel), cv2.IMREAD_COLOR)
    if image is None:
        raise OSError(f"cannot read {rel}")
    image.setflags(write=False)
    return image


@functools.lru_cache(maxsize=8)
def _empty_background(data: Path, rel: str, start: int, stop: int) -> np.ndarray:
    """Median of a stretch with nothing moving: the empty scene that moving things are cut against."""
    return np.median(np.stack(_clip(data, rel, start, stop, 5)), axis=0).astype(np.uint8)


def _cutout(
    frame: np.ndarray, empty: np.ndarray, threshold: int = 35
) -> tuple[np.ndarray, np.ndarray] | None:
    """(crop, soft alpha) of the largest thing in `frame` that is not in `empty`."""
    diff = cv2.absdiff(frame, empty).max(axis=2)
    mask = (diff > threshold).astype(np.uint8)
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, np.ones((9, 9), np.uint8))
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask)
    if count < 2:
        return None
    best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    x, y, w, h, area = (int(v) for v in stats[best])
    if area < 400:
        return None
    alpha = (labels[y : y + h, x : x + w] == best).astype(np.float32)
    alpha = cv2.GaussianBlur(alpha, (5, 5), 0)
    return frame[y : y + h, x : x + w].copy(), alpha


@functools.lru_cache(maxsize=4)
def _people(data: Path, start: int, stop: int, step: int) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """Person cut-outs (crop, alpha) from the one-by-one clip, one per `step` frames: limbs move."""
    rel = "people/intel_one-by-one-person-detection.mp4"
    empty = _empty_background(data, rel, 0, 60)
    cuts = []
    for i, frame in enumerate(read_frames(_path(data, rel), start, stop)):
        if i % step:
            continue
        cut = _cutout(frame, empty)
        if cut is not None and cut[1].shape[0] > 120:  # a whole body, not a head entering the frame
            cuts.append(cut)
    if not cuts:
        raise OSError("no person found in the one-by-one clip")
    return tuple(cuts)


@functools.lru_cache(maxsize=2)
def _car(data: Path) -> tuple[np.ndarray, np.ndarray]:
    """The red car of the car clip (frame 215), darkened to a dark car body, with its alpha."""
    rel = "non_fire_lookalike/intel_car-detection.mp4"
    empty = _empty_background(data, rel, 0, 50)
    frame = _clip(data, rel, 215, 216)[0]
    x1, y1, x2, y2 = 300, 40, 475, 300  # the red car; the silver one beside it stays out
    crop = frame[y1:y2, x1:x2].copy()
    _b, g, r = (c.astype(np.int16) for c in cv2.split(crop))
    mask = ((r - g > 35) | (cv2.absdiff(crop, empty[y1:y2, x1:x2]).max(axis=2) > 60)).astype(np.uint8)
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, np.ones((15, 15), np.uint8))
    _count, labels, stats, _ = cv2.connectedComponentsWithStats(mask)
    best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    contours, _ = cv2.findContours(
        (labels == best).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
    )
    filled = np.zeros(mask.shape, np.uint8)
    cv2.drawContours(filled, contours, -1, 1, cv2.FILLED)
    x, y, w, h = cv2.boundingRect(filled)
    crop, alpha = (
        crop[y : y + h, x : x + w],
        cv2.GaussianBlur(filled[y : y + h, x : x + w].astype(np.float32), (5, 5), 0),
    )
    dark = (crop.astype(np.float32) * np.array([0.35, 0.35, 0.22], np.float32)).astype(np.uint8)
    return dark, alpha


def flame_alpha(crop: np.ndarray) -> np.ndarray:
    """Soft flame mask from flame colour: bright red-orange-yellow far above blue (the pink wall of
    house6 and the dry grass of fdv stay out)."""
    b, _, r = (c.astype(np.float32) for c in cv2.split(crop))
    a = np.clip((r - b - 80) / 40, 0, 1) * np.clip((r - 160) / 40, 0, 1)
    return cv2.GaussianBlur(a, (3, 3), 0)


MIN_FLAME_PIXELS = 10
"""Pixels of a flame crop (flame alpha over 0.5) that show flame; fewer: the flame has left the piece."""


@functools.lru_cache(maxsize=8)
def _flames(
    data: Path, rel: str, rect: tuple[int, int, int, int], start: int, count: int, step: int
) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """(crop, alpha) of one flame region, frame by frame from a fire clip (real flicker): `count` crops,
    one every `step` frames from `start`, of those that show flame (``MIN_FLAME_PIXELS``).

    A fire clip's flames move on: a fixed piece of the fdv grass-fire front holds no flame at all for
    whole stretches (FDV_TONGUE holds none on most of frames 126-180), so the pasted flame went out
    while the scene's ground truth said it burned. Crops without flame are skipped, and when
    the clip ends first, the flame's crops are played back and forth."""
    x, y, w, h = rect
    out = []
    for i, frame in enumerate(read_frames(_path(data, rel), start)):
        if i % step:
            continue
        crop = frame[y : y + h, x : x + w].copy()
        alpha = flame_alpha(crop)
        if np.count_nonzero(alpha > 0.5) >= MIN_FLAME_PIXELS:
            out.append((crop, alpha))
            if len(out) == count:
                break
    if not out:
        raise OSError(f"no flame in {rect} of {rel} from frame {start}")
    return tuple(out[_pingpong(len(out), i)] for i in range(count))


HOUSE6 = "fire/furg_house6.mp4"
FDV = "fire/fdv_visual_fire.mp4"
HOUSE6_WINDOW = (176, 86, 21, 24)
"""The first-floor window flame of house6 (inside annotation [171, 81, 29, 38] of frames 50-200)."""
FDV_TONGUE = (152, 116, 40, 50)
FDV_TONGUE_2 = (12, 138, 40, 50)
"""Pieces of the fdv grass-fire front where flame is most often seen (frames 60-330)."""


def _house_flame(data: Path, rect: tuple[int, int, int, int], fps: float, n: int, start: int = 100):
    step = max(1, round(29.97 / fps))
    return _flames(data, HOUSE6, rect, start, n, step)


def _fdv_flame(data: Path, rect: tuple[int, int, int, int], fps: float, n: int, start: int = 60):
    step = max(1, round(30.0 / fps))
    return _flames(data, FDV, rect, start, n, step)


def _flame_start(flame: dict[str, Any]) -> int:
    """The frame of its fire clip a made flame starts from (house6 100, fdv 60 unless it says)."""
    return flame.get("start", 100 if flame["clip"] == "house6" else 60)


# -- compositing ------------------------------------------------------------------------------------


def _rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, index])


def _pingpong(n: int, i: int) -> int:
    if n == 1:
        return 0
    period = 2 * (n - 1)
    k = i % period
    return k if k < n else period - k


NOISE_BANK = 8
"""Sensor-noise fields made per (seed, size); frame i takes one of them, shifted: cheap and seeded."""


@functools.lru_cache(maxsize=16)
def _noise_bank(seed: int, shape: tuple[int, ...], sigma: float) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    return tuple(np.round(rng.normal(0.0, sigma, shape)).astype(np.int16) for _ in range(NOISE_BANK))


def _noise(seed: int, index: int, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    field = _noise_bank(seed, shape, sigma)[index % NOISE_BANK]
    k = index // NOISE_BANK
    return np.roll(field, (7 * k, 13 * k), axis=(0, 1)) if k else field


def _noisy(image: np.ndarray, seed: int, index: int, sigma: float) -> np.ndarray:
    return np.clip(image.astype(np.int16) + _noise(seed, index, image.shape, sigma), 0, 255).astype(np.uint8)


def _fit(image: np.ndarray, size: tuple[int, int], box: tuple[float, float, float, float]) -> np.ndarray:
    """Crop `box` (relative x1, y1, x2, y2) of `image` and resize it to `size` (w, h)."""
    h, w = image.shape[:2]
    x1, y1, x2, y2 = box
    crop = image[int(y1 * h) : int(y2 * h), int(x1 * w) : int(x2 * w)]
    return cv2.resize(crop, size, interpolation=cv2.INTER_AREA)


def paste(
    frame: np.ndarray,
    crop: np.ndarray,
    alpha: np.ndarray,
    centre_x: float,
    bottom_y: float,
    height: float,
    colour: tuple[float, float, float] | None = None,
) -> None:
    """Alpha-blend `crop` scaled to `height` px with its bottom centre at (centre_x, bottom_y), in place.
    With `colour`, paint that flat colour through the alpha instead (a silhouette)."""
    scale = height / crop.shape[0]
    w = max(1, round(crop.shape[1] * scale))
    h = max(1, round(height))
    x1, y1 = round(centre_x - w / 2), round(bottom_y - h)
    fx1, fy1 = max(0, x1), max(0, y1)
    fx2, fy2 = min(frame.shape[1], x1 + w), min(frame.shape[0], y1 + h)
    if fx1 >= fx2 or fy1 >= fy2:
        return
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    a = cv2.resize(alpha, (w, h), interpolation=interp)[fy1 - y1 : fy2 - y1, fx1 - x1 : fx2 - x1, None]
    roi = frame[fy1:fy2, fx1:fx2].astype(np.float32)
    if colour is None:
        top = cv2.resize(crop, (w, h), interpolation=interp)[fy1 - y1 : fy2 - y1, fx1 - x1 : fx2 - x1]
        top = top.astype(np.float32)
    else:
        top = np.array(colour, np.float32)
    frame[fy1:fy2, fx1:fx2] = np.clip(roi * (1 - a) + top * a, 0, 255).astype(np.uint8)


def _glow(radius: float, colour: tuple[float, float, float], core: float) -> np.ndarray:
    """Additive light patch (float32 HxWx3, 0-255 scale): a saturated core with a wide bloom."""
    r = math.ceil(radius * 3)
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1].astype(np.float32)
    d2 = (xx * xx + yy * yy) / (radius * radius)
    bloom = np.exp(-d2 / 2)[..., None] * np.array(colour, np.float32)
    hot = (d2 <= (core / radius) ** 2).astype(np.float32)
    hot = cv2.GaussianBlur(hot, (0, 0), max(0.8, core / 4))[..., None] * 255.0
    return bloom + hot


def _add(frame: np.ndarray, patch: np.ndarray, cx: float, cy: float, gain: float) -> None:
    if gain <= 0:
        return
    ph, pw = patch.shape[:2]
    x1, y1 = round(cx) - pw // 2, round(cy) - ph // 2
    fx1, fy1 = max(0, x1), max(0, y1)
    fx2, fy2 = min(frame.shape[1], x1 + pw), min(frame.shape[0], y1 + ph)
    if fx1 >= fx2 or fy1 >= fy2:
        return
    roi = frame[fy1:fy2, fx1:fx2].astype(np.float32)
    roi += gain * patch[fy1 - y1 : fy2 - y1, fx1 - x1 : fx2 - x1]
    frame[fy1:fy2, fx1:fx2] = np.clip(roi, 0, 255).astype(np.uint8)


def _night(image: np.ndarray, seed: int, index: int) -> np.ndarray:
    """Day footage made night: gamma, low gain, blue tint, sensor noise."""
    f = (image.astype(np.float32) / 255.0) ** 2.0 * 255.0 * 0.45
    f *= np.array([1.3, 0.9, 0.7], np.float32)
    f += _noise(seed, index, f.shape, 3.0)
    return np.clip(f, 0, 255).astype(np.uint8)


@functools.lru_cache(maxsize=8)
def _noise_texture(seed: int, h: int, w: int, cell_y: int, cell_x: int) -> np.ndarray:
    """Smooth random texture in [0, 1] (cubic-upsampled random cells; anisotropic cells make streaks)."""
    rng = np.random.default_rng(seed)
    small = rng.random((h // cell_y + 4, w // cell_x + 4)).astype(np.float32)
    big = cv2.resize(
        small, ((w // cell_x + 4) * cell_x, (h // cell_y + 4) * cell_y), interpolation=cv2.INTER_CUBIC
    )
    return np.clip(big[:h, :w], 0, 1)


def _roll_sample(texture: np.ndarray, dx: float, dy: float, h: int, w: int) -> np.ndarray:
    """An h x w window of a wrapping texture, shifted by (dx, dy) with sub-pixel accuracy."""
    th, tw = texture.shape
    m = np.float32([[1, 0, dx % tw], [0, 1, dy % th]])
    tiled = np.tile(texture, (2, 2))
    return cv2.warpAffine(tiled, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)


# -- look-alikes ------------------------------------------------------------------------------------


def _flashing_lights(
    data: Path,
    fire: bool,
    *,
    source: str,
    span: tuple[int, int],
    n: int,
    seed: int,
    fps: float,
    lights: list[dict],
) -> Frames:
    """Red and blue emergency lights over a street made night. Each light: x, y, colour, radius,
    period (s), on-windows within the period (fractions), or a rotating beacon (`beacon`: Hz)."""
    frames = _clip(data, source, span[0], span[1])
    patches = [_glow(lt["radius"], lt["colour"], lt["core"]) for lt in lights]
    for i in range(n):
        frame = _night(frames[_pingpong(len(frames), i)], seed, i)
        t = i / fps
        for lt, patch in zip(lights, patches, strict=True):
            if "beacon" in lt:
                gain = max(0.0, math.cos(2 * math.pi * lt["beacon"] * t + lt.get("phase", 0.0))) ** 6
            else:
                phase = (t / lt["period"] + lt.get("phase", 0.0)) % 1.0
                gain = 1.0 if any(a <= phase < b for a, b in lt["on"]) else 0.0
            _add(frame, patch, lt["x"], lt["y"], gain)
        yield frame


def _sea_reflections(
    data: Path,
    fire: bool,
    *,
    size: tuple[int, int],
    sky: tuple[float, float, float, float],
    n: int,
    seed: int,
    fps: float,
    drift: float,
    water: float,
) -> Frames:
    """The sunset sky above a water band: a dim mirrored sky with orange-yellow glitter streaks that
    drift sideways and break up (two advected noise layers)."""
    w, h = size
    horizon = round(h * (1 - water))
    top = _fit(_image(data, "non_fire_lookalike/sunset_udaipur.jpg"), (w, horizon), sky)
    grey = cv2.GaussianBlur(cv2.cvtColor(top, cv2.COLOR_BGR2GRAY), (0, 0), 9)
    _, _, _, (sun_x, _) = cv2.minMaxLoc(grey)
    bright = top.reshape(-1, 3)[np.argsort(grey.ravel())[-grey.size // 10 :]].astype(np.float32).mean(axis=0)
    glint = bright * (255.0 / max(1.0, float(bright.max())))  # the sun's hue at full brightness
    wh = h - horizon
    mirror = cv2.resize(top[::-1][: max(8, wh // 2)], (w, wh)).astype(np.float32) * np.float32(0.4)
    mirror *= np.array([1.1, 0.95, 0.9], np.float32)
    streaks = _noise_texture(seed, wh * 2, w * 2, 2, 20)
    chop = _noise_texture(seed + 1, wh * 2, w * 2, 4, 8)
    cols = np.arange(w, dtype=np.float32)
    near_sun = np.exp(-(((cols - sun_x) / (0.22 * w)) ** 2))[None, :] * 0.8 + 0.2
    depth = np.linspace(0.5, 1.0, wh, dtype=np.float32)[:, None]
    for i in range(n):
        t = i / fps
        a = _roll_sample(streaks, drift * t * w, 0.15 * wh * math.sin(0.7 * t), wh, w)
        b = _roll_sample(chop, -0.6 * drift * t * w, 0.3 * wh * t, wh, w)
        glitter = np.clip((a * b - 0.42) / 0.1, 0, 1) * near_sun * depth
        sea = mirror * (1 - glitter[..., None]) + glint * glitter[..., None]
        sea += _noise(seed, i, sea.shape, 2.0)
        yield np.concatenate([_noisy(top, seed + 7, i, 1.5), np.clip(sea, 0, 255).astype(np.uint8)], axis=0)


def _silhouette_sunset(
    data: Path,
    fire: bool,
    *,
    size: tuple[int, int],
    sky: tuple[float, float, float, float],
    n: int,
    seed: int,
    fps: float,
    people: tuple[int, int],
    height: float,
    cross_s: float,
    leftwards: bool,
    start_s: float,
) -> Frames:
    """A dark runner's silhouette (real person cut-outs, limbs moving) crossing a warm sunset sky."""
    w, h = size
    sky_img = _fit(_image(data, "non_fire_lookalike/sunset_udaipur.jpg"), (w, h), sky)
    cuts = _people(data, people[0], people[1], 2)
    tall = height * h
    span = w + tall
    for i in range(n):
        frame = _noisy(sky_img, seed, i, 1.5)
        t = i / fps - start_s
        if t >= 0:
            progress = (t % (cross_s * 1.5)) / cross_s
            if progress <= 1:
                x = -tall / 2 + progress * span
                if leftwards:
                    x = w - x
                crop, alpha = cuts[i % len(cuts)]
                if leftwards:
                    crop, alpha = crop[:, ::-1], alpha[:, ::-1]
                bob = 0.02 * tall * abs(math.sin(2 * math.pi * 1.5 * t))
                paste(frame, crop, alpha, x, h * 0.97 - bob, tall, colour=(22, 16, 26))
        yield frame


def _balloon(radius: int, colour: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A shaded balloon sprite (crop, alpha) with a specular highlight."""
    rx, ry = radius, round(radius * 1.2)
    yy, xx = np.mgrid[-ry : ry + 1, -rx : rx + 1].astype(np.float32)
    d = (xx / rx) ** 2 + (yy / ry) ** 2
    alpha = cv2.GaussianBlur((d <= 1).astype(np.float32), (3, 3), 0)
    light = np.clip(
        1.05 - 0.55 * np.sqrt(((xx + 0.35 * rx) / rx) ** 2 + ((yy + 0.4 * ry) / ry) ** 2), 0.25, 1
    )
    body = np.array(colour, np.float32) * light[..., None]
    spec = np.exp(-(((xx + 0.35 * rx) / (0.15 * rx)) ** 2 + ((yy + 0.45 * ry) / (0.12 * ry)) ** 2))
    body = body * (1 - spec[..., None]) + 255 * spec[..., None]
    return np.clip(body, 0, 255).astype(np.uint8), alpha


@functools.lru_cache(maxsize=2)
def _real_orange(data: Path) -> tuple[np.ndarray, np.ndarray]:
    """The orange of the fruit GIF (frame 90), cut by its colour."""
    frame = _clip(data, "non_fire_lookalike/intel_fruit-and-vegetable-detection.gif", 90, 91)[0]
    b, _g, r = (c.astype(np.int16) for c in cv2.split(frame))
    mask = ((r > 150) & (r - b > 70)).astype(np.uint8)
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, np.ones((7, 7), np.uint8))
    _count, labels, stats, _ = cv2.connectedComponentsWithStats(mask)
    best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    x, y, w, h = (int(v) for v in stats[best, :4])
    alpha = cv2.GaussianBlur((labels[y : y + h, x : x + w] == best).astype(np.float32), (3, 3), 0)
    return frame[y : y + h, x : x + w].copy(), alpha


def _swaying_orange(
    data: Path,
    fire: bool,
    *,
    size: tuple[int, int],
    backdrop: str,
    n: int,
    seed: int,
    fps: float,
    objects: list[dict],
    real: bool,
) -> Frames:
    """Rigid orange objects hanging on strings and swinging like pendulums in front of a real backdrop."""
    w, h = size
    if backdrop.endswith(".gif") or backdrop.endswith(".mp4"):
        back = [cv2.resize(f, (w, h)) for f in _clip(data, backdrop, 0, 1000)]
    else:
        back = [_fit(_image(data, backdrop), (w, h), (0, 0, 1, 1))]
    sprites = [_real_orange(data) if real else _balloon(ob["radius"], (20, 110, 250)) for ob in objects]
    for i in range(n):
        frame = _noisy(back[_pingpong(len(back), i)], seed, i, 1.5)
        t = i / fps
        for ob, (crop, alpha) in zip(objects, sprites, strict=True):
            theta = ob["amplitude"] * math.sin(2 * math.pi * ob["hz"] * t + ob.get("phase", 0.0))
            px, py, length = ob["x"] * w, 0.0, ob["length"] * h
            cx, cy = px + length * math.sin(theta), py + length * math.cos(theta)
            size_px = 2 * ob["radius"] * 1.2
            cv2.line(
                frame, (round(px), 0), (round(cx), round(cy - size_px / 2)), (200, 200, 200), 1, cv2.LINE_AA
            )
            paste(frame, crop, alpha, cx, cy + size_px / 2, size_px)
        yield frame


def _still_yellow(
    data: Path,
    fire: bool,
    *,
    backdrop: str,
    span: tuple[int, int] | None,
    n: int,
    seed: int,
    fps: float,
    lamp: dict,
) -> Frames:
    """A still scene (real camera frames or a still with sensor noise) with a still bright lamp in it."""
    back = list(_clip(data, backdrop, span[0], span[1])) if span is not None else [_image(data, backdrop)]
    patch = _glow(lamp["radius"], lamp["colour"], lamp["core"])
    for i in range(n):
        frame = back[_pingpong(len(back), i)]
        frame = _noisy(frame, seed, i, 2.0) if span is None else frame.copy()
        _add(frame, patch, lamp["x"], lamp["y"], 1.0)
        yield frame


# -- slow onsets ------------------------------------------------------------------------------------


def _quiet(
    data: Path,
    backdrop: str,
    span: tuple[int, int] | None,
    size: tuple[int, int] | None,
    box: tuple[float, float, float, float] = (0, 0, 1, 1),
) -> list[np.ndarray]:
    if span is not None:
        frames = list(_clip(data, backdrop, span[0], span[1]))
        return frames if size is None else [cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames]
    image = _image(data, backdrop)
    return [_fit(image, size or (image.shape[1], image.shape[0]), box)]


def _grow(i: int, first: int, n: int, h0: float, h1: float) -> float:
    return h0 + (h1 - h0) * min(1.0, (i - first) / max(1, n - first))


def _onset(
    data: Path,
    fire: bool,
    *,
    backdrop: str,
    span: tuple[int, int] | None,
    size: tuple[int, int] | None,
    box: tuple[float, float, float, float] = (0, 0, 1, 1),
    n: int,
    seed: int,
    fps: float,
    first: int,
    flames: list[dict],
    car: dict | None = None,
    flash: dict | None = None,
    plume: dict | None = None,
    noise: float = 2.0,
) -> Frames:
    """A quiet real scene; from frame `first` on, small real flames (each from a fire clip, frame by
    frame) growing slowly; optionally a dark car occluding their top, a flash just before, or a black
    smoke column rising from them."""
    back = _quiet(data, backdrop, span, size, box)
    sources = []
    for fl in flames:
        grab = _house_flame if fl["clip"] == "house6" else _fdv_flame
        sources.append(grab(data, fl["rect"], fps, n - first + 1, _flame_start(fl)))
    car_sprite = _car(data) if car is not None else None
    if car_sprite is not None and car is not None and car.get("rotate"):
        car_sprite = (
            np.ascontiguousarray(np.rot90(car_sprite[0])),
            np.ascontiguousarray(np.rot90(car_sprite[1])),
        )
    bloom = _glow(flash["radius"], (170, 230, 255), flash["radius"] * 0.35) if flash is not None else None
    if plume is not None:
        h = back[0].shape[0]
        texture = _noise_texture(seed + 3, 2 * h, plume["width"] * 4, 12, 12)
    for i in range(n):
        frame = back[_pingpong(len(back), i)]
        frame = _noisy(frame, seed, i, noise) if span is None else frame.copy()
        burning = fire and i >= first
        if burning and plume is not None:
            _smoke_column(frame, plume, texture, (i - first) / fps)
        if burning:
            for fl, src in zip(flames, sources, strict=True):
                crop, alpha = src[(i - first) % len(src)]
                height = _grow(i, first, n, fl["h0"], fl["h1"])
                paste(frame, crop, alpha, fl["x"], fl["y"], height)
        if car_sprite is not None and car is not None:
            paste(frame, car_sprite[0], car_sprite[1], car["x"], car["y"], car["height"])
        if flash is not None and bloom is not None:
            k = i - flash["at"]
            if 0 <= k < len(flash["gains"]):
                frame[:] = np.clip(frame.astype(np.float32) * (1 + 0.4 * flash["gains"][k]), 0, 255).astype(
                    np.uint8
                )
                _add(frame, bloom, flash["x"], flash["y"], flash["gains"][k])
        yield frame


def _smoke_column(frame: np.ndarray, plume: dict, texture: np.ndarray, age: float) -> None:
    """A heavy black smoke column rising from (x, y): soft edges, widening and leaning with height,
    rising at `rise` px/s, darkening and blurring what is behind it."""
    h, w = frame.shape[:2]
    x0, y0, width = plume["x"], plume["y"], plume["width"]
    top = max(0.0, y0 - age * plume["rise"])
    if y0 - top < 2:
        return
    x1, x2 = max(0, round(x0 - 3 * width)), min(w, round(x0 + 4 * width))
    y1, y2 = max(0, round(top)), min(h, round(y0))
    if x1 >= x2 or y1 >= y2:
        return
    yy, xx = np.mgrid[y1:y2, x1:x2].astype(np.float32)
    rise = (y0 - yy) / max(1.0, y0 - top)  # 0 at the base, 1 at the top of the column
    up = y0 - yy
    centre = x0 + plume["lean"] * up + 0.15 * width * np.sin(up / 40.0 + age)
    half = 0.5 * width * (0.8 + 2.0 * (up / max(1.0, plume["rise"] * 4)))
    across = np.exp(-(((xx - centre) / np.maximum(half, 1.0)) ** 2))
    tex = _roll_sample(texture, 0.0, age * plume["rise"] * 0.8, y2 - y1, x2 - x1)
    density = across * (0.55 + 0.45 * tex) * np.clip((1 - rise) * 4, 0, 1) * plume["opacity"]
    density = np.clip(density, 0, 1)[..., None]
    roi = frame[y1:y2, x1:x2].astype(np.float32)
    blurred = cv2.GaussianBlur(roi, (0, 0), 3)
    behind = roi * (1 - np.minimum(1, 2 * density)) + blurred * np.minimum(1, 2 * density)
    dark = np.array([24, 24, 27], np.float32)
    frame[y1:y2, x1:x2] = np.clip(behind * (1 - density) + dark * density, 0, 255).astype(np.uint8)


# -- the catalogue ----------------------------------------------------------------------------------

CAR = "non_fire_lookalike/intel_car-detection.mp4"
ONE_BY_ONE = "people/intel_one-by-one-person-detection.mp4"
SUNSET = "non_fire_lookalike/sunset_udaipur.jpg"
MARKET = "non_fire_lookalike/street_market_hong_kong.jpg"
AISLE = "people/intel_store-aisle-detection.gif"
COFFEE = "images/coffee.png"
RED, BLUE = (30, 30, 255), (255, 60, 20)


def _scene(
    data: Path,
    name: str,
    kind: str,
    split: str,
    fps: float,
    seconds: float,
    fn: Callable[..., Frames],
    description: str,
    first_s: float | None = None,
    ambiguous: bool = False,
    **params: object,
) -> Scene:
    n = round(seconds * fps)
    first = None if first_s is None else round(first_s * fps)
    if first is not None:
        params["first"] = first

    def make(fire: bool) -> Frames:
        return fn(data, fire, n=n, fps=fps, **params)

    def remake(k: int) -> Scene:
        again = _scene(data, f"{name}~{k}", kind, split, fps, seconds, fn, description, first_s, ambiguous,
                       **_varied(params, k))  # fmt: skip
        return replace(again, remake=None)

    return Scene(name, kind, split, fps, n, make, first, ambiguous, description, remake)


VARIANT_SEED_STEP = 1000
VARIANT_FLAME_SHIFT = 23
VARIANT_PHASE_STEP = 0.7
VARIANT_DELAY_S = 0.3
VARIANT_LAMP_SHIFT = 40
"""What the k-th variant of a made scene changes, times k (`variant`): its seed (sensor noise, glitter,
smoke textures), the frame of the fire clip its flames start from (another stretch of real flicker,
0.77 s later per step), the phase of swinging objects (radians), when the runner sets off (s) and
where the still lamp stands (px to the right: the room's real frames have no seeded noise)."""


def _varied(params: dict[str, Any], k: int) -> dict[str, Any]:
    """`params` of a scene for its k-th variant (see ``VARIANT_SEED_STEP``)."""
    out = dict(params)
    out.pop("first", None)  # _scene puts it back from first_s
    out["seed"] = params["seed"] + VARIANT_SEED_STEP * k
    if "flames" in params:
        shift = VARIANT_FLAME_SHIFT * k
        out["flames"] = [{**fl, "start": _flame_start(fl) + shift} for fl in params["flames"]]
    if "objects" in params:
        turn = VARIANT_PHASE_STEP * k
        out["objects"] = [{**ob, "phase": ob.get("phase", 0.0) + turn} for ob in params["objects"]]
    if "start_s" in params:
        out["start_s"] = params["start_s"] + VARIANT_DELAY_S * k
    if "lamp" in params:
        out["lamp"] = {**params["lamp"], "x": params["lamp"]["x"] + VARIANT_LAMP_SHIFT * k}
    return out


def variant(scene: Scene, k: int) -> Scene:
    """The k-th variant (k >= 1) of a made scene, named ``NAME~k``: the same footage, kind, split and
    timing, resampled (``VARIANT_SEED_STEP``). One deterministic run per scene says little about a
    detector whose first look can fall a frame earlier or later; `tools/eval_fire --variants N` runs
    each scene N ways and counts how many hold the goal."""
    if scene.remake is None:
        raise ValueError(f"{scene.name} is a variant already")
    return scene.remake(k)


def scenes(data: Path = DATA) -> list[Scene]:
    """Every made scene, tune and check variants of each kind (sources are read when frames are made)."""
    s = functools.partial(_scene, data)
    return [
        # 1. flashing emergency lights at night
        s("lights_car_night", "flashing_lights", "tune", 12.5, 10, _flashing_lights,
          "car clip made night; red/blue double-flash strobes at 1.5 Hz parked by the road",
          source=CAR, span=(178, 300), seed=11, lights=[
              {"x": 520, "y": 150, "colour": RED, "radius": 14, "core": 5, "period": 0.66,
               "on": [(0.0, 0.1), (0.2, 0.3)]},
              {"x": 560, "y": 150, "colour": BLUE, "radius": 14, "core": 5, "period": 0.66,
               "on": [(0.5, 0.6), (0.7, 0.8)]},
          ]),
        s("lights_room_night", "flashing_lights", "check", 10, 10, _flashing_lights,
          "empty room of the one-by-one clip made night; 3 Hz red/blue alternating strobe and a 1 Hz "
          "rotating red beacon",
          source=ONE_BY_ONE, span=(0, 60), seed=12, lights=[
              {"x": 250, "y": 120, "colour": RED, "radius": 22, "core": 8, "period": 0.33,
               "on": [(0.0, 0.3)]},
              {"x": 300, "y": 120, "colour": BLUE, "radius": 22, "core": 8, "period": 0.33,
               "on": [(0.5, 0.8)]},
              {"x": 640, "y": 90, "colour": RED, "radius": 30, "core": 10, "beacon": 1.0},
          ]),
        # 2. broken sun glitter on water
        s("sea_glitter_wide", "sea_reflections", "tune", 12.5, 8, _sea_reflections,
          "sunset sky (1280x720) over a water band with orange glitter drifting right",
          size=(1280, 720), sky=(0.0, 0.05, 1.0, 0.58), seed=21, drift=0.02, water=0.38),
        s("sea_glitter_close", "sea_reflections", "check", 10, 8, _sea_reflections,
          "close crop of the sun (768x432), a deeper water band, faster glitter drifting left",
          size=(768, 432), sky=(0.15, 0.12, 0.65, 0.5), seed=22, drift=-0.035, water=0.45),
        # 3. a runner's silhouette against the sunset
        s("runner_sunset_wide", "silhouette_sunset", "tune", 10, 8, _silhouette_sunset,
          "dark runner (one-by-one cut-outs, frames 61-194) crossing a 768x432 sunset left to right in 2.5 s",
          size=(768, 432), sky=(0.0, 0.1, 1.0, 0.55), seed=31, people=(61, 194), height=0.55,
          cross_s=2.5, leftwards=False, start_s=1.0),
        s("runner_sunset_close", "silhouette_sunset", "check", 12.5, 8, _silhouette_sunset,
          "smaller runner (frames 228-445 cut-outs) crossing a 1280x720 crop of the sun right to left, twice",
          size=(1280, 720), sky=(0.2, 0.15, 0.6, 0.45), seed=32, people=(228, 445), height=0.4,
          cross_s=3.0, leftwards=True, start_s=0.5),
        # 4. swaying orange objects
        s("balloons_market", "swaying_orange", "tune", 12.5, 8, _swaying_orange,
          "two shaded orange balloons swinging on strings in front of the Hong Kong street market",
          size=(1280, 720), backdrop=MARKET, seed=41, real=False, objects=[
              {"x": 0.4, "length": 0.45, "radius": 45, "amplitude": 0.35, "hz": 0.6},
              {"x": 0.55, "length": 0.35, "radius": 36, "amplitude": 0.3, "hz": 0.75, "phase": 1.0},
          ]),
        s("orange_aisle", "swaying_orange", "check", 15, 8, _swaying_orange,
          "the real orange of the fruit GIF hanging and swinging at 0.9 Hz in front of the store aisle GIF",
          size=(480, 270), backdrop=AISLE, seed=42, real=True, objects=[
              {"x": 0.5, "length": 0.55, "radius": 22, "amplitude": 0.4, "hz": 0.9},
          ]),
        # 5. a still bright lamp
        s("lamp_room", "still_yellow", "tune", 10, 30, _still_yellow,
          "empty one-by-one room (real frames 0-60, ping-pong) with a still yellow lamp on the wall",
          backdrop=ONE_BY_ONE, span=(0, 60), seed=51,
          lamp={"x": 200, "y": 140, "radius": 14, "colour": (40, 170, 255), "core": 6}),
        s("lamp_coffee", "still_yellow", "check", 15, 30, _still_yellow,
          "the coffee still with sensor noise and a bigger still orange-yellow lamp",
          backdrop=COFFEE, span=None, seed=52,
          lamp={"x": 470, "y": 90, "radius": 20, "colour": (30, 140, 255), "core": 9}),
        # 6. a small flame, alone
        s("flame_road", "small_flame", "tune", 12.5, 9, _onset,
          "house6 window flame pasted small (18->45 px) on the empty road of the car clip after 2.5 s",
          first_s=2.5, backdrop=CAR, span=(0, 50), size=None, seed=61,
          flames=[{"clip": "house6", "rect": HOUSE6_WINDOW, "x": 300, "y": 260, "h0": 18, "h1": 45}]),
        s("flame_room", "small_flame", "check", 10, 9, _onset,
          "fdv grass-fire tongue pasted small (24->60 px) on the wooden floor of the empty room after 3 s",
          first_s=3.0, backdrop=ONE_BY_ONE, span=(0, 60), size=None, seed=62,
          flames=[{"clip": "fdv", "rect": FDV_TONGUE, "x": 600, "y": 380, "h0": 24, "h1": 60}]),
        s("flame_far_road", "small_flame", "tune", 12.5, 9, _onset,
          "the road made 1280x720 and a distant house6 flame (15->28 px) on it after 2.5 s",
          first_s=2.5, backdrop=CAR, span=(0, 50), size=(1280, 720), seed=64,
          flames=[{"clip": "house6", "rect": HOUSE6_WINDOW, "x": 900, "y": 520, "h0": 15, "h1": 28}]),
        s("flame_coffee", "small_flame", "tune", 12.5, 9, _onset,
          "the warm-toned coffee still with sensor noise and a small house6 flame (12->28 px) after 2.5 s",
          first_s=2.5, backdrop=COFFEE, span=None, size=None, seed=65,
          flames=[{"clip": "house6", "rect": HOUSE6_WINDOW, "x": 150, "y": 330, "h0": 12, "h1": 28}]),
        s("flame_fdv_road", "small_flame", "tune", 12.5, 9, _onset,
          "fdv grass-fire tongue pasted small (40->70 px) on the empty road of the car clip after 2.5 s",
          first_s=2.5, backdrop=CAR, span=(0, 50), size=None, seed=66,
          flames=[{"clip": "fdv", "rect": FDV_TONGUE, "x": 250, "y": 300, "h0": 40, "h1": 70, "start": 90}]),
        s("flame_beside_person", "small_flame", "tune", 10, 9, _onset,
          "house6 flame pasted small (18->40 px) on the floor beside the woman standing at the table "
          "(one-by-one frames 540-640, ping-pong) after 3 s",
          first_s=3.0, backdrop=ONE_BY_ONE, span=(540, 640), size=None, seed=67,
          flames=[{"clip": "house6", "rect": HOUSE6_WINDOW, "x": 625, "y": 395, "h0": 18, "h1": 40}]),
        s("flame_beside_man", "small_flame", "tune", 10, 9, _onset,
          "house6 flame pasted small (20->45 px) on the floor left of the man standing at the table "
          "(one-by-one frames 255-335, ping-pong) after 2.5 s",
          first_s=2.5, backdrop=ONE_BY_ONE, span=(255, 335), size=None, seed=68,
          flames=[{"clip": "house6", "rect": HOUSE6_WINDOW, "x": 320, "y": 345, "h0": 20, "h1": 45,
                   "start": 130}]),
        s("flame_beside_walkers", "small_flame", "check", 10, 9, _onset,
          "house6 flame pasted small (20->42 px) on the floor right of the table while the woman leaves "
          "and the man walks in (one-by-one frames 176-256, ping-pong) after 3 s",
          first_s=3.0, backdrop=ONE_BY_ONE, span=(176, 256), size=None, seed=69,
          flames=[{"clip": "house6", "rect": HOUSE6_WINDOW, "x": 660, "y": 360, "h0": 20, "h1": 42,
                   "start": 160}]),
        # 7. a flame under a vehicle
        s("flame_car_road", "flame_under_vehicle", "tune", 12.5, 9, _onset,
          "house6 ground-floor flame under the front of a parked dark car on the road (its top hidden)",
          first_s=2.5, backdrop=CAR, span=(0, 50), size=None, seed=71,
          flames=[{"clip": "house6", "rect": HOUSE6_WINDOW, "x": 420, "y": 272, "h0": 33, "h1": 60}],
          car={"x": 420, "y": 250, "height": 210}),
        s("flame_car_market", "flame_under_vehicle", "check", 10, 9, _onset,
          "fdv flame at the rear corner of a dark car (rotated) parked across the street market still, "
          "with noise: below the car and beside its end, the corner hiding its top once it grows",
          first_s=3.0, backdrop=MARKET, span=None, size=(1280, 720), seed=72,
          flames=[{"clip": "fdv", "rect": FDV_TONGUE_2, "x": 760, "y": 690, "h0": 36, "h1": 75}],
          car={"x": 640, "y": 640, "height": 150, "rotate": True}),
        # 8. a flash, then a flame
        s("flash_flame_road", "flash_then_flame", "tune", 12.5, 9, _onset,
          "a 3-frame explosion bloom at 2.5 s on the empty road, then a small house6 flame",
          first_s=2.5 + 3 / 12.5, backdrop=CAR, span=(0, 50), size=None, seed=81,
          flames=[{"clip": "house6", "rect": HOUSE6_WINDOW, "x": 200, "y": 330, "h0": 24, "h1": 51}],
          flash={"at": round(2.5 * 12.5), "x": 200, "y": 320, "radius": 60, "gains": [0.6, 1.0, 0.5]}),
        s("flash_flame_room", "flash_then_flame", "check", 10, 9, _onset,
          "a 2-frame flash at 2 s in the empty room, then a small fdv flame by the table",
          first_s=2.0 + 2 / 10, backdrop=ONE_BY_ONE, span=(0, 60), size=None, seed=82,
          flames=[{"clip": "fdv", "rect": FDV_TONGUE, "x": 380, "y": 330, "h0": 27, "h1": 54}],
          flash={"at": 20, "x": 380, "y": 310, "radius": 90, "gains": [1.0, 0.7]}),
        # 9. distant flames under black smoke
        s("smoke_column_city", "flame_under_smoke", "tune", 12.5, 10, _onset,
          "two distant house6 flames in the sunset city (1280x720) under a rising black smoke column",
          first_s=2.5, backdrop=SUNSET, span=None, size=(1280, 720), box=(0.0, 0.35, 1.0, 1.0), seed=91,
          flames=[
              {"clip": "house6", "rect": HOUSE6_WINDOW, "x": 820, "y": 560, "h0": 21, "h1": 39},
              {"clip": "house6", "rect": HOUSE6_WINDOW, "x": 845, "y": 562, "h0": 18, "h1": 33, "start": 160},
          ], plume={"x": 830, "y": 552, "width": 70, "rise": 110, "lean": 0.35, "opacity": 1.0}),
        s("smoke_column_market", "flame_under_smoke", "check", 10, 10, _onset,
          "fdv flames at the far end of the street market under a black column leaning left",
          first_s=3.0, backdrop=MARKET, span=None, size=(1280, 720), seed=92, flames=[
              {"clip": "fdv", "rect": FDV_TONGUE, "x": 500, "y": 420, "h0": 24, "h1": 45},
              {"clip": "fdv", "rect": FDV_TONGUE_2, "x": 525, "y": 424, "h0": 21, "h1": 39},
          ], plume={"x": 510, "y": 410, "width": 60, "rise": 90, "lean": -0.3, "opacity": 1.0}),
    ]  # fmt: skip

"""The shared clips and stills, with their ground truth, as items of the fire evaluation.

Ground truth comes from a json in the format of ../shared/data/ground_truth.json: keys are paths
relative to the json's folder; ``fire_frames`` is "all", "none" or a list of [first, last] ranges;
stills carry ``fire`` (true, false, or a description: an edge case); ``smoke: true`` without fire marks
a smoke clip; ``ambiguous: true`` marks a clip that is run and reported but never scored. Unknown keys
are ignored, so another ground-truth file with other clips in the same format works too; clips that
SPLIT does not list go to "check".

Roles, as scored by `tools.fireeval.run`:

- "fire": fire frames; the first flame is the first fire frame;
- "smoke": smoke, no fire (the ``smoke/`` mosaics): must raise a smoke event; frame 0 is the onset;
- "lookalike": no fire and no smoke: any fire or smoke event is a false event;
- "ambiguous": reported, not scored;
- "edge": a real flame that is not the kind of fire we alert on (the rocket launch): reported only.

A still is fed as the appliance feeds an image source that is looked at for a while: the same picture
repeated (STILL_SECONDS at STILL_FPS), with the red loop told the source is still.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from tools.fireeval import DATA
from tools.fireeval.scenes import read_frames

GROUND_TRUTH = DATA / "ground_truth.json"
STILL_FPS = 10.0
STILL_SECONDS = 3.0
DEFAULT_FPS = 10.0
IMAGE_EXTS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
EDGE_CASES = frozenset({"images/rocket.jpg"})
"""Real flame, but not a building or vegetation fire: reported, never scored."""

SPLIT = {
    # tune: what the detector may be tuned on
    "fire/furg_house6.mp4": "tune",
    "non_fire_lookalike/intel_worker-zone-detection.gif": "tune",
    "non_fire_lookalike/intel_car-detection.mp4": "tune",
    "non_fire_lookalike/sunset_udaipur.jpg": "tune",
    "smoke/rise_smoke_mosaic_detected.mp4": "tune",
    "non_fire_lookalike/rise_nosmoke_mosaic_false_alarms.mp4": "tune",
    "images/coffee.png": "tune",
    # check: what it is checked on
    "fire/fdv_visual_fire.mp4": "check",
    "non_fire_lookalike/intel_fruit-and-vegetable-detection.gif": "check",
    "non_fire_lookalike/street_market_hong_kong.jpg": "check",
    "people/intel_one-by-one-person-detection.mp4": "check",
    "people/intel_store-aisle-detection.gif": "check",
    "people/intel_person-bicycle-car-detection.gif": "check",
    "smoke/rise_smoke_mosaic_missed.mp4": "check",
    "images/chelsea.png": "check",
    "images/astronaut.png": "check",
    "images/rocket.jpg": "check",
}
"""The tune/check split of the shared clips; anything else is "check"."""


@dataclass(frozen=True)
class Clip:
    name: str
    """Path relative to the ground truth's folder."""
    path: Path
    kind: str
    """fire, smoke, lookalike, ambiguous or edge (as `role`, for the table's kind column)."""
    role: str
    split: str
    fps: float
    first_flame: int | None
    still: bool
    ambiguous: bool
    description: str

    @property
    def count(self) -> int | None:
        return round(STILL_SECONDS * STILL_FPS) if self.still else None

    def frames(self) -> Iterator[np.ndarray]:
        if self.still:
            image = cv2.imread(str(self.path), cv2.IMREAD_COLOR)
            if image is None:
                raise OSError(f"cannot read {self.path}")
            for _ in range(round(STILL_SECONDS * STILL_FPS)):
                yield image
            return
        yield from read_frames(str(self.path))


def _first_fire(fire_frames: object) -> tuple[bool, int | None]:
    """(known, first fire frame) from a `fire_frames` value."""
    if fire_frames == "all":
        return True, 0
    if fire_frames in ("none", None, False) or fire_frames == []:
        return fire_frames is not None, None
    if isinstance(fire_frames, list):
        starts = [r[0] if isinstance(r, list | tuple) else r for r in fire_frames]
        return True, int(min(starts))
    return False, None


def _fps(path: Path, notes: dict) -> float:
    for key in ("fps", "fps_approx"):
        value = notes.get(key)
        if isinstance(value, int | float) and value > 0:
            return float(value)
    cap = cv2.VideoCapture(str(path))
    fps = cap.get(cv2.CAP_PROP_FPS) if cap.isOpened() else 0.0
    cap.release()
    if 1.0 <= fps <= 120.0:
        return float(fps)
    if path.suffix.lower() == ".gif":
        try:
            from PIL import Image

            with Image.open(path) as im:
                ms = im.info.get("duration") or 0
            if ms > 0:
                return 1000.0 / ms
        except OSError:
            pass
    return DEFAULT_FPS


def load_clips(ground_truth: Path = GROUND_TRUTH) -> list[Clip]:
    """Every clip and still of the ground truth whose file exists, with its role and split."""
    truth = json.loads(Path(ground_truth).read_text(encoding="utf-8"))
    root = Path(ground_truth).resolve().parent
    out = []
    for name, notes in truth.items():
        if name.startswith("_") or not isinstance(notes, dict):
            continue
        path = root / name
        if not path.is_file():
            continue
        still = path.suffix.lower() in IMAGE_EXTS
        known, first = _first_fire(notes.get("fire_frames"))
        fire_note = notes.get("fire")
        edge = name in EDGE_CASES
        if not known and isinstance(fire_note, bool):
            first = 0 if fire_note else None
        elif not known and fire_note not in (None, False):
            edge = True  # a description instead of true/false: a flame of another kind
        smoke = notes.get("smoke") is True
        ambiguous = notes.get("ambiguous") is True
        if ambiguous:
            role = "ambiguous"
        elif edge:
            role = "edge"
        elif first is not None:
            role = "fire"
        elif smoke:
            role = "smoke"
        else:
            role = "lookalike"
        fps = STILL_FPS if still else _fps(path, notes)
        note = notes.get("notes") or (fire_note if isinstance(fire_note, str) else "")
        out.append(
            Clip(
                name=name,
                path=path,
                kind=role,
                role=role,
                split=SPLIT.get(name, "check"),
                fps=fps,
                first_flame=first if role == "fire" else None,
                still=still,
                ambiguous=ambiguous,
                description=str(note),
            )
        )
    return out

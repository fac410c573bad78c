"""Measure the fire detector on the shared test media: the numbers to look at when tuning it.

Run from the repository root: ``python -m tools.tune_fire [--shared DIR]``.

Prints, for each fire clip and call pattern (every frame, every 2nd, every 3rd, irregular gaps as a
busy red loop would make), the stream time of the first fire detection and the share of calls from
1 s on that report fire; for every non-fire clip and call pattern, the calls that report fire (must be
0) and the highest evidence seen (the margin to min_score 0.5); for the still images, the same with the
still repeated, with noise, panned, and with its exposure pumping; and the cost of one call on a
1280x720 frame.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from edge.config.models import FireConfig
from edge.reflex.fire import FireDetector

FIRE_CLIPS = ("fire/furg_house6.mp4", "fire/fdv_visual_fire.mp4")
NON_FIRE_CLIPS = ("non_fire_lookalike/*.mp4", "non_fire_lookalike/*.gif", "people/*")
STILLS = (
    "non_fire_lookalike/sunset_udaipur.jpg",
    "non_fire_lookalike/street_market_hong_kong.jpg",
    "images/coffee.png",
    "images/chelsea.png",
    "images/astronaut.png",
)
STILL_FPS = 15.0
STILL_CALLS = 30
IRREGULAR_GAPS = (1, 1, 1, 2, 3, 4)
"""Frame gaps an irregular call pattern draws from (a loaded red loop dropping stale frames)."""
IRREGULAR_SEEDS = 3
TIMING_CALLS = 300


def read_clip(path: Path) -> tuple[list[np.ndarray], float]:
    """All frames of a clip and its frame rate."""
    cap = cv2.VideoCapture(str(path))
    fps = cap.get(cv2.CAP_PROP_FPS) or STILL_FPS
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames, fps


def call_patterns(count: int) -> Iterator[tuple[str, list[int]]]:
    """Frame indices to call on: regular strides, then irregular ones."""
    for step in (1, 2, 3):
        yield f"every {step}", list(range(0, count, step))
    for seed in range(IRREGULAR_SEEDS):
        rng = np.random.default_rng(seed)
        indices, i = [], 0
        while i < count:
            indices.append(i)
            i += int(rng.choice(IRREGULAR_GAPS))
        yield f"irregular {seed}", indices


def still_variants(image: np.ndarray) -> Iterator[tuple[str, list[np.ndarray]]]:
    """A still repeated; with noise; panned 1 px, 2 px and 1.5 px (interpolated) per call; pumping."""
    rng = np.random.default_rng(0)
    h, w = image.shape[:2]
    yield "repeated", [image] * STILL_CALLS
    yield (
        "noisy",
        [
            np.clip(image + rng.normal(0, 4.0, image.shape), 0, 255).astype(np.uint8)
            for _ in range(STILL_CALLS)
        ],
    )
    for px in (1, 2):
        yield f"pan {px}px", [image[:, px * i : w - px * STILL_CALLS + px * i] for i in range(STILL_CALLS)]
    shifts = [np.float32([[1, 0, -1.5 * i], [0, 1, 0]]) for i in range(STILL_CALLS)]
    yield "pan 1.5px", [cv2.warpAffine(image, m, (w, h), borderMode=cv2.BORDER_REFLECT) for m in shifts]
    gains = rng.uniform(0.85, 1.15, STILL_CALLS)
    yield "exposure", [cv2.convertScaleAbs(image, alpha=float(g)) for g in gains]


def run(frames: list[np.ndarray], fps: float, indices: list[int]) -> list[tuple[float, bool, float]]:
    """(pts, fire reported, peak evidence) for each call of a fresh detector."""
    det = FireDetector(FireConfig())
    out = []
    for i in indices:
        found = det.detect(np.ascontiguousarray(frames[i]), i / fps)
        out.append((i / fps, bool(found), det.peak_evidence))
    return out


def report_fire(data: Path) -> None:
    print("fire clips: first detection (s), coverage from 1 s")
    for name in FIRE_CLIPS:
        frames, fps = read_clip(data / name)
        for pattern, indices in call_patterns(len(frames)):
            calls = run(frames, fps, indices)
            first = next((pts for pts, hit, _ in calls if hit), None)
            late = [hit for pts, hit, _ in calls if pts >= 1.0]
            shown = "none" if first is None else f"{first:.3f}"
            print(f"  {name:28s} {pattern:12s} first {shown}  coverage {sum(late) / len(late):.3f}")


def report_non_fire(data: Path) -> None:
    print("non-fire: calls with fire (must be 0), peak evidence")
    for path in sorted(p for pattern in NON_FIRE_CLIPS for p in data.glob(pattern)):
        frames, fps = read_clip(path)
        for pattern, indices in call_patterns(len(frames)):
            calls = run(frames, fps, indices)
            hits = sum(hit for _, hit, _ in calls)
            print(f"  {path.name:40s} {pattern:12s} {hits} fire, peak {max(e for *_, e in calls):.2f}")
    for name in STILLS:
        image = cv2.imread(str(data / name))
        for variant, frames in still_variants(image):
            calls = run(frames, STILL_FPS, list(range(len(frames))))
            hits = sum(hit for _, hit, _ in calls)
            print(f"  {Path(name).name:40s} {variant:12s} {hits} fire, peak {max(e for *_, e in calls):.2f}")


def report_cost(data: Path) -> None:
    """Median and p95 cost per call at 1280x720, on a fire clip (the expensive case) and a quiet one."""
    for name in (FIRE_CLIPS[0], "people/intel_one-by-one-person-detection.mp4"):
        frames, fps = read_clip(data / name)
        big = [cv2.resize(f, (1280, 720), interpolation=cv2.INTER_LINEAR) for f in frames[:TIMING_CALLS]]
        det = FireDetector(FireConfig())
        costs = []
        for i, frame in enumerate(big):
            t0 = time.perf_counter()
            det.detect(frame, i / fps)
            costs.append((time.perf_counter() - t0) * 1e3)
        costs.sort()
        print(
            f"cost at 1280x720, {Path(name).name}: median {statistics.median(costs):.2f} ms, "
            f"p95 {costs[int(0.95 * len(costs))]:.2f} ms"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description="Measure the fire detector on the shared test media.")
    parser.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared")
    args = parser.parse_args()
    data = args.shared / "data"
    report_fire(data)
    report_non_fire(data)
    report_cost(data)


if __name__ == "__main__":
    main()

"""The fire evaluation (issue 8) on made scenes and the shared clips, through the real red loop.

Look-alikes must raise no fire or smoke event (tune and check variant of each kind), slow onsets a
fire or smoke alert within 1 s of the first flame, and a still scene with a bright lamp must not keep
the detectors running. Media come from ``../shared/data`` next to the repository; the tests skip with a
reason when that folder is missing. Each scene is made and run once per session.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tools.fireeval import DATA, REPO
from tools.fireeval.clips import load_clips
from tools.fireeval.run import CONFIRMED_S, PROVISIONAL_S, STILL_RUN_MAX, ClipResult, run_item, summary
from tools.fireeval.scenes import KINDS, LOOKALIKE_KINDS, ONSET_KINDS, Scene, scenes, variant

pytestmark = pytest.mark.skipif(
    not DATA.is_dir(), reason=f"shared test media not found at {DATA} (expected ../shared next to the repo)"
)

SCENES = {s.name: s for s in scenes()} if DATA.is_dir() else {}


KNOWN_GAPS = {
    "balloons_market": "a fast-swinging shaded balloon: flow cannot follow its smooth face (fire at 0.9 s)",
    "orange_aisle": "the real orange swinging in front of the aisle (fire at 1.1 s)",
    "flame_far_road": "a distant flame on the road at 1280x720: provisional at 1.2 s, retracted",
    "flame_room": "a grass-fire tongue on a fire-coloured wooden floor: provisional at 1.1 s",
    "flame_fdv_road": "grass-fire tongues come and go on the road, few pixels stay fire-coloured: 5.6 s",
    "flame_car_market": "a grass-fire tongue at a dark car's rear corner in a busy market: 1.3 s, retracted",
    "smoke_column_market": "flames under the column in the market: never seen",
    "flame_beside_walkers": "a small flame on the floor while people walk past: provisional at 1.2 s",
}
"""Made scenes where the detector misses the issue's goal today, with what it does instead (README,
"Fire evaluation"). They are strict expected failures (the scenes and the red loop are deterministic):
one that starts to pass fails the run until it is dropped from here, so the list stays true."""


def scene_params(kinds: tuple[str, ...]) -> list:
    """One test per made scene of these kinds; a known gap is an expected failure with its reason."""
    params = []
    for scene in sorted(SCENES.values(), key=lambda s: (s.kind, s.split)):
        if scene.kind not in kinds:
            continue
        gap = KNOWN_GAPS.get(scene.name)
        marks = [pytest.mark.xfail(reason=gap, strict=True)] if gap else []
        params.append(pytest.param(scene.name, id=scene.name, marks=marks))
    return params


def variants(kind: str) -> list[Scene]:
    return sorted((s for s in SCENES.values() if s.kind == kind), key=lambda s: s.split)


@pytest.fixture(scope="session")
def run_scene():
    cache: dict[str, ClipResult] = {}

    def run(scene: Scene) -> ClipResult:
        if scene.name not in cache:
            cache[scene.name] = run_item(scene)
        return cache[scene.name]

    return run


def test_every_kind_has_a_tune_and_a_check_variant() -> None:
    for kind in LOOKALIKE_KINDS + ONSET_KINDS:
        splits = {s.split for s in variants(kind)}
        assert splits == {"tune", "check"}, f"{kind}: {splits}"
    for s in SCENES.values():
        # Still scenes run 30 s: how often a still scene wakes the detectors is a steady-state number.
        longest = 30 if s.kind == "still_yellow" else 12
        assert 6 <= s.count / s.fps <= longest and 10 <= s.fps <= 15, s.name
        assert (s.first_flame is None) == (s.kind in LOOKALIKE_KINDS), s.name


@pytest.mark.parametrize("name", scene_params(LOOKALIKE_KINDS))
def test_lookalike_raises_no_fire_or_smoke_event(name: str, run_scene) -> None:
    result = run_scene(SCENES[name])
    assert not result.false_events, f"{name}: fire/smoke events on a look-alike: {result.events}"


@pytest.mark.parametrize("name", sorted(s.name for s in SCENES.values() if s.kind in ONSET_KINDS))
def test_slow_onset_raises_nothing_before_the_first_flame(name: str, run_scene) -> None:
    r = run_scene(SCENES[name])
    assert not r.false_events, f"{name}: fire/smoke events before the first flame: {r.events}"


@pytest.mark.parametrize("name", scene_params(ONSET_KINDS))
def test_slow_onset_alerts_within_a_second_and_confirms_within_three(name: str, run_scene) -> None:
    r = run_scene(SCENES[name])
    after = r.provisional_after_s
    assert after is not None and after <= PROVISIONAL_S, f"{name}: first alert {after} s after the flame"
    assert r.confirmed_after_s is not None and r.confirmed_after_s <= CONFIRMED_S, (
        f"{name}: confirmed {r.confirmed_after_s} s after the flame (retractions: {r.retractions})"
    )


@pytest.mark.parametrize(
    "name", ["flame_coffee~1", "flame_beside_person~2", "flame_beside_man~1", "flash_flame_road~1"]
)
def test_a_small_flame_in_place_is_not_explained_away_by_the_flow(name: str, run_scene) -> None:
    """Variants (`tune`) that `fire.MIN_FLOW` brought within the goals: the flow engine fitted their
    flame's flicker with a pixel or so of motion (1.04-1.50 s before)."""
    base, k = name.split("~")
    r = run_scene(variant(SCENES[base], int(k)))
    assert r.provisional_after_s is not None and r.provisional_after_s <= PROVISIONAL_S, r.provisional_after_s
    assert r.confirmed_after_s is not None and r.confirmed_after_s <= CONFIRMED_S, r.confirmed_after_s


def test_a_small_flame_on_a_warm_textured_still_alerts_within_a_second(run_scene) -> None:
    # The coffee still is warm-toned all over: the flame's new warm light joins the still's own
    # cores into one component too big for a zoom window, and lies inside the dismissed still.
    r = run_scene(SCENES["flame_coffee"])
    after = r.provisional_after_s
    assert after is not None and after <= PROVISIONAL_S, f"first alert {after} s after the flame"


def test_still_lamp_does_not_keep_the_detectors_running(run_scene) -> None:
    shares = {s.name: round(run_scene(s).run_share, 3) for s in variants("still_yellow")}
    assert all(v < STILL_RUN_MAX for v in shares.values()), f"share of frames a detector ran on: {shares}"


def _digest(frame: np.ndarray) -> str:
    return hashlib.sha1(frame.tobytes()).hexdigest()


def _change(frame: np.ndarray, quiet: np.ndarray) -> np.ndarray:
    """Per pixel, the largest channel difference between a scene's frame and the same frame without fire."""
    return np.abs(frame.astype(np.int16) - quiet.astype(np.int16)).max(axis=2)


@pytest.mark.parametrize("kind", ONSET_KINDS)
def test_onset_scene_is_deterministic_and_shows_flame_from_first_flame(kind: str) -> None:
    for scene in variants(kind):
        first = scene.first_flame
        assert first is not None and first >= 2 * scene.fps, f"{scene.name}: flame after >= 2 s of quiet"
        again = scene.frames()
        plain = scene.frames(fire=False)
        for i, frame in enumerate(scene.frames()):
            if i > first + 3:
                break
            assert _digest(frame) == _digest(next(again)), f"{scene.name}: frame {i} differs between runs"
            diff = _change(frame, next(plain))
            if i < first:
                assert not diff.any(), f"{scene.name}: frame {i} changed before the first flame {first}"
            else:
                b, _g, r = (frame[..., c].astype(np.int16) for c in range(3))
                flame = (diff > 30) & (r > 150) & (r - b > 60)
                assert flame.sum() >= 4, f"{scene.name}: frame {i}: no flame pixels from the first flame on"


HIDDEN_FLAMES: dict[str, str] = {}
"""Onset scenes whose flame is out of the picture for longer than ``MAX_FLAME_GAP_S`` (strict expected
failures, with the reason). None today: the market car scene was remade on 2026-12-03 because its car
hid the flame on 18 of 60 frames."""
MAX_FLAME_GAP_S = 0.1
"""One frame: a car may hide a flame under it for a frame as it is pasted over it, nothing longer. The
made flames of the release before 2026-12-03 went out for up to 0.4 s (the fire front had left the
piece of the fire clip they were cut from)."""


def _flame_gap_s(scene: Scene) -> float:
    """Longest stretch (s) from the first flame on in which the flame changes fewer than 4 pixels."""
    assert scene.first_flame is not None
    gap = longest = 0
    for i, (frame, quiet) in enumerate(zip(scene.frames(), scene.frames(fire=False), strict=True)):
        if i >= scene.first_flame:
            gap = 0 if np.count_nonzero(_change(frame, quiet) > 30) >= 4 else gap + 1
            longest = max(longest, gap)
    return longest / scene.fps


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(s.name, marks=[pytest.mark.xfail(reason=HIDDEN_FLAMES[s.name], strict=True)]
                     if s.name in HIDDEN_FLAMES else [])
        for s in sorted(SCENES.values(), key=lambda s: s.name)
        if s.kind in ONSET_KINDS
    ],
)  # fmt: skip
def test_onset_flame_stays_in_view_once_it_started(name: str) -> None:
    """The ground truth says the flame burns from its first frame on: a pasted flame that goes out (a
    fixed piece of a fire clip that the fire front has left) would score the detector on nothing. The
    flame must change the picture (4 pixels) on every frame but gaps of MAX_FLAME_GAP_S."""
    gap = _flame_gap_s(SCENES[name])
    assert gap <= MAX_FLAME_GAP_S, f"{name}: no flame in the picture for {gap:.2f} s"


@pytest.mark.parametrize("kind", LOOKALIKE_KINDS)
def test_lookalike_scene_is_deterministic(kind: str) -> None:
    for scene in variants(kind):
        a = [_digest(f) for _, f in zip(range(4), scene.frames(), strict=False)]
        b = [_digest(f) for _, f in zip(range(4), scene.frames(), strict=False)]
        assert a == b and len(set(a)) > 1, scene.name


def test_clip_catalogue_reads_the_ground_truth(tmp_path: Path) -> None:
    clips = {c.name: c for c in load_clips()}
    assert clips["fire/furg_house6.mp4"].role == "fire" and clips["fire/furg_house6.mp4"].first_flame == 0
    assert clips["smoke/rise_smoke_mosaic_missed.mp4"].role == "smoke"
    assert clips["non_fire_lookalike/rise_nosmoke_mosaic_false_alarms.mp4"].role == "ambiguous"
    assert clips["images/rocket.jpg"].role == "edge"
    assert clips["images/coffee.png"].still and clips["images/coffee.png"].role == "lookalike"
    assert {c.split for c in clips.values()} == {"tune", "check"}
    # Another ground truth in the same format: ranges, unknown keys, a clip no split lists.
    link = tmp_path / "clip.mp4"
    link.symlink_to(DATA / "fire" / "fdv_visual_fire.mp4")
    truth = {"_about": "x", "clip.mp4": {"fire_frames": [[40, 90], [12, 20]], "whatever": 1}, "gone.mp4": {}}
    (tmp_path / "gt.json").write_text(json.dumps(truth))
    (other,) = load_clips(tmp_path / "gt.json")
    assert (other.role, other.first_flame, other.split, other.fps) == ("fire", 12, "check", 30.0)


@pytest.mark.parametrize("kind", KINDS)
def test_a_variant_is_the_same_scene_resampled(kind: str) -> None:
    """`tools/eval_fire --variants` must run the same case in other ways: same size, timing, split and
    first flame, other frames, deterministic, and (onsets) a flame in view from its first frame on."""
    for scene in variants(kind):
        other = variant(scene, 1)
        assert (other.name, other.split, other.kind) == (f"{scene.name}~1", scene.split, scene.kind)
        assert (other.fps, other.count, other.first_flame) == (scene.fps, scene.count, scene.first_flame)
        # Digests, not frames: a 30 s scene's frames would hold hundreds of MB.
        assert next(scene.frames()).shape == next(other.frames()).shape
        mine, theirs = [_digest(f) for f in scene.frames()], [_digest(f) for f in other.frames()]
        assert len(mine) == len(theirs) == scene.count
        assert theirs[:3] == [_digest(f) for _, f in zip(range(3), other.frames(), strict=False)]
        assert sum(a != b for a, b in zip(mine, theirs, strict=True)) > scene.count // 2
        if scene.first_flame is not None:
            assert _flame_gap_s(other) <= MAX_FLAME_GAP_S, other.name
    with pytest.raises(ValueError, match="variant already"):
        variant(variant(variants(kind)[0], 1), 2)


def test_summary_counts_goals(run_scene) -> None:
    results = [run_scene(SCENES["flame_road"]), run_scene(SCENES["lamp_room"])]
    total = summary(results)
    assert (total.fires, total.lookalikes, total.stills) == (1, 1, 1)
    assert total.all_goals == all(r.verdict == "OK" for r in results)


def test_eval_fire_cli_prints_the_table_and_the_summary(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "tools" / "eval_fire"),
            "--only",
            "flame_road",
            "coffee.png",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    lines = proc.stdout.splitlines()
    assert lines[0].split()[:3] == ["name", "split", "kind"], proc.stdout + proc.stderr
    rows = [ln for ln in lines if ln.startswith(("flame_road", "images/coffee.png"))]
    assert len(rows) == 2, proc.stdout
    assert all(r.split()[-1] in {"OK", "LATE", "MISS", "FALSE", "BUSY"} for r in rows), rows
    last = lines[-1]
    assert last.startswith("fires OK") and ("1/1" in last or "0/1" in last), last
    assert ("all goals met" in last) == (proc.returncode == 0) and proc.returncode in (0, 1), proc.stderr
    saved = json.loads(out.read_text())
    assert {r["name"] for r in saved["results"]} == {"flame_road", "images/coffee.png"}


def test_eval_fire_cli_runs_variants_and_counts_them() -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools" / "eval_fire"), "--only", "lamp_room", "--variants", "2"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    lines = proc.stdout.splitlines()
    assert [ln.split()[0] for ln in lines[1:3]] == ["lamp_room", "lamp_room~1"], proc.stdout + proc.stderr
    verdicts = [ln.split()[-1] for ln in lines[1:3]]
    ok = verdicts.count("OK")
    block = [ln for ln in lines if ln.startswith("lamp_room ") and "OK:" in ln]
    assert len(block) == 1 and block[0].split()[3] == f"{ok}/2", proc.stdout
    assert block[0].split("OK:", 1)[1].split() == verdicts, block
    assert lines[-1] == f"made scenes in variants: {ok}/2 runs OK", lines[-1]
    bad = subprocess.run(
        [sys.executable, str(REPO / "tools" / "eval_fire"), "--variants", "0"],
        capture_output=True, text=True, timeout=60, cwd=REPO,
    )  # fmt: skip
    assert bad.returncode == 2 and "--variants must be at least 1" in bad.stderr

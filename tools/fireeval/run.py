"""The appliance's red loop over every clip and made scene, scored against the fire goals of issue 8.

Each item is fed frame by frame through `RedLoop.process(Frame(...))` with pts = index / fps, so the
silence gate decides which frames the detectors see, exactly as on the appliance. The rules are the
default rules of `watch: [fire, smoke]` (no object model). Goals:

- a scored fire (a fire clip, or a made slow onset): a fire or smoke alert of any phase within
  PROVISIONAL_S of the first flame, a "confirmed" one within CONFIRMED_S, and no fire/smoke event
  starting before the first flame;
- a smoke positive (smoke, no flame): a smoke event, and no fire event;
- a look-alike: no fire or smoke event at all;
- a still scene (kind still_yellow): detectors run on under STILL_RUN_MAX of its frames;
- ambiguous clips and edge cases are run and reported, never scored.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Protocol

import numpy as np

from edge.config import EdgeConfig
from edge.redloop import RedLoop
from edge.rules import Rule, Transition, default_rules
from edge.types import Frame

PROVISIONAL_S = 1.0
CONFIRMED_S = 3.0
STILL_RUN_MAX = 0.10
STILL_KINDS = frozenset({"still_yellow"})
AREA = frozenset({"fire", "smoke"})
WATCH = ["fire", "smoke"]


class Item(Protocol):
    """A made scene (`scenes.Scene`) or a shared clip (`clips.Clip`)."""

    name: str
    kind: str
    split: str
    fps: float
    first_flame: int | None
    ambiguous: bool

    @property
    def still(self) -> bool: ...

    def frames(self) -> Iterable[np.ndarray]: ...


def role_of(item: Item) -> str:
    role = getattr(item, "role", None)
    if role:
        return role
    if item.ambiguous:
        return "ambiguous"
    return "fire" if item.first_flame is not None else "lookalike"


@dataclass
class ClipResult:
    name: str
    split: str
    kind: str
    role: str
    fps: float
    frames: int
    inferred: int
    first_flame_s: float | None
    """Stream time of the first flame (fire), of the onset (smoke: 0), None otherwise."""
    provisional_after_s: float | None
    """First fire/smoke alert (any phase) at or after the onset, seconds after it."""
    confirmed_after_s: float | None
    """First fire/smoke alert with phase "confirmed" at or after the onset, seconds after it."""
    false_events: int
    retractions: int
    events: list[dict] = field(default_factory=list)
    """Every fire/smoke event start: label, frame, pts."""
    verdict: str = ""
    watch: list[str] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def run_share(self) -> float:
        return self.inferred / self.frames if self.frames else 0.0

    def as_dict(self) -> dict:
        d = asdict(self)
        d["run_share"] = round(self.run_share, 4)
        return d


class Collect:
    """A red-loop sink keeping every transition."""

    def __init__(self) -> None:
        self.transitions: list[Transition] = []

    def handle(self, transition: Transition, frame: Frame) -> None:
        self.transitions.append(transition)


def build_loop(camera: str, sink: Collect, watch: Sequence[str] = WATCH) -> tuple[RedLoop, list[str]]:
    """A red loop with the default rules of `watch`; falls back to fire alone if smoke is refused."""
    for labels in (list(watch), ["fire"]):
        try:
            cfg = EdgeConfig(watch=labels)
            rules = [Rule(c) for c in default_rules(labels, cfg.fire, cfg.smoke)]
            return RedLoop(camera, cfg, rules, None, [sink]), labels
        except (ValueError, TypeError):
            if labels == ["fire"]:
                raise
    raise AssertionError("unreachable")


def run_item(item: Item, watch: Sequence[str] = WATCH) -> ClipResult:
    sink = Collect()
    loop, labels = build_loop("eval", sink, watch)
    if item.still:
        loop.set_still(True)  # as the pipeline does for a picture source
    started = time.perf_counter()
    index = -1
    for index, image in enumerate(item.frames()):
        loop.process(Frame("eval", index, index / item.fps, image, time.monotonic()))
    loop.finish("end of item")
    return score(item, loop, sink.transitions, labels, time.perf_counter() - started)


def score(
    item: Item, loop: RedLoop, transitions: list[Transition], labels: list[str], wall_s: float
) -> ClipResult:
    role = role_of(item)
    if role == "fire":
        onset: float | None = (item.first_flame or 0) / item.fps
    elif role == "smoke":
        onset = 0.0
    else:
        onset = None
    starts = [t for t in transitions if t.kind == "start" and t.event.label in AREA]
    alerts = [t for t in transitions if t.kind == "alert" and t.alert is not None and t.event.label in AREA]
    eps = 0.5 / item.fps
    if role == "fire":
        false = sum(1 for t in starts if t.pts < (onset or 0.0) - eps)
    elif role == "smoke":
        false = sum(1 for t in starts if t.event.label != "smoke")
    elif role == "lookalike":
        false = len(starts)
    else:
        false = 0
    provisional = confirmed = None
    if onset is not None:
        wanted = ("smoke",) if role == "smoke" else tuple(AREA)
        after = [t for t in alerts if t.pts >= onset - eps and t.event.label in wanted]
        if after:
            provisional = round(max(0.0, after[0].pts - onset), 3)
        done = [t for t in after if t.alert is not None and t.alert.phase == "confirmed"]
        if done:
            confirmed = round(max(0.0, done[0].pts - onset), 3)
    retractions = sum(1 for t in alerts if t.alert is not None and t.alert.phase == "retracted")
    result = ClipResult(
        name=item.name,
        split=item.split,
        kind=item.kind,
        role=role,
        fps=item.fps,
        frames=loop.frames,
        inferred=loop.inferred,
        first_flame_s=None if onset is None else round(onset, 3),
        provisional_after_s=provisional,
        confirmed_after_s=confirmed,
        false_events=false,
        retractions=retractions,
        events=[{"label": t.event.label, "frame": t.frame, "pts": round(t.pts, 3)} for t in starts],
        watch=labels,
        wall_s=round(wall_s, 2),
    )
    result.verdict = verdict(result)
    return result


def verdict(r: ClipResult) -> str:
    if r.role == "ambiguous":
        return "ambiguous"
    if r.role == "edge":
        return "edge case"
    if r.false_events:
        return "FALSE"
    if r.role == "fire":
        if r.provisional_after_s is None:
            return "MISS"
        late = r.provisional_after_s > PROVISIONAL_S
        late = late or r.confirmed_after_s is None or r.confirmed_after_s > CONFIRMED_S
        return "LATE" if late else "OK"
    if r.role == "smoke":
        return (
            "OK"
            if r.provisional_after_s is not None or any(e["label"] == "smoke" for e in r.events)
            else "MISS"
        )
    if r.kind in STILL_KINDS and r.run_share >= STILL_RUN_MAX:
        return "BUSY"
    return "OK"


def evaluate(
    items: Iterable[Item],
    split: str = "all",
    only: Sequence[str] | None = None,
    watch: Sequence[str] = WATCH,
    progress=None,
) -> list[ClipResult]:
    """Run every item of `split` ("tune", "check" or "all"), or only those named (full name or the
    part after the last "/", or a kind)."""
    results = []
    for item in items:
        if split != "all" and item.split != split:
            continue
        names = (item.name, item.name.rsplit("/", 1)[-1], base_name(item.name), item.kind)
        if only and not any(o in names for o in only):
            continue
        result = run_item(item, watch)
        results.append(result)
        if progress is not None:
            progress(result)
    return results


@dataclass
class Summary:
    fires_ok: int
    fires: int
    smoke_ok: int
    smoke: int
    false_events: int
    lookalikes_with_false: int
    lookalikes: int
    false_before_flame: int
    still_ok: int
    stills: int
    ambiguous: int
    edge_cases: int
    confirmed_seen: bool
    watch: list[str]

    @property
    def all_goals(self) -> bool:
        return (
            self.fires_ok == self.fires
            and self.smoke_ok == self.smoke
            and self.false_events == 0
            and self.false_before_flame == 0
            and self.still_ok == self.stills
        )

    def line(self) -> str:
        text = (
            f"fires OK (provisional <={PROVISIONAL_S:g} s, confirmed <={CONFIRMED_S:g} s, nothing early): "
            f"{self.fires_ok}/{self.fires}; smoke positives detected: {self.smoke_ok}/{self.smoke}; "
            f"false events on look-alikes: {self.false_events} over {self.lookalikes_with_false}/"
            f"{self.lookalikes} clips; early false events on fires: {self.false_before_flame}; "
            f"still scenes under {STILL_RUN_MAX:.0%} frames run: {self.still_ok}/{self.stills}; "
            f"ambiguous reported: {self.ambiguous}; edge cases: {self.edge_cases}"
        )
        return text + (" -> all goals met" if self.all_goals else " -> goals NOT met")


def summary(results: Sequence[ClipResult]) -> Summary:
    fires = [r for r in results if r.role == "fire"]
    smoke = [r for r in results if r.role == "smoke"]
    looks = [r for r in results if r.role == "lookalike"]
    stills = [r for r in results if r.kind in STILL_KINDS and r.role == "lookalike"]
    watch = sorted({w for r in results for w in r.watch})
    return Summary(
        fires_ok=sum(1 for r in fires if r.verdict == "OK"),
        fires=len(fires),
        smoke_ok=sum(1 for r in smoke if r.verdict == "OK"),
        smoke=len(smoke),
        false_events=sum(r.false_events for r in looks) + sum(r.false_events for r in smoke),
        lookalikes_with_false=sum(1 for r in looks if r.false_events),
        lookalikes=len(looks),
        false_before_flame=sum(r.false_events for r in fires),
        still_ok=sum(1 for r in stills if r.run_share < STILL_RUN_MAX),
        stills=len(stills),
        ambiguous=sum(1 for r in results if r.role == "ambiguous"),
        edge_cases=sum(1 for r in results if r.role == "edge"),
        confirmed_seen=any(r.confirmed_after_s is not None for r in results),
        watch=watch,
    )


def _s(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


HEADER = (
    f"{'name':<58} {'split':<5} {'kind':<19} {'flame s':>7} {'prov s':>6} {'conf s':>6} "
    f"{'false':>5} {'retr':>4} {'run %':>6}  verdict"
)


def base_name(name: str) -> str:
    """The made scene a variant (``NAME~k``, `scenes.variant`) was made from; other names as they are."""
    return name.split("~", 1)[0]


def variant_lines(results: Sequence[ClipResult]) -> list[str]:
    """Per made scene run in several variants: its verdicts, variant by variant, and how many are OK
    (scored scenes only); then one line over all of them."""
    groups: dict[str, list[ClipResult]] = {}
    for r in results:
        groups.setdefault(base_name(r.name), []).append(r)
    lines, ok, runs = [], 0, 0
    for name, rs in groups.items():
        if len(rs) < 2 or rs[0].role not in ("fire", "lookalike"):
            continue
        good = sum(1 for r in rs if r.verdict == "OK")
        ok, runs = ok + good, runs + len(rs)
        verdicts = " ".join(r.verdict for r in rs)
        lines.append(f"{name:<28} {rs[0].split:<5} {rs[0].kind:<19} {good}/{len(rs)} OK: {verdicts}")
    if runs:
        lines.append(f"made scenes in variants: {ok}/{runs} runs OK")
    return lines


def row(r: ClipResult) -> str:
    return (
        f"{r.name:<58} {r.split:<5} {r.kind:<19} {_s(r.first_flame_s):>7} {_s(r.provisional_after_s):>6} "
        f"{_s(r.confirmed_after_s):>6} {r.false_events:>5} {r.retractions:>4} {100 * r.run_share:>5.1f}%  "
        f"{r.verdict}"
    )

"""Tripwires and zone occupancy (issue 11, items 1 and 2).

First on sequences the tests make (a track jittering on a line, crossing in and out, passing beyond a
line's end, found again under a new id, midnight), then on the real one-by-one people clip with the real
model, then `edge run` on a real mosquitto: retained line counts and occupancy, and a quick question
answered from the occupancy.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta
from pathlib import Path

import jsonschema
import pytest
from pydantic import ValidationError

from edge.capture import open_source
from edge.config import EdgeConfig
from edge.config.models import CameraConfig, EventsConfig, LineConfig, ModelConfig, RuleConfig
from edge.live import LiveView
from edge.redloop import RedLoop
from edge.rules import EventMachine, Rule, Track, Transition
from edge.rules.lines import LINE_BAND, Crossing, LineCounter, local_iso, side_of
from edge.types import Frame
from edge.wiring import build_rules, load_detector
from tests.conftest import DATA, MODEL, REPO, needs_shared
from tests.support import Mosquitto, Subscriber, wait_until

W = H = 1000
"""Frame size of the made-up sequences: band = LINE_BAND * 1000 = 15 px = 0.015 relative."""
ACROSS = LineConfig(points=[(0.2, 0.5), (0.8, 0.5)])
"""Left to right across the middle: its left side is up, so "in" is walking down the picture."""


class Walker:
    """A made-up tracked person whose feet the test moves, one look per step."""

    def __init__(self, tid: int, pts: float = 0.0) -> None:
        self.track = Track(tid, "person", (0, 0, 0, 0), 0.9, pts, pts)

    def at(self, x: float, y: float, pts: float) -> Track:
        # A 40 x 200 px box (diagonal 204 px) standing on (x, y).
        self.track.box = (x * W - 20, y * H - 200, x * W + 20, y * H)
        self.track.last_pts = pts
        return self.track


def walk(
    counter: LineCounter, path: list[tuple[float, float]], tid: int = 1, t0: float = 0.0
) -> list[Crossing]:
    walker = Walker(tid, t0)
    out: list[Crossing] = []
    for i, (x, y) in enumerate(path):
        out += counter.step([walker.at(x, y, t0 + i * 0.1)], t0 + i * 0.1, W, H)
    return out


def counter(line: LineConfig = ACROSS, clock=lambda: 1_750_000_000.0, **kw) -> LineCounter:
    return LineCounter({"gate": line}, max_age_s=3.0, clock=clock, **kw)


# -- geometry and hysteresis --------------------------------------------------------------------------


def test_sides_follow_the_documented_convention() -> None:
    line = [(200.0, 500.0), (800.0, 500.0)]
    assert side_of((500, 300), line) == (-1, 200)  # above a left-to-right line: its left
    assert side_of((500, 700), line) == (1, 200)
    assert side_of((900, 500), line)[1] == 100  # beyond the end: distance to the end point
    # The L used on the people clip: the corner's outer wedge is one side for both segments.
    ell = [(720.0, 700.0), (720.0, 955.0), (250.0, 955.0)]
    assert side_of((750, 980), ell)[0] == side_of((760, 900), ell)[0] == side_of((500, 990), ell)[0] == -1
    assert side_of((600, 900), ell)[0] == 1


def test_a_track_jittering_on_the_line_counts_once_or_not_at_all() -> None:
    band = LINE_BAND
    # Up to the line, then long jitter inside the band, with one-look spikes clearly over it either way.
    approach = [(0.5, 0.3), (0.5, 0.4)]
    jitter = [(0.5, 0.5 + (band * 0.8 if i % 2 else -band * 0.8)) for i in range(30)]
    spikes = [(0.5, 0.53), (0.5, 0.5), (0.5, 0.47), (0.5, 0.53), (0.5, 0.47)]
    stays = counter()
    assert walk(stays, approach + jitter + spikes + jitter + [(0.5, 0.45), (0.5, 0.35)]) == []
    assert stays.counts()[("gate", "person")]["in"] == 0
    through = counter()
    crossed = walk(through, approach + jitter + spikes + jitter + [(0.5, 0.6), (0.5, 0.7), (0.5, 0.8)])
    assert [c.direction for c in crossed] == ["in"]
    assert through.counts()[("gate", "person")] | {"since": None} == {"in": 1, "out": 0, "since": None}
    # Over and back, each side held only one look at a time, all the way: never a crossing.
    flapping = counter()
    assert walk(flapping, approach + [(0.5, 0.47 if i % 2 else 0.53) for i in range(40)]) == []


def test_in_then_out_counts_one_each_and_only_the_lines_labels_are_counted() -> None:
    said: list[tuple[str, str, dict]] = []
    c = counter(on_counts=lambda line, label, n: said.append((line, label, dict(n))))
    crossed = walk(c, [(0.4, 0.3), (0.4, 0.45), (0.4, 0.55), (0.4, 0.7), (0.4, 0.7), (0.45, 0.6), (0.45, 0.4),
                       (0.45, 0.3)])  # fmt: skip
    assert [(x.direction, x.line, x.label, x.track.id) for x in crossed] == [
        ("in", "gate", "person", 1),
        ("out", "gate", "person", 1),
    ]
    assert [(n["in"], n["out"]) for _, _, n in said] == [(1, 0), (1, 1)]
    car = Track(7, "car", (380, 200, 420, 300), 0.9, 0.0, 0.0)
    for i, y in enumerate((300, 400, 600, 700, 800)):
        car.box = (380, y - 100, 420, y)
        assert c.step([car], 10 + i * 0.1, W, H) == []  # not a label of the line
    c.watch({"gate": ["car"], "nope": ["dog"]})  # a crossing rule on cars: found, not counted
    assert c.labels == {"person", "car"}
    car2 = Walker(8, 20.0)
    car2.track.label = "car"
    found = [
        x
        for i, y in enumerate((0.3, 0.4, 0.6, 0.7))
        for x in c.step([car2.at(0.4, y, 20 + i / 10)], 20 + i / 10, W, H)
    ]
    assert [(x.label, x.direction) for x in found] == [("car", "in")]
    assert set(c.counts()) == {("gate", "person")}


def test_only_the_segment_counts_not_a_track_passing_beyond_its_end() -> None:
    c = counter()
    assert walk(c, [(0.9, 0.3), (0.9, 0.4), (0.9, 0.6), (0.9, 0.7), (0.9, 0.8)]) == []  # past x = 0.8
    # Round the end: from above, out beyond it, and back under it.
    assert walk(c, [(0.7, 0.3), (0.85, 0.45), (0.9, 0.5), (0.85, 0.55), (0.7, 0.7), (0.7, 0.8)], tid=2) == []
    # Just inside the end it is a crossing.
    assert [x.direction for x in walk(c, [(0.79, 0.3), (0.79, 0.45), (0.79, 0.55), (0.79, 0.7)], tid=3)] == [
        "in"
    ]
    assert c.counts()[("gate", "person")]["in"] == 1


def test_a_track_found_again_under_a_new_id_is_neither_counted_twice_nor_missed() -> None:
    c = counter()
    crossed = walk(c, [(0.5, 0.3), (0.5, 0.4), (0.5, 0.6), (0.5, 0.62)], tid=1)  # in, then lost
    assert [x.direction for x in crossed] == ["in"]
    # A new id where track 1 vanished, a little further on: the same person, already in.
    again = walk(c, [(0.5, 0.64), (0.5, 0.7), (0.5, 0.8)], tid=2, t0=1.0)
    assert again == []
    # Lost just before the line (clearly above it), found just after it under a new id: one crossing.
    walk(c, [(0.3, 0.3), (0.3, 0.47)], tid=3, t0=5.0)
    assert [x.direction for x in walk(c, [(0.3, 0.53), (0.3, 0.6)], tid=4, t0=5.5)] == ["in"]
    assert c.counts()[("gate", "person")]["in"] == 2
    # Far from where anyone vanished, a new track has no side until it shows one.
    assert walk(c, [(0.7, 0.9), (0.7, 0.85)], tid=5, t0=6.0) == []


def test_counts_start_again_at_local_midnight() -> None:
    evening = datetime(2025, 3, 29, 23, 59, 0)  # the night before a DST change in much of Europe
    now = [evening.timestamp()]
    said: list[dict] = []
    c = counter(clock=lambda: now[0], on_counts=lambda line, label, n: said.append(dict(n)))
    started = local_iso(evening.timestamp())
    assert c.counts()[("gate", "person")] == {"in": 0, "out": 0, "since": started}  # counting began at start
    walk(c, [(0.5, 0.3), (0.5, 0.4), (0.5, 0.6), (0.5, 0.7)])
    assert said[-1] == {"in": 1, "out": 0, "since": started}
    changes = c.changes  # what the live view's lines are built again on
    assert not c.tick() and c.changes == changes
    now[0] = (evening + timedelta(minutes=1, seconds=5)).timestamp()
    assert c.tick() and c.changes > changes
    midnight = datetime(2025, 3, 30).timestamp()
    assert said[-1] == {"in": 0, "out": 0, "since": local_iso(midnight)}
    since = datetime.fromisoformat(str(said[-1]["since"]))
    assert since.timestamp() == midnight and since.utcoffset() is not None
    walk(c, [(0.5, 0.8), (0.5, 0.7), (0.5, 0.4), (0.5, 0.3)], tid=9, t0=50.0)
    assert said[-1] == {"in": 0, "out": 1, "since": local_iso(midnight)}
    now[0] = datetime(2025, 3, 31, 0, 0, 1).timestamp()
    walk(c, [(0.5, 0.8)], tid=10, t0=60.0)  # step() itself notices the new day
    assert said[-1]["since"] == local_iso(datetime(2025, 3, 31).timestamp()) and said[-1]["out"] == 0


def test_line_payload_matches_its_schema() -> None:
    schema = json.loads((REPO / "edge" / "outbox" / "schemas" / "line.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    check = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
    payload = {"v": 1, **counter().counts()[("gate", "person")]}
    assert check.is_valid(payload), list(check.iter_errors(payload))
    assert not check.is_valid({**payload, "in": -1})


# -- crossing rules -----------------------------------------------------------------------------------


def machine(*rules: RuleConfig, line: LineConfig = ACROSS) -> EventMachine:
    return EventMachine("gatecam", [Rule(r) for r in rules], EventsConfig(), clock=lambda: 1_750_000_000.0,
                        lines={"gate": line})  # fmt: skip


def run_crossings(
    em: EventMachine, path: list[tuple[float, float]], line: LineConfig = ACROSS
) -> list[Transition]:
    """One person's walk through the line counter and the event machine, a look every 0.1 s, then 3 s
    of nobody."""
    c = counter(line)
    walker = Walker(1)
    out: list[Transition] = []
    for i, (x, y) in enumerate(path):
        pts = i * 0.1
        seen = [walker.at(x, y, pts)]
        out += em.step(seen, i, pts, W, H, c.step(seen, pts, W, H))
    for j in range(30):
        pts = (len(path) + j) * 0.1
        out += em.step([], len(path) + j, pts, W, H, c.step([], pts, W, H))
    return out


IN_AND_OUT = [(0.5, 0.3), (0.5, 0.4), (0.5, 0.6), (0.5, 0.7), (0.5, 0.7), (0.5, 0.7), (0.5, 0.4), (0.5, 0.3),
              (0.5, 0.3)]  # fmt: skip
"""In at look 3 (pts 0.3: the second look below the line), out at look 7."""


def test_an_in_rule_alerts_on_the_way_in_only_once_per_crossing() -> None:
    em = machine(RuleConfig(name="came-in", label="person", line="gate", direction="in"))
    trs = run_crossings(em, IN_AND_OUT)
    assert [(t.kind, t.frame) for t in trs] == [("start", 3), ("alert", 3), ("end", 23)]  # ends 2 s later
    alert = trs[1].alert
    assert (
        alert is not None and alert.text == "Person crossed gate (in) on gatecam" and alert.rule == "came-in"
    )
    assert trs[0].event.track_id == 1 and trs[2].event.ended_at is not None


def test_a_rule_takes_the_lines_direction_unless_it_says_and_both_alerts_each_way() -> None:
    outward = LineConfig(points=ACROSS.points, direction="out")
    trs = run_crossings(
        machine(RuleConfig(name="left", label="person", line="gate"), line=outward), IN_AND_OUT
    )
    assert [(t.kind, t.frame) for t in trs if t.kind != "end"] == [("start", 7), ("alert", 7)]
    both = machine(
        RuleConfig(name="any-way", label="person", line="gate", direction="both", text="{direction}!")
    )
    trs = run_crossings(both, IN_AND_OUT)
    assert [(t.alert.text, t.frame) for t in trs if t.alert is not None] == [("in!", 3), ("out!", 7)]
    assert [t.kind for t in trs].count("end") == 2
    car_rule = machine(RuleConfig(name="car-in", label="car", line="gate", direction="in"))
    assert run_crossings(car_rule, IN_AND_OUT) == []  # a person crossing is no car
    elsewhere = EventMachine(
        "gatecam", [Rule(RuleConfig(name="x", label="person", line="other"))], EventsConfig()
    )
    assert run_crossings(elsewhere, IN_AND_OUT) == []  # a line this camera lacks never crosses


def test_line_settings_are_checked_with_one_line_errors() -> None:
    with pytest.raises(ValidationError, match="a line needs at least 2 points"):
        LineConfig(points=[(0.1, 0.1)])
    with pytest.raises(ValidationError, match=r"line point \(1.5, 0.2\) is outside 0..1"):
        LineConfig(points=[(0.1, 0.1), (1.5, 0.2)])
    with pytest.raises(ValidationError, match="an area, not an object"):
        LineConfig(points=[(0.1, 0.1), (0.5, 0.2)], labels=["fire"])
    with pytest.raises(ValidationError, match="a zone or a line, not both"):
        RuleConfig(name="r", label="person", line="gate", zone=[(0, 0), (1, 0), (1, 1)])
    with pytest.raises(ValidationError, match="direction is for a rule with a line"):
        RuleConfig(name="r", label="person", direction="in")
    with pytest.raises(ValidationError, match="line name 'Side Gate' must be"):
        CameraConfig(source="x.mp4", lines={"Side Gate": ACROSS})
    cams = {
        "front": CameraConfig(source="a.mp4", lines={"side-gate": ACROSS}),
        "back": CameraConfig(source="b.mp4"),
    }
    with pytest.raises(ValidationError) as info:
        EdgeConfig(cameras=cams, rules=[RuleConfig(name="r", label="person", line="side-gate")])
    assert "rule 'r' watches line 'side-gate', which 'back' lacks (no lines of back configured)" in str(
        info.value
    )
    with pytest.raises(ValidationError, match="did you mean 'side-gate'"):
        EdgeConfig(
            cameras=cams, rules=[RuleConfig(name="r", label="person", line="side-gat", cameras=["front"])]
        )
    EdgeConfig(
        cameras=cams, rules=[RuleConfig(name="r", label="person", line="side-gate", cameras=["front"])]
    )


def test_a_camera_without_lines_or_zones_does_none_of_that_work() -> None:
    cfg = EdgeConfig(cameras={"c": CameraConfig(source="x.mp4")}, watch=["fire"])
    loop = RedLoop("c", cfg, [Rule(r) for r in [RuleConfig(name="fire", label="fire")]], None, [])
    assert loop.lines is None and loop.zones == {} and loop.occupancy == {}


# -- the real clip ------------------------------------------------------------------------------------

PEOPLE = DATA / "people" / "intel_one-by-one-person-detection.mp4"
VISITS = [(61, 194), (228, 445), (506, 694), (745, 865), (925, 1196), (1235, 1358)]
"""Person visits in the one-by-one clip, from ground_truth.json's notes (frames, +-10): tests/test_scan.py."""
WALKWAY = LineConfig(points=[(0.72, 0.70), (0.72, 0.955), (0.25, 0.955)])
"""People come in from the bottom edge (from under the camera) to the table, and leave to the right.
The line runs down at x = 0.72, right of where they stand, to just above the bottom edge (y = 0.955),
then left along the floor to x = 0.25: coming to the table crosses its bottom part ("in": its right
side is the table's), leaving crosses its upright part ("out")."""
TABLE = [(0.4, 0.75), (0.72, 0.75), (0.72, 0.955), (0.4, 0.955)]
"""The zone inside the line: the floor in front of the table."""


class ClipRun:
    def __init__(self) -> None:
        self.transitions: list[Transition] = []
        self.lines: list[tuple[int, str, str, dict]] = []
        self.occupancy: list[tuple[int, dict]] = []
        self.live_behind: list[int] = []
        """Frames after which the live view's line counts or occupancy were not the red loop's."""
        self.live_lines: dict[str, tuple[int, int]] = {}
        """The live view's walkway counts at the end."""


@pytest.fixture(scope="module")
def clip_run() -> ClipRun:
    """The red loop in-process over the clip (as tests/test_scan.py runs it), gate on: a crossing rule
    on the walkway line, the line counting people, a zone by the table."""
    if not MODEL.exists():
        pytest.skip("test media and model not found")
    camera = CameraConfig(source=str(PEOPLE), lines={"walkway": WALKWAY}, zones={"table": TABLE})
    cfg = EdgeConfig(
        cameras={"c": camera},
        watch=["person"],
        rules=[RuleConfig(name="came-in", label="person", line="walkway", direction="in")],
        model=ModelConfig(path=str(MODEL)),
    )
    rules = build_rules(cfg, REPO)
    run = ClipRun()

    class Record:
        def handle(self, tr: Transition, frame: Frame) -> None:
            run.transitions.append(tr)

    live = LiveView()
    loop = RedLoop("c", cfg, rules, load_detector(cfg, REPO, rules), [Record()], live=live)
    loop.on_lines = lambda cam, line, label, n: run.lines.append(
        (loop.last_frame.index, line, label, dict(n))
    )
    loop.on_occupancy = lambda cam, occ: run.occupancy.append((loop.last_frame.index, occ))
    source = open_source(str(PEOPLE))
    while (item := source.read()) is not None:
        loop.process(Frame("c", item[0], item[1], item[2], time.monotonic()))
        view = live.get("c")
        assert view is not None and loop.lines is not None
        if view.at:  # a look was published: it says what the loop knows after it
            shown = {(lv.name, label): n for lv in view.lines for label, n in lv.counts.items()}
            if shown != loop.lines.totals() or view.occupancy != loop.occupancy:
                run.live_behind.append(item[0])
    loop.finish()
    run.live_lines = next(lv.counts for lv in live.get("c").lines if lv.name == "walkway")
    return run


@needs_shared
def test_each_visit_crosses_the_walkway_in_and_out_exactly_once(clip_run: ClipRun) -> None:
    changes = [(frame, n["in"], n["out"]) for frame, line, label, n in clip_run.lines]
    assert {(line, label) for _, line, label, _ in clip_run.lines} == {("walkway", "person")}
    assert [(i, o) for _, i, o in changes] == [(k // 2 + k % 2, k // 2) for k in range(1, 13)], changes
    for k, (first, last) in enumerate(VISITS):
        came, went = changes[2 * k][0], changes[2 * k + 1][0]
        assert first - 10 <= came <= first + 40, (k, came, first)  # in: at the table
        assert last - 40 <= went <= last + 10, (k, went, last)  # out: on the way out to the right


@needs_shared
def test_an_in_rule_alerts_once_per_visit_on_the_way_in(clip_run: ClipRun) -> None:
    alerts = [t for t in clip_run.transitions if t.kind == "alert"]
    ins = [frame for frame, _, _, n in clip_run.lines if n["in"] > n["out"]]  # the frames "in" went up
    assert len(alerts) == len(ins) == len(VISITS)
    assert [t.frame for t in alerts] == ins
    assert all(t.alert is not None and t.alert.text == "Person crossed walkway (in) on c" for t in alerts)
    starts = [t for t in clip_run.transitions if t.kind == "start"]
    ends = [t for t in clip_run.transitions if t.kind == "end"]
    assert [t.event.id for t in starts] == [t.event.id for t in ends] == [t.event.id for t in alerts]
    assert all(1.9 <= e.pts - s.pts <= 2.6 for s, e in zip(starts, ends, strict=True))


@needs_shared
def test_the_live_view_shows_the_line_counts_and_occupancy_of_the_latest_look(clip_run: ClipRun) -> None:
    """Its lines are built again only when a count changed, its occupancy is the loop's own: neither
    falls behind."""
    assert clip_run.live_behind == []
    assert clip_run.live_lines == {"person": (len(VISITS), len(VISITS))}


@needs_shared
def test_zone_occupancy_follows_the_visits_without_flapping(clip_run: ClipRun) -> None:
    people = [(frame, occ["table"]["person"]) for frame, occ in clip_run.occupancy]
    assert [n for _, n in people] == [1, 0] * len(VISITS), people
    for (arrive, _), (leave, _), (first, last) in zip(people[::2], people[1::2], VISITS, strict=True):
        assert first <= arrive <= first + 40 and last - 40 <= leave <= last + 20, (arrive, leave, first, last)


# -- edge run on a real broker ------------------------------------------------------------------------


def ask(sub: Subscriber, ask_id: str, text: str) -> dict:
    """Ask over MQTT; the final answer (after the "Please wait a moment." ack)."""
    sub.publish("reflex/dev1/ask", json.dumps({"id": ask_id, "text": text}))

    def final() -> list[dict]:
        return [a for a in sub.json_on("reflex/dev1/answers") if a.get("id") == ask_id and a["kind"] != "ack"]

    assert wait_until(lambda: bool(final()), 10), sub.json_on("reflex/dev1/answers")
    return final()[0]


@needs_shared
def test_retained_occupancy_and_line_counts_on_mqtt_and_a_quick_question(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    config = {
        "device": {"id": "dev1"},
        "data_dir": str(tmp_path / "data"),
        "model": {"path": str(MODEL)},
        "cameras": {"dock": {"source": str(PEOPLE), "lines": {"walkway": WALKWAY.model_dump(mode="json")},
                             "zones": {"loading_dock": [list(p) for p in TABLE]}}},
        "watch": ["person"],
        "rules": [{"name": "came-in", "label": "person", "line": "walkway", "direction": "in"}],
        "mqtt": {"url": mosquitto.url, "stats_every_s": 1.0},
    }  # fmt: skip
    occupancy, line = "reflex/dev1/dock/zone/loading_dock/person", "reflex/dev1/dock/line/walkway/person"
    sub = Subscriber(mosquitto.port, ["reflex/dev1/#"])
    try:
        check_counts_occupancy_and_restart(sub, mosquitto.port, config, tmp_path, (occupancy, line))
    finally:
        sub.close()


def check_counts_occupancy_and_restart(
    sub: Subscriber, port: int, config: dict, tmp_path: Path, topics: tuple[str, str]
) -> None:
    from tests.test_bus import Edge

    occupancy, line = topics
    edge = Edge.running(config, tmp_path)
    try:
        assert wait_until(lambda: sub.last(occupancy) == b"0" and sub.last(line) is not None, 30), edge.text()
        first = json.loads(sub.last(line))
        assert (first["v"], first["in"], first["out"]) == (1, 0, 0)
        assert datetime.fromisoformat(first["since"]).tzinfo is not None
        # The first visitor reaches the table about 7 s into the clip.
        assert wait_until(lambda: sub.last(occupancy) == b"1", 30), edge.text()
        answer = ask(sub, "q1", "how many people are in the loading dock?")
        assert answer["text"] == "I see 1 person in the loading dock on dock now.", answer
        assert answer["data"]["zone"] == "loading_dock" and answer["data"]["counts"] == {"dock": 1}
        # Gone after the first visit (the clip's frame 194): in 1, out 1, nobody in the zone.
        assert wait_until(lambda: json.loads(sub.last(line))["out"] == 1, 30), edge.text()
        assert json.loads(sub.last(line))["in"] == 1 and wait_until(lambda: sub.last(occupancy) == b"0", 5)
        counted = ask(sub, "q2", "how many people came in through the walkway today?")
        assert counted["text"].startswith("1 person came in through the walkway on dock since "), counted
        assert (counted["data"]["in"], counted["data"]["out"]) == (1, 1)
        alerts = [a for a in sub.json_on("reflex/dev1/alerts") if a["rule"] == "came-in"]
        assert [a["text"] for a in alerts] == ["Person crossed walkway (in) on dock"]
        late = Subscriber(port, [occupancy, line], client_id="late")
        try:  # retained: a subscriber that comes later still finds both
            assert wait_until(lambda: late.last(occupancy) == b"0" and late.last(line) is not None, 5)
            assert all(retained for _, _, retained in late.messages)
        finally:
            late.close()
    finally:
        assert edge.stop() == 0
    # A restart does not zero the day's counts: the clip starts again, and its first visitor is the
    # day's second one in, counted since the same moment.
    edge = Edge.running(config, tmp_path)
    try:
        assert wait_until(lambda: json.loads(sub.last(line))["in"] == 2, 40), edge.text()
        again = json.loads(sub.last(line))
        assert (again["out"], again["since"]) == (1, first["since"]), again
    finally:
        assert edge.stop() == 0


def test_the_days_counts_are_taken_back_after_a_restart_but_not_the_day_befores() -> None:
    now = [datetime(2025, 6, 1, 15, 0).timestamp()]
    c = counter(clock=lambda: now[0])
    walk(c, [(0.5, 0.3), (0.5, 0.4), (0.5, 0.6), (0.5, 0.7)])
    kept = json.loads(json.dumps(c.stored()))  # as the event log keeps it: JSON
    now[0] += 3600  # an hour later, the same day: taken back, counted since the first start
    again = counter(clock=lambda: now[0])
    assert again.changes == 0
    assert again.restore(kept) and again.changes > 0  # the live view's lines are built again
    assert again.counts()[("gate", "person")] == {"in": 1, "out": 0, "since": local_iso(kept["since"])}
    now[0] = datetime(2025, 6, 2, 0, 0, 5).timestamp()  # after midnight: yesterday's are not today's
    tomorrow = counter(clock=lambda: now[0])
    assert not tomorrow.restore(kept) and tomorrow.counts()[("gate", "person")]["in"] == 0
    now[0] = datetime(2025, 6, 1, 16, 0).timestamp()
    other = counter(LineConfig(points=[(0.0, 0.5), (1.0, 0.5)], labels=["car"]), clock=lambda: now[0])
    assert other.restore(kept)  # a line whose labels changed: the new label starts at 0
    assert other.counts()[("gate", "car")]["in"] == 0
    assert not counter(clock=lambda: now[0]).restore({"since": "soon", "counts": []})


def test_a_question_about_a_zone_names_it() -> None:
    from edge.instructions.parse import Context, parse

    zones = {"dock": {"loading_dock": TABLE, "side-gate": TABLE}}
    ctx = Context(frozenset({"person", "car"}), ("dock", "lobby"), zones)
    d = parse("how many people are in the loading dock?", None, ctx)
    assert (d.kind, d.form, d.label, d.cameras, d.zone) == (
        "question",
        "count",
        "person",
        ["dock"],
        "loading_dock",
    )
    assert d.summary == "count person in the loading dock on dock now"
    assert parse("is anyone at the side gate?", None, ctx).zone == "side-gate"
    assert parse("how many people are in the lobby?", None, ctx).zone is None


def test_the_live_view_draws_zones_and_lines_with_their_numbers() -> None:
    import cv2
    import numpy as np

    from edge.admin.draw import LINE_COLOUR, ZONE_COLOUR, live_jpeg, overlay
    from edge.live import CameraView, Keyframe, LineView

    black = np.zeros((360, 640, 3), np.uint8)
    bare = CameraView("c", at=1.0, width=1280, height=720)
    assert overlay(black, bare) is black  # no lines, no zones: nothing drawn, nothing copied
    view = CameraView(
        "c",
        at=1.0,
        width=1280,
        height=720,
        zones={"dock": [(0.1, 0.1), (0.4, 0.1), (0.4, 0.4), (0.1, 0.4)]},
        occupancy={"dock": {"person": 2}},
        lines=(LineView("gate", ((0.2, 0.7), (0.8, 0.7)), {"person": (3, 1)}),),
    )
    picture = cv2.imdecode(
        np.frombuffer(live_jpeg(Keyframe(1.0, 0.0, 0, black), view), np.uint8), cv2.IMREAD_COLOR
    )

    def near(x: float, y: float, colour: tuple[int, int, int]) -> bool:
        patch = picture[round(y * 359) - 1 : round(y * 359) + 2, round(x * 639) - 1 : round(x * 639) + 2]
        return bool((np.abs(patch.reshape(-1, 3).astype(int) - colour).max(axis=1) < 110).any())  # JPEG

    assert near(0.6, 0.7, LINE_COLOUR) and near(0.4, 0.25, ZONE_COLOUR)
    # The arrow crosses the first segment's middle towards its right side (down here): the "in" way.
    assert near(0.5, 0.74, LINE_COLOUR) and not near(0.5, 0.6, LINE_COLOUR)
    assert near(0.509, 0.738, LINE_COLOUR) and not near(0.509, 0.655, LINE_COLOUR)  # its head is down there
    assert not near(0.6, 0.5, LINE_COLOUR) and not near(0.6, 0.5, ZONE_COLOUR)


def test_a_question_about_a_line_names_it_and_the_way() -> None:
    from edge.instructions.parse import Context, parse

    ctx = Context(frozenset({"person", "car"}), ("dock", "lobby"), lines={"dock": ("side-gate", "walkway")})
    d = parse("how many people came in through the side gate today?", None, ctx)
    assert (d.kind, d.form, d.label, d.cameras, d.line) == (
        "question",
        "line_in",
        "person",
        ["dock"],
        "side-gate",
    )
    assert parse("how many cars left through the walkway?", None, ctx).form == "line_out"
    assert parse("how many people crossed the walkway?", None, ctx).form == "line_both"
    assert parse("how many people came in today?", None, ctx).kind == "memory"  # no line named


def test_a_crossing_rule_is_said_back_with_its_line_and_way() -> None:
    from edge.instructions.parse import rule_words

    cfg = RuleConfig(name="came-in", label="person", line="side-gate", direction="in", cameras=["dock"])
    assert (
        rule_words(cfg.model_dump(mode="json"))
        == "I will alert you when I see someone cross the side gate (in) on dock."
    )


def test_a_lines_labels_must_be_known(tmp_path: Path) -> None:
    from edge.config import ConfigError

    line = LineConfig(points=[(0.1, 0.5), (0.9, 0.5)], labels=["person", "unicorn"])
    cfg = EdgeConfig(cameras={"c": CameraConfig(source="x.mp4", lines={"gate": line})}, watch=["person"])
    with pytest.raises(ConfigError, match=r"cameras.c.lines.gate.labels.1: unknown label 'unicorn'"):
        build_rules(cfg, REPO)

"""Tracker, rules and the event state machine: one happening is one event, alerts when they should."""

from __future__ import annotations

from datetime import datetime, time

from edge.config.models import EventsConfig, FireConfig, RuleConfig, Schedule
from edge.rules import EventMachine, Rule, Tracker, Transition, default_rules
from edge.types import Detection

W, H = 1000, 500


def person(x: float, y: float = 200, score: float = 0.8, w: float = 60, h: float = 150) -> Detection:
    return Detection("person", score, (x, y, x + w, y + h))


class Scene:
    """Feeds detections frame by frame at a given fps through the tracker and event machine."""

    def __init__(self, rules: list[RuleConfig], fps: float = 10, clock: float = 1_700_000_000.0, **events):
        cfg = EventsConfig(**events)
        self.fps = fps
        self.tracker = Tracker(cfg.end_after_s)
        self.machine = EventMachine("door", [Rule(r) for r in rules], cfg, clock=lambda: self.now)
        self.now = clock
        self.frame = 0
        self.out: list[Transition] = []

    def step(self, detections: list[Detection]) -> list[Transition]:
        pts = self.frame / self.fps
        seen = self.tracker.update(detections, pts)
        got = self.machine.step(seen, self.frame, pts, W, H)
        self.out.extend(got)
        self.frame += 1
        self.now += 1 / self.fps
        return got

    def run(self, detections_per_frame: list[list[Detection]]) -> None:
        for dets in detections_per_frame:
            self.step(dets)

    def finish(self) -> None:
        self.out.extend(self.machine.finish(self.frame - 1, (self.frame - 1) / self.fps))

    def kinds(self, kind: str) -> list[Transition]:
        return [t for t in self.out if t.kind == kind]


def walk(
    frames: int, start_x: float = 0, speed: float = 8, gaps: tuple[int, ...] = ()
) -> list[list[Detection]]:
    return [[] if i in gaps else [person(start_x + speed * i)] for i in range(frames)]


def test_person_walking_through_with_missed_frames_is_one_event_and_one_alert() -> None:
    s = Scene([RuleConfig(name="person", label="person")])
    s.run(walk(100, gaps=(10, 11, 12, 40, 41, 42, 43, 44, 45, 46, 47)) + [[]] * 40)
    s.finish()
    assert len(s.kinds("start")) == 1
    assert len(s.kinds("end")) == 1
    assert len(s.kinds("alert")) == 1
    assert s.kinds("start")[0].frame == 1  # min_hits=2: the second sighting starts it


def test_two_visits_far_apart_are_two_events() -> None:
    s = Scene([RuleConfig(name="person", label="person")])
    s.run(walk(30) + [[]] * 50 + walk(30))
    s.finish()
    assert len(s.kinds("start")) == 2
    assert len({t.event.id for t in s.kinds("alert")}) == 2


def test_single_frame_fluke_never_alerts() -> None:
    s = Scene([RuleConfig(name="person", label="person")])
    s.run([[person(100)]] + [[]] * 50 + [[person(700)]] + [[]] * 50)
    assert s.out == []


def test_min_score_min_area_and_zone() -> None:
    zone = [(0.5, 0.0), (1.0, 0.0), (1.0, 1.0), (0.5, 1.0)]  # right half of the picture
    s = Scene([RuleConfig(name="right", label="person", min_score=0.6, min_area=0.01, zone=zone)])
    s.run([[person(100)]] * 10)  # left half: outside the zone
    s.run([[person(700, score=0.5)]] * 10)  # inside, too unsure
    s.run([[person(700, w=10, h=10)]] * 10)  # inside, too small (100 px < 1% of 500k)
    assert s.out == []
    s.run([[person(700)]] * 5)
    starts = s.kinds("start")
    assert len(starts) == 1 and starts[0].event.zones == ["right"]


def test_dwell_time_delays_the_event() -> None:
    s = Scene([RuleConfig(name="loiter", label="person", dwell_s=2.0)])
    s.run([[person(300)]] * 30)
    assert s.kinds("start")[0].frame == 20


def test_schedule_outside_hours_gives_nothing() -> None:
    monday_noon = datetime(2026, 11, 23, 12, 0).timestamp()
    night = [Schedule(days=["mon"], start=time(22, 0), end=time(6, 0))]
    s = Scene([RuleConfig(name="night", label="person", schedule=night)], clock=monday_noon)
    s.run(walk(20))
    assert s.out == []
    monday_late = datetime(2026, 11, 23, 23, 30).timestamp()
    s = Scene([RuleConfig(name="night", label="person", schedule=night)], clock=monday_late)
    s.run(walk(20))
    assert len(s.kinds("alert")) == 1


def test_cooldown_suppresses_alerts_of_new_events_but_keeps_the_events() -> None:
    s = Scene([RuleConfig(name="person", label="person", cooldown_s=60)])
    s.run(walk(20) + [[]] * 40 + walk(20) + [[]] * 40)
    assert len(s.kinds("start")) == 2
    assert len(s.kinds("alert")) == 1


def test_repeat_while_the_event_lasts_and_fire_defaults() -> None:
    rules = default_rules(["fire"], FireConfig())
    s = Scene(rules, fps=10)
    flame = [[Detection("fire", 0.9, (400 + (i % 3), 200, 480, 300), "fire")] for i in range(350)]
    s.run(flame)
    s.finish()
    assert len(s.kinds("start")) == 1
    alerts = [t for t in s.kinds("alert") if t.verdict is None]
    assert [a.frame for a in alerts] == [1, 101, 201, 301]  # fire repeats every 10 s
    assert alerts[0].alert is not None and alerts[0].alert.severity == "critical"
    assert alerts[0].alert.text.startswith("Fire!")
    # Verified on the device: provisional at once, the same alert confirmed once it held for 1.5 s,
    # and the repeats carry the phase.
    (verdict,) = [t for t in s.kinds("alert") if t.verdict is not None]
    assert verdict.alert is not None and verdict.frame == 16 and verdict.alert.id == alerts[0].alert.id
    assert [a.alert.phase for a in alerts if a.alert] == ["provisional"] + ["confirmed"] * 3
    assert verdict.alert.phase == "confirmed"
    assert verdict.alert.text == "Fire! Flames seen on door (confirmed)"
    assert all(a.alert and a.alert.text.endswith("(confirmed)") for a in alerts[1:])


def test_fire_regions_that_move_and_split_stay_one_event() -> None:
    s = Scene(default_rules(["fire"], FireConfig()))
    frames = []
    for i in range(100):
        boxes = [(100 + i, 100, 150 + i, 180)] if i % 2 else [(100, 100, 130, 150), (300, 90, 360, 200)]
        frames.append([Detection("fire", 0.8, b, "fire") for b in boxes])
    s.run(frames)
    assert len(s.kinds("start")) == 1


def test_stationary_object_is_not_re_alerted() -> None:
    rules = [RuleConfig(name="car", label="car", repeat_s=5)]
    s = Scene(rules, stationary_after_s=3.0, end_after_s=2.0)
    car = Detection("car", 0.9, (500, 100, 700, 250))
    s.run([[car]] * 100)  # parked for 10 s: no repeats once stationary after 3 s
    assert len(s.kinds("alert")) == 1
    s.run([[]] * 30)  # occluded: the event ends
    s.run([[car]] * 50)  # seen again in the same place: not news
    assert len(s.kinds("start")) == 1
    assert len(s.kinds("alert")) == 1


def test_id_switch_keeps_the_same_event() -> None:
    s = Scene([RuleConfig(name="person", label="person")])
    s.run(walk(20, start_x=0, speed=5))
    # The detector loses the person for 5 frames and finds them again a bit further on:
    s.run([[]] * 5 + walk(20, start_x=160, speed=5))
    s.finish()
    assert len(s.kinds("start")) == 1
    assert len(s.kinds("end")) == 1


def test_two_people_at_once_are_two_events() -> None:
    s = Scene([RuleConfig(name="person", label="person")])
    s.run([[person(100 + 5 * i), person(800 - 5 * i)] for i in range(30)])
    assert len(s.kinds("start")) == 2
    assert {t.event.track_id for t in s.kinds("start")} == {1, 2}

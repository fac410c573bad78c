"""Capacity: the shared detector's worker (fair, newest frame per camera wins, batches where the model
allows it), the per-camera look-rate cap while an event is open, and several cameras sharing the real
detector seeing the same events as one camera alone."""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from edge.capture import open_source
from edge.config import EdgeConfig
from edge.config.models import GateConfig, ModelConfig
from edge.redloop import LookCap, RedLoop
from edge.reflex.engine import DetectResult, ObjectDetector
from edge.reflex.manifest import load_manifest
from edge.reflex.worker import Deferred, InferenceWorker, Superseded
from edge.rules import Transition
from edge.types import Detection, Frame
from edge.wiring import build_rules, load_detector
from tests.conftest import DATA, MODEL, REPO, needs_shared

PEOPLE = DATA / "people" / "intel_one-by-one-person-detection.mp4"

# -- the inference worker ----------------------------------------------------------------------------


class GatedBackend:
    """A backend whose inferences wait for the test to let them through; it records each input's tag."""

    name = "gated"

    def __init__(self, max_batch: int = 1) -> None:
        self.providers = ["none"]
        self.max_batch = max_batch
        self.go = threading.Semaphore(0)
        self.started = threading.Semaphore(0)
        self.calls: list[list[float]] = []
        self.busy_calls = 0

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        self.started.release()
        self.go.acquire()
        self.calls.append([float(t[0, 0, 0]) for t in tensor])
        return tensor[:, :1, :1, :1] * 2  # one number per frame: its own tag, doubled

    def infer_busy(self, tensor: np.ndarray, lane: int = 0) -> np.ndarray:
        self.busy_calls += 1
        return self.infer(tensor)


def tagged(tag: float) -> np.ndarray:
    return np.full((1, 3, 2, 2), tag, np.float32)


def test_worker_serves_cameras_in_turn_and_newest_frame_wins() -> None:
    backend = GatedBackend()
    worker = InferenceWorker(backend)
    first = worker.submit(tagged(1), "a")
    assert backend.started.acquire(timeout=5)  # the model is busy with a's frame; the others queue
    b_old = worker.submit(tagged(2), "b")
    c = worker.submit(tagged(3), "c")
    b_new = worker.submit(tagged(4), "b")  # b's newer frame replaces its older one, in b's place
    for _ in range(3):
        backend.go.release()
    assert float(first.result(5)[0, 0, 0, 0]) == 2.0
    with pytest.raises(Superseded):
        b_old.result(5)
    assert float(b_new.result(5)[0, 0, 0, 0]) == 8.0
    assert float(c.result(5)[0, 0, 0, 0]) == 6.0
    assert backend.calls == [[1.0], [4.0], [3.0]]  # a, then b (its newest frame, first in line), then c
    assert worker.superseded == 1 and worker.inferences == 3
    worker.close()


def test_a_camera_whose_next_frame_arrives_goes_on_and_keeps_its_place_in_line() -> None:
    backend = GatedBackend()
    worker = InferenceWorker(backend)
    running = worker.submit(tagged(1), "a")
    assert backend.started.acquire(timeout=5)
    b_old = worker.submit(tagged(2), "b")
    c = worker.submit(tagged(3), "c")
    assert worker.defer("b")  # b's next frame arrived while its look still waited
    with pytest.raises(Deferred):
        b_old.result(1)  # at once: b's red loop goes on
    assert not worker.defer("a")  # a's look is running: it is not given up
    b_new = worker.submit(tagged(4), "b")  # b's next look, in the place the deferred one kept
    dropped = worker.submit(tagged(5), "d")
    assert worker.defer("d")  # deferred and never taken over: dropped unrun
    for _ in range(3):
        backend.go.release()
    assert [float(r.result(5)[0, 0, 0, 0]) for r in (running, b_new, c)] == [2.0, 8.0, 6.0]
    assert backend.calls == [[1.0], [4.0], [3.0]]  # a, b (its newest frame, first in line), c; no d
    assert worker.deferrals == 2 and dropped.deferred
    worker.close()


class BlockingYolox(GatedBackend):
    """A YOLOX-shaped backend that sees nothing, and runs only when the test lets it."""

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        self.started.release()
        self.go.acquire()
        return np.zeros((1, 3549, 85), np.float32)


def test_a_red_loop_waiting_for_a_busy_detector_goes_on_when_its_next_frame_arrives() -> None:
    backend = BlockingYolox()
    backend.go.release()  # the detector's own check of the model's output at start-up
    manifest = load_manifest(REPO / "models" / "yolox_nano.yaml")
    detector = ObjectDetector(manifest, Path("unused.onnx"), ModelConfig(), backend=backend)
    assert backend.started.acquire(timeout=5)
    cfg = EdgeConfig(watch=["person"])
    loop = RedLoop("cam", cfg, build_rules(cfg, REPO), detector, [])
    other = detector.submit(np.zeros((360, 640, 3), np.uint8), key="other camera")
    assert backend.started.acquire(timeout=5)  # the model is busy with another camera's frame
    done = threading.Event()
    image = np.full((360, 640, 3), 90, np.uint8)
    worker = threading.Thread(
        target=lambda: (loop.process(Frame("cam", 0, 0.0, image, time.monotonic())), done.set())
    )
    worker.start()
    deadline = time.monotonic() + 5
    while not detector.worker._queue and time.monotonic() < deadline:  # the loop's look is in line
        time.sleep(0.01)
    assert not done.is_set()
    loop.nudge()  # its capture thread handed over the next frame
    assert done.wait(5), "the red loop went on"
    assert loop.deferred == 1 and loop.frames == 1
    backend.go.release()
    other.result()
    worker.join(5)
    assert detector.worker.inferences == 1  # the deferred look was never run


def test_worker_batches_waiting_cameras_when_the_model_allows_it() -> None:
    backend = GatedBackend(max_batch=4)
    worker = InferenceWorker(backend)
    assert worker.max_batch == 4
    first = worker.submit(tagged(1), "a")
    assert backend.started.acquire(timeout=5)
    rest = [worker.submit(tagged(t), key) for t, key in ((2, "b"), (3, "c"), (4, "d"), (5, "e"), (6, "f"))]
    for _ in range(3):
        backend.go.release()
    outputs = [float(r.result(5)[0, 0, 0, 0]) for r in [first, *rest]]
    assert outputs == [2.0, 4.0, 6.0, 8.0, 10.0, 12.0]  # each camera gets its own row back
    assert backend.calls == [[1.0], [2.0, 3.0, 4.0, 5.0], [6.0]]  # at most max_batch per inference
    assert worker.batched == 4  # requests that shared an inference with another
    worker.close()


def test_worker_runs_lean_once_the_model_is_shared_and_passes_errors_on() -> None:
    backend = GatedBackend()
    worker = InferenceWorker(backend)
    backend.go.release()
    worker.infer(tagged(1), "a").result(5)
    assert backend.busy_calls == 0 and not worker.shared  # one camera: the fast way
    backend.go.release()
    worker.infer(tagged(2), "b").result(5)
    assert worker.shared and backend.busy_calls == 1  # a second camera asked: the lean way

    class Broken(GatedBackend):
        def infer(self, tensor: np.ndarray) -> np.ndarray:
            raise RuntimeError("model broke")

    broken = InferenceWorker(Broken())
    with pytest.raises(RuntimeError, match="model broke"):
        broken.infer(tagged(1), "a").result(5)
    with pytest.raises(RuntimeError, match="model broke"):  # the worker thread lives on
        broken.infer(tagged(1), "a").result(5)


def test_a_shared_model_runs_on_every_lane_at_once() -> None:
    """Lanes (lean sessions, one per core): waiting cameras are served side by side, in their order."""

    class Lanes(GatedBackend):
        lanes = 2

        def __init__(self) -> None:
            super().__init__()
            self.lanes_used: list[int] = []

        def infer_busy(self, tensor: np.ndarray, lane: int = 0) -> np.ndarray:
            self.lanes_used.append(lane)
            return super().infer_busy(tensor, lane)

    backend = Lanes()
    worker = InferenceWorker(backend)
    assert worker.lanes == 2
    backend.go.release()
    worker.infer(tagged(1), "a").result(5)  # one camera: the fast session, on lane 0
    assert backend.lanes_used == [] and backend.started.acquire(timeout=5)
    first = worker.submit(tagged(2), "b")  # a second camera: shared from now on
    second = worker.submit(tagged(3), "c")
    assert backend.started.acquire(timeout=5) and backend.started.acquire(timeout=5)  # both running at once
    backend.go.release()
    backend.go.release()
    assert float(first.result(5)[0, 0, 0, 0]) == 4.0 and float(second.result(5)[0, 0, 0, 0]) == 6.0
    assert sorted(backend.lanes_used) == [0, 1]
    worker.close()


@needs_shared
def test_shipped_model_has_a_fixed_batch_of_one() -> None:
    """YOLOX-Nano was exported with `images [1, 3, 416, 416]`: no batching for it, one by one."""
    cfg = EdgeConfig(watch=["person"], model=ModelConfig(path=str(MODEL)))
    detector = load_detector(cfg, REPO, build_rules(cfg, REPO))
    assert detector is not None
    assert detector.backend.max_batch == 1 and detector.worker.max_batch == 1


# -- the look-rate cap -------------------------------------------------------------------------------


def test_look_cap_is_one_look_per_cell_of_its_own_grid() -> None:
    cap = LookCap(2.0)  # cells of 0.5 s from 0
    looks = []
    for i in range(20):  # 2 s at 10 fps, something to look at in every frame
        pts = i / 10
        if cap.due(pts):
            cap.took(pts)
            looks.append(round(pts, 1))
    assert looks == [0.0, 0.5, 1.0, 1.5]
    shifted = LookCap(2.0, phase=0.5)  # cells from 0.25 s
    looks = [round(i / 10, 1) for i in range(20) if shifted.due(i / 10) and (shifted.took(i / 10) or True)]
    assert looks == [0.0, 0.3, 0.8, 1.3, 1.8]
    assert shifted.due(0.0)  # the stream's clock started over: due at once
    assert all(LookCap(0).due(i / 10) for i in range(5))  # 0: no cap
    assert LookCap.for_camera(2.0, "a").phase != LookCap.for_camera(2.0, "b").phase


def test_look_cap_must_not_undercut_the_event_refresh() -> None:
    with pytest.raises(ValidationError, match="event_max_looks_per_s"):
        GateConfig(event_max_looks_per_s=1.0, event_refresh_s=0.5)
    assert GateConfig(event_max_looks_per_s=0).event_max_looks_per_s == 0
    assert GateConfig().event_max_looks_per_s == 2.0


class Walkers:
    """Fake object detector: people drawn as rectangles on a grey picture, found where they are."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def detect(self, image: np.ndarray, labels: set[str] | None = None) -> DetectResult:
        self.calls.append(int(image[0, 0, 0]))  # the frame index, written into the corner
        mask = (image[:, :, 2] > 200).astype(np.uint8)
        count, _, stats, _ = cv2.connectedComponentsWithStats(mask)
        found = [
            Detection("person", 0.9, (float(x), float(y), float(x + w), float(y + h)))
            for x, y, w, h, _ in stats[1:count]
        ]
        return DetectResult(found, 0.0, 0.0, 0.0)


def walk_loop(
    cap: float, second_from: int | None = None, frames: int = 60
) -> tuple[Walkers, list[Transition]]:
    """A person walking across at 10 fps from frame 5 (the gate wakes on every frame); a second one
    from `second_from`."""
    cfg = EdgeConfig(watch=["person"], gate=GateConfig(event_max_looks_per_s=cap))
    walkers, out = Walkers(), []

    class Record:
        def handle(self, tr: Transition, frame: Frame) -> None:
            out.append(tr)

    loop = RedLoop("cam", cfg, build_rules(cfg, REPO), walkers, [Record()])
    for i in range(frames):
        image = np.full((360, 640, 3), 90, np.uint8)
        image[0, 0, 0] = i
        if i >= 5:
            x = 20 + 8 * i
            cv2.rectangle(image, (x, 100), (x + 40, 220), (210, 210, 250), -1)
        if second_from is not None and i >= second_from:
            x = 600 - 6 * (i - second_from)
            cv2.rectangle(image, (x, 200), (x + 30, 300), (210, 210, 250), -1)
        loop.process(Frame("cam", i, i / 10, image, time.monotonic()))
    loop.finish()
    return walkers, out


def starts(transitions: list[Transition]) -> list[int]:
    return [t.frame for t in transitions if t.kind == "start"]


def test_an_open_event_gets_at_most_the_capped_looks_and_starts_stay_as_fast() -> None:
    free, free_out = walk_loop(cap=0)
    capped, capped_out = walk_loop(cap=2.0)
    assert free.calls == [0, *range(5, 60)]  # the first frame, then every frame of the walk
    # 2 frames to start the event (never capped), then at most 2 looks a second for the ~5 s it is open
    assert len(capped.calls) <= 2 + 2 * 5.5 + 1, capped.calls
    assert starts(capped_out) == starts(free_out) == [6]
    # A second person arriving while the first one's event is open is a new track on its way to an
    # event: looked at on every frame until it starts, so it starts exactly as fast as without a cap.
    _, free_two = walk_loop(cap=0, second_from=30)
    capped_two, capped_two_out = walk_loop(cap=2.0, second_from=30)
    assert starts(capped_two_out) == starts(free_two) == [6, 31]
    assert {30, 31} <= set(capped_two.calls)


def test_a_look_someone_asks_for_is_never_capped() -> None:
    cfg = EdgeConfig(watch=["person"], gate=GateConfig(event_max_looks_per_s=2.0))
    walkers = Walkers()
    loop = RedLoop("cam", cfg, build_rules(cfg, REPO), walkers, [])
    done = None
    for i in range(30):
        image = np.full((360, 640, 3), 90, np.uint8)
        image[0, 0, 0] = i
        x = 20 + 8 * i
        cv2.rectangle(image, (x, 100), (x + 40, 220), (210, 210, 250), -1)
        if i == 21:
            done = loop.request_look()
        loop.process(Frame("cam", i, i / 10, image, time.monotonic()))
    assert done is not None and done.is_set()
    assert 21 in walkers.calls
    assert loop.capped > 0  # the others over the rate were capped


# -- the idle rate of the pixel detectors -----------------------------------------------------------


def pixel_loop(rate: float, frames: int, draw) -> tuple[RedLoop, list[int]]:  # type: ignore[no-untyped-def]
    """A camera watching fire and people at 10 fps (`draw(i)` makes frame i); returns the loop and the
    frames its fire detector looked at."""
    cfg = EdgeConfig(watch=["fire", "person"], gate=GateConfig(pixel_idle_looks_per_s=rate))
    loop = RedLoop("cam", cfg, build_rules(cfg, REPO), Walkers(), [])
    assert loop.pixels.fire is not None and loop.pixels.smoke is not None
    fire, looked = loop.pixels.fire, []
    detect = fire.detect

    def counted(image: np.ndarray, pts: float, **kw: object) -> list[Detection]:
        looked.append(round(pts * 10))
        return detect(image, pts, **kw)  # type: ignore[arg-type]

    fire.detect = counted  # type: ignore[method-assign]
    for i in range(frames):
        loop.process(Frame("cam", i, i / 10, draw(i), time.monotonic()))
    return loop, looked


def grey_walker(i: int) -> np.ndarray:
    image = np.full((360, 640, 3), 90, np.uint8)
    x = 20 + 8 * i
    cv2.rectangle(image, (x, 100), (x + 40, 220), (250, 60, 210), -1)  # purple: not warm, not grey
    return image


def test_idle_pixel_detectors_look_at_motion_alone_at_their_idle_rate() -> None:
    _, every = pixel_loop(0.0, 50, grey_walker)
    assert every == list(range(50))  # the walk wakes the gate on every frame: so did the detectors
    loop, idle = pixel_loop(2.0, 50, grey_walker)
    # The first frame and the walker's arrival, then 2 a second of the 4 s walk.
    late = [i for i in idle if i >= 10]
    assert idle[0] == 0 and len(late) <= 2 * 4 + 1, idle
    assert all(b - a >= 4 for a, b in itertools.pairwise(late)), idle
    assert loop.pixel_idle == 50 - len(idle)
    assert GateConfig().pixel_idle_looks_per_s == 2.0


def test_warm_light_or_a_watch_gets_every_frame_whatever_the_idle_rate() -> None:
    rng = np.random.default_rng(1)

    def flame(i: int) -> np.ndarray:
        """The walker, and from frame 20 a flickering orange-yellow patch with a white core."""
        image = grey_walker(i)
        if i >= 20:
            level = int(rng.integers(150, 256))
            cv2.circle(image, (500, 260), 24, (0, level // 2, level), -1)
            cv2.circle(image, (500, 265), 8, (200, 250, 255), -1)
        return image

    loop, looked = pixel_loop(2.0, 50, flame)
    assert set(range(20, 50)) <= set(looked), looked  # new warm light, then the watch it starts
    assert loop.pixels.fire is not None and loop.pixels.fire.watching(4.9)


# -- several cameras, one real detector -----------------------------------------------------------


def clip_frames(path: Path, count: int) -> list[tuple[int, float, np.ndarray]]:
    source = open_source(str(path))
    frames = []
    while len(frames) < count and (item := source.read()) is not None:
        frames.append(item)
    source.close()
    return frames


def run_camera(name: str, cfg: EdgeConfig, detector: object, frames: list) -> list[tuple[str, str, int]]:
    out: list[tuple[str, str, int]] = []

    class Record:
        def handle(self, tr: Transition, frame: Frame) -> None:
            out.append((tr.kind, tr.event.label, tr.frame))

    loop = RedLoop(name, cfg, build_rules(cfg, REPO), detector, [Record()])  # type: ignore[arg-type]
    for index, pts, image in frames:
        loop.process(Frame(name, index, pts, image, time.monotonic()))
    loop.finish()
    return out


@needs_shared
def test_cameras_sharing_the_detector_see_the_same_events_as_one_camera_alone() -> None:
    """The first 26 s of the one-by-one clip (two visits) on 3 cameras at once, every camera on its own
    thread through the one shared detector (its worker, the look-rate cap), against one camera alone."""
    cfg = EdgeConfig(watch=["fire", "person"], model=ModelConfig(path=str(MODEL)))
    detector = load_detector(cfg, REPO, build_rules(cfg, REPO))
    frames = clip_frames(PEOPLE, 260)
    alone = run_camera("alone", cfg, detector, frames)
    results: dict[str, list[tuple[str, str, int]]] = {}
    threads = [
        threading.Thread(target=lambda n=n: results.__setitem__(n, run_camera(n, cfg, detector, frames)))
        for n in ("cam0", "cam1", "cam2")
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert detector is not None and detector.worker.shared  # they did share it

    def story(events: list[tuple[str, str, int]]) -> list[tuple[str, str, int]]:
        return [e for e in events if e[0] in ("start", "alert")]

    assert [(k, label) for k, label, _ in story(alone)] == [("start", "person"), ("alert", "person")] * 2
    for name in ("cam0", "cam1", "cam2"):
        assert story(results[name]) == story(alone), name  # starts and alerts are never capped
        ends = [f for k, _, f in results[name] if k == "end"]
        alone_ends = [f for k, _, f in alone if k == "end"]
        assert len(ends) == len(alone_ends)
        # An end comes 3 s after the last sighting, and each camera's capped looks fall on its own 0.5 s
        # grid: a visitor leaving (seen in some frames, missed in others) is last seen up to a second
        # apart by two cameras.
        assert all(abs(a - b) <= 10 for a, b in zip(ends, alone_ends, strict=True)), (ends, alone_ends)


@needs_shared
def test_a_paced_camera_nudges_its_red_loop_and_a_lossless_scan_never_does() -> None:
    from edge.capture import Camera
    from edge.config import CameraConfig

    clip = DATA / "people" / "intel_person-bicycle-car-detection.gif"
    for realtime in (True, False):
        camera = Camera("cam", CameraConfig(source=str(clip), realtime=realtime))
        nudges: list[float] = []
        camera.on_arrival = lambda nudges=nudges: nudges.append(time.monotonic())
        camera.start()
        try:
            taken = [camera.get(timeout=5) for _ in range(10)]
        finally:
            camera.stop()
        assert all(f is not None for f in taken)
        assert (len(nudges) >= 10) if realtime else (nudges == [])

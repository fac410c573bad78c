"""The pixel detectors in worker processes (edge.reflex.pixels): a camera whose fire and smoke
detectors run in a worker sees what it would see with them in the appliance's process; a worker that
dies or is left behind costs no alert and no process."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge.appliance import Appliance
from edge.config import EdgeConfig
from edge.config.models import CameraConfig, CapacityConfig, FireConfig, SmokeConfig
from edge.redloop import RedLoop
from edge.reflex.fire import FireDetector
from edge.reflex.pixels import LocalPixels, PixelPool, RemotePixels
from edge.reflex.smoke import SmokeDetector
from edge.rules import Transition
from edge.types import Frame
from edge.wiring import build_rules
from tests.conftest import DATA, REPO, needs_shared
from tests.test_capacity import clip_frames

FIRE = DATA / "fire" / "furg_house6.mp4"


class Record:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str, int, str | None]] = []

    def handle(self, tr: Transition, frame: Frame) -> None:
        phase = tr.alert.phase if tr.alert is not None else None
        self.seen.append((tr.kind, tr.event.label, tr.frame, phase))


def fire_loop(name: str, pool: PixelPool) -> tuple[RedLoop, Record]:
    cfg = EdgeConfig(watch=["fire"])
    record = Record()
    return RedLoop(name, cfg, build_rules(cfg, REPO), None, [record], pixel_pool=pool), record


def feed(loop: RedLoop, frames: list) -> None:
    for index, pts, image in frames:
        loop.process(Frame(loop.camera, index, pts, image, time.monotonic()))
    loop.finish()


@pytest.fixture
def pool():  # type: ignore[no-untyped-def]
    pool = PixelPool(1)
    yield pool
    pool.close()


@needs_shared
def test_a_camera_with_its_detectors_in_a_worker_sees_the_same_fire_as_one_with_them_here(pool) -> None:  # type: ignore[no-untyped-def]
    frames = clip_frames(FIRE, 150)
    here, here_seen = fire_loop("first", pool)
    there, there_seen = fire_loop("second", pool)
    assert isinstance(here.pixels, LocalPixels)  # the first camera's stay in the appliance
    assert isinstance(there.pixels, RemotePixels) and there.pixels.remote
    feed(here, frames)
    feed(there, frames)
    assert there.pixels.remote  # it never fell back
    kinds = [(k, label, verdict) for k, label, _, verdict in here_seen.seen]
    assert ("alert", "fire", "provisional") in kinds and ("alert", "fire", "confirmed") in kinds, kinds
    assert there_seen.seen == here_seen.seen  # the same events, at the same frames, with the same phases
    cost_here, cost_there = here.times.get("fire"), there.times.get("fire")
    assert cost_here is not None and cost_there is not None and cost_there.count == cost_here.count


@needs_shared
def test_a_worker_that_dies_leaves_the_detectors_here_and_the_fire_is_still_reported(
    pool,
    caplog: pytest.LogCaptureFixture,  # type: ignore[no-untyped-def]
) -> None:
    frames = clip_frames(FIRE, 200)
    pool.open("first")  # the first camera's place (here)
    loop, seen = fire_loop("second", pool)
    assert isinstance(loop.pixels, RemotePixels)
    for index, pts, image in frames[:5]:
        loop.process(Frame(loop.camera, index, pts, image, time.monotonic()))
    loop.pixels._worker.process.kill()
    with caplog.at_level(logging.ERROR, logger="edge.reflex.pixels"):
        feed(loop, frames[5:])
    assert not loop.pixels.remote
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and said[0].startswith("camera second: the worker process of its fire and smoke "
                                                 "detectors failed"), said  # fmt: skip
    assert any(k == "alert" and label == "fire" for k, label, _, _ in seen.seen), seen.seen
    # a camera opened after it gets a new worker
    again = pool.open("third")
    assert isinstance(again, RemotePixels) and again.remote and again._worker is not loop.pixels._worker


def test_a_worker_ends_when_the_appliance_is_gone(tmp_path: Path) -> None:
    script = (
        "import sys, time\n"
        "from edge.reflex.pixels import PixelPool\n"
        "pool = PixelPool(1); pool.open('a'); remote = pool.open('b')\n"
        "print(remote._worker.process.pid, flush=True); time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=REPO)
    assert parent.stdout is not None
    worker = int(parent.stdout.readline())
    assert _alive(worker)
    os.kill(worker, signal.SIGINT)  # Ctrl-C reaches the whole group: the appliance ends its workers itself
    time.sleep(0.5)
    assert _alive(worker)
    parent.kill()  # no clean-up: SIGKILL
    parent.wait(timeout=10)
    deadline = time.monotonic() + 10
    while _alive(worker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(worker), "the worker outlived the process that started it"


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"  # a zombie has ended (its parent just has not waited for it)


def test_pixel_processes_auto_is_one_per_core_but_one_and_zero_keeps_every_camera_here() -> None:
    auto = CapacityConfig()
    assert [auto.processes(cores) for cores in (1, 2, 4, 8, 16)] == [0, 1, 3, 4, 4]
    assert CapacityConfig(pixel_processes=0).processes(8) == 0
    off = PixelPool(0)
    assert all(isinstance(off.open(name), LocalPixels) for name in ("a", "b", "c"))
    off.close()


@needs_shared
def test_the_appliance_runs_its_second_camera_s_detectors_in_a_worker_and_ends_it(tmp_path: Path) -> None:
    cameras = {name: CameraConfig(source=str(FIRE)) for name in ("front", "back")}
    capacity = CapacityConfig(pixel_processes=1)
    cfg = EdgeConfig(watch=["fire"], cameras=cameras, data_dir=str(tmp_path / "data"), capacity=capacity)
    appliance = Appliance(cfg, REPO, build_rules(cfg, REPO))
    appliance.start()
    first, second = (appliance.loops[name].pixels for name in ("front", "back"))
    assert isinstance(first, LocalPixels) and isinstance(second, RemotePixels)
    worker = second._worker
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len({e["camera"] for e in appliance.events.events()}) < 2:
        time.sleep(0.2)
    appliance.stop()
    assert appliance_fire_cameras(tmp_path / "data") == {"front", "back"}
    assert not _alive(worker.process.pid) and not os.path.exists(worker.address)


def appliance_fire_cameras(data: Path) -> set[str]:
    from edge.store import EventLog

    log = EventLog(data)
    try:
        return {e["camera"] for e in log.events(label="fire")}
    finally:
        log.close()


@needs_shared
@pytest.mark.parametrize("clip", ["fire/furg_house6.mp4", "smoke/rise_smoke_mosaic_detected.mp4"])
def test_the_pair_sharing_a_frames_shrinks_says_what_each_detector_says_alone(clip: str) -> None:
    """A camera's fire and smoke detectors shrink each frame once between them (`Shrinks`); neither
    may see anything else for it: the same detections, frame by frame, as detectors on their own."""
    pair = LocalPixels()
    pair.configure(FireConfig(), SmokeConfig())
    fire, smoke = FireDetector(FireConfig()), SmokeDetector(SmokeConfig())
    seen = 0
    for _, pts, image in clip_frames(DATA / clip, 120):
        look = pair.look(image, pts, False, None)
        alone_smoke = smoke.detect(image, pts)
        alone_fire = fire.detect(image, pts, hints=[d.box for d in alone_smoke])
        assert look.smoke == alone_smoke and look.fire == alone_fire, pts
        seen += len(look.fire) + len(look.smoke)
    assert seen > 0  # the clip raised detections to compare

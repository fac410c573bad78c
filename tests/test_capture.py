"""Capture layer on real media: frame counts, timestamps, corrupt input, errors, and the camera thread.

The live-stream tests serve an MJPEG stream (multipart/x-mixed-replace, FFmpeg's mpjpeg demuxer) from a
small in-test HTTP server on a free localhost port, then stop and restart it to exercise reconnects.
"""

from __future__ import annotations

import itertools
import json
import logging
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.capture import Camera, SourceError, open_source
from edge.capture.sources import GifSource
from edge.config.models import CameraConfig
from edge.types import Frame
from tests.conftest import DATA, REPO
from tests.support import MjpegServer, free_port, wait_until

needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"test media not found in {DATA}")

HOUSE6 = DATA / "fire" / "furg_house6.mp4"
CAR = DATA / "non_fire_lookalike" / "intel_car-detection.mp4"
BIKE_GIF = DATA / "people" / "intel_person-bicycle-car-detection.gif"
PEOPLE = DATA / "people" / "intel_one-by-one-person-detection.mp4"


def corrupt_copy(src: Path, dest: Path, *, seed: int = 2, size: int = 100_000) -> Path:
    """`src` with `size` random bytes (fixed seed) written over it at five places in its middle."""
    data = bytearray(src.read_bytes())
    rng = np.random.default_rng(seed)
    for share in (0.3, 0.4, 0.5, 0.6, 0.7):
        at = int(len(data) * share)
        data[at : at + size] = rng.bytes(size)
    dest.write_bytes(data)
    return dest


def _ground_truth() -> dict[str, dict]:
    return json.loads((DATA / "ground_truth.json").read_text()) if DATA.is_dir() else {}


# "missing" keeps one parameter when the media are absent, so the skip shows needs_data's reason
CLIPS = sorted(k for k, v in _ground_truth().items() if isinstance(v, dict) and "frames" in v) or ["missing"]
STILLS = sorted(k for k, v in _ground_truth().items() if isinstance(v, dict) and "frames" not in v) or [
    "missing"
]


def read_all(source_spec: str | Path) -> tuple[list[tuple[int, float]], int, float | None]:
    """(index, pts) of every frame, the corrupt count and the fps of a finite source."""
    source = open_source(str(source_spec))
    items: list[tuple[int, float]] = []
    try:
        while (item := source.read()) is not None:
            index, pts, image = item
            assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
            items.append((index, pts))
    finally:
        source.close()
    return items, source.corrupt, source.fps


# --- sources ------------------------------------------------------------------------------------


@needs_data
@pytest.mark.parametrize("clip", CLIPS)
def test_clip_frame_count_and_timestamps(clip: str) -> None:
    truth = _ground_truth()[clip]
    source = open_source(str(DATA / clip))
    first = source.read()
    assert first is not None
    assert first[2].shape == (truth["height"], truth["width"], 3)
    assert source.is_live is False
    source.close()

    items, corrupt, fps = read_all(DATA / clip)
    assert len(items) == truth["frames"]
    assert corrupt == 0
    assert [index for index, _ in items] == list(range(truth["frames"]))
    pts = np.array([p for _, p in items])
    assert pts[0] == 0.0 and np.all(np.diff(pts) > 0)
    assert fps is not None
    if "fps" in truth:  # video files: exact timestamps
        assert fps == pytest.approx(truth["fps"], abs=0.01)
        assert np.abs(pts - np.arange(len(pts)) / fps).max() < 1e-3
    else:  # GIFs: per-frame delays vary (60/70 ms), so only the overall rate is close
        assert len(pts) / (pts[-1] + 1 / fps) == pytest.approx(truth["fps_approx"], rel=0.05)
        assert fps == pytest.approx(truth["fps_approx"], rel=0.2)


@needs_data
@pytest.mark.parametrize("still", STILLS)
def test_single_image_is_one_frame_at_pts_zero(still: str) -> None:
    truth = _ground_truth()[still]
    source = open_source(str(DATA / still))
    item = source.read()
    assert item is not None
    index, pts, image = item
    assert (index, pts) == (0, 0.0)
    assert image.shape == (truth["height"], truth["width"], 3)
    assert source.read() is None
    source.close()


@needs_data
def test_pillow_gif_fallback_matches_opencv() -> None:
    """The Pillow path (for GStreamer-only OpenCV builds) gives the same frames as OpenCV's."""
    for clip in (k for k in CLIPS if k.endswith(".gif")):
        path = DATA / clip
        pillow = GifSource(path, str(path))
        opencv = open_source(str(path))
        count = 0
        while (a := pillow.read()) is not None:
            b = opencv.read()
            assert b is not None
            assert a[0] == b[0] == count
            assert a[1] == pytest.approx(b[1], abs=1e-3)
            assert np.array_equal(a[2], b[2])
            count += 1
        assert opencv.read() is None
        assert count == _ground_truth()[clip]["frames"]
        assert pillow.fps == pytest.approx(_ground_truth()[clip]["fps_approx"], rel=0.05)
        pillow.close()
        opencv.close()


@needs_data
def test_loop_keeps_index_and_pts_increasing() -> None:
    frames = 41  # the bicycle GIF
    source = open_source(str(BIKE_GIF), loop=True)
    items = [source.read() for _ in range(2 * frames + 5)]
    source.close()
    indices = [item[0] for item in items if item is not None]
    pts = np.array([item[1] for item in items if item is not None])
    assert indices == list(range(2 * frames + 5))
    assert np.all(np.diff(pts) > 0)
    clip_s = pts[frames]  # the second pass starts one clip duration in
    assert pts[2 * frames] == pytest.approx(2 * clip_s, abs=1e-6)
    assert clip_s == pytest.approx(frames / 12.0, rel=0.05)

    still = open_source(str(DATA / "images" / "rocket.jpg"), loop=True)
    assert [item[:2] for item in (still.read() for _ in range(3)) if item] == [(0, 0.0), (1, 1.0), (2, 2.0)]
    still.close()


@needs_data
def test_image_folder_natural_order_skips_and_counts_a_corrupt_image(tmp_path: Path) -> None:
    capture = cv2.VideoCapture(str(CAR))
    for n in range(12):
        ok, image = capture.read()
        assert ok
        cv2.imwrite(str(tmp_path / f"frame{n}.jpg"), image)
    capture.release()
    (tmp_path / "frame5.jpg").write_bytes(np.random.default_rng(1).bytes(4000))  # garbage, same name
    (tmp_path / "notes.txt").write_text("not an image")

    items, corrupt, fps = read_all(tmp_path)
    assert fps == 1.0
    assert corrupt == 1
    assert [index for index, _ in items] == [n for n in range(12) if n != 5]  # natural order, gap kept
    assert all(pts == float(index) for index, pts in items)


@needs_data
def test_mp4_with_garbage_in_the_middle_skips_and_counts_corrupt_frames(tmp_path: Path) -> None:
    data = bytearray(HOUSE6.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 200_000] = np.random.default_rng(0).bytes(200_000)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(data)

    items, corrupt, fps = read_all(broken)
    assert fps == pytest.approx(29.97)
    assert 0 < corrupt < 300
    assert len(items) > 600  # frames after the damage still come through
    assert len(items) + corrupt == pytest.approx(899, abs=1)
    indices = [index for index, _ in items]
    assert indices[0] == 0 and indices == sorted(set(indices))
    assert max(b - a for a, b in itertools.pairwise(indices)) == corrupt + 1  # one gap
    # indices keep the file's own frame numbers: index and container time still agree after the gap
    assert max(abs(pts - index / fps) for index, pts in items) < 0.002


@needs_data
def test_frames_after_undecodable_data_are_marked_damaged_until_the_decoder_recovers(tmp_path: Path) -> None:
    broken = corrupt_copy(PEOPLE, tmp_path / "broken.mp4")
    source = open_source(str(broken))
    items: list[tuple[int, bool]] = []
    try:
        while (item := source.read()) is not None:
            items.append((item[0], source.last_damaged))
            assert source.last_origin is None
    finally:
        source.close()
    assert source.corrupt > 0 and source.still is False
    gaps = [b for (a, _), (b, _) in itertools.pairwise(items) if b - a > 1]
    assert gaps, "the damage should leave gaps in the frame numbers"
    damaged = {index for index, hit in items if hit}
    assert all(index in damaged for index in gaps), "the first frame after each gap is damaged"
    # ...and only a short run after each gap: the decoder recovers at its next keyframe (1 s, 10 frames)
    assert len(damaged) <= len(gaps) * 20
    assert not any(hit for index, hit in items if index < gaps[0]), "frames before the damage are sound"

    intact = open_source(str(PEOPLE))
    try:
        while intact.read() is not None:
            assert not intact.last_damaged
    finally:
        intact.close()


@needs_data
@pytest.mark.parametrize("damage", ["corrupt", "truncated"])
def test_ffmpeg_noise_on_a_damaged_file_is_one_line_per_gap(tmp_path: Path, damage: str) -> None:
    """FFmpeg's per-packet complaints ('[h264 @ 0x...] ...') never reach stderr; we say it once per gap."""
    if damage == "corrupt":
        broken = corrupt_copy(PEOPLE, tmp_path / "broken.mp4")
    else:
        broken = tmp_path / "truncated.mp4"
        broken.write_bytes(PEOPLE.read_bytes()[: PEOPLE.stat().st_size * 2 // 3])
    code = (
        "import logging, sys\n"
        "import cv2\n"  # imported before edge on purpose: the log level must still take effect
        "logging.basicConfig(level=logging.INFO, format='%(levelname)s %(message)s')\n"
        "from edge.capture import open_source\n"
        "source = open_source(sys.argv[1])\n"
        "frames = 0\n"
        "while source.read() is not None:\n"
        "    frames += 1\n"
        "print(frames, source.corrupt)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(broken)], capture_output=True, text=True, timeout=120, cwd=REPO
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    frames, corrupt = (int(v) for v in proc.stdout.split())
    assert frames > 500
    lines = proc.stderr.splitlines()
    assert not [ln for ln in lines if "[h264" in ln or "@ 0x" in ln], lines[:5]
    skips = [ln for ln in lines if "skipped" in ln]
    assert len(lines) <= 8, lines
    assert len(skips) == len(set(skips)), "each gap is reported once"
    if corrupt:
        assert skips and all(str(broken) in ln and "undecodable frame(s) before frame" in ln for ln in skips)
    if damage == "truncated":
        assert any("ended at frame" in ln and "truncated?" in ln for ln in lines), lines


@needs_data
def test_camera_hands_the_damaged_flag_over(tmp_path: Path) -> None:
    broken = corrupt_copy(PEOPLE, tmp_path / "broken.mp4")
    camera = Camera("hall", CameraConfig(source=str(broken), realtime=False))
    camera.start()
    frames: list[tuple[int, bool]] = []
    try:
        while not camera.finished:
            frame = camera.get(timeout=2)
            if frame is not None:
                assert frame.origin is None
                frames.append((frame.index, frame.damaged))
    finally:
        camera.stop()
    gaps = [b for (a, _), (b, _) in itertools.pairwise(frames) if b - a > 1]
    damaged = [index for index, hit in frames if hit]
    assert gaps and all(index in damaged for index in gaps)
    assert camera.stats.corrupt > 0 and camera.still is False


@needs_data
def test_image_folder_frames_name_their_picture_and_the_camera_is_still(tmp_path: Path) -> None:
    folder = tmp_path / "uploads"
    folder.mkdir()
    names = ["shot1.jpg", "shot2.png", "shot10.jpg"]  # natural order: 10 after 2
    for n, name in enumerate(names):
        cv2.imwrite(str(folder / name), np.full((40, 60, 3), 60 * n, np.uint8))
    source = open_source(str(folder))
    origins = []
    while (item := source.read()) is not None:
        origins.append((item[0], source.last_origin, source.last_damaged))
    source.close()
    assert source.still is True
    assert origins == [(0, "shot1.jpg", False), (1, "shot2.png", False), (2, "shot10.jpg", False)]

    camera = Camera("uploads", CameraConfig(source=str(folder), realtime=False))
    assert camera.still, "a folder is a still source even before it opens"
    camera.start()
    frames: list[Frame] = []
    try:
        while not camera.finished:
            if (frame := camera.get(timeout=2)) is not None:
                frames.append(frame)
    finally:
        camera.stop()
    assert camera.still
    assert [(f.index, f.origin, f.damaged) for f in frames] == origins

    image = DATA / "images" / "rocket.jpg"
    single = Camera("one", CameraConfig(source=str(image), realtime=False))
    assert single.still
    single.start()
    try:
        frame = single.get(timeout=5)
    finally:
        single.stop()
    assert frame is not None and frame.origin == "rocket.jpg" and single.still

    video = Camera("clip", CameraConfig(source=str(BIKE_GIF), realtime=False))
    assert not video.still
    video.start()
    try:
        frame = video.get(timeout=5)
    finally:
        video.stop()
    assert frame is not None and frame.origin is None and not frame.damaged and not video.still
    assert not Camera("door", CameraConfig(source="rtsp://10.0.0.9/stream1")).still


def test_nonexistent_file_is_a_one_line_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.mp4"
    with pytest.raises(SourceError) as err:
        open_source(str(missing))
    assert str(missing) in str(err.value) and "no such file" in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("name", "content", "expect"),
    [
        ("x.mp4", b"hello, this is not a video\n" * 10, "cannot read video"),
        ("x.gif", b"GIF89a but not really", "cannot read GIF"),
        ("x.png", b"\x89PNG garbage", "no decodable frame"),
        ("notes.txt", b"plain text", "unsupported file type .txt"),
    ],
)
def test_unreadable_or_unsupported_file_is_a_one_line_error(
    tmp_path: Path, name: str, content: bytes, expect: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(SourceError) as err:
        open_source(str(path))
    message = str(err.value)
    assert expect in message and name in message and "\n" not in message


def test_bad_specs_are_one_line_errors(tmp_path: Path) -> None:
    cases = {
        str(tmp_path): "no images in folder",
        "ftp://example.com/a.mp4": "unsupported source",
        "/dev/video97": "no such camera device",
        "usb:97": "no such camera device",
    }
    for spec, expect in cases.items():
        with pytest.raises(SourceError, match=expect):
            open_source(spec)


def test_csi_without_jetson_utils_says_what_is_missing() -> None:
    try:
        import jetson_utils  # noqa: F401
    except ImportError:
        with pytest.raises(SourceError, match="jetson-utils"):
            open_source("csi://0")
    else:
        pytest.skip("jetson-utils is installed: csi://0 would open a real camera")


def test_rtsp_to_a_closed_port_fails_fast_with_the_reason_and_no_password() -> None:
    url = f"rtsp://admin:hunter2@127.0.0.1:{free_port()}/stream1"
    started = time.monotonic()
    with pytest.raises(SourceError) as err:
        open_source(url)
    assert time.monotonic() - started < 10
    message = str(err.value)
    assert "connection refused" in message and "127.0.0.1" in message
    assert "hunter2" not in message and "\n" not in message


# --- live stream (MJPEG over HTTP) ----------------------------------------------------------------


def test_opencv_ffmpeg_reads_the_test_mjpeg_stream(mjpeg_server: MjpegServer) -> None:
    source = open_source(f"http://127.0.0.1:{mjpeg_server.port}/video.mjpg")
    try:
        assert source.is_live
        items = [source.read() for _ in range(10)]
    finally:
        source.close()
    assert all(item is not None and item[2].shape == (216, 384, 3) for item in items)
    assert [item[0] for item in items if item] == list(range(10))
    pts = [item[1] for item in items if item]
    assert all(b > a for a, b in itertools.pairwise(pts))


def test_camera_on_a_dying_stream_reports_retries_and_recovers(mjpeg_server: MjpegServer) -> None:
    statuses: list[tuple[str, bool, str]] = []
    cfg = CameraConfig(
        source=f"http://127.0.0.1:{mjpeg_server.port}/video.mjpg", reconnect_min_s=0.1, reconnect_max_s=0.4
    )
    camera = Camera("gate", cfg, on_status=lambda *status: statuses.append(status))
    camera.start()
    try:
        before = [f for f in (camera.get(timeout=5) for _ in range(5)) if f is not None]
        assert len(before) == 5 and statuses == [("gate", True, "connected")]
        assert camera.stats.online

        mjpeg_server.stop()
        assert wait_until(lambda: len(statuses) >= 2, timeout=8), statuses
        assert statuses[1][:2] == ("gate", False) and f"127.0.0.1:{mjpeg_server.port}" in statuses[1][2]
        assert wait_until(lambda: camera.stats.reconnects >= 2, timeout=5)
        stats = camera.stats
        assert not stats.online and stats.last_error
        while camera.get(timeout=0) is not None:  # drain the last frame before the outage
            pass

        mjpeg_server.start()  # same port
        assert wait_until(lambda: len(statuses) >= 3, timeout=8), statuses
        assert statuses[2] == ("gate", True, "connected")
        after = [f for f in (camera.get(timeout=5) for _ in range(5)) if f is not None]
        assert len(after) == 5
    finally:
        camera.stop()
    assert len(statuses) == 3  # one offline report per outage, however many retries
    frames = before + after
    assert all(b.index > a.index and b.pts > a.pts for a, b in itertools.pairwise(frames))
    assert after[0].pts - before[-1].pts > 0.1  # the outage shows up in stream time


def test_camera_retries_a_missing_file_until_it_appears(tmp_path: Path) -> None:
    path = tmp_path / "later.png"
    statuses: list[tuple[str, bool, str]] = []
    cfg = CameraConfig(source=str(path), realtime=False, reconnect_min_s=0.05, reconnect_max_s=0.2)
    camera = Camera("drop", cfg, on_status=lambda *status: statuses.append(status))
    camera.start()
    try:
        assert wait_until(lambda: camera.stats.reconnects >= 2, timeout=5)
        assert statuses == [("drop", False, f"no such file: {path}")]
        cv2.imwrite(str(path), np.full((48, 64, 3), 200, np.uint8))
        frame = camera.get(timeout=5)
        assert frame is not None and frame.index == 0 and frame.image.shape == (48, 64, 3)
        assert wait_until(lambda: camera.finished, timeout=5)
    finally:
        camera.stop()
    assert statuses[1:] == [("drop", True, "connected"), ("drop", False, "end of file")]


def test_camera_logs_each_change_once_in_one_clear_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "later.png"
    cfg = CameraConfig(source=str(path), realtime=False, reconnect_min_s=0.02, reconnect_max_s=0.05)
    camera = Camera("porch", cfg)
    with caplog.at_level(logging.INFO, logger="edge.capture"):
        camera.start()
        try:
            assert wait_until(lambda: camera.stats.reconnects >= 4, timeout=5)
            cv2.imwrite(str(path), np.full((48, 64, 3), 200, np.uint8))
            assert camera.get(timeout=5) is not None
            assert wait_until(lambda: camera.finished, timeout=5)
        finally:
            camera.stop()
    lines = [r.getMessage() for r in caplog.records if r.name == "edge.capture" and r.levelno >= logging.INFO]
    assert lines == [
        f"camera porch offline (retrying): no such file: {path}",
        "camera porch online: connected",
        "camera porch finished: end of file",
    ]


# --- camera hand-over modes -------------------------------------------------------------------------


@needs_data
def test_lossless_file_delivers_every_frame_once_in_order_to_a_slow_consumer() -> None:
    statuses: list[tuple[str, bool, str]] = []
    camera = Camera(
        "scan", CameraConfig(source=str(HOUSE6), realtime=False), on_status=lambda *s: statuses.append(s)
    )
    camera.start()
    frames: list[Frame] = []
    try:
        while not camera.finished:
            frame = camera.get(timeout=2)
            if frame is not None:
                frames.append(frame)
                if frame.index % 150 == 0:
                    time.sleep(0.05)  # a slow consumer now and then: the reader must wait, not drop
    finally:
        camera.stop()
    assert [f.index for f in frames] == list(range(899))
    assert all(f.camera == "scan" and f.image.shape == (240, 426, 3) for f in frames)
    assert all(f.pts == pytest.approx(f.index / 29.97, abs=1e-3) for f in frames)
    stats = camera.stats
    assert (stats.frames, stats.dropped, stats.corrupt, stats.reconnects) == (899, 0, 0, 0)
    assert statuses == [("scan", True, "connected"), ("scan", False, "end of file")]
    assert camera.get(timeout=0.1) is None


@needs_data
def test_lossless_camera_counts_corrupt_images_in_a_folder(tmp_path: Path) -> None:
    for n in range(4):
        cv2.imwrite(str(tmp_path / f"{n:02d}.png"), np.full((32, 32, 3), n * 40, np.uint8))
    (tmp_path / "02.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    camera = Camera("folder", CameraConfig(source=str(tmp_path), realtime=False))
    camera.start()
    indices = []
    try:
        while not camera.finished:
            frame = camera.get(timeout=2)
            if frame is not None:
                indices.append(frame.index)
    finally:
        camera.stop()
    assert indices == [0, 1, 3]
    assert camera.stats.corrupt == 1


@needs_data
def test_realtime_file_is_paced_and_a_slow_consumer_gets_the_newest_frames() -> None:
    camera = Camera("live-ish", CameraConfig(source=str(HOUSE6), realtime=True))
    got: list[tuple[int, float, float]] = []  # (index, pts, age): no images, they would skew the memory check

    def consume_until(seconds: float) -> None:
        while time.monotonic() - started < seconds:
            if (frame := camera.get(timeout=1)) is not None:
                got.append((frame.index, frame.pts, time.monotonic() - frame.arrived))
            time.sleep(0.2)

    tracemalloc.start()
    try:
        camera.start()
        started = time.monotonic()
        consume_until(0.6)
        baseline = tracemalloc.get_traced_memory()[0]
        consume_until(2.4)
        grown = tracemalloc.get_traced_memory()[0] - baseline
        elapsed = time.monotonic() - started
        stats = camera.stats
    finally:
        camera.stop()
        tracemalloc.stop()
    assert stats.frames == pytest.approx(elapsed * 29.97, rel=0.2)  # paced like a camera, not flat out
    assert stats.fps == pytest.approx(29.97, rel=0.2)
    assert stats.dropped > stats.frames // 2
    assert stats.frames - len(got) - stats.dropped in (0, 1)  # taken, dropped, or still in the slot
    assert grown < 3 * 426 * 240 * 3  # at most a frame or two held, never a backlog
    assert all(b[0] > a[0] for a, b in itertools.pairwise(got))
    assert max(age for _, _, age in got) < 0.1  # each get() returns the newest frame, not a stale one
    assert all(pts == pytest.approx(index / 29.97, abs=1e-3) for index, pts, _ in got)


@needs_data
@pytest.mark.parametrize("realtime", [True, False], ids=["realtime", "lossless"])
def test_file_camera_says_for_good_when_the_stream_ended(realtime: bool) -> None:
    """A consumer loop can stop on `finished`: set once the last frame was taken; get() then returns."""
    statuses: list[tuple[str, bool, str]] = []
    camera = Camera(
        "bikes",
        CameraConfig(source=str(BIKE_GIF), realtime=realtime),
        on_status=lambda *s: statuses.append(s),
    )
    camera.start()
    started = time.monotonic()
    frames: list[Frame] = []
    try:
        while not camera.finished:
            assert time.monotonic() - started < 30, "the file camera never finished"
            if (frame := camera.get(timeout=5)) is not None:
                frames.append(frame)
        elapsed = time.monotonic() - started
        asked = time.monotonic()
        assert camera.get(timeout=5) is None
        assert time.monotonic() - asked < 0.5, "get() after the end must not wait out its timeout"
        assert camera.finished
    finally:
        camera.stop()
    assert frames and frames[-1].index <= 40
    if realtime:
        assert elapsed == pytest.approx(41 / 12.0, rel=0.3)  # paced like the clip, then it ends
    else:
        assert [f.index for f in frames] == list(range(41))
    assert statuses == [("bikes", True, "connected"), ("bikes", False, "end of file")]


def test_disabled_camera_does_not_capture(tmp_path: Path) -> None:
    camera = Camera("off", CameraConfig(source=str(tmp_path / "none.mp4"), enabled=False))
    camera.start()
    assert camera.get(timeout=0.1) is None
    assert camera.stats.reconnects == 0 and not camera.stats.online
    camera.stop()

"""Frame sources: one small reader per kind of input behind one `read()`.

Every source hands out `(index, pts, BGR image)`. `index` is the frame's 0-based position in the
stream: a skipped corrupt frame leaves a gap rather than renumbering later frames, so indices keep
matching the file's own frame numbers (and the ground truth a clip was annotated with). `pts` is the
stream time in seconds: the container's timestamp while it is sane and monotonic, else index / fps
(files) or the wall clock (live streams, whose invented timestamps would drift).

`open_source()` reads the first frame before it returns, so a file that opens but never decodes fails
there with a one-line `SourceError`, which is what `edge scan` prints.

After each `read()`, `last_damaged` says whether that frame follows undecodable data (the decoder may
show smeared, concealed pictures until its next keyframe) and `last_origin` names the picture file a
frame of an image or image folder came from. FFmpeg's own per-packet complaints are silenced
(`OPENCV_FFMPEG_LOGLEVEL`); each gap is reported once, by us, with the number of frames skipped.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import re
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Protocol
from urllib.parse import urlsplit

# FFmpeg logs each broken packet of a damaged file ("[h264 @ 0x...] error while decoding MB ...", often
# hundreds of lines); OpenCV reads this when it first opens a capture. -8 is AV_LOG_QUIET: the warning
# below ("skipped N undecodable frame(s) before frame M") says the same once per gap.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

import cv2
import numpy as np
from PIL import Image, ImageSequence

from edge.redact import redact

log = logging.getLogger("edge.capture")

Item = tuple[int, float, np.ndarray]
"""(index, pts in seconds, BGR uint8 image)."""

VIDEO_EXTS = frozenset(
    {
        ".mp4",
        ".m4v",
        ".mov",
        ".avi",
        ".mkv",
        ".webm",
        ".mpg",
        ".mpeg",
        ".ts",
        ".mts",
        ".m2ts",
        ".flv",
        ".wmv",
        ".3gp",
        ".ogv",
        ".mjpg",
        ".mjpeg",
        ".h264",
        ".h265",
        ".hevc",
        ".gif",
    }
)
IMAGE_EXTS = frozenset(
    {
        ".jpg",
        ".jpeg",
        ".jpe",
        ".png",
        ".bmp",
        ".dib",
        ".tif",
        ".tiff",
        ".webp",
        ".ppm",
        ".pgm",
        ".pbm",
        ".pnm",
        ".jp2",
    }
)
STREAM_PORTS = {"rtsp": 554, "rtsps": 322, "http": 80, "https": 443}

OPEN_TIMEOUT_MS = 5000
"""A dead camera fails in seconds, not FFmpeg's default of minutes."""
READ_TIMEOUT_MS = 5000
PROBE_TIMEOUT_S = 2.0
"""TCP check before FFmpeg opens a stream: a fast, specific reason ('connection refused')."""
FOLDER_FPS = 1.0
"""Image folders are slide shows: one picture per second of stream time."""
DEFAULT_FPS = 25.0
"""Only used when a file states no usable frame rate at all."""
MAX_FPS = 240.0
MAX_FAILED_READS = 1000
"""Consecutive failed decodes before a file of unknown length counts as ended (cheap at EOF)."""
MAX_LIVE_FAILURES = 25
"""Consecutive failed reads before a live stream counts as dead (a closed socket fails instantly)."""
RTSP_LATENCY_MS = 200
"""jetson-utils jitter buffer; its 2 s default would add 2 s to every alert."""
DAMAGE_MAX_S = 5.0
"""After undecodable data, frames count as damaged until the decoder has output its next keyframe, but
for at most this long (stream seconds): a lost keyframe or a backend that cannot tell keyframes."""
KEY_SLACK_FRAMES = 3
"""Frames beyond the decoder's thread count by which a keyframe packet may precede its output frame
(frame threading plus B-frame reordering); these few extra frames also count as damaged."""


class SourceError(Exception):
    """A source that cannot be used, as one user-facing line.

    For example 'no such file: x.mp4' or 'cannot open stream rtsp://cam/1: connection refused'.
    """


class FrameSource(Protocol):
    """What the capture thread and `edge scan` read frames from."""

    name: str
    """The spec (with any password masked), for messages."""
    fps: float | None
    """Native fps if known."""
    is_live: bool
    """True for rtsp/http/usb/csi, False for files/images/folders."""
    corrupt: int
    """Undecodable frames skipped so far."""
    still: bool
    """True for an image or a folder of images: every frame is an independent picture, not video."""
    last_damaged: bool
    """True when the frame last returned by read() follows undecodable data: until the decoder's next
    keyframe it may show smears (error concealment), which must not count as motion or flicker."""
    last_origin: str | None
    """The picture file (name only) the frame last returned by read() came from; None for video."""

    def read(self) -> Item | None:
        """Next frame; None at the end of a finite source; raises SourceError if a live stream fails."""
        ...

    def close(self) -> None: ...


def open_source(spec: str, *, loop: bool = False) -> FrameSource:
    """Open a file, image, image folder, rtsp/http stream, USB or CSI camera and decode its first frame.

    `loop` replays a finite source forever with index and pts still increasing. Raises SourceError with
    a one-line message when the source does not exist, is of an unsupported type, cannot be opened or
    yields no frame.
    """
    spec = spec.strip()
    name = redact(spec)
    scheme = spec.split("://", 1)[0].lower() if "://" in spec else ""
    if scheme == "csi":
        if _jetson_utils() is None:
            raise SourceError(f"{name} needs jetson-utils (JetPack), which is not installed")
        return JetsonSource(spec, name, live=True, loop=False)
    if scheme in STREAM_PORTS:
        if scheme.startswith("rtsp") and (hw := _try_jetson(spec, name, live=True, loop=False)):
            return hw
        _probe(spec, name)
        return StreamSource(spec, name, cv2.CAP_FFMPEG)
    if scheme:
        raise SourceError(
            f"unsupported source {name}: use a file, a folder, rtsp://, http(s)://, usb:N or csi://N"
        )
    if spec.lower().startswith(("usb:", "/dev/video")):
        return _open_usb(spec)
    path = Path(spec).expanduser()
    if not path.exists():
        raise SourceError(f"no such file: {spec}")
    if not os.access(path, os.R_OK):
        raise SourceError(f"permission denied: {spec}")
    if path.is_dir():
        return ImageFolderSource(path, name, loop=loop)
    ext = path.suffix.lower()
    if ext in IMAGE_EXTS:
        return ImageSource(path, name, loop=loop)
    if ext == ".gif":
        try:
            return VideoFileSource(path, name, loop=loop)
        except SourceError:  # GStreamer-only OpenCV builds (some Jetsons) cannot read GIFs
            return GifSource(path, name, loop=loop)
    if ext in VIDEO_EXTS:
        return _try_jetson(spec, name, live=False, loop=loop) or VideoFileSource(path, name, loop=loop)
    raise SourceError(
        f"unsupported file type {ext or '(no extension)'}: {spec} "
        "(expected a video, an image or a folder of images)"
    )


CaptureError = SourceError
"""The name the admin page's "test connection" knows it by: the same one-line error as a source's."""


def grab_frame(source: str, timeout_s: float = 10) -> np.ndarray:
    """One decoded frame (BGR) of `source`, or a CaptureError saying exactly why not: no such file,
    not a video, connection refused, unknown host, no frame in time.

    Never blocks past `timeout_s`: FFmpeg can hang in an open or a read (a camera that accepts the
    connection and then says nothing), so the source is opened and read on a worker thread, and on
    time-out that thread is left to finish (it closes what it opened) while the caller gets the error.
    """
    done = threading.Event()
    result: list[np.ndarray | BaseException] = []

    def grab() -> None:
        try:
            src = open_source(source)
            try:
                item = src.read()
            finally:
                src.close()
            result.append(item[2] if item is not None else SourceError(f"no frame from {redact(source)}"))
        except BaseException as exc:  # handed to the caller, who raises it as a CaptureError
            result.append(exc)
        finally:
            done.set()

    threading.Thread(target=grab, name="grab-frame", daemon=True).start()
    if not done.wait(timeout_s):
        raise CaptureError(f"no frame from {redact(source)} within {timeout_s:g} s")
    found = result[0]
    if isinstance(found, SourceError):
        raise found
    if isinstance(found, BaseException):
        raise CaptureError(f"cannot read {redact(source)}: {type(found).__name__}: {found}") from found
    return found


class _Clock:
    """Stream time per frame: container timestamps while they behave, then (for good) a steady fallback."""

    def __init__(self, fps: float | None, *, live: bool) -> None:
        self.fps = fps or DEFAULT_FPS
        self.live = live
        self.trusted = True
        self.last: float | None = None
        self._last_index = -1
        self._last_wall = self._start_wall = time.monotonic()
        self._first: tuple[float, float] | None = None  # (container s, wall s) of the first frame

    def frames_skipped(self, stamp_s: float) -> int | None:
        """Frames missing before a frame stamped `stamp_s`, from the timestamp gap; None if unknown."""
        if not self.trusted or not math.isfinite(stamp_s):
            return None
        start = -1.0 / self.fps if self.last is None else self.last
        return max(0, round((stamp_s - start) * self.fps) - 1)

    def pts(self, index: int, stamp_s: float) -> float:
        now = time.monotonic()
        if self.trusted and not self._sane(stamp_s, now):
            self.trusted = False
            log.debug(
                "container timestamps unusable (%.3f after %s); using %s",
                stamp_s,
                self.last,
                "the wall clock" if self.live else "index / fps",
            )
        if self.trusted:
            pts = stamp_s
        elif self.last is None:
            pts = now - self._start_wall if self.live else index / self.fps
        elif self.live:
            pts = self.last + max(now - self._last_wall, 1e-6)
        else:
            pts = self.last + (index - self._last_index) / self.fps
        self.last, self._last_index, self._last_wall = pts, index, now
        return pts

    def _sane(self, stamp_s: float, now: float) -> bool:
        if not math.isfinite(stamp_s) or stamp_s < 0 or (self.last is not None and stamp_s <= self.last):
            return False
        if not self.live:
            return True
        if self._first is None:
            self._first = (stamp_s, now)
        stream_s, wall_s = stamp_s - self._first[0], now - self._first[1]
        return abs(stream_s - wall_s) <= 1.0 + 0.1 * wall_s  # OpenCV guesses 25 fps for MJPEG


class _Damage:
    """Whether frames still show the decoder's concealment of data it could not decode.

    An episode starts at a gap (failed reads before a frame) and ends once the decoder has output the
    next keyframe: FFmpeg flags the last packet read, which runs ahead of the frame handed out by the
    decoder's thread count plus B-frame reordering, so the episode ends that many frames after the key
    packet. Backends that cannot tell keyframes, or a lost keyframe, end it after DAMAGE_MAX_S.
    """

    def __init__(self, cap: cv2.VideoCapture) -> None:
        self._cap = cap
        try:
            self._keys = cap.getBackendName() == "FFMPEG"
        except cv2.error:
            self._keys = False
        threads = cap.get(cv2.CAP_PROP_N_THREADS) if self._keys else 0.0
        self._delay = (int(threads) if threads > 0 else 1) + KEY_SLACK_FRAMES
        self._since: float | None = None  # pts the episode started at; None while the decoder is clean
        self._left: int | None = None  # damaged frames still to come once the key packet was read

    def gap(self) -> None:
        """Undecodable data was just skipped: the next frames may be concealed."""
        self._since, self._left = math.nan, None

    def frame(self, pts: float) -> bool:
        """Whether the frame just decoded, at `pts`, may show concealment."""
        if self._since is None:
            return False
        if math.isnan(self._since):
            self._since = pts
        if pts - self._since > DAMAGE_MAX_S:
            self._since = None
            return False
        if self._left is None and self._keys and self._cap.get(cv2.CAP_PROP_LRF_HAS_KEY_FRAME) > 0:
            self._left = self._delay
        if self._left is not None:
            if self._left <= 0:
                self._since = None
                return False
            self._left -= 1
        return True


class _Source:
    """Shared first-frame check: the frame decoded at open time is handed out by the first read()."""

    name: str
    fps: float | None
    is_live: bool
    still = False
    corrupt: int = 0
    last_damaged = False
    last_origin: str | None = None
    _mark: tuple[bool, str | None] = (False, None)
    """(damaged, origin) of the item the running _read() returns; set just before it returns/yields."""
    _pending: tuple[Item, bool, str | None] | None = None

    def read(self) -> Item | None:
        if self._pending is not None:
            (item, self.last_damaged, self.last_origin), self._pending = self._pending, None
            return item
        item = self._marked_read()
        self.last_damaged, self.last_origin = self._mark if item is not None else (False, None)
        return item

    def _marked_read(self) -> Item | None:
        self._mark = (False, None)
        return self._read()

    def _read(self) -> Item | None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def _check_first_frame(self) -> None:
        """Called last in __init__: decode frame 0 now so a broken source fails in open_source()."""
        try:
            item = self._marked_read()
        except BaseException:
            self.close()
            raise
        if item is None:
            self.close()
            raise SourceError(f"no decodable frame in {self.name}")
        self._pending = (item, *self._mark)


class _FiniteSource(_Source):
    """Files, GIFs, images and folders: one pass per `_pass()`, replayed with shifted index/pts if looping."""

    is_live = False

    def __init__(self, name: str, fps: float | None, *, loop: bool) -> None:
        self.name, self.fps, self.loop = name, fps, loop
        self._index_offset, self._pts_offset = 0, 0.0
        self._last: tuple[int, float] = (-1, 0.0)
        self._pass_frames = 0
        self._it = self._pass()
        self._check_first_frame()

    def _pass(self) -> Iterator[Item]:
        """One pass over the clip, (index, pts) from 0; counts what it skips in self.corrupt."""
        raise NotImplementedError

    def _read(self) -> Item | None:
        for _ in range(2):  # the current pass, then (looping) one fresh pass
            item = next(self._it, None)
            if item is not None:
                index, pts, image = item
                self._last, self._pass_frames = (index, pts), self._pass_frames + 1
                return index + self._index_offset, pts + self._pts_offset, image
            if not self.loop or self._pass_frames == 0:  # a pass without frames would spin forever
                return None
            last_index, last_pts = self._last
            self._index_offset += last_index + 1
            self._pts_offset += last_pts + 1.0 / (self.fps or DEFAULT_FPS)  # the clip's duration
            self._pass_frames = 0
            self._it.close()
            self._it = self._pass()
        return None

    def close(self) -> None:
        self._it.close()


class VideoFileSource(_FiniteSource):
    """A video file (or GIF) decoded by OpenCV; undecodable frames are skipped and counted."""

    def __init__(self, path: Path, name: str, *, loop: bool = False) -> None:
        self.path = path
        self._cap: cv2.VideoCapture | None = self._open(path, name)
        super().__init__(name, _sane_fps(self._cap.get(cv2.CAP_PROP_FPS)), loop=loop)

    @staticmethod
    def _open(path: Path, name: str) -> cv2.VideoCapture:
        for api in (cv2.CAP_FFMPEG, cv2.CAP_ANY):  # FFmpeg first; a GStreamer-only build still gets a go
            cap = cv2.VideoCapture(str(path), api)
            if cap.isOpened():
                return cap
            cap.release()
        raise SourceError(f"cannot read video {name}: not a video OpenCV can decode")

    def _pass(self) -> Iterator[Item]:
        cap = self._cap if self._cap is not None else self._open(self.path, self.name)
        self._cap = None
        try:
            clock = _Clock(self.fps, live=False)
            damage = _Damage(cap)
            count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
            total = count if count > 0 else None
            index, failures = -1, 0
            while True:
                ok, image = cap.read()
                if not ok:
                    # OpenCV drops one broken packet per failed read; EOF also fails, so bound the retries.
                    failures += 1
                    limit = MAX_FAILED_READS if total is None else total - index + 16
                    if (total is not None and index + 1 >= total) or failures > limit:
                        if total is not None and index + 1 < total:
                            log.warning(
                                "%s ended at frame %d of %d (truncated?)", self.name, index + 1, total
                            )
                        return
                    continue
                stamp = cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
                skipped = 0
                if failures:
                    gap = clock.frames_skipped(stamp)
                    skipped = failures if gap is None else gap
                    if skipped:
                        self.corrupt += skipped
                        damage.gap()
                        log.warning(
                            "%s: skipped %d undecodable frame(s) before frame %d",
                            self.name,
                            skipped,
                            index + skipped + 1,
                        )
                    failures = 0
                index += skipped + 1
                pts = clock.pts(index, stamp)
                self._mark = (damage.frame(pts), None)
                yield index, pts, image
        finally:
            cap.release()


class GifSource(_FiniteSource):
    """An animated GIF decoded by Pillow, for OpenCV builds that cannot read GIFs."""

    def __init__(self, path: Path, name: str, *, loop: bool = False) -> None:
        self.path = path
        try:
            with Image.open(path) as im:
                durations = [_gif_delay_s(frame) for frame in ImageSequence.Iterator(im)]
        except (OSError, ValueError) as exc:
            raise SourceError(f"cannot read GIF {name}: {exc}") from exc
        super().__init__(name, len(durations) / sum(durations), loop=loop)

    def _pass(self) -> Iterator[Item]:
        with Image.open(self.path) as im:
            pts = 0.0
            try:
                for index, frame in enumerate(ImageSequence.Iterator(im)):
                    rgb = np.asarray(frame.convert("RGB"))
                    yield index, pts, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
                    pts += _gif_delay_s(frame)
            except OSError as exc:  # a truncated GIF: keep what decoded
                log.warning("%s: stopped at a broken frame: %s", self.name, exc)


class ImageSource(_FiniteSource):
    """A single picture: one frame at pts 0 (re-read from disk on every loop pass)."""

    still = True

    def __init__(self, path: Path, name: str, *, loop: bool = False) -> None:
        self.path = path
        super().__init__(name, FOLDER_FPS, loop=loop)

    def _pass(self) -> Iterator[Item]:
        image = _imread(self.path)
        if image is None:
            self.corrupt += 1
            return
        self._mark = (False, self.path.name)
        yield 0, 0.0, image


class ImageFolderSource(_FiniteSource):
    """A folder of pictures in natural name order, one frame each; unreadable ones are skipped and counted.

    The folder is listed again on every loop pass, so pictures dropped in by an uploader are picked up.
    """

    still = True

    def __init__(self, path: Path, name: str, *, loop: bool = False, fps: float = FOLDER_FPS) -> None:
        self.path = path
        if not self._files():
            raise SourceError(f"no images in folder {name} (looked for {', '.join(sorted(IMAGE_EXTS))})")
        super().__init__(name, fps, loop=loop)

    def _files(self) -> list[Path]:
        files = [p for p in self.path.iterdir() if p.suffix.lower() in IMAGE_EXTS and p.is_file()]
        return sorted(files, key=_natural_key)

    def _pass(self) -> Iterator[Item]:
        fps = self.fps or FOLDER_FPS
        for index, file in enumerate(self._files()):
            image = _imread(file)
            if image is None:
                self.corrupt += 1
                log.warning("%s: skipped unreadable image %s", self.name, file.name)
                continue
            self._mark = (False, file.name)
            yield index, index / fps, image


class StreamSource(_Source):
    """A live stream (rtsp/http via FFmpeg) or a USB camera (V4L2) read through OpenCV."""

    is_live = True

    def __init__(self, target: str | int, name: str, api: int) -> None:
        self.name = name
        params = []
        if api == cv2.CAP_FFMPEG:
            params = [
                cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
                OPEN_TIMEOUT_MS,
                cv2.CAP_PROP_READ_TIMEOUT_MSEC,
                READ_TIMEOUT_MS,
            ]
        self._cap = cv2.VideoCapture(target, api, params)
        if not self._cap.isOpened():
            self._cap.release()
            raise SourceError(f"cannot open stream {name}: it answered but sent no video OpenCV can decode")
        self.fps = _sane_fps(self._cap.get(cv2.CAP_PROP_FPS))
        self._clock = _Clock(self.fps, live=True)
        self._damage = _Damage(self._cap)
        self._index = -1
        self._check_first_frame()

    def _read(self) -> Item | None:
        failures, since = 0, time.monotonic()
        while True:
            ok, image = self._cap.read()
            if ok:
                break
            failures += 1
            if failures >= MAX_LIVE_FAILURES or time.monotonic() - since > READ_TIMEOUT_MS / 1000:
                raise SourceError(f"stream {self.name} stopped delivering frames")
        if failures:
            self.corrupt += failures
            self._damage.gap()
            log.warning("%s: skipped %d undecodable frame(s)", self.name, failures)
        self._index += 1
        pts = self._clock.pts(self._index, self._cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0)
        self._mark = (self._damage.frame(pts), None)
        return self._index, pts, image

    def close(self) -> None:
        self._cap.release()


class JetsonSource(_Source):
    """jetson-utils `videoSource`: CSI cameras, and the hardware decoder for RTSP and video files.

    UNTESTED HERE: jetson-utils exists only on Jetson devices (JetPack), so this path is kept small.
    It hands out RGB cudaImages; they are mapped with cudaToNumpy and converted to BGR (one copy).
    """

    def __init__(self, spec: str, name: str, *, live: bool, loop: bool) -> None:
        ju = _jetson_utils()
        if ju is None:
            raise SourceError(f"{name} needs jetson-utils (JetPack), which is not installed")
        self.name, self.is_live, self._ju = name, live, ju
        argv = [f"--input-rtsp-latency={RTSP_LATENCY_MS}"] + (["--input-loop=-1"] if loop else [])
        try:
            self._src = ju.videoSource(spec, argv=argv)
        except Exception as exc:  # jetson-utils raises plain Exception
            raise SourceError(f"cannot open {name} with jetson-utils: {exc}") from exc
        self.fps = _sane_fps(self._src.GetFrameRate())
        self._index, self._start = -1, time.monotonic()
        self._check_first_frame()

    def _read(self) -> Item | None:
        deadline = time.monotonic() + READ_TIMEOUT_MS / 1000
        while True:
            try:
                image = self._src.Capture(format="rgb8", timeout=1000)  # None on timeout (newer versions)
            except Exception:  # older versions raise on timeout and at end of stream
                image = None
            if image is not None:
                break
            if not self._src.IsStreaming():
                if self.is_live:
                    raise SourceError(f"stream {self.name} ended")
                return None
            if time.monotonic() > deadline:
                raise SourceError(f"no frame from {self.name} for {READ_TIMEOUT_MS // 1000} s")
        self._ju.cudaDeviceSynchronize()
        bgr = cv2.cvtColor(self._ju.cudaToNumpy(image), cv2.COLOR_RGB2BGR)
        self._index += 1
        pts = time.monotonic() - self._start if self.is_live else self._index / (self.fps or DEFAULT_FPS)
        return self._index, pts, bgr

    def close(self) -> None:
        self._src.Close()


@functools.cache
def _jetson_utils() -> ModuleType | None:
    """jetson-utils if installed (Jetson only); imported lazily so other machines never need it."""
    try:
        import jetson_utils
    except ImportError:
        return None
    return jetson_utils


def _try_jetson(spec: str, name: str, *, live: bool, loop: bool) -> JetsonSource | None:
    """The hardware decoder where available; None (use OpenCV) where not, or where it cannot open spec."""
    if _jetson_utils() is None:
        return None
    try:
        return JetsonSource(spec, name, live=live, loop=loop)
    except SourceError as exc:
        log.warning("%s; falling back to OpenCV", exc)
        return None


def _probe(url: str, name: str) -> None:
    """Fail fast with a specific reason when the stream's host cannot even be reached over TCP."""
    parts = urlsplit(url)
    try:
        port = parts.port or STREAM_PORTS[parts.scheme.lower()]
    except ValueError:
        raise SourceError(f"cannot open stream {name}: invalid port") from None
    if not parts.hostname:
        raise SourceError(f"cannot open stream {name}: no host in the URL")
    try:
        with socket.create_connection((parts.hostname, port), timeout=PROBE_TIMEOUT_S):
            pass
    except socket.gaierror:
        raise SourceError(f"cannot open stream {name}: unknown host {parts.hostname}") from None
    except ConnectionRefusedError:
        raise SourceError(f"cannot open stream {name}: connection refused") from None
    except TimeoutError:
        raise SourceError(f"cannot open stream {name}: no answer within {PROBE_TIMEOUT_S:g} s") from None
    except OSError as exc:
        raise SourceError(f"cannot open stream {name}: {exc.strerror or exc}") from None


def _open_usb(spec: str) -> StreamSource:
    """`usb:N` or `/dev/videoN`: a V4L2 camera (any OpenCV backend off Linux)."""
    match = re.fullmatch(r"(?:usb:|/dev/video)(\d+)", spec, flags=re.IGNORECASE)
    if match is None:
        raise SourceError(f"unsupported camera {spec}: use usb:N or /dev/videoN")
    index = int(match.group(1))
    linux = sys.platform.startswith("linux")
    if linux and not Path(f"/dev/video{index}").exists():
        raise SourceError(f"no such camera device: /dev/video{index}")
    return StreamSource(index, spec, cv2.CAP_V4L2 if linux else cv2.CAP_ANY)


def _imread(path: Path) -> np.ndarray | None:
    """BGR uint8 picture, or None when the file is not a decodable image."""
    data = np.fromfile(path, dtype=np.uint8)
    return cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None


def _gif_delay_s(frame: Image.Image) -> float:
    """A GIF frame's display time; 0 or missing means 100 ms, as browsers do."""
    ms = frame.info.get("duration") or 0
    return (ms if ms > 10 else 100) / 1000.0


def _natural_key(path: Path) -> list[str | int]:
    """frame2.jpg before frame10.jpg."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def _sane_fps(value: float) -> float | None:
    return float(value) if math.isfinite(value) and 0 < value <= MAX_FPS else None

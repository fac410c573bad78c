"""A disk reserve for the event log: a ballast file given back when the disk fills up.

When the data disk is full SQLite answers every write with "database or disk is full", and the
appliance can only hold alerts in memory. A file of real, allocated bytes (`data_dir/.reserve`,
16 MiB by default) kept beside the database is the space alerts need to go on committing for a
while: the first write that fails for lack of space deletes it and is tried again. Once retention or
a person has freed space again (free space above the reserve plus a margin) the file is written
again, ready for the next time.

The bytes are allocated for real (posix_fallocate; zeros written where a file system cannot
fallocate), never a sparse file, which would reserve nothing. A reserve of 0 bytes turns all of this
off and leaves an existing file alone (the CLI reading a running appliance's folder).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import threading
from pathlib import Path

log = logging.getLogger(__name__)

MIB = 1024 * 1024
RESERVE_NAME = ".reserve"
RESERVE_BYTES = 16 * MIB
"""Default reserve: tens of thousands of alert rows with their outbox rows and WAL frames."""
_CHUNK = MIB
_NO_FALLOCATE = {errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS}


def mib(n: int) -> str:
    """Bytes as MiB for messages: '16', '0.5'."""
    return f"{n / MIB:.3g}"


def allocated(path: Path) -> int:
    """Bytes of disk really allocated to `path` (0 if missing): a sparse file counts for nothing."""
    try:
        st = os.stat(path)
    except OSError:
        return 0
    return min(st.st_size, st.st_blocks * 512)


class Reserve:
    """The ballast file at `path`, `size` bytes; armed = the file is there with its bytes allocated.

    Thread-safe: camera threads may run out of space at the same moment; only one releases.
    `releases` counts releases, so a writer that failed while another thread released the reserve
    knows that a retry is worth it.
    """

    def __init__(self, path: Path, size: int, margin: int) -> None:
        if size < 0 or margin < 0:
            raise ValueError("reserve and margin must not be negative")
        self.path = Path(path)
        self.size = int(size)
        self.margin = int(margin)
        self.releases = 0
        self._lock = threading.Lock()
        self._armed = False  # until arm() has checked (and trimmed or completed) the file

    @property
    def armed(self) -> bool:
        return self._armed

    def arm(self) -> bool:
        """Write (or complete) the file if free space covers what is missing plus the margin.

        Never raises: a reserve that cannot be written is logged, and the event log works without one.
        """
        if self.size == 0:
            return False
        with self._lock:
            if self._armed:
                return True
            missing = max(0, self.size - allocated(self.path))
            if missing:  # a complete file found at start-up is armed however full the disk is
                try:
                    free = shutil.disk_usage(self.path.parent).free
                except OSError as exc:
                    log.warning("event log: cannot measure free space for the disk reserve: %s", exc)
                    return False
                if free < missing + self.margin:
                    return False
            try:
                self._write()
            except OSError as exc:
                with contextlib.suppress(OSError):
                    self.path.unlink()
                log.warning("event log: cannot write the %s MiB disk reserve %s: %s",
                            mib(self.size), self.path, exc.strerror or exc)  # fmt: skip
                return False
            self._armed = True
            return True

    def _write(self) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            if os.fstat(fd).st_size > self.size:
                os.ftruncate(fd, self.size)
            try:
                os.posix_fallocate(fd, 0, self.size)
            except OSError as exc:
                if exc.errno not in _NO_FALLOCATE:
                    raise
                zeros = bytes(_CHUNK)
                os.lseek(fd, 0, os.SEEK_SET)
                left = self.size
                while left > 0:
                    left -= os.write(fd, zeros[: min(left, _CHUNK)])
            os.fsync(fd)  # delayed allocation: make the blocks real now, not at the next flush
        finally:
            os.close(fd)
        if allocated(self.path) < self.size:
            raise OSError(errno.ENOSPC, "the file system did not allocate the reserve (sparse file)")

    def release(self, seen_releases: int) -> bool:
        """After a write failed for lack of space: delete the file (logging one ERROR) and say whether
        retrying the write is worth it: True if this call released the reserve, or another thread did
        since `seen_releases` was read; False if there was nothing left to give back."""
        with self._lock:
            if not self._armed:
                return self.releases != seen_releases
            freed = allocated(self.path)
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass  # deleted by hand: whatever it held is free already
            except OSError as exc:
                log.error("event log: cannot delete the disk reserve %s: %s", self.path, exc.strerror or exc)
                return False
            self._armed = False
            self.releases += 1
        log.error(
            "disk full: released the %s MiB reserve to keep committing alerts; free some space",
            mib(freed or self.size),
        )
        return True

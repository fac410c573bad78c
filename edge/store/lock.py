"""One appliance per data folder: an exclusive lock on `data_dir/.lock`.

Two appliances on one data folder would share the event log and the outbox, publish as the same
device, and kick each other off the MQTT broker (same client id). `DataLock.acquire()` makes the
second one stop at start-up with one line naming the first one's pid.

Why flock on an open file rather than "a pid file exists": the kernel drops the lock when the holder's
last descriptor closes, which includes a crash, SIGKILL or power cut, so there is never a stale lock
to clean up. The file stays behind (deleting it would let a third process lock a new inode while a
second still waits on the old one); only its content, the holder's pid, is for people and messages.
The descriptor is not inherited by child processes (Python's default), so a helper process the
appliance starts never keeps the folder locked after the appliance is gone.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from types import TracebackType

from edge.store.db import StoreError, guard

LOCK_NAME = ".lock"


class DataLock:
    """Exclusive, crash-safe ownership of a data folder by this process."""

    def __init__(self, data_dir: Path | str) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.path = self.data_dir / LOCK_NAME
        self._fd: int | None = None

    @property
    def locked(self) -> bool:
        """True while this object holds the lock."""
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock (creating the folder if needed) and write our pid into the lock file.

        Raises StoreError with one line if another process (or another DataLock in this one) holds
        it, or if the folder cannot be created or the file opened. Acquiring a lock already held by
        this object does nothing.
        """
        if self._fd is not None:
            return
        with guard(f"cannot lock the data folder {self.data_dir}"):
            self.data_dir.mkdir(parents=True, exist_ok=True)
            # No O_TRUNC: until we hold the lock, the file holds the owner's pid.
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read_pid(fd)
            os.close(fd)
            if isinstance(exc, BlockingIOError):
                who = f"pid {holder}" if holder is not None else "pid unknown"
                raise StoreError(
                    f"data folder {self.data_dir} is in use by another appliance ({who}); "
                    "stop it or use another --data"
                ) from None
            raise StoreError(f"cannot lock the data folder {self.data_dir}: {exc.strerror or exc}") from exc
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            pass  # a full disk must not stop the appliance: the lock itself is what counts
        self._fd = fd

    def release(self) -> None:
        """Give the folder up (also happens by itself when the process ends, however it ends)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)  # before unlocking: afterwards the file may hold the next owner's pid
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def holder(self) -> int | None:
        """The pid written by the current holder, if any (for messages; not a liveness check)."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            return _read_pid(fd)
        finally:
            os.close(fd)

    def __enter__(self) -> DataLock:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None

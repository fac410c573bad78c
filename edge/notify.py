"""systemd's service notifications (sd_notify(3)) and the watchdog that earns its pings.

Under `Type=notify` systemd passes `$NOTIFY_SOCKET`: a unix datagram socket (a path, or an abstract
address written with a leading "@") that takes newline-separated `KEY=value` lines. The appliance
sends `READY=1` once its cameras and the bus have started, `STATUS=` lines (`systemctl status` shows
the last one), `STOPPING=1` as it stops, and, under `WatchdogSec=`, `WATCHDOG=1` every half of
`$WATCHDOG_USEC`, but only while every watched loop has beaten recently (`Heartbeats`). A loop that
hangs stops the pings and systemd restarts the service (`Restart=always`). The protocol is a few
lines of socket code, written here rather than taken from a package.

Without `$NOTIFY_SOCKET` (a terminal, the tests, another init) nothing is sent and no thread runs; a
loop's heartbeat is still one float stored per pass.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping

log = logging.getLogger("edge.notify")

STATUS_EVERY_S = 5.0
"""Without a watchdog, how often the STATUS= line is brought up to date (sent only when it changed)."""
MIN_WATCHDOG_S = 2.0
"""Below this, a loop that waits half a second for a frame is close to counting as stale: warned."""


class Notifier:
    """Sends sd_notify messages to `$NOTIFY_SOCKET`; without it every call is a no-op.

    Thread-safe. `watchdog_s` is `$WATCHDOG_USEC` in seconds when the watchdog is meant for this process
    (`$WATCHDOG_PID` unset or ours), else None.
    """

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.address = _address(env.get("NOTIFY_SOCKET", ""))
        self.watchdog_s = _watchdog_s(env) if self.address is not None else None
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._failed = False

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *fields: str) -> bool:
        """One datagram of `fields` ("READY=1", "STATUS=...") joined by newlines; False if not sent. A
        failure is logged once (systemd gone, or a socket we may not write to); the appliance goes on."""
        if self.address is None:
            return False
        data = "\n".join(fields).encode()
        with self._lock:
            try:
                if self._sock is None:
                    self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.sendto(data, self.address)
            except OSError as exc:
                if not self._failed:
                    log.warning("systemd notification to %s failed: %s", _shown(self.address), exc)
                self._failed = True
                return False
        self._failed = False
        return True

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None


def _address(value: str) -> str | None:
    """`$NOTIFY_SOCKET` as a socket address: "/run/systemd/notify", or "@name" (abstract namespace)."""
    if value.startswith("/"):
        return value
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]
    if value:
        log.warning("NOTIFY_SOCKET=%r is not a unix socket path or @abstract name; not notifying", value)
    return None


def _shown(address: str) -> str:
    return "@" + address[1:] if address.startswith("\0") else address


def _watchdog_s(env: Mapping[str, str]) -> float | None:
    """sd_watchdog_enabled(3): `$WATCHDOG_USEC` (> 0) for us unless `$WATCHDOG_PID` names another process
    (a child that inherited the environment must not ping for its parent)."""
    pid = env.get("WATCHDOG_PID", "")
    usec = env.get("WATCHDOG_USEC", "")
    try:
        if pid and int(pid) != os.getpid():
            return None
        value = int(usec) / 1e6 if usec else 0.0
    except ValueError:
        log.warning("WATCHDOG_USEC=%r / WATCHDOG_PID=%r are not numbers; no watchdog pings", usec, pid)
        return None
    if value <= 0:
        return None
    if value < MIN_WATCHDOG_S:
        log.warning("WatchdogSec=%.3g s is shorter than %g s: a busy loop may be taken for a hung one",
                    value, MIN_WATCHDOG_S)  # fmt: skip
    return value


class Heart:
    """One loop's heartbeat: `beat()` once per pass (a float stored, nothing else)."""

    __slots__ = ("at", "name", "slice_s")

    def __init__(self, name: str, slice_s: float = math.inf) -> None:
        self.name = name
        self.slice_s = slice_s
        self.at = time.monotonic()

    def beat(self) -> None:
        self.at = time.monotonic()

    def allow(self, seconds: float) -> None:
        """A call follows that may rightly block for up to `seconds` (a DNS lookup and a TLS handshake):
        count this loop alive until then, and stale only `max_age` after that."""
        self.at = time.monotonic() + seconds

    def wait(self, event: threading.Event, timeout: float) -> bool:
        """`event.wait(timeout)` for a loop that idles: beats at least every `slice_s` meanwhile."""
        deadline = time.monotonic() + timeout
        while True:
            self.beat()
            left = deadline - time.monotonic()
            if left <= 0:
                return event.is_set()
            if event.wait(min(left, self.slice_s)):
                return True


NO_HEART = Heart("unwatched")
"""The heart of a loop nobody watches (`edge scan`, a bus in a test): its beats go nowhere."""


class Heartbeats:
    """The watched loops' hearts, made in one place (the appliance) and handed to each loop.

    `max_age` is how long a heart may go without a beat and still count as alive (half the watchdog);
    idle waits (`Heart.wait`) beat three times as often. None: nobody watches, waits are not sliced.
    """

    def __init__(self, max_age: float | None = None) -> None:
        self.max_age = max_age
        self._slice_s = max_age / 3 if max_age else math.inf
        self._hearts: list[Heart] = []
        self._lock = threading.Lock()

    def heart(self, name: str) -> Heart:
        """A new heart, watched from now on (it counts as just beaten)."""
        heart = Heart(name, self._slice_s)
        with self._lock:
            self._hearts.append(heart)
        return heart

    def forget(self, heart: Heart) -> None:
        """No longer watched (its loop ended on purpose). The heart object itself, not its name: a
        camera restarted under the same name has a new heart, and a late beat of the old one is lost."""
        with self._lock:
            self._hearts = [h for h in self._hearts if h is not heart]

    def names(self) -> list[str]:
        with self._lock:
            return [h.name for h in self._hearts]

    def stale(self, max_age: float | None = None) -> list[tuple[str, float]]:
        """(name, seconds since its last beat) of every heart older than `max_age` (default: ours)."""
        limit = self.max_age if max_age is None else max_age
        if limit is None:
            return []
        now = time.monotonic()
        with self._lock:
            hearts = list(self._hearts)
        return [(h.name, now - h.at) for h in hearts if now - h.at > limit]


class Watchdog:
    """The pinging thread: every `watchdog_s / 2`, WATCHDOG=1 if no heart is stale, and the STATUS= line
    when it changed (without a watchdog, STATUS= alone every STATUS_EVERY_S). A stale heart is logged
    once by name, and again when it beats again."""

    def __init__(self, notifier: Notifier, hearts: Heartbeats, status: Callable[[], str]) -> None:
        self.notifier = notifier
        self.hearts = hearts
        self.status = status
        self.every = notifier.watchdog_s / 2 if notifier.watchdog_s else STATUS_EVERY_S
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._reported: set[str] = set()
        self._status = ""

    def start(self) -> None:
        """READY=1 with the first status and ping, then the thread (nothing at all without systemd)."""
        if not self.notifier.enabled:
            return
        self.tick(ready=True)
        self._thread = threading.Thread(target=self._run, name="watchdog", daemon=True)
        self._thread.start()

    def stop(self, status: str) -> None:
        """No more pings; STOPPING=1 (systemd waits TimeoutStopSec for the exit from here on)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        self.notifier.send("STOPPING=1", f"STATUS={status}")

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.tick()
            except Exception:  # a bug here stops the pings, which restarts us: log it first
                log.exception("watchdog: tick failed")

    def tick(self, *, ready: bool = False) -> None:
        fields = ["READY=1"] if ready else []
        stale = self.hearts.stale() if self.notifier.watchdog_s else []
        for name, age in stale:
            if name not in self._reported:
                log.error("watchdog: %s has not run for %.0f s; not pinging systemd", name, age)
        for name in self._reported - {name for name, _ in stale}:
            log.warning("watchdog: %s runs again; pinging systemd", name)
        self._reported = {name for name, _ in stale}
        if stale:
            status = "watchdog: " + ", ".join(f"{name} has not run for {age:.0f} s" for name, age in stale)
        else:
            status = self._status_line()
            if self.notifier.watchdog_s:
                fields.append("WATCHDOG=1")
        if status != self._status or ready:
            fields.append(f"STATUS={status}")
            self._status = status
        if fields:
            self.notifier.send(*fields)

    def _status_line(self) -> str:
        try:
            return self.status()
        except Exception as exc:  # a status line is never worth a missed ping
            return f"running (status unavailable: {type(exc).__name__})"

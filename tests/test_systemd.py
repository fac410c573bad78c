"""The systemd units and the appliance's side of them (edge.notify), as systemd sees them.

- Every unit in systemd/ passes `systemd-analyze verify`, run on the files themselves inside a
  throw-away filesystem root: the host's own system units (sysinit.target and the rest) plus the
  install tree the units name (/opt/reflex-edge/slots/a with stub executables, `current` linking to
  it), so that its check that every ExecStart= binary exists means something. The units' settings that
  the appliance relies on are read from the same files.
- `edge run` as its own process, with NOTIFY_SOCKET pointing at a unix datagram socket bound here and
  a 3 s watchdog: READY=1, a STATUS= line, WATCHDOG=1 every 1.5 s while a camera that never answers
  keeps its capture thread blocked (a dead camera is not a hung process), then no pings while one red
  loop is stalled on purpose (and the log names it), pings again once it runs again, and STOPPING=1
  and exit 0 on SIGTERM. Every message must come from the main process (NotifyAccess=main).

How the red loop is stalled: the test starts the real `edge run` entry point through a few lines of
`python -c` that wrap RedLoop.process so that, for camera `lobby`, it opens a FIFO once the test has
created one. open(2) of a FIFO blocks until a writer comes, so that camera's red-loop thread is really
blocked inside processing a frame, in a system call, while its capture thread, the other cameras' red
loops and housekeeping go on. Nothing in the appliance knows about it (no test hook in edge/). A FIFO
as a camera *source* would not do: that blocks the capture thread, which must not stop the pings.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from edge.notify import Heartbeats, Notifier, Watchdog
from tests.conftest import DATA, MODEL, REPO
from tests.support import wait_until
from tests.test_bus import Edge

UNITS_DIR = REPO / "systemd"
UNITS = sorted(p for p in UNITS_DIR.iterdir() if p.suffix in (".service", ".timer"))
CURRENT = "/opt/reflex-edge/current/"
"""The active release (a symlink to /opt/reflex-edge/slots/a or b, agreed with firmware/)."""
PEOPLE = DATA / "people" / "intel_one-by-one-person-detection.mp4"
WATCHDOG_S = 3.0
"""The test's WatchdogSec: pings every 1.5 s. Shorter than a real one (30 s) so the test is quick, long
enough that a red loop doing real inference on a busy 2-core machine never looks stale by accident."""


# -- the unit files --------------------------------------------------------------------------------


def systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found:
        return found
    if os.geteuid() == 0:  # CI and ./reflex test run as root and install it: missing is a failure there
        pytest.fail("systemd-analyze is not installed: ./reflex test and .ci/run install Debian's `systemd`")
    pytest.skip("systemd-analyze is not installed (Debian's `systemd`; ./reflex test installs it as root)")


def read_unit(path: Path) -> dict[str, list[tuple[str, str]]]:
    """A unit file as {section: [(key, value), ...]}: keys may repeat, `\\` continues a line."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    text = re.sub(r"\\\n", " ", path.read_text())
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), [])
            continue
        key, _, value = line.partition("=")
        current.append((key.strip(), " ".join(value.split())))
    return sections


def values(unit: dict[str, list[tuple[str, str]]], section: str, key: str) -> list[str]:
    return [v for k, v in unit.get(section, []) if k == key]


def value(unit: dict[str, list[tuple[str, str]]], section: str, key: str) -> str | None:
    found = values(unit, section, key)
    return found[-1] if found else None


def exec_paths(unit: dict[str, list[tuple[str, str]]]) -> list[str]:
    """The executables of every Exec*= line (prefixes such as `-` or `!` dropped)."""
    return [v.split()[0].lstrip("-@:+!") for k, v in unit.get("Service", []) if k.startswith("Exec")]


@pytest.fixture(scope="module")
def analyze_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A filesystem root for `systemd-analyze --root`: the host's system units, the units of systemd/
    copied as they are, and the release tree they run (stub executables in slots/a, current -> it)."""
    root = tmp_path_factory.mktemp("root")
    places = (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system"))
    host_units = next((p for p in places if p.is_dir()), None)
    if host_units is None:
        pytest.fail("systemd-analyze is here but the system's own units (/usr/lib/systemd/system) are not")
    shutil.copytree(host_units, root / "usr/lib/systemd/system", symlinks=True)
    etc = root / "etc/systemd/system"
    etc.mkdir(parents=True)
    slot = root / "opt/reflex-edge/slots/a"
    slot.mkdir(parents=True)
    (root / "opt/reflex-edge/current").symlink_to("slots/a")
    for unit_file in UNITS:
        shutil.copyfile(unit_file, etc / unit_file.name)
        for exe in exec_paths(read_unit(unit_file)):
            assert exe.startswith(CURRENT), f"{unit_file.name}: {exe} is not in the active release {CURRENT}"
            stub = slot / exe.removeprefix(CURRENT)
            stub.parent.mkdir(parents=True, exist_ok=True)
            stub.write_text("#!/bin/sh\nexit 0\n")
            stub.chmod(0o755)
    return root


def test_every_unit_passes_systemd_analyze_verify(analyze_root: Path) -> None:
    tool = systemd_analyze()
    names = [p.name for p in UNITS]
    assert {"reflex-edge.service", "reflex-blueloop.service", "reflex-firstboot.service",
            "reflex-update.service", "reflex-update.timer"} <= set(names)  # fmt: skip
    result = subprocess.run([tool, "verify", f"--root={analyze_root}", *names],
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    output = (result.stdout + result.stderr).strip()
    # A bad value or an unknown key is only a warning (exit 0): any output at all is a failure here.
    assert result.returncode == 0 and not output, output


def test_verify_sees_a_missing_executable(analyze_root: Path) -> None:
    """The root is what makes verify's executable check real: without the release it fails."""
    tool = systemd_analyze()
    edge = analyze_root / "opt/reflex-edge/slots/a/.venv/bin/edge"
    edge.rename(edge.with_name("edge.away"))
    try:
        result = subprocess.run([tool, "verify", f"--root={analyze_root}", "reflex-edge.service"],
                                capture_output=True, text=True, timeout=120)  # fmt: skip
    finally:
        edge.with_name("edge.away").rename(edge)
    assert result.returncode != 0
    assert "/opt/reflex-edge/current/.venv/bin/edge is not executable" in result.stdout + result.stderr


def test_hardened_services_stay_hardened(analyze_root: Path) -> None:
    """`systemd-analyze security` on the appliance and the blue loop: 2.2 and 2.1 today (the old
    Type=simple unit scored 8.9 EXPOSED); a change that loses hardening fails here."""
    tool = systemd_analyze()
    for name in ("reflex-edge.service", "reflex-blueloop.service"):
        result = subprocess.run([tool, "security", "--offline=yes", f"--root={analyze_root}", name],
                                capture_output=True, text=True, timeout=120)  # fmt: skip
        found = re.search(r"Overall exposure level for \S+: ([\d.]+)", result.stdout + result.stderr)
        assert found, result.stdout + result.stderr
        assert float(found.group(1)) <= 3.0, f"{name}: exposure {found.group(1)}\n{result.stdout}"


def test_the_appliance_unit_is_what_the_appliance_expects() -> None:
    unit = read_unit(UNITS_DIR / "reflex-edge.service")
    svc = "Service"
    assert value(unit, svc, "Type") == "notify" and value(unit, svc, "NotifyAccess") == "main"
    assert value(unit, svc, "WatchdogSec") == "30" and value(unit, svc, "Restart") == "always"
    assert (
        value(unit, svc, "ExecStart") == f"{CURRENT}.venv/bin/edge run --config /etc/reflex-edge/config.yaml"
    )
    assert value(unit, svc, "User") == "reflex"
    assert value(unit, svc, "NoNewPrivileges") == "yes"
    assert value(unit, svc, "ProtectSystem") == "strict"
    assert "/var/lib/reflex-edge" in " ".join(values(unit, svc, "ReadWritePaths")).split()
    assert value(unit, svc, "PrivateTmp") == "yes" and value(unit, svc, "ProtectHome") == "yes"
    families = " ".join(values(unit, svc, "RestrictAddressFamilies")).split()
    assert sorted(families) == ["AF_INET", "AF_INET6", "AF_UNIX"]
    # Cameras (/dev/video*) and a Jetson's GPU nodes stay reachable: group video, no device filter.
    assert "video" in " ".join(values(unit, svc, "SupplementaryGroups")).split()
    for hides_devices in ("PrivateDevices", "DevicePolicy", "DeviceAllow", "ProtectClock"):
        assert not values(unit, svc, hides_devices), f"{hides_devices} would take the cameras away"
    assert "reflex-firstboot.service" in " ".join(values(unit, "Unit", "After")).split()


def test_first_boot_update_and_timer_units() -> None:
    first = read_unit(UNITS_DIR / "reflex-firstboot.service")
    assert value(first, "Service", "Type") == "oneshot"
    assert value(first, "Unit", "ConditionPathExists") == "/boot/reflex-provision.tar.gz"
    assert "reflex-edge.service" in " ".join(values(first, "Unit", "Before")).split()
    assert value(first, "Service", "ExecStart") == (
        f"{CURRENT}.venv/bin/python {CURRENT}firmware/firstboot.py /boot/reflex-provision.tar.gz"
    )
    update = read_unit(UNITS_DIR / "reflex-update.service")
    assert value(update, "Service", "Type") == "oneshot"
    assert value(update, "Service", "User") in (None, "root")
    assert value(update, "Service", "ExecStart") == (
        f"{CURRENT}.venv/bin/python {CURRENT}firmware/update.py apply --from /var/lib/reflex-edge/updates"
    )
    timer = read_unit(UNITS_DIR / "reflex-update.timer")
    assert value(timer, "Timer", "Unit") in (None, "reflex-update.service")  # the same name by default
    assert value(timer, "Timer", "Persistent") == "true"
    assert value(timer, "Timer", "OnCalendar") and value(timer, "Timer", "RandomizedDelaySec")
    assert value(timer, "Install", "WantedBy") == "timers.target"


def test_the_units_run_scripts_this_tree_ships() -> None:
    """Every script a unit runs out of the active release is a file of this repository (the release is
    a copy of it), so a renamed script cannot leave a unit pointing at nothing."""
    for unit_file in UNITS:
        for key, line in read_unit(unit_file).get("Service", []):
            if key.startswith("Exec"):
                for arg in line.split()[1:]:
                    if arg.startswith(CURRENT) and arg.endswith(".py"):
                        shipped = REPO / arg.removeprefix(CURRENT)
                        assert shipped.is_file(), f"{unit_file.name} runs {arg}, but {shipped} does not exist"


# -- edge.notify on its own ------------------------------------------------------------------------


class NotifySocket:
    """A datagram socket standing in for systemd's: keeps (time.monotonic(), sender pid, fields)."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)  # the kernel says who sent each
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, int, dict[str, str]]] = []
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        creds = struct.calcsize("iII")
        while not self._closed.is_set():
            try:
                data, ancillary, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(creds))
            except TimeoutError:
                continue
            except OSError:
                return
            pid = -1
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = struct.unpack("iII", payload[:creds])[0]
            fields = dict(line.partition("=")[::2] for line in data.decode().splitlines() if line)
            self.messages.append((time.monotonic(), pid, fields))

    def times(self, key: str, since: float = 0.0) -> list[float]:
        return [at for at, _, fields in list(self.messages) if key in fields and at > since]

    def statuses(self) -> list[str]:
        return [fields["STATUS"] for _, _, fields in list(self.messages) if "STATUS" in fields]

    def close(self) -> None:
        self._closed.set()
        self._thread.join(timeout=2)
        self.sock.close()


def test_notifier_speaks_to_an_abstract_socket() -> None:
    listener = NotifySocket(f"@reflex-test-{os.getpid()}-{time.monotonic_ns()}")
    try:
        notifier = Notifier({"NOTIFY_SOCKET": listener.address})
        assert notifier.enabled and notifier.watchdog_s is None
        assert notifier.send("READY=1", "STATUS=2 cameras (2 online)")
        assert wait_until(lambda: listener.messages, 5)
        _, pid, fields = listener.messages[0]
        assert fields == {"READY": "1", "STATUS": "2 cameras (2 online)"} and pid == os.getpid()
    finally:
        listener.close()


def test_watchdog_is_for_us_only_when_watchdog_pid_says_so() -> None:
    sock = {"NOTIFY_SOCKET": "/run/systemd/notify", "WATCHDOG_USEC": "30000000"}
    assert Notifier(sock).watchdog_s == 30.0
    assert Notifier({**sock, "WATCHDOG_PID": str(os.getpid())}).watchdog_s == 30.0
    assert Notifier({**sock, "WATCHDOG_PID": "1"}).watchdog_s is None  # meant for another process
    assert Notifier({**sock, "WATCHDOG_USEC": "0"}).watchdog_s is None
    assert Notifier({**sock, "WATCHDOG_USEC": "soon"}).watchdog_s is None
    assert Notifier({"WATCHDOG_USEC": "30000000"}).watchdog_s is None  # no socket: nobody to ping
    assert Notifier({**sock, "NOTIFY_SOCKET": "vsock:2:1"}).enabled is False


def test_without_systemd_nothing_runs() -> None:
    notifier = Notifier({})
    assert not notifier.enabled and not notifier.send("READY=1")
    watchdog = Watchdog(notifier, Heartbeats(), lambda: "status")
    watchdog.start()
    assert watchdog._thread is None
    watchdog.stop("stopping")
    heart = Heartbeats().heart("red loop lobby")
    assert heart.slice_s == math.inf  # an idle wait is one wait, not a loop of short ones


def test_heartbeats_stale_forget_allow_and_wait() -> None:
    hearts = Heartbeats(max_age=0.2)
    lobby, bus = hearts.heart("red loop lobby"), hearts.heart("bus")
    assert hearts.stale() == []
    time.sleep(0.3)
    bus.beat()
    assert [name for name, _ in hearts.stale()] == ["red loop lobby"]
    hearts.forget(lobby)
    lobby.beat()  # a late beat of a camera removed meanwhile brings nothing back
    assert hearts.names() == ["bus"]
    bus.allow(5.0)  # a long call announced: alive until then
    time.sleep(0.3)
    assert hearts.stale() == []
    idle = hearts.heart("housekeeping")
    done = threading.Event()
    ages: list[float] = []
    threading.Thread(target=lambda: (idle.wait(done, 0.5), done.set()), daemon=True).start()
    while not done.is_set():
        ages.append(time.monotonic() - idle.at)
        time.sleep(0.01)
    assert max(ages) < 0.2  # waited 0.5 s without ever looking stale


def test_watchdog_pings_only_while_every_heart_beats(caplog: pytest.LogCaptureFixture) -> None:
    sent: list[tuple[str, ...]] = []
    notifier = Notifier({"NOTIFY_SOCKET": "@unused", "WATCHDOG_USEC": "400000"})
    notifier.send = lambda *fields: sent.append(fields) or True  # type: ignore[method-assign]
    hearts = Heartbeats(max_age=0.2)
    lobby = hearts.heart("red loop lobby")
    watchdog = Watchdog(notifier, hearts, lambda: "1 camera (1 online), no broker configured")
    watchdog.tick(ready=True)
    assert sent[-1] == ("READY=1", "WATCHDOG=1", "STATUS=1 camera (1 online), no broker configured")
    watchdog.tick()
    assert sent[-1] == ("WATCHDOG=1",)  # an unchanged status is not sent again
    time.sleep(0.3)
    before = len(sent)
    with caplog.at_level(logging.WARNING, logger="edge.notify"):
        watchdog.tick()
        watchdog.tick()
    assert not any("WATCHDOG=1" in fields for fields in sent[before:])
    assert sent[before][0].startswith("STATUS=watchdog: red loop lobby has not run for")
    stale_lines = [r.getMessage() for r in caplog.records if "has not run" in r.getMessage()]
    assert len(stale_lines) == 1 and re.fullmatch(
        r"watchdog: red loop lobby has not run for \d+ s; not pinging systemd", stale_lines[0]
    )
    lobby.beat()
    with caplog.at_level(logging.WARNING, logger="edge.notify"):
        watchdog.tick()
    assert "WATCHDOG=1" in sent[-1]
    assert "watchdog: red loop lobby runs again; pinging systemd" in caplog.text


# -- the appliance under a stand-in systemd ----------------------------------------------------------

STALL_SHIM = """
import os, runpy, sys
from edge.redloop import RedLoop

STALL = {fifo!r}
_process = RedLoop.process

def process(self, frame):
    # The test's stall, not the appliance's: once the test made the FIFO, camera lobby's red loop blocks
    # in open(2) inside processing a frame, until the test opens the FIFO to write.
    if self.camera == "lobby" and os.path.exists(STALL):
        with open(STALL, "rb") as fifo:
            fifo.read()
    return _process(self, frame)

RedLoop.process = process
sys.argv[0] = "edge"
runpy.run_module("edge", run_name="__main__", alter_sys=True)
"""


class StalledEdge(Edge):
    """`edge run` (the real entry point, through STALL_SHIM) under a stand-in for systemd."""

    def __init__(self, config: Path, fifo: Path, notify_socket: str) -> None:
        super().__init__(config)
        self.fifo, self.notify_socket = fifo, notify_socket

    def start(self) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "NOTIFY_SOCKET": self.notify_socket,
               "WATCHDOG_USEC": str(int(WATCHDOG_S * 1e6))}  # fmt: skip
        env.pop("WATCHDOG_PID", None)
        with self.log.open("a") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", STALL_SHIM.format(fifo=str(self.fifo)),
                 "run", "--config", str(self.config)],
                stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=env,
            )  # fmt: skip


@pytest.fixture
def silent_camera() -> Iterator[str]:
    """An IP camera that accepts the connection and then says nothing: its capture thread sits in
    FFmpeg's open for its whole timeout, again and again."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    yield f"http://127.0.0.1:{server.getsockname()[1]}/video.mjpg"
    server.close()


@pytest.mark.skipif(not (MODEL.exists() and PEOPLE.exists()), reason=f"test media or model missing: {DATA}")
def test_watchdog_pings_stop_while_a_red_loop_is_stalled(tmp_path: Path, silent_camera: str) -> None:
    config = {
        "device": {"id": "dev1"},
        "data_dir": str(tmp_path / "data"),
        "model": {"path": str(MODEL)},
        "watch": ["person"],
        "cameras": {
            "lobby": {"source": str(PEOPLE), "loop": True, "realtime": True},
            "yard": {"source": str(PEOPLE), "loop": True, "realtime": True, "detect": False},
            "gate": {"source": silent_camera},
        },
    }
    path = tmp_path / "edge.yaml"
    path.write_text(yaml.safe_dump(config))
    fifo = tmp_path / "stall"
    listener = NotifySocket(str(tmp_path / "notify"))
    edge = StalledEdge(path, fifo, listener.address)
    edge.start()
    try:
        # READY=1 once the cameras and the bus started; then pings every WATCHDOG_S / 2.
        assert wait_until(lambda: listener.times("READY"), 120), edge.text()
        ready = listener.times("READY")[0]
        assert wait_until(lambda: len(listener.times("WATCHDOG", ready)) >= 5, 6 * WATCHDOG_S), edge.text()
        assert any(s.startswith("3 cameras (") for s in listener.statuses()), listener.statuses()
        assert all(pid == edge.proc.pid for _, pid, _ in listener.messages)  # NotifyAccess=main holds
        # The silent camera's capture thread blocks for 5 s per attempt meanwhile: not a hung process.
        pings = listener.times("WATCHDOG")
        assert max(b - a for a, b in itertools.pairwise(pings)) < WATCHDOG_S, pings
        assert "gate" in edge.text()

        # Stall lobby's red loop: the pings stop, the log says which loop, the status says so too.
        os.mkfifo(fifo)
        stalled_at = time.monotonic()
        said = "watchdog: red loop lobby has not run for"
        assert wait_until(lambda: said in edge.text(), 4 * WATCHDOG_S), edge.text()
        noticed = time.monotonic()
        time.sleep(WATCHDOG_S + 1.0)  # longer than the watchdog: systemd would have killed us by now
        last_ping = listener.times("WATCHDOG")[-1]
        assert last_ping < noticed, "a ping after the stall was noticed"
        assert time.monotonic() - last_ping > WATCHDOG_S
        assert last_ping - stalled_at < WATCHDOG_S  # and pings stopped soon after the stall began
        assert re.search(r"watchdog: red loop lobby has not run for \d+ s; not pinging systemd", edge.text())
        assert edge.text().count("watchdog: red loop lobby has not run for") == 1  # logged once
        for healthy in ("red loop yard", "red loop gate", "housekeeping"):
            assert f"watchdog: {healthy} has not run" not in edge.text()
        assert any(s.startswith("watchdog: red loop lobby has not run for") for s in listener.statuses())

        # Let it go: the loop runs again and the pings come back.
        writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)  # the red loop waits in open(2) for a writer
        fifo.unlink()
        os.close(writer)
        released = time.monotonic()
        assert wait_until(lambda: listener.times("WATCHDOG", released), 3 * WATCHDOG_S), edge.text()
        assert "watchdog: red loop lobby runs again; pinging systemd" in edge.text()

        # SIGTERM: STOPPING=1, then a clean exit.
        assert edge.stop() == 0, edge.text()
        assert listener.times("STOPPING"), listener.messages[-3:]
        assert all(pid == edge.proc.pid for _, pid, _ in listener.messages)
    finally:
        if edge.alive():
            edge.kill()
        listener.close()

"""The appliance on a data disk that fills up, as the people relying on its alerts see it.

`edge run` runs as its own process with its data folder on a small tmpfs (a real file system that
really runs out of space) and a real mosquitto; a separate MQTT client subscribes. The disk is
filled to the last byte (the appliance's own reserve file included, once it has given it back):
alerts must keep arriving over MQTT (it needs no disk), the stats must say so, everything held in
memory must reach the event log once space is back, and a clean stop on a full disk must name every
alert it could not save instead of dropping it silently.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import DATA, REPO
from tests.support import Mosquitto, Subscriber, wait_until

pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason=f"test media not found in {DATA}")

CLIP = DATA / "fire" / "fdv_visual_fire.mp4"
"""24 s of grass fire, flame from the first frame (looped: an alert every second for as long as we like)."""
DEV = "dev1"
ROOT = f"reflex/{DEV}"
DISK = "48m"
"""Room for the 16 MiB reserve plus its 16 MiB margin (so that it is armed at start), and the database."""
NOT_SAVED = re.compile(
    r"ALERT NOT SAVED \(event log unavailable\), (published to MQTT|NOT published): .*\(id ([^)\s]+)\)"
)


# -- the outside world ------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A fresh 48 MB tmpfs, unmounted afterwards."""
    where = tmp_path / "disk"
    where.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK}", "tmpfs", str(where)],
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill (mount needs root): {done.stderr.strip()}")
    yield where
    if subprocess.run(["umount", str(where)], capture_output=True).returncode:
        subprocess.run(["umount", "-l", str(where)], check=False)


class Filler:
    """Keeps a file system full: a filler file appended to until ENOSPC, topped up every 50 ms (so
    that space the appliance gives back, its reserve included, is taken at once), until `free()`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stop = threading.Event()
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self.top_up()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def top_up(self) -> None:
        for size in (1024 * 1024, 64 * 1024, 4096, 512, 1):
            block = b"\xa5" * size
            try:
                while True:
                    os.write(self._fd, block)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.top_up()

    def free(self) -> None:
        self._stop.set()
        self._thread.join(5)
        os.close(self._fd)
        self.path.unlink()


class Edge:
    """`edge run --config FILE` as a process, stdout and stderr (the log) in a file."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self.log = config.parent / "edge.log"
        with self.log.open("a") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "edge", "run", "--config", str(config)],
                stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )  # fmt: skip

    def text(self) -> str:
        return self.log.read_text()

    def stop(self) -> int:
        """SIGTERM: a clean stop."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=40)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture
def appliance(tmp_path: Path, small_disk: Path, mosquitto: Mosquitto) -> Iterator[Callable[[], Edge]]:
    """Starts `edge run` with its data on the small disk (killed at the end if still running)."""
    started: list[Edge] = []

    def start() -> Edge:
        config = {
            "device": {"id": DEV},
            "data_dir": str(small_disk / "data"),
            "cameras": {"yard": {"source": str(CLIP), "realtime": True, "loop": True}},
            "watch": [],
            "rules": [{"name": "fire", "label": "fire", "repeat_s": 1.0, "severity": "critical"}],
            "mqtt": {"url": mosquitto.url, "reconnect_min_s": 0.2, "reconnect_max_s": 1.0,
                     "stats_every_s": 1.0},
        }  # fmt: skip
        path = tmp_path / "edge.yaml"
        path.write_text(yaml.safe_dump(config))
        started.append(Edge(path))
        return started[-1]

    yield start
    for edge in started:
        edge.kill()


# -- what a consumer sees -----------------------------------------------------------------------------


def alert_ids(sub: Subscriber) -> list[str]:
    """Every alert received, repeats included, in arrival order."""
    return [a["id"] for a in sub.json_on(f"{ROOT}/alerts")]


def unique(ids: list[str]) -> list[str]:
    return list(dict.fromkeys(ids))


def stats(sub: Subscriber) -> list[dict]:
    return sub.json_on(f"{ROOT}/stats")


def db_rows(data: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(f"file:{data / 'events.db'}?mode=ro", uri=True, timeout=10) as db:
        return db.execute(sql).fetchall()


def fill_disk(disk: Path, sub: Subscriber, edge: Edge) -> tuple[Filler, dict]:
    """Fill the disk; the appliance gives back its reserve when SQLite hits the full disk, and the
    filler takes that too. Returns once the stats say the alerts are held in memory."""
    assert (disk / "data" / ".reserve").is_file(), "the reserve is armed at start (48 MB disk)"
    filler = Filler(disk / "filler")
    assert wait_until(lambda: not (disk / "data" / ".reserve").exists(), 20), (
        "the appliance should release its reserve on the full disk\n" + edge.text()[-3000:]
    )
    full = lambda: [s for s in stats(sub) if s.get("disk_full") and s.get("outbox_held", 0) > 0]  # noqa: E731
    assert wait_until(full, 20), f"stats never said disk_full: {stats(sub)[-1:]}\n{edge.text()[-3000:]}"
    assert shutil.disk_usage(disk).free < 64 * 1024
    return filler, full()[0]


# -- the tests ---------------------------------------------------------------------------------------


def test_full_disk_alerts_go_out_from_memory_show_in_stats_and_are_written_once_space_is_back(
    small_disk: Path, mosquitto: Mosquitto, appliance: Callable[[], Edge]
) -> None:
    sub = Subscriber(mosquitto.port, [f"{ROOT}/#"])
    edge = appliance()
    data = small_disk / "data"
    try:
        assert wait_until(lambda: len(unique(alert_ids(sub))) >= 2, 40), edge.text()[-3000:]
        filler, first_full = fill_disk(small_disk, sub, edge)
        full_at = time.monotonic()

        # (a) alerts keep coming over MQTT while the disk is full
        seen = set(alert_ids(sub))
        time.sleep(6.0)
        during = [i for i in unique(alert_ids(sub)) if i not in seen]
        assert len(during) >= 3, f"only {len(during)} new alerts over 6 s of full disk\n{edge.text()[-3000:]}"
        assert "in memory (MQTT still gets it)" in edge.text()
        # (b) and the stats say so
        full_stats = [s for s in stats(sub) if s.get("disk_full")]
        held = max(s["outbox_held"] for s in full_stats)
        depth = max(s["outbox_depth"] for s in full_stats)
        assert held > 0 and depth >= held, full_stats[-1]
        assert stats(sub)[-1]["disk_full"] is True and stats(sub)[-1]["outbox_held"] > 0

        # (c) space is back: the held alerts reach the event log, the stats clear
        window = [(s["disk_full"], s["outbox_held"], s["outbox_depth"]) for s in stats(sub)]
        saved = {r[0] for r in db_rows(data, "SELECT id FROM alerts")}  # reading needs no space
        from_memory = [i for i in unique(alert_ids(sub)) if i not in saved]
        assert len(from_memory) >= 3, (from_memory, during)
        n_stats = len(stats(sub))
        freed_at = time.monotonic()
        filler.free()
        recovered = lambda: [s for s in stats(sub)[n_stats:]  # noqa: E731
                             if s["disk_full"] is False and s["outbox_held"] == 0]  # fmt: skip
        assert wait_until(recovered, 10), f"stats after freeing: {stats(sub)[-3:]}\n{edge.text()[-3000:]}"
        recovered_in = time.monotonic() - freed_at
        assert "held transition(s) written" in edge.text()
        time.sleep(3.0)  # a few more alerts, now straight to the event log again
        assert edge.stop() == 0, edge.text()[-3000:]
        assert wait_until(lambda: sub.last(f"{ROOT}/availability") == b"offline", 10)
        received = alert_ids(sub)
    finally:
        sub.close()

    log_text = edge.text()
    assert "ALERT NOT SAVED" not in log_text, "everything was saved once space was back"
    in_db = {r[0] for r in db_rows(data, "SELECT id FROM alerts")}
    missing = [i for i in unique(received) if i not in in_db]
    assert not missing, f"alerts seen over MQTT but not in the event log: {missing}"
    outbox = db_rows(data, "SELECT message_id, delivered_at FROM outbox "
                           "WHERE kind = 'alert' AND channel = 'mqtt'")  # fmt: skip
    undelivered = Counter(m for m, at in outbox if at is None)
    assert not [m for m, n in undelivered.items() if n > 1], f"queued twice: {undelivered}"
    delivered = {m for m, at in outbox if at is not None}
    not_marked = [i for i in from_memory if i not in delivered]
    assert not not_marked, f"published from memory but not marked delivered: {not_marked}"
    times = Counter(received)
    again = {i: times[i] for i in from_memory if times[i] > 1}
    assert sum(n - 1 for n in again.values()) <= 3, f"sent again after recovery: {again}"
    # The CLI a person uses shows them too, delivered.
    cli = subprocess.run(
        [sys.executable, "-m", "edge", "alerts", "--data", str(data), "--json", "--limit", "100000"],
        capture_output=True, text=True, timeout=60, cwd=REPO,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    listed = {a["id"]: a for a in map(json.loads, cli.stdout.splitlines())}
    shown = {i: listed[i]["deliveries"]["mqtt"]["state"] if i in listed else None for i in from_memory}
    assert set(shown.values()) == {"delivered"}, shown
    print(f"\nfull disk for {freed_at - full_at:.1f} s: {len(during)} alerts over MQTT in 6 s, "
          f"{len(from_memory)} published from memory; stats while full: outbox_depth up to {depth}, "
          f"outbox_held up to {held}, first full stats {first_full['outbox_depth']}/"
          f"{first_full['outbox_held']}; written and stats clear {recovered_in:.1f} s after freeing; "
          f"repeats of memory-published alerts: {sum(n - 1 for n in again.values())}")  # fmt: skip
    print("stats (disk_full, outbox_held, outbox_depth) up to the freeing:", window)


def test_clean_stop_on_a_full_disk_names_every_alert_it_could_not_save(
    small_disk: Path, mosquitto: Mosquitto, appliance: Callable[[], Edge]
) -> None:
    sub = Subscriber(mosquitto.port, [f"{ROOT}/alerts", f"{ROOT}/stats", f"{ROOT}/availability"])
    edge = appliance()
    data = small_disk / "data"
    filler: Filler | None = None
    try:
        assert wait_until(lambda: len(unique(alert_ids(sub))) >= 2, 40), edge.text()[-3000:]
        filler, _ = fill_disk(small_disk, sub, edge)
        seen = set(alert_ids(sub))
        assert wait_until(lambda: len(set(alert_ids(sub)) - seen) >= 3, 10), "alerts from memory"
        assert edge.stop() == 0, edge.text()[-3000:]  # still full
        assert wait_until(lambda: sub.last(f"{ROOT}/availability") == b"offline", 10)
        received = set(alert_ids(sub))
    finally:
        sub.close()
        if filler is not None:
            filler.free()

    log_text = edge.text()
    lines = [m.groups() for m in NOT_SAVED.finditer(log_text)]
    named = {aid for _, aid in lines}
    in_db = {r[0] for r in db_rows(data, "SELECT id FROM alerts")}
    assert lines, f"no ALERT NOT SAVED line at the stop:\n{log_text[-3000:]}"
    assert len(named) == len(lines), "each unsaved alert is named once"
    assert not named & in_db, "an alert named as not saved is in the event log"
    silently = received - in_db - named
    assert not silently, f"alerts neither saved nor named in the log: {sorted(silently)}"
    not_published = [aid for how, aid in lines if how != "published to MQTT"]
    assert not not_published, f"unsaved and not published: {not_published}"
    assert named <= received, f"the log says published, the subscriber never got: {named - received}"
    assert re.search(rf"stopping with \d+ transition\(s\) \({len(named)} alerts\)", log_text)
    print(
        f"\nclean stop on a full disk: {len(named)} alerts named as not saved (all published to MQTT), "
        f"{len(in_db)} in the event log, {len(received)} received over MQTT"
    )

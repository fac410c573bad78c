"""`edge alerts` and `edge events` as an installer runs them, over a real event log on disk."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from edge.cli import main
from edge.outbox import alert_payload
from edge.store import EventLog
from edge.timefmt import clock as shown
from edge.types import AlertRecord, EventRecord

REPO = Path(__file__).resolve().parent.parent
EDGE = Path(sys.executable).with_name("edge")
TOPIC = "reflex/dev/alerts"
T0 = time.time() - 3600.0


def event(eid: str, camera: str, label: str) -> EventRecord:
    return EventRecord(
        id=eid, camera=camera, label=label, rule=f"{label}-rule", score=0.9, box=(1.0, 2.0, 30.0, 60.0),
        started_at=T0, frame=1, pts=0.1, track_id=1, zones=[],
    )  # fmt: skip


def alert(aid: str, ev: EventRecord, severity: str, text: str, at: float) -> AlertRecord:
    return AlertRecord(
        id=aid, event_id=ev.id, rule=ev.rule, camera=ev.camera, label=ev.label, severity=severity,
        text=text, at=at, frame=2, pts=0.2, box=ev.box,
    )  # fmt: skip


def clock(epoch: float) -> str:
    return datetime.fromtimestamp(epoch).strftime("%Y-%m-%d %H:%M:%S")


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """Two alerts in every delivery state a user can meet, written the way the appliance writes them."""
    folder = tmp_path / "var"
    log = EventLog(folder)  # the appliance's own settings: a disk reserve is there
    log.ensure_camera("lobby", "rtsp://cam/lobby")
    log.ensure_camera("yard", "usb:0")
    person, fire = event("e-person", "lobby", "person"), event("e-fire", "yard", "fire")
    log.event_started(person)
    log.event_started(fire)
    a1 = alert("a-person", person, "warning", "person on lobby", T0)
    mqtt1 = log.alert(a1, alert_payload(a1), TOPIC, push=["phones"])
    log.mark_delivered([mqtt1])
    (phones1,) = log.outbox_pending(channel="push:phones")
    for _ in range(3):
        log.mark_attempt(phones1.id)  # the phone server keeps refusing it
    a2 = alert("a-fire", fire, "critical", "Fire! on yard", T0 + 60)
    log.alert(a2, alert_payload(a2), TOPIC, push=["phones", "old-pager"])
    log.mark_delivered([m.id for m in log.outbox_pending(channel="push:phones") if m.message_id == "a-fire"])
    assert log.drop_unknown_push_channels({"phones"}) == {"push:old-pager": 1}
    log.enqueue("event", "reflex/dev/events", {"v": 1, "id": "e-fire", "type": "new"}, "e-fire:new")
    log.enqueue("event", "reflex/dev/events", {"v": 1, "id": "e-fire", "type": "update"}, "e-fire:update")
    log.close()
    return folder


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[str], str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out.splitlines(), err


def test_alerts_table_shows_each_channels_delivery(data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, lines, _ = run(capsys, "alerts", "--data", str(data), "--json")
    assert status == 0
    rows = [json.loads(line) for line in lines]
    assert [r["id"] for r in rows] == ["a-fire", "a-person"]  # newest first
    delivered = {r["id"]: r["deliveries"] for r in rows}
    # As the table prints them: with the date when delivered on another day than the alert (midnight).
    phones_at = shown(delivered["a-fire"]["push:phones"]["at"], T0 + 60)
    mqtt_at = shown(delivered["a-person"]["mqtt"]["at"], T0)

    status, lines, _ = run(capsys, "alerts", "--data", str(data))
    assert status == 0
    header, fire, person = lines
    assert header.split() == ["time", "camera", "label", "severity", "text", "delivery"]
    assert fire.split("  ")[0] == clock(T0 + 60)
    assert fire.split()[2:7] == ["yard", "fire", "critical", "Fire!", "on"]
    assert fire.endswith(
        f"mqtt: pending (queued), push:old-pager: dropped (push channel no longer configured), "
        f"push:phones: delivered {phones_at}"
    )
    assert person.startswith(clock(T0))
    assert "lobby" in person and "warning" in person and "person on lobby" in person
    assert person.endswith(f"mqtt: delivered {mqtt_at}, push:phones: pending (3 tries)")


def test_alerts_filters_by_camera_and_limit(data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, lines, _ = run(capsys, "alerts", "--data", str(data), "--camera", "lobby")
    assert len(lines) == 2 and "person on lobby" in lines[1]
    _, lines, _ = run(capsys, "alerts", "--data", str(data), "--limit", "1")
    assert len(lines) == 2 and "Fire! on yard" in lines[1]
    _, lines, _ = run(capsys, "alerts", "--data", str(data), "--camera", "garage")
    assert lines[1:] == ["(no alerts)"]


def test_events_ends_with_the_outbox_backlog(data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, lines, _ = run(capsys, "events", "--data", str(data))
    assert status == 0
    assert len(lines) == 4  # header, two events, the backlog
    assert lines[-1] == (
        "outbox: 1 alert and 2 other messages waiting for mqtt; 1 alert waiting for push:phones; "
        "1 message dropped undelivered (see edge alerts)"
    )
    _, lines, _ = run(capsys, "events", "--data", str(data), "--json")
    assert len(lines) == 2 and all(json.loads(line)["id"].startswith("e-") for line in lines)


def test_events_backlog_when_everything_went_out(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "var"
    log = EventLog(folder, reserve_bytes=0)
    log.ensure_camera("lobby", "rtsp://cam/lobby")
    ev = event("e1", "lobby", "person")
    log.event_started(ev)
    a = alert("a1", ev, "info", "person on lobby", T0)
    log.mark_delivered([log.alert(a, alert_payload(a), TOPIC)])
    log.close()
    _, lines, _ = run(capsys, "events", "--data", str(folder))
    assert lines[-1] == "outbox: empty, everything delivered"
    assert not (folder / ".reserve").exists()  # reading never writes a disk reserve


def test_reading_leaves_the_appliances_reserve_alone(data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = (data / ".reserve").stat()
    run(capsys, "alerts", "--data", str(data))
    run(capsys, "events", "--data", str(data))
    after = (data / ".reserve").stat()
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (
        before.st_ino,
        before.st_size,
        before.st_mtime_ns,
    )


def test_edge_alerts_command_line(data: Path, tmp_path: Path) -> None:
    """The installed `edge` command, as an installer types it."""
    if not EDGE.exists():
        pytest.skip(f"the edge command is not installed next to {sys.executable}")
    done = subprocess.run([EDGE, "alerts", "--data", str(data)], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "push:phones: pending (3 tries)" in done.stdout
    missing = tmp_path / "nowhere"
    done = subprocess.run(
        [EDGE, "alerts", "--data", str(missing)], capture_output=True, text=True, cwd=tmp_path
    )
    assert done.returncode == 2
    assert done.stderr.strip() == f"edge: error: no event log in {missing}"

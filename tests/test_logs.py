"""What an installer reads in the log of `edge run`: each thing once, in words, no Python reprs."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import DATA, MODEL, REPO, needs_shared
from tests.support import free_port


@needs_shared
def test_start_up_and_a_dead_camera_read_well(tmp_path: Path) -> None:
    dead = f"rtsp://admin:hunter2@127.0.0.1:{free_port()}/stream"
    clip = DATA / "people" / "intel_one-by-one-person-detection.mp4"
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge", "run", "--camera", f"door={dead}", "--camera", f"lobby={clip}",
         "--model", str(MODEL), "--data", str(tmp_path / "var")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    time.sleep(6)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    lines = out.splitlines()
    offline = [line for line in lines if "camera door offline" in line]
    assert len(offline) == 1, out  # once per outage, by one logger, whatever the retries
    assert "hunter2" not in out  # the camera password is masked everywhere
    assert not re.search(r"\w+\(\w+=", out), out  # no dataclass reprs such as RetentionReport(...)
    assert not re.search(r"<[\w.]+ object at 0x", out), out
    for line in lines:
        message = line.split(": ", 1)[-1]
        first = message.split(":", 1)[0]
        assert message.count(first) == 1 or len(first) < 8, f"doubled prefix: {line}"
    assert any("SIGTERM: stopping" in line for line in lines), out

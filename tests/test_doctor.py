"""`edge doctor`: run as the real command on real things (the people clip, a dead rtsp camera on a
closed loopback port, a real mosquitto, then none), and its checks one by one where a case is hard to
stage for the whole command (a refused password, a wrong CA, a full disk, each clock answer, each
engine-cache state).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from edge import doctor
from edge.config import EdgeConfig
from edge.config.models import MqttConfig, RetentionConfig
from edge.reflex.backends import TensorRTProbe, TensorRTSettings, expected_engine_key
from edge.reflex.backends.cache import engine_filename, engine_key, write_engine
from edge.reflex.manifest import load_manifest
from tests.conftest import DATA, MODEL, REPO, needs_shared
from tests.support import Mosquitto, free_port

CLIP = DATA / "people" / "intel_one-by-one-person-detection.mp4"


def _config(tmp_path: Path, *, broker: Mosquitto | None, dead_camera: bool = True, **extra: object) -> Path:
    cameras: dict = {"lobby": {"source": str(CLIP)}}
    if dead_camera:
        cameras["gate"] = {"source": f"rtsp://admin:hunter2@127.0.0.1:{free_port()}/stream1"}
    data = {
        "device": {"id": "doctor-test"},
        "data_dir": str(tmp_path / "data"),
        "model": {"path": str(MODEL), "threads": 1},
        "cameras": cameras,
        **({"mqtt": {"url": broker.url}} if broker else {}),
        **extra,
    }
    path = tmp_path / "edge.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _doctor(config: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "edge", "doctor", "--config", str(config), "--timeout", "4", *flags]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=REPO, check=False)


def _lines(stdout: str) -> dict[str, tuple[str, str]]:
    """{check name: (status, rest of the line)} from the text output."""
    out = {}
    for line in stdout.splitlines():
        status, _, rest = line.partition("  ")
        name, _, detail = rest.strip().partition("  ")
        out[name.strip()] = (status.strip(), detail.strip())
    return out


@needs_shared
def test_doctor_with_a_live_and_a_dead_camera_and_a_broker(tmp_path: Path, mosquitto: Mosquitto) -> None:
    config = _config(tmp_path, broker=mosquitto)
    result = _doctor(config)
    assert result.returncode == 1, result.stdout + result.stderr  # the dead camera FAILs
    checks = _lines(result.stdout)
    assert all(line[:4] in ("OK  ", "WARN", "FAIL") for line in result.stdout.splitlines())
    assert checks["camera lobby"][0] == "OK" and checks["camera lobby"][1].startswith("768x432 frame in ")
    status, detail = checks["camera gate"]
    assert status == "FAIL" and "connection refused" in detail and "(hint: " in detail
    assert "hunter2" not in result.stdout and "admin:***@" in detail  # the camera password is not printed
    assert checks["broker"] == ("OK", f"mqtt://127.0.0.1:{mosquitto.port}: CONNECT accepted (MQTT 5)")
    assert checks["model"][0] == "OK" and "sha256 ok" in checks["model"][1]
    assert checks["disk"][0] == "OK" and checks["clock"][0] in ("OK", "WARN")
    assert checks["versions"][0] == "OK" and "onnxruntime " in checks["versions"][1]
    status, detail = checks["backend"]
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        # Here (no GPU): ONNX Runtime, and why.
        assert status == "OK"
        assert detail.startswith(
            "onnxruntime on CPUExecutionProvider: tensorrt not installed (pip install .[jetson]"
        )
        assert checks["engine cache"] == ("OK", "not used (backend onnxruntime)")
    assert "1 failed" in result.stderr

    # An update's health check judges the software, not the site: cameras and broker left out.
    health = _doctor(config, "--skip", "cameras,broker")
    assert health.returncode == 0, health.stdout + health.stderr
    assert not [n for n in _lines(health.stdout) if n.startswith(("camera", "broker"))]
    bad = _doctor(config, "--skip", "camras")
    assert bad.returncode == 2 and "--skip: unknown check(s) camras" in bad.stderr


@needs_shared
def test_doctor_all_good_then_the_broker_gone(tmp_path: Path, mosquitto: Mosquitto) -> None:
    config = _config(tmp_path, broker=mosquitto, dead_camera=False)
    good = _doctor(config)
    assert good.returncode == 0, good.stdout + good.stderr
    assert not [line for line in good.stdout.splitlines() if line.startswith("FAIL")]

    mosquitto.kill()
    gone = _doctor(config, "--json")
    assert gone.returncode == 1
    report = json.loads(gone.stdout)
    assert report["ok"] is False
    by_name = {c["name"]: c for c in report["checks"]}
    broker = by_name["broker"]
    assert broker["status"] == "FAIL"
    assert broker["detail"].startswith(f"cannot reach mqtt://127.0.0.1:{mosquitto.port}: ") and broker["hint"]
    assert by_name["camera lobby"]["status"] == "OK"
    assert [c["name"] for c in report["checks"] if c["status"] == "FAIL"] == ["broker"]
    assert report["backend"]["name"] in ("onnxruntime", "tensorrt") and report["backend"]["reason"]
    assert report["versions"]["edge"] and report["versions"]["python"]


def test_doctor_on_a_broken_config_fails_in_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "edge.yaml"
    bad.write_text("cameras:\n  lobby:\n    sauce: x\n")
    result = _doctor(bad)
    assert result.returncode == 1
    config = [line for line in result.stdout.splitlines() if line.startswith("FAIL  config")]
    assert len(config) == 2  # each problem on its line: the unknown key and the missing source
    assert any("cameras.lobby.sauce" in line for line in config)
    assert any("cameras.lobby.source" in line for line in config)
    assert _lines(result.stdout)["versions"][0] == "OK"


# --- single checks ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("certs")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=Doctor Test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    )
    openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    )
    (d / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        "-out",
        "server.pem",
    )
    return d


@pytest.fixture
def secure_broker(tmp_path: Path, certs: Path) -> Iterator[Mosquitto]:
    if shutil.which("mosquitto_passwd") is None:
        pytest.fail("mosquitto_passwd is not installed: run the tests with ./reflex test (it installs it)")
    passwd = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwd), "lobby", "s3cret"], check=True)
    listener = f"cafile {certs / 'ca.pem'}\ncertfile {certs / 'server.pem'}\nkeyfile {certs / 'server.key'}\n"
    broker = Mosquitto(tmp_path, anonymous=False, listener=listener + f"password_file {passwd}\n")
    broker.start()
    yield broker
    broker.kill()


def test_broker_check_with_tls_and_credentials(secure_broker: Mosquitto, certs: Path) -> None:
    url = f"mqtts://localhost:{secure_broker.port}"
    ca = str(certs / "ca.pem")

    def check(**mqtt: object) -> doctor.Check:
        return doctor.check_broker(EdgeConfig(mqtt=MqttConfig(**mqtt)), 4.0)

    ok = check(url=url, username="lobby", password="s3cret", ca_file=ca)
    assert (ok.status, ok.detail) == ("OK", f"{url}: CONNECT accepted (MQTT 5, TLS as 'lobby')")
    refused = check(url=url, username="lobby", password="wrong", ca_file=ca)
    assert refused.status == "FAIL" and f"{url} refused CONNECT as 'lobby'" in refused.detail
    assert "password" in (refused.hint or "")
    anonymous = check(url=url, ca_file=ca)
    assert anonymous.status == "FAIL" and "refused CONNECT anonymously" in anonymous.detail
    untrusted = check(url=url, username="lobby", password="s3cret")  # the system CAs do not know ours
    assert untrusted.status == "FAIL" and "TLS" in untrusted.detail and "ca_file" in (untrusted.hint or "")
    plain = check(url=f"mqtt://localhost:{secure_broker.port}", username="lobby", password="s3cret")
    assert plain.status == "FAIL"  # plain MQTT to a TLS port: no CONNACK, said so
    no_url = doctor.check_broker(EdgeConfig(), 1.0)
    assert no_url.status == "WARN" and "no broker configured" in no_url.detail


def test_disk_check_against_min_free(tmp_path: Path) -> None:
    free_mb = shutil.disk_usage(tmp_path).free / 2**20
    ok = doctor.check_disk(EdgeConfig(data_dir=str(tmp_path / "not-yet")), tmp_path)
    assert ok.status == "OK" and f"at {tmp_path / 'not-yet'}" in ok.detail  # measured on the existing parent
    low = doctor.check_disk(
        EdgeConfig(data_dir=str(tmp_path), retention=RetentionConfig(min_free_mb=free_mb * 4)), tmp_path
    )
    assert low.status == "FAIL" and "below the minimum" in low.detail and low.hint
    near = doctor.check_disk(
        EdgeConfig(data_dir=str(tmp_path), retention=RetentionConfig(min_free_mb=free_mb * 0.7)), tmp_path
    )
    assert near.status == "WARN"


@pytest.mark.parametrize(
    ("stdout", "rc", "flag", "status", "words"),
    [
        ("yes\n", 0, False, "OK", "NTP synchronized"),
        ("no\n", 0, False, "WARN", "not synchronized"),
        ("", 1, True, "OK", "systemd-timesyncd"),
        ("", 1, False, "WARN", "sync unknown"),
    ],
)
def test_clock_check(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, stdout: str, rc: int, flag: bool, status: str, words: str
) -> None:
    marker = tmp_path / "synchronized"
    if flag:
        marker.touch()
    monkeypatch.setattr(doctor, "TIMESYNC_FLAG", marker)
    check = doctor.check_clock(lambda *a, **k: SimpleNamespace(stdout=stdout, returncode=rc))
    assert check.status == status and words in check.detail
    assert (check.hint is None) == (status == "OK")

    def missing(*a: object, **k: object) -> None:
        raise FileNotFoundError("timedatectl")

    assert doctor.check_clock(missing).status == ("OK" if flag else "WARN")


def test_versions_on_a_jetson(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    release = (
        "# R36 (release), REVISION: 3.0, GCID: 36191598, BOARD: generic, EABI: aarch64, DATE: Mon May  6\n"
    )
    assert doctor.parse_tegra_release(release) == "36.3.0"
    assert doctor.parse_tegra_release("garbage") is None
    assert doctor.jetpack_for("36.3.0") == "6.0"
    assert doctor.jetpack_for("36.4.3") == "6.2" and doctor.jetpack_for("36.4.0") == "6.1"
    assert doctor.jetpack_for("35.4.1") == "5.1.2" and doctor.jetpack_for("99.0.0") is None
    (tmp_path / "nv_tegra_release").write_text(release)
    monkeypatch.setattr(doctor, "TEGRA_RELEASE", tmp_path / "nv_tegra_release")
    found = doctor.versions()
    assert (found["l4t"], found["jetpack"]) == ("36.3.0", "6.0")
    assert "JetPack 6.0 (L4T R36.3.0)" in doctor.check_versions(found).detail
    # On a Jetson, ONNX Runtime for the model is a WARN: TensorRT is what it is for.
    monkeypatch.setattr(doctor, "TEGRA_RELEASE", tmp_path / "nv_tegra_release")
    monkeypatch.setattr("edge.reflex.backends.probe_tensorrt", lambda: TensorRTProbe(False, "no CUDA device"))
    check, info = doctor.check_backend(EdgeConfig())
    assert (
        check.status == "WARN" and check.detail.endswith(": no CUDA device") and info["name"] == "onnxruntime"
    )


def test_backend_check_explicit_tensorrt_unavailable_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("edge.reflex.backends.probe_tensorrt", lambda: TensorRTProbe(False, "no CUDA device"))
    cfg = EdgeConfig(model={"backend": "tensorrt"})
    check, info = doctor.check_backend(cfg)
    assert check.status == "FAIL" and check.detail == "model.backend is tensorrt, but no CUDA device"
    assert info["name"] is None


@needs_shared
def test_engine_cache_states(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """With TensorRT (a stand-in probe): none, fresh, stale, as the backend would find them."""
    probe = TensorRTProbe(
        True, "tensorrt 10.3.0 and CUDA device Orin (sm_87) found", "10.3.0", "Orin (sm_87)"
    )
    monkeypatch.setattr("edge.reflex.backends.probe_tensorrt", lambda: probe)
    manifest = load_manifest(REPO / "models" / "yolox_nano.yaml")
    cfg = EdgeConfig(model={"path": str(MODEL), "engine_cache": str(tmp_path)})
    model = doctor._Model("model", manifest, MODEL)
    backend = {"name": "tensorrt"}
    none = doctor.check_engine_cache(cfg, model, backend)
    assert none.status == "WARN" and none.detail.startswith("none yet for yolox_nano (fp16)")
    assert "tools/build_engine" in (none.hint or "")
    key = expected_engine_key(probe, manifest.sha256, TensorRTSettings.from_config(cfg.model))
    assert key == engine_key(manifest.sha256, "10.3.0", "Orin (sm_87)", "fp16", None)
    old = engine_key(manifest.sha256, "10.0.1", "Orin (sm_87)", "fp16", None)
    write_engine(tmp_path / engine_filename("yolox_nano", old), old, b"plan", {"precision": "fp16"})
    stale = doctor.check_engine_cache(cfg, model, backend)
    assert stale.status == "WARN" and stale.detail.startswith("stale for yolox_nano (fp16)")
    write_engine(
        tmp_path / engine_filename("yolox_nano", key), key, b"plan", {"built_at": 1.7e9, "build_s": 95.0}
    )
    fresh = doctor.check_engine_cache(cfg, model, backend)
    assert fresh.status == "OK" and fresh.detail.startswith(
        f"fresh: {tmp_path / engine_filename('yolox_nano', key)}"
    )
    assert "in 95 s" in fresh.detail
    unused = doctor.check_engine_cache(cfg, model, {"name": "onnxruntime"})
    assert unused.status == "OK" and "not used (backend onnxruntime); 2 engine file(s)" in unused.detail


def test_check_line_format() -> None:
    assert doctor.Check("OK", "disk", "fine").line(6) == "OK    disk    fine"
    assert doctor.Check("FAIL", "broker", "down", "start it").line() == "FAIL  broker  down  (hint: start it)"

"""`edge doctor`: is this device ready to guard anything? One line per check, each with a hint.

    OK    versions      edge 0.1.0, python 3.10.12, onnxruntime 1.19.0, opencv 4.10.0, tensorrt 10.3.0, ...
    OK    backend       tensorrt: tensorrt 10.3.0 and CUDA device Orin (sm_87) found
    WARN  engine cache  none yet for yolox_nano (fp16): the first start builds it  (hint: tools/build_engine)
    FAIL  camera gate   cannot reach rtsp://***@10.0.0.7:554/s1: connection refused  (hint: ...)

Checks: versions (edge, python, onnxruntime, OpenCV, TensorRT and JetPack/L4T where present), the model
files, the backend in use and why, the engine cache, every configured camera (one frame each, in
parallel, with a short time limit), the broker (TCP, then an MQTT CONNECT with the configured
credentials and TLS), disk space of the data folder against retention.min_free_mb, and clock sync.
Exit status 1 when any check FAILs, else 0; `--json` gives the same as one object, for scripts (the
update health check).

Nothing here changes the device: no engine is built, no model is downloaded, no message is published
(the broker check connects under its own client id, so a running appliance is not pushed off).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import shutil
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from edge.config import ConfigError, EdgeConfig, load_config
from edge.redact import redact

Status = Literal["OK", "WARN", "FAIL"]

TEGRA_RELEASE = Path("/etc/nv_tegra_release")
TIMESYNC_FLAG = Path("/run/systemd/timesync/synchronized")
DEFAULT_TIMEOUT_S = 5.0

# L4T release -> JetPack, for the releases with TensorRT 10 (JetPack 6) and the JetPack 5 ones a device
# may still run (TensorRT 8.5: too old for the native backend).
_JETPACK = {
    "36.4.4": "6.2.1",
    "36.4.3": "6.2",
    "36.4": "6.1",
    "36.3": "6.0",
    "36.2": "6.0 DP",
    "35.6": "5.1.4",
    "35.5": "5.1.3",
    "35.4": "5.1.2",
    "35.3": "5.1.1",
    "35.2": "5.1",
    "35.1": "5.0.2",
}


@dataclass(frozen=True)
class Check:
    status: Status
    name: str
    detail: str
    hint: str | None = None

    def line(self, width: int = 0) -> str:
        text = f"{self.status:<4}  {self.name:<{width}}  {self.detail}"
        return f"{text}  (hint: {self.hint})" if self.hint else text


# --- versions -------------------------------------------------------------------------------------------


def parse_tegra_release(text: str) -> str | None:
    """`# R36 (release), REVISION: 3.0, GCID: ...` -> "36.3.0" (None if it is not that format)."""
    m = re.search(r"#\s*R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text)
    return f"{m.group(1)}.{m.group(2)}" if m else None


def jetpack_for(l4t: str) -> str | None:
    """The JetPack release of an L4T release ("36.3.0" -> "6.0"), or None when not known here."""
    parts = l4t.split(".")
    for n in (3, 2):
        found = _JETPACK.get(".".join(parts[:n]))
        if found:
            return found
    return None


def _version(module: str, attr: str = "__version__") -> str | None:
    try:
        mod = __import__(module)
    except Exception:  # not installed, or a broken install: a version we cannot tell
        return None
    return str(getattr(mod, attr, "unknown"))


def versions() -> dict[str, str | None]:
    from edge import __version__

    found: dict[str, str | None] = {
        "edge": __version__,
        "python": platform.python_version(),
        "onnxruntime": _version("onnxruntime"),
        "opencv": _version("cv2"),
        "tensorrt": _version("tensorrt"),
        "l4t": None,
        "jetpack": None,
    }
    try:
        l4t = parse_tegra_release(TEGRA_RELEASE.read_text(errors="replace"))
    except OSError:
        l4t = None
    if l4t:
        found["l4t"] = l4t
        found["jetpack"] = jetpack_for(l4t)
    return found


def check_versions(found: dict[str, str | None]) -> Check:
    names = {
        "edge": "edge",
        "python": "python",
        "onnxruntime": "onnxruntime",
        "opencv": "opencv",
        "tensorrt": "tensorrt",
    }
    parts = [f"{label} {found[key]}" for key, label in names.items() if found[key]]
    missing = [label for key, label in names.items() if key in ("onnxruntime", "opencv") and not found[key]]
    if found["l4t"]:
        parts.append(f"JetPack {found['jetpack'] or '?'} (L4T R{found['l4t']})")
    if missing:
        return Check(
            "FAIL",
            "versions",
            ", ".join(parts) + f"; {', '.join(missing)} missing",
            "reinstall: pip install -e . (or ./reflex run sets it up)",
        )
    return Check("OK", "versions", ", ".join(parts))


# --- model, backend, engine cache -----------------------------------------------------------------------


@dataclass
class _Model:
    name: str
    manifest: Any = None
    path: Path | None = None


def check_models(cfg: EdgeConfig, base: Path) -> tuple[list[Check], list[_Model]]:
    """The main model and every extra model: manifest valid, file present, sha256 right."""
    from edge.reflex.engine import locate_model
    from edge.reflex.manifest import ModelError, verify_sha256

    checks, models = [], []
    for i, mcfg in enumerate([cfg.model, *cfg.extra_models]):
        label = "model" if i == 0 else f"model {i}"
        try:
            manifest, path = locate_model(mcfg, base)
            verify_sha256(path, manifest.sha256)
        except ModelError as exc:
            checks.append(
                Check("FAIL", label, str(exc), "tools/fetch_model --from FILE installs an offline copy")
            )
            models.append(_Model(label))
            continue
        checks.append(Check("OK", label, f"{manifest.name}: {path} (sha256 ok)"))
        models.append(_Model(label, manifest, path))
    return checks, models


def check_backend(cfg: EdgeConfig) -> tuple[Check, dict[str, Any]]:
    """What model.backend resolves to here and why, without loading the model or building anything."""
    from edge.reflex.backends import BackendError, choose_backend

    kind = cfg.model.backend
    try:
        choice = choose_backend(kind)
    except BackendError as exc:
        info = {"name": None, "configured": kind, "reason": str(exc), "providers": []}
        hint = (
            "install TensorRT 10 and pycuda (JetPack 6: firmware install script) or set model.backend: auto"
        )
        return Check("FAIL", "backend", str(exc), hint), info
    if choice.kind == "tensorrt":
        info = {"name": "tensorrt", "configured": kind, "reason": choice.reason, "providers": ["TensorRT"]}
        return Check("OK", "backend", f"tensorrt: {choice.reason}"), info
    try:
        from edge.reflex.backends.onnxruntime import planned_providers

        providers = planned_providers()
    except ImportError:
        info = {"name": None, "configured": kind, "reason": choice.reason, "providers": []}
        return Check("FAIL", "backend", "onnxruntime is not installed", "pip install -e ."), info
    info = {"name": "onnxruntime", "configured": kind, "reason": choice.reason, "providers": providers}
    detail = f"onnxruntime on {providers[0]}: {choice.reason}"
    if kind == "auto" and TEGRA_RELEASE.exists():  # a Jetson running its model on ONNX Runtime: slow
        hint = "a Jetson runs the model far faster on TensorRT: see the README's TensorRT section"
        return Check("WARN", "backend", detail, hint), info
    return Check("OK", "backend", detail), info


def check_engine_cache(cfg: EdgeConfig, model: _Model, backend: dict[str, Any]) -> Check:
    """Whether the engine the TensorRT backend would load is there and built for this device."""
    from edge.reflex.backends import TensorRTSettings, expected_engine_key, probe_tensorrt
    from edge.reflex.backends.cache import cache_state, calibration_digest, engines_of

    name = "engine cache"
    if backend.get("name") != "tensorrt" and model.path is None:
        return Check("OK", name, f"not used (backend {backend.get('name') or 'unavailable'})")
    if model.path is None:
        return Check("WARN", name, "unknown: the model is not usable (see above)")
    settings = TensorRTSettings.from_config(cfg.model)
    cache_dir = settings.cache_for(model.path)
    stem = model.path.stem
    if backend.get("name") != "tensorrt":
        found = engines_of(cache_dir, stem)
        more = f"; {len(found)} engine file(s) of {stem} in {cache_dir}" if found else ""
        return Check("OK", name, f"not used (backend {backend.get('name') or 'unavailable'}){more}")
    calibration = None
    if settings.precision == "int8" and settings.calibration_frames is not None:
        calibration = calibration_digest(settings.calibration_frames)
    key = expected_engine_key(probe_tensorrt(), model.manifest.sha256, settings, calibration)
    if key is None:
        return Check("WARN", name, "unknown: TensorRT cannot tell its version or GPU here")
    dla = f", DLA {settings.dla_core}" if settings.dla_core is not None else ""
    what = f"{stem} ({settings.precision}{dla})"
    state = cache_state(cache_dir, stem, key)
    writable = cache_dir
    while not writable.exists() and writable != writable.parent:
        writable = writable.parent
    if state.state != "fresh" and not os.access(writable, os.W_OK):
        return Check(
            "WARN",
            name,
            f"{cache_dir} is not writable: the engine is rebuilt at every start (minutes)",
            "set model.engine_cache to a writable folder, e.g. in the data folder",
        )
    hint = "tools/build_engine builds it now, instead of at the next start"
    if state.state == "fresh":
        meta = state.meta or {}
        built = meta.get("built_at")
        when = (
            f", built {datetime.fromtimestamp(built):%Y-%m-%d %H:%M}"
            if isinstance(built, (int, float))
            else ""
        )
        took = f" in {meta['build_s']:g} s" if isinstance(meta.get("build_s"), (int, float)) else ""
        return Check("OK", name, f"fresh: {state.path}{when}{took}")
    if state.state == "stale":
        olds = ", ".join(p.name for p in state.stale)
        return Check(
            "WARN",
            name,
            f"stale for {what}: {olds} built for other inputs (ONNX, TensorRT, GPU or "
            "precision); the next start rebuilds it (minutes)",
            hint,
        )
    return Check(
        "WARN", name, f"none yet for {what} in {cache_dir}: the first start builds it (minutes)", hint
    )


# --- cameras, broker ------------------------------------------------------------------------------------


def check_camera(name: str, source: str, timeout_s: float) -> Check:
    from edge.capture import CaptureError, SourceError, grab_frame

    label = f"camera {name}"
    shown = redact(source)
    t0 = time.monotonic()
    try:
        frame = grab_frame(source, timeout_s)
    except (CaptureError, SourceError) as exc:
        scheme = source.split("://", 1)[0].lower() if "://" in source else ""
        if scheme in ("rtsp", "rtsps", "http", "https"):
            hint = "is the camera powered and on this network? check its URL, user and password"
        elif scheme == "csi" or source.startswith(("usb:", "/dev/video")):
            hint = "is the camera plugged in, and may this user open it (group video)?"
        else:
            hint = "check the path in cameras." + name + ".source"
        return Check("FAIL", label, str(exc), hint)
    except Exception as exc:  # whatever a capture backend raises: a failed check, never a crashed doctor
        return Check(
            "FAIL", label, f"{shown}: {type(exc).__name__}: {exc}", "check cameras." + name + ".source"
        )
    h, w = frame.shape[:2]
    return Check("OK", label, f"{w}x{h} frame in {time.monotonic() - t0:.1f} s from {shown}")


_UNSUPPORTED_PROTOCOL = {132, 1}


def check_broker(cfg: EdgeConfig, timeout_s: float) -> Check:
    """TCP to the broker, then an MQTT CONNECT with the configured credentials and TLS, then goodbye."""
    from paho.mqtt.enums import MQTTProtocolVersion

    from edge.bus.mqtt import BusConfigError, new_client, parse_endpoint, tls_context

    name = "broker"
    if not cfg.mqtt.url:
        return Check(
            "WARN",
            name,
            "no broker configured: alerts wait in the outbox",
            "set mqtt.url (mqtt[s]://host:port)",
        )
    try:
        endpoint = parse_endpoint(cfg.mqtt)
        context = tls_context(cfg.mqtt) if endpoint.tls else None
    except BusConfigError as exc:
        return Check("FAIL", name, str(exc), "fix the mqtt: section of the config")
    try:
        socket.create_connection((endpoint.host, endpoint.port), timeout=timeout_s).close()
    except OSError as exc:
        why = exc.strerror or str(exc) or type(exc).__name__
        return Check(
            "FAIL",
            name,
            f"cannot reach {endpoint}: {why}",
            "is the broker running, and is its port open to this device (firewall)?",
        )
    protocols = {
        "5": [MQTTProtocolVersion.MQTTv5],
        "3.1.1": [MQTTProtocolVersion.MQTTv311],
        "auto": [MQTTProtocolVersion.MQTTv5, MQTTProtocolVersion.MQTTv311],
    }[cfg.mqtt.protocol]
    client_id = f"{cfg.mqtt.client_id or 'reflex-' + cfg.device.id}-doctor-{os.getpid()}"
    for i, protocol in enumerate(protocols):
        last = i == len(protocols) - 1
        try:
            client = new_client(cfg.mqtt, endpoint, protocol, client_id, context)
        except BusConfigError as exc:
            return Check("FAIL", name, str(exc), "fix the mqtt: section of the config")
        code, error = _connect(client, endpoint.host, endpoint.port, timeout_s)
        version = "MQTT 5" if protocol == MQTTProtocolVersion.MQTTv5 else "MQTT 3.1.1"
        if error is not None:
            if isinstance(error, ssl.SSLError):
                return Check(
                    "FAIL",
                    name,
                    f"TLS with {endpoint} failed: {error}",
                    "mqtt.ca_file must be the CA that signed the broker's certificate, "
                    "for the host name in mqtt.url",
                )
            if not last:
                continue  # a broker that drops an MQTT 5 CONNECT: try 3.1.1
            hint = (
                "is that port TLS (mqtts://, usually 8883) or plain (mqtt://, 1883)?"
                if endpoint.tls
                else None
            )
            return Check("FAIL", name, f"{endpoint}: {error}", hint or "is it an MQTT broker on that port?")
        if code is None:  # silence is no protocol question: asking again in 3.1.1 only doubles the wait
            return Check(
                "FAIL",
                name,
                f"{endpoint} took TCP but no CONNACK within {timeout_s:g} s",
                "is it an MQTT broker on that port (mqtts:// for a TLS port)?",
            )
        if code.is_failure:
            if code.value in _UNSUPPORTED_PROTOCOL and not last:
                continue
            who = f" as {endpoint.username!r}" if endpoint.username else " anonymously"
            return Check(
                "FAIL",
                name,
                f"{endpoint} refused CONNECT{who}: {code}",
                "check mqtt.username, the password (or password_file) and the broker's ACL",
            )
        auth = f" as {endpoint.username!r}" if endpoint.username else ""
        return Check(
            "OK", name, f"{endpoint}: CONNECT accepted ({version}{', TLS' if endpoint.tls else ''}{auth})"
        )
    return Check("FAIL", name, f"{endpoint}: no protocol version accepted")  # not reached


def _connect(client: Any, host: str, port: int, timeout_s: float) -> tuple[Any, BaseException | None]:
    """(CONNACK reason code or None when none came, the error that stopped it or None)."""
    got: list[Any] = []
    client.on_connect = lambda _c, _u, _flags, reason, _props: got.append(reason)
    try:
        client.connect(host, port, keepalive=max(5, int(timeout_s) + 5))
    except (OSError, ssl.SSLError) as exc:  # TLS handshake errors arrive here
        return None, exc
    deadline = time.monotonic() + timeout_s
    try:
        while not got and time.monotonic() < deadline:
            if client.loop(timeout=0.1) != 0:  # not MQTT_ERR_SUCCESS: the broker closed the connection
                break
    except (OSError, ssl.SSLError) as exc:
        if not got:
            return None, exc
    with contextlib.suppress(Exception):  # a polite goodbye where there is still a connection
        client.disconnect()
        client.loop(timeout=0.1)
    return (got[0] if got else None), None


# --- disk, clock ----------------------------------------------------------------------------------------


def check_disk(cfg: EdgeConfig, base: Path) -> Check:
    data = Path(cfg.data_dir)
    data = data if data.is_absolute() else base / data
    existing = data
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        usage = shutil.disk_usage(existing)
    except OSError as exc:
        return Check("FAIL", "disk", f"{data}: {exc.strerror or exc}", "is the data disk mounted?")
    free_mb = usage.free / 2**20
    want = cfg.retention.min_free_mb
    detail = (
        f"{free_mb:,.0f} MB free of {usage.total / 2**20:,.0f} MB at {data} (retention.min_free_mb {want:g})"
    )
    if data.exists() and not os.access(data, os.W_OK | os.X_OK):
        return Check(
            "FAIL",
            "disk",
            f"{data} is not writable by this user; " + detail,
            "chown the data folder to the service user",
        )
    if free_mb < want:
        return Check(
            "FAIL",
            "disk",
            detail + ": below the minimum, old events are being deleted",
            "free space, use a bigger disk, or lower retention.max_age_days",
        )
    if free_mb < 2 * want:
        return Check(
            "WARN",
            "disk",
            detail + ": less than twice the minimum",
            "free space or lower retention.max_age_days",
        )
    return Check("OK", "disk", detail)


def check_clock(run: Callable[..., subprocess.CompletedProcess[str]] = subprocess.run) -> Check:
    """NTP sync from timedatectl, or systemd-timesyncd's flag file; WARN when neither can tell."""
    name = "clock"
    now = datetime.now()
    if now.year < 2024:
        return Check(
            "FAIL",
            name,
            f"the clock says {now:%Y-%m-%d %H:%M}: event times and TLS are wrong",
            "enable NTP (timedatectl set-ntp true) or set the time",
        )
    try:
        out = run(
            ["timedatectl", "show", "-p", "NTPSynchronized", "--value"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        value = out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        value = ""
    if value == "yes":
        return Check("OK", name, f"NTP synchronized ({now:%Y-%m-%d %H:%M:%S})")
    if value == "no":
        return Check(
            "WARN",
            name,
            f"not synchronized with NTP ({now:%Y-%m-%d %H:%M:%S})",
            "timedatectl set-ntp true, and check the NTP server is reachable",
        )
    if TIMESYNC_FLAG.exists():
        return Check("OK", name, f"synchronized (systemd-timesyncd) ({now:%Y-%m-%d %H:%M:%S})")
    return Check(
        "WARN",
        name,
        f"sync unknown: timedatectl cannot tell here ({now:%Y-%m-%d %H:%M:%S})",
        "make sure NTP runs (systemd-timesyncd or chrony): alert times and TLS need it",
    )


# --- all of it ------------------------------------------------------------------------------------------


SKIPPABLE = ("models", "backend", "engine", "cameras", "broker", "disk", "clock")
"""Check groups `--skip` may leave out: an update's health check judges the software, not whether
every camera and the broker happen to be up at that moment (`--skip cameras,broker`)."""


def run_checks(
    config: str | None, timeout_s: float = DEFAULT_TIMEOUT_S, skip: frozenset[str] = frozenset()
) -> tuple[list[Check], dict[str, Any]]:
    """Every check not in `skip`, in a stable order; (checks, extra facts for --json: versions, backend)."""
    unknown = set(skip) - set(SKIPPABLE)
    if unknown:
        raise ConfigError(
            f"--skip: unknown check(s) {', '.join(sorted(unknown))} (known: {', '.join(SKIPPABLE)})"
        )
    found = versions()
    facts: dict[str, Any] = {"versions": found, "config": config, "skipped": sorted(skip)}
    checks = [check_versions(found)]
    clock = [] if "clock" in skip else [check_clock]
    try:
        cfg, base = load_config(config)
    except ConfigError as exc:
        for problem in exc.problems:  # every problem of the file, each on its line
            checks.append(Check("FAIL", "config", problem, "fix the config, then run edge doctor again"))
        return checks + [c() for c in clock], facts
    checks.append(Check("OK", "config", str(Path(config).resolve()) if config else "none given: defaults"))
    cameras = {} if "cameras" in skip else cfg.cameras
    with ThreadPoolExecutor(max_workers=max(2, min(16, len(cameras) + 1))) as pool:
        # The slow ones (network, cameras) start first and run while the local checks are made.
        cams = {
            name: pool.submit(check_camera, name, cam.source, timeout_s)
            for name, cam in cameras.items()
            if cam.enabled
        }
        broker = None if "broker" in skip else pool.submit(check_broker, cfg, timeout_s)
        models: list[_Model] = []
        if "models" not in skip:
            model_checks, models = check_models(cfg, base)
            checks += model_checks
        backend_check, facts["backend"] = check_backend(cfg)
        if "backend" not in skip:
            checks.append(backend_check)
        if "engine" not in skip:
            main_model = models[0] if models else _Model("model", *_quiet_locate(cfg, base))
            checks.append(check_engine_cache(cfg, main_model, facts["backend"]))
        if "cameras" not in skip and not cameras:
            hint = "add cameras under `cameras:` or on the admin page"
            checks.append(Check("WARN", "cameras", "none configured", hint))
        for name in cameras:
            checks.append(cams[name].result() if name in cams else Check("OK", f"camera {name}", "disabled"))
        if broker is not None:
            checks.append(broker.result())
    if "disk" not in skip:
        checks.append(check_disk(cfg, base))
    return checks + [c() for c in clock], facts


def _quiet_locate(cfg: EdgeConfig, base: Path) -> tuple[Any, Path | None]:
    """The main model's manifest and file for the engine check when the model check was skipped."""
    from edge.reflex.engine import locate_model
    from edge.reflex.manifest import ModelError

    try:
        return locate_model(cfg.model, base)
    except ModelError:
        return None, None


def main(
    config: str | None,
    as_json: bool = False,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    skip: frozenset[str] = frozenset(),
) -> int:
    checks, facts = run_checks(config, timeout_s, skip)
    failed = any(c.status == "FAIL" for c in checks)
    if as_json:
        print(json.dumps({"ok": not failed, "checks": [asdict(c) for c in checks], **facts}))
    else:
        width = max(len(c.name) for c in checks)
        for c in checks:
            print(c.line(width))
        fails = sum(c.status == "FAIL" for c in checks)
        warns = sum(c.status == "WARN" for c in checks)
        print(f"\n{fails} failed, {warns} warning(s)" if fails or warns else "\nall good", file=sys.stderr)
    return 1 if failed else 0

"""Provisioning bundles: made on the installer's laptop by tools/provision, applied once at first boot by
firmware/firstboot.py.

A bundle is a tar.gz: manifest.json first ({format, kind, device_id, made_by, files: {path: sha256},
admin}), then the files it lists:

  etc/config.yaml             -> /etc/reflex-edge/config.yaml     0600, the service user's
  etc/mqtt-password           -> /etc/reflex-edge/mqtt-password   0600, the service user's
  etc/device.key              -> /etc/reflex-edge/device.key      0600, the service user's
  etc/ca.pem, etc/device.pem  -> /etc/reflex-edge/...             0644, root's
  etc/update-keys/NAME.pub    -> /etc/reflex-edge/update-keys/    0644, root's (trusted update keys)
  etc/models/NAME.yaml        -> /etc/reflex-edge/models/         0644, root's (model manifests)
  admin.json                  -> the admin account in the event log (name + argon2 hash, never a password)

The config is validated with the appliance's own loader on the laptop and again on the device, against
a staged copy of what the bundle installs beside it (so a relative model manifest resolves exactly as it
will on the device), and its references must match what the bundle carries: a config that names
/etc/reflex-edge/mqtt-password comes with the password, a CA given to the tool is the config's ca_file.
The device id is written into the config on the laptop, so the bytes validated there are the bytes the
device runs.

Applying is idempotent: each file is written only when its bytes, mode or owner differ, atomically (a
new file renamed over the old one), the admin account is added only when missing, completion is
recorded in /etc/reflex-edge/provisioned.json, and the bundle is removed last. A crash anywhere leaves
the bundle in place; the next boot applies it again and ends where one clean run ends.
"""

from __future__ import annotations

import io
import json
import os
import pwd
import sqlite3
import tarfile
import tempfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from firmware.common import (
    FORMAT,
    MANIFEST,
    PROVISION_KIND,
    SHA256_RE,
    TEMP_RE,
    BundleError,
    Layout,
    add_bytes,
    check_relpath,
    dump_json,
    load_public_key,
    open_bundle,
    read_member,
    reproducible_tar,
    sha256_bytes,
    sha256_file,
    write_atomic,
)

DEVICE_ETC = PurePosixPath("/etc/reflex-edge")
DEVICE_DATA = PurePosixPath("/var/lib/reflex-edge")
SECRETS = {"config.yaml", "mqtt-password", "device.key"}
"""Installed 0600 and owned by the service user (it reads them; nobody else may)."""
MQTT_FILES = (
    ("password_file", "mqtt-password", "--mqtt-password-file"),
    ("ca_file", "ca.pem", "--ca"),
    ("cert_file", "device.pem", "--mqtt-cert"),
    ("key_file", "device.key", "--mqtt-key"),
)
"""(mqtt.<key>, the name the bundle installs it as in /etc/reflex-edge, the tools/provision option)."""
ADMIN = "admin.json"
RECORD = "provisioned.json"
MAX_FILE_BYTES = 8 * 1024 * 1024
CRASH_ENV = "REFLEX_FIRSTBOOT_CRASH_AT"
"""Fault injection for tests: die (like a power cut) while writing the N-th file, after its temporary
file is written and before it is renamed into place."""


def allowed(path: str) -> bool:
    """The bundle paths firstboot installs (anything else in a bundle is refused)."""
    if path == ADMIN or path in {
        f"etc/{n}" for n in ("config.yaml", "mqtt-password", "ca.pem", "device.pem", "device.key")
    }:
        return True
    parts = path.split("/")
    if len(parts) == 3 and parts[0] == "etc" and parts[1] == "update-keys":
        return parts[2].endswith(".pub")
    if len(parts) == 3 and parts[0] == "etc" and parts[1] == "models":
        return parts[2].endswith((".yaml", ".yml"))
    return False


# -- the config -------------------------------------------------------------------------------------------


def set_device_id(text: str, device_id: str, source: str) -> str:
    """The config text with device.id set to device_id, everything else (comments included) as it was."""
    quoted = json.dumps(device_id)
    try:
        root = yaml.compose(text)
    except yaml.YAMLError as exc:
        raise BundleError(f"{source}: not valid YAML: {str(exc).splitlines()[0]}") from None
    if root is None:
        return f"device:\n  id: {quoted}\n" + text
    if not isinstance(root, yaml.MappingNode):
        raise BundleError(f"{source}: the config must be a mapping of sections")
    for key, value in root.value:
        if getattr(key, "value", None) != "device":
            continue
        if not isinstance(value, yaml.MappingNode) or not value.value:
            raise BundleError(
                f"{source}:{key.start_mark.line + 1}: device: write it as `device: {{id: {device_id}}}`"
            )
        for k2, v2 in value.value:
            if getattr(k2, "value", None) == "id":
                return text[: v2.start_mark.index] + quoted + text[v2.end_mark.index :]
        if value.flow_style:
            i = value.start_mark.index + 1
            return text[:i] + f"id: {quoted}, " + text[i:]
        first = value.value[0][0]
        line = text.rfind("\n", 0, first.start_mark.index) + 1
        return text[:line] + " " * first.start_mark.column + f"id: {quoted}\n" + text[line:]
    first = root.value[0][0]
    line = text.rfind("\n", 0, first.start_mark.index) + 1
    return text[:line] + f"device:\n  id: {quoted}\n" + text[line:]


@dataclass
class Checked:
    cfg: Any
    data_dir: PurePosixPath
    """Where the appliance keeps its event log on the device."""
    warnings: list[str] = field(default_factory=list)


def validate_config(text: str, source: str, carried: Mapping[str, bytes]) -> Checked:
    """Check config text as the device will load it from /etc/reflex-edge/config.yaml, beside the files
    `carried` (paths relative to /etc/reflex-edge). Raises BundleError listing every problem."""
    from edge.config.loader import ConfigError, parse_config
    from edge.config.models import CHECKOUT
    from edge.reflex.manifest import ModelError, load_manifest

    with tempfile.TemporaryDirectory(prefix="reflex-provision-") as tmp:
        staged = Path(tmp).resolve()
        for rel, data in carried.items():
            if rel.startswith("models/"):
                (staged / rel).parent.mkdir(parents=True, exist_ok=True)
                (staged / rel).write_bytes(data)

        def on_device(value: str | None) -> PurePosixPath | None:
            if value is None:
                return None
            p = Path(value)
            return (
                DEVICE_ETC / p.relative_to(staged).as_posix()
                if p.is_relative_to(staged)
                else PurePosixPath(p)
            )

        try:
            cfg = parse_config(text, source, base_dir=staged)
        except ConfigError as exc:
            raise BundleError(str(exc)) from None
        problems: list[str] = []
        warnings: list[str] = []
        for key, name, option in MQTT_FILES:
            value = on_device(getattr(cfg.mqtt, key))
            expected = DEVICE_ETC / name
            if value is not None and value.is_relative_to(DEVICE_ETC) and value != expected:
                problems.append(f"mqtt.{key} is {value}: provisioning installs that file as {expected}")
            elif value == expected and name not in carried:
                problems.append(f"mqtt.{key} is {value}, which this bundle does not carry (pass {option})")
            elif name in carried and value != expected:
                problems.append(
                    f"the bundle carries {name} ({option}) but mqtt.{key} is {value or 'not set'}: "
                    f"set mqtt.{key}: {expected}"
                )
        models = [("model", cfg.model)] + [(f"extra_models.{i}", m) for i, m in enumerate(cfg.extra_models)]
        for where, model in models:
            path = Path(model.manifest)
            device = on_device(model.manifest)
            if path.is_relative_to(staged) and path.exists():
                try:
                    load_manifest(path)
                except ModelError as exc:
                    problems.append(f"{where}.manifest: {str(exc).replace(str(staged), str(DEVICE_ETC))}")
            elif path.is_relative_to(CHECKOUT) and path.exists():
                pass  # shipped with the release (models/yolox_nano.yaml)
            elif device is not None and device.is_relative_to(DEVICE_ETC):
                problems.append(
                    f"{where}.manifest is {device}, which this bundle does not carry (pass --model FILE)"
                )
            else:
                warnings.append(f"{where}.manifest {device} is not in the bundle: it must be on the device")
        data_dir = on_device(cfg.data_dir)
        assert data_dir is not None
        if not data_dir.is_relative_to(DEVICE_DATA):
            problems.append(
                f"data_dir is {data_dir}: on a device the event log lives in {DEVICE_DATA} "
                f"(the only folder the service may write); set data_dir: {DEVICE_DATA}"
            )
    if problems:
        head = f"{source}: " if len(problems) == 1 else f"{source}: {len(problems)} problems:\n  "
        raise BundleError(head + "\n  ".join(problems))
    return Checked(cfg, data_dir, warnings)


# -- building (the laptop) ---------------------------------------------------------------------------------


@dataclass
class Admin:
    name: str
    password_hash: str


def hash_admin(name: str, password: str) -> Admin:
    """The admin bootstrap: the name and an argon2id hash (the appliance's own parameters and checks)."""
    from argon2 import PasswordHasher

    from edge.admin.accounts import AccountError, check_name, check_password

    try:
        check_name(name)
        check_password(password)
    except AccountError as exc:
        raise BundleError(f"admin: {exc}") from None
    return Admin(name, PasswordHasher().hash(password))


def build(
    config: Path,
    *,
    device_id: str | None,
    mqtt_files: Mapping[str, Path],
    admin: Admin | None,
    models: list[Path],
    update_keys: list[Path],
) -> tuple[bytes, dict[str, Any], list[str]]:
    """The bundle's bytes, its manifest and warnings. mqtt_files: bundle name (mqtt-password, ca.pem,
    device.pem, device.key) -> file on the laptop."""
    from edge.config.loader import ConfigError, parse_config
    from edge.reflex.manifest import ModelError, load_manifest
    from edge.store.migrations import LATEST

    try:
        text = config.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BundleError(f"{config}: cannot read the config: {exc}") from None
    try:  # first as the installer wrote it, so its problems name their lines
        original = parse_config(text, str(config), base_dir=config.resolve().parent)
    except ConfigError as exc:
        raise BundleError(str(exc)) from None
    if device_id is None:
        given = (yaml.safe_load(text) or {}).get("device")
        if not isinstance(given, dict) or "id" not in given:
            raise BundleError(f"{config}: no device.id: pass --device-id ID (every device needs its own)")
        device_id = original.device.id
    text = set_device_id(text, device_id, str(config))

    files: dict[str, bytes] = {"etc/config.yaml": text.encode()}
    for name, path in mqtt_files.items():
        data = _read(path, name)
        if name == "mqtt-password" and not data.strip():
            raise BundleError(f"{path}: the MQTT password file is empty")
        files[f"etc/{name}"] = data
    for path in models:
        if not path.name.endswith((".yaml", ".yml")):
            raise BundleError(f"{path}: a model manifest is a .yaml file")
        try:
            load_manifest(path)
        except ModelError as exc:
            raise BundleError(str(exc)) from None
        _add_unique(files, f"etc/models/{path.name}", _read(path, "model manifest"))
    for path in update_keys:
        data = _read(path, "update key")
        load_public_key(data, str(path))
        _add_unique(files, f"etc/update-keys/{path.stem}.pub", data)
    if admin is not None:
        files[ADMIN] = dump_json({"name": admin.name, "password_hash": admin.password_hash, "role": "admin"})
    carried = {p[len("etc/") :]: d for p, d in files.items() if p.startswith("etc/")}
    checked = validate_config(text, str(config), carried)
    if checked.cfg.device.id != device_id:  # pragma: no cover - set_device_id checked by the re-parse
        raise BundleError(f"{config}: could not set device.id to {device_id!r}")
    warnings = list(checked.warnings)
    if not update_keys:
        warnings.append(
            "no --update-key: the device refuses every update until a key is in /etc/reflex-edge/update-keys"
        )
    manifest = {
        "format": FORMAT,
        "kind": PROVISION_KIND,
        "device_id": device_id,
        "made_by": f"reflex-edge {_version()}",
        "schema": LATEST,
        "admin": admin.name if admin else None,
        "files": {p: sha256_bytes(d) for p, d in sorted(files.items())},
    }
    out = io.BytesIO()
    with reproducible_tar(out) as tar:
        add_bytes(tar, MANIFEST, dump_json(manifest), 0o600)
        for path, data in sorted(files.items()):
            add_bytes(tar, path, data, 0o600)
    return out.getvalue(), manifest, warnings


def _read(path: Path, what: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BundleError(f"{path}: cannot read the {what}: {exc.strerror}") from None
    if len(data) > MAX_FILE_BYTES:
        raise BundleError(f"{path}: {len(data)} bytes is too large for a {what}")
    return data


def _add_unique(files: dict[str, bytes], path: str, data: bytes) -> None:
    if path in files:
        raise BundleError(f"two files would be installed as {path}")
    files[path] = data


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("reflex-edge")
    except PackageNotFoundError:  # pragma: no cover
        return "unknown"


# -- applying (the device) --------------------------------------------------------------------------------


def read(bundle: Path) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The manifest and every file of a provisioning bundle, each checked against the manifest."""
    files: dict[str, bytes] = {}
    try:
        with open_bundle(bundle) as tar:
            first = tar.next()
            if first is None or first.name != MANIFEST:
                raise BundleError(f"{bundle.name}: not a provisioning bundle (no {MANIFEST} first)")
            try:
                manifest = json.loads(read_member(tar, first, MAX_FILE_BYTES))
            except ValueError as exc:
                raise BundleError(f"{bundle.name}: {MANIFEST} is not JSON: {exc}") from None
            if not isinstance(manifest, dict) or manifest.get("kind") != PROVISION_KIND:
                raise BundleError(
                    f"{bundle.name}: not a provisioning bundle (kind is not {PROVISION_KIND!r})"
                )
            if manifest.get("format") != FORMAT:
                raise BundleError(f"{bundle.name}: format {manifest.get('format')!r} is not {FORMAT}")
            listed = manifest.get("files")
            if not isinstance(listed, dict) or "etc/config.yaml" not in listed:
                raise BundleError(f"{bundle.name}: the manifest lists no etc/config.yaml")
            for path, digest in listed.items():
                check_relpath(path, "manifest path")
                if not allowed(path):
                    raise BundleError(f"{bundle.name}: {path!r} is nothing firstboot installs")
                if not isinstance(digest, str) or not SHA256_RE.match(digest):
                    raise BundleError(f"{bundle.name}: {path}: not a sha256")
            while (member := tar.next()) is not None:
                name = check_relpath(member.name, "bundle member")
                if name not in listed:
                    raise BundleError(f"{bundle.name}: {name}: in the bundle but not in the manifest")
                if name in files:
                    raise BundleError(f"{bundle.name}: {name}: twice in the bundle")
                data = read_member(tar, member, MAX_FILE_BYTES)
                if sha256_bytes(data) != listed[name]:
                    raise BundleError(f"{bundle.name}: file {name}: sha256 mismatch")
                files[name] = data
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise BundleError(f"{bundle.name}: truncated or corrupt bundle ({exc})") from None
    missing = sorted(set(listed) - set(files))
    if missing:
        raise BundleError(f"{bundle.name}: file {missing[0]}: in the manifest but not in the bundle")
    return manifest, files


def _owner(name: str | None) -> tuple[int, int] | None:
    if not name:
        return None
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise BundleError(
            f"user {name!r} does not exist: run firmware/install-jetpack.sh first (or pass --owner '')"
        ) from None
    return entry.pw_uid, entry.pw_gid


def _same(path: Path, data: bytes, mode: int, owner: tuple[int, int] | None) -> bool:
    try:
        st = path.lstat()
    except FileNotFoundError:
        return False
    if not path.is_file() or path.is_symlink() or (st.st_mode & 0o7777) != mode:
        return False
    if owner is not None and (st.st_uid, st.st_gid) != owner:
        return False
    return path.read_bytes() == data


def _has_user(db: Path, name: str) -> bool:
    """Whether the event log has the account, read without writing anything: opening the log through
    EventLog bumps the file's change counter, and a plain read-only open of a WAL database leaves -wal
    and -shm files, so a second run would not leave the same bytes. `immutable` reads the main file
    only; a user still in an unmerged WAL reads as missing, and then add_user finds it (no change)."""
    if not db.exists():
        return False
    conn = sqlite3.connect(f"file:{db}?mode=ro&immutable=1", uri=True)
    try:
        return conn.execute("SELECT 1 FROM users WHERE name = ?", (name,)).fetchone() is not None
    except sqlite3.OperationalError:  # no users table yet (an older schema): EventLog migrates it
        return False
    finally:
        conn.close()


def _clean_temps(folder: Path) -> None:
    """Temporary files a crash left between write and rename."""
    if folder.is_dir():
        for path in folder.rglob(".*.tmp"):
            if TEMP_RE.match(path.name) and path.is_file():
                path.unlink()


def apply(
    bundle: Path, layout: Layout, *, owner: str | None, data_dir: Path | None = None, keep: bool = False
) -> list[str]:
    """Apply a provisioning bundle (see the module doc); returns the report lines. Nothing is written
    until the whole bundle, its config and its admin account are checked."""
    from edge.admin.accounts import AccountError, check_name
    from edge.store import EventLog

    manifest, files = read(bundle)
    etc_files = {p[len("etc/") :]: d for p, d in files.items() if p.startswith("etc/")}
    checked = validate_config(
        etc_files["config.yaml"].decode("utf-8", "replace"), str(layout.etc / "config.yaml"), etc_files
    )
    device_id = checked.cfg.device.id
    if device_id != manifest.get("device_id"):
        raise BundleError(
            f"the config's device.id {device_id!r} is not the bundle's {manifest.get('device_id')!r}"
        )
    admin = None
    if ADMIN in files:
        try:
            admin = json.loads(files[ADMIN])
            check_name(admin["name"])
            if not str(admin["password_hash"]).startswith("$argon2") or admin.get("role") != "admin":
                raise ValueError("not an argon2 hash for the admin role")
        except (ValueError, KeyError, TypeError, AccountError) as exc:
            raise BundleError(f"{bundle.name}: {ADMIN}: {exc}") from None
    uid_gid = _owner(owner)
    crash_at = int(os.environ.get(CRASH_ENV, "0") or 0)

    report = []
    _clean_temps(layout.etc)
    for folder in (layout.etc, layout.etc / "update-keys", layout.etc / "models"):
        folder.mkdir(mode=0o755, parents=True, exist_ok=True)
    written = 0
    for rel, data in sorted(etc_files.items()):
        dest = layout.etc / rel
        secret = rel in SECRETS
        mode, own = (0o600, uid_gid) if secret else (0o644, None)
        if _same(dest, data, mode, own):
            continue
        written += 1
        write_atomic(dest, data, mode, own, crash=written == crash_at)
        report.append(f"installed {dest} ({oct(mode)[2:]}{', secret' if secret else ''})")

    data = data_dir or layout.under(str(checked.data_dir))
    data.mkdir(mode=0o750, parents=True, exist_ok=True)
    if uid_gid is not None and (data.stat().st_uid, data.stat().st_gid) != uid_gid:
        os.chown(data, *uid_gid)  # the appliance writes the log (and its -wal, -shm) here
    if admin is not None and _has_user(data / "events.db", admin["name"]):
        report.append(f"admin account {admin['name']!r} exists already: left as it is")
    elif admin is not None:
        events = EventLog(data, reserve_bytes=0)
        try:
            if events.add_user(admin["name"], admin["password_hash"], "admin"):
                report.append(f"admin account {admin['name']!r} created in {events.db_path}")
            else:  # pragma: no cover - made between the check and now
                report.append(f"admin account {admin['name']!r} exists already: left as it is")
        finally:
            events.close()
    if uid_gid is not None:
        for path in [data / "snapshots", *data.glob("events.db*")]:
            if path.exists() and (path.stat().st_uid, path.stat().st_gid) != uid_gid:
                os.chown(path, *uid_gid)

    record = dump_json(
        {
            "bundle_sha256": sha256_file(bundle),
            "device_id": device_id,
            "files": sorted(etc_files),
            "admin": admin["name"] if admin else None,
        }
    )
    if not _same(layout.etc / RECORD, record, 0o644, None):
        write_atomic(layout.etc / RECORD, record, 0o644)
    if not keep:
        bundle.unlink()
        report.append(f"removed {bundle}")
    report.insert(0, f"device {device_id} provisioned ({len(etc_files)} files, {written} changed)")
    report.extend(f"warning: {w}" for w in checked.warnings)
    return report

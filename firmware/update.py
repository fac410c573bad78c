#!/usr/bin/env python3
"""Signed A/B updates: verify a bundle, install it in the inactive slot, switch, check, roll back on failure.

Usage (as root; every device path lies under --root, default / or $REFLEX_EDGE_ROOT):
  update.py apply [BUNDLE] [--from DIR]   install BUNDLE, or the newest bundle in DIR
                                          (default /var/lib/reflex-edge/updates)
  update.py status [--json]               active and standby slot, last update, backups, trusted keys
  update.py rollback [--restore-backup]   switch back to the standby slot's release

Layout: /opt/reflex-edge/slots/{a,b} each hold a release tree with its own .venv; /opt/reflex-edge/current
is a relative symlink to the active one. `apply`:
  1. reads manifest.json and manifest.sig (the bundle's first two members) and verifies the ed25519
     signature against /etc/reflex-edge/update-keys/*.pub; refuses a version not newer than the
     active one and a release whose event log schema is older than the log on disk;
  2. streams every other member into slots/.incoming, checking each is a regular file named in the
     manifest (no absolute path, no `..`, no link, nothing twice, no byte more than the manifest says)
     with the manifest's sha256, and that no manifest file is missing. Any refusal removes
     .incoming: nothing on the device has changed;
  3. moves the tree into the inactive slot, builds its virtualenv (python3 -m venv
     --system-site-packages, so it sees JetPack's tensorrt/pycuda, then pip install -e 'SLOT[jetson]',
     falling back to the package without the extra; offline from SLOT/wheels when the release carries
     it); --no-venv skips this. The slot gets its marker (.reflex-release.json) only when complete;
  4. backs up the event log with SQLite's backup API to backups/events-<active version>-<UTC>.db,
     records the attempt in update-status.json, switches `current`, restarts the appliance
     (--restart-cmd) and runs the health check (--health-cmd, --health-timeout);
  5. when restart or check fails or times out: switches back, restores the event log from the backup
     if the new release migrated it (PRAGMA user_version changed), restarts the old release, and
     records the version as failed (apply --from skips it from then on; name the bundle to retry).
An update interrupted between switch and verdict (power cut) is checked again by the next apply.

Exit status: 0 installed (or nothing to do), 1 refused (nothing changed), 3 installed but rolled back,
4 the rollback itself failed (look at the device). Every refusal is one line on stderr: `update: ...`.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import tarfile
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from firmware.common import (
    FORMAT,
    MANIFEST,
    MAX_MANIFEST_BYTES,
    MAX_SIGNATURE_BYTES,
    RELEASE_PREFIX,
    RESERVED,
    SHA256_RE,
    SIGNATURE,
    SLOT_MARKER,
    UPDATE_KIND,
    BundleError,
    Layout,
    check_relpath,
    dump_json,
    fsync_dir,
    member_kind,
    open_bundle,
    parse_version,
    pyproject_version,
    read_json,
    read_member,
    sha256_file,
    switch_symlink,
    trusted_keys,
    verify_signature,
    write_atomic,
)

SLOTS = ("a", "b")
# The software is judged, not the site: a camera or broker that is down at update time must not roll
# a good release back (`edge doctor` would FAIL on them).
DEFAULT_HEALTH = "{current}/.venv/bin/edge doctor --config {etc}/config.yaml --skip cameras,broker"
DEFAULT_RESTART = "systemctl try-restart reflex-edge.service"
KEEP_BACKUPS = 3
FREE_MARGIN = 64 * 1024 * 1024
VENV_TIMEOUT_S = 1800
EXIT_REFUSED, EXIT_ROLLED_BACK, EXIT_BROKEN = 1, 3, 4
CRASH_ENV = "REFLEX_UPDATE_CRASH"
"""Fault injection for tests: `after-switch` dies (like a power cut) right after `current` is switched,
before the health check has given its verdict."""


def say(line: str) -> None:
    print(f"update: {line}", flush=True)


def warn(line: str) -> None:
    print(f"update: {line}", file=sys.stderr, flush=True)


def utc_stamp(t: float | None = None) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if t is None else t))


# -- the bundle ----------------------------------------------------------------------------------------


@dataclass
class Release:
    """A verified manifest."""

    version: str
    schema: int
    files: dict[str, str]
    executable: set[str]
    total_bytes: int
    signed_by: str = ""
    raw: dict[str, Any] = field(default_factory=dict)


def parse_manifest(data: bytes) -> Release:
    try:
        m = json.loads(data)
    except ValueError as exc:
        raise BundleError(f"manifest.json is not JSON: {exc}") from None
    if not isinstance(m, dict) or m.get("kind") != UPDATE_KIND:
        raise BundleError(f"not an update bundle (manifest kind is not {UPDATE_KIND!r})")
    if m.get("format") != FORMAT:
        raise BundleError(
            f"manifest format {m.get('format')!r} is not {FORMAT}: made by a newer sign_update?"
        )
    version = m.get("version")
    parse_version(version)
    schema, files, total = m.get("schema"), m.get("files"), m.get("bytes")
    if not isinstance(schema, int) or schema < 0:
        raise BundleError("manifest: schema is not an event log schema version")
    if not isinstance(files, dict) or not files:
        raise BundleError("manifest: no files")
    if not isinstance(total, int) or total < 0:
        raise BundleError("manifest: bytes is not a size")
    for path, digest in files.items():
        check_relpath(path, "manifest path")
        if path.split("/")[0] in RESERVED:
            raise BundleError(
                f"manifest path {path!r}: {path.split('/')[0]} is the slot's own, not a release's"
            )
        if not isinstance(digest, str) or not SHA256_RE.match(digest):
            raise BundleError(f"manifest path {path!r}: not a sha256")
    executable = m.get("executable", [])
    if not isinstance(executable, list) or not set(executable) <= set(files):
        raise BundleError("manifest: executable names files the manifest does not list")
    return Release(version, schema, files, set(executable), total, raw=m)


def _head(tar: tarfile.TarFile, path: Path) -> tuple[bytes, bytes]:
    """manifest.json and manifest.sig, which must be the first two members."""
    out = []
    for want, limit in ((MANIFEST, MAX_MANIFEST_BYTES), (SIGNATURE, MAX_SIGNATURE_BYTES)):
        member = tar.next()
        if member is None or member.name != want:
            found = "its end" if member is None else repr(member.name)
            raise BundleError(f"{path.name}: not an update bundle: expected {want} next, found {found}")
        out.append(read_member(tar, member, limit))
    return out[0], out[1]


def peek_manifest(path: Path) -> Release:
    """The manifest without its signature checked: only to choose among bundles, never to install."""
    with contextlib.closing(open_bundle(path)) as tar:
        try:
            manifest, _ = _head(tar, path)
        except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
            raise BundleError(f"{path}: unreadable ({exc})") from None
    return parse_manifest(manifest)


def read_bundle(path: Path, keys_dir: Path, *, check: Any = None, dest: Path | None = None) -> Release:
    """Verify `path` in one pass: signature, then check(release) (may raise BundleError), then every
    member against the manifest. With `dest` (an empty folder), each file is written there as it is
    read; the caller removes dest when this raises. Returns the verified release."""
    keys, warnings = trusted_keys(keys_dir)
    for line in warnings:
        warn(line)
    with contextlib.closing(open_bundle(path)) as tar:
        try:
            manifest, signature = _head(tar, path)
            signer = verify_signature(manifest, signature, keys, str(keys_dir))
            release = parse_manifest(manifest)
            release.signed_by = signer
            if check is not None:
                check(release)
            _members(tar, release, dest)
        except (tarfile.TarError, EOFError, zlib.error) as exc:
            raise BundleError(f"{path.name}: truncated or corrupt bundle ({exc})") from None
    return release


def _members(tar: tarfile.TarFile, release: Release, dest: Path | None) -> None:
    seen: set[str] = set()
    total = 0
    while (member := tar.next()) is not None:
        name = member.name
        if not name.startswith(RELEASE_PREFIX):
            raise BundleError(f"bundle member {name!r} is outside {RELEASE_PREFIX} (not in the manifest)")
        rel = check_relpath(name[len(RELEASE_PREFIX) :], "bundle member")
        if not member.isfile():
            raise BundleError(f"bundle member {rel!r} is {member_kind(member)}; only files are allowed")
        if rel not in release.files:
            raise BundleError(f"file {rel}: in the bundle but not in the manifest")
        if rel in seen:
            raise BundleError(f"file {rel}: twice in the bundle")
        seen.add(rel)
        total += member.size
        if total > release.total_bytes:
            raise BundleError(f"file {rel}: the bundle holds more bytes than its manifest says")
        digest = _copy_member(tar, member, rel, dest, 0o755 if rel in release.executable else 0o644)
        if digest != release.files[rel]:
            raise BundleError(f"file {rel}: sha256 mismatch")
    missing = sorted(set(release.files) - seen)
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise BundleError(f"file {missing[0]}: in the manifest but not in the bundle{more}")


def _copy_member(
    tar: tarfile.TarFile, member: tarfile.TarInfo, rel: str, dest: Path | None, mode: int
) -> str:
    h = hashlib.sha256()
    src = tar.extractfile(member)
    assert src is not None
    out = None
    if dest is not None:
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
        out = os.fdopen(fd, "wb")
    try:
        for chunk in iter(lambda: src.read(1 << 20), b""):
            h.update(chunk)
            if out is not None:
                out.write(chunk)
    finally:
        if out is not None:
            out.close()
    return h.hexdigest()


# -- slots, versions, the event log ---------------------------------------------------------------------


def active_slot(layout: Layout) -> str:
    try:
        target = os.readlink(layout.current)
    except FileNotFoundError:
        raise BundleError(
            f"no active release: {layout.current} is missing (install with firmware/install-jetpack.sh)"
        ) from None
    except OSError:
        raise BundleError(f"{layout.current} is not a symlink into slots/ (installed by hand?)") from None
    name = Path(target).name
    if name not in SLOTS or Path(target).parent.name != "slots":
        raise BundleError(f"{layout.current} points to {target!r}, not to slots/a or slots/b")
    return name


def other(slot: str) -> str:
    return "b" if slot == "a" else "a"


def slot_release(layout: Layout, slot: str) -> dict[str, Any] | None:
    """The slot's marker (version, schema, ...), or None when the slot holds no complete release."""
    marker = read_json(layout.slots / slot / SLOT_MARKER)
    if marker is not None and isinstance(marker.get("version"), str):
        return marker
    return None


def slot_version(layout: Layout, slot: str) -> str:
    marker = slot_release(layout, slot)
    if marker is not None:
        return str(marker["version"])
    with contextlib.suppress(OSError):
        version = pyproject_version((layout.slots / slot / "pyproject.toml").read_text(encoding="utf-8"))
        if version:
            return version
    raise BundleError(f"cannot tell the version of slot {slot} (no {SLOT_MARKER}, no pyproject.toml)")


def db_schema(db: Path, *, live: bool = False) -> int:
    """PRAGMA user_version of the event log (0: no log yet). Through the WAL when there is one (a
    running appliance's last migration may not be checkpointed yet) or when `live`; else from the main
    file only (immutable: no -wal/-shm left behind, so a refused bundle changes nothing)."""
    if not db.exists():
        return 0
    live = live or db.with_name(db.name + "-wal").exists()
    uri = f"file:{db}?mode=ro" if live else f"file:{db}?mode=ro&immutable=1"
    conn = sqlite3.connect(uri, uri=True)
    try:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    finally:
        conn.close()


def sqlite_copy(src: Path, dst: Path) -> None:
    """Copy a live SQLite database page by page under its locks (the backup API): consistent even
    while the appliance writes (WAL included), unlike a file copy."""
    a, b = sqlite3.connect(src), sqlite3.connect(dst)
    try:
        a.backup(b)
    finally:
        b.close()
        a.close()


def backup_event_log(db: Path, backups: Path, version: str) -> Path | None:
    if not db.exists():
        return None
    backups.mkdir(mode=0o700, parents=True, exist_ok=True)
    final = backups / f"events-{version}-{utc_stamp()}.db"
    tmp = final.with_name(f".{final.name}.tmp")
    tmp.unlink(missing_ok=True)
    sqlite_copy(db, tmp)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.chmod(tmp, 0o600)
    os.replace(tmp, final)
    fsync_dir(backups)
    for old in sorted(backups.glob("events-*.db"), key=lambda p: p.stat().st_mtime)[:-KEEP_BACKUPS]:
        old.unlink(missing_ok=True)
    return final


def need_space(folder: Path, needed: int, what: str) -> None:
    probe = folder
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < needed + FREE_MARGIN:
        mib = (needed + FREE_MARGIN) // (1 << 20)
        raise BundleError(
            f"not enough free space in {probe} for {what} ({mib} MiB needed, {free >> 20} free)"
        )


# -- commands --------------------------------------------------------------------------------------------


def expand(template: str, **values: str) -> list[str]:
    """shlex-split a command and fill its {slot} {current} {etc} {data} {root} {version} (nothing
    else: other braces stay as they are)."""
    argv = shlex.split(template)
    out = []
    for arg in argv:
        for key, value in values.items():
            arg = arg.replace("{" + key + "}", value)
        out.append(arg)
    return out


def run_step(argv: list[str], timeout: float) -> tuple[bool, str]:
    """Run argv in its own process group (a timeout kills the whole group). (ok, what happened)."""
    try:
        proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
        )
    except OSError as exc:
        return False, f"cannot run {argv[0]}: {exc.strerror}"
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        sys.stdout.write(output)
        return False, f"timed out after {timeout:g} s"
    sys.stdout.write(output)
    sys.stdout.flush()
    if proc.returncode != 0:
        last = next((line.strip() for line in reversed(output.splitlines()) if line.strip()), "")
        return False, f"exit status {proc.returncode}" + (f": {last}" if last else "")
    return True, "passed"


def build_venv(slot_dir: Path, python: str, version: str) -> None:
    venv = slot_dir / ".venv"
    say(f"building the virtualenv of {version} in {venv} (python3 -m venv --system-site-packages, pip)")
    ok, what = run_step([python, "-m", "venv", "--system-site-packages", str(venv)], 300)
    if not ok:
        raise BundleError(f"cannot create the virtualenv for {version}: {what}")
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    pip.append("--no-cache-dir")  # the update unit has ProtectHome=yes: no ~/.cache
    if (slot_dir / "wheels").is_dir():
        pip += ["--no-index", "--find-links", str(slot_dir / "wheels")]
    ok, what = run_step([*pip, "-e", f"{slot_dir}[jetson]"], VENV_TIMEOUT_S)
    if not ok:
        warn(f"the [jetson] extra did not install ({what}); installing without it")
        ok, what = run_step([*pip, "-e", str(slot_dir)], VENV_TIMEOUT_S)
    if not ok:
        raise BundleError(f"cannot install {version} into its virtualenv: {what}")


def carry_model_cache(src: Path, dst: Path) -> None:
    """models/cache (downloaded models, built TensorRT engines keyed by what they were built from)
    of the active slot into the new one, hard-linked where the file system allows."""
    src_cache, dst_cache = src / "models" / "cache", dst / "models" / "cache"
    if not src_cache.is_dir():
        return
    for path in src_cache.rglob("*"):
        if path.is_file() and not path.is_symlink():
            target = dst_cache / path.relative_to(src_cache)
            if target.exists():
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(path, target)
            except OSError:
                shutil.copy2(path, target)


@dataclass
class Options:
    layout: Layout
    data: Path
    keys: Path
    health: str
    health_timeout: float
    restart: str
    restart_timeout: float
    python: str
    venv: bool

    @property
    def db(self) -> Path:
        return self.data / "events.db"

    @property
    def backups(self) -> Path:
        return self.data / "backups"

    @property
    def status_file(self) -> Path:
        return self.data / "update-status.json"


def read_status(opts: Options) -> dict[str, Any]:
    return read_json(opts.status_file) or {}


def write_status(opts: Options, status: dict[str, Any]) -> None:
    write_atomic(opts.status_file, dump_json(status), 0o644)


def restart(opts: Options, slot: str, version: str) -> tuple[bool, str]:
    if not opts.restart.strip():
        return True, "no restart command"
    return run_step(expand(opts.restart, **_values(opts, slot, version)), opts.restart_timeout)


def health_check(opts: Options, slot: str, version: str) -> tuple[bool, str]:
    ok, what = restart(opts, slot, version)
    if not ok:
        return False, f"restart failed: {what}"
    if not opts.health.strip():
        return True, "no health command"
    return run_step(expand(opts.health, **_values(opts, slot, version)), opts.health_timeout)


def _values(opts: Options, slot: str, version: str) -> dict[str, str]:
    lay = opts.layout
    return {
        "slot": str(lay.slots / slot),
        "current": str(lay.current),
        "etc": str(lay.etc),
        "data": str(opts.data),
        "root": str(lay.root),
        "version": version,
    }


def roll_back(opts: Options, status: dict[str, Any], why: str) -> int:
    """Switch back to status['from'], restore the event log if the new release migrated it."""
    lay = opts.layout
    prev, prev_version = status["from"], status["from_version"]
    new_version = status["version"]
    notes = []
    try:
        switch_symlink(lay.current, f"slots/{prev}")
        backup = Path(status["backup"]) if status.get("backup") else None
        now, before = db_schema(opts.db, live=True), status.get("schema_before")
        if now == before:
            notes.append("event log untouched (not migrated)")
        elif backup is not None:
            sqlite_copy(backup, opts.db)
            notes.append(f"event log restored from {backup} (schema {now} -> {before})")
        else:  # there was no log before: the one the new release made is set aside, the old makes its own
            aside = opts.db.with_name(f"events.db.from-{new_version}")
            for suffix in ("", "-wal", "-shm"):
                src = opts.db.with_name(opts.db.name + suffix)
                if src.exists():
                    os.replace(src, aside.with_name(aside.name + suffix))
            notes.append(f"the event log {new_version} made is kept as {aside}")
        restarted, what = restart(opts, prev, prev_version)
        if not restarted:
            notes.append(f"RESTARTING {prev_version} FAILED: {what}: check the device")
    except (OSError, sqlite3.Error) as exc:
        warn(f"ROLLBACK FAILED: {exc}; the device may run {new_version} or nothing: check it by hand")
        status.update(state="broken", detail=f"{why}; rollback failed: {exc}", at=utc_stamp())
        with contextlib.suppress(OSError):
            write_status(opts, status)
        return EXIT_BROKEN
    failed = [f for f in status.get("failed", []) if f.get("version") != new_version]
    failed.append({"version": new_version, "sha256": status.get("bundle_sha256"), "at": utc_stamp()})
    state = "rolled-back" if restarted else "broken"
    status.update(state=state, active=prev, detail=why, failed=failed, at=utc_stamp())
    write_status(opts, status)
    say(
        f"{new_version} failed its health check ({why}); rolled back to {prev_version} in slot {prev}; "
        + "; ".join(notes)
    )
    return EXIT_ROLLED_BACK if restarted else EXIT_BROKEN


def recover(opts: Options) -> int | None:
    """An update cut off between the switch and its verdict: check the release now, keep or roll back."""
    status = read_status(opts)
    if status.get("state") != "checking":
        return None
    try:
        active = active_slot(opts.layout)
    except BundleError:
        return None
    version = status.get("version", "?")
    if active != status.get("to"):
        status.update(state="interrupted", detail="cut off before the switch", at=utc_stamp())
        write_status(opts, status)
        say(f"the update to {version} was cut off before the switch; {status.get('from_version')} stays")
        return None
    say(f"the update to {version} was cut off before its health check finished; checking it now")
    ok, what = health_check(opts, active, version)
    if ok:
        status.update(state="ok", active=active, detail=what, at=utc_stamp())
        write_status(opts, status)
        say(f"{version} passed its health check; it stays active in slot {active}")
        return None
    return roll_back(opts, status, what)


def choose_bundle(opts: Options, inbox: Path, active_version: str) -> Path | None:
    """The newest bundle in inbox newer than the active release and not failed before."""
    failed = {f.get("version") for f in read_status(opts).get("failed", [])}
    best: tuple[tuple[int, ...], Path] | None = None
    for path in sorted(inbox.glob("*.tar.gz")) if inbox.is_dir() else []:
        try:
            release = peek_manifest(path)
        except BundleError as exc:
            warn(f"skipping {path.name}: {exc}")
            continue
        key = parse_version(release.version)
        if key <= parse_version(active_version):
            continue
        if release.version in failed:
            warn(f"skipping {path.name}: {release.version} failed its health check before (name it to retry)")
            continue
        if best is None or key > best[0]:
            best = (key, path)
    return best[1] if best else None


def tidy_inbox(inbox: Path, installed: str) -> None:
    """After an install from the inbox: remove the bundles it holds of that version or older."""
    for path in sorted(inbox.glob("*.tar.gz")):
        with contextlib.suppress(BundleError, OSError):
            if parse_version(peek_manifest(path).version) <= parse_version(installed):
                path.unlink()
                say(f"removed {path} (installed or older)")


def apply(opts: Options, bundle: Path | None, inbox: Path) -> int:
    lay = opts.layout
    code = recover(opts)
    if code is not None:
        return code
    active = active_slot(lay)
    active_version = slot_version(lay, active)
    from_inbox = bundle is None
    if bundle is None:
        bundle = choose_bundle(opts, inbox, active_version)
        if bundle is None:
            say(f"nothing to do: no bundle in {inbox} is newer than the active {active_version}")
            return 0
    target = other(active)
    schema_now = db_schema(opts.db)

    def check(release: Release) -> None:
        if parse_version(release.version) <= parse_version(active_version):
            raise BundleError(f"version {release.version} is not newer than {active_version} (active)")
        if release.schema < schema_now:
            raise BundleError(
                f"{release.version} knows event log schema {release.schema}, but the log is at {schema_now}"
            )
        db_bytes = opts.db.stat().st_size if opts.db.exists() else 0
        need_space(lay.slots, release.total_bytes * 2 + db_bytes, f"{release.version} and a log backup")

    bundle_sha = sha256_file(bundle) if bundle.is_file() else None
    incoming = lay.slots / ".incoming"
    lay.slots.mkdir(parents=True, exist_ok=True)
    if incoming.exists():
        shutil.rmtree(incoming)
    incoming.mkdir(mode=0o755)
    try:
        release = read_bundle(bundle, opts.keys, check=check, dest=incoming)
    except BaseException:
        shutil.rmtree(incoming, ignore_errors=True)
        raise
    say(
        f"{bundle.name}: {release.version} verified "
        f"(signed by key {release.signed_by}, {len(release.files)} files)"
    )

    # From here the inactive slot changes; it is never switched to until its marker is written.
    slot_dir = lay.slots / target
    if slot_dir.exists() or slot_dir.is_symlink():
        old = lay.slots / f".old-{target}"
        if old.exists():
            shutil.rmtree(old)
        slot_dir.rename(old)
        incoming.rename(slot_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        incoming.rename(slot_dir)
    fsync_dir(lay.slots)
    try:
        carry_model_cache(lay.slots / active, slot_dir)
        if opts.venv:
            build_venv(slot_dir, opts.python, release.version)
    except (BundleError, OSError) as exc:
        raise BundleError(f"{exc}; nothing switched (slot {target} holds an incomplete tree)") from None
    marker = {
        "version": release.version,
        "schema": release.schema,
        "bundle_sha256": bundle_sha,
        "signed_by": release.signed_by,
        "installed_at": utc_stamp(),
    }
    write_atomic(slot_dir / SLOT_MARKER, dump_json(marker), 0o644)

    backup = backup_event_log(opts.db, opts.backups, active_version)
    status = read_status(opts)
    status.update(
        state="checking",
        version=release.version,
        bundle_sha256=bundle_sha,
        to=target,
        **{"from": active},
        from_version=active_version,
        backup=str(backup) if backup else None,
        schema_before=db_schema(backup) if backup else 0,
        at=utc_stamp(),
    )
    write_status(opts, status)
    switch_symlink(lay.current, f"slots/{target}")
    if os.environ.get(CRASH_ENV) == "after-switch":
        os._exit(70)
    say(f"switched {lay.current} to slot {target} ({release.version}); running the health check")
    ok, what = health_check(opts, target, release.version)
    if not ok:
        return roll_back(opts, status, what)
    status.update(state="ok", active=target, detail=what, at=utc_stamp())
    write_status(opts, status)
    if from_inbox:
        tidy_inbox(inbox, release.version)
    say(
        f"{release.version} is active in slot {target} (health check {what}); "
        f"{active_version} stays in slot {active} for `update.py rollback`"
    )
    return 0


def rollback(opts: Options, restore_backup: bool) -> int:
    lay = opts.layout
    active = active_slot(lay)
    target = other(active)
    marker = slot_release(lay, target)
    if marker is None:
        raise BundleError(f"slot {target} holds no complete release: nothing to roll back to")
    version, active_version = str(marker["version"]), slot_version(lay, active)
    schema_now, notes = db_schema(opts.db, live=True), []
    target_schema = marker.get("schema")
    if isinstance(target_schema, int) and schema_now > target_schema:
        candidates = []
        for path in opts.backups.glob("events-*.db"):
            with contextlib.suppress(sqlite3.Error):
                if db_schema(path) <= target_schema:
                    candidates.append(path)
        if not candidates:
            raise BundleError(
                f"the event log is at schema {schema_now}, {version} knows {target_schema}, and no backup "
                f"in {opts.backups} is old enough: {version} could not open it"
            )
        newest = max(candidates, key=lambda p: p.stat().st_mtime)
        if not restore_backup:
            raise BundleError(
                f"the event log is at schema {schema_now}, {version} knows {target_schema}: pass "
                f"--restore-backup to restore {newest.name} (what was recorded since it is lost)"
            )
        sqlite_copy(newest, opts.db)
        notes.append(f"event log restored from {newest}")
    switch_symlink(lay.current, f"slots/{target}")
    ok, what = restart(opts, target, version)
    status = read_status(opts)
    status.update(state="rolled-back-by-hand", active=target, version=version, at=utc_stamp(), detail=what)
    write_status(opts, status)
    say(
        f"rolled back from {active_version} (slot {active}) to {version} (slot {target}); "
        + "; ".join(notes or ["event log untouched"])
    )
    if not ok:
        warn(f"restarting {version} failed: {what}")
        return EXIT_REFUSED
    return 0


def show_status(opts: Options, as_json: bool) -> int:
    lay = opts.layout
    info: dict[str, Any] = {"root": str(lay.root)}
    try:
        active = active_slot(lay)
        info["active"] = {"slot": active, "version": slot_version(lay, active)}
        standby = slot_release(lay, other(active))
        info["standby"] = {"slot": other(active), "version": standby["version"]} if standby else None
    except BundleError as exc:
        info["active"], info["error"] = None, str(exc)
    info["event_log_schema"] = db_schema(opts.db) if opts.db.exists() else None
    info["backups"] = (
        sorted(p.name for p in opts.backups.glob("events-*.db")) if opts.backups.is_dir() else []
    )
    keys, _ = trusted_keys(opts.keys)
    info["trusted_keys"] = sorted(keys)
    info["last_update"] = read_status(opts) or None
    if as_json:
        print(json.dumps(info, indent=1, sort_keys=True))
        return 0
    if info["active"] is None:
        print(f"active:  none ({info['error']})")
    else:
        print(f"active:  slot {info['active']['slot']}, {info['active']['version']}")
        sb = info["standby"]
        print(f"standby: slot {sb['slot']}, {sb['version']} (rollback target)" if sb else "standby: none")
    last = info["last_update"]
    if last:
        print(
            f"last update: {last.get('version')} {last.get('state')} at {last.get('at')}: "
            f"{last.get('detail')}"
        )
    print(f"event log: schema {info['event_log_schema']}, {len(info['backups'])} backups in {opts.backups}")
    print(f"trusted keys: {', '.join(info['trusted_keys']) or 'none'} ({opts.keys})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="update.py", description=__doc__.splitlines()[0])
    parser.add_argument("--root", help="prefix of every device path (default: / or $REFLEX_EDGE_ROOT)")
    parser.add_argument("--data", type=Path, help="data folder (default: ROOT/var/lib/reflex-edge)")
    parser.add_argument("--keys", type=Path, help="trusted keys (default: ROOT/etc/reflex-edge/update-keys)")
    parser.add_argument(
        "--restart-cmd",
        default=DEFAULT_RESTART,
        help=f"after a switch (default: {DEFAULT_RESTART}; '' for none)",
    )
    parser.add_argument("--restart-timeout", type=float, default=180.0)
    sub = parser.add_subparsers(dest="command", required=True)
    ap = sub.add_parser("apply", help="install a bundle (or the newest in --from DIR)")
    ap.add_argument("bundle", nargs="?", type=Path)
    ap.add_argument(
        "--from",
        dest="inbox",
        type=Path,
        help="folder of bundles (default: ROOT/var/lib/reflex-edge/updates)",
    )
    ap.add_argument(
        "--health-cmd",
        default=DEFAULT_HEALTH,
        help=f"health check after the switch (default: {DEFAULT_HEALTH}; placeholders {{slot}} "
        "{current} {etc} {data} {root} {version}; '' for none)",
    )
    ap.add_argument("--health-timeout", type=float, default=300.0, help="seconds (default 300)")
    ap.add_argument(
        "--python", default="/usr/bin/python3", help="interpreter the slot's virtualenv is made from"
    )
    ap.add_argument("--no-venv", action="store_true", help="do not build the slot's virtualenv (tests)")
    rb = sub.add_parser("rollback", help="switch back to the standby slot")
    rb.add_argument(
        "--restore-backup",
        action="store_true",
        help="restore the event log when the standby release cannot read it",
    )
    st = sub.add_parser("status", help="what is installed, the last update, backups, keys")
    st.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    layout = Layout.from_option(args.root)
    opts = Options(
        layout=layout,
        data=args.data or layout.data,
        keys=args.keys or layout.keys,
        health=getattr(args, "health_cmd", ""),
        health_timeout=getattr(args, "health_timeout", 0.0),
        restart=args.restart_cmd,
        restart_timeout=args.restart_timeout,
        python=getattr(args, "python", ""),
        venv=not getattr(args, "no_venv", True),
    )
    try:
        if args.command == "status":
            return show_status(opts, args.json)
        layout.lock.parent.mkdir(parents=True, exist_ok=True)
        with open(layout.lock, "a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise BundleError(f"another update is running (lock {layout.lock})") from None
            if args.command == "rollback":
                return rollback(opts, args.restore_backup)
            return apply(opts, args.bundle, args.inbox or layout.updates)
    except BundleError as exc:
        warn(str(exc))
        return EXIT_REFUSED
    except (OSError, sqlite3.Error) as exc:
        warn(f"failed: {exc}")
        return EXIT_REFUSED


if __name__ == "__main__":
    sys.exit(main())

"""What the device scripts and the laptop tools share: the device layout, bundle members, hashes,
versions, ed25519 keys and signatures, atomic writes and reproducible tarballs.

Standard library and `cryptography` only (no `edge` import): `firmware/update.py` uses this module, and
it must keep working when the release it replaces is broken.
"""

from __future__ import annotations

import ast
import base64
import contextlib
import gzip
import hashlib
import io
import json
import os
import re
import secrets
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

ROOT_ENV = "REFLEX_EDGE_ROOT"
"""Prefix of every device path (tests, image building); the --root option of the scripts overrides it."""

MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
RELEASE_PREFIX = "release/"
"""Update bundles: manifest.json, then manifest.sig, then every release file as release/<path>."""
MAX_MANIFEST_BYTES = 16 * 1024 * 1024
MAX_SIGNATURE_BYTES = 4096
SLOT_MARKER = ".reflex-release.json"
"""Written into a slot last, once its tree (and virtualenv) is complete: a slot without it is never
switched to. Holds the release's version and event log schema."""
RESERVED = (SLOT_MARKER, ".venv", ".git")
"""Top-level names a release tree may not carry (the slot's own marker and virtualenv)."""
UPDATE_KIND = "reflex-edge-update"
PROVISION_KIND = "reflex-edge-provision"
FORMAT = 1
VERSION_RE = re.compile(r"^\d+(\.\d+){0,3}$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


class BundleError(Exception):
    """A bundle, key or device state that is refused; str() is the one line to print."""


@dataclass(frozen=True)
class Layout:
    """Where everything lives on a device, under `root` (/ on a device, a tmp_path in tests)."""

    root: Path

    @classmethod
    def from_option(cls, root: str | None) -> Layout:
        return cls(Path(root or os.environ.get(ROOT_ENV) or "/"))

    def under(self, device_path: str) -> Path:
        return self.root / device_path.lstrip("/")

    @property
    def opt(self) -> Path:
        return self.under("/opt/reflex-edge")

    @property
    def slots(self) -> Path:
        return self.opt / "slots"

    @property
    def current(self) -> Path:
        """Symlink to the active slot (relative: slots/a or slots/b), replaced atomically."""
        return self.opt / "current"

    @property
    def etc(self) -> Path:
        return self.under("/etc/reflex-edge")

    @property
    def keys(self) -> Path:
        """Trusted update keys (*.pub, ed25519 PEM). Root-owned: the service user must not add one."""
        return self.etc / "update-keys"

    @property
    def data(self) -> Path:
        return self.under("/var/lib/reflex-edge")

    @property
    def updates(self) -> Path:
        return self.data / "updates"

    @property
    def backups(self) -> Path:
        return self.data / "backups"

    @property
    def status_file(self) -> Path:
        return self.data / "update-status.json"

    @property
    def lock(self) -> Path:
        """flock'ed by update.py (in the data folder: the update unit's ProtectSystem=strict leaves /run
        read-only)."""
        return self.data / ".update.lock"

    @property
    def boot_bundle(self) -> Path:
        return self.under("/boot/reflex-provision.tar.gz")


# -- hashes, paths, versions -------------------------------------------------------------------------


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_relpath(path: str, what: str = "path") -> str:
    """A relative POSIX path that stays where it is put: no absolute path, no `..`, no `.` or empty
    component, no backslash or control character. Returns it; raises BundleError otherwise."""
    if not isinstance(path, str) or not path:
        raise BundleError(f"{what} {path!r}: empty or not text")
    if any(ord(c) < 32 or c == "\x7f" for c in path) or "\\" in path:
        raise BundleError(f"{what} {path!r}: control character or backslash")
    if path.startswith("/"):
        raise BundleError(f"{what} {path!r}: absolute path")
    parts = path.split("/")
    if ".." in parts:
        raise BundleError(f"{what} {path!r}: '..' leaves the release tree")
    if any(p in ("", ".") for p in parts):
        raise BundleError(f"{what} {path!r}: not a normalised path")
    return path


def parse_version(version: str) -> tuple[int, ...]:
    """Dotted integers (1 to 4 of them): 0.2.0 < 0.10.0. Anything else is refused."""
    if not isinstance(version, str) or not VERSION_RE.match(version):
        raise BundleError(f"version {version!r} is not dotted numbers such as 0.2.0")
    parts = tuple(int(p) for p in version.split("."))
    return parts + (0,) * (4 - len(parts))


def pyproject_version(text: str) -> str | None:
    """[project] version of a pyproject.toml (tomllib where there is one: Python 3.11+; JetPack 6 has
    3.10, where the plain `version = "..."` line of [project] is read)."""
    try:
        import tomllib

        return tomllib.loads(text).get("project", {}).get("version")
    except ImportError:  # pragma: no cover - Python 3.10
        section = None
        for line in text.splitlines():
            stripped = line.strip()
            if stripped.startswith("["):
                section = stripped
            elif section == "[project]":
                m = re.match(r'version\s*=\s*["\']([^"\']+)["\']', stripped)
                if m:
                    return m.group(1)
        return None


def migrations_schema(text: str) -> int | None:
    """The event log schema a release writes: the highest version in `STEPS` of its
    edge/store/migrations.py, read without importing it (it may be another release's code)."""
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return None
    for node in tree.body:
        target = node.target if isinstance(node, ast.AnnAssign) else None
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
        value = getattr(node, "value", None)
        if isinstance(target, ast.Name) and target.id == "STEPS" and isinstance(value, ast.List):
            versions = [
                elt.elts[0].value
                for elt in value.elts
                if isinstance(elt, ast.Tuple) and elt.elts and isinstance(elt.elts[0], ast.Constant)
            ]
            ints = [v for v in versions if isinstance(v, int)]
            return max(ints) if ints else None
    return None


# -- files ---------------------------------------------------------------------------------------------


def fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def temp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")


TEMP_RE = re.compile(r"^\..+\.[0-9a-f]{8}\.tmp$")
"""Names temp_name() makes: what a crash between write and rename leaves behind."""


def write_atomic(
    path: Path, data: bytes, mode: int = 0o644, owner: tuple[int, int] | None = None, *, crash: bool = False
) -> None:
    """Write `data` to `path` all or nothing: a new fsynced temporary file (created with `mode`, and
    chowned to `owner` before it gets its name, so a secret is never readable by others), renamed over
    the target, the folder fsynced. `crash` (fault injection for tests) dies after the temporary file
    is written and before the rename, like a power cut would."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            if owner is not None:
                os.fchown(fh.fileno(), *owner)
            os.fchmod(fh.fileno(), mode)  # the umask does not narrow it: the mode is exactly `mode`
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if crash:
            os._exit(70)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def switch_symlink(link: Path, target: str) -> None:
    """Point `link` at `target` atomically: a new symlink renamed over the old one (rename(2) is
    atomic, so a reader sees the old or the new slot, never none)."""
    tmp = temp_name(link)
    os.symlink(target, tmp)
    try:
        os.replace(tmp, link)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(link.parent)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def dump_json(data: Any) -> bytes:
    """Canonical JSON: sorted keys, fixed separators, one trailing newline (stable bytes)."""
    return (json.dumps(data, indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode()


# -- tarballs ------------------------------------------------------------------------------------------


@contextlib.contextmanager
def reproducible_tar(out: IO[bytes]) -> Iterator[tarfile.TarFile]:
    """A gzip'ed tar whose bytes depend only on what is added (mtime 0, uid/gid 0, no names)."""
    with (
        gzip.GzipFile(fileobj=out, mode="wb", mtime=0, filename="") as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        yield tar


def add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


def open_bundle(path: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(path, mode="r|gz")
    except FileNotFoundError:
        raise BundleError(f"{path}: no such bundle") from None
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise BundleError(f"{path}: not a gzip'ed tar bundle ({exc})") from None


def member_kind(member: tarfile.TarInfo) -> str:
    if member.issym():
        return f"a symlink (to {member.linkname!r})"
    if member.islnk():
        return f"a hard link (to {member.linkname!r})"
    if member.isdir():
        return "a folder"
    if member.isfile():
        return "a file"
    return "a device, fifo or other special file"


def read_member(tar: tarfile.TarFile, member: tarfile.TarInfo, limit: int) -> bytes:
    if not member.isfile():
        raise BundleError(f"bundle member {member.name!r} is {member_kind(member)}, not a file")
    if member.size > limit:
        raise BundleError(f"bundle member {member.name!r} is {member.size} bytes, more than {limit}")
    fh = tar.extractfile(member)
    assert fh is not None
    return fh.read()


# -- keys and signatures -------------------------------------------------------------------------------


def key_id(public_key: Ed25519PublicKey) -> str:
    """16 hex digits of the sha256 of the raw public key: how keys are named in messages."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return sha256_bytes(raw)[:16]


def public_pem(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_public_key(data: bytes, source: str) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise BundleError(f"{source}: not a PEM public key ({exc})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise BundleError(f"{source}: not an ed25519 public key")
    return key


def load_private_key(data: bytes, source: str, passphrase: bytes | None) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(data, password=passphrase)
    except TypeError as exc:  # encrypted without a passphrase, or a passphrase for a plain key
        raise BundleError(f"{source}: {exc}") from None
    except ValueError as exc:
        raise BundleError(f"{source}: cannot load the private key (wrong passphrase?): {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise BundleError(f"{source}: not an ed25519 private key")
    return key


def trusted_keys(folder: Path) -> tuple[dict[str, Ed25519PublicKey], list[str]]:
    """The keys in folder/*.pub by key id, and one warning line per file that is not a key."""
    keys: dict[str, Ed25519PublicKey] = {}
    warnings: list[str] = []
    for path in sorted(folder.glob("*.pub")) if folder.is_dir() else []:
        try:
            key = load_public_key(path.read_bytes(), str(path))
        except (BundleError, OSError) as exc:
            warnings.append(f"ignoring {path}: {exc}")
            continue
        keys[key_id(key)] = key
    return keys, warnings


def sign(manifest: bytes, private_key: Ed25519PrivateKey) -> bytes:
    """manifest.sig: one line `ed25519 <key id> <base64 signature of the manifest's exact bytes>`."""
    sig = base64.b64encode(private_key.sign(manifest)).decode()
    return f"ed25519 {key_id(private_key.public_key())} {sig}\n".encode()


def verify_signature(manifest: bytes, signature: bytes, keys: dict[str, Ed25519PublicKey], where: str) -> str:
    """The id of the trusted key whose signature `signature` is over `manifest`; BundleError naming
    what is wrong otherwise (no keys, a key nobody trusts, a signature that does not verify)."""
    if not keys:
        raise BundleError(f"no trusted update keys in {where} (provisioning puts them there)")
    try:
        algorithm, claimed, b64 = signature.decode("ascii").split()
        raw = base64.b64decode(b64, validate=True)
    except (UnicodeDecodeError, ValueError):
        raise BundleError("bad signature: manifest.sig is not `ed25519 KEYID SIGNATURE`") from None
    if algorithm != "ed25519":
        raise BundleError(f"bad signature: algorithm {algorithm!r}, expected ed25519")
    for kid, key in keys.items():
        try:
            key.verify(raw, manifest)
        except InvalidSignature:
            continue
        return kid
    if claimed in keys:
        raise BundleError(
            f"bad signature: manifest.sig does not verify with trusted key {claimed} "
            "(the manifest or the signature was changed after signing)"
        )
    raise BundleError(
        f"bad signature: signed by no trusted key (it names key {claimed}; "
        f"trusted: {', '.join(sorted(keys))})"
    )

"""Users and API tokens of the admin page, on top of the event log's tables.

Passwords are argon2id hashes (argon2-cffi defaults; a stored hash made with older parameters is
rehashed on the next good login). API tokens are `secrets.token_urlsafe(32)`: 256 random bits, shown
once and kept as their sha256 only. A fast hash is right for a token (nothing to brute-force in 2^256)
while argon2 is for passwords people choose. Every account change writes one audit row saying who,
what and from where, so the audit log answers "who gave Bob admin?".
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import threading
import unicodedata
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from edge.store import EventLog
from edge.store.snapshots import write_atomic

log = logging.getLogger("edge.admin")

ROLES = ("admin", "viewer")
MIN_PASSWORD = 10
MAX_PASSWORD = 1024
"""Long enough for any passphrase or manager-made password; short enough that hashing it is no DoS."""
MAX_NAME = 64
SETUP_CODE_FILE = "setup-code"
"""Under <data_dir>/admin: the one-time code /setup asks for when the page listens beyond loopback."""


class AccountError(ValueError):
    """An account change that cannot be made, in one line; `status` is the HTTP status to answer."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def check_name(name: str, what: str = "user name") -> str:
    """Any printable text is a valid name (it is always shown escaped), but no control characters,
    no surrounding spaces, at most 64 characters: names appear in logs and the audit table."""
    if not isinstance(name, str) or not name.strip():
        raise AccountError(f"{what} is empty")
    if name != name.strip():
        raise AccountError(f"{what} must not start or end with a space")
    if len(name) > MAX_NAME:
        raise AccountError(f"{what} is longer than {MAX_NAME} characters")
    if any(unicodedata.category(c).startswith("C") for c in name):
        raise AccountError(f"{what} contains a control character")
    return name


def check_password(password: str, again: str | None = None) -> str:
    if not isinstance(password, str) or len(password) < MIN_PASSWORD:
        raise AccountError(f"the password needs at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise AccountError(f"the password is longer than {MAX_PASSWORD} characters")
    if again is not None and again != password:
        raise AccountError("the two passwords differ")
    return password


def check_role(role: str) -> str:
    if role not in ROLES:
        raise AccountError(f"unknown role {role!r} (expected one of {', '.join(ROLES)})")
    return role


class Accounts:
    """Users and tokens. One per app; thread-safe (cheroot serves requests on many threads)."""

    def __init__(self, events: EventLog) -> None:
        self.events = events
        self.hasher = PasswordHasher()
        self._dummy = self.hasher.hash(secrets.token_urlsafe(16))
        """Verified against when the user name is unknown, so a login takes as long either way and
        the timing does not tell which names exist."""
        self._lock = threading.Lock()
        self._has_users = False
        self.setup_code: str | None = None
        """Asked for by /setup while set (`require_setup_code`); gone with the first account."""
        self.setup_code_file: Path | None = None

    # -- users -------------------------------------------------------------------------------------

    def has_users(self) -> bool:
        """Whether the first admin exists. Cached once true: the last admin cannot be removed, so it
        stays true, and this is asked on every request."""
        if not self._has_users:
            self._has_users = self.events.user_count() > 0
        return self._has_users

    def users(self) -> list[dict[str, Any]]:
        return [self._public_user(u) for u in self.events.users()]

    def user(self, name: str) -> dict[str, Any] | None:
        return self.events.user(name)

    def require_setup_code(self, folder: Path) -> str | None:
        """A page that others on the network can reach must not give its first admin account to
        whoever comes first: while there is no account, /setup also asks for a one-time code that only
        someone who can read the appliance's log (or this file) knows. Returns the code (None: there
        is an account already)."""
        if self.has_users():
            return None
        self.setup_code = "-".join(secrets.token_hex(2) for _ in range(3))
        self.setup_code_file = folder / SETUP_CODE_FILE
        write_atomic(self.setup_code_file, f"{self.setup_code}\n".encode(), mode=0o600)
        return self.setup_code

    def setup_code_ok(self, code: str) -> bool:
        if self.setup_code is None:
            return True
        return hmac.compare_digest(code.strip().lower().encode(), self.setup_code.encode())

    def create_first_admin(self, name: str, password: str, again: str, *, remote: str | None) -> None:
        """The account made on the first visit (/setup). Refused once any user exists, also when two
        browsers race for it."""
        check_name(name)
        check_password(password, again)
        with self._lock:
            if self.has_users():
                raise AccountError("the admin account exists already", 404)
            self.events.add_user(name, self.hasher.hash(password), "admin")
            self._has_users = True
            self.events.audit(f"user:{name}", "user.setup", {"user": name, "role": "admin"}, remote)
            if self.setup_code_file is not None:
                self.setup_code_file.unlink(missing_ok=True)
            self.setup_code = self.setup_code_file = None
        log.info("admin page: first admin %r created from %s", name, remote)

    def verify(self, name: str, password: str) -> dict[str, Any] | None:
        """The user when the password is right, else None. Rehashes a hash made with older argon2
        parameters (stronger defaults of a newer argon2-cffi take effect at the next login)."""
        row = self.events.user(name) if isinstance(name, str) and name else None
        stored = row["password_hash"] if row else self._dummy
        try:
            self.hasher.verify(stored, password[:MAX_PASSWORD])
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return None
        if row is None:
            return None
        if self.hasher.check_needs_rehash(stored):
            self.events.set_password(name, self.hasher.hash(password))
            log.info("admin page: password hash of %r upgraded to the current argon2 parameters", name)
        return row

    def add_user(self, name: str, password: str, role: str, *, by: str, remote: str | None) -> None:
        check_name(name)
        check_password(password)
        check_role(role)
        with self._lock:
            if not self.events.add_user(name, self.hasher.hash(password), role):
                raise AccountError(f"a user named {name!r} exists already", 409)
            self.events.audit(by, "user.add", {"user": name, "role": role}, remote)

    def remove_user(self, name: str, *, by: str, remote: str | None, me: str | None = None) -> None:
        """Remove an account and revoke its tokens (the event log does both in one commit, so a user
        re-added under the name does not inherit old tokens). Refuses your own account and the last
        admin, so the page can never lock everyone out."""
        with self._lock:
            row = self._existing(name)
            if me is not None and name == me:
                raise AccountError("you cannot remove your own account")
            if row["role"] == "admin" and self._admins() <= 1:
                raise AccountError("the last admin cannot be removed")
            self.events.remove_user(name)
            self.events.audit(by, "user.remove", {"user": name, "role": row["role"]}, remote)

    def set_role(self, name: str, role: str, *, by: str, remote: str | None) -> None:
        check_role(role)
        with self._lock:
            row = self._existing(name)
            if row["role"] == role:
                return
            if row["role"] == "admin" and self._admins() <= 1:
                raise AccountError("the last admin cannot be made a viewer")
            self.events.set_role(name, role)
            self.events.audit(by, "user.role", {"user": name, "role": role, "was": row["role"]}, remote)

    def set_password(self, name: str, password: str, *, by: str, remote: str | None) -> None:
        check_password(password)
        with self._lock:
            self._existing(name)
            self.events.set_password(name, self.hasher.hash(password))
            self.events.audit(by, "user.password", {"user": name}, remote)

    def _existing(self, name: str) -> dict[str, Any]:
        row = self.events.user(name)
        if row is None:
            raise AccountError(f"no user named {name!r}", 404)
        return row

    def _admins(self) -> int:
        return sum(1 for u in self.events.users() if u["role"] == "admin")

    @staticmethod
    def _public_user(row: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in row.items() if k != "password_hash"}

    # -- tokens ------------------------------------------------------------------------------------

    def tokens(self) -> list[dict[str, Any]]:
        return self.events.tokens()

    def make_token(self, name: str, user: str, *, by: str, remote: str | None) -> dict[str, Any]:
        """A new token acting as `user` (make one for a viewer for read-only scripts). The token
        itself is in the answer and nowhere else: it cannot be shown again."""
        check_name(name, "token name")
        with self._lock:
            self._existing(user)
            token_id = secrets.token_hex(8)
            token = secrets.token_urlsafe(32)
            self.events.add_token(token_id, name, user, token_hash(token))
            self.events.audit(by, "token.add", {"token": token_id, "name": name, "user": user}, remote)
        return {"id": token_id, "name": name, "user": user, "token": token}

    def revoke_token(self, token_id: str, *, by: str, remote: str | None) -> None:
        with self._lock:
            known = {t["id"]: t for t in self.events.tokens()}
            if token_id not in known:
                raise AccountError(f"no token {token_id!r}", 404)
            self.events.revoke_token(token_id)
            detail = {"token": token_id, "name": known[token_id].get("name")}
            self.events.audit(by, "token.revoke", detail, remote)

    def resolve_token(self, token: str) -> dict[str, Any] | None:
        """The token row (id, name, user, the user's role, ...) of a valid, unrevoked token of an
        existing user, else None; notes its use (the event log writes that at most once a minute)."""
        if not token or len(token) > 256:
            return None
        row = self.events.token_by_hash(token_hash(token))
        if row is None:
            return None
        self.events.touch_token(row["id"])
        return row

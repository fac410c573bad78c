"""Serving the admin app: cheroot, optional TLS, and the files kept beside it.

cheroot (CherryPy's production WSGI server) rather than waitress: it serves https itself (the issue
wants optional TLS with a self-signed certificate made on first start) and its thread pool also
carries the server-sent event streams of the Ask page, so it gets enough threads that a few open
streams never starve the pages. No Flask development server anywhere.

Files in `<data_dir>/admin/` (folder 0700): `secret_key` (Flask's session signing key, random, made
once so sessions survive restarts) and, with `admin.tls`, `tls.crt` / `tls.key`. Secret files are
0600 and written whole (temporary file, then rename) so a crash never leaves half a key.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import secrets
import socket
import threading
from pathlib import Path

from cheroot import wsgi
from cheroot.ssl.builtin import BuiltinSSLAdapter
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from flask import Flask

from edge.store.snapshots import write_atomic

log = logging.getLogger("edge.admin")

THREADS = 16
"""Request threads. Each open SSE stream (an Ask page waiting for its answer) holds one."""
MAX_THREADS = 48
"""cheroot grows the pool up to this when every thread is busy (many phones with the Ask page open)."""
CERT_DAYS = 3650
STOPPING_KEY = "reflex_stopping"
"""app.extensions key of the threading.Event set when the server stops (edge.admin.pages reads it)."""


def _private_dir(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    return folder


def load_secret_key(folder: Path) -> bytes:
    """The Flask secret key kept in `folder/secret_key` (made on first use, 0600). Kept on disk so a
    restart does not log everyone out; random per appliance so a cookie of one is no key to another."""
    path = _private_dir(Path(folder)) / "secret_key"
    try:
        key = path.read_bytes()
        if len(key) >= 32:
            return key
        log.warning("admin page: %s is too short; making a new secret key (sessions end)", path)
    except FileNotFoundError:
        pass
    key = secrets.token_hex(32).encode()
    write_atomic(path, key, mode=0o600)
    return key


def ensure_self_signed(folder: Path) -> tuple[Path, Path]:
    """`folder/tls.crt` and `folder/tls.key`, made now when missing: an EC P-256 key (0600) and a
    self-signed certificate for 10 years naming this host, localhost and 127.0.0.1 (browsers ask to
    trust it once; what it buys over http is that nobody on the building network reads passwords)."""
    folder = _private_dir(Path(folder))
    cert_path, key_path = folder / "tls.crt", folder / "tls.key"
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path
    host = socket.gethostname() or "reflex-edge"
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host[:64])])
    loopback = x509.IPAddress(ipaddress.ip_address("127.0.0.1"))
    sans: list[x509.GeneralName] = [x509.DNSName("localhost"), loopback]
    if host != "localhost":
        sans.insert(0, x509.DNSName(host))
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CERT_DAYS))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    write_atomic(key_path, key_pem, mode=0o600)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    log.info("admin page: made a self-signed TLS certificate for %s in %s", host, cert_path)
    return cert_path, key_path


class AdminServer:
    """The admin app on cheroot, on its own thread. `start()` binds (so a taken port is an error at
    once, in the caller), `stop()` closes it; `url` is where it listens (the real port when 0 was
    asked)."""

    def __init__(
        self, app: Flask, host: str, port: int, tls: tuple[str | Path, str | Path] | None = None
    ) -> None:
        self.app = app
        self.host = host
        self.tls = tls
        self._server = wsgi.Server(
            (host, port),
            app,
            numthreads=THREADS,
            max=MAX_THREADS,
            server_name="reflex-edge",
            request_queue_size=32,
            timeout=30,
            shutdown_timeout=2,
        )
        self._server.error_log = self._error_log  # into our log, not cheroot's own stderr lines
        if tls is not None:
            cert, key = (str(p) for p in tls)
            self._server.ssl_adapter = BuiltinSSLAdapter(cert, key)
        self._thread: threading.Thread | None = None

    @staticmethod
    def _error_log(msg: str = "", level: int = logging.INFO, traceback: bool = False) -> None:
        """cheroot's complaints (a client speaking http to the https port, a dropped connection) are
        the client's problem: logged at debug, or as given when cheroot calls them errors."""
        log.log(level if level >= logging.ERROR else logging.DEBUG, "admin http: %s", msg, exc_info=traceback)

    @property
    def port(self) -> int:
        return int(self._server.bind_addr[1])

    @property
    def url(self) -> str:
        scheme = "https" if self.tls is not None else "http"
        host = self.host
        if host in ("0.0.0.0", ""):
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        if ":" in host:
            host = f"[{host}]"
        return f"{scheme}://{host}:{self.port}"

    def start(self) -> None:
        self._server.prepare()
        self._thread = threading.Thread(target=self._serve, name="admin-http", daemon=True)
        self._thread.start()
        log.info("admin page on %s", self.url)

    def _serve(self) -> None:
        try:
            self._server.serve()
        except Exception:
            log.exception("admin page server stopped")

    def stop(self) -> None:
        """Stop listening. Long streams (MJPEG, SSE) watch the app's stopping event and end at once
        rather than holding a thread until their client leaves."""
        stopping = self.app.extensions.get(STOPPING_KEY)
        if stopping is not None:
            stopping.set()
        self._server.stop()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

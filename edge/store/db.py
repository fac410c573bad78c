"""SQLite engine set-up shared by every thread of the appliance.

Why these settings:

- WAL journal: camera writer threads and readers (CLI, admin page, the MQTT publisher draining the
  outbox) never block each other; only writers queue.
- synchronous=NORMAL: in WAL mode a commit survives a process crash without an fsync per commit, which
  is what keeps an alert commit in the low milliseconds on eMMC/SD storage. The price: a power cut may
  lose the last few commits (the database itself stays consistent).
- foreign_keys=ON: SQLite leaves them off unless every connection asks.
- busy_timeout: a second process (the CLI) writing at the same moment waits instead of failing.
- auto_vacuum=INCREMENTAL and journal_size_limit: let retention hand freed pages back to the file
  system when the disk is full. SQLite honours auto_vacuum only on a new, empty file, before the
  journal mode is written.
- We emit BEGIN ourselves (the sqlite3 module's implicit transactions are switched off): writers use
  BEGIN IMMEDIATE so they take the write lock up front and wait on busy_timeout, instead of upgrading
  a read lock mid-transaction, which SQLite answers with an immediate "database is locked".
"""

from __future__ import annotations

import errno
import json
import logging
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

log = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 10_000
WAL_SIZE_LIMIT = 16 * 1024 * 1024
"""Bytes a WAL file is cut back to once checkpointed (it never shrinks by itself after a burst)."""
WRITE_OPTION = "reflex_write"
"""Execution option that makes a transaction start with BEGIN IMMEDIATE."""


class StoreError(Exception):
    """The event log could not read or write (full disk, read-only file system, broken database).

    str() is one line meant for the log; the caller logs it and keeps running.
    """


def _json_default(value: object) -> Any:
    """Let numpy scalars/arrays from detectors through json.dumps as plain numbers and lists."""
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


dumps = partial(json.dumps, default=_json_default, separators=(",", ":"), ensure_ascii=False)
"""Compact JSON used for columns and outbox payloads."""


def _on_connect(dbapi_connection: sqlite3.Connection, _record: object) -> None:
    dbapi_connection.isolation_level = None  # BEGIN comes from _on_begin
    cur = dbapi_connection.cursor()
    try:
        cur.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA auto_vacuum = INCREMENTAL")
        mode = cur.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            log.warning(
                "event log: SQLite refused WAL mode (journal_mode=%s); writers will block readers", mode
            )
        cur.execute("PRAGMA synchronous = NORMAL")
        cur.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}")
        cur.execute("PRAGMA foreign_keys = ON")
    finally:
        cur.close()


def _on_begin(conn: Connection) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(WRITE_OPTION) else "BEGIN")


def make_engine(db_path: Path) -> Engine:
    """Engine for `db_path` with the pragmas above on every pooled connection, usable from any thread."""
    engine = create_engine(
        f"sqlite:///{db_path}",
        connect_args={"check_same_thread": False, "timeout": BUSY_TIMEOUT_MS / 1000},
        json_serializer=dumps,
    )
    event.listen(engine, "connect", _on_connect)
    event.listen(engine, "begin", _on_begin)
    return engine


def one_line(exc: BaseException) -> str:
    """The driver's own message (e.g. 'database or disk is full') without SQLAlchemy's SQL dump."""
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        exc = exc.orig
    if isinstance(exc, OSError) and exc.strerror:
        text = f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())


SQLITE_FULL = 13
_NO_SPACE = {errno.ENOSPC, errno.EDQUOT}


def is_disk_full(exc: BaseException | None) -> bool:
    """True if `exc` (a StoreError or anything it wraps) failed for lack of disk space: SQLITE_FULL
    ("database or disk is full", also what SQLite makes of ENOSPC) or an OSError ENOSPC/EDQUOT."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, DBAPIError) and exc.orig is not None:
            exc = exc.orig
        if isinstance(exc, sqlite3.Error):
            code = getattr(exc, "sqlite_errorcode", None)
            if (code is not None and code & 0xFF == SQLITE_FULL) or "database or disk is full" in str(exc):
                return True
        elif isinstance(exc, OSError) and exc.errno in _NO_SPACE:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


@contextmanager
def guard(what: str) -> Iterator[None]:
    """Turn database and file-system failures into StoreError('<what>: <reason>')."""
    try:
        yield
    except (SQLAlchemyError, sqlite3.Error, OSError) as exc:
        raise StoreError(f"{what}: {one_line(exc)}") from exc

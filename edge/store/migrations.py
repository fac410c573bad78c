"""A tiny versioned schema migration runner keyed on SQLite's `PRAGMA user_version`.

Why not Alembic: it brings Mako templates, a migration script tree and its own version table, and it
must be shipped and run on devices that update themselves unattended. The appliance has one SQLite
file and a handful of tables; an ordered list of Python steps that run inside one transaction is
enough, adds no dependency, and an update either migrates completely or not at all.

How it works:

- a new (empty) database gets the current schema from `Base.metadata.create_all` and is stamped with
  the latest version, because the models already describe the final shape;
- a database written by an older release runs every step newer than its `user_version`, in order;
- a database from a newer release is refused (no silent downgrade).

To change the schema, edit the model in `models.py` and append a step, e.g.::

    def _v2_event_note(conn: Connection) -> None:
        conn.exec_driver_sql("ALTER TABLE events ADD COLUMN note TEXT")

    STEPS = [(1, _v1_create_schema), (2, _v2_event_note)]
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Engine
from sqlalchemy.engine import Connection

from edge.store.db import WRITE_OPTION, StoreError
from edge.store.models import ApiToken, Audit, Base, Instruction, Job, Setting, User

Step = Callable[[Connection], None]


def _v1_create_schema(conn: Connection) -> None:
    Base.metadata.create_all(conn)


def _v2_outbox_channel(conn: Connection) -> None:
    """Push channels (webhook, ntfy) share the outbox with MQTT; each row says which one delivers it.
    Instructions received over MQTT are kept in their own table."""
    Instruction.__table__.create(conn)
    conn.exec_driver_sql("ALTER TABLE outbox ADD COLUMN channel VARCHAR NOT NULL DEFAULT 'mqtt'")
    conn.exec_driver_sql("DROP INDEX IF EXISTS ix_outbox_pending")
    conn.exec_driver_sql(
        "CREATE INDEX ix_outbox_pending ON outbox (channel, id) "
        "WHERE delivered_at IS NULL AND dropped_at IS NULL"
    )


def _v3_priorities_and_rule_origin(conn: Connection) -> None:
    """Outbox rows drain by priority (an alert never waits behind a large message); rules record where
    they come from, and runtime rules (admin page, instructions) live in the rules table."""
    conn.exec_driver_sql("ALTER TABLE outbox ADD COLUMN priority INTEGER NOT NULL DEFAULT 2")
    conn.exec_driver_sql("UPDATE outbox SET priority = 0 WHERE kind = 'alert'")
    conn.exec_driver_sql("UPDATE outbox SET priority = 1 WHERE kind = 'answer'")
    conn.exec_driver_sql("DROP INDEX IF EXISTS ix_outbox_pending")
    conn.exec_driver_sql(
        "CREATE INDEX ix_outbox_pending ON outbox (channel, priority, id) "
        "WHERE delivered_at IS NULL AND dropped_at IS NULL"
    )
    conn.exec_driver_sql("ALTER TABLE rules ADD COLUMN origin VARCHAR NOT NULL DEFAULT 'config'")
    conn.exec_driver_sql("ALTER TABLE rules ADD COLUMN removed_at FLOAT")


def _v4_jobs(conn: Connection) -> None:
    """Delegated (blue-loop) jobs are stored, so a restart does not forget one."""
    Job.__table__.create(conn, checkfirst=True)


def _add_column(conn: Connection, table: str, column: str, ddl: str) -> None:
    """ALTER TABLE ... ADD COLUMN, unless the column is there already: like `create(checkfirst=True)`
    for tables, a step stays safe on a file an earlier step (creating the current tables) shaped."""
    if column not in [row[1] for row in conn.exec_driver_sql(f"PRAGMA table_info({table})")]:
        conn.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN {column} {ddl}")


def _v5_admin_page(conn: Connection) -> None:
    """The admin page: its accounts, API tokens and audit log; events can be acknowledged; cameras
    added on the page live in the cameras table (their whole config, origin, soft removal)."""
    for table in (User.__table__, ApiToken.__table__, Audit.__table__):
        table.create(conn, checkfirst=True)
    _add_column(conn, "events", "acked_at", "FLOAT")
    _add_column(conn, "events", "acked_by", "VARCHAR")
    _add_column(conn, "cameras", "origin", "VARCHAR NOT NULL DEFAULT 'config'")
    _add_column(conn, "cameras", "config", "JSON")
    _add_column(conn, "cameras", "removed_at", "FLOAT")


def _v6_settings(conn: Connection) -> None:
    """Runtime settings that survive a restart: the mode (arm/disarm), who set it and when."""
    Setting.__table__.create(conn, checkfirst=True)


STEPS: list[tuple[int, Step]] = [
    (1, _v1_create_schema),
    (2, _v2_outbox_channel),
    (3, _v3_priorities_and_rule_origin),
    (4, _v4_jobs),
    (5, _v5_admin_page),
    (6, _v6_settings),
]
LATEST = STEPS[-1][0]


def user_version(conn: Connection) -> int:
    """The schema version stamped in the database header."""
    return int(conn.exec_driver_sql("PRAGMA user_version").scalar_one())


def _stamp(conn: Connection, version: int) -> None:
    conn.exec_driver_sql(f"PRAGMA user_version = {int(version)}")


def migrate(engine: Engine) -> int:
    """Bring the database to LATEST in one write transaction; returns the version it ends at.

    BEGIN IMMEDIATE makes two processes opening the same new file at once take turns, so the second
    sees the first one's stamp and does nothing.
    """
    with engine.execution_options(**{WRITE_OPTION: True}).begin() as conn:
        current = user_version(conn)
        if current > LATEST:
            raise StoreError(
                f"the event log schema is version {current}, newer than this release knows ({LATEST}); "
                "refusing to downgrade it"
            )
        if current == 0:
            _v1_create_schema(conn)
            _stamp(conn, LATEST)
            return LATEST
        for version, step in STEPS:
            if version > current:
                step(conn)
                _stamp(conn, version)
    return LATEST

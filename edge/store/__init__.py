"""The event log: SQLite (WAL) tables for events, appearances, alerts, snapshots and the MQTT outbox.

Import `EventLog` from here; the submodules are internals (schema, migrations, retention, JPEGs).
"""

from edge.store.db import StoreError
from edge.store.eventlog import EventLog, OutboxMessage
from edge.store.retention import RetentionReport

__all__ = ["EventLog", "OutboxMessage", "RetentionReport", "StoreError"]

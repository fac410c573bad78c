"""The event log: SQLite (WAL) tables for events, appearances, alerts, snapshots and the MQTT outbox.

Import `EventLog` and `DataLock` (one appliance per data folder) from here; the submodules are
internals (schema, migrations, retention, JPEGs, the disk reserve).
"""

from edge.store.db import StoreError
from edge.store.eventlog import EventLog, OutboxMessage
from edge.store.lock import DataLock
from edge.store.retention import RetentionReport

__all__ = ["DataLock", "EventLog", "OutboxMessage", "RetentionReport", "StoreError"]

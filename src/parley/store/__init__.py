"""SQLite storage of checkpoints, journals, dedup facts and results.

:class:`SqliteStore` applies the :data:`~parley.protocol.records.StoreOp` operations the state
machine emits, atomically, and reads back what a restarting node needs. See
:mod:`parley.store.schema` for the tables and :mod:`parley.store.sqlite` for the rules.
"""

from parley.store.connection import classify_sqlite_error, copy_database
from parley.store.maintenance import (
    BackupError,
    StoreCheck,
    backup_database,
    check_database,
    require_known_schema,
)
from parley.store.rows import FlowSummary, StoredFlow, StoredResult
from parley.store.schema import SchemaVersionError
from parley.store.sqlite import SqliteStore

__all__ = [
    "BackupError",
    "FlowSummary",
    "SchemaVersionError",
    "SqliteStore",
    "StoreCheck",
    "StoredFlow",
    "StoredResult",
    "backup_database",
    "check_database",
    "classify_sqlite_error",
    "copy_database",
    "require_known_schema",
]

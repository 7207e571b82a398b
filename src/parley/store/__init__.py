"""SQLite storage of checkpoints, journals, dedup facts and results.

:class:`SqliteStore` applies the :data:`~parley.protocol.records.StoreOp` operations the state
machine emits, atomically, and reads back what a restarting node needs. See
:mod:`parley.store.schema` for the tables and :mod:`parley.store.sqlite` for the rules.
"""

from parley.store.connection import classify_sqlite_error, copy_database
from parley.store.rows import FlowSummary, StoredFlow, StoredResult
from parley.store.schema import SchemaVersionError
from parley.store.sqlite import SqliteStore

__all__ = [
    "FlowSummary",
    "SchemaVersionError",
    "SqliteStore",
    "StoredFlow",
    "StoredResult",
    "classify_sqlite_error",
    "copy_database",
]

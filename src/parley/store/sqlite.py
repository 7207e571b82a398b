"""The node's SQLite store: checkpoints, journals, dedup facts, results and the flows' own tables.

SQLite itself is reached through :mod:`parley.store.connection`, the one module that imports
:mod:`sqlite3`.

Rules:

* One :class:`SqliteStore` owns one connection, used only by the thread that opened it (the
  persistence actor). Every write transaction starts with ``BEGIN IMMEDIATE``: it takes the write
  lock up front and waits up to ``busy_timeout`` for it, instead of failing at once on a stale
  snapshot as a deferred transaction that reads first would.
* :meth:`SqliteStore.commit` writes a batch of operations atomically. On any error it rolls back
  and re-raises the original exception (``ValueError`` for what the store refuses, SQLite's own
  errors otherwise); :func:`classify_sqlite_error` tells the flow hospital which ones are worth a
  retry.
* :meth:`SqliteStore.commit_group` writes many batches in one transaction (one fsync), each inside
  its own savepoint, so a failing batch is rolled back alone and the others still commit.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from contextlib import suppress
from types import TracebackType
from typing import Self

from parley.protocol.records import FlowStatus, PutAdmission, PutSchedule, StartKind, StoreOp
from parley.store import migrations, schema
from parley.store.connection import (
    SQLITE_READONLY,
    Connection,
    OperationalError,
    SqliteError,
    connect,
    split_script,
)
from parley.store.ops import apply_op, first_keyword, validate_ops
from parley.store.rows import FlowSummary, StoredFlow, StoredResult

__all__ = ["SqliteStore"]

SYNCHRONOUS_LEVELS = frozenset({"FULL", "NORMAL", "OFF"})
#: Statements :meth:`SqliteStore.query` accepts.
QUERY_KEYWORDS = frozenset({"SELECT", "WITH"})


class SqliteStore:
    """The checkpoint store of one node, on one SQLite file (or ``":memory:"``).

    Args:
        path: The database file, created if missing; ``":memory:"`` for a private in-memory one.
        synchronous: ``"FULL"`` (default), ``"NORMAL"`` or ``"OFF"``; see
            :func:`~parley.store.connection.connect`.
        busy_timeout: Seconds to wait for another connection's write lock.
        readonly: Open the file with ``mode=ro``: reads only, no migrations.

    Raises:
        ValueError: An unknown ``synchronous`` level, a negative timeout, or a read-only
            in-memory database.
        SchemaVersionError: The file's schema is newer than this code, or (read-only) older.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: str = "FULL",
        busy_timeout: float = 5.0,
        readonly: bool = False,
    ) -> None:
        level = synchronous.upper()
        if level not in SYNCHRONOUS_LEVELS:
            raise ValueError(f"synchronous must be one of {sorted(SYNCHRONOUS_LEVELS)}: {level!r}")
        if busy_timeout < 0:
            raise ValueError(f"busy_timeout must not be negative: {busy_timeout}")
        self.path = os.fspath(path)
        self.readonly = readonly
        self._conn = connect(
            self.path, synchronous=level, busy_timeout=busy_timeout, readonly=readonly
        )
        try:
            migrations.migrate(
                self._conn, [list(split_script(s)) for s in schema.MIGRATIONS], readonly=readonly
            )
        except BaseException:
            self._conn.close()
            raise
        self._closed = False

    # --------------------------------------------------------------------------------------------
    # Writes
    # --------------------------------------------------------------------------------------------

    def commit(self, ops: Sequence[StoreOp]) -> None:
        """Apply ``ops`` in one transaction, or none of them.

        Raises:
            ValueError: An operation the store refuses (client id too long, journal gap, ...).
            SqliteError: From SQLite, unchanged (see :func:`classify_sqlite_error`).
        """
        validate_ops(ops)
        if not ops:
            return
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            now = time.time()
            for op in ops:
                apply_op(conn, op, now)
            conn.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise

    def commit_group(self, batches: Sequence[Sequence[StoreOp]]) -> list[BaseException | None]:
        """Apply many batches in one transaction; return, per batch, ``None`` or its error.

        Each batch runs in a savepoint: a failing batch is rolled back alone and the others
        commit together (one fsync). If the transaction as a whole fails (``COMMIT`` refused, or
        SQLite rolled everything back), each remaining batch is retried in its own transaction.
        If the write lock cannot be taken at all, every batch gets that error.
        """
        results: list[BaseException | None] = [None] * len(batches)
        pending: list[int] = []
        for i, batch in enumerate(batches):
            try:
                validate_ops(batch)
            except ValueError as exc:
                results[i] = exc
                continue
            if batch:
                pending.append(i)
        if not pending:
            return results
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
        except SqliteError as exc:
            for i in pending:
                results[i] = exc
            return results
        try:
            now = time.time()
            for i in pending:
                results[i] = self._apply_in_savepoint(batches[i], now)
            conn.execute("COMMIT")
        except Exception:
            self._rollback()
            for i in pending:
                if results[i] is None:
                    results[i] = self._commit_alone(batches[i])
        except BaseException:
            self._rollback()
            raise
        return results

    def _apply_in_savepoint(self, batch: Sequence[StoreOp], now: float) -> Exception | None:
        conn = self._conn
        conn.execute("SAVEPOINT batch")
        try:
            for op in batch:
                apply_op(conn, op, now)
        except Exception as exc:
            if not conn.in_transaction:
                # SQLite rolled back the whole transaction (disk full, I/O error, ...).
                raise _GroupAborted from exc
            conn.execute("ROLLBACK TO batch")
            conn.execute("RELEASE batch")
            return exc
        conn.execute("RELEASE batch")
        return None

    def _commit_alone(self, batch: Sequence[StoreOp]) -> BaseException | None:
        try:
            self.commit(batch)
        except Exception as exc:
            return exc
        return None

    def _rollback(self) -> None:
        # A failed ROLLBACK must not hide the error that caused it (SQLite may already have
        # rolled back on its own).
        if self._conn.in_transaction:
            with suppress(SqliteError):
                self._conn.execute("ROLLBACK")

    def apply_app_migrations(self, app: str, scripts: Sequence[str]) -> int:
        """Apply an app's migration scripts not applied yet; return how many were applied.

        Script ``i`` is recorded as ``(app, i)`` in ``app_migrations``; each one runs in its own
        transaction. Never edit or reorder released scripts: append new ones.
        """
        if not app:
            raise ValueError("an app needs a name to track its migrations")
        return migrations.apply_app(self._conn, app, [list(split_script(s)) for s in scripts])

    # --------------------------------------------------------------------------------------------
    # Reads
    # --------------------------------------------------------------------------------------------

    def load_flow(self, flow_id: str) -> StoredFlow | None:
        """The flow's start record, header and journal; ``None`` if it has no start row."""
        with _ReadSnapshot(self._conn):
            row = self._conn.execute(schema.SELECT_FLOW, (flow_id,)).fetchone()
            if row is None:
                return None
            journal = [e for (e,) in self._conn.execute(schema.SELECT_JOURNAL, (flow_id,))]
        (flow_class, kind, args, started_by, client_id, status, header, suspends, pending, step) = (
            row
        )
        return StoredFlow(
            flow_id=flow_id,
            flow_class=flow_class,
            kind=StartKind(kind),
            args=args,
            started_by=started_by,
            client_id=client_id,
            status=FlowStatus(status) if status is not None else FlowStatus.RUNNABLE,
            header=header,
            journal=journal,
            suspends=suspends if suspends is not None else 0,
            pending_request=pending,
            progress_step=step,
        )

    def held_inits(self) -> list[tuple[str, bytes]]:
        """Session-inits held for observation: ``(responder flow id, encoded envelope)``."""
        return [(str(f), bytes(e)) for f, e in self._conn.execute(schema.SELECT_HELD_INITS)]

    def schedules(self) -> list[PutSchedule]:
        """The stored schedules, by name."""
        return [
            PutSchedule(name, flow_class, args, next_at, every, missed)
            for name, flow_class, args, next_at, every, missed in self._conn.execute(
                schema.SELECT_SCHEDULES
            )
        ]

    def admissions(self, flow_id: str | None = None) -> list[PutAdmission]:
        """The hospital's stored admissions of ``flow_id`` (or of every flow), oldest first."""
        rows = self._conn.execute(schema.SELECT_ADMISSIONS, {"flow_id": flow_id})
        return [
            PutAdmission(
                flow_id=row[0],
                admitted_at=row[1],
                flow_class=row[2],
                suspends=row[3],
                error_type=row[4],
                message=row[5],
                traceback=row[6],
                causes=tuple(json.loads(row[7])),
                staff=row[8],
                outcome=row[9],
                attempt=row[10],
                retry_in=row[11],
            )
            for row in rows
        ]

    def next_signal(self, flow_id: str, name: str) -> tuple[int, bytes] | None:
        """The oldest stored signal ``name`` of the flow: ``(its row id, payload)``, or None."""
        row = self._conn.execute(schema.SELECT_NEXT_SIGNAL, (flow_id, name)).fetchone()
        return None if row is None else (int(row[0]), bytes(row[1]))

    def map_entries(self) -> list[bytes]:
        """The signed network map entries kept by :class:`~parley.protocol.records.PutMapEntry`."""
        return [entry for (entry,) in self._conn.execute(schema.SELECT_MAP_ENTRIES)]

    def runnable_flow_ids(self) -> list[str]:
        """Ids of the flows to restart (``RUNNABLE`` or ``HOSPITALIZED``), in start order."""
        return [fid for (fid,) in self._conn.execute(schema.SELECT_RUNNABLE)]

    def processed_init(self, sender: str, initiator_session: str) -> str | None:
        """The id of the flow that consumed this session-init, or ``None``."""
        row = self._conn.execute(schema.SELECT_PROCESSED_INIT, (sender, initiator_session))
        found = row.fetchone()
        return None if found is None else str(found[0])

    def flow_for_client_id(self, client_id: str) -> tuple[str, FlowStatus] | None:
        """The flow holding ``client_id`` (finished first, else running) and its status."""
        row = self._conn.execute(schema.SELECT_FLOW_FOR_CLIENT_ID, {"client_id": client_id})
        found = row.fetchone()
        return None if found is None else (str(found[0]), FlowStatus(found[1]))

    def client_id_of_result(self, flow_id: str) -> str | None:
        """The client id of a finished flow whose outcome is kept, or ``None``."""
        found = self._conn.execute(schema.SELECT_CLIENT_ID_OF_RESULT, (flow_id,)).fetchone()
        return None if found is None else str(found[0])

    def flow_result(self, client_id: str) -> StoredResult | None:
        """The stored outcome of the finished flow started with ``client_id``, or ``None``."""
        found = self._conn.execute(schema.SELECT_RESULT, (client_id,)).fetchone()
        if found is None:
            return None
        flow_id, client, status, value, error, flow_class, args = found
        return StoredResult(flow_id, client, FlowStatus(status), value, error, flow_class, args)

    def list_flows(self, status: FlowStatus | None = None, limit: int = 1000) -> list[FlowSummary]:
        """Stored and finished flows for operators, oldest first, optionally of one status."""
        if limit < 0:
            raise ValueError(f"limit must not be negative: {limit}")
        params = {"status": None if status is None else status.value, "limit": limit}
        return [
            FlowSummary(fid, cls, FlowStatus(st), susp, pend, step, client, created, updated)
            for (fid, cls, st, susp, pend, step, client, created, updated) in self._conn.execute(
                schema.SELECT_SUMMARIES, params
            )
        ]

    def query(self, sql: str, params: Sequence[object] = ()) -> list[tuple[object, ...]]:
        """Run one read-only ``SELECT``/``WITH`` statement for a flow's own data.

        Raises:
            ValueError: ``sql`` is not a ``SELECT``/``WITH`` statement, or it tries to write.
        """
        if first_keyword(sql) not in QUERY_KEYWORDS:
            raise ValueError(f"query() runs SELECT or WITH statements only: {sql!r}")
        conn = self._conn
        guard = not self.readonly and not conn.in_transaction
        if guard:
            # The connection refuses writes while the query runs (a WITH may hide a DELETE).
            conn.execute("PRAGMA query_only = ON")
        try:
            cursor = conn.execute(sql, tuple(params))
            if cursor.description is None:
                raise ValueError(f"query() statement returns no rows: {sql!r}")
            return [tuple(row) for row in cursor.fetchall()]
        except OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF == SQLITE_READONLY:
                raise ValueError(f"query() statements must not write: {sql!r}") from exc
            raise
        finally:
            if guard:
                conn.execute("PRAGMA query_only = OFF")

    # --------------------------------------------------------------------------------------------
    # Lifecycle
    # --------------------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection (idempotent)."""
        if not self._closed:
            self._closed = True
            self._rollback()
            self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        mode = " readonly" if self.readonly else ""
        return f"<SqliteStore {self.path!r}{mode}>"


class _GroupAborted(Exception):
    """SQLite rolled back a group transaction while applying one batch."""


class _ReadSnapshot:
    """A deferred read transaction: several SELECTs see one consistent snapshot."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def __enter__(self) -> None:
        self._conn.execute("BEGIN")

    def __exit__(self, *exc_info: object) -> None:
        if self._conn.in_transaction:
            self._conn.execute("COMMIT")

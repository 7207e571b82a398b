"""How each :data:`~parley.protocol.records.StoreOp` is written: one small function per operation.

:func:`validate_ops` checks what can be checked without the database and raises ``ValueError``; the
store calls it before it opens a transaction. :func:`apply_op` runs inside the caller's transaction
(or savepoint) and lets SQLite's errors through unchanged.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import assert_never

from parley.protocol.records import (
    MAX_CLIENT_ID,
    DeleteAdmissions,
    DeleteFlow,
    DeleteHeldInit,
    DeleteSchedule,
    FlowWrite,
    PutAdmission,
    PutCheckpoint,
    PutFlowResult,
    PutFlowStart,
    PutHeldInit,
    PutMapEntry,
    PutProcessedInit,
    PutSchedule,
    PutSignal,
    SetFlowStatus,
    StoreOp,
)
from parley.store import schema
from parley.store.connection import Connection

#: ``progress_step`` is truncated to this many characters (it is only shown to operators).
MAX_PROGRESS_STEP = 256
#: Statements a :class:`FlowWrite` may run: data changes only, never transaction control.
FLOW_WRITE_KEYWORDS = frozenset({"INSERT", "UPDATE", "DELETE", "REPLACE", "WITH"})

_FIRST_KEYWORD = re.compile(r"(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/)*([A-Za-z]+)", re.DOTALL)


def first_keyword(sql: str) -> str:
    """Return the first keyword of ``sql`` in upper case, skipping whitespace and comments."""
    match = _FIRST_KEYWORD.match(sql)
    return match.group(1).upper() if match else ""


def validate_ops(ops: Sequence[StoreOp]) -> None:
    """Raise ``ValueError`` for an operation the store refuses before touching the database."""
    for op in ops:
        match op:
            case PutFlowStart(client_id=client_id) | PutFlowResult(client_id=client_id):
                if client_id is not None and len(client_id) > MAX_CLIENT_ID:
                    raise ValueError(
                        f"client id of flow {op.flow_id!r} is {len(client_id)} characters long;"
                        f" at most {MAX_CLIENT_ID} are allowed"
                    )
            case PutCheckpoint(journal_start=start) if start < 0:
                raise ValueError(f"negative journal_start {start} for flow {op.flow_id!r}")
            case FlowWrite(sql=sql) if first_keyword(sql) not in FLOW_WRITE_KEYWORDS:
                raise ValueError(
                    f"a flow may only write with INSERT, UPDATE, DELETE, REPLACE or WITH: {sql!r}"
                )
            case _:
                pass


def apply_op(conn: Connection, op: StoreOp, now: float) -> None:
    """Write one operation inside the caller's transaction; ``now`` is the transaction's time."""
    match op:
        case PutFlowStart():
            _put_flow_start(conn, op, now)
        case PutCheckpoint():
            _put_checkpoint(conn, op, now)
        case SetFlowStatus():
            conn.execute(schema.UPDATE_STATUS, (op.status.value, now, op.flow_id))
        case DeleteFlow():
            for sql in schema.DELETE_FLOW:
                conn.execute(sql, (op.flow_id,))
        case PutProcessedInit():
            conn.execute(
                schema.INSERT_PROCESSED_INIT,
                (op.sender, op.initiator_session, op.flow_id, now),
            )
        case PutFlowResult():
            _put_flow_result(conn, op, now)
        case PutAdmission():
            conn.execute(
                schema.INSERT_ADMISSION,
                (
                    op.flow_id,
                    op.admitted_at,
                    op.flow_class,
                    op.suspends,
                    op.error_type,
                    op.message,
                    op.traceback,
                    json.dumps(list(op.causes)),
                    op.staff,
                    op.outcome,
                    op.attempt,
                    op.retry_in,
                ),
            )
        case DeleteAdmissions(flow_id=None):
            conn.execute(schema.DELETE_ORPHAN_ADMISSIONS)
        case DeleteAdmissions(flow_id=flow_id):
            conn.execute(schema.DELETE_ADMISSIONS, (flow_id,))
        case PutSchedule():
            conn.execute(
                schema.UPSERT_SCHEDULE,
                (op.name, op.flow_class, op.args, op.next_at, op.every, op.missed, now),
            )
        case DeleteSchedule():
            conn.execute(schema.DELETE_SCHEDULE, (op.name,))
        case PutHeldInit():
            conn.execute(schema.INSERT_HELD_INIT, (op.flow_id, op.sender, op.envelope, now))
        case DeleteHeldInit():
            conn.execute(schema.DELETE_HELD_INIT, (op.flow_id,))
        case PutSignal():
            conn.execute(schema.INSERT_SIGNAL, (op.flow_id, op.name, op.payload, now, op.flow_id))
        case PutMapEntry():
            conn.execute(schema.UPSERT_MAP_ENTRY, (op.name, op.serial, op.entry, now))
        case FlowWrite():
            conn.execute(op.sql, op.params)
        case _:
            assert_never(op)


def _put_flow_start(conn: Connection, op: PutFlowStart, now: float) -> None:
    conn.execute(
        schema.INSERT_START,
        (op.flow_id, op.flow_class, op.kind.value, op.args, op.started_by, op.client_id, now),
    )


def _put_checkpoint(conn: Connection, op: PutCheckpoint, now: float) -> None:
    row = conn.execute(schema.SELECT_JOURNAL_LEN, (op.flow_id,)).fetchone()
    stored_len: int = row[0] if row is not None else 0
    if op.journal_start > stored_len:
        raise ValueError(
            f"checkpoint of flow {op.flow_id!r} starts its journal at {op.journal_start} but only"
            f" {stored_len} entries are stored: entries would be missing (a bug upstream)"
        )
    journal_len = max(stored_len, op.journal_start + len(op.journal))
    progress_step = op.progress_step
    if progress_step is not None and len(progress_step) > MAX_PROGRESS_STEP:
        progress_step = progress_step[:MAX_PROGRESS_STEP]
    conn.execute(
        schema.UPSERT_HEADER,
        (
            op.flow_id,
            op.status.value,
            op.header,
            op.suspends,
            op.pending_request,
            progress_step,
            journal_len,
            now,
        ),
    )
    if len(op.journal) == 1:
        conn.execute(schema.INSERT_JOURNAL, (op.flow_id, op.journal_start, op.journal[0]))
    elif op.journal:
        conn.executemany(
            schema.INSERT_JOURNAL,
            [(op.flow_id, op.journal_start + i, entry) for i, entry in enumerate(op.journal)],
        )


def _put_flow_result(conn: Connection, op: PutFlowResult, now: float) -> None:
    conn.execute(
        schema.INSERT_RESULT,
        {
            "flow_id": op.flow_id,
            "client_id": op.client_id,
            "status": op.status.value,
            "value": op.value,
            "error": op.error,
            "now": now,
        },
    )

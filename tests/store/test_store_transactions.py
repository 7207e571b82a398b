"""Atomic commits, group commits with failing batches, and what survives a crash."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from parley.protocol.records import FlowStatus, PutFlowResult, PutProcessedInit, StoreOp
from parley.store import SqliteStore

from .helpers import checkpoint, start


def commits_seen(store: SqliteStore) -> list[str]:
    """Record the transaction statements the store sends from now on."""
    statements: list[str] = []
    store._conn.set_trace_callback(statements.append)
    return statements


def test_a_commit_that_fails_midway_writes_nothing_and_raises_the_original_error(
    store: SqliteStore,
) -> None:
    store.commit([PutProcessedInit("bob", "s1", "f0")])

    with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
        store.commit([start("f1"), checkpoint("f1"), PutProcessedInit("bob", "s1", "f1")])

    assert store.load_flow("f1") is None
    store.commit([start("f1"), checkpoint("f1")])  # no transaction was left open


def test_an_empty_commit_does_nothing(store: SqliteStore) -> None:
    statements = commits_seen(store)

    store.commit([])

    assert statements == []


def test_a_group_commit_writes_every_batch_in_one_transaction(store: SqliteStore) -> None:
    statements = commits_seen(store)

    errors = store.commit_group([[start(f"f{i}"), checkpoint(f"f{i}")] for i in range(5)])

    assert errors == [None] * 5
    assert statements.count("COMMIT") == 1
    assert store.runnable_flow_ids() == ["f0", "f1", "f2", "f3", "f4"]


def test_a_failing_batch_in_a_group_fails_alone_and_the_others_commit_together(
    store: SqliteStore,
) -> None:
    store.commit([start("f0"), checkpoint("f0", journal=(b"a",))])
    statements = commits_seen(store)
    batches: list[list[StoreOp]] = [
        [start("f1"), checkpoint("f1")],
        [start("bad"), checkpoint("f0", journal_start=0)],  # rewrites entry 0 of f0
        [start("f2"), checkpoint("f2")],
        [start("gap"), checkpoint("gap", journal_start=5)],
        [start("f3"), checkpoint("f3")],
    ]

    errors = store.commit_group(batches)

    assert errors[0] is None
    assert isinstance(errors[1], sqlite3.IntegrityError)
    assert errors[2] is None
    assert isinstance(errors[3], ValueError)
    assert errors[4] is None
    assert statements.count("COMMIT") == 1
    assert store.runnable_flow_ids() == ["f0", "f1", "f2", "f3"]
    flow = store.load_flow("f0")
    assert flow is not None
    assert flow.journal == [b"a"]


def test_a_batch_refused_before_the_transaction_fails_alone(store: SqliteStore) -> None:
    errors = store.commit_group(
        [[start("f1")], [start("f2", client_id="c" * 600)], [], [start("f3")]]
    )

    assert errors[0] is None
    assert isinstance(errors[1], ValueError)
    assert errors[2:] == [None, None]
    assert store.runnable_flow_ids() == ["f1", "f3"]


def test_a_group_whose_commit_fails_is_retried_batch_by_batch(store: SqliteStore) -> None:
    # The orphan checkpoint breaks a deferred foreign key: SQLite refuses the group's COMMIT.
    errors = store.commit_group([[start("f1")], [checkpoint("orphan")], [start("f2")]])

    assert errors[0] is None
    assert isinstance(errors[1], sqlite3.IntegrityError)
    assert errors[2] is None
    assert store.runnable_flow_ids() == ["f1", "f2"]
    assert store.load_flow("orphan") is None


def test_every_batch_gets_the_locked_error_when_the_write_lock_is_held(db_path: Path) -> None:
    with SqliteStore(db_path, busy_timeout=0.0) as store:
        other = sqlite3.connect(db_path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            errors = store.commit_group([[start("f1")], [start("f2")]])
        finally:
            other.execute("ROLLBACK")
            other.close()

        assert all(isinstance(e, sqlite3.OperationalError) for e in errors)
        assert store.commit_group([[start("f1")], [start("f2")]]) == [None, None]


def test_a_second_store_on_the_file_sees_committed_data_but_not_rolled_back_data(
    db_path: Path,
) -> None:
    with SqliteStore(db_path) as writer, SqliteStore(db_path) as reader:
        writer.commit([start("f1", client_id="c1"), checkpoint("f1", journal=(b"a",))])
        with pytest.raises(ValueError, match="missing"):
            writer.commit([start("f2"), checkpoint("f1", journal_start=7)])
        writer.commit_group(
            [[start("f3")], [PutFlowResult("f4", "c1", FlowStatus.FAILED, None, None)]]
        )

        assert reader.runnable_flow_ids() == ["f1", "f3"]
        assert reader.flow_result("c1") is None


def test_committed_checkpoints_survive_a_process_killed_mid_transaction(db_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import os
        from parley.protocol.records import FlowStatus, PutCheckpoint, PutFlowStart, StartKind
        from parley.store import SqliteStore

        store = SqliteStore({str(db_path)!r})
        store.commit([
            PutFlowStart("f1", "app:Flow", StartKind.RPC, b"args"),
            PutCheckpoint("f1", FlowStatus.RUNNABLE, b"h1", 0, (b"a",), 1, "receive", None),
        ])
        conn = store._conn
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("UPDATE flow_header SET header = x'00' WHERE flow_id = 'f1'")
        conn.execute("INSERT INTO journal (flow_id, idx, entry) VALUES ('f1', 1, x'01')")
        os._exit(0)  # like kill -9: no rollback, no close
        """
    )

    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)

    with SqliteStore(db_path) as store:
        flow = store.load_flow("f1")
    assert flow is not None
    assert (flow.header, flow.journal) == (b"h1", [b"a"])

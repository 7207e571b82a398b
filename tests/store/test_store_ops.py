"""What each StoreOp writes, one operation family at a time."""

from __future__ import annotations

import sqlite3

import pytest
from hypothesis import given
from hypothesis import strategies as st

from parley.protocol.records import (
    DeleteFlow,
    FlowStatus,
    FlowWrite,
    PutFlowResult,
    PutProcessedInit,
    SetFlowStatus,
    StartKind,
)
from parley.store import SqliteStore

from .helpers import checkpoint, start

APP_TABLE = ["CREATE TABLE payments (id TEXT PRIMARY KEY, amount INTEGER NOT NULL) STRICT;"]


# --- PutFlowStart ---------------------------------------------------------------------------------


def test_a_flow_with_only_a_start_row_loads_as_runnable_without_header(
    store: SqliteStore,
) -> None:
    store.commit([start("f1", client_id="c1", kind=StartKind.INITIATED)])

    flow = store.load_flow("f1")

    assert flow is not None
    assert (flow.flow_id, flow.flow_class, flow.kind) == ("f1", "app.flows:Pay", "INITIATED")
    assert (flow.args, flow.started_by, flow.client_id) == (b"args-f1", "alice", "c1")
    assert (flow.status, flow.header, flow.journal, flow.suspends) == ("RUNNABLE", None, [], 0)
    assert (flow.pending_request, flow.progress_step) == (None, None)


def test_an_unknown_flow_loads_as_none(store: SqliteStore) -> None:
    assert store.load_flow("nope") is None


def test_starting_the_same_flow_id_twice_is_an_integrity_error(store: SqliteStore) -> None:
    store.commit([start("f1")])

    with pytest.raises(sqlite3.IntegrityError):
        store.commit([start("f1")])


# --- PutCheckpoint --------------------------------------------------------------------------------


def test_checkpoints_rewrite_the_header_and_append_to_the_journal(store: SqliteStore) -> None:
    store.commit([start("f1"), checkpoint("f1", journal=(b"a", b"b"), header=b"h1")])
    store.commit(
        [
            checkpoint(
                "f1",
                journal_start=2,
                journal=(b"c",),
                header=b"h2",
                status=FlowStatus.HOSPITALIZED,
                suspends=2,
                pending_request="sleep",
                progress_step=None,
            )
        ]
    )

    flow = store.load_flow("f1")

    assert flow is not None
    assert (flow.header, flow.journal) == (b"h2", [b"a", b"b", b"c"])
    assert (flow.status, flow.suspends, flow.pending_request, flow.progress_step) == (
        "HOSPITALIZED",
        2,
        "sleep",
        None,
    )


def test_a_checkpoint_without_new_entries_rewrites_only_the_header(store: SqliteStore) -> None:
    store.commit([start("f1"), checkpoint("f1", journal=(b"a",), header=b"h1")])
    store.commit([checkpoint("f1", journal_start=1, journal=(), header=b"h2")])

    flow = store.load_flow("f1")

    assert flow is not None
    assert (flow.header, flow.journal) == (b"h2", [b"a"])


def test_a_checkpoint_leaving_a_journal_gap_is_a_value_error_and_writes_nothing(
    store: SqliteStore,
) -> None:
    store.commit([start("f1"), checkpoint("f1", journal=(b"a",), header=b"h1")])

    with pytest.raises(ValueError, match="missing"):
        store.commit([checkpoint("f1", journal_start=2, journal=(b"c",), header=b"h2")])

    flow = store.load_flow("f1")
    assert flow is not None
    assert (flow.header, flow.journal) == (b"h1", [b"a"])


def test_the_first_checkpoint_must_start_its_journal_at_zero(store: SqliteStore) -> None:
    with pytest.raises(ValueError, match="missing"):
        store.commit([start("f1"), checkpoint("f1", journal_start=1)])

    assert store.load_flow("f1") is None


def test_rewriting_a_stored_journal_entry_is_an_integrity_error(store: SqliteStore) -> None:
    store.commit([start("f1"), checkpoint("f1", journal=(b"a", b"b"), header=b"h1")])

    with pytest.raises(sqlite3.IntegrityError):
        store.commit([checkpoint("f1", journal_start=1, journal=(b"B", b"c"), header=b"h2")])

    flow = store.load_flow("f1")
    assert flow is not None
    assert (flow.header, flow.journal) == (b"h1", [b"a", b"b"])


def test_a_negative_journal_start_is_a_value_error(store: SqliteStore) -> None:
    with pytest.raises(ValueError, match="negative"):
        store.commit([start("f1"), checkpoint("f1", journal_start=-1)])


def test_progress_step_is_truncated_to_256_characters(store: SqliteStore) -> None:
    store.commit([start("f1"), checkpoint("f1", progress_step="x" * 1000)])

    flow = store.load_flow("f1")

    assert flow is not None
    assert flow.progress_step == "x" * 256


def test_a_checkpoint_of_a_flow_without_start_row_fails_at_commit(store: SqliteStore) -> None:
    with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):
        store.commit([checkpoint("ghost")])

    assert store.query("SELECT count(*) FROM flow_header") == [(0,)]


def test_start_and_first_checkpoint_may_come_in_either_order(store: SqliteStore) -> None:
    store.commit([checkpoint("f1", journal=(b"a",)), start("f1")])

    flow = store.load_flow("f1")
    assert flow is not None
    assert flow.journal == [b"a"]


@given(st.lists(st.lists(st.binary(max_size=8), max_size=4), max_size=8))
def test_the_journal_is_the_concatenation_of_every_checkpoints_entries(
    chunks: list[list[bytes]],
) -> None:
    with SqliteStore(":memory:") as store:
        store.commit([start("f1")])
        expected: list[bytes] = []
        for chunk in chunks:
            store.commit([checkpoint("f1", journal_start=len(expected), journal=tuple(chunk))])
            expected.extend(chunk)

        flow = store.load_flow("f1")

    assert flow is not None
    assert flow.journal == expected


# --- SetFlowStatus, DeleteFlow --------------------------------------------------------------------


def test_set_flow_status_changes_only_the_status(store: SqliteStore) -> None:
    store.commit([start("f1"), checkpoint("f1", journal=(b"a",), header=b"h1")])
    store.commit([SetFlowStatus("f1", FlowStatus.HOSPITALIZED)])

    flow = store.load_flow("f1")

    assert flow is not None
    assert (flow.status, flow.header, flow.journal) == ("HOSPITALIZED", b"h1", [b"a"])


def test_set_flow_status_of_a_flow_without_header_does_nothing(store: SqliteStore) -> None:
    store.commit([start("f1")])
    store.commit([SetFlowStatus("f1", FlowStatus.KILLED), SetFlowStatus("nope", FlowStatus.KILLED)])

    flow = store.load_flow("f1")
    assert flow is not None
    assert (flow.status, flow.header) == ("RUNNABLE", None)
    assert store.load_flow("nope") is None


def test_delete_flow_keeps_the_processed_init_and_the_result(store: SqliteStore) -> None:
    store.commit(
        [
            start("f1", client_id="c1"),
            checkpoint("f1", journal=(b"a", b"b")),
            PutProcessedInit("bob", "s1", "f1"),
        ]
    )
    store.commit(
        [
            PutFlowResult("f1", "c1", FlowStatus.COMPLETED, value=b"42", error=None),
            DeleteFlow("f1"),
        ]
    )

    assert store.load_flow("f1") is None
    assert store.query("SELECT count(*) FROM journal") == [(0,)]
    assert store.query("SELECT count(*) FROM flow_header") == [(0,)]
    assert store.processed_init("bob", "s1") == "f1"
    assert store.flow_for_client_id("c1") == ("f1", FlowStatus.COMPLETED)


def test_delete_flow_leaves_other_flows_alone(store: SqliteStore) -> None:
    store.commit([start("f1"), checkpoint("f1"), start("f2"), checkpoint("f2")])
    store.commit([DeleteFlow("f1")])

    flow = store.load_flow("f2")
    assert flow is not None
    assert flow.journal == [b"e0"]


# --- PutProcessedInit, PutFlowResult --------------------------------------------------------------


def test_a_processed_init_is_found_by_sender_and_initiator_session(store: SqliteStore) -> None:
    store.commit([PutProcessedInit("bob", "s1", "f1")])

    assert store.processed_init("bob", "s1") == "f1"
    assert store.processed_init("bob", "s2") is None
    assert store.processed_init("carol", "s1") is None


def test_a_duplicate_processed_init_is_an_integrity_error(store: SqliteStore) -> None:
    store.commit([PutProcessedInit("bob", "s1", "f1")])

    with pytest.raises(sqlite3.IntegrityError):
        store.commit([PutProcessedInit("bob", "s1", "f2")])

    assert store.processed_init("bob", "s1") == "f1"


def test_a_flow_result_is_found_by_its_client_id(store: SqliteStore) -> None:
    store.commit([PutFlowResult("f1", "c1", FlowStatus.FAILED, value=None, error=b"boom")])

    result = store.flow_result("c1")

    assert result is not None
    assert (result.flow_id, result.client_id, result.status) == ("f1", "c1", "FAILED")
    assert (result.value, result.error) == (None, b"boom")
    assert store.flow_result("c2") is None


def test_a_result_with_a_non_final_status_is_an_integrity_error(store: SqliteStore) -> None:
    with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
        store.commit([PutFlowResult("f1", "c1", FlowStatus.RUNNABLE, value=None, error=None)])


# --- FlowWrite ------------------------------------------------------------------------------------


def test_flow_writes_commit_with_the_checkpoint(store: SqliteStore) -> None:
    store.apply_app_migrations("payments", APP_TABLE)

    store.commit(
        [
            start("f1"),
            checkpoint("f1"),
            FlowWrite("INSERT INTO payments (id, amount) VALUES (?, ?)", ("p1", 10)),
        ]
    )

    assert store.query("SELECT id, amount FROM payments") == [("p1", 10)]


def test_flow_writes_roll_back_with_a_failed_checkpoint(store: SqliteStore) -> None:
    store.apply_app_migrations("payments", APP_TABLE)
    store.commit([start("f1"), checkpoint("f1")])

    with pytest.raises(sqlite3.IntegrityError):
        store.commit(
            [
                FlowWrite("INSERT INTO payments (id, amount) VALUES (?, ?)", ("p1", 10)),
                checkpoint("f1", journal_start=0),  # rewrites entry 0
            ]
        )

    assert store.query("SELECT count(*) FROM payments") == [(0,)]


@pytest.mark.parametrize(
    "sql",
    ["COMMIT", "BEGIN", "ROLLBACK", "SAVEPOINT x", "DROP TABLE payments", "PRAGMA user_version=9"],
)
def test_a_flow_write_that_is_not_a_data_change_is_refused(store: SqliteStore, sql: str) -> None:
    store.apply_app_migrations("payments", APP_TABLE)

    with pytest.raises(ValueError, match="may only write"):
        store.commit([start("f1"), FlowWrite(sql, ())])

    assert store.load_flow("f1") is None
    assert store.query("SELECT count(*) FROM payments") == [(0,)]

"""Client ids, restart queries, the operators' list and the flows' read-only queries."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from parley.protocol.records import DeleteFlow, FlowStatus, PutFlowResult, SetFlowStatus
from parley.store import SqliteStore

from .helpers import checkpoint, start

# --- client ids -----------------------------------------------------------------------------------


def test_two_running_flows_cannot_share_a_client_id(store: SqliteStore) -> None:
    store.commit([start("f1", client_id="c1"), checkpoint("f1")])

    with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
        store.commit([start("f2", client_id="c1"), checkpoint("f2")])

    assert store.load_flow("f2") is None


def test_a_new_flow_cannot_reuse_the_client_id_of_a_finished_flow(store: SqliteStore) -> None:
    store.commit([start("f1", client_id="c1"), checkpoint("f1")])
    store.commit([PutFlowResult("f1", "c1", FlowStatus.COMPLETED, b"v", None), DeleteFlow("f1")])

    with pytest.raises(sqlite3.IntegrityError, match="finished flow"):
        store.commit([start("f2", client_id="c1")])


def test_a_result_cannot_take_the_client_id_of_another_running_flow(store: SqliteStore) -> None:
    store.commit([start("f1", client_id="c1")])

    with pytest.raises(sqlite3.IntegrityError, match="running flow"):
        store.commit([PutFlowResult("f2", "c1", FlowStatus.COMPLETED, b"v", None)])


def test_two_results_cannot_share_a_client_id(store: SqliteStore) -> None:
    store.commit([PutFlowResult("f1", "c1", FlowStatus.COMPLETED, b"v", None)])

    with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
        store.commit([PutFlowResult("f2", "c1", FlowStatus.COMPLETED, b"v", None)])


def test_a_flows_result_may_share_the_client_id_of_its_own_start_row(store: SqliteStore) -> None:
    store.commit([start("f1", client_id="c1"), checkpoint("f1")])
    store.commit([PutFlowResult("f1", "c1", FlowStatus.KILLED, None, b"killed")])

    assert store.flow_for_client_id("c1") == ("f1", FlowStatus.KILLED)


def test_a_client_id_of_512_characters_is_accepted(store: SqliteStore) -> None:
    client_id = "c" * 512
    store.commit([start("f1", client_id=client_id)])

    assert store.flow_for_client_id(client_id) == ("f1", FlowStatus.RUNNABLE)


def test_a_longer_client_id_is_refused_before_touching_the_database(
    db_path: Path,
) -> None:
    with SqliteStore(db_path, busy_timeout=0.0) as store:
        other = sqlite3.connect(db_path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # any write attempt by the store would fail "locked"
        try:
            with pytest.raises(ValueError, match="at most 512"):
                store.commit([start("f1", client_id="c" * 513)])
            with pytest.raises(ValueError, match="at most 512"):
                store.commit([PutFlowResult("f1", "c" * 513, FlowStatus.COMPLETED, None, None)])
        finally:
            other.execute("ROLLBACK")
            other.close()


def test_flow_for_client_id_finds_running_and_finished_flows(store: SqliteStore) -> None:
    store.commit([start("f1", client_id="c1"), checkpoint("f1", status=FlowStatus.HOSPITALIZED)])
    store.commit([start("f2", client_id="c2")])
    store.commit([PutFlowResult("f3", "c3", FlowStatus.FAILED, None, b"e")])

    assert store.flow_for_client_id("c1") == ("f1", FlowStatus.HOSPITALIZED)
    assert store.flow_for_client_id("c2") == ("f2", FlowStatus.RUNNABLE)
    assert store.flow_for_client_id("c3") == ("f3", FlowStatus.FAILED)
    assert store.flow_for_client_id("c4") is None


# --- restart --------------------------------------------------------------------------------------


def test_runnable_flow_ids_lists_runnable_and_hospitalized_flows_in_start_order(
    store: SqliteStore,
) -> None:
    store.commit([start("z"), checkpoint("z")])
    store.commit([start("a"), checkpoint("a", status=FlowStatus.HOSPITALIZED)])
    store.commit([start("m")])  # no checkpoint yet: restarts from its arguments
    store.commit([start("done"), checkpoint("done", status=FlowStatus.COMPLETED)])
    store.commit([start("killed"), checkpoint("killed")])
    store.commit([SetFlowStatus("killed", FlowStatus.KILLED)])

    assert store.runnable_flow_ids() == ["z", "a", "m"]


# --- operators ------------------------------------------------------------------------------------


def test_list_flows_shows_stored_and_finished_flows_oldest_first(store: SqliteStore) -> None:
    store.commit([start("f1", client_id="c1"), checkpoint("f1", suspends=3)])
    store.commit([start("f2"), checkpoint("f2", status=FlowStatus.HOSPITALIZED)])
    store.commit([PutFlowResult("f1", "c1", FlowStatus.COMPLETED, b"v", None), DeleteFlow("f1")])
    store.commit([start("f3")])

    flows = store.list_flows()

    assert [(f.flow_id, f.status, f.suspends) for f in flows] == [
        ("f1", "COMPLETED", None),
        ("f2", "HOSPITALIZED", 1),
        ("f3", "RUNNABLE", 0),
    ]
    finished, hospitalized, _ = flows
    assert (finished.flow_class, finished.client_id) == ("app.flows:Pay", "c1")
    assert finished.created_at is not None
    assert finished.updated_at is not None
    assert finished.created_at <= finished.updated_at
    assert (hospitalized.pending_request, hospitalized.progress_step) == ("receive", "Signing")


def test_list_flows_filters_by_status_and_limits(store: SqliteStore) -> None:
    for i in range(5):
        store.commit([start(f"f{i}"), checkpoint(f"f{i}")])
    store.commit([SetFlowStatus("f1", FlowStatus.HOSPITALIZED)])

    assert [f.flow_id for f in store.list_flows(FlowStatus.HOSPITALIZED)] == ["f1"]
    assert [f.flow_id for f in store.list_flows(FlowStatus.RUNNABLE, limit=2)] == ["f0", "f2"]
    assert store.list_flows(FlowStatus.FAILED) == []


# --- query ----------------------------------------------------------------------------------------


def test_query_runs_select_and_with_statements_with_parameters(store: SqliteStore) -> None:
    store.commit([start("f1"), start("f2")])

    assert store.query("SELECT flow_id FROM flow_start WHERE flow_id = ?", ["f2"]) == [("f2",)]
    assert store.query("  -- comment\n WITH x(n) AS (VALUES (1), (2)) SELECT sum(n) FROM x") == [
        (3,)
    ]


@pytest.mark.parametrize(
    "sql",
    [
        "DELETE FROM flow_start",
        "UPDATE flow_start SET flow_class = 'x'",
        "PRAGMA query_only = OFF",
        "DROP TABLE flow_start",
        "WITH x AS (SELECT 1) DELETE FROM flow_start",
        "ATTACH DATABASE ':memory:' AS other",
    ],
)
def test_query_refuses_statements_that_write(store: SqliteStore, sql: str) -> None:
    store.commit([start("f1")])

    with pytest.raises(ValueError, match="query"):
        store.query(sql)

    assert store.query("SELECT flow_class FROM flow_start") == [("app.flows:Pay",)]
    store.commit([start("f2")])  # the connection still writes afterwards

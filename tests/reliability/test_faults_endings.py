"""Flows that end: errors the hospital does not retry, and commits that fail while a flow
finishes or propagates its error.

Every node keeps its database in a file (``MockNetwork(data_dir=tmp_path)``); faults are planned
with ``node.faults`` (see ``parley.testing.mock.Faults``).

A flow without a client id or queued writes gives its result (and sends its Ends) *before* the
commit that only deletes its checkpoint; the others give it after. So a failure of that last
commit comes after the result was given for the first kind, and before it for the second.

Left out:

* Refusing a start for want of a permission: that is the RPC service's (``tests/rpc``).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from parley import (
    FlowException,
    FlowLogic,
    FlowSession,
    UnexpectedFlowEndException,
    initiated_by,
    initiating_flow,
)
from parley.protocol.errors import StateTransitionError
from parley.protocol.messages import Error
from parley.testing import FlowStillRunning, MockNetwork, MockNode
from tests.reliability.common import settled, two_nodes

MIGRATIONS = ["CREATE TABLE sales (item TEXT NOT NULL)"]
RUNS: list[str] = []


@pytest.fixture(autouse=True)
def fresh() -> None:
    RUNS.clear()


def network(tmp_path: Path) -> tuple[MockNetwork, MockNode, MockNode]:
    return two_nodes(tmp_path, apps=[__name__])


def rows_of(node: MockNode, flow_id: str) -> list[object]:
    """Rows kept for ``flow_id``: start, header, journal, admissions, result."""
    tables = ("flow_start", "flow_header", "journal", "hospital_admission", "flow_result")
    sql = "SELECT count(*) FROM {} WHERE flow_id = ?"
    return [node.store.query(sql.format(t), (flow_id,))[0][0] for t in tables]


class OutOfStock(FlowException):
    pass


@initiating_flow
class Order(FlowLogic[int]):
    def __init__(self, peer: str) -> None:
        self.peer = peer

    async def call(self) -> int:
        return (await self.initiate_flow(self.peer).send_and_receive(int, 1)).unwrap_unchecked()


@initiated_by(Order)
class RefusesLater(FlowLogic[None]):
    """Checkpoints once (its sleep), then fails: the propagation is its second commit."""

    def __init__(self, session: FlowSession) -> None:
        self.session = session

    async def call(self) -> None:
        RUNS.append("refuses")
        await self.session.receive(int)
        await self.sleep(1)
        raise OutOfStock("no lamps left")


def errors_sent(net: MockNetwork) -> list[str]:
    return [p.recipient for p in net.published if isinstance(p.message, Error)]


def test_a_propagation_whose_commit_fails_three_times_fails_the_flow_with_its_own_error(
    tmp_path: Path,
) -> None:
    net, alice, bob = network(tmp_path)
    bob.faults.fail("commit", RuntimeError("the commit failed"), skip=1, times=3)
    with pytest.raises(OutOfStock, match="no lamps left") as raised:
        alice.start_flow(Order("bob")).result()
    assert raised.value.peer == "bob"
    staff = [(r.staff, r.outcome) for r in bob.hospital.records]
    assert staff == [("general", "propagate"), ("transition", "retry")] * 3 + [
        ("general", "propagate")
    ]
    assert errors_sent(net) == ["alice"]  # told once, after the commit that succeeded
    (ended,) = bob.outcomes.values()
    assert isinstance(ended[1], OutOfStock)
    assert settled(net)


def test_a_propagation_whose_commit_keeps_failing_is_kept_and_finished_after_a_restart(
    tmp_path: Path,
) -> None:
    net, alice, bob = network(tmp_path)
    bob.faults.fail("commit", RuntimeError("the commit failed"), skip=1, times=4)
    handle = alice.start_flow(Order("bob"))
    with pytest.raises(FlowStillRunning):
        handle.result()
    assert bob.hospital.records[-1].outcome == "observe"
    assert bob.store.query("SELECT status FROM flow_header") == [("HOSPITALIZED",)]
    assert errors_sent(net) == []  # alice waits: nothing was promised that did not happen
    net.restart_node(bob)
    with pytest.raises(OutOfStock):
        handle.result()
    assert errors_sent(net) == ["alice"]
    assert settled(net)


class Sells(FlowLogic[str]):
    def __init__(self, item: str | None) -> None:
        self.item = item

    async def call(self) -> str:
        RUNS.append("sells")
        await self.sleep(1)
        if self.item is not None:
            self.services.db.execute("INSERT INTO sales VALUES (?)", (self.item,))
        return "sold"


FINISHES = {  # (item written, client id)
    "result first": (None, None),
    "with a write": ("lamp", None),
    "with a client id": (None, "sale-1"),
}


@pytest.mark.parametrize("finish", FINISHES)
def test_a_final_commit_failing_once_is_retried_from_the_last_checkpoint(
    finish: str, tmp_path: Path
) -> None:
    item, client_id = FINISHES[finish]
    net, alice, _ = network(tmp_path)
    alice.faults.fail("commit", RuntimeError("the commit failed"), skip=1)
    handle = alice.start_flow(Sells(item), client_id=client_id)
    assert handle.result() == "sold"
    assert [(r.staff, r.outcome) for r in alice.hospital.records] == [("transition", "retry")]
    assert RUNS == ["sells", "sells"]
    assert alice.store.query("SELECT item FROM sales") == ([(item,)] if item else [])
    if client_id is None:
        assert settled(net)
    else:
        assert alice.store.query("SELECT status FROM flow_result") == [("COMPLETED",)]
        assert alice.store.query("SELECT count(*) FROM flow_header") == [(0,)]


ENDINGS = {  # the error, how many times, the hospital's last outcome
    "constraint": (sqlite3.IntegrityError("UNIQUE constraint failed: x"), 4, "propagate"),
    "other": (RuntimeError("the commit failed"), 4, "observe"),
    "disk full": (sqlite3.OperationalError("database or disk is full"), 1, "observe"),
}


@pytest.mark.parametrize("ending", ENDINGS)
def test_a_deletion_failing_after_the_result_was_given_leaves_the_result_and_parks_the_checkpoint(
    ending: str, tmp_path: Path
) -> None:
    error, times, outcome = ENDINGS[ending]
    net, alice, _ = network(tmp_path)
    alice.faults.fail("commit", error, skip=1, times=times)
    handle = alice.start_flow(Sells(None))
    assert handle.result() == "sold"  # given before the commit that deletes the checkpoint
    assert alice.hospital.records[-1].outcome == outcome
    (parked,) = alice.flows()
    assert (parked.flow_id, parked.status) == (handle.flow_id, "HOSPITALIZED")
    net.restart_node(alice)  # finishes it again from its checkpoint: the same result
    net.run_network()
    assert alice.outcomes[handle.flow_id] == (True, "sold")
    assert len(RUNS) == times + 1  # the run, a replay for each retry, one for the restart
    assert settled(net)
    assert alice.store.query("SELECT count(*) FROM hospital_admission") == [(0,)]


def test_a_final_commit_of_writes_that_always_break_a_constraint_fails_the_flow(
    tmp_path: Path,
) -> None:
    # Parley's policy for a constraint violation is "retry 3 times, then fail" wherever it is
    # met (the writes are the flow's, and would break the constraint again), also at the end.
    net, alice, _ = network(tmp_path)
    alice.faults.fail(
        "commit", sqlite3.IntegrityError("UNIQUE constraint failed: x"), skip=1, times=4
    )
    handle = alice.start_flow(Sells("lamp"))
    with pytest.raises(StateTransitionError, match="UNIQUE constraint failed") as failed:
        handle.result()
    assert isinstance(failed.value.__cause__, sqlite3.IntegrityError)
    assert [r.outcome for r in alice.hospital.records] == ["retry"] * 3 + ["propagate"]
    assert alice.store.query("SELECT item FROM sales") == []
    assert settled(net)


class Refuses(FlowLogic[str]):
    async def call(self) -> str:
        await self.sleep(1)
        raise KeyError("no such customer")


@initiating_flow
class AskAndRefuse(FlowLogic[None]):
    def __init__(self, peer: str) -> None:
        self.peer = peer

    async def call(self) -> None:
        session = self.initiate_flow(self.peer)
        await session.send(1)
        await self.sleep(1)
        raise KeyError("no such customer")


@initiated_by(AskAndRefuse)
class WaitsForMore(FlowLogic[None]):
    def __init__(self, session: FlowSession) -> None:
        self.session = session

    async def call(self) -> None:
        await self.session.receive(int)
        await self.session.receive(int)


def test_any_other_error_is_not_retried_the_flow_fails_and_leaves_nothing(tmp_path: Path) -> None:
    net, alice, bob = network(tmp_path)
    handle = alice.start_flow(AskAndRefuse("bob"))
    with pytest.raises(KeyError, match="no such customer"):
        handle.result()
    assert [(r.staff, r.outcome) for r in alice.hospital.records] == [("general", "propagate")]
    assert rows_of(alice, handle.flow_id) == [0, 0, 0, 0, 0]
    (told,) = [p for p in net.published if isinstance(p.message, Error)]
    assert told.recipient == "bob"
    (outcome,) = bob.outcomes.values()
    assert outcome[0] is False
    assert isinstance(outcome[1], UnexpectedFlowEndException)


def test_a_failed_flow_with_a_client_id_keeps_its_error_across_a_restart(tmp_path: Path) -> None:
    net, alice, _ = network(tmp_path)
    handle = alice.start_flow(Refuses(), client_id="order-1")
    with pytest.raises(KeyError):
        handle.result()
    assert alice.store.query("SELECT flow_id, status FROM flow_result") == [
        (handle.flow_id, "FAILED")
    ]
    assert rows_of(alice, handle.flow_id)[:4] == [0, 0, 0, 0]
    net.restart_node(alice)
    again = alice.start_flow(Refuses(), client_id="order-1")
    assert again.flow_id == handle.flow_id
    with pytest.raises(KeyError, match="no such customer"):
        again.result()
    assert len(alice.hospital.records) == 1  # it did not run again

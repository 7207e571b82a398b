"""Checkpoint commits that fail: before the first checkpoint, in the middle, written but reported
failed, inside sub-flows, and while the hospital's retry reads the checkpoint back.

Every node keeps its database in a file (``MockNetwork(data_dir=tmp_path)``); faults are planned
with ``node.faults`` (see ``parley.testing.mock.Faults``).

Left out:

* A rollback of the flow's own transaction that fails while an error is handled: a Parley flow
  holds no open transaction (its writes are queued and applied inside the checkpoint's commit,
  which the store rolls back itself), and the mock's ports can't make a rollback fail.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from parley import FlowLogic, FlowSession, initiated_by, initiating_flow
from parley.protocol.messages import Init
from parley.testing import FlowHospitalized, MockNetwork, MockNode
from tests.reliability.common import settled, two_nodes

MIGRATIONS = ["CREATE TABLE got (n INTEGER NOT NULL)"]
FAILED = RuntimeError("the commit failed")
RUNS: list[str] = []


@pytest.fixture(autouse=True)
def fresh() -> None:
    RUNS.clear()


def network(tmp_path: Path) -> tuple[MockNetwork, MockNode, MockNode]:
    return two_nodes(tmp_path, apps=[__name__])


@initiating_flow
class Ask(FlowLogic[int]):
    """Commits: its first checkpoint (send and receive), the sleep's, then the deletion."""

    def __init__(self, peer: str) -> None:
        self.peer = peer

    async def call(self) -> int:
        RUNS.append("ask")
        reply = await self.initiate_flow(self.peer).send_and_receive(int, 20)
        await self.sleep(1)
        return reply.unwrap_unchecked()


@initiated_by(Ask)
class Answer(FlowLogic[None]):
    """Commits: its first checkpoint (the send, with its write), then the deletion."""

    def __init__(self, session: FlowSession) -> None:
        self.session = session

    async def call(self) -> None:
        RUNS.append("answer")
        n = (await self.session.receive(int)).unwrap_unchecked()
        self.services.db.execute("INSERT INTO got VALUES (?)", (n,))
        await self.session.send(n + 1)


CASES = {"initiator": ("alice", None), "responder": ("bob", None), "client id": ("alice", "c-1")}


@pytest.mark.parametrize("case", CASES)
def test_a_first_commit_failing_three_times_restarts_the_flow_from_its_start_each_time(
    case: str, tmp_path: Path
) -> None:
    who, client_id = CASES[case]
    net, alice, bob = network(tmp_path)
    net.nodes[who].faults.fail("commit", FAILED, times=3)
    assert alice.start_flow(Ask("bob"), client_id=client_id).result() == 21
    records = [(r.staff, r.outcome, r.attempt) for r in net.nodes[who].hospital.records]
    assert records == [("transition", "retry", n) for n in range(3)]
    assert RUNS.count("ask" if who == "alice" else "answer") == 4
    assert bob.store.query("SELECT n FROM got") == [(20,)]
    assert client_id is not None or settled(net)


def test_an_initiator_whose_first_commit_fails_four_times_is_kept_in_memory_for_observation(
    tmp_path: Path,
) -> None:
    net, alice, _bob = network(tmp_path)
    alice.faults.fail("commit", FAILED, times=4)
    handle = alice.start_flow(Ask("bob"))
    with pytest.raises(FlowHospitalized, match="the commit failed"):
        handle.result()
    outcomes = [(r.staff, r.outcome) for r in alice.hospital.records]
    assert outcomes == [("transition", "retry")] * 3 + [("transition", "observe")]
    assert alice.flows() == []
    assert alice.live_flows == [handle.flow_id]
    assert net.published == []
    assert alice.hospital_retry(handle.flow_id) is True
    assert handle.result() == 21


def test_a_responder_whose_first_commit_fails_four_times_runs_again_from_its_init_after_a_restart(
    tmp_path: Path,
) -> None:
    net, alice, bob = network(tmp_path)
    bob.faults.fail("commit", FAILED, times=4)
    handle = alice.start_flow(Ask("bob"))
    net.run_network()
    assert [r.outcome for r in bob.hospital.records] == ["retry"] * 3 + ["observe"]
    assert bob.flows() == []
    assert len(bob.in_flight) == 1
    net.restart_node(bob)
    assert handle.result() == 21
    assert bob.store.query("SELECT n FROM got") == [(20,)]
    assert RUNS.count("answer") == 5
    assert settled(net)


@pytest.mark.parametrize(
    ("who", "skip"), [("alice", 0), ("alice", 1), ("bob", 0)], ids=["first", "second", "responder"]
)
def test_a_checkpoint_written_but_reported_failed_is_found_by_the_retry(
    who: str, skip: int, tmp_path: Path
) -> None:
    net, alice, bob = network(tmp_path)
    net.nodes[who].faults.fail("after_commit", FAILED, skip=skip)
    handle = alice.start_flow(Ask("bob"))
    assert handle.result() == 21
    assert net.nodes[who].faults.injected["after_commit"] == 1
    assert [(r.staff, r.outcome) for r in net.nodes[who].hospital.records] == [
        ("transition", "retry")
    ]
    assert bob.store.query("SELECT n FROM got") == [(20,)]
    assert RUNS.count("ask") + RUNS.count("answer") == 3  # one replay, from the checkpoint
    # A message whose ack was abandoned with the failed commit is acked when the broker
    # delivers it again (here, at a restart): it is a copy, and nothing runs again.
    for each in (alice, bob):
        net.restart_node(each)
    net.run_network()
    assert RUNS.count("ask") + RUNS.count("answer") == 3
    assert bob.store.query("SELECT n FROM got") == [(20,)]
    assert settled(net)


class PaysAtTheEnd(FlowLogic[str]):
    async def call(self) -> str:
        RUNS.append("pays")
        await self.sleep(1)
        self.services.db.execute("INSERT INTO got VALUES (1)")
        return "paid"


def test_a_final_commit_written_but_reported_failed_does_not_run_the_flow_again(
    tmp_path: Path,
) -> None:
    _net, alice, _ = network(tmp_path)
    alice.faults.fail("after_commit", FAILED, skip=1)
    assert alice.start_flow(PaysAtTheEnd()).result() == "paid"
    assert alice.store.query("SELECT n FROM got") == [(1,)]
    assert RUNS == ["pays"]  # its checkpoint is gone: it had ended, so nothing runs again


def test_a_client_id_flows_final_commit_written_but_reported_failed_gives_its_result(
    tmp_path: Path,
) -> None:
    net, alice, _ = network(tmp_path)
    alice.faults.fail("after_commit", FAILED, skip=1)
    handle = alice.start_flow(PaysAtTheEnd(), client_id="pay-1")
    net.run_network(max_steps=500)
    assert len(alice.hospital.records) <= 4
    assert handle.done
    assert handle.result() == "paid"


class Steps(FlowLogic[str]):
    async def call(self) -> str:
        RUNS.append("steps")
        for _ in range(3):
            await self.sleep(1)
        return "done"


def test_a_retry_whose_own_commit_fails_is_retried_again_and_the_flow_completes(
    tmp_path: Path,
) -> None:
    net, alice, _ = network(tmp_path)
    alice.faults.fail("commit", FAILED, skip=1, times=2)  # the second commit, then its retry's
    handle = alice.start_flow(Steps())
    assert handle.result() == "done"
    records = alice.hospital.records
    assert [(r.staff, r.outcome, r.attempt, r.suspends) for r in records] == [
        ("transition", "retry", 0, 1),
        ("transition", "retry", 1, 1),
    ]
    assert RUNS == ["steps"] * 3
    assert settled(net)


def test_a_retry_that_cannot_read_the_checkpoint_at_first_is_retried_and_completes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    net, alice, _ = network(tmp_path)
    alice.faults.fail("commit", FAILED, skip=1)
    reads = []
    load_flow = alice.store.load_flow

    def flaky(flow_id: str) -> object:  # the real SQLite read, locked out the first time
        reads.append(flow_id)
        if len(reads) == 1:
            raise sqlite3.OperationalError("database is locked")
        return load_flow(flow_id)

    monkeypatch.setattr(alice.store, "load_flow", flaky)
    handle = alice.start_flow(Steps())
    net.run_network()
    assert reads, "the retry read the checkpoint"
    assert handle.done
    assert handle.result() == "done"


@initiating_flow
class Quote(FlowLogic[int]):
    def __init__(self, peer: str) -> None:
        self.peer = peer

    async def call(self) -> int:
        RUNS.append("quote")
        return (await self.initiate_flow(self.peer).send_and_receive(int, 1)).unwrap_unchecked()


class InlineQuote(FlowLogic[int]):
    """Not initiating: its sessions are its parent's."""

    def __init__(self, peer: str) -> None:
        self.peer = peer

    async def call(self) -> int:
        RUNS.append("inline quote")
        return (await self.initiate_flow(self.peer).send_and_receive(int, 2)).unwrap_unchecked()


@initiating_flow
class Buys(FlowLogic[int]):
    def __init__(self, peer: str, inline: bool) -> None:
        self.peer, self.inline = peer, inline

    async def call(self) -> int:
        await self.sleep(1)
        quote = InlineQuote(self.peer) if self.inline else Quote(self.peer)
        price = await self.sub_flow(quote)
        await self.sleep(1)
        return price


@initiated_by(Quote)
@initiated_by(Buys)
class Quotes(FlowLogic[None]):
    def __init__(self, session: FlowSession) -> None:
        self.session = session

    async def call(self) -> None:
        n = (await self.session.receive(int)).unwrap_unchecked()
        await self.session.send(n * 100)


@pytest.mark.parametrize("inline", [False, True], ids=["initiating", "inline"])
def test_commits_failing_at_a_sub_flows_first_send_are_retried_from_the_checkpoint_before(
    inline: bool, tmp_path: Path
) -> None:
    net, alice, _bob = network(tmp_path)
    alice.faults.fail("commit", FAILED, skip=1, times=3)
    assert alice.start_flow(Buys("bob", inline)).result() == (200 if inline else 100)
    records = [(r.staff, r.outcome, r.suspends) for r in alice.hospital.records]
    assert records == [("transition", "retry", 1)] * 3  # each from the sleep's checkpoint
    assert ["inline quote" if inline else "quote"] * 4 == RUNS
    assert len([t for t in net.published if isinstance(t.message, Init)]) == 1  # sent once
    assert settled(net)

"""Restarts: a flow suspended at any point, restarted with restart_node, completes exactly once."""

from __future__ import annotations

import pytest

from parley import FlowLogic, FlowSession, IdempotentFlow, initiated_by, initiating_flow
from parley.protocol.errors import NonDeterministicFlowError
from parley.protocol.records import FlowStatus
from parley.testing import MockNetwork, MockNode

APP_TABLES = ["CREATE TABLE IF NOT EXISTS visits (who TEXT NOT NULL, n INTEGER NOT NULL)"]
OPERATION_CALLS: list[int] = []


def double(n: int) -> int:
    OPERATION_CALLS.append(n)
    return n * 2


class Idempotent(IdempotentFlow[int]):
    def __init__(self, session: FlowSession, n: int) -> None:
        self.session, self.n = session, n

    async def call(self) -> int:
        return (await self.session.send_and_receive(int, self.n)).unwrap(int)


@initiating_flow
class Everything(FlowLogic[tuple[object, ...]]):
    """Suspends on every kind of request, twice over a session, once on its own."""

    def __init__(self, peer: str) -> None:
        self.peer = peer

    async def call(self) -> tuple[object, ...]:
        session = self.initiate_flow(self.peer)
        info = await session.get_counterparty_flow_info()
        await session.send(1)
        x = (await session.receive(int)).unwrap(int)
        y = (await session.send_and_receive(int, x + 1)).unwrap(int)
        started = self.now()
        await self.sleep(30)
        waited = (self.now() - started).total_seconds()
        z = await self.execute(double, y)
        w = await self.sub_flow(Idempotent(session, z))
        self.services.db.execute("INSERT INTO visits VALUES (?, ?)", ("initiator", w))
        (count,) = (await self.services.db.query("SELECT count(*) FROM visits"))[0]
        await session.close()
        return info.flow_version, x, y, waited >= 30, z, w, count


@initiated_by(Everything)
class EverythingResponder(FlowLogic[None]):
    def __init__(self, session: FlowSession) -> None:
        self.session = session

    async def call(self) -> None:
        await self.session.get_counterparty_flow_info()
        a = (await self.session.receive(int)).unwrap(int)
        await self.session.send(a + 10)
        b = (await self.session.receive(int)).unwrap(int)
        self.services.db.execute("INSERT INTO visits VALUES (?, ?)", ("responder", b))
        await self.session.send(b * 10)
        c = (await self.session.receive(int)).unwrap(int)
        await self.session.send(c + 1)


EXPECTED = (1, 11, 120, True, 240, 241, 1)


def _network() -> tuple[MockNetwork, MockNode, MockNode]:
    net = MockNetwork()
    alice, bob = net.create_node("alice"), net.create_node("bob")
    for node in (alice, bob):
        node.store.apply_app_migrations("tests", APP_TABLES)
    return net, alice, bob


def _visits(node: MockNode) -> list[tuple[object, ...]]:
    return node.store.query("SELECT who, n FROM visits ORDER BY who")


def test_the_everything_flow_completes_without_restarts() -> None:
    net, alice, bob = _network()
    steps_before = len(net.transfers)
    assert alice.start_flow(Everything("bob")).result() == EXPECTED
    assert len(net.transfers) > steps_before
    assert _visits(alice) == [("initiator", 241)]
    assert _visits(bob) == [("responder", 12)]


def _total_steps() -> int:
    net, alice, _ = _network()
    alice.start_flow(Everything("bob"))
    return net.run_network()


@pytest.mark.parametrize("crashed", ["alice", "bob"])
def test_restarting_a_node_at_every_step_still_completes_exactly_once(crashed: str) -> None:
    total = _total_steps()
    assert total > 20
    for step in range(1, total):
        net, alice, bob = _network()
        handle = alice.start_flow(Everything("bob"))
        net.run_network(max_steps=step)
        net.restart_node(net.nodes[crashed])
        assert handle.result() == EXPECTED, f"restart of {crashed} after step {step}"
        assert _visits(alice) == [("initiator", 241)], f"after step {step}"
        assert _visits(bob) == [("responder", 12)], f"after step {step}"
        assert alice.store.list_flows() == []
        assert bob.store.list_flows() == []
        assert not alice.live_flows
        assert not bob.live_flows


def test_restarting_both_nodes_twice_mid_flow_still_completes_exactly_once() -> None:
    net, alice, bob = _network()
    handle = alice.start_flow(Everything("bob"))
    for _ in range(3):
        net.run_network(max_steps=7)
        net.restart_node(alice)
        net.restart_node(bob)
    assert handle.result() == EXPECTED
    assert _visits(alice) == [("initiator", 241)]
    assert _visits(bob) == [("responder", 12)]


def test_a_restored_flow_resends_with_the_same_ids_and_the_receiver_drops_the_copies() -> None:
    net, alice, _bob = _network()
    handle = alice.start_flow(Everything("bob"))
    net.run_network(max_steps=6)
    net.restart_node(alice)
    assert handle.result() == EXPECTED
    ids = [t.id for t in net.published]
    assert len(ids) > len(set(ids)), "the restore re-sent at least one message"
    for message_id in set(ids):
        copies = [t for t in net.published if t.id == message_id]
        assert all(c.message == copies[0].message for c in copies)


# ---- non-determinism ----------------------------------------------------------------------


@initiating_flow
class Changeable(FlowLogic[str]):
    """Its code 'changes' between runs when the test flips VARIANT."""

    VARIANT = "old"

    def __init__(self, peer: str) -> None:
        self.peer = peer

    async def call(self) -> str:
        session = self.initiate_flow(self.peer)
        await session.send("first")
        if type(self).VARIANT == "old":
            return (await session.receive(str)).unwrap(str)
        await self.sleep(1)
        return "new"


@initiated_by(Changeable)
class SlowReply(FlowLogic[None]):
    def __init__(self, session: FlowSession) -> None:
        self.session = session

    async def call(self) -> None:
        await self.session.receive(str)
        await self.sleep(100)
        await self.session.send("reply")


def test_replaying_a_flow_whose_code_changed_fails_with_non_determinism() -> None:
    net = MockNetwork(auto_advance=False)
    alice, _ = net.create_node("alice"), net.create_node("bob")
    handle = alice.start_flow(Changeable("bob"))
    net.run_network()
    assert not handle.done  # waiting for bob's reply, which comes after 100 s
    Changeable.VARIANT = "new"
    try:
        net.restart_node(alice)
        net.run_network()
    finally:
        Changeable.VARIANT = "old"
    (admission,) = alice.hospital.records
    assert admission.error_type.endswith("NonDeterministicFlowError")
    assert "asked for 'now'" in admission.message  # sleep() reads the clock first
    assert "code changed" in admission.message
    assert admission.outcome == "observe"
    (summary,) = alice.store.list_flows()
    assert summary.status is FlowStatus.HOSPITALIZED
    assert not handle.done


def test_non_determinism_is_an_error_of_the_flows_author() -> None:
    assert issubclass(NonDeterministicFlowError, Exception)


def test_an_undecodable_checkpoint_is_kept_for_observation_and_harms_no_other_flow() -> None:
    net = MockNetwork(auto_advance=False)
    alice, _ = net.create_node("alice"), net.create_node("bob")
    broken = alice.start_flow(Changeable("bob"))
    fine = alice.start_flow(Changeable("bob"))
    net.run_network()
    # corrupt one checkpoint, as a bad disk (or a bad upgrade) would
    alice.store._conn.execute(
        "UPDATE flow_header SET header = x'ff00ff' WHERE flow_id = ?", (broken.flow_id,)
    )
    net.restart_node(alice)
    net.advance_clock(100)
    assert fine.result() == "reply"
    (summary,) = alice.store.list_flows()
    assert summary.flow_id == broken.flow_id
    assert summary.status is FlowStatus.HOSPITALIZED

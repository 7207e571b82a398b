"""Publishes and acknowledgements that fail, and a counterparty that ends too early.

Every node keeps its database in a file (``MockNetwork(data_dir=...)``); faults are planned with
``node.faults`` (see ``parley.testing.mock.Faults``). Backoffs run on virtual time.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import pytest

from parley import FlowLogic, FlowSession, UnexpectedFlowEndException, initiated_by, initiating_flow
from parley.protocol.messages import Init
from parley.testing import FlowHospitalized, MockNetwork, MockNode, restart_at_every_step
from parley.transport.errors import MessagingError
from tests.reliability.common import settled, two_nodes

RUNS: list[str] = []


@pytest.fixture(autouse=True)
def fresh() -> None:
    RUNS.clear()


@initiating_flow
class Greet(FlowLogic[str]):
    def __init__(self, peer: str) -> None:
        self.peer = peer

    async def call(self) -> str:
        RUNS.append("greet")
        session = self.initiate_flow(self.peer)
        reply = await session.send_and_receive(str, "hello")
        await session.send("bye")
        return reply.unwrap_unchecked()


@initiated_by(Greet)
class Greeted(FlowLogic[str]):
    def __init__(self, session: FlowSession) -> None:
        self.session = session

    async def call(self) -> str:
        RUNS.append("greeted")
        hello = (await self.session.receive(str)).unwrap_unchecked()
        await self.session.send(hello.upper())
        return (await self.session.receive(str)).unwrap_unchecked()


def inits_sent(net: MockNetwork) -> list[str]:
    return [p.id for p in net.published if isinstance(p.message, Init)]


def run_out_backoffs(net: MockNetwork, node: MockNode, flow_id: str) -> None:
    """Pump, and move the clock to each retry the hospital delayed, until it delays no more."""
    net.run_network()
    seen = 0
    while len(records := node.hospital_show(flow_id)) > seen:
        seen = len(records)
        if records[-1].retry_in > 0:
            net.advance_clock(records[-1].retry_in - 0.5)
            net.run_network()
            assert len(node.hospital_show(flow_id)) == seen, "retried before its backoff"
            net.advance_clock(0.5)
        net.run_network()


def test_an_init_whose_publish_fails_three_times_is_sent_after_backoffs(tmp_path: Path) -> None:
    net, alice, _bob = two_nodes(tmp_path, auto_advance=False)
    alice.faults.fail("publish", MessagingError("not acknowledged by JetStream"), times=3)
    handle = alice.start_flow(Greet("bob"))
    run_out_backoffs(net, alice, handle.flow_id)
    assert handle.result() == "HELLO"
    assert [(r.staff, r.outcome, r.attempt) for r in alice.hospital.records] == [
        ("messaging", "retry", n) for n in range(3)
    ]
    assert len(inits_sent(net)) == 1
    assert RUNS.count("greeted") == 1
    assert settled(net)


def test_an_init_whose_publish_keeps_failing_is_kept_for_observation_until_a_restart(
    tmp_path: Path,
) -> None:
    net, alice, bob = two_nodes(tmp_path, auto_advance=False)
    alice.faults.fail("publish", MessagingError("NATS is down"), times=4)
    handle = alice.start_flow(Greet("bob"))
    run_out_backoffs(net, alice, handle.flow_id)
    with pytest.raises(FlowHospitalized, match="NATS is down"):
        handle.result()
    assert [r.outcome for r in alice.hospital.records] == ["retry"] * 3 + ["observe"]
    assert alice.store.query("SELECT status FROM flow_header") == [("HOSPITALIZED",)]
    assert inits_sent(net) == []
    assert bob.flows() == []
    net.restart_node(alice)
    assert handle.result() == "HELLO"
    assert settled(net)


def test_an_init_sent_but_reported_failed_is_sent_again_and_the_copy_is_dropped(
    tmp_path: Path,
) -> None:
    net, alice, bob = two_nodes(tmp_path)
    alice.faults.fail("after_publish", RuntimeError("no acknowledgement from the broker"))
    assert alice.start_flow(Greet("bob")).result() == "HELLO"
    assert [(r.staff, r.outcome) for r in alice.hospital.records] == [("transition", "retry")]
    first, again = inits_sent(net)
    assert first == again  # the same id: the receiver knows it for a copy
    assert RUNS.count("greeted") == 1
    assert list(bob.outcomes.values()) == [(True, "bye")]
    assert settled(net)


def test_acknowledgements_that_always_fail_are_swallowed_and_the_copies_dropped_later(
    tmp_path: Path,
) -> None:
    net, alice, bob = two_nodes(tmp_path)
    for each in (alice, bob):
        each.faults.fail("acknowledge", ConnectionError("ack lost"), times=None)
    handle = alice.start_flow(Greet("bob"))
    assert handle.result() == "HELLO"
    assert list(bob.outcomes.values()) == [(True, "bye")]
    assert list(alice.hospital.records) == list(bob.hospital.records) == []  # no admission
    assert alice.faults.injected["acknowledge"] > 0
    assert bob.faults.injected["acknowledge"] > 0
    unacked = len(alice.in_flight) + len(bob.in_flight)
    assert unacked == len(net.transfers) > 0  # every message delivered, none acked
    assert alice.flows() == bob.flows() == []

    for each in (alice, bob):  # the acks work again; the broker delivers the un-acked again
        each.faults.clear()
        net.restart_node(each)
    net.run_network()
    assert RUNS == ["greet", "greeted"]  # the copies ran nothing
    assert len(bob.outcomes) == 1
    assert settled(net)


@initiating_flow
class WantsTwo(FlowLogic[int]):
    def __init__(self, peer: str) -> None:
        self.peer = peer

    async def call(self) -> int:
        session = self.initiate_flow(self.peer)
        first = (await session.send_and_receive(int, 1)).unwrap_unchecked()
        second = (await session.receive(int)).unwrap_unchecked()  # never sent
        return first + second


@initiated_by(WantsTwo)
class SendsOne(FlowLogic[None]):
    def __init__(self, session: FlowSession) -> None:
        self.session = session

    async def call(self) -> None:
        n = (await self.session.receive(int)).unwrap_unchecked()
        await self.session.send(n + 1)


MISMATCHED = (
    "Received session end message instead of a data session message. Mismatched send and receive?"
)


def test_a_peer_that_ends_before_the_second_reply_fails_the_flow_and_nothing_hangs(
    tmp_path: Path,
) -> None:
    runs_made = itertools.count()

    def fresh_network() -> MockNetwork:  # each run on files of its own
        data_dir = tmp_path / f"run{next(runs_made)}"
        data_dir.mkdir()
        return MockNetwork(data_dir=data_dir)

    def scenario(net: MockNetwork) -> Callable[[], str]:
        alice, _ = net.create_node("alice"), net.create_node("bob")
        handle = alice.start_flow(WantsTwo("bob"))

        def finish() -> str:
            with pytest.raises(UnexpectedFlowEndException) as ended:
                handle.result()
            assert settled(net)
            return f"{ended.value.peer}: {ended.value}"

        return finish

    for node in ("alice", "bob"):
        runs = restart_at_every_step(scenario, restart=node, network=fresh_network)
        assert len(runs) > 3
        assert {run.result for run in runs} == {f"bob: {MISMATCHED}"}, node

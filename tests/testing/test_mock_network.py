"""MockNetwork itself: hostile input, at-least-once delivery, the pump and its records."""

from __future__ import annotations

import gc
import logging
import sys
from pathlib import Path

import cbor2
import pytest

from parley import FlowLogic
from parley.apps.pingpong import Ping, PingAll
from parley.protocol import codec
from parley.protocol.messages import Data, Envelope, encode_envelope
from parley.testing import FlowStillRunning, MockNetwork, MockNode


@pytest.fixture
def net() -> MockNetwork:
    return MockNetwork()


@pytest.fixture
def nodes(net: MockNetwork) -> tuple[MockNode, MockNode, MockNode]:
    return net.create_node("alice"), net.create_node("bob"), net.create_node("carol")


def hostile_inputs() -> dict[str, bytes]:
    oversized = encode_envelope(Envelope("x:1", "mallory", "bob", Data("nobody.0", 1, b"")))
    return {
        "garbage": b"\xff\x00garbage\x13",
        "unknown session": encode_envelope(
            Envelope("x:1", "mallory", "bob", Data("f" * 32 + ".0", 1, codec.encode(1)))
        ),
        "oversized": oversized + b"\x00" * (codec.DEFAULT_MAX_SIZE + 1),
        "non-whitelisted type": cbor2.dumps(
            {
                "v": 1,
                "id": "x",
                "sender": "m",
                "recipient": "bob",
                "kind": "data",
                "body": cbor2.CBORTag(codec.TAG_OBJECT, ["evil.module:Payload", 1]),
            }
        ),
        "wrong recipient": encode_envelope(
            Envelope("x:2", "mallory", "carol", Data("f" * 32 + ".0", 1, b"\x01"))
        ),
    }


@pytest.mark.parametrize("kind", sorted(hostile_inputs()))
def test_hostile_input_is_acked_logged_and_harms_no_other_flow(
    kind: str,
    net: MockNetwork,
    nodes: tuple[MockNode, MockNode, MockNode],
    caplog: pytest.LogCaptureFixture,
) -> None:
    alice, bob, _ = nodes
    handle = alice.start_flow(Ping("bob", 1, rounds=2))
    net.run_network(max_steps=3)
    net.inject("bob", hostile_inputs()[kind])
    with caplog.at_level(logging.INFO, logger="parley"):
        assert handle.result() == 3
    assert not bob.in_flight, "every message, hostile or not, was acked"
    assert any("dropping" in r.getMessage() for r in caplog.records)


def test_an_unacked_message_is_delivered_again_after_a_restart(
    net: MockNetwork, nodes: tuple[MockNode, MockNode, MockNode]
) -> None:
    alice, bob, _ = nodes
    handle = alice.start_flow(Ping("bob", 5))
    while not bob.in_flight:
        assert net.run_network(max_steps=1) == 1
    in_flight = dict(bob.in_flight)
    net.restart_node(bob)
    assert not bob.in_flight
    assert [d for d, _ in bob.queue][: len(in_flight)] == sorted(in_flight)
    assert handle.result() == 6


def test_the_pump_records_every_delivery_and_publication(
    net: MockNetwork, nodes: tuple[MockNode, MockNode, MockNode]
) -> None:
    alice, _, _ = nodes
    assert alice.start_flow(PingAll(["bob", "carol"], 1)).result() == [2, 2]
    assert len(net.transfers) == len(net.published)
    assert {(t.sender, t.recipient) for t in net.transfers} >= {
        ("alice", "bob"),
        ("carol", "alice"),
    }


def test_messages_to_a_node_that_does_not_exist_yet_wait_for_it(net: MockNetwork) -> None:
    alice = net.create_node("alice")
    handle = alice.start_flow(Ping("latecomer", 1))
    net.run_network()
    assert not handle.done
    net.create_node("latecomer")
    assert handle.result() == 2


def test_result_of_a_flow_waiting_for_nothing_says_so(net: MockNetwork) -> None:
    alice = net.create_node("alice")
    handle = alice.start_flow(Ping("nobody-home", 1))
    with pytest.raises(FlowStillRunning, match="waits for something that never comes"):
        handle.result()


def test_a_node_name_can_be_used_only_once(net: MockNetwork) -> None:
    net.create_node("alice")
    with pytest.raises(ValueError, match="already exists"):
        net.create_node("alice")


def test_a_passivated_flow_comes_back_when_its_message_arrives(net: MockNetwork) -> None:
    alice = net.create_node("alice")
    handle = alice.start_flow(Ping("late", 4))
    net.run_network()
    (flow_id,) = alice.live_flows
    alice.passivate(flow_id)
    net.run_network()
    assert alice.live_flows == []
    (summary,) = alice.store.list_flows()
    assert summary.pending_request == "send_and_receive"
    net.create_node("late")
    assert handle.result() == 5
    assert alice.store.list_flows() == []


CALLS: list[int] = []


def triple(n: int) -> int:
    CALLS.append(n)
    return 3 * n


class Tripler(FlowLogic[int]):
    def __init__(self, n: int) -> None:
        self.n = n

    async def call(self) -> int:
        return await self.execute(triple, self.n)


def test_held_operations_leave_their_flows_on_execute_until_released(
    nodes: tuple[MockNode, MockNode, MockNode],
) -> None:
    alice = nodes[0]
    CALLS.clear()
    alice.hold_operations()
    first, second = alice.start_flow(Tripler(1)), alice.start_flow(Tripler(2))
    alice.network.run_network()
    assert (first.done, second.done, CALLS) == (False, False, [])
    assert alice.release_operations(1) == 1
    assert first.result() == 3
    assert not second.done, "the second operation is still held"
    alice.hold_operations(False)
    assert second.result() == 6
    assert CALLS == [1, 2]


def test_an_operation_held_when_its_node_restarts_runs_after_the_restore(
    net: MockNetwork, nodes: tuple[MockNode, MockNode, MockNode]
) -> None:
    alice = nodes[0]
    CALLS.clear()
    alice.hold_operations()
    handle = alice.start_flow(Tripler(5), client_id="t5")
    net.run_network()
    net.restart_node(alice)
    alice.hold_operations(False)
    net.run_network()
    assert alice.outcomes[handle.flow_id] == (True, 15)
    assert CALLS == [5]


def test_nodes_on_a_data_dir_keep_their_flows_in_files_and_restore_them(tmp_path: Path) -> None:
    first = MockNetwork(data_dir=tmp_path, auto_advance=False)
    alice, bob = first.create_node("alice"), first.create_node("bob")
    handle = alice.start_flow(Ping("bob", 1), client_id="ping")
    first.run_network(max_steps=1)  # the init is sent, not yet answered
    assert (tmp_path / "alice.sqlite").exists()
    assert [f.flow_id for f in alice.store.list_flows()] == [handle.flow_id]
    alice.store.close()
    bob.store.close()
    second = MockNetwork(data_dir=tmp_path)
    alice, bob = second.create_node("alice"), second.create_node("bob")
    second.run_network()
    assert alice.outcomes[handle.flow_id] == (True, 2)


class Napper(FlowLogic[None]):
    async def call(self) -> None:
        await self.sleep(60)


class NapInside(FlowLogic[None]):
    async def call(self) -> None:
        await self.sub_flow(Napper())


def test_a_network_dropped_with_flows_inside_sub_flows_is_collected_quietly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    unraisable: list[object] = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    net = MockNetwork(auto_advance=False)
    net.create_node("alice").start_flow(NapInside())
    net.run_network()
    del net
    gc.collect()
    assert unraisable == []

"""MockNetwork itself: hostile input, at-least-once delivery, the pump and its records."""

from __future__ import annotations

import logging

import cbor2
import pytest

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

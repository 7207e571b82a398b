"""A node against hostile input on a real nats-server: what one client without credentials, or an
admitted peer that misbehaves, could do to it before, each finding a test.

The intruder is a plain nats-py client (no name checks, no Parley messaging code); the honest
counterparty is a :class:`~parley.testing.HandPeer`. After every attack the node must keep serving
other flows and leave nothing un-acked in its consumer.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from parley import UnexpectedFlowEndException
from parley.apps.pingpong import Ping
from parley.node import Node, NodeConfig
from parley.protocol import codec, ids
from parley.protocol.messages import (
    Confirm,
    Data,
    Envelope,
    Error,
    Init,
    SessionMessage,
    encode_envelope,
)
from parley.testing import HandPeer
from parley.transport.natsserver import EmbeddedNatsServer
from tests.integration.intruder import Intruder
from tests.integration.nodes import wait_for

pytestmark = pytest.mark.integration

APPS = ["parley.apps.pingpong", "tests.integration.apps"]
PARK = "tests.integration.apps:Park"
PING = "parley.apps.pingpong:Ping"


@pytest.fixture
def url(nats_server: EmbeddedNatsServer) -> str:
    assert nats_server.url is not None
    return nats_server.url


@pytest.fixture
def intruder(url: str) -> Iterator[Intruder]:
    client = Intruder(url)
    yield client
    client.close()


@pytest.fixture
def carol(url: str) -> Iterator[HandPeer]:
    peer = HandPeer(url, "carol")
    yield peer
    peer.close()


@pytest.fixture
def nodes(tmp_path: Path, url: str) -> Iterator[dict[str, Node]]:
    started: dict[str, Node] = {}
    yield started
    for node in started.values():
        node.stop()


def start(nodes: dict[str, Node], tmp_path: Path, url: str, name: str, **options: Any) -> Node:
    node = Node(NodeConfig(name, tmp_path / name, nats_url=url, apps=APPS, **options)).start()
    nodes[name] = node
    return node


def raw(sender: str, recipient: str, body: SessionMessage, msg_id: str = "m:1") -> bytes:
    """An envelope encoded without any of the encoder's name checks."""
    return encode_envelope(Envelope(msg_id, sender, recipient, body))


def drained(intruder: Intruder, node: str) -> bool:
    return intruder.consumer_state(node) == (0, 0)


def confirm_ping(carol: HandPeer, mine: str) -> str:
    """Play carol's side of a Ping's handshake; returns alice's session id."""
    init = carol.next(30)
    assert isinstance(init.body, Init)
    theirs = init.body.initiator_session
    carol.send("alice", Confirm(theirs, mine, 1, "hand"), ids.message_id(mine, 0))
    return theirs


def test_an_envelope_whose_sender_disagrees_with_the_subject_is_refused(
    tmp_path: Path, url: str, nodes: dict[str, Node], carol: HandPeer, intruder: Intruder
) -> None:
    alice = start(nodes, tmp_path, url, "alice")
    handle = alice.start_flow(Ping("carol", 1))
    mine = "c" * 32 + ".0"
    theirs = confirm_ping(carol, mine)
    forged = raw("carol", "alice", Data(theirs, 1, codec.encode(666)), ids.message_id(mine, 1))
    intruder.publish("parley.p2p.alice.mallory", forged, "forged-1")
    wait_for(lambda: drained(intruder, "alice"), 10, "the forged message to be handled")
    carol.send("alice", Data(theirs, 1, codec.encode(2)), ids.message_id(mine, 1))
    assert handle.result(30) == 2, "the forged Data was consumed in carol's session"
    assert alice.stats()["refused_subject_mismatch"] == 1


BAD_NAMES = {
    "a wildcard": (">", "parley.p2p.alice.x"),
    "a dot": ("a.b", "parley.p2p.alice.a.b"),
    "a space": ("a b", "parley.p2p.alice.ab"),
    "300 characters": ("x" * 300, "parley.p2p.alice." + "x" * 300),
}


def test_inits_from_invalid_node_names_are_refused_and_every_worker_keeps_serving(
    tmp_path: Path, url: str, nodes: dict[str, Node], intruder: Intruder
) -> None:
    alice = start(nodes, tmp_path, url, "alice", workers=1)
    start(nodes, tmp_path, url, "bob")
    for n, (sender, subject) in enumerate(BAD_NAMES.values()):
        init = Init(f"{n:032d}.0", PARK, 1, "tests", codec.encode(1))
        intruder.publish(subject, raw(sender, "alice", init), f"bad-name-{n}")
    assert alice.start_flow(Ping("bob", 1)).result(30) == 2
    wait_for(lambda: drained(intruder, "alice"), 10, "alice's consumer to ack everything")
    stats = alice.stats()
    refused = sum(v for k, v in stats.items() if k.startswith("refused_"))
    assert refused == len(BAD_NAMES), stats
    assert alice.kill_flow("0" * 32) is False  # the worker answers: it is alive


def test_early_messages_far_ahead_end_the_session_and_nothing_stays_unacked(
    tmp_path: Path, url: str, nodes: dict[str, Node], carol: HandPeer, intruder: Intruder
) -> None:
    alice = start(nodes, tmp_path, url, "alice")
    handle = alice.start_flow(Ping("carol", 1))
    mine = "c" * 32 + ".0"
    theirs = confirm_ping(carol, mine)
    early = [(f"early-{seq}", Data(theirs, seq, codec.encode(seq))) for seq in range(2, 200)]
    carol.send_many("alice", [*early, ("huge", Data(theirs, 2**70, codec.encode(0)))])
    with pytest.raises(UnexpectedFlowEndException, match="ahead"):
        handle.result(30)
    wait_for(lambda: drained(intruder, "alice"), 10, "alice's consumer to ack everything")
    error = carol.next(10)
    assert isinstance(error.body, Error), "carol was not told that the session ended"


def test_early_messages_within_the_window_are_acked_while_the_flow_waits(
    tmp_path: Path, url: str, nodes: dict[str, Node], carol: HandPeer, intruder: Intruder
) -> None:
    alice = start(nodes, tmp_path, url, "alice")
    handle = alice.start_flow(Ping("carol", 1, rounds=3))
    mine = "c" * 32 + ".0"
    theirs = confirm_ping(carol, mine)
    carol.send("alice", Data(theirs, 3, codec.encode(30)), ids.message_id(mine, 3))
    carol.send("alice", Data(theirs, 2, codec.encode(20)), ids.message_id(mine, 2))
    # seq 1 is missing: the flow waits, holding 2 and 3; they are stored and acked meanwhile.
    wait_for(lambda: drained(intruder, "alice"), 10, "the early messages to be acked")
    assert not handle.done
    carol.send("alice", Data(theirs, 1, codec.encode(10)), ids.message_id(mine, 1))
    assert handle.result(30) == 30


def test_a_copy_of_an_init_under_another_id_is_acked_at_once(
    tmp_path: Path, url: str, nodes: dict[str, Node], carol: HandPeer, intruder: Intruder
) -> None:
    start(nodes, tmp_path, url, "alice")
    mine = "c" * 32 + ".0"
    init = Init(mine, PARK, 1, "tests", None)  # Parked waits for an int: it stays live
    carol.send("alice", init, ids.message_id(mine, 0))
    assert isinstance(carol.next(30).body, Confirm)
    carol.send("alice", init, "another-id-for-the-same-init")
    wait_for(lambda: drained(intruder, "alice"), 10, "the copy to be acked")


def test_an_init_whose_first_payload_does_not_decode_fails_its_receive_and_tells_the_sender(
    tmp_path: Path, url: str, nodes: dict[str, Node], carol: HandPeer, intruder: Intruder
) -> None:
    alice = start(nodes, tmp_path, url, "alice")
    mine = "c" * 32 + ".0"
    carol.send("alice", Init(mine, PARK, 1, "tests", b"\xff\x00garbage"), ids.message_id(mine, 0))
    replies = [carol.next(30).body, carol.next(30).body]
    assert isinstance(replies[0], Confirm)
    assert isinstance(replies[1], Error)
    wait_for(lambda: drained(intruder, "alice"), 10, "the init to be acked")
    assert alice.hospital_records() == [] or all(
        r.outcome != "observe" for r in alice.hospital_records()
    )

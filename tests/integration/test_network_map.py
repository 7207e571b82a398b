"""A network with a map on a real nats-server: signed messages, refusals by reason, unknown and
revoked parties, and the map's copy in the node's database."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from parley import UnexpectedFlowEndException, UnknownPartyException
from parley.apps.pingpong import Ping
from parley.identity.keys import KeyPair, load_identity, new_operator_key
from parley.identity.signing import SIGNATURE_HEADER, MessageSigner
from parley.node import Node, NodeConfig, NodeError
from parley.protocol import codec, ids
from parley.protocol.messages import Confirm, Data, Envelope, Init, encode_envelope
from parley.store import SqliteStore
from parley.testing import HandPeer
from parley.transport.admin import NetworkAdmin
from parley.transport.natsserver import EmbeddedNatsServer
from tests.integration.intruder import Intruder
from tests.integration.nodes import wait_for

pytestmark = pytest.mark.integration

APPS = ["parley.apps.pingpong", "tests.integration.apps"]
PARK = "tests.integration.apps:Park"


class Network:
    """An operator, its admin tool, and the nodes it runs in a test."""

    def __init__(self, tmp_path: Path, url: str) -> None:
        self.tmp_path, self.url = tmp_path, url
        self.operator = new_operator_key()
        self.admin = NetworkAdmin(url, self.operator)
        self.nodes: dict[str, Node] = {}
        self.peers: list[HandPeer] = []

    def node(self, name: str, *, admit: bool = True, **options: Any) -> Node:
        data_dir = self.tmp_path / name
        if admit:
            self.admin.admit(name, [load_identity(data_dir).public_key])
        config = NodeConfig(
            name,
            data_dir,
            nats_url=self.url,
            apps=APPS,
            operator_key=self.operator.public_key,
            **options,
        )
        node = Node(config).start()
        self.nodes[name] = node
        return node

    def hand_peer(self, name: str) -> tuple[HandPeer, KeyPair]:
        key = KeyPair.generate()
        self.admin.admit(name, [key.public_key])
        peer = HandPeer(self.url, name, key)
        self.peers.append(peer)
        return peer, key

    def close(self) -> None:
        for node in self.nodes.values():
            node.stop()
        for peer in self.peers:
            peer.close()


@pytest.fixture
def network(tmp_path: Path, nats_server: EmbeddedNatsServer) -> Iterator[Network]:
    assert nats_server.url is not None
    net = Network(tmp_path, nats_server.url)
    yield net
    net.close()


@pytest.fixture
def intruder(nats_server: EmbeddedNatsServer) -> Iterator[Intruder]:
    assert nats_server.url is not None
    client = Intruder(nats_server.url)
    yield client
    client.close()


def test_admitted_nodes_run_flows_with_signed_messages(network: Network) -> None:
    alice, bob = network.node("alice"), network.node("bob")
    assert alice.start_flow(Ping("bob", 1, rounds=3)).result(30) == 4
    stats = alice.stats()
    assert sum(v for k, v in stats.items() if k.startswith("refused_")) == 0, stats
    assert bob.stats()["refused_unsigned"] == 0


def confirm(carol: HandPeer, mine: str) -> str:
    """Answer the next Init carol gets (skipping the Ends of earlier sessions)."""
    init = carol.next(30)
    while not isinstance(init.body, Init):
        init = carol.next(30)
    theirs = init.body.initiator_session
    carol.send("alice", Confirm(theirs, mine, 1, "hand"), ids.message_id(mine, 0))
    return theirs


def test_forged_unsigned_and_badly_signed_messages_are_refused_by_reason(
    network: Network, intruder: Intruder
) -> None:
    alice = network.node("alice")
    carol, carol_key = network.hand_peer("carol")
    network.hand_peer("dave")  # admitted: its key is in the map, but it is not carol
    mallory = KeyPair.generate()  # never admitted
    handle = alice.start_flow(Ping("carol", 1))
    mine = "c" * 32 + ".0"
    theirs = confirm(carol, mine)

    def forged(sender: str) -> bytes:
        body = Data(theirs, 1, codec.encode(666))
        return encode_envelope(Envelope(ids.message_id(mine, 1), sender, "alice", body))

    as_carol = forged("carol")
    attacks = [
        ("parley.p2p.alice.carol", as_carol, {}, "unsigned"),
        ("parley.p2p.alice.carol", as_carol, sign(mallory, as_carol), "bad_signature"),
        ("parley.p2p.alice.carol", as_carol, {SIGNATURE_HEADER: "not base64!"}, "bad_signature"),
        (
            "parley.p2p.alice.mallory",
            forged("mallory"),
            sign(mallory, forged("mallory")),
            "unknown_node",
        ),
        ("parley.p2p.alice.dave", as_carol, sign(carol_key, as_carol), "bad_signature"),
    ]
    for n, (subject, data, headers, _) in enumerate(attacks):
        intruder.publish(subject, data, f"attack-{n}", headers)
    wait_for(lambda: intruder.consumer_state("alice") == (0, 0), 10, "every attack to be acked")
    carol.send("alice", Data(theirs, 1, codec.encode(2)), ids.message_id(mine, 1))
    assert handle.result(30) == 2, "a forged message reached carol's session"
    stats = alice.stats()
    expected: dict[str, int] = {}
    for *_, reason in attacks:
        expected[reason] = expected.get(reason, 0) + 1
    assert {r: stats[f"refused_{r}"] for r in expected} == expected


def sign(key: KeyPair, data: bytes) -> dict[str, str]:
    return {SIGNATURE_HEADER: MessageSigner(key)(data)}


def test_a_message_signed_by_its_sender_but_naming_another_is_refused(
    network: Network, intruder: Intruder
) -> None:
    alice = network.node("alice")
    _, dave_key = network.hand_peer("dave")
    envelope = Envelope("x:1", "carol", "alice", Data("f" * 32 + ".0", 1, codec.encode(1)))
    data = encode_envelope(envelope)
    intruder.publish("parley.p2p.alice.dave", data, "mismatch", sign(dave_key, data))
    wait_for(lambda: alice.stats()["refused_subject_mismatch"] == 1, 10, "the refusal")


def test_a_replayed_message_from_another_session_changes_nothing(
    network: Network, intruder: Intruder
) -> None:
    alice = network.node("alice")
    carol, carol_key = network.hand_peer("carol")
    first = alice.start_flow(Ping("carol", 1))
    theirs = confirm(carol, "c" * 32 + ".0")
    reply = encode_envelope(
        Envelope("c" * 32 + ".0:1", "carol", "alice", Data(theirs, 1, codec.encode(7)))
    )
    intruder.publish("parley.p2p.alice.carol", reply, "reply-1", sign(carol_key, reply))
    assert first.result(30) == 7
    second = alice.start_flow(Ping("carol", 1))
    theirs_2 = confirm(carol, "d" * 32 + ".0")
    intruder.publish("parley.p2p.alice.carol", reply, "replayed", sign(carol_key, reply))
    wait_for(lambda: intruder.consumer_state("alice") == (0, 0), 10, "the replay to be acked")
    assert not second.done, "the replayed reply of the first session reached the second"
    carol.send("alice", Data(theirs_2, 1, codec.encode(8)), "d" * 32 + ".0:1")
    assert second.result(30) == 8


def test_a_session_with_a_party_outside_the_map_fails_at_once(network: Network) -> None:
    alice = network.node("alice")
    with pytest.raises(UnknownPartyException, match="bobb is not in the network map"):
        alice.start_flow(Ping("bobb", 1)).result(10)
    assert alice.flows() == []


def test_a_revoked_nodes_sessions_end_on_the_other_side_and_its_messages_are_refused(
    network: Network, intruder: Intruder
) -> None:
    alice = network.node("alice")
    carol, carol_key = network.hand_peer("carol")
    handle = alice.start_flow(Ping("carol", 1))
    theirs = confirm(carol, "c" * 32 + ".0")
    network.admin.revoke("carol")
    with pytest.raises(UnexpectedFlowEndException, match="carol was revoked"):
        handle.result(30)
    late = encode_envelope(
        Envelope("c" * 32 + ".0:1", "carol", "alice", Data(theirs, 1, codec.encode(1)))
    )
    intruder.publish("parley.p2p.alice.carol", late, "late", sign(carol_key, late))
    wait_for(lambda: alice.stats()["refused_revoked_node"] == 1, 10, "the refusal")
    with pytest.raises(UnknownPartyException, match="revoked"):
        alice.start_flow(Ping("carol", 1)).result(10)


def test_a_node_admitted_after_its_peer_started_is_looked_up_on_its_first_message(
    network: Network,
) -> None:
    network.node("alice")
    bob = network.node("bob")
    late = network.node("late")  # admitted after alice and bob read the map
    assert late.start_flow(Ping("alice", 5)).result(30) == 6
    assert bob.start_flow(Ping("late", 1)).result(30) == 2


def test_a_node_that_is_not_admitted_does_not_start(network: Network) -> None:
    with pytest.raises(NodeError, match="parley network admit stranger U"):
        network.node("stranger", admit=False)


def test_a_node_starts_from_its_copy_of_the_map_when_the_bucket_is_gone(
    network: Network, nats_server: EmbeddedNatsServer
) -> None:
    alice = network.node("alice")
    network.node("bob")
    wait_for(lambda: len(_stored_map(alice)) >= 2, 10, "the map's copy in alice's database")
    alice.stop()
    del network.nodes["alice"]

    async def drop(nc: Any) -> None:
        await nc.jetstream().delete_key_value("PARLEY_MAP")

    asyncio.run(network.admin._with_connection(drop))  # the test reaches into the admin's NATS
    alice = network.node("alice", admit=False, map_wait=0.5)
    assert alice.start_flow(Ping("bob", 1)).result(30) == 2


def _stored_map(node: Node) -> list[bytes]:
    with SqliteStore(node.db_path, readonly=True) as store:
        return store.map_entries()

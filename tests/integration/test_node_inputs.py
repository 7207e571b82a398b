"""A node against a hand-driven peer on a real nats-server: duplicates, reordering, hostile
input, and passivation of thousands of waiting flows."""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import cbor2
import nats
import pytest

from parley.apps.pingpong import Ping
from parley.node import Node, NodeConfig
from parley.protocol import codec, ids
from parley.protocol.messages import (
    Confirm,
    Data,
    End,
    Envelope,
    Init,
    encode_envelope,
)
from parley.testing import HandPeer
from parley.transport.natsserver import EmbeddedNatsServer
from tests.integration.nodes import rows, wait_for

pytestmark = pytest.mark.integration

APPS = ["parley.apps.pingpong", "tests.integration.apps"]
COLLECT = "tests.integration.apps:Collect"
PARK = "tests.integration.apps:Park"


@pytest.fixture
def peer(nats_server: EmbeddedNatsServer) -> Iterator[HandPeer]:
    assert nats_server.url is not None
    fake = HandPeer(nats_server.url, "tester")
    yield fake
    fake.close()


def start_node(
    tmp_path: Path, nats_server: EmbeddedNatsServer, name: str = "alice", **options: Any
) -> Node:
    assert nats_server.url is not None
    config = NodeConfig(name, tmp_path / name, nats_url=nats_server.url, apps=APPS, **options)
    return Node(config).start()


def test_duplicate_and_reordered_messages_are_processed_once_and_in_order(
    tmp_path: Path, nats_server: EmbeddedNatsServer, peer: HandPeer
) -> None:
    node = start_node(tmp_path, nats_server)
    try:
        mine = "s" * 32 + ".0"
        init = Init(mine, COLLECT, 1, "tests", codec.encode(3))
        peer.send("alice", init, ids.message_id(mine, 0))
        peer.send("alice", init, "another-id-for-the-same-init")  # a copy JetStream won't catch
        confirm = peer.next()
        assert isinstance(confirm.body, Confirm)
        theirs = confirm.body.initiated_session

        def data(seq: int) -> Data:
            return Data(theirs, seq, codec.encode(seq * 10))

        peer.send("alice", data(2), ids.message_id(mine, 2))  # seq 2 before seq 1
        peer.send("alice", data(2), ids.message_id(mine, 2))  # the same message id again
        peer.send("alice", data(1), ids.message_id(mine, 1))
        peer.send("alice", data(1), "copy-of-1")  # a duplicate under another id
        peer.send("alice", data(3), ids.message_id(mine, 3))
        reply = peer.next()
        assert isinstance(reply.body, Data)
        assert codec.decode(reply.body.payload) == [10, 20, 30]
        assert rows(node.db_path, "SELECT round FROM effects WHERE side = 'collector'") == [
            (10,),
            (20,),
            (30,),
        ]
        assert isinstance(peer.next().body, End)
        with pytest.raises(queue.Empty):
            peer.next(timeout=0.5)  # one Confirm, one reply, one End: the init ran once
    finally:
        node.stop()


def hostile_messages(tmp_path: Path) -> dict[str, bytes]:
    unknown = Envelope("u:1", "tester", "alice", Data("f" * 32 + ".0", 1, codec.encode(1)))
    evil_body = cbor2.CBORTag(codec.TAG_OBJECT, ["evil.module:Payload", 1])
    evil = {"v": 1, "id": "e", "sender": "tester", "recipient": "alice", "kind": "data"}
    return {
        "garbage": os.urandom(64),
        "unknown session": encode_envelope(unknown),
        "oversized": b"\x00" * 70_000,
        "non-whitelisted type": cbor2.dumps({**evil, "body": evil_body}),
    }


def test_hostile_input_is_acked_logged_and_leaves_other_flows_alone(
    tmp_path: Path,
    nats_server: EmbeddedNatsServer,
    peer: HandPeer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="parley")
    alice = start_node(tmp_path, nats_server, max_message_size=64 * 1024)
    bob = start_node(tmp_path, nats_server, "bob")
    try:
        handle = alice.start_flow(Ping("bob", 1, rounds=5))
        for kind, data in hostile_messages(tmp_path).items():
            peer.publish_raw("alice", data, f"hostile-{kind}")
        assert handle.result(30) == 6

        def dropped() -> list[str]:
            lines = [r.getMessage() for r in caplog.records]
            return [m for m in lines if "dropping" in m or "refused a message" in m]

        reasons = wait_for(lambda: dropped() if len(dropped()) >= 4 else None, 10, "4 drops")
        assert any("no session" in r for r in reasons)
        assert any("over the limit" in r for r in reasons)
        assert any("evil.module:Payload" in r for r in reasons)
        info = wait_for(
            lambda: _consumer_drained(nats_server, "alice"),
            10,
            "alice's consumer to have acked all",
        )
        assert info
    finally:
        alice.stop()
        bob.stop()


def _consumer_drained(nats_server: EmbeddedNatsServer, node: str) -> bool:
    assert nats_server.url is not None
    result: Future[bool] = Future()

    async def check() -> None:
        nc = await nats.connect(nats_server.url)
        try:
            info = await nc.jetstream().consumer_info(f"PARLEY_{node}", f"parley-{node}")
            result.set_result(info.num_ack_pending == 0 and info.num_pending == 0)
        finally:
            await nc.close()

    thread = threading.Thread(target=lambda: asyncio.run(check()))
    thread.start()
    thread.join(10)
    return result.result(1)


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_thousands_of_waiting_flows_are_passivated_and_all_complete(
    tmp_path: Path, nats_server: EmbeddedNatsServer, peer: HandPeer
) -> None:
    count = 5000
    node = start_node(tmp_path, nats_server, max_live_flows=100, workers=2)
    try:
        threads_before = threading.active_count()
        rss_before = _rss_kib()
        inits = [
            (ids.message_id(f"p{n:031d}.0", 0), Init(f"p{n:031d}.0", PARK, 1, "tests", None))
            for n in range(count)
        ]
        peer.send_many("alice", inits)
        sessions: dict[str, str] = {}
        while len(sessions) < count:
            confirm = peer.next(timeout=60)
            assert isinstance(confirm.body, Confirm)
            sessions[confirm.body.session] = confirm.body.initiated_session

        def under_budget() -> dict[str, int] | None:
            stats = node.stats()
            return stats if stats["live"] <= 100 + 2 * 50 else None

        stats = wait_for(under_budget, 60, "passivation to bring live flows under the budget")
        assert stats["passivations"] >= count - 200
        assert threading.active_count() == threads_before
        growth_kib = _rss_kib() - rss_before
        assert growth_kib < 60 * 1024, f"RSS grew by {growth_kib} KiB for {count} parked flows"
        datas = [
            (ids.message_id(mine, 1), Data(theirs, 1, codec.encode(n)))
            for n, (mine, theirs) in enumerate(sorted(sessions.items()))
        ]
        peer.send_many("alice", datas)
        answers: set[object] = set()
        while len(answers) < count:
            reply = peer.next(timeout=60)
            if isinstance(reply.body, Data):
                answers.add(codec.decode(reply.body.payload))
        assert answers == set(range(1, count + 1))
        wait_for(lambda: node.flows() == [], 30, "every flow to finish")
    finally:
        node.stop()

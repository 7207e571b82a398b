"""NKey authorization against a real nats-server: what a node may do, and what the server refuses.

Each test runs its own nats-server with the ``authorization`` block of
:func:`~parley.transport.security.nats_authorization` for two nodes, alice and bob, and the
operator's admin key. The admin creates both nodes' streams and the network map's bucket, as
admin tooling does when admitting nodes. Refusals are asserted on the server's own answer: the
``-ERR 'Permissions Violation for ...'`` it sends (nats-py hands it to ``error_cb``, lower-cased),
then on the state the admin sees afterwards, or on the order of deliveries for subscriptions.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import nats.errors
import nats.micro
import pytest
from nats.aio.client import Client as NATS
from nats.js.api import AckPolicy, ConsumerConfig, KeyValueConfig, StreamSource

from parley.engine.outbox import Outgoing
from parley.identity.keys import KeyPair, new_operator_key
from parley.transport.bridge import Delivery, MessagingError, NatsBridge
from parley.transport.names import MAP_BUCKET, stream_config
from parley.transport.natsserver import EmbeddedNatsServer
from parley.transport.security import (
    NatsAuth,
    NatsSecurityError,
    ensure_node_stream,
    map_stream_name,
    nats_authorization,
    node_inbox_prefix,
    node_permissions,
    rpc_service_name,
)

pytestmark = pytest.mark.integration

WAIT = 10.0  # generous upper bound for anything that should take milliseconds
NODES = ("alice", "bob")


# ------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------


@dataclass
class Network:
    """A nats-server admitting alice and bob, and the keys of everyone involved."""

    server: EmbeddedNatsServer
    keys: dict[str, KeyPair]

    @property
    def url(self) -> str:
        return self.server.url

    def options(self, node: str) -> dict[str, Any]:
        return NatsAuth(seed=self.keys[node].seed).connect_options(node)


@pytest.fixture
def network(tmp_path: Path) -> Iterator[Network]:
    keys = {name: KeyPair.generate() for name in (*NODES, "admin")}
    fragment = nats_authorization(
        [(n, keys[n].public_key) for n in NODES], keys["admin"].public_key
    )
    server = EmbeddedNatsServer(
        tmp_path / "nats", max_file_store="256M", max_mem_store="64M", extra_config=fragment
    )
    server.start()
    try:
        made = Network(server, keys)
        asyncio.run(as_admin(made, admit))
        yield made
    finally:
        server.stop()


async def admit(js: Any) -> None:
    """What admin tooling does: the nodes' streams, and the network map with an entry."""
    for node in NODES:
        await ensure_node_stream(js, node)
    kv = await js.create_key_value(KeyValueConfig(bucket=MAP_BUCKET, history=5))
    await kv.put("bob", b"bob's entry")


async def as_admin(network: Network, work: Callable[[Any], Awaitable[Any]]) -> Any:
    nc = await nats.connect(network.url, nkeys_seed_str=network.keys["admin"].seed)
    try:
        return await work(nc.jetstream())
    finally:
        await nc.close()


class Client:
    """A raw nats-py connection that keeps the errors the server sends it, in order."""

    def __init__(self) -> None:
        self.errors: asyncio.Queue[Exception] = asyncio.Queue()
        self.nc: Any = None

    async def connect(self, url: str, **options: Any) -> Client:
        async def error_cb(exc: Exception) -> None:
            await self.errors.put(exc)

        self.nc = NATS()
        try:
            await self.nc.connect(url, error_cb=error_cb, allow_reconnect=False, **options)
        except BaseException:
            await self.nc.close()  # nats-py leaves the socket of a refused connect open
            raise
        return self

    async def refused(self, operation: str, subject: str) -> None:
        """The next error is the server refusing ``operation`` on ``subject``.

        Args:
            operation: ``"publish"`` or ``"subscription"``, as the server words it.
            subject: the subject refused.
        """
        error = await asyncio.wait_for(self.errors.get(), WAIT)
        expected = f'permissions violation for {operation} to "{subject}"'
        assert str(error) == f"nats: {expected}".lower()

    async def refused_request(self, request: Awaitable[Any], subject: str) -> None:
        """The server refuses to let ``request`` be published: it never gets an answer."""
        task = asyncio.ensure_future(request)
        try:
            await self.refused("publish", subject)
            assert not task.done()
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def close(self) -> None:
        await self.nc.close()
        assert self.errors.empty(), f"unexpected errors: {self.errors}"


async def node_client(network: Network, node: str) -> Client:
    return await Client().connect(network.url, **network.options(node))


async def none_delivered(
    network: Network, received: asyncio.Queue[str], subjects: list[str]
) -> None:
    """Nothing the admin publishes on ``subjects`` reaches ``received`` before a marker does.

    The admin publishes them all, then the marker, on one connection: the server handles them
    in order and would deliver anything it let through before the marker.

    Args:
        network: the test's network.
        received: where the client's subscriptions (all of them) put the subjects they get.
        subjects: concrete subjects the client tried to subscribe to.
    """
    admin = await nats.connect(network.url, nkeys_seed_str=network.keys["admin"].seed)
    try:
        for subject in subjects:
            await admin.publish(subject, b"not for you")
        await admin.publish(f"{node_inbox_prefix('alice')}.marker", b"marker")
        await admin.flush()
        assert await asyncio.wait_for(received.get(), WAIT) == "_INBOX_alice.marker"
    finally:
        await admin.close()


class Inbox:
    """``on_messages`` for a bridge: what arrives, as a queue."""

    def __init__(self) -> None:
        self.batches: queue.Queue[list[tuple[bytes, Delivery]]] = queue.Queue()

    def __call__(self, batch: list[tuple[bytes, Delivery]]) -> None:
        self.batches.put(batch)

    def take(self, n: int) -> list[tuple[bytes, Delivery]]:
        got: list[tuple[bytes, Delivery]] = []
        while len(got) < n:
            try:
                got.extend(self.batches.get(timeout=WAIT))
            except queue.Empty:
                pytest.fail(f"expected {n} messages within {WAIT} s, got {len(got)}")
        assert len(got) == n
        return got


def publish(bridge: NatsBridge, *messages: Outgoing) -> BaseException | None:
    """Publish and return what ``done`` was called with."""
    done = threading.Event()
    outcome: list[BaseException | None] = []

    def record(error: BaseException | None) -> None:
        outcome.append(error)
        done.set()

    bridge.publish(messages, record)
    assert done.wait(WAIT + 10), "publish done() was never called"
    return outcome[0]


# ------------------------------------------------------------------------------------------
# What a node may do
# ------------------------------------------------------------------------------------------


def test_restricted_nodes_exchange_messages_through_their_bridges(network: Network) -> None:
    alice_inbox, bob_inbox = Inbox(), Inbox()
    alice = NatsBridge(
        "alice", network.url, on_messages=alice_inbox, connect_options=network.options("alice")
    )
    bob = NatsBridge(
        "bob", network.url, on_messages=bob_inbox, connect_options=network.options("bob")
    )
    with alice, bob:  # each creates (idempotently) its own stream, and its consumer
        assert publish(alice, Outgoing("bob", "alice", "a:1", b"hello bob")) is None
        assert publish(bob, Outgoing("alice", "bob", "b:1", b"hello alice")) is None

        [(data, delivery)] = bob_inbox.take(1)
        assert (data, delivery.sender) == (b"hello bob", "alice")
        bob.ack([delivery])
        [(data, delivery)] = alice_inbox.take(1)
        assert (data, delivery.sender) == (b"hello alice", "bob")
        alice.ack([delivery])

    async def left(js: Any) -> list[int]:  # the bridges' stops flushed their acks
        return [(await js.stream_info(f"PARLEY_{n}")).state.messages for n in NODES]

    assert asyncio.run(as_admin(network, left)) == [0, 0]


def test_a_restarted_node_reclaims_what_its_dead_incarnation_left_unacked(
    network: Network, caplog: pytest.LogCaptureFixture
) -> None:
    async def dead_incarnation() -> None:
        """alice's consumer takes a message and the process dies without acking it."""
        client = await node_client(network, "alice")
        js = client.nc.jetstream()
        await js.add_consumer("PARLEY_alice", stream_config_consumer())
        sub = await js.pull_subscribe_bind("parley-alice", stream="PARLEY_alice")
        [msg] = await sub.fetch(1, timeout=WAIT)
        assert msg.data == b"from bob"
        await client.close()

    def stream_config_consumer() -> ConsumerConfig:
        return ConsumerConfig(
            name="parley-alice",
            durable_name="parley-alice",
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=60.0,
            max_deliver=-1,
        )

    bob = NatsBridge(
        "bob", network.url, on_messages=Inbox(), connect_options=network.options("bob")
    )
    with bob:
        assert publish(bob, Outgoing("alice", "bob", "b:1", b"from bob")) is None
    asyncio.run(dead_incarnation())

    inbox = Inbox()
    caplog.set_level(logging.INFO, logger="parley.messaging")
    alice = NatsBridge(
        "alice", network.url, on_messages=inbox, connect_options=network.options("alice")
    )
    with alice:  # deletes and recreates its consumer: the message comes now, not after ack_wait
        [(data, delivery)] = inbox.take(1)
        assert data == b"from bob"
        alice.ack([delivery])
    assert "recreating consumer parley-alice" in caplog.text


def test_a_node_can_not_create_the_stream_of_a_node_the_admin_has_not_admitted(
    network: Network, caplog: pytest.LogCaptureFixture
) -> None:
    alice = NatsBridge(
        "alice",
        network.url,
        on_messages=Inbox(),
        publish_timeout=1.0,
        connect_options=network.options("alice"),
    )
    with alice:
        error = publish(alice, Outgoing("carol", "alice", "a:1", b"hello carol"))
    assert isinstance(error, MessagingError)
    assert 'permissions violation for publish to "$js.api.stream.create.parley_carol"' in (
        caplog.text
    )

    async def names(js: Any) -> list[str]:
        return sorted([info.config.name for info in await js.streams_info()])

    assert asyncio.run(as_admin(network, names)) == ["KV_PARLEY_MAP", "PARLEY_alice", "PARLEY_bob"]


def test_a_node_watches_the_network_map_and_reads_its_entries(network: Network) -> None:
    async def main() -> None:
        client = await node_client(network, "alice")
        kv = await client.nc.jetstream().key_value(MAP_BUCKET)
        assert (await kv.get("bob")).value == b"bob's entry"
        watcher = await kv.watchall()
        first = await watcher.updates(timeout=WAIT)
        assert (first.key, first.value) == ("bob", b"bob's entry")
        assert await watcher.updates(timeout=WAIT) is None  # the initial values are done

        async def put(js: Any) -> None:
            await (await js.key_value(MAP_BUCKET)).put("carol", b"carol's entry")

        await as_admin(network, put)
        update = await watcher.updates(timeout=WAIT)
        assert (update.key, update.value) == ("carol", b"carol's entry")
        await watcher.stop()
        await client.close()

    asyncio.run(main())


def test_a_nodes_watch_keeps_up_through_jetstreams_flow_control(network: Network) -> None:
    """Past about 2 MB in flight the server asks the watcher to answer flow-control messages."""
    entries, size = 60, 100_000

    async def main() -> None:
        client = await node_client(network, "alice")
        watcher = await (await client.nc.jetstream().key_value(MAP_BUCKET)).watchall()
        assert (await watcher.updates(timeout=WAIT)).key == "bob"
        assert await watcher.updates(timeout=WAIT) is None

        async def put_many(js: Any) -> None:
            kv = await js.key_value(MAP_BUCKET)
            for i in range(entries):
                await kv.put(f"node{i}", bytes([i]) * size)

        writer = asyncio.ensure_future(as_admin(network, put_many))
        seen = [await watcher.updates(timeout=WAIT) for _ in range(entries)]
        await writer
        assert [(e.key, e.value) for e in seen] == [
            (f"node{i}", bytes([i]) * size) for i in range(entries)
        ]
        await watcher.stop()
        await client.close()

    asyncio.run(main())


def test_a_node_serves_its_rpc_endpoints_and_answers_discovery(network: Network) -> None:
    async def main() -> None:
        client = await node_client(network, "alice")

        async def echo(request: Any) -> None:
            await request.respond(b"alice: " + request.data)

        service = await nats.micro.add_service(
            client.nc, name=rpc_service_name("alice"), version="1.0.0"
        )
        await service.add_endpoint(name="echo", subject="parley.rpc.alice.echo", handler=echo)
        admin = await nats.connect(network.url, nkeys_seed_str=network.keys["admin"].seed)
        reply = await admin.request("parley.rpc.alice.echo", b"hi", timeout=WAIT)
        assert reply.data == b"alice: hi"
        for subject in (
            "$SRV.PING",
            "$SRV.INFO.parley-alice",
            f"$SRV.STATS.parley-alice.{service.id}",
        ):
            answer = await admin.request(subject, b"", timeout=WAIT)
            assert b'"name":"parley-alice"' in answer.data.replace(b" ", b"")
        await admin.close()
        await service.stop()
        await client.close()

    asyncio.run(main())


def test_a_node_publishes_its_own_rpc_feeds_and_not_another_nodes(network: Network) -> None:
    async def main() -> None:
        admin = await nats.connect(network.url, nkeys_seed_str=network.keys["admin"].seed)
        received: asyncio.Queue[str] = asyncio.Queue()

        async def collect(msg: Any) -> None:
            await received.put(msg.subject)

        await admin.subscribe("parley.feed.>", cb=collect)
        await admin.flush()
        alice = await node_client(network, "alice")
        await alice.nc.publish("parley.feed.bob.f00d", b"forged progress")
        await alice.refused("publish", "parley.feed.bob.f00d")
        await alice.nc.publish("parley.feed.alice.f00d", b"progress")
        await alice.nc.flush()
        # The server handles alice's publishes in order: the refused one would have come first.
        assert await asyncio.wait_for(received.get(), WAIT) == "parley.feed.alice.f00d"
        await alice.close()
        await admin.close()

    asyncio.run(main())


# ------------------------------------------------------------------------------------------
# What the server refuses
# ------------------------------------------------------------------------------------------


def test_a_node_can_not_publish_as_another_sender(network: Network) -> None:
    async def main() -> None:
        alice = await node_client(network, "alice")
        js = alice.nc.jetstream()
        for subject in ("parley.p2p.bob.carol", "parley.p2p.bob.bob", "parley.p2p.alice.bob"):
            await alice.refused_request(js.publish(subject, b"forged"), subject)
        await alice.close()

        async def stored(js: Any) -> list[int]:
            return [(await js.stream_info(f"PARLEY_{n}")).state.messages for n in NODES]

        assert await as_admin(network, stored) == [0, 0]

    asyncio.run(main())


def test_a_node_can_not_subscribe_to_other_nodes_messages_inboxes_or_rpc(
    network: Network,
) -> None:
    async def main() -> None:
        alice = await node_client(network, "alice")
        received: asyncio.Queue[str] = asyncio.Queue()

        async def collect(msg: Any) -> None:
            await received.put(msg.subject)

        await alice.nc.subscribe(f"{node_inbox_prefix('alice')}.marker", cb=collect)
        for subject in (
            "parley.p2p.>",
            "parley.p2p.bob.alice",
            "parley.rpc.bob.echo",
            "parley.rpc.>",
            f"{node_inbox_prefix('bob')}.>",
            "$SRV.PING.parley-bob",
            ">",
        ):
            await alice.nc.subscribe(subject, cb=collect)
            await alice.refused("subscription", subject)
        await none_delivered(
            network,
            received,
            ["parley.p2p.bob.alice", "parley.rpc.bob.echo", "_INBOX_bob.x", "$SRV.PING.parley-bob"],
        )
        await alice.close()

    asyncio.run(main())


def test_a_node_can_not_read_another_nodes_stream(network: Network) -> None:
    async def main() -> None:
        alice = await node_client(network, "alice")
        js = alice.nc.jetstream()
        config = ConsumerConfig(durable_name="steal", ack_policy=AckPolicy.EXPLICIT)
        attempts: list[tuple[Awaitable[Any], str]] = [
            (
                js.add_consumer("PARLEY_bob", config),
                "$JS.API.CONSUMER.DURABLE.CREATE.PARLEY_bob.steal",
            ),
            (js.get_msg("PARLEY_bob", 1), "$JS.API.STREAM.MSG.GET.PARLEY_bob"),
            (js.get_msg("PARLEY_bob", 1, direct=True), "$JS.API.DIRECT.GET.PARLEY_bob"),
            (js.stream_info("PARLEY_bob"), "$JS.API.STREAM.INFO.PARLEY_bob"),
            (
                alice.nc.request("$JS.API.CONSUMER.MSG.NEXT.PARLEY_bob.parley-bob", b"{}"),
                "$JS.API.CONSUMER.MSG.NEXT.PARLEY_bob.parley-bob",
            ),
        ]
        for request, subject in attempts:
            await alice.refused_request(request, subject)
        await alice.close()

    asyncio.run(main())


def test_a_node_can_not_delete_or_change_streams_and_consumers(network: Network) -> None:
    bob = NatsBridge(
        "bob", network.url, on_messages=Inbox(), connect_options=network.options("bob")
    )
    bob.start()  # so that bob's consumer exists
    bob.stop()

    async def main() -> None:
        alice = await node_client(network, "alice")
        js = alice.nc.jetstream()
        grab = stream_config("alice", 120.0)
        grab.sources = [StreamSource(name="PARLEY_bob")]
        attempts: list[tuple[Awaitable[Any], str]] = [
            (js.delete_stream("PARLEY_bob"), "$JS.API.STREAM.DELETE.PARLEY_bob"),
            (
                js.delete_consumer("PARLEY_bob", "parley-bob"),
                "$JS.API.CONSUMER.DELETE.PARLEY_bob.parley-bob",
            ),
            (js.purge_stream("PARLEY_bob"), "$JS.API.STREAM.PURGE.PARLEY_bob"),
            (js.update_stream(grab), "$JS.API.STREAM.UPDATE.PARLEY_alice"),  # would copy bob's
            (js.delete_stream("PARLEY_alice"), "$JS.API.STREAM.DELETE.PARLEY_alice"),
        ]
        for request, subject in attempts:
            await alice.refused_request(request, subject)
        with pytest.raises(nats.js.errors.BadRequestError) as refused:
            await js.add_stream(grab)  # allowed subject, but the stream exists: JetStream says no
        assert refused.value.err_code == 10058
        await alice.close()

        async def state(js: Any) -> tuple[Any, ...]:
            bob_stream = await js.stream_info("PARLEY_bob")
            alice_stream = await js.stream_info("PARLEY_alice")
            consumer = await js.consumer_info("PARLEY_bob", "parley-bob")
            return bob_stream.config.name, alice_stream.config.sources, consumer.name

        assert await as_admin(network, state) == ("PARLEY_bob", None, "parley-bob")

    asyncio.run(main())


def test_a_node_can_not_write_the_network_map(network: Network) -> None:
    async def main() -> None:
        alice = await node_client(network, "alice")
        js = alice.nc.jetstream()
        kv = await js.key_value(MAP_BUCKET)
        kv_stream = map_stream_name()
        attempts: list[tuple[Awaitable[Any], str]] = [
            (kv.put("alice", b"forged"), f"$KV.{MAP_BUCKET}.alice"),
            (kv.put("bob", b"forged"), f"$KV.{MAP_BUCKET}.bob"),
            (kv.delete("bob"), f"$KV.{MAP_BUCKET}.bob"),
            (kv.purge("bob"), f"$KV.{MAP_BUCKET}.bob"),
            (js.purge_stream(kv_stream), f"$JS.API.STREAM.PURGE.{kv_stream}"),
            (js.delete_stream(kv_stream), f"$JS.API.STREAM.DELETE.{kv_stream}"),
        ]
        for request, subject in attempts:
            await alice.refused_request(request, subject)
        await alice.close()

        async def entries(js: Any) -> list[tuple[str, bytes]]:
            kv = await js.key_value(MAP_BUCKET)
            return [(key, (await kv.get(key)).value) for key in sorted(await kv.keys())]

        assert await as_admin(network, entries) == [("bob", b"bob's entry")]

    asyncio.run(main())


def test_clients_without_credentials_or_with_an_unknown_key_can_not_connect(
    network: Network,
) -> None:
    async def attempt(**options: Any) -> Exception:
        client = Client()
        with pytest.raises(nats.errors.Error) as refused:
            await client.connect(network.url, max_reconnect_attempts=0, **options)
        return refused.value

    async def main() -> None:
        stranger = KeyPair.generate()
        for options in ({}, {"nkeys_seed_str": stranger.seed}):
            assert str(await attempt(**options)) == "nats: 'Authorization Violation'"

    asyncio.run(main())


def test_ensure_node_stream_is_idempotent_and_puts_back_the_canonical_configuration(
    network: Network,
) -> None:
    async def work(js: Any) -> tuple[Any, Any]:
        tampered = stream_config("carol", 120.0)
        tampered.subjects = ["parley.p2p.carol.>", "parley.p2p.dave.>"]
        tampered.sources = [StreamSource(name="PARLEY_bob")]
        await js.add_stream(tampered)
        repaired = await ensure_node_stream(js, "carol")
        again = await ensure_node_stream(js, "carol")
        return repaired.config, again.config

    repaired, again = asyncio.run(as_admin(network, work))
    for config in (repaired, again):
        assert config.subjects == ["parley.p2p.carol.>"]
        assert not config.sources
        assert config.duplicate_window == 120.0


# ------------------------------------------------------------------------------------------
# The configuration fragment
# ------------------------------------------------------------------------------------------


def test_a_node_is_granted_exactly_these_subjects() -> None:
    assert node_permissions("alice") == {
        "publish": [
            "parley.p2p.*.alice",
            "$JS.API.INFO",
            "$JS.API.STREAM.INFO.PARLEY_alice",
            "$JS.API.STREAM.CREATE.PARLEY_alice",
            "$JS.API.CONSUMER.CREATE.PARLEY_alice.parley-alice",
            "$JS.API.CONSUMER.INFO.PARLEY_alice.parley-alice",
            "$JS.API.CONSUMER.DELETE.PARLEY_alice.parley-alice",
            "$JS.API.CONSUMER.MSG.NEXT.PARLEY_alice.parley-alice",
            "$JS.ACK.PARLEY_alice.parley-alice.>",
            "$JS.API.STREAM.INFO.KV_PARLEY_MAP",
            "$JS.API.CONSUMER.CREATE.KV_PARLEY_MAP",
            "$JS.API.CONSUMER.INFO.KV_PARLEY_MAP.*",
            "$JS.API.STREAM.MSG.GET.KV_PARLEY_MAP",
            "$JS.API.DIRECT.GET.KV_PARLEY_MAP",
            "$JS.API.DIRECT.GET.KV_PARLEY_MAP.>",
            "$JS.FC.KV_PARLEY_MAP.>",
            "parley.feed.alice.>",
        ],
        "subscribe": [
            "_INBOX_alice.>",
            "parley.rpc.alice.>",
            "$SRV.PING",
            "$SRV.INFO",
            "$SRV.STATS",
            "$SRV.PING.parley-alice",
            "$SRV.INFO.parley-alice",
            "$SRV.STATS.parley-alice",
            "$SRV.PING.parley-alice.*",
            "$SRV.INFO.parley-alice.*",
            "$SRV.STATS.parley-alice.*",
        ],
    }


def test_a_malformed_admission_is_refused() -> None:
    admin, alice = (KeyPair.generate().public_key for _ in range(2))
    mistyped = alice[:-1] + ("A" if alice[-1] != "A" else "B")
    cases: list[tuple[list[tuple[str, str]], str, str]] = [
        ([("alice", "UNOTAKEY")], admin, "the key of node alice is not a public NKey user key"),
        ([("alice", mistyped)], admin, "the key of node alice has a bad checksum"),
        ([("al.ice", alice)], admin, "invalid node name"),
        ([("alice", alice), ("alice", alice)], admin, "the key of node alice is used by another"),
        ([("alice", alice), ("bob", alice)], admin, "the key of node bob is used by another"),
        ([("alice", admin)], admin, "the key of node alice is used by another"),
        ([("alice", alice)], new_operator_key().public_key, "the admin key is not a public"),
    ]
    for nodes, admin_key, problem in cases:
        with pytest.raises(NatsSecurityError, match=problem):
            nats_authorization(nodes, admin_key)


def test_a_node_under_two_keys_may_connect_with_either_during_a_rotation() -> None:
    admin, old, new = (KeyPair.generate().public_key for _ in range(3))
    fragment = nats_authorization([("alice", new), ("alice", old)], admin)
    assert fragment.count("# node alice") == 2
    assert new in fragment
    assert old in fragment

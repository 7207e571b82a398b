"""The NATS bridge against a real nats-server: delivery, acks, dedup, crashes."""

from __future__ import annotations

import asyncio
import queue
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import nats
import pytest
from nats.js.api import RetentionPolicy, StorageType

from parley.transport.bridge import (
    Delivery,
    MessagingError,
    NatsBridge,
    Outgoing,
    stream_name,
)
from parley.transport.natsserver import EmbeddedNatsServer

pytestmark = pytest.mark.integration

WAIT = 10.0  # generous upper bound for anything that should take milliseconds


# ------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------


class Inbox:
    """``on_messages`` for a bridge: collects what arrives, lets the test wait for it."""

    def __init__(self) -> None:
        self.batches: queue.Queue[list[tuple[bytes, Delivery]]] = queue.Queue()
        self.threads: set[str] = set()

    def __call__(self, batch: list[tuple[bytes, Delivery]]) -> None:
        self.threads.add(threading.current_thread().name)
        self.batches.put(batch)

    def take(self, n: int, timeout: float = WAIT) -> list[tuple[bytes, Delivery]]:
        """Wait until ``n`` messages arrived; return exactly them (fails on more in a batch)."""
        got: list[tuple[bytes, Delivery]] = []
        deadline = time.monotonic() + timeout
        while len(got) < n:
            try:
                got.extend(self.batches.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                pytest.fail(f"expected {n} messages within {timeout} s, got {len(got)}")
        assert len(got) == n, f"expected {n} messages, got {len(got)}"
        return got

    def take_until(self, data: bytes, timeout: float = WAIT) -> list[tuple[bytes, Delivery]]:
        """Wait until a message with ``data`` arrives; return everything up to and including it."""
        got: list[tuple[bytes, Delivery]] = []
        deadline = time.monotonic() + timeout
        while not any(d == data for d, _ in got):
            try:
                got.extend(self.batches.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                pytest.fail(f"{data!r} did not arrive within {timeout} s; got {len(got)}")
        return got

    def empty(self) -> bool:
        return self.batches.empty()


class Outcome:
    """A publish ``done`` callback: records every call."""

    def __init__(self) -> None:
        self.calls: queue.Queue[BaseException | None] = queue.Queue()

    def __call__(self, error: BaseException | None) -> None:
        self.calls.put(error)

    def wait(self, timeout: float = WAIT) -> BaseException | None:
        try:
            return self.calls.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"publish done() not called within {timeout} s")


@dataclass
class Bridges:
    """Creates bridges on a server and stops them all at the end of the test."""

    url: str
    started: list[NatsBridge]

    def start(self, node: str, inbox: Inbox | None = None, **options: Any) -> NatsBridge:
        bridge = NatsBridge(node, self.url, on_messages=inbox or Inbox(), **options)
        bridge.start()
        self.started.append(bridge)
        return bridge


@pytest.fixture
def bridges(nats_server: EmbeddedNatsServer) -> Iterator[Bridges]:
    made = Bridges(nats_server.url, [])
    yield made
    for bridge in made.started:
        bridge.stop()


def message(recipient: str, sender: str, msg_id: str, data: bytes | None = None) -> Outgoing:
    return Outgoing(recipient, sender, msg_id, data if data is not None else msg_id.encode())


def publish(bridge: NatsBridge, *messages: Outgoing) -> None:
    """Publish and wait for done(None)."""
    outcome = Outcome()
    bridge.publish(messages, outcome)
    assert outcome.wait() is None


def run_async(url: str, work: Callable[[Any], Any]) -> Any:
    """Run ``await work(js)`` on a fresh connection of the test's own."""

    async def main() -> Any:
        nc = await nats.connect(url, max_reconnect_attempts=1, connect_timeout=2)
        try:
            return await work(nc.jetstream())
        finally:
            await nc.close()

    return asyncio.run(main())


def stored_messages(url: str, node: str) -> int:
    async def count(js: Any) -> int:
        info = await js.stream_info(stream_name(node))
        return int(info.state.messages)

    return int(run_async(url, count))


# ------------------------------------------------------------------------------------------
# Delivery, acks, redelivery
# ------------------------------------------------------------------------------------------


def test_a_message_published_by_a_reaches_b_with_its_bytes_and_sender(bridges: Bridges) -> None:
    inbox = Inbox()
    a = bridges.start("A")
    b = bridges.start("B", inbox)

    publish(a, message("B", "A", "m1", b"\x00hello\xff"))

    [(data, delivery)] = inbox.take(1)
    assert data == b"\x00hello\xff"
    assert delivery.sender == "A"
    assert delivery.subject == "parley.p2p.B.A"
    assert delivery.num_delivered == 1
    assert delivery.stream_sequence == 1
    assert hash(delivery) == hash(delivery)
    assert inbox.threads == {"parley-messaging-B"}
    b.ack([delivery])


def test_an_acked_message_is_not_delivered_again_to_a_restarted_bridge(
    bridges: Bridges, nats_server: EmbeddedNatsServer
) -> None:
    a = bridges.start("A")
    first = Inbox()
    b = bridges.start("B", first)
    publish(a, message("B", "A", "m1"))
    [(_, delivery)] = first.take(1)

    b.ack([delivery])
    b.stop()

    assert stored_messages(nats_server.url, "B") == 0  # work queue: acked means removed
    again = Inbox()
    bridges.start("B", again)
    publish(a, message("B", "A", "marker"))
    assert [data for data, _ in again.take_until(b"marker")] == [b"marker"]


def test_an_unacked_message_is_delivered_again_to_a_restarted_bridge(bridges: Bridges) -> None:
    a = bridges.start("A")
    first = Inbox()
    b = bridges.start("B", first)
    publish(a, message("B", "A", "m1"))
    first.take(1)

    b.stop()  # without acking

    again = Inbox()
    bridges.start("B", again)
    [(data, _)] = again.take(1)
    assert data == b"m1"


CRASHING_RECEIVER = """
import sys, threading
from parley.transport.bridge import NatsBridge

def on_messages(batch):
    for data, _ in batch:
        print("got", data.decode(), flush=True)

bridge = NatsBridge("B", sys.argv[1], on_messages=on_messages)
bridge.start()
print("ready", flush=True)
threading.Event().wait()
"""


def test_an_unacked_message_of_a_receiver_killed_with_sigkill_comes_back_at_its_restart(
    bridges: Bridges, nats_server: EmbeddedNatsServer
) -> None:
    lines: queue.Queue[str] = queue.Queue()
    with subprocess.Popen(
        [sys.executable, "-c", CRASHING_RECEIVER, nats_server.url],
        stdout=subprocess.PIPE,
        text=True,
    ) as child:

        def read() -> None:
            assert child.stdout is not None
            for line in child.stdout:
                lines.put(line.strip())

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            assert lines.get(timeout=WAIT) == "ready"
            a = bridges.start("A")
            publish(a, message("B", "A", "m1"))
            assert lines.get(timeout=WAIT) == "got m1"
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
            reader.join(WAIT)

    # ack_wait is 60 s: the new incarnation reclaims the dead one's deliveries at start
    again = Inbox()
    bridges.start("B", again)
    [(data, _)] = again.take(1, timeout=WAIT)
    assert data == b"m1"


def test_a_stopped_bridge_naks_what_was_not_acked_so_it_comes_back_even_without_reclaim(
    bridges: Bridges,
) -> None:
    a = bridges.start("A")
    first = Inbox()
    bridges.start("B", first, ack_wait=1.0)
    publish(a, message("B", "A", "m1"))
    first.take(1)
    bridges.started[-1].stop()

    again = Inbox()
    bridges.start("B", again, ack_wait=1.0, reclaim_on_start=False)
    [(data, delivery)] = again.take(1)
    assert data == b"m1"
    assert delivery.num_delivered == 2


# ------------------------------------------------------------------------------------------
# Dedup and streams created by senders
# ------------------------------------------------------------------------------------------


def test_publishing_the_same_msg_id_twice_stores_it_once(
    bridges: Bridges, nats_server: EmbeddedNatsServer
) -> None:
    a = bridges.start("A")

    publish(a, message("B", "A", "same-id", b"first"))
    publish(a, message("B", "A", "same-id", b"second"))
    publish(a, message("B", "A", "same-id", b"third"), message("B", "A", "same-id", b"fourth"))

    assert stored_messages(nats_server.url, "B") == 1
    inbox = Inbox()
    bridges.start("B", inbox)
    publish(a, message("B", "A", "marker"))
    assert [data for data, _ in inbox.take_until(b"marker")] == [b"first", b"marker"]


def test_publishing_to_a_node_that_never_started_creates_its_stream_and_it_receives_later(
    bridges: Bridges, nats_server: EmbeddedNatsServer
) -> None:
    a = bridges.start("A", duplicate_window=90.0)

    publish(a, message("C", "A", "early-1"), message("C", "A", "early-2"))

    async def info(js: Any) -> Any:
        return await js.stream_info("PARLEY_C")

    config = run_async(nats_server.url, info).config
    assert config.subjects == ["parley.p2p.C.>"]
    assert config.retention == RetentionPolicy.WORK_QUEUE
    assert config.storage == StorageType.FILE
    assert config.duplicate_window == 90.0
    inbox = Inbox()
    c = bridges.start("C", inbox, duplicate_window=90.0)  # same config: creation is idempotent
    received = inbox.take(2)
    assert sorted(data for data, _ in received) == [b"early-1", b"early-2"]
    c.ack([d for _, d in received])


def test_a_sender_with_another_duplicate_window_still_delivers_to_an_existing_stream(
    bridges: Bridges,
) -> None:
    inbox = Inbox()
    bridges.start("B", inbox, duplicate_window=120.0)
    a = bridges.start("A", duplicate_window=30.0)

    publish(a, message("B", "A", "m1"))

    assert [data for data, _ in inbox.take(1)] == [b"m1"]


def test_a_thousand_messages_in_one_publish_call_arrive_and_done_is_called_once(
    bridges: Bridges,
) -> None:
    inbox = Inbox()
    a = bridges.start("A")
    b = bridges.start("B", inbox)
    outcome = Outcome()

    a.publish([message("B", "A", f"m{i}") for i in range(1000)], outcome)

    received = inbox.take(1000)
    assert outcome.wait() is None
    assert {data for data, _ in received} == {f"m{i}".encode() for i in range(1000)}
    b.ack([d for _, d in received])
    a.stop()  # waits for every publish task: a second done() call would be queued by now
    assert outcome.calls.empty()


def test_one_publish_call_can_address_several_nodes_including_missing_ones(
    bridges: Bridges,
) -> None:
    a_inbox, b_inbox, d_inbox = Inbox(), Inbox(), Inbox()
    a = bridges.start("A", a_inbox)
    bridges.start("B", b_inbox)

    publish(a, message("B", "A", "to-b"), message("D", "A", "to-d"), message("A", "A", "to-a"))

    assert [d for d, _ in b_inbox.take(1)] == [b"to-b"]
    assert [d for d, _ in a_inbox.take(1)] == [b"to-a"]
    bridges.start("D", d_inbox)
    assert [d for d, _ in d_inbox.take(1)] == [b"to-d"]


# ------------------------------------------------------------------------------------------
# Failures: no server, server crash
# ------------------------------------------------------------------------------------------


def test_start_against_a_port_with_no_server_fails_quickly_with_messaging_error(
    nats_server: EmbeddedNatsServer,
) -> None:
    url = nats_server.url
    nats_server.stop()  # a port that certainly had a server and now has none
    bridge = NatsBridge("A", url, on_messages=Inbox(), connect_timeout=1.0)

    started = time.monotonic()
    with pytest.raises(MessagingError, match="no NATS server"):
        bridge.start()

    assert time.monotonic() - started < 1.0 + 2.0
    assert "parley-messaging-A" not in {t.name for t in threading.enumerate()}
    assert not bridge.running
    bridge.stop()  # harmless


def test_bridges_survive_a_server_crash_and_lose_nothing(
    durable_nats_server: EmbeddedNatsServer,
) -> None:
    server = durable_nats_server
    made = Bridges(server.url, [])
    try:
        inbox = Inbox()
        a = made.start("A", publish_timeout=3.0)
        b = made.start("B", inbox, ack_wait=2.0)
        publish(a, message("B", "A", "before-crash"))
        [(data, _)] = inbox.take(1)  # received, never acked
        assert data == b"before-crash"

        server.kill()
        outcome = Outcome()
        a.publish([message("B", "A", "while-down")], outcome)
        error = outcome.wait()
        assert isinstance(error, MessagingError)  # the caller sees the failure...

        assert server.restart() == made.url
        publish(a, message("B", "A", "after-restart"))  # ...and new publishes work

        received = {data for data, _ in inbox.take_until(b"after-restart", timeout=20.0)}
        if b"before-crash" not in received:  # redelivered once ack_wait has passed
            received |= {data for data, _ in inbox.take_until(b"before-crash", timeout=20.0)}
        assert {b"before-crash", b"after-restart"} <= received
        publish(b, message("A", "B", "b-can-publish-too"))
    finally:
        for bridge in made.started:
            bridge.stop()


def test_a_consumer_deleted_under_a_running_bridge_is_recreated_and_receiving_goes_on(
    bridges: Bridges, nats_server: EmbeddedNatsServer
) -> None:
    inbox = Inbox()
    a = bridges.start("A")
    bridges.start("B", inbox)

    async def delete(js: Any) -> Any:
        return await js.delete_consumer("PARLEY_B", "parley-B")

    assert run_async(nats_server.url, delete)
    publish(a, message("B", "A", "after-delete"))

    [(data, _)] = inbox.take(1)
    assert data == b"after-delete"


def test_publish_after_stop_reports_an_error_and_stop_is_idempotent(bridges: Bridges) -> None:
    a = bridges.start("A")
    a.stop()
    a.stop()

    outcome = Outcome()
    a.publish([message("B", "A", "late")], outcome)

    assert isinstance(outcome.wait(), MessagingError)
    a.ack([])  # nothing to do, no error


def test_invalid_node_names_are_refused() -> None:
    with pytest.raises(ValueError, match="invalid node name"):
        NatsBridge("no spaces", "nats://127.0.0.1:1", on_messages=Inbox())
    with pytest.raises(ValueError, match="invalid node name"):
        NatsBridge("x" * 129, "nats://127.0.0.1:1", on_messages=Inbox())
    with pytest.raises(ValueError, match="invalid node name"):
        NatsBridge("dots.are.subjects", "nats://127.0.0.1:1", on_messages=Inbox())


def test_publishing_to_an_invalid_node_name_raises_value_error(bridges: Bridges) -> None:
    a = bridges.start("A")
    with pytest.raises(ValueError, match="invalid node name"):
        a.publish([message("B.>", "A", "m")], Outcome())


# ------------------------------------------------------------------------------------------
# Measurements (printed, not asserted)
# ------------------------------------------------------------------------------------------


def test_one_hop_latency_and_batch_throughput_are_measured(
    bridges: Bridges, capsys: pytest.CaptureFixture[str]
) -> None:
    inbox = Inbox()
    a = bridges.start("A")
    b = bridges.start("B", inbox)
    hops: list[float] = []
    for i in range(300):
        outcome = Outcome()
        started = time.perf_counter()
        a.publish([message("B", "A", f"lat-{i}")], outcome)
        [(_, delivery)] = inbox.take(1)
        hops.append(time.perf_counter() - started)
        assert outcome.wait() is None
        b.ack([delivery])
    hops.sort()

    count = 10_000
    outcome = Outcome()
    started = time.perf_counter()
    a.publish([message("B", "A", f"bulk-{i}", b"x" * 128) for i in range(count)], outcome)
    received = 0
    while received < count:
        batch = inbox.batches.get(timeout=WAIT)
        received += len(batch)
        b.ack([d for _, d in batch])
    elapsed = time.perf_counter() - started
    assert outcome.wait() is None

    with capsys.disabled():
        print(
            f"\n[messaging] one publish->on_messages hop (same process, 2 bridges): "
            f"p50 {hops[len(hops) // 2] * 1e3:.3f} ms, p90 {hops[int(len(hops) * 0.9)] * 1e3:.3f} "
            f"ms, mean {statistics.mean(hops) * 1e3:.3f} ms; "
            f"{count} msgs in one publish(): {count / elapsed:,.0f} msgs/s received+acked"
        )

"""The node's inbox: a continuous pull from its durable JetStream consumer, and its acks.

Everything here runs on the bridge's loop thread. The measurements behind these choices are in
``docs/performance.md`` ("The NATS bridge: how it receives and what it costs").

Receiving is a continuous pull (what the Go/JS clients call ``Consume()``), not ``fetch()``, which
pays a request/response round and a JSON request per batch, and not a push consumer, a little
faster but with flow control and interest semantics to get right across reconnects. One inbox
subscription; pull requests for ``fetch_batch`` messages (``expires`` 30 s, idle heartbeat 5 s)
stand on the server, and a new request tops the budget up whenever fewer than half of the
requested messages are still outstanding. Every message is handed over the moment it arrives, a
burst is pulled as fast as the server sends it, and the client alone decides how much it asks for
(the server bounds unacked messages by ``max_ack_pending``).

Liveness: the server sends an idle heartbeat every 5 s while a request is standing, and answers
an expired request with ``408`` and the number of messages it did not deliver. A supervisor task
re-checks (creates if needed) the stream and the consumer and re-issues the pull after a
reconnect, after an unexpected status (``409`` consumer deleted, leadership change, ...), or when
nothing at all arrived for two heartbeat intervals (the standing requests were lost, e.g. the
server restarted while the TCP connection survived), backing off on repeated failures. The receive
side never dies of a connection error.

Messages arriving together are handed to ``on_messages`` as one batch: the subscription's callback
(never blocking, never waiting on the network: the client runs a subscription's callbacks one at a
time) only appends to a buffer and, for the first message of a batch, schedules a flush with
``loop.call_soon``, which runs after the client has dispatched everything already read from the
socket. Acks are fire-and-forget core publishes to the message's reply subject, coalesced by the
client's flusher (the bridge's stop waits for them). What was handed over but not acked is NAKed
when the bridge stops; what a crash left unacked is reclaimed at the next start (see
:meth:`PullConsumer._ensure_consumer`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

import nats.js.errors

from parley.transport.names import consumer_config, consumer_name, stream_name

__all__ = ["Delivery", "OnMessages", "PullConsumer"]

log = logging.getLogger("parley.messaging")

#: A standing pull request expires after this long (the server then answers 408).
PULL_EXPIRES: Final = 30.0
#: The server sends an idle heartbeat this often while a pull request is standing.
PULL_HEARTBEAT: Final = 5.0

_STATUS: Final = "Status"
_HEARTBEAT: Final = "100"
_REQUEST_TIMEOUT: Final = "408"
_PENDING_MESSAGES: Final = "Nats-Pending-Messages"


class Delivery:
    """The ack token of one received JetStream message. Hashable, compared by identity.

    Opaque to the node except for a few read-only facts about the delivery.
    """

    __slots__ = ("_msg", "_seq")

    def __init__(self, msg: Any, seq: int | str) -> None:
        self._msg = msg
        self._seq = seq

    @property
    def subject(self) -> str:
        """The subject the message was published on (``parley.p2p.<recipient>.<sender>``)."""
        return str(self._msg.subject)

    @property
    def headers(self) -> dict[str, str] | None:
        """The message's NATS headers (its signature, ``Parley-Sig``, among them)."""
        headers: dict[str, str] | None = self._msg.headers
        return headers

    @property
    def sender(self) -> str:
        """The sending node's name, from the subject."""
        return self.subject.rsplit(".", 1)[-1]

    @property
    def stream_sequence(self) -> int:
        """The message's sequence number in the recipient's stream."""
        return int(self._msg.metadata.sequence.stream)

    @property
    def num_delivered(self) -> int:
        """How many times the message has been delivered (1 on the first delivery)."""
        return int(self._msg.metadata.num_delivered)

    def __repr__(self) -> str:
        return f"<Delivery {self.subject} seq={self._seq}>"


def _stream_seq(reply: str) -> int | str:
    """The stream sequence from a JetStream ack subject, or the subject itself if not parseable.

    ``$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>...`` (v1) or
    ``$JS.ACK.<domain>.<account>.<stream>.<consumer>.<delivered>.<sseq>...`` (v2).
    """
    tokens = reply.split(".")
    try:
        return int(tokens[5] if len(tokens) == 9 else tokens[7])
    except (IndexError, ValueError):
        return reply


OnMessages = Callable[[list[tuple[bytes, Delivery]]], None]


class PullConsumer:
    """Receives a node's messages through its durable consumer; acks and NAKs them.

    Owned by the bridge; every method runs on the bridge's loop thread.

    Args:
        node: this node's name.
        on_messages: called with each batch of received ``(data, delivery)`` pairs; must not block.
        fetch_batch: how many messages the standing pull requests ask for; topped up at half.
        ack_wait: seconds after which JetStream redelivers a message that was not acked.
        max_ack_pending: at most this many delivered, unacked messages; then delivery pauses.
        reclaim_on_start: at start, take over deliveries left unacked by a dead incarnation.
        ensure_stream: creates a node's stream if needed (the supervisor re-checks this node's).
        spawn: runs a coroutine as a task the bridge waits for at stop.
    """

    def __init__(
        self,
        node: str,
        *,
        on_messages: OnMessages,
        fetch_batch: int,
        ack_wait: float,
        max_ack_pending: int,
        reclaim_on_start: bool,
        ensure_stream: Callable[[str], Awaitable[None]],
        spawn: Callable[[Awaitable[Any]], None],
    ) -> None:
        self._node = node
        self._stream = stream_name(node)
        self._consumer = consumer_name(node)
        self._on_messages = on_messages
        self._batch = fetch_batch
        self._threshold = fetch_batch // 2
        self._ack_wait = ack_wait
        self._max_ack_pending = max_ack_pending
        self._reclaim_on_start = reclaim_on_start
        self._ensure_stream = ensure_stream
        self._spawn = spawn

        self._nc: Any = None
        self._js: Any = None
        self._inbox = ""
        self._next_subject = ""
        self._receiving = False
        self._outstanding = 0
        self._last_activity = 0.0
        self._failures = 0
        self._kick = asyncio.Event()  # bound to the loop at its first wait, on the loop thread
        self._supervisor: asyncio.Task[None] | None = None
        self._inbox_sub: Any = None
        self._buffer: list[tuple[bytes, Delivery]] = []
        self._late: list[Delivery] = []
        self._unacked: dict[int | str, Delivery] = {}
        self._ack_backlog: list[Delivery] = []

    @property
    def receiving(self) -> bool:
        """Whether :meth:`start` succeeded and :meth:`stop` has not been called."""
        return self._receiving

    # ------------------------------------------------------------------ start / stop

    async def start(self, nc: Any, js: Any, *, flush_timeout: float) -> None:
        """Ensure the consumer (reclaiming if asked), subscribe the inbox, issue the pull.

        The node's stream must exist already.

        Args:
            nc: the bridge's connected NATS client.
            js: its JetStream context.
            flush_timeout: bound on the round trip that confirms the subscription and the pull.
        """
        self._nc, self._js = nc, js
        try:
            await self._ensure_consumer(reclaim=self._reclaim_on_start)
            self._inbox = nc.new_inbox()
            self._next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{self._stream}.{self._consumer}"
            self._inbox_sub = await nc.subscribe(self._inbox, cb=self._on_pull_msg)
            self._receiving = True
            self._last_activity = time.monotonic()
            await self._pull()
            await nc.flush(timeout=flush_timeout)
            self._supervisor = asyncio.get_running_loop().create_task(self._supervise())
        except BaseException:
            self._receiving = False
            raise

    async def stop(self, time_left: Callable[[], float]) -> None:
        """Stop receiving: end the supervisor, unsubscribe the inbox and drain it.

        Whatever the server sent before it saw the UNSUB is kept for :meth:`nak_unacked`.

        Args:
            time_left: the seconds left of the bridge's stop budget.
        """
        self._receiving = False
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        if self._inbox_sub is not None and self._nc.is_connected:
            try:
                await asyncio.wait_for(self._inbox_sub.drain(), time_left())
            except Exception as exc:
                log.debug("%s: draining the pull inbox failed: %r", self._node, exc)

    async def nak_unacked(self) -> None:
        """NAK every message received but not acked, so the next incarnation gets it at once."""
        unacked = [d for _, d in self._buffer] + self._late + list(self._unacked.values())
        self._buffer.clear()
        self._late.clear()
        self._unacked.clear()
        if unacked and self._nc.is_connected:
            log.info("%s: NAK %d unacked messages at stop", self._node, len(unacked))
            await self._nak_all(unacked)

    def on_reconnected(self) -> None:
        """The standing pull requests died with the old connection; the server may be new."""
        self._outstanding = 0
        self._recover()

    # ------------------------------------------------------------------ JetStream setup

    async def _ensure_consumer(self, *, reclaim: bool = False) -> None:
        """Create (or update) the durable consumer; with ``reclaim``, take over its deliveries.

        JetStream redelivers an unacked message only after ``ack_wait``, even when the connection
        that received it is gone (nats-server#4627, #4716), so a node restarted after a crash would
        wait that long for the messages it had in flight. A node runs as one process, so at start
        any delivered-but-unacked message belongs to a dead incarnation: the consumer is deleted
        and created again. On a work-queue stream the messages still stored are exactly the
        unacked ones, and the new consumer (deliver all) delivers them at once. Only the
        redelivery counters (``num_delivered``) start again from 1.

        Args:
            reclaim: recreate the consumer if it has unacked deliveries.
        """
        if reclaim:
            try:
                info = await self._js.consumer_info(self._stream, self._consumer)
            except nats.js.errors.NotFoundError:
                info = None
            if info is not None and (info.num_ack_pending or 0) > 0:
                log.info(
                    "%s: %d messages delivered before and never acked; recreating consumer %s "
                    "so that they are delivered again now",
                    self._node,
                    info.num_ack_pending,
                    self._consumer,
                )
                with contextlib.suppress(nats.js.errors.NotFoundError):
                    await self._js.delete_consumer(self._stream, self._consumer)
        config = consumer_config(self._node, self._ack_wait, self._max_ack_pending)
        await self._js.add_consumer(self._stream, config)

    # ------------------------------------------------------------------ receiving

    async def _pull(self) -> None:
        """Top the standing pull requests up to ``fetch_batch`` messages if below half."""
        nc = self._nc
        if not self._receiving or not nc.is_connected or self._outstanding > self._threshold:
            return
        want = self._batch - self._outstanding
        self._outstanding += want
        request = {
            "batch": want,
            "expires": int(PULL_EXPIRES * 1e9),
            "idle_heartbeat": int(PULL_HEARTBEAT * 1e9),
        }
        try:
            await nc.publish(self._next_subject, json.dumps(request).encode(), reply=self._inbox)
        except Exception as exc:
            self._outstanding -= want
            log.warning("%s: pull request failed: %r", self._node, exc)
            self._recover()

    async def _on_pull_msg(self, msg: Any) -> None:
        """The inbox subscription's callback: never blocks, never waits on the network."""
        self._last_activity = time.monotonic()
        headers = msg.headers
        status = headers.get(_STATUS) if headers else None
        if status:
            self._on_status(status, headers)
        else:
            self._outstanding = max(0, self._outstanding - 1)
            delivery = Delivery(msg, _stream_seq(msg.reply))
            if not self._receiving:
                self._late.append(delivery)
                return
            self._failures = 0
            if not self._buffer:
                asyncio.get_running_loop().call_soon(self._flush)
            self._buffer.append((msg.data, delivery))
        if self._outstanding <= self._threshold:
            await self._pull()

    def _on_status(self, status: str, headers: dict[str, str]) -> None:
        if status == _HEARTBEAT:
            self._failures = 0
            return
        pending = headers.get(_PENDING_MESSAGES)
        if pending is not None:
            # The request ended (408: expired; 409: e.g. "Exceeded MaxWaiting") with this many
            # of its messages undelivered.
            with contextlib.suppress(ValueError):
                self._outstanding = max(0, self._outstanding - int(pending))
        if status == _REQUEST_TIMEOUT:
            self._failures = 0
            return
        description = headers.get("Description") or next(
            (v for k, v in headers.items() if str(k).endswith("DESCRIPTION")), ""
        )
        # 409 Consumer Deleted / Leadership Change / Server Shutdown, 503, ...: start over.
        log.warning(
            "%s: pull status %s %s; re-checking the consumer", self._node, status, description
        )
        self._failures += 1
        self._recover()

    def _flush(self) -> None:
        batch, self._buffer = self._buffer, []
        if not batch:
            return
        if not self._receiving:
            self._late.extend(d for _, d in batch)
            return
        for _, delivery in batch:
            self._unacked[delivery._seq] = delivery
        try:
            self._on_messages(batch)
        except Exception:
            log.exception(
                "%s: on_messages raised; %d messages will be redelivered", self._node, len(batch)
            )

    def _recover(self) -> None:
        """Ask the supervisor to re-check the consumer and re-issue the pull."""
        self._kick.set()

    async def _supervise(self) -> None:
        """Keep the pull alive: after reconnects, status errors and missing heartbeats."""
        kick = self._kick
        while self._receiving:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(kick.wait(), PULL_HEARTBEAT)
            kicked = kick.is_set()
            kick.clear()
            silent = time.monotonic() - self._last_activity > 2 * PULL_HEARTBEAT
            if not (kicked or silent) or not self._receiving or not self._nc.is_connected:
                continue
            if self._failures:
                await asyncio.sleep(min(5.0, 0.05 * 2 ** min(self._failures, 7)))
            try:
                await self._ensure_stream(self._node)
                await self._ensure_consumer()
            except Exception as exc:
                self._failures += 1
                log.warning("%s: consumer check failed (%r); will retry", self._node, exc)
                kick.set()
                continue
            if silent:
                log.info("%s: no heartbeat from the pull; re-issuing it", self._node)
            self._outstanding = 0
            self._last_activity = time.monotonic()
            await self._pull()

    async def _nak_all(self, deliveries: list[Delivery]) -> None:
        for delivery in deliveries:
            try:
                await delivery._msg.nak()
            except Exception as exc:
                log.debug("%s: nak failed: %r", self._node, exc)

    # ------------------------------------------------------------------ acks

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        """Ack ``deliveries`` (fire-and-forget); on the loop thread.

        One task acks everything asked for in this loop iteration (a task per call cost more than
        the acks themselves under load).

        Args:
            deliveries: tokens received through ``on_messages``.
        """
        for delivery in deliveries:
            self._unacked.pop(delivery._seq, None)
        if not self._ack_backlog:
            self._spawn(self._ack_backlogged())
        self._ack_backlog.extend(deliveries)

    async def _ack_backlogged(self) -> None:
        deliveries, self._ack_backlog = self._ack_backlog, []
        await self._ack_all(deliveries)

    async def _ack_all(self, deliveries: list[Delivery]) -> None:
        for delivery in deliveries:
            try:
                await delivery._msg.ack()
            except Exception as exc:
                log.warning("%s: ack of %r failed: %r", self._node, delivery, exc)

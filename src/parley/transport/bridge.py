"""The node's NATS bridge: the only NATS connection of a node, owned by one asyncio loop thread.

Every other thread talks to :class:`NatsBridge` through thread-safe methods that *schedule* work on
the loop (``call_soon_threadsafe`` / ``run_coroutine_threadsafe``) and return at once, except
:meth:`~NatsBridge.start`, :meth:`~NatsBridge.stop`, :meth:`~NatsBridge.subscribe` and
:meth:`~NatsBridge.request`, which block their caller (never the loop). Callbacks into the rest
of the node (``on_messages``, publish ``done``, subscription handlers) are plain function calls
made on the loop thread; they must not block (the node's callbacks put items on queues).

Wire layout (DESIGN.md §6)
--------------------------
* Each node ``N`` has a JetStream stream ``PARLEY_N`` over ``parley.p2p.N.>``: file storage,
  work-queue retention (a message is removed once acked), ``duplicate_window`` for server-side
  dedup of ``Nats-Msg-Id``. Senders publish to ``parley.p2p.<recipient>.<sender>``.
* The stream is created idempotently, with the configuration of :func:`stream_config`, by its node
  at start **and by any sender whose publish finds it missing** (``NoStreamResponseError``), so
  messages to a node that is down or never ran wait in its stream.
* Each node has one durable pull consumer ``parley-N`` with explicit acks.

Receiving: a continuous pull, not ``fetch()`` and not a push consumer
---------------------------------------------------------------------
Measured on this box (2 vCPU VM, loopback, 128 B messages, one sender awaiting each
``js.publish``; time from publish to the consumer's callback, p50 over 300 messages; then 10,000
messages published with ``publish_async``, time until all were received):

====================================================  ==============  ===================
consumer style                                        1 msg, p50       10,000 msgs
====================================================  ==============  ===================
pull, ``fetch(256, timeout=T)`` loop, T = 5 ms..5 s   0.40-0.65 ms     15k-21k msgs/s
durable push, manual ack, flow control                0.25-0.35 ms     30k-33k msgs/s
pull, continuous (standing requests, below)           0.34 ms          23k-27k msgs/s
====================================================  ==============  ===================

(``fetch``'s single-message latency does not depend on its timeout: nats-py 2.16 sends its first
request with ``no_wait`` *and* ``expires``, which the server holds until the first message and then
ends at once. Each ``fetch`` still costs a request/response round and a JSON request, which is
what limits it.)

The bridge uses the **continuous pull** — what the current Go/JS clients call ``Consume()``: one
inbox subscription; pull requests for ``fetch_batch`` messages (``expires`` 30 s, idle heartbeat
5 s) are kept standing on the server, and a new request tops the budget up whenever fewer than
half of the requested messages are still outstanding. Every message is handed over the moment it
arrives (latency like push), a burst is pulled as fast as the server sends it (throughput within
~20 % of push), and the consumer stays a *pull* consumer: no deliver subject or interest
tracking, no flow-control protocol, and the client alone decides how much it asks for (the server
bounds unacked messages by ``max_ack_pending``). A push consumer was a little faster, but would
add flow control and interest semantics to get right across reconnects for ~0.05 ms per hop.

Liveness: the server sends an idle heartbeat every 5 s while a request is standing, and answers
an expired request with ``408`` and the number of messages it did not deliver. A supervisor task
re-checks (creates if needed) the stream and the consumer and re-issues the pull after a
reconnect, after an unexpected status (``409`` consumer deleted, leadership change, ...), or when
nothing at all arrived for two heartbeat intervals (the standing requests were lost, e.g. the
server restarted while the TCP connection survived), backing off on repeated failures. The receive
side never dies of a connection error.

Messages arriving together are handed to ``on_messages`` as one batch: the subscription's callback
only appends to a buffer and, for the first message of a batch, schedules a flush with
``loop.call_soon``, which runs after the client has dispatched everything already read from the
socket.

Acks are fire-and-forget core publishes to the message's reply subject, coalesced by the client's
flusher; :meth:`NatsBridge.stop` waits for them. Messages handed over but not acked when the
bridge stops are NAKed. After a crash nothing NAKs them, and JetStream would redeliver them only
after ``ack_wait`` (it does not redeliver when a connection goes away: nats-server#4627, #4716).
So at start, if the node's consumer still has unacked deliveries (they can only belong to a dead
incarnation: a node is one process), the bridge deletes and recreates the consumer; on a
work-queue stream the stored messages are exactly the unacked ones, and the new consumer delivers
them at once (``reclaim_on_start``; only ``num_delivered`` restarts from 1).

Publishing is pipelined with ``js.publish_async`` (all messages of a :meth:`NatsBridge.publish`
call in flight together) and waits for every JetStream ack, bounded by ``publish_timeout``.
While the connection is down, publishes are buffered by the client (up to its 2 MB pending
buffer) and ``done`` gets a :class:`MessagingError` at the timeout; the buffered messages may still
be stored after the reconnect, which is harmless: the caller's retry reuses the same msg ids.

Measured through this bridge (two node processes on one server, default ``sync_interval``): a
4-message ping-pong (4 publish->on_messages hops, driven from a non-loop thread) p50 2.0-2.2 ms,
p90 2.3-2.8 ms, about 0.5 ms a hop (1.7 ms when driven from the loop thread itself); 10,000
messages in one ``publish`` call, echoed back one by one: 13k-15k msgs/s each way. With
``sync_interval: always`` the ping-pong p50 is 3.3 ms and the echo 2.5k msgs/s.

Pitfalls handled here (see ``shared/reference/libraries.md`` §2): the first ``nats.connect``
retries for ~120 s whatever ``allow_reconnect`` says, so it is wrapped in ``asyncio.wait_for``;
after connecting the client reconnects forever (``max_reconnect_attempts=-1``); ``publish`` only
buffers, so stopping flushes and drains; subscription callbacks run one at a time per
subscription, so none of ours blocks or waits on the network.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Future as ConcurrentFuture
from typing import Any, Final, TypeVar

import nats
import nats.errors
import nats.js.errors
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)

from parley.engine.outbox import Outgoing
from parley.protocol.errors import ParleyError

__all__ = [
    "Delivery",
    "MessagingError",
    "NatsBridge",
    "NoResponderError",
    "Outgoing",
    "RequestTimeoutError",
    "consumer_name",
    "stream_config",
    "stream_name",
    "subject_for",
    "validate_node_name",
]

log = logging.getLogger("parley.messaging")

T = TypeVar("T")

_NODE_NAME: Final = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
SUBJECT_PREFIX: Final = "parley.p2p"

#: A standing pull request expires after this long (the server then answers 408).
PULL_EXPIRES: Final = 30.0
#: The server sends an idle heartbeat this often while a pull request is standing.
PULL_HEARTBEAT: Final = 5.0
#: Seconds between reconnect attempts once connected (the first connect is bounded separately).
RECONNECT_TIME_WAIT: Final = 0.5
#: How often a publish whose recipient stream was missing is retried after creating the stream.
_NO_STREAM_RETRIES: Final = 3
#: JetStream's error code for "stream name already in use with a different configuration".
_STREAM_NAME_IN_USE: Final = 10058

_STATUS: Final = "Status"
_HEARTBEAT: Final = "100"
_REQUEST_TIMEOUT: Final = "408"
_PENDING_MESSAGES: Final = "Nats-Pending-Messages"


# ------------------------------------------------------------------------------------------
# Names and configuration shared by every node (a sender creates a missing recipient stream
# with exactly the configuration the recipient itself uses)
# ------------------------------------------------------------------------------------------


_VALID_NAMES: set[str] = set()


def validate_node_name(node: str) -> str:
    """Return ``node`` if it is a valid node name (``[A-Za-z0-9_-]{1,128}``), else ValueError."""
    if node in _VALID_NAMES:
        return node
    if not isinstance(node, str) or not _NODE_NAME.match(node):
        raise ValueError(f"invalid node name {node!r}: use 1-128 characters from A-Z a-z 0-9 _ -")
    if len(_VALID_NAMES) < 10_000:
        _VALID_NAMES.add(node)
    return node


def stream_name(node: str) -> str:
    """The JetStream stream that holds the messages for ``node``."""
    return f"PARLEY_{validate_node_name(node)}"


def consumer_name(node: str) -> str:
    """The durable consumer through which ``node`` receives its messages."""
    return f"parley-{validate_node_name(node)}"


def subject_for(recipient: str, sender: str) -> str:
    """The subject a message from ``sender`` to ``recipient`` is published on."""
    return f"{SUBJECT_PREFIX}.{validate_node_name(recipient)}.{validate_node_name(sender)}"


def stream_config(node: str, duplicate_window: float) -> StreamConfig:
    """The configuration of ``node``'s stream: the same whoever creates it."""
    return StreamConfig(
        name=stream_name(node),
        subjects=[f"{SUBJECT_PREFIX}.{node}.>"],
        retention=RetentionPolicy.WORK_QUEUE,
        storage=StorageType.FILE,
        duplicate_window=duplicate_window,
        num_replicas=1,
    )


def _consumer_config(node: str, ack_wait: float, max_ack_pending: int) -> ConsumerConfig:
    durable = consumer_name(node)
    return ConsumerConfig(
        name=durable,
        durable_name=durable,
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=ack_wait,
        # Unlimited redelivery. With a finite max_deliver, JetStream stops delivering a message
        # after that many attempts and only emits an advisory; on a work-queue stream the message
        # then sits in the stream forever, never delivered again: a session message silently
        # lost to its flow. Poison messages are the node's business instead: it acks and records
        # (or hospitalises) what it can't process, and ack_wait paces the redeliveries.
        max_deliver=-1,
        max_ack_pending=max_ack_pending,
    )


# ------------------------------------------------------------------------------------------
# Public value types
# ------------------------------------------------------------------------------------------


class MessagingError(ParleyError):
    """The NATS bridge could not connect, publish, or complete a request."""


class RequestTimeoutError(MessagingError):
    """A core NATS request got no reply in time."""


class NoResponderError(MessagingError):
    """A core NATS request found nobody subscribed to its subject."""


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


# ------------------------------------------------------------------------------------------
# The bridge
# ------------------------------------------------------------------------------------------

OnMessages = Callable[[list[tuple[bytes, Delivery]]], None]
Done = Callable[[BaseException | None], None]
Handler = Callable[[bytes, Callable[[bytes], None]], None]


class NatsBridge:
    """A node's connection to NATS: its JetStream inbox, its sends, core request/reply.

    :param node: this node's name (``[A-Za-z0-9_-]{1,128}``).
    :param url: the NATS server(s) to connect to.
    :param on_messages: called on the loop thread with each batch of received messages as
        ``(data, delivery)`` pairs; must not block. Ack each ``delivery`` with :meth:`ack` once the
        node has durably processed it; unacked messages are delivered again.
    :param connect_timeout: bound on the first connect (and on start-up as a whole, roughly).
    :param fetch_batch: how many messages the standing pull requests ask for (the client-side
        budget of delivered-but-not-yet-handed-over messages); topped up at half.
    :param ack_wait: seconds after which JetStream redelivers a message that was not acked.
    :param max_ack_pending: at most this many delivered, unacked messages; then delivery pauses.
    :param duplicate_window: seconds during which JetStream drops a repeated ``Nats-Msg-Id``.
        Must be the same on every node (it is part of every node's stream configuration).
    :param publish_timeout: bound on one :meth:`publish` call, JetStream acks included.
    :param reclaim_on_start: at start, take over deliveries left unacked by a previous (dead)
        incarnation of this node so that they come again at once, not after ``ack_wait``.
    """

    def __init__(
        self,
        node: str,
        url: str,
        *,
        on_messages: OnMessages,
        connect_timeout: float = 5.0,
        fetch_batch: int = 256,
        ack_wait: float = 60.0,
        max_ack_pending: int = 20_000,
        duplicate_window: float = 120.0,
        publish_timeout: float = 10.0,
        reclaim_on_start: bool = True,
    ) -> None:
        self.node = validate_node_name(node)
        self.url = url
        if fetch_batch < 1:
            raise ValueError("fetch_batch must be at least 1")
        self._on_messages = on_messages
        self._connect_timeout = connect_timeout
        self._batch = fetch_batch
        self._threshold = fetch_batch // 2
        self._ack_wait = ack_wait
        self._max_ack_pending = max_ack_pending
        self._duplicate_window = duplicate_window
        self._publish_timeout = publish_timeout
        self._reclaim_on_start = reclaim_on_start
        self._stream = stream_name(node)
        self._consumer = consumer_name(node)

        # Owned by the caller threads (guarded by _lock).
        self._lock = threading.Lock()
        self._state = "new"  # new -> running -> stopped
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

        # Owned by the loop thread.
        self._nc: Any = None
        self._js: Any = None
        self._inbox = ""
        self._next_subject = ""
        self._receiving = False
        self._outstanding = 0
        self._last_activity = 0.0
        self._failures = 0
        self._kick: asyncio.Event | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._inbox_sub: Any = None
        self._closing = False
        self._buffer: list[tuple[bytes, Delivery]] = []
        self._late: list[Delivery] = []
        self._unacked: dict[int | str, Delivery] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._ack_backlog: list[Delivery] = []
        self._publish_backlog: list[tuple[list[Outgoing], Done]] = []

    # ------------------------------------------------------------------ lifecycle

    @property
    def running(self) -> bool:
        """Whether :meth:`start` succeeded and :meth:`stop` has not been called."""
        return self._state == "running"

    def start(self) -> None:
        """Connect, ensure this node's stream and consumer, start receiving. Blocks until ready.

        Raises :class:`MessagingError` within about ``connect_timeout`` if no server answers.
        """
        with self._lock:
            if self._state != "new":
                raise MessagingError(f"bridge for {self.node} was already started")
            loop = asyncio.new_event_loop()
            ready = threading.Event()

            def run() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(ready.set)
                loop.run_forever()

            thread = threading.Thread(target=run, name=f"parley-messaging-{self.node}", daemon=True)
            thread.start()
            ready.wait()
            self._loop, self._thread = loop, thread
            future = asyncio.run_coroutine_threadsafe(self._start(), loop)
            try:
                # _start bounds the connect by connect_timeout and each JetStream API call by
                # its own timeout; this outer bound only guards against a wedged loop.
                future.result(self._connect_timeout + 30.0)
            except BaseException as exc:
                future.cancel()
                self._teardown_loop()
                self._state = "stopped"
                if isinstance(exc, MessagingError):
                    raise
                raise MessagingError(f"{self.node}: could not start messaging: {exc!r}") from exc
            self._state = "running"

    def stop(self, timeout: float = 10.0) -> None:
        """Stop receiving, flush pending publishes and acks, close the connection, end the thread.

        Idempotent. Must not be called from the loop thread (i.e. from a callback).
        """
        self._check_not_on_loop("stop")
        with self._lock:
            if self._state != "running":
                self._state = "stopped"
                return
            self._state = "stopped"
            loop = self._loop
            assert loop is not None
            future = asyncio.run_coroutine_threadsafe(self._shutdown(timeout), loop)
            try:
                future.result(timeout + 5.0)
            except Exception:
                log.exception("%s: error while stopping messaging", self.node)
            finally:
                self._teardown_loop()

    def __enter__(self) -> NatsBridge:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ thread-safe API

    def publish(self, messages: Sequence[Outgoing], done: Done) -> None:
        """Publish ``messages`` (pipelined) and call ``done(None)`` once all are stored.

        Returns at once. ``done(exc)`` (a :class:`MessagingError` whose cause is the NATS error)
        is called instead, once, on the first failure or when ``publish_timeout`` passes. ``done``
        runs on the loop thread, or on the caller's thread if the bridge is not running.
        """
        batch = list(messages)
        for m in batch:
            validate_node_name(m.recipient)
            validate_node_name(m.sender)
        loop = self._loop
        if self._state != "running" or loop is None:
            done(MessagingError(f"{self.node}: messaging is not running"))
            return
        try:
            loop.call_soon_threadsafe(self._start_publish, batch, done)
        except RuntimeError:  # the loop was closed meanwhile
            done(MessagingError(f"{self.node}: messaging is not running"))

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        """Acknowledge received messages (fire-and-forget). Errors are logged, never raised."""
        if not deliveries:
            return
        batch = list(deliveries)
        loop = self._loop
        if loop is None:
            log.warning("%s: %d acks before messaging started, dropped", self.node, len(batch))
            return
        try:  # accepted until the loop is gone: acks that arrive while stopping still go out
            loop.call_soon_threadsafe(self._ack_now, batch)
        except RuntimeError:
            log.warning("%s: %d acks after messaging stopped, dropped", self.node, len(batch))

    def subscribe(self, subject: str, handler: Handler) -> None:
        """Subscribe to a core NATS subject; ``handler(data, reply)`` is called on the loop.

        ``reply(bytes)`` answers the request the message carried (thread-safe; a no-op for
        messages without a reply subject). From another thread this blocks until the server has
        registered the subscription; from the loop thread it schedules it and returns.
        """
        loop = self._require_loop()
        coro = self._subscribe(subject, handler)
        if self._on_loop():
            self._spawn(coro)
            return
        self._wait(asyncio.run_coroutine_threadsafe(coro, loop), self._connect_timeout + 5.0)

    def request(self, subject: str, data: bytes, timeout: float) -> bytes:
        """Send a core NATS request and return the reply's payload. Blocking; thread-safe.

        Raises :class:`RequestTimeoutError`, :class:`NoResponderError` or
        :class:`MessagingError`; RuntimeError if called on the loop thread (it would deadlock).
        """
        self._check_not_on_loop("request")
        loop = self._require_loop()
        future = asyncio.run_coroutine_threadsafe(self._request(subject, data, timeout), loop)
        return self._wait(future, timeout + 5.0)

    # ------------------------------------------------------------------ loop: start / stop

    async def _start(self) -> None:
        self._kick = asyncio.Event()
        try:
            self._nc = await asyncio.wait_for(
                nats.connect(
                    self.url,
                    name=f"parley-{self.node}",
                    connect_timeout=self._connect_timeout,
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=RECONNECT_TIME_WAIT,
                    error_cb=self._error_cb,
                    disconnected_cb=self._disconnected_cb,
                    reconnected_cb=self._reconnected_cb,
                    closed_cb=self._closed_cb,
                ),
                self._connect_timeout,
            )
        except (TimeoutError, OSError, nats.errors.Error) as exc:
            raise MessagingError(
                f"{self.node}: no NATS server at {self.url} within {self._connect_timeout} s"
            ) from exc
        try:
            self._js = self._nc.jetstream()
            await self._ensure_stream(self.node)
            await self._ensure_consumer(reclaim=self._reclaim_on_start)
            self._inbox = self._nc.new_inbox()
            self._next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{self._stream}.{self._consumer}"
            self._inbox_sub = await self._nc.subscribe(self._inbox, cb=self._on_pull_msg)
            self._receiving = True
            self._last_activity = time.monotonic()
            await self._pull()
            await self._nc.flush(timeout=self._connect_timeout)
            self._supervisor = asyncio.get_running_loop().create_task(self._supervise())
        except BaseException as exc:
            self._receiving = False
            with contextlib.suppress(Exception):
                await self._nc.close()
            if isinstance(exc, MessagingError):
                raise
            raise MessagingError(f"{self.node}: could not set up JetStream: {exc!r}") from exc
        log.info("%s: messaging started on %s (stream %s)", self.node, self.url, self._stream)

    async def _shutdown(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout

        def left() -> float:
            return max(0.1, deadline - time.monotonic())

        self._closing = True
        self._receiving = False
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        nc = self._nc
        # Stop receiving: whatever the server sent before it saw the UNSUB goes to _late.
        if self._inbox_sub is not None and nc.is_connected:
            try:
                await asyncio.wait_for(self._inbox_sub.drain(), left())
            except Exception as exc:
                log.debug("%s: draining the pull inbox failed: %r", self.node, exc)
        # Let scheduled publishes, acks and replies finish (bounded).
        pending = {t for t in self._tasks if not t.done()}
        if pending:
            _, late = await asyncio.wait(pending, timeout=left())
            for task in late:
                task.cancel()
            if late:
                log.warning("%s: %d publish/ack tasks cancelled at stop", self.node, len(late))
        # Messages received but not acked: NAK them so the next incarnation gets them at once.
        unacked = [d for _, d in self._buffer] + self._late + list(self._unacked.values())
        self._buffer.clear()
        self._late.clear()
        self._unacked.clear()
        if unacked and nc.is_connected:
            log.info("%s: NAK %d unacked messages at stop", self.node, len(unacked))
            await self._nak_all(unacked)
        try:
            if nc.is_connected:
                await asyncio.wait_for(nc.drain(), left())
        except Exception as exc:
            log.warning("%s: drain failed (%r); closing", self.node, exc)
        finally:
            if not nc.is_closed:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(nc.close(), 2.0)
        log.info("%s: messaging stopped", self.node)

    def _teardown_loop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return

        async def cancel_all() -> None:
            me = asyncio.current_task()
            tasks = [t for t in asyncio.all_tasks() if t is not me]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        if not loop.is_closed():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(cancel_all(), loop).result(5.0)
            loop.call_soon_threadsafe(loop.stop)
        thread.join(10.0)
        if not thread.is_alive():
            loop.close()

    # ------------------------------------------------------------------ loop: JetStream setup

    async def _ensure_stream(self, node: str) -> None:
        """Create ``node``'s stream if needed, idempotently, with :func:`stream_config`."""
        config = stream_config(node, self._duplicate_window)
        try:
            await self._js.add_stream(config)
        except nats.js.errors.BadRequestError as exc:
            if exc.err_code != _STREAM_NAME_IN_USE:
                raise
            # It exists with another configuration (another node's duplicate_window, say).
            if node == self.node:
                log.warning("%s: stream %s differs from ours; updating it", self.node, config.name)
                try:
                    await self._js.update_stream(config)
                except nats.js.errors.APIError as update_exc:
                    log.warning("%s: could not update %s: %r", self.node, config.name, update_exc)

    async def _ensure_consumer(self, *, reclaim: bool = False) -> None:
        """Create (or update) the durable consumer; with ``reclaim``, take over its deliveries.

        JetStream redelivers an unacked message only after ``ack_wait``, even when the connection
        that received it is gone (nats-server#4627, #4716), so a node restarted after a crash would
        wait that long for the messages it had in flight. A node runs as one process, so at start
        any delivered-but-unacked message belongs to a dead incarnation: the consumer is deleted
        and created again. On a work-queue stream the messages still stored are exactly the
        unacked ones, and the new consumer (deliver all) delivers them at once. Only the
        redelivery counters (``num_delivered``) start again from 1.
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
                    self.node,
                    info.num_ack_pending,
                    self._consumer,
                )
                with contextlib.suppress(nats.js.errors.NotFoundError):
                    await self._js.delete_consumer(self._stream, self._consumer)
        config = _consumer_config(self.node, self._ack_wait, self._max_ack_pending)
        await self._js.add_consumer(self._stream, config)

    # ------------------------------------------------------------------ loop: receiving

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
            log.warning("%s: pull request failed: %r", self.node, exc)
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
            "%s: pull status %s %s; re-checking the consumer", self.node, status, description
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
                "%s: on_messages raised; %d messages will be redelivered", self.node, len(batch)
            )

    def _recover(self) -> None:
        """Ask the supervisor to re-check the consumer and re-issue the pull."""
        if self._kick is not None:
            self._kick.set()

    async def _supervise(self) -> None:
        """Keep the pull alive: after reconnects, status errors and missing heartbeats."""
        kick = self._kick
        assert kick is not None
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
                await self._ensure_stream(self.node)
                await self._ensure_consumer()
            except Exception as exc:
                self._failures += 1
                log.warning("%s: consumer check failed (%r); will retry", self.node, exc)
                kick.set()
                continue
            if silent:
                log.info("%s: no heartbeat from the pull; re-issuing it", self.node)
            self._outstanding = 0
            self._last_activity = time.monotonic()
            await self._pull()

    async def _nak_all(self, deliveries: list[Delivery]) -> None:
        for delivery in deliveries:
            try:
                await delivery._msg.nak()
            except Exception as exc:
                log.debug("%s: nak failed: %r", self.node, exc)

    # ------------------------------------------------------------------ loop: acks

    def _ack_now(self, deliveries: list[Delivery]) -> None:
        for delivery in deliveries:
            self._unacked.pop(delivery._seq, None)
        # One task acks everything asked for in this loop iteration (a task per call cost more
        # than the acks themselves under load).
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
                log.warning("%s: ack of %r failed: %r", self.node, delivery, exc)

    # ------------------------------------------------------------------ loop: publishing

    def _start_publish(self, batch: list[Outgoing], done: Done) -> None:
        if self._closing:
            self._call_done(done, MessagingError(f"{self.node}: messaging is stopping"))
            return
        # One task publishes everything asked for in this loop iteration, pipelined.
        if not self._publish_backlog:
            self._spawn(self._publish_backlogged())
        self._publish_backlog.append((batch, done))

    async def _publish_backlogged(self) -> None:
        items, self._publish_backlog = self._publish_backlog, []
        if len(items) == 1:
            await self._publish_batch(*items[0])
            return

        def all_done(error: BaseException | None) -> None:
            for _, done in items:
                self._call_done(done, error)

        await self._publish_batch([m for batch, _ in items for m in batch], all_done)

    async def _publish_batch(self, batch: list[Outgoing], done: Done) -> None:
        error: BaseException | None = None
        try:
            async with asyncio.timeout(self._publish_timeout):  # no extra task, unlike wait_for
                await self._publish_all(batch)
        except TimeoutError as exc:
            error = MessagingError(
                f"{self.node}: {len(batch)} messages not acknowledged by JetStream "
                f"within {self._publish_timeout} s"
            )
            error.__cause__ = exc
        except MessagingError as exc:
            error = exc
        except asyncio.CancelledError:
            self._call_done(done, MessagingError(f"{self.node}: messaging stopped"))
            raise
        except Exception as exc:
            error = MessagingError(f"{self.node}: publish failed: {exc!r}")
            error.__cause__ = exc
        self._call_done(done, error)

    def _call_done(self, done: Done, error: BaseException | None) -> None:
        try:
            done(error)
        except Exception:
            log.exception("%s: publish done-callback raised", self.node)

    async def _publish_all(self, batch: list[Outgoing]) -> None:
        pending = batch
        for _ in range(_NO_STREAM_RETRIES + 1):
            missing = await self._publish_once(pending)
            if not missing:
                return
            for recipient in sorted({m.recipient for m in missing}):
                log.info("%s: creating the missing stream of %s", self.node, recipient)
                await self._ensure_stream(recipient)
            pending = missing
        raise MessagingError(
            f"{self.node}: streams of {sorted({m.recipient for m in pending})} still missing"
        )

    async def _publish_once(self, batch: list[Outgoing]) -> list[Outgoing]:
        """Publish all of ``batch`` pipelined; wait for every ack.

        Returns the messages whose recipient stream does not exist; raises the first other error.
        """
        loop = asyncio.get_running_loop()
        missing: list[Outgoing] = []
        outcome: asyncio.Future[None] = loop.create_future()
        futures: list[asyncio.Future[Any]] = []
        remaining = len(batch)

        def settled(message: Outgoing, fut: asyncio.Future[Any]) -> None:
            nonlocal remaining
            if fut.cancelled():
                exc: BaseException | None = asyncio.CancelledError()
            else:
                exc = fut.exception()
            if outcome.done():
                return
            if isinstance(exc, nats.js.errors.NoStreamResponseError):
                missing.append(message)
            elif exc is not None:
                outcome.set_exception(
                    MessagingError(f"{self.node}: publish of {message.msg_id} failed: {exc!r}")
                )
                return
            remaining -= 1
            if remaining == 0:
                outcome.set_result(None)

        try:
            for message in batch:
                fut = await self._js.publish_async(
                    subject_for(message.recipient, message.sender),
                    message.data,
                    headers={"Nats-Msg-Id": message.msg_id},
                )
                futures.append(fut)
                fut.add_done_callback(lambda f, m=message: settled(m, f))
            if not batch:
                return []
            await outcome
        finally:
            # Release the client's in-flight slots of anything not acknowledged (timeout/error).
            for fut in futures:
                if not fut.done():
                    fut.cancel()
        return missing

    # ------------------------------------------------------------------ loop: core NATS

    async def _subscribe(self, subject: str, handler: Handler) -> None:
        nc = self._nc

        async def callback(msg: Any) -> None:
            reply_to: str = msg.reply

            def reply(data: bytes) -> None:
                self._reply(reply_to, data)

            try:
                handler(msg.data, reply)
            except Exception:
                log.exception("%s: handler for %s raised", self.node, subject)

        await nc.subscribe(subject, cb=callback)
        await nc.flush(timeout=self._connect_timeout)

    def _reply(self, subject: str, data: bytes) -> None:
        if not subject:
            log.debug("%s: reply to a message without a reply subject, ignored", self.node)
            return
        loop = self._loop
        if loop is None or loop.is_closed():
            log.warning("%s: reply after messaging stopped, dropped", self.node)
            return

        if self._on_loop():
            self._spawn(self._send_reply(subject, data))
            return
        try:
            loop.call_soon_threadsafe(self._start_reply, subject, data)
        except RuntimeError:
            log.warning("%s: reply after messaging stopped, dropped", self.node)

    def _start_reply(self, subject: str, data: bytes) -> None:
        self._spawn(self._send_reply(subject, data))

    async def _send_reply(self, subject: str, data: bytes) -> None:
        try:
            await self._nc.publish(subject, data)
        except Exception as exc:
            log.warning("%s: reply failed: %r", self.node, exc)

    async def _request(self, subject: str, data: bytes, timeout: float) -> bytes:
        try:
            msg = await self._nc.request(subject, data, timeout=timeout)
        except nats.errors.NoRespondersError as exc:
            raise NoResponderError(f"{self.node}: nobody listens on {subject}") from exc
        except nats.errors.TimeoutError as exc:
            raise RequestTimeoutError(f"{self.node}: no reply on {subject} in {timeout} s") from exc
        except nats.errors.Error as exc:
            raise MessagingError(f"{self.node}: request on {subject} failed: {exc!r}") from exc
        return bytes(msg.data)

    # ------------------------------------------------------------------ loop: NATS callbacks

    async def _error_cb(self, exc: Exception) -> None:
        log.warning("%s: NATS error: %r", self.node, exc)

    async def _disconnected_cb(self) -> None:
        if self._receiving:
            log.warning("%s: disconnected from NATS; reconnecting", self.node)
        else:
            log.info("%s: disconnected from NATS", self.node)

    async def _reconnected_cb(self) -> None:
        url = self._nc.connected_url
        log.warning("%s: reconnected to NATS at %s", self.node, getattr(url, "netloc", url))
        # Standing pull requests died with the old connection; the server may be new.
        self._outstanding = 0
        self._recover()

    async def _closed_cb(self) -> None:
        if self._receiving:
            log.error("%s: NATS connection closed while running", self.node)
        else:
            log.info("%s: NATS connection closed", self.node)

    # ------------------------------------------------------------------ helpers

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_loop(self) -> bool:
        return self._thread is not None and threading.current_thread() is self._thread

    def _check_not_on_loop(self, what: str) -> None:
        if self._on_loop():
            raise RuntimeError(f"NatsBridge.{what}() must not be called on the messaging loop")

    def _require_loop(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if self._state != "running" or loop is None:
            raise MessagingError(f"{self.node}: messaging is not running")
        return loop

    @staticmethod
    def _wait(future: ConcurrentFuture[T], timeout: float) -> T:
        try:
            return future.result(timeout)
        except TimeoutError as exc:
            future.cancel()
            raise MessagingError("the messaging loop did not answer in time") from exc

"""The node's NATS bridge: the only NATS connection of a node, owned by one asyncio loop thread.

Every other thread talks to :class:`NatsBridge` through thread-safe methods that *schedule* work on
the loop (``call_soon_threadsafe`` / ``run_coroutine_threadsafe``) and return at once, except
:meth:`~NatsBridge.start` and :meth:`~NatsBridge.stop`, which block their caller (never the loop).
Callbacks into the rest of the node (``on_messages``, publish ``done``) are plain function calls
made on the loop thread; they must not block (the node's callbacks put items on queues).

The bridge owns the loop thread and the connection (connect, reconnect, drain), and composes two
parts, each owning its own state, both running on the loop thread:

* :class:`~parley.transport.consumer.PullConsumer` receives: a continuous pull from the node's
  durable consumer, batches to ``on_messages``, acks, NAKs at stop, and at start the reclaim of
  what a dead incarnation left unacked.
* :class:`~parley.transport.publisher.Publisher` sends: pipelined publishes bounded by
  ``publish_timeout``; it creates streams, this node's at start and a recipient's found missing.

The names and configuration every node agrees on (the wire layout) are in
:mod:`parley.transport.names`.

Pitfalls handled here: the first ``nats.connect`` retries for ~120 s whatever ``allow_reconnect``
says, so it is wrapped in ``asyncio.wait_for``; after connecting, the client reconnects forever
(``max_reconnect_attempts=-1``); ``publish`` only buffers, so stopping flushes and drains;
subscription callbacks run one at a time per subscription, so none of ours blocks or waits on the
network.

The measurements behind these choices (consumer styles, latencies, throughputs) are in
``docs/performance.md``, "The NATS bridge: how it receives and what it costs".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Mapping, Sequence
from typing import Any, Final

import nats
import nats.errors

from parley.engine.outbox import Outgoing
from parley.transport.consumer import Delivery, OnMessages, PullConsumer
from parley.transport.errors import MessagingError
from parley.transport.names import (
    check_replicas,
    consumer_name,
    server_urls,
    stream_config,
    stream_name,
    subject_for,
    validate_node_name,
)
from parley.transport.publisher import Done, Publisher

__all__ = [
    "Delivery",
    "MessagingError",
    "NatsBridge",
    "Outgoing",
    "consumer_name",
    "stream_config",
    "stream_name",
    "subject_for",
    "validate_node_name",
]

log = logging.getLogger("parley.messaging")

#: Seconds between reconnect attempts once connected (the first connect is bounded separately).
RECONNECT_TIME_WAIT: Final = 0.5


class NatsBridge:
    """A node's connection to NATS: its JetStream inbox and its sends.

    Args:
        node: this node's name (``[A-Za-z0-9_-]{1,128}``).
        url: the NATS server to connect to, or several separated by commas (the servers of a
            cluster: the client tries them in turn and fails over between them).
        on_messages: called on the loop thread with each batch of received messages as
            ``(data, delivery)`` pairs; must not block. Ack each ``delivery`` with :meth:`ack` once
            the node has durably processed it; unacked messages are delivered again.
        connect_timeout: bound on the first connect (and on start-up as a whole, roughly).
        fetch_batch: how many messages the standing pull requests ask for (the client-side budget
            of delivered-but-not-yet-handed-over messages); topped up at half.
        ack_wait: seconds after which JetStream redelivers a message that was not acked.
        max_ack_pending: at most this many delivered, unacked messages; then delivery pauses.
        duplicate_window: seconds during which JetStream drops a repeated ``Nats-Msg-Id``. Must be
            the same on every node (it is part of every node's stream configuration).
        publish_timeout: bound on one :meth:`publish` call, JetStream acks included.
        stream_replicas: the replication factor of the streams this node creates (its own, and
            a recipient's found missing): 1 on a single server, 3 on a cluster. Must be the same
            on every node.
        reclaim_on_start: at start, take over deliveries left unacked by a previous (dead)
            incarnation of this node so that they come again at once, not after ``ack_wait``.
        connect_options: more keyword arguments for ``nats.connect`` (credentials, TLS, inbox
            prefix: see :meth:`parley.transport.security.NatsAuth.connect_options`); they
            override the bridge's own where both set one.

    Raises:
        ValueError: if ``node`` is not a valid node name, ``url`` names no server,
            ``fetch_batch`` is below 1 or ``stream_replicas`` is not 1 to 5.
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
        stream_replicas: int = 1,
        reclaim_on_start: bool = True,
        connect_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.node = validate_node_name(node)
        self.url = url
        self._servers = server_urls(url)
        check_replicas(stream_replicas)
        if fetch_batch < 1:
            raise ValueError("fetch_batch must be at least 1")
        self._connect_timeout = connect_timeout
        self._connect_options = dict(connect_options or {})
        self._stream = stream_name(node)

        # Owned by the caller threads (guarded by _lock).
        self._lock = threading.Lock()
        self._state = "new"  # new -> running -> stopped
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

        # Owned by the loop thread.
        self._nc: Any = None
        self._js: Any = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._publisher = Publisher(
            self.node,
            publish_timeout=publish_timeout,
            duplicate_window=duplicate_window,
            replicas=stream_replicas,
            spawn=self._spawn,
        )
        self._consumer = PullConsumer(
            self.node,
            on_messages=on_messages,
            fetch_batch=fetch_batch,
            ack_wait=ack_wait,
            max_ack_pending=max_ack_pending,
            reclaim_on_start=reclaim_on_start,
            ensure_stream=self._publisher.ensure_stream,
            spawn=self._spawn,
        )

    # ------------------------------------------------------------------ lifecycle

    @property
    def running(self) -> bool:
        """Whether :meth:`start` succeeded and :meth:`stop` has not been called."""
        return self._state == "running"

    @property
    def connected_url(self) -> str | None:
        """``scheme://host:port`` of the server the connection uses now (``None`` if none).

        Other connections of the node (RPC, the network map) connect there and learn the rest
        of a cluster from it, as this one did.
        """
        nc = self._nc
        url = getattr(nc, "connected_url", None) if nc is not None else None
        if url is None:
            return None
        return f"{url.scheme}://{url.netloc}"

    def start(self) -> None:
        """Connect, ensure this node's stream and consumer, start receiving. Blocks until ready.

        Raises:
            MessagingError: within about ``connect_timeout`` if no server answers, if JetStream
                could not be set up, or if the bridge was started before.
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

        Idempotent. Errors while stopping are logged, not raised.

        Args:
            timeout: bound on the whole shutdown on the loop (publishes and acks included).

        Raises:
            RuntimeError: if called from the loop thread (i.e. from a callback).
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
        is called instead, once, on the first failure or when ``publish_timeout`` passes.

        Args:
            messages: what to send; each is published to its recipient's subject.
            done: runs on the loop thread, or on the caller's thread if the bridge is not running.

        Raises:
            ValueError: if a message's recipient or sender is not a valid node name.
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
            loop.call_soon_threadsafe(self._publisher.publish, batch, done)
        except RuntimeError:  # the loop was closed meanwhile
            done(MessagingError(f"{self.node}: messaging is not running"))

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        """Acknowledge received messages (fire-and-forget). Errors are logged, never raised.

        Args:
            deliveries: tokens this bridge handed to ``on_messages``.
        """
        if not deliveries:
            return
        batch = list(deliveries)
        loop = self._loop
        if loop is None:
            log.warning("%s: %d acks before messaging started, dropped", self.node, len(batch))
            return
        try:  # accepted until the loop is gone: acks that arrive while stopping still go out
            loop.call_soon_threadsafe(self._consumer.ack, batch)
        except RuntimeError:
            log.warning("%s: %d acks after messaging stopped, dropped", self.node, len(batch))

    # ------------------------------------------------------------------ loop: start / stop

    async def _start(self) -> None:
        try:
            options: dict[str, Any] = {
                "name": f"parley-{self.node}",
                "connect_timeout": self._connect_timeout,
                "allow_reconnect": True,
                "max_reconnect_attempts": -1,
                "reconnect_time_wait": RECONNECT_TIME_WAIT,
                "error_cb": self._error_cb,
                "disconnected_cb": self._disconnected_cb,
                "reconnected_cb": self._reconnected_cb,
                "closed_cb": self._closed_cb,
            }
            options.update(self._connect_options)
            self._nc = await asyncio.wait_for(
                nats.connect(self._servers, **options), self._connect_timeout
            )
        except (TimeoutError, OSError, nats.errors.Error) as exc:
            raise MessagingError(
                f"{self.node}: no NATS server at {self.url} within {self._connect_timeout} s"
            ) from exc
        try:
            self._js = self._nc.jetstream()
            self._publisher.attach(self._js)
            await self._publisher.ensure_stream(self.node)
            await self._consumer.start(self._nc, self._js, flush_timeout=self._connect_timeout)
        except BaseException as exc:
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

        self._publisher.close()
        # Stop receiving: whatever the server sent before it saw the UNSUB is kept to be NAKed.
        await self._consumer.stop(left)
        # Let scheduled publishes and acks finish (bounded).
        pending = {t for t in self._tasks if not t.done()}
        if pending:
            _, late = await asyncio.wait(pending, timeout=left())
            for task in late:
                task.cancel()
            if late:
                log.warning("%s: %d publish/ack tasks cancelled at stop", self.node, len(late))
        # Messages received but not acked: NAK them so the next incarnation gets them at once.
        await self._consumer.nak_unacked()
        nc = self._nc
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

    # ------------------------------------------------------------------ loop: NATS callbacks

    async def _error_cb(self, exc: Exception) -> None:
        log.warning("%s: NATS error: %r", self.node, exc)

    async def _disconnected_cb(self) -> None:
        if self._consumer.receiving:
            log.warning("%s: disconnected from NATS; reconnecting", self.node)
        else:
            log.info("%s: disconnected from NATS", self.node)

    async def _reconnected_cb(self) -> None:
        url = self._nc.connected_url
        log.warning("%s: reconnected to NATS at %s", self.node, getattr(url, "netloc", url))
        self._consumer.on_reconnected()

    async def _closed_cb(self) -> None:
        if self._consumer.receiving:
            log.error("%s: NATS connection closed while running", self.node)
        else:
            log.info("%s: NATS connection closed", self.node)

    # ------------------------------------------------------------------ helpers

    def _spawn(self, coro: Awaitable[Any]) -> None:
        """Run ``coro`` as a task that :meth:`stop` waits for (bounded), on the loop thread."""
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _check_not_on_loop(self, what: str) -> None:
        if self._thread is not None and threading.current_thread() is self._thread:
            raise RuntimeError(f"NatsBridge.{what}() must not be called on the messaging loop")

"""The node's sends: pipelined JetStream publishes, and the streams they need.

Everything here runs on the bridge's loop thread. Measurements are in ``docs/performance.md``
("The NATS bridge: how it receives and what it costs").

Publishing is pipelined with ``js.publish_async`` (all messages of a publish call in flight
together; one task publishes everything asked for in one loop iteration) and waits for every
JetStream ack, bounded by ``publish_timeout``.

Streams are created here, idempotently and always with the configuration of
:func:`~parley.transport.names.stream_config`: this node's own at start (and whenever its consumer
is re-checked), and a recipient's when a publish finds it missing (``NoStreamResponseError``: a
node that is down or never ran), after which the messages to it are published again. So messages
to a node that is down wait in its stream.

While the connection is down, publishes are buffered by the client (up to its 2 MB pending
buffer) and ``done`` gets a :class:`MessagingError` at the timeout; the buffered messages may still
be stored after the reconnect, which is harmless: the caller's retry reuses the same msg ids.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

import nats.js.errors

from parley.engine.outbox import Outgoing
from parley.identity.signing import SIGNATURE_HEADER
from parley.transport.errors import MessagingError
from parley.transport.names import stream_config, subject_for

__all__ = ["Done", "Publisher"]

log = logging.getLogger("parley.messaging")

#: How often a publish whose recipient stream was missing is retried after creating the stream.
_NO_STREAM_RETRIES: Final = 6
#: The first wait before publishing again to a stream that did not answer, then doubled...
_NO_STREAM_FIRST_WAIT: Final = 0.1
#: ... up to this (0.1 + 0.2 + 0.4 + 0.8 + 1.6 + 2 s: about 5 s, within the publish timeout).
_NO_STREAM_MAX_WAIT: Final = 2.0
#: JetStream's error code for "stream name already in use with a different configuration".
_STREAM_NAME_IN_USE: Final = 10058

Done = Callable[[BaseException | None], None]


class Publisher:
    """Publishes batches of messages to JetStream and reports each batch's outcome once.

    Owned by the bridge; every method runs on the bridge's loop thread.

    Args:
        node: this node's name.
        publish_timeout: bound on one publish call, JetStream acks included.
        duplicate_window: seconds during which JetStream drops a repeated ``Nats-Msg-Id``; part
            of the configuration of every stream this node creates.
        replicas: the replication factor of every stream this node creates (3 on a cluster).
        spawn: runs a coroutine as a task the bridge waits for at stop.
    """

    def __init__(
        self,
        node: str,
        *,
        publish_timeout: float,
        duplicate_window: float,
        replicas: int = 1,
        spawn: Callable[[Awaitable[Any]], None],
    ) -> None:
        self._node = node
        self._replicas = replicas
        self._publish_timeout = publish_timeout
        self._duplicate_window = duplicate_window
        self._spawn = spawn
        self._js: Any = None
        self._closing = False
        self._backlog: list[tuple[list[Outgoing], Done]] = []

    def attach(self, js: Any) -> None:
        """Publish through ``js``, the JetStream context of the bridge's connection."""
        self._js = js

    async def ensure_stream(self, node: str) -> None:
        """Create ``node``'s stream if needed, idempotently, with :func:`stream_config`.

        A stream that exists with another configuration (another node's ``duplicate_window``,
        say) is left alone, unless it is this node's own: that one is updated to ours.

        Args:
            node: this node (at start, and when its consumer is re-checked), or a recipient
                whose stream a publish found missing.
        """
        config = stream_config(node, self._duplicate_window, self._replicas)
        try:
            await self._js.add_stream(config)
        except nats.js.errors.BadRequestError as exc:
            if exc.err_code != _STREAM_NAME_IN_USE:
                raise
            if node == self._node:
                log.warning("%s: stream %s differs from ours; updating it", self._node, config.name)
                try:
                    await self._js.update_stream(config)
                except nats.js.errors.APIError as update_exc:
                    log.warning("%s: could not update %s: %r", self._node, config.name, update_exc)

    def close(self) -> None:
        """Refuse further publishes (those already scheduled go on)."""
        self._closing = True

    def publish(self, batch: list[Outgoing], done: Done) -> None:
        """Schedule ``batch``; ``done(None)`` once all are stored, else ``done(MessagingError)``.

        Args:
            batch: the messages, their node names already validated.
            done: called exactly once, on the loop thread; exceptions it raises are logged.
        """
        if self._closing:
            self._call_done(done, MessagingError(f"{self._node}: messaging is stopping"))
            return
        # One task publishes everything asked for in this loop iteration, pipelined.
        if not self._backlog:
            self._spawn(self._publish_backlogged())
        self._backlog.append((batch, done))

    async def _publish_backlogged(self) -> None:
        items, self._backlog = self._backlog, []
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
                f"{self._node}: {len(batch)} messages not acknowledged by JetStream "
                f"within {self._publish_timeout} s"
            )
            error.__cause__ = exc
        except MessagingError as exc:
            error = exc
        except asyncio.CancelledError:
            self._call_done(done, MessagingError(f"{self._node}: messaging stopped"))
            raise
        except Exception as exc:
            error = MessagingError(f"{self._node}: publish failed: {exc!r}")
            error.__cause__ = exc
        self._call_done(done, error)

    def _call_done(self, done: Done, error: BaseException | None) -> None:
        try:
            done(error)
        except Exception:
            log.exception("%s: publish done-callback raised", self._node)

    async def _publish_all(self, batch: list[Outgoing]) -> None:
        """Publish ``batch``, creating missing recipient streams and publishing to them again.

        Raises:
            MessagingError: if a publish failed, or streams are still missing after the retries.
        """
        pending = batch
        delay = _NO_STREAM_FIRST_WAIT
        for attempt in range(_NO_STREAM_RETRIES + 1):
            missing = await self._publish_once(pending)
            if not missing:
                return
            if attempt == _NO_STREAM_RETRIES:
                break
            for recipient in sorted({m.recipient for m in missing}):
                if attempt == 0:
                    log.info(
                        "%s: no stream of node %s answered: creating it if it is missing (a "
                        "node that never started here: messages to it wait until it does; if "
                        "no node of that name exists, the name is misspelled: see what the "
                        "flow waits for with `node.flows()`)",
                        self._node,
                        recipient,
                    )
                try:
                    await self.ensure_stream(recipient)
                except Exception as exc:  # a cluster electing the stream's leader, say
                    log.info(
                        "%s: the stream of %s is not reachable yet: %r", self._node, recipient, exc
                    )
            # "No responders" also means a stream between leaders (a cluster fails over in a
            # few seconds): wait a little, longer each time, before publishing again.
            await asyncio.sleep(delay)
            delay = min(2 * delay, _NO_STREAM_MAX_WAIT)
            pending = missing
        raise MessagingError(
            f"{self._node}: streams of {sorted({m.recipient for m in pending})} still missing"
        )

    async def _publish_once(self, batch: list[Outgoing]) -> list[Outgoing]:
        """Publish all of ``batch`` pipelined; wait for every ack.

        Returns:
            The messages whose recipient stream does not exist.

        Raises:
            MessagingError: for the first other failure.
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
                    MessagingError(f"{self._node}: publish of {message.msg_id} failed: {exc!r}")
                )
                return
            remaining -= 1
            if remaining == 0:
                outcome.set_result(None)

        try:
            for message in batch:
                headers = {"Nats-Msg-Id": message.msg_id}
                if message.signature is not None:
                    headers[SIGNATURE_HEADER] = message.signature
                fut = await self._js.publish_async(
                    subject_for(message.recipient, message.sender), message.data, headers=headers
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

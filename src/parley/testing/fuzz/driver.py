"""The driver: a raw nats-py client that taps traffic, publishes hostile messages and reads
a node's consumer and stream."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

import nats
import nats.js.errors

from parley.identity.netmap import MapEntryError, NetworkMap
from parley.identity.signing import SIGNATURE_HEADER
from parley.testing.fuzz.corpus import Corpus, Message
from parley.transport.mapsync import list_entries
from parley.transport.names import SUBJECT_PREFIX, consumer_name, stream_name

T = TypeVar("T")


class Fuzzer:
    """A raw nats-py client on its own loop thread; every method blocks until done."""

    def __init__(self, url: str, *, timeout: float = 60.0, **connect_options: Any) -> None:
        self._timeout = timeout
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        options = {"no_echo": True, **connect_options}  # the tap must not see our own messages
        self._nc: Any = self._run(nats.connect(url, **options))
        self._js: Any = self._nc.jetstream()
        self._token = uuid.uuid4().hex[:8]
        self._count = 0

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout or self._timeout)

    def tap(self, corpus: Corpus) -> None:
        """Offer every message published on ``parley.p2p.>`` (by others) to ``corpus``."""

        async def on_message(msg: Any) -> None:
            headers = msg.headers or {}
            corpus.offer(
                Message(
                    msg.subject, msg.data, headers.get(SIGNATURE_HEADER), headers.get("Nats-Msg-Id")
                )
            )

        self._run(self._nc.subscribe(f"{SUBJECT_PREFIX}.>", cb=on_message))

    def network_map(self, operator_key: str) -> NetworkMap:
        """The network map as a node reads it from the bucket."""
        found = NetworkMap(operator_key)
        for data in self._run(list_entries(self._js)).values():
            try:
                found.accept(data)
            except MapEntryError:
                continue
        return found

    def publish(self, messages: Sequence[Message]) -> list[bool]:
        """Publish to JetStream, pipelined; returns, per message, whether JetStream dropped it as
        a duplicate id (a message without an id gets a fresh one)."""

        async def go(chunk: Sequence[Message]) -> list[bool]:
            futures = []
            for message in chunk:
                self._count += 1
                headers = {"Nats-Msg-Id": message.msg_id or f"fuzz-{self._token}-{self._count}"}
                if message.signature is not None:
                    headers[SIGNATURE_HEADER] = message.signature
                futures.append(
                    await self._js.publish_async(message.subject, message.data, headers=headers)
                )
            acks = await asyncio.gather(*futures)
            return [bool(ack.duplicate) for ack in acks]

        duplicates: list[bool] = []
        for start in range(0, len(messages), 500):
            duplicates += self._run(go(messages[start : start + 500]))
        return duplicates

    def consumer_state(self, node: str) -> tuple[int, int]:
        """``(num_ack_pending, num_pending)`` of ``node``'s durable consumer."""

        async def go() -> tuple[int, int]:
            info = await self._js.consumer_info(stream_name(node), consumer_name(node))
            return int(info.num_ack_pending), int(info.num_pending)

        return self._run(go())

    def stored(self, node: str) -> list[Message]:
        """The messages still in ``node``'s stream: not delivered yet, or delivered, not acked."""

        async def go() -> list[Message]:
            found: list[Message] = []
            seq, subjects = 1, f"{SUBJECT_PREFIX}.{node}.>"
            while True:
                try:
                    raw = await self._js.get_msg(stream_name(node), seq, subjects, next=True)
                except nats.js.errors.NotFoundError:
                    return found
                headers = raw.headers or {}
                signature, msg_id = headers.get(SIGNATURE_HEADER), headers.get("Nats-Msg-Id")
                found.append(Message(raw.subject, raw.data or b"", signature, msg_id))
                seq = raw.seq + 1

        return self._run(go())

    def close(self) -> None:
        self._run(self._nc.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

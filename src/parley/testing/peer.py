"""HandPeer: a node played by hand over a real NATS server.

For integration tests and benchmarks that need a counterparty whose every message they control:
it sends envelopes (well-formed or not) to a node's stream and collects, decoded, whatever the
node sends to it. It runs no flows.
"""

from __future__ import annotations

import queue
from collections.abc import Sequence
from concurrent.futures import Future
from types import TracebackType
from typing import Any, Self

from parley.identity.keys import KeyPair
from parley.identity.signing import MessageSigner
from parley.protocol.messages import Envelope, SessionMessage, decode_envelopes, encode_envelope
from parley.transport.bridge import NatsBridge, Outgoing

#: Messages per publish call (each call's messages are in flight together).
_CHUNK = 2000


class HandPeer:
    """A node called ``name`` whose messages are written by hand; see the module docstring."""

    def __init__(
        self,
        url: str,
        name: str,
        key: KeyPair | None = None,
        connect_options: dict[str, Any] | None = None,
    ) -> None:
        """Connect as node ``name``; with ``key``, every message it sends is signed with it.

        Args:
            url: the NATS server.
            name: the node this peer plays.
            key: its identity key (for a network with a map); ``None`` sends unsigned messages.
            connect_options: more keyword arguments for ``nats.connect``.
        """
        self.name = name
        self.inbox: queue.Queue[Envelope] = queue.Queue()
        self._sign = MessageSigner(key) if key is not None else None
        self.bridge = NatsBridge(
            name, url, on_messages=self._received, connect_options=connect_options
        )
        self.bridge.start()

    def _received(self, items: list[tuple[bytes, Any]]) -> None:
        for data, _ in items:
            for envelope in decode_envelopes(data):
                self.inbox.put(envelope)
        self.bridge.ack([delivery for _, delivery in items])

    def publish_raw(self, recipient: str, data: bytes, msg_id: str, timeout: float = 30) -> None:
        """Put ``data`` (any bytes, signed if the peer has a key) on ``recipient``'s stream."""
        self._publish([self._outgoing(recipient, msg_id, data)], timeout)

    def _outgoing(self, recipient: str, msg_id: str, data: bytes) -> Outgoing:
        signature = self._sign(data) if self._sign is not None else None
        return Outgoing(recipient, self.name, msg_id, data, signature)

    def send(self, recipient: str, body: SessionMessage, msg_id: str) -> None:
        """Send one session message to ``recipient`` under ``msg_id``."""
        self.send_many(recipient, [(msg_id, body)])

    def send_many(
        self, recipient: str, bodies: Sequence[tuple[str, SessionMessage]], timeout: float = 120
    ) -> None:
        """Send ``(msg_id, message)`` pairs, pipelined; returns once JetStream stored them."""
        for start in range(0, len(bodies), _CHUNK):
            messages = [
                self._outgoing(recipient, msg_id, self._encode(msg_id, recipient, body))
                for msg_id, body in bodies[start : start + _CHUNK]
            ]
            self._publish(messages, timeout)

    def _encode(self, msg_id: str, recipient: str, body: SessionMessage) -> bytes:
        return encode_envelope(Envelope(msg_id, self.name, recipient, body))

    def _publish(self, messages: list[Outgoing], timeout: float) -> None:
        done: Future[BaseException | None] = Future()
        self.bridge.publish(messages, done.set_result)
        error = done.result(timeout)
        if error is not None:
            raise error

    def next(self, timeout: float = 60.0) -> Envelope:
        """The next envelope sent to this peer (``queue.Empty`` after ``timeout`` seconds)."""
        return self.inbox.get(timeout=timeout)

    def close(self) -> None:
        self.bridge.stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


__all__ = ["HandPeer"]

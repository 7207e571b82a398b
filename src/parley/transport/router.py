"""The SessionRouter: checks and decodes inbound messages and routes them to their flow's shard.

It runs on the NATS bridge's loop thread: a separate actor would put one more thread hop on every
inbound message's path (measured: ~0.1-0.3 ms each on this machine), and routing never blocks.
Messages arrive in batches. Each one is first checked against the subject it came on
(``parley.p2p.<this node>.<sender>``, with a valid sender name), then decoded (whitelist codec,
bounded size); every envelope in it must name the subject's sender as its sender and this node
as its recipient. Then each envelope goes to the shard that owns its flow: for a session-init, the
responder's flow id derived from the init; for every other message, the flow id embedded in the
recipient session id. Nothing here touches the database: deduplication happens in the flows' own
state (sequence numbers) and, for session-inits, in the worker (the processed-inits table).

A message that fails a check is *refused*: acked (so it can't clog the consumer), dropped, logged
at WARNING with the reason, and counted in :attr:`SessionRouter.refused` by reason (see
:data:`REASONS`); no flow sees it.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from parley.engine.handles import flow_id_for, shard_of
from parley.protocol.errors import DeserializationError
from parley.protocol.messages import Envelope, decode_envelopes, is_node_name
from parley.transport.names import SUBJECT_PREFIX

#: Why a message can be refused, and what each reason means.
REASONS: Final = {
    "bad_subject": "the subject is not parley.p2p.<this node>.<valid sender name>",
    "unsigned": "the message carries no signature (Parley-Sig header)",
    "unknown_node": "the sender is not in the network map",
    "revoked_node": "the sender was revoked from the network",
    "bad_signature": "the signature is not the sender's over this payload",
    "undecodable": "not a well-formed envelope or batch (or over the size limit)",
    "subject_mismatch": "an envelope's sender is not the sender named by the subject",
    "wrong_recipient": "an envelope is addressed to another node",
}

#: Checks a message's signature: ``(sender, payload, headers) -> reason or None``.
Verify = Callable[[str, bytes, Mapping[str, str] | None], str | None]
#: Asks for the network map's entry of an unknown sender; calls back (on the loop) when done.
Lookup = Callable[[str, Callable[[], None]], None]

#: Messages from senders being looked up, held at most (beyond: refused at once).
MAX_AWAITING = 1000

log = logging.getLogger("parley.router")


class SharedDelivery:
    """One transport delivery that carried several envelopes."""

    __slots__ = ("delivery", "lock", "remaining")

    def __init__(self, delivery: Any, count: int) -> None:
        self.delivery = delivery
        self.remaining = count
        self.lock = threading.Lock()


class Part:
    """The ack token of one envelope of a batch: the delivery is acked when all parts are."""

    __slots__ = ("acked", "shared")

    def __init__(self, shared: SharedDelivery) -> None:
        self.shared = shared
        self.acked = False

    def release(self) -> Any | None:
        """Mark this part acked (again: no effect).

        Returns:
            The delivery to ack if this was the last of its parts to be acked, else ``None``.
        """
        with self.shared.lock:
            if self.acked:
                return None
            self.acked = True
            self.shared.remaining -= 1
            return self.shared.delivery if self.shared.remaining == 0 else None


def resolve_acks(tokens: Sequence[Any]) -> list[Any]:
    """The transport deliveries to ack for these tokens (parts of a batch count down first)."""
    deliveries = []
    for token in tokens:
        if isinstance(token, Part):
            delivery = token.release()
            if delivery is not None:
                deliveries.append(delivery)
        else:
            deliveries.append(token)
    return deliveries


class SessionRouter:
    """Decodes and routes inbound messages; see the module docstring."""

    def __init__(
        self,
        node: str,
        shards: int,
        deliver: Callable[[int, tuple[tuple[Envelope, Any], ...]], None],
        ack: Callable[[Sequence[Any]], None],
        *,
        max_size: int,
        verify: Verify | None = None,
        lookup: Lookup | None = None,
    ) -> None:
        """Route this node's messages to ``shards`` shards.

        Args:
            node: this node's name: the recipient of every message it accepts.
            shards: how many workers the flows are spread over.
            deliver: ``deliver(shard, ((envelope, ack token), ...))`` hands a batch to a worker;
                must not block.
            ack: acks the tokens of messages refused here.
            max_size: the largest message accepted for decoding, in bytes.
            verify: checks each message's signature before it is decoded (``None``: messages
                are not authenticated — a node without a network map).
            lookup: fetches the map entry of a sender ``verify`` does not know yet (a node
                admitted a moment ago); its messages wait for the answer, then are checked again.
        """
        self.node = node
        self.shards = shards
        self.deliver = deliver
        self.ack = ack
        self.max_size = max_size
        self._verify = verify
        self._lookup = lookup
        self._prefix = f"{SUBJECT_PREFIX}.{node}."
        #: Messages from senders being looked up, by sender.
        self._awaiting: dict[str, list[tuple[bytes, Any]]] = {}
        #: Guards ``_awaiting`` and ``refused``: a lookup's answer is routed on the map's thread.
        self._lock = threading.Lock()
        #: Messages refused so far, by reason (a key of :data:`REASONS`).
        self.refused: Counter[str] = Counter()

    def route(self, items: Sequence[tuple[bytes, Any]], *, looked_up: bool = False) -> None:
        """Check and decode ``(bytes, delivery)`` pairs and hand them to their workers.

        Never blocks. A delivery has the message's ``subject`` and ``headers``. Runs on the NATS
        loop thread, and on the network map's thread for messages that waited for a lookup.

        Args:
            items: the messages and their deliveries.
            looked_up: the senders' map entries were just fetched: an unknown sender is refused.
        """
        batches: dict[int, list[tuple[Envelope, Any]]] = defaultdict(list)
        for data, delivery in items:
            sender = self._sender_of(delivery.subject)
            if sender is None:
                self._refuse(delivery, "bad_subject", repr(delivery.subject[:200]))
                continue
            if self._verify is not None:
                refusal = self._verify(sender, data, delivery.headers)
                if (
                    refusal == "unknown_node"
                    and not looked_up
                    and self._await(sender, data, delivery)
                ):
                    continue
                if refusal is not None:
                    self._refuse(delivery, refusal, f"a message from {sender!r}")
                    continue
            try:
                envelopes = decode_envelopes(data, max_size=self.max_size)
            except DeserializationError as exc:
                self._refuse(delivery, "undecodable", f"{len(data)} bytes from {sender}: {exc}")
                continue
            wrong = self._misaddressed(envelopes, sender)
            if wrong is not None:
                self._refuse(delivery, *wrong)
                continue
            if len(envelopes) == 1:
                tokens: list[Any] = [delivery]
            else:  # the message is acked once every envelope in it has been
                shared = SharedDelivery(delivery, len(envelopes))
                tokens = [Part(shared) for _ in envelopes]
            for envelope, token in zip(envelopes, tokens, strict=True):
                batches[shard_of(flow_id_for(envelope), self.shards)].append((envelope, token))
        for shard, batch in batches.items():
            self.deliver(shard, tuple(batch))

    def _await(self, sender: str, data: bytes, delivery: Any) -> bool:
        """Hold a message from an unknown sender while its map entry is fetched (if room)."""
        if self._lookup is None:
            return False
        with self._lock:
            if sum(map(len, self._awaiting.values())) >= MAX_AWAITING:
                return False
            waiting = self._awaiting.get(sender)
            if waiting is not None:
                waiting.append((data, delivery))
                return True
            self._awaiting[sender] = [(data, delivery)]
        self._lookup(sender, lambda: self._looked_up(sender))
        return True

    def _looked_up(self, sender: str) -> None:
        with self._lock:
            waiting = self._awaiting.pop(sender, [])
        self.route(waiting, looked_up=True)

    def _sender_of(self, subject: str) -> str | None:
        """The sender named by ``subject`` if it is ``parley.p2p.<this node>.<valid name>``."""
        if not subject.startswith(self._prefix):
            return None
        sender = subject[len(self._prefix) :]
        return sender if is_node_name(sender) else None

    def _misaddressed(self, envelopes: list[Envelope], sender: str) -> tuple[str, str] | None:
        for envelope in envelopes:
            if envelope.sender != sender:
                detail = f"envelope {envelope.id!r} claims {envelope.sender!r}, subject {sender!r}"
                return "subject_mismatch", detail
            if envelope.recipient != self.node:
                detail = f"envelope {envelope.id!r} from {sender} is for {envelope.recipient!r}"
                return "wrong_recipient", detail
        return None

    def _refuse(self, delivery: Any, reason: str, detail: str) -> None:
        with self._lock:
            self.refused[reason] += 1
        log.warning("refused a message (%s): %s", reason, detail)
        self.ack([delivery])


__all__ = ["REASONS", "Part", "SessionRouter", "SharedDelivery", "resolve_acks"]

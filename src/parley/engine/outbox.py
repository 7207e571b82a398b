"""What a turn of flows sends, as the messages that carry it: one per recipient where it fits.

The envelopes that a host's flows send in one turn (a responder's Confirm, reply and End, say)
are grouped by recipient, and each group travels as one transport message: a single envelope as
it is, several as a batch (:func:`~parley.protocol.messages.encode_batch`). Batches are split so
that no message passes :data:`MAX_MESSAGE_BYTES` of payload or
:data:`~parley.protocol.messages.MAX_BATCH` envelopes. Every message goes out under a
deterministic id, so a retried turn re-sends the same messages under the same ids.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from parley.protocol.messages import MAX_BATCH, Envelope, encode_batch, encode_envelope

#: Largest message built from a batch of envelopes (well under NATS' 1 MiB payload limit).
MAX_MESSAGE_BYTES = 256 * 1024
#: What an envelope costs in a message besides its payloads (ids, names, CBOR framing).
_ENVELOPE_OVERHEAD = 256


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message to publish to ``recipient``'s stream."""

    recipient: str
    sender: str
    #: Deterministic id, sent as the ``Nats-Msg-Id`` header (server-side dedup).
    msg_id: str
    #: The encoded envelope or batch.
    data: bytes
    #: The sender's signature of ``data`` (the ``Parley-Sig`` header), if the node signs.
    signature: str | None = None


#: Signs a message's payload: returns the ``Parley-Sig`` header value.
Sign = Callable[[bytes], str]


def messages_for(
    outbox: Mapping[str, Sequence[Envelope]], sign: Sign | None = None
) -> list[Outgoing]:
    """The messages that carry ``outbox`` (envelopes by recipient, in sending order).

    Args:
        outbox: the envelopes to send, by recipient.
        sign: signs each message (``None``: messages go unsigned).
    """
    messages: list[Outgoing] = []
    for recipient, envelopes in outbox.items():
        for batch in _batches(envelopes):
            if len(batch) == 1:
                (envelope,) = batch
                msg_id, data = envelope.id, encode_envelope(envelope)
            else:
                msg_id, data = encode_batch(batch)
            signature = sign(data) if sign is not None else None
            messages.append(Outgoing(recipient, batch[0].sender, msg_id, data, signature))
    return messages


def _batches(envelopes: Sequence[Envelope]) -> list[list[Envelope]]:
    """Split envelopes into batches small enough for one message each (by payload size)."""
    batches: list[list[Envelope]] = [[]]
    size = 0
    for envelope in envelopes:
        weight = _weight(envelope)
        if batches[-1] and (size + weight > MAX_MESSAGE_BYTES or len(batches[-1]) >= MAX_BATCH):
            batches.append([])
            size = 0
        batches[-1].append(envelope)
        size += weight
    return batches


def _weight(envelope: Envelope) -> int:
    body = envelope.body
    payload = getattr(body, "payload", None) or getattr(body, "first_payload", None) or b""
    return _ENVELOPE_OVERHEAD + len(payload) + len(getattr(body, "exception", None) or b"")


__all__ = ["MAX_MESSAGE_BYTES", "Outgoing", "Sign", "messages_for"]

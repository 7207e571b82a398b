"""Wire session messages and the envelope that carries them between nodes.

Every message of an established session carries ``session`` (the *recipient's* session id) and,
except :class:`Reject`, a per-direction sequence number ``seq``. The initiator's :class:`Init` is
implicitly seq 0 of its direction and the responder's :class:`Confirm` (or :class:`Reject`) seq 0 of
the other; data, errors and the end follow from 1. Receivers consume messages strictly in sequence
order: they buffer early ones and drop (and ack) the ones they already consumed, so Parley does not
depend on FIFO delivery or on the transport's own deduplication.

The envelope is a CBOR map ``{v, id, sender, recipient, kind, body}``; ``id`` is the deterministic
message id (see :mod:`parley.protocol.ids`) that also travels as the ``Nats-Msg-Id`` header.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from parley.protocol import codec
from parley.protocol.errors import DeserializationError

#: Version of the envelope format.
WIRE_VERSION = 1

#: The rule for node names: 1-128 characters from ``A-Z a-z 0-9 _ -``, so that a name is always
#: one token of a NATS subject and a valid part of a JetStream stream name.
NODE_NAME = re.compile(r"[A-Za-z0-9_-]{1,128}")  # always used with fullmatch ("$" passes "\n")


#: Names already found valid (bounded: a cache, not a registry).
_VALID_NAMES: set[str] = set()


def is_node_name(name: object) -> bool:
    """Whether ``name`` is a valid node name (see :data:`NODE_NAME`)."""
    if not isinstance(name, str):
        return False  # before the set: a list or dict is not even hashable
    if name in _VALID_NAMES:
        return True
    if NODE_NAME.fullmatch(name) is None:
        return False
    if len(_VALID_NAMES) < 10_000:
        _VALID_NAMES.add(name)
    return True


@codec.serializable(name="p.FlowInfo")
@dataclass(frozen=True, slots=True)
class FlowInfo:
    """What a flow tells its counterparty about itself: its flow version and its app."""

    flow_version: int
    app: str


@codec.serializable(name="p.Init")
@dataclass(frozen=True, slots=True)
class Init:
    """Open a session: ask the recipient to start the responder registered for ``flow_class``."""

    initiator_session: str
    flow_class: str
    flow_version: int
    app: str
    first_payload: bytes | None = None


@codec.serializable(name="p.Confirm")
@dataclass(frozen=True, slots=True)
class Confirm:
    """The responder accepted the session; ``initiated_session`` is its end of it."""

    session: str
    initiated_session: str
    flow_version: int
    app: str


@codec.serializable(name="p.Data")
@dataclass(frozen=True, slots=True)
class Data:
    """One payload, encoded with the whitelist codec."""

    session: str
    seq: int
    payload: bytes


@codec.serializable(name="p.Error")
@dataclass(frozen=True, slots=True)
class Error:
    """The sender's flow failed. ``exception`` is an encoded FlowException, or ``None`` (hidden)."""

    session: str
    seq: int
    error_id: str
    exception: bytes | None = None


@codec.serializable(name="p.Reject")
@dataclass(frozen=True, slots=True)
class Reject:
    """The recipient node refused a session-init (unknown or unregistered flow, ...)."""

    session: str
    error_id: str
    reason: str


@codec.serializable(name="p.End")
@dataclass(frozen=True, slots=True)
class End:
    """The sender closed its end of the session; nothing more will come."""

    session: str
    seq: int


SessionMessage = Init | Confirm | Data | Error | Reject | End
ExistingSessionMessage = Confirm | Data | Error | Reject | End
#: Messages that are consumed in sequence order after the session is established.
Sequenced = Data | Error | End

KINDS: dict[type, str] = {
    Init: "init",
    Confirm: "confirm",
    Data: "data",
    Error: "error",
    Reject: "reject",
    End: "end",
}


def kind_of(message: SessionMessage) -> str:
    """Return the envelope ``kind`` of a session message."""
    return KINDS[type(message)]


@dataclass(frozen=True, slots=True)
class Envelope:
    """A session message addressed from one node to another."""

    id: str
    sender: str
    recipient: str
    body: SessionMessage

    @property
    def kind(self) -> str:
        return kind_of(self.body)


def encode_envelope(envelope: Envelope) -> bytes:
    """Encode an envelope as the CBOR map ``{v, id, sender, recipient, kind, body}``."""
    return codec.encode(
        {
            "v": WIRE_VERSION,
            "id": envelope.id,
            "sender": envelope.sender,
            "recipient": envelope.recipient,
            "kind": envelope.kind,
            "body": envelope.body,
        }
    )


#: The ``kind`` of a message that carries several envelopes for the same recipient.
BATCH = "batch"
#: Most envelopes one batch may carry.
MAX_BATCH = 1000


def encode_batch(envelopes: Sequence[Envelope]) -> tuple[str, bytes]:
    """Encode envelopes from one sender to one recipient as one message; returns its id and bytes.

    The batch is a map like an envelope whose ``body`` is the list of the encoded envelopes; each
    keeps its own id (and receivers deduplicate each by its sequence number).
    """
    first, last = envelopes[0], envelopes[-1]
    batch_id = f"{first.id}+{last.id}+{len(envelopes)}"
    data = codec.encode(
        {
            "v": WIRE_VERSION,
            "id": batch_id,
            "sender": first.sender,
            "recipient": first.recipient,
            "kind": BATCH,
            "body": [encode_envelope(e) for e in envelopes],
        }
    )
    return batch_id, data


def decode_envelopes(data: bytes, *, max_size: int = codec.DEFAULT_MAX_SIZE) -> list[Envelope]:
    """Decode a message: one envelope, or a batch of them (see :func:`encode_batch`).

    Raises:
        DeserializationError: not a well-formed envelope or batch (nothing else is raised).
    """
    raw: Any = codec.decode(data, max_size=max_size)
    if not (isinstance(raw, dict) and raw.get("kind") == BATCH):
        return [_envelope_from(raw)]
    _check_header(raw)
    body = raw.get("body")
    if not isinstance(body, list) or not body or len(body) > MAX_BATCH:
        raise DeserializationError(f"a batch must carry 1 to {MAX_BATCH} envelopes")
    envelopes = []
    for item in body:
        if not isinstance(item, bytes):
            raise DeserializationError(
                f"a batch carries encoded envelopes, not {type(item).__name__}"
            )
        envelope = decode_envelope(item, max_size=max_size)
        if (envelope.sender, envelope.recipient) != (raw["sender"], raw["recipient"]):
            raise DeserializationError("an envelope in a batch has another sender or recipient")
        envelopes.append(envelope)
    return envelopes


def decode_envelope(data: bytes, *, max_size: int = codec.DEFAULT_MAX_SIZE) -> Envelope:
    """Decode and validate an envelope.

    Raises:
        DeserializationError: the bytes are not a well-formed envelope of this wire version (the
            message says what is wrong). Nothing else is raised.
    """
    return _envelope_from(codec.decode(data, max_size=max_size))


def _check_header(raw: dict[str, Any]) -> None:
    if raw.get("v") != WIRE_VERSION:
        raise DeserializationError(f"unsupported envelope version {raw.get('v')!r}")
    for key in ("id", "sender", "recipient", "kind"):
        if not isinstance(raw.get(key), str) or not raw[key]:
            raise DeserializationError(f"envelope field {key!r} must be a non-empty string")
    for key in ("sender", "recipient"):
        if not is_node_name(raw[key]):
            raise DeserializationError(
                f"envelope field {key!r} is not a node name (1-128 of A-Z a-z 0-9 _ -): "
                f"{raw[key][:40]!r}"
            )
    if set(raw) != {"v", "id", "sender", "recipient", "kind", "body"}:
        extra = sorted(set(raw) - {"v", "id", "sender", "recipient", "kind", "body"})
        raise DeserializationError(f"envelope has unexpected fields {extra}")


def _envelope_from(raw: Any) -> Envelope:
    if not isinstance(raw, dict):
        raise DeserializationError(f"envelope must be a map, got {type(raw).__name__}")
    _check_header(raw)
    body = raw.get("body")
    expected = KINDS.get(type(body))
    if expected is None:
        raise DeserializationError(f"envelope body is not a session message: {type(body).__name__}")
    if expected != raw["kind"]:
        raise DeserializationError(
            f"envelope kind {raw['kind']!r} does not match body {expected!r}"
        )
    message = cast(SessionMessage, body)
    _check_fields(message)
    return Envelope(id=raw["id"], sender=raw["sender"], recipient=raw["recipient"], body=message)


#: Field types of each message, checked on decode (a hostile peer controls every value).
_FIELD_TYPES: dict[type, dict[str, tuple[type, ...]]] = {
    Init: {
        "initiator_session": (str,),
        "flow_class": (str,),
        "flow_version": (int,),
        "app": (str,),
        "first_payload": (bytes, type(None)),
    },
    Confirm: {
        "session": (str,),
        "initiated_session": (str,),
        "flow_version": (int,),
        "app": (str,),
    },
    Data: {"session": (str,), "seq": (int,), "payload": (bytes,)},
    Error: {"session": (str,), "seq": (int,), "error_id": (str,), "exception": (bytes, type(None))},
    Reject: {"session": (str,), "error_id": (str,), "reason": (str,)},
    End: {"session": (str,), "seq": (int,)},
}


def _check_fields(body: SessionMessage) -> None:
    for name, types in _FIELD_TYPES[type(body)].items():
        value = getattr(body, name)
        if not isinstance(value, types) or isinstance(value, bool):
            raise DeserializationError(
                f"{kind_of(body)} field {name!r} has type {type(value).__name__}"
            )
    seq = getattr(body, "seq", 1)
    if seq < 1:
        raise DeserializationError(f"{kind_of(body)} sequence number must be >= 1, got {seq}")


__all__ = [
    "BATCH",
    "KINDS",
    "MAX_BATCH",
    "NODE_NAME",
    "WIRE_VERSION",
    "Confirm",
    "Data",
    "End",
    "Envelope",
    "Error",
    "ExistingSessionMessage",
    "FlowInfo",
    "Init",
    "Reject",
    "Sequenced",
    "SessionMessage",
    "decode_envelope",
    "decode_envelopes",
    "encode_batch",
    "encode_envelope",
    "is_node_name",
    "kind_of",
]

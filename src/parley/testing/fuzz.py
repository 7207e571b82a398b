"""A fuzzer for running nodes: hostile messages made from real traffic, published over raw NATS.

Rules of the module, by section:

* **Mutations are pure.** :func:`hostile` turns an :class:`Arena` (the target's name, the parties'
  keys, a :class:`Corpus` of captured traffic) and a source of :class:`Choices` into one
  :class:`Hostile` message. Every decision comes from the choices, so the same choices give the
  same message: :class:`RandomChoices` over a seeded ``random.Random`` for long runs, Hypothesis'
  ``draw`` in tests. Every hostile message goes to the target's stream
  (``parley.p2p.<target>.<something>``) and fits in one NATS message.
* **The oracle says what must become of each message** (:meth:`Oracle.outcome`): refused, and for
  which reason of ``transport.router.REASONS``, or accepted. It checks subject, signature
  (against the same network map the node reads), decoding and addressing in the router's order,
  with the library's own checks: it does not prove them right, it lets the node's counters be
  compared message for message. A decoder that raises anything but ``DeserializationError`` is
  reported as ``crash:<exception>``.
* **The driver** (:class:`Fuzzer`) is a plain nats-py client on its own loop thread: it taps
  ``parley.p2p.>`` for the corpus (never seeing its own messages), publishes hostile messages to
  JetStream (a copy JetStream drops as a duplicate id is not delivered, and not counted), and reads
  a node's consumer state.
* **A campaign** (:class:`Campaign`) attacks one node while honest flows run before, during and
  after, then checks what must hold and returns a :class:`Report`: no crash (the node runs,
  answers ``stats()``, logs no error), no honest flow corrupted or stuck, nothing hospitalized,
  nothing left running, the consumer drained, and the refusals equal to the oracle's, reason by
  reason. Flows the attacker opened and left waiting for it are killed at the end and counted.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import logging
import queue
import random
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from typing import Any, Final, Protocol, TypeVar

import cbor2
import nats
import nats.js.errors

from parley.engine.handles import flow_id_for, responder_flow_id
from parley.engine.hospital import Admission, Outcome
from parley.flows.registry import FlowRegistry, SessionInitRejected, UnknownFlowClass
from parley.identity.keys import KeyPair
from parley.identity.netmap import MapEntryError, NetworkMap
from parley.identity.signing import SIGNATURE_HEADER, MessageSigner, MessageVerifier
from parley.protocol import codec, ids
from parley.protocol.errors import DeserializationError, FlowException
from parley.protocol.messages import (
    MAX_BATCH,
    Confirm,
    Data,
    End,
    Envelope,
    Error,
    Init,
    Reject,
    SessionMessage,
    decode_envelopes,
    encode_batch,
    encode_envelope,
    is_node_name,
)
from parley.protocol.records import FlowStatus
from parley.store import FlowSummary
from parley.transport.mapsync import list_entries
from parley.transport.names import SUBJECT_PREFIX, consumer_name, stream_name
from parley.transport.router import REASONS

T = TypeVar("T")

ACCEPTED: Final = "accepted"
#: Largest payload a hostile message gets (NATS' default max_payload is 1 MiB; headers need room).
MAX_PUBLISH: Final = 1_000_000

# ---- what the mutations work on -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Message:
    """A NATS message: subject, payload, signature header, ``Nats-Msg-Id`` (None: a fresh one)."""

    subject: str
    data: bytes
    signature: str | None = None
    msg_id: str | None = None


@dataclass(frozen=True, slots=True)
class Hostile:
    """A message made by a mutation; ``intent`` is the outcome it aims for, if it is certain."""

    mutation: str
    message: Message
    note: str
    intent: str | None = None


@dataclass(frozen=True, slots=True)
class Party:
    """A node name and the key it signs with."""

    name: str
    key: KeyPair

    def sign(self, data: bytes) -> str:
        return MessageSigner(self.key)(data)


@dataclass(frozen=True, slots=True)
class Captured:
    """A message seen on the wire, with its envelopes."""

    message: Message
    envelopes: tuple[Envelope, ...]

    @property
    def kind(self) -> str:
        return self.envelopes[0].kind if len(self.envelopes) == 1 else "batch"


class Corpus:
    """Captured traffic, by kind, and what it teaches: the target's session ids, payloads, inits.

    :meth:`offer` may be called from any thread; :meth:`absorb` (on the generating thread) takes
    what was offered. Each list keeps its newest ``limit`` items, so old sessions stay to be
    replayed into new ones.
    """

    def __init__(self, target: str, attacker: str, limit: int = 256) -> None:
        self.target, self.attacker = target, attacker
        self._offered: queue.SimpleQueue[Message] = queue.SimpleQueue()
        self.by_kind: dict[str, collections.deque[Captured]] = collections.defaultdict(
            lambda: collections.deque(maxlen=limit)
        )
        self.sessions: collections.deque[str] = collections.deque(maxlen=limit)
        self.attacker_sessions: collections.deque[str] = collections.deque(maxlen=limit)
        self.payloads: collections.deque[bytes] = collections.deque(maxlen=limit)
        self.inits: collections.deque[Init] = collections.deque(maxlen=limit)

    def offer(self, message: Message) -> None:
        self._offered.put(message)

    def absorb(self) -> int:
        """Take the messages offered so far; returns how many decoded."""
        count = 0
        while True:
            try:
                message = self._offered.get_nowait()
            except queue.Empty:
                return count
            count += self.add(message)

    def add(self, message: Message) -> bool:
        try:
            envelopes = tuple(decode_envelopes(message.data))
        except DeserializationError:
            return False
        captured = Captured(message, envelopes)
        self.by_kind[captured.kind].append(captured)
        for envelope in envelopes:
            self._learn(envelope)
        return True

    def _learn(self, envelope: Envelope) -> None:
        body = envelope.body
        if isinstance(body, Init):
            self.inits.append(body)
            if body.first_payload is not None:
                self.payloads.append(body.first_payload)
            if envelope.sender == self.target:
                self.sessions.append(body.initiator_session)
        elif envelope.recipient == self.target:
            self.sessions.append(body.session)
        if isinstance(body, Confirm) and envelope.sender == self.target:
            mine = self.attacker_sessions if envelope.recipient == self.attacker else self.sessions
            mine.append(body.initiated_session)
        if isinstance(body, Data):
            self.payloads.append(body.payload)

    def __len__(self) -> int:
        return sum(map(len, self.by_kind.values()))


@dataclass
class Arena:
    """What the mutations know: the target, the attacker (an admitted node), outsiders, traffic.

    ``stranger`` was never admitted; ``revoked`` was admitted and then revoked; ``peers`` are
    honest nodes whose names the attacker may claim (it does not have their keys).
    """

    target: str
    attacker: Party
    stranger: Party
    corpus: Corpus
    revoked: Party | None = None
    peers: Sequence[str] = ()
    max_size: int = codec.DEFAULT_MAX_SIZE

    def subject(self, sender: str) -> str:
        return f"{SUBJECT_PREFIX}.{self.target}.{sender}"


# ---- choices ----------------------------------------------------------------------------------


class Choices(Protocol):
    """Where every decision of a mutation comes from."""

    def integer(self, low: int, high: int) -> int:
        """An integer in ``[low, high]``."""
        ...


class RandomChoices:
    """Choices from a seeded ``random.Random``: the long run's."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def integer(self, low: int, high: int) -> int:
        return self.rng.randint(low, high)


def pick(c: Choices, items: Sequence[T]) -> T:
    return items[c.integer(0, len(items) - 1)]


def chance(c: Choices, percent: int) -> bool:
    return c.integer(1, 100) <= percent


def blob(c: Choices, size: int) -> bytes:
    """``size`` bytes from one choice (large blobs would not fit a Hypothesis example)."""
    return random.Random(c.integer(0, 2**32 - 1)).randbytes(size)


# ---- raw CBOR: whatever the codec would refuse to write ---------------------------------------


def _head(major: int, n: int) -> bytes:
    if n < 24:
        return bytes([major << 5 | n])
    for info, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if n < 1 << (8 * size):
            return bytes([major << 5 | info]) + n.to_bytes(size, "big")
    raise ValueError(n)


def _cbor(value: object) -> bytes:
    return cbor2.dumps(value)


def _array(items: Sequence[bytes]) -> bytes:
    return _head(4, len(items)) + b"".join(items)


def _tag(tag: int, item: bytes) -> bytes:
    return _head(6, tag) + item


def _map(pairs: Sequence[tuple[bytes, bytes]]) -> bytes:
    return _head(5, len(pairs)) + b"".join(k + v for k, v in pairs)


_BODY_NAMES: Final = {
    "init": "p.Init",
    "confirm": "p.Confirm",
    "data": "p.Data",
    "error": "p.Error",
    "reject": "p.Reject",
    "end": "p.End",
}


def _raw_parts(envelope: Envelope) -> tuple[dict[str, bytes], list[bytes]]:
    """An envelope as its raw header fields and the raw values of its body, to be broken."""
    header = {
        "v": _cbor(1),
        "id": _cbor(envelope.id),
        "sender": _cbor(envelope.sender),
        "recipient": _cbor(envelope.recipient),
        "kind": _cbor(envelope.kind),
    }
    body: Any = envelope.body
    values = [_cbor(getattr(body, name)) for name in body.__slots__]
    return header, [_cbor(_BODY_NAMES[envelope.kind]), *values]


def _raw_envelope(header: Mapping[str, bytes], body: bytes) -> bytes:
    return _map([(_cbor(k), v) for k, v in header.items()] + [(_cbor("body"), body)])


def _hostile_value(c: Choices) -> tuple[str, bytes]:
    """A CBOR item no field expects: wrong types, odd numbers, bad names, depth, tags, garbage."""
    name, make = pick(c, _HOSTILE_VALUES)
    depth = pick(c, [129, 1_000, 100_000])
    return name.format(depth=depth), make(c, depth)


_Make = Callable[[Choices, int], bytes]


def _constant(data: bytes) -> _Make:
    return lambda c, depth: data


_HOSTILE_VALUES: Final[list[tuple[str, _Make]]] = [
    ("int -1", _constant(_cbor(-1))),
    ("int 0", _constant(_cbor(0))),
    ("int 2**64", _constant(_cbor(2**64))),
    ("bignum 2**200", _constant(_cbor(2**200))),
    ("int -2**200", _constant(_cbor(-(2**200)))),
    ("float nan", _constant(_cbor(float("nan")))),
    ("float 1.5", _constant(_cbor(1.5))),
    ("true", _constant(_cbor(True))),
    ("null", _constant(_cbor(None))),
    ("undefined", _constant(b"\xf7")),
    ("simple 32", _constant(b"\xf8\x20")),
    ("text ''", _constant(_cbor(""))),
    ("text a.b", _constant(_cbor("a.b"))),
    ("text >", _constant(_cbor(">"))),
    ("text 300 x", _constant(_cbor("x" * 300))),
    ("text 100k", lambda c, depth: _cbor("y" * 100_000)),
    ("bytes", lambda c, depth: _cbor(blob(c, 16))),
    ("array", _constant(_cbor([1, "two", b"3"]))),
    ("map", _constant(_cbor({"a": 1}))),
    ("map with duplicate keys", _constant(b"\xa2\x01\x01\x01\x02")),
    ("map with a map key", _constant(b"\xa1\xa1\x01\x02\x03")),
    ("{depth} nested arrays", lambda c, depth: b"\x81" * depth + b"\x00"),
    ("{depth} nested tuples", lambda c, depth: b"\xd9\x9c\xa4\x81" * min(depth, 20_000) + b"\x00"),
    ("100k-item array", lambda c, depth: _head(4, 100_000) + b"\x00" * 100_000),
    ("indefinite array", _constant(b"\x9f\x01\x02\xff")),
    ("indefinite text", _constant(b"\x7f\x61a\xff")),
    ("declared 2**62 bytes", _constant(b"\x5b" + (2**62).to_bytes(8, "big"))),
    ("tag 0 date text", _constant(_tag(0, _cbor("2020-01-01T00:00:00Z")))),
    ("tag 1 epoch", _constant(_tag(1, _cbor(0)))),
    ("tag 24 embedded cbor", _constant(_tag(24, _cbor(_cbor(1))))),
    ("tag 28 shareable", _constant(_tag(28, _cbor([1])))),
    ("tag 29 shared ref", _constant(_tag(29, _cbor(0)))),
    ("tag 30 rational", _constant(_tag(30, _cbor([1, 0])))),
    ("tag 35 regex", _constant(_tag(35, _cbor("(a+)+$")))),
    ("tag 37 short uuid", _constant(_tag(37, _cbor(b"abc")))),
    ("tag 258 set", _constant(_tag(258, _cbor([1, 2])))),
    ("tag 55799", _constant(_tag(55799, _cbor(1)))),
    ("tag 40100 over a map", _constant(_tag(40100, _cbor({"a": 1})))),
    ("tag 40103 bad datetime", _constant(_tag(40103, _cbor("not a date")))),
    ("tag 40105 bad decimal", _constant(_tag(40105, _cbor("1e999999999999")))),
    ("tag 40110 unknown type", _constant(_tag(40110, _cbor(["p.Bogus", 1])))),
    ("tag 40110 too many values", _constant(_tag(40110, _cbor(["p.End", "s.0", 1, 2, 3])))),
    ("tag 40111 bad enum", _constant(_tag(40111, _cbor(["p.Init", 1])))),
    ("tag 40112 SystemExit", _constant(_tag(40112, _cbor(["builtins:SystemExit", [], {}])))),
    ("tag 40112 os:system", _constant(_tag(40112, _cbor(["os:system", ["true"], {}])))),
    ("tag 40199", _constant(_tag(40199, _cbor(1)))),
    ("tag 2**64-1", _constant(_tag(2**64 - 1, _cbor(1)))),
    ("truncated", _constant(b"\x82\x01")),
]


# ---- building blocks of the mutations ---------------------------------------------------------


def _session_id(c: Choices) -> str:
    return f"{blob(c, 16).hex()}.{c.integer(0, 3)}"


def _seq(c: Choices) -> int:
    return pick(c, [1, 1, 2, 3, c.integer(1, 10), 999, 1000, 1001, 2**31, 2**63 - 1, 2**64, 2**200])


def _target_session(a: Arena, c: Choices) -> str:
    """A session id of the target: one the attacker opened, an honest one, or made up."""
    known = [s for s in (a.corpus.attacker_sessions, a.corpus.sessions) if s]
    if known and chance(c, 85):
        return pick(c, pick(c, known))
    return _session_id(c)


def _payload(a: Arena, c: Choices) -> bytes:
    if a.corpus.payloads and chance(c, 70):
        return pick(c, a.corpus.payloads)
    return codec.encode(pick(c, [(1, c.integer(0, 99)), (3, 7), 5, "five", None, (1,), (2**70, 1)]))


def _exception(c: Choices) -> bytes | None:
    return pick(
        c,
        [
            None,
            codec.encode(FlowException("no")),
            codec.encode(ValueError("no")),
            codec.encode(KeyError(2**100)),
            blob(c, 8),
        ],
    )


def forge_body(a: Arena, c: Choices, kind: str) -> SessionMessage:
    """A well-formed body of ``kind`` about a real session of the target (most of the time)."""
    session, seq = _target_session(a, c), _seq(c)
    if kind == "init":
        template = pick(c, a.corpus.inits) if a.corpus.inits else Init("", "no.such:Flow", 1, "x")
        first = _payload(a, c) if chance(c, 80) else None
        return Init(_session_id(c), template.flow_class, template.flow_version, template.app, first)
    if kind == "confirm":
        return Confirm(session, _session_id(c), c.integer(0, 3), pick(c, ["parley", "x"]))
    if kind == "data":
        return Data(session, seq, _payload(a, c))
    if kind == "error":
        return Error(session, seq, f"e-{c.integer(0, 999)}", _exception(c))
    if kind == "reject":
        return Reject(session, f"r-{c.integer(0, 999)}", "fuzz")
    return End(session, seq)


def forge(a: Arena, c: Choices, sender: str | None = None) -> Envelope:
    """A valid envelope of any kind from ``sender`` (the attacker by default) to the target."""
    body = forge_body(a, c, pick(c, list(_BODY_NAMES)))
    msg_id = ids.message_id(_session_id(c), c.integer(0, 9))
    return Envelope(msg_id, sender or a.attacker.name, a.target, body)


def _as_attacker(a: Arena, data: bytes) -> Message:
    """``data`` on the attacker's subject, signed by the attacker: it passes the signature check."""
    return Message(a.subject(a.attacker.name), data, a.attacker.sign(data))


def _captured(a: Arena, c: Choices) -> Captured | None:
    kinds = [k for k, items in a.corpus.by_kind.items() if items]
    return pick(c, a.corpus.by_kind[pick(c, kinds)]) if kinds else None


def _base(a: Arena, c: Choices) -> Message:
    """A valid message to start from: captured traffic, or a forgery signed by the attacker."""
    captured = _captured(a, c)
    if captured is not None and chance(c, 60):
        message = captured.message
        if not message.subject.startswith(a.subject("")):  # sent to another node
            sender = message.subject.rsplit(".", 1)[-1]
            message = replace(message, subject=a.subject(sender))
        return replace(message, msg_id=None)
    return _as_attacker(a, encode_envelope(forge(a, c)))


def _dress(a: Arena, c: Choices, base: Message, data: bytes, *, name: str, note: str) -> Hostile:
    """``data`` (a changed copy of ``base``) kept under base's signature, re-signed, or bare."""
    how = pick(c, ["keep", "keep", "attacker", "attacker", "attacker", "unsigned"])
    if how == "attacker":
        return Hostile(name, _as_attacker(a, data), f"{note}, re-signed by the attacker")
    if how == "unsigned" or base.signature is None:
        return Hostile(name, Message(base.subject, data), f"{note}, unsigned", "unsigned")
    message = Message(base.subject, data, base.signature)
    return Hostile(name, message, f"{note}, under the original signature", "bad_signature")


# ---- the mutations ----------------------------------------------------------------------------


def m_replay(a: Arena, c: Choices) -> Hostile:
    """A captured message again, later: in other sessions' time, or from another node's stream."""
    captured = _captured(a, c)
    if captured is None:
        return m_forge(a, c)
    message = captured.message
    sender = message.subject.rsplit(".", 1)[-1]
    intent = ACCEPTED if message.subject == a.subject(sender) else "wrong_recipient"
    keep_id = chance(c, 20)  # JetStream drops it if the original is still in its window
    copy = Message(a.subject(sender), message.data, message.signature, message.msg_id)
    copy = copy if keep_id else replace(copy, msg_id=None)
    return Hostile("replay", copy, f"a captured {captured.kind} again", intent)


def m_as_attacker(a: Arena, c: Choices) -> Hostile:
    """Captured envelopes of other nodes and sessions, re-addressed and signed by the attacker."""
    captured = _captured(a, c)
    if captured is None:
        return m_forge(a, c)
    envelopes = [Envelope(e.id, a.attacker.name, a.target, e.body) for e in captured.envelopes]
    data = encode_envelope(envelopes[0]) if len(envelopes) == 1 else encode_batch(envelopes)[1]
    note = f"a captured {captured.kind} from {captured.envelopes[0].sender} as the attacker's"
    return Hostile("as_attacker", _as_attacker(a, data), note, ACCEPTED)


def m_forge(a: Arena, c: Choices) -> Hostile:
    """Valid envelopes of every kind (one, or a batch) about real sessions, by the attacker."""
    envelopes = [forge(a, c) for _ in range(pick(c, [1, 1, 1, 2, 5]))]
    data = encode_envelope(envelopes[0]) if len(envelopes) == 1 else encode_batch(envelopes)[1]
    kinds = "+".join(e.kind for e in envelopes)
    return Hostile("forge", _as_attacker(a, data), f"forged {kinds}", ACCEPTED)


def m_bits(a: Arena, c: Choices) -> Hostile:
    base = _base(a, c)
    data = bytearray(base.data)
    flips = [c.integer(0, len(data) * 8 - 1) for _ in range(pick(c, [1, 1, 2, 8]))]
    for bit in flips:
        data[bit // 8] ^= 1 << (bit % 8)
    if bytes(data) == base.data:  # flips that cancel out
        data[0] ^= 1
    return _dress(a, c, base, bytes(data), name="bit_flip", note=f"bits {flips} flipped")


def m_bytes(a: Arena, c: Choices) -> Hostile:
    base = _base(a, c)
    data = bytearray(base.data)
    spots = []
    for _ in range(pick(c, [1, 2, 4])):
        spot = c.integer(0, len(data) - 1)
        data[spot] = pick(c, [0x00, 0xFF, 0x7F, 0x80, 0xF7, 0xF6, 0x1F, 0x9F, 0xBF, 0x5B, 0xC0])
        spots.append(spot)
    if bytes(data) == base.data:
        data[spots[0]] ^= 0x40
    return _dress(a, c, base, bytes(data), name="byte_flip", note=f"bytes {spots} overwritten")


def m_truncate(a: Arena, c: Choices) -> Hostile:
    base = _base(a, c)
    cut = c.integer(0, len(base.data) - 1)
    return _dress(a, c, base, base.data[:cut], name="truncate", note=f"cut to {cut} bytes")


def m_extend(a: Arena, c: Choices) -> Hostile:
    base = _base(a, c)
    tail = pick(c, [blob(c, c.integer(1, 64)), _cbor(0), _hostile_value(c)[1], base.data])
    return _dress(a, c, base, base.data + tail, name="extend", note=f"{len(tail)} bytes appended")


def m_fields(a: Arena, c: Choices) -> Hostile:
    """A valid signature (the attacker's) over a hostile body: one field or structure broken."""
    header, body = _raw_parts(forge(a, c))
    what, value = _hostile_value(c)
    where = pick(c, ["header", "body", "body", "body", "structure"])
    if where == "header":
        key = pick(c, list(header))
        header[key] = value
        note = f"{key} = {what}"
    elif where == "body":
        spot = c.integer(0, len(body) - 1)
        body[spot] = value
        note = f"body value {spot} = {what}"
    else:
        note, header, body = _structure(c, header, body, value, what)
    data = _raw_envelope(header, _tag(codec.TAG_OBJECT, _array(body)))
    return Hostile("fields", _as_attacker(a, data), note)


def _structure(
    c: Choices, header: dict[str, bytes], body: list[bytes], value: bytes, what: str
) -> tuple[str, dict[str, bytes], list[bytes]]:
    """Break the envelope's shape: unknown kinds, wrong versions, missing or extra fields."""
    case = c.integer(0, 5)
    if case == 0:
        header["kind"] = _cbor(pick(c, ["bogus", "batch", "data", "end", "init"]))
        return "kind changed", header, body
    if case == 1:
        header["v"] = _cbor(pick(c, [0, 2, "1", 1.0]))
        return "version changed", header, body
    if case == 2:
        del header[pick(c, list(header))]
        return "a header field removed", header, body
    if case == 3:
        header["extra"] = value
        return f"extra field = {what}", header, body
    if case == 4:
        return "a body value removed", header, body[: c.integer(0, len(body) - 1)]
    return f"a body value added: {what}", header, [*body, value]


def m_strings(a: Arena, c: Choices) -> Hostile:
    """Text where the wire has bytes (payloads, encoded exceptions, a batch's items)."""
    envelope = forge(a, c)
    header, body = _raw_parts(envelope)
    bytes_at = {"init": 5, "data": 3, "error": 4}.get(envelope.kind)
    if bytes_at is None:
        items = _array([_cbor(encode_envelope(forge(a, c)).decode("latin-1"))])
        header["kind"] = _cbor("batch")
        data = _raw_envelope(header, items)
        note = "a batch of text"
        return Hostile("strings", _as_attacker(a, data), note, "undecodable")
    body[bytes_at] = _cbor(pick(c, ["\x01\x02", "payload", codec.encode(1).decode("latin-1")]))
    data = _raw_envelope(header, _tag(codec.TAG_OBJECT, _array(body)))
    note = f"{envelope.kind} with text for bytes"
    return Hostile("strings", _as_attacker(a, data), note, "undecodable")


def m_oversized(a: Arena, c: Choices) -> Hostile:
    """A huge payload: just under, at, or over the node's size limit (never over NATS')."""
    size = min(MAX_PUBLISH - 300, pick(c, [a.max_size - 400, a.max_size + 1, 300_000, 900_000]))
    envelope = forge(a, c)
    body: SessionMessage = Data(_target_session(a, c), _seq(c), b"\x00" * max(size, 1))
    data = encode_envelope(Envelope(envelope.id, a.attacker.name, a.target, body))
    intent = "undecodable" if len(data) > a.max_size else ACCEPTED
    note = f"a {len(data)}-byte data"
    return Hostile("oversized", _as_attacker(a, data), note, intent)


def m_batch(a: Arena, c: Choices) -> Hostile:
    """Batches of 0 or 1001 items, of one item, mixed senders, items that are not envelopes."""
    case = pick(c, ["empty", "1001", "one", "mixed", "not bytes", "nested", "other recipient"])
    envelope = forge(a, c)
    items: list[bytes] = [_cbor(encode_envelope(envelope))]
    intent: str | None = "undecodable"
    if case == "empty":
        items = []
    elif case == "1001":
        items = items * (MAX_BATCH + 1)
    elif case == "one":
        intent = ACCEPTED
    elif case == "mixed":
        other = pick(c, [*a.peers, a.stranger.name, a.target])
        items.append(_cbor(encode_envelope(forge(a, c, sender=other))))
    elif case == "not bytes":
        items.append(pick(c, [_cbor(1), _cbor("x"), _cbor([b"x"]), b"\xf6"]))
    elif case == "nested":
        items = [_cbor(encode_batch([envelope, forge(a, c)])[1])]
    else:
        wrong = Envelope(envelope.id, envelope.sender, pick(c, [*a.peers, "zed"]), envelope.body)
        items.append(_cbor(encode_envelope(wrong)))
    header, _ = _raw_parts(envelope)
    header["kind"] = _cbor("batch")
    data = _raw_envelope(header, _array(items))
    return Hostile("batch", _as_attacker(a, data), f"batch: {case}", intent)


def m_subject(a: Arena, c: Choices) -> Hostile:
    """A valid message on a subject wrong for its sender."""
    base = _base(a, c)
    revoked = [a.revoked.name] if a.revoked is not None else []
    names = [*a.peers, a.attacker.name, a.stranger.name, *revoked]
    others = [n for n in names if a.subject(n) != base.subject]
    case = pick(c, ["other", "other", "dots", "long", "chars"])
    if case == "other":
        sender = pick(c, others or [a.stranger.name])
        return Hostile("subject", replace(base, subject=a.subject(sender)), f"sent as {sender}")
    sender = {"dots": "a.b", "long": "x" * 129, "chars": "bad!name"}[case]
    message = replace(base, subject=a.subject(sender))
    return Hostile("subject", message, f"sent as {sender[:12]!r}", "bad_subject")


def m_signature(a: Arena, c: Choices) -> Hostile:
    """Unsigned and badly signed copies of valid messages."""
    base = _base(a, c)
    case = pick(c, ["none", "empty", "garbage", "short", "other data", "stranger", "attacker"])
    signature = {
        "none": None,
        "empty": "",
        "garbage": "not base64!",
        "short": base64.b64encode(blob(c, 63)).decode(),
        "other data": a.attacker.sign(base.data + b"\x00"),
        "stranger": a.stranger.sign(base.data),
        "attacker": a.attacker.sign(base.data),
    }[case]
    message = replace(base, signature=signature)
    own = base.subject == a.subject(a.attacker.name)
    intent = "unsigned" if not signature else (None if own else "bad_signature")
    return Hostile("signature", message, f"signature: {case}", intent)


def m_duplicate_id(a: Arena, c: Choices) -> Hostile:
    """A hostile message under an id already used: a NATS message id, or an envelope's."""
    captured = _captured(a, c)
    envelope = forge(a, c)
    if captured is not None and chance(c, 50):
        taken = captured.envelopes[0]
        data = encode_envelope(replace(envelope, id=taken.id))
        return Hostile("duplicate_id", _as_attacker(a, data), "envelope id reused")
    hostile = m_bits(a, c) if chance(c, 50) else m_forge(a, c)
    msg_id = captured.message.msg_id if captured is not None else f"dup-{c.integer(0, 9)}"
    message = replace(hostile.message, msg_id=msg_id)
    return Hostile("duplicate_id", message, f"NATS id {msg_id} reused ({hostile.note})")


def m_outsider(a: Arena, c: Choices) -> Hostile:
    """Valid messages signed by a never-admitted key, or by a revoked node."""
    outsider = a.revoked if a.revoked is not None and chance(c, 50) else a.stranger
    data = encode_envelope(forge(a, c, sender=outsider.name))
    message = Message(a.subject(outsider.name), data, outsider.sign(data))
    intent = "unknown_node" if outsider is a.stranger else "revoked_node"
    return Hostile("outsider", message, f"from {outsider.name}", intent)


def m_garbage(a: Arena, c: Choices) -> Hostile:
    """Bytes that are no envelope at all, signed by the attacker."""
    data = pick(c, [blob(c, c.integer(1, 200)), _hostile_value(c)[1], _cbor({"v": 1}), b""])
    return Hostile("garbage", _as_attacker(a, data), f"{len(data)} bytes")


Mutation = Callable[[Arena, Choices], Hostile]
#: Every mutation, with its weight in a random mix.
MUTATIONS: Final[dict[str, tuple[int, Mutation]]] = {
    "replay": (10, m_replay),
    "as_attacker": (8, m_as_attacker),
    "forge": (14, m_forge),
    "bit_flip": (10, m_bits),
    "byte_flip": (8, m_bytes),
    "truncate": (6, m_truncate),
    "extend": (5, m_extend),
    "fields": (16, m_fields),
    "strings": (3, m_strings),
    "oversized": (1, m_oversized),
    "batch": (6, m_batch),
    "subject": (5, m_subject),
    "signature": (6, m_signature),
    "duplicate_id": (4, m_duplicate_id),
    "outsider": (3, m_outsider),
    "garbage": (3, m_garbage),
}
_WEIGHTED: Final = [name for name, (weight, _) in MUTATIONS.items() for _ in range(weight)]


def hostile(arena: Arena, choices: Choices, mutation: str | None = None) -> Hostile:
    """One hostile message: of ``mutation``, or of one picked by weight."""
    name = mutation if mutation is not None else pick(choices, _WEIGHTED)
    return MUTATIONS[name][1](arena, choices)


# ---- the oracle -------------------------------------------------------------------------------


class Oracle:
    """What the target must do with a message: see the module docstring."""

    def __init__(
        self,
        target: str,
        network_map: NetworkMap,
        max_size: int,
        registry: FlowRegistry | None = None,
    ) -> None:
        """Judge messages to ``target``.

        Args:
            target: the node under attack.
            network_map: the map it reads (see :meth:`Fuzzer.network_map`).
            max_size: its ``max_message_size``.
            registry: its responders (what its apps register), to tell which session-inits it
                will hold for observation; ``None``: none are expected.
        """
        self.target, self.max_size, self.registry = target, max_size, registry
        self._verify = MessageVerifier(network_map).check
        self._prefix = f"{SUBJECT_PREFIX}.{target}."

    def held(self, envelopes: Sequence[Envelope]) -> set[str]:
        """The responder flow ids of the inits among ``envelopes`` that the target will hold,
        un-acked, for observation: they name a class it has never heard of."""
        found = set()
        for envelope in envelopes:
            body = envelope.body
            if self.registry is None or not isinstance(body, Init):
                continue
            try:
                self.registry.responder_for(body.flow_class)
            except UnknownFlowClass:
                found.add(responder_flow_id(envelope.sender, body.initiator_session))
            except SessionInitRejected:
                continue
        return found

    def outcome(self, message: Message) -> tuple[str, list[Envelope]]:
        """The refusal reason (or ``accepted``, or ``crash:...``) and the envelopes accepted."""
        sender = message.subject.removeprefix(self._prefix)
        if sender == message.subject or not is_node_name(sender):
            return "bad_subject", []
        headers = {SIGNATURE_HEADER: message.signature} if message.signature is not None else None
        refusal = self._verify(sender, message.data, headers)
        if refusal is not None:
            return refusal, []
        try:
            envelopes = decode_envelopes(message.data, max_size=self.max_size)
        except DeserializationError:
            return "undecodable", []
        except Exception as exc:  # the router would not contain this: a finding
            return f"crash:{type(exc).__name__}: {exc}"[:200], []
        for envelope in envelopes:
            if envelope.sender != sender:
                return "subject_mismatch", []
            if envelope.recipient != self.target:
                return "wrong_recipient", []
        return ACCEPTED, envelopes


# ---- the driver -------------------------------------------------------------------------------


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


# ---- the campaign -----------------------------------------------------------------------------


class Target(Protocol):
    """What a campaign needs of a node (a ``parley.node.Node`` is one)."""

    running: bool

    def stats(self, timeout: float = ...) -> dict[str, int]: ...

    def flows(self, status: FlowStatus | None = None) -> list[FlowSummary]: ...

    def kill_flow(self, flow_id: str, timeout: float = ...) -> bool: ...

    def hospital_records(self, timeout: float = ...) -> list[Admission]: ...


#: Starts the n-th honest flow; returns its result's future and the result it must have.
StartHonest = Callable[[int], tuple["Future[Any]", object]]


class ErrorLog(logging.Handler):
    """Collects ERROR records of the node's loggers (for a node in this process)."""

    LOGGERS: Final = ("parley", "asyncio", "nats", "pykka")

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.name}: {record.getMessage()}"[:300])

    def __enter__(self) -> ErrorLog:
        for name in self.LOGGERS:
            logging.getLogger(name).addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        for name in self.LOGGERS:
            logging.getLogger(name).removeHandler(self)


@dataclass
class Report:
    """The figures of a campaign; ``ok`` when nothing that must hold failed."""

    tried: int = 0
    dropped_by_stream: int = 0
    by_mutation: collections.Counter[str] = field(default_factory=collections.Counter)
    expected: collections.Counter[str] = field(default_factory=collections.Counter)
    refused: dict[str, int] = field(default_factory=dict)
    honest_flows: int = 0
    crashes: list[str] = field(default_factory=list)
    corrupted: list[str] = field(default_factory=list)
    stuck: list[str] = field(default_factory=list)
    attacker_flows_left: int = 0
    attacker_flows_failed: int = 0
    inits_held: int = 0
    inits_released: int = 0
    skipped_known: int = 0
    #: Messages left un-acked to flows that have ended (see :meth:`Campaign._leftovers`).
    stranded: list[str] = field(default_factory=list)
    #: Lines the caller adds to the rendering.
    notes: list[str] = field(default_factory=list)
    consumer: tuple[int, int] = (0, 0)
    seconds: float = 0.0

    @property
    def delivered(self) -> int:
        return self.tried - self.dropped_by_stream

    @property
    def accepted(self) -> int:
        return self.delivered - sum(self.refused.values())

    @property
    def mismatches(self) -> dict[str, tuple[int, int]]:
        """Reasons whose count differs from the oracle's: ``{reason: (node, oracle)}``."""
        reasons = set(self.refused) | set(self.expected) | {ACCEPTED}
        counts = {**self.refused, ACCEPTED: self.accepted}
        found = {r: (counts.get(r, 0), self.expected.get(r, 0)) for r in reasons}
        return {r: pair for r, pair in found.items() if pair[0] != pair[1]}

    @property
    def undrained(self) -> int:
        """Messages left in the consumer beyond the stranded ones."""
        return sum(self.consumer) - len(self.stranded)

    @property
    def ok(self) -> bool:
        return not (
            self.crashes or self.corrupted or self.stuck or self.mismatches or self.undrained
        )

    def render(self) -> str:
        rate = self.tried / self.seconds if self.seconds else 0.0
        lines = [
            f"envelopes tried:             {self.tried}",
            f"  dropped by JetStream dedup:  {self.dropped_by_stream}",
            f"  delivered:                   {self.delivered}",
            f"  accepted (harmless):         {self.accepted}",
            f"crashes:                     {len(self.crashes)}",
            f"flows corrupted or stuck:    {len(self.corrupted) + len(self.stuck)}",
            f"honest flows completed:      {self.honest_flows - len(self.corrupted + self.stuck)}"
            f" of {self.honest_flows}",
            f"attacker's flows left open:  {self.attacker_flows_left} (killed at the end)",
            f"attacker's flows failed:     {self.attacker_flows_failed} (the attacker was told)",
            f"inits held un-acked:         {self.inits_held} (unknown class; {self.inits_released}"
            " released by kill at the end)",
            f"skipped (known finding):     {self.skipped_known}",
            f"consumer (unacked, pending): {self.consumer}, of which stranded {len(self.stranded)}"
            " (a known finding: un-acked until JetStream redelivers it)",
            f"refusals agree with oracle:  {not self.mismatches} {self.mismatches or ''}",
            "refusals by reason:",
            *(f"  {r:<17} {n:>7}" for r, n in sorted(self.refused.items()) if n),
            "mutations:",
            *(f"  {m:<17} {n:>7}" for m, n in sorted(self.by_mutation.items())),
            f"seconds:                     {self.seconds:.1f}",
            f"envelopes/s:                 {rate:.0f}",
        ]
        for title, items in (("crash", self.crashes), ("corrupted", self.corrupted)):
            lines += [f"{title}: {item}" for item in items[:20]]
        lines += [f"stuck: {item}" for item in self.stuck[:20]]
        return "\n".join(lines + self.notes)


class Campaign:
    """Attacks ``target`` while honest flows run; see the module docstring.

    Known findings are not sent again once they would hide others: a second session-init for a
    session whose first init the target holds for observation (the target loses the first one's
    delivery, un-acked until JetStream redelivers it) is skipped and counted.

    Args:
        fuzzer: the NATS side.
        target: the node under attack.
        arena: what the mutations know (its corpus is fed by the fuzzer's tap).
        oracle: what must become of each message.
        start_honest: starts honest flows (involving the target) and says their results.
        honest_per_batch: honest flows started with every batch of the attack.
        others: honest nodes whose flows must end too.
    """

    def __init__(
        self,
        fuzzer: Fuzzer,
        target: Target,
        arena: Arena,
        oracle: Oracle,
        start_honest: StartHonest,
        *,
        honest_per_batch: int = 2,
        others: Sequence[Target] = (),
    ) -> None:
        self.fuzzer, self.target, self.arena, self.oracle = fuzzer, target, arena, oracle
        self.start_honest, self.honest_per_batch = start_honest, honest_per_batch
        self.others = others
        self.report = Report()
        self._honest: list[tuple[int, Future[Any], object]] = []
        #: Responder flow ids of the attacker's accepted inits, and of those held un-acked.
        self._attacker_flows: set[str] = set()
        self._held: set[str] = set()
        self._baseline: dict[str, int] = {}
        self._began = 0.0
        fuzzer.tap(arena.corpus)

    def _start_honest(self, count: int) -> None:
        for _ in range(count):
            n = len(self._honest)
            future, expected = self.start_honest(n)
            self._honest.append((n, future, expected))

    def prepare(self, flows: int = 10, sessions: int = 8, timeout: float = 60.0) -> None:
        """Run ``flows`` honest flows to the end (the corpus), have the attacker open ``sessions``
        sessions the way honest peers do (copies of their inits), then take the baseline."""
        corpus = self.arena.corpus
        self._start_honest(flows)
        for _, future, _ in self._honest:
            future.result(timeout)
        wait_until(lambda: corpus.absorb() >= 0 and bool(corpus.inits), timeout)
        templates = [i for i in corpus.inits if i.first_payload is not None]
        attacker, target = self.arena.attacker.name, self.arena.target
        opening = []
        for n in range(sessions if templates else 0):
            template, session = templates[n % len(templates)], f"{uuid.uuid4().hex}.0"
            init = replace(template, initiator_session=session)
            envelope = Envelope(ids.message_id(session, 0), attacker, target, init)
            opening.append(_as_attacker(self.arena, encode_envelope(envelope)))
            self._attacker_flows.add(responder_flow_id(attacker, session))
        self.fuzzer.publish(opening)
        wait_until(
            lambda: corpus.absorb() >= 0 and len(corpus.attacker_sessions) >= len(opening), timeout
        )
        self._baseline = self.target.stats()
        self._began = time.monotonic()

    def batch(self, choices: Choices, size: int) -> list[Hostile]:
        """``size`` hostile messages from ``choices`` (on the current corpus)."""
        self.arena.corpus.absorb()
        return [hostile(self.arena, choices) for _ in range(size)]

    def attack(self, hostiles: Sequence[Hostile], *, learn: bool = True) -> None:
        """Publish ``hostiles`` (and start a few honest flows); count what must become of them.

        Args:
            hostiles: the messages.
            learn: add the traffic captured meanwhile to the corpus (``False`` keeps the corpus
                as it is, for Hypothesis, whose draws must not depend on what changes between
                examples).
        """
        self._start_honest(self.honest_per_batch)
        judged = []
        for item in hostiles:
            outcome, envelopes = self.oracle.outcome(item.message)
            held = self.oracle.held(envelopes)
            if held & self._held:
                self.report.skipped_known += 1
                continue
            self._held |= held
            judged.append((item, outcome, envelopes))
        duplicates = self.fuzzer.publish([item.message for item, _, _ in judged])
        for (item, outcome, envelopes), duplicate in zip(judged, duplicates, strict=True):
            self._count(item, outcome, envelopes, duplicate=duplicate)
        if learn:
            self.arena.corpus.absorb()

    def _count(
        self, item: Hostile, outcome: str, envelopes: list[Envelope], *, duplicate: bool
    ) -> None:
        report = self.report
        report.tried += 1
        report.by_mutation[item.mutation] += 1
        if duplicate:
            report.dropped_by_stream += 1
            return
        report.expected[outcome] += 1
        if outcome.startswith("crash:"):
            report.crashes.append(f"decoder {outcome} on {item.mutation}: {item.note}")
        report.inits_held += len(self.oracle.held(envelopes))
        for envelope in envelopes:
            if isinstance(envelope.body, Init) and envelope.sender == self.arena.attacker.name:
                flow_id = responder_flow_id(envelope.sender, envelope.body.initiator_session)
                self._attacker_flows.add(flow_id)

    def finish(self, timeout: float = 120.0, drain_timeout: float = 10.0) -> Report:
        """Run honest flows once more, wait for everything, check, and report.

        Args:
            timeout: bound on each wait for the honest flows and the refusals.
            drain_timeout: how long to wait for the consumer to drain once the attacker's flows
                and held inits are killed; what is left un-acked then is explained (the known
                finding of :meth:`_leftovers`) or stuck.
        """
        report = self.report
        self._start_honest(self.honest_per_batch * 2)
        report.honest_flows = len(self._honest)
        self._check_honest(timeout)
        self._settle(timeout)
        report.seconds = time.monotonic() - self._began
        self._release(drain_timeout)
        self._leftovers()
        self._check_flows()
        self._check_alive()
        report.consumer = self.fuzzer.consumer_state(self.arena.target)
        return report

    def _check_honest(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for n, future, expected in self._honest:
            try:
                result = future.result(max(0.1, deadline - time.monotonic()))
            except TimeoutError:
                self.report.stuck.append(f"honest flow {n} did not finish")
            except Exception as exc:
                self.report.corrupted.append(f"honest flow {n} failed: {exc!r}")
            else:
                if result != expected:
                    self.report.corrupted.append(f"honest flow {n}: {result!r} != {expected!r}")

    def _refused(self) -> dict[str, int]:
        stats = self.target.stats()
        return {r: stats[f"refused_{r}"] - self._baseline.get(f"refused_{r}", 0) for r in REASONS}

    def _settle(self, timeout: float) -> None:
        """Wait until the target was handed everything and its refusals add up to the oracle's."""
        expected = sum(n for r, n in self.report.expected.items() if r in REASONS)

        def settled() -> bool:
            if self.fuzzer.consumer_state(self.arena.target)[1] != 0:
                return False
            return sum(self._refused().values()) >= expected

        with contextlib.suppress(TimeoutError):  # what is missing shows in the report
            wait_until(settled, timeout)
        self.report.refused = self._refused()

    def _release(self, timeout: float) -> None:
        """Kill what the attacker left waiting for it and the inits held for observation (an
        operator's way out) until the consumer is drained, or ``timeout`` passed."""
        left: set[str] = set()
        released: set[str] = set()

        def done() -> bool:
            waiting = {f.flow_id for f in self.target.flows(FlowStatus.RUNNABLE)}
            for flow_id in waiting & self._attacker_flows - left:
                if self.target.kill_flow(flow_id):
                    left.add(flow_id)
            for flow_id in self._held - waiting:
                for _ in range(3):  # a flow started under the held init's id, then the init
                    if not self.target.kill_flow(flow_id):
                        break
                    released.add(flow_id)
            self.report.attacker_flows_left = len(left)
            self.report.inits_released = len(released)
            if self.fuzzer.consumer_state(self.arena.target) != (0, 0):
                return False
            # a kill is asynchronous: done once the killed flows are gone (a loaded machine
            # takes a while), and none the attacker opened is still waiting
            still = {f.flow_id for f in self.target.flows(FlowStatus.RUNNABLE)}
            return not still & self._attacker_flows

        with contextlib.suppress(TimeoutError):
            wait_until(done, timeout, every=0.1)

    def _leftovers(self) -> None:
        """Explain what is still un-acked: a message to a flow that has ended is *stranded* (a
        known finding: it reached the flow while the commit that ended it was in flight, and the
        node acks it only when JetStream redelivers it, after ``ack_wait``); anything else is
        stuck."""
        alive = (FlowStatus.RUNNABLE, FlowStatus.HOSPITALIZED)
        running = {f.flow_id for f in self.target.flows() if f.status in alive}
        for message in self.fuzzer.stored(self.arena.target):
            outcome, envelopes = self.oracle.outcome(message)
            flows = {flow_id_for(e) for e in envelopes}
            what = f"{message.msg_id}: {outcome} {[e.kind for e in envelopes]}"
            if outcome == ACCEPTED and not flows & running and not self.oracle.held(envelopes):
                self.report.stranded.append(what)
            else:
                self.report.stuck.append(f"un-acked {what}")

    def _check_flows(self) -> None:
        """Anything still running or hospitalized is stuck (the attacker's failed flows aside)."""
        running = (FlowStatus.RUNNABLE, FlowStatus.HOSPITALIZED)
        self.report.stuck += [
            f"{f.flow_id} {f.flow_class} {f.status.name}: {f.waiting_for}"
            for node in (self.target, *self.others)
            for f in node.flows()
            if f.status in running
        ]
        for record in self.target.hospital_records():
            attackers = record.flow_id in self._attacker_flows
            if attackers and record.outcome is Outcome.PROPAGATE:
                self.report.attacker_flows_failed += 1  # it failed, and told the attacker
            else:
                whose = "the attacker's" if attackers else "honest"
                self.report.stuck.append(
                    f"{whose} flow {record.flow_id} hospitalized ({record.outcome}): "
                    f"{record.error_type}: {record.message[:200]}"
                )

    def _check_alive(self) -> None:
        for node in (self.target, *self.others):
            if not node.running:
                self.report.crashes.append(f"{node!r} is not running")
            try:
                node.stats(timeout=10)
            except Exception as exc:
                self.report.crashes.append(f"{node!r}.stats() failed: {exc!r}")


def wait_until(check: Callable[[], bool], timeout: float, every: float = 0.02) -> None:
    """Poll ``check`` until true; ``TimeoutError`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not true after {timeout} s")
        threading.Event().wait(every)


__all__ = [
    "ACCEPTED",
    "MUTATIONS",
    "Arena",
    "Campaign",
    "Captured",
    "Choices",
    "Corpus",
    "ErrorLog",
    "Fuzzer",
    "Hostile",
    "Message",
    "Oracle",
    "Party",
    "RandomChoices",
    "Report",
    "Target",
    "forge",
    "hostile",
    "wait_until",
]

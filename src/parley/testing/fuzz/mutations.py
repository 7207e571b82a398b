"""The mutations: each turns an :class:`Arena` and :class:`Choices` into one :class:`Hostile`.

Mutations are pure: every decision comes from the choices. The building blocks come first
(forged bodies and envelopes, a valid message to start from, and how a changed copy is
signed), then the mutations, :data:`MUTATIONS` with their weights, and :func:`hostile`.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import replace
from typing import Final

from parley.protocol import codec, ids
from parley.protocol.errors import FlowException
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
    encode_batch,
    encode_envelope,
)
from parley.testing.fuzz.choices import Choices, blob, chance, pick
from parley.testing.fuzz.corpus import ACCEPTED, MAX_PUBLISH, Arena, Captured, Hostile, Message
from parley.testing.fuzz.rawcbor import (
    BODY_NAMES,
    array,
    cbor,
    hostile_value,
    raw_envelope,
    raw_parts,
    tag,
)

# ---- building blocks of the mutations ------------------------------------------------------------


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
    body = forge_body(a, c, pick(c, list(BODY_NAMES)))
    msg_id = ids.message_id(_session_id(c), c.integer(0, 9))
    return Envelope(msg_id, sender or a.attacker.name, a.target, body)


def as_attacker(a: Arena, data: bytes) -> Message:
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
    return as_attacker(a, encode_envelope(forge(a, c)))


def _dress(a: Arena, c: Choices, base: Message, data: bytes, *, name: str, note: str) -> Hostile:
    """``data`` (a changed copy of ``base``) kept under base's signature, re-signed, or bare."""
    how = pick(c, ["keep", "keep", "attacker", "attacker", "attacker", "unsigned"])
    if how == "attacker":
        return Hostile(name, as_attacker(a, data), f"{note}, re-signed by the attacker")
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
    return Hostile("as_attacker", as_attacker(a, data), note, ACCEPTED)


def m_forge(a: Arena, c: Choices) -> Hostile:
    """Valid envelopes of every kind (one, or a batch) about real sessions, by the attacker."""
    envelopes = [forge(a, c) for _ in range(pick(c, [1, 1, 1, 2, 5]))]
    data = encode_envelope(envelopes[0]) if len(envelopes) == 1 else encode_batch(envelopes)[1]
    kinds = "+".join(e.kind for e in envelopes)
    return Hostile("forge", as_attacker(a, data), f"forged {kinds}", ACCEPTED)


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
    tail = pick(c, [blob(c, c.integer(1, 64)), cbor(0), hostile_value(c)[1], base.data])
    return _dress(a, c, base, base.data + tail, name="extend", note=f"{len(tail)} bytes appended")


def m_fields(a: Arena, c: Choices) -> Hostile:
    """A valid signature (the attacker's) over a hostile body: one field or structure broken."""
    header, body = raw_parts(forge(a, c))
    what, value = hostile_value(c)
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
    data = raw_envelope(header, tag(codec.TAG_OBJECT, array(body)))
    return Hostile("fields", as_attacker(a, data), note)


def _structure(
    c: Choices, header: dict[str, bytes], body: list[bytes], value: bytes, what: str
) -> tuple[str, dict[str, bytes], list[bytes]]:
    """Break the envelope's shape: unknown kinds, wrong versions, missing or extra fields."""
    case = c.integer(0, 5)
    if case == 0:
        header["kind"] = cbor(pick(c, ["bogus", "batch", "data", "end", "init"]))
        return "kind changed", header, body
    if case == 1:
        header["v"] = cbor(pick(c, [0, 2, "1", 1.0]))
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
    header, body = raw_parts(envelope)
    bytes_at = {"init": 5, "data": 3, "error": 4}.get(envelope.kind)
    if bytes_at is None:
        items = array([cbor(encode_envelope(forge(a, c)).decode("latin-1"))])
        header["kind"] = cbor("batch")
        data = raw_envelope(header, items)
        note = "a batch of text"
        return Hostile("strings", as_attacker(a, data), note, "undecodable")
    body[bytes_at] = cbor(pick(c, ["\x01\x02", "payload", codec.encode(1).decode("latin-1")]))
    data = raw_envelope(header, tag(codec.TAG_OBJECT, array(body)))
    note = f"{envelope.kind} with text for bytes"
    return Hostile("strings", as_attacker(a, data), note, "undecodable")


def m_oversized(a: Arena, c: Choices) -> Hostile:
    """A huge payload: just under, at, or over the node's size limit (never over NATS')."""
    size = min(MAX_PUBLISH - 300, pick(c, [a.max_size - 400, a.max_size + 1, 300_000, 900_000]))
    envelope = forge(a, c)
    body: SessionMessage = Data(_target_session(a, c), _seq(c), b"\x00" * max(size, 1))
    data = encode_envelope(Envelope(envelope.id, a.attacker.name, a.target, body))
    intent = "undecodable" if len(data) > a.max_size else ACCEPTED
    note = f"a {len(data)}-byte data"
    return Hostile("oversized", as_attacker(a, data), note, intent)


def m_batch(a: Arena, c: Choices) -> Hostile:
    """Batches of 0 or 1001 items, of one item, mixed senders, items that are not envelopes."""
    case = pick(c, ["empty", "1001", "one", "mixed", "not bytes", "nested", "other recipient"])
    envelope = forge(a, c)
    items: list[bytes] = [cbor(encode_envelope(envelope))]
    intent: str | None = "undecodable"
    if case == "empty":
        items = []
    elif case == "1001":
        items = items * (MAX_BATCH + 1)
    elif case == "one":
        intent = ACCEPTED
    elif case == "mixed":
        other = pick(c, [*a.peers, a.stranger.name, a.target])
        items.append(cbor(encode_envelope(forge(a, c, sender=other))))
    elif case == "not bytes":
        items.append(pick(c, [cbor(1), cbor("x"), cbor([b"x"]), b"\xf6"]))
    elif case == "nested":
        items = [cbor(encode_batch([envelope, forge(a, c)])[1])]
    else:
        wrong = Envelope(envelope.id, envelope.sender, pick(c, [*a.peers, "zed"]), envelope.body)
        items.append(cbor(encode_envelope(wrong)))
    header, _ = raw_parts(envelope)
    header["kind"] = cbor("batch")
    data = raw_envelope(header, array(items))
    return Hostile("batch", as_attacker(a, data), f"batch: {case}", intent)


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
        return Hostile("duplicate_id", as_attacker(a, data), "envelope id reused")
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
    data = pick(c, [blob(c, c.integer(1, 200)), hostile_value(c)[1], cbor({"v": 1}), b""])
    return Hostile("garbage", as_attacker(a, data), f"{len(data)} bytes")


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

"""Raw CBOR: whatever the codec would refuse to write.

Items are built byte by byte (:func:`head`, :func:`array`, :func:`tag`, :func:`cbor_map`),
envelopes are taken apart into raw fields to be broken (:func:`raw_parts`,
:func:`raw_envelope`), and :func:`hostile_value` is a CBOR item no field expects.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

import cbor2

from parley.protocol.messages import Envelope
from parley.testing.fuzz.choices import Choices, blob, pick


def head(major: int, n: int) -> bytes:
    if n < 24:
        return bytes([major << 5 | n])
    for info, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if n < 1 << (8 * size):
            return bytes([major << 5 | info]) + n.to_bytes(size, "big")
    raise ValueError(n)


def cbor(value: object) -> bytes:
    return cbor2.dumps(value)


def array(items: Sequence[bytes]) -> bytes:
    return head(4, len(items)) + b"".join(items)


def tag(number: int, item: bytes) -> bytes:
    return head(6, number) + item


def cbor_map(pairs: Sequence[tuple[bytes, bytes]]) -> bytes:
    return head(5, len(pairs)) + b"".join(k + v for k, v in pairs)


BODY_NAMES: Final = {
    "init": "p.Init",
    "confirm": "p.Confirm",
    "data": "p.Data",
    "error": "p.Error",
    "reject": "p.Reject",
    "end": "p.End",
}


def raw_parts(envelope: Envelope) -> tuple[dict[str, bytes], list[bytes]]:
    """An envelope as its raw header fields and the raw values of its body, to be broken."""
    header = {
        "v": cbor(1),
        "id": cbor(envelope.id),
        "sender": cbor(envelope.sender),
        "recipient": cbor(envelope.recipient),
        "kind": cbor(envelope.kind),
    }
    body: Any = envelope.body
    values = [cbor(getattr(body, name)) for name in body.__slots__]
    return header, [cbor(BODY_NAMES[envelope.kind]), *values]


def raw_envelope(header: Mapping[str, bytes], body: bytes) -> bytes:
    return cbor_map([(cbor(k), v) for k, v in header.items()] + [(cbor("body"), body)])


def hostile_value(c: Choices) -> tuple[str, bytes]:
    """A CBOR item no field expects: wrong types, odd numbers, bad names, depth, tags, garbage."""
    name, make = pick(c, _HOSTILE_VALUES)
    depth = pick(c, [129, 1_000, 100_000])
    return name.format(depth=depth), make(c, depth)


_Make = Callable[[Choices, int], bytes]


def _constant(data: bytes) -> _Make:
    return lambda c, depth: data


_HOSTILE_VALUES: Final[list[tuple[str, _Make]]] = [
    ("int -1", _constant(cbor(-1))),
    ("int 0", _constant(cbor(0))),
    ("int 2**64", _constant(cbor(2**64))),
    ("bignum 2**200", _constant(cbor(2**200))),
    ("int -2**200", _constant(cbor(-(2**200)))),
    ("float nan", _constant(cbor(float("nan")))),
    ("float 1.5", _constant(cbor(1.5))),
    ("true", _constant(cbor(True))),
    ("null", _constant(cbor(None))),
    ("undefined", _constant(b"\xf7")),
    ("simple 32", _constant(b"\xf8\x20")),
    ("text ''", _constant(cbor(""))),
    ("text a.b", _constant(cbor("a.b"))),
    ("text >", _constant(cbor(">"))),
    ("text 300 x", _constant(cbor("x" * 300))),
    ("text 100k", lambda c, depth: cbor("y" * 100_000)),
    ("bytes", lambda c, depth: cbor(blob(c, 16))),
    ("array", _constant(cbor([1, "two", b"3"]))),
    ("map", _constant(cbor({"a": 1}))),
    ("map with duplicate keys", _constant(b"\xa2\x01\x01\x01\x02")),
    ("map with a map key", _constant(b"\xa1\xa1\x01\x02\x03")),
    ("{depth} nested arrays", lambda c, depth: b"\x81" * depth + b"\x00"),
    ("{depth} nested tuples", lambda c, depth: b"\xd9\x9c\xa4\x81" * min(depth, 20_000) + b"\x00"),
    ("100k-item array", lambda c, depth: head(4, 100_000) + b"\x00" * 100_000),
    ("indefinite array", _constant(b"\x9f\x01\x02\xff")),
    ("indefinite text", _constant(b"\x7f\x61a\xff")),
    ("declared 2**62 bytes", _constant(b"\x5b" + (2**62).to_bytes(8, "big"))),
    ("tag 0 date text", _constant(tag(0, cbor("2020-01-01T00:00:00Z")))),
    ("tag 1 epoch", _constant(tag(1, cbor(0)))),
    ("tag 24 embedded cbor", _constant(tag(24, cbor(cbor(1))))),
    ("tag 28 shareable", _constant(tag(28, cbor([1])))),
    ("tag 29 shared ref", _constant(tag(29, cbor(0)))),
    ("tag 30 rational", _constant(tag(30, cbor([1, 0])))),
    ("tag 35 regex", _constant(tag(35, cbor("(a+)+$")))),
    ("tag 37 short uuid", _constant(tag(37, cbor(b"abc")))),
    ("tag 258 set", _constant(tag(258, cbor([1, 2])))),
    ("tag 55799", _constant(tag(55799, cbor(1)))),
    ("tag 40100 over a map", _constant(tag(40100, cbor({"a": 1})))),
    ("tag 40103 bad datetime", _constant(tag(40103, cbor("not a date")))),
    ("tag 40105 bad decimal", _constant(tag(40105, cbor("1e999999999999")))),
    ("tag 40110 unknown type", _constant(tag(40110, cbor(["p.Bogus", 1])))),
    ("tag 40110 too many values", _constant(tag(40110, cbor(["p.End", "s.0", 1, 2, 3])))),
    ("tag 40111 bad enum", _constant(tag(40111, cbor(["p.Init", 1])))),
    ("tag 40112 SystemExit", _constant(tag(40112, cbor(["builtins:SystemExit", [], {}])))),
    ("tag 40112 os:system", _constant(tag(40112, cbor(["os:system", ["true"], {}])))),
    ("tag 40199", _constant(tag(40199, cbor(1)))),
    ("tag 2**64-1", _constant(tag(2**64 - 1, cbor(1)))),
    ("truncated", _constant(b"\x82\x01")),
]

"""Envelopes and batches on the wire: round trips, and refusals of malformed input."""

from __future__ import annotations

import cbor2
import pytest

from parley.protocol import codec
from parley.protocol.errors import DeserializationError
from parley.protocol.messages import (
    BATCH,
    MAX_BATCH,
    WIRE_VERSION,
    Confirm,
    Data,
    End,
    Envelope,
    decode_envelope,
    decode_envelopes,
    encode_batch,
    encode_envelope,
)
from parley.protocol.requests import fingerprint_sessions


def envelope(n: int, sender: str = "bob", recipient: str = "alice") -> Envelope:
    return Envelope(f"s.0:{n}", sender, recipient, Data("a.0", n, codec.encode(n)))


def raw_batch(body: object, **overrides: object) -> bytes:
    fields = {"v": WIRE_VERSION, "id": "b", "sender": "bob", "recipient": "alice"}
    return cbor2.dumps({**fields, "kind": BATCH, "body": body, **overrides})


def test_a_single_envelope_round_trips() -> None:
    one = Envelope("s.0:0", "bob", "alice", Confirm("a.0", "s.0", 2, "app"))
    assert decode_envelope(encode_envelope(one)) == one
    assert decode_envelopes(encode_envelope(one)) == [one]


def test_a_batch_round_trips_in_order_and_keeps_each_id() -> None:
    envelopes = [envelope(1), envelope(2), Envelope("s.0:3", "bob", "alice", End("a.0", 3))]
    batch_id, data = encode_batch(envelopes)
    assert decode_envelopes(data) == envelopes
    assert batch_id == "s.0:1+s.0:3+3"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (raw_batch([]), "1 to"),
        (raw_batch(["not bytes"]), "encoded envelopes"),
        (raw_batch([b"\xff\xff"]), "malformed|CBOR|decode"),
        (raw_batch([encode_envelope(envelope(1, sender="mallory"))]), "another sender"),
        (raw_batch([encode_envelope(envelope(1))] * (MAX_BATCH + 1)), "1 to"),
        (raw_batch([raw_batch([encode_envelope(envelope(1))])]), "session message"),
        (raw_batch([encode_envelope(envelope(1))], v=99), "version"),
        (raw_batch([encode_envelope(envelope(1))], extra=1), "unexpected fields"),
    ],
    ids=[
        "empty",
        "not-bytes",
        "garbage-inside",
        "other-sender",
        "too-many",
        "nested-batch",
        "bad-version",
        "extra-field",
    ],
)
def test_a_malformed_batch_is_refused(data: bytes, reason: str) -> None:
    with pytest.raises(DeserializationError, match=reason):
        decode_envelopes(data)


@pytest.mark.parametrize(
    ("fingerprint", "sessions"),
    [
        ("recv a.0,b.1", ("a.0", "b.1")),
        ("sar a.0;a.0,b.1", ("a.0", "b.1")),
        ("info a.0", ("a.0",)),
        ("send a.0", ("a.0",)),
        ("close a.0,a.1", ("a.0", "a.1")),
        ("sleep 2026-01-01T00:00:00+00:00", ()),
        ("exec m:f", ()),
        ("checkpoint", ()),
    ],
)
def test_a_fingerprint_names_the_sessions_of_its_request(
    fingerprint: str, sessions: tuple[str, ...]
) -> None:
    assert fingerprint_sessions(fingerprint) == sessions

"""The router: the checks a message passes before it is routed, and the ack tokens of batches."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from parley.protocol import codec
from parley.protocol.messages import Data, Envelope, encode_batch, encode_envelope
from parley.transport.router import REASONS, Part, SessionRouter, SharedDelivery, resolve_acks


def test_a_batch_is_acked_once_every_envelope_in_it_is() -> None:
    shared = SharedDelivery("delivery-7", 3)
    parts = [Part(shared) for _ in range(3)]
    assert resolve_acks([parts[0], "plain"]) == ["plain"]
    assert resolve_acks([parts[1], parts[1]]) == []  # acking a part twice counts once
    assert resolve_acks([parts[2]]) == ["delivery-7"]
    assert resolve_acks(parts) == []


# ---- checks before routing ----------------------------------------------------------------------


@dataclass(frozen=True)
class FakeDelivery:
    subject: str


class Routed:
    def __init__(self) -> None:
        self.router = SessionRouter("alice", 2, self.deliver, self.ack, max_size=4096)
        self.delivered: list[Envelope] = []
        self.acked: list[Any] = []

    def deliver(self, shard: int, items: tuple[tuple[Envelope, Any], ...]) -> None:
        self.delivered.extend(envelope for envelope, _ in items)

    def ack(self, tokens: Any) -> None:
        self.acked.extend(tokens)


def data(sender: str, recipient: str = "alice", msg_id: str = "m:1") -> Envelope:
    return Envelope(msg_id, sender, recipient, Data("f" * 32 + ".0", 1, codec.encode(1)))


def test_a_message_on_its_senders_subject_is_routed() -> None:
    routed = Routed()
    routed.router.route([(encode_envelope(data("bob")), FakeDelivery("parley.p2p.alice.bob"))])
    assert [e.sender for e in routed.delivered] == ["bob"]
    assert routed.acked == []
    assert sum(routed.router.refused.values()) == 0


CASES = {
    "subject of another node": ("parley.p2p.carol.bob", data("bob"), "bad_subject"),
    "subject with a dot in the sender": ("parley.p2p.alice.b.ob", data("bob"), "bad_subject"),
    "sender not the subject's": ("parley.p2p.alice.mallory", data("bob"), "subject_mismatch"),
    "for another recipient": ("parley.p2p.alice.bob", data("bob", "carol"), "wrong_recipient"),
}


@pytest.mark.parametrize(("subject", "envelope", "reason"), CASES.values(), ids=CASES.keys())
def test_a_message_that_disagrees_with_its_subject_is_refused_acked_and_counted(
    subject: str, envelope: Envelope, reason: str
) -> None:
    routed = Routed()
    delivery = FakeDelivery(subject)
    routed.router.route([(encode_envelope(envelope), delivery)])
    assert routed.delivered == []
    assert routed.acked == [delivery]
    assert routed.router.refused == {reason: 1}
    assert reason in REASONS


def test_one_bad_envelope_in_a_batch_refuses_the_whole_batch() -> None:
    routed = Routed()
    good, bad = data("bob", msg_id="m:1"), data("bob", "carol", msg_id="m:2")
    _, batch = encode_batch([good, bad])
    delivery = FakeDelivery("parley.p2p.alice.bob")
    routed.router.route([(batch, delivery)])
    assert routed.delivered == []
    assert routed.acked == [delivery]


def test_garbage_and_oversized_messages_are_refused_as_undecodable() -> None:
    routed = Routed()
    routed.router.route(
        [
            (b"\xff\xfe", FakeDelivery("parley.p2p.alice.bob")),
            (b"\x00" * 5000, FakeDelivery("parley.p2p.alice.bob")),
        ]
    )
    assert routed.router.refused == {"undecodable": 2}
    assert len(routed.acked) == 2

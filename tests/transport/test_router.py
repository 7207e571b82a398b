"""The router's ack tokens for batched envelopes."""

from __future__ import annotations

from parley.transport.router import Part, SharedDelivery, resolve_acks


def test_a_batch_is_acked_once_every_envelope_in_it_is() -> None:
    shared = SharedDelivery("delivery-7", 3)
    parts = [Part(shared) for _ in range(3)]
    assert resolve_acks([parts[0], "plain"]) == ["plain"]
    assert resolve_acks([parts[1], parts[1]]) == []  # acking a part twice counts once
    assert resolve_acks([parts[2]]) == ["delivery-7"]
    assert resolve_acks(parts) == []

"""signing: what a signed message costs, per message: signing it, checking it against the map.

``python -m bench.signing`` prints microseconds per message for the sizes ping-pong sends (an Init
with its first payload; a batch of Confirm, Data and End) and for a large payload, measured on
this machine with the node's own code (``MessageSigner``, ``MessageVerifier``), not a model.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from parley.identity.keys import KeyPair, new_operator_key
from parley.identity.netmap import NetworkMap, NodeEntry, NodeStatus, new_serial, sign_entry
from parley.identity.signing import SIGNATURE_HEADER, MessageSigner, MessageVerifier
from parley.protocol import codec
from parley.protocol.messages import (
    Confirm,
    Data,
    End,
    Envelope,
    Init,
    encode_batch,
    encode_envelope,
)


def messages() -> dict[str, bytes]:
    session = "a" * 32 + ".0"
    init = Envelope(
        f"{session}:0",
        "ping",
        "pong",
        Init(session, "parley.apps.pingpong:Ping", 1, "parley.apps.pingpong", codec.encode((1, 5))),
    )
    reply = [
        Envelope("b:0", "pong", "ping", Confirm(session, "b" * 32 + ".0", 1, "parley.apps")),
        Envelope("b:1", "pong", "ping", Data(session, 1, codec.encode(6))),
        Envelope("b:2", "pong", "ping", End(session, 2)),
    ]
    big = Envelope("c:1", "ping", "pong", Data(session, 1, codec.encode(b"x" * 64 * 1024)))
    return {
        "init (ping-pong)": encode_envelope(init),
        "batch of 3 (ping-pong)": encode_batch(reply)[1],
        "64 KiB payload": encode_envelope(big),
    }


def measure(repeat: int = 5, count: int = 2000) -> list[dict[str, Any]]:
    operator = new_operator_key()
    key = KeyPair.generate()
    network_map = NetworkMap(operator.public_key)
    entry = NodeEntry("ping", (key.public_key,), NodeStatus.ADMITTED, new_serial())
    network_map.accept(sign_entry(operator, entry))
    sign, verifier = MessageSigner(key), MessageVerifier(network_map)
    rows = []
    for label, data in messages().items():
        headers = {SIGNATURE_HEADER: sign(data)}
        assert verifier.check("ping", data, headers) is None
        signing, checking = [], []
        for _ in range(repeat):
            started = time.perf_counter()
            for _ in range(count):
                sign(data)
            signing.append((time.perf_counter() - started) / count * 1e6)
            started = time.perf_counter()
            for _ in range(count):
                verifier.check("ping", data, headers)
            checking.append((time.perf_counter() - started) / count * 1e6)
        rows.append(
            {
                "message": label,
                "bytes": len(data),
                "sign_us": round(statistics.median(signing), 1),
                "check_us": round(statistics.median(checking), 1),
                "spread_us": [round(min(signing + checking), 1), round(max(signing + checking), 1)],
            }
        )
    return rows


if __name__ == "__main__":
    for row in measure():
        print(
            f"{row['message']:<24} {row['bytes']:>6} B  sign {row['sign_us']:>6.1f} us  "
            f"check {row['check_us']:>6.1f} us"
        )

"""pingpong: ``Ping``/``Pong`` between two node processes over a real nats-server.

The responder runs in a child process (``parley node run``); the initiator is a node in this
process. ``in_flight`` flows run at once. A flow is one round: Init(n) -> Confirm, Data(n+1) -> End,
with every checkpoint committed at ``synchronous=FULL``. With ``signed`` both nodes run with a
network map: every message is signed by its sender and verified by its receiver. Run it on its own
with ``python -m bench.pingpong``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from bench.common import NodeProcess, closed_loop
from parley.apps.pingpong import Ping
from parley.identity.keys import load_identity, new_operator_key
from parley.node import Node, NodeConfig
from parley.transport.admin import NetworkAdmin
from parley.transport.natsserver import EmbeddedNatsServer


def drive(node: Node, peer: str, flows: int, in_flight: int) -> dict[str, float]:
    """Run ``flows`` Ping flows to ``peer``, ``in_flight`` at a time."""
    return closed_loop(
        lambda n: node.start_flow(Ping(peer, n), wait_started=False).future, flows, in_flight
    )


def run(
    cases: list[tuple[int, int]], *, warmup: int = 200, signed: bool = False
) -> list[dict[str, Any]]:
    """``cases``: (in_flight, flows) pairs, run against the same two nodes."""
    results = []
    with tempfile.TemporaryDirectory(prefix="parley-pingpong-") as tmp:
        nats = EmbeddedNatsServer(Path(tmp) / "nats")
        url = nats.start()
        extra: list[str] = []
        operator_key = None
        if signed:
            operator = new_operator_key()
            operator_key = operator.public_key
            admin = NetworkAdmin(url, operator)
            for name in ("ping", "pong"):
                admin.admit(name, [load_identity(Path(tmp) / name).public_key])
            extra = ["--operator-key", operator_key]
        pong = NodeProcess("pong", url, Path(tmp) / "pong", ["parley.apps.pingpong"], *extra)
        config = NodeConfig(
            "ping",
            Path(tmp) / "ping",
            nats_url=url,
            apps=["parley.apps.pingpong"],
            operator_key=operator_key,
        )
        try:
            with Node(config) as node:
                drive(node, "pong", warmup, 10)
                for in_flight, flows in cases:
                    result = drive(node, "pong", flows, in_flight)
                    results.append(
                        {"flows": flows, "in_flight": in_flight, "signed": signed, **result}
                    )
        finally:
            pong.stop()
            nats.stop()
    return results


if __name__ == "__main__":
    for row in run([(1, 500), (50, 5000)]) + run([(1, 500), (50, 5000)], signed=True):
        print(
            f"{'signed' if row['signed'] else 'plain':<7}in flight {row['in_flight']:>3}: "
            f"{row['flows_per_s']:>8.1f} flows/s  "
            f"p50 {row['p50_ms']:.2f} ms  p99 {row['p99_ms']:.2f} ms"
        )

"""pingpong: ``Ping``/``Pong`` between two node processes over a real nats-server.

The responder runs in a child process (``parley node run``); the initiator is a node in this
process. ``in_flight`` flows run at once. A flow is one round: Init(n) -> Confirm, Data(n+1) -> End,
with every checkpoint committed at ``synchronous=FULL``. Run it on its own with
``python -m bench.pingpong``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from bench.common import NodeProcess, closed_loop
from parley.apps.pingpong import Ping
from parley.node import Node, NodeConfig
from parley.transport.natsserver import EmbeddedNatsServer


def drive(node: Node, peer: str, flows: int, in_flight: int) -> dict[str, float]:
    """Run ``flows`` Ping flows to ``peer``, ``in_flight`` at a time."""
    return closed_loop(
        lambda n: node.start_flow(Ping(peer, n), wait_started=False).future, flows, in_flight
    )


def run(cases: list[tuple[int, int]], *, warmup: int = 200) -> list[dict[str, Any]]:
    """``cases``: (in_flight, flows) pairs, run against the same two nodes."""
    results = []
    with tempfile.TemporaryDirectory(prefix="parley-pingpong-") as tmp:
        nats = EmbeddedNatsServer(Path(tmp) / "nats")
        url = nats.start()
        pong = NodeProcess("pong", url, Path(tmp) / "pong", ["parley.apps.pingpong"])
        config = NodeConfig("ping", Path(tmp) / "ping", nats_url=url, apps=["parley.apps.pingpong"])
        try:
            with Node(config) as node:
                drive(node, "pong", warmup, 10)
                for in_flight, flows in cases:
                    result = drive(node, "pong", flows, in_flight)
                    results.append({"flows": flows, "in_flight": in_flight, **result})
        finally:
            pong.stop()
            nats.stop()
    return results


if __name__ == "__main__":
    for row in run([(1, 500), (50, 5000)]):
        print(
            f"in flight {row['in_flight']:>3}: {row['flows_per_s']:>8.1f} flows/s  "
            f"p50 {row['p50_ms']:.2f} ms  p99 {row['p99_ms']:.2f} ms"
        )

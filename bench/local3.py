"""local3: a flow with three ``execute`` steps and no peers, on a Node with default durability.

Flows are started from this process into an in-process node (SQLite WAL, ``synchronous=FULL``,
JetStream for nothing but the node's own stream). ``in_flight`` flows run at once: a new one starts
when one finishes. Latency is start to result.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from bench.common import closed_loop
from bench.flows import Local3
from parley.node import Node, NodeConfig
from parley.transport.natsserver import EmbeddedNatsServer


def drive(node: Node, flows: int, in_flight: int) -> dict[str, float]:
    """Run ``flows`` Local3 flows, ``in_flight`` at a time; returns throughput and latency."""
    return closed_loop(
        lambda n: node.start_flow(Local3(n), wait_started=False).future, flows, in_flight
    )


def run(flows: int, in_flight: int, *, warmup: int = 100) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="parley-local3-") as tmp:
        nats = EmbeddedNatsServer(Path(tmp) / "nats")
        url = nats.start()
        config = NodeConfig("local3", Path(tmp) / "node", nats_url=url, apps=["bench.flows"])
        try:
            with Node(config) as node:
                drive(node, warmup, min(in_flight, 10))
                result = drive(node, flows, in_flight)
                stats = node.commit_stats()
        finally:
            nats.stop()
    return {
        "engine": "parley",
        "flows": flows,
        "in_flight": in_flight,
        **result,
        "avg_group": round(stats.batches / max(1, stats.transactions), 1),
    }


if __name__ == "__main__":
    for k, n in ((1, 500), (50, 3000)):
        print(run(n, k))

"""rpc: ping-pong started over the RPC service, beside ``Node.start_flow`` in the node's process.

``python -m bench.rpc [--quick]``. A flow is one round of ``Ping``/``Pong`` (the pong node runs
in a child process). Two ways to drive the ping node:

* **in-process**: ``Node.start_flow(Ping(...))`` in the node's own process, from its start to its
  result (``bench.pingpong``'s measure, against a node of this process).
* **RPC**: the ping node runs in a child process (``parley node run --config`` with one
  ``[[users]]`` entry); this process is the client (``AsyncRpcClient``): ``start_flow`` (its
  reply comes once the start is durable), then ``result``. The latency is from sending the start
  to receiving the result; ``in_flight`` flows at a time, each started when one finishes.

The client authenticates with scrypt once (the node remembers accepted credentials), so the figure
is the request/reply cost: two NATS round trips through the service's loop and the node's actors.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import NodeProcess, closed_loop, summary
from parley.apps.pingpong import Ping
from parley.node import Node, NodeConfig
from parley.rpc import AsyncRpcClient
from parley.rpc.users import RpcUser, hash_password
from parley.transport.natsserver import EmbeddedNatsServer

PASSWORD = "bench"
APPS = ["parley.apps.pingpong"]


async def rpc_loop(url: str, flows: int, in_flight: int) -> dict[str, float]:
    """``flows`` Ping flows started over RPC on node ``ping``, ``in_flight`` at a time."""
    async with AsyncRpcClient(url, "ping", user="bench", password=PASSWORD, timeout=60) as rpc:
        latencies: list[float] = []
        numbers = iter(range(flows))

        async def worker() -> None:
            for n in numbers:
                started = time.perf_counter()
                handle = await rpc.start_flow("parley.apps.pingpong:Ping", ["pong", n])
                assert await handle.result(timeout=60) == n + 1
                latencies.append(time.perf_counter() - started)

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(in_flight)))
        return summary(latencies, flows, time.perf_counter() - began)


def in_process(node: Node, flows: int, in_flight: int) -> dict[str, float]:
    return closed_loop(
        lambda n: node.start_flow(Ping("pong", n), wait_started=False).future, flows, in_flight
    )


def run(cases: list[tuple[int, int]], warmup: int = 100) -> list[dict[str, Any]]:
    """``cases``: (in_flight, flows) pairs, each measured both ways against the same pong node."""
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="parley-rpc-bench-") as tmp:
        root = Path(tmp)
        nats = EmbeddedNatsServer(root / "nats")
        url = nats.start()
        pong = NodeProcess("pong", url, root / "pong", APPS)
        config = root / "ping.toml"
        config.write_text(RpcUser("bench", hash_password(PASSWORD), ["ALL"]).toml())
        ping = NodeProcess("ping", url, root / "ping", APPS, "--config", str(config))
        try:
            asyncio.run(rpc_loop(url, warmup, 10))
            for in_flight, flows in cases:
                result = asyncio.run(rpc_loop(url, flows, in_flight))
                rows.append({"how": "RPC start_flow + result", "in_flight": in_flight, **result})
            ping.stop()
            local = NodeConfig("local", root / "local", nats_url=url, apps=APPS, rpc=False)
            with Node(local) as node:
                in_process(node, warmup, 10)
                for in_flight, flows in cases:
                    result = in_process(node, flows, in_flight)
                    rows.append(
                        {"how": "in-process Node.start_flow", "in_flight": in_flight, **result}
                    )
        finally:
            ping.stop()
            pong.stop()
            nats.stop()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer flows")
    options = parser.parse_args(argv)
    cases = [(1, 100), (50, 1000)] if options.quick else [(1, 500), (50, 5000)]
    for row in run(cases):
        print(
            f"{row['how']:<28} in flight {row['in_flight']:>3}: "
            f"{row['flows_per_s']:>8.1f} flows/s  "
            f"p50 {row['p50_ms']:.2f} ms  p99 {row['p99_ms']:.2f} ms"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""cluster: ping-pong over a 3-server NATS cluster (R3 streams) while servers are killed.

``python -m bench.cluster [--in-flight 4] [--baseline 10] [--after 25]``

A ``ping`` node runs in this process and a ``pong`` node in a child process (``parley node run
--nats <the three URLs> --stream-replicas 3``); ``in_flight`` loops start Ping flows one after the
other and record each flow's start and latency. After a baseline, the driver ``kill -9``s, one at a
time: the leader of pong's stream, the leader of ping's stream, then a server that leads neither
(if there is one), each followed by ``after`` seconds of flows, then a restart of the server and a
wait until it has caught up (``/healthz``). It prints, per kill, the longest flow under way at the
kill, the extra latency over the baseline's p50 and the p99 of the flows started in the first
seconds after it; at the end, that every flow completed exactly once.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats

from bench.common import NodeProcess, percentile
from parley.apps.pingpong import Ping
from parley.node import Node, NodeConfig
from parley.transport.names import server_urls, stream_name
from parley.transport.natscluster import NatsCluster

APPS = ["parley.apps.pingpong"]


@dataclass
class Flows:
    """Flows started by the loops: (started at, latency) pairs, under a lock."""

    samples: list[tuple[float, float]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)
    counter: int = 0

    def next(self) -> int:
        with self.lock:
            self.counter += 1
            return self.counter


def loop(node: Node, flows: Flows) -> None:
    """Start Ping flows one after the other until told to stop; record each."""
    while not flows.stop.is_set():
        n = flows.next()
        started = time.monotonic()
        try:
            result = node.start_flow(Ping("pong", n), timeout=120).result(120)
        except Exception as exc:
            with flows.lock:
                flows.errors.append(f"flow {n}: {exc!r}")
            continue
        took = time.monotonic() - started
        with flows.lock:
            if result != n + 1:
                flows.errors.append(f"flow {n}: {result} instead of {n + 1}")
            flows.samples.append((started, took))


def leader_of(url: str, stream: str) -> str:
    """The name of the server that leads ``stream`` now."""

    async def ask() -> str:
        nc = await nats.connect(server_urls(url), connect_timeout=5)
        try:
            for _ in range(100):
                try:
                    info = await nc.jetstream().stream_info(stream)
                except Exception:
                    await asyncio.sleep(0.1)
                    continue
                if info.cluster is not None and info.cluster.leader:
                    return str(info.cluster.leader)
                await asyncio.sleep(0.1)
            raise RuntimeError(f"{stream} has no leader")
        finally:
            await nc.close()

    return asyncio.run(ask())


def window(flows: Flows, start: float, end: float) -> list[float]:
    with flows.lock:
        return [took for began, took in flows.samples if start <= began < end]


def spanning(flows: Flows, moment: float) -> list[float]:
    """Latencies of the flows under way at ``moment``."""
    with flows.lock:
        return [took for began, took in flows.samples if began <= moment <= began + took]


def run(in_flight: int = 4, baseline: float = 10.0, after: float = 25.0) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="parley-cluster-") as tmp:
        cluster = NatsCluster(Path(tmp) / "nats")
        url = cluster.start()
        pong: NodeProcess | None = None
        flows = Flows()
        threads: list[threading.Thread] = []
        kills: list[dict[str, Any]] = []
        try:
            pong = NodeProcess(
                "pong", url, Path(tmp) / "pong", APPS, "--stream-replicas", "3", "--no-rpc"
            )
            config = NodeConfig(
                "ping", Path(tmp) / "ping", nats_url=url, apps=APPS, stream_replicas=3, rpc=False
            )
            with Node(config) as node:
                for _ in range(20):  # warm-up: both streams and paths exist
                    node.start_flow(Ping("pong", 0)).result(30)
                threads = [
                    threading.Thread(target=loop, args=(node, flows), daemon=True)
                    for _ in range(in_flight)
                ]
                for thread in threads:
                    thread.start()
                began = time.monotonic()
                threading.Event().wait(baseline)
                base = window(flows, began, time.monotonic())
                p50 = percentile(base, 0.5)
                victims = [
                    ("leader of pong's stream", leader_of(url, stream_name("pong"))),
                    ("leader of ping's stream", leader_of(url, stream_name("ping"))),
                ]
                others = [n for n in cluster.names if n not in {v for _, v in victims}]
                if others:
                    victims.append(("a server leading neither stream", others[0]))
                for what, _ in victims:
                    # Leaders move with every kill: ask again just before this one.
                    victim = _victim(what, url, cluster.names)
                    kills.append(kill_one(cluster, flows, what, victim, after=after, p50=p50))
                flows.stop.set()
                for thread in threads:
                    thread.join(150)
            figures = {
                "in_flight": in_flight,
                "flows": len(flows.samples),
                "errors": flows.errors[:5],
                "baseline_p50_ms": round(p50 * 1000, 1),
                "baseline_p99_ms": round(percentile(base, 0.99) * 1000, 1),
                "kills": kills,
            }
        finally:
            flows.stop.set()
            if pong is not None:
                pong.stop()
            cluster.stop()
    return figures


def _victim(what: str, url: str, names: list[str]) -> str:
    if what == "leader of pong's stream":
        return leader_of(url, stream_name("pong"))
    if what == "leader of ping's stream":
        return leader_of(url, stream_name("ping"))
    leaders = {leader_of(url, stream_name("pong")), leader_of(url, stream_name("ping"))}
    others = [n for n in names if n not in leaders]
    return others[0] if others else names[0]


def kill_one(
    cluster: NatsCluster, flows: Flows, what: str, victim: str, *, after: float, p50: float
) -> dict[str, Any]:
    index = cluster.index(victim)
    killed = time.monotonic()
    cluster.kill(index)
    threading.Event().wait(after)
    restarted = time.monotonic()
    cluster.restart(index)
    caught_up = time.monotonic() - restarted
    threading.Event().wait(2.0)  # flows run on the healed cluster before the next kill
    under_way = spanning(flows, killed)
    soon = window(flows, killed, killed + 10.0)
    later = window(flows, killed + 10.0, restarted)
    worst = max(under_way + soon, default=0.0)
    return {
        "killed": f"{victim} ({what})",
        "longest_flow_s": round(worst, 2),
        "extra_latency_s": round(worst - p50, 2),
        "p99_first_10s_ms": round(percentile(soon, 0.99) * 1000, 1) if soon else None,
        "p50_after_10s_ms": round(percentile(later, 0.5) * 1000, 1) if later else None,
        "flows_in_window": len(soon) + len(later),
        "restart_caught_up_s": round(caught_up, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cluster", description=__doc__)
    parser.add_argument("--in-flight", type=int, default=4)
    parser.add_argument("--baseline", type=float, default=10.0, help="seconds before the kills")
    parser.add_argument("--after", type=float, default=25.0, help="seconds of flows per kill")
    options = parser.parse_args(argv)
    figures = run(options.in_flight, options.baseline, options.after)
    print(
        f"{figures['flows']} flows, {options.in_flight} in flight; baseline p50 "
        f"{figures['baseline_p50_ms']} ms, p99 {figures['baseline_p99_ms']} ms"
    )
    for kill in figures["kills"]:
        print(
            f"kill -9 {kill['killed']}: longest flow {kill['longest_flow_s']} s "
            f"(+{kill['extra_latency_s']} s over p50), p99 of the next 10 s "
            f"{kill['p99_first_10s_ms']} ms, p50 after that {kill['p50_after_10s_ms']} ms; "
            f"restarted server caught up in {kill['restart_caught_up_s']} s"
        )
    if figures["errors"]:
        print("ERRORS:", *figures["errors"], sep="\n  ")
        return 1
    print("every flow completed, with the right result")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""chaos: ~1,000 flows of mixed shapes on three node processes while processes are killed.

``python -m bench.chaos [--flows 1000] [--kills 20] [--cluster] [--seed N] [--rate 10]``

Three ``parley node run`` processes (``alpha``, ``bravo``, ``charlie``, app :mod:`bench.chaos_app`,
RPC on) share one nats-server, or with ``--cluster`` a 3-server cluster with R3 streams. A driver
starts the flows over RPC at ``rate`` per second, each with its tag as client id, so a start that
got no answer is simply made again; meanwhile a killer ``kill -9``s a random node or nats-server
``kills`` times at random moments and restarts it after a random pause (one at a time: the victim
is back before the next kill). Once every flow is started and the last kill is over, the run waits
for every flow to finish, stops the nodes and checks their databases:

* every flow has exactly one result, ``COMPLETED``, on the node that started it;
* every row the flows write (``chaos_effects``: one per flow and per responder, committed with
  their checkpoints) exists exactly once: none missing, none twice (a message processed twice or
  a step replayed past its commit would leave a second one);
* no flow is left (``flow_start`` and ``held_init`` are empty on every node).

It prints the flows completed, the kills survived and the time to drain after the last kill.
``tests/integration/test_chaos.py`` runs a short version.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import random
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import nats.errors

from bench.chaos_app import expected_rows, flow_for
from bench.common import REPO, _env, query
from parley.rpc import (
    AsyncRpcClient,
    InternalError,
    NodeUnavailable,
    NodeUnreachable,
    Refused,
    RpcTimeout,
    RpcUser,
    hash_password,
)
from parley.transport.natscluster import NatsCluster
from parley.transport.natsserver import EmbeddedNatsServer

NODES = ["alpha", "bravo", "charlie"]
APP = "bench.chaos_app"
USER = "chaos"
#: Errors of a start that may succeed when made again (the node or NATS is away).
TRANSIENT = (
    NodeUnreachable,
    NodeUnavailable,
    RpcTimeout,
    Refused,
    InternalError,
    TimeoutError,
    OSError,
    nats.errors.Error,
)


# ---- processes ----------------------------------------------------------------------------------


class NodeRun:
    """A ``parley node run`` process that is killed and started again; one log for all runs."""

    def __init__(self, name: str, url: str, base: Path, extra: list[str]) -> None:
        self.name, self.url = name, url
        self.data_dir = base / name
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.data_dir / "node.log"
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def db(self) -> Path:
        return self.data_dir / "parley.sqlite"

    def start(self, timeout: float = 90.0) -> None:
        command = [sys.executable, "-m", "parley.cli", "node", "run", "--name", self.name]
        command += ["--nats", self.url, "--data-dir", str(self.data_dir), "--app", APP]
        command += ["--log-level", "WARNING", "--workers", "2", *self.extra]
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                command, cwd=REPO, env=_env(), stdout=subprocess.DEVNULL, stderr=log
            )
        deadline = time.monotonic() + timeout
        pause = threading.Event()
        while True:
            with self.log_path.open("rb") as log:
                log.seek(offset)
                text = log.read().decode(errors="replace")
            if f"node {self.name} running" in text:
                return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"node {self.name} did not start:\n{text[-3000:]}")
            pause.wait(0.05)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.kill()


class Nats:
    """One nats-server or a 3-server cluster, each server a possible victim."""

    def __init__(self, base: Path, cluster: bool) -> None:
        self.cluster = NatsCluster(base / "nats") if cluster else None
        self.single = None if cluster else EmbeddedNatsServer(base / "nats")

    def start(self) -> str:
        if self.cluster is not None:
            return self.cluster.start()
        assert self.single is not None
        return self.single.start()

    @property
    def victims(self) -> list[str]:
        return [f"nats-{n}" for n in self.cluster.names] if self.cluster else ["nats"]

    def urls(self) -> list[str]:
        """Client URLs of the servers that run now."""
        servers = self.cluster.servers if self.cluster is not None else [self.single]
        return [s.url for s in servers if s is not None and s.running]

    def kill(self, victim: str) -> None:
        if self.cluster is not None:
            self.cluster.kill(self.cluster.index(victim.removeprefix("nats-")))
        elif self.single is not None:
            self.single.kill()

    def restart(self, victim: str) -> None:
        if self.cluster is not None:
            self.cluster.restart(self.cluster.index(victim.removeprefix("nats-")))
        elif self.single is not None:
            self.single.start()

    def stop(self) -> None:
        if self.cluster is not None:
            self.cluster.stop()
        elif self.single is not None:
            self.single.stop()


# ---- the run ------------------------------------------------------------------------------------


@dataclass
class Report:
    """What a chaos run did and found; ``problems`` is empty when every check passed."""

    flows: int
    seed: int
    completed: int = 0
    kills: list[str] = field(default_factory=list)
    start_retries: int = 0
    drain_after_last_kill_s: float = 0.0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        victims = collections.Counter(
            "nats" if v.startswith("nats") else "node" for v in self.kills
        )
        return (
            f"flows completed: {self.completed} of {self.flows}; kills survived: "
            f"{len(self.kills)} ({victims['node']} nodes, {victims['nats']} nats-servers); "
            f"drain after the last kill: {self.drain_after_last_kill_s:.1f} s; "
            f"starts made again: {self.start_retries}; whole run {self.seconds:.0f} s "
            f"(seed {self.seed})"
        )


@dataclass
class Chaos:
    """The shared state of one run (the driver's loop, the killer thread, the checks)."""

    flows: int
    kills: int
    rate: float
    sleep: float
    seed: int
    nats: Nats
    nodes: dict[str, NodeRun]
    password: str
    report: Report
    lock: threading.Lock = field(default_factory=threading.Lock)
    last_kill: float = 0.0
    killing_done: threading.Event = field(default_factory=threading.Event)

    # ---- the killer (a thread) -------------------------------------------------------------

    def victims(self, chooser: random.Random) -> list[str]:
        """A random victim for each kill; with two kills or more, nodes and NATS both among them."""
        nodes, servers = list(self.nodes), self.nats.victims
        chosen = [chooser.choice(nodes + servers) for _ in range(self.kills)]
        for kind in (nodes, servers):
            if self.kills >= 2 and not set(chosen) & set(kind):
                chosen[chooser.randrange(self.kills)] = chooser.choice(kind)
        return chosen

    def kill_loop(self, moments: list[float], began: float) -> None:
        """Kill a random victim at each moment (seconds after ``began``), then restart it."""
        chooser = random.Random(self.seed)
        pause = threading.Event()
        try:
            for moment, victim in zip(moments, self.victims(chooser), strict=True):
                pause.wait(max(0.0, began + moment - time.monotonic()))
                with self.lock:
                    self.last_kill = time.monotonic()
                if victim in self.nodes:
                    self.nodes[victim].kill()
                else:
                    self.nats.kill(victim)
                self.report.kills.append(victim)
                pause.wait(chooser.uniform(0.1, 1.5))  # down for a moment
                if victim in self.nodes:
                    self.nodes[victim].start()
                else:
                    self.nats.restart(victim)
        except Exception as exc:
            self.report.problems.append(f"the killer failed: {exc!r}")
        finally:
            self.killing_done.set()

    # ---- the driver (asyncio) --------------------------------------------------------------

    async def client(self, clients: dict[str, AsyncRpcClient], node: str) -> AsyncRpcClient:
        if node not in clients:
            urls = self.nats.urls()
            if not urls:
                raise NodeUnreachable("no nats-server runs")
            client = AsyncRpcClient(random.choice(urls), node, user=USER, password=self.password)
            clients[node] = await client.connect()
        return clients[node]

    async def start_one(self, index: int, clients: dict[str, AsyncRpcClient]) -> None:
        node, flow, args = flow_for(index, NODES, self.sleep)
        while True:
            try:
                client = await self.client(clients, node)
                await asyncio.wait_for(
                    client.start_flow(flow, args, client_id=str(args[0])), timeout=10.0
                )
                return
            except TRANSIENT:
                self.report.start_retries += 1
                stale = clients.pop(node, None)
                if stale is not None:
                    await stale.close()
                await asyncio.sleep(0.3)  # the node or NATS is away: make the start again

    async def drive(self) -> None:
        """Start every flow, ``rate`` per second, at most 16 starts waiting at a time."""
        clients: dict[str, AsyncRpcClient] = {}
        slots = asyncio.Semaphore(16)
        tasks: set[asyncio.Task[None]] = set()

        async def one(index: int) -> None:
            try:
                await self.start_one(index, clients)
            finally:
                slots.release()

        began = time.monotonic()
        for index in range(self.flows):
            await asyncio.sleep(max(0.0, began + index / self.rate - time.monotonic()))
            await slots.acquire()
            task = asyncio.create_task(one(index))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)
        for client in clients.values():
            await client.close()

    # ---- the checks --------------------------------------------------------------------------

    def finished(self) -> int:
        """Flows with a result on their node, when no flow (responders too) is left anywhere."""
        done = sum(
            int(
                query(n.db, "SELECT count(*) FROM flow_result WHERE client_id LIKE 'chaos-%'")[0][0]
            )
            for n in self.nodes.values()
        )
        left = sum(
            int(query(n.db, "SELECT count(*) FROM flow_start")[0][0]) for n in self.nodes.values()
        )
        return done if left == 0 else -1

    def check(self) -> None:
        """Read every node's database (nodes stopped) and list what is wrong."""
        problems = self.report.problems
        results: dict[str, list[tuple[str, str]]] = collections.defaultdict(list)
        found: collections.Counter[tuple[str, str, str]] = collections.Counter()
        for name, proc in self.nodes.items():
            for client_id, status in query(proc.db, "SELECT client_id, status FROM flow_result"):
                results[str(client_id)].append((name, str(status)))
            for tag, side in query(proc.db, "SELECT tag, side FROM chaos_effects"):
                found[(name, str(tag), str(side))] += 1
            for flow_id, flow_class, status in query(
                proc.db,
                "SELECT s.flow_id, s.flow_class, coalesce(h.status, 'RUNNABLE') FROM flow_start s"
                " LEFT JOIN flow_header h USING (flow_id)",
            ):
                problems.append(f"stuck on {name}: {flow_class} {flow_id} {status}")
            for (held,) in query(proc.db, "SELECT flow_id FROM held_init"):
                problems.append(f"held init on {name}: {held}")
        expected: collections.Counter[tuple[str, str, str]] = collections.Counter()
        completed = 0
        for index in range(self.flows):
            node, _, args = flow_for(index, NODES, self.sleep)
            outcome = results.get(str(args[0]), [])
            if outcome == [(node, "COMPLETED")]:
                completed += 1
            else:
                problems.append(f"chaos-{index} (started on {node}) ended as {outcome}")
            expected.update(expected_rows(index, NODES, self.sleep))
        self.report.completed = completed
        for row, count in sorted((found - expected).items()):
            problems.append(f"row {row} written {count} time(s) too many")
        for row, count in sorted((expected - found).items()):
            problems.append(f"row {row} missing ({count})")


def run(
    flows: int = 1000,
    kills: int = 20,
    *,
    cluster: bool = False,
    seed: int | None = None,
    rate: float = 10.0,
    sleep: float = 1.0,
    drain_timeout: float = 300.0,
    base: Path | None = None,
) -> Report:
    """Run the chaos; returns the report (its ``problems`` say what went wrong, if anything).

    Args:
        flows: how many flows to start.
        kills: how many processes to kill (one at a time, each restarted).
        cluster: a 3-server NATS cluster with R3 streams instead of one server.
        seed: for the kill moments and victims (random when ``None``; the report says it).
        rate: flows started per second; the kills fall within the time that takes.
        sleep: seconds the ``Sleeper`` flows sleep.
        drain_timeout: how long to wait after the last kill for every flow to finish.
        base: a directory for the servers' and nodes' files (a temporary one when ``None``).
    """
    seed = seed if seed is not None else secrets.randbelow(1 << 30)
    if base is None:
        with tempfile.TemporaryDirectory(prefix="parley-chaos-") as tmp:
            return run(
                flows,
                kills,
                cluster=cluster,
                seed=seed,
                rate=rate,
                sleep=sleep,
                drain_timeout=drain_timeout,
                base=Path(tmp),
            )
    base.mkdir(parents=True, exist_ok=True)
    report = Report(flows, seed)
    started = time.monotonic()
    password = secrets.token_urlsafe(12)
    config = base / "parley.toml"
    config.write_text(RpcUser(USER, hash_password(password), ["ALL"]).toml())
    servers = Nats(base, cluster)
    nodes: dict[str, NodeRun] = {}
    try:
        url = servers.start()
        extra = ["--config", str(config)] + (["--stream-replicas", "3"] if cluster else [])
        nodes = {name: NodeRun(name, url, base, extra) for name in NODES}
        for node in nodes.values():
            node.start()
        chaos = Chaos(flows, kills, rate, sleep, seed, servers, nodes, password, report)
        chooser = random.Random(seed + 1)
        window = max(flows / rate, 1.0)
        moments = sorted(chooser.uniform(1.0, window) for _ in range(kills))
        killer = threading.Thread(
            target=chaos.kill_loop, args=(moments, time.monotonic()), daemon=True
        )
        killer.start()
        asyncio.run(chaos.drive())
        killer.join()
        last = chaos.last_kill or time.monotonic()
        deadline = time.monotonic() + drain_timeout
        pause = threading.Event()
        while chaos.finished() < flows and time.monotonic() < deadline:
            pause.wait(0.1)
        report.drain_after_last_kill_s = round(time.monotonic() - last, 1)
        for node in nodes.values():
            node.stop()
        chaos.check()
    finally:
        for node in nodes.values():
            node.kill()
        servers.stop()
        report.seconds = time.monotonic() - started
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__)
    parser.add_argument("--flows", type=int, default=1000)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--cluster", action="store_true", help="3 nats-servers, R3 streams")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--rate", type=float, default=10.0, help="flows started per second")
    parser.add_argument("--keep", type=Path, help="keep the nodes' files in this directory")
    options = parser.parse_args(argv)
    if options.keep is not None:
        options.keep.mkdir(parents=True, exist_ok=True)
    report = run(
        options.flows,
        options.kills,
        cluster=options.cluster,
        seed=options.seed,
        rate=options.rate,
        base=options.keep,
    )
    print(
        ("cluster (3 servers, R3): " if options.cluster else "one nats-server: ") + report.summary()
    )
    print(f"victims in order: {' '.join(report.kills)}")
    if report.problems:
        print(f"{len(report.problems)} PROBLEMS:", *report.problems[:40], sep="\n  ")
        return 1
    print("every flow finished exactly once: one result each, every row once, nothing left")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        raise SystemExit(main())

"""trade: is the checkpoint path slowed by the trade app and its sqlite-utils vault layer?

``parley.apps.trade`` builds its vault statements with sqlite-utils (a dry run against a
schema-only in-memory copy of its tables) in the flow's own code, and queues plain SQL for the
checkpoint. This measures, in one process, alternating the variants round by round:

1. a checkpoint commit (one PutCheckpoint, as ``bench/store_commit.py``) on a store without and
   with the trade app's tables;
2. ping-pong flows on MockNetwork (file stores) whose nodes run without and with the trade app,
   and how many calls go into sqlite-utils while they run (none is expected: it is not on the
   path);
3. a checkpoint commit carrying a trade's vault writes, as sqlite-utils built them and as the
   same rows written with hand-written SQL;
4. a whole trade on MockNetwork, and the share of it spent in the vault layer's dry runs.

Usage: python -m bench.trade [--rounds 5] [--commits 2000] [--flows 300] [--trades 30]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import parley.apps.trade.vault as vault_module
from parley.apps.pingpong import Ping
from parley.apps.trade import MIGRATIONS, IssueCash, IssuePaper, PlaceBid, Seller
from parley.protocol.records import (
    FlowStatus,
    FlowWrite,
    PutCheckpoint,
    PutFlowStart,
    StartKind,
    StoreOp,
)
from parley.store import SqliteStore
from parley.testing import MockNetwork

HEADER, ENTRY = b"h" * 200, b"j" * 100
PINGPONG = ["parley.apps.pingpong"]
WITH_TRADE = ["parley.apps.pingpong", "parley.apps.trade"]


def _checkpoint(index: int) -> PutCheckpoint:
    return PutCheckpoint(
        flow_id="flow-0",
        status=FlowStatus.RUNNABLE,
        header=HEADER,
        journal_start=index,
        journal=(ENTRY,),
        suspends=index,
        pending_request="receive",
        progress_step="step",
    )


def _store(directory: Path, name: str, tables: bool) -> SqliteStore:
    store = SqliteStore(directory / name)
    if tables:
        store.apply_app_migrations("parley.apps.trade", MIGRATIONS)
    store.commit([PutFlowStart("flow-0", "bench.Flow", StartKind.RPC, b"args")])
    return store


def checkpoint_commits(directory: Path, rounds: int, commits: int) -> dict[str, list[float]]:
    """Microseconds per checkpoint commit, per round, without and with the trade's tables."""
    stores = {v: _store(directory, f"{v}.db", v == "with trade") for v in ("without", "with trade")}
    done = dict.fromkeys(stores, 0)
    figures: dict[str, list[float]] = {v: [] for v in stores}
    for _ in range(rounds):
        for variant, store in stores.items():
            start = time.perf_counter()
            for _ in range(commits):
                store.commit([_checkpoint(done[variant])])
                done[variant] += 1
            figures[variant].append((time.perf_counter() - start) / commits * 1e6)
    for store in stores.values():
        store.close()
    return figures


def pingpong(directory: Path, rounds: int, flows: int) -> tuple[dict[str, list[float]], int]:
    """Microseconds per ping-pong flow, per round, on nodes without and with the trade app;
    and the number of calls into sqlite-utils during one more run with it, under a profiler
    (not timed: the profiler slows what it watches)."""
    figures: dict[str, list[float]] = {"without": [], "with trade": []}
    for round_ in range(rounds):
        for variant, apps in (("without", PINGPONG), ("with trade", WITH_TRADE)):
            run = _pingpong_run(directory / f"{variant}-{round_}".replace(" ", "-"), apps)
            start = time.perf_counter()
            for n in range(flows):
                run(n)
            figures[variant].append((time.perf_counter() - start) / flows * 1e6)
    run = _pingpong_run(directory / "profiled", WITH_TRADE)
    profiler = cProfile.Profile()
    profiler.enable()
    for n in range(flows):
        run(n)
    profiler.disable()
    return figures, _sqlite_utils_calls(profiler)


def _pingpong_run(data_dir: Path, apps: list[str]) -> Callable[[int], int]:
    """Nodes alice and bob on file stores in ``data_dir``; returns a function that runs one Ping."""
    data_dir.mkdir()
    net = MockNetwork(data_dir=data_dir)
    alice = net.create_node("alice", apps=apps)
    net.create_node("bob", apps=apps)
    return lambda n: alice.start_flow(Ping("bob", n)).result()


def _sqlite_utils_calls(profiler: cProfile.Profile) -> int:
    stats: dict[Any, Any] = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    return sum(calls for (path, _, _), (_, calls, *_) in stats.items() if "sqlite_utils" in path)


def vault_writes(directory: Path, rounds: int, commits: int) -> dict[str, list[float]]:
    """Microseconds per checkpoint commit carrying a trade's vault writes (a transaction, two
    states, one consumed ref), built by sqlite-utils and hand-written."""
    stores = {v: _store(directory, f"w-{v}.db", True) for v in ("sqlite-utils", "hand-written")}
    done = dict.fromkeys(stores, 0)
    figures: dict[str, list[float]] = {v: [] for v in stores}
    builders = {"sqlite-utils": _built_writes, "hand-written": _hand_writes}
    for _ in range(rounds):
        for variant, store in stores.items():
            first = done[variant]
            batches: list[list[StoreOp]] = [
                [_checkpoint(n), *builders[variant](n)] for n in range(first, first + commits)
            ]  # built before the clock starts: only the commits are timed
            start = time.perf_counter()
            for ops in batches:
                store.commit(ops)
            figures[variant].append((time.perf_counter() - start) / commits * 1e6)
            done[variant] += commits
    for store in stores.values():
        store.close()
    return figures


def _rows(n: int) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
    tx = {"id": f"{n:064x}", "body": b"b" * 600, "signatures": '[["a", "00"]]', "recorded_at": "t"}
    states = [
        {"ref": f"{n:064x}:{i}", "tx_id": f"{n:064x}", "idx": i, "kind": "Cash", "owner": "o"}
        | {"issuer": "i", "currency": "USD", "amount": "10", "maturity": None, "recorded_at": "t"}
        for i in range(2)
    ]
    return tx, states, {"ref": f"{n:064x}:9", "consumed_by": f"{n:064x}", "consumed_at": "t"}


def _built_writes(n: int) -> list[FlowWrite]:
    tx, states, spent = _rows(n)
    tables = (("vault_transactions", [tx]), ("vault_states", states), ("vault_consumed", [spent]))
    return [write for table, rows in tables for write in _inserted(table, rows)]


def _inserted(table: str, rows: list[dict[str, Any]]) -> list[FlowWrite]:
    """What ``VaultTable.insert_all(rows, ignore=True)`` queues."""
    built = vault_module.dry_run(table, lambda t: t.insert_all(rows, ignore=True))
    return [FlowWrite(sql, params) for sql, params in built]


def _hand_writes(n: int) -> list[FlowWrite]:
    tx, states, spent = _rows(n)
    return [
        FlowWrite(
            "INSERT OR IGNORE INTO vault_transactions (id, body, signatures, recorded_at)"
            " VALUES (?, ?, ?, ?)",
            tuple(tx.values()),
        ),
        FlowWrite(
            "INSERT OR IGNORE INTO vault_states (ref, tx_id, idx, kind, owner, issuer, currency,"
            " amount, maturity, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?),"
            " (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            tuple(v for row in states for v in row.values()),
        ),
        FlowWrite(
            "INSERT OR IGNORE INTO vault_consumed (ref, consumed_by, consumed_at) VALUES (?, ?, ?)",
            tuple(spent.values()),
        ),
    ]


def _trade_ready() -> tuple[MockNetwork, str]:
    """Seller, buyer and notary with a paper, cash and a bid; returns the paper's ref."""
    net = MockNetwork()
    apps = ["parley.apps.trade"]
    seller, buyer, _ = (net.create_node(n, apps=apps) for n in ("seller", "buyer", "notary"))
    paper = seller.start_flow(IssuePaper(1100, "USD", "2027-01-01T00:00:00+00:00", "notary"))
    buyer.start_flow(IssueCash(1500, "USD", "notary")).result()
    buyer.start_flow(PlaceBid("seller", "CommercialPaper", 1000, "USD")).result()
    return net, f"{paper.result()}:0"


def trades(count: int) -> tuple[float, float, float]:
    """(ms per trade, ms of it in dry runs, dry runs per trade) over ``count`` trades."""
    spent, runs, elapsed = [0.0], [0], 0.0
    real = vault_module.dry_run

    def timed(table: str, operation: Callable[[Any], object]) -> list[tuple[str, tuple[Any, ...]]]:
        start = time.perf_counter()
        try:
            return real(table, operation)
        finally:
            spent[0] += time.perf_counter() - start
            runs[0] += 1

    for _ in range(count):
        net, paper = _trade_ready()
        vault_module.dry_run = timed
        try:
            start = time.perf_counter()
            net.nodes["seller"].start_flow(Seller("buyer", paper, 1000, "USD")).result()
            elapsed += time.perf_counter() - start
        finally:
            vault_module.dry_run = real
    return elapsed / count * 1e3, spent[0] / count * 1e3, runs[0] / count


def _line(label: str, values: list[float], unit: str) -> str:
    spread = f"{min(values):8.1f} .. {max(values):8.1f}"
    return f"  {label:<14} median {statistics.median(values):8.1f} {unit}   ({spread})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--commits", type=int, default=2000)
    parser.add_argument("--flows", type=int, default=300)
    parser.add_argument("--trades", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="parley-trade-bench-") as tmp:
        directory = Path(tmp)
        commits = checkpoint_commits(directory, args.rounds, args.commits)
        flows, calls = pingpong(directory, args.rounds, args.flows)
        writes = vault_writes(directory, args.rounds, args.commits // 2)
    per_trade, in_dry_runs, dry_runs = trades(args.trades)
    print(f"checkpoint commit, {args.rounds} rounds of {args.commits} (synchronous=FULL):")
    for variant, values in commits.items():
        print(_line(variant, values, "us"))
    print(f"ping-pong on MockNetwork (file stores), {args.rounds} rounds of {args.flows} flows:")
    for variant, values in flows.items():
        print(_line(variant, values, "us/flow"))
    print(f"  calls into sqlite-utils while ping-pong ran with the trade app: {calls}")
    print("checkpoint commit with a trade's vault writes (1 tx, 2 states, 1 consumed):")
    for variant, values in writes.items():
        print(_line(variant, values, "us"))
    print(f"a trade on MockNetwork (3 nodes, in-memory stores), {args.trades} trades:")
    print(
        f"  {per_trade:.2f} ms per trade, of which {in_dry_runs:.2f} ms in {dry_runs:.0f} dry runs"
    )
    print(f"  ({in_dry_runs / dry_runs * 1e3:.0f} us per dry run, in the flows' own code)")


if __name__ == "__main__":
    main()

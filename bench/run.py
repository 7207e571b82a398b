"""The benchmark suite: ``python -m bench [--quick] [--only NAME ...] [--repeat N]``.

Runs, in one invocation on this machine: local3 (Parley and the DBOS peer side by side), pingpong,
parked, recovery and the checkpoint size; prints a table and writes JSON to
``bench/results/latest.json``. Throughput figures are repeated (``--repeat``) and reported as the
median with the min-max spread, which is this machine's noise. The peer needs the ``bench`` extra
(``pip install -e '.[bench]'``); without it the peer rows say so.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import local3, parked, pingpong, recovery

RESULTS = Path(__file__).resolve().parent / "results"
ALL = ("local3", "pingpong", "parked", "recovery")


def repeated(measure: Callable[[], dict[str, Any]], times: int) -> dict[str, Any]:
    """Run ``measure`` ``times`` times; keep the run with the median throughput, add the spread."""
    runs = [measure() for _ in range(times)]
    rates = sorted(r["flows_per_s"] for r in runs)
    median = statistics.median(rates)
    best = min(runs, key=lambda r: abs(r["flows_per_s"] - median))
    return {**best, "flows_per_s": median, "spread": [rates[0], rates[-1]], "runs": len(runs)}


def peer_local3(flows: int, in_flight: int) -> dict[str, Any]:
    try:
        # Imported by name: the peer needs the `bench` extra, which the type check runs without.
        dbos_local3 = importlib.import_module("bench.peers.dbos_local3")
    except ImportError as exc:
        return {"engine": "dbos", "error": f"not installed ({exc.name}): pip install -e '.[bench]'"}
    result: dict[str, Any] = dbos_local3.run(flows, in_flight)
    return result


def run_local3(quick: bool, times: int) -> list[dict[str, Any]]:
    rows = []
    for in_flight, flows in ((1, 300 if quick else 600), (50, 1500 if quick else 4000)):
        ours = repeated(functools.partial(local3.run, flows, in_flight), times)
        dbos = peer_local3(max(flows // 2, 200), in_flight)
        if "flows_per_s" in dbos:
            ours["ratio_to_dbos"] = round(ours["flows_per_s"] / dbos["flows_per_s"], 2)
        rows += [{"bench": "local3", **ours}, {"bench": "local3-peer", **dbos}]
    return rows


def run_pingpong(quick: bool, times: int) -> list[dict[str, Any]]:
    """Unsigned and signed (network map) ping-pong, alternating run by run: the same noise."""
    cases = [(1, 300 if quick else 600), (50, 2000 if quick else 5000)]
    runs: dict[bool, list[list[dict[str, Any]]]] = {False: [], True: []}
    for _ in range(times):
        for signed in (False, True):
            runs[signed].append(pingpong.run(cases, signed=signed))
    rows = []
    for signed in (False, True):
        for index in range(len(cases)):
            per_case = [r[index] for r in runs[signed]]
            rates = sorted(r["flows_per_s"] for r in per_case)
            median = statistics.median(rates)
            best = min(per_case, key=lambda r: abs(r["flows_per_s"] - median))
            rows.append(
                {
                    "bench": "pingpong",
                    **best,
                    "flows_per_s": median,
                    "spread": [rates[0], rates[-1]],
                }
            )
    return rows


def run_parked(quick: bool) -> list[dict[str, Any]]:
    sizes = (10_000,) if quick else (10_000, 100_000)
    return [{"bench": "parked", **parked.run(count)} for count in sizes]


def run_recovery(quick: bool) -> list[dict[str, Any]]:
    return [{"bench": "recovery", **recovery.run(5_000 if quick else 10_000)}]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller runs, one repetition")
    parser.add_argument("--only", nargs="+", choices=ALL, help="run only these benchmarks")
    parser.add_argument("--repeat", type=int, help="repetitions of throughput runs (default 3)")
    parser.add_argument("--json", type=Path, help="where to write the results")
    options = parser.parse_args(argv)
    times = options.repeat or (1 if options.quick else 3)
    chosen = options.only or list(ALL)
    rows: list[dict[str, Any]] = []
    started = time.time()
    for name in chosen:
        print(f"running {name} ...", flush=True)
        if name == "local3":
            rows += run_local3(options.quick, times)
        elif name == "pingpong":
            rows += run_pingpong(options.quick, times)
        elif name == "parked":
            rows += run_parked(options.quick)
        elif name == "recovery":
            rows += run_recovery(options.quick)
    print_table(rows)
    report = {
        "machine": {"python": platform.python_version(), "cpus": _cpus(), "node": platform.node()},
        "quick": options.quick,
        "seconds": round(time.time() - started, 1),
        "results": rows,
    }
    target = options.json or RESULTS / "latest.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {target}")
    return 0


def print_table(rows: list[dict[str, Any]]) -> None:
    print()
    for row in rows:
        bench = row.get("bench", "?")
        details = {k: v for k, v in row.items() if k != "bench"}
        text = "  ".join(f"{k}={v}" for k, v in details.items())
        print(f"{bench:<12} {text}")


def _cpus() -> int:
    return os.cpu_count() or 0


if __name__ == "__main__":
    raise SystemExit(main())

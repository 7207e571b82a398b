"""DBOS Transact running the same 3-step durable workflow as Parley's benchmark.

What is measured
    A workflow of three steps, each returning its input + 1, run on DBOS Transact with a
    local SQLite system database and no network peers. ``in_flight`` (K) workflows run at
    once; as soon as one finishes the next one starts, until ``flows`` (N) have finished.
    Throughput is N / wall time of the measured phase; the latency of a workflow is the
    time from starting it to having its result. A warm-up of ``WARMUP`` workflows (same K,
    same database) runs first and is not counted. Every run uses a fresh database file.

How K workflows run concurrently (``--mode``)
    ``call`` (default, the fastest here): K driver threads, each calling the (synchronous)
        workflow function directly, so the workflow runs in the driver thread, as it does when
        a web framework's worker thread calls a workflow.
    ``threads``: K driver threads, each starting a workflow with ``DBOS.start_workflow`` and
        blocking on ``handle.get_result()``; the workflow runs on DBOS's executor thread pool.
    ``asyncio``: ``async`` workflow and steps, K tasks on one event loop, each awaiting
        ``DBOS.start_workflow_async`` and then ``handle.get_result()``.

Durability
    DBOS creates its own SQLAlchemy engine for the system database (``_sys_db_sqlite``) and
    sets, on each new connection, IMMEDIATE transactions, ``busy_timeout`` and
    ``foreign_keys``; it leaves journal mode and synchronous at SQLite's defaults
    (rollback journal, FULL). To change nothing else, this benchmark adds a ``connect``
    listener at the class level (``sqlalchemy.Engine``), so it runs on every connection of
    every engine, DBOS's included, from its first connection on, and sets
    ``PRAGMA journal_mode=WAL`` and ``PRAGMA synchronous=FULL`` on SQLite connections. The
    listener is removed when the run ends. After the measured phase the pragmas are read
    back through DBOS's own engine, on several pool connections checked out at once, and the
    run fails unless every one reports the requested values; the reported values are those.

Usage
    python bench/peers/dbos_local3.py --flows 500 --in-flight 1 [--runs 3] [--db PATH] [--json]

``--db PATH`` is deleted (with its -wal and -shm files) at the start of each run.
Needs ``dbos`` installed (see the ``bench`` extra); it is not a dependency of Parley itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import sqlite3
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any, Literal, get_args

import sqlalchemy as sa
from dbos import DBOS, DBOSConfig

Mode = Literal["call", "threads", "asyncio"]
WARMUP = 50
JOURNAL_MODE = "WAL"
SYNCHRONOUS = "FULL"
# SQLite reports synchronous as a number.
_SYNCHRONOUS_NAMES = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
_VERIFY_CONNECTIONS = 4


@DBOS.step()
def add_one(x: int) -> int:
    return x + 1


@DBOS.workflow()
def three_steps(x: int) -> int:
    return add_one(add_one(add_one(x)))


@DBOS.step()
async def add_one_async(x: int) -> int:
    return x + 1


@DBOS.workflow()
async def three_steps_async(x: int) -> int:
    return await add_one_async(await add_one_async(await add_one_async(x)))


@contextlib.contextmanager
def _sqlite_pragmas(journal_mode: str, synchronous: str) -> Iterator[None]:
    """Set the pragmas on every new SQLite connection of any SQLAlchemy engine, meanwhile."""

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        if isinstance(dbapi_connection, sqlite3.Connection):
            dbapi_connection.execute(f"PRAGMA journal_mode={journal_mode}").fetchall()
            dbapi_connection.execute(f"PRAGMA synchronous={synchronous}")

    sa.event.listen(sa.Engine, "connect", on_connect)
    try:
        yield
    finally:
        sa.event.remove(sa.Engine, "connect", on_connect)


def _read_pragmas(engine: sa.Engine) -> tuple[str, str]:
    """(journal_mode, synchronous) as every one of several pooled connections reports them."""
    seen: set[tuple[str, str]] = set()
    with contextlib.ExitStack() as stack:
        for _ in range(_VERIFY_CONNECTIONS):
            conn = stack.enter_context(engine.connect())
            mode = str(conn.exec_driver_sql("PRAGMA journal_mode").scalar_one())
            sync = int(conn.exec_driver_sql("PRAGMA synchronous").scalar_one())
            seen.add((mode.upper(), _SYNCHRONOUS_NAMES.get(sync, str(sync))))
    if len(seen) != 1:
        raise RuntimeError(f"pooled connections disagree on their pragmas: {sorted(seen)}")
    return seen.pop()


def _drive_threads(first: int, count: int, in_flight: int, start: bool) -> list[float]:
    """Run workflows first..first+count-1 from in_flight threads; latencies in seconds."""
    numbers = iter(range(first, first + count))
    lock = threading.Lock()
    latencies: list[float] = []
    errors: list[BaseException] = []

    def worker() -> None:
        while True:
            with lock:
                x = next(numbers, None)
            if x is None:
                return
            try:
                began = time.perf_counter()
                if start:
                    result = DBOS.start_workflow(three_steps, x).get_result()
                else:
                    result = three_steps(x)
                took = time.perf_counter() - began
            except BaseException as error:
                errors.append(error)
                return
            if result != x + 3:
                errors.append(AssertionError(f"workflow({x}) returned {result}"))
                return
            with lock:
                latencies.append(took)

    threads = [threading.Thread(target=worker) for _ in range(in_flight)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return latencies


async def _drive_asyncio(first: int, count: int, in_flight: int) -> list[float]:
    numbers = iter(range(first, first + count))
    latencies: list[float] = []

    async def worker() -> None:
        for x in numbers:
            began = time.perf_counter()
            handle = await DBOS.start_workflow_async(three_steps_async, x)
            result = await handle.get_result()
            latencies.append(time.perf_counter() - began)
            if result != x + 3:
                raise AssertionError(f"workflow({x}) returned {result}")

    await asyncio.gather(*(worker() for _ in range(in_flight)))
    return latencies


def _driver(mode: Mode) -> Callable[[int, int, int], list[float]]:
    if mode == "asyncio":
        return lambda first, count, k: asyncio.run(_drive_asyncio(first, count, k))
    start = mode == "threads"
    return lambda first, count, k: _drive_threads(first, count, k, start)


def _percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile."""
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


def _fresh(path: Path) -> None:
    for name in (path.name, f"{path.name}-wal", f"{path.name}-shm", f"{path.name}-journal"):
        (path.parent / name).unlink(missing_ok=True)


def _measure(
    db_file: Path,
    *,
    flows: int,
    in_flight: int,
    mode: Mode,
    warmup: int,
    journal_mode: str,
    synchronous: str,
) -> dict[str, object]:
    _fresh(db_file)
    config: DBOSConfig = {
        "name": "parley-bench-dbos",
        "system_database_url": f"sqlite:///{db_file}",
        "log_level": "WARNING",
    }
    drive = _driver(mode)
    with _sqlite_pragmas(journal_mode, synchronous):
        dbos = DBOS(config=config)
        try:
            DBOS.launch()
            drive(0, warmup, in_flight)
            began = time.perf_counter()
            latencies = drive(warmup, flows, in_flight)
            wall = time.perf_counter() - began
            actual_mode, actual_sync = _read_pragmas(dbos._sys_db.engine)
        finally:
            DBOS.destroy()
    if (actual_mode, actual_sync) != (journal_mode.upper(), synchronous.upper()):
        raise RuntimeError(
            f"asked for journal_mode={journal_mode} synchronous={synchronous}, "
            f"got {actual_mode} {actual_sync}"
        )
    if len(latencies) != flows:
        raise RuntimeError(f"{len(latencies)} of {flows} workflows finished")
    latencies.sort()
    return {
        "engine": "dbos",
        "version": version("dbos"),
        "mode": mode,
        "in_flight": in_flight,
        "flows": flows,
        "flows_per_s": round(flows / wall, 1),
        "p50_ms": round(statistics.median(latencies) * 1000, 2),
        "p99_ms": round(_percentile(latencies, 0.99) * 1000, 2),
        "journal_mode": actual_mode,
        "synchronous": actual_sync,
    }


def run(
    flows: int,
    in_flight: int,
    *,
    db: Path | None = None,
    mode: Mode = "call",
    warmup: int = WARMUP,
    journal_mode: str = JOURNAL_MODE,
    synchronous: str = SYNCHRONOUS,
) -> dict[str, object]:
    """One run on a fresh database: ``db`` if given (replaced), else one in a temp dir."""
    if flows < 1 or in_flight < 1:
        raise ValueError("flows and in_flight must be at least 1")
    if db is not None:
        return _measure(
            db,
            flows=flows,
            in_flight=in_flight,
            mode=mode,
            warmup=warmup,
            journal_mode=journal_mode,
            synchronous=synchronous,
        )
    with tempfile.TemporaryDirectory(prefix="dbos-bench-") as directory:
        db_file = Path(directory) / "dbos.sqlite"
        return _measure(
            db_file,
            flows=flows,
            in_flight=in_flight,
            mode=mode,
            warmup=warmup,
            journal_mode=journal_mode,
            synchronous=synchronous,
        )


def _line(result: dict[str, object]) -> str:
    return (
        f"dbos {result['version']} mode={result['mode']} in_flight={result['in_flight']} "
        f"flows={result['flows']}: {result['flows_per_s']} flows/s, "
        f"p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms "
        f"(journal_mode={result['journal_mode']}, synchronous={result['synchronous']})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--flows", type=int, default=500, help="measured workflows per run")
    parser.add_argument("--in-flight", type=int, default=1, help="workflows running at once")
    parser.add_argument("--runs", type=int, default=1, help="runs, each on a fresh database")
    parser.add_argument("--db", type=Path, help="database file to use (replaced each run)")
    parser.add_argument("--mode", choices=get_args(Mode), default="call")
    parser.add_argument("--warmup", type=int, default=WARMUP)
    parser.add_argument("--journal-mode", default=JOURNAL_MODE)
    parser.add_argument("--synchronous", default=SYNCHRONOUS)
    parser.add_argument("--json", action="store_true", help="one JSON object per run")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    for _ in range(args.runs):
        result = run(
            args.flows,
            args.in_flight,
            db=args.db,
            mode=args.mode,
            warmup=args.warmup,
            journal_mode=args.journal_mode,
            synchronous=args.synchronous,
        )
        print(json.dumps(result) if args.json else _line(result), flush=True)


if __name__ == "__main__":
    main()

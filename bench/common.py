"""Shared pieces of the benchmarks: servers, node processes, timing, process statistics."""

from __future__ import annotations

import functools
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-quantile (0..1) of ``values``, by nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(latencies: Sequence[float], flows: int, seconds: float) -> dict[str, float]:
    return {
        "flows_per_s": round(flows / seconds, 1),
        "p50_ms": round(percentile(latencies, 0.5) * 1000, 2),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
        "mean_ms": round(statistics.fmean(latencies) * 1000, 2),
    }


def proc_status(pid: int) -> dict[str, int]:
    """Resident memory (KiB) and thread count of a process, from /proc."""
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "Threads"):
            fields[key] = int(value.split()[0])
    return fields


def query(db: Path, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
    """Read a node's database while it runs (read-only; missing tables read as empty)."""
    if not db.exists():
        return []
    connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return connection.execute(sql, params).fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        connection.close()


def closed_loop(
    start: Callable[[int], Future[Any]], flows: int, in_flight: int, timeout: float = 600
) -> dict[str, float]:
    """Run ``flows`` flows, ``in_flight`` at a time (a new one starts when one finishes).

    ``start(n)`` starts the n-th flow and returns the future of its result. Returns throughput
    and the latency of each flow from its start to its result.
    """
    slots = threading.Semaphore(in_flight)
    finished = threading.Event()
    latencies: list[float] = []
    lock = threading.Lock()

    def done(started: float, future: Future[Any]) -> None:
        future.result()
        with lock:
            latencies.append(time.perf_counter() - started)
            if len(latencies) == flows:
                finished.set()
        slots.release()

    began = time.perf_counter()
    for n in range(flows):
        slots.acquire()
        started = time.perf_counter()
        start(n).add_done_callback(functools.partial(done, started))
    if not finished.wait(timeout):
        raise TimeoutError(f"{flows - len(latencies)} of {flows} flows did not finish")
    return summary(latencies, flows, time.perf_counter() - began)


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll ``check`` until true; returns the seconds it took. Raises TimeoutError."""
    started = time.perf_counter()
    while not check():
        if time.perf_counter() - started > timeout:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        threading.Event().wait(0.01)
    return time.perf_counter() - started


class NodeProcess:
    """``parley node run`` in a child process (its stderr goes to a log file)."""

    def __init__(
        self, name: str, nats_url: str, data_dir: Path, apps: Sequence[str], *extra: str
    ) -> None:
        self.name, self.data_dir = name, data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = data_dir / "node.log"
        command = [sys.executable, "-m", "parley.cli", "node", "run", "--name", name]
        command += ["--nats", nats_url, "--data-dir", str(data_dir), "--log-level", "WARNING"]
        for app in apps:
            command += ["--app", app]
        command += list(extra)
        self._log = self.log_path.open("a")
        self.proc = subprocess.Popen(
            command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=self._log, env=_env()
        )
        wait_until(self._started, 60, f"node {name} to start")

    def _started(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"node {self.name} exited: {self.log_path.read_text()[-2000:]}")
        return f"node {self.name} running" in self.log_path.read_text()

    @property
    def db(self) -> Path:
        return self.data_dir / "parley.sqlite"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)
        self._log.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        self._log.close()


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env

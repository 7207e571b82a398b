"""recovery: ``count`` flows under way, ``kill -9`` the node, restart it: time until all complete.

A node process (``bench.recovery_node``) starts ``count`` Recoverable flows (a row, three durable
steps, a row: the local3 workload) and is killed with SIGKILL as soon as every flow is durable.
It is restarted on the same data directory with ``parley node run``; the figure is the time from
the restart to the last flow's completion. Every flow must have written each of its two rows
exactly once.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import REPO, NodeProcess, _env, query, wait_until
from parley.transport.natsserver import EmbeddedNatsServer


def run(count: int, *, steps: int = 3) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="parley-recovery-") as tmp:
        nats = EmbeddedNatsServer(Path(tmp) / "nats")
        url = nats.start()
        data = Path(tmp) / "node"
        db = data / "parley.sqlite"
        try:
            command = [sys.executable, "-m", "bench.recovery_node", "--name", "recover"]
            command += ["--nats", url, "--data-dir", str(data), "--count", str(count)]
            command += ["--steps", str(steps)]
            with subprocess.Popen(
                command, cwd=REPO, env=_env(), stdout=subprocess.PIPE, text=True
            ) as first:
                assert first.stdout is not None
                line = first.stdout.readline()
                if line.strip() != "started":
                    raise RuntimeError(f"the recovery node did not start its flows: {line!r}")
                first.kill()
                first.wait(30)
            done_before = _count(db, "after")
            in_flight = count - done_before
            restarted = time.perf_counter()
            node = NodeProcess("recover", url, data, ["bench.flows"])
            up = time.perf_counter() - restarted
            wait_until(lambda: _count(db, "after") >= count, 600, "every flow to complete")
            took = time.perf_counter() - restarted
            befores, afters = _count(db, "before"), _count(db, "after")
            distinct = query(
                db, "SELECT count(DISTINCT flow) FROM bench_effects WHERE phase = 'after'"
            )[0][0]
            left = query(db, "SELECT count(*) FROM flow_header")[0][0]
            node.stop()
        finally:
            nats.stop()
    return {
        "flows": count,
        "in_flight_at_kill": in_flight,
        "restart_to_ready_s": round(up, 2),
        "restart_to_all_complete_s": round(took, 2),
        "lost": count - distinct,
        "ran_twice": (befores - count) + (afters - count),
        "checkpoints_left": left,
    }


def _count(db: Path, phase: str) -> int:
    rows = query(db, "SELECT count(*) FROM bench_effects WHERE phase = ?", (phase,))
    return int(rows[0][0]) if rows else 0


if __name__ == "__main__":
    print(run(10_000))

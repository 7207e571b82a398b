"""Commits per second of a typical checkpoint: single-op commits vs group commits.

A checkpoint is one PutCheckpoint with a 200-byte header and one 100-byte journal entry.

Usage: python bench/store_commit.py [--dir /tmp] [--seconds 3] [--synchronous FULL]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from parley.protocol.records import FlowStatus, PutCheckpoint, PutFlowStart, StartKind, StoreOp
from parley.store import SqliteStore

FLOWS = 50
HEADER = b"h" * 200
ENTRY = b"j" * 100


def _checkpoint(flow: int, index: int) -> PutCheckpoint:
    return PutCheckpoint(
        flow_id=f"flow-{flow}",
        status=FlowStatus.RUNNABLE,
        header=HEADER,
        journal_start=index,
        journal=(ENTRY,),
        suspends=index,
        pending_request="receive",
        progress_step="step",
    )


def _open(directory: str, name: str, synchronous: str) -> SqliteStore:
    store = SqliteStore(Path(directory) / name, synchronous=synchronous)
    store.commit(
        [PutFlowStart(f"flow-{i}", "bench.Flow", StartKind.RPC, b"args") for i in range(FLOWS)]
    )
    return store


def bench_single(directory: str, seconds: float, synchronous: str) -> float:
    """Checkpoints (= commits) per second, one PutCheckpoint per transaction."""
    with _open(directory, "single.db", synchronous) as store:
        done = 0
        start = time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds:
            store.commit([_checkpoint(done % FLOWS, done // FLOWS)])
            done += 1
    return done / elapsed


def bench_group(directory: str, seconds: float, synchronous: str) -> tuple[float, float]:
    """(commits/s, checkpoints/s) with 50 single-checkpoint batches per group commit."""
    with _open(directory, "group.db", synchronous) as store:
        groups = 0
        start = time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds:
            batches: list[list[StoreOp]] = [[_checkpoint(f, groups)] for f in range(FLOWS)]
            errors = store.commit_group(batches)
            assert not any(errors), errors
            groups += 1
    return groups / elapsed, groups * FLOWS / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", default="/tmp")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--synchronous", default="FULL")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as directory:
        single = bench_single(directory, args.seconds, args.synchronous)
        commits, checkpoints = bench_group(directory, args.seconds, args.synchronous)
    print(f"synchronous={args.synchronous} dir={args.dir}")
    print(f"single-op commits:        {single:10.0f} commits/s = {single:10.0f} checkpoints/s")
    print(
        f"group commit (50/group):  {commits:10.0f} commits/s = {checkpoints:10.0f} checkpoints/s"
    )


if __name__ == "__main__":
    main()

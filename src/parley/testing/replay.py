"""Replaying stored node databases against the current code, in a test.

Before deploying a change to flow code, check that the flows already stored by your nodes still
replay with it. Keep a database from a real node (or one written by a test with
``MockNetwork(data_dir=...)``) next to your tests and assert::

    from parley.testing import replay_database

    def test_stored_trades_replay_with_the_new_code() -> None:
        report = replay_database("tests/data/seller.sqlite", apps=["myapp.trade"])
        assert report.ok, report

``replay_database`` copies the database first and reads only the copy, so it never changes the
file it is given (a running node's database included). A directory stands for every ``*.sqlite``
file in it, one per node. Each stored flow is rebuilt and re-run against its journal up to the
request it waits on, with nothing external happening (see :mod:`parley.engine.replay`).
"""

from __future__ import annotations

import importlib
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from parley.engine.replay import ReplayResult, check_store
from parley.store import SqliteStore, copy_database


@dataclass(frozen=True, slots=True)
class ReplayReport:
    """What :func:`replay_database` found, per database file."""

    results: dict[Path, list[ReplayResult]]

    @property
    def ok(self) -> bool:
        """Every stored flow replays."""
        return not self.failures

    @property
    def failures(self) -> list[tuple[Path, ReplayResult]]:
        return [(path, r) for path, results in self.results.items() for r in results if not r.ok]

    def __iter__(self) -> Iterator[ReplayResult]:
        for results in self.results.values():
            yield from results

    def __len__(self) -> int:
        return sum(len(results) for results in self.results.values())

    def __str__(self) -> str:
        lines = [f"{len(self)} stored flows, {len(self.failures)} do not replay"]
        for path, result in self.failures:
            lines.append(
                f"  {path.name}: {result.flow_id} {result.flow_class} (waits on "
                f"{result.pending}): {result.error_type}: {result.error}"
            )
        return "\n".join(lines)


def replay_database(path: str | Path, *, apps: Iterable[str] = ()) -> ReplayReport:
    """Replay every stored flow of a database file (or of each ``*.sqlite`` in a directory).

    Args:
        path: A node database, or a directory of them.
        apps: Modules to import first, so that the flow classes named in the checkpoints are
            loaded (a node imports its ``--app`` modules the same way).

    Raises:
        FileNotFoundError: ``path`` does not exist, or the directory holds no database.
    """
    for app in apps:
        importlib.import_module(app)
    source = Path(path)
    if not source.exists():
        raise FileNotFoundError(f"no database at {source}")
    files = sorted(source.glob("*.sqlite")) if source.is_dir() else [source]
    if not files:
        raise FileNotFoundError(f"no *.sqlite database in {source}")
    results: dict[Path, list[ReplayResult]] = {}
    with tempfile.TemporaryDirectory(prefix="parley-replay-") as scratch:
        for index, file in enumerate(files):
            copy = Path(scratch) / f"{index}.sqlite"
            copy_database(file, copy)
            # Read-write, on the copy only: a database of an older schema is migrated first,
            # as a node would migrate it when it starts on the new code.
            with SqliteStore(copy) as store:
                results[file] = check_store(store)
    return ReplayReport(results)


__all__ = ["ReplayReport", "replay_database"]

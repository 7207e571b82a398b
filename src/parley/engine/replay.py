"""The replay checker: do stored checkpoints still replay against the code as it is now?

A checkpoint is a replay journal (see :mod:`parley.protocol.state`), so new flow code can break the
flows already stored: a request asked for in another order, a value no longer recorded, a class
renamed, constructor arguments that no longer fit. :func:`check_store` answers before the new code
meets a real node: for every stored flow it rebuilds the flow object, re-runs its code against its
journal with the real :class:`~parley.engine.driver.FlowDriver`, and checks that the code reaches
the request the checkpoint says it waits on. Nothing external happens: the checker's host commits,
sends, acks, schedules and runs nothing; the journal answers every request, and the flow stops at
its pending request without processing it.

The test kit offers it on database files (:func:`parley.testing.replay_database`).
"""

from __future__ import annotations

import importlib
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from parley.engine.driver import FlowDriver, Identity
from parley.engine.restore import UNREADABLE, restored
from parley.protocol.actions import ArmTimeout, ExecuteOperation, ReadSignal, RunQuery
from parley.protocol.errors import FlowUsageError, type_name
from parley.protocol.messages import Envelope
from parley.protocol.records import FlowStatus, StoreOp
from parley.protocol.state import FlowState
from parley.store import SqliteStore, StoredFlow, copy_database

#: What ``now()`` answers if a flow asks for a new value while it replays (which is itself an
#: error the checker reports): a fixed instant, so the check is deterministic.
_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class ReplayResult:
    """How one stored flow replayed."""

    flow_id: str
    flow_class: str
    status: FlowStatus
    #: The kind of request the checkpoint waits on (``"receive"``, ``"sleep"``, ...).
    pending: str | None
    #: Why the flow does not replay (``None``: it replays to its pending request).
    error: str | None = None
    #: The type of that error (``module:Class``).
    error_type: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class _CheckingHost:
    """A :class:`~parley.engine.driver.FlowHost` that does nothing and notes what went wrong."""

    def __init__(self) -> None:
        self.errors: list[BaseException] = []

    def commit(self, driver: FlowDriver, ops: tuple[StoreOp, ...]) -> None:
        pass  # never completes: the driver stays blocked, which is all a check needs

    def send(self, driver: FlowDriver, envelopes: tuple[Envelope, ...]) -> None:
        pass

    def ack(self, deliveries: tuple[object, ...]) -> None:
        pass

    def schedule_wake_up(self, driver: FlowDriver, until: datetime, incarnation: int) -> None:
        pass

    def execute(self, driver: FlowDriver, action: ExecuteOperation) -> None:
        pass

    def query(self, driver: FlowDriver, action: RunQuery) -> None:
        pass

    def started(self, driver: FlowDriver) -> None:
        pass

    def removed(
        self, driver: FlowDriver, result: object, error: BaseException | None, *, durable: bool
    ) -> None:
        if error is not None:
            self.errors.append(error)

    def restore(self, driver: FlowDriver) -> None:
        pass

    def passivated(self, driver: FlowDriver) -> None:
        pass

    def admit(self, driver: FlowDriver, state: FlowState) -> None:
        if state.errors is not None:
            self.errors.append(state.errors.errors[-1].exception)

    def ready(self, driver: FlowDriver) -> None:
        pass  # the events it would process next are the live run's, not the replay's

    def read_signal(self, driver: FlowDriver, action: ReadSignal) -> None:
        pass  # a replay answers the wait from the journal

    def arm_timeout(self, driver: FlowDriver, action: ArmTimeout) -> None:
        pass  # a replay waits for nothing

    def identity_service(self) -> Identity:
        raise FlowUsageError("a replay answers identity calls from the journal")

    def party_refusal(self, party: str) -> str | None:
        return None  # a replay answers initiate_flow from the journal

    def now(self) -> datetime:
        return _EPOCH

    def random(self) -> float:
        return 0.0

    def uuid(self) -> str:
        return "00000000-0000-4000-8000-000000000000"


def check_flow(stored: StoredFlow) -> ReplayResult:
    """Replay one stored flow against the loaded code (see the module docstring)."""

    def result(error: BaseException | None = None) -> ReplayResult:
        return ReplayResult(
            flow_id=stored.flow_id,
            flow_class=stored.flow_class,
            status=stored.status,
            pending=stored.pending_request,
            error=None if error is None else str(error) or repr(error),
            error_type=None if error is None else type_name(type(error)),
        )

    if stored.header is None:
        return result()  # never checkpointed: it starts afresh, there is nothing to replay
    try:
        found = restored(stored)
    except UNREADABLE as exc:
        return result(exc)
    host = _CheckingHost()
    driver = FlowDriver(host, found.state, found.flow, journal=found.journal)
    try:
        driver.start_replay()
    finally:
        driver.close()
    if host.errors:
        return result(host.errors[0])
    if driver.state.restored_pending is not None:
        return result(RuntimeError("the flow did not reach its checkpointed request"))
    return result()


def check_store(store: SqliteStore) -> list[ReplayResult]:
    """Replay every stored flow that a node would restore (runnable or hospitalized)."""
    results: list[ReplayResult] = []
    for flow_id in store.runnable_flow_ids():
        stored = store.load_flow(flow_id)
        if stored is not None:
            results.append(check_flow(stored))
    return results


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


__all__ = ["ReplayReport", "ReplayResult", "check_flow", "check_store", "replay_database"]

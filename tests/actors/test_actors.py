"""The pykka actors, running for real: group commit on a SQLite file, the node's hospital."""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pykka
import pytest

from parley.actors.hospital import ActorHospital, HospitalActor
from parley.actors.persistence import AppMigrations, Commit, CommitStats, Persistence
from parley.engine.hospital import Hospital, Outcome
from parley.engine.logcontext import FlowIdFilter
from parley.protocol.errors import FlowTimeoutException, StateTransitionError
from parley.protocol.events import (
    Event,
    KeepForObservation,
    RetryFromCheckpoint,
    StartErrorPropagation,
)
from parley.protocol.records import (
    FlowStatus,
    FlowWrite,
    PutCheckpoint,
    PutFlowStart,
    PutProcessedInit,
    StartKind,
    StoreOp,
)
from parley.protocol.state import ErrorState, FlowError, FlowState
from parley.store import SqliteStore, StoredFlow

#: Seconds to wait for an actor before the test fails (nothing here should take close to it).
WAIT = 10.0
NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def flow_ops(flow_id: str, *extra: StoreOp) -> tuple[StoreOp, ...]:
    """The first checkpoint of an RPC-started flow (as the state machine writes it)."""
    return (
        PutFlowStart(
            flow_id=flow_id,
            flow_class="app.flows:Pay",
            kind=StartKind.RPC,
            args=b"args-" + flow_id.encode(),
            started_by="alice",
        ),
        PutCheckpoint(
            flow_id=flow_id,
            status=FlowStatus.RUNNABLE,
            header=b"header-" + flow_id.encode(),
            journal_start=0,
            journal=(b"e0",),
            suspends=1,
            pending_request="receive",
            progress_step=None,
        ),
        *extra,
    )


def gap_checkpoint(flow_id: str) -> PutCheckpoint:
    """A checkpoint whose journal starts at 5 for a flow that has none: the store refuses it."""
    return PutCheckpoint(
        flow_id=flow_id,
        status=FlowStatus.RUNNABLE,
        header=b"h",
        journal_start=5,
        journal=(b"e5",),
        suspends=1,
        pending_request=None,
        progress_step=None,
    )


# ---- Persistence ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Acked:
    """What a commit's ``done`` callback saw when it was called."""

    error: BaseException | None
    #: The flow as a separate read-only connection found it at that moment.
    stored: StoredFlow | None
    thread: str


class Committer:
    """Sends commits to a Persistence actor and collects their ``done`` calls as futures."""

    def __init__(self, ref: pykka.ActorRef[Persistence], path: Path) -> None:
        self.ref = ref
        self.path = path

    def commit(self, flow_id: str, ops: Sequence[StoreOp]) -> Future[Acked]:
        future: Future[Acked] = Future()

        def done(error: BaseException | None) -> None:
            try:
                with SqliteStore(self.path, readonly=True) as reader:
                    stored = reader.load_flow(flow_id)
                future.set_result(Acked(error, stored, threading.current_thread().name))
            except BaseException as exc:  # the actor would only log it: fail the test instead
                future.set_exception(exc)

        self.ref.tell(Commit(tuple(ops), done))
        return future

    def queued_together(
        self, batches: Sequence[tuple[str, Sequence[StoreOp]]]
    ) -> list[Future[Acked]]:
        """Commit ``batches`` so that they are all in the actor's inbox when it next looks.

        A first commit's ``done`` callback holds the actor until the others are queued.
        """
        entered, gate = threading.Event(), threading.Event()
        blocker: Future[BaseException | None] = Future()

        def hold(error: BaseException | None) -> None:
            entered.set()
            gate.wait(WAIT)
            blocker.set_result(error)

        self.ref.tell(Commit(flow_ops("blocker"), hold))
        try:
            assert entered.wait(WAIT), "the actor never committed the blocking batch"
            futures = [self.commit(flow_id, ops) for flow_id, ops in batches]
        finally:
            gate.set()
        assert blocker.result(WAIT) is None
        return futures

    def stats(self) -> CommitStats:
        stats = self.ref.ask("stats", timeout=WAIT)
        assert isinstance(stats, CommitStats)
        return stats


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "node.db"


@pytest.fixture
def committer(db_path: Path) -> Iterator[Committer]:
    ref = Persistence.start(db_path)
    try:
        yield Committer(ref, db_path)
    finally:
        ref.stop(timeout=WAIT)


def test_every_commit_is_acknowledged_with_none_once_another_connection_can_read_it(
    committer: Committer,
) -> None:
    futures = {f"f{i}": committer.commit(f"f{i}", flow_ops(f"f{i}")) for i in range(8)}

    acks = {flow_id: future.result(WAIT) for flow_id, future in futures.items()}

    for flow_id, ack in acks.items():
        assert ack.error is None
        assert ack.stored is not None, f"{flow_id} was acknowledged before it was durable"
        assert (ack.stored.header, ack.stored.journal) == (b"header-" + flow_id.encode(), [b"e0"])
        assert ack.thread != threading.current_thread().name  # called from the actor's thread
    with SqliteStore(committer.path, readonly=True) as reader:
        assert reader.runnable_flow_ids() == list(futures)


def test_commits_queued_together_are_written_in_one_transaction(committer: Committer) -> None:
    futures = committer.queued_together([(f"f{i}", flow_ops(f"f{i}")) for i in range(6)])

    assert [f.result(WAIT).error for f in futures] == [None] * 6
    stats = committer.stats()
    # the blocking batch alone, then the six others in one group
    assert (stats.transactions, stats.batches, stats.largest_group) == (2, 7, 6)
    assert stats.batches > stats.transactions


def test_a_bad_batch_in_a_group_fails_alone_and_the_others_commit(committer: Committer) -> None:
    consumed = PutProcessedInit("bob", "s1", "f0")
    futures = committer.queued_together(
        [
            ("f0", flow_ops("f0", consumed)),
            ("f1", flow_ops("f1")),
            ("bad", flow_ops("bad", PutProcessedInit("bob", "s1", "bad"))),  # s1 consumed twice
            ("f2", flow_ops("f2")),
            ("gap", (flow_ops("gap")[0], gap_checkpoint("gap"))),  # journal gap
        ]
    )

    acks = [f.result(WAIT) for f in futures]

    assert [a.error is None for a in acks] == [True, True, False, True, False]
    assert isinstance(acks[2].error, sqlite3.IntegrityError)
    assert "UNIQUE" in str(acks[2].error)
    assert isinstance(acks[4].error, ValueError)
    assert acks[2].stored is None  # its start and checkpoint were rolled back with it
    assert acks[4].stored is None
    assert committer.stats().largest_group == 5  # they really were in one group
    with SqliteStore(committer.path, readonly=True) as reader:
        assert reader.runnable_flow_ids() == ["blocker", "f0", "f1", "f2"]
        assert reader.processed_init("bob", "s1") == "f0"


NOTES = AppMigrations(
    "notes",
    (
        "CREATE TABLE notes (n INTEGER PRIMARY KEY)",
        "ALTER TABLE notes ADD COLUMN text TEXT NOT NULL DEFAULT ''",
    ),
)


def test_app_migrations_are_applied_when_the_actor_starts(db_path: Path) -> None:
    ref = Persistence.start(db_path, migrations=[NOTES])
    try:
        committer = Committer(ref, db_path)
        # the first message already finds the app's tables
        write = FlowWrite("INSERT INTO notes (n, text) VALUES (?, ?)", (1, "hello"))
        assert committer.commit("f1", flow_ops("f1", write)).result(WAIT).error is None
    finally:
        ref.stop(timeout=WAIT)

    with SqliteStore(db_path, readonly=True) as reader:
        assert reader.query("SELECT n, text FROM notes") == [(1, "hello")]
        assert reader.query("SELECT app, idx FROM app_migrations ORDER BY idx") == [
            ("notes", 0),
            ("notes", 1),
        ]


def test_app_migrations_already_applied_are_not_applied_again(db_path: Path) -> None:
    for n in (1, 2):  # two node starts on the same file
        ref = Persistence.start(db_path, migrations=[NOTES])
        try:
            write = FlowWrite("INSERT INTO notes (n) VALUES (?)", (n,))
            ack = Committer(ref, db_path).commit(f"f{n}", flow_ops(f"f{n}", write)).result(WAIT)
            assert ack.error is None
        finally:
            ref.stop(timeout=WAIT)

    with SqliteStore(db_path, readonly=True) as reader:
        assert reader.query("SELECT n FROM notes ORDER BY n") == [(1,), (2,)]  # not recreated
        assert reader.query("SELECT count(*) FROM app_migrations") == [(2,)]


# ---- HospitalActor -------------------------------------------------------------------------


def errored(error: BaseException, *, flow_id: str = "f1", suspends: int = 1) -> FlowState:
    return FlowState(
        flow_id=flow_id,
        flow_class="app.flows:Pay",
        our_identity="alice",
        suspends=suspends,
        errors=ErrorState((FlowError(f"{flow_id}:e0", error),)),
    )


class Verdicts:
    """Admits flows through an :class:`ActorHospital`; each verdict arrives on a future."""

    def __init__(self, port: ActorHospital) -> None:
        self.port = port

    def admit(self, state: FlowState) -> Future[tuple[Event, float, str]]:
        future: Future[tuple[Event, float, str]] = Future()

        def verdict(event: Event, delay: float) -> None:
            future.set_result((event, delay, threading.current_thread().name))

        self.port.admit(state, NOW, verdict)
        return future


@pytest.fixture
def hospital() -> Iterator[ActorHospital]:
    ref = HospitalActor.start(Hospital(random=lambda: 1.0))
    try:
        yield ActorHospital(ref)
    finally:
        ref.stop(timeout=WAIT)


def test_the_hospital_actor_delivers_the_verdict_from_its_own_thread(
    hospital: ActorHospital,
) -> None:
    future = Verdicts(hospital).admit(errored(FlowTimeoutException("slow")))

    event, delay, thread = future.result(WAIT)

    assert (event, delay) == (RetryFromCheckpoint(), 0.0)
    assert thread != threading.current_thread().name
    (record,) = hospital.records(timeout=WAIT)
    assert (record.flow_id, record.staff, record.outcome) == ("f1", "timeout", Outcome.RETRY)
    assert record.error_type == "parley.protocol.errors.FlowTimeoutException"
    assert record.time == NOW


def test_the_hospital_actor_keeps_budgets_across_admissions_until_discharge(
    hospital: ActorHospital,
) -> None:
    verdicts = Verdicts(hospital)
    failure = StateTransitionError("send failed", "Send")
    before = [verdicts.admit(errored(failure)) for _ in range(4)]
    hospital.discharge("f1")
    after = verdicts.admit(errored(failure))

    events = [f.result(WAIT)[0] for f in before]

    assert events[:3] == [RetryFromCheckpoint()] * 3
    assert events[3] == KeepForObservation()
    assert after.result(WAIT)[0] == RetryFromCheckpoint()  # discharge reset the budget
    records = hospital.records(timeout=WAIT)
    assert [r.outcome for r in records] == [Outcome.RETRY] * 3 + [Outcome.OBSERVE, Outcome.RETRY]


def test_the_hospital_actor_uses_the_policys_random_source_for_the_backoff(
    hospital: ActorHospital,
) -> None:
    verdicts = Verdicts(hospital)
    locked = sqlite3.OperationalError("database is locked")
    futures = [verdicts.admit(errored(locked)) for _ in range(3)]

    assert [f.result(WAIT)[:2] for f in futures] == [
        (RetryFromCheckpoint(), 0.0),
        (RetryFromCheckpoint(), 17.5),
        (RetryFromCheckpoint(), 21.25),
    ]


def test_an_unknown_error_is_propagated_by_the_hospital_actor(hospital: ActorHospital) -> None:
    future = Verdicts(hospital).admit(errored(ValueError("bad amount"), flow_id="f9"))

    assert future.result(WAIT)[:2] == (StartErrorPropagation(), 0.0)
    assert [r.flow_id for r in hospital.records(timeout=WAIT)] == ["f9"]


def test_discharging_through_a_stopped_hospital_actor_is_harmless() -> None:
    ref = HospitalActor.start(Hospital())
    port = ActorHospital(ref)
    ref.stop(timeout=WAIT)

    port.discharge("f1")  # a flow ending during shutdown must not raise

    assert not ref.is_alive()
    with pytest.raises(pykka.ActorDeadError):
        port.records(timeout=WAIT)


def test_a_failing_verdict_callback_does_not_stop_the_hospital_actor(
    hospital: ActorHospital,
) -> None:
    def broken(event: Event, delay: float) -> None:
        raise RuntimeError("callback bug")

    hospital.admit(errored(ValueError("first"), flow_id="f1"), NOW, broken)
    later = Verdicts(hospital).admit(errored(ValueError("second"), flow_id="f2"))

    assert later.result(WAIT)[:2] == (StartErrorPropagation(), 0.0)
    assert hospital.ref.is_alive()


def test_admitting_through_a_stopped_hospital_actor_is_harmless() -> None:
    ref = HospitalActor.start(Hospital())
    port = ActorHospital(ref)
    ref.stop(timeout=WAIT)

    port.admit(errored(ValueError("late")), NOW, lambda event, delay: None)

    assert not ref.is_alive()


def test_the_hospital_actors_log_line_carries_the_flow_id(hospital: ActorHospital) -> None:
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Collect()
    handler.addFilter(FlowIdFilter())
    logger = logging.getLogger("parley.hospital")
    logger.addHandler(handler)
    try:
        Verdicts(hospital).admit(errored(ValueError("bug"), flow_id="f7")).result(WAIT)
    finally:
        logger.removeHandler(handler)
    assert [getattr(r, "flow_id", None) for r in records] == ["f7"]

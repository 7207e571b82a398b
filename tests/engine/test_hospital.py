"""The flow hospital's policy, called directly: staff, cause chains, budgets, backoff, records."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from parley.engine.hospital import Admission, Diagnosis, Hospital, Outcome, backoff, causes
from parley.protocol.errors import (
    DeserializationError,
    FlowException,
    FlowTimeoutException,
    HospitalizeFlowException,
    NonDeterministicFlowError,
    StateTransitionError,
    TransientError,
    UnexpectedFlowEndException,
)
from parley.protocol.events import (
    ActionFailed,
    Event,
    KeepForObservation,
    RetryFromCheckpoint,
    StartErrorPropagation,
)
from parley.protocol.records import PutAdmission
from parley.protocol.state import ErrorState, FlowError, FlowState
from parley.protocol.transitions.machine import transition

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)

# ---- building errors and errored states like the real ones ---------------------------------


def errored(error: BaseException, *, flow_id: str = "f1", suspends: int = 1) -> FlowState:
    """A flow whose newest error is ``error``, suspended ``suspends`` times."""
    return FlowState(
        flow_id=flow_id,
        flow_class="app.flows:Pay",
        our_identity="alice",
        suspends=suspends,
        errors=ErrorState((FlowError(f"{flow_id}:e0", error),)),
    )


def raised(error: BaseException) -> BaseException:
    """``error`` after it was raised (it has a traceback, like errors the hospital sees)."""
    try:
        raise error
    except BaseException as exc:
        return exc


def caused_by(outer: BaseException, inner: BaseException) -> BaseException:
    """``outer`` as ``raise outer from inner`` leaves it (``inner`` is its ``__cause__``)."""
    try:
        try:
            raise inner
        except BaseException as exc:
            raise outer from exc
    except BaseException as exc:
        return exc


def raised_while_handling(outer: BaseException, inner: BaseException) -> BaseException:
    """``outer`` raised inside ``except`` for ``inner`` (``inner`` is its ``__context__``)."""
    try:
        try:
            raise inner
        except BaseException:
            raise outer  # noqa: B904 -- an implicit context is the point
    except BaseException as exc:
        return exc


def integrity_error() -> sqlite3.IntegrityError:
    """A real UNIQUE constraint violation from SQLite."""
    conn = sqlite3.connect(":memory:")
    try:
        conn.execute("CREATE TABLE t (k INTEGER PRIMARY KEY)")
        conn.execute("INSERT INTO t VALUES (1)")
        with pytest.raises(sqlite3.IntegrityError) as info:
            conn.execute("INSERT INTO t VALUES (1)")
        return info.value
    finally:
        conn.close()


def locked_error() -> sqlite3.OperationalError:
    """The error SQLite raises when another connection holds the lock (its message only)."""
    return sqlite3.OperationalError("database is locked")


def diagnosed(error: BaseException, hospital: Hospital | None = None) -> Diagnosis:
    return (hospital or Hospital()).diagnose(errored(error), error)


def outcomes(hospital: Hospital, make: Callable[[], BaseException], times: int) -> list[Outcome]:
    """The outcomes of ``times`` admissions of flow f1 at one suspension point."""
    result = []
    for _ in range(times):
        error = make()
        result.append(hospital.diagnose(errored(error), error).outcome)
    return result


RETRY, OBSERVE, PROPAGATE = Outcome.RETRY, Outcome.OBSERVE, Outcome.PROPAGATE

# ---- every staff member, on the error itself -----------------------------------------------

STAFF_CASES: list[tuple[str, Callable[[], BaseException], str, Outcome]] = [
    ("hospitalize", lambda: HospitalizeFlowException("look"), "sedation", OBSERVE),
    ("non-determinism", lambda: NonDeterministicFlowError("code changed"), "determinism", OBSERVE),
    ("undecodable", lambda: DeserializationError("malformed CBOR"), "determinism", OBSERVE),
    ("timeout", lambda: FlowTimeoutException("too slow"), "timeout", RETRY),
    ("locked", locked_error, "locked", RETRY),
    ("constraint", integrity_error, "constraint", RETRY),
    (
        "action",
        lambda: StateTransitionError("commit failed", "PersistCheckpoint"),
        "transition",
        RETRY,
    ),
    ("value-error", lambda: ValueError("bad amount"), "general", PROPAGATE),
    ("flow-exception", lambda: FlowException("insufficient funds"), "general", PROPAGATE),
    ("peer-ended", lambda: UnexpectedFlowEndException("bob ended"), "general", PROPAGATE),
    ("disk-io", lambda: sqlite3.OperationalError("disk I/O error"), "storage", OBSERVE),
    ("disk-full", lambda: sqlite3.OperationalError("database or disk is full"), "storage", OBSERVE),
    ("no-space", lambda: OSError(28, "No space left on device"), "storage", OBSERVE),
    ("other-sqlite", lambda: sqlite3.OperationalError("no such table: t"), "general", PROPAGATE),
    ("messaging", lambda: TransientError("publish not acknowledged"), "messaging", RETRY),
]


@pytest.mark.parametrize(
    ("make", "staff", "outcome"),
    [case[1:] for case in STAFF_CASES],
    ids=[case[0] for case in STAFF_CASES],
)
def test_each_staff_member_diagnoses_its_own_error(
    make: Callable[[], BaseException], staff: str, outcome: Outcome
) -> None:
    assert diagnosed(raised(make())) == Diagnosis(staff, outcome)


def test_a_real_lock_held_by_another_connection_is_diagnosed_as_locked(tmp_path: Path) -> None:
    holder = sqlite3.connect(tmp_path / "x.db", isolation_level=None)
    waiter = sqlite3.connect(tmp_path / "x.db", isolation_level=None, timeout=0)
    try:
        holder.execute("BEGIN IMMEDIATE")
        with pytest.raises(sqlite3.OperationalError) as info:
            waiter.execute("BEGIN IMMEDIATE")
    finally:
        waiter.close()
        holder.close()

    assert diagnosed(info.value).staff == "locked"


# ---- matching through the cause chain ------------------------------------------------------

CHAIN_CASES: list[tuple[str, Callable[[], BaseException], str, Outcome]] = [
    (
        "hospitalize-as-cause",
        lambda: caused_by(RuntimeError("wrapped"), HospitalizeFlowException("look")),
        "sedation",
        OBSERVE,
    ),
    (
        "hospitalize-as-context",
        lambda: raised_while_handling(ValueError("cleanup"), HospitalizeFlowException("look")),
        "sedation",
        OBSERVE,
    ),
    (
        "hospitalize-two-levels-down",
        lambda: caused_by(
            FlowException("outer"),
            caused_by(RuntimeError("middle"), HospitalizeFlowException("look")),
        ),
        "sedation",
        OBSERVE,
    ),
    (
        "non-determinism-as-cause",
        lambda: caused_by(FlowException("gave up"), NonDeterministicFlowError("changed")),
        "determinism",
        OBSERVE,
    ),
    (
        "non-determinism-as-context",
        lambda: raised_while_handling(ValueError("oops"), NonDeterministicFlowError("changed")),
        "determinism",
        OBSERVE,
    ),
    (
        "undecodable-as-cause",
        lambda: caused_by(
            StateTransitionError("restore failed", "Restore"), DeserializationError("bad")
        ),
        "determinism",
        OBSERVE,
    ),
    (
        "locked-as-cause",
        lambda: caused_by(
            StateTransitionError("commit failed", "PersistCheckpoint"), locked_error()
        ),
        "locked",
        RETRY,
    ),
    (
        "locked-as-context",
        lambda: raised_while_handling(RuntimeError("while committing"), locked_error()),
        "locked",
        RETRY,
    ),
    (
        "constraint-as-cause",
        lambda: caused_by(
            StateTransitionError("commit failed", "PersistCheckpoint"), integrity_error()
        ),
        "constraint",
        RETRY,
    ),
    (
        "constraint-two-levels-down",
        lambda: caused_by(
            RuntimeError("outer"), caused_by(ValueError("middle"), integrity_error())
        ),
        "constraint",
        RETRY,
    ),
    (
        "action-as-cause",
        lambda: caused_by(RuntimeError("wrapped"), StateTransitionError("send failed", "Send")),
        "transition",
        RETRY,
    ),
    (
        "action-as-context",
        lambda: raised_while_handling(
            RuntimeError("while failing"), StateTransitionError("send failed", "Send")
        ),
        "transition",
        RETRY,
    ),
    # The timeout staff looks at the error itself only: a flow that caught its timeout and
    # raised something else decided how the timeout ends (and retrying would loop forever).
    (
        "timeout-as-context-is-not-a-timeout",
        lambda: raised_while_handling(ValueError("gave up"), FlowTimeoutException("slow")),
        "general",
        PROPAGATE,
    ),
    (
        "timeout-as-cause-is-not-a-timeout",
        lambda: caused_by(FlowException("too slow for us"), FlowTimeoutException("slow")),
        "general",
        PROPAGATE,
    ),
    (
        "timeout-wrapping-a-plain-error-is-a-timeout",
        lambda: caused_by(FlowTimeoutException("slow"), ValueError("inner")),
        "timeout",
        RETRY,
    ),
]


@pytest.mark.parametrize(
    ("make", "staff", "outcome"),
    [case[1:] for case in CHAIN_CASES],
    ids=[case[0] for case in CHAIN_CASES],
)
def test_staff_members_find_their_error_in_the_cause_chain(
    make: Callable[[], BaseException], staff: str, outcome: Outcome
) -> None:
    assert diagnosed(make()) == Diagnosis(staff, outcome)


ORDER_CASES: list[tuple[str, Callable[[], BaseException], str]] = [
    (
        "sedation-before-determinism",
        lambda: caused_by(HospitalizeFlowException("look"), NonDeterministicFlowError("x")),
        "sedation",
    ),
    (
        "determinism-before-locked",
        lambda: caused_by(NonDeterministicFlowError("x"), locked_error()),
        "determinism",
    ),
    (
        "timeout-before-locked",
        lambda: caused_by(FlowTimeoutException("slow"), locked_error()),
        "timeout",
    ),
    (
        "locked-before-constraint",
        lambda: caused_by(
            caused_by(StateTransitionError("commit failed", "Commit"), integrity_error()),
            locked_error(),
        ),
        "locked",
    ),
    (
        "constraint-before-transition",
        lambda: caused_by(StateTransitionError("commit failed", "Commit"), integrity_error()),
        "constraint",
    ),
]


@pytest.mark.parametrize(
    ("make", "staff"), [case[1:] for case in ORDER_CASES], ids=[case[0] for case in ORDER_CASES]
)
def test_when_several_staff_members_match_the_earlier_one_decides(
    make: Callable[[], BaseException], staff: str
) -> None:
    assert diagnosed(make()).staff == staff


def test_an_action_failure_wrapped_by_the_state_machine_is_diagnosed_by_its_cause() -> None:
    state = FlowState(flow_id="f1", flow_class="app.flows:Pay", our_identity="alice", suspends=2)
    failed = transition(state, ActionFailed(integrity_error(), "PersistCheckpoint")).new_state
    assert failed.errors is not None
    error = failed.errors.errors[-1].exception
    assert isinstance(error, StateTransitionError)

    assert Hospital().diagnose(failed, error) == Diagnosis("constraint", Outcome.RETRY)


def test_causes_yields_the_error_then_each_cause_or_context_once() -> None:
    inner = ValueError("inner")
    middle = caused_by(RuntimeError("middle"), inner)
    outer = raised_while_handling(KeyError("outer"), middle)
    inner.__context__ = outer  # a cycle must end the walk

    assert list(causes(outer)) == [outer, middle, inner]


def test_causes_prefers_the_explicit_cause_over_the_context() -> None:
    context, cause = ValueError("context"), KeyError("cause")
    error = RuntimeError("error")
    error.__context__, error.__cause__ = context, cause

    assert list(causes(error)) == [error, cause]


# ---- retry budgets -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "exhausted"),
    [
        (integrity_error, Outcome.PROPAGATE),
        (lambda: StateTransitionError("send failed", "Send"), Outcome.OBSERVE),
    ],
    ids=["constraint-then-propagated", "failed-action-then-kept-for-observation"],
)
def test_a_budgeted_error_is_retried_three_times_then_given_up_on(
    make: Callable[[], BaseException], exhausted: Outcome
) -> None:
    assert outcomes(Hospital(), make, 5) == [RETRY, RETRY, RETRY, exhausted, exhausted]


def test_a_constraint_violation_is_retried_three_times_then_propagated() -> None:
    hospital = Hospital()
    state = errored(integrity_error())

    events = [hospital.examine(state, NOW)[0] for _ in range(4)]

    assert events == [RetryFromCheckpoint()] * 3 + [StartErrorPropagation()]


def test_the_retry_budget_is_configurable() -> None:
    assert outcomes(Hospital(max_retries=1), integrity_error, 3) == [RETRY, PROPAGATE, PROPAGATE]
    assert outcomes(Hospital(max_retries=0), integrity_error, 1) == [PROPAGATE]


@pytest.mark.parametrize(
    "make",
    [locked_error, lambda: FlowTimeoutException("slow")],
    ids=["locked", "timeout"],
)
def test_locked_and_timed_out_flows_are_retried_without_limit(
    make: Callable[[], BaseException],
) -> None:
    assert outcomes(Hospital(), make, 50) == [RETRY] * 50


def test_budgets_are_counted_per_flow() -> None:
    hospital = Hospital()
    error = integrity_error()
    for _ in range(3):
        hospital.diagnose(errored(error, flow_id="f1"), error)

    assert hospital.diagnose(errored(error, flow_id="f2"), error).outcome is RETRY
    assert hospital.diagnose(errored(error, flow_id="f1"), error).outcome is PROPAGATE


def test_progress_to_a_later_suspension_point_gives_a_fresh_budget() -> None:
    hospital = Hospital()
    error = integrity_error()
    at = [hospital.diagnose(errored(error, suspends=1), error).outcome for _ in range(4)]
    later = [hospital.diagnose(errored(error, suspends=2), error).outcome for _ in range(4)]

    assert at == [RETRY, RETRY, RETRY, PROPAGATE]
    assert later == [RETRY, RETRY, RETRY, PROPAGATE]
    # going back to the first point does not refill its budget
    assert hospital.diagnose(errored(error, suspends=1), error).outcome is PROPAGATE


def test_budgets_are_counted_per_staff_member() -> None:
    hospital = Hospital()
    constraint = integrity_error()
    action = StateTransitionError("send failed", "Send")
    for _ in range(4):
        hospital.diagnose(errored(constraint), constraint)

    assert hospital.diagnose(errored(action), action).outcome is RETRY
    # the locked staff starts at attempt 0 too: an immediate retry
    assert hospital.diagnose(errored(locked_error()), locked_error()) == Diagnosis(
        "locked", RETRY, 0.0
    )


def test_progress_restarts_the_locked_backoff() -> None:
    hospital = Hospital(random=lambda: 1.0)
    delays = [diag.delay for diag in (diagnosed(locked_error(), hospital) for _ in range(3))]
    error = locked_error()

    fresh = hospital.diagnose(errored(error, suspends=2), error)

    assert delays == [0.0, 17.5, 21.25]
    assert fresh.delay == 0.0


def test_discharge_forgets_the_budgets_of_that_flow_only() -> None:
    hospital = Hospital()
    error = integrity_error()
    for _ in range(4):
        hospital.diagnose(errored(error, flow_id="f1"), error)
    for _ in range(2):
        hospital.diagnose(errored(error, flow_id="f2"), error)

    hospital.discharge("f1")

    assert outcomes(hospital, integrity_error, 4) == [
        RETRY,
        RETRY,
        RETRY,
        PROPAGATE,
    ]  # f1 starts over
    f2 = [hospital.diagnose(errored(error, flow_id="f2"), error).outcome for _ in range(2)]
    assert f2 == [RETRY, PROPAGATE]  # f2 kept its count


def test_discharging_an_unknown_flow_does_nothing() -> None:
    hospital = Hospital()
    error = integrity_error()
    hospital.diagnose(errored(error), error)

    hospital.discharge("nobody")

    assert outcomes(hospital, integrity_error, 3) == [RETRY, RETRY, PROPAGATE]


# ---- backoff -------------------------------------------------------------------------------


@pytest.mark.parametrize("jitter", [0.0, 0.5, 1.0])
def test_the_first_retry_is_immediate_whatever_the_jitter(jitter: float) -> None:
    assert backoff(0, jitter) == 0.0


@pytest.mark.parametrize(
    ("jitter", "expected"),
    [
        (0.0, [10.0] * 10),
        (
            0.5,
            [
                13.75,
                15.625,
                18.4375,
                22.65625,
                28.984375,
                38.4765625,
                52.71484375,
                65.0,
                65.0,
                65.0,
            ],
        ),
        (
            1.0,
            [17.5, 21.25, 26.875, 35.3125, 47.96875, 66.953125, 95.4296875, 120.0, 120.0, 120.0],
        ),
    ],
    ids=["jitter-0", "jitter-0.5", "jitter-1"],
)
def test_later_retries_wait_ten_seconds_plus_a_jittered_growing_part(
    jitter: float, expected: list[float]
) -> None:
    # 10 + jitter * min(110, 5 * 1.5**attempt)
    assert [backoff(attempt, jitter) for attempt in range(1, 11)] == expected


@pytest.mark.parametrize("attempt", [8, 9, 50, 1_000, 10_000])
def test_the_backoff_is_capped_at_two_minutes(attempt: int) -> None:
    assert backoff(attempt, 1.0) == 120.0
    assert backoff(attempt, 5.0) == 120.0  # even with a jitter out of range


def test_the_backoff_is_never_below_ten_seconds_after_the_first_retry() -> None:
    assert backoff(3, -1.0) == 10.0


def test_the_backoff_is_a_function_of_its_arguments() -> None:
    assert [backoff(4, 0.3) for _ in range(3)] == [backoff(4, 0.3)] * 3
    assert backoff(4, 0.3) < backoff(4, 0.31)


# ---- the locked staff's random source ------------------------------------------------------


def recording(values: list[float]) -> tuple[Callable[[], float], list[float]]:
    """A random source returning ``values`` in turn, and the list of what it returned."""
    source: Iterator[float] = iter(values)
    drawn: list[float] = []

    def draw() -> float:
        value = next(source)
        drawn.append(value)
        return value

    return draw, drawn


def test_the_locked_staff_draws_the_jitter_from_the_injected_random_source() -> None:
    draw, drawn = recording([0.9, 0.0, 1.0, 0.5])
    hospital = Hospital(random=draw)

    delays = [diagnosed(locked_error(), hospital).delay for _ in range(4)]

    assert delays == [0.0, 10.0, 21.25, 18.4375]
    assert drawn == [0.9, 0.0, 1.0, 0.5]


def test_the_default_random_source_is_a_constant_half() -> None:
    hospital = Hospital()
    delays = [diagnosed(locked_error(), hospital).delay for _ in range(3)]

    assert delays == [0.0, backoff(1, 0.5), backoff(2, 0.5)]


def test_other_staff_members_do_not_draw_from_the_random_source() -> None:
    draw, drawn = recording([])
    hospital = Hospital(random=draw)

    # "locked" and "messaging" retries are jittered (the first of them is immediate, though)
    for make, _, _ in [case[1:] for case in STAFF_CASES if case[2] not in ("locked", "messaging")]:
        error = make()
        assert hospital.diagnose(errored(error), error).delay == 0.0
    assert drawn == []


# ---- examine, admit and the records --------------------------------------------------------

VERDICT_CASES: list[tuple[str, Callable[[], BaseException], Event]] = [
    ("retry", lambda: FlowTimeoutException("slow"), RetryFromCheckpoint()),
    ("observe", lambda: HospitalizeFlowException("look"), KeepForObservation()),
    ("propagate", lambda: ValueError("bad"), StartErrorPropagation()),
]


@pytest.mark.parametrize(
    ("make", "event"),
    [case[1:] for case in VERDICT_CASES],
    ids=[case[0] for case in VERDICT_CASES],
)
def test_examine_returns_the_event_that_carries_out_the_diagnosis(
    make: Callable[[], BaseException], event: Event
) -> None:
    assert Hospital().examine(errored(raised(make())), NOW) == (event, 0.0)


def test_examine_returns_the_locked_staffs_delay() -> None:
    hospital = Hospital(random=lambda: 1.0)
    state = errored(locked_error())

    verdicts = [hospital.examine(state, NOW) for _ in range(3)]

    assert verdicts == [(RetryFromCheckpoint(), d) for d in (0.0, 17.5, 21.25)]


def test_examine_records_the_admission_with_the_error_and_the_diagnosis() -> None:
    hospital = Hospital()
    error = caused_by(StateTransitionError("commit failed", "PersistCheckpoint"), integrity_error())
    state = errored(error, flow_id="f7", suspends=4)

    hospital.examine(state, NOW)

    (record,) = hospital.records
    assert record == Admission(
        time=NOW,
        flow_id="f7",
        flow_class="app.flows:Pay",
        suspends=4,
        error_type="parley.protocol.errors.StateTransitionError",
        message="commit failed",
        traceback=record.traceback,
        staff="constraint",
        outcome=Outcome.RETRY,
        causes=(
            "parley.protocol.errors.StateTransitionError: commit failed",
            "sqlite3.IntegrityError: UNIQUE constraint failed: t.k",
        ),
        attempt=0,
    )
    assert record.traceback.startswith("Traceback (most recent call last):")
    assert "sqlite3.IntegrityError: UNIQUE constraint failed: t.k" in record.traceback
    assert "The above exception was the direct cause" in record.traceback
    assert record.traceback.rstrip().endswith("StateTransitionError: commit failed")


def test_the_record_names_a_builtin_error_by_its_module_and_qualified_name() -> None:
    hospital = Hospital()
    hospital.examine(errored(integrity_error()), NOW)

    (record,) = hospital.records
    assert record.error_type == "sqlite3.IntegrityError"
    assert record.message == "UNIQUE constraint failed: t.k"


def test_only_the_newest_error_of_the_flow_is_examined() -> None:
    older, newer = HospitalizeFlowException("old"), raised(ValueError("new"))
    state = FlowState(
        flow_id="f1",
        flow_class="app.flows:Pay",
        our_identity="alice",
        errors=ErrorState((FlowError("f1:e0", older), FlowError("f1:e1", newer))),
    )
    hospital = Hospital()

    assert hospital.examine(state, NOW) == (StartErrorPropagation(), 0.0)
    (record,) = hospital.records
    assert (record.error_type, record.message, record.staff) == (
        "builtins.ValueError",
        "new",
        "general",
    )


def test_every_admission_is_recorded_in_order() -> None:
    hospital = Hospital()
    errors = [integrity_error() for _ in range(4)]
    for minute, error in enumerate(errors):
        hospital.examine(errored(error), NOW + timedelta(minutes=minute))

    assert [(r.time - NOW, r.outcome) for r in hospital.records] == [
        (timedelta(minutes=0), RETRY),
        (timedelta(minutes=1), RETRY),
        (timedelta(minutes=2), RETRY),
        (timedelta(minutes=3), PROPAGATE),
    ]


def test_the_records_keep_only_the_newest_max_records_admissions() -> None:
    hospital = Hospital(max_records=3)
    for i in range(5):
        hospital.examine(errored(raised(ValueError(f"e{i}")), flow_id=f"f{i}"), NOW)

    assert [r.flow_id for r in hospital.records] == ["f2", "f3", "f4"]
    assert hospital.records.maxlen == 3


def test_admit_passes_the_verdict_on_at_once() -> None:
    hospital = Hospital(random=lambda: 0.0)
    verdicts: list[tuple[Event, float]] = []
    state = errored(locked_error())

    hospital.admit(state, NOW, lambda event, delay: verdicts.append((event, delay)))
    hospital.admit(state, NOW, lambda event, delay: verdicts.append((event, delay)))

    assert verdicts == [(RetryFromCheckpoint(), 0.0), (RetryFromCheckpoint(), 10.0)]
    assert [r.staff for r in hospital.records] == ["locked", "locked"]


def test_every_admission_is_handed_to_the_keeper_with_its_attempt_and_delay() -> None:
    kept: list[PutAdmission] = []
    hospital = Hospital(keep=kept.append, random=lambda: 1.0)
    state = errored(caused_by(StateTransitionError("x", "PersistCheckpoint"), locked_error()))
    for _ in range(3):
        hospital.examine(state, NOW)
    assert [(r.staff, r.attempt, r.retry_in) for r in kept] == [
        ("locked", 0, 0.0),
        ("locked", 1, backoff(1, 1.0)),
        ("locked", 2, backoff(2, 1.0)),
    ]
    assert [Admission.from_record(r) for r in kept] == list(hospital.records)


def test_a_failing_keeper_does_not_stop_the_verdict() -> None:
    def broken(record: object) -> None:
        raise OSError("disk full")

    hospital = Hospital(keep=broken)
    event, _ = hospital.examine(errored(integrity_error()), NOW)
    assert isinstance(event, RetryFromCheckpoint)


def test_messaging_errors_are_retried_three_times_with_backoff_then_observed() -> None:
    hospital = Hospital(random=lambda: 1.0)
    failure = StateTransitionError("publishing failed", "SendMessages")
    error = caused_by(failure, TransientError("x"))
    state = errored(error)
    diagnoses = [hospital.diagnose(state, error) for _ in range(4)]
    assert [(d.staff, d.outcome, d.delay) for d in diagnoses] == [
        ("messaging", Outcome.RETRY, 0.0),
        ("messaging", Outcome.RETRY, backoff(1, 1.0)),
        ("messaging", Outcome.RETRY, backoff(2, 1.0)),
        ("messaging", Outcome.OBSERVE, 0.0),
    ]


def test_a_full_disk_keeps_the_flow_for_observation_and_tells_the_node() -> None:
    faults: list[str] = []
    hospital = Hospital(on_storage_fault=faults.append)
    error = caused_by(
        StateTransitionError("commit failed", "PersistCheckpoint"),
        sqlite3.OperationalError("database or disk is full"),
    )
    diagnosis = hospital.diagnose(errored(error), error)
    assert (diagnosis.staff, diagnosis.outcome) == ("storage", Outcome.OBSERVE)
    assert faults == ["StateTransitionError: commit failed"]

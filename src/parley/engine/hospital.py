"""The flow hospital: every transition that leaves a flow errored is admitted here.

Each member of the staff looks at the newest error and may give a diagnosis; the first one that
does decides, in the order of the table. Retry budgets are counted per flow, per suspension point
and per staff member, so a flow that makes progress gets a fresh budget.

The "where" column says where in the error's cause chain a staff member looks: ``anywhere`` is
the error itself or any exception reached from it through ``__cause__``/``__context__`` (see
:func:`causes`; the framework wraps the errors of failed actions, and flows may wrap errors too),
``itself`` is the error alone (see :meth:`Hospital.diagnose` for why a timeout is matched so).

========================================  ========  =========================================
error                                     where     outcome
========================================  ========  =========================================
HospitalizeFlowException                  anywhere  keep for observation
NonDeterministicFlowError                 anywhere  keep for observation
DeserializationError (undecodable state)  anywhere  keep for observation
FlowTimeoutException (not a deadline)     itself    retry from the last checkpoint, unlimited
SQLite "database is locked"               anywhere  retry, unlimited, with :func:`backoff`
disk full, disk I/O error                 anywhere  keep for observation; the node is told
SQLite constraint violation               anywhere  retry 3 times, then propagate
TransientError (NATS down, no pub ack)    anywhere  retry 3 times with backoff, then observe
StateTransitionError (commit, send, ...)  anywhere  retry 3 times, then keep for observation
anything else                                       propagate: the flow fails, peers are told
========================================  ========  =========================================
"""

from __future__ import annotations

import logging
import traceback
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Protocol

from parley.protocol.errors import (
    DeadlineExpiredException,
    DeserializationError,
    FlowException,
    FlowTimeoutException,
    HospitalizeFlowException,
    NonDeterministicFlowError,
    StateTransitionError,
    TransientError,
)
from parley.protocol.events import (
    Event,
    KeepForObservation,
    RetryFromCheckpoint,
    StartErrorPropagation,
)
from parley.protocol.records import PutAdmission
from parley.protocol.state import FlowState
from parley.store import classify_sqlite_error

#: Receives the hospital's verdict: the event to post to the flow, after ``delay`` seconds.
Verdict = Callable[[Event, float], None]


class HospitalPort(Protocol):
    """Where a runtime sends errored flows (in-process, or the node's Hospital actor)."""

    def admit(self, state: FlowState, now: datetime, verdict: Verdict) -> None: ...

    def discharge(self, flow_id: str) -> None: ...


log = logging.getLogger("parley.hospital")


class Outcome(StrEnum):
    """What the hospital does with an admitted flow."""

    #: Fail the flow and tell its counterparties (:class:`StartErrorPropagation`).
    PROPAGATE = "propagate"
    #: Restore the flow from its last checkpoint (:class:`RetryFromCheckpoint`).
    RETRY = "retry"
    #: Park the flow as HOSPITALIZED until a restart or an operator (:class:`KeepForObservation`).
    OBSERVE = "observe"


@dataclass(frozen=True, slots=True)
class Diagnosis:
    """The verdict of one staff member on one admission."""

    #: The staff member who decided: ``"sedation"``, ``"determinism"``, ``"timeout"``,
    #: ``"locked"``, ``"storage"``, ``"constraint"``, ``"messaging"``, ``"transition"`` or
    #: ``"general"``.
    staff: str
    outcome: Outcome
    #: Seconds to wait before the retry.
    delay: float = 0.0
    #: How many times this staff member retried the flow at this suspension point before.
    attempt: int = 0


@dataclass(frozen=True, slots=True)
class Admission:
    """One visit to the hospital, kept for operators."""

    time: datetime
    flow_id: str
    flow_class: str
    suspends: int
    #: ``"module.QualName"`` of the newest error.
    error_type: str
    message: str
    traceback: str
    staff: str
    outcome: Outcome
    #: ``"module.Type: message"`` of each exception in the error's cause chain, newest first.
    causes: tuple[str, ...] = ()
    #: How many times this staff member retried the flow at this suspension point before.
    attempt: int = 0
    #: Seconds until the retry (0: immediate, or no retry).
    retry_in: float = 0.0

    def to_record(self) -> PutAdmission:
        """The admission as the store keeps it."""
        return PutAdmission(
            flow_id=self.flow_id,
            admitted_at=self.time.timestamp(),
            flow_class=self.flow_class,
            suspends=self.suspends,
            error_type=self.error_type,
            message=self.message,
            traceback=self.traceback,
            causes=self.causes,
            staff=self.staff,
            outcome=self.outcome.value,
            attempt=self.attempt,
            retry_in=self.retry_in,
        )

    @classmethod
    def from_record(cls, record: PutAdmission) -> Admission:
        """An admission read back from the store."""
        return cls(
            time=datetime.fromtimestamp(record.admitted_at, UTC),
            flow_id=record.flow_id,
            flow_class=record.flow_class,
            suspends=record.suspends,
            error_type=record.error_type,
            message=record.message,
            traceback=record.traceback,
            staff=record.staff,
            outcome=Outcome(record.outcome),
            causes=record.causes,
            attempt=record.attempt,
            retry_in=record.retry_in,
        )


def causes(error: BaseException) -> Iterator[BaseException]:
    """Walk ``error``'s cause chain.

    Args:
        error: The exception to start from.

    Yields:
        ``error``, then at each step the ``__cause__`` of the previous exception if it has one,
        else its ``__context__``; each exception once, so a cyclic chain ends.
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def backoff(attempt: int, jitter: float) -> float:
    """Seconds to wait before retry number ``attempt``; a pure function of its arguments.

    The formula: ``0`` for ``attempt == 0`` (the first retry is immediate), else::

        max(10, min(120, 10 + jitter * min(110, 5 * 1.5 ** attempt)))

    So with ``jitter`` in ``[0, 1]`` the delay is 10 s plus a jittered share of a part that grows
    by half each attempt: between 10 s and ``min(120, 10 + 5 * 1.5**attempt)`` s, and never more
    than 120 s (reached with ``jitter == 1`` from attempt 8 on). ``jitter == 0`` gives a flat
    10 s. The hospital draws ``jitter`` from its injected random source, so that many flows locked
    out at once do not all come back at the same moment.

    Args:
        attempt: How many retries this staff member already gave at this suspension point.
        jitter: A number in ``[0, 1]``, normally from the random source.

    Returns:
        The delay in seconds.
    """
    if attempt == 0:
        return 0.0
    # 5 * 1.5**8 > 110 already: clamping the exponent changes nothing but keeps 1.5**attempt
    # from overflowing (OverflowError from attempt 1751 on: five hours of locked retries or more).
    growth = 5.0 * 1.5 ** min(attempt, 16)
    return max(10.0, min(120.0, 10.0 + jitter * min(110.0, growth)))


def _level(diagnosis: Diagnosis, error: BaseException) -> int:
    """WARNING for what an operator must look at; INFO for business errors and retries.

    A flow kept for observation waits for an operator; a flow that fails with anything but a
    ``FlowException`` has a bug. A ``FlowException`` is the flow's own business answer (it reaches
    its counterparties, which log it once each at INFO too), and a retry heals itself.
    """
    if diagnosis.outcome is Outcome.OBSERVE:
        return logging.WARNING
    if diagnosis.outcome is Outcome.PROPAGATE and not isinstance(error, FlowException):
        return logging.WARNING
    return logging.INFO


def _type_of(error: BaseException) -> str:
    return f"{type(error).__module__}.{type(error).__qualname__}"


def _anywhere(chain: Sequence[BaseException], *kinds: type[BaseException]) -> bool:
    return any(isinstance(e, kinds) for e in chain)


class Hospital:
    """Diagnoses errored flows and turns the diagnosis into the event that carries it out.

    Args:
        max_retries: The retry budget of the constraint and transition staff, per flow and
            suspension point.
        random: Returns the jitter of the locked staff's :func:`backoff`, in ``[0, 1)``; inject a
            seeded source for deterministic runs. Defaults to a constant 0.5.
        max_records: How many :class:`Admission` records :attr:`records` keeps.
        keep: Called with every admission as the store keeps it (a node persists them, so that
            they survive restarts and operators can read a flow's history).
        on_storage_fault: Called (with a description) when a flow is admitted because the disk
            is full or failing: the node stops taking new work until an operator frees space.
    """

    def __init__(
        self,
        *,
        max_retries: int = 3,
        random: Callable[[], float] | None = None,
        max_records: int = 10_000,
        keep: Callable[[PutAdmission], None] | None = None,
        on_storage_fault: Callable[[str], None] | None = None,
    ) -> None:
        self.max_retries = max_retries
        self._keep = keep
        self._on_storage_fault = on_storage_fault
        self._random = random or (lambda: 0.5)
        self._retries: dict[tuple[str, int, str], int] = {}
        #: The most recent admissions (older ones are dropped: the log has them all).
        self.records: deque[Admission] = deque(maxlen=max_records)

    def admit(self, state: FlowState, now: datetime, verdict: Verdict) -> None:
        """Admit an errored flow and pass on the verdict (see :meth:`examine`).

        Args:
            state: The errored flow; its newest error is diagnosed.
            now: The admission time, for the record.
            verdict: Called once, synchronously, with the event to post and its delay.
        """
        event, delay = self.examine(state, now)
        verdict(event, delay)

    def examine(self, state: FlowState, now: datetime) -> tuple[Event, float]:
        """Diagnose the newest error of ``state`` and record the admission in :attr:`records`.

        Args:
            state: The errored flow (``state.errors`` must be set).
            now: The admission time, for the record.

        Returns:
            The verdict event (:class:`RetryFromCheckpoint`, :class:`KeepForObservation` or
            :class:`StartErrorPropagation`) and the seconds to wait before posting it.
        """
        assert state.errors is not None
        error = state.errors.errors[-1].exception
        diagnosis = self.diagnose(state, error)
        log.log(
            _level(diagnosis, error),
            "flow %s (%s) admitted with %s: %s -> %s by %s",
            state.flow_id,
            state.flow_class,
            type(error).__name__,
            error,
            diagnosis.outcome,
            diagnosis.staff,
            extra={"flow_id": state.flow_id},  # the hospital runs on its own thread
        )
        admission = Admission(
            time=now,
            flow_id=state.flow_id,
            flow_class=state.flow_class,
            suspends=state.suspends,
            error_type=_type_of(error),
            message=str(error),
            traceback="".join(traceback.format_exception(error)),
            staff=diagnosis.staff,
            outcome=diagnosis.outcome,
            causes=tuple(f"{_type_of(e)}: {e}" for e in causes(error)),
            attempt=diagnosis.attempt,
            retry_in=diagnosis.delay if diagnosis.outcome is Outcome.RETRY else 0.0,
        )
        self.records.append(admission)
        if self._keep is not None:
            try:
                self._keep(admission.to_record())
            except Exception:
                log.exception("keeping the admission of flow %s failed", state.flow_id)
        event: Event
        match diagnosis.outcome:
            case Outcome.RETRY:
                event = RetryFromCheckpoint()
            case Outcome.OBSERVE:
                event = KeepForObservation()
            case Outcome.PROPAGATE:
                event = StartErrorPropagation()
        return event, diagnosis.delay

    def diagnose(self, state: FlowState, error: BaseException) -> Diagnosis:
        """Ask the staff, in order, what to do with ``error``; the first match decides.

        A diagnosis that retries uses up one unit of that staff member's budget for
        ``(state.flow_id, state.suspends)``.

        Args:
            state: The errored flow (for its id and suspension point).
            error: The error to diagnose, usually the newest of ``state.errors``.

        Returns:
            The diagnosis; ``"general"`` (propagate) when no other staff member matches.
        """
        chain = tuple(causes(error))
        if _anywhere(chain, HospitalizeFlowException):
            return Diagnosis("sedation", Outcome.OBSERVE)
        if _anywhere(chain, NonDeterministicFlowError, DeserializationError):
            return Diagnosis("determinism", Outcome.OBSERVE)
        # The timeout staff looks at the error itself only. A FlowTimeoutException deeper in the
        # chain means the flow's code caught the timeout and raised something else (or wrapped
        # it with ``raise ... from``): the flow decided how a timeout ends, and its error must
        # reach its peers. Retrying it "unlimited" would also never end: the retried flow times
        # out at the same point, handles it the same way, and is admitted again.
        if isinstance(error, FlowTimeoutException) and not isinstance(
            error, DeadlineExpiredException
        ):
            return Diagnosis("timeout", Outcome.RETRY)
        # classify_sqlite_error walks both __cause__ and __context__ of each exception; "locked"
        # wins over "constraint" when both appear.
        kinds = {classify_sqlite_error(e) for e in chain}
        if "locked" in kinds:
            attempt = self._count(state, "locked")
            delay = backoff(attempt, self._random())
            return Diagnosis("locked", Outcome.RETRY, delay, attempt)
        if "storage" in kinds:
            if self._on_storage_fault is not None:
                try:
                    self._on_storage_fault(f"{type(error).__name__}: {error}")
                except Exception:
                    log.exception("telling the node about a storage fault failed")
            return Diagnosis("storage", Outcome.OBSERVE)
        if "constraint" in kinds:
            attempt = self._count(state, "constraint")
            if attempt < self.max_retries:
                return Diagnosis("constraint", Outcome.RETRY, attempt=attempt)
            return Diagnosis("constraint", Outcome.PROPAGATE, attempt=attempt)
        if _anywhere(chain, TransientError):
            attempt = self._count(state, "messaging")
            if attempt < self.max_retries:
                delay = backoff(attempt, self._random())
                return Diagnosis("messaging", Outcome.RETRY, delay, attempt)
            return Diagnosis("messaging", Outcome.OBSERVE, attempt=attempt)
        if _anywhere(chain, StateTransitionError):
            attempt = self._count(state, "transition")
            if attempt < self.max_retries:
                return Diagnosis("transition", Outcome.RETRY, attempt=attempt)
            return Diagnosis("transition", Outcome.OBSERVE, attempt=attempt)
        return Diagnosis("general", Outcome.PROPAGATE)

    def _count(self, state: FlowState, staff: str) -> int:
        """How often ``staff`` retried this flow at this suspension; counts this one."""
        key = (state.flow_id, state.suspends, staff)
        count = self._retries.get(key, 0)
        self._retries[key] = count + 1
        return count

    def discharge(self, flow_id: str) -> None:
        """Forget the retry budgets of a flow that ended.

        Args:
            flow_id: The flow; the budgets of other flows are kept.
        """
        for key in [k for k in self._retries if k[0] == flow_id]:
            del self._retries[key]


__all__ = [
    "Admission",
    "Diagnosis",
    "Hospital",
    "HospitalPort",
    "Outcome",
    "Verdict",
    "backoff",
    "causes",
]

"""The flow hospital: every transition that leaves a flow errored is admitted here.

Each member of the staff looks at the newest error and its cause chain and may give a diagnosis; the
first one that does decides. Retry budgets are counted per flow, per suspension point and per staff
member, so a flow that makes progress gets a fresh budget.

============================================  ==============================================
error (anywhere in the cause chain)           outcome
============================================  ==============================================
HospitalizeFlowException                      keep for observation
NonDeterministicFlowError, undecodable state  keep for observation
FlowTimeoutException                          retry from the last checkpoint, unlimited
SQLite "database is locked"                   retry, unlimited, with backoff
SQLite constraint violation                   retry 3 times, then propagate
an action failed (commit, send, ...)          retry 3 times, then keep for observation
anything else                                 propagate: the flow fails, peers are told
============================================  ==============================================
"""

from __future__ import annotations

import logging
import traceback
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from parley.protocol.errors import (
    DeserializationError,
    FlowTimeoutException,
    HospitalizeFlowException,
    NonDeterministicFlowError,
    StateTransitionError,
)
from parley.protocol.events import (
    Event,
    KeepForObservation,
    RetryFromCheckpoint,
    StartErrorPropagation,
)
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
    PROPAGATE = "propagate"
    RETRY = "retry"
    OBSERVE = "observe"


@dataclass(frozen=True, slots=True)
class Diagnosis:
    staff: str
    outcome: Outcome
    #: Seconds to wait before the retry.
    delay: float = 0.0


@dataclass(frozen=True, slots=True)
class Admission:
    """One visit to the hospital, kept for operators."""

    time: datetime
    flow_id: str
    flow_class: str
    suspends: int
    error_type: str
    message: str
    traceback: str
    staff: str
    outcome: Outcome


def causes(error: BaseException) -> Iterator[BaseException]:
    """``error`` and its cause/context chain (each once)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def backoff(attempt: int, jitter: float) -> float:
    """Seconds before retry ``attempt`` (0 = first): immediate, then growing, capped at 120."""
    if attempt == 0:
        return 0.0
    return max(10.0, min(120.0, 10 + jitter * min(110.0, 10 * 1.5**attempt / 2)))


class Hospital:
    """Diagnoses errored flows and turns the diagnosis into the event that carries it out."""

    def __init__(
        self,
        *,
        max_retries: int = 3,
        random: Callable[[], float] | None = None,
        max_records: int = 10_000,
    ) -> None:
        self.max_retries = max_retries
        self._random = random or (lambda: 0.5)
        self._retries: dict[tuple[str, int, str], int] = {}
        #: The most recent admissions (older ones are dropped: the log has them all).
        self.records: deque[Admission] = deque(maxlen=max_records)

    def admit(self, state: FlowState, now: datetime, verdict: Verdict) -> None:
        """Admit an errored flow; ``verdict(event, delay)`` is called with the outcome."""
        event, delay = self.examine(state, now)
        verdict(event, delay)

    def examine(self, state: FlowState, now: datetime) -> tuple[Event, float]:
        """Diagnose the newest error of ``state``; returns the verdict event and its delay."""
        assert state.errors is not None
        error = state.errors.errors[-1].exception
        diagnosis = self.diagnose(state, error)
        log.warning(
            "flow %s (%s) admitted with %s: %s -> %s by %s",
            state.flow_id,
            state.flow_class,
            type(error).__name__,
            error,
            diagnosis.outcome,
            diagnosis.staff,
        )
        self.records.append(
            Admission(
                time=now,
                flow_id=state.flow_id,
                flow_class=state.flow_class,
                suspends=state.suspends,
                error_type=f"{type(error).__module__}.{type(error).__qualname__}",
                message=str(error),
                traceback="".join(traceback.format_exception(error)),
                staff=diagnosis.staff,
                outcome=diagnosis.outcome,
            )
        )
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
        chain = list(causes(error))
        if any(isinstance(e, HospitalizeFlowException) for e in chain):
            return Diagnosis("sedation", Outcome.OBSERVE)
        if any(isinstance(e, NonDeterministicFlowError | DeserializationError) for e in chain[:1]):
            return Diagnosis("determinism", Outcome.OBSERVE)
        if isinstance(error, FlowTimeoutException):
            return Diagnosis("timeout", Outcome.RETRY)
        kinds = {classify_sqlite_error(e) for e in chain}
        if "locked" in kinds:
            attempt = self._count(state, "locked")
            return Diagnosis("locked", Outcome.RETRY, backoff(attempt, self._random()))
        if "constraint" in kinds:
            if self._count(state, "constraint") < self.max_retries:
                return Diagnosis("constraint", Outcome.RETRY)
            return Diagnosis("constraint", Outcome.PROPAGATE)
        if isinstance(error, StateTransitionError):
            if self._count(state, "transition") < self.max_retries:
                return Diagnosis("transition", Outcome.RETRY)
            return Diagnosis("transition", Outcome.OBSERVE)
        return Diagnosis("general", Outcome.PROPAGATE)

    def _count(self, state: FlowState, staff: str) -> int:
        """How often ``staff`` retried this flow at this suspension; counts this one."""
        key = (state.flow_id, state.suspends, staff)
        count = self._retries.get(key, 0)
        self._retries[key] = count + 1
        return count

    def discharge(self, flow_id: str) -> None:
        """Forget the retry budgets of a flow that ended."""
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

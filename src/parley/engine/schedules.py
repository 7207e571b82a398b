"""Flows started by time: schedules, their ticks, and what happens to ticks missed while down.

A :class:`Schedule` says which flow to start (its class and encoded constructor arguments), when
first (``next_at``) and how often (``every`` seconds; ``None`` for once). Each tick's flow is
started with the client id :func:`tick_client_id` — the schedule's name and the tick's time — so a
tick starts at most one flow, whatever crashes happen between starting it and storing the
schedule's next tick: the repeated start finds the flow that already holds the client id.

Ticks that fell due while the node was down are handled by the schedule's :class:`Missed` policy
when the node starts again (:func:`due_ticks` with ``recovering=True``); a running node starts each
tick as it falls due. The rest is the host's: a node arms a timer for :func:`next_wake`, a mock
node a virtual one.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from parley.engine.restore import build
from parley.flows.logic import FlowLogic
from parley.flows.registry import flow_class_named
from parley.protocol import codec
from parley.protocol.errors import ParleyError, type_name
from parley.protocol.records import DeleteSchedule, PutSchedule, StartKind, StoreOp

__all__ = [
    "Missed",
    "Schedule",
    "ScheduleError",
    "Scheduler",
    "due_ticks",
    "flow_of",
    "make_schedule",
    "tick_client_id",
]

log = logging.getLogger("parley.schedules")

#: Longest schedule name (it becomes part of a client id).
MAX_NAME = 64


class ScheduleError(ParleyError):
    """A schedule can't be made: a bad name, period or flow (the message says which)."""


class Missed(StrEnum):
    """What a node that was down does with the ticks it missed, when it starts again."""

    #: One flow for the latest missed tick (the default: a report that is late, once).
    RUN_ONCE = "run_once"
    #: One flow for every missed tick, oldest first.
    CATCH_UP = "catch_up"
    #: No flow for missed ticks; the next tick runs on time.
    SKIP = "skip"


@dataclass(frozen=True, slots=True)
class Schedule:
    """A flow to start at ``next_at`` and then every ``every`` seconds (``None``: once)."""

    name: str
    flow_class: str
    #: ``codec.encode((args, kwargs))`` of the flow's constructor arguments.
    args: bytes
    next_at: datetime
    every: float | None = None
    missed: Missed = Missed.RUN_ONCE

    def to_record(self) -> PutSchedule:
        return PutSchedule(
            self.name,
            self.flow_class,
            self.args,
            self.next_at.timestamp(),
            self.every,
            self.missed.value,
        )

    @classmethod
    def from_record(cls, record: PutSchedule) -> Schedule:
        return cls(
            record.name,
            record.flow_class,
            record.args,
            datetime.fromtimestamp(record.next_at, UTC),
            record.every,
            Missed(record.missed),
        )


def make_schedule(
    name: str,
    flow: FlowLogic[Any],
    *,
    at: datetime | None = None,
    every: float | None = None,
    missed: Missed | str = Missed.RUN_ONCE,
    now: datetime | None = None,
) -> Schedule:
    """A schedule that starts copies of ``flow`` (its class, its constructor arguments).

    Args:
        name: the schedule's name (1-:data:`MAX_NAME` characters without ``:``).
        flow: the flow whose class and constructor arguments each tick starts.
        at: the first tick (default: ``every`` seconds after ``now``).
        every: seconds between ticks (``None``: once).
        missed: the :class:`Missed` policy, or its value.
        now: the host's current time (a node's clock, or a mock network's virtual one); needed
            only when ``at`` is not given.

    Raises:
        ScheduleError: a bad name, period, policy or time, neither ``at`` nor ``every``, or
            arguments that can't be stored.
        TypeError: ``at`` is left to its default without ``now`` (the host's mistake).
    """
    if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME or ":" in name:
        raise ScheduleError(f"a schedule name is 1-{MAX_NAME} characters without ':': {name!r}")
    if not isinstance(flow, FlowLogic):
        raise ScheduleError(f"a schedule starts a FlowLogic, not {type(flow).__name__}")
    if every is not None and (
        isinstance(every, bool) or not isinstance(every, int | float) or not every > 0
    ):
        raise ScheduleError(f"every must be a number of seconds > 0, got {every!r}")
    if at is None:
        if every is None:
            raise ScheduleError("a schedule needs a first tick (at=) or a period (every=)")
        if now is None:
            raise TypeError("make_schedule() needs now= for the default first tick")
        at = now + timedelta(seconds=every)
    if at.tzinfo is None:
        raise ScheduleError(f"the first tick needs a time zone: {at!r}")
    try:
        policy = Missed(missed)
    except ValueError:
        raise ScheduleError(
            f"missed must be one of {', '.join(m.value for m in Missed)}, not {missed!r}"
        ) from None
    args, kwargs = flow._parley_args
    try:
        encoded = codec.encode((list(args), kwargs))
    except ParleyError as exc:
        raise ScheduleError(
            f"the arguments of {type_name(type(flow))} can't be stored: {exc}"
        ) from exc
    return Schedule(name, type_name(type(flow)), encoded, at, every, policy)


def tick_client_id(name: str, tick: datetime) -> str:
    """The client id of the flow a schedule starts for ``tick``: one flow per tick."""
    return f"schedule:{name}:{tick.isoformat()}"


def flow_of(schedule: Schedule) -> FlowLogic[Any]:
    """A new flow object for one of the schedule's ticks.

    Raises:
        FlowUsageError: the flow class is no longer known (its app is not loaded).
        DeserializationError: the stored arguments are not a start record's.
    """
    cls = flow_class_named(schedule.flow_class)
    return build(cls, f"schedule {schedule.name}", StartKind.RPC, schedule.args)


def due_ticks(
    schedule: Schedule, now: datetime, *, recovering: bool
) -> tuple[list[datetime], Schedule | None]:
    """The ticks to start a flow for at ``now``, and the schedule with its next tick.

    Args:
        schedule: the schedule as stored.
        now: the current time.
        recovering: the node just started: ticks it missed while down follow the schedule's
            :class:`Missed` policy. A running node starts every due tick (several only when it
            fell behind).

    Returns:
        The ticks (oldest first), and the schedule to store next (``None``: a one-shot schedule
        that is done).
    """
    if schedule.next_at > now:
        return [], schedule
    if schedule.every is None:
        return [schedule.next_at], None
    period = timedelta(seconds=schedule.every)
    behind = (now - schedule.next_at) / period
    count = math.floor(behind) + 1
    ticks = [schedule.next_at + i * period for i in range(count)]
    following = replace(schedule, next_at=schedule.next_at + count * period)
    if recovering and schedule.missed is Missed.SKIP:
        return [], following
    if recovering and schedule.missed is Missed.RUN_ONCE:
        return ticks[-1:], following
    return ticks, following


class Scheduler:
    """Runs a node's schedules on real time: recovers them at start, starts each tick's flow.

    Thread-safe (timer callbacks and API calls may come from any thread). The host gives it:

    Args:
        load: reads the stored schedules.
        start: starts a flow with a client id and returns once it is durable (or raises).
        commit: stores schedule records durably (raises on failure).
        call_at: calls a function at a time (on some thread).
        now: the current time.
    """

    def __init__(
        self,
        *,
        load: Callable[[], list[Schedule]],
        start: Callable[[FlowLogic[Any], str, str], None],
        commit: Callable[[tuple[StoreOp, ...]], None],
        call_at: Callable[[datetime, Callable[[], None]], None],
        now: Callable[[], datetime],
    ) -> None:
        self._load, self._start, self._commit = load, start, commit
        self._call_at, self._now = call_at, now
        self._lock = threading.Lock()
        self._stopped = False

    def recover(self) -> None:
        """Handle the ticks missed while the node was down, then arm every schedule."""
        for schedule in self._load():
            self._run(schedule.name, recovering=True)

    def add(self, schedule: Schedule) -> None:
        with self._lock:
            self._commit((schedule.to_record(),))
        self._arm(schedule)

    def remove(self, name: str) -> bool:
        with self._lock:
            known = any(s.name == name for s in self._load())
            self._commit((DeleteSchedule(name),))
        return known

    def stop(self) -> None:
        self._stopped = True

    def _arm(self, schedule: Schedule) -> None:
        self._call_at(schedule.next_at, lambda: self._run(schedule.name, recovering=False))

    def _run(self, name: str, *, recovering: bool) -> None:
        if self._stopped:
            return
        with self._lock:
            stored = next((s for s in self._load() if s.name == name), None)
            if stored is None:
                return  # removed meanwhile
            ticks, following = due_ticks(stored, self._now(), recovering=recovering)
            try:
                for tick in ticks:
                    self._start(flow_of(stored), tick_client_id(name, tick), f"schedule {name}")
                if following is None:
                    self._commit((DeleteSchedule(name),))
                elif following != stored:
                    self._commit((following.to_record(),))
            except Exception:
                # The ticks stay due (the schedule did not move on): they run at the next start
                # of the node, or at the next try below, each with its client id.
                log.exception("schedule %s: starting its flow failed; trying again in 10 s", name)
                again = self._now() + timedelta(seconds=10)
                self._call_at(again, lambda: self._run(name, recovering=False))
                return
        if following is not None and not self._stopped:
            self._arm(following)

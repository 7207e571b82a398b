"""make_schedule and flow_of: a schedule's first tick, and the flow each tick starts."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from parley import FlowLogic
from parley.engine.schedules import ScheduleError, flow_of, make_schedule
from parley.protocol.errors import FlowUsageError

NOW = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)


class Report(FlowLogic[None]):
    def __init__(self, title: str = "daily", *, pages: int = 1) -> None:
        self.title, self.pages = title, pages

    async def call(self) -> None:
        return None


def test_the_first_tick_defaults_to_one_period_after_now() -> None:
    schedule = make_schedule("report", Report(), every=30, now=NOW)
    assert schedule.next_at == NOW + timedelta(seconds=30)
    assert schedule.every == 30


def test_a_given_first_tick_is_kept() -> None:
    at = NOW + timedelta(hours=1)
    assert make_schedule("report", Report(), at=at, every=30, now=NOW).next_at == at
    assert make_schedule("report", Report(), at=at).next_at == at


def test_a_schedule_without_first_tick_or_period_is_refused() -> None:
    with pytest.raises(ScheduleError, match="first tick"):
        make_schedule("report", Report(), now=NOW)


def test_a_bad_period_is_refused_before_the_first_tick_is_computed() -> None:
    with pytest.raises(ScheduleError, match="every"):
        make_schedule("report", Report(), every="soon", now=NOW)  # type: ignore[arg-type]


def test_the_default_first_tick_needs_the_hosts_clock() -> None:
    with pytest.raises(TypeError, match="now="):
        make_schedule("report", Report(), every=30)


def test_each_tick_builds_the_flow_from_its_stored_arguments() -> None:
    schedule = make_schedule("report", Report("weekly", pages=3), every=30, now=NOW)
    flow = flow_of(schedule)
    assert isinstance(flow, Report)
    assert (flow.title, flow.pages) == ("weekly", 3)
    assert flow_of(schedule) is not flow


def test_a_tick_of_a_flow_class_no_longer_loaded_is_refused() -> None:
    schedule = make_schedule("report", Report(), every=30, now=NOW)
    gone = replace(schedule, flow_class="tests.engine.gone:Report")
    with pytest.raises(FlowUsageError, match="no flow class named"):
        flow_of(gone)

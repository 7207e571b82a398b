"""make_schedule: the default first tick is computed from the host's clock, in one place."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from parley import FlowLogic
from parley.engine.schedules import ScheduleError, make_schedule

NOW = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)


class Report(FlowLogic[None]):
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

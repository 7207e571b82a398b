"""Flows started by time: one flow per tick, restarts at any moment, and missed-tick policies."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from parley import FlowLogic
from parley.engine.schedules import Missed, ScheduleError, tick_client_id
from parley.protocol.records import FlowStatus
from parley.testing import MockNetwork, MockNode, restart_at_every_step

MIGRATIONS = ["CREATE TABLE ticks (at TEXT NOT NULL)"]


class Tick(FlowLogic[None]):
    def __init__(self, label: str = "tick") -> None:
        self.label = label

    async def call(self) -> None:
        self.services.db.execute("INSERT INTO ticks VALUES (?)", (self.now().isoformat(),))
        await self.sleep(0)


@pytest.fixture
def clock() -> MockNetwork:
    return MockNetwork(auto_advance=False)


@pytest.fixture
def node(clock: MockNetwork) -> MockNode:
    return clock.create_node("alice", apps=[__name__])


def ticks(node: MockNode) -> list[str]:
    return [str(at) for (at,) in node.store.query("SELECT at FROM ticks ORDER BY at")]


def finished_clients(node: MockNode) -> list[str]:
    return sorted(f.client_id or "" for f in node.flows(FlowStatus.COMPLETED))


def test_a_schedule_starts_one_flow_per_tick(clock: MockNetwork, node: MockNode) -> None:
    start = clock.now
    node.schedule("heartbeat", Tick(), every=10)
    for _ in range(3):
        clock.advance_clock(10)
        clock.run_network()
    assert len(ticks(node)) == 3
    expected = [tick_client_id("heartbeat", start + timedelta(seconds=10 * i)) for i in (1, 2, 3)]
    assert finished_clients(node) == sorted(expected)
    (schedule,) = node.schedules()
    assert schedule.next_at == start + timedelta(seconds=40)


def test_a_restart_at_a_tick_starts_its_flow_exactly_once(
    clock: MockNetwork, node: MockNode
) -> None:
    node.schedule("heartbeat", Tick(), every=10)
    clock.advance_clock(10)
    clock.run_network(max_steps=1)  # the tick's flow started; the schedule may not have moved on
    node = clock.restart_node(node)
    clock.run_network()
    clock.advance_clock(10)
    clock.run_network()
    assert len(ticks(node)) == 2
    assert len(finished_clients(node)) == 2


@pytest.mark.parametrize(
    ("missed", "expected"), [(Missed.CATCH_UP, 5), (Missed.RUN_ONCE, 1), (Missed.SKIP, 0)]
)
def test_ticks_missed_while_down_follow_the_policy(
    tmp_path: Path, missed: Missed, expected: int
) -> None:
    data = tmp_path
    first = MockNetwork(auto_advance=False, data_dir=data)
    node = first.create_node("alice", apps=[__name__])
    node.schedule("report", Tick(), every=60, missed=missed)
    # the node is down for five periods: a new network on the same files, five minutes later
    later = MockNetwork(auto_advance=False, data_dir=data, start=first.now + timedelta(minutes=5))
    node = later.create_node("alice", apps=[__name__])
    later.run_network()
    assert len(ticks(node)) == expected
    (schedule,) = node.schedules()
    assert schedule.next_at == first.now + timedelta(minutes=6)


def test_a_one_shot_schedule_runs_once_and_is_gone(clock: MockNetwork, node: MockNode) -> None:
    node.schedule("once", Tick(), at=clock.now + timedelta(seconds=5))
    clock.advance_clock(60)
    clock.run_network()
    assert len(ticks(node)) == 1
    assert node.schedules() == []


def test_an_unscheduled_schedule_starts_nothing(clock: MockNetwork, node: MockNode) -> None:
    node.schedule("heartbeat", Tick(), every=10)
    assert node.unschedule("heartbeat") is True
    assert node.unschedule("heartbeat") is False
    clock.advance_clock(30)
    clock.run_network()
    assert ticks(node) == []


@pytest.mark.parametrize(
    ("name", "every", "message"),
    [("", 1, "name"), ("a:b", 1, "name"), ("ok", 0, "every"), ("ok", None, "first tick")],
)
def test_bad_schedules_are_refused(
    node: MockNode, name: str, every: float | None, message: str
) -> None:
    with pytest.raises(ScheduleError, match=message):
        node.schedule(name, Tick(), every=every)


def test_a_bad_policy_is_refused(node: MockNode) -> None:
    with pytest.raises(ScheduleError, match="missed must be one of"):
        node.schedule("x", Tick(), every=1, missed="sometimes")


def test_each_tick_runs_exactly_once_whatever_step_the_node_restarts_at() -> None:
    def scenario(net: MockNetwork):  # type: ignore[no-untyped-def]
        node = net.create_node("alice", apps=[__name__])
        for n in (1, 2, 3):
            node.schedule(f"once-{n}", Tick(), at=net.now + timedelta(seconds=10 * n))

        def finish() -> list[str]:
            net.run_network()
            return ticks(net.nodes["alice"])

        return finish

    runs = list(restart_at_every_step(scenario, restart="alice"))
    assert len(runs) > 5
    for run in runs:
        assert run.result == [
            "2026-01-01T00:00:10+00:00",
            "2026-01-01T00:00:20+00:00",
            "2026-01-01T00:00:30+00:00",
        ], run

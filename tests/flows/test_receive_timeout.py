"""Receiving with a deadline: it fires on time, survives a restart without restarting, loses to a
reply that came first, and a payload that comes late waits for the next receive."""

from __future__ import annotations

import pytest

from parley import (
    FlowLogic,
    FlowSession,
    FlowUsageError,
    ReceiveTimeoutException,
    initiated_by,
    initiating_flow,
)
from parley.testing import MockNetwork

REPLY_AFTER = {"seconds": 100.0}


@initiating_flow
class AsksWithDeadline(FlowLogic[list[str]]):
    def __init__(self, peer: str, timeout: float = 30) -> None:
        self.peer, self.timeout = peer, timeout

    async def call(self) -> list[str]:
        session = self.initiate_flow(self.peer)
        events = []
        try:
            reply = await session.send_and_receive(int, 1, timeout=self.timeout)
            events.append(f"reply {reply.unwrap_unchecked()} at {self.elapsed()}")
        except ReceiveTimeoutException as exc:
            events.append(f"timeout at {self.elapsed()} on {exc.session == session.session_id}")
            late = await session.receive(int)  # no deadline: the late reply waits here
            events.append(f"late reply {late.unwrap_unchecked()} at {self.elapsed()}")
        return events

    def elapsed(self) -> int:
        return round((self.now() - START).total_seconds())


@initiated_by(AsksWithDeadline)
class SlowReplier(FlowLogic[None]):
    def __init__(self, session: FlowSession) -> None:
        self.session = session

    async def call(self) -> None:
        n = (await self.session.receive(int)).unwrap_unchecked()
        await self.sleep(REPLY_AFTER["seconds"])
        await self.session.send(n + 1)


START = MockNetwork().now


@pytest.fixture
def net() -> MockNetwork:
    return MockNetwork(start=START)


def test_a_receive_times_out_on_time_and_a_late_reply_waits_for_the_next_receive(
    net: MockNetwork, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(REPLY_AFTER, "seconds", 100.0)
    alice, _ = net.create_node("alice"), net.create_node("bob")
    events = alice.start_flow(AsksWithDeadline("bob")).result()
    assert events == ["timeout at 30 on True", "late reply 2 at 100"]


def test_a_reply_before_the_deadline_wins(
    net: MockNetwork, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(REPLY_AFTER, "seconds", 29.0)
    alice, _ = net.create_node("alice"), net.create_node("bob")
    assert alice.start_flow(AsksWithDeadline("bob")).result() == ["reply 2 at 29"]


def test_a_restart_keeps_the_deadline(net: MockNetwork, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(REPLY_AFTER, "seconds", 100.0)
    net.auto_advance = False
    alice, _ = net.create_node("alice"), net.create_node("bob")
    handle = alice.start_flow(AsksWithDeadline("bob"))
    net.run_network()
    net.advance_clock(20)
    net.restart_node(alice)
    net.run_network()
    net.advance_clock(10)  # 30 s after the start: the deadline, not 30 s after the restart
    net.run_network()
    net.advance_clock(70)
    assert handle.result() == ["timeout at 30 on True", "late reply 2 at 100"]


@initiating_flow
class Uncaught(FlowLogic[int]):
    async def call(self) -> int:
        session = self.initiate_flow("bob")
        return (await session.send_and_receive(int, 1, timeout=5)).unwrap_unchecked()


@initiated_by(Uncaught)
class NeverAnswers(FlowLogic[None]):
    def __init__(self, session: FlowSession) -> None:
        self.session = session

    async def call(self) -> None:
        await self.session.receive(int)
        await self.sleep(3600)


def test_an_uncaught_receive_timeout_fails_the_flow_and_is_not_retried(net: MockNetwork) -> None:
    alice, _ = net.create_node("alice"), net.create_node("bob")
    handle = alice.start_flow(Uncaught())
    with pytest.raises(ReceiveTimeoutException, match="nothing received from bob"):
        handle.result()
    admission = alice.admission_of(handle.flow_id)
    assert admission is not None
    assert admission.staff == "general"


@initiating_flow
class BadTimeout(FlowLogic[str]):
    async def call(self) -> str:
        try:
            await self.initiate_flow("bob").receive(int, timeout=-1)
        except FlowUsageError as exc:
            return str(exc)
        return "waited"


def test_a_negative_timeout_is_a_usage_error(net: MockNetwork) -> None:
    alice = net.create_node("alice")
    assert "timeout must be a number of seconds >= 0" in alice.start_flow(BadTimeout()).result()

"""TimedFlow: a receive that waits too long retries the flow from its checkpoint, re-sending its
messages under the same ids, until the counterparty answers."""

from __future__ import annotations

import pytest

from parley import FlowLogic, FlowSession, TimedFlow, initiated_by, initiating_flow
from parley.engine.hospital import Outcome
from parley.flows.marks import TIMED_MARK
from parley.testing import MockNetwork

DROPS = {"left": 0}


@initiating_flow
class AskNotary(TimedFlow[int]):
    timeout = 30

    def __init__(self, notary: str) -> None:
        self.notary = notary

    async def call(self) -> int:
        session = self.initiate_flow(self.notary)
        return (await session.send_and_receive(int, 41)).unwrap_unchecked()


@initiated_by(AskNotary)
class ForgetfulNotary(FlowLogic[None]):
    """Loses the first requests (as a notary that restarts would), then answers."""

    def __init__(self, session: FlowSession) -> None:
        self.session = session

    async def call(self) -> None:
        n = (await self.session.receive(int)).unwrap_unchecked()
        await self.session.send(n + 1)


def test_a_request_that_gets_no_reply_is_sent_again_until_it_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    net = MockNetwork()
    alice, _ = net.create_node("alice"), net.create_node("notary")
    dropped: list[str] = []
    publish = net._publish

    def lossy(envelopes):  # type: ignore[no-untyped-def]
        if DROPS["left"] > 0 and any(e.recipient == "notary" for e in envelopes):
            DROPS["left"] -= 1
            dropped.extend(e.id for e in envelopes)
            return
        publish(envelopes)

    monkeypatch.setitem(DROPS, "left", 2)
    monkeypatch.setattr(net, "_publish", lossy)
    start = net.now
    handle = alice.start_flow(AskNotary("notary"))
    assert handle.result() == 42
    assert dropped[0] == dropped[1], "the retried flow re-sent the same message under its id"
    retries = [r for r in alice.hospital.records if r.staff == "timeout"]
    assert [r.outcome for r in retries] == [Outcome.RETRY, Outcome.RETRY]
    # each retry after a full timeout of 30 s, counted from when the flow waited again
    assert [(r.time - start).total_seconds() for r in retries] == [30.0, 60.0]


def test_a_reply_in_time_needs_no_retry() -> None:
    net = MockNetwork()
    alice, _ = net.create_node("alice"), net.create_node("notary")
    assert alice.start_flow(AskNotary("notary")).result() == 42
    assert [r for r in alice.hospital.records if r.staff == "timeout"] == []


@initiating_flow
class AskWithOwnTimeout(FlowLogic[int]):
    """Not a TimedFlow: its ``timeout`` is its own setting, which makes no receive a timed one."""

    timeout = 5

    def __init__(self, peer: str) -> None:
        self.peer = peer

    async def call(self) -> int:
        session = self.initiate_flow(self.peer)
        return (await session.send_and_receive(int, 41)).unwrap_unchecked()


@initiated_by(AskWithOwnTimeout)
class SlowAnswer(FlowLogic[None]):
    def __init__(self, session: FlowSession) -> None:
        self.session = session

    async def call(self) -> None:
        n = (await self.session.receive(int)).unwrap_unchecked()
        await self.sleep(60)
        await self.session.send(n + 1)


def test_a_flow_that_is_not_timed_waits_whatever_its_own_timeout_attribute() -> None:
    net = MockNetwork()
    alice, _ = net.create_node("alice"), net.create_node("bob")
    assert alice.start_flow(AskWithOwnTimeout("bob")).result() == 42
    assert [r for r in alice.hospital.records if r.staff == "timeout"] == []


def test_the_timed_mark_is_a_timed_flows_timeout_as_it_is_now(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert getattr(AskNotary, TIMED_MARK) == 30
    monkeypatch.setattr(AskNotary, "timeout", 10)
    assert getattr(AskNotary, TIMED_MARK) == 10
    assert getattr(AskWithOwnTimeout, TIMED_MARK, None) is None

"""Flows that wait for a person: signals are stored on arrival, delivered exactly once,
type-checked, kept when they come early, and a wait can time out."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from parley import (
    FlowLogic,
    FlowUsageError,
    IdempotentFlow,
    SignalTimeoutException,
    UnexpectedPayloadError,
    serializable,
)
from parley.protocol.records import FlowStatus
from parley.testing import MockNetwork, MockNode, restart_at_every_step


@serializable
@dataclass(frozen=True)
class Approval:
    approved: bool
    by: str


class AwaitsApproval(FlowLogic[str]):
    def __init__(self, timeout: float | None = None) -> None:
        self.timeout = timeout

    async def call(self) -> str:
        try:
            answer = await self.wait_for_signal("approve", Approval, timeout=self.timeout)
        except SignalTimeoutException as exc:
            return f"timed out: {exc.name}"
        return f"{'approved' if answer.approved else 'refused'} by {answer.by}"


def test_a_waiting_flow_resumes_with_the_signal(alice: MockNode, net: MockNetwork) -> None:
    handle = alice.start_flow(AwaitsApproval())
    net.run_network()
    assert not handle.done
    assert [f.status for f in alice.flows()] == [FlowStatus.RUNNABLE]
    alice.signal(handle.flow_id, "approve", Approval(True, "carol"))
    assert handle.result() == "approved by carol"


class TwoSteps(FlowLogic[list[int]]):
    async def call(self) -> list[int]:
        await self.sleep(10)  # the signals arrive before the flow waits for them
        first = await self.wait_for_signal("n", int)
        second = await self.wait_for_signal("n", int)
        return [first, second]


def test_signals_sent_before_the_wait_are_kept_and_taken_oldest_first(
    alice: MockNode, net: MockNetwork
) -> None:
    net.auto_advance = False
    handle = alice.start_flow(TwoSteps())
    net.run_network()
    alice.signal(handle.flow_id, "n", 1)
    alice.signal(handle.flow_id, "n", 2)
    net.advance_clock(10)
    assert handle.result() == [1, 2]


def test_a_signal_of_the_wrong_type_is_refused_and_the_flow_keeps_waiting(
    alice: MockNode, net: MockNetwork
) -> None:
    handle = alice.start_flow(AwaitsApproval())
    net.run_network()
    with pytest.raises(UnexpectedPayloadError, match="Approval"):
        alice.signal(handle.flow_id, "approve", "yes please")
    net.run_network()
    assert not handle.done
    alice.signal(handle.flow_id, "approve", Approval(False, "dave"))
    assert handle.result() == "refused by dave"


def test_an_early_signal_of_the_wrong_type_fails_the_wait(
    alice: MockNode, net: MockNetwork
) -> None:
    net.auto_advance = False
    handle = alice.start_flow(TwoSteps())
    net.run_network()
    alice.signal(handle.flow_id, "n", "one")  # nobody waits yet: stored as it is
    net.advance_clock(10)
    with pytest.raises(UnexpectedPayloadError, match="int"):
        handle.result()


def test_a_wait_that_times_out_raises_in_the_flow(alice: MockNode, net: MockNetwork) -> None:
    handle = alice.start_flow(AwaitsApproval(timeout=60))
    assert handle.result() == "timed out: approve"


class Uncaught(FlowLogic[int]):
    async def call(self) -> int:
        return await self.wait_for_signal("go", int, timeout=5)


def test_an_uncaught_signal_timeout_fails_the_flow_without_retries(alice: MockNode) -> None:
    handle = alice.start_flow(Uncaught())
    with pytest.raises(SignalTimeoutException, match="no signal 'go'"):
        handle.result()
    admission = alice.admission_of(handle.flow_id)
    assert admission is not None
    assert admission.staff == "general", "a signal timeout must not be retried forever"


def test_a_signal_to_a_flow_that_does_not_run_is_refused(alice: MockNode) -> None:
    with pytest.raises(FlowUsageError, match="no running flow"):
        alice.signal("f" * 32, "approve", Approval(True, "x"))


class InsideIdempotent(IdempotentFlow[str]):
    async def call(self) -> str:
        try:
            await self.wait_for_signal("x", int)
        except FlowUsageError as exc:
            return str(exc)
        return "waited"


class Outer(FlowLogic[str]):
    async def call(self) -> str:
        return await self.sub_flow(InsideIdempotent())


@pytest.mark.parametrize(
    ("name", "timeout", "message"),
    [("", None, "1-128"), ("x" * 129, None, "1-128"), ("ok", -1, "timeout")],
)
def test_bad_names_and_timeouts_are_usage_errors(
    alice: MockNode, name: str, timeout: float | None, message: str
) -> None:
    class Bad(FlowLogic[str]):
        async def call(self) -> str:
            try:
                await self.wait_for_signal(name, int, timeout=timeout)
            except FlowUsageError as exc:
                return str(exc)
            return "waited"

    assert message in alice.start_flow(Bad()).result()


def test_waiting_for_a_signal_inside_an_idempotent_flow_is_refused(alice: MockNode) -> None:
    assert "IdempotentFlow" in alice.start_flow(Outer()).result()


def test_a_passivated_flow_is_brought_back_by_its_signal(alice: MockNode, net: MockNetwork) -> None:
    handle = alice.start_flow(AwaitsApproval())
    net.run_network()
    alice.passivate(handle.flow_id)
    net.run_network()
    assert alice.live_flows == []
    alice.signal(handle.flow_id, "approve", Approval(True, "erin"))
    assert handle.result() == "approved by erin"


MIGRATIONS = ["CREATE TABLE approvals (flow TEXT NOT NULL, who TEXT NOT NULL)"]


class RecordsApproval(FlowLogic[str]):
    async def call(self) -> str:
        answer = await self.wait_for_signal("approve", Approval)
        self.services.db.execute("INSERT INTO approvals VALUES (?, ?)", (self.flow_id, answer.by))
        await self.sleep(1)  # the next checkpoint: it records the write and consumes the signal
        return answer.by


def test_a_signal_is_consumed_exactly_once_whenever_the_node_restarts(tmp_path: object) -> None:
    def scenario(net: MockNetwork):  # type: ignore[no-untyped-def]
        node = net.create_node("alice", apps=[__name__])
        handle = node.start_flow(RecordsApproval())
        net.run_network(max_steps=3)
        node.signal(handle.flow_id, "approve", Approval(True, "frank"))

        def finish() -> tuple[str, list[tuple[object, ...]], object]:
            result = handle.result()
            current = net.nodes["alice"]
            rows = current.store.query("SELECT who FROM approvals")
            left = current.store.query("SELECT count(*) FROM flow_signal")
            return result, rows, left[0][0]

        return finish

    runs = list(restart_at_every_step(scenario, restart="alice"))
    assert len(runs) > 3
    for run in runs:
        assert run.result == ("frank", [("frank",)], 0), run

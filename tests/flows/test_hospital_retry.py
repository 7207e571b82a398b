"""An operator retries a flow kept for observation, without a restart."""

from __future__ import annotations

import pytest

from parley import FlowLogic, HospitalizeFlowException
from parley.protocol.records import FlowStatus
from parley.testing import MockNetwork, MockNode

BROKEN = {"now": True}


class NeedsAFix(FlowLogic[str]):
    async def call(self) -> str:
        await self.sleep(1)
        if BROKEN["now"]:
            raise HospitalizeFlowException("the rate table is missing")
        return "fixed"


def test_a_flow_kept_for_observation_is_retried_by_the_operator(
    alice: MockNode, net: MockNetwork, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(BROKEN, "now", True)
    handle = alice.start_flow(NeedsAFix())
    net.run_network()
    assert [f.status for f in alice.flows()] == [FlowStatus.HOSPITALIZED]
    assert alice.hospital_retry(handle.flow_id) is True
    net.run_network()
    assert [f.status for f in alice.flows()] == [FlowStatus.HOSPITALIZED], "still broken"
    history = alice.hospital_show(handle.flow_id)
    assert [(a.staff, a.outcome) for a in history] == [("sedation", "observe")] * 2
    assert history[0].causes == (
        "parley.protocol.errors.HospitalizeFlowException: the rate table is missing",
    )
    monkeypatch.setitem(BROKEN, "now", False)
    assert alice.hospital_retry(handle.flow_id) is True
    assert handle.result() == "fixed"
    assert alice.hospital_retry(handle.flow_id) is False  # finished: nothing to retry
    assert alice.hospital_show(handle.flow_id) == []  # the records went with the flow


def test_only_a_flow_kept_for_observation_can_be_retried(alice: MockNode, net: MockNetwork) -> None:
    net.auto_advance = False
    handle = alice.start_flow(NeedsAFix())
    net.run_network()
    assert alice.hospital_retry(handle.flow_id) is False  # it is sleeping, not in the hospital
    assert alice.hospital_retry("0" * 32) is False

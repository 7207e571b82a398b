"""Version markers: a fix deployed while flows wait applies to new flows; old ones keep
their path."""

from __future__ import annotations

import pytest

from parley import FlowLogic, FlowUsageError
from parley.protocol.records import FlowStatus
from parley.testing import MockNetwork

RULE = {"min": 1, "max": 1}


class Fee(FlowLogic[str]):
    async def call(self) -> str:
        version = self.version("fee-rule", min=RULE["min"], max=RULE["max"])
        await self.sleep(10)
        return f"fee v{version}"


def test_a_flow_keeps_the_version_it_recorded_and_new_flows_take_the_new_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    net = MockNetwork(auto_advance=False)
    alice = net.create_node("alice")
    old = alice.start_flow(Fee())
    net.run_network()
    monkeypatch.setitem(RULE, "max", 2)  # the fix is deployed while the old flow sleeps
    alice = net.restart_node(alice)
    net.run_network()
    new = alice.start_flow(Fee())
    net.run_network()
    net.advance_clock(10)
    assert old.result() == "fee v1"
    assert new.result() == "fee v2"


def test_a_recorded_version_the_code_no_longer_supports_is_kept_for_observation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    net = MockNetwork(auto_advance=False)
    alice = net.create_node("alice")
    handle = alice.start_flow(Fee())
    net.run_network()
    monkeypatch.setitem(RULE, "min", 2)
    monkeypatch.setitem(RULE, "max", 3)
    alice = net.restart_node(alice)
    net.run_network()
    assert [f.status for f in alice.flows()] == [FlowStatus.HOSPITALIZED]
    admission = alice.admission_of(handle.flow_id)
    assert admission is not None
    assert admission.error_type.endswith("NonDeterministicFlowError")
    assert "recorded version 1 at marker 'fee-rule'" in admission.message
    assert "supports versions 2 to 3" in admission.message


@pytest.mark.parametrize(
    ("marker", "low", "high"), [("", 1, 1), ("x" * 129, 1, 1), ("m", 2, 1), ("m", -1, 1)]
)
def test_bad_markers_and_ranges_are_usage_errors(marker: str, low: int, high: int) -> None:
    class Bad(FlowLogic[str]):
        async def call(self) -> str:
            try:
                self.version(marker, min=low, max=high)
            except FlowUsageError as exc:
                return str(exc)
            return "accepted"

    assert "version" in MockNetwork().create_node("alice").start_flow(Bad()).result()

"""Client ids: a repeated start with the same flow is the same flow; with another, it is refused."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from parley import FlowLogic
from parley.protocol.errors import ClientIdInUseError, FlowUsageError
from parley.testing import MockNetwork, MockNode
from tests.golden import flows

RUNS: list[str] = []


class CountedFlow(FlowLogic[str]):
    def __init__(self, tag: str, fail: bool = False) -> None:
        self.tag, self.fail = tag, fail

    async def call(self) -> str:
        RUNS.append(self.tag)
        await self.sleep(1)
        if self.fail:
            raise ValueError(f"{self.tag} failed")
        return self.tag


class OtherFlow(FlowLogic[str]):
    def __init__(self, tag: str) -> None:
        self.tag = tag

    async def call(self) -> str:
        return self.tag


def test_a_repeated_client_id_returns_the_same_flow_and_result_even_after_restart(
    net: MockNetwork, alice: MockNode
) -> None:
    RUNS.clear()
    first = alice.start_flow(CountedFlow("one"), client_id="order-17")
    second = alice.start_flow(CountedFlow("one"), client_id="order-17")
    assert second.flow_id == first.flow_id
    assert first.result() == "one"
    assert second.result() == "one"
    net.restart_node(alice)
    third = alice.start_flow(CountedFlow("one"), client_id="order-17")
    assert third.flow_id == first.flow_id
    assert third.result() == "one"
    assert RUNS == ["one"]


@pytest.mark.parametrize("stage", ["running", "passivated", "restored", "finished"])
def test_a_client_id_reused_with_other_arguments_is_refused_naming_the_flow(
    net: MockNetwork, alice: MockNode, stage: str
) -> None:
    net.auto_advance = stage == "finished"
    first = alice.start_flow(CountedFlow("one"), client_id="order-18")
    net.run_network()
    if stage == "passivated":
        alice.passivate(first.flow_id)
        net.run_network()
    elif stage == "restored":
        net.restart_node(alice)
    elif stage == "finished":
        assert first.result() == "one"
    with pytest.raises(ClientIdInUseError) as refused:
        alice.start_flow(CountedFlow("two"), client_id="order-18")
    assert refused.value.flow_id == first.flow_id
    assert refused.value.client_id == "order-18"
    assert "other arguments" in str(refused.value)
    assert first.flow_id in str(refused.value)
    assert alice.start_flow(CountedFlow("one"), client_id="order-18").flow_id == first.flow_id


def test_a_client_id_reused_with_another_flow_class_is_refused(alice: MockNode) -> None:
    first = alice.start_flow(CountedFlow("one"), client_id="order-19")
    with pytest.raises(ClientIdInUseError, match=r"class tests\.flows\.test_client_ids:Counted"):
        alice.start_flow(OtherFlow("one"), client_id="order-19")
    assert isinstance(ClientIdInUseError("c", "f", "k", "x"), FlowUsageError)
    assert first.result() == "one"


def test_a_client_id_flow_that_failed_reports_its_error_on_reattach(
    net: MockNetwork, alice: MockNode
) -> None:
    with pytest.raises(ValueError, match="boom failed"):
        alice.start_flow(CountedFlow("boom", fail=True), client_id="c-2").result()
    net.restart_node(alice)
    with pytest.raises(ValueError, match="boom failed"):
        alice.start_flow(CountedFlow("boom", fail=True), client_id="c-2").result()


def test_a_client_id_longer_than_512_characters_is_refused(alice: MockNode) -> None:
    with pytest.raises(FlowUsageError, match="512"):
        alice.start_flow(CountedFlow("x"), client_id="c" * 513)


GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "data" / "db"


def test_a_result_stored_before_arguments_were_kept_is_matched_by_its_class(
    tmp_path: Path,
) -> None:
    shutil.copy(GOLDEN / "alice.sqlite", tmp_path / "alice.sqlite")
    node = MockNetwork(data_dir=tmp_path, auto_advance=False).create_node("alice")
    assert node.start_flow(flows.Quick(), client_id="quick").result() == "quick"
    with pytest.raises(ClientIdInUseError, match="Quick"):
        node.start_flow(flows.Patient(), client_id="quick")

"""MockNetwork nodes load apps as a node does, and a parked flow's result says why it is parked."""

from __future__ import annotations

import pytest

from parley import FlowLogic, HospitalizeFlowException, initiating_flow
from parley.engine.apps import AppNotFoundError
from parley.engine.hospital import Outcome
from parley.testing import FlowHospitalized, FlowStillRunning, MockNetwork
from tests.testing import ledger_app


def test_a_node_created_with_apps_has_their_tables() -> None:
    net = MockNetwork()
    node = net.create_node("alice", apps=["tests.testing.ledger_app"])
    assert node.start_flow(ledger_app.Record("alice", 5)).result() == 1
    assert node.store.query("SELECT who, amount, note FROM ledger") == [("alice", 5, "mock")]
    assert node.store.query("SELECT app, idx FROM app_migrations ORDER BY idx") == [
        ("tests.testing.ledger_app", 0),
        ("tests.testing.ledger_app", 1),
    ]


def test_a_flow_writing_a_table_no_app_declared_is_parked_and_its_result_says_why() -> None:
    net = MockNetwork()
    node = net.create_node("alice")  # no apps: the ledger table does not exist
    handle = node.start_flow(ledger_app.Record("alice", 5))
    with pytest.raises(FlowHospitalized, match="no such table: ledger") as parked:
        handle.result()
    assert parked.value.admission.outcome is Outcome.OBSERVE
    assert "kept in the hospital for observation" in str(parked.value)
    assert isinstance(parked.value, FlowStillRunning)


class AsksForHelp(FlowLogic[None]):
    async def call(self) -> None:
        raise HospitalizeFlowException("a person must look at this")


def test_a_flow_kept_for_observation_reports_the_hospitals_diagnosis() -> None:
    node = MockNetwork().create_node("alice")
    with pytest.raises(FlowHospitalized) as parked:
        node.start_flow(AsksForHelp()).result()
    admission = parked.value.admission
    assert (admission.staff, admission.outcome) == ("sedation", Outcome.OBSERVE)
    assert "a person must look at this" in str(parked.value)
    assert "sedation staff" in str(parked.value)


def test_an_app_that_cant_be_imported_says_how_to_make_it_importable() -> None:
    with pytest.raises(AppNotFoundError, match="--app-path"):
        MockNetwork().create_node("alice", apps=["no_such_app.flows"])


@initiating_flow
class Greets(FlowLogic[str]):
    def __init__(self, peer: str) -> None:
        self.peer = peer

    async def call(self) -> str:
        return (await self.initiate_flow(self.peer).send_and_receive(str, "hi")).unwrap(str)


def test_a_flow_waiting_on_a_misspelled_party_says_whom_it_waits_for() -> None:
    net = MockNetwork(auto_advance=False)
    alice, _ = net.create_node("alice"), net.create_node("bob")
    handle = alice.start_flow(Greets("bobb"))
    net.run_network()
    (summary,) = alice.flows()
    assert summary.flow_id == handle.flow_id
    assert summary.waiting_for == (
        f"reply from bobb (session {handle.flow_id}.0, no answer to its init yet)"
    )


class Naps(FlowLogic[None]):
    async def call(self) -> None:
        await self.sleep(60)


def test_a_sleeping_flow_says_until_when() -> None:
    net = MockNetwork(auto_advance=False)
    node = net.create_node("alice")
    node.start_flow(Naps())
    net.run_network()
    (summary,) = node.flows()
    assert summary.waiting_for == "sleep until 2026-01-01T00:01:00+00:00"

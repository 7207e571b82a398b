"""Faults injected into a mock node's commits and publishes: what the hospital does with each."""

from __future__ import annotations

import sqlite3

import pytest

from parley import FlowLogic
from parley.apps.pingpong import Ping
from parley.protocol.records import FlowStatus
from parley.testing import MockNetwork, MockNode
from parley.transport.errors import MessagingError

MIGRATIONS = ["CREATE TABLE ledger (entry TEXT NOT NULL)"]


class Writes(FlowLogic[str]):
    async def call(self) -> str:
        self.services.db.execute("INSERT INTO ledger VALUES ('paid')")
        await self.sleep(1)
        return "done"


@pytest.fixture
def writer(net: MockNetwork) -> MockNode:
    return net.create_node("writer", apps=[__name__])


def test_a_full_disk_parks_the_flow_and_loses_nothing_until_space_is_freed(
    writer: MockNode, net: MockNetwork
) -> None:
    writer.faults.fail("commit", sqlite3.OperationalError("database or disk is full"), times=2)
    handle = writer.start_flow(Writes())
    net.run_network()
    (admission,) = writer.hospital_show(handle.flow_id)
    assert (admission.staff, admission.outcome) == ("storage", "observe")
    assert not handle.done
    assert writer.store.query("SELECT entry FROM ledger") == []
    # the space is back (the second planned fault still fails the first retry: admitted again)
    assert writer.hospital_retry(handle.flow_id)
    net.run_network()
    assert writer.hospital_retry(handle.flow_id)
    assert handle.result() == "done"
    assert writer.store.query("SELECT entry FROM ledger") == [("paid",)]


def test_a_publish_that_fails_is_retried_with_backoff_and_the_flow_completes(
    net: MockNetwork,
) -> None:
    alice, bob = net.create_node("alice"), net.create_node("bob")
    bob.faults.fail("publish", MessagingError("not acknowledged by JetStream"), times=4)
    handle = alice.start_flow(Ping("bob", 1))
    assert handle.result() == 2
    retries = [r for r in bob.hospital.records if r.staff == "messaging"]
    assert [r.outcome for r in retries] == ["retry", "retry"]
    assert retries[0].retry_in == 0.0
    assert retries[1].retry_in >= 10.0  # the second retry waits (virtual time)


def test_a_publish_that_keeps_failing_is_kept_for_observation(net: MockNetwork) -> None:
    alice, bob = net.create_node("alice"), net.create_node("bob")
    bob.faults.fail("publish", MessagingError("NATS is down"), times=100)
    alice.start_flow(Ping("bob", 1))
    net.run_network()
    outcomes = [r.outcome for r in bob.hospital.records if r.staff == "messaging"]
    assert outcomes == ["retry"] * 3 + ["observe"]
    assert [f.status for f in bob.flows()] == [FlowStatus.HOSPITALIZED]


def test_an_unknown_kind_of_fault_is_refused_naming_the_kinds(writer: MockNode) -> None:
    with pytest.raises(ValueError, match="'commit'") as raised:
        writer.faults.fail("ack", OSError("no"))  # the kind is called "acknowledge"
    assert "acknowledge" in str(raised.value)

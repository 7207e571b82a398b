"""The runtime keeps one record per flow, and forgets it once nothing about the flow is left."""

from __future__ import annotations

from parley import FlowLogic
from parley.apps.pingpong import Ping, PingAll
from parley.testing import MockNetwork, MockNode


class Naps(FlowLogic[str]):
    async def call(self) -> str:
        await self.sleep(60)
        return "rested"


def _network() -> tuple[MockNetwork, MockNode, MockNode, MockNode]:
    net = MockNetwork()
    return net, net.create_node("alice"), net.create_node("bob"), net.create_node("carol")


def test_finished_flows_leave_no_record_behind_on_any_node() -> None:
    net, alice, bob, carol = _network()
    handles = [alice.start_flow(Ping("bob", n)) for n in range(5)]
    everyone = alice.start_flow(PingAll(["bob", "carol"], 7), client_id="all")
    net.run_network()
    assert [h.result() for h in handles] == [n + 1 for n in range(5)]
    assert everyone.done
    for node in (alice, bob, carol):
        assert len(node.runtime.flows) == 0, node.runtime.flows
        assert node.runtime.live_count == 0


def test_a_passivated_flow_keeps_only_its_handle_until_it_finishes() -> None:
    net, alice, _, _ = _network()
    net.auto_advance = False
    handle = alice.start_flow(Naps())
    net.run_network()
    alice.passivate(handle.flow_id)
    net.run_network()
    record = alice.runtime.flows.get(handle.flow_id)
    assert record is not None
    assert (record.driver, record.handle is not None) == (None, True)
    assert (alice.runtime.live_count, alice.live_flows) == (0, [])
    net.advance_clock(60)
    net.run_network()
    assert handle.result() == "rested"
    assert len(alice.runtime.flows) == 0


def test_a_waiting_flow_without_a_handle_has_no_record_once_passivated() -> None:
    net, alice, bob, _ = _network()
    net.auto_advance = False
    alice.start_flow(Ping("bob", 1))
    net.run_network(max_steps=3)  # the responder exists on bob and waits
    responders = bob.live_flows
    for flow_id in responders:
        bob.passivate(flow_id)
    net.run_network()
    assert bob.runtime.live_count == 0
    assert all(bob.runtime.flows.get(f) is None for f in responders)


def test_restarting_a_node_counts_its_restored_flows_once() -> None:
    net, alice, _, _ = _network()
    net.auto_advance = False
    handles = [alice.start_flow(Naps(), client_id=f"nap-{i}") for i in range(3)]
    net.run_network()
    net.restart_node(alice)
    assert alice.runtime.live_count == 3
    assert alice.runtime.restore_flows([h.flow_id for h in handles]) == 0, "already live"
    net.advance_clock(60)
    net.run_network()
    assert len(alice.runtime.flows) == 0

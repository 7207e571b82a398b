"""Killing, signalling, the hospital, watching the flow list, and stopping the service, over RPC."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from parley.protocol.errors import UnexpectedFlowEndException
from parley.rpc import FlowNotFound, FlowRow, NodeUnavailable, Refused, RpcClient
from tests.integration.nodes import wait_for
from tests.rpc.nodes import Nodes

pytestmark = pytest.mark.integration

WAIT = 20.0


def _row(rpc: RpcClient, flow_id: str) -> FlowRow | None:
    return next((r for r in rpc.list_flows() if r.flow_id == flow_id), None)


def _waiting_on(rpc: RpcClient, flow_class: str, wait: str) -> str | None:
    rows = rpc.list_flows(flow_class=flow_class)
    return next((r.flow_id for r in rows if r.waiting_for == wait), None)


def test_killing_a_waiting_flow_ends_it_and_its_counterparty_gets_unexpected_flow_end(
    nodes: Nodes,
) -> None:
    with nodes.client("bob") as bob, nodes.client("alice") as alice:
        asker = bob.start_flow("tests.integration.apps:AwaitReply", ["alice"])
        victim = wait_for(
            lambda: _waiting_on(alice, "Silent", "signal never"), WAIT, "alice's responder"
        )
        alice.kill_flow(victim)
        outcome = asker.outcome(timeout=WAIT)
        assert outcome.status == "failed"
        assert isinstance(outcome.error(), UnexpectedFlowEndException)
        with pytest.raises(UnexpectedFlowEndException):
            outcome.value()
        assert _row(alice, victim) is None
        with pytest.raises(FlowNotFound):
            alice.kill_flow(victim)


def test_a_killed_flow_with_a_client_id_reports_killed(nodes: Nodes) -> None:
    with nodes.client() as rpc:
        handle = rpc.start_flow("tests.integration.apps:Waits", [], client_id="long-sleep")
        handle.kill()
        assert handle.outcome(timeout=WAIT).status == "killed"
        row = _row(rpc, handle.flow_id)
        assert row is not None
        assert row.status == "KILLED"


def test_a_signal_of_the_wrong_type_is_refused_and_the_flow_keeps_waiting(nodes: Nodes) -> None:
    with nodes.client() as rpc:
        handle = rpc.start_flow("tests.integration.apps:Approves", [])
        wait_for(lambda: _waiting_on(rpc, "Approves", "signal approve"), WAIT, "the approval")
        with pytest.raises(Refused) as refused:
            handle.signal("approve", 42)
        assert "the flow keeps waiting" in str(refused.value)
        row = _row(rpc, handle.flow_id)
        assert row is not None
        assert (row.status, row.waiting_for) == ("RUNNABLE", "signal approve")
        handle.signal("approve", "dave")
        assert handle.result(timeout=WAIT) == "dave"


def test_a_signal_to_no_running_flow_is_not_found(nodes: Nodes) -> None:
    with nodes.client() as rpc, pytest.raises(FlowNotFound):
        rpc.signal("0123456789abcdef0123456789abcdef", "approve", "x")


def test_the_hospital_over_rpc_lists_shows_retries_and_kills(nodes: Nodes) -> None:
    with nodes.client() as rpc:
        handle = rpc.start_flow("tests.integration.apps:Waits", [0, True])

        def kept() -> list[dict[str, Any]] | None:
            rows = [r for r in rpc.hospital_list() if r["flow_id"] == handle.flow_id]
            return rows if rows and rows[0]["admission"] else None

        entry = wait_for(kept, WAIT, "the flow in the hospital")[0]
        assert entry["status"] == "HOSPITALIZED"
        assert entry["admission"]["outcome"] == "observe"
        shown = rpc.hospital_show(handle.flow_id)
        assert "please look at this" in shown["admissions"][0]["traceback"]
        rpc.hospital_retry(handle.flow_id)
        wait_for(
            lambda: len(rpc.hospital_show(handle.flow_id)["admissions"]) >= 2,
            WAIT,
            "a second admission",
        )
        rpc.hospital_kill(handle.flow_id)
        assert handle.outcome(timeout=WAIT).status == "killed"
        assert [r for r in rpc.hospital_list() if r["flow_id"] == handle.flow_id] == []
        with pytest.raises(FlowNotFound):
            rpc.hospital_retry(handle.flow_id)


def test_hospital_kill_refuses_a_flow_that_is_not_in_the_hospital(nodes: Nodes) -> None:
    with nodes.client() as rpc:
        handle = rpc.start_flow("tests.integration.apps:Approves", [])
        with pytest.raises(FlowNotFound, match="keeps no flow"):
            rpc.hospital_kill(handle.flow_id)
        row = _row(rpc, handle.flow_id)
        assert row is not None
        assert row.status == "RUNNABLE"


def test_watching_the_flow_list_shows_a_flow_arrive_wait_and_finish(nodes: Nodes) -> None:
    with nodes.client() as rpc, nodes.client() as other:
        views = rpc.watch_flows(flow_class="Approves")
        assert next(views) == []
        handle = other.start_flow("tests.integration.apps:Approves", [], client_id="watched")
        states = []
        for rows in views:
            states.append([(r.status, r.waiting_for) for r in rows if r.flow_id == handle.flow_id])
            if states[-1] == [("RUNNABLE", "signal approve")]:
                handle.signal("approve", "erin")
            if states[-1] and states[-1][0][0] == "COMPLETED":
                break
        views.close()
    assert ("RUNNABLE", "signal approve") in [s[0] for s in states if s]
    assert states[-1] == [("COMPLETED", None)]


def test_requests_waiting_when_the_node_stops_are_answered_unavailable(nodes: Nodes) -> None:
    with nodes.client() as rpc:
        handle = rpc.start_flow("tests.integration.apps:Approves", [], client_id="stopping")
        errors: list[BaseException] = []

        def wait_for_result() -> None:
            try:
                rpc.call("result", {"flow_id": handle.flow_id, "timeout": 30})
            except BaseException as exc:
                errors.append(exc)

        service = nodes["alice"].rpc
        assert service is not None
        waiter = threading.Thread(target=wait_for_result)
        waiter.start()
        wait_for(lambda: service.pending == 1, WAIT, "the request to wait on the node")
        nodes.running.pop("alice").stop()
        waiter.join(WAIT)
    assert len(errors) == 1
    assert isinstance(errors[0], NodeUnavailable)
    assert "node alice is stopping" in str(errors[0])


def test_hospital_admissions_are_still_shown_after_a_restart(nodes: Nodes) -> None:
    with nodes.client() as rpc:
        handle = rpc.start_flow("tests.integration.apps:Waits", [0, True], client_id="kept")
        wait_for(
            lambda: rpc.hospital_show(handle.flow_id)["admissions"], WAIT, "a stored admission"
        )
    nodes.restart("alice")
    with nodes.client() as rpc:
        first = rpc.hospital_show(handle.flow_id)["admissions"][0]
        assert (first["message"], first["outcome"]) == ("please look at this", "observe")

"""Starting flows over RPC, their results, client ids across restarts, and progress feeds."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import pytest

from parley.apps.pingpong import Ping
from parley.rpc import AsyncRpcClient, NodeUnreachable, ProgressUpdate, RpcClient
from tests.integration.nodes import rows, wait_for
from tests.rpc.nodes import PASSWORD, Nodes

pytestmark = pytest.mark.integration

STEPS = "tests.integration.apps:Steps"
WAIT = 20.0


def test_a_flow_started_over_rpc_gives_its_result(nodes: Nodes) -> None:
    with nodes.client() as rpc:
        handle = rpc.start_flow("parley.apps.pingpong:Ping", ["bob", 41])
        assert handle.result(timeout=WAIT) == 42


def test_a_flow_instance_is_started_with_its_own_arguments(nodes: Nodes) -> None:
    with nodes.client() as rpc:
        assert rpc.start_flow(Ping("bob", 7, rounds=2)).result(timeout=WAIT) == 9


def test_text_arguments_are_converted_by_the_constructors_annotations(nodes: Nodes) -> None:
    order = '{"item": "tea", "quantity": 3, "price": "2.50"}'
    with nodes.client() as rpc:
        handle = rpc.start_flow(
            "tests.integration.apps:Books", [order, "2025-03-01T10:00:00", "yes"], text=True
        )
        assert handle.result(timeout=WAIT) == "tea x3 = 7.50 on 2025-03-01 express"


def test_the_same_client_id_twice_gives_one_flow_and_one_result(nodes: Nodes) -> None:
    flow = "tests.integration.apps:Rounds"
    with nodes.client() as rpc:
        first = rpc.start_flow(flow, ["bob", 2], client_id="order-17")
        assert first.result(timeout=WAIT) == 2
        second = rpc.start_flow(flow, ["bob", 2], client_id="order-17")
        assert second.flow_id == first.flow_id
        assert second.result(timeout=WAIT) == 2
        listed = [row for row in rpc.list_flows() if row.client_id == "order-17"]
        assert [(row.flow_id, row.status) for row in listed] == [(first.flow_id, "COMPLETED")]
    effects = rows(nodes["alice"].db_path, "SELECT round FROM effects WHERE side='initiator'")
    assert sorted(effects) == [(0,), (1,)]  # the rounds ran once


def test_the_same_client_id_finds_its_flow_and_result_after_a_node_restart(nodes: Nodes) -> None:
    with nodes.client() as rpc:
        first = rpc.start_flow("tests.integration.apps:Approves", [], client_id="approval-1")
        wait_for(lambda: _waiting(rpc, first.flow_id), WAIT, "the flow to wait for its signal")
        nodes.restart("alice")
        again = rpc.start_flow("tests.integration.apps:Approves", [], client_id="approval-1")
        assert again.flow_id == first.flow_id
        again.signal("approve", "carol")
        assert first.result(timeout=WAIT) == "carol"
        nodes.restart("alice")
        assert rpc.reattach("approval-1").result(timeout=WAIT) == "carol"
        third = rpc.start_flow("tests.integration.apps:Approves", [], client_id="approval-1")
        assert (third.flow_id, third.result(timeout=WAIT)) == (first.flow_id, "carol")
    approvals = rows(nodes["alice"].db_path, "SELECT round FROM effects WHERE side='approver'")
    assert approvals == [(0,)]


def _waiting(rpc: RpcClient, flow_id: str) -> bool:
    return any(
        row.flow_id == flow_id and (row.waiting_for or "").startswith("signal")
        for row in rpc.list_flows()
    )


def test_progress_shows_each_step_in_order_with_the_sub_flows_steps_under_its_step(
    nodes: Nodes,
) -> None:
    with nodes.client() as rpc:
        handle = rpc.start_flow(STEPS, ["bob", 1, True])
        updates = []
        for update in handle.progress():
            updates.append(update)
            if update.current == "Awaiting approval" and not update.outcome:
                handle.signal("approve", True)  # once it waits: the rest follows
        assert updates[0].kind == "snapshot"
        assert updates[-1].kind == "result"
        assert updates[-1].outcome is not None
        assert updates[-1].outcome.value() == 2
        seen = _distinct(u.current for u in updates)
        expected = [
            "Preparing",
            "Consulting the peer",
            "Consulting the peer / Asking the peer",
            "Consulting the peer / Reading the answer",
            "Consulting the peer / Done",
            "Awaiting approval",
            "Finishing",
            "Done",
        ]
        assert _is_subsequence(seen, expected), seen
        assert seen[-3:] == ["Awaiting approval", "Finishing", "Done"]
        assert [u.seq for u in updates[1:]] == list(range(updates[0].seq + 1, updates[-1].seq + 1))


def test_a_late_subscriber_gets_the_current_tree_first(nodes: Nodes) -> None:
    with nodes.client() as rpc:
        handle = rpc.start_flow(STEPS, ["bob", 1, True])
        wait_for(lambda: _waiting(rpc, handle.flow_id), WAIT, "the flow to wait for approval")
        with nodes.client(user="reader") as late:
            feed = late.track(handle.flow_id)
            first = next(feed)
            assert (first.kind, first.current) == ("snapshot", "Awaiting approval")
            assert [(r.level, r.label) for r in first.tree[:5]] == [
                (0, "Preparing"),
                (0, "Consulting the peer"),
                (1, "Asking the peer"),
                (1, "Reading the answer"),
                (1, "Done"),
            ]
            handle.signal("approve", True)
            rest = list(feed)
        assert [u.kind for u in rest][-1] == "result"
        assert rest[-1].outcome is not None
        assert rest[-1].outcome.value() == 2


def test_tracking_a_finished_flow_gives_its_outcome_at_once(nodes: Nodes) -> None:
    with nodes.client() as rpc:
        handle = rpc.start_flow(STEPS, ["bob", 5], client_id="steps-done")
        assert handle.result(timeout=WAIT) == 6
        updates = list(rpc.track(handle.flow_id))
    assert [u.kind for u in updates] == ["snapshot"]
    assert updates[0].outcome is not None
    assert updates[0].outcome.value() == 6


def test_an_asyncio_client_starts_flows_and_follows_them(nodes: Nodes) -> None:
    async def main() -> tuple[list[int], list[ProgressUpdate]]:
        async with AsyncRpcClient(nodes.url, "alice", user="ops", password=PASSWORD) as rpc:
            handles = [await rpc.start_flow("Ping", ["bob", n]) for n in range(5)]
            results = await asyncio.gather(*(h.result(timeout=WAIT) for h in handles))
            steps = await rpc.start_flow(STEPS, ["bob", 1])
            updates = [u async for u in steps.progress()]
            return list(results), updates

    results, updates = asyncio.run(main())
    assert results == [1, 2, 3, 4, 5]
    assert updates[-1].outcome is not None
    assert updates[-1].outcome.value() == 2


def test_a_client_of_a_node_that_does_not_run_is_told_which_node_and_url(nodes: Nodes) -> None:
    with nodes.client(node="carol") as rpc, pytest.raises(NodeUnreachable) as refused:
        rpc.list_flows()
    assert "node carol is not reachable" in str(refused.value)
    assert nodes.url in str(refused.value)


def _distinct(values: Iterable[str | None]) -> list[str]:
    seen: list[str] = []
    for value in values:
        if value is not None and (not seen or seen[-1] != value):
            seen.append(value)
    return seen


def _is_subsequence(seen: list[str], expected: list[str]) -> bool:
    position = 0
    for value in seen:
        try:
            position = expected.index(value, position) + 1
        except ValueError:
            return False
    return True


def test_progress_goes_on_after_the_flow_was_passivated(nodes: Nodes) -> None:
    carol = nodes.start("carol", passivate_after=0.2)
    with nodes.client("carol") as rpc:
        handle = rpc.start_flow(STEPS, ["bob", 1, True])
        wait_for(lambda: carol.stats()["passivations"] >= 1, WAIT, "the flow to be passivated")
        feed = handle.progress()
        assert next(feed).current == "Awaiting approval"
        handle.signal("approve", True)
        rest = list(feed)
    assert rest[-1].outcome is not None
    assert rest[-1].outcome.value() == 2
    assert rest[-1].current == "Done"

"""restart_at_every_step: a scenario run once per pump step, with a node restarted there."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from parley import FlowLogic
from parley.apps.pingpong import Ping
from parley.testing import MockNetwork, RestartRunFailed, restart_at_every_step


def ping_scenario(net: MockNetwork) -> Callable[[], int]:
    alice, _ = net.create_node("alice"), net.create_node("bob")
    return alice.start_flow(Ping("bob", 1)).result


@pytest.mark.parametrize("node", ["alice", "bob"])
def test_every_step_is_restarted_once_and_the_flow_completes_exactly_once(node: str) -> None:
    runs = restart_at_every_step(ping_scenario, restart=node)
    assert runs[0].node is None
    assert [r.step for r in runs] == list(range(len(runs)))
    assert len(runs) > 3
    assert all(run.result == 2 for run in runs), runs
    for run in runs:
        for mock in run.network.nodes.values():
            assert mock.store.list_flows() == [], run
    assert all(r.node == node for r in runs[1:])


class FailsAfterARestart(FlowLogic[str]):
    async def call(self) -> str:
        await self.sleep(1)
        if self.now().year > 2030:  # never: the failure below comes from the scenario
            return "later"
        return "done"


def test_a_failing_run_names_its_step_and_node() -> None:
    def scenario(net: MockNetwork) -> Callable[[], str]:
        node = net.create_node("alice")
        handle = node.start_flow(FailsAfterARestart())

        def finish() -> str:
            result = handle.result()
            if node.runtime.restore_flows([]) == 0 and net.nodes["alice"].generation:
                raise AssertionError("restarted")
            return result

        return finish

    with pytest.raises(RestartRunFailed, match="with alice restarted after step 1") as failed:
        restart_at_every_step(scenario, restart="alice")
    assert (failed.value.step, failed.value.node) == (1, "alice")
    assert isinstance(failed.value.__cause__, AssertionError)


def test_an_unknown_node_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="no node called 'carol'"):
        restart_at_every_step(ping_scenario, restart="carol")

"""Crash a node at every step of a scenario: the test that durable flows must pass.

A scenario builds its nodes on a fresh :class:`~parley.testing.MockNetwork`, starts its flows and
returns a function that finishes it (pumps the network and returns whatever the test wants to
check, usually a flow's result)::

    from parley.testing import MockNetwork, restart_at_every_step

    def scenario(net: MockNetwork):
        alice, _ = net.create_node("alice"), net.create_node("bob")
        return alice.start_flow(Ping("bob", 1)).result

    for run in restart_at_every_step(scenario, restart="bob"):
        assert run.result == 2, run

:func:`restart_at_every_step` runs the scenario once to count its pump steps, then once more for
each step ``k``: it pumps ``k`` steps, restarts the chosen node (everything in memory is lost;
un-acked messages are delivered again; the node restores from its store), and finishes. Each run
is returned with its step and its network, so the test can also check what must hold after any
crash: the side effects in the nodes' tables, that nothing is left in the stores, and so on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from parley.protocol.errors import ParleyError
from parley.testing.mock import MockNetwork

T = TypeVar("T")

#: Builds a scenario on a fresh network and returns what finishes it.
Scenario = Callable[[MockNetwork], Callable[[], T]]


@dataclass(frozen=True)
class RestartRun(Generic[T]):
    """One run of the scenario with a restart: after which step, the network, the outcome."""

    #: The restart came after this many pump steps (0: the run without a restart).
    step: int
    #: The node that was restarted (``None`` in the run without a restart).
    node: str | None
    network: MockNetwork
    result: T

    def __repr__(self) -> str:
        where = f"restart of {self.node} after step {self.step}" if self.node else "no restart"
        return f"<RestartRun {where}: {self.result!r}>"


class RestartRunFailed(ParleyError):
    """The scenario raised in one of its runs; the message says after which step of which node."""

    def __init__(self, step: int, node: str | None, error: BaseException) -> None:
        where = f"with {node} restarted after step {step}" if node else "without a restart"
        super().__init__(f"the scenario failed {where}: {type(error).__name__}: {error}")
        self.step = step
        self.node = node


def restart_at_every_step(
    scenario: Scenario[T],
    restart: str,
    *,
    network: Callable[[], MockNetwork] = MockNetwork,
) -> list[RestartRun[T]]:
    """Run ``scenario`` once without a restart, then once with ``restart`` restarted at each step.

    Args:
        scenario: Builds the nodes and flows on the network it is given; returns the callable
            that finishes the scenario and gives its outcome.
        restart: The name of the node to restart.
        network: Makes each run's network (e.g. ``lambda: MockNetwork(seed=3)``).

    Returns:
        The run without a restart first, then one run per step, in order.

    Raises:
        ValueError: the scenario made no node called ``restart``.
        RestartRunFailed: a run raised (the original error is its ``__cause__``).
    """
    baseline_net = network()
    finish = scenario(baseline_net)
    if restart not in baseline_net.nodes:
        raise ValueError(f"the scenario made no node called {restart!r}")
    steps = baseline_net.run_network()
    runs = [RestartRun(0, None, baseline_net, _finish(finish, 0, None))]
    for step in range(1, steps):
        net = network()
        finish = scenario(net)
        net.run_network(max_steps=step)
        net.restart_node(net.nodes[restart])
        runs.append(RestartRun(step, restart, net, _finish(finish, step, restart)))
    return runs


def _finish(finish: Callable[[], T], step: int, node: str | None) -> T:
    try:
        return finish()
    except Exception as exc:
        raise RestartRunFailed(step, node, exc) from exc


__all__ = ["RestartRun", "RestartRunFailed", "Scenario", "restart_at_every_step"]

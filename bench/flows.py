"""Flows used by the benchmarks (benchmark nodes import this module as an app)."""

from __future__ import annotations

from parley import FlowLogic, FlowSession, initiated_by, initiating_flow, startable_by_rpc

MIGRATIONS = [
    "CREATE TABLE IF NOT EXISTS bench_effects (flow INTEGER NOT NULL, phase TEXT NOT NULL)",
]


def add_one(n: int) -> int:
    return n + 1


@startable_by_rpc
class Local3(FlowLogic[int]):
    """Three durable steps and no peers: the workload the peer engines run too."""

    def __init__(self, n: int = 0) -> None:
        self.n = n

    async def call(self) -> int:
        value = await self.execute(add_one, self.n)
        value = await self.execute(add_one, value)
        return await self.execute(add_one, value)


@initiating_flow
class Park(FlowLogic[None]):
    """Only its name is used: the parked benchmark plays the initiator by hand."""


@initiated_by(Park)
class Parked(FlowLogic[None]):
    """A simple suspended flow: waits in receive for one int and answers it plus one."""

    def __init__(self, session: FlowSession) -> None:
        self.session = session

    async def call(self) -> None:
        value = (await self.session.receive(int)).unwrap(int)
        await self.session.send(value + 1)


@startable_by_rpc
class Recoverable(FlowLogic[int]):
    """Writes a row, runs ``steps`` durable steps, writes another row.

    The recovery benchmark kills the node while thousands of these are under way; each row must
    exist exactly once per flow in the end.
    """

    def __init__(self, n: int, steps: int = 3) -> None:
        self.n, self.steps = n, steps

    async def call(self) -> int:
        self.services.db.execute("INSERT INTO bench_effects VALUES (?, 'before')", (self.n,))
        value = self.n
        for _ in range(self.steps):
            value = await self.execute(add_one, value)
        self.services.db.execute("INSERT INTO bench_effects VALUES (?, 'after')", (self.n,))
        return value

"""Flows used by the benchmarks (imported as an app by benchmark nodes)."""

from __future__ import annotations

from parley import FlowLogic, startable_by_rpc


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

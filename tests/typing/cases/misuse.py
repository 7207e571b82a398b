"""Deliberate misuses of the flow API.

Each line ending in an ``E:`` comment must make mypy --strict report an error containing the
comment's text on that line, and no other line may have one. Checked by ``test_type_errors``;
excluded from the main mypy run; never executed.
"""

from __future__ import annotations

from parley import FlowLogic, FlowSession
from parley.testing import MockNetwork


def fee(amount: int, rate: float) -> float:
    return amount * rate


class Child(FlowLogic[str]):
    async def call(self) -> str:
        return "x"


class Misuses(FlowLogic[int]):
    def __init__(self, session: FlowSession) -> None:
        self.session = session

    async def call(self) -> int:
        s = self.session
        n: int = (await s.receive(int | None)).unwrap_unchecked()  # E: Incompatible types
        items: list[str] = (await s.receive(list[int])).unwrap_unchecked()  # E: Incompatible types
        await self.execute(fee, "ten", 0.5)  # E: expected "Callable[[str, float], float]"
        await self.execute(fee, 10)  # E: Argument 1 to "execute"
        await self.execute(fee, 10, 0.5, 1)  # E: Argument 1 to "execute"
        await self.execute(fee)  # E: Argument 1 to "execute"
        wrong: int = await self.execute(fee, 10, 0.5)  # E: expected "Callable[[int, float], int]"
        child: int = await self.sub_flow(Child())  # E: expected "FlowLogic[int]"
        await s.receive(3)  # E: Argument 1 to "receive"
        (await s.receive(int)).unwrap(lambda q: q.upper())  # E: "int" has no attribute "upper"
        await self.sub_flow(fee)  # E: Argument 1 to "sub_flow"
        return n + len(items) + wrong + child


def started() -> None:
    handle = MockNetwork().create_node("alice").start_flow(Child())
    result: int = handle.result()  # E: Incompatible types
    MockNetwork().create_node("alice").start_flow(fee)  # E: Argument 1 to "start_flow"
    print(result)

"""What a type checker infers for correct uses of the flow API (checked by the main mypy run and by
``test_type_errors``; never executed)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import assert_type

from parley import FlowLogic, FlowSession, UntrustworthyData, serializable
from parley.testing import MockNetwork


@serializable
@dataclass(frozen=True)
class Quote:
    price: int


def fee(amount: int, rate: float) -> float:
    return amount * rate


class Child(FlowLogic[Quote]):
    async def call(self) -> Quote:
        return Quote(1)


class Uses(FlowLogic[int]):
    def __init__(self, session: FlowSession) -> None:
        self.session = session

    async def call(self) -> int:
        s = self.session
        assert_type(await s.receive(int), UntrustworthyData[int])
        assert_type(await s.receive(int | None), UntrustworthyData[int | None])
        assert_type(await s.receive(list[int]), UntrustworthyData[list[int]])
        assert_type(await s.receive(dict[str, Quote]), UntrustworthyData[dict[str, Quote]])
        assert_type(await s.receive(tuple[int, str]), UntrustworthyData[tuple[int, str]])
        assert_type(await s.send_and_receive(Quote, 1), UntrustworthyData[Quote])
        all_quotes = await self.receive_all(Quote | None, [s])
        assert_type(all_quotes, list[UntrustworthyData[Quote | None]])
        maybe = (await s.receive(int | None)).unwrap_unchecked()
        assert_type(maybe, int | None)
        assert_type((await s.receive(int)).unwrap(str), str)
        assert_type(await self.execute(fee, 10, 0.5), float)
        assert_type(await self.sub_flow(Child()), Quote)
        return 0


def started() -> None:
    handle = MockNetwork().create_node("alice").start_flow(Child())
    assert_type(handle.result(), Quote)

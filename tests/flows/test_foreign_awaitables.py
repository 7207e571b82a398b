"""Flows may await only Parley operations: every foreign awaitable gives the documented error."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Generator

import pytest

from parley import FlowLogic, FlowUsageError
from parley.testing import MockNode


async def _needs_the_loop() -> None:
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, print)


def _future() -> Awaitable[object]:
    return asyncio.Future()


class Plain:
    """An awaitable that is not a coroutine (so nothing warns that it was never awaited)."""

    def __await__(self) -> Generator[None, None, None]:
        yield None


FOREIGN: dict[str, tuple[Callable[[], Awaitable[object]], str]] = {
    "sleep(0)": (lambda: asyncio.sleep(0), "asyncio.tasks.sleep()"),
    "sleep(0.01)": (lambda: asyncio.sleep(0.01), "asyncio.tasks.sleep()"),
    "wait_for": (lambda: asyncio.wait_for(Plain(), 5), "asyncio.tasks.wait_for()"),
    "gather": (asyncio.gather, "asyncio.tasks.gather()"),
    "a coroutine that asks for the loop": (_needs_the_loop, f"{__name__}._needs_the_loop()"),
    # Future() is built in C: the error names the flow's code that made it.
    "a future": (_future, f"{__name__}._future()"),
}


class AwaitsForeign(FlowLogic[str]):
    def __init__(self, case: str) -> None:
        self.case = case

    async def call(self) -> str:
        make, _ = FOREIGN[self.case]
        try:
            await make()
        except FlowUsageError as exc:
            return str(exc)
        return "not caught"


@pytest.mark.parametrize("case", sorted(FOREIGN))
def test_awaiting_a_foreign_awaitable_throws_a_usage_error_naming_it(
    alice: MockNode, case: str
) -> None:
    message = alice.start_flow(AwaitsForeign(case)).result()
    assert message.startswith("flows may only await Parley operations, but ")
    assert f"{__name__}:AwaitsForeign" in message
    assert FOREIGN[case][1] in message


class IgnoresTheError(FlowLogic[None]):
    async def call(self) -> None:
        await asyncio.sleep(0.01)


def test_an_uncaught_usage_error_fails_the_flow_with_it(alice: MockNode) -> None:
    with pytest.raises(FlowUsageError, match=r"asyncio\.tasks\.sleep\(\)"):
        alice.start_flow(IgnoresTheError()).result()


def test_flow_code_leaves_the_threads_running_loop_as_it_was(alice: MockNode) -> None:
    async def main() -> object:
        loop = asyncio.get_running_loop()
        result = alice.start_flow(AwaitsForeign("sleep(0.01)")).result()
        assert asyncio.get_running_loop() is loop
        return result

    assert "asyncio.tasks.sleep()" in str(asyncio.run(main()))
    with pytest.raises(RuntimeError, match="no running event loop"):
        asyncio.get_running_loop()

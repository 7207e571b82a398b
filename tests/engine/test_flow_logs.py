"""What a node logs about flows: one INFO line per start and end, the flow id on every line, and
WARNING only for what an operator must look at."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from parley import FlowException, FlowLogic, HospitalizeFlowException
from parley.engine.logcontext import FlowIdFilter
from parley.testing import FlowHospitalized, MockNetwork


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.addFilter(FlowIdFilter())

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def lines(self, logger: str) -> list[tuple[int, str, str]]:
        return [
            (r.levelno, getattr(r, "flow_id", "?"), r.getMessage())
            for r in self.records
            if r.name == logger
        ]


@pytest.fixture
def logs() -> Iterator[Collect]:
    handler = Collect()
    logger = logging.getLogger("parley")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


class Naps(FlowLogic[str]):
    async def call(self) -> str:
        await self.sleep(2)
        return "rested"


class Refuses(FlowLogic[None]):
    async def call(self) -> None:
        raise FlowException("price too high")


class Breaks(FlowLogic[None]):
    async def call(self) -> None:
        raise ValueError("a bug")


class AsksForHelp(FlowLogic[None]):
    async def call(self) -> None:
        raise HospitalizeFlowException("look at me")


def test_a_flow_logs_one_info_line_when_it_starts_and_one_with_its_duration_when_it_ends(
    logs: Collect,
) -> None:
    handle = MockNetwork().create_node("alice").start_flow(Naps())
    assert handle.result() == "rested"
    lines = [line for line in logs.lines("parley.runtime") if line[0] >= logging.INFO]
    cls = f"{__name__}:Naps"
    assert lines == [
        (logging.INFO, handle.flow_id, f"flow {handle.flow_id} ({cls}) started"),
        (logging.INFO, handle.flow_id, f"flow {handle.flow_id} ({cls}) completed in 2.000 s"),
    ]


def test_a_business_exception_is_logged_at_info_with_the_flow_id(logs: Collect) -> None:
    handle = MockNetwork().create_node("alice").start_flow(Refuses())
    with pytest.raises(FlowException):
        handle.result()
    ((level, flow_id, message),) = logs.lines("parley.hospital")
    assert (level, flow_id) == (logging.INFO, handle.flow_id)
    assert "price too high -> propagate" in message
    assert not [r for r in logs.records if r.levelno >= logging.WARNING]


def test_a_bug_and_a_flow_kept_for_observation_are_warnings_with_the_flow_id(
    logs: Collect,
) -> None:
    node = MockNetwork().create_node("alice")
    broken, parked = node.start_flow(Breaks()), node.start_flow(AsksForHelp())
    with pytest.raises(ValueError, match="a bug"):
        broken.result()
    with pytest.raises(FlowHospitalized):
        parked.result()
    hospital = logs.lines("parley.hospital")
    assert [(level, flow_id) for level, flow_id, _ in hospital] == [
        (logging.WARNING, broken.flow_id),
        (logging.WARNING, parked.flow_id),
    ]

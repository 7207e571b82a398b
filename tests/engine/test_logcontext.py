"""Every log line emitted while a flow is handled carries the flow's id."""

from __future__ import annotations

import logging

from parley import FlowLogic
from parley.engine.logcontext import FlowIdFilter, current_flow_id, flow_log_context
from parley.testing import MockNetwork

log = logging.getLogger("parley.tests.flowcode")


class Chatty(FlowLogic[None]):
    async def call(self) -> None:
        log.warning("before sleeping")
        await self.sleep(1)
        log.warning("after sleeping")


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []
        self.addFilter(FlowIdFilter())

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_log_lines_from_flow_code_carry_the_flow_id() -> None:
    handler = Collect()
    log.addHandler(handler)
    try:
        net = MockNetwork()
        node = net.create_node("alice")
        handle = node.start_flow(Chatty())
        handle.result()
        log.warning("outside any flow")
    finally:
        log.removeHandler(handler)
    ids = [(r.getMessage(), getattr(r, "flow_id", None)) for r in handler.records]
    assert ids == [
        ("before sleeping", handle.flow_id),
        ("after sleeping", handle.flow_id),
        ("outside any flow", "-"),
    ]


def test_the_context_is_restored_after_the_block() -> None:
    assert current_flow_id.get() is None
    with flow_log_context("abc"):
        assert current_flow_id.get() == "abc"
    assert current_flow_id.get() is None

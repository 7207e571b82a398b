"""Per-flow logging context: every log line emitted while handling a flow carries its flow id.

Like Corda's MDC: the driver sets a context variable while it runs a flow's events, and
:class:`FlowIdFilter` copies it onto every log record as ``record.flow_id`` (``"-"`` outside flows).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

current_flow_id: ContextVar[str | None] = ContextVar("parley_flow_id", default=None)

#: A format that shows the flow id of each line.
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [flow=%(flow_id)s] %(message)s"


@contextmanager
def flow_log_context(flow_id: str) -> Iterator[None]:
    """Tag log lines emitted inside the block with ``flow_id``."""
    token = current_flow_id.set(flow_id)
    try:
        yield
    finally:
        current_flow_id.reset(token)


class FlowIdFilter(logging.Filter):
    """Adds ``flow_id`` to every record that passes through the handler it is attached to."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "flow_id"):
            record.flow_id = current_flow_id.get() or "-"
        return True


def install(handler: logging.Handler | None = None, level: int = logging.INFO) -> logging.Handler:
    """Send Parley's logs to ``handler`` (stderr by default) with the flow id on every line."""
    handler = handler or logging.StreamHandler()
    handler.addFilter(FlowIdFilter())
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logger = logging.getLogger("parley")
    logger.addHandler(handler)
    logger.setLevel(level)
    return handler


__all__ = ["LOG_FORMAT", "FlowIdFilter", "current_flow_id", "flow_log_context", "install"]

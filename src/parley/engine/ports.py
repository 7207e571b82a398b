"""The runtime's ports: everything outside the thread a :class:`FlowRuntime` runs on.

One narrow interface with two implementations: a node's ``FlowWorker`` (commits go to the
Persistence actor, sends to the NATS bridge, callbacks hop back to the worker's thread) and
MockNetwork's in-process nodes (synchronous, pumped). Every callback a port takes is called on the
runtime's thread.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Protocol

from parley.protocol.messages import Envelope
from parley.protocol.records import StoreOp


class RuntimePorts(Protocol):
    """The runtime's view of everything outside its thread."""

    def commit(
        self, ops: tuple[StoreOp, ...], done: Callable[[BaseException | None], None]
    ) -> None:
        """Commit ``ops`` atomically (possibly grouped with others), then call ``done`` here."""
        ...

    def send(
        self, envelopes: tuple[Envelope, ...], done: Callable[[BaseException | None], None]
    ) -> None:
        """Publish ``envelopes``; call ``done`` here once every one is acknowledged (or failed)."""
        ...

    def ack(self, deliveries: tuple[object, ...]) -> None: ...

    def call_soon(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the runtime's thread, after the current work."""
        ...

    def call_at(self, when: datetime, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the runtime's thread at ``when`` (or soon after)."""
        ...

    def run_operation(self, fn: Callable[[], object], done: Callable[[bool, object], None]) -> None:
        """Run ``fn`` off the runtime's thread; call ``done(ok, value_or_error)`` on it later."""
        ...

    def now(self) -> datetime: ...

    def random(self) -> float: ...

    def uuid(self) -> str: ...


__all__ = ["RuntimePorts"]

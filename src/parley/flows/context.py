"""The narrow interface between a flow's code and the driver that runs it.

Flow objects (:class:`~parley.flows.logic.FlowLogic`, :class:`~parley.flows.session.FlowSession`)
turn API calls into either *immediate* calls on a :class:`FlowContext` (answered at once, while the
flow's code runs) or *requests* the coroutine yields (:class:`Suspend`), answered when the flow is
resumed. The driver in :mod:`parley.engine.driver` implements the context.
"""

from __future__ import annotations

from collections.abc import Generator
from contextvars import ContextVar
from datetime import datetime, timedelta
from typing import Any, Generic, Protocol, TypeVar, cast

from parley.protocol.errors import FlowUsageError
from parley.protocol.requests import Request
from parley.protocol.state import SubFlowFrame

T = TypeVar("T")


class FlowContext(Protocol):
    """What a running flow may ask of its driver."""

    @property
    def flow_id(self) -> str: ...

    @property
    def our_identity(self) -> str: ...

    @property
    def idempotent(self) -> bool:
        """True while an idempotent sub-flow is on the stack."""
        ...

    @property
    def timed_timeout(self) -> float | None:
        """The timeout of the innermost ``TimedFlow`` on the stack (``None``: none is)."""
        ...

    def initiate(self, destination: str) -> str:
        """Create a session to ``destination``; returns its id."""
        ...

    def now(self) -> datetime:
        """The current time (UTC), recorded: a replay sees the same value."""
        ...

    def random(self) -> float:
        """A random float in [0, 1), recorded."""
        ...

    def uuid(self) -> str:
        """A random UUID (as a string), recorded."""
        ...

    def version(self, marker: str, newest: int) -> int:
        """The version recorded for ``marker`` (``newest`` the first time; recorded)."""
        ...

    def sign(self, data: bytes) -> bytes:
        """The node's signature of ``data``, recorded."""
        ...

    def verify(self, node: str, data: bytes, signature: bytes) -> bool:
        """Whether ``signature`` is ``node``'s signature of ``data`` (network map), recorded."""
        ...

    def public_key(self, node: str) -> str | None:
        """``node``'s current public key in the network map, recorded."""
        ...

    def enter_subflow(self, frame: SubFlowFrame) -> None: ...

    def leave_subflow(self) -> None: ...

    def queue_write(self, sql: str, params: tuple[object, ...]) -> None:
        """Queue a write to commit with the flow's next checkpoint."""
        ...


class Suspend(Generic[T]):
    """An awaitable that suspends the flow on ``request`` and returns the value it resumes with."""

    __slots__ = ("request",)

    def __init__(self, request: Request) -> None:
        self.request = request

    def __await__(self) -> Generator[Request, object, T]:
        value = yield self.request
        return cast(T, value)


#: The context of the flow whose code runs now (set by its driver around each step).
RUNNING: ContextVar[FlowContext | None] = ContextVar("parley_running_flow", default=None)


def deadline(timeout: float | None, what: str) -> datetime | None:
    """The absolute deadline ``timeout`` seconds from the running flow's (recorded) now.

    Raises:
        FlowUsageError: ``timeout`` is not a number of seconds >= 0, or no flow is running.
    """
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout < 0:
        raise FlowUsageError(f"{what}: timeout must be a number of seconds >= 0, got {timeout!r}")
    ctx = RUNNING.get()
    if ctx is None:
        raise FlowUsageError(f"{what} with a timeout must run inside a flow")
    return ctx.now() + timedelta(seconds=timeout)


def timed() -> float | None:
    """The running flow's ``TimedFlow`` timeout, if it is (in) one."""
    ctx = RUNNING.get()
    return ctx.timed_timeout if ctx is not None else None


def suspend(request: Request) -> Suspend[Any]:
    """Await this to suspend the flow on ``request`` (``Suspend[T](...)`` is slower to build)."""
    return Suspend(request)


__all__ = ["RUNNING", "FlowContext", "Suspend", "deadline", "suspend", "timed"]

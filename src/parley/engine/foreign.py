"""Flows await only Parley operations: what happens when flow code reaches for asyncio.

A flow's coroutine is driven by hand (``coro.send``), not by an event loop, so anything it awaits
that is not a Parley request cannot work, and must fail with the documented
:class:`~parley.protocol.errors.FlowUsageError` naming what was awaited. Two ways to get there:

* the awaitable yields something that is not a request (``asyncio.sleep(0)`` yields ``None``, a
  future yields itself): the driver sees it and throws the error into the flow
  (:func:`awaitable_name` names the culprit from the coroutine's await chain);
* the awaitable asks for the running loop first (``asyncio.sleep(0.01)``, ``wait_for``,
  ``gather``, any coroutine that calls ``asyncio.get_running_loop()``): while flow code runs, the
  running loop of the thread is :data:`NO_LOOP`, whose every attribute raises the error, naming
  the asyncio function (or the user's coroutine) that wanted the loop. Without it they would fail
  with asyncio's ``RuntimeError: no running event loop``, or, inside a test that has a loop,
  schedule work on a loop that will never resume the flow.

:func:`enter_flow_code` installs it around each step of a flow's code and
:func:`leave_flow_code` puts back whatever was there (a MockNetwork may be pumped from an async
test).
"""

from __future__ import annotations

import asyncio.events
import sys
from collections.abc import Coroutine
from types import FrameType
from typing import Any, cast

from parley.protocol.errors import FlowUsageError

_ASYNCIO = "asyncio"


class _NoLoop:
    """The "running loop" while flow code runs: every use of it is a usage error."""

    __slots__ = ("flow_class",)

    def __init__(self) -> None:
        self.flow_class = "a flow"

    def __getattr__(self, name: str) -> Any:
        raise FlowUsageError(
            f"flows may only await Parley operations, but {self.flow_class} awaited "
            f"{_caller_name(sys._getframe(1))}, which needs an asyncio event loop "
            f"(it used loop.{name}); use self.sleep() for time and self.execute() for I/O"
        )

    def __repr__(self) -> str:
        return "<no event loop: Parley flow code is running>"


#: One per process: only its ``flow_class`` changes, on the thread that runs flow code.
NO_LOOP = _NoLoop()


_set_running_loop = asyncio.events._set_running_loop
_get_running_loop = asyncio.events._get_running_loop


def enter_flow_code(flow_class: str) -> asyncio.AbstractEventLoop | None:
    """Make :data:`NO_LOOP` the thread's running loop; returns the loop to put back.

    A pair of plain calls rather than a context manager: this brackets every step of every flow.
    """
    previous = _get_running_loop()
    NO_LOOP.flow_class = flow_class
    _set_running_loop(cast(asyncio.AbstractEventLoop, NO_LOOP))
    return previous


def leave_flow_code(previous: asyncio.AbstractEventLoop | None) -> None:
    """Put back the running loop :func:`enter_flow_code` replaced."""
    _set_running_loop(previous)


def _caller_name(frame: FrameType | None) -> str:
    """The asyncio function the flow called (or the flow's own coroutine that used the loop).

    Walks out from the frame that touched the loop: through asyncio's own frames to the outermost
    one (the API the flow called, e.g. ``asyncio.tasks.sleep``); a first frame outside asyncio is
    the user's coroutine, named itself.
    """
    named = frame
    while frame is not None and _in_asyncio(frame):
        named, frame = frame, frame.f_back
    if named is None:
        return "an asyncio awaitable"
    return f"{named.f_globals.get('__name__', '?')}.{named.f_code.co_qualname}()"


def _in_asyncio(frame: FrameType) -> bool:
    return str(frame.f_globals.get("__name__", "")).split(".")[0] == _ASYNCIO


def awaitable_name(coro: Coroutine[Any, Any, Any], yielded: object) -> str:
    """Name the foreign awaitable a flow is stuck in (the deepest non-Parley coroutine)."""
    awaited: Any = getattr(coro, "cr_await", None)
    name = None
    while awaited is not None:
        code = getattr(awaited, "cr_code", None) or getattr(awaited, "gi_code", None)
        frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "gi_frame", None)
        if code is not None:
            module = frame.f_globals.get("__name__", "?") if frame is not None else "?"
            if not module.startswith("parley.") and name is None:
                name = f"{module}.{code.co_qualname}()"
        awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "gi_yieldfrom", None)
    return name or f"an object that yielded {yielded!r}"


__all__ = ["NO_LOOP", "awaitable_name", "enter_flow_code", "leave_flow_code"]

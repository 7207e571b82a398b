"""Sessions: a flow's conversation with one counterparty flow."""

from __future__ import annotations

import types
import typing
from collections.abc import Callable
from typing import Any, Generic, TypeVar, cast

from parley.flows.context import suspend
from parley.protocol import codec
from parley.protocol.errors import UnexpectedPayloadError
from parley.protocol.messages import FlowInfo
from parley.protocol.requests import CloseSessions, GetFlowInfo, Receive, Send, SendAndReceive

T = TypeVar("T")
R = TypeVar("R")


class UntrustworthyData(Generic[T]):
    """A payload from a counterparty: check it before use with :meth:`unwrap`.

    The type was checked on receipt; everything else about the value came from a party that may
    not be honest.
    """

    __slots__ = ("_value",)

    def __init__(self, value: T) -> None:
        self._value = value

    def unwrap(self, validator: Callable[[T], R]) -> R:
        """Apply ``validator`` (which raises if the value is unacceptable) and return its result."""
        return validator(self._value)

    def __repr__(self) -> str:
        return f"UntrustworthyData({type(self._value).__name__})"


class FlowSession:
    """One end of a session with a flow on ``counterparty``.

    Created by ``initiate_flow(party)`` on the initiating side and handed to the responder's
    constructor on the other. Every operation is a suspension point.
    """

    __slots__ = ("counterparty", "session_id")

    def __init__(self, session_id: str, counterparty: str) -> None:
        self.session_id = session_id
        self.counterparty = counterparty

    async def send(self, payload: object) -> None:
        """Send ``payload`` (anything the codec can encode). Does not wait for delivery."""
        await suspend(Send(((self.session_id, codec.encode(payload)),)))

    async def receive(self, expected: type[T]) -> UntrustworthyData[T]:
        """Wait for the next payload, which must be of type ``expected``.

        Raises:
            UnexpectedPayloadError: the payload is of another type.
            UnexpectedFlowEndException: the counterparty ended or failed.
            FlowException: the counterparty failed with this FlowException.
        """
        received = await suspend(Receive((self.session_id,)))
        return checked(expected, received[self.session_id])

    async def send_and_receive(self, expected: type[T], payload: object) -> UntrustworthyData[T]:
        """Send ``payload``, then receive a payload of type ``expected``."""
        request = SendAndReceive(((self.session_id, codec.encode(payload)),), (self.session_id,))
        received = await suspend(request)
        return checked(expected, received[self.session_id])

    async def close(self) -> None:
        """Close our end of the session. Closing twice is allowed."""
        await suspend(CloseSessions((self.session_id,)))

    async def get_counterparty_flow_info(self) -> FlowInfo:
        """The counterparty flow's version and app (waits for the session to be confirmed)."""
        infos: dict[str, FlowInfo] = await suspend(GetFlowInfo((self.session_id,)))
        return infos[self.session_id]

    def __repr__(self) -> str:
        return f"FlowSession({self.counterparty}, {self.session_id})"


def checked(expected: type[T], payload: bytes) -> UntrustworthyData[T]:
    """Decode a received payload and check its type."""
    value = codec.decode(payload)
    if not _is_instance(value, expected):
        raise UnexpectedPayloadError(_type_label(expected), _type_label(type(value)))
    return UntrustworthyData(cast(T, value))


def _is_instance(value: object, expected: Any) -> bool:
    if expected is Any or expected is object:
        return True
    if expected is None or expected is type(None):
        return value is None
    origin = typing.get_origin(expected)
    if origin is typing.Union or origin is types.UnionType:
        return any(_is_instance(value, arg) for arg in typing.get_args(expected))
    if origin is not None:
        return isinstance(value, origin)
    if expected is float:
        return isinstance(value, float | int) and not isinstance(value, bool)
    if expected is int and isinstance(value, bool):
        return False
    return isinstance(value, expected)


def _type_label(cls: Any) -> str:
    if isinstance(cls, type):
        return (
            cls.__name__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
        )
    return repr(cls)


__all__ = ["FlowSession", "UntrustworthyData", "checked"]

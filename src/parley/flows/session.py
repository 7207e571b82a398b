"""Sessions: a flow's conversation with one counterparty flow.

Payload types
=============

``receive(expected)``, ``send_and_receive(expected, payload)`` and ``FlowLogic.receive_all``
take a *type expression* and check every received payload against it before the flow sees it:

* a plain class (``int``, ``str``, a ``@serializable`` dataclass or enum, ...) by ``isinstance``
  (``int`` refuses ``bool``; ``float`` also takes ``int``); a ``@serializable`` dataclass's fields
  are not checked again;
* ``list[X]``, ``set[X]``, ``frozenset[X]``, ``tuple[X, ...]``, ``tuple[X, Y]``, ``tuple[()]``
  and ``dict[K, V]`` recursively, item by item (``typing.List[X]`` and friends too);
* unions (``X | Y``, ``Optional[X]``), ``None``, ``Literal[...]`` (value and exact type),
  ``Annotated[X, ...]`` (as ``X``) and ``NewType`` (as its supertype);
* ``Any`` and ``object`` accept everything.

A payload of the wrong shape raises :class:`~parley.protocol.errors.UnexpectedPayloadError`
naming the expected type and what was received (down to the first item that does not fit). Any
other type expression (``Callable[...]``, ``collections.abc.Sequence[int]``, a parameterised user
``Generic`` class, a ``TypedDict``, a string, a ``TypeVar``, ...) would be checked only in part, so
it is refused with :class:`~parley.protocol.errors.FlowUsageError` at the call, before the flow
waits: receive the plain class and check the rest in :meth:`UntrustworthyData.unwrap`.

Static types. The parameter is annotated with PEP 747's ``TypeForm[T]``, so a type checker infers
``UntrustworthyData[int | None]`` for ``receive(int | None)`` and ``UntrustworthyData[list[int]]``
for ``receive(list[int])``. Mypy understands ``TypeForm`` without any flag since it left the
incomplete features (python/mypy#21262); older mypy releases, which knew it only behind
``--enable-incomplete-feature=TypeForm`` or not at all, give ``UntrustworthyData[Any]`` or an
error for non-class expressions instead. ``TypeForm`` is imported for type checkers only, so
there is no runtime dependency on a recent ``typing_extensions``.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from parley.flows.context import deadline, suspend, timed
from parley.protocol import codec
from parley.protocol.errors import DeserializationError, FlowUsageError, UnexpectedPayloadError
from parley.protocol.messages import FlowInfo
from parley.protocol.requests import CloseSessions, GetFlowInfo, Receive, Send, SendAndReceive

if TYPE_CHECKING:
    from typing_extensions import TypeForm

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
        """Apply ``validator`` (which raises if the value is unacceptable) and return its result.

        Args:
            validator: Called with the payload; raises if the value is unacceptable.

        Returns:
            What ``validator`` returned.
        """
        return validator(self._value)

    def unwrap_unchecked(self) -> T:
        """Return the payload without validating it further.

        The payload already has the type the flow asked for; what it does not have is any check of
        its *content* (a negative price, a counterparty that isn't the one you trade with, a
        transaction you did not expect). A counterparty is another organisation's code: prefer
        :meth:`unwrap` with a validator, and keep this for data that needs no check (an
        acknowledgement, a value the flow checks itself on the next line). The name is meant to
        stand out in review and in ``grep``.

        Returns:
            The payload.
        """
        return self._value

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

    async def receive(
        self, expected: TypeForm[T], *, timeout: float | None = None
    ) -> UntrustworthyData[T]:
        """Wait for the next payload, which must be of type ``expected``.

        Args:
            expected: A type expression the payload is checked against (see the module's
                documentation): ``int``, ``int | None``, ``list[int]``, ``dict[str, Quote]``, ...
            timeout: Seconds to wait at most (``None``: no limit). The deadline is recorded, so a
                restart neither loses nor restarts it; a payload that comes later is kept for
                the next receive.

        Returns:
            The payload, to be checked further with :meth:`UntrustworthyData.unwrap`.

        Raises:
            FlowUsageError: ``expected`` is a type expression Parley can't check (raised before
                waiting).
            UnexpectedPayloadError: the payload is not of type ``expected``.
            ReceiveTimeoutException: nothing came within ``timeout``.
            UnexpectedFlowEndException: the counterparty ended or failed.
            FlowException: the counterparty failed with this FlowException.
        """
        check_for(expected)
        until = deadline(timeout, "receive()")
        received = await suspend(Receive((self.session_id,), until, timed()))
        return checked(expected, received[self.session_id])

    async def send_and_receive(
        self, expected: TypeForm[T], payload: object, *, timeout: float | None = None
    ) -> UntrustworthyData[T]:
        """Send ``payload``, then receive a payload of type ``expected``.

        Args:
            expected: The type expression the reply is checked against, as for :meth:`receive`.
            payload: What to send (anything the codec can encode).
            timeout: Seconds to wait for the reply at most, as for :meth:`receive`.

        Returns:
            The reply, to be checked further with :meth:`UntrustworthyData.unwrap`.

        Raises:
            FlowUsageError: ``expected`` can't be checked (raised before anything is sent).
            UnexpectedPayloadError: the reply is not of type ``expected``.
        """
        check_for(expected)
        until = deadline(timeout, "send_and_receive()")
        payloads = ((self.session_id, codec.encode(payload)),)
        request = SendAndReceive(payloads, (self.session_id,), until, timed())
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


def checked(expected: TypeForm[T], payload: bytes) -> UntrustworthyData[T]:
    """Decode a received payload and check it against ``expected``.

    Args:
        expected: The type expression the value must match.
        payload: The encoded payload.

    Returns:
        The decoded value.

    Raises:
        FlowUsageError: ``expected`` is a type expression Parley can't check.
        UnexpectedPayloadError: the value does not match ``expected``, or the payload does not
            decode (the sender's fault: a flow that does not catch it fails and its peers are
            told).
    """
    reason: str | None = None
    try:
        value: Any = codec.decode(payload)
    except DeserializationError as exc:
        reason = str(exc)
    if reason is not None:
        # The sender's fault, not this flow's: raised outside the handler so that the decoding
        # error is not in the cause chain (where the hospital would take it for a broken
        # checkpoint and keep the flow for observation instead of failing it, telling the peer).
        raise UnexpectedPayloadError(_type_label(expected), f"an undecodable payload ({reason})")
    # The exact class is by far the common case: one identity test, no lookup.
    if type(value) is not expected and not check_for(expected)(value):
        raise UnexpectedPayloadError(_type_label(expected), _describe(value, expected))
    return UntrustworthyData(value)


# ---- compiled checks ----------------------------------------------------------------------------

_Check = Callable[[object], bool]

#: The compiled check of every type expression seen so far (type expressions are few and hashable).
_CHECKS: dict[object, _Check] = {}

#: The generic containers whose items are checked, and what a payload of each must be.
_ITEMS_CHECKED = (list, set, frozenset)


def check_for(expected: object) -> Callable[[object], bool]:
    """Return the predicate that checks a decoded value against the type expression ``expected``.

    Compiled once per type expression and cached.

    Args:
        expected: A type expression.

    Returns:
        A function telling whether a value matches ``expected``.

    Raises:
        FlowUsageError: ``expected`` can't be checked (see the module's documentation).
    """
    try:
        check = _CHECKS.get(expected)
    except TypeError:  # unhashable (a Literal of a list, ...): compile it every time
        return _compile(expected)
    if check is None:
        check = _CHECKS[expected] = _compile(expected)
    return check


def _anything(value: object) -> bool:
    return True


def _is_none(value: object) -> bool:
    return value is None


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_float(value: object) -> bool:
    return isinstance(value, float | int) and not isinstance(value, bool)


def _compile(expected: Any) -> _Check:
    if expected is Any or expected is object:
        return _anything
    if expected is None or expected is type(None):
        return _is_none
    origin = typing.get_origin(expected)
    if origin is None:
        if isinstance(expected, type):
            return _compile_class(expected)
        if isinstance(expected, typing.NewType):
            return check_for(expected.__supertype__)
        raise _refused(expected, "it is not a type")
    if origin is typing.Union or origin is types.UnionType:
        options = tuple(check_for(arg) for arg in typing.get_args(expected))
        return lambda value: any(option(value) for option in options)
    if origin is typing.Literal:
        values = typing.get_args(expected)
        return lambda value: any(type(value) is type(v) and value == v for v in values)
    if origin is typing.Annotated:
        return check_for(typing.get_args(expected)[0])
    args: tuple[Any, ...] | None = getattr(expected, "__args__", None)
    if origin in _ITEMS_CHECKED or origin is tuple or origin is dict:
        if args is None:  # typing.List, typing.Tuple, ... without parameters
            return lambda value: isinstance(value, origin)
        if origin is dict:
            return _compile_dict(*args)
        if origin is tuple:
            return _compile_tuple(args)
        return _compile_items(origin, check_for(args[0]))
    raise _refused(expected, "Parley can't check its parameters")


def _compile_class(cls: type) -> _Check:
    if cls is int:
        return _is_int
    if cls is float:
        return _is_float
    try:
        isinstance(None, cls)
    except TypeError as exc:  # TypedDict, a Protocol that isn't runtime_checkable, ...
        raise _refused(cls, f"isinstance() refuses it ({exc})") from None
    return lambda value: isinstance(value, cls)


def _compile_items(container: type, item: _Check) -> _Check:
    if item is _anything:
        return lambda value: isinstance(value, container)
    return lambda value: isinstance(value, container) and all(map(item, value))  # type: ignore[call-overload]


def _compile_tuple(args: tuple[Any, ...]) -> _Check:
    if len(args) == 2 and args[1] is Ellipsis:
        return _compile_items(tuple, check_for(args[0]))
    items = tuple(check_for(arg) for arg in args)
    size = len(items)
    return lambda value: (
        isinstance(value, tuple)
        and len(value) == size
        and all(item(v) for item, v in zip(items, value, strict=True))
    )


def _compile_dict(key_type: Any, value_type: Any) -> _Check:
    key, item = check_for(key_type), check_for(value_type)
    if key is _anything and item is _anything:
        return lambda value: isinstance(value, dict)
    return lambda value: (
        isinstance(value, dict) and all(key(k) and item(v) for k, v in value.items())
    )


def _refused(expected: object, why: str) -> FlowUsageError:
    hint = ""
    origin = typing.get_origin(expected)
    if isinstance(origin, type) and origin.__module__ != "collections.abc":
        hint = f"; receive {_type_label(origin)} and check the rest in unwrap()"
    return FlowUsageError(
        f"Can't check a payload against {_type_label(expected)}: {why}. Parley checks plain "
        "classes, list/set/frozenset/tuple/dict of checkable types, unions, Optional, Literal, "
        f"Annotated and NewType{hint}"
    )


# ---- error messages -----------------------------------------------------------------------------


def _type_label(cls: Any) -> str:
    if cls is None or cls is type(None):
        return "None"
    if cls is Any:
        return "Any"
    if cls is Ellipsis:
        return "..."
    origin = typing.get_origin(cls)
    if origin is typing.Union or origin is types.UnionType:
        return " | ".join(_type_label(arg) for arg in typing.get_args(cls))
    if origin is typing.Annotated:
        return _type_label(typing.get_args(cls)[0])
    args = getattr(cls, "__args__", None)
    if (origin in _ITEMS_CHECKED or origin is tuple or origin is dict) and args is not None:
        inside = ", ".join(_type_label(arg) for arg in args) if args else "()"
        return f"{_type_label(origin)}[{inside}]"
    if isinstance(cls, type) and origin is None:
        return (
            cls.__name__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
        )
    return repr(cls)


def _describe(value: object, expected: Any) -> str:
    """What was received instead of ``expected``, and where the first misfit is."""
    shape = _shape(value)
    path, wanted, misfit = _first_misfit(value, expected, "")
    if not path:
        return shape
    return f"{shape} (at {path}: {_shape(misfit)}, not {_type_label(wanted)})"


def _first_misfit(value: object, expected: Any, path: str) -> tuple[str, Any, object]:
    """The path, expected type and value of the first part of ``value`` that does not fit.

    Only called for a value that does not match ``expected``.
    """
    origin = typing.get_origin(expected)
    if origin is typing.Annotated:
        return _first_misfit(value, typing.get_args(expected)[0], path)
    if origin is typing.Union or origin is types.UnionType:
        # Look inside only if one of the options is the value's container.
        fitting = [arg for arg in typing.get_args(expected) if _outer_fits(value, arg)]
        if len(fitting) == 1:
            return _first_misfit(value, fitting[0], path)
        return path, expected, value
    args = getattr(expected, "__args__", None)
    containers = (*_ITEMS_CHECKED, tuple, dict)
    if not args or origin not in containers or not isinstance(value, origin):
        return path, expected, value
    if origin in _ITEMS_CHECKED or (origin is tuple and len(args) == 2 and args[1] is Ellipsis):
        item = check_for(args[0])
        for i, v in enumerate(value):
            if not item(v):
                where = f"{path}[{i}]" if origin in (list, tuple) else f"{path} item {_short(v)}"
                return _first_misfit(v, args[0], where)
    elif origin is tuple:
        if len(value) != len(args):
            return path, expected, value
        for i, (arg, v) in enumerate(zip(args, value, strict=True)):
            if not check_for(arg)(v):
                return _first_misfit(v, arg, f"{path}[{i}]")
    elif origin is dict:
        key_type, value_type = args
        for k, v in value.items():
            if not check_for(key_type)(k):
                return _first_misfit(k, key_type, f"{path} key {_short(k)}")
            if not check_for(value_type)(v):
                return _first_misfit(v, value_type, f"{path}[{_short(k)}]")
    return path, expected, value


def _outer_fits(value: object, expected: Any) -> bool:
    origin = typing.get_origin(expected)
    if origin in _ITEMS_CHECKED or origin is tuple or origin is dict:
        return isinstance(value, origin)
    return check_for(expected)(value)


def _shape(value: object, depth: int = 0) -> str:
    """The type of ``value`` written as a type expression, with its items' types (a few levels)."""
    if value is None:
        return "None"
    label = _type_label(type(value))
    if not isinstance(value, list | set | frozenset | tuple | dict) or depth >= 3:
        return label
    if not value:
        return "tuple[()]" if isinstance(value, tuple) else label
    if isinstance(value, dict):
        keys, values = _union_of(value, depth), _union_of(value.values(), depth)
        return f"{label}[{keys}, {values}]"
    if isinstance(value, tuple) and len(value) <= 6:
        return f"tuple[{', '.join(_shape(v, depth + 1) for v in value)}]"
    ellipsis = ", ..." if isinstance(value, tuple) else ""
    return f"{label}[{_union_of(value, depth)}{ellipsis}]"


def _union_of(values: typing.Iterable[object], depth: int) -> str:
    seen: dict[str, None] = {}
    for v in values:
        seen[_shape(v, depth + 1)] = None
        if len(seen) > 4:
            return " | ".join(list(seen)[:4]) + " | ..."
    return " | ".join(seen)


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:37]}..."


__all__ = ["FlowSession", "UntrustworthyData", "check_for", "checked"]

"""Parley's error hierarchy.

One root, :class:`ParleyError`, with subclasses grouped by who is at fault:

* the **flow's author** (:class:`FlowUsageError`, :class:`NonDeterministicFlowError`,
  :class:`UnexpectedPayloadError`) — fix the flow code;
* the **peer** (:class:`UnexpectedFlowEndException`, :class:`ProtocolViolation`) — the other side
  ended, errored or sent something this side did not expect;
* the **infrastructure** (:class:`CodecError`, :class:`StateTransitionError`) — a message or a
  checkpoint could not be encoded/decoded, or an action (commit, send) failed;
* the **flow itself, on purpose** (:class:`FlowException` and its subclasses, which travel to
  counterparties; :class:`HospitalizeFlowException`, which asks the hospital to keep the flow).

:class:`KilledFlowException` derives from :class:`BaseException`: it is a signal the framework uses
to end a killed flow, and ordinary ``except Exception`` blocks in flow code must not swallow it.

Every exception class declared under :class:`ParleyError` (including users' subclasses of
:class:`FlowException`) is registered in :data:`EXCEPTION_TYPES` under its stable name
``"module:QualName"``, so the codec can carry it across the wire and into checkpoints. Attributes
declared as class annotations are the exception's *declared fields*; they are encoded next to the
message. Nothing else on the instance is.
"""

from __future__ import annotations

import dis
import inspect
from typing import Any, ClassVar, get_origin

#: Every exception type the codec may decode, by stable name. Filled by ``__init_subclass__``.
EXCEPTION_TYPES: dict[str, type[BaseException]] = {}


def type_name(cls: type) -> str:
    """Return the stable name of a class: ``"module:QualName"``."""
    return f"{cls.__module__}:{cls.__qualname__}"


_declared_cache: dict[type, tuple[str, ...]] = {}


def declared_fields(cls: type) -> tuple[str, ...]:
    """Names annotated on the classes of ``cls.__mro__``, minus ClassVars and ``_private`` ones.

    These are the fields of an exception that the codec carries next to its message.
    """
    cached = _declared_cache.get(cls)
    if cached is not None:
        return cached
    names: list[str] = []
    for klass in cls.__mro__:
        for field, hint in inspect.get_annotations(klass).items():
            if field.startswith("_") or field in names or _is_classvar(hint):
                continue
            names.append(field)
    result = _declared_cache[cls] = tuple(names)
    return result


def _is_classvar(hint: object) -> bool:
    if isinstance(hint, str):  # postponed annotations: "ClassVar[str | None]"
        head = hint.strip().split("[", 1)[0].strip()
        return head.rsplit(".", 1)[-1] == "ClassVar"
    return hint is ClassVar or get_origin(hint) is ClassVar


def _undeclared_attributes(cls: type) -> list[str]:
    """Public attributes ``cls.__init__`` sets on ``self`` that are not declared fields.

    Reads the compiled ``__init__`` (``self.x = ...`` is a ``STORE_ATTR`` right after loading
    ``self``); attributes set any other way (``setattr``, helpers) are not seen.
    """
    init = cls.__dict__.get("__init__")
    code = getattr(init, "__code__", None)
    if code is None or not code.co_varnames:
        return []
    self_name = code.co_varnames[0]
    declared = set(declared_fields(cls))
    found: list[str] = []
    previous: dis.Instruction | None = None
    for instruction in dis.get_instructions(code):
        if (
            instruction.opname == "STORE_ATTR"
            and previous is not None
            and previous.opname == "LOAD_FAST"
            and previous.argval == self_name
            and not str(instruction.argval).startswith("_")
            and instruction.argval not in declared
            and instruction.argval not in found
        ):
            found.append(str(instruction.argval))
        previous = instruction
    return found


class _Registered:
    """Mixin: register every subclass in :data:`EXCEPTION_TYPES` under its stable name."""

    #: Override to give a class a stable wire name that survives moving the class.
    parley_name: ClassVar[str | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        name = cls.__dict__.get("parley_name") or type_name(cls)
        EXCEPTION_TYPES[name] = cls  # type: ignore[assignment]


class ParleyError(_Registered, Exception):
    """Root of every error Parley raises."""


# --------------------------------------------------------------------------------------------
# Raised by flows on purpose
# --------------------------------------------------------------------------------------------


class FlowException(ParleyError):
    """An error a flow raises *for its counterparties to see*.

    When a flow fails with a ``FlowException`` (or a subclass), its direct counterparties raise the
    same type with the same message (and declared fields) at their next operation on the session.
    Any other exception reaches them as :class:`UnexpectedFlowEndException`, without its message.
    A ``FlowException`` received from a peer and not caught is passed on to *further* peers only as
    :class:`UnexpectedFlowEndException`: errors reach direct counterparties only.

    Subclasses declare extra fields as class annotations; those travel with the message::

        class InsufficientFunds(FlowException):
            needed: int

            def __init__(self, message: str, needed: int) -> None:
                super().__init__(message)
                self.needed = needed
    """

    #: The node that raised this exception, set on the receiving side (``None`` when local).
    peer: str | None
    #: The id of the error on the wire, set on the receiving side.
    error_id: str | None

    def __init__(self, message: str = "", *args: object) -> None:
        super().__init__(message, *args)
        self.peer = None
        self.error_id = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        undeclared = _undeclared_attributes(cls)
        if undeclared:
            names = ", ".join(undeclared)
            raise FlowUsageError(
                f"{type_name(cls)}.__init__ sets {names} without declaring it: only declared "
                "fields travel to counterparties, so the value would be lost on the wire. "
                f"Declare it in the class body (e.g. `{undeclared[0]}: int`), or name it "
                f"`_{undeclared[0]}` if it is local"
            )

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""

    def __str__(self) -> str:
        return self.message


class HospitalizeFlowException(ParleyError):
    """Raise this (or have it anywhere in the cause chain) to have the flow kept for observation.

    The flow is parked with status HOSPITALIZED and retried at the next node start or by
    ``parley hospital retry``.
    """


class TransientError(ParleyError):
    """A failure of the infrastructure that may heal by itself (NATS not connected, a publish not
    acknowledged in time): the hospital retries it a few times with a backoff."""


class FlowTimeoutException(ParleyError):
    """The flow took longer than its timeout; the hospital retries it from its last checkpoint."""


class DeadlineExpiredException(FlowTimeoutException):
    """A deadline the flow's own code set passed (a receive's or a signal's ``timeout``).

    Raised in the flow for its code to handle. Unlike its base class it is not retried by the
    hospital: the retried flow would wait for the same deadline, which has passed.
    """


class ReceiveTimeoutException(DeadlineExpiredException):
    """``receive(..., timeout=...)`` ran out of time: no payload came on ``session``.

    A payload that arrives later is kept for the session's next receive.
    """

    session: str

    def __init__(self, message: str = "", session: str = "") -> None:
        super().__init__(message)
        self.session = session


class SignalTimeoutException(DeadlineExpiredException):
    """``wait_for_signal(name, ..., timeout=...)`` ran out of time without the signal.

    Raised in the flow, for its code to handle (ask again, escalate, give up).
    """

    name: str

    def __init__(self, message: str = "", name: str = "") -> None:
        super().__init__(message)
        self.name = name


class KilledFlowException(BaseException):
    """The flow was killed by an operator (a ``BaseException``, so flows can't swallow it)."""

    flow_id: str

    def __init__(self, flow_id: str, message: str | None = None) -> None:
        super().__init__(message or f"Flow {flow_id} was killed")
        self.flow_id = flow_id

    def __str__(self) -> str:
        return str(self.args[0])


EXCEPTION_TYPES[type_name(KilledFlowException)] = KilledFlowException


# --------------------------------------------------------------------------------------------
# The peer's fault
# --------------------------------------------------------------------------------------------


class UnexpectedFlowEndException(ParleyError):
    """The counterparty ended, errored or rejected the session while this flow still needed it.

    Raised at the next operation on the session. The peer's own error message is *not* included
    unless the peer raised a :class:`FlowException`.
    """

    peer: str | None
    error_id: str | None

    def __init__(self, message: str = "", *args: object) -> None:
        super().__init__(message, *args)
        self.peer = None
        self.error_id = None

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class ProtocolViolation(ParleyError):
    """A peer or the local state machine broke the session protocol (an event that can't happen)."""


class UnknownPartyException(FlowException):
    """``initiate_flow(party)`` named a node the network map does not admit (unknown or revoked).

    Raised at once, at the call, instead of waiting for an answer that can't come.
    """

    party: str

    def __init__(self, message: str = "", party: str = "") -> None:
        super().__init__(message)
        self.party = party


# --------------------------------------------------------------------------------------------
# The flow author's fault
# --------------------------------------------------------------------------------------------


class FlowUsageError(ParleyError):
    """The flow used the API wrongly (awaited a foreign awaitable, reused a session, ...)."""


class UnexpectedPayloadError(FlowUsageError):
    """``receive(T)`` got a payload of another type. The message names both types."""

    expected: str
    actual: str

    def __init__(self, expected: str, actual: str) -> None:
        super().__init__(f"Expected a payload of type {expected} but received {actual}")
        self.expected = expected
        self.actual = actual


class ClientIdInUseError(FlowUsageError):
    """A start repeated a client id with another flow class or other arguments.

    A client id names one flow: repeating it with the same class and arguments is the legitimate
    retry and returns that flow (and its result). Anything else is refused, so that a client never
    mistakes another flow's result for its own. Pick a new client id for a new flow.
    """

    client_id: str
    flow_id: str
    flow_class: str

    def __init__(self, client_id: str, flow_id: str, flow_class: str, what: str) -> None:
        super().__init__(
            f"client id {client_id!r} is already used by flow {flow_id} ({flow_class}), "
            f"started with {what}: use a new client id for a new flow"
        )
        self.client_id = client_id
        self.flow_id = flow_id
        self.flow_class = flow_class


class NonDeterministicFlowError(FlowUsageError):
    """Replay found the flow asking for something other than what its journal recorded.

    The flow's code (or something it reads outside ``now()/random()/uuid()/execute()``) changed
    between the run that wrote the checkpoint and the run that restored it. The hospital keeps
    such flows for observation: deploy the old code again, or kill the flow.
    """


# --------------------------------------------------------------------------------------------
# Infrastructure
# --------------------------------------------------------------------------------------------


class CodecError(ParleyError):
    """A value could not be encoded or decoded by the whitelist codec."""


class SerializationError(CodecError):
    """A value could not be encoded: its type is not whitelisted, or the result is too large."""


class DeserializationError(CodecError):
    """Bytes could not be decoded: garbage, truncated, oversized, too deep, or not whitelisted."""


class OperationError(ParleyError):
    """An external operation raised an exception of a type the codec can't record.

    The flow sees this instead, so that a replay throws exactly what the live run threw; the
    original exception is its ``__cause__`` (in the live run only).
    """


class StateTransitionError(ParleyError):
    """An action (commit, send, ack, ...) failed while executing a transition."""

    action: str

    def __init__(self, message: str, action: str = "") -> None:
        super().__init__(message)
        self.action = action


__all__ = [
    "EXCEPTION_TYPES",
    "ClientIdInUseError",
    "CodecError",
    "DeadlineExpiredException",
    "DeserializationError",
    "FlowException",
    "FlowTimeoutException",
    "FlowUsageError",
    "HospitalizeFlowException",
    "KilledFlowException",
    "NonDeterministicFlowError",
    "OperationError",
    "ParleyError",
    "ProtocolViolation",
    "ReceiveTimeoutException",
    "SerializationError",
    "SignalTimeoutException",
    "StateTransitionError",
    "TransientError",
    "UnexpectedFlowEndException",
    "UnexpectedPayloadError",
    "UnknownPartyException",
    "type_name",
]

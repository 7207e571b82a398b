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

from typing import Any, ClassVar

#: Every exception type the codec may decode, by stable name. Filled by ``__init_subclass__``.
EXCEPTION_TYPES: dict[str, type[BaseException]] = {}


def type_name(cls: type) -> str:
    """Return the stable name of a class: ``"module:QualName"``."""
    return f"{cls.__module__}:{cls.__qualname__}"


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


class FlowTimeoutException(ParleyError):
    """The flow took longer than its timeout; the hospital retries it from its last checkpoint."""


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
    "SerializationError",
    "StateTransitionError",
    "UnexpectedFlowEndException",
    "UnexpectedPayloadError",
    "type_name",
]

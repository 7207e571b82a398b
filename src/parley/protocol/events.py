"""Events: facts fed to the state machine, one at a time, in a flow's mailbox order.

Events come from three places: the flow's own coroutine (it suspended, finished, failed, initiated a
session, entered a sub-flow, recorded a value — processed *immediately*, while the flow is running),
the outside world (a session message was delivered, a timer fired, an operation completed, an
operator killed the flow) and the hospital (its verdict on an errored flow).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from parley.protocol.messages import ExistingSessionMessage
from parley.protocol.requests import Request
from parley.protocol.state import SubFlowFrame


@dataclass(frozen=True, slots=True)
class DoRemainingWork:
    """Look at the state and do whatever is pending. Idempotent."""


@dataclass(frozen=True, slots=True)
class SessionMessageDelivered:
    """A message for one of the flow's sessions arrived; ``delivery`` is its ack token."""

    message: ExistingSessionMessage
    sender: str
    delivery: object = None


@dataclass(frozen=True, slots=True)
class Suspended:
    """The flow's code awaited an IO request."""

    request: Request


@dataclass(frozen=True, slots=True)
class FlowFinished:
    """``call()`` returned ``result``."""

    result: object


@dataclass(frozen=True, slots=True)
class FlowFailed:
    """``call()`` raised, or something failed on the flow's behalf (a fresh error)."""

    error: BaseException


@dataclass(frozen=True, slots=True)
class InitiateFlow:
    """The flow called ``initiate_flow(destination)`` (no network traffic yet).

    ``refusal`` says why the network map does not admit ``destination`` (the host looks it up
    when the flow runs live; a replay answers from the journal instead).
    """

    destination: str
    refusal: str | None = None


@dataclass(frozen=True, slots=True)
class SubFlowEntered:
    """The flow entered a sub-flow."""

    frame: SubFlowFrame


@dataclass(frozen=True, slots=True)
class SubFlowLeft:
    """The innermost sub-flow returned or raised."""


@dataclass(frozen=True, slots=True)
class ValueRecorded:
    """The flow asked for a value that must be the same on replay (``now``, ``random``, ...)."""

    key: str
    value: object


@dataclass(frozen=True, slots=True)
class OperationCompleted:
    """An external operation, query or timer of incarnation ``incarnation`` produced ``value``."""

    value: object
    incarnation: int = 0


@dataclass(frozen=True, slots=True)
class OperationFailed:
    """An external operation or query of incarnation ``incarnation`` raised ``error``."""

    error: BaseException
    incarnation: int = 0


@dataclass(frozen=True, slots=True)
class WokeUp:
    """A durable timer set for ``until`` fired."""

    until: datetime
    incarnation: int = 0


@dataclass(frozen=True, slots=True)
class TimedOut:
    """A ``TimedFlow``'s receive armed by ``ArmTimeout`` at ``suspends`` ran out of time."""

    suspends: int
    incarnation: int


@dataclass(frozen=True, slots=True)
class SignalArrived:
    """A signal ``name`` for the flow was stored: a flow waiting for it should look."""

    name: str


@dataclass(frozen=True, slots=True)
class SignalRead:
    """The answer to ``ReadSignal``: the oldest stored signal ``name`` (``signal_id`` is its row),
    or none (``payload is None``)."""

    name: str
    signal_id: int | None
    payload: bytes | None
    suspends: int
    incarnation: int = 0


@dataclass(frozen=True, slots=True)
class StartErrorPropagation:
    """Hospital verdict: the error can't be treated; fail the flow and tell its counterparties."""


@dataclass(frozen=True, slots=True)
class RetryFromCheckpoint:
    """Hospital verdict: throw this incarnation away and restore the flow from its checkpoint."""


@dataclass(frozen=True, slots=True)
class KeepForObservation:
    """Hospital verdict: park the flow (HOSPITALIZED) until an operator or a restart retries it."""


@dataclass(frozen=True, slots=True)
class KillRequested:
    """An operator killed the flow."""


@dataclass(frozen=True, slots=True)
class PassivationRequested:
    """The host wants the flow out of memory (it is idle, or too many flows are live)."""


@dataclass(frozen=True, slots=True)
class ActionFailed:
    """An action of the previous transition failed; the state reverted to before it."""

    error: BaseException
    action: str


@dataclass(frozen=True, slots=True)
class PeerRevoked:
    """``peer`` was revoked from the network: the flow's sessions with it end, for ``reason``."""

    peer: str
    reason: str


Event = (
    DoRemainingWork
    | SessionMessageDelivered
    | Suspended
    | FlowFinished
    | FlowFailed
    | InitiateFlow
    | SubFlowEntered
    | SubFlowLeft
    | ValueRecorded
    | OperationCompleted
    | OperationFailed
    | WokeUp
    | StartErrorPropagation
    | RetryFromCheckpoint
    | KeepForObservation
    | KillRequested
    | PassivationRequested
    | ActionFailed
    | PeerRevoked
    | SignalArrived
    | SignalRead
    | TimedOut
)

__all__ = [
    "ActionFailed",
    "DoRemainingWork",
    "Event",
    "FlowFailed",
    "FlowFinished",
    "InitiateFlow",
    "KeepForObservation",
    "KillRequested",
    "OperationCompleted",
    "OperationFailed",
    "PassivationRequested",
    "PeerRevoked",
    "RetryFromCheckpoint",
    "SessionMessageDelivered",
    "SignalArrived",
    "SignalRead",
    "StartErrorPropagation",
    "SubFlowEntered",
    "SubFlowLeft",
    "Suspended",
    "TimedOut",
    "ValueRecorded",
    "WokeUp",
]

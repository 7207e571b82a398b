"""Actions, continuations and the result of a transition.

The action-ordering contract
----------------------------
A :class:`Transition` lists actions that the executor (the flow's driver,
``parley.engine.driver.FlowDriver``, through its host) performs **in order**, then obeys the
continuation. The transitions build lists that keep these rules:

1. :class:`PersistCheckpoint` comes first when present. Its operations commit atomically in one
   transaction; the executor performs **no** later action until the commit succeeded.
2. :class:`AcknowledgeMessages` comes after the commit that recorded the consumption of those
   messages, never before: an un-acked message is redelivered after a crash.
3. :class:`SendMessages` comes after the commit of the checkpoint that decided to send. Messages
   carry deterministic ids, so re-sending after a restore is harmless.
4. :class:`SignalStarted` and :class:`RemoveFlow` come after the commit that made them true —
   except that a flow without client id or queued writes is removed (its result given, its Ends
   sent) *before* the commit that only deletes its checkpoint: nothing depends on that commit,
   and a flow restored because it did not happen re-sends the same messages.
5. If an action fails, the executor abandons the rest, keeps the state from *before* the
   transition, and feeds :class:`~parley.protocol.events.ActionFailed` back into the machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from parley.protocol.events import Event
from parley.protocol.messages import Envelope
from parley.protocol.records import StoreOp
from parley.protocol.requests import Execute, Query
from parley.protocol.state import FlowState


@dataclass(frozen=True, slots=True)
class PersistCheckpoint:
    """Commit these store operations in one transaction (group-committed with other flows)."""

    ops: tuple[StoreOp, ...]


@dataclass(frozen=True, slots=True)
class AcknowledgeMessages:
    """Acknowledge the transport deliveries whose consumption has been committed."""

    deliveries: tuple[object, ...]


@dataclass(frozen=True, slots=True)
class SendMessages:
    """Publish these envelopes (pipelined; a publish that fails is an action failure)."""

    envelopes: tuple[Envelope, ...]


@dataclass(frozen=True, slots=True)
class ScheduleEvent:
    """Put an event on this flow's own mailbox."""

    event: Event


@dataclass(frozen=True, slots=True)
class ScheduleWakeUp:
    """Deliver :class:`~parley.protocol.events.WokeUp` at ``until``."""

    until: datetime
    incarnation: int


@dataclass(frozen=True, slots=True)
class ExecuteOperation:
    """Run an external operation off the flow's thread; its outcome comes back as an event."""

    request: Execute
    operation_id: str
    incarnation: int


@dataclass(frozen=True, slots=True)
class RunQuery:
    """Read committed data; the rows come back as an event."""

    request: Query
    incarnation: int


@dataclass(frozen=True, slots=True)
class ArmTimeout:
    """A ``TimedFlow``'s receive: post ``TimedOut`` after ``seconds`` (from now, not recorded:
    a retried flow waits its full timeout again)."""

    seconds: float
    suspends: int
    incarnation: int


@dataclass(frozen=True, slots=True)
class ReadSignal:
    """Look for a stored signal ``name`` of the flow; the answer comes back as ``SignalRead``."""

    name: str
    #: The flow's suspension count when asked: an answer for another suspension is stale.
    suspends: int
    incarnation: int


@dataclass(frozen=True, slots=True)
class SignalStarted:
    """The flow is started (durable, or already finished): whoever started it may be told."""


@dataclass(frozen=True, slots=True)
class RemoveFlow:
    """The flow is over: complete its result (``error`` is ``None`` on success) and forget it.

    ``durable`` is False when the commit that deletes the flow's checkpoint follows this action
    (the host must keep treating the flow as present, and drop its messages, until it commits).
    """

    result: object = None
    error: BaseException | None = None
    durable: bool = True


@dataclass(frozen=True, slots=True)
class Passivate:
    """The flow's state is durable: drop it from memory; its next event restores it by replay."""


@dataclass(frozen=True, slots=True)
class RestoreFromCheckpoint:
    """Discard this incarnation and restore the flow from its last checkpoint (a retry)."""


Action = (
    PersistCheckpoint
    | AcknowledgeMessages
    | SendMessages
    | ScheduleEvent
    | ScheduleWakeUp
    | ExecuteOperation
    | RunQuery
    | ArmTimeout
    | ReadSignal
    | SignalStarted
    | RemoveFlow
    | Passivate
    | RestoreFromCheckpoint
)


@dataclass(frozen=True, slots=True)
class Resume:
    """Resume the flow's code with ``value``."""

    value: object = None


@dataclass(frozen=True, slots=True)
class Throw:
    """Throw ``error`` into the flow's code at its suspension point."""

    error: BaseException


@dataclass(frozen=True, slots=True)
class ProcessEvents:
    """Keep the flow suspended and process its next event."""


@dataclass(frozen=True, slots=True)
class Abort:
    """The flow's coroutine is finished with (removed, retried or killed): close it."""


Continuation = Resume | Throw | ProcessEvents | Abort


@dataclass(frozen=True, slots=True)
class Transition:
    """What one event did: the new state, the actions to perform in order, and what to do next."""

    new_state: FlowState
    actions: tuple[Action, ...] = ()
    continuation: Continuation = ProcessEvents()


__all__ = [
    "Abort",
    "AcknowledgeMessages",
    "Action",
    "ArmTimeout",
    "Continuation",
    "ExecuteOperation",
    "Passivate",
    "PersistCheckpoint",
    "ProcessEvents",
    "ReadSignal",
    "RemoveFlow",
    "RestoreFromCheckpoint",
    "Resume",
    "RunQuery",
    "ScheduleEvent",
    "ScheduleWakeUp",
    "SendMessages",
    "SignalStarted",
    "Throw",
    "Transition",
]

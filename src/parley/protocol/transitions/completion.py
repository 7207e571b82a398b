"""Completions of what a flow waited on outside the network: timers, operations, queries, signals.

A completion counts only if it belongs to the current incarnation of the flow and the flow is still
waiting on a request of the matching kind; anything else is stale (meant for an incarnation the
hospital retried away) and ignored.

Operation results and errors are journaled in their encoded form, and the flow resumes with the
*decoded* value, so the live run sees exactly what a replay would.
"""

from __future__ import annotations

from parley.protocol import codec
from parley.protocol.actions import Transition
from parley.protocol.errors import (
    FlowTimeoutException,
    ReceiveTimeoutException,
    SerializationError,
    SignalTimeoutException,
)
from parley.protocol.events import (
    OperationCompleted,
    OperationFailed,
    SignalArrived,
    SignalRead,
    TimedOut,
    WokeUp,
)
from parley.protocol.evolve import replace
from parley.protocol.records import FlowWrite
from parley.protocol.requests import (
    AwaitSignal,
    Execute,
    Query,
    Receive,
    SendAndReceive,
    Sleep,
)
from parley.protocol.state import FlowState, SessionStatus
from parley.protocol.transitions.common import resume, throw
from parley.protocol.transitions.remaining_work import look_for_signal, receivable

#: The write that consumes a stored signal, committed with the checkpoint that records that the
#: flow received it (the table is the store's ``flow_signal``).
CONSUME_SIGNAL = "DELETE FROM flow_signal WHERE seq = ?"


def _waiting_on(state: FlowState, kinds: tuple[type, ...], incarnation: int) -> bool:
    pending = state.pending
    return (
        pending is not None
        and pending.waiting
        and isinstance(pending.request, kinds)
        and incarnation == state.incarnation
        and not state.removed
        and state.errors is None
    )


def operation_completed(state: FlowState, event: OperationCompleted) -> Transition:
    if not _waiting_on(state, (Execute, Query), event.incarnation):
        return Transition(state)
    assert state.pending is not None
    key = state.pending.fingerprint
    try:
        value = codec.decode(codec.encode(event.value))
    except SerializationError as exc:
        return throw(state, key, exc)
    return resume(state, key, value)


def operation_failed(state: FlowState, event: OperationFailed) -> Transition:
    if not _waiting_on(state, (Execute, Query), event.incarnation):
        return Transition(state)
    assert state.pending is not None
    return throw(state, state.pending.fingerprint, event.error)


def woke_up(state: FlowState, event: WokeUp) -> Transition:
    if _signal_pending(state, event.incarnation):
        assert state.pending is not None
        request = state.pending.request
        assert isinstance(request, AwaitSignal)
        if request.until != event.until:
            return Transition(state)
        timeout = SignalTimeoutException(
            f"no signal {request.name!r} arrived by {event.until.isoformat()}", request.name
        )
        return throw(state, state.pending.fingerprint, timeout)
    if _waiting_on(state, (Receive, SendAndReceive), event.incarnation):
        return _receive_deadline(state, event)
    if not _waiting_on(state, (Sleep,), event.incarnation):
        return Transition(state)
    assert state.pending is not None
    request = state.pending.request
    assert isinstance(request, Sleep)
    if request.until != event.until:
        return Transition(state)
    return resume(state, state.pending.fingerprint, None)


def timed_out(state: FlowState, event: TimedOut) -> Transition:
    """A ``TimedFlow``'s receive took too long: the flow is retried from its checkpoint (the
    hospital's timeout staff), re-sending its messages under the same ids."""
    if not _waiting_on(state, (Receive, SendAndReceive), event.incarnation) or (
        event.suspends != state.suspends
    ):
        return Transition(state)
    assert state.pending is not None
    request = state.pending.request
    assert isinstance(request, Receive | SendAndReceive)
    if receivable(state, request.sessions):
        return Transition(state)  # the reply came first
    timeout = FlowTimeoutException(
        f"no reply within {request.timed} s: retrying from the last checkpoint"
    )
    return throw(state, state.pending.fingerprint, timeout)


def _receive_deadline(state: FlowState, event: WokeUp) -> Transition:
    """A receive's deadline passed: throw, unless what it waits for is there (the reply won)."""
    assert state.pending is not None
    request = state.pending.request
    assert isinstance(request, Receive | SendAndReceive)
    if request.until != event.until or receivable(state, request.sessions):
        return Transition(state)
    missing = next(
        sid
        for sid in request.sessions
        if state.sessions[sid].status is not SessionStatus.INITIATED
        or not state.sessions[sid].inbox
    )
    peer = state.sessions[missing].peer
    timeout = ReceiveTimeoutException(
        f"nothing received from {peer} on session {missing} by {event.until.isoformat()}",
        missing,
    )
    timeout.add_note("a payload that arrives later is kept for the session's next receive")
    return throw(state, state.pending.fingerprint, timeout)


def _signal_pending(state: FlowState, incarnation: int, name: str | None = None) -> bool:
    pending = state.pending
    return (
        pending is not None
        and isinstance(pending.request, AwaitSignal)
        and (name is None or pending.request.name == name)
        and incarnation == state.incarnation
        and not state.removed
        and state.errors is None
    )


def signal_read(state: FlowState, event: SignalRead) -> Transition:
    """A stored signal was found (resume with it; it is deleted with the next checkpoint), or not
    (keep waiting: a ``SignalArrived`` makes the flow look again)."""
    if not _signal_pending(state, event.incarnation, event.name) or (
        event.suspends != state.suspends
    ):
        return Transition(state)  # stale: for an earlier wait, or another incarnation
    assert state.pending is not None
    if event.payload is None or event.signal_id is None:
        return Transition(replace(state, pending=replace(state.pending, waiting=False)))
    key = state.pending.fingerprint
    consumed = FlowWrite(CONSUME_SIGNAL, (event.signal_id,))
    return resume(replace(state, writes=(*state.writes, consumed)), key, event.payload)


def signal_arrived(state: FlowState, event: SignalArrived) -> Transition:
    if not _signal_pending(state, state.incarnation, event.name):
        return Transition(state)  # not waiting for it (yet): it stays stored until it does
    assert state.pending is not None
    if state.pending.waiting:
        return Transition(state)  # a look is under way; its answer comes after this arrival
    request = state.pending.request
    assert isinstance(request, AwaitSignal)
    return look_for_signal(state, state.pending, request)


__all__ = [
    "CONSUME_SIGNAL",
    "operation_completed",
    "operation_failed",
    "signal_arrived",
    "signal_read",
    "timed_out",
    "woke_up",
]

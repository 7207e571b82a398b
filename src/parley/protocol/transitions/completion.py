"""Completions of what a flow waited on outside the network: timers, operations, queries.

A completion counts only if it belongs to the current incarnation of the flow and the flow is still
waiting on a request of the matching kind; anything else is stale (meant for an incarnation the
hospital retried away) and ignored.

Operation results and errors are journaled in their encoded form, and the flow resumes with the
*decoded* value, so the live run sees exactly what a replay would.
"""

from __future__ import annotations

from parley.protocol import codec
from parley.protocol.actions import Transition
from parley.protocol.errors import SerializationError
from parley.protocol.events import OperationCompleted, OperationFailed, WokeUp
from parley.protocol.requests import Execute, Query, Sleep
from parley.protocol.state import FlowState
from parley.protocol.transitions.common import resume, throw


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
    if not _waiting_on(state, (Sleep,), event.incarnation):
        return Transition(state)
    assert state.pending is not None
    request = state.pending.request
    assert isinstance(request, Sleep)
    if request.until != event.until:
        return Transition(state)
    return resume(state, state.pending.fingerprint, None)


__all__ = ["operation_completed", "operation_failed", "woke_up"]

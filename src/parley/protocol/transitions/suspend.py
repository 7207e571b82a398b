"""Starting a flow, and the flow suspending on a request (the checkpoint).

A new flow is not checkpointed until it first suspends: the start record, the session-init it
consumed (responders) and the first checkpoint commit together. Until then, a crash loses nothing
that was promised: the starter has not been told the flow started, and a responder's session-init
is still un-acked, so it is delivered again.
"""

from __future__ import annotations

from dataclasses import replace

from parley.protocol.actions import Resume, ScheduleEvent, Transition
from parley.protocol.errors import NonDeterministicFlowError
from parley.protocol.events import DoRemainingWork, Suspended
from parley.protocol.requests import Request, fingerprint
from parley.protocol.state import FlowState, Pending
from parley.protocol.transitions.common import checkpoint, require


def start(state: FlowState) -> Transition:
    """First DoRemainingWork of a new (or restored, never-suspended) flow: run its code."""
    return Transition(replace(state, started=True), (), Resume(None))


def suspended(state: FlowState, event: Suspended) -> Transition:
    """The flow awaited ``event.request``: checkpoint (unless idempotent), then do the work."""
    require(
        state.started
        and state.pending is None
        and not state.removed
        and state.errors is None
        and state.finishing is None,
        "flow suspended while it was not running",
    )
    state = replace(
        state, pending=Pending(event.request), suspends=state.suspends + 1, restored_pending=None
    )
    work = ScheduleEvent(DoRemainingWork())
    if state.idempotent:
        # Inside an idempotent sub-flow: no checkpoint; a retry replays from the enclosing one.
        return Transition(state, (work,))
    state, actions = checkpoint(state)
    return Transition(state, (*actions, work))


def restore_pending(state: FlowState, request: Request) -> FlowState:
    """Attach the live request a restored flow re-yielded to its state, checking it is the same.

    Raises:
        NonDeterministicFlowError: the flow, re-run from its journal, asked for something other
            than the request recorded in its checkpoint.
    """
    recorded = state.restored_pending
    if recorded is None:
        raise NonDeterministicFlowError(
            f"flow {state.flow_id} suspended on {fingerprint(request)!r} after replaying its "
            "journal, but its checkpoint records no pending request"
        )
    expected, sent = recorded
    actual = fingerprint(request)
    if actual != expected:
        raise NonDeterministicFlowError(
            f"flow {state.flow_id} asked for {actual!r} after replaying its journal, "
            f"but its checkpoint records {expected!r}: the flow's code changed"
        )
    return replace(state, pending=Pending(request, sent=sent), restored_pending=None)


__all__ = ["restore_pending", "start", "suspended"]

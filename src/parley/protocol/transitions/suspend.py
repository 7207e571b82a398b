"""Starting a flow, and the flow suspending on a request (the checkpoint).

A new flow is not checkpointed until it first suspends: the start record, the session-init it
consumed (responders) and the first checkpoint commit together. Until then, a crash loses nothing
that was promised: the starter has not been told the flow started, and a responder's session-init
is still un-acked, so it is delivered again.
"""

from __future__ import annotations

from parley.protocol import ids
from parley.protocol.actions import ExecuteOperation, Resume, ScheduleEvent, Transition
from parley.protocol.errors import NonDeterministicFlowError
from parley.protocol.events import DoRemainingWork, Suspended
from parley.protocol.evolve import replace
from parley.protocol.messages import Data
from parley.protocol.requests import Execute, Receive, Request, fingerprint
from parley.protocol.state import FlowState, Pending, SessionStatus
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
    request = event.request
    state = replace(
        state, pending=Pending(request), suspends=state.suspends + 1, restored_pending=None
    )
    work = ScheduleEvent(DoRemainingWork())
    if state.idempotent or _answerable_now(state, request):
        # No checkpoint: inside an idempotent sub-flow (a retry replays from the enclosing one),
        # or a receive whose data is already here (nothing happens that a checkpoint must
        # precede; the messages stay un-acked until the next one, so a crash redelivers them; a
        # responder's Confirm goes out after that next checkpoint).
        return Transition(state, (work,))
    if isinstance(request, Execute):
        # The operation starts while its checkpoint commits: it runs at least once either way,
        # and its outcome is processed only after the commit.
        pending = replace(state.pending, waiting=True) if state.pending else None
        state = replace(state, pending=pending)
        operation = ExecuteOperation(
            request, ids.operation_id(state.flow_id, state.suspends), state.incarnation
        )
        state, actions = checkpoint(state)
        return Transition(state, (operation, *actions, work))
    state, actions = checkpoint(state)
    return Transition(state, (*actions, work))


def _answerable_now(state: FlowState, request: Request) -> bool:
    """A receive that DoRemainingWork will answer at once from data already delivered."""
    if not isinstance(request, Receive) or not request.sessions:
        return False
    for sid in request.sessions:
        session = state.sessions.get(sid)
        if (
            session is None
            or session.status is not SessionStatus.INITIATED
            or session.closed
            or not session.inbox
            or not isinstance(session.inbox[0], Data)
        ):
            return False
    return True


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

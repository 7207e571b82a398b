"""The flow's ``call()`` returned: wait for outstanding confirmations, then finish.

Finishing commits (when there is anything to commit) the removal of the checkpoint, the result of a
flow started with a client id, the session-init a responder consumed and the flow's queued writes;
then acks, sends End on every session still open, and completes the flow's result.
"""

from __future__ import annotations

from parley.protocol import codec
from parley.protocol.actions import (
    Abort,
    AcknowledgeMessages,
    Action,
    PersistCheckpoint,
    ProcessEvents,
    RemoveFlow,
    SendMessages,
    SignalStarted,
    Transition,
)
from parley.protocol.errors import SerializationError, UnexpectedFlowEndException
from parley.protocol.events import FlowFailed, FlowFinished
from parley.protocol.evolve import replace
from parley.protocol.messages import Envelope
from parley.protocol.records import DeleteFlow, FlowStatus, PutFlowResult, StoreOp
from parley.protocol.state import Finishing, FlowState, SessionStatus
from parley.protocol.transitions.common import end_session, flush_confirms, require, wants_end
from parley.protocol.transitions.error import flow_failed


def flow_finished(state: FlowState, event: FlowFinished) -> Transition:
    require(
        state.started
        and state.pending is None
        and not state.removed
        and state.errors is None
        and state.finishing is None,
        "flow finished while it was not running",
    )
    return finishing_work(replace(state, finishing=Finishing(event.result)))


def finishing_work(state: FlowState) -> Transition:
    """Finish now, or keep waiting for sessions that are still being confirmed."""
    assert state.finishing is not None
    for session in state.sessions.values():
        if session.status is SessionStatus.INITIATING:
            if session.rejection is not None:
                error_id, reason = session.rejection
                rejected = UnexpectedFlowEndException(reason)
                rejected.peer = session.peer
                rejected.error_id = error_id
                return _fail_instead(state, rejected)
            return Transition(state, (), ProcessEvents())
    return _finish(state, state.finishing.result)


def _fail_instead(state: FlowState, error: BaseException) -> Transition:
    return flow_failed(replace(state, finishing=None), FlowFailed(error))


def _finish(state: FlowState, result: object) -> Transition:
    ops: list[StoreOp] = []
    if state.init_fact is not None:
        ops.append(state.init_fact)
    ops.extend(state.writes)
    if state.client_id is not None:
        try:
            value = codec.encode(result)
        except SerializationError as exc:
            error = SerializationError(
                f"the result of flow {state.flow_id} ({type(result).__name__}) can't be stored "
                f"for its client id: {exc}"
            )
            return _fail_instead(state, error)
        ops.append(PutFlowResult(state.flow_id, state.client_id, FlowStatus.COMPLETED, value, None))
    if state.persisted:
        ops.append(DeleteFlow(state.flow_id))  # after the result, which copies the start row
    state, envelopes = flush_confirms(state, final=True)
    state, ends = close_all(state)
    envelopes.extend(ends)
    actions: list[Action] = []
    # Without a client id or writes, the commit only deletes the checkpoint: nothing depends on
    # it, so the result is given and the Ends are sent first (often in the same batch as the
    # flow's last data). A crash before it commits re-runs the flow's last step from the
    # checkpoint, re-sending the same messages, which the receivers drop.
    early = state.client_id is None and not state.writes and state.init_fact is None
    if early:
        if not state.signalled:
            actions.append(SignalStarted())
        actions.append(RemoveFlow(result=result, durable=not ops))
        if envelopes:
            actions.append(SendMessages(tuple(envelopes)))
    if ops:
        actions.append(PersistCheckpoint(tuple(ops)))
    if state.deliveries:
        actions.append(AcknowledgeMessages(state.deliveries))
    if envelopes and not early:
        actions.append(SendMessages(tuple(envelopes)))
    if not early:
        if not state.signalled:
            actions.append(SignalStarted())
        actions.append(RemoveFlow(result=result))
    new = replace(
        state,
        status=FlowStatus.COMPLETED,
        removed=True,
        deliveries=(),
        writes=(),
        init_fact=None,
        start_record=None,
        signalled=True,
        finishing=None,
    )
    return Transition(new, tuple(actions), Abort())


def close_all(state: FlowState) -> tuple[FlowState, list[Envelope]]:
    """Send End on every session that is still open at both ends."""
    envelopes: list[Envelope] = []
    for session in list(state.sessions.values()):
        if wants_end(session):
            state, sent = end_session(state, session)
            envelopes.extend(sent)
    return state, envelopes


__all__ = ["close_all", "finishing_work", "flow_finished"]

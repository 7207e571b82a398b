"""Errors: a flow fails, the hospital decides, the error propagates (or the flow is retried/parked).

An uncaught exception (or a failed action) puts the flow in an errored state and nothing more
happens until the hospital's verdict arrives as an event:

* :class:`StartErrorPropagation` — tell the counterparties and fail the flow. A
  :class:`FlowException` raised *by this flow* reaches its counterparties with its type, message
  and declared fields; anything else (including a FlowException this flow received from another
  peer) reaches them as a hidden error, seen as :class:`UnexpectedFlowEndException`. The
  session that sent us an error is not sent one back. Sessions still waiting for their Confirm
  are waited for, so the responder learns of the failure instead of waiting forever.
* :class:`RetryFromCheckpoint` — restore the flow from its last checkpoint.
* :class:`KeepForObservation` — park it as HOSPITALIZED.

Killing a flow (:func:`kill_requested`) propagates a hidden error at once and removes the flow.
"""

from __future__ import annotations

from parley.protocol import codec, ids
from parley.protocol.actions import (
    Abort,
    AcknowledgeMessages,
    Action,
    PersistCheckpoint,
    ProcessEvents,
    RemoveFlow,
    RestoreFromCheckpoint,
    ScheduleEvent,
    SendMessages,
    SignalStarted,
    Transition,
)
from parley.protocol.errors import (
    FlowException,
    KilledFlowException,
    ParleyError,
    SerializationError,
    StateTransitionError,
    UnexpectedFlowEndException,
)
from parley.protocol.events import (
    ActionFailed,
    DoRemainingWork,
    FlowFailed,
    KeepForObservation,
    StartErrorPropagation,
)
from parley.protocol.evolve import replace
from parley.protocol.messages import Envelope, Error
from parley.protocol.records import DeleteFlow, FlowStatus, PutFlowResult, SetFlowStatus, StoreOp
from parley.protocol.state import ErrorState, FlowError, FlowState, SessionStatus
from parley.protocol.transitions.common import envelope, flush_confirms, peer_sent_end, require


def flow_failed(state: FlowState, event: FlowFailed) -> Transition:
    """Record the error; the hospital's verdict comes as the next event."""
    require(not state.removed, "a removed flow failed")
    error = event.error
    error_id = getattr(error, "error_id", None)
    if not isinstance(error, FlowException | UnexpectedFlowEndException) or not error_id:
        error_id = ids.error_id(state.flow_id, state.error_count)
        state = replace(state, error_count=state.error_count + 1)
    previous = state.errors
    errors = ErrorState(
        errors=(*(previous.errors if previous else ()), FlowError(error_id, error)),
        propagated=previous.propagated if previous else 0,
        propagating=previous.propagating if previous else False,
    )
    new = replace(state, errors=errors, pending=None, writes=(), finishing=None)
    return Transition(new, (), ProcessEvents())


def action_failed(state: FlowState, event: ActionFailed) -> Transition:
    """An action failed; the state is the one from before that transition. Fail the flow with it."""
    wrapped = StateTransitionError(f"{event.action} failed: {event.error!r}", action=event.action)
    wrapped.__cause__ = event.error
    return flow_failed(state, FlowFailed(wrapped))


def start_error_propagation(state: FlowState, event: StartErrorPropagation) -> Transition:
    require(state.errors is not None and not state.removed, "propagation of a flow not errored")
    assert state.errors is not None
    errors = replace(state.errors, propagating=True)
    return Transition(replace(state, errors=errors), (ScheduleEvent(DoRemainingWork()),))


def keep_for_observation(state: FlowState, event: KeepForObservation) -> Transition:
    require(state.errors is not None and not state.removed, "observation of a flow not errored")
    state = replace(state, status=FlowStatus.HOSPITALIZED)
    if not state.persisted:
        return Transition(state, (), ProcessEvents())
    ops = (SetFlowStatus(state.flow_id, FlowStatus.HOSPITALIZED),)
    return Transition(state, (PersistCheckpoint(ops),), ProcessEvents())


def retry_from_checkpoint(state: FlowState) -> Transition:
    require(not state.removed, "retry of a removed flow")
    return Transition(replace(state, removed=True), (RestoreFromCheckpoint(),), Abort())


def errored_work(state: FlowState) -> Transition:
    """DoRemainingWork on an errored flow: wait for the hospital, or propagate and remove."""
    error_state = state.errors
    assert error_state is not None
    if not error_state.propagating:
        return Transition(state, (), ProcessEvents())
    if any(
        s.status is SessionStatus.INITIATING and s.rejection is None
        for s in state.sessions.values()
    ):
        return Transition(state, (), ProcessEvents())  # wait for the Confirm, then tell the peer
    errors = error_state.errors
    state, envelopes = flush_confirms(state, final=True)
    for flow_error in errors[error_state.propagated :]:
        state, sent = _send_error(state, flow_error.error_id, _revealed(flow_error.exception))
        envelopes.extend(sent)
    state = replace(state, errors=replace(error_state, propagated=len(errors)))
    return _remove(state, FlowStatus.FAILED, errors[0].exception, envelopes)


def kill_requested(state: FlowState) -> Transition:
    """Kill the flow now: peers see an unexpected end; the starter a KilledFlowException."""
    if state.removed:
        return Transition(state)
    killed = KilledFlowException(state.flow_id)
    error_id = ids.error_id(state.flow_id, state.error_count)
    state = replace(state, error_count=state.error_count + 1, writes=(), killed=True)
    state, envelopes = flush_confirms(state, final=True)
    state, sent = _send_error(state, error_id, None)
    envelopes.extend(sent)
    return _remove(state, FlowStatus.KILLED, killed, envelopes)


def _revealed(error: BaseException) -> bytes | None:
    """The content an error carries to counterparties: only FlowExceptions raised by this flow."""
    if not isinstance(error, FlowException) or error.peer is not None:
        return None
    try:
        return codec.encode(error)
    except SerializationError:
        return codec.encode(FlowException(str(error)))


def _send_error(
    state: FlowState, error_id: str, content: bytes | None
) -> tuple[FlowState, list[Envelope]]:
    envelopes: list[Envelope] = []
    for session in list(state.sessions.values()):
        if (
            session.status is not SessionStatus.INITIATED
            or session.peer_errored
            or session.closed
            or peer_sent_end(session)
            or session.peer_session is None
        ):
            continue
        seq = session.next_send_seq
        message = Error(session=session.peer_session, seq=seq, error_id=error_id, exception=content)
        envelopes.append(
            envelope(state, session.peer, ids.message_id(session.session_id, seq), message)
        )
        state = state.with_session(replace(session, next_send_seq=seq + 1))
    return state, envelopes


def _remove(
    state: FlowState, status: FlowStatus, error: BaseException, envelopes: list[Envelope]
) -> Transition:
    ops: list[StoreOp] = []
    if state.init_fact is not None:
        ops.append(state.init_fact)
    if state.client_id is not None:
        ops.append(PutFlowResult(state.flow_id, state.client_id, status, None, _stored(error)))
    if state.persisted:
        ops.append(DeleteFlow(state.flow_id))  # after the result, which copies the start row
    actions: list[Action] = []
    if ops:
        actions.append(PersistCheckpoint(tuple(ops)))
    if state.deliveries:
        actions.append(AcknowledgeMessages(state.deliveries))
    if envelopes:
        actions.append(SendMessages(tuple(envelopes)))
    if not state.signalled:
        actions.append(SignalStarted())
    actions.append(RemoveFlow(error=error))
    new = replace(
        state,
        status=status,
        removed=True,
        deliveries=(),
        init_fact=None,
        start_record=None,
        signalled=True,
    )
    return Transition(new, tuple(actions), Abort())


def _stored(error: BaseException) -> bytes:
    """The error kept for a client id: the exception itself, or a description of it."""
    try:
        return codec.encode(error)
    except SerializationError:
        return codec.encode(
            ParleyError(f"{type(error).__module__}.{type(error).__qualname__}: {error}")
        )


__all__ = [
    "action_failed",
    "errored_work",
    "flow_failed",
    "keep_for_observation",
    "kill_requested",
    "retry_from_checkpoint",
    "start_error_propagation",
]

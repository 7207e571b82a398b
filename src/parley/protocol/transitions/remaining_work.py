"""DoRemainingWork on a started flow: carry out the pending request, or keep waiting.

This runs after the request's checkpoint committed (or was skipped), so everything it sends is
covered by that checkpoint: a restore processes the same request again and re-sends the same
messages under the same ids.

================  ===================================================================
request           what DoRemainingWork does
================  ===================================================================
Send              Init (uninitiated) / buffer (initiating) / Data (initiated); resume
Receive           Init to uninitiated sessions; resume when every session has data (arm the
                  deadline once, if the receive has one)
SendAndReceive    the send half once (``Pending.sent``), then as Receive
CloseSessions     End on each initiated session; closing twice is accepted
GetFlowInfo       Init to uninitiated sessions; resume when every session is confirmed
Sleep             arm the timer once; resume on WokeUp
Execute / Query   start the operation once; resume on its completion
ForceCheckpoint   resume (the checkpoint was the point)
AwaitSignal       arm the timeout once; look for a stored signal (again on SignalArrived)
================  ===================================================================

Before any session is used, the first relevant error is thrown instead: a rejected init, an Error at
the head of an inbox, or a session that ended.
"""

from __future__ import annotations

from parley.protocol import ids
from parley.protocol.actions import (
    Action,
    ArmTimeout,
    ExecuteOperation,
    ProcessEvents,
    ReadSignal,
    RunQuery,
    ScheduleWakeUp,
    SendMessages,
    Transition,
)
from parley.protocol.errors import FlowUsageError, UnexpectedFlowEndException
from parley.protocol.evolve import replace
from parley.protocol.messages import Data, Envelope
from parley.protocol.requests import (
    AwaitSignal,
    CloseSessions,
    Execute,
    ForceCheckpoint,
    GetFlowInfo,
    Payloads,
    Query,
    Receive,
    Send,
    SendAndReceive,
    Sleep,
    sessions_of,
)
from parley.protocol.state import FlowState, Pending, SessionStatus
from parley.protocol.transitions.common import (
    checkpoint,
    end_session,
    ended_session_error,
    flush_confirms,
    peer_sent_end,
    resume,
    send_payload,
    session_error,
    throw,
)

MISMATCHED_END = (
    "Received session end message instead of a data session message. Mismatched send and receive?"
)


def with_sends(transition: Transition, envelopes: list[Envelope]) -> Transition:
    """Put ``SendMessages(envelopes)`` in front of a transition's actions."""
    if not envelopes:
        return transition
    actions: tuple[Action, ...] = (SendMessages(tuple(envelopes)), *transition.actions)
    return Transition(transition.new_state, actions, transition.continuation)


def pending_work(state: FlowState, pending: Pending) -> Transition:
    """Carry out (or keep waiting on) the pending request.

    A flow that keeps waiting while it holds deliveries it has not consumed (early messages,
    messages on a session it is not reading, a Confirm before the reply) checkpoints them, so that
    they are acked now rather than at its next suspension: otherwise a peer could keep a node's
    consumer full of un-acked messages for as long as the flow waits.
    """
    transition = _pending_work(state, pending)
    waiting = transition.new_state
    if (
        isinstance(transition.continuation, ProcessEvents)
        and waiting.deliveries
        and waiting.pending is not None
        and waiting.errors is None
        and waiting.finishing is None
        and not waiting.idempotent
        and waiting.restored_pending is None
    ):
        waiting, persist = checkpoint(waiting)
        return Transition(waiting, (*transition.actions, *persist), transition.continuation)
    return transition


def _pending_work(state: FlowState, pending: Pending) -> Transition:
    state, envelopes = flush_confirms(state)
    key = pending.fingerprint
    request = pending.request
    if isinstance(request, Send | Receive | SendAndReceive | CloseSessions | GetFlowInfo):
        sessions = sessions_of(request)
        if isinstance(request, CloseSessions):
            sessions = tuple(s for s in sessions if s in state.sessions)
        found = session_error(state, sessions)
        if found is not None:
            state, error = found
            return with_sends(throw(state, key, error), envelopes)
    match request:
        case Send(payloads=payloads):
            return _send(state, key, payloads, envelopes)
        case Receive(sessions=sessions):
            return _receive(state, pending, sessions, envelopes)
        case SendAndReceive(payloads=payloads, sessions=sessions):
            if not pending.sent:
                ended = _unusable(state, tuple(s for s, _ in payloads))
                if ended is not None:
                    return with_sends(throw(state, key, ended), envelopes)
                for sid, payload in payloads:
                    state, sent = send_payload(state, state.sessions[sid], payload)
                    envelopes.extend(sent)
                pending = replace(pending, sent=True)
                state = replace(state, pending=pending)
            return _receive(state, pending, sessions, envelopes)
        case CloseSessions(sessions=sessions):
            return _close(state, key, sessions, envelopes)
        case GetFlowInfo(sessions=sessions):
            return _flow_info(state, pending, sessions, envelopes)
        case Sleep(until=until):
            return _start_once(state, pending, ScheduleWakeUp(until, state.incarnation), envelopes)
        case Execute():
            op_id = ids.operation_id(state.flow_id, state.suspends)
            action = ExecuteOperation(request, op_id, state.incarnation)
            return _start_once(state, pending, action, envelopes)
        case Query():
            return _start_once(state, pending, RunQuery(request, state.incarnation), envelopes)
        case ForceCheckpoint():
            return with_sends(resume(state, key, None), envelopes)
        case AwaitSignal():
            return with_sends(look_for_signal(state, pending, request), envelopes)


def look_for_signal(state: FlowState, pending: Pending, request: AwaitSignal) -> Transition:
    """Arm the signal's timeout (once), and ask for a stored signal unless a look is under way.

    ``Pending.sent`` means the timeout is armed; ``Pending.waiting`` that a ReadSignal is out.
    """
    actions: list[Action] = []
    if not pending.sent and request.until is not None:
        actions.append(ScheduleWakeUp(request.until, state.incarnation))
    if not pending.waiting:
        actions.append(ReadSignal(request.name, state.suspends, state.incarnation))
    state = replace(state, pending=replace(pending, sent=True, waiting=True))
    return Transition(state, tuple(actions))


def _unusable(state: FlowState, sessions: tuple[str, ...]) -> BaseException | None:
    """An error if any session was closed by us or ended by the peer (End at the head)."""
    for sid in sessions:
        session = state.sessions[sid]
        if session.closed or session.peer_ended:
            return ended_session_error(sid)
    return None


def _send(state: FlowState, key: str, payloads: Payloads, envelopes: list[Envelope]) -> Transition:
    ended = _unusable(state, tuple(s for s, _ in payloads))
    if ended is not None:
        return with_sends(throw(state, key, ended), envelopes)
    for sid, payload in payloads:
        state, sent = send_payload(state, state.sessions[sid], payload)
        envelopes.extend(sent)
    return with_sends(resume(state, key, None), envelopes)


def _receive(
    state: FlowState, pending: Pending, sessions: tuple[str, ...], envelopes: list[Envelope]
) -> Transition:
    key = pending.fingerprint
    for sid in sessions:
        session = state.sessions[sid]
        if session.status is SessionStatus.UNINITIATED:
            state, sent = send_payload(state, session, None)
            envelopes.extend(sent)
    for sid in sessions:
        session = state.sessions[sid]
        if session.closed:
            return with_sends(throw(state, key, ended_session_error(sid)), envelopes)
        if session.peer_ended:
            error = UnexpectedFlowEndException(MISMATCHED_END)
            error.peer = session.peer
            return with_sends(throw(state, key, error), envelopes)
    if not receivable(state, sessions):
        pending = replace(pending, sent=True)
        actions: tuple[Action, ...] = ()
        until = getattr(pending.request, "until", None)
        timed = getattr(pending.request, "timed", None)
        if until is not None and not pending.waiting:  # arm the deadline once
            actions = (ScheduleWakeUp(until, state.incarnation),)
            pending = replace(pending, waiting=True)
        elif timed is not None and not pending.waiting:  # a TimedFlow: retried if too slow
            actions = (ArmTimeout(timed, state.suspends, state.incarnation),)
            pending = replace(pending, waiting=True)
        state = replace(state, pending=pending)
        return with_sends(Transition(state, actions, ProcessEvents()), envelopes)
    received: dict[str, bytes] = {}
    for sid in sessions:
        session = state.sessions[sid]
        head = session.inbox[0]
        assert isinstance(head, Data)
        received[sid] = head.payload
        state = state.with_session(replace(session, inbox=session.inbox[1:]))
    return with_sends(resume(state, key, received), envelopes)


def receivable(state: FlowState, sessions: tuple[str, ...]) -> bool:
    """Whether every one of ``sessions`` is confirmed and has a message to take."""
    return all(
        state.sessions[sid].status is SessionStatus.INITIATED and state.sessions[sid].inbox
        for sid in sessions
    )


def _close(
    state: FlowState, key: str, sessions: tuple[str, ...], envelopes: list[Envelope]
) -> Transition:
    for sid in sessions:
        session = state.sessions.get(sid)
        if session is None or session.closed:
            continue  # closing twice, or a session already gone, is accepted
        if session.status is not SessionStatus.INITIATED:
            error = FlowUsageError(f"The session {sid} was closed before it was initialised")
            return with_sends(throw(state, key, error), envelopes)
        if peer_sent_end(session):
            state = state.with_session(replace(session, closed=True))
            continue
        state, sent = end_session(state, session)
        envelopes.extend(sent)
    return with_sends(resume(state, key, None), envelopes)


def _flow_info(
    state: FlowState, pending: Pending, sessions: tuple[str, ...], envelopes: list[Envelope]
) -> Transition:
    for sid in sessions:
        session = state.sessions[sid]
        if session.status is SessionStatus.UNINITIATED:
            state, sent = send_payload(state, session, None)
            envelopes.extend(sent)
    infos = {sid: state.sessions[sid].peer_info for sid in sessions}
    if all(state.sessions[sid].status is SessionStatus.INITIATED for sid in sessions):
        return with_sends(resume(state, pending.fingerprint, infos), envelopes)
    state = replace(state, pending=replace(pending, sent=True))
    return with_sends(Transition(state, (), ProcessEvents()), envelopes)


def _start_once(
    state: FlowState, pending: Pending, action: Action, envelopes: list[Envelope]
) -> Transition:
    if pending.waiting:
        return with_sends(Transition(state), envelopes)
    state = replace(state, pending=replace(pending, waiting=True))
    return with_sends(Transition(state, (action,)), envelopes)


__all__ = ["MISMATCHED_END", "look_for_signal", "pending_work", "receivable", "with_sends"]

"""A session message was delivered to the flow.

Sequencing rules, per session and direction:

* ``seq < next_recv_seq``: already consumed — a duplicate (redelivery, or a peer re-sending after
  its restore). Dropped; its delivery is acked with the next commit.
* ``seq == next_recv_seq``: appended to the inbox, then any early messages that now follow in order.
* ``seq > next_recv_seq`` (or before the Confirm arrived): kept aside in ``early`` until its turn.

The message's delivery token joins the flow's pending acks either way, so the message is acked only
once the checkpoint that records its consumption (or its being buffered) has committed. Every
delivery schedules DoRemainingWork, which resumes the flow if it was waiting for this.
"""

from __future__ import annotations

from parley.protocol import ids
from parley.protocol.actions import (
    AcknowledgeMessages,
    Action,
    ScheduleEvent,
    SendMessages,
    Transition,
)
from parley.protocol.events import DoRemainingWork, SessionMessageDelivered
from parley.protocol.evolve import replace
from parley.protocol.messages import Confirm, Data, Envelope, FlowInfo, Reject, Sequenced
from parley.protocol.state import FlowState, SessionState, SessionStatus
from parley.protocol.transitions.common import envelope


def delivered(state: FlowState, event: SessionMessageDelivered) -> Transition:
    message = event.message
    session = state.sessions.get(message.session)
    if state.removed or session is None or session.peer != event.sender:
        # Not (or no longer) ours to consume: the session ended, or the sender is not the peer.
        acks: tuple[Action, ...] = ()
        if event.delivery is not None:
            acks = (AcknowledgeMessages((event.delivery,)),)
        return Transition(state, acks)
    if event.delivery is not None:
        state = replace(state, deliveries=(*state.deliveries, event.delivery))
    envelopes: list[Envelope] = []
    match message:
        case Confirm():
            session, envelopes = _confirmed(state, session, message)
        case Reject():
            if session.status is SessionStatus.INITIATING and session.rejection is None:
                session = replace(session, rejection=(message.error_id, message.reason))
        case _:
            session = _sequenced(session, message)
    state = state.with_session(session)
    actions: list[Action] = []
    if envelopes:
        actions.append(SendMessages(tuple(envelopes)))
    actions.append(ScheduleEvent(DoRemainingWork()))
    return Transition(state, tuple(actions))


def _confirmed(
    state: FlowState, session: SessionState, confirm: Confirm
) -> tuple[SessionState, list[Envelope]]:
    if session.status is not SessionStatus.INITIATING or session.rejection is not None:
        return session, []  # a duplicate Confirm (or one after a Reject): nothing to do
    session = replace(
        session,
        status=SessionStatus.INITIATED,
        peer_session=confirm.initiated_session,
        peer_info=FlowInfo(confirm.flow_version, confirm.app),
        next_recv_seq=1,
        initiating_flow=None,
        buffered=(),
    )
    envelopes = [
        envelope(
            state,
            session.peer,
            ids.message_id(session.session_id, seq),
            Data(session=confirm.initiated_session, seq=seq, payload=payload),
        )
        for seq, payload in _buffered_of(state, session.session_id)
    ]
    early, session = session.early, replace(session, early=())
    for message in early:
        session = _sequenced(session, message)
    return session, envelopes


def _buffered_of(state: FlowState, session_id: str) -> tuple[tuple[int, bytes], ...]:
    return state.sessions[session_id].buffered


def _sequenced(session: SessionState, message: Sequenced) -> SessionState:
    expected = session.next_recv_seq
    if expected == 0 or message.seq > expected:
        if any(m.seq == message.seq for m in session.early):
            return session  # the same early message twice
        early = tuple(sorted((*session.early, message), key=lambda m: m.seq))
        return replace(session, early=early)
    if message.seq < expected:
        return session  # already consumed: a duplicate
    inbox = (*session.inbox, message)
    expected += 1
    early = session.early
    while early and early[0].seq <= expected:
        head, early = early[0], early[1:]
        if head.seq == expected:
            inbox = (*inbox, head)
            expected += 1
    return replace(session, inbox=inbox, next_recv_seq=expected, early=early)


__all__ = ["delivered"]

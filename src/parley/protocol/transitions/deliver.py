"""A session message was delivered to the flow.

Sequencing rules, per session and direction:

* ``seq < next_recv_seq``, or an early message already held: a duplicate (redelivery, or a peer
  re-sending after its restore). Dropped, and its delivery acked at once: it carries nothing new.
* ``seq == next_recv_seq``: appended to the inbox, then any early messages that now follow in order.
* ``seq > next_recv_seq`` (or before the Confirm arrived): kept aside in ``early`` until its turn.

A session holds at most :data:`MAX_UNCONSUMED` messages the flow has not taken yet (inbox and
early ones together), and an early message may be at most that far ahead of the next one expected.
A message beyond either bound is a protocol violation by the peer (a correct peer can't get that
far ahead unless the flow never reads the session): it is dropped and acked, and the session ends
with the reason — the flow gets :class:`~parley.protocol.errors.UnexpectedFlowEndException` when it
next uses it, and the peer is told when the flow ends. So a peer can't make a node hold messages
without bound.

A consumed or held message's delivery token joins the flow's pending acks, so the message is acked
only once the checkpoint that records its consumption (or its being held) has committed; a flow
that keeps waiting with messages held writes that checkpoint at once (see ``remaining_work``), so
held messages never pile up un-acked. Every delivery schedules DoRemainingWork, which resumes the
flow if it was waiting for this.
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
from parley.protocol.events import DoRemainingWork, PeerRevoked, SessionMessageDelivered
from parley.protocol.evolve import replace
from parley.protocol.messages import Confirm, Data, Envelope, FlowInfo, Reject, Sequenced
from parley.protocol.state import FlowState, SessionState, SessionStatus
from parley.protocol.transitions.common import envelope

#: Messages a session may hold that its flow has not taken yet; also how far ahead of the next
#: expected sequence number an early message may be.
MAX_UNCONSUMED = 1000


def delivered(state: FlowState, event: SessionMessageDelivered) -> Transition:
    message = event.message
    session = state.sessions.get(message.session)
    if state.removed or session is None or session.peer != event.sender:
        # Not (or no longer) ours to consume: the session ended, or the sender is not the peer.
        return _ack_now(state, event)
    envelopes: list[Envelope] = []
    match message:
        case Confirm():
            if session.status is not SessionStatus.INITIATING or session.rejection is not None:
                return _ack_now(state, event)  # a duplicate Confirm (or one after a Reject)
            session, envelopes = _confirmed(state, session, message)
        case Reject():
            if session.status is not SessionStatus.INITIATING or session.rejection is not None:
                return _ack_now(state, event)
            session = replace(session, rejection=(message.error_id, message.reason))
        case _:
            if _is_duplicate(session, message):
                return _ack_now(state, event)
            if session.rejection is not None:
                return _ack_now(state, event)  # the session ended already: nothing more counts
            violation = _violation(session, message)
            if violation is not None:
                session = replace(
                    session, rejection=(ids.violation_id(session.session_id), violation)
                )
                return _ack_now(state.with_session(session), event, schedule=True)
            session = _sequenced(session, message)
    if event.delivery is not None:
        state = replace(state, deliveries=(*state.deliveries, event.delivery))
    state = state.with_session(session)
    actions: list[Action] = []
    if envelopes:
        actions.append(SendMessages(tuple(envelopes)))
    actions.append(ScheduleEvent(DoRemainingWork()))
    return Transition(state, tuple(actions))


def _ack_now(
    state: FlowState, event: SessionMessageDelivered, *, schedule: bool = False
) -> Transition:
    """Drop the message and ack its delivery at once (it changes nothing that must be stored)."""
    actions: list[Action] = []
    if event.delivery is not None:
        actions.append(AcknowledgeMessages((event.delivery,)))
    if schedule:
        actions.append(ScheduleEvent(DoRemainingWork()))
    return Transition(state, tuple(actions))


def _is_duplicate(session: SessionState, message: Sequenced) -> bool:
    if session.next_recv_seq != 0 and message.seq < session.next_recv_seq:
        return True
    return any(m.seq == message.seq for m in session.early)


def _violation(session: SessionState, message: Sequenced) -> str | None:
    """Why ``message`` breaks the session's bounds (see the module docstring), if it does."""
    ahead = message.seq - max(session.next_recv_seq, 1)
    if ahead >= MAX_UNCONSUMED:
        return (
            f"{session.peer} sent message {message.seq} of session {session.session_id} while "
            f"{max(session.next_recv_seq, 1)} was expected: more than {MAX_UNCONSUMED} ahead"
        )
    if len(session.inbox) + len(session.early) >= MAX_UNCONSUMED:
        return (
            f"{session.peer} sent more than {MAX_UNCONSUMED} messages on session "
            f"{session.session_id} that the flow has not received (held ahead of the flow)"
        )
    return None


def _confirmed(
    state: FlowState, session: SessionState, confirm: Confirm
) -> tuple[SessionState, list[Envelope]]:
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
    """Take a message that is not a duplicate: into the inbox, or kept aside until its turn."""
    expected = session.next_recv_seq
    if expected == 0 or message.seq > expected:
        early = tuple(sorted((*session.early, message), key=lambda m: m.seq))
        return replace(session, early=early)
    inbox = (*session.inbox, message)
    expected += 1
    early = session.early
    while early and early[0].seq <= expected:
        head, early = early[0], early[1:]
        if head.seq == expected:
            inbox = (*inbox, head)
            expected += 1
    return replace(session, inbox=inbox, next_recv_seq=expected, early=early)


def peer_revoked(state: FlowState, event: PeerRevoked) -> Transition:
    """End every open session with a revoked node; the flow sees why when it next uses one.

    The peer is not told (it is no longer part of the network, and may be gone): the sessions are
    marked as errored by the peer, so no Error or End is ever sent to it.
    """
    changed = False
    for session in list(state.sessions.values()):
        if session.peer != event.peer or session.rejection is not None or session.closed:
            continue
        error_id = ids.violation_id(session.session_id)
        state = state.with_session(
            replace(session, rejection=(error_id, event.reason), peer_errored=True)
        )
        changed = True
    if not changed:
        return Transition(state)
    return Transition(state, (ScheduleEvent(DoRemainingWork()),))


__all__ = ["delivered", "peer_revoked"]

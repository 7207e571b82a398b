"""A peer can't make a flow hold its messages without bound: the session window, and the
checkpoint a waiting flow writes so that what it holds is acked."""

from __future__ import annotations

import pytest

from parley.protocol import codec
from parley.protocol.actions import (
    AcknowledgeMessages,
    PersistCheckpoint,
    ProcessEvents,
    SendMessages,
    Throw,
)
from parley.protocol.errors import UnexpectedFlowEndException
from parley.protocol.events import (
    DoRemainingWork,
    FlowFailed,
    SessionMessageDelivered,
    StartErrorPropagation,
    Suspended,
)
from parley.protocol.messages import Data, Error
from parley.protocol.requests import Receive
from parley.protocol.state import FlowState
from parley.protocol.transitions import transition
from parley.protocol.transitions.deliver import MAX_UNCONSUMED
from tests.protocol.test_transitions import running, with_initiated_session


def waiting_on(state: FlowState, sid: str) -> FlowState:
    """The flow suspends on a receive from ``sid`` (nothing has arrived)."""
    state = transition(state, Suspended(Receive((sid,)))).new_state
    result = transition(state, DoRemainingWork())
    assert isinstance(result.continuation, ProcessEvents)
    return result.new_state


def acks_of(actions: tuple[object, ...]) -> list[object]:
    return [d for a in actions if isinstance(a, AcknowledgeMessages) for d in a.deliveries]


def test_a_waiting_flow_checkpoints_an_early_message_so_that_it_is_acked() -> None:
    state, sid = with_initiated_session(running())
    state = waiting_on(state, sid)
    state = transition(state, SessionMessageDelivered(Data(sid, 2, b"\x02"), "bob", "t2")).new_state
    result = transition(state, DoRemainingWork())
    assert isinstance(result.continuation, ProcessEvents)
    assert isinstance(result.actions[0], PersistCheckpoint)
    assert "t2" in acks_of(result.actions)
    assert [m.seq for m in result.new_state.sessions[sid].early] == [2]
    assert result.new_state.deliveries == ()
    # and nothing more is written while nothing more arrives
    assert transition(result.new_state, DoRemainingWork()).actions == ()


def test_a_flow_that_can_go_on_does_not_write_an_extra_checkpoint() -> None:
    state, sid = with_initiated_session(running())
    state = waiting_on(state, sid)
    state = transition(state, SessionMessageDelivered(Data(sid, 1, b"\x01"), "bob", "t1")).new_state
    result = transition(state, DoRemainingWork())
    assert not any(isinstance(a, PersistCheckpoint) for a in result.actions)


@pytest.mark.parametrize("seq", [1 + MAX_UNCONSUMED, 2**70], ids=["window", "2**70"])
def test_a_message_too_far_ahead_ends_the_session_with_the_reason(seq: int) -> None:
    state, sid = with_initiated_session(running())
    state = waiting_on(state, sid)
    result = transition(state, SessionMessageDelivered(Data(sid, seq, b"\x00"), "bob", "far"))
    assert acks_of(result.actions) == ["far"], "a refused message is acked at once"
    assert result.new_state.sessions[sid].early == ()
    thrown = transition(result.new_state, DoRemainingWork())
    assert isinstance(thrown.continuation, Throw)
    error = thrown.continuation.error
    assert isinstance(error, UnexpectedFlowEndException)
    assert "ahead" in str(error)
    assert error.peer == "bob"


def test_more_unconsumed_messages_than_the_window_end_the_session() -> None:
    state, sid = with_initiated_session(running())
    for seq in range(1, MAX_UNCONSUMED + 1):  # in order, but the flow never reads them
        state = transition(
            state, SessionMessageDelivered(Data(sid, seq, b"\x00"), "bob", seq)
        ).new_state
    assert len(state.sessions[sid].inbox) == MAX_UNCONSUMED
    last = MAX_UNCONSUMED + 1
    result = transition(state, SessionMessageDelivered(Data(sid, last, b"\x00"), "bob", "over"))
    assert acks_of(result.actions) == ["over"]
    rejection = result.new_state.sessions[sid].rejection
    assert rejection is not None
    assert "has not received" in rejection[1]


def test_the_peer_is_told_when_the_flow_fails_of_the_violation() -> None:
    state, sid = with_initiated_session(running())
    state = waiting_on(state, sid)
    state = transition(state, SessionMessageDelivered(Data(sid, 2**70, b""), "bob", "x")).new_state
    thrown = transition(state, DoRemainingWork())
    assert isinstance(thrown.continuation, Throw)
    state = transition(thrown.new_state, FlowFailed(thrown.continuation.error)).new_state
    state = transition(state, StartErrorPropagation()).new_state
    result = transition(state, DoRemainingWork())
    sent = [e for a in result.actions if isinstance(a, SendMessages) for e in a.envelopes]
    assert [type(e.body) for e in sent] == [Error]
    assert sent[0].recipient == "bob"


def test_messages_after_the_violation_are_acked_and_dropped() -> None:
    state, sid = with_initiated_session(running())
    state = transition(state, SessionMessageDelivered(Data(sid, 2**70, b""), "bob", "x")).new_state
    result = transition(state, SessionMessageDelivered(Data(sid, 1, codec.encode(1)), "bob", "y"))
    assert acks_of(result.actions) == ["y"]
    assert result.new_state.sessions[sid].inbox == ()

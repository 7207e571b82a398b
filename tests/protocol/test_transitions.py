"""Table-driven tests of single transitions: sequencing, checkpoints, finishing, errors."""

from __future__ import annotations

from dataclasses import replace

import pytest

from parley.protocol import codec
from parley.protocol.actions import (
    Abort,
    AcknowledgeMessages,
    PersistCheckpoint,
    ProcessEvents,
    RemoveFlow,
    Resume,
    ScheduleEvent,
    SendMessages,
    SignalStarted,
    Throw,
)
from parley.protocol.errors import FlowException, ProtocolViolation, UnexpectedFlowEndException
from parley.protocol.events import (
    DoRemainingWork,
    FlowFailed,
    FlowFinished,
    InitiateFlow,
    SessionMessageDelivered,
    StartErrorPropagation,
    Suspended,
)
from parley.protocol.messages import Confirm, Data, End, Error, FlowInfo
from parley.protocol.records import (
    DeleteFlow,
    FlowWrite,
    PutCheckpoint,
    PutFlowResult,
    PutFlowStart,
    PutProcessedInit,
    StartKind,
)
from parley.protocol.requests import Receive, Send
from parley.protocol.state import (
    FlowState,
    SessionStatus,
    SubFlowFrame,
    decode_header,
    new_flow,
    new_responder,
)
from parley.protocol.transitions import transition

FLOW = "a" * 32
FRAME = SubFlowFrame("tests:Flow", "tests:Flow", 1, False)
START = PutFlowStart(FLOW, "tests:Flow", StartKind.RPC, codec.encode(([], {})))


def running(client_id: str | None = None) -> FlowState:
    state = new_flow(FLOW, "alice", FRAME, START, client_id)
    return transition(state, DoRemainingWork()).new_state


def initiate(state: FlowState) -> tuple[FlowState, str]:
    """Initiate a session to bob (nothing sent yet)."""
    result = transition(state, InitiateFlow("bob"))
    assert isinstance(result.continuation, Resume)
    sid = result.continuation.value
    assert isinstance(sid, str)
    return result.new_state, sid


def with_initiated_session(state: FlowState) -> tuple[FlowState, str]:
    """Initiate a session to bob, send once (Init), and have bob confirm it."""
    state, sid = initiate(state)
    state = transition(state, Suspended(Send(((sid, codec.encode(1)),)))).new_state
    state = transition(state, DoRemainingWork()).new_state
    confirm = Confirm(sid, "bobflow.0", 1, "tests")
    state = transition(state, SessionMessageDelivered(confirm, "bob", "d0")).new_state
    return state, sid


def deliver(state: FlowState, message: Data | End | Error, delivery: object = None) -> FlowState:
    return transition(state, SessionMessageDelivered(message, "bob", delivery)).new_state


def test_a_new_flow_starts_its_code_without_writing_anything() -> None:
    result = transition(new_flow(FLOW, "alice", FRAME, START), DoRemainingWork())
    assert result.actions == ()
    assert result.continuation == Resume(None)
    assert result.new_state.started


def test_the_first_suspension_commits_start_record_and_checkpoint_then_signals_started() -> None:
    state = running()
    result = transition(state, Suspended(Receive(())))
    persist, signal, work = result.actions
    assert isinstance(persist, PersistCheckpoint)
    assert [type(op) for op in persist.ops] == [PutFlowStart, PutCheckpoint]
    checkpoint = persist.ops[1]
    assert isinstance(checkpoint, PutCheckpoint)
    assert checkpoint.pending_request == "receive"
    assert checkpoint.suspends == 1
    assert isinstance(signal, SignalStarted)
    assert work == ScheduleEvent(DoRemainingWork())
    restored = decode_header(FLOW, checkpoint.header, checkpoint.status)
    assert restored.restored_pending == ("recv ", False)
    assert restored.suspends == 1


def test_a_responder_records_its_init_and_acks_it_with_its_first_checkpoint() -> None:
    state = new_responder(
        FLOW,
        "bob",
        FRAME,
        START,
        sender="alice",
        initiator_session="alice.0",
        peer_info=FlowInfo(1, "tests"),
        first_payload=codec.encode(3),
        flow_version=1,
        delivery="init-token",
    )
    sid = f"{FLOW}.0"
    state = transition(state, DoRemainingWork()).new_state
    # the first payload is already here: receiving it needs no checkpoint
    result = transition(state, Suspended(Receive((sid,))))
    assert result.actions == (ScheduleEvent(DoRemainingWork()),)
    result = transition(result.new_state, DoRemainingWork())
    assert result.continuation == Resume({sid: codec.encode(3)})
    # the next suspension commits the init as processed, then acks it
    result = transition(result.new_state, Suspended(Send(((sid, codec.encode(4)),))))
    persist, ack = result.actions[:2]
    assert isinstance(persist, PersistCheckpoint)
    assert PutProcessedInit("alice", "alice.0", FLOW) in persist.ops
    assert ack == AcknowledgeMessages(("init-token",))
    # and only then the Confirm goes out, in front of the data
    after = transition(result.new_state, DoRemainingWork())
    (send,) = [a for a in after.actions if isinstance(a, SendMessages)]
    assert [type(e.body) for e in send.envelopes] == [Confirm, Data]


@pytest.mark.parametrize(
    ("arrivals", "inbox_seqs", "early_seqs", "next_seq"),
    [
        ([1, 2, 3], [1, 2, 3], [], 4),
        ([2, 1], [1, 2], [], 3),
        ([3, 2], [], [2, 3], 1),
        ([1, 1, 2, 1], [1, 2], [], 3),
        ([2, 2, 1], [1, 2], [], 3),
        ([3, 1], [1], [3], 2),
    ],
    ids=["in-order", "swapped", "both-early", "duplicates", "early-duplicate", "gap"],
)
def test_messages_are_consumed_in_sequence_whatever_their_arrival_order(
    arrivals: list[int], inbox_seqs: list[int], early_seqs: list[int], next_seq: int
) -> None:
    state, sid = with_initiated_session(running())
    acked_at_once: list[int] = []
    for n, seq in enumerate(arrivals):
        result = transition(
            state, SessionMessageDelivered(Data(sid, seq, codec.encode(seq)), "bob", n)
        )
        for action in result.actions:
            if isinstance(action, AcknowledgeMessages):
                acked_at_once.extend(d for d in action.deliveries if isinstance(d, int))
        state = result.new_state
    session = state.sessions[sid]
    assert [m.seq for m in session.inbox] == inbox_seqs
    assert [m.seq for m in session.early] == early_seqs
    assert session.next_recv_seq == next_seq
    # A copy of a message already consumed or held is acked at once; the others at the next commit.
    first_copies = {seq: n for n, seq in reversed(list(enumerate(arrivals)))}
    assert sorted(acked_at_once) == sorted(set(range(len(arrivals))) - set(first_copies.values()))
    assert len(state.deliveries) == len(first_copies) + 1


def test_data_that_overtakes_the_confirm_waits_for_it() -> None:
    state, sid = initiate(running())
    state = transition(state, Suspended(Receive((sid,)))).new_state
    state = transition(state, DoRemainingWork()).new_state
    assert state.sessions[sid].status is SessionStatus.INITIATING
    state = deliver(state, Data(sid, 1, codec.encode("early")))
    assert state.sessions[sid].inbox == ()
    state = transition(state, SessionMessageDelivered(Confirm(sid, "b.0", 1, "t"), "bob")).new_state
    assert [m.seq for m in state.sessions[sid].inbox] == [1]
    assert transition(state, DoRemainingWork()).continuation == Resume({sid: codec.encode("early")})


def test_a_message_from_someone_other_than_the_peer_is_acked_and_ignored() -> None:
    state, sid = with_initiated_session(running())
    result = transition(state, SessionMessageDelivered(Data(sid, 1, b"\x01"), "mallory", "t9"))
    assert result.new_state.sessions == state.sessions
    assert result.actions == (AcknowledgeMessages(("t9",)),)


def test_sends_while_initiating_are_buffered_and_flushed_on_confirm() -> None:
    state, sid = initiate(running())
    for n in (1, 2):
        state = transition(state, Suspended(Send(((sid, codec.encode(n)),)))).new_state
        state = transition(state, DoRemainingWork()).new_state
    assert [seq for seq, _ in state.sessions[sid].buffered] == [1]
    result = transition(state, SessionMessageDelivered(Confirm(sid, "b.0", 1, "t"), "bob"))
    (send,) = [a for a in result.actions if isinstance(a, SendMessages)]
    (envelope,) = send.envelopes
    assert envelope.body == Data("b.0", 1, codec.encode(2))
    assert envelope.id == f"{sid}:1"


def test_receive_throws_the_peers_flow_exception_at_the_head_of_the_inbox() -> None:
    state, sid = with_initiated_session(running())
    state = deliver(state, Error(sid, 1, "e7", codec.encode(FlowException("no"))))
    state = transition(state, Suspended(Receive((sid,)))).new_state
    result = transition(state, DoRemainingWork())
    assert isinstance(result.continuation, Throw)
    error = result.continuation.error
    assert isinstance(error, FlowException)
    assert (str(error), error.peer, error.error_id) == ("no", "bob", "e7")
    assert result.new_state.sessions[sid].peer_errored


def test_receive_after_the_peers_end_throws_unexpected_flow_end() -> None:
    state, sid = with_initiated_session(running())
    state = deliver(state, End(sid, 1))
    state = transition(state, Suspended(Receive((sid,)))).new_state
    result = transition(state, DoRemainingWork())
    assert isinstance(result.continuation, Throw)
    assert isinstance(result.continuation.error, UnexpectedFlowEndException)


def test_finishing_gives_the_result_ends_sessions_then_deletes_the_checkpoint_and_acks() -> None:
    state, _sid = with_initiated_session(running())
    result = transition(state, FlowFinished(42))
    remove, send, persist, ack = result.actions
    assert remove == RemoveFlow(result=42, durable=False)
    assert isinstance(persist, PersistCheckpoint)
    assert persist.ops == (DeleteFlow(FLOW),)
    assert ack == AcknowledgeMessages(("d0",))
    assert isinstance(send, SendMessages)
    assert isinstance(send.envelopes[0].body, End)
    assert result.continuation == Abort()


def test_finishing_with_queued_writes_commits_them_before_giving_the_result() -> None:
    state, _sid = with_initiated_session(running())
    state = replace(state, writes=(FlowWrite("INSERT INTO t VALUES (1)", ()),))
    result = transition(state, FlowFinished(42))
    persist = result.actions[0]
    assert isinstance(persist, PersistCheckpoint)
    assert persist.ops[0] == FlowWrite("INSERT INTO t VALUES (1)", ())
    assert result.actions[-1] == RemoveFlow(result=42)


def test_finishing_with_a_client_id_stores_the_result() -> None:
    state = running(client_id="order-1")
    result = transition(state, FlowFinished("done"))
    (persist, _signal, remove) = result.actions
    assert isinstance(persist, PersistCheckpoint)
    (stored,) = persist.ops
    assert isinstance(stored, PutFlowResult)
    assert stored.value == codec.encode("done")
    assert remove == RemoveFlow(result="done")


def test_finishing_waits_for_sessions_still_being_confirmed() -> None:
    state, sid = initiate(running())
    state = transition(state, Suspended(Send(((sid, b"\x01"),)))).new_state
    state = transition(state, DoRemainingWork()).new_state
    result = transition(state, FlowFinished(None))
    assert result.continuation == ProcessEvents()
    state = transition(
        result.new_state, SessionMessageDelivered(Confirm(sid, "b.0", 1, "t"), "bob")
    ).new_state
    assert transition(state, DoRemainingWork()).continuation == Abort()


@pytest.mark.parametrize(
    ("error", "revealed"),
    [(FlowException("visible"), True), (ValueError("secret"), False)],
    ids=["flow-exception", "other"],
)
def test_propagated_errors_reveal_only_this_flows_own_flow_exceptions(
    error: BaseException, revealed: bool
) -> None:
    state, _sid = with_initiated_session(running())
    state = transition(state, FlowFailed(error)).new_state
    state = transition(state, StartErrorPropagation()).new_state
    result = transition(state, DoRemainingWork())
    (send,) = [a for a in result.actions if isinstance(a, SendMessages)]
    body = send.envelopes[0].body
    assert isinstance(body, Error)
    assert (body.exception is not None) == revealed
    assert result.actions[-1] == RemoveFlow(error=error)


def test_a_rethrown_peer_flow_exception_is_hidden_from_further_peers() -> None:
    state, _sid = with_initiated_session(running())
    received = FlowException("from carol")
    received.peer = "carol"
    state = transition(state, FlowFailed(received)).new_state
    state = transition(state, StartErrorPropagation()).new_state
    (send,) = [
        a for a in transition(state, DoRemainingWork()).actions if isinstance(a, SendMessages)
    ]
    body = send.envelopes[0].body
    assert isinstance(body, Error)
    assert body.exception is None


def test_suspending_while_already_suspended_is_a_protocol_violation() -> None:
    state = transition(running(), Suspended(Receive(()))).new_state
    with pytest.raises(ProtocolViolation):
        transition(state, Suspended(Receive(())))


def test_initiating_outside_an_initiating_flow_throws_a_usage_error() -> None:
    frame = SubFlowFrame("tests:Plain", None, 1, False)
    state = transition(new_flow(FLOW, "alice", frame, START), DoRemainingWork()).new_state
    result = transition(state, InitiateFlow("bob"))
    assert isinstance(result.continuation, Throw)
    assert "initiating_flow" in str(result.continuation.error)

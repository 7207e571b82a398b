"""Property: for any sequence of events, ``transition`` returns a Transition or raises
ProtocolViolation — nothing else — and never mutates the state it was given."""

from __future__ import annotations

import copy
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from parley.protocol import codec
from parley.protocol.actions import Transition
from parley.protocol.errors import FlowException, ProtocolViolation, UnexpectedFlowEndException
from parley.protocol.events import (
    ActionFailed,
    DoRemainingWork,
    Event,
    FlowFailed,
    FlowFinished,
    InitiateFlow,
    KeepForObservation,
    KillRequested,
    OperationCompleted,
    OperationFailed,
    RetryFromCheckpoint,
    SessionMessageDelivered,
    StartErrorPropagation,
    SubFlowEntered,
    SubFlowLeft,
    Suspended,
    ValueRecorded,
    WokeUp,
)
from parley.protocol.messages import Confirm, Data, End, Error, FlowInfo, Reject
from parley.protocol.records import PutFlowStart, StartKind
from parley.protocol.requests import (
    CloseSessions,
    Execute,
    ForceCheckpoint,
    GetFlowInfo,
    Query,
    Receive,
    Send,
    SendAndReceive,
    Sleep,
)
from parley.protocol.state import FlowState, SubFlowFrame, new_flow, new_responder
from parley.protocol.transitions import transition

FLOW = "f" * 32
FRAME = SubFlowFrame("tests:Flow", "tests:Flow", 1, False)
START = PutFlowStart(FLOW, "tests:Flow", StartKind.RPC, b"\x80")
T0 = datetime(2026, 1, 1, tzinfo=UTC)
SESSIONS = [f"{FLOW}.{i}" for i in range(3)] + ["peer.0", "x"]
PEERS = ["bob", "carol", "mallory"]


def initial_states() -> st.SearchStrategy[FlowState]:
    initiator = new_flow(FLOW, "alice", FRAME, START)
    responder = new_responder(
        FLOW,
        "alice",
        FRAME,
        START,
        sender="bob",
        initiator_session="peer.0",
        peer_info=FlowInfo(1, "tests"),
        first_payload=codec.encode(5),
        flow_version=1,
        delivery=1,
    )
    return st.sampled_from([initiator, responder])


sessions = st.sampled_from(SESSIONS)
seqs = st.integers(min_value=0, max_value=4)
payload = st.sampled_from([codec.encode(1), codec.encode("x"), b"\xff"])

messages = st.one_of(
    st.builds(Confirm, sessions, sessions, st.integers(1, 3), st.just("tests")),
    st.builds(Data, sessions, seqs, payload),
    st.builds(Error, sessions, seqs, st.just("e1"), st.sampled_from([None, b"\x00", b"\xff"])),
    st.builds(Reject, sessions, st.just("r1"), st.just("no")),
    st.builds(End, sessions, seqs),
)
session_tuples = st.lists(sessions, min_size=1, max_size=2).map(tuple)
payload_tuples = st.lists(st.tuples(sessions, payload), min_size=1, max_size=2).map(tuple)
requests = st.one_of(
    st.builds(Send, payload_tuples),
    st.builds(Receive, session_tuples),
    st.builds(SendAndReceive, payload_tuples, session_tuples),
    st.builds(CloseSessions, session_tuples),
    st.builds(GetFlowInfo, session_tuples),
    st.builds(Sleep, st.just(T0 + timedelta(seconds=5))),
    st.builds(Execute, st.just("tests:op"), st.just(lambda: 1), st.just(())),
    st.builds(Query, st.just("SELECT 1")),
    st.just(ForceCheckpoint()),
)
errors = st.sampled_from(
    [ValueError("boom"), FlowException("mine"), UnexpectedFlowEndException("gone")]
)
events: st.SearchStrategy[Event] = st.one_of(
    st.just(DoRemainingWork()),
    st.builds(SessionMessageDelivered, messages, st.sampled_from(PEERS), st.integers(1, 9)),
    st.builds(Suspended, requests),
    st.builds(FlowFinished, st.sampled_from([None, 1, object()])),
    st.builds(FlowFailed, errors),
    st.builds(InitiateFlow, st.sampled_from([*PEERS, "bad name", ""])),
    st.builds(SubFlowEntered, st.just(SubFlowFrame("tests:Sub", None, 1, True))),
    st.just(SubFlowLeft()),
    st.builds(ValueRecorded, st.just("now"), st.sampled_from([T0, object()])),
    st.builds(OperationCompleted, st.sampled_from([1, object()]), st.integers(0, 1)),
    st.builds(OperationFailed, errors, st.integers(0, 1)),
    st.builds(WokeUp, st.just(T0 + timedelta(seconds=5)), st.integers(0, 1)),
    st.just(StartErrorPropagation()),
    st.just(RetryFromCheckpoint()),
    st.just(KeepForObservation()),
    st.just(KillRequested()),
    st.builds(ActionFailed, errors, st.just("SendMessages")),
)


@settings(max_examples=400, deadline=None)
@given(initial_states(), st.lists(events, max_size=40))
def test_any_event_sequence_transitions_or_raises_protocol_violation(
    state: FlowState, sequence: list[Event]
) -> None:
    for event in sequence:
        before = copy.copy(state)
        try:
            result = transition(state, event)
        except ProtocolViolation:
            assert state == before
            continue
        assert isinstance(result, Transition)
        assert state == before, "transition must not mutate its input"
        state = result.new_state


@settings(max_examples=200, deadline=None)
@given(initial_states(), st.lists(events, max_size=30))
def test_a_removed_flow_ignores_every_event(state: FlowState, sequence: list[Event]) -> None:
    removed = replace(state, removed=True)
    for event in sequence:
        result = transition(removed, event)
        assert result.new_state is removed
        assert result.actions == ()

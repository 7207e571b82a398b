"""Helpers shared by the transition modules: journaling, checkpoints, sending, session errors."""

from __future__ import annotations

from parley.protocol import codec, ids
from parley.protocol.actions import (
    AcknowledgeMessages,
    Action,
    PersistCheckpoint,
    Resume,
    SignalStarted,
    Throw,
    Transition,
)
from parley.protocol.errors import (
    DeserializationError,
    FlowException,
    OperationError,
    ProtocolViolation,
    SerializationError,
    UnexpectedFlowEndException,
)
from parley.protocol.evolve import replace
from parley.protocol.messages import Confirm, Data, End, Envelope, Error, Init, SessionMessage
from parley.protocol.records import PutCheckpoint, StoreOp
from parley.protocol.requests import kind
from parley.protocol.state import (
    Entry,
    FlowState,
    SessionState,
    SessionStatus,
    encode_header,
)


def app_of(flow_class: str) -> str:
    """The app a flow class belongs to: its module."""
    return flow_class.partition(":")[0]


def envelope(state: FlowState, peer: str, message_id: str, body: SessionMessage) -> Envelope:
    return Envelope(id=message_id, sender=state.our_identity, recipient=peer, body=body)


def resume(state: FlowState, key: str, value: object) -> Transition:
    """Resume the flow with ``value``, journaling it under ``key``.

    If ``value`` can't be encoded, the flow gets a :class:`SerializationError` instead (at the
    operation that produced the value).
    """
    try:
        outcome = codec.encode(value)
    except SerializationError as exc:
        return throw(state, key, exc)
    new = replace(state.with_journal(Entry(key, outcome)), pending=None)
    return Transition(new, (), Resume(value))


def throw(state: FlowState, key: str, error: BaseException) -> Transition:
    """Throw ``error`` into the flow at its suspension point, journaling it under ``key``."""
    try:
        outcome = codec.encode(error)
    except SerializationError:
        error = _encodable_stand_in(error)
        outcome = codec.encode(error)
    new = replace(state.with_journal(Entry(key, outcome, failed=True)), pending=None)
    return Transition(new, (), Throw(error))


def _encodable_stand_in(error: BaseException) -> BaseException:
    stand_in = OperationError(f"{type(error).__module__}.{type(error).__qualname__}: {error}")
    stand_in.__cause__ = error
    return stand_in


def checkpoint(state: FlowState) -> tuple[FlowState, tuple[Action, ...]]:
    """Persist ``state``: commit its header, new journal entries and queued facts, then ack.

    Returns the state with its persisted bookkeeping cleared, and the actions to perform first.
    """
    ops: list[StoreOp] = []
    if state.start_record is not None:
        ops.append(state.start_record)
    if state.init_fact is not None:
        ops.append(state.init_fact)
    ops.extend(state.writes)
    entries = tuple(codec.encode(entry) for entry in state.journal_tail)
    journal_len = state.journal_len + len(entries)
    ops.append(
        PutCheckpoint(
            flow_id=state.flow_id,
            status=state.status,
            header=encode_header(state, journal_len),
            journal_start=state.journal_len,
            journal=entries,
            suspends=state.suspends,
            pending_request=kind(state.pending.request) if state.pending else None,
            progress_step=state.progress_step,
        )
    )
    actions: list[Action] = [PersistCheckpoint(tuple(ops))]
    if state.deliveries:
        actions.append(AcknowledgeMessages(state.deliveries))
    if not state.signalled:
        actions.append(SignalStarted())
    new = replace(
        state,
        journal_len=journal_len,
        journal_tail=(),
        start_record=None,
        init_fact=None,
        writes=(),
        deliveries=(),
        persisted=True,
        signalled=True,
    )
    return new, tuple(actions)


def flush_confirms(state: FlowState, *, final: bool = False) -> tuple[FlowState, list[Envelope]]:
    """Send the Confirm of a responder session that has not been confirmed yet (seq 0).

    Like every send, only after a commit: once the flow has a checkpoint, or (``final``) in the
    transition that removes the flow, whose commit comes first.
    """
    envelopes: list[Envelope] = []
    if not (state.persisted or final):
        return state, envelopes
    for session in state.sessions.values():
        if (
            session.status is SessionStatus.INITIATED
            and session.next_send_seq == 0
            and session.peer_session is not None
        ):
            confirm = Confirm(
                session=session.peer_session,
                initiated_session=session.session_id,
                flow_version=session.flow_version,
                app=app_of(state.flow_class),
            )
            envelopes.append(
                envelope(state, session.peer, ids.message_id(session.session_id, 0), confirm)
            )
            state = state.with_session(replace(session, next_send_seq=1))
    return state, envelopes


def send_payload(
    state: FlowState, session: SessionState, payload: bytes | None
) -> tuple[FlowState, list[Envelope]]:
    """Send ``payload`` on ``session`` (or just the Init if ``payload`` is None and uninitiated).

    Uninitiated sessions send an Init carrying the payload; initiating ones buffer it until the
    Confirm arrives; initiated ones send Data.
    """
    sid = session.session_id
    if session.status is SessionStatus.UNINITIATED:
        flow_class = session.initiating_flow or state.flow_class
        init = Init(
            initiator_session=sid,
            flow_class=flow_class,
            flow_version=session.flow_version,
            app=app_of(flow_class),
            first_payload=payload,
        )
        session = replace(session, status=SessionStatus.INITIATING, next_send_seq=1)
        return state.with_session(session), [
            envelope(state, session.peer, ids.message_id(sid, 0), init)
        ]
    if payload is None:
        return state, []
    seq = session.next_send_seq
    if session.status is SessionStatus.INITIATING:
        session = replace(
            session, buffered=(*session.buffered, (seq, payload)), next_send_seq=seq + 1
        )
        return state.with_session(session), []
    assert session.peer_session is not None
    data = Data(session=session.peer_session, seq=seq, payload=payload)
    session = replace(session, next_send_seq=seq + 1)
    return state.with_session(session), [
        envelope(state, session.peer, ids.message_id(sid, seq), data)
    ]


def end_session(state: FlowState, session: SessionState) -> tuple[FlowState, list[Envelope]]:
    """Send End on an initiated session and mark it closed."""
    assert session.peer_session is not None
    seq = session.next_send_seq
    end = End(session=session.peer_session, seq=seq)
    session = replace(session, next_send_seq=seq + 1, closed=True)
    return state.with_session(session), [
        envelope(state, session.peer, ids.message_id(session.session_id, seq), end)
    ]


def peer_sent_end(session: SessionState) -> bool:
    """The peer's End has been received (possibly behind unconsumed data)."""
    return any(isinstance(m, End) for m in session.inbox)


def wants_end(session: SessionState) -> bool:
    """Whether finishing our flow should send End on this session."""
    return (
        session.status is SessionStatus.INITIATED
        and not session.closed
        and not session.peer_errored
        and not peer_sent_end(session)
    )


def ended_session_error(session_id: str) -> UnexpectedFlowEndException:
    return UnexpectedFlowEndException(f"Tried to access ended session {session_id}")


def session_error(
    state: FlowState, session_ids: tuple[str, ...]
) -> tuple[FlowState, BaseException] | None:
    """The first error the flow must see before using ``session_ids``, if any.

    A rejected session-init, an Error at the head of an inbox (popped, and the session marked as
    errored by the peer), or a session that no longer exists.
    """
    for sid in session_ids:
        session = state.sessions.get(sid)
        if session is None:
            return state, ended_session_error(sid)
        if session.rejection is not None:
            error_id, reason = session.rejection
            rejected = UnexpectedFlowEndException(reason)
            rejected.peer = session.peer
            rejected.error_id = error_id
            return state, rejected
        if session.inbox and isinstance(session.inbox[0], Error):
            head = session.inbox[0]
            session = replace(session, inbox=session.inbox[1:], peer_errored=True)
            return state.with_session(session), peer_exception(session.peer, head)
    return None


def peer_exception(peer: str, error: Error) -> BaseException:
    """The exception a flow sees for an Error message: the peer's FlowException, or a hidden one."""
    exception: FlowException | UnexpectedFlowEndException | None = None
    if error.exception is not None:
        try:
            decoded = codec.decode(error.exception)
        except DeserializationError:
            decoded = None
        if isinstance(decoded, FlowException):
            exception = decoded
    if exception is None:
        exception = UnexpectedFlowEndException("Counter-flow errored")
        exception.add_note(f"Received unexpected counter-flow exception from peer {peer}")
    else:
        exception.add_note(f"Received counter-flow exception from peer {peer}")
    exception.peer = peer
    exception.error_id = error.error_id
    return exception


def require(condition: bool, message: str) -> None:
    """Raise :class:`ProtocolViolation` unless ``condition`` holds."""
    if not condition:
        raise ProtocolViolation(message)


__all__ = [
    "app_of",
    "checkpoint",
    "end_session",
    "ended_session_error",
    "envelope",
    "flush_confirms",
    "peer_exception",
    "peer_sent_end",
    "require",
    "resume",
    "send_payload",
    "session_error",
    "throw",
    "wants_end",
]

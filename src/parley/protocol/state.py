"""The state of one flow, as the pure state machine sees it.

Theory of operation
-------------------
A flow is plain ``async def`` code driven by hand. At each suspension it yields an IO request
(:mod:`parley.protocol.requests`); the state machine decides what to do with it and, eventually,
with what value the flow resumes. Python cannot serialise a suspended coroutine, so a checkpoint
holds what is needed to *re-run* the flow to the same point:

* the start record (flow class and constructor arguments, or the session-init that started it),
  written once;
* the **journal**: one entry per resumption (the request's fingerprint and the encoded outcome it
  resumed with) and per recorded value (``now()``, ``random()``, ``uuid()``, the id of a session
  the flow initiated). Entries are appended; the state keeps only those not yet persisted
  (``journal_tail``) and the number already stored (``journal_len``);
* the **header**: sessions, sub-flow stack, counters, the pending request's fingerprint and
  progress — a small record rewritten at every checkpoint (:func:`encode_header`).

Everything in :class:`FlowState` that is not in the header is *transient*: it belongs to the
current incarnation of the flow and is rebuilt (or deliberately lost) on restore: messages
delivered but not yet acknowledged, writes the flow queued, the error state (errors are re-raised by
re-running the flow), and so on.

Mutations made while processing the pending request after its checkpoint (sequence numbers of the
messages sent, messages popped from inboxes) are persisted only at the next checkpoint. A restore
therefore processes the pending request again and re-sends the same messages with the same ids; the
receivers drop what they already consumed. ``Pending.sent`` records (when a checkpoint is written
while a flow waits) that the send half of the request was already done.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from parley.protocol import codec
from parley.protocol.errors import DeserializationError
from parley.protocol.evolve import replace
from parley.protocol.messages import Data, End, FlowInfo, Sequenced
from parley.protocol.records import FlowStatus, FlowWrite, PutFlowStart, PutProcessedInit
from parley.protocol.requests import Request, fingerprint


@codec.serializable(name="p.SS")
class SessionStatus(StrEnum):
    """Where a session is in its handshake."""

    UNINITIATED = "U"  # created by initiate_flow; nothing sent yet
    INITIATING = "I"  # Init sent; waiting for Confirm (sends are buffered)
    INITIATED = "C"  # confirmed (or we are the responder)


@codec.serializable(name="p.Session")
@dataclass(frozen=True, slots=True)
class SessionState:
    """One end of a session, owned by the flow."""

    session_id: str
    peer: str
    status: SessionStatus
    #: Name of the class carrying ``@initiating_flow`` (initiator side, until the Init is sent).
    initiating_flow: str | None = None
    flow_version: int = 1
    #: The counterparty's session id (known after Confirm, or from the Init on the responder).
    peer_session: str | None = None
    peer_info: FlowInfo | None = None
    #: Next sequence number we send (0 = our Init/Confirm has not gone out yet).
    next_send_seq: int = 0
    #: Next sequence number we expect (0 = waiting for the peer's Confirm).
    next_recv_seq: int = 0
    #: Consumed-in-order messages not yet taken by the flow.
    inbox: tuple[Sequenced, ...] = ()
    #: Messages that arrived ahead of their turn, sorted by sequence number.
    early: tuple[Sequenced, ...] = ()
    #: Payloads sent while INITIATING, as ``(seq, payload)``; they go out after Confirm.
    buffered: tuple[tuple[int, bytes], ...] = ()
    #: ``(error_id, reason)`` of a Reject received while INITIATING.
    rejection: tuple[str, str] | None = None
    #: True once the peer's flow errored on this session (we no longer send it errors).
    peer_errored: bool = False
    #: True once we sent End (closed our side).
    closed: bool = False

    @property
    def peer_ended(self) -> bool:
        """The peer's End is at the head of the inbox: nothing more will come."""
        return bool(self.inbox) and isinstance(self.inbox[0], End)


@codec.serializable(name="p.Frame")
@dataclass(frozen=True, slots=True)
class SubFlowFrame:
    """One entry of the sub-flow stack."""

    flow_class: str
    #: Name of the class carrying ``@initiating_flow`` if this frame can initiate sessions.
    initiating: str | None = None
    version: int = 1
    idempotent: bool = False


@codec.serializable(name="p.J")
@dataclass(frozen=True, slots=True)
class Entry:
    """One journal entry: what the flow asked for (``key``) and the encoded outcome.

    ``outcome`` is the codec encoding of the value the flow resumed with, or of the exception
    thrown into it when ``failed`` is true.
    """

    key: str
    outcome: bytes
    failed: bool = False


@dataclass(frozen=True, slots=True)
class Pending:
    """The request the flow is suspended on (transient: the live request object)."""

    request: Request
    #: The send half (of a Send/SendAndReceive, or the Inits of a Receive) has been done.
    sent: bool = False
    #: A timer, operation or query has been started for it (don't start it twice).
    waiting: bool = False

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.request)


@dataclass(frozen=True, slots=True)
class FlowError:
    """An error the flow failed with, and the id it travels under."""

    error_id: str
    exception: BaseException


@dataclass(frozen=True, slots=True)
class ErrorState:
    """The flow is errored: the hospital decides what happens next."""

    errors: tuple[FlowError, ...]
    propagated: int = 0
    propagating: bool = False


@dataclass(frozen=True, slots=True)
class Finishing:
    """``call()`` returned; waiting for outstanding session confirmations before finishing."""

    result: object


@dataclass(frozen=True, slots=True)
class FlowState:
    """Everything the state machine knows about one flow."""

    flow_id: str
    flow_class: str
    our_identity: str
    client_id: str | None = None
    status: FlowStatus = FlowStatus.RUNNABLE
    sessions: dict[str, SessionState] = field(default_factory=dict)
    session_count: int = 0
    subflows: tuple[SubFlowFrame, ...] = ()
    suspends: int = 0
    journal_len: int = 0
    journal_tail: tuple[Entry, ...] = ()
    pending: Pending | None = None
    #: Fingerprint and send-state of the pending request read from a checkpoint (restore only).
    restored_pending: tuple[str, bool] | None = None
    started: bool = False
    persisted: bool = False
    progress_step: str | None = None
    error_count: int = 0
    # ---- transient -----------------------------------------------------------------------
    #: Delivery tokens of messages consumed since the last commit (acked after it).
    deliveries: tuple[object, ...] = ()
    #: The session-init this responder consumed (recorded with its first commit).
    init_fact: PutProcessedInit | None = None
    #: The start record (written with the first commit).
    start_record: PutFlowStart | None = None
    #: Writes queued by the flow's code since the last commit.
    writes: tuple[FlowWrite, ...] = ()
    errors: ErrorState | None = None
    finishing: Finishing | None = None
    signalled: bool = False
    removed: bool = False
    killed: bool = False
    #: Number of the flow's incarnation (bumped by retries), for stale timer/operation wake-ups.
    incarnation: int = 0

    @property
    def idempotent(self) -> bool:
        """True while any idempotent sub-flow is on the stack: suspensions write no checkpoint."""
        return any(frame.idempotent for frame in self.subflows)

    def session(self, session_id: str) -> SessionState | None:
        return self.sessions.get(session_id)

    def with_session(self, session: SessionState) -> FlowState:
        sessions = dict(self.sessions)
        sessions[session.session_id] = session
        return replace(self, sessions=sessions)

    def with_journal(self, entry: Entry) -> FlowState:
        return replace(self, journal_tail=(*self.journal_tail, entry))


@codec.serializable(name="p.Header")
@dataclass(frozen=True, slots=True)
class Header:
    """The persisted part of :class:`FlowState` (see the module docstring)."""

    flow_class: str
    our_identity: str
    client_id: str | None
    sessions: tuple[SessionState, ...]
    session_count: int
    subflows: tuple[SubFlowFrame, ...]
    suspends: int
    journal_len: int
    pending: str | None
    pending_sent: bool
    progress_step: str | None
    error_count: int
    started: bool


def encode_header(state: FlowState, journal_len: int) -> bytes:
    """Encode the persistent part of ``state`` (``journal_len`` entries are stored with it)."""
    pending = state.pending
    return codec.encode(
        Header(
            flow_class=state.flow_class,
            our_identity=state.our_identity,
            client_id=state.client_id,
            sessions=tuple(state.sessions.values()),
            session_count=state.session_count,
            subflows=state.subflows,
            suspends=state.suspends,
            journal_len=journal_len,
            pending=pending.fingerprint if pending else None,
            pending_sent=pending.sent if pending else False,
            progress_step=state.progress_step,
            error_count=state.error_count,
            started=state.started,
        )
    )


def decode_header(flow_id: str, data: bytes, status: FlowStatus) -> FlowState:
    """Rebuild a flow's state from its stored header.

    Raises:
        DeserializationError: the header can't be decoded (the checkpoint is corrupt or was
            written by an incompatible version).
    """
    header = codec.decode(data)
    if not isinstance(header, Header):
        raise DeserializationError(f"checkpoint header of {flow_id} is a {type(header).__name__}")
    return FlowState(
        flow_id=flow_id,
        flow_class=header.flow_class,
        our_identity=header.our_identity,
        client_id=header.client_id,
        status=status,
        sessions={s.session_id: s for s in header.sessions},
        session_count=header.session_count,
        subflows=header.subflows,
        suspends=header.suspends,
        journal_len=header.journal_len,
        restored_pending=(header.pending, header.pending_sent) if header.pending else None,
        started=header.started,
        persisted=True,
        signalled=True,
        progress_step=header.progress_step,
        error_count=header.error_count,
    )


def session_id_for(flow_id: str, index: int) -> str:
    """The id of a flow's ``index``-th session: the flow id is recoverable from it."""
    return f"{flow_id}.{index}"


def flow_id_of_session(session_id: str) -> str:
    """The flow that owns one of *our* session ids (see :func:`session_id_for`)."""
    return session_id.rpartition(".")[0]


def new_flow(
    flow_id: str,
    our_identity: str,
    frame: SubFlowFrame,
    start: PutFlowStart,
    client_id: str | None = None,
) -> FlowState:
    """The state of a flow started by a client: not started, nothing persisted yet."""
    return FlowState(
        flow_id=flow_id,
        flow_class=frame.flow_class,
        our_identity=our_identity,
        client_id=client_id,
        subflows=(frame,),
        start_record=start,
    )


def new_responder(
    flow_id: str,
    our_identity: str,
    frame: SubFlowFrame,
    start: PutFlowStart,
    *,
    sender: str,
    initiator_session: str,
    peer_info: FlowInfo,
    first_payload: bytes | None,
    flow_version: int,
    delivery: object = None,
) -> FlowState:
    """The state of a responder started by a session-init from ``sender``.

    Its session (index 0) is initiated already; the first payload, if any, waits in its inbox; the
    Confirm goes out after the flow's first commit.
    """
    session_id = session_id_for(flow_id, 0)
    inbox: tuple[Sequenced, ...] = ()
    if first_payload is not None:
        inbox = (Data(session=session_id, seq=0, payload=first_payload),)
    session = SessionState(
        session_id=session_id,
        peer=sender,
        status=SessionStatus.INITIATED,
        flow_version=flow_version,
        peer_session=initiator_session,
        peer_info=peer_info,
        next_send_seq=0,
        next_recv_seq=1,
        inbox=inbox,
    )
    return FlowState(
        flow_id=flow_id,
        flow_class=frame.flow_class,
        our_identity=our_identity,
        sessions={session_id: session},
        session_count=1,
        subflows=(frame,),
        start_record=start,
        init_fact=PutProcessedInit(sender, initiator_session, flow_id),
        deliveries=(delivery,) if delivery is not None else (),
    )


__all__ = [
    "Entry",
    "ErrorState",
    "Finishing",
    "FlowError",
    "FlowState",
    "Header",
    "Pending",
    "SessionState",
    "SessionStatus",
    "SubFlowFrame",
    "decode_header",
    "encode_header",
    "flow_id_of_session",
    "new_flow",
    "new_responder",
    "session_id_for",
]

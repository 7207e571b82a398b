"""What a transition asks the store to write: plain data, applied atomically in one transaction.

A :class:`~parley.protocol.actions.PersistCheckpoint` action carries a tuple of these operations.
The store applies all of them in one SQLite transaction (together with other flows' operations when
it group-commits), or none. Bytes fields are already encoded by :mod:`parley.protocol.codec`; the
store never decodes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

#: Longest client id accepted (a client id is an index key and travels in every re-attach).
MAX_CLIENT_ID = 512


class FlowStatus(StrEnum):
    """The persisted status of a flow."""

    RUNNABLE = "RUNNABLE"
    HOSPITALIZED = "HOSPITALIZED"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    KILLED = "KILLED"


class StartKind(StrEnum):
    """How a flow was started."""

    RPC = "RPC"  # by a client (Python API, CLI, RPC)
    INITIATED = "INITIATED"  # by a session-init from a peer


@dataclass(frozen=True, slots=True)
class PutFlowStart:
    """Record how a flow was started. Written once, with the flow's first checkpoint."""

    flow_id: str
    flow_class: str
    kind: StartKind
    #: Encoded start arguments: the constructor's ``(args, kwargs)`` for RPC starts, the
    #: session-init (sender + message) for initiated flows.
    args: bytes
    started_by: str | None = None
    client_id: str | None = None


@dataclass(frozen=True, slots=True)
class PutCheckpoint:
    """Insert or replace the flow's header row and append new journal entries."""

    flow_id: str
    status: FlowStatus
    #: Encoded framework state (sessions, counters, pending request, ...). Rewritten every time.
    header: bytes
    #: Index of the first entry of ``journal``; entries before it are already stored.
    journal_start: int
    #: New journal entries (each one encoded), stored at ``journal_start``, ``journal_start+1``, ...
    journal: tuple[bytes, ...]
    #: Number of suspensions so far (for operators and the hospital's budgets).
    suspends: int
    #: Kind of the request the flow waits on ("receive", "sleep", ...), for operators.
    pending_request: str | None
    #: Label of the progress tracker's current step, for operators.
    progress_step: str | None


@dataclass(frozen=True, slots=True)
class SetFlowStatus:
    """Change only the status of a stored flow (the hospital parks or releases it)."""

    flow_id: str
    status: FlowStatus


@dataclass(frozen=True, slots=True)
class DeleteFlow:
    """Remove the flow's header, journal and start record (a finished flow without client id)."""

    flow_id: str


@dataclass(frozen=True, slots=True)
class PutProcessedInit:
    """A session-init was consumed: later copies of it must be dropped (dedup across restarts)."""

    sender: str
    initiator_session: str
    flow_id: str


@dataclass(frozen=True, slots=True)
class PutFlowResult:
    """The outcome of a finished flow that was started with a client id (kept for re-attach)."""

    flow_id: str
    client_id: str
    status: FlowStatus
    #: Encoded return value (COMPLETED) or ``None``.
    value: bytes | None
    #: Encoded exception (FAILED/KILLED) or ``None``.
    error: bytes | None


@dataclass(frozen=True, slots=True)
class PutAdmission:
    """Keep one hospital admission of a flow (for operators), until the flow is deleted."""

    flow_id: str
    #: Unix time of the admission.
    admitted_at: float
    flow_class: str
    suspends: int
    error_type: str
    message: str
    traceback: str
    #: ``"module.Type: message"`` of each exception in the error's cause chain, newest first.
    causes: tuple[str, ...]
    staff: str
    outcome: str
    #: How many times this staff member retried the flow at this suspension point before.
    attempt: int
    #: Seconds until the retry (0 for an immediate one, or for no retry).
    retry_in: float


@dataclass(frozen=True, slots=True)
class PutHeldInit:
    """Keep a session-init for a flow class the node does not know (for observation)."""

    flow_id: str
    sender: str
    #: The encoded envelope.
    envelope: bytes


@dataclass(frozen=True, slots=True)
class DeleteHeldInit:
    """Forget a held session-init (admitted at last, or rejected)."""

    flow_id: str


@dataclass(frozen=True, slots=True)
class PutSchedule:
    """Keep a schedule: the flow it starts and its next tick (replaces one of the same name)."""

    name: str
    flow_class: str
    #: ``codec.encode((args, kwargs))`` of the flow's constructor arguments.
    args: bytes
    #: Unix time of the next tick.
    next_at: float
    #: Seconds between ticks (``None``: once).
    every: float | None
    #: What a node that was down does with missed ticks (``run_once``, ``catch_up``, ``skip``).
    missed: str


@dataclass(frozen=True, slots=True)
class DeleteSchedule:
    """Forget a schedule (its past ticks' flows are not touched)."""

    name: str


@dataclass(frozen=True, slots=True)
class DeleteAdmissions:
    """Forget the hospital's admissions of a flow that ended before it was ever checkpointed,
    or (``flow_id`` None) of every flow that is not stored (a node's start)."""

    flow_id: str | None = None


@dataclass(frozen=True, slots=True)
class PutSignal:
    """Store a signal for a flow (``FlowLogic.wait_for_signal``) until the flow consumes it."""

    flow_id: str
    name: str
    #: The encoded payload.
    payload: bytes


@dataclass(frozen=True, slots=True)
class PutMapEntry:
    """Keep a node's operator-signed network map entry (a newer serial replaces an older one)."""

    name: str
    serial: int
    #: The signed entry, exactly as the operator published it.
    entry: bytes


@dataclass(frozen=True, slots=True)
class FlowWrite:
    """A write the flow's code queued with ``services.db.execute``; commits with the checkpoint."""

    sql: str
    params: tuple[object, ...]


StoreOp = (
    PutFlowStart
    | PutCheckpoint
    | SetFlowStatus
    | DeleteFlow
    | PutProcessedInit
    | PutFlowResult
    | PutMapEntry
    | PutSignal
    | PutAdmission
    | DeleteAdmissions
    | PutSchedule
    | DeleteSchedule
    | PutHeldInit
    | DeleteHeldInit
    | FlowWrite
)

__all__ = [
    "MAX_CLIENT_ID",
    "DeleteAdmissions",
    "DeleteFlow",
    "DeleteHeldInit",
    "DeleteSchedule",
    "FlowStatus",
    "FlowWrite",
    "PutAdmission",
    "PutCheckpoint",
    "PutFlowResult",
    "PutFlowStart",
    "PutHeldInit",
    "PutMapEntry",
    "PutProcessedInit",
    "PutSchedule",
    "PutSignal",
    "SetFlowStatus",
    "StartKind",
    "StoreOp",
]

"""What the store returns: frozen rows, with bytes fields still encoded."""

from __future__ import annotations

from dataclasses import dataclass

from parley.protocol.records import FlowStatus, StartKind


@dataclass(frozen=True, slots=True)
class StoredFlow:
    """Everything needed to restore a flow: its start record, header and journal."""

    flow_id: str
    flow_class: str
    kind: StartKind
    #: Encoded start arguments, as in :class:`~parley.protocol.records.PutFlowStart`.
    args: bytes
    started_by: str | None
    client_id: str | None
    #: ``RUNNABLE`` when only the start row exists.
    status: FlowStatus
    #: Encoded framework state, ``None`` when only the start row exists.
    header: bytes | None
    #: Journal entries in index order (entry ``i`` at position ``i``).
    journal: list[bytes]
    suspends: int
    pending_request: str | None
    progress_step: str | None


@dataclass(frozen=True, slots=True)
class StoredResult:
    """The outcome of a finished flow started with a client id."""

    flow_id: str
    client_id: str
    status: FlowStatus
    #: Encoded return value (``COMPLETED``) or ``None``.
    value: bytes | None
    #: Encoded exception (``FAILED``/``KILLED``) or ``None``.
    error: bytes | None
    #: The flow's class and encoded start arguments (``None`` in rows of older versions).
    flow_class: str | None = None
    args: bytes | None = None


@dataclass(frozen=True, slots=True)
class FlowSummary:
    """One line of the operators' flow list.

    Finished flows whose start row was deleted have ``suspends``, ``pending_request`` and
    ``progress_step`` set to ``None``; their ``flow_class`` and ``created_at`` are ``None`` only if
    the start row was already gone when the result was written. Times are unix seconds.
    """

    flow_id: str
    flow_class: str | None
    status: FlowStatus
    suspends: int | None
    pending_request: str | None
    progress_step: str | None
    client_id: str | None
    created_at: float | None
    updated_at: float | None
    #: What a waiting flow waits for, for people (e.g. ``"receive from bob (session ...)"``);
    #: filled in by the node, which can decode checkpoints (the store never does).
    waiting_for: str | None = None

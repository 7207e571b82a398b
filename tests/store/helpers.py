"""Builders of store operations with sensible defaults."""

from __future__ import annotations

from parley.protocol.records import FlowStatus, PutCheckpoint, PutFlowStart, StartKind


def start(
    flow_id: str = "f1",
    *,
    client_id: str | None = None,
    kind: StartKind = StartKind.RPC,
    flow_class: str = "app.flows:Pay",
) -> PutFlowStart:
    return PutFlowStart(
        flow_id=flow_id,
        flow_class=flow_class,
        kind=kind,
        args=b"args-" + flow_id.encode(),
        started_by="alice",
        client_id=client_id,
    )


def checkpoint(
    flow_id: str = "f1",
    *,
    journal_start: int = 0,
    journal: tuple[bytes, ...] = (b"e0",),
    status: FlowStatus = FlowStatus.RUNNABLE,
    header: bytes = b"header",
    suspends: int = 1,
    pending_request: str | None = "receive",
    progress_step: str | None = "Signing",
) -> PutCheckpoint:
    return PutCheckpoint(
        flow_id=flow_id,
        status=status,
        header=header,
        journal_start=journal_start,
        journal=journal,
        suspends=suspends,
        pending_request=pending_request,
        progress_step=progress_step,
    )

"""Flow summaries for people: what each waiting flow waits for."""

from __future__ import annotations

import dataclasses

from parley.engine.restore import UNREADABLE
from parley.protocol.records import FlowStatus
from parley.protocol.requests import fingerprint_sessions
from parley.protocol.state import SessionStatus, decode_header
from parley.store import FlowSummary, SqliteStore, StoredFlow

_STORED = (FlowStatus.RUNNABLE, FlowStatus.HOSPITALIZED)
_WAITS = {
    "recv": "receive from",
    "sar": "reply from",
    "info": "session confirmation from",
    "send": "sending to",
    "close": "closing sessions with",
    "sleep": "sleep until",
    "exec": "external operation",
    "query": "database query",
    "checkpoint": "checkpoint",
}


def waiting_for(stored: StoredFlow) -> str | None:
    """What a stored flow waits for, for people: the request, and for sessions the parties.

    ``None`` when the flow has no checkpoint yet or the header can't be read.
    """
    if stored.header is None:
        return None
    try:
        state = decode_header(stored.flow_id, stored.header, stored.status)
    except UNREADABLE:
        return None
    if state.restored_pending is None:
        return None
    fingerprint = state.restored_pending[0]
    kind, _, detail = fingerprint.partition(" ")
    sessions = fingerprint_sessions(fingerprint)
    if not sessions:
        return f"{_WAITS.get(kind, kind)} {detail}".strip()
    parties = []
    for session_id in sessions:
        session = state.sessions.get(session_id)
        if session is None:
            parties.append(f"session {session_id}")
            continue
        unanswered = (
            "" if session.status is SessionStatus.INITIATED else ", no answer to its init yet"
        )
        parties.append(f"{session.peer} (session {session_id}{unanswered})")
    return f"{_WAITS.get(kind, kind)} {', '.join(parties)}"


def described(store: SqliteStore, summaries: list[FlowSummary]) -> list[FlowSummary]:
    """``summaries`` with ``waiting_for`` filled in for the flows still stored."""
    result = []
    for summary in summaries:
        stored = None
        if summary.status in _STORED and summary.pending_request is not None:
            stored = store.load_flow(summary.flow_id)
        if stored is not None:
            result.append(dataclasses.replace(summary, waiting_for=waiting_for(stored)))
        else:
            result.append(summary)
    return result


__all__ = ["described", "waiting_for"]

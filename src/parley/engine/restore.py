"""Re-creating a flow from what its checkpoint stores: the flow object, its state, its journal.

A checkpoint holds the flow's start record (its class and constructor arguments, or the sender and
session of the session-init that started a responder), its header and its journal. These functions
turn them back into what a driver needs; they run nothing. The runtime restores flows with them,
and so does the replay checker (:mod:`parley.engine.replay`), which replays stored checkpoints
against new code without running anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from parley.flows.logic import FlowLogic
from parley.flows.registry import flow_class_named
from parley.flows.session import FlowSession
from parley.protocol import codec
from parley.protocol.errors import DeserializationError, ParleyError
from parley.protocol.records import StartKind
from parley.protocol.state import Entry, FlowState, decode_header, session_id_for
from parley.store import StoredFlow

#: What a checkpoint that can't be read raises (the hospital keeps such flows for observation).
UNREADABLE = (ParleyError, TypeError, ValueError)


@dataclass(frozen=True, slots=True)
class Restored:
    """A stored flow made ready to replay: its object, its state and its journal."""

    flow: FlowLogic[Any]
    state: FlowState
    journal: list[Entry]


def restored(stored: StoredFlow) -> Restored:
    """Decode a stored flow (with a header).

    Raises:
        ParleyError, TypeError, ValueError: the checkpoint can't be read, or its class or
            constructor arguments no longer fit the code (see :data:`UNREADABLE`).
    """
    assert stored.header is not None
    state = decode_header(stored.flow_id, stored.header, stored.status)
    journal = [journal_entry(data) for data in stored.journal]
    flow = build(flow_class_named(stored.flow_class), stored.flow_id, stored.kind, stored.args)
    return Restored(flow, state, journal)


def build(cls: type[FlowLogic[Any]], flow_id: str, kind: StartKind, data: bytes) -> FlowLogic[Any]:
    """Re-create a flow object from its start record."""
    start = codec.decode(data)
    if not (isinstance(start, tuple) and len(start) == 2):
        raise DeserializationError(f"start record of {flow_id} is malformed")
    if kind is StartKind.INITIATED:
        sender, _ = start
        return responder(cls, flow_id, str(sender))
    args, kwargs = start
    if not (isinstance(args, list) and isinstance(kwargs, dict)):
        raise DeserializationError(f"start arguments of {flow_id} are malformed")
    return cls(*args, **kwargs)


def responder(cls: type[FlowLogic[Any]], flow_id: str, peer: str) -> FlowLogic[Any]:
    """A responder flow object: its constructor takes its session (always the flow's first)."""
    return cls(FlowSession(session_id_for(flow_id, 0), peer))


def journal_entry(data: bytes) -> Entry:
    entry = codec.decode(data)
    if not isinstance(entry, Entry):
        raise DeserializationError(f"journal entry is a {type(entry).__name__}")
    return entry


def decoded_error(data: bytes) -> BaseException:
    """A stored flow error (of a finished flow), or the reason it can't be decoded."""
    try:
        error = codec.decode(data)
    except DeserializationError as exc:
        return exc
    return error if isinstance(error, BaseException) else ParleyError(repr(error))


__all__ = [
    "UNREADABLE",
    "Restored",
    "build",
    "decoded_error",
    "journal_entry",
    "responder",
    "restored",
]

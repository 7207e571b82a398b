"""Deterministic ids for everything a flow sends.

Ids are built only from data that is in the checkpoint (session ids and per-session sequence
numbers, flow ids and counters), so a flow restored from its checkpoint re-sends byte-identical
messages under the same ids. The ids travel as the envelope ``id`` and as ``Nats-Msg-Id``; the
receiver's own dedup uses the sequence numbers, so ids need not be remembered forever.
"""

from __future__ import annotations


def message_id(sender_session: str, seq: int) -> str:
    """Id of the ``seq``-th message sent on ``sender_session`` by its holder (Init/Confirm: 0)."""
    return f"{sender_session}:{seq}"


def reject_id(initiator_session: str) -> str:
    """Id of a node's refusal of a session-init (one per init, whatever the reason)."""
    return f"reject:{initiator_session}"


def violation_id(session_id: str) -> str:
    """Id of the end a node put to one of its own sessions whose peer broke the protocol."""
    return f"violation:{session_id}"


def error_id(flow_id: str, index: int) -> str:
    """Id of the ``index``-th error of a flow: errors re-raised on replay get the same id."""
    return f"{flow_id}:e{index}"


def operation_id(flow_id: str, suspends: int) -> str:
    """Id handed to an external operation: the same when it is retried after a restore."""
    return f"{flow_id}:{suspends}"


__all__ = ["error_id", "message_id", "operation_id", "reject_id", "violation_id"]

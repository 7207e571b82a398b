"""Flow handles and the ids that route messages and starts to flows.

Routing needs no table: our session ids are ``<flow id>.<n>``, a responder's flow id is derived
from the session-init that started it (so a redelivered init maps to the same flow), and a flow
started with a client id gets an id derived from the client id (so a repeated start finds it).
A flow's worker is chosen from its flow id.
"""

from __future__ import annotations

import hashlib
import zlib
from concurrent.futures import Future
from typing import Generic, TypeVar

from parley.flows.progress import ProgressTracker
from parley.protocol.errors import ParleyError
from parley.protocol.messages import Envelope, Init
from parley.protocol.state import flow_id_of_session

T = TypeVar("T")


class FlowLostError(ParleyError):
    """The worker that ran a flow failed, and the flow could not be restored from its store.

    The node's log says why; the flow's stored status says what is left of it.
    """


class FlowHandle(Generic[T]):
    """A started flow: its id, its eventual result and its progress tracker."""

    def __init__(self, flow_id: str, progress: ProgressTracker | None = None) -> None:
        self.flow_id = flow_id
        self.progress = progress
        self.future: Future[T] = Future()
        self.started: Future[None] = Future()

    @property
    def done(self) -> bool:
        return self.future.done()

    def result(self, timeout: float | None = None) -> T:
        """The flow's return value; raises the flow's exception if it failed."""
        return self.future.result(timeout)

    def __repr__(self) -> str:
        return f"<FlowHandle {self.flow_id} {'done' if self.done else 'running'}>"


def responder_flow_id(sender: str, initiator_session: str) -> str:
    """The flow id of the responder to a session-init: the same for every copy of the init."""
    digest = hashlib.blake2b(f"{sender}\x00{initiator_session}".encode(), digest_size=16)
    return digest.hexdigest()


def client_flow_id(client_id: str) -> str:
    """The flow id of a flow started with a client id: a repeated start finds the same flow."""
    return hashlib.blake2b(f"client\x00{client_id}".encode(), digest_size=16).hexdigest()


def flow_id_for(envelope: Envelope) -> str:
    """The flow that must handle ``envelope``."""
    body = envelope.body
    if isinstance(body, Init):
        return responder_flow_id(envelope.sender, body.initiator_session)
    return flow_id_of_session(body.session)


def shard_of(flow_id: str, shards: int) -> int:
    """Which of ``shards`` workers owns ``flow_id`` (stable across restarts)."""
    try:
        return int(flow_id[-8:], 16) % shards
    except ValueError:
        return zlib.crc32(flow_id.encode()) % shards


__all__ = [
    "FlowHandle",
    "client_flow_id",
    "flow_id_for",
    "responder_flow_id",
    "shard_of",
]

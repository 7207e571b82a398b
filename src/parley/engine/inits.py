"""Session-inits: what a node does when a peer opens a session with it.

An :class:`~parley.protocol.messages.Init` names the initiating flow's class. The node answers it
in one of four ways (:meth:`SessionInits.admit`):

* a copy of an init whose responder already ran to its first commit (the processed-inits table
  knows it) is acked and dropped;
* an init for a class this node has never heard of is *held*, un-acked, for observation: the app
  may not be deployed yet. An operator retries it (a restart) or kills it, which rejects it;
* an init the registry refuses (the class is loaded but is not a flow, or has no responder here),
  an init whose flow version the responder does not serve (see "Version negotiation" in
  :mod:`parley.flows.registry`), or one whose responder's constructor fails, is rejected: the
  peer gets a
  :class:`~parley.protocol.messages.Reject` with the reason, and the init is acked;
* otherwise the responder's initial state and flow object are returned, for the runtime to start.

The responder's flow id derives from ``(sender, initiator session)``, so every copy of an init
reaches the same flow; the runtime drops copies that arrive while that flow is in memory.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from parley.engine.handles import responder_flow_id
from parley.engine.restore import responder
from parley.flows.logic import FlowLogic
from parley.flows.marks import frame_for
from parley.flows.registry import FlowRegistry, SessionInitRejected, UnknownFlowClass
from parley.protocol import codec, ids
from parley.protocol.messages import Envelope, FlowInfo, Init, Reject
from parley.protocol.records import PutFlowStart, StartKind
from parley.protocol.state import FlowState, new_responder
from parley.store import SqliteStore

log = logging.getLogger("parley.runtime")

#: Publishes envelopes; called with the error (or None) once they are acknowledged.
Send = Callable[[tuple[Envelope, ...], Callable[[BaseException | None], None]], None]


class SessionInits:
    """Decides what becomes of each session-init; see the module docstring."""

    def __init__(
        self,
        identity: str,
        store: SqliteStore,
        registry: FlowRegistry,
        send: Send,
        ack: Callable[[object], None],
    ) -> None:
        self.identity = identity
        self.store = store
        self.registry = registry
        self._send = send
        self._ack = ack
        #: Inits for flows this node doesn't know, by responder flow id, held un-acked.
        self.held: dict[str, tuple[Envelope, object]] = {}

    def admit(
        self, envelope: Envelope, init: Init, delivery: object
    ) -> tuple[FlowState, FlowLogic[Any]] | None:
        """The responder to start for ``init`` (its state and flow), or None if there is none."""
        flow_id = responder_flow_id(envelope.sender, init.initiator_session)
        if self.store.processed_init(envelope.sender, init.initiator_session) is not None:
            log.info("dropping duplicate session-init %s from %s", envelope.id, envelope.sender)
            self._ack(delivery)
            return None
        try:
            found = self.registry.responder_for(init.flow_class)
        except UnknownFlowClass as exc:
            log.warning("keeping session-init %s for observation: %s", envelope.id, exc)
            self.held[flow_id] = (envelope, delivery)
            return None
        except SessionInitRejected as exc:
            self.reject(envelope, init, str(exc), delivery)
            return None
        refusal = found.refusal(init.flow_class, init.flow_version)
        if refusal is not None:
            self.reject(envelope, init, refusal, delivery)
            return None
        frame = frame_for(found.flow_class)
        args = codec.encode((envelope.sender, init.initiator_session))
        start = PutFlowStart(flow_id, frame.flow_class, StartKind.INITIATED, args, envelope.sender)
        state = new_responder(
            flow_id,
            self.identity,
            frame,
            start,
            sender=envelope.sender,
            initiator_session=init.initiator_session,
            peer_info=FlowInfo(init.flow_version, init.app),
            first_payload=init.first_payload,
            flow_version=found.version,
            delivery=delivery,
        )
        try:
            flow = responder(found.flow_class, flow_id, envelope.sender)
        except Exception as exc:
            log.warning("responder %s failed to start: %r", frame.flow_class, exc)
            self.reject(envelope, init, str(exc) or "Unable to establish session", delivery)
            return None
        return state, flow

    def reject(self, envelope: Envelope, init: Init, reason: str, delivery: object) -> None:
        """Refuse ``init``: tell the sender why, and ack it."""
        reject = Reject(init.initiator_session, ids.reject_id(init.initiator_session), reason)
        out = Envelope(
            ids.reject_id(init.initiator_session), self.identity, envelope.sender, reject
        )
        log.info("rejecting session-init %s from %s: %s", envelope.id, envelope.sender, reason)
        self._send((out,), _log_publish_error)
        self._ack(delivery)

    def drop_held(self, flow_id: str) -> bool:
        """Reject a session-init held for observation (an operator killed it)."""
        held = self.held.pop(flow_id, None)
        if held is None:
            return False
        envelope, delivery = held
        assert isinstance(envelope.body, Init)
        self.reject(envelope, envelope.body, f"Don't know {envelope.body.flow_class}", delivery)
        return True


def _log_publish_error(error: BaseException | None) -> None:
    if error is not None:
        log.warning("publishing a session rejection failed: %r", error)


__all__ = ["SessionInits"]

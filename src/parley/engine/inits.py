"""Session-inits: what a node does when a peer opens a session with it.

An :class:`~parley.protocol.messages.Init` names the initiating flow's class. The node answers it
in one of four ways (:meth:`SessionInits.admit`):

* a copy of an init whose responder already ran to its first commit (the processed-inits table
  knows it) is acked and dropped;
* an init for a class this node has never heard of is *held* for observation: the app may not be
  deployed yet. It is stored in the database and acked (so held inits can't fill the node's
  consumer), admitted again at the node's next start, or rejected when an operator kills it; a
  peer with too many inits held gets further ones rejected at once;
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
from parley.protocol.errors import DeserializationError
from parley.protocol.messages import (
    Envelope,
    FlowInfo,
    Init,
    Reject,
    decode_envelope,
    encode_envelope,
)
from parley.protocol.records import DeleteHeldInit, PutFlowStart, PutHeldInit, StartKind, StoreOp
from parley.protocol.state import FlowState, new_responder
from parley.store import SqliteStore

log = logging.getLogger("parley.runtime")

#: Inits held for observation from one peer at most; beyond, its inits are rejected.
MAX_HELD_PER_PEER = 100

#: Commits store operations; calls back with the error (or None).
Commit = Callable[[tuple[StoreOp, ...], Callable[[BaseException | None], None]], None]
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
        *,
        commit: Commit | None = None,
    ) -> None:
        self.identity = identity
        self.store = store
        self.registry = registry
        self._send = send
        self._ack = ack
        self._commit = commit
        #: Inits for flows this node doesn't know, by responder flow id: stored (and acked), so
        #: that a peer can't fill the node's consumer with them; re-admitted at the next start.
        self.held: dict[str, Envelope] = {}

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
            self._hold(flow_id, envelope, delivery, exc)
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
        if delivery is not None:
            self._ack(delivery)

    def _hold(
        self, flow_id: str, envelope: Envelope, delivery: object, exc: UnknownFlowClass
    ) -> None:
        """Keep an init for a class this node doesn't know, for observation: stored, then acked.

        The app may not be deployed yet: the init is admitted again at the node's next start. A
        copy of an init already held is acked and dropped; a peer that has more than
        :data:`MAX_HELD_PER_PEER` inits held gets further ones rejected.
        """
        init = envelope.body
        assert isinstance(init, Init)
        if flow_id in self.held:
            log.info("dropping a copy of held session-init %s", envelope.id)
            self._ack(delivery)
            return
        held_from_peer = sum(1 for e in self.held.values() if e.sender == envelope.sender)
        if self._commit is None or held_from_peer >= MAX_HELD_PER_PEER:
            reason = f"Don't know {init.flow_class}"
            if self._commit is not None:
                log.warning("%s has %d inits held already", envelope.sender, held_from_peer)
            self.reject(envelope, init, reason, delivery)
            return
        log.warning("keeping session-init %s for observation: %s", envelope.id, exc)
        self.held[flow_id] = envelope

        def stored(error: BaseException | None) -> None:
            if error is None:
                self._ack(delivery)  # it is in the database now
            else:
                self.held.pop(flow_id, None)  # not acked: JetStream delivers it again
                log.warning("storing held session-init %s failed: %r", envelope.id, error)

        self._commit((PutHeldInit(flow_id, envelope.sender, encode_envelope(envelope)),), stored)

    def held_envelopes(self) -> list[Envelope]:
        """The inits held in the database (to admit again at start); unreadable ones dropped."""
        found = []
        for _, data in self.store.held_inits():
            try:
                found.append(decode_envelope(data))
            except DeserializationError as exc:
                log.warning("dropping a held session-init that no longer decodes: %s", exc)
        return found

    def release(self, flow_id: str) -> None:
        """Forget a held init (admitted now, or rejected)."""
        if self.held.pop(flow_id, None) is not None and self._commit is not None:
            self._commit((DeleteHeldInit(flow_id),), _log_commit_error)

    def drop_held(self, flow_id: str) -> bool:
        """Reject a session-init held for observation (an operator killed it)."""
        envelope = self.held.get(flow_id)
        if envelope is None:
            return False
        self.release(flow_id)
        assert isinstance(envelope.body, Init)
        self.reject(envelope, envelope.body, f"Don't know {envelope.body.flow_class}", None)
        return True


def _log_commit_error(error: BaseException | None) -> None:
    if error is not None:
        log.warning("forgetting a held session-init failed: %r", error)


def _log_publish_error(error: BaseException | None) -> None:
    if error is not None:
        log.warning("publishing a session rejection failed: %r", error)


__all__ = ["SessionInits"]

"""The flow runtime: hosts many flow drivers on one thread and connects them to the world.

A :class:`FlowRuntime` is the executor behind every driver it hosts (:class:`FlowHost`) and the
part of a node that starts flows, routes inbound session messages to them, restores them from their
checkpoints, and admits errored flows to the hospital. Everything outside the thread comes in
through :class:`RuntimePorts` (store commits, the transport, timers, external operations), so the
same runtime runs inside the in-process :class:`~parley.testing.MockNetwork` and inside a node's
``FlowWorker`` actors.

What the runtime keeps about each flow is one :class:`~parley.engine.records.FlowRecord` (its
driver, handle and messages in flight), so starting, passivating, retrying, restoring and removing a
flow each change one object. Session-inits are admitted by :class:`~parley.engine.inits.
SessionInits`; flows are rebuilt from checkpoints by :mod:`parley.engine.restore`.

Routing needs no table: our session ids embed our flow id, and a responder's flow id is derived
from the session-init that started it (so a redelivered init maps to the same flow).

The runtime owns the state (the :class:`~parley.engine.records.FlowTable`, the run queue, the
ports) and keeps here what runs on every step of every flow: the run queue, the :class:`FlowHost`
ports drivers commit, send and wait through, and inbound messages; and the operator actions. Its
other sections live beside it, each called from the runtime's methods of the same names: starting
flows and finding their handles (:mod:`parley.engine.starts`), and where a flow's incarnations
begin and end — restored, passivated, retried, removed
(:class:`~parley.engine.incarnations.Incarnations`, the one with state of its own).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar

from parley.engine import starts
from parley.engine.driver import FlowDriver, Identity
from parley.engine.handles import FlowHandle, responder_flow_id
from parley.engine.hospital import Hospital, HospitalPort
from parley.engine.incarnations import Incarnations, commit_quietly
from parley.engine.inits import SessionInits
from parley.engine.ports import RuntimePorts
from parley.engine.records import FlowRecord, FlowTable
from parley.flows.logic import FlowLogic
from parley.flows.registry import FlowRegistry
from parley.flows.session import checked
from parley.protocol.actions import ArmTimeout, ExecuteOperation, ReadSignal, RunQuery
from parley.protocol.errors import (
    DeserializationError,
    FlowUsageError,
    StateTransitionError,
    UnexpectedPayloadError,
)
from parley.protocol.events import (
    DoRemainingWork,
    Event,
    FlowFailed,
    KillRequested,
    OperationCompleted,
    OperationFailed,
    PassivationRequested,
    PeerRevoked,
    RetryFromCheckpoint,
    SessionMessageDelivered,
    SignalArrived,
    SignalRead,
    TimedOut,
    WokeUp,
)
from parley.protocol.messages import Envelope, Init, decode_envelope
from parley.protocol.records import FlowStatus, PutSignal, SetFlowStatus, StoreOp
from parley.protocol.requests import AwaitSignal
from parley.protocol.state import FlowState, flow_id_of_session
from parley.store import SqliteStore

T = TypeVar("T")
log = logging.getLogger("parley.runtime")


class Parties(Protocol):
    """Who is in the network, as the runtime asks (the node's network map)."""

    def refusal(self, name: str) -> str | None:
        """Why a flow may not open a session with ``name`` (``None``: it may)."""
        ...

    def revoked(self, name: str) -> bool:
        """Whether ``name`` was revoked from the network."""
        ...


class FlowRuntime:
    """Hosts flow drivers; see the module docstring."""

    def __init__(
        self,
        identity: str,
        store: SqliteStore,
        ports: RuntimePorts,
        *,
        registry: FlowRegistry | None = None,
        hospital: HospitalPort | None = None,
        parties: Parties | None = None,
        identity_service: Identity | None = None,
    ) -> None:
        """Host flows for node ``identity``.

        Args:
            identity: the node's name.
            store: the node's store (read; writes go through ``ports.commit``).
            ports: what the runtime does to the world.
            registry: which responder answers which initiating flow.
            hospital: where errored flows go.
            parties: who is in the network (the network map); ``None`` admits every party.
            identity_service: the node's key and the map's, for flows that sign (``None``:
                flows that ask for it get a FlowUsageError).
        """
        self.identity = identity
        self.parties = parties
        self._identity_service = identity_service
        self.store = store
        self.ports = ports
        self.registry = registry or FlowRegistry.default()
        self.hospital: HospitalPort = hospital or Hospital(random=ports.random)
        #: Every flow this runtime keeps something about (see :mod:`parley.engine.records`).
        self.flows = FlowTable()
        self.inits = SessionInits(
            identity, store, self.registry, ports.send, self._ack, commit=ports.commit
        )
        #: Restores, passivates, retries and removes flows (see :mod:`parley.engine.incarnations`).
        self.incarnations = Incarnations(self)
        #: The run queue: drivers with events to process, in the order they became ready.
        self._ready: dict[str, FlowDriver] = {}
        self._scheduled = False
        #: Set by a host that calls :meth:`run_ready` itself at the end of each of its turns.
        self.in_turn = False
        #: Flows that ran since :meth:`active_flow_ids` was last asked (the host's LRU).
        self._active: set[str] = set()
        #: Called with ``(flow_id, result, error)`` whenever a flow ends (tests, metrics).
        self.on_flow_end: Callable[[str, object, BaseException | None], None] | None = None

    # ---- what hosts ask --------------------------------------------------------------------
    @property
    def live_count(self) -> int:
        """How many flows are in memory."""
        return self.flows.live

    def is_live(self, flow_id: str) -> bool:
        """Whether the flow is in memory (not passivated, not finished)."""
        return self.flows.driver(flow_id) is not None

    def live_drivers(self) -> list[FlowDriver]:
        return list(self.flows.drivers())

    def handles(self) -> dict[str, FlowHandle[Any]]:
        """The handles clients hold, by flow id (a worker that dies hands them to its successor)."""
        return {r.flow_id: r.handle for r in self.flows.records() if r.handle is not None}

    def adopt_handles(self, handles: dict[str, FlowHandle[Any]]) -> None:
        """Take over the handles of flows this runtime restored (from a dead predecessor); those
        of flows not here are failed. See :func:`parley.engine.starts.adopt_handles`."""
        starts.adopt_handles(self, handles)

    def handle_count(self) -> int:
        """How many flows have a handle that a client may still wait on."""
        return sum(record.handle is not None for record in self.flows.records())

    def close_all(self) -> None:
        """Discard every flow in memory (the host stops; checkpoints stay)."""
        for driver in self.flows.drivers():
            driver.close()

    # ---- starting flows -------------------------------------------------------------------
    def start_flow(
        self,
        flow: FlowLogic[T],
        *,
        flow_id: str | None = None,
        client_id: str | None = None,
        started_by: str | None = None,
        handle: FlowHandle[T] | None = None,
    ) -> FlowHandle[T]:
        """Start ``flow``; with a ``client_id``, a repeated start returns the same flow.

        See :func:`parley.engine.starts.start_flow`.
        """
        return starts.start_flow(
            self,
            flow,
            flow_id=flow_id,
            client_id=client_id,
            started_by=started_by,
            handle=handle,
        )

    def handle_of(self, flow_id: str) -> FlowHandle[Any] | None:
        """The handle of a flow of this node, also after a restart (``None``: no such flow, or
        one whose outcome was not kept). See :func:`parley.engine.starts.handle_of`."""
        return starts.handle_of(self, flow_id)

    def reattach(self, client_id: str) -> FlowHandle[Any] | None:
        """The handle of the flow started with ``client_id`` (see :meth:`handle_of`)."""
        return starts.reattach(self, client_id)

    # ---- inbound messages -----------------------------------------------------------------
    def receive(self, data: bytes, delivery: object) -> Envelope | None:
        """An envelope arrived for this node (raw bytes); returns it, or None if undecodable."""
        try:
            envelope = decode_envelope(data)
        except DeserializationError as exc:
            log.warning("dropping an undecodable message (%d bytes): %s", len(data), exc)
            self._ack(delivery)
            return None
        self.deliver(envelope, delivery)
        return envelope

    def deliver(self, envelope: Envelope, delivery: object) -> None:
        body = envelope.body
        if envelope.recipient != self.identity:
            log.warning("dropping message %s addressed to %s", envelope.id, envelope.recipient)
            self._ack(delivery)
            return
        if isinstance(body, Init):
            self._on_init(envelope, body, delivery)
            return
        record = self.incarnations.live(flow_id_of_session(body.session))
        if record is None or record.driver is None:
            log.info(
                "dropping %s %s from %s: no session %s here",
                envelope.kind,
                envelope.id,
                envelope.sender,
                body.session,
            )
            self._ack(delivery)
            return
        event = SessionMessageDelivered(body, envelope.sender, delivery)
        record.uncommitted.append(event)
        record.driver.post(event)

    def _on_init(self, envelope: Envelope, init: Init, delivery: object) -> None:
        record = self.flows.get(responder_flow_id(envelope.sender, init.initiator_session))
        if record is not None and (record.driver is not None or record.retiring is not None):
            # A copy of an init being processed (JetStream's dedup misses a copy under another
            # message id): its first copy is acked with the flow, this one at once.
            log.info("dropping a copy of session-init %s from %s", envelope.id, envelope.sender)
            self._ack(delivery)
            return
        admitted = self.inits.admit(envelope, init, delivery)
        if admitted is not None:
            state, flow = admitted
            log.info(
                "flow %s (%s) started by %s's %s",
                state.flow_id,
                state.flow_class,
                envelope.sender,
                init.flow_class,
                extra={"flow_id": state.flow_id},
            )
            driver = FlowDriver(self, state, flow)
            self.flows.attach(driver)
            driver.post(DoRemainingWork())

    @property
    def held_inits(self) -> dict[str, Envelope]:
        """Session-inits for flows this node doesn't know, held (stored) for observation."""
        return self.inits.held

    def readmit_held(self, mine: Callable[[str], bool] = lambda flow_id: True) -> int:
        """Admit again the stored session-inits held for observation (a node's start: the app
        may be deployed now). Returns how many were admitted.

        ``mine`` picks this runtime's flows (a node's workers share one database). An init whose
        responder already committed its first checkpoint is forgotten.
        """
        admitted = 0
        for envelope in self.inits.held_envelopes():
            init = envelope.body
            if not isinstance(init, Init):
                continue
            flow_id = responder_flow_id(envelope.sender, init.initiator_session)
            if not mine(flow_id) or self.is_live(flow_id):
                continue
            if self.store.processed_init(envelope.sender, init.initiator_session) is not None:
                self.inits.held[flow_id] = envelope
                self.inits.release(flow_id)
                continue
            self._on_init(envelope, init, None)
            admitted += flow_id not in self.inits.held
        return admitted

    def _ack(self, delivery: object) -> None:
        if delivery is not None:
            try:
                self.ports.ack((delivery,))
            except Exception:
                log.exception("ack failed")

    # ---- restore --------------------------------------------------------------------------
    def restore_flows(self, flow_ids: Iterable[str]) -> int:
        """Restore these stored flows (node start); returns how many were restored.

        Flows already in memory are left alone. The node's FlowManager hands each worker the ids
        of its shard; MockNetwork passes every runnable flow of its store.
        """
        count = 0
        for flow_id in flow_ids:
            if not self.is_live(flow_id) and self.incarnations.restore(flow_id) is not None:
                count += 1
        return count

    # ---- operator actions -----------------------------------------------------------------
    def kill(self, flow_id: str) -> bool:
        """Kill a flow (live or stored). Returns False if there is no such running flow.

        A stored flow that can't be restored (its checkpoint does not decode) is marked KILLED:
        nothing of it can run, so its counterparties can't be told; they see the session end
        when they time out or are killed themselves.
        """
        record = self.incarnations.live(flow_id)
        if record is not None and record.driver is not None and not record.driver.done:
            record.driver.post(KillRequested())
            return True
        if self.inits.drop_held(flow_id):
            return True
        stored = self.store.load_flow(flow_id)
        runnable = (FlowStatus.RUNNABLE, FlowStatus.HOSPITALIZED)
        if record is None and stored is not None and stored.status in runnable:
            log.warning("flow %s can't be restored; marking it KILLED", flow_id)
            commit_quietly(self.ports, (SetFlowStatus(flow_id, FlowStatus.KILLED),))
            return True
        return False

    def retry(self, flow_id: str) -> bool:
        """Retry a flow kept for observation from its last checkpoint now (an operator's call,
        e.g. after a fix was deployed). Returns False if the flow is not kept for observation.

        If it fails again it is admitted again; its earlier admissions stay on record.
        """
        record = self.incarnations.live(flow_id)
        driver = record.driver if record is not None else None
        state = driver.state if driver is not None else None
        if (
            driver is None
            or driver.done
            or state is None
            or state.status is not FlowStatus.HOSPITALIZED
            or state.errors is None
            or state.errors.propagating
        ):
            return False
        log.info("flow %s: retried from its checkpoint by an operator", flow_id)
        driver.post(RetryFromCheckpoint())
        return True

    def signal(
        self,
        flow_id: str,
        name: str,
        payload: bytes,
        done: Callable[[BaseException | None], None],
    ) -> None:
        """Store a signal for a running flow, then tell it (see ``FlowLogic.wait_for_signal``).

        ``done(None)`` once it is stored; ``done(error)`` if there is no such running flow, or the
        flow waits for this signal with another type (it keeps waiting; nothing is stored).
        """
        record = self.incarnations.live(flow_id)
        driver = record.driver if record is not None else None
        if driver is None or driver.done:
            done(FlowUsageError(f"there is no running flow {flow_id} on this node"))
            return
        pending = driver.state.pending
        request = pending.request if pending is not None else None
        if isinstance(request, AwaitSignal) and request.name == name:
            try:
                expected: Any = request.expected
                checked(expected, payload)
            except (UnexpectedPayloadError, FlowUsageError) as exc:
                done(exc)
                return

        def stored(error: BaseException | None) -> None:
            if error is None:
                self.post(flow_id, SignalArrived(name))
            done(error)

        self.ports.commit((PutSignal(flow_id, name, payload),), stored)

    def passivate(self, flow_id: str) -> None:
        """Ask a flow to leave memory (it does if it is waiting; see the protocol's rules)."""
        driver = self.flows.driver(flow_id)
        if driver is not None:
            driver.post(PassivationRequested())

    def peer_revoked(self, peer: str, reason: str, stored: Iterable[str] = ()) -> int:
        """End the sessions of every flow here with ``peer``, which was revoked.

        Live flows are told at once; ``stored`` names flows of this runtime that are not in
        memory (passivated): those with a session to ``peer`` are restored and told too.

        Returns:
            How many flows were told.
        """
        told = 0
        event = PeerRevoked(peer, reason)
        for driver in list(self.flows.drivers()):
            if _has_session_with(driver.state, peer):
                driver.post(event)
                told += 1
        for flow_id in stored:
            if self.is_live(flow_id):
                continue
            found = self.store.load_flow(flow_id)
            if found is None or found.header is None or not _header_mentions(found.header, peer):
                continue
            record = self.incarnations.live(flow_id)
            if record is not None and record.driver is not None:
                record.driver.post(event)
                told += 1
        return told

    def post(self, flow_id: str, event: Event) -> None:
        """Deliver an event to a flow, re-activating it from its checkpoint if needed."""
        record = self.incarnations.live(flow_id)
        if record is not None and record.driver is not None:
            record.driver.post(event)

    # ---- scheduling -----------------------------------------------------------------------
    def run_ready(self) -> bool:
        """Run every driver with events; returns whether anything ran."""
        self._scheduled = False
        ran = False
        while self._ready:
            flow_id = next(iter(self._ready))
            driver = self._ready.pop(flow_id)
            driver.run()
            self._active.add(flow_id)
            ran = True
        return ran

    def active_flow_ids(self) -> list[str]:
        """The flows that ran since the last call (for the host's idleness bookkeeping)."""
        active, self._active = list(self._active), set()
        return active

    def is_waiting(self, flow_id: str) -> bool:
        """Whether a live flow is suspended with nothing to do until an event comes."""
        record = self.flows.get(flow_id)
        return (
            record is not None
            and record.driver is not None
            and record.driver.idle
            and record.publishing == 0
        )

    def _run_scheduled(self) -> None:
        self.run_ready()

    # ---- FlowHost -------------------------------------------------------------------------
    def ready(self, driver: FlowDriver) -> None:
        self._ready[driver.flow_id] = driver
        if not self._scheduled and not self.in_turn:
            self._scheduled = True
            self.ports.call_soon(self._run_scheduled)

    def _record_of(self, driver: FlowDriver) -> FlowRecord:
        """The driver's record (made anew for a removed flow whose last sends go out now)."""
        return self.flows.record(driver.flow_id)

    def commit(self, driver: FlowDriver, ops: tuple[StoreOp, ...]) -> None:
        """Commit once the flow's earlier publishes are acknowledged (so no checkpoint ever
        passes a send that may not have happened)."""
        record = self._record_of(driver)

        def go() -> None:
            record.deferred_commit = None
            failed, record.publish_error = record.publish_error, None
            if failed is not None:
                driver.commit_done(failed)
                return
            delivered = len(record.uncommitted)

            def done(error: BaseException | None) -> None:
                if error is None and delivered and record.driver is driver:
                    del record.uncommitted[:delivered]
                if record.retiring is driver and error is None:
                    record.retiring = None
                    self.hospital.discharge(driver.flow_id)
                    self.flows.forget_if_unused(record)
                driver.commit_done(error)  # a failure goes to the hospital (see Incarnations)

            self.ports.commit(ops, done)

        if record.publishing:
            record.deferred_commit = go
        else:
            go()

    def send(self, driver: FlowDriver, envelopes: tuple[Envelope, ...]) -> None:
        record = self._record_of(driver)
        record.publishing += 1

        def done(error: BaseException | None) -> None:
            record.publishing -= 1
            if error is not None:
                log.warning("publishing for flow %s failed: %r", driver.flow_id, error)
                if record.publish_error is None:
                    record.publish_error = error
            if record.publishing > 0:
                return
            if record.deferred_commit is not None:
                record.deferred_commit()
            elif record.publish_error is not None and record.driver is driver:
                failed, record.publish_error = record.publish_error, None
                wrapped = StateTransitionError(f"publishing failed: {failed!r}", "SendMessages")
                wrapped.__cause__ = failed
                driver.post(FlowFailed(wrapped))
            self.flows.forget_if_unused(record)

        self.ports.send(envelopes, done)

    def ack(self, deliveries: tuple[object, ...]) -> None:
        self.ports.ack(deliveries)

    def schedule_wake_up(self, driver: FlowDriver, until: datetime, incarnation: int) -> None:
        flow_id = driver.flow_id
        self.ports.call_at(until, lambda: self.post(flow_id, WokeUp(until, incarnation)))

    def execute(self, driver: FlowDriver, action: ExecuteOperation) -> None:
        request, flow_id = action.request, driver.flow_id

        def done(ok: bool, value: object) -> None:
            event: Event
            if ok:
                event = OperationCompleted(value, action.incarnation)
            else:
                assert isinstance(value, BaseException)
                event = OperationFailed(value, action.incarnation)
            self.post(flow_id, event)

        self.ports.run_operation(lambda: request.fn(*request.args), done)

    def query(self, driver: FlowDriver, action: RunQuery) -> None:
        flow_id, request = driver.flow_id, action.request
        event: Event
        try:
            rows = self.store.query(request.sql, request.params)
            event = OperationCompleted(rows, action.incarnation)
        except Exception as exc:
            event = OperationFailed(exc, action.incarnation)
        self.ports.call_soon(lambda: self.post(flow_id, event))

    def arm_timeout(self, driver: FlowDriver, action: ArmTimeout) -> None:
        when = self.ports.now() + timedelta(seconds=action.seconds)
        event = TimedOut(action.suspends, action.incarnation)

        def fire() -> None:
            if self.flows.driver(driver.flow_id) is driver:
                driver.post(event)

        self.ports.call_at(when, fire)

    def read_signal(self, driver: FlowDriver, action: ReadSignal) -> None:
        found = self.store.next_signal(driver.flow_id, action.name)
        signal_id, payload = found if found is not None else (None, None)
        driver.post(
            SignalRead(action.name, signal_id, payload, action.suspends, action.incarnation)
        )

    def started(self, driver: FlowDriver) -> None:
        record = self.flows.get(driver.flow_id)
        handle = record.handle if record is not None else None
        if handle is not None and not handle.started.done():
            handle.started.set_result(None)

    def removed(
        self, driver: FlowDriver, result: object, error: BaseException | None, *, durable: bool
    ) -> None:
        self.incarnations.removed(driver, result, error, durable=durable)

    def passivated(self, driver: FlowDriver) -> None:
        self.incarnations.passivated(driver)

    def restore(self, driver: FlowDriver) -> None:
        self.incarnations.restore_from_checkpoint(driver)

    def admit(self, driver: FlowDriver, state: FlowState) -> None:
        self.incarnations.admit(driver, state)

    def party_refusal(self, party: str) -> str | None:
        return self.parties.refusal(party) if self.parties is not None else None

    def identity_service(self) -> Identity:
        if self._identity_service is None:
            raise FlowUsageError(
                f"node {self.identity} has no identity for flows to sign with: run it with a "
                "network map (an operator key)"
            )
        return self._identity_service

    def now(self) -> datetime:
        return self.ports.now()

    def random(self) -> float:
        return self.ports.random()

    def uuid(self) -> str:
        return self.ports.uuid()


def _has_session_with(state: FlowState, peer: str) -> bool:
    return any(session.peer == peer for session in state.sessions.values())


def _header_mentions(header: bytes, peer: str) -> bool:
    """Whether a stored header may hold a session with ``peer`` (a cheap test before a restore).

    The node name is a CBOR text string in the header; a false positive only costs a restore.
    """
    encoded = peer.encode()
    return encoded in header


__all__ = ["FlowRuntime", "RuntimePorts"]

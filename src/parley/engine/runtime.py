"""The flow runtime: hosts many flow drivers on one thread and connects them to the world.

A :class:`FlowRuntime` is the executor behind every driver it hosts (:class:`FlowHost`) and the
part of a node that starts flows, routes inbound session messages to them, restores them from their
checkpoints, and admits errored flows to the hospital. Everything outside the thread comes in
through :class:`RuntimePorts` (store commits, the transport, timers, external operations), so the
same runtime runs inside the in-process :class:`~parley.testing.MockNetwork` and inside a node's
``FlowWorker`` actors.

Routing needs no table: our session ids embed our flow id, and a responder's flow id is derived
from the session-init that started it (so a redelivered init maps to the same flow).

What the runtime keeps about each flow is one :class:`~parley.engine.records.FlowRecord` (its
driver, handle and messages in flight), so starting, passivating, retrying, restoring and removing a
flow each change one object. Session-inits are admitted by :class:`~parley.engine.inits.
SessionInits`; flows are rebuilt from checkpoints by :mod:`parley.engine.restore`.

Why this module is longer than the project's ~500-line guideline: :class:`FlowRuntime` is one
object — the executor behind every driver (the :class:`FlowHost` port) and the owner of the
:class:`~parley.engine.records.FlowTable`. Its sections (starts, inbound messages, restore,
operator actions, scheduling, the port, the network map) are short methods over the same records;
splitting the class would split the per-flow bookkeeping that one record per flow keeps together.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar

from parley.engine.driver import FlowDriver, Identity
from parley.engine.handles import FlowHandle, FlowLostError, client_flow_id, responder_flow_id
from parley.engine.hospital import Hospital, HospitalPort
from parley.engine.inits import SessionInits
from parley.engine.ports import RuntimePorts
from parley.engine.records import FlowRecord, FlowTable
from parley.engine.restore import UNREADABLE, build, decoded_error, restored
from parley.flows.logic import FlowLogic
from parley.flows.marks import frame_for
from parley.flows.progress import adopt_tracker, tracker_of
from parley.flows.registry import FlowRegistry
from parley.flows.session import checked
from parley.protocol import codec
from parley.protocol.actions import ArmTimeout, ExecuteOperation, ReadSignal, RunQuery
from parley.protocol.errors import (
    ClientIdInUseError,
    DeserializationError,
    FlowUsageError,
    KilledFlowException,
    ParleyError,
    StateTransitionError,
    UnexpectedPayloadError,
    type_name,
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
from parley.protocol.evolve import replace
from parley.protocol.messages import Envelope, Init, decode_envelope
from parley.protocol.records import (
    MAX_CLIENT_ID,
    DeleteAdmissions,
    FlowStatus,
    PutFlowStart,
    PutSignal,
    SetFlowStatus,
    StartKind,
    StoreOp,
)
from parley.protocol.requests import AwaitSignal
from parley.protocol.state import FlowState, flow_id_of_session, new_flow
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
        #: Flows admitted to the hospital before their first checkpoint.
        self._admitted_early: set[str] = set()
        self.store = store
        self.ports = ports
        self.registry = registry or FlowRegistry.default()
        self.hospital: HospitalPort = hospital or Hospital(random=ports.random)
        #: Every flow this runtime keeps something about (see :mod:`parley.engine.records`).
        self.flows = FlowTable()
        self.inits = SessionInits(
            identity, store, self.registry, ports.send, self._ack, commit=ports.commit
        )
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
        """Take over the handles of flows this runtime restored (from a dead predecessor).

        A handle whose flow is not here (it finished, or can't be restored) is failed, so that no
        client waits forever.
        """
        for flow_id, handle in handles.items():
            record = self.flows.get(flow_id)
            if record is not None and record.driver is not None:
                record.handle = handle
            elif not handle.future.done():
                error = FlowLostError(
                    f"flow {flow_id}'s worker failed and the flow could not be restored: "
                    "see the node's log and its stored status"
                )
                if not handle.started.done():
                    handle.started.set_exception(error)
                handle.future.set_exception(error)

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

        ``handle`` (without client id) is the handle the caller already gave out.
        """
        if not isinstance(flow, FlowLogic):
            raise FlowUsageError(f"start_flow() takes a FlowLogic, not {type(flow).__name__}")
        if client_id is not None and len(client_id) > MAX_CLIENT_ID:
            raise FlowUsageError(f"a client id may have at most {MAX_CLIENT_ID} characters")
        args, kwargs = flow._parley_args
        try:
            encoded = codec.encode((list(args), kwargs))
        except ParleyError as exc:
            raise FlowUsageError(
                f"the arguments of {type(flow).__qualname__} can't be checkpointed: {exc}"
            ) from exc
        if client_id is not None:
            flow_id = client_flow_id(client_id)
            existing = self._attach(flow_id, client_id, type_name(type(flow)), encoded)
            if existing is not None:
                flow._parley_args = ((), {})  # this copy will never run
                return existing
        flow_id = flow_id or self.ports.uuid().replace("-", "")
        frame = frame_for(type(flow))
        start = PutFlowStart(
            flow_id, frame.flow_class, StartKind.RPC, encoded, started_by, client_id
        )
        state = new_flow(flow_id, self.identity, frame, start, client_id)
        driver = FlowDriver(self, state, flow)
        record = self.flows.attach(driver)
        record.handle = handle or FlowHandle(flow_id, tracker_of(flow))
        log.info("flow %s (%s) started", flow_id, frame.flow_class, extra={"flow_id": flow_id})
        driver.post(DoRemainingWork())
        return record.handle

    def _attach(
        self, flow_id: str, client_id: str, flow_class: str, args: bytes
    ) -> FlowHandle[Any] | None:
        """The flow that already holds ``client_id``, if any (refused if it is another flow)."""
        record = self.flows.get(flow_id)
        if record is not None and record.handle is not None:
            self._same_start(client_id, flow_id, self._start_of(record), flow_class, args)
            return record.handle
        result = self.store.flow_result(client_id)
        if result is not None:
            started = (result.flow_class, result.args)
            self._same_start(client_id, result.flow_id, started, flow_class, args)
            done: FlowHandle[Any] = FlowHandle(result.flow_id)
            if result.error is not None:
                done.future.set_exception(decoded_error(result.error))
            else:
                done.future.set_result(codec.decode(result.value) if result.value else None)
            done.started.set_result(None)
            return done
        stored = self.store.load_flow(flow_id)
        if stored is not None:
            started = (stored.flow_class, stored.args)
            self._same_start(client_id, flow_id, started, flow_class, args)
            self._restore(flow_id)
            record = self.flows.get(flow_id)
            return record.handle if record is not None else None
        return None

    def handle_of(self, flow_id: str) -> FlowHandle[Any] | None:
        """The handle of a flow of this node, also after a restart.

        A flow started here (an RPC start or a client id) has had its handle since its start; a
        responder (started by a peer's session-init) is given one when first asked, so that its
        progress and its end can be followed while it runs. A flow in memory gives its handle; a
        stored one is restored first; a finished flow that had a client id gives a finished
        handle with its stored outcome. ``None``: no such flow (or one that finished without a
        client id, whose outcome was not kept).
        """
        record = self.flows.get(flow_id)
        if record is not None and record.handle is not None:
            return record.handle
        stored = self.store.load_flow(flow_id)
        if record is not None and record.driver is not None and record.retiring is None:
            return self._follow(record, durable=stored is not None)
        if stored is not None and stored.kind is not StartKind.RPC:  # a passivated responder
            record = self._live(flow_id)
            return self._follow(record, durable=True) if record is not None else None
        if stored is not None:
            record = self._live(flow_id)
            if record is not None and record.handle is not None:
                return record.handle
            if stored.client_id is None:
                return None
        client_id = stored.client_id if stored is not None else None
        client_id = client_id or self.store.client_id_of_result(flow_id)
        return self._finished(client_id) if client_id is not None else None

    def _follow(self, record: FlowRecord, *, durable: bool) -> FlowHandle[Any] | None:
        """A handle for a live flow that has none (a responder); it ends with the flow."""
        if record.handle is not None or record.driver is None:
            return record.handle
        record.handle = FlowHandle(record.flow_id, tracker_of(record.driver.flow))
        if durable:
            record.handle.started.set_result(None)
        return record.handle

    def reattach(self, client_id: str) -> FlowHandle[Any] | None:
        """The handle of the flow started with ``client_id`` (see :meth:`handle_of`)."""
        flow_id = client_flow_id(client_id)
        return self.handle_of(flow_id) or self._finished(client_id)

    def _finished(self, client_id: str) -> FlowHandle[Any] | None:
        result = self.store.flow_result(client_id)
        if result is None:
            return None
        done: FlowHandle[Any] = FlowHandle(result.flow_id)
        if result.error is not None:
            done.future.set_exception(decoded_error(result.error))
        else:
            done.future.set_result(codec.decode(result.value) if result.value else None)
        done.started.set_result(None)
        return done

    def _start_of(self, record: FlowRecord) -> tuple[str | None, bytes | None]:
        """The class and encoded arguments a flow was started with."""
        start = record.driver.initial_state.start_record if record.driver is not None else None
        if start is not None:  # not committed yet
            return start.flow_class, start.args
        stored = self.store.load_flow(record.flow_id)
        return (stored.flow_class, stored.args) if stored is not None else (None, None)

    @staticmethod
    def _same_start(
        client_id: str,
        flow_id: str,
        started: tuple[str | None, bytes | None],
        flow_class: str,
        args: bytes,
    ) -> None:
        """Refuse a start that repeats ``client_id`` for another class or other arguments.

        Results stored by older versions have no arguments: only their class is compared.
        """
        existing_class, existing_args = started
        if existing_class is not None and existing_class != flow_class:
            raise ClientIdInUseError(client_id, flow_id, existing_class, f"class {existing_class}")
        if existing_args is None or existing_args == args:
            return
        try:
            same = codec.decode(existing_args) == codec.decode(args)
        except DeserializationError:
            same = False
        if not same:
            raise ClientIdInUseError(
                client_id, flow_id, existing_class or flow_class, "other arguments"
            )

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
        record = self._live(flow_id_of_session(body.session))
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
            if not self.is_live(flow_id) and self._restore(flow_id) is not None:
                count += 1
        return count

    def _restore(self, flow_id: str, incarnation: int = 0) -> FlowDriver | None:
        stored = self.store.load_flow(flow_id)
        if stored is None or stored.header is None:
            return None
        try:
            found = restored(stored)
        except Exception as exc:  # a broken checkpoint, or flow code that no longer fits it
            level = logging.ERROR if isinstance(exc, UNREADABLE) else logging.WARNING
            log.log(
                level, "flow %s can't be restored, keeping it for observation: %r", flow_id, exc
            )
            self._commit_quietly((SetFlowStatus(flow_id, FlowStatus.HOSPITALIZED),))
            return None
        state = found.state
        if stored.status is FlowStatus.HOSPITALIZED:
            # It runs again: stored as runnable now, not only at its next checkpoint (flows()
            # and an operator's retry see it as it is).
            state = replace(state, status=FlowStatus.RUNNABLE)
            self._commit_quietly((SetFlowStatus(flow_id, FlowStatus.RUNNABLE),))
        state = replace(state, incarnation=incarnation, client_id=stored.client_id)
        flow = found.flow
        driver = FlowDriver(self, state, flow, journal=found.journal)
        record = self.flows.attach(driver)
        if stored.kind is StartKind.RPC and record.handle is None:
            record.handle = FlowHandle(flow_id, tracker_of(flow))
            record.handle.started.set_result(None)  # it is durable: it has a checkpoint
        elif record.handle is not None and record.handle.progress is not None:
            # A handle that outlived the flow in memory (passivated, retried): its clients follow
            # its tracker, so the restored copy of the flow reports there.
            adopt_tracker(flow, record.handle.progress)
        driver.start_replay()
        if self.parties is not None:
            for peer in {s.peer for s in state.sessions.values()}:
                if self.parties.revoked(peer):
                    driver.post(PeerRevoked(peer, f"{peer} was revoked from the network"))
        return driver

    def _commit_quietly(self, ops: tuple[StoreOp, ...]) -> None:
        def done(error: BaseException | None) -> None:
            if error is not None:
                log.error("commit of %s failed: %r", ops, error)

        self.ports.commit(ops, done)

    # ---- operator actions -----------------------------------------------------------------
    def kill(self, flow_id: str) -> bool:
        """Kill a flow (live or stored). Returns False if there is no such running flow.

        A stored flow that can't be restored (its checkpoint does not decode) is marked KILLED:
        nothing of it can run, so its counterparties can't be told; they see the session end
        when they time out or are killed themselves.
        """
        record = self._live(flow_id)
        if record is not None and record.driver is not None and not record.driver.done:
            record.driver.post(KillRequested())
            return True
        if self.inits.drop_held(flow_id):
            return True
        stored = self.store.load_flow(flow_id)
        runnable = (FlowStatus.RUNNABLE, FlowStatus.HOSPITALIZED)
        if record is None and stored is not None and stored.status in runnable:
            log.warning("flow %s can't be restored; marking it KILLED", flow_id)
            self._commit_quietly((SetFlowStatus(flow_id, FlowStatus.KILLED),))
            return True
        return False

    def retry(self, flow_id: str) -> bool:
        """Retry a flow kept for observation from its last checkpoint now (an operator's call,
        e.g. after a fix was deployed). Returns False if the flow is not kept for observation.

        If it fails again it is admitted again; its earlier admissions stay on record.
        """
        record = self._live(flow_id)
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

    def post(self, flow_id: str, event: Event) -> None:
        """Deliver an event to a flow, re-activating it from its checkpoint if needed."""
        record = self._live(flow_id)
        if record is not None and record.driver is not None:
            record.driver.post(event)

    def _live(self, flow_id: str) -> FlowRecord | None:
        """The flow's record with its driver: in memory, or restored (passivated flows)."""
        record = self.flows.get(flow_id)
        if record is not None:
            if record.retiring is not None:
                return None
            if record.driver is not None:
                return record
        if self._restore(flow_id) is None:
            return None
        return self.flows.get(flow_id)

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
                driver.commit_done(error)  # a failure goes to the hospital (see _verdict)

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
        record = self._live(flow_id)
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

    def started(self, driver: FlowDriver) -> None:
        record = self.flows.get(driver.flow_id)
        handle = record.handle if record is not None else None
        if handle is not None and not handle.started.done():
            handle.started.set_result(None)

    def removed(
        self, driver: FlowDriver, result: object, error: BaseException | None, *, durable: bool
    ) -> None:
        flow_id = driver.flow_id
        _log_end(driver, error, self.ports.now())
        record = self._record_of(driver)
        if durable:
            self.hospital.discharge(flow_id)
        else:  # until its checkpoint's deletion commits; the hospital keeps its budgets till then
            record.retiring = driver
        handle, record.handle = record.handle, None
        self.flows.detach(record)
        if flow_id in self._admitted_early:
            # Admitted before it was ever checkpointed: no stored flow deletes its records.
            self._admitted_early.discard(flow_id)
            self._commit_quietly((DeleteAdmissions(flow_id),))
        # Messages that reached the flow after its last step (while its final commit was in
        # flight) find no session any more: acked and dropped, as for any ended session.
        late = [
            e.delivery
            for e in driver.take_mailbox()
            if isinstance(e, SessionMessageDelivered) and e.delivery is not None
        ]
        if late:
            log.info("flow %s ended: dropping %d late messages", flow_id, len(late))
            self.ack(tuple(late))
        if self.on_flow_end is not None:
            self.on_flow_end(flow_id, result, error)
        if handle is None:
            return
        if not handle.started.done():
            handle.started.set_result(None)
        if error is None:
            handle.future.set_result(result)
        else:
            handle.future.set_exception(error)

    def passivate(self, flow_id: str) -> None:
        """Ask a flow to leave memory (it does if it is waiting; see the protocol's rules)."""
        driver = self.flows.driver(flow_id)
        if driver is not None:
            driver.post(PassivationRequested())

    def passivated(self, driver: FlowDriver) -> None:
        flow_id = driver.flow_id
        driver.close()
        record = self.flows.get(flow_id)
        if record is not None and record.driver is driver:
            self.flows.detach(record)
        # Events that arrived after the passivation was decided are for the restored flow.
        for event in driver.take_mailbox():
            if not isinstance(event, DoRemainingWork | PassivationRequested):
                record = self._live(flow_id)
                if record is None or record.driver is None:
                    continue
                if isinstance(event, SessionMessageDelivered):
                    record.uncommitted.append(event)
                record.driver.post(event)

    def restore(self, driver: FlowDriver) -> None:
        record = self._record_of(driver)
        driver.close()
        redeliver, record.uncommitted = record.uncommitted, []
        # Detach without forgetting: the record (handle, publishes) carries over to the new one.
        self.flows.detach(record)
        killed = any(isinstance(e, KillRequested) for e in driver.take_mailbox())
        self._reincarnate(driver, driver.state.incarnation + 1, redeliver, killed)

    def _reincarnate(
        self,
        driver: FlowDriver,
        incarnation: int,
        redeliver: list[SessionMessageDelivered],
        killed: bool,
    ) -> None:
        """Bring a retried flow back from its checkpoint (or its start record)."""
        try:
            fresh = self._restore(driver.flow_id, incarnation)
        except Exception as exc:  # the checkpoint could not be read (locked, an I/O error)
            log.warning(
                "flow %s: reading its checkpoint failed (%r); trying again", driver.flow_id, exc
            )
            when = self.ports.now() + timedelta(seconds=1)
            self.ports.call_at(
                when, lambda: self._reincarnate(driver, incarnation, redeliver, killed)
            )
            return
        if fresh is None and self._ended_durably(driver):
            # Its final commit was written although it was reported failed: it is over.
            end = driver.unconfirmed_end
            value, error = (end.result, end.error) if end is not None else (None, None)
            if end is None and driver.state.client_id is not None:
                stored = self._finished(driver.state.client_id)
                if stored is not None and stored.future.done():
                    error = stored.future.exception()
                    value = None if error is not None else stored.future.result()
            log.info("flow %s had ended already (its last commit was written)", driver.flow_id)
            self.removed(driver, value, error, durable=True)
            if redeliver:
                self.ack(tuple(e.delivery for e in redeliver if e.delivery is not None))
            return
        fresh = fresh or self._restart(driver, incarnation)
        if fresh is None:
            return
        fresh_record = self._record_of(fresh)
        for event in redeliver:
            fresh_record.uncommitted.append(event)
            fresh.post(event)
        if killed:
            fresh.post(KillRequested())

    def _ended_durably(self, driver: FlowDriver) -> bool:
        """Whether a flow found without a checkpoint had committed its end (not never begun)."""
        state = driver.state
        if state.persisted:
            return True  # it had a checkpoint: only its final commit deletes it
        if state.client_id is not None and self.store.flow_result(state.client_id) is not None:
            return True
        fact = driver.initial_state.init_fact
        return fact is not None and (
            self.store.processed_init(fact.sender, fact.initiator_session) is not None
        )

    def _restart(self, old: FlowDriver, incarnation: int) -> FlowDriver | None:
        """Start a never-checkpointed flow again from its start record."""
        start = old.initial_state.start_record
        if start is None:
            log.error("flow %s has no checkpoint and no start record: can't retry it", old.flow_id)
            return None
        flow = build(type(old.flow), old.flow_id, start.kind, start.args)
        fresh_state = replace(old.initial_state, incarnation=incarnation)
        driver = FlowDriver(self, fresh_state, flow)
        self.flows.attach(driver)
        driver.post(DoRemainingWork())
        return driver

    def admit(self, driver: FlowDriver, state: FlowState) -> None:
        flow_id = driver.flow_id
        if not state.persisted:
            self._admitted_early.add(flow_id)  # its records must go with it (see removed)

        def verdict(event: Event, delay: float) -> None:  # may be called on another thread
            if delay <= 0:
                self.ports.call_soon(lambda: self._verdict(flow_id, driver, event))
            else:
                at = self.ports.now() + timedelta(seconds=delay)
                self.ports.call_at(at, lambda: self._verdict(flow_id, driver, event))

        self.hospital.admit(state, self.ports.now(), verdict)

    def _verdict(self, flow_id: str, driver: FlowDriver, event: Event) -> None:
        if self.flows.driver(flow_id) is driver:
            driver.post(event)
            return
        record = self.flows.get(flow_id)
        if record is not None and record.retiring is driver:
            self._retiring_failed(record, driver, event)

    def _retiring_failed(self, record: FlowRecord, driver: FlowDriver, event: Event) -> None:
        """A finished flow's final publishes or commit failed, so its checkpoint is still stored.

        Its result was given already; what is left undone is telling its peers and deleting the
        checkpoint. On the hospital's retry it is restored from that checkpoint and finishes again
        (re-sending the same messages under the same ids); otherwise it is kept for observation,
        as a restart would find it.
        """
        record.retiring = None
        redeliver, record.uncommitted = record.uncommitted, []
        self.flows.forget_if_unused(record)
        if not isinstance(event, RetryFromCheckpoint):
            self._commit_quietly((SetFlowStatus(driver.flow_id, FlowStatus.HOSPITALIZED),))
            return
        fresh = self._restore(driver.flow_id, driver.state.incarnation + 1)
        if fresh is None:
            return
        fresh_record = self._record_of(fresh)
        for delivered in redeliver:
            fresh_record.uncommitted.append(delivered)
            fresh.post(delivered)

    def party_refusal(self, party: str) -> str | None:
        return self.parties.refusal(party) if self.parties is not None else None

    def identity_service(self) -> Identity:
        if self._identity_service is None:
            raise FlowUsageError(
                f"node {self.identity} has no identity for flows to sign with: run it with a "
                "network map (an operator key)"
            )
        return self._identity_service

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
            record = self._live(flow_id)
            if record is not None and record.driver is not None:
                record.driver.post(event)
                told += 1
        return told

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


def _log_end(driver: FlowDriver, error: BaseException | None, now: datetime) -> None:
    """One INFO line per flow that ends (the hospital has warned already if it needed to)."""
    seconds = (now - driver.loaded_at).total_seconds()
    took = f"{seconds:.3f} s after it was restored" if driver.restored else f"in {seconds:.3f} s"
    state = driver.state
    if error is None:
        log.info("flow %s (%s) completed %s", state.flow_id, state.flow_class, took)
    elif isinstance(error, KilledFlowException):
        log.info("flow %s (%s) was killed %s", state.flow_id, state.flow_class, took)
    else:
        log.info(
            "flow %s (%s) failed %s with %s: %s",
            state.flow_id,
            state.flow_class,
            took,
            type(error).__name__,
            error,
        )


__all__ = ["FlowRuntime", "RuntimePorts"]

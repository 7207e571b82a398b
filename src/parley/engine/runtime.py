"""The flow runtime: hosts many flow drivers on one thread and connects them to the world.

A :class:`FlowRuntime` is the executor behind every driver it hosts (:class:`FlowHost`) and the
part of a node that starts flows, routes inbound session messages to them, restores them from their
checkpoints, and admits errored flows to the hospital. Everything outside the thread comes in
through :class:`RuntimePorts` (store commits, the transport, timers, external operations), so the
same runtime runs inside the in-process :class:`~parley.testing.MockNetwork` and inside a node's
``FlowWorker`` actors.

Routing needs no table: our session ids embed our flow id, and a responder's flow id is derived
from the session-init that started it (so a redelivered init maps to the same flow).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar

from parley.engine.driver import FlowDriver
from parley.engine.handles import (
    FlowHandle,
    client_flow_id,
    flow_id_for,
    responder_flow_id,
    shard_of,
)
from parley.engine.hospital import Hospital, HospitalPort
from parley.flows.logic import FlowLogic
from parley.flows.marks import frame_for
from parley.flows.progress import tracker_of
from parley.flows.registry import (
    FlowRegistry,
    SessionInitRejected,
    UnknownFlowClass,
    flow_class_named,
)
from parley.flows.session import FlowSession
from parley.protocol import codec, ids
from parley.protocol.actions import ExecuteOperation, RunQuery
from parley.protocol.errors import (
    DeserializationError,
    FlowUsageError,
    KilledFlowException,
    ParleyError,
    StateTransitionError,
)
from parley.protocol.events import (
    DoRemainingWork,
    Event,
    FlowFailed,
    KillRequested,
    OperationCompleted,
    OperationFailed,
    PassivationRequested,
    SessionMessageDelivered,
    WokeUp,
)
from parley.protocol.evolve import replace
from parley.protocol.messages import Envelope, FlowInfo, Init, Reject, decode_envelope
from parley.protocol.records import FlowStatus, PutFlowStart, SetFlowStatus, StartKind, StoreOp
from parley.protocol.state import (
    Entry,
    FlowState,
    decode_header,
    flow_id_of_session,
    new_flow,
    new_responder,
    session_id_for,
)
from parley.store import SqliteStore, StoredFlow

T = TypeVar("T")
log = logging.getLogger("parley.runtime")


class RuntimePorts(Protocol):
    """The runtime's view of everything outside its thread."""

    def commit(
        self, ops: tuple[StoreOp, ...], done: Callable[[BaseException | None], None]
    ) -> None:
        """Commit ``ops`` atomically (possibly grouped with others), then call ``done`` here."""
        ...

    def send(
        self, envelopes: tuple[Envelope, ...], done: Callable[[BaseException | None], None]
    ) -> None:
        """Publish ``envelopes``; call ``done`` here once every one is acknowledged (or failed)."""
        ...

    def ack(self, deliveries: tuple[object, ...]) -> None: ...

    def call_soon(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the runtime's thread, after the current work."""
        ...

    def call_at(self, when: datetime, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the runtime's thread at ``when`` (or soon after)."""
        ...

    def run_operation(self, fn: Callable[[], object], done: Callable[[bool, object], None]) -> None:
        """Run ``fn`` off the runtime's thread; call ``done(ok, value_or_error)`` on it later."""
        ...

    def now(self) -> datetime: ...

    def random(self) -> float: ...

    def uuid(self) -> str: ...


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
    ) -> None:
        self.identity = identity
        self.store = store
        self.ports = ports
        self.registry = registry or FlowRegistry.default()
        self.hospital: HospitalPort = hospital or Hospital(random=ports.random)
        self.drivers: dict[str, FlowDriver] = {}
        self.handles: dict[str, FlowHandle[Any]] = {}
        #: Messages delivered to a flow since its last commit, re-delivered if it is retried.
        self._uncommitted: dict[str, list[SessionMessageDelivered]] = {}
        #: Session-inits for flows this node doesn't know, held un-acked for observation.
        self.held_inits: dict[str, tuple[Envelope, object]] = {}
        self._ready: dict[str, FlowDriver] = {}
        self._scheduled = False
        #: Set by a host that calls :meth:`run_ready` itself at the end of each of its turns.
        self.in_turn = False
        #: Publishes not yet acknowledged, per flow: a flow's next commit waits for them.
        self._publishing: dict[str, int] = {}
        self._publish_errors: dict[str, BaseException] = {}
        self._deferred_commits: dict[str, Callable[[], None]] = {}
        self._active: set[str] = set()
        #: Flows already removed whose final commit (deleting their checkpoint) is outstanding.
        self._retiring: dict[str, FlowDriver] = {}
        #: Called with ``(flow_id, result, error)`` whenever a flow ends (tests, metrics).
        self.on_flow_end: Callable[[str, object, BaseException | None], None] | None = None

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
        if client_id is not None:
            if len(client_id) > 512:
                raise FlowUsageError("a client id may have at most 512 characters")
            flow_id = client_flow_id(client_id)
            existing = self._attach(flow_id, client_id)
            if existing is not None:
                flow._parley_args = ((), {})  # this copy will never run
                return existing
        flow_id = flow_id or self.ports.uuid().replace("-", "")
        args, kwargs = flow._parley_args
        try:
            encoded = codec.encode((list(args), kwargs))
        except ParleyError as exc:
            raise FlowUsageError(
                f"the arguments of {type(flow).__qualname__} can't be checkpointed: {exc}"
            ) from exc
        frame = frame_for(type(flow))
        start = PutFlowStart(
            flow_id, frame.flow_class, StartKind.RPC, encoded, started_by, client_id
        )
        state = new_flow(flow_id, self.identity, frame, start, client_id)
        if handle is None:
            handle = FlowHandle(flow_id, tracker_of(flow))
        self.handles[flow_id] = handle
        driver = FlowDriver(self, state, flow)
        self.drivers[flow_id] = driver
        driver.post(DoRemainingWork())
        return handle

    def _attach(self, flow_id: str, client_id: str) -> FlowHandle[Any] | None:
        handle = self.handles.get(flow_id)
        if handle is not None:
            return handle
        result = self.store.flow_result(client_id)
        if result is not None:
            done: FlowHandle[Any] = FlowHandle(result.flow_id)
            if result.error is not None:
                done.future.set_exception(_decoded_error(result.error))
            else:
                done.future.set_result(codec.decode(result.value) if result.value else None)
            done.started.set_result(None)
            return done
        if self.store.load_flow(flow_id) is not None:
            self._restore(flow_id)
            return self.handles.get(flow_id)
        return None

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
        flow_id = flow_id_of_session(body.session)
        driver = self._live(flow_id)
        if driver is None:
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
        self._uncommitted.setdefault(flow_id, []).append(event)
        driver.post(event)

    def _on_init(self, envelope: Envelope, init: Init, delivery: object) -> None:
        flow_id = responder_flow_id(envelope.sender, init.initiator_session)
        if flow_id in self.drivers:
            return  # a copy of an init being processed: its first copy is acked with the flow
        if self.store.processed_init(envelope.sender, init.initiator_session) is not None:
            log.info("dropping duplicate session-init %s from %s", envelope.id, envelope.sender)
            self._ack(delivery)
            return
        try:
            responder = self.registry.responder_for(init.flow_class)
        except UnknownFlowClass as exc:
            log.warning("keeping session-init %s for observation: %s", envelope.id, exc)
            self.held_inits[flow_id] = (envelope, delivery)
            return
        except SessionInitRejected as exc:
            self._reject(envelope, init, str(exc), delivery)
            return
        frame = frame_for(responder.flow_class)
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
            flow_version=responder.version,
            delivery=delivery,
        )
        try:
            flow = self._responder(responder.flow_class, flow_id, envelope.sender)
        except Exception as exc:
            log.warning("responder %s failed to start: %r", frame.flow_class, exc)
            self._reject(envelope, init, str(exc) or "Unable to establish session", delivery)
            return
        driver = FlowDriver(self, state, flow)
        self.drivers[flow_id] = driver
        driver.post(DoRemainingWork())

    def _responder(self, cls: type[FlowLogic[Any]], flow_id: str, peer: str) -> FlowLogic[Any]:
        return cls(FlowSession(session_id_for(flow_id, 0), peer))

    def _reject(self, envelope: Envelope, init: Init, reason: str, delivery: object) -> None:
        reject = Reject(init.initiator_session, ids.reject_id(init.initiator_session), reason)
        out = Envelope(
            ids.reject_id(init.initiator_session), self.identity, envelope.sender, reject
        )
        log.info("rejecting session-init %s from %s: %s", envelope.id, envelope.sender, reason)
        self.ports.send((out,), _log_publish_error)
        self._ack(delivery)

    def drop_held_init(self, flow_id: str) -> bool:
        """Reject a session-init held for observation (an operator killed it)."""
        held = self.held_inits.pop(flow_id, None)
        if held is None:
            return False
        envelope, delivery = held
        assert isinstance(envelope.body, Init)
        self._reject(envelope, envelope.body, f"Don't know {envelope.body.flow_class}", delivery)
        return True

    def _ack(self, delivery: object) -> None:
        if delivery is not None:
            try:
                self.ports.ack((delivery,))
            except Exception:
                log.exception("ack failed")

    # ---- restore --------------------------------------------------------------------------
    def restore_all(self) -> int:
        """Restore every runnable or hospitalized flow in the store (node start)."""
        count = 0
        for flow_id in self.store.runnable_flow_ids():
            if flow_id not in self.drivers and self._restore(flow_id) is not None:
                count += 1
        return count

    def _restore(self, flow_id: str, incarnation: int = 0) -> FlowDriver | None:
        stored = self.store.load_flow(flow_id)
        if stored is None or stored.header is None:
            return None
        try:
            state = decode_header(flow_id, stored.header, stored.status)
            journal = [_entry(data) for data in stored.journal]
            flow = self._construct(stored)
        except (ParleyError, TypeError, ValueError) as exc:
            log.error("flow %s can't be restored, keeping it for observation: %r", flow_id, exc)
            self._commit_quietly((SetFlowStatus(flow_id, FlowStatus.HOSPITALIZED),))
            return None
        if stored.status is FlowStatus.HOSPITALIZED:
            state = replace(state, status=FlowStatus.RUNNABLE)
        state = replace(state, incarnation=incarnation, client_id=stored.client_id)
        if stored.kind is StartKind.RPC and flow_id not in self.handles:
            handle: FlowHandle[Any] = FlowHandle(flow_id, tracker_of(flow))
            handle.started.set_result(None)  # it is durable: it has a checkpoint
            self.handles[flow_id] = handle
        driver = FlowDriver(self, state, flow, journal=journal)
        self.drivers[flow_id] = driver
        driver.start_replay()
        return driver

    def _construct(self, stored: StoredFlow) -> FlowLogic[Any]:
        cls = flow_class_named(stored.flow_class)
        return self._build(cls, stored.flow_id, stored.kind, stored.args)

    def _build(
        self, cls: type[FlowLogic[Any]], flow_id: str, kind: StartKind, data: bytes
    ) -> FlowLogic[Any]:
        """Re-create a flow object from its start record."""
        start = codec.decode(data)
        if not (isinstance(start, tuple) and len(start) == 2):
            raise DeserializationError(f"start record of {flow_id} is malformed")
        if kind is StartKind.INITIATED:
            sender, _ = start
            return self._responder(cls, flow_id, str(sender))
        args, kwargs = start
        if not (isinstance(args, list) and isinstance(kwargs, dict)):
            raise DeserializationError(f"start arguments of {flow_id} are malformed")
        return cls(*args, **kwargs)

    def _commit_quietly(self, ops: tuple[StoreOp, ...]) -> None:
        def done(error: BaseException | None) -> None:
            if error is not None:
                log.error("commit of %s failed: %r", ops, error)

        self.ports.commit(ops, done)

    # ---- operator actions -----------------------------------------------------------------
    def kill(self, flow_id: str) -> bool:
        """Kill a flow (live or stored). Returns False if there is no such running flow."""
        driver = self._live(flow_id)
        if driver is not None and not driver.done:
            driver.post(KillRequested())
            return True
        return self.drop_held_init(flow_id)

    def post(self, flow_id: str, event: Event) -> None:
        """Deliver an event to a flow, re-activating it from its checkpoint if needed."""
        driver = self._live(flow_id)
        if driver is not None:
            driver.post(event)

    def _live(self, flow_id: str) -> FlowDriver | None:
        """The flow's driver: in memory, or restored from its checkpoint (passivated flows)."""
        if flow_id in self._retiring:
            return None
        return self.drivers.get(flow_id) or self._restore(flow_id)

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
        driver = self.drivers.get(flow_id)
        return driver is not None and driver.idle and flow_id not in self._publishing

    def post_restore(self, flow_id: str) -> bool:
        """Restore a stored flow (node start); returns whether it was restored."""
        return self._restore(flow_id) is not None

    def _run_scheduled(self) -> None:
        self.run_ready()

    # ---- FlowHost -------------------------------------------------------------------------
    def ready(self, driver: FlowDriver) -> None:
        self._ready[driver.flow_id] = driver
        if not self._scheduled and not self.in_turn:
            self._scheduled = True
            self.ports.call_soon(self._run_scheduled)

    def commit(self, driver: FlowDriver, ops: tuple[StoreOp, ...]) -> None:
        """Commit once the flow's earlier publishes are acknowledged (so no checkpoint ever
        passes a send that may not have happened)."""
        flow_id = driver.flow_id

        def go() -> None:
            failed = self._publish_errors.pop(flow_id, None)
            if failed is not None:
                driver.commit_done(failed)
                return
            delivered = list(self._uncommitted.get(flow_id, ()))

            def done(error: BaseException | None) -> None:
                if error is None and delivered:
                    pending = self._uncommitted.get(flow_id, [])
                    self._uncommitted[flow_id] = pending[len(delivered) :]
                if self._retiring.get(flow_id) is driver:
                    del self._retiring[flow_id]
                    if error is not None:
                        log.error("deleting finished flow %s failed: %r", flow_id, error)
                        return  # it is restored and finishes again after a restart
                driver.commit_done(error)

            self.ports.commit(ops, done)

        if self._publishing.get(flow_id):
            self._deferred_commits[flow_id] = go
        else:
            go()

    def send(self, driver: FlowDriver, envelopes: tuple[Envelope, ...]) -> None:
        flow_id = driver.flow_id
        self._publishing[flow_id] = self._publishing.get(flow_id, 0) + 1

        def done(error: BaseException | None) -> None:
            remaining = self._publishing.get(flow_id, 1) - 1
            if remaining > 0:
                self._publishing[flow_id] = remaining
            else:
                self._publishing.pop(flow_id, None)
            if error is not None:
                log.warning("publishing for flow %s failed: %r", flow_id, error)
                self._publish_errors.setdefault(flow_id, error)
            if remaining > 0:
                return
            deferred = self._deferred_commits.pop(flow_id, None)
            if deferred is not None:
                deferred()
            elif flow_id in self._publish_errors and self.drivers.get(flow_id) is driver:
                failed = self._publish_errors.pop(flow_id)
                wrapped = StateTransitionError(f"publishing failed: {failed!r}", "SendMessages")
                wrapped.__cause__ = failed
                driver.post(FlowFailed(wrapped))

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

    def started(self, driver: FlowDriver) -> None:
        handle = self.handles.get(driver.flow_id)
        if handle is not None and not handle.started.done():
            handle.started.set_result(None)

    def removed(
        self, driver: FlowDriver, result: object, error: BaseException | None, *, durable: bool
    ) -> None:
        flow_id = driver.flow_id
        if not durable:
            self._retiring[flow_id] = driver  # until its checkpoint's deletion commits
        self.drivers.pop(flow_id, None)
        self._ready.pop(flow_id, None)
        self._uncommitted.pop(flow_id, None)
        self.hospital.discharge(flow_id)
        if self.on_flow_end is not None:
            self.on_flow_end(flow_id, result, error)
        handle = self.handles.pop(flow_id, None)
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
        driver = self.drivers.get(flow_id)
        if driver is not None:
            driver.post(PassivationRequested())

    def passivated(self, driver: FlowDriver) -> None:
        flow_id = driver.flow_id
        driver.close()
        if self.drivers.get(flow_id) is driver:
            del self.drivers[flow_id]
        self._ready.pop(flow_id, None)
        self._uncommitted.pop(flow_id, None)
        # Events that arrived after the passivation was decided are for the restored flow.
        for event in driver.take_mailbox():
            if not isinstance(event, DoRemainingWork | PassivationRequested):
                if isinstance(event, SessionMessageDelivered):
                    self._uncommitted.setdefault(flow_id, []).append(event)
                self.post(flow_id, event)

    def restore(self, driver: FlowDriver) -> None:
        flow_id = driver.flow_id
        driver.close()
        self.drivers.pop(flow_id, None)
        self._ready.pop(flow_id, None)
        redeliver = self._uncommitted.pop(flow_id, [])
        incarnation = driver.state.incarnation + 1
        fresh = self._restore(flow_id, incarnation) or self._restart(driver, incarnation)
        if fresh is None:
            return
        for event in redeliver:
            self._uncommitted.setdefault(flow_id, []).append(event)
            fresh.post(event)
        if any(isinstance(e, KillRequested) for e in driver.take_mailbox()):
            fresh.post(KillRequested())

    def _restart(self, old: FlowDriver, incarnation: int) -> FlowDriver | None:
        """Start a never-checkpointed flow again from its start record."""
        state = old.state
        start = old.initial_state.start_record
        if start is None:
            log.error("flow %s has no checkpoint and no start record: can't retry it", old.flow_id)
            return None
        flow = self._build(type(old.flow), old.flow_id, start.kind, start.args)
        fresh_state = replace(old.initial_state, incarnation=incarnation)
        driver = FlowDriver(self, fresh_state, flow)
        self.drivers[state.flow_id] = driver
        driver.post(DoRemainingWork())
        return driver

    def admit(self, driver: FlowDriver, state: FlowState) -> None:
        flow_id = driver.flow_id

        def verdict(event: Event, delay: float) -> None:  # may be called on another thread
            if delay <= 0:
                self.ports.call_soon(lambda: self._verdict(flow_id, driver, event))
            else:
                at = self.ports.now() + timedelta(seconds=delay)
                self.ports.call_at(at, lambda: self._verdict(flow_id, driver, event))

        self.hospital.admit(state, self.ports.now(), verdict)

    def _verdict(self, flow_id: str, driver: FlowDriver, event: Event) -> None:
        if self.drivers.get(flow_id) is driver:
            driver.post(event)

    def now(self) -> datetime:
        return self.ports.now()

    def random(self) -> float:
        return self.ports.random()

    def uuid(self) -> str:
        return self.ports.uuid()


def _log_publish_error(error: BaseException | None) -> None:
    if error is not None:
        log.warning("publishing a session rejection failed: %r", error)


def _entry(data: bytes) -> Entry:
    entry = codec.decode(data)
    if not isinstance(entry, Entry):
        raise DeserializationError(f"journal entry is a {type(entry).__name__}")
    return entry


def _decoded_error(data: bytes) -> BaseException:
    try:
        error = codec.decode(data)
    except DeserializationError as exc:
        return exc
    return error if isinstance(error, BaseException) else ParleyError(repr(error))


__all__ = [
    "FlowHandle",
    "FlowRuntime",
    "KilledFlowException",
    "RuntimePorts",
    "client_flow_id",
    "flow_id_for",
    "responder_flow_id",
    "shard_of",
]

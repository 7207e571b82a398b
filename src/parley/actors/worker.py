"""FlowWorker: a pykka actor that hosts many flows on its one thread.

pykka gives every actor an OS thread, so flows are not actors of their own: a node runs a small,
fixed number of workers and shards flows across them by flow id. A worker owns a
:class:`~parley.engine.runtime.FlowRuntime`, whose drivers are the flow actors (one mailbox each,
events of one flow processed in order). Everything a flow's actions do to the world goes through
:class:`WorkerPorts`, and every answer (commit done, message published, timer fired, operation
finished) comes back to the worker as a :class:`Call` message, so flows only ever run on their
worker's thread.

The worker also keeps the number of flows in memory under its budget by passivating flows that wait
(oldest first), and passivates flows idle for longer than ``passivate_after``.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import random
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import pykka

from parley.actors.base import Actor
from parley.actors.persistence import Commit
from parley.engine.driver import Identity
from parley.engine.handles import FlowHandle, flow_id_for, shard_of
from parley.engine.hospital import HospitalPort
from parley.engine.outbox import Outgoing, Sign, messages_for
from parley.engine.runtime import FlowRuntime, Parties
from parley.engine.timers import TimerService
from parley.flows.logic import FlowLogic
from parley.flows.registry import FlowRegistry
from parley.protocol.messages import Envelope, Init
from parley.protocol.records import StoreOp
from parley.store import SqliteStore

log = logging.getLogger("parley.worker")

#: New drivers a worker may create beyond its live budget before admission waits for room.
_ADMISSION_SLACK = 64


class Publisher(Protocol):
    """The node's messaging, as a worker uses it (thread-safe methods)."""

    def publish(
        self, messages: Sequence[Outgoing], done: Callable[[BaseException | None], None]
    ) -> None: ...

    def ack(self, deliveries: Sequence[Any]) -> None: ...


class WorkerDied(RuntimeError):
    """A worker's turn ended in a BaseException: the worker stops and is replaced."""


@dataclass(frozen=True, slots=True)
class Call:
    """Run ``fn`` on the worker's thread."""

    fn: Callable[[], None]


@dataclass(frozen=True, slots=True)
class Deliver:
    """Decoded envelopes for flows of this worker, with their ack tokens."""

    items: tuple[tuple[Envelope, Any], ...]


@dataclass(frozen=True, slots=True)
class StartFlow:
    """Start a flow. Without a client id the caller made the handle; with one, the worker may
    answer with the handle of the flow that already has it (``reply``)."""

    flow: FlowLogic[Any]
    flow_id: str | None
    client_id: str | None
    started_by: str | None
    reply: Future[FlowHandle[Any]] | None = None
    handle: FlowHandle[Any] | None = None


@dataclass(frozen=True, slots=True)
class RestoreFlows:
    """Restore these stored flows; ``handles`` are a dead predecessor's, to take over."""

    flow_ids: tuple[str, ...]
    reply: Future[int]
    handles: dict[str, FlowHandle[Any]] | None = None


@dataclass(frozen=True, slots=True)
class KillFlow:
    flow_id: str
    reply: Future[bool]


@dataclass(frozen=True, slots=True)
class FindHandle:
    """Answer with the handle of a flow of this shard, by flow id or by client id (or None)."""

    reply: Future[FlowHandle[Any] | None]
    flow_id: str | None = None
    client_id: str | None = None


@dataclass(frozen=True, slots=True)
class SignalFlow:
    """Store a signal for a flow of this shard; ``reply`` once stored (or refused)."""

    flow_id: str
    name: str
    payload: bytes
    reply: Future[None]


@dataclass(frozen=True, slots=True)
class RevokePeer:
    """``peer`` was revoked from the network: end this shard's sessions with it."""

    peer: str
    reason: str


@dataclass(frozen=True, slots=True)
class RetryFlow:
    """Retry a flow kept for observation; the reply says whether there was one."""

    flow_id: str
    reply: Future[bool]


@dataclass(frozen=True, slots=True)
class Drain:
    """Start (``True``) or stop draining: while draining, peers' session-inits wait un-acked."""

    draining: bool


@dataclass(frozen=True, slots=True)
class Inspect:
    """Ask for the worker's counters (live flows, passivations)."""

    reply: Future[dict[str, int]]


@dataclass(slots=True)
class WorkerServices:
    """What every worker of a node shares."""

    identity: str
    db_path: Path
    registry: FlowRegistry
    persistence: pykka.ActorRef[Any]
    publisher: Publisher
    timers: TimerService
    operations: ThreadPoolExecutor
    hospital: HospitalPort
    live_budget: int = 10_000
    passivate_after: float = 60.0
    #: How many workers share the node's flows (a flow's shard is ``shard_of(flow_id, shards)``).
    shards: int = 1
    #: Signs every message the node sends (``None``: a node without a network map).
    sign: Sign | None = None
    #: Who is in the network (the network map); ``None``: every party is.
    parties: Parties | None = None
    #: The node's identity for flows (``services.identity``); ``None`` without a network map.
    identity_service: Identity | None = None
    #: Told when a worker dies: ``(index, the handles its clients hold)``; the supervisor starts a
    #: new worker for the shard (see :class:`~parley.actors.manager.FlowManager`).
    on_worker_failure: Callable[[int, dict[str, FlowHandle[Any]]], None] | None = None


class WorkerPorts:
    """The runtime's ports inside a worker: every callback hops back with a :class:`Call`."""

    def __init__(self, ref: pykka.ActorRef[Any], services: WorkerServices) -> None:
        self._ref = ref
        self._services = services
        self._rng = random.Random()
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[], None]] = []
        self._outbox: dict[str, list[Envelope]] = {}
        self._outbox_done: list[Callable[[BaseException | None], None]] = []

    def _back(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the worker's thread (called from any thread).

        Callbacks that arrive while earlier ones still wait for the worker travel together in
        one message: a group commit answers dozens of flows at once, and every message between
        threads costs a wake-up and a GIL hand-over.
        """
        with self._lock:
            self._callbacks.append(fn)
            if len(self._callbacks) > 1:
                return
        try:
            self._ref.tell(Call(self._run_callbacks))
        except pykka.ActorDeadError:
            log.debug("worker stopped; dropping a callback")

    def _run_callbacks(self) -> None:
        with self._lock:
            callbacks, self._callbacks = self._callbacks, []
        for fn in callbacks:
            try:
                fn()
            except Exception:
                log.exception("a callback failed on worker")

    def commit(
        self, ops: tuple[StoreOp, ...], done: Callable[[BaseException | None], None]
    ) -> None:
        def committed(error: BaseException | None) -> None:
            self._back(lambda: done(error))

        self._services.persistence.tell(Commit(ops, committed))

    def send(
        self, envelopes: tuple[Envelope, ...], done: Callable[[BaseException | None], None]
    ) -> None:
        # Held until the end of the worker's turn (flush), so that what the turn sends to one
        # node travels as one message: a responder's Confirm, reply and End, say.
        for envelope in envelopes:
            self._outbox.setdefault(envelope.recipient, []).append(envelope)
        self._outbox_done.append(done)

    def flush(self) -> None:
        """Publish what the turn sent (on the worker's thread, at the end of its turn)."""
        if not self._outbox:
            return
        outbox, dones = self._outbox, self._outbox_done
        self._outbox, self._outbox_done = {}, []

        def published(error: BaseException | None) -> None:
            for done in dones:
                self._back(functools.partial(done, error))

        try:
            messages = messages_for(outbox, self._services.sign)
            self._services.publisher.publish(messages, published)
        except Exception as exc:  # e.g. a name the transport refuses: the flows' sends failed
            log.exception("publishing %d flows' messages failed", len(dones))
            published(exc)

    def ack(self, deliveries: tuple[object, ...]) -> None:
        self._services.publisher.ack(deliveries)

    def call_soon(self, fn: Callable[[], None]) -> None:
        self._back(fn)

    def call_at(self, when: datetime, fn: Callable[[], None]) -> None:
        self._services.timers.call_at(when, lambda: self._back(fn))

    def run_operation(self, fn: Callable[[], object], done: Callable[[bool, object], None]) -> None:
        future = self._services.operations.submit(fn)

        def finished(f: Future[object]) -> None:
            error = f.exception()
            if error is not None:
                self._back(lambda: done(False, error))
            else:
                value = f.result()
                self._back(lambda: done(True, value))

        future.add_done_callback(finished)

    def now(self) -> datetime:
        return datetime.now(UTC)

    def random(self) -> float:
        return self._rng.random()

    def uuid(self) -> str:
        return str(uuid.uuid4())


class FlowWorker(Actor):
    """Hosts a shard of the node's flows; see the module docstring."""

    def __init__(self, index: int, services: WorkerServices) -> None:
        super().__init__()
        self.index = index
        self.services = services
        self.runtime: FlowRuntime | None = None
        self.ports: WorkerPorts
        self._passivating: set[str] = set()
        #: Messages waiting for room: they need a new driver and the worker is at its budget.
        self._intake: deque[tuple[Envelope, Any]] = deque()
        self._retry_scheduled = False
        #: Live flows by when they last ran, least recently first (for passivation).
        self._lru: OrderedDict[str, float] = OrderedDict()
        #: While draining, session-inits from peers wait here, un-acked, for the undrain.
        self._draining = False
        self._held_inits: list[tuple[Envelope, Any]] = []
        self.passivations = 0

    def on_start(self) -> None:
        store = SqliteStore(self.services.db_path, readonly=True)
        self.ports = WorkerPorts(self.actor_ref, self.services)
        self.runtime = FlowRuntime(
            self.services.identity,
            store,
            self.ports,
            registry=self.services.registry,
            hospital=self.services.hospital,
            parties=self.services.parties,
            identity_service=self.services.identity_service,
        )
        self._schedule_sweep()

    def on_stop(self) -> None:
        if self.runtime is not None:
            self.runtime.close_all()
            self.runtime.store.close()

    def on_failure(
        self,
        exception_type: type[BaseException] | None,
        exception_value: BaseException | None,
        traceback: Any,
    ) -> None:
        """The worker is dying of an exception its turn did not contain: hand its shard over.

        Its flows' checkpoints are all there is of them now; the supervisor restores them in a
        new worker, which takes over the handles clients hold. What the dead worker had received
        but not acked is delivered again by JetStream.
        """
        log.error(
            "worker %d failed; a new worker restores its flows",
            self.index,
            exc_info=(exception_type, exception_value, traceback)  # type: ignore[arg-type]
            if exception_type is not None
            else None,
        )
        handles: dict[str, FlowHandle[Any]] = {}
        if self.runtime is not None:
            handles = self.runtime.handles()
            with contextlib.suppress(Exception):
                self.runtime.store.close()
        if self.services.on_worker_failure is not None:
            self.services.on_worker_failure(self.index, handles)

    def on_receive(self, message: Any) -> Any:
        runtime = self.runtime
        assert runtime is not None
        runtime.in_turn = True
        try:
            self._handle(runtime, message)
            runtime.run_ready()
            self._keep_under_budget(runtime)
            runtime.run_ready()  # the passivations just requested
            self._admit(runtime)
        except Exception:
            # A bug, not a flow's failure (those are events): log it and keep the worker, and
            # with it every other flow of the shard, alive.
            log.exception("worker %d failed handling %r", self.index, type(message).__name__)
        except BaseException as exc:
            # pykka stops *every* actor of the process on a BaseException (SystemExit, say, from
            # code run on this thread); as an Exception it stops this worker only, whose
            # supervisor then replaces it (on_failure).
            raise WorkerDied(f"worker {self.index} died of {exc!r}") from exc
        finally:
            runtime.in_turn = False
            self.ports.flush()  # never raises: a failed publish is reported to its flows
        return None

    def _handle(self, runtime: FlowRuntime, message: Any) -> None:
        match message:
            case Call(fn=fn):
                fn()
            case Deliver(items=items):
                for envelope, delivery in items:
                    if self._draining and isinstance(envelope.body, Init):
                        self._held_inits.append((envelope, delivery))  # un-acked until undrain
                    elif runtime.is_live(flow_id_for(envelope)):
                        runtime.deliver(envelope, delivery)
                    else:  # needs a new driver (an init, or a passivated flow): admission
                        self._intake.append((envelope, delivery))
            case Drain(draining=draining):
                self._draining = draining
                if not draining and self._held_inits:
                    held, self._held_inits = self._held_inits, []
                    self._handle(runtime, Deliver(tuple(held)))
            case StartFlow():
                self._start(runtime, message)
            case RestoreFlows(flow_ids=flow_ids, reply=reply, handles=handles):
                reply.set_result(runtime.restore_flows(flow_ids))
                shards, index = self.services.shards, self.index
                runtime.readmit_held(lambda flow_id: shard_of(flow_id, shards) == index)
                if handles:
                    runtime.adopt_handles(handles)
            case KillFlow(flow_id=flow_id, reply=reply):
                reply.set_result(runtime.kill(flow_id))
            case RetryFlow(flow_id=flow_id, reply=reply):
                reply.set_result(runtime.retry(flow_id))
            case FindHandle(reply=reply, flow_id=flow_id, client_id=client_id):
                if client_id is not None:
                    reply.set_result(runtime.reattach(client_id))
                else:
                    assert flow_id is not None
                    reply.set_result(runtime.handle_of(flow_id))
            case SignalFlow(flow_id=flow_id, name=name, payload=payload, reply=reply):

                def answered(error: BaseException | None, reply: Future[None] = reply) -> None:
                    if error is None:
                        reply.set_result(None)
                    else:
                        reply.set_exception(error)

                runtime.signal(flow_id, name, payload, answered)
            case RevokePeer(peer=peer, reason=reason):
                shards = self.services.shards
                stored = [
                    f
                    for f in runtime.store.runnable_flow_ids()
                    if shard_of(f, shards) == self.index
                ]
                told = runtime.peer_revoked(peer, reason, stored)
                if told:
                    log.warning(
                        "%s was revoked: %d flows of worker %d told", peer, told, self.index
                    )
            case Inspect(reply=reply):
                reply.set_result(
                    {
                        "held_inits": len(self._held_inits),
                        "live": runtime.live_count,
                        "passivations": self.passivations,
                        "handles": runtime.handle_count(),
                    }
                )
            case _:
                log.warning("worker %d ignored %r", self.index, message)

    def _start(self, runtime: FlowRuntime, message: StartFlow) -> None:
        try:
            handle = runtime.start_flow(
                message.flow,
                flow_id=message.flow_id,
                client_id=message.client_id,
                started_by=message.started_by,
                handle=message.handle,
            )
        except Exception as exc:
            if message.reply is not None:
                message.reply.set_exception(exc)
            if message.handle is not None:
                message.handle.started.set_exception(exc)
                message.handle.future.set_exception(exc)
        else:
            if message.reply is not None:
                message.reply.set_result(handle)

    # ---- admission and passivation ---------------------------------------------------------
    def _admit(self, runtime: FlowRuntime) -> None:
        """Deliver queued messages that need a new driver, as far as the live budget allows.

        A burst of session-inits (or of messages for passivated flows) would otherwise put every
        one of their flows in memory at once; queued messages are small and stay un-acked.
        """
        room = self.services.live_budget + _ADMISSION_SLACK - runtime.live_count
        while self._intake and room > 0:
            envelope, delivery = self._intake.popleft()
            live = runtime.live_count
            runtime.deliver(envelope, delivery)
            room -= runtime.live_count - live
            runtime.run_ready()
            if runtime.live_count > self.services.live_budget:
                self._keep_under_budget(runtime)
                runtime.run_ready()
                room = self.services.live_budget + _ADMISSION_SLACK - runtime.live_count
        if self._intake and not self._retry_scheduled:
            # Room comes back as passivations and flows finish, each a turn of this worker; a
            # timer makes sure of one more look even if none comes.
            self._retry_scheduled = True
            when = datetime.now(UTC) + timedelta(seconds=0.05)
            ref = self.actor_ref
            self.services.timers.call_at(when, lambda: _tell(ref, Call(self._admit_later)))

    def _admit_later(self) -> None:
        self._retry_scheduled = False

    def _keep_under_budget(self, runtime: FlowRuntime) -> None:
        now = time.monotonic()
        lru = self._lru
        for flow_id in runtime.active_flow_ids():
            lru[flow_id] = now
            lru.move_to_end(flow_id)
        if self._passivating:  # those whose checkpoint committed have left memory
            self._passivating = {f for f in self._passivating if runtime.is_live(f)}
        excess = runtime.live_count - len(self._passivating) - self.services.live_budget
        # Look at the least recently active flows first, a bounded number per turn.
        budget = 64
        while excess > 0 and budget > 0 and lru:
            budget -= 1
            flow_id, last = lru.popitem(last=False)
            if not runtime.is_live(flow_id):
                self._passivating.discard(flow_id)
                continue
            if flow_id in self._passivating or not runtime.is_waiting(flow_id):
                lru[flow_id] = last  # busy or already going: look again later
                continue
            self._passivate(runtime, flow_id)
            excess -= 1

    def _passivate(self, runtime: FlowRuntime, flow_id: str) -> None:
        self._passivating.add(flow_id)
        self.passivations += 1
        runtime.passivate(flow_id)

    def _schedule_sweep(self) -> None:
        delay = max(1.0, self.services.passivate_after / 2)
        when = datetime.now(UTC) + timedelta(seconds=delay)
        ref = self.actor_ref
        self.services.timers.call_at(when, lambda: _tell(ref, Call(self._sweep)))

    def _sweep(self) -> None:
        runtime = self.runtime
        assert runtime is not None
        cutoff = time.monotonic() - self.services.passivate_after
        for flow_id, last in list(self._lru.items()):
            if last >= cutoff:
                break  # the rest ran more recently
            if not runtime.is_live(flow_id):
                del self._lru[flow_id]
                self._passivating.discard(flow_id)
            elif flow_id not in self._passivating and runtime.is_waiting(flow_id):
                del self._lru[flow_id]
                self._passivate(runtime, flow_id)
        self._passivating = {f for f in self._passivating if runtime.is_live(f)}
        self._schedule_sweep()


def _tell(ref: pykka.ActorRef[Any], message: Any) -> None:
    with contextlib.suppress(pykka.ActorDeadError):
        ref.tell(message)


__all__ = [
    "Call",
    "Deliver",
    "Drain",
    "FindHandle",
    "FlowWorker",
    "Inspect",
    "KillFlow",
    "Publisher",
    "RestoreFlows",
    "RetryFlow",
    "RevokePeer",
    "SignalFlow",
    "StartFlow",
    "WorkerDied",
    "WorkerPorts",
    "WorkerServices",
]

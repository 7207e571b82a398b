"""MockNetwork: in-process nodes on an in-memory transport, driven by a deterministic pump.

For unit-testing flows, and as the fast seam of Parley's own tests. Each node runs the real flow
runtime over a real (in-memory) SQLite store; messages travel as real encoded envelopes through
per-node queues with at-least-once semantics: a delivered message stays *in flight* until acked,
and :meth:`MockNetwork.restart_node` puts the un-acked ones back, as a broker would after a crash.

Nothing runs until you pump: :meth:`MockNetwork.run_network` goes round the nodes in creation order,
delivering one message to each and then running that node's work until it is idle, until no node has
anything left. Time is virtual: when everything is idle, the clock jumps to the next timer (with
``auto_advance=False`` it stays put, and only timers already due fire).

By default each node's store is an in-memory database. With ``MockNetwork(data_dir=DIR)`` node
``N`` keeps it in ``DIR/N.sqlite`` instead, and a node created on a file that already holds flows
restores them, as a real node does when it starts: this is how a test runs a database that an
earlier version of the code (or a real node) wrote. External operations run when the pump reaches
them, unless the node holds them (:meth:`MockNode.hold_operations`), which leaves the flows that
started them suspended on ``execute`` until :meth:`MockNode.release_operations`.
"""

from __future__ import annotations

import heapq
import itertools
import random as random_module
import uuid as uuid_module
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any, Generic, TypeVar, cast

from parley.engine.apps import app_migrations, load_apps
from parley.engine.describe import described
from parley.engine.hospital import Admission, Hospital, Outcome
from parley.engine.runtime import FlowRuntime
from parley.engine.schedules import (
    Missed,
    Schedule,
    ScheduleError,
    due_ticks,
    flow_of,
    make_schedule,
    tick_client_id,
)
from parley.flows.logic import FlowLogic
from parley.flows.registry import FlowRegistry
from parley.identity.keys import KeyPair
from parley.identity.service import NodeIdentity
from parley.protocol import codec
from parley.protocol.errors import ParleyError
from parley.protocol.messages import Envelope, SessionMessage, encode_envelope
from parley.protocol.records import (
    DeleteAdmissions,
    DeleteSchedule,
    FlowStatus,
    PutAdmission,
    StoreOp,
)
from parley.store import FlowSummary, SqliteStore

T = TypeVar("T")


class FlowStillRunning(ParleyError):
    """``result()`` was asked of a flow that can't make progress on the network as it stands."""


class FlowHospitalized(FlowStillRunning):
    """``result()`` was asked of a flow the hospital keeps for observation.

    ``admission`` is the hospital's last record of it: the error, the staff member who decided,
    the outcome; the message says the same.
    """

    def __init__(self, flow_id: str, node: str, admission: Admission) -> None:
        super().__init__(
            f"flow {flow_id} on {node} is kept in the hospital for observation: "
            f"{admission.error_type}: {admission.message} (diagnosed by the {admission.staff} "
            f"staff, outcome {admission.outcome}); it is retried when its node restarts"
        )
        self.flow_id = flow_id
        self.admission = admission


@dataclass(frozen=True, slots=True)
class Transfer:
    """One message delivered from ``sender`` to ``recipient``."""

    sender: str
    recipient: str
    message: SessionMessage
    id: str

    def __repr__(self) -> str:
        return f"{self.sender}->{self.recipient}: {self.message!r}"


@dataclass(order=True)
class _Timer:
    when: datetime
    seq: int
    node: str = field(compare=False)
    fn: Callable[[], None] = field(compare=False)
    generation: int = field(compare=False)


class MockFlowHandle(Generic[T]):
    """A flow started on a mock node; :meth:`result` pumps the network first."""

    def __init__(self, node: MockNode, flow_id: str, progress: Any) -> None:
        self.node = node
        self.flow_id = flow_id
        self.progress = progress

    @property
    def done(self) -> bool:
        return self.flow_id in self.node.outcomes

    def result(self) -> T:
        """Run the network, then return the flow's result or raise its exception."""
        if not self.done:
            self.node.network.run_network()
        outcome = self.node.outcomes.get(self.flow_id)
        if outcome is None:
            admission = self.node.admission_of(self.flow_id)
            if admission is not None and admission.outcome is Outcome.OBSERVE:
                raise FlowHospitalized(self.flow_id, self.node.name, admission)
            raise FlowStillRunning(
                f"flow {self.flow_id} on {self.node.name} is still running with nothing left to "
                "deliver: it waits for something that never comes"
            )
        ok, value = outcome
        if not ok:
            assert isinstance(value, BaseException)
            raise value
        return cast(T, value)

    def __repr__(self) -> str:
        return f"<MockFlowHandle {self.flow_id} on {self.node.name}>"


class Faults:
    """Fault injection for a mock node: make its next commits, publishes or acks fail.

    ``node.faults.fail("commit", sqlite3.OperationalError("database or disk is full"))`` makes
    the node's next commit fail with that error (``times`` of them, after ``skip`` successful
    ones; ``times=None``: every one from then on). The kinds, each a seam of the mock node's
    ports (the engine it drives is the one a real node runs):

    * ``"commit"``: the commit fails and writes nothing.
    * ``"after_commit"``: the commit is written, then reported failed (a disk or connection
      error after ``COMMIT`` reached the file).
    * ``"publish"``: the publish fails and sends nothing.
    * ``"after_publish"``: the messages are sent, then the publish is reported failed (the
      broker stored them, but its acknowledgement was lost).
    * ``"acknowledge"``: acknowledging received messages raises the error; they stay unacked,
      so the node receives them again when it restarts (as a broker redelivers what was never
      acknowledged).

    A commit or publish fails or succeeds as a whole, so ``times`` counts operations, not the
    messages or rows in them. :attr:`seen` counts the operations that reached each seam (to find
    the ``skip`` of a given commit, count them in a run without faults), :attr:`injected` the
    faults injected so far, by kind.
    """

    KINDS = ("commit", "after_commit", "publish", "after_publish", "acknowledge")

    def __init__(self) -> None:
        self._planned: dict[str, list[tuple[int, BaseException]]] = {}
        self._always: dict[str, tuple[int, BaseException]] = {}
        #: How many operations reached each kind's seam so far, failed or not.
        self.seen: dict[str, int] = dict.fromkeys(self.KINDS, 0)
        #: How many faults of each kind were injected so far.
        self.injected: dict[str, int] = dict.fromkeys(self.KINDS, 0)

    def fail(
        self, what: str, error: BaseException, *, times: int | None = 1, skip: int = 0
    ) -> None:
        """Plan ``times`` failures of ``what`` (``None``: all from then on), after ``skip``.

        Raises:
            ValueError: ``what`` is not one of :attr:`KINDS`, or ``times``/``skip`` is negative.
        """
        if what not in self.KINDS:
            raise ValueError(
                "faults are injected into 'commit' or 'publish' (or 'after_commit', "
                f"'after_publish'), or 'acknowledge', not {what!r}"
            )
        if (times is not None and times < 0) or skip < 0:
            raise ValueError("times and skip must not be negative")
        if times is None:  # once the failures planned before are used up
            self._always[what] = (skip, error)
        elif times > 0:
            planned = self._planned.setdefault(what, [])
            planned.append((skip, error))
            planned.extend((0, error) for _ in range(times - 1))

    def clear(self) -> None:
        """Forget every planned failure (the disk is fixed, the broker is back)."""
        self._planned.clear()
        self._always.clear()

    def next(self, what: str) -> BaseException | None:
        """The error the next ``what`` must fail with (``None``: it succeeds)."""
        self.seen[what] = self.seen.get(what, 0) + 1
        error = self._next(what)
        if error is not None:
            self.injected[what] = self.injected.get(what, 0) + 1
        return error

    def _next(self, what: str) -> BaseException | None:
        planned = self._planned.get(what)
        if planned:
            skip, error = planned[0]
            if skip > 0:
                planned[0] = (skip - 1, error)
                return None
            planned.pop(0)
            return error
        always = self._always.get(what)
        if always is None:
            return None
        skip, error = always
        if skip > 0:
            self._always[what] = (skip - 1, error)
            return None
        return error


class _Ports:
    """The runtime's ports, as a mock node implements them (synchronously, pumped)."""

    def __init__(self, node: MockNode, generation: int) -> None:
        self.node = node
        self.generation = generation

    def commit(
        self, ops: tuple[StoreOp, ...], done: Callable[[BaseException | None], None]
    ) -> None:
        error: BaseException | None = self.node.faults.next("commit")
        if error is None:
            try:
                self.node.store.commit(ops)
            except Exception as exc:
                error = exc
            else:
                error = self.node.faults.next("after_commit")
        done(error)

    def send(
        self, envelopes: tuple[Envelope, ...], done: Callable[[BaseException | None], None]
    ) -> None:
        error = self.node.faults.next("publish")
        if error is None:
            self.node.network._publish(envelopes)
            error = self.node.faults.next("after_publish")
        done(error)

    def ack(self, deliveries: tuple[object, ...]) -> None:
        error = self.node.faults.next("acknowledge")
        if error is not None:
            raise error  # the deliveries stay in flight: a restart delivers them again
        for delivery in deliveries:
            self.node.in_flight.pop(delivery, None)  # type: ignore[call-overload]

    def call_soon(self, fn: Callable[[], None]) -> None:
        if self.generation == self.node.generation:
            self.node.work.append(fn)

    def call_at(self, when: datetime, fn: Callable[[], None]) -> None:
        self.node.network._schedule(when, self.node, fn)

    def run_operation(self, fn: Callable[[], object], done: Callable[[bool, object], None]) -> None:
        def run() -> None:
            try:
                value = fn()
            except Exception as exc:
                done(False, exc)
            else:
                done(True, value)

        if self.node.held_operations is not None:
            if self.generation == self.node.generation:
                self.node.held_operations.append(run)
        else:
            self.call_soon(run)

    def now(self) -> datetime:
        return self.node.network.now

    def random(self) -> float:
        return self.node.rng.random()

    def uuid(self) -> str:
        return str(uuid_module.UUID(int=self.node.rng.getrandbits(128), version=4))


class MockNode:
    """One node of a :class:`MockNetwork`."""

    def __init__(
        self,
        network: MockNetwork,
        name: str,
        registry: FlowRegistry,
        seed: int,
        *,
        path: Path | None = None,
        migrations: Sequence[tuple[str, Sequence[str]]] = (),
    ) -> None:
        self.network = network
        self.name = name
        self.registry = registry
        self.rng = random_module.Random(seed)
        #: Where the node's database lives (``None``: in memory).
        self.path = path
        self.store = SqliteStore(path if path is not None else ":memory:")
        for app, scripts in migrations:  # before any flow runs, as a node applies them
            self.store.apply_app_migrations(app, scripts)
        self.queue: deque[tuple[int, bytes]] = deque()
        self.in_flight: dict[int, bytes] = {}
        self.work: deque[Callable[[], None]] = deque()
        #: Outcome of every flow that ended on this node: ``(ok, value_or_exception)``.
        self.outcomes: dict[str, tuple[bool, object]] = {}
        self.generation = 0
        #: External operations waiting for :meth:`release_operations` (``None``: not holding).
        self.held_operations: list[Callable[[], None]] | None = None
        #: Faults to inject into the node's commits and publishes (see :class:`Faults`).
        self.faults = Faults()
        #: The node's flow hospital (kept across restarts so tests can read every admission).
        self.hospital = Hospital(random=self.rng.random, keep=self._keep_admission)
        self.runtime = self._new_runtime()
        if path is not None:  # a database written earlier: its flows and schedules carry on
            self.runtime.restore_flows(self.store.runnable_flow_ids())
            self._recover_schedules()

    def _keep_admission(self, record: PutAdmission) -> None:
        self.store.commit((record,))

    def hospital_show(self, flow_id: str) -> list[Admission]:
        """Every stored admission of ``flow_id``, oldest first (see ``Node.hospital_show``)."""
        return [Admission.from_record(r) for r in self.store.admissions(flow_id)]

    def _new_runtime(self) -> FlowRuntime:
        runtime = FlowRuntime(
            self.name,
            self.store,
            _Ports(self, self.generation),
            registry=self.registry,
            hospital=self.hospital,
            identity_service=NodeIdentity(self.network.key_of(self.name), self.network.keys_of),
        )
        runtime.on_flow_end = self._record_outcome
        return runtime

    def _record_outcome(self, flow_id: str, result: object, error: BaseException | None) -> None:
        self.outcomes[flow_id] = (False, error) if error is not None else (True, result)

    # ---- flows ------------------------------------------------------------------------------
    def start_flow(self, flow: FlowLogic[T], *, client_id: str | None = None) -> MockFlowHandle[T]:
        """Start ``flow`` here. Nothing runs until the network is pumped."""
        handle = self.runtime.start_flow(flow, client_id=client_id, started_by="test")
        if handle.done and handle.flow_id not in self.outcomes:  # a finished client-id flow
            error = handle.future.exception()
            self.outcomes[handle.flow_id] = (False, error) if error else (True, handle.result())
        return MockFlowHandle(self, handle.flow_id, handle.progress)

    def admission_of(self, flow_id: str) -> Admission | None:
        """The hospital's latest record of ``flow_id`` on this node, if it was ever admitted."""
        return next((a for a in reversed(self.hospital.records) if a.flow_id == flow_id), None)

    def flows(self, status: FlowStatus | None = None) -> list[FlowSummary]:
        """This node's flows, as ``Node.flows()`` lists them (with what each waits for)."""
        return described(self.store, self.store.list_flows(status))

    def kill_flow(self, flow_id: str) -> bool:
        return self.runtime.kill(flow_id)

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
        ``every`` seconds, on the network's virtual clock (see ``Node.schedule``)."""
        if at is None:
            if every is None:
                raise ScheduleError("a schedule needs a first tick (at=) or a period (every=)")
            at = self.network.now + timedelta(seconds=every)
        schedule = make_schedule(name, flow, at=at, every=every, missed=missed)
        self.store.commit((schedule.to_record(),))
        self._arm(schedule)

    def unschedule(self, name: str) -> bool:
        """Forget a schedule; returns whether there was one."""
        known = any(s.name == name for s in self.store.schedules())
        self.store.commit((DeleteSchedule(name),))
        return known

    def schedules(self) -> list[Schedule]:
        return [Schedule.from_record(r) for r in self.store.schedules()]

    def _arm(self, schedule: Schedule) -> None:
        generation = self.generation

        def tick() -> None:
            if generation == self.generation:
                self._run_schedule(schedule.name, recovering=False)

        self.network._schedule(schedule.next_at, self, tick)

    def _run_schedule(self, name: str, *, recovering: bool) -> None:
        stored = next((s for s in self.schedules() if s.name == name), None)
        if stored is None:
            return  # unscheduled meanwhile
        ticks, following = due_ticks(stored, self.network.now, recovering=recovering)
        handles = [
            self.runtime.start_flow(
                flow_of(stored), client_id=tick_client_id(name, tick), started_by=f"schedule {name}"
            )
            for tick in ticks
        ]
        generation = self.generation

        def move_on() -> None:
            # Only once every tick's flow is durable: a crash before leaves the ticks due, and
            # starting them again finds the flows that hold their client ids.
            if generation != self.generation:
                return
            if following is None:
                self.store.commit((DeleteSchedule(name),))
                return
            if following != stored:
                self.store.commit((following.to_record(),))
            self._arm(following)

        waiting = [h.started for h in handles if not h.started.done()]
        if not waiting:
            move_on()
            return
        remaining = [len(waiting)]

        def started(_: object) -> None:
            remaining[0] -= 1
            if remaining[0] == 0:
                move_on()

        for future in waiting:
            future.add_done_callback(started)

    def _recover_schedules(self) -> None:
        for schedule in self.schedules():
            self._run_schedule(schedule.name, recovering=True)

    def hospital_retry(self, flow_id: str) -> bool:
        """Retry a flow kept for observation from its last checkpoint (see ``Node``)."""
        retried = self.runtime.retry(flow_id)
        self.runtime.run_ready()
        return retried

    def signal(self, flow_id: str, name: str, payload: object) -> None:
        """Send the signal ``name`` to a running flow (see ``FlowLogic.wait_for_signal``).

        Raises:
            FlowUsageError: no such running flow, or it waits for ``name`` with another type.
            SerializationError: ``payload`` can't be encoded.
        """
        outcome: list[BaseException | None] = []
        self.runtime.signal(flow_id, name, codec.encode(payload), outcome.append)
        self.runtime.run_ready()
        if outcome and outcome[0] is not None:
            raise outcome[0]

    def passivate(self, flow_id: str) -> None:
        """Ask a flow to leave memory (a waiting flow does; it comes back on its next event)."""
        self.runtime.passivate(flow_id)

    def hold_operations(self, hold: bool = True) -> None:
        """Hold external operations: they wait until :meth:`release_operations`.

        Their flows stay suspended on ``execute``, so a test can restart the node while an
        operation is outstanding, or snapshot the database at that point. ``hold=False`` releases
        every held operation and stops holding.
        """
        if hold:
            if self.held_operations is None:
                self.held_operations = []
        else:
            self.release_operations()
            self.held_operations = None

    def release_operations(self, count: int | None = None) -> int:
        """Run the first ``count`` held operations (all by default) at the pump's next turn.

        Operations started later are held too, until ``hold_operations(False)``. Returns how many
        were released.
        """
        held = self.held_operations or []
        released = held[:count] if count is not None else list(held)
        del held[: len(released)]
        self.work.extend(released)
        return len(released)

    @property
    def live_flows(self) -> list[str]:
        """Ids of the flows in memory on this node."""
        return [driver.flow_id for driver in self.runtime.live_drivers()]

    # ---- pumping ----------------------------------------------------------------------------
    def _deliver_one(self) -> bool:
        if not self.queue:
            return False
        delivery, data = self.queue.popleft()
        self.in_flight[delivery] = data
        envelope = self.runtime.receive(data, delivery)
        if envelope is not None:
            self.network.transfers.append(
                Transfer(envelope.sender, envelope.recipient, envelope.body, envelope.id)
            )
        return True

    def _work_one(self) -> bool:
        if not self.work:
            return False
        self.work.popleft()()
        return True

    def _restart(self) -> None:
        self.runtime.close_all()
        self.generation += 1
        self.work.clear()
        if self.held_operations is not None:
            self.held_operations.clear()  # they died with the node; the restored flows redo them
        redeliver = sorted(self.in_flight.items())
        self.in_flight.clear()
        self.queue.extendleft(reversed(redeliver))
        self.runtime = self._new_runtime()
        self.store.commit((DeleteAdmissions(),))  # of flows that died with the last incarnation
        self.runtime.restore_flows(self.store.runnable_flow_ids())
        self.runtime.readmit_held()
        self._recover_schedules()

    def __repr__(self) -> str:
        return f"<MockNode {self.name}>"


class MockNetwork:
    """A set of in-process nodes and the in-memory network between them."""

    def __init__(
        self,
        *,
        start: datetime | None = None,
        seed: int = 0,
        auto_advance: bool = True,
        data_dir: Path | None = None,
    ) -> None:
        self.now = start or datetime(2026, 1, 1, tzinfo=UTC)
        #: Where the nodes keep their databases (``None``: in memory).
        self.data_dir = Path(data_dir) if data_dir is not None else None
        self.seed = seed
        self.auto_advance = auto_advance
        self.nodes: dict[str, MockNode] = {}
        #: Every message delivered, in delivery order.
        self.transfers: list[Transfer] = []
        #: Every message published, in publication order (duplicates included).
        self.published: list[Transfer] = []
        self._timers: list[_Timer] = []
        self._seq = itertools.count()
        self._deliveries = itertools.count(1)
        self._pending: dict[str, deque[tuple[int, bytes]]] = {}
        #: Each node's identity key (made when the node is first created; kept across restarts),
        #: for flows that sign (``services.identity``).
        self.keys: dict[str, KeyPair] = {}
        #: Nodes whose keys no longer verify (a revocation, as the network map would say).
        self.revoked: set[str] = set()

    def key_of(self, name: str) -> KeyPair:
        """Node ``name``'s identity key (made on first use)."""
        key = self.keys.get(name)
        if key is None:
            key = self.keys[name] = KeyPair.generate()
        return key

    def keys_of(self, name: str) -> tuple[str, ...] | None:
        """The public keys that verify as ``name``'s: ``None`` for an unknown or revoked node."""
        key = self.keys.get(name)
        if key is None or name in self.revoked:
            return None
        return (key.public_key,)

    def create_node(
        self,
        name: str,
        *,
        registry: FlowRegistry | None = None,
        apps: Iterable[str | ModuleType] | None = None,
    ) -> MockNode:
        """Add a node.

        With ``apps`` (module names or modules) the node runs the responders of those apps and
        has their tables (each app's ``MIGRATIONS``), as a node started with ``--app`` does;
        without, it runs every responder imported in this process. ``registry`` overrides the
        responders either way.
        """
        if name in self.nodes:
            raise ValueError(f"a node called {name!r} already exists")
        modules = load_apps(apps) if apps is not None else []
        if registry is None:
            registry = (
                FlowRegistry.from_apps(modules) if apps is not None else FlowRegistry.default()
            )
        path = self.data_dir / f"{name}.sqlite" if self.data_dir is not None else None
        seed = self.seed + len(self.nodes)
        node = MockNode(self, name, registry, seed, path=path, migrations=app_migrations(modules))
        node.queue.extend(self._pending.pop(name, deque()))
        self.nodes[name] = node
        return node

    def restart_node(self, node: MockNode) -> MockNode:
        """Crash and restart ``node``: drop everything in memory, restore from its store."""
        for timer in self._timers:
            if timer.node == node.name:
                timer.generation = -1
        node._restart()
        return node

    def run_network(self, max_steps: int | None = None) -> int:
        """Deliver messages and run work until nothing is left (or ``max_steps``); returns steps."""
        steps = 0
        while max_steps is None or steps < max_steps:
            progressed = False
            for node in list(self.nodes.values()):
                if max_steps is not None and steps >= max_steps:
                    return steps
                if node._deliver_one():
                    steps += 1
                    progressed = True
                while (max_steps is None or steps < max_steps) and node._work_one():
                    steps += 1
                    progressed = True
            if not progressed and not self._fire_next_timer(due_only=not self.auto_advance):
                break
        return steps

    def advance_clock(self, seconds: float) -> None:
        """Move virtual time forward, firing the timers that fall due."""
        target = self.now + timedelta(seconds=seconds)
        while self._timers and self._timers[0].when <= target:
            self._fire_next_timer()
        self.now = max(self.now, target)

    def _fire_next_timer(self, *, due_only: bool = False) -> bool:
        """Hand the next timer to its node; with ``due_only``, only if it is due already."""
        while self._timers:
            if due_only and self._timers[0].when > self.now:
                return False
            timer = heapq.heappop(self._timers)
            node = self.nodes.get(timer.node)
            if node is None or timer.generation != node.generation:
                continue
            self.now = max(self.now, timer.when)
            node.work.append(timer.fn)
            return True
        return False

    def _schedule(self, when: datetime, node: MockNode, fn: Callable[[], None]) -> None:
        heapq.heappush(self._timers, _Timer(when, next(self._seq), node.name, fn, node.generation))

    def _publish(self, envelopes: tuple[Envelope, ...]) -> None:
        for envelope in envelopes:
            data = encode_envelope(envelope)
            self.published.append(
                Transfer(envelope.sender, envelope.recipient, envelope.body, envelope.id)
            )
            item = (next(self._deliveries), data)
            node = self.nodes.get(envelope.recipient)
            if node is None:
                self._pending.setdefault(envelope.recipient, deque()).append(item)
            else:
                node.queue.append(item)

    def inject(self, recipient: str, data: bytes) -> None:
        """Put raw bytes on a node's queue, as a (possibly hostile) peer could."""
        self.nodes[recipient].queue.append((next(self._deliveries), data))

    def transfers_between(self, a: str, b: str) -> list[Transfer]:
        """The delivered messages between two nodes, both directions, in order."""
        return [t for t in self.transfers if {t.sender, t.recipient} == {a, b}]


__all__ = [
    "FlowHospitalized",
    "FlowStillRunning",
    "MockFlowHandle",
    "MockNetwork",
    "MockNode",
    "Transfer",
]

"""``FlowLogic``: the base class of every flow.

A flow is a class with an ``async def call(self)``. Its constructor arguments are captured when the
object is created, so a flow started by a node can be re-created from its checkpoint; they must be
values the codec can encode. Between two suspension points the code must be deterministic: take time
and randomness from :meth:`FlowLogic.now`, :meth:`~FlowLogic.random` and
:meth:`~FlowLogic.uuid`, and do I/O through :meth:`~FlowLogic.execute` or the flow's database,
whose results are recorded.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar, TypeVarTuple

from parley.flows.context import FlowContext, deadline, suspend, timed
from parley.flows.marks import FLOW_CLASSES, frame_for
from parley.flows.progress import ProgressTracker, tracker_of
from parley.flows.session import FlowSession, UntrustworthyData, check_for, checked
from parley.protocol import codec
from parley.protocol.errors import FlowUsageError, NonDeterministicFlowError, type_name
from parley.protocol.requests import (
    AwaitSignal,
    Execute,
    ForceCheckpoint,
    Query,
    Receive,
    Send,
    Sleep,
)

if TYPE_CHECKING:
    from typing_extensions import TypeForm

T = TypeVar("T")
R = TypeVar("R")
Ts = TypeVarTuple("Ts")


class FlowDatabase:
    """The node's SQLite database, as seen by a flow.

    Writes are queued and commit atomically with the flow's next checkpoint (they are discarded if
    the flow is retried from an earlier one). Reads see committed data and are recorded, so a replay
    sees the same rows. Apps declare their tables in a ``MIGRATIONS`` list in their module.
    """

    __slots__ = ("_flow",)

    def __init__(self, flow: FlowLogic[Any]) -> None:
        self._flow = flow

    def execute(self, sql: str, params: Sequence[object] = ()) -> None:
        """Queue a write (INSERT/UPDATE/DELETE) to commit with the next checkpoint."""
        self._flow._context().queue_write(sql, tuple(params))

    async def query(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        """Run a read-only query against committed data; the rows are recorded in the journal."""
        rows: list[tuple[Any, ...]] = await suspend(Query(sql, tuple(params)))
        return rows


class FlowIdentity:
    """The node's identity, as a flow uses it: sign data, check other nodes' signatures.

    Every answer is recorded in the flow's journal (a replay sees the same answer, even after a
    key rotation). Messages between flows are signed by the nodes anyway: use this for signatures
    that outlive a message, such as a transaction's.
    """

    __slots__ = ("_flow",)

    def __init__(self, flow: FlowLogic[Any]) -> None:
        self._flow = flow

    def sign(self, data: bytes) -> bytes:
        """This node's Ed25519 signature of ``data``.

        Raises:
            FlowUsageError: the node has no identity (it runs without a network map).
        """
        if not isinstance(data, bytes):
            raise FlowUsageError(f"sign() takes bytes, not {type(data).__name__}")
        return self._flow._context().sign(data)

    def verify(self, node: str, data: bytes, signature: bytes) -> bool:
        """Whether ``signature`` is ``node``'s signature of ``data``, by the keys the network map
        admits for ``node`` (an unknown or revoked node verifies nothing)."""
        return self._flow._context().verify(node, data, signature)

    def public_key(self, node: str) -> str | None:
        """``node``'s current public key (an NKey, ``U...``), or ``None`` if it is not admitted."""
        return self._flow._context().public_key(node)


class FlowServices:
    """What a running flow can use besides sessions: its database and its node's identity."""

    __slots__ = ("db", "identity")

    def __init__(self, flow: FlowLogic[Any]) -> None:
        self.db = FlowDatabase(flow)
        self.identity = FlowIdentity(flow)


class FlowLogic(Generic[T]):
    """Base class of flows. Override :meth:`call`."""

    _parley_args: tuple[tuple[object, ...], dict[str, object]]
    _parley_ctx: FlowContext | None

    def __new__(cls, *args: object, **kwargs: object) -> FlowLogic[T]:
        self = super().__new__(cls)
        self._parley_args = (args, kwargs)
        self._parley_ctx = None
        return self

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        FLOW_CLASSES[type_name(cls)] = cls

    async def call(self) -> T:
        """The flow's body."""
        raise NotImplementedError(f"{type_name(type(self))} does not override call()")

    # ---- identity -----------------------------------------------------------------------
    def _context(self) -> FlowContext:
        ctx = self._parley_ctx
        if ctx is None:
            raise FlowUsageError(
                f"{type_name(type(self))} is not running: start it with a node "
                "(node.start_flow) or from another flow (await self.sub_flow(...))"
            )
        return ctx

    @property
    def flow_id(self) -> str:
        """The id of the (top-level) flow this code runs in."""
        return self._context().flow_id

    @property
    def our_identity(self) -> str:
        """The name of the node running this flow."""
        return self._context().our_identity

    @property
    def services(self) -> FlowServices:
        return FlowServices(self)

    # ---- sessions -----------------------------------------------------------------------
    def initiate_flow(self, party: str) -> FlowSession:
        """Open a session to the flow registered on ``party`` for this (initiating) flow.

        Nothing is sent until the session is first used.
        """
        return FlowSession(self._context().initiate(party), party)

    async def send_all(self, payload: object, sessions: Sequence[FlowSession]) -> None:
        """Send the same payload on every session (one suspension)."""
        _unique(sessions)
        encoded = codec.encode(payload)
        await suspend(Send(tuple((s.session_id, encoded) for s in sessions)))

    async def receive_all(
        self,
        expected: TypeForm[R],
        sessions: Sequence[FlowSession],
        *,
        timeout: float | None = None,
    ) -> list[UntrustworthyData[R]]:
        """Receive one payload of type ``expected`` from every session, in the sessions' order.

        ``expected`` is a type expression, checked as :meth:`FlowSession.receive` checks it; with
        ``timeout``, a ``ReceiveTimeoutException`` names the first session still silent then.
        """
        _unique(sessions)
        check_for(expected)
        until = deadline(timeout, "receive_all()")
        sessions_ids = tuple(s.session_id for s in sessions)
        received = await suspend(Receive(sessions_ids, until, timed()))
        return [checked(expected, received[s.session_id]) for s in sessions]

    # ---- sub-flows ----------------------------------------------------------------------
    async def sub_flow(self, flow: FlowLogic[R]) -> R:
        """Run ``flow`` inline as part of this one and return its result."""
        ctx = self._context()
        if not isinstance(flow, FlowLogic):
            raise FlowUsageError(f"sub_flow() takes a FlowLogic, not {type(flow).__name__}")
        frame = frame_for(type(flow))
        if frame.idempotent and not ctx.idempotent:
            await suspend(ForceCheckpoint())
        flow._parley_ctx = ctx
        parent, child = tracker_of(self), tracker_of(flow)
        if parent is not None and child is not None and parent.current_step not in _ENDS:
            parent.set_child_tracker(parent.current_step, child)
        ctx.enter_subflow(frame)
        try:
            result = await flow.call()
        except GeneratorExit:
            raise  # the coroutine is being discarded (or collected): there is nothing to record
        except BaseException:
            ctx.leave_subflow()
            raise
        ctx.leave_subflow()
        if child is not None and not child.has_ended:
            child.current_step = ProgressTracker.DONE
        return result

    # ---- time, randomness, external operations --------------------------------------------
    def now(self) -> datetime:
        """The current time (UTC). Recorded: a replay sees the same value."""
        return self._context().now()

    def random(self) -> float:
        """A random float in [0, 1). Recorded."""
        return self._context().random()

    def uuid(self) -> str:
        """A random UUID string. Recorded."""
        return self._context().uuid()

    def version(self, marker: str, *, min: int = 1, max: int) -> int:
        """Which version of the code at ``marker`` this flow runs (upgrades with flows in flight).

        The first time a flow passes the marker, the newest version this code knows (``max``) is
        recorded in its journal and returned; a flow restored later gets the version it recorded,
        whatever the code says now. So a fix deployed while flows wait takes effect for new flows
        only, and old ones finish on the path they started::

            if self.version("fee-rule", max=2) >= 2:
                fee = new_fee(amount)
            else:
                fee = old_fee(amount)

        Args:
            marker: names the point in the code (the same name, whatever else changes).
            min: the oldest version this code still supports; raise it once no flow recorded
                an older one (``parley flow check-replay`` tells).
            max: the newest version.

        Returns:
            The version, between ``min`` and ``max``.

        Raises:
            NonDeterministicFlowError: the flow recorded a version outside ``min..max`` (the code
                no longer supports the path it took: it is kept for observation).
            FlowUsageError: a bad marker or range.
        """
        if not isinstance(marker, str) or not 0 < len(marker) <= 128:
            raise FlowUsageError(f"a version marker is a string of 1-128 characters: {marker!r}")
        if not (isinstance(min, int) and isinstance(max, int)) or not 0 <= min <= max:
            raise FlowUsageError(f"a version range needs 0 <= min <= max, got {min}..{max}")
        recorded = self._context().version(marker, max)
        if not min <= recorded <= max:
            raise NonDeterministicFlowError(
                f"flow {self.flow_id} recorded version {recorded} at marker {marker!r}, but this "
                f"code supports versions {min} to {max}"
            )
        return recorded

    async def sleep(self, seconds: float) -> None:
        """Sleep durably: the wake-up time survives restarts."""
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
            raise FlowUsageError(f"sleep() takes a number of seconds >= 0, got {seconds!r}")
        until = self.now() + timedelta(seconds=seconds)
        await suspend(Sleep(until))

    async def execute(self, fn: Callable[[*Ts], R], *args: *Ts) -> R:
        """Run ``fn(*args)`` off the flow's thread and record its result (or exception).

        After a restore the recorded outcome is used and ``fn`` does not run again — unless the
        node stopped while ``fn`` was running, in which case it runs again: make it idempotent.
        The arguments are checked against ``fn``'s signature by a type checker (positional only:
        wrap keyword arguments in a ``functools.partial`` or a lambda).
        """
        if not callable(fn):
            raise FlowUsageError(f"execute() takes a callable, not {type(fn).__name__}")
        name = f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', type(fn).__name__)}"
        result: R = await suspend(Execute(name, fn, args))
        return result

    async def wait_for_signal(
        self, name: str, expected: TypeForm[R], *, timeout: float | None = None
    ) -> R:
        """Wait durably for the signal ``name``, sent to this flow over RPC (a person's approval,
        a program's answer): ``parley flow signal FLOW_ID NAME VALUE``, ``Node.signal(...)``.

        A signal is stored when it arrives and delivered exactly once: one sent before the flow
        waits for it is kept for it, and several of the same name are taken oldest first. Its
        payload is checked against ``expected`` like :meth:`FlowSession.receive`'s; while the flow
        waits, a signal of another type is refused to its sender and the flow keeps waiting.

        Args:
            name: the signal's name (1-128 characters).
            expected: the type expression the payload must match.
            timeout: seconds to wait at most (``None``: forever).

        Returns:
            The payload.

        Raises:
            SignalTimeoutException: no such signal within ``timeout`` (the hospital does not
                retry it: handle it, e.g. by escalating or waiting again).
            UnexpectedPayloadError: a signal stored before the flow waited has another type.
            FlowUsageError: a bad name or timeout, an uncheckable ``expected``, or inside an
                :class:`IdempotentFlow` (which writes no checkpoints, and a signal is consumed
                with a checkpoint).
        """
        ctx = self._context()
        if not isinstance(name, str) or not 0 < len(name) <= 128:
            raise FlowUsageError(f"a signal's name is a string of 1-128 characters, not {name!r}")
        if ctx.idempotent:
            raise FlowUsageError(
                "wait_for_signal() can't be used inside an IdempotentFlow: a signal is consumed "
                "with a checkpoint, and an idempotent flow writes none"
            )
        check_for(expected)
        until = deadline(timeout, "wait_for_signal()")
        payload: bytes = await suspend(AwaitSignal(name, until, expected))
        return checked(expected, payload).unwrap_unchecked()

    def __repr__(self) -> str:
        return f"<{type_name(type(self))}>"


_ENDS = (ProgressTracker.UNSTARTED, ProgressTracker.DONE)


class IdempotentFlow(FlowLogic[T]):
    """A flow that is safe to re-run from its start: it writes no checkpoints while it runs.

    If the node fails while it runs, it is replayed from the checkpoint before it. Use it for
    flows whose effects are idempotent (their sends are deduplicated by the receiver).
    """

    #: Read by :func:`~parley.flows.marks.frame_for` (the name is ``marks.IDEMPOTENT_MARK``).
    _parley_idempotent: ClassVar[bool] = True


class _ClassTimeout:
    """``TimedFlow``'s :data:`~parley.flows.marks.TIMED_MARK`: its class's ``timeout`` when read
    (so a subclass's own value, or one set later, counts)."""

    def __get__(self, instance: object, owner: type[TimedFlow[Any]]) -> float:
        return owner.timeout


class TimedFlow(FlowLogic[T]):
    """A flow whose receives are retried when a reply takes too long (``timeout`` seconds).

    When a receive of the flow (or of the sub-flows it runs) has waited ``timeout`` seconds, the
    flow is retried from its last checkpoint: the messages it sent since are sent again, under
    the same ids (a counterparty that got them drops the copies), and it waits ``timeout`` again.
    For requests to a service that may lose them or restart (a notary, say). An explicit
    ``receive(..., timeout=...)`` in the flow is a deadline instead: it raises in the flow.
    """

    #: Seconds a receive waits before the flow is retried (read by ``FlowContext.timed_timeout``).
    timeout: ClassVar[float] = 60.0
    #: The mark the driver reads (:data:`~parley.flows.marks.TIMED_MARK`): the class's ``timeout``.
    _parley_timed = _ClassTimeout()


def _unique(sessions: Sequence[FlowSession]) -> None:
    ids = [s.session_id for s in sessions]
    if len(set(ids)) != len(ids):
        raise FlowUsageError("A flow session can only appear once as argument.")


__all__ = [
    "FlowDatabase",
    "FlowIdentity",
    "FlowLogic",
    "FlowServices",
    "IdempotentFlow",
    "TimedFlow",
]

"""The flow driver: the behaviour of one flow actor.

A :class:`FlowDriver` owns one flow: its state, its coroutine and its mailbox. It takes one event at
a time, computes ``transition(state, event)``, performs the actions through its :class:`FlowHost`
(the executor), and obeys the continuation — resuming the coroutine by hand with ``coro.send`` or
``coro.throw``. The coroutine is not an asyncio task: awaiting anything but a Parley request throws
:class:`FlowUsageError` into the flow.

A driver is a plain object. A host runs it: the in-process :class:`~parley.testing.MockNetwork`, or
a ``FlowWorker`` shard of a node, which hosts many drivers on one thread. All calls into a driver
happen on its host's thread.

Restore by replay: a driver built from a checkpoint starts in *replay* mode. It re-runs the flow's
code, answering every request and recorded value from the journal and checking that the code asks
for the same thing in the same order (:class:`NonDeterministicFlowError` otherwise). Nothing reaches
the state machine during replay: the state already is the checkpoint's. When the journal is used up
the coroutine yields the checkpoint's pending request, which is processed again.

The host's side lives in :mod:`parley.engine.host`: the :class:`FlowHost` and :class:`Identity`
ports (importable from here too) and :func:`~parley.engine.host.perform`, which performs every
action but a checkpoint through the host. The driver's live path and its replay path stay here,
side by side: they work on the same coroutine, journal and mailbox.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from parley.engine.foreign import awaitable_name, enter_flow_code, leave_flow_code
from parley.engine.host import FlowHost, Identity, perform
from parley.engine.logcontext import flow_log_context
from parley.flows.context import RUNNING
from parley.flows.logic import FlowLogic
from parley.flows.marks import FLOW_CLASSES, TIMED_MARK
from parley.flows.progress import tracker_of
from parley.protocol import codec
from parley.protocol.actions import (
    Abort,
    Action,
    Continuation,
    PersistCheckpoint,
    ProcessEvents,
    RemoveFlow,
    Resume,
    Throw,
    Transition,
)
from parley.protocol.errors import FlowUsageError, NonDeterministicFlowError, ProtocolViolation
from parley.protocol.events import (
    ActionFailed,
    DoRemainingWork,
    Event,
    FlowFailed,
    FlowFinished,
    InitiateFlow,
    SessionMessageDelivered,
    SubFlowEntered,
    SubFlowLeft,
    Suspended,
    ValueRecorded,
)
from parley.protocol.evolve import replace
from parley.protocol.records import FlowWrite
from parley.protocol.requests import REQUEST_TYPES, Request, fingerprint
from parley.protocol.state import Entry, FlowState, SubFlowFrame
from parley.protocol.transitions import restore_pending, transition

log = logging.getLogger("parley.flow")


@dataclass(slots=True)
class _Blocked:
    """Where the executor stopped to wait for a commit."""

    actions: tuple[Action, ...]
    index: int
    continuation: Continuation
    previous: FlowState
    action: Action


class FlowDriver:
    """Runs one flow: mailbox, transitions, actions, coroutine."""

    def __init__(
        self,
        host: FlowHost,
        state: FlowState,
        flow: FlowLogic[Any],
        *,
        journal: list[Entry] | None = None,
    ) -> None:
        self.host = host
        self.state = state
        #: The state the driver started from (a never-checkpointed flow is retried from it).
        self.initial_state = state
        self.flow = flow
        self.mailbox: deque[Event] = deque()
        self.done = False
        self._blocked: _Blocked | None = None
        #: The end of the flow whose final commit was reported failed (it may have been
        #: written all the same: the host checks when it retries the flow).
        self.unconfirmed_end: RemoveFlow | None = None
        self._replay: deque[Entry] | None = deque(journal) if journal else None
        self._replay_error: NonDeterministicFlowError | None = None
        self._closing = False
        #: When this incarnation began, and whether it was restored from a checkpoint (for logs).
        self.loaded_at = host.now()
        self.restored = journal is not None or state.persisted
        flow._parley_ctx = self
        self._started_coro: Coroutine[Any, Any, Any] | None = None

    @property
    def _coro(self) -> Coroutine[Any, Any, Any]:
        """The flow's coroutine, made when it first runs (a driver dropped before it ran leaves
        no never-awaited coroutine behind)."""
        coro = self._started_coro
        if coro is None:
            coro = self._started_coro = self.flow.call()
        return coro

    # ---- FlowContext ----------------------------------------------------------------------
    @property
    def flow_id(self) -> str:
        return self.state.flow_id

    @property
    def our_identity(self) -> str:
        return self.state.our_identity

    @property
    def idempotent(self) -> bool:
        return self.state.idempotent

    @property
    def timed_timeout(self) -> float | None:
        for frame in reversed(self.state.subflows):
            cls = FLOW_CLASSES.get(frame.flow_class)
            seconds = getattr(cls, TIMED_MARK, None) if cls is not None else None
            if isinstance(seconds, int | float) and not isinstance(seconds, bool):
                return float(seconds)
        return None

    def initiate(self, destination: str) -> str:
        refusal = None if self._before_live else self.host.party_refusal(destination)
        value = self._immediate(InitiateFlow(destination, refusal), f"initiate {destination}")
        if not isinstance(value, str):
            raise ProtocolViolation(f"initiate_flow resumed with {value!r}")
        return value

    def now(self) -> datetime:
        value = self._record("now", self.host.now)
        assert isinstance(value, datetime)
        return value

    def random(self) -> float:
        value = self._record("random", self.host.random)
        assert isinstance(value, float)
        return value

    def uuid(self) -> str:
        value = self._record("uuid", self.host.uuid)
        assert isinstance(value, str)
        return value

    def version(self, marker: str, newest: int) -> int:
        value = self._record(f"version {marker}", lambda: newest)
        assert isinstance(value, int)
        return value

    def sign(self, data: bytes) -> bytes:
        value = self._record("sign", lambda: self.host.identity_service().sign(data))
        assert isinstance(value, bytes)
        return value

    def verify(self, node: str, data: bytes, signature: bytes) -> bool:
        value = self._record(
            f"verify {node}", lambda: self.host.identity_service().verify(node, data, signature)
        )
        assert isinstance(value, bool)
        return value

    def public_key(self, node: str) -> str | None:
        value = self._record(f"key {node}", lambda: self.host.identity_service().public_key(node))
        assert value is None or isinstance(value, str)
        return value

    @property
    def _before_live(self) -> bool:
        """Replaying, or between the end of the journal and the checkpointed request."""
        return self._replaying or self.state.restored_pending is not None or self._closing

    def enter_subflow(self, frame: SubFlowFrame) -> None:
        if not self._before_live:  # the checkpoint's sub-flow stack is already the right one
            self._immediate(SubFlowEntered(frame), "")

    def leave_subflow(self) -> None:
        if not self._before_live:
            self._immediate(SubFlowLeft(), "")

    def queue_write(self, sql: str, params: tuple[object, ...]) -> None:
        if self._before_live:
            return  # writes made before the checkpoint were committed with it
        self.state = replace(self.state, writes=(*self.state.writes, FlowWrite(sql, params)))

    def _record(self, key: str, make: Callable[[], object]) -> object:
        if self._replaying:
            return self._replayed(key)
        return self._immediate(ValueRecorded(key, make()), key)

    def _immediate(self, event: Event, key: str) -> object:
        if self._replaying and key:
            return self._replayed(key)
        if self._closing:
            return None
        if self.state.restored_pending is not None:
            self._nondeterminism(f"asked for {key or type(event).__name__!r}")
            raise self._replay_error  # type: ignore[misc]
        result = transition(self.state, event)
        self.state = result.new_state
        match result.continuation:
            case Resume(value=value):
                return value
            case Throw(error=error):
                raise error
            case _:
                raise ProtocolViolation(f"{type(event).__name__} did not resume the flow")

    # ---- replay ---------------------------------------------------------------------------
    @property
    def _replaying(self) -> bool:
        return self._replay is not None

    def _replayed(self, key: str) -> object:
        """The recorded outcome for ``key`` (raising a recorded exception)."""
        assert self._replay is not None
        if not self._replay:
            self._nondeterminism(f"asked for {key!r} after its journal ended")
            raise self._replay_error  # type: ignore[misc]
        entry = self._replay.popleft()
        if not self._replay:
            self._replay = None
        if entry.key != key:
            self._nondeterminism(f"asked for {key!r} where its journal records {entry.key!r}")
            raise self._replay_error  # type: ignore[misc]
        value = codec.decode(entry.outcome)
        if entry.failed:
            assert isinstance(value, BaseException)
            raise value
        return value

    def _nondeterminism(self, what: str) -> None:
        if self._replay_error is None:
            self._replay_error = NonDeterministicFlowError(
                f"flow {self.flow_id} ({self.state.flow_class}) {what}: the flow's code changed "
                "since it was checkpointed"
            )

    # ---- running --------------------------------------------------------------------------
    @property
    def idle(self) -> bool:
        """Suspended on a request, with no events queued and no commit outstanding."""
        return (
            not self.mailbox
            and self._blocked is None
            and not self.done
            and self.state.pending is not None
        )

    def take_mailbox(self) -> list[Event]:
        """Remove and return the events not processed yet (the host hands them on)."""
        events = list(self.mailbox)
        self.mailbox.clear()
        return events

    def post(self, event: Event) -> None:
        """Queue an event for this flow (a message for a flow that ended is acked and dropped)."""
        if self.done:
            if isinstance(event, SessionMessageDelivered) and event.delivery is not None:
                self.host.ack((event.delivery,))
            return
        self.mailbox.append(event)
        if self._blocked is None:
            self.host.ready(self)

    def run(self) -> None:
        """Process queued events until the mailbox is empty or a commit is outstanding."""
        with flow_log_context(self.flow_id):
            while self.mailbox and self._blocked is None and not self.done:
                self._process(self.mailbox.popleft())

    def start_replay(self) -> None:
        """Restore: re-run the flow's code up to its pending request, then carry on."""
        with flow_log_context(self.flow_id):
            self._step(lambda: self._coro.send(None))

    def _process(self, event: Event) -> None:
        previous = self.state
        try:
            result = transition(previous, event)
        except ProtocolViolation as exc:
            log.error("state machine rejected %s: %s", type(event).__name__, exc)
            if isinstance(event, FlowFailed) or self.state.removed:
                return
            result = transition(previous, FlowFailed(exc))
        self.state = result.new_state
        if result.new_state.errors is not None and (
            previous.errors is None or previous.errors.errors != result.new_state.errors.errors
        ):
            self.host.admit(self, result.new_state)
        self._execute(result, 0, previous)

    def _execute(self, result: Transition, start: int, previous: FlowState) -> None:
        actions = result.actions
        for index in range(start, len(actions)):
            action = actions[index]
            if isinstance(action, PersistCheckpoint):
                self._blocked = _Blocked(actions, index + 1, result.continuation, previous, action)
                ending = [a for a in actions[index + 1 :] if isinstance(a, RemoveFlow)]
                if ending:  # the flow's final commit: if it is reported failed, it may be written
                    self.unconfirmed_end = ending[0]
                self.host.commit(self, action.ops)
                return
            try:
                perform(self, action)
            except Exception as exc:
                self._action_failed(exc, action, previous)
                return
        self._continue(result.continuation)

    def commit_done(self, error: BaseException | None) -> None:
        """The host finished the commit this driver was waiting for."""
        blocked, self._blocked = self._blocked, None
        if blocked is None:
            return
        if error is None:
            self.unconfirmed_end = None
        with flow_log_context(self.flow_id):
            if error is not None:
                self._action_failed(error, blocked.action, blocked.previous)
            else:
                result = Transition(self.state, blocked.actions, blocked.continuation)
                self._execute(result, blocked.index, blocked.previous)
        if self.mailbox and not self.done:
            self.host.ready(self)

    def _action_failed(self, error: BaseException, action: Action, previous: FlowState) -> None:
        log.warning("action %s failed: %r", type(action).__name__, error)
        self.state = previous
        self._process(ActionFailed(error, type(action).__name__))

    def _continue(self, continuation: Continuation) -> None:
        match continuation:
            case Resume(value=value):
                self._step(lambda: self._coro.send(value))
            case Throw(error=error):
                self._step(lambda: self._coro.throw(error))
            case ProcessEvents():
                pass
            case Abort():
                self._close()

    def _step(self, advance: Callable[[], object]) -> None:
        """Advance the coroutine until it suspends on a live request, finishes or fails."""
        while True:
            ended: FlowFinished | FlowFailed | None = None
            previous_loop = enter_flow_code(self.state.flow_class)
            running = RUNNING.set(self)
            try:
                yielded = advance()
            except StopIteration as stop:
                ended = FlowFinished(stop.value)
            except BaseException as exc:
                ended = FlowFailed(exc)
            finally:
                RUNNING.reset(running)
                leave_flow_code(previous_loop)
            if ended is not None:
                self._ended(ended)
                return
            if self._check_replay_error():
                return
            if not isinstance(yielded, REQUEST_TYPES):
                error = FlowUsageError(
                    f"flows may only await Parley operations, but {self.state.flow_class} "
                    f"awaited {awaitable_name(self._coro, yielded)}"
                )
                advance = _thrower(self._coro, error)
                continue
            request: Request = yielded  # type: ignore[assignment]
            if self._replaying:
                advance = self._replay_step(request)
                continue
            if self.state.restored_pending is not None:
                try:
                    self.state = restore_pending(self.state, request)
                except NonDeterministicFlowError as exc:
                    self._replay_error = exc
                    self._check_replay_error()
                    return
                self.post(DoRemainingWork())
                return
            step = self._progress_label()
            if step != self.state.progress_step:
                log.debug("progress: %s", step)
                self.state = replace(self.state, progress_step=step)
            self._process(Suspended(request))
            return

    def _ended(self, event: FlowFinished | FlowFailed) -> None:
        """The flow's code returned or raised: finish or fail it (unless it was replaying)."""
        if self._check_replay_error():
            return
        if self._replaying or self.state.restored_pending is not None:
            if isinstance(event, FlowFinished):
                self._nondeterminism("finished before reaching its checkpointed request")
            else:
                self._nondeterminism(f"raised {event.error!r} while replaying its journal")
            self._check_replay_error()
            return
        self._process(event)

    def _replay_step(self, request: Request) -> Callable[[], object]:
        try:
            value = self._replayed(fingerprint(request))
        except NonDeterministicFlowError as exc:
            return _thrower(self._coro, exc)
        except BaseException as exc:
            return _thrower(self._coro, exc)
        return lambda: self._coro.send(value)

    def _check_replay_error(self) -> bool:
        """Fail the flow if replay found non-determinism (whatever the flow's code did with it)."""
        error = self._replay_error
        if error is None:
            return False
        self._replay_error = None
        self._replay = None
        self.state = replace(self.state, restored_pending=None, started=True)
        self._process(FlowFailed(error))
        return True

    def _progress_label(self) -> str | None:
        tracker = tracker_of(self.flow)
        return tracker.current_label() if tracker is not None else self.state.progress_step

    def _close(self) -> None:
        self._closing = True
        try:
            if self._started_coro is not None:
                self._started_coro.close()
        except RuntimeError as exc:
            log.warning("flow code ignored its cancellation: %s", exc)

    def close(self) -> None:
        """Discard the flow's coroutine (the host drops this incarnation)."""
        self.done = True
        self._close()

    def __repr__(self) -> str:
        return f"<FlowDriver {self.flow_id} {self.state.flow_class}>"


def _thrower(coro: Coroutine[Any, Any, Any], error: BaseException) -> Callable[[], object]:
    return lambda: coro.throw(error)


__all__ = ["FlowDriver", "FlowHost", "Identity"]

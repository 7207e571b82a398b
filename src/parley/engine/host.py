"""What a flow driver's actions do to the world: the :class:`FlowHost` port, and :func:`perform`.

A :class:`~parley.engine.driver.FlowDriver` computes its transitions itself and performs their
actions through its host, the executor: a :class:`FlowHost` (a
:class:`~parley.engine.runtime.FlowRuntime`, or the replay checker's do-nothing host). The driver
handles a :class:`~parley.protocol.actions.PersistCheckpoint` itself (it waits for the commit);
every other action is one call of :func:`perform`, which says which port it goes to. Flows that
sign and verify reach the node's keys through :class:`Identity`, which the host provides.

Everything here runs on the host's thread, inside the driver's turn.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from parley.flows.progress import ProgressTracker, tracker_of
from parley.protocol.actions import (
    AcknowledgeMessages,
    Action,
    ArmTimeout,
    ExecuteOperation,
    Passivate,
    PersistCheckpoint,
    ReadSignal,
    RemoveFlow,
    RestoreFromCheckpoint,
    RunQuery,
    ScheduleEvent,
    ScheduleWakeUp,
    SendMessages,
    SignalStarted,
)
from parley.protocol.errors import StateTransitionError
from parley.protocol.messages import Envelope
from parley.protocol.records import StoreOp
from parley.protocol.state import FlowState

if TYPE_CHECKING:
    from parley.engine.driver import FlowDriver
    from parley.flows.logic import FlowLogic

log = logging.getLogger("parley.flow")


class FlowHost(Protocol):
    """The executor's ports: everything a driver's actions do to the world."""

    def commit(self, driver: FlowDriver, ops: tuple[StoreOp, ...]) -> None:
        """Commit ``ops`` atomically, then call ``driver.commit_done(error_or_None)``."""
        ...

    def send(self, driver: FlowDriver, envelopes: tuple[Envelope, ...]) -> None:
        """Publish; a failure must reach the flow before its next commit completes."""
        ...

    def ack(self, deliveries: tuple[object, ...]) -> None: ...

    def schedule_wake_up(self, driver: FlowDriver, until: datetime, incarnation: int) -> None: ...

    def execute(self, driver: FlowDriver, action: ExecuteOperation) -> None: ...

    def query(self, driver: FlowDriver, action: RunQuery) -> None: ...

    def read_signal(self, driver: FlowDriver, action: ReadSignal) -> None:
        """Look for the flow's oldest stored signal; post ``SignalRead`` to the driver."""
        ...

    def arm_timeout(self, driver: FlowDriver, action: ArmTimeout) -> None:
        """Post ``TimedOut`` to the driver ``action.seconds`` from now."""
        ...

    def started(self, driver: FlowDriver) -> None: ...

    def removed(
        self, driver: FlowDriver, result: object, error: BaseException | None, *, durable: bool
    ) -> None:
        """The flow is over. Unless ``durable``, its final commit is still to come."""
        ...

    def restore(self, driver: FlowDriver) -> None: ...

    def passivated(self, driver: FlowDriver) -> None:
        """The flow's state is durable; drop the driver (its handle stays)."""
        ...

    def admit(self, driver: FlowDriver, state: FlowState) -> None:
        """Hospital admission: the flow just became errored (with new errors)."""
        ...

    def ready(self, driver: FlowDriver) -> None:
        """The driver has events to process: call ``driver.run()`` soon, on the host's thread."""
        ...

    def party_refusal(self, party: str) -> str | None:
        """Why a flow may not open a session with ``party`` (``None``: it may)."""
        ...

    def identity_service(self) -> Identity:
        """The node's identity, for flows that sign and verify.

        Raises:
            FlowUsageError: the node has none (it runs without a network map).
        """
        ...

    def now(self) -> datetime: ...

    def random(self) -> float: ...

    def uuid(self) -> str: ...


class Identity(Protocol):
    """What flows may do with the node's identity (``FlowLogic.services.identity``)."""

    def sign(self, data: bytes) -> bytes:
        """The node's Ed25519 signature of ``data``."""
        ...

    def verify(self, node: str, data: bytes, signature: bytes) -> bool:
        """Whether ``signature`` is ``node``'s signature of ``data`` under a key the network map
        admits for it."""
        ...

    def public_key(self, node: str) -> str | None:
        """``node``'s current public key, or ``None`` if the network map does not admit it."""
        ...


def perform(driver: FlowDriver, action: Action) -> None:
    """Perform ``action`` (any but :class:`PersistCheckpoint`) through the driver's host."""
    host = driver.host
    match action:
        case AcknowledgeMessages(deliveries=deliveries):
            try:
                host.ack(deliveries)
            except Exception:
                log.exception("acknowledging %d messages failed", len(deliveries))
        case SendMessages(envelopes=envelopes):
            host.send(driver, envelopes)
        case ScheduleEvent(event=event):
            driver.mailbox.append(event)
        case ScheduleWakeUp(until=until, incarnation=incarnation):
            host.schedule_wake_up(driver, until, incarnation)
        case ExecuteOperation():
            host.execute(driver, action)
        case RunQuery():
            host.query(driver, action)
        case ReadSignal():
            host.read_signal(driver, action)
        case ArmTimeout():
            host.arm_timeout(driver, action)
        case SignalStarted():
            host.started(driver)
        case RemoveFlow(result=value, error=error, durable=durable):
            driver.done = True
            _end_progress(driver.flow, error)
            host.removed(driver, value, error, durable=durable)
        case RestoreFromCheckpoint():
            driver.done = True
            host.restore(driver)
        case Passivate():
            driver.done = True
            host.passivated(driver)
        case PersistCheckpoint():
            raise StateTransitionError("PersistCheckpoint reached _perform", "PersistCheckpoint")


def _end_progress(flow: FlowLogic[Any], error: BaseException | None) -> None:
    """End the flow's progress tracker (if it has one): done, or failed with ``error``."""
    tracker = tracker_of(flow)
    if tracker is None or tracker.has_ended:
        return
    if error is None:
        tracker.current_step = ProgressTracker.DONE
    else:
        tracker.end_with_error(error)


__all__ = ["FlowHost", "Identity", "perform"]

"""Flows used by the integration tests, imported by node processes as an app.

The crash hooks kill their own process with SIGKILL at a chosen point — once: they leave a marker
file first, so the flow's replay after the restart runs past the same point.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path

from parley import (
    FlowException,
    FlowLogic,
    FlowSession,
    FlowUsageError,
    HospitalizeFlowException,
    ProgressTracker,
    ReceiveTimeoutException,
    Step,
    initiated_by,
    initiating_flow,
    serializable,
    startable_by_rpc,
)

MIGRATIONS = [
    "CREATE TABLE IF NOT EXISTS effects (side TEXT NOT NULL, round INTEGER NOT NULL)",
]


def crash_once(marker: str) -> None:
    """SIGKILL this process, unless ``marker`` exists (it is created just before)."""
    path = Path(marker)
    if marker and not path.exists():
        path.touch()
        os.kill(os.getpid(), signal.SIGKILL)


def hold_unless(marker: str) -> str:
    """An external operation that blocks until the process dies, unless ``marker`` exists."""
    if Path(marker).exists():
        return "released"
    threading.Event().wait(600)
    return "timed out"


@initiating_flow
@startable_by_rpc
class Rounds(FlowLogic[int]):
    """``rounds`` round trips with a side effect per round; may crash after round ``crash_at``."""

    def __init__(self, peer: str, rounds: int = 3, crash_at: int = -1, marker: str = "") -> None:
        self.peer, self.rounds, self.crash_at, self.marker = peer, rounds, crash_at, marker

    async def call(self) -> int:
        session = self.initiate_flow(self.peer)
        value = 0
        for n in range(self.rounds):
            value = (await session.send_and_receive(int, value)).unwrap(int)
            self.services.db.execute("INSERT INTO effects VALUES ('initiator', ?)", (n,))
            if n == self.crash_at:
                crash_once(self.marker)
        await session.send(-1)
        return value


@initiated_by(Rounds)
class RoundsResponder(FlowLogic[None]):
    """Answers each value with value + 1; the first round may hold until released."""

    def __init__(self, session: FlowSession) -> None:
        self.session = session

    async def call(self) -> None:
        n = 0
        while True:
            value = (await self.session.receive(int)).unwrap(int)
            if value < 0:
                return
            self.services.db.execute("INSERT INTO effects VALUES ('responder', ?)", (n,))
            hold = os.environ.get("PARLEY_TEST_HOLD_MARKER")
            if n == 0 and hold:
                await self.execute(hold_unless, hold)
            await self.session.send(value + 1)
            n += 1


@initiating_flow
class Collect(FlowLogic[None]):
    """Only its name is used: the tests play the initiator by hand."""


@initiated_by(Collect)
class Collector(FlowLogic[None]):
    """Receives a count, then that many ints (writing each), and answers with the list."""

    def __init__(self, session: FlowSession) -> None:
        self.session = session

    async def call(self) -> None:
        count = (await self.session.receive(int)).unwrap(int)
        values = []
        for _ in range(count):
            value = (await self.session.receive(int)).unwrap(int)
            self.services.db.execute("INSERT INTO effects VALUES ('collector', ?)", (value,))
            values.append(value)
        await self.session.send(values)


@initiating_flow
class Park(FlowLogic[None]):
    """Only its name is used: the tests play the initiator by hand."""


@initiated_by(Park)
class Parked(FlowLogic[None]):
    """Waits for one int and answers it plus one."""

    def __init__(self, session: FlowSession) -> None:
        self.session = session

    async def call(self) -> None:
        value = (await self.session.receive(int)).unwrap(int)
        await self.session.send(value + 1)


@startable_by_rpc
class Waits(FlowLogic[str]):
    """Sleeps for a long time (until killed), or raises HospitalizeFlowException if asked."""

    def __init__(self, seconds: float = 3600, observe: bool = False) -> None:
        self.seconds, self.observe = seconds, observe

    async def call(self) -> str:
        await self.sleep(self.seconds)
        if self.observe:
            raise HospitalizeFlowException("please look at this")
        return "woke"


class AwaitsAsyncio(FlowLogic[str]):
    """Awaits asyncio.sleep with a delay (which asks for the running loop) and reports the error."""

    async def call(self) -> str:
        try:
            await asyncio.sleep(0.01)
        except FlowUsageError as exc:
            return str(exc)
        return "not caught"


@startable_by_rpc
class Approves(FlowLogic[str]):
    """Waits for the signal ``approve`` (a name), records it, may crash before its next
    checkpoint."""

    def __init__(self, marker: str = "") -> None:
        self.marker = marker

    async def call(self) -> str:
        who = await self.wait_for_signal("approve", str)
        self.services.db.execute("INSERT INTO effects VALUES ('approver', 0)")
        crash_once(self.marker)
        await self.sleep(0.01)
        return who


# ---- for the RPC service's tests (tests/rpc, tests/cli/test_flow_cli.py) ----------------------


@initiating_flow
class Consult(FlowLogic[int]):
    """A sub-flow with steps of its own: asks the peer for ``n + 1``."""

    ASKING = Step("Asking the peer")
    READING = Step("Reading the answer")
    progress_tracker = ProgressTracker(ASKING, READING)

    def __init__(self, peer: str, n: int) -> None:
        self.peer, self.n = peer, n

    async def call(self) -> int:
        self.progress_tracker.current_step = self.ASKING
        reply = await self.initiate_flow(self.peer).send_and_receive(int, self.n)
        self.progress_tracker.current_step = self.READING
        return reply.unwrap(int)


@initiated_by(Consult)
class Consulted(FlowLogic[None]):
    def __init__(self, session: FlowSession) -> None:
        self.session = session

    async def call(self) -> None:
        n = (await self.session.receive(int)).unwrap(int)
        await self.session.send(n + 1)


@startable_by_rpc
class Steps(FlowLogic[int]):
    """Steps, one of them a sub-flow with steps of its own; may wait for an approval (a bool)."""

    PREPARING = Step("Preparing")
    CONSULTING = Step("Consulting the peer")
    APPROVING = Step("Awaiting approval")
    FINISHING = Step("Finishing")
    progress_tracker = ProgressTracker(PREPARING, CONSULTING, APPROVING, FINISHING)

    def __init__(self, peer: str, n: int = 1, approval: bool = False) -> None:
        self.peer, self.n, self.approval = peer, n, approval

    async def call(self) -> int:
        self.progress_tracker.current_step = self.PREPARING
        value = self.n
        self.progress_tracker.current_step = self.CONSULTING
        value = await self.sub_flow(Consult(self.peer, value))
        if self.approval:
            self.progress_tracker.current_step = self.APPROVING
            if not await self.wait_for_signal("approve", bool):
                raise FlowException("the approver said no")
        self.progress_tracker.current_step = self.FINISHING
        return value


@serializable
@dataclass(frozen=True)
class Order:
    """A @serializable argument: the command line takes it as a JSON object."""

    item: str
    quantity: int
    price: Decimal


@startable_by_rpc
class Books(FlowLogic[str]):
    """Takes every kind of argument the command line converts, and describes them."""

    def __init__(self, order: Order, when: datetime, express: bool = False) -> None:
        self.order, self.when, self.express = order, when, express

    async def call(self) -> str:
        total = self.order.price * self.order.quantity
        return f"{self.order.item} x{self.order.quantity} = {total} on {self.when:%Y-%m-%d}" + (
            " express" if self.express else ""
        )


@initiating_flow
@startable_by_rpc
class AwaitReply(FlowLogic[int]):
    """Sends 1 to the peer and waits for its answer (the peer's Silent never gives one)."""

    def __init__(self, peer: str) -> None:
        self.peer = peer

    async def call(self) -> int:
        return (await self.initiate_flow(self.peer).send_and_receive(int, 1)).unwrap(int)


@initiated_by(AwaitReply)
class Silent(FlowLogic[None]):
    """Takes the number, then waits for a signal nobody sends (until it is killed)."""

    def __init__(self, session: FlowSession) -> None:
        self.session = session

    async def call(self) -> None:
        (await self.session.receive(int)).unwrap(int)
        await self.wait_for_signal("never", str)
        await self.session.send(0)


class NotForRpc(FlowLogic[int]):
    """A flow without @startable_by_rpc: clients can't start it."""

    async def call(self) -> int:
        return 0


@initiating_flow
@startable_by_rpc
class Deadline(FlowLogic[float]):
    """Asks ``peer`` (which never answers) with a deadline; returns the seconds until it passed."""

    def __init__(self, peer: str, timeout: float) -> None:
        self.peer, self.timeout = peer, timeout

    async def call(self) -> float:
        start = self.now()
        try:
            await self.initiate_flow(self.peer).send_and_receive(int, 1, timeout=self.timeout)
        except ReceiveTimeoutException:
            return (self.now() - start).total_seconds()
        return -1.0


@initiated_by(Deadline)
class Mute(FlowLogic[None]):
    """Takes the number and never answers (until it is killed)."""

    def __init__(self, session: FlowSession) -> None:
        self.session = session

    async def call(self) -> None:
        (await self.session.receive(int)).unwrap(int)
        await self.wait_for_signal("never", str)

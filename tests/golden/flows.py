"""The flows of the golden database: each one stops at a different kind of suspension.

These classes are named in the golden database (``tests.golden.flows:<Class>``), so they are part
of the fixture: change their code only in ways that replay the stored journals identically (the
golden tests will say if not), and never rename or move them.

How each flow is released after a restore, and what it returns, is in :data:`RESULTS`
and ``test_golden_database.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from parley import (
    FlowException,
    FlowLogic,
    FlowSession,
    HospitalizeFlowException,
    IdempotentFlow,
    ProgressTracker,
    Step,
    initiated_by,
    initiating_flow,
    serializable,
)

#: The app table the golden flows write (applied to both nodes by the generator and the tests).
MIGRATIONS = ["CREATE TABLE golden_ledger (who TEXT NOT NULL, amount TEXT NOT NULL)"]

#: While False, :class:`Patient` asks to be kept for observation; the restore test opens it.
GATE = {"open": False}


@serializable(name="golden.Quote")
@dataclass(frozen=True)
class Quote:
    item: str
    price: Decimal
    tags: frozenset[str]


class Refused(FlowException):
    """A business error with a declared field (its value travels and is journalled)."""

    code: int

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


#: The external operations that ran in this process, by name (tests check what ran, and how often).
OPERATION_CALLS: list[str] = []


def double(n: int) -> int:
    OPERATION_CALLS.append("double")
    return 2 * n


def refuse(n: int) -> int:
    OPERATION_CALLS.append("refuse")
    raise Refused(f"no {n}", n)


def noop() -> None:
    OPERATION_CALLS.append("noop")


class Nap(FlowLogic[str]):
    """A sub-flow with its own progress tracker that sleeps for ``seconds``."""

    NAPPING = Step("Napping")
    progress_tracker = ProgressTracker(NAPPING)

    def __init__(self, seconds: int) -> None:
        self.seconds = seconds

    async def call(self) -> str:
        self.progress_tracker.current_step = self.NAPPING
        await self.sleep(self.seconds)
        return "rested"


class Sleeper(FlowLogic[tuple[object, ...]]):
    """Records now/random/uuid, then sleeps for an hour inside a sub-flow."""

    PREPARING = Step("Preparing")
    RESTING = Step("Resting", Nap.progress_tracker.copy)
    progress_tracker = ProgressTracker(PREPARING, RESTING)

    def __init__(self, label: str, *, hours: int = 1) -> None:
        self.label, self.hours = label, hours

    async def call(self) -> tuple[object, ...]:
        self.progress_tracker.current_step = self.PREPARING
        started, r, u = self.now(), self.random(), self.uuid()
        self.progress_tracker.current_step = self.RESTING
        rested = await self.sub_flow(Nap(3600 * self.hours))
        slept = (self.now() - started).total_seconds() >= 3600 * self.hours
        return (self.label, rested, slept, 0 <= r < 1, len(u))


@initiating_flow(version=2)
class Asker(FlowLogic[Quote]):
    """Asks the peer for a quote; the peer sleeps before it answers."""

    def __init__(self, peer: str, item: str) -> None:
        self.peer, self.item = peer, item

    async def call(self) -> Quote:
        session = self.initiate_flow(self.peer)
        reply = await session.send_and_receive(Quote, self.item)
        return reply.unwrap(lambda q: q)


@initiated_by(Asker)
class Answerer(FlowLogic[None]):
    def __init__(self, session: FlowSession) -> None:
        self.session = session

    async def call(self) -> None:
        item = (await self.session.receive(str)).unwrap(lambda s: s)
        await self.sleep(1800)
        await self.session.send(Quote(item, Decimal("12.50"), frozenset({"golden", item})))


class Worker(FlowLogic[tuple[object, ...]]):
    """An operation that fails (journalled with its exception), then one the node holds."""

    def __init__(self, n: int) -> None:
        self.n = n

    async def call(self) -> tuple[object, ...]:
        try:
            await self.execute(refuse, self.n)
        except Refused as exc:
            refused = (str(exc), exc.code)
        doubled = await self.execute(double, self.n)
        return (refused, doubled)


@initiating_flow
class Prober(FlowLogic[tuple[int, str]]):
    """Waits for the flow info of a node that has never run (its Init waits in the network)."""

    def __init__(self, peer: str) -> None:
        self.peer = peer

    async def call(self) -> tuple[int, str]:
        session = self.initiate_flow(self.peer)
        info = await session.get_counterparty_flow_info()
        return (info.flow_version, info.app)


@initiated_by(Prober)
class Probed(FlowLogic[None]):
    def __init__(self, session: FlowSession) -> None:
        self.session = session

    async def call(self) -> None:
        return None


@initiating_flow
class Collector(FlowLogic[list[int]]):
    """Two sessions to the same peer; the second answers first, so its data waits in the inbox."""

    def __init__(self, peer: str) -> None:
        self.peer = peer

    async def call(self) -> list[int]:
        slow, fast = self.initiate_flow(self.peer), self.initiate_flow(self.peer)
        await slow.send(2400)
        await fast.send(0)
        a = (await slow.receive(int)).unwrap(lambda x: x)
        b = (await fast.receive(int)).unwrap(lambda x: x)
        return [a, b]


@initiated_by(Collector)
class Giver(FlowLogic[None]):
    def __init__(self, session: FlowSession) -> None:
        self.session = session

    async def call(self) -> None:
        delay = (await self.session.receive(int)).unwrap(lambda x: x)
        if delay:
            await self.sleep(delay)
        await self.session.send(delay + 1)


class Patient(FlowLogic[str]):
    """Asks to be kept for observation until :data:`GATE` opens."""

    async def call(self) -> str:
        await self.execute(noop)
        if not GATE["open"]:
            raise HospitalizeFlowException("waiting for the gate")
        return "discharged"


class Ledger(FlowLogic[int]):
    """Writes and reads its own table, then sleeps inside an idempotent sub-flow."""

    def __init__(self, who: str, amount: Decimal) -> None:
        self.who, self.amount = who, amount

    async def call(self) -> int:
        self.services.db.execute(
            "INSERT INTO golden_ledger VALUES (?, ?)", (self.who, str(self.amount))
        )
        await self.sleep(60)
        rows = await self.services.db.query("SELECT count(*) FROM golden_ledger")
        await self.sub_flow(Doze())
        (count,) = rows[0]
        assert isinstance(count, int)
        return count


class Doze(IdempotentFlow[None]):
    async def call(self) -> None:
        await self.sleep(3000)


class Quick(FlowLogic[str]):
    """Finishes at once; started with a client id, its result stays in the database."""

    async def call(self) -> str:
        await self.execute(noop)
        return "quick"


@initiating_flow
class Caller(FlowLogic[str]):
    """Started on bob: calls alice, whose responder sleeps before it answers."""

    def __init__(self, peer: str) -> None:
        self.peer = peer

    async def call(self) -> str:
        session = self.initiate_flow(self.peer)
        await session.send("hello")
        reply = (await session.receive(str)).unwrap(lambda s: s)
        await session.close()
        return reply


@initiated_by(Caller)
class Callee(FlowLogic[None]):
    def __init__(self, session: FlowSession) -> None:
        self.session = session

    async def call(self) -> None:
        greeting = (await self.session.receive(str)).unwrap(lambda s: s)
        await self.sleep(900)
        await self.session.send(greeting + " back")


#: Client id -> what the flow returns once released after a restore.
RESULTS: dict[str, object] = {
    "sleeper": ("golden", "rested", True, True, 36),
    "asker": Quote("widget", Decimal("12.50"), frozenset({"golden", "widget"})),
    "worker": (("no 21", 21), 42),
    "prober": (1, "tests.golden.flows"),
    "collector": [2401, 1],
    "patient": "discharged",
    "ledger": 1,
    "quick": "quick",
    "caller": "hello back",
}

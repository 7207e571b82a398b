"""Errors the hospital retries: locked databases, constraint violations, timeouts, transient
messaging errors (the errors it does not retry are in ``test_faults_endings``).

Every node keeps its database in a file (``MockNetwork(data_dir=tmp_path)``). Backoffs run on
virtual time: with ``auto_advance=False`` a delayed retry waits until the test moves the clock.

Left out:

* A per-incarnation sender id on messages: Parley's message ids are the same whichever
  incarnation sends them (receivers drop the copies), which is what the re-send test checks.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from parley import (
    FlowLogic,
    FlowSession,
    FlowTimeoutException,
    IdempotentFlow,
    initiated_by,
    initiating_flow,
)
from parley.protocol.errors import StateTransitionError
from parley.protocol.records import FlowStatus
from parley.testing import FlowHospitalized, MockNetwork, MockNode
from parley.transport.errors import MessagingError

MIGRATIONS = ["CREATE TABLE payments (ref TEXT PRIMARY KEY, amount INTEGER NOT NULL)"]
LOCKED = sqlite3.OperationalError("database is locked")
RUNS: list[str] = []


@pytest.fixture(autouse=True)
def fresh() -> None:
    RUNS.clear()
    TIMED_OUT.clear()
    CHARGES.clear()


def node(net: MockNetwork, name: str) -> MockNode:
    return net.create_node(name, apps=[__name__])


def rows_of(node: MockNode, flow_id: str) -> list[object]:
    """Rows kept for ``flow_id``: start, header, journal, admissions, result."""
    tables = ("flow_start", "flow_header", "journal", "hospital_admission", "flow_result")
    sql = "SELECT count(*) FROM {} WHERE flow_id = ?"
    return [node.store.query(sql.format(t), (flow_id,))[0][0] for t in tables]


class Pays(FlowLogic[str]):
    """Pays between its first two checkpoints (with ``fail_once``, its code is locked out there
    the first time)."""

    def __init__(self, ref: str, fail_once: bool = False) -> None:
        self.ref, self.fail_once = ref, fail_once

    async def call(self) -> str:
        RUNS.append(self.ref)
        await self.sleep(1)
        self.services.db.execute("INSERT INTO payments VALUES (?, 10)", (self.ref,))
        if self.fail_once and RUNS.count(self.ref) == 1:
            raise sqlite3.OperationalError("database is locked")
        await self.sleep(1)
        await self.sleep(1)
        return self.ref


def test_a_locked_database_once_after_a_checkpoint_is_retried_and_the_flow_stays_runnable(
    tmp_path: Path,
) -> None:
    net = MockNetwork(data_dir=tmp_path, auto_advance=False)
    alice = node(net, "alice")
    alice.faults.fail("commit", LOCKED, skip=1)  # the second checkpoint
    handle = alice.start_flow(Pays("p1"))
    net.run_network()
    net.advance_clock(1)
    net.run_network()
    assert alice.faults.injected["commit"] == 1
    (admission,) = alice.hospital_show(handle.flow_id)
    assert (admission.staff, admission.outcome, admission.retry_in) == ("locked", "retry", 0.0)
    (waiting,) = alice.flows()
    assert (waiting.status, waiting.suspends) == (FlowStatus.RUNNABLE, 2)
    net.advance_clock(1)
    net.run_network()
    net.advance_clock(1)
    assert handle.result() == "p1"
    assert alice.store.query("SELECT ref FROM payments") == [("p1",)]
    assert rows_of(alice, handle.flow_id) == [0, 0, 0, 0, 0]  # the admission went with it


def test_a_locked_database_raised_by_the_flows_code_once_reruns_it_and_it_succeeds(
    tmp_path: Path,
) -> None:
    net = MockNetwork(data_dir=tmp_path)
    alice = node(net, "alice")
    handle = alice.start_flow(Pays("p2", fail_once=True))
    assert handle.result() == "p2"
    assert RUNS == ["p2", "p2"]  # re-run from its first checkpoint
    assert [(r.staff, r.outcome) for r in alice.hospital.records] == [("locked", "retry")]
    assert alice.store.query("SELECT ref, amount FROM payments") == [("p2", 10)]
    assert alice.hospital_show(handle.flow_id) == []


@initiating_flow
class Tell(FlowLogic[None]):
    def __init__(self, peer: str) -> None:
        self.peer = peer

    async def call(self) -> None:
        RUNS.append("tell")
        await self.initiate_flow(self.peer).send(7)
        if RUNS.count("tell") == 1:
            raise sqlite3.OperationalError("database is locked")
        await self.sleep(1)


@initiated_by(Tell)
class Listen(FlowLogic[int]):
    def __init__(self, session: FlowSession) -> None:
        self.session = session

    async def call(self) -> int:
        return (await self.session.receive(int)).unwrap_unchecked()


def test_a_send_made_again_by_the_retry_has_the_same_id_and_reaches_the_peer_once(
    tmp_path: Path,
) -> None:
    net = MockNetwork(data_dir=tmp_path)
    alice, bob = node(net, "alice"), node(net, "bob")
    handle = alice.start_flow(Tell("bob"))
    handle.result()
    sent = [p for p in net.published if p.sender == "alice"]
    inits = [p.id for p in sent if type(p.message).__name__ == "Init"]
    assert len(inits) == 2
    assert inits[0] == inits[1]
    assert list(bob.outcomes.values()) == [(True, 7)]  # the copy was dropped
    assert bob.in_flight == {}
    assert bob.flows() == []


class RecordsPayment(IdempotentFlow[None]):
    def __init__(self, ref: str) -> None:
        self.ref = ref

    async def call(self) -> None:
        RUNS.append(self.ref)
        self.services.db.execute("INSERT INTO payments VALUES (?, 99)", (self.ref,))


class PaysAgain(FlowLogic[str]):
    def __init__(self, ref: str) -> None:
        self.ref = ref

    async def call(self) -> str:
        await self.sleep(1)
        await self.sub_flow(RecordsPayment(self.ref))
        await self.sleep(1)  # the payment commits with this checkpoint
        return "paid"


def test_a_constraint_violated_once_is_retried_and_the_flow_completes(tmp_path: Path) -> None:
    net = MockNetwork(data_dir=tmp_path)
    alice = node(net, "alice")
    alice.faults.fail("commit", sqlite3.IntegrityError("UNIQUE constraint failed: x"), skip=1)
    assert alice.start_flow(PaysAgain("p3")).result() == "paid"
    assert [(r.staff, r.outcome) for r in alice.hospital.records] == [("constraint", "retry")]
    assert alice.store.query("SELECT ref, amount FROM payments") == [("p3", 99)]


def test_a_write_that_always_violates_a_constraint_fails_after_three_retries(
    tmp_path: Path,
) -> None:
    net = MockNetwork(data_dir=tmp_path)
    alice = node(net, "alice")
    assert alice.start_flow(Pays("p4")).result() == "p4"
    handle = alice.start_flow(PaysAgain("p4"))  # p4 is paid: the primary key says no, always
    with pytest.raises(StateTransitionError) as failed:
        handle.result()
    assert isinstance(failed.value.__cause__, sqlite3.IntegrityError)
    assert [(r.staff, r.outcome) for r in alice.hospital.records] == [
        ("constraint", "retry"),
        ("constraint", "retry"),
        ("constraint", "retry"),
        ("constraint", "propagate"),
    ]
    assert RUNS.count("p4") == 1 + 4  # the first flow, then the idempotent sub-flow 4 times
    assert alice.store.query("SELECT ref, amount FROM payments") == [("p4", 10)]
    assert rows_of(alice, handle.flow_id) == [0, 0, 0, 0, 0]


ROUNDS = 3
TIMED_OUT: set[str] = set()


def time_out_once(where: str) -> None:
    if where not in TIMED_OUT:
        TIMED_OUT.add(where)
        raise FlowTimeoutException(f"{where} took too long")


@initiating_flow
class Exchange(FlowLogic[str]):
    def __init__(self, peers: list[str]) -> None:
        self.peers = peers

    async def call(self) -> str:
        sessions = [self.initiate_flow(p) for p in self.peers]
        total = 0
        for step in range(ROUNDS):
            for session in sessions:
                total += (await session.send_and_receive(int, step)).unwrap_unchecked()
            time_out_once(f"{self.our_identity} step {step}")
        return f"{len(sessions)}:{total}"


@initiated_by(Exchange)
class Echo(FlowLogic[None]):
    def __init__(self, session: FlowSession) -> None:
        self.session = session

    async def call(self) -> None:
        for step in range(ROUNDS):
            n = (await self.session.receive(int)).unwrap_unchecked()
            time_out_once(f"{self.our_identity} step {step}")
            await self.session.send(n + 1)


def test_a_timeout_at_every_step_of_both_sides_is_retried_and_the_exchange_is_exact(
    tmp_path: Path,
) -> None:
    net = MockNetwork(data_dir=tmp_path)
    alice, bob, carol = (node(net, n) for n in ("alice", "bob", "carol"))
    assert alice.start_flow(Exchange(["bob", "carol"])).result() == "2:12"
    assert len(TIMED_OUT) == 3 * ROUNDS
    for each in (alice, bob, carol):
        records = [(r.staff, r.outcome) for r in each.hospital.records]
        assert records == [("timeout", "retry")] * ROUNDS, each
        assert each.flows() == []
        assert each.in_flight == {}


CHARGES: list[str] = []


def charge(db_path: str, key: str) -> int:
    """A payment provider keeping its charges in its own SQLite file (idempotent by key)."""
    CHARGES.append(key)
    with closing(sqlite3.connect(db_path, timeout=0)) as db, db:
        db.execute("INSERT OR IGNORE INTO charges VALUES (?)", (key,))
    return len(CHARGES)


class Charges(FlowLogic[int]):
    def __init__(self, db_path: str) -> None:
        self.db_path = db_path

    async def call(self) -> int:
        return await self.execute(charge, self.db_path, f"{self.flow_id}:charge")


def test_an_operation_locked_out_is_retried_with_backoff_and_the_same_key(tmp_path: Path) -> None:
    provider = str(tmp_path / "provider.sqlite")
    with closing(sqlite3.connect(provider)) as db:
        db.execute("CREATE TABLE charges (key TEXT PRIMARY KEY)")
    holder = sqlite3.connect(provider, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another writer holds the provider's database
    net = MockNetwork(data_dir=tmp_path, auto_advance=False)
    alice = node(net, "alice")
    handle = alice.start_flow(Charges(provider))
    net.run_network()
    records = alice.hospital_show(handle.flow_id)
    assert [(r.staff, r.outcome) for r in records] == [("locked", "retry")] * 2
    assert records[0].retry_in == 0.0
    assert records[1].retry_in >= 10.0
    holder.execute("ROLLBACK")
    holder.close()
    net.advance_clock(records[1].retry_in - 0.5)
    net.run_network()
    assert len(CHARGES) == 2
    assert not handle.done
    net.advance_clock(0.5)
    assert handle.result() == 3
    assert [f"{handle.flow_id}:charge"] * 3 == CHARGES
    with closing(sqlite3.connect(provider)) as db:
        assert db.execute("SELECT key FROM charges").fetchall() == [(CHARGES[0],)]


@initiating_flow
class Announce(FlowLogic[None]):
    def __init__(self, peer: str, depth: int) -> None:
        self.peer, self.depth = peer, depth

    async def call(self) -> None:
        await self.initiate_flow(self.peer).send(42)
        down = MessagingError("NATS is down")
        if self.depth == 0:
            raise down
        try:
            try:
                raise down
            except MessagingError as exc:
                raise ValueError("while publishing") from exc
        except ValueError as exc:
            raise RuntimeError("announcing failed") from exc


@initiated_by(Announce)
class Hears(FlowLogic[int]):
    def __init__(self, session: FlowSession) -> None:
        self.session = session

    async def call(self) -> int:
        return (await self.session.receive(int)).unwrap_unchecked()


@pytest.mark.parametrize("depth", [0, 2], ids=["itself", "two causes deep"])
def test_a_messaging_error_after_a_send_is_retried_three_times_then_kept_for_observation(
    depth: int, tmp_path: Path
) -> None:
    net = MockNetwork(data_dir=tmp_path, auto_advance=False)
    alice, bob = node(net, "alice"), node(net, "bob")
    handle = alice.start_flow(Announce("bob", depth))
    net.run_network()
    for expected in (2, 3, 4):
        records = alice.hospital_show(handle.flow_id)
        assert len(records) == expected
        if expected == 4:
            break
        net.advance_clock(records[-1].retry_in - 0.5)
        net.run_network()
        assert len(alice.hospital_show(handle.flow_id)) == expected  # waits out its backoff
        net.advance_clock(0.5)
        net.run_network()
    outcomes = [(r.staff, r.outcome, r.attempt) for r in alice.hospital_show(handle.flow_id)]
    assert outcomes == [("messaging", "retry", n) for n in range(3)] + [("messaging", "observe", 3)]
    with pytest.raises(FlowHospitalized):
        handle.result()
    header = alice.store.query("SELECT flow_id, status FROM flow_header")
    assert header == [(handle.flow_id, "HOSPITALIZED")]
    sent = [p for p in net.published if p.sender == "alice"]
    assert [type(p.message).__name__ for p in sent] == ["Init"] * 4  # again at every retry
    assert len({p.id for p in sent}) == 1
    assert list(bob.outcomes.values()) == [(True, 42)]

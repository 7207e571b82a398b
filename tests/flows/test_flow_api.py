"""The flow API on MockNetwork: usage errors, recorded values, operations, kill, client ids,
progress, idempotent sub-flows and the hospital's basic verdicts."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from parley import (
    FlowLogic,
    FlowSession,
    FlowUsageError,
    HospitalizeFlowException,
    IdempotentFlow,
    KilledFlowException,
    ProgressTracker,
    SerializationError,
    Step,
    UnexpectedFlowEndException,
    UnexpectedPayloadError,
    initiated_by,
    initiating_flow,
    serializable,
)
from parley.flows.progress import ProgressChange
from parley.protocol.errors import OperationError
from parley.protocol.records import FlowStatus
from parley.testing import MockNetwork, MockNode

# ---- awaiting foreign awaitables --------------------------------------------------------------


class AwaitsAsyncio(FlowLogic[str]):
    async def call(self) -> str:
        try:
            await asyncio.sleep(0)
        except FlowUsageError as exc:
            return str(exc)
        return "not caught"


def test_awaiting_a_foreign_awaitable_throws_a_usage_error_naming_it(alice: MockNode) -> None:
    message = alice.start_flow(AwaitsAsyncio()).result()
    assert "may only await Parley operations" in message
    assert "asyncio.tasks.sleep" in message


# ---- payload types ----------------------------------------------------------------------------


@serializable
@dataclass(frozen=True)
class Quote:
    price: int


@initiating_flow
class ExpectsQuote(FlowLogic[int]):
    def __init__(self, peer: str) -> None:
        self.peer = peer

    async def call(self) -> int:
        return (await self.initiate_flow(self.peer).receive(Quote)).unwrap(lambda q: q.price)


@initiated_by(ExpectsQuote)
class SendsSomething(FlowLogic[None]):
    payload: object = Quote(7)

    def __init__(self, session: FlowSession) -> None:
        self.session = session

    async def call(self) -> None:
        await self.session.send(type(self).payload)


def test_a_payload_of_a_registered_class_arrives_as_that_class(
    alice: MockNode, bob: MockNode
) -> None:
    assert alice.start_flow(ExpectsQuote("bob")).result() == 7


def test_a_payload_of_the_wrong_type_names_both_types(
    alice: MockNode, bob: MockNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(SendsSomething, "payload", "a string")
    with pytest.raises(UnexpectedPayloadError) as raised:
        alice.start_flow(ExpectsQuote("bob")).result()
    assert "test_flow_api.Quote" in str(raised.value)
    assert "str" in str(raised.value)


# ---- recorded values survive replay -----------------------------------------------------------


SEEN: list[tuple[object, ...]] = []


@initiating_flow
class RecordsValues(FlowLogic[tuple[object, ...]]):
    def __init__(self, peer: str) -> None:
        self.peer = peer

    async def call(self) -> tuple[object, ...]:
        before = (self.now(), self.random(), self.uuid())
        SEEN.append(before)
        reply = (await self.initiate_flow(self.peer).send_and_receive(int, 1)).unwrap(int)
        return (*before, reply)


@initiated_by(RecordsValues)
class SlowEcho(FlowLogic[None]):
    def __init__(self, session: FlowSession) -> None:
        self.session = session

    async def call(self) -> None:
        n = (await self.session.receive(int)).unwrap(int)
        await self.sleep(60)
        await self.session.send(n)


def test_now_random_and_uuid_are_the_same_after_a_restore(net: MockNetwork) -> None:
    net.auto_advance = False
    SEEN.clear()
    alice, _ = net.create_node("alice"), net.create_node("bob")
    handle = alice.start_flow(RecordsValues("bob"))
    net.run_network()
    (driver,) = alice.runtime.live_drivers()
    assert driver.state.journal_len == 4  # now, random, uuid, initiate: recorded before suspending
    net.advance_clock(10)  # a re-drawn now() would differ, and the node's RNG has moved on
    net.restart_node(alice)
    net.advance_clock(50)
    result = handle.result()
    assert len(SEEN) == 2, "the restore re-ran the flow's code"
    assert SEEN[0] == SEEN[1] == result[:3]


def test_recorded_values_are_replayed_not_redrawn_across_several_restores() -> None:
    reference_net = MockNetwork(auto_advance=False)
    alice, _ = reference_net.create_node("alice"), reference_net.create_node("bob")
    reference = alice.start_flow(RecordsValues("bob"))
    reference_net.run_network()
    reference_net.advance_clock(60)
    expected = reference.result()
    net = MockNetwork(auto_advance=False)
    alice, _ = net.create_node("alice"), net.create_node("bob")
    handle = alice.start_flow(RecordsValues("bob"))
    net.run_network()
    for _ in range(3):
        net.advance_clock(5)
        net.restart_node(alice)
        net.run_network()
    net.advance_clock(60)
    assert handle.result() == expected


# ---- external operations ----------------------------------------------------------------------


class Unencodable(Exception):
    def __init__(self) -> None:
        super().__init__(object())


def raise_value_error() -> None:
    raise ValueError("bad input")


def raise_unencodable() -> None:
    raise Unencodable


class CatchesOperationErrors(FlowLogic[tuple[str, str]]):
    async def call(self) -> tuple[str, str]:
        try:
            await self.execute(raise_value_error)
        except ValueError as exc:
            first = f"ValueError: {exc}"
        try:
            await self.execute(raise_unencodable)
        except OperationError as exc:
            second = f"{type(exc.__cause__).__name__}"
        return first, second


def test_operation_errors_reach_the_flow_as_themselves_or_as_operation_error(
    alice: MockNode,
) -> None:
    assert alice.start_flow(CatchesOperationErrors()).result() == (
        "ValueError: bad input",
        "Unencodable",
    )


def returns_object() -> object:
    return object()


class ReturnsUnencodable(FlowLogic[None]):
    async def call(self) -> None:
        await self.execute(returns_object)


def test_an_operation_result_that_cant_be_recorded_fails_at_the_execute_call(
    alice: MockNode,
) -> None:
    with pytest.raises(SerializationError, match="object"):
        alice.start_flow(ReturnsUnencodable()).result()


# ---- kill ------------------------------------------------------------------------------------


@initiating_flow
class WaitsForever(FlowLogic[None]):
    def __init__(self, peer: str) -> None:
        self.peer = peer

    async def call(self) -> None:
        session = self.initiate_flow(self.peer)
        await session.send("hello")
        await session.receive(str)


@initiated_by(WaitsForever)
class AlsoWaits(FlowLogic[None]):
    def __init__(self, session: FlowSession) -> None:
        self.session = session

    async def call(self) -> None:
        await self.session.receive(str)
        await self.session.receive(str)


def test_killing_a_waiting_flow_ends_it_and_its_peer_sees_an_unexpected_end(
    net: MockNetwork, alice: MockNode, bob: MockNode
) -> None:
    handle = alice.start_flow(WaitsForever("bob"))
    net.run_network()
    assert not handle.done
    assert alice.kill_flow(handle.flow_id) is True
    with pytest.raises(KilledFlowException):
        handle.result()
    (outcome,) = bob.outcomes.values()
    assert isinstance(outcome[1], UnexpectedFlowEndException)
    assert alice.store.list_flows() == []
    assert bob.store.list_flows() == []
    assert alice.kill_flow(handle.flow_id) is False


# ---- client ids ---------------------------------------------------------------------------------


class CountedFlow(FlowLogic[str]):
    def __init__(self, tag: str) -> None:
        self.tag = tag

    async def call(self) -> str:
        return self.tag


def test_start_arguments_that_cant_be_checkpointed_are_refused_at_start(alice: MockNode) -> None:
    with pytest.raises(FlowUsageError, match="can't be checkpointed"):
        alice.start_flow(CountedFlow(object()))  # type: ignore[arg-type]


# ---- progress ---------------------------------------------------------------------------------


class Child(FlowLogic[None]):
    FETCH = Step("Fetching")
    progress_tracker = ProgressTracker(FETCH)

    async def call(self) -> None:
        self.progress_tracker.current_step = self.FETCH
        await self.sleep(1)


class Parent(FlowLogic[str | None]):
    PREPARE = Step("Preparing")
    DELEGATE = Step("Delegating")
    progress_tracker = ProgressTracker(PREPARE, DELEGATE)

    async def call(self) -> str | None:
        self.progress_tracker.current_step = self.PREPARE
        await self.sleep(1)
        self.progress_tracker.current_step = self.DELEGATE
        await self.sub_flow(Child())
        return self.progress_tracker.current_label()


def test_a_sub_flows_tracker_becomes_the_child_of_the_parents_step(
    net: MockNetwork, alice: MockNode
) -> None:
    net.auto_advance = False
    handle = alice.start_flow(Parent())
    assert handle.progress is not None
    changes: list[ProgressChange] = []
    handle.progress.subscribe(changes.append)
    net.run_network()
    (summary,) = alice.store.list_flows()
    assert summary.progress_step == "Preparing"
    net.advance_clock(1)
    net.run_network()
    (summary,) = alice.store.list_flows()
    assert summary.progress_step == "Delegating / Fetching"
    net.advance_clock(1)
    assert handle.result() == "Delegating / Done"
    assert [(c.kind, c.step.label) for c in changes] == [
        ("position", "Preparing"),
        ("position", "Delegating"),
        ("structure", "Delegating"),
        ("position", "Fetching"),
        ("position", "Done"),
        ("position", "Done"),
    ]
    assert handle.progress.has_ended


def test_each_flow_instance_gets_its_own_tracker() -> None:
    a, b = Parent(), Parent()
    a.progress_tracker.current_step = Parent.PREPARE
    assert b.progress_tracker.current_step is ProgressTracker.UNSTARTED
    assert a.progress_tracker.tree()[0] == (0, "Preparing", True)


# ---- idempotent sub-flows -----------------------------------------------------------------------


class IdempotentSleeper(IdempotentFlow[int]):
    async def call(self) -> int:
        for _ in range(3):
            await self.sleep(1)
        return 3


class UsesIdempotent(FlowLogic[int]):
    async def call(self) -> int:
        await self.sleep(1)
        return await self.sub_flow(IdempotentSleeper())


def test_an_idempotent_sub_flow_writes_no_checkpoints_while_it_runs(
    net: MockNetwork, alice: MockNode
) -> None:
    net.auto_advance = False
    handle = alice.start_flow(UsesIdempotent())
    suspends: list[int] = []
    for _ in range(5):
        net.run_network()
        suspends.extend(s.suspends or 0 for s in alice.store.list_flows())
        net.advance_clock(1)
    assert handle.result() == 3
    # checkpoints at the first sleep (1) and the forced one entering the sub-flow (2) only
    assert sorted(set(suspends)) == [1, 2]


# ---- hospital -------------------------------------------------------------------------------


class AsksForObservation(FlowLogic[None]):
    async def call(self) -> None:
        await self.sleep(1)
        raise HospitalizeFlowException("look at me")


def test_a_flow_raising_hospitalize_is_kept_for_observation(
    net: MockNetwork, alice: MockNode
) -> None:
    handle = alice.start_flow(AsksForObservation())
    net.run_network()
    assert not handle.done
    (summary,) = alice.store.list_flows()
    assert summary.status is FlowStatus.HOSPITALIZED
    (record,) = alice.hospital.records
    assert record.outcome == "observe"
    assert "look at me" in record.message


WRITES_SEEN: list[int] = []


class WritesThenFails(FlowLogic[None]):
    async def call(self) -> None:
        self.services.db.execute("INSERT INTO notes VALUES (?)", (1,))
        await self.sleep(1)
        self.services.db.execute("INSERT INTO notes VALUES (?)", (2,))
        raise ValueError("after the second write")


def test_writes_queued_after_the_last_checkpoint_are_discarded_when_the_flow_fails(
    alice: MockNode,
) -> None:
    alice.store.apply_app_migrations("notes", ["CREATE TABLE notes (n INTEGER)"])
    with pytest.raises(ValueError, match="second write"):
        alice.start_flow(WritesThenFails()).result()
    assert alice.store.query("SELECT n FROM notes") == [(1,)]

"""Faults while flows start: what a start stores, constructors that raise (at the start, in a
responder, when a restart re-creates the flow), errors before the first checkpoint, and errors
the framework throws into a flow's code.

Every node keeps its database in a file (``MockNetwork(data_dir=tmp_path)``).

Left out:

* Per-start metadata Parley does not keep (an invocation id, the app's name and version, the
  platform version): a start row holds the class, the arguments, who started it and the client id.
* Clearing the start arguments after the first checkpoint: a restored flow is re-created by
  calling its constructor with them, so they are kept while the flow lives.
* Errors while computing a transition: Parley's transitions are pure and total; the nearest, an
  outcome the framework can't record, is thrown into the flow's code where the flow can catch it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from parley import (
    FlowLogic,
    FlowSession,
    FlowUsageError,
    SerializationError,
    UnexpectedFlowEndException,
    initiated_by,
    initiating_flow,
)
from parley.protocol import codec
from parley.protocol.messages import Error, Reject
from parley.protocol.records import MAX_CLIENT_ID, FlowStatus
from parley.testing import MockNetwork, MockNode
from tests.reliability.common import settled, two_nodes

RUNS: list[str] = []
CONSTRUCTIBLE = {"now": True}
#: What ``Priced``'s constructor raises while it can't be constructed.
REFUSAL: dict[str, type[Exception]] = {"error": ValueError}


@pytest.fixture(autouse=True)
def fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    RUNS.clear()
    monkeypatch.setitem(CONSTRUCTIBLE, "now", True)
    monkeypatch.setitem(REFUSAL, "error", ValueError)


def start_rows(node: MockNode) -> list[tuple[object, ...]]:
    return node.store.query("SELECT flow_class, kind, args, started_by, client_id FROM flow_start")


@initiating_flow
class Quote(FlowLogic[int]):
    def __init__(self, peer: str, amount: int, *, currency: str = "USD") -> None:
        self.peer, self.amount, self.currency = peer, amount, currency

    async def call(self) -> int:
        session = self.initiate_flow(self.peer)
        quote = (await session.send_and_receive(int, self.amount)).unwrap_unchecked()
        await self.sleep(1)
        return quote


@initiated_by(Quote)
class Quotes(FlowLogic[None]):
    def __init__(self, session: FlowSession) -> None:
        self.session = session

    async def call(self) -> None:
        n = (await self.session.receive(int)).unwrap_unchecked()
        await self.session.send(n * 2)
        await self.session.receive(int)  # waits for the end: a second checkpoint to look at


def test_a_start_stores_the_class_the_arguments_who_started_it_and_the_client_id(
    tmp_path: Path,
) -> None:
    net = MockNetwork(data_dir=tmp_path, auto_advance=False)
    alice, bob = net.create_node("alice"), net.create_node("bob")
    handle = alice.start_flow(Quote("bob", 5, currency="EUR"), client_id="quote-5")
    net.run_network()
    (row,) = start_rows(alice)
    assert row[0] == f"{__name__}:Quote"
    assert row[1:2] == ("RPC",)
    assert isinstance(row[2], bytes)
    assert codec.decode(row[2]) == (["bob", 5], {"currency": "EUR"})  # kept: replay needs them
    assert row[3:] == ("test", "quote-5")
    (responder,) = start_rows(bob)
    assert (responder[0], responder[1], responder[3], responder[4]) == (
        f"{__name__}:Quotes",
        "INITIATED",
        "alice",
        None,
    )
    net.advance_clock(1)
    assert handle.result() == 10


def test_a_client_id_too_long_is_refused_and_nothing_is_stored(tmp_path: Path) -> None:
    net, alice, _ = two_nodes(tmp_path)
    with pytest.raises(FlowUsageError, match=f"at most {MAX_CLIENT_ID} characters"):
        alice.start_flow(Quote("bob", 5), client_id="x" * (MAX_CLIENT_ID + 1))
    net.run_network()
    assert start_rows(alice) == []
    assert net.published == []


def test_start_arguments_that_cant_be_stored_refuse_the_start(tmp_path: Path) -> None:
    _net, alice, _ = two_nodes(tmp_path)
    with pytest.raises(FlowUsageError, match="can't be checkpointed"):
        alice.start_flow(Quote("bob", object()))  # type: ignore[arg-type]
    assert start_rows(alice) == []
    assert alice.live_flows == []


@initiating_flow
class Order(FlowLogic[int]):
    def __init__(self, peer: str, n: int = 1) -> None:
        self.peer, self.n = peer, n

    async def call(self) -> int:
        session = self.initiate_flow(self.peer)
        return (await session.send_and_receive(int, self.n)).unwrap_unchecked()


@initiated_by(Order)
class PickyResponder(FlowLogic[None]):
    def __init__(self, session: FlowSession) -> None:
        if not CONSTRUCTIBLE["now"]:
            raise RuntimeError("the price list is not loaded")
        self.session = session

    async def call(self) -> None:
        n = (await self.session.receive(int)).unwrap_unchecked()
        if n < 0:
            raise ValueError("negative order")
        await self.session.send(n)


def test_a_responder_whose_constructor_raises_rejects_the_session(tmp_path: Path) -> None:
    net, alice, bob = two_nodes(tmp_path)
    CONSTRUCTIBLE["now"] = False
    with pytest.raises(UnexpectedFlowEndException, match="the price list is not loaded"):
        alice.start_flow(Order("bob")).result()
    assert [type(p.message) for p in net.published if p.sender == "bob"] == [Reject]
    assert start_rows(bob) == []
    assert list(bob.hospital.records) == []
    assert settled(net)


class Priced(FlowLogic[str]):
    def __init__(self, product: str) -> None:
        if not CONSTRUCTIBLE["now"]:
            raise REFUSAL["error"](f"no price for {product}")
        self.product = product

    async def call(self) -> str:
        await self.sleep(1)
        return self.product


class Plain(FlowLogic[str]):
    async def call(self) -> str:
        await self.sleep(1)
        return "plain"


def restart_with_constructor_raising(
    tmp_path: Path, error: type[Exception]
) -> tuple[MockNode, list[str]]:
    net = MockNetwork(data_dir=tmp_path, auto_advance=False)
    alice = net.create_node("alice")
    ids = [alice.start_flow(Priced("lamp")).flow_id, alice.start_flow(Plain()).flow_id]
    net.run_network()
    CONSTRUCTIBLE["now"] = False
    REFUSAL["error"] = error
    net.restart_node(alice)
    net.advance_clock(1)
    net.run_network()
    return alice, ids


def test_a_flow_whose_constructor_refuses_its_arguments_on_restore_is_kept_for_observation(
    tmp_path: Path,
) -> None:
    alice, (priced, plain) = restart_with_constructor_raising(tmp_path, ValueError)
    assert alice.outcomes == {plain: (True, "plain")}
    (kept,) = alice.flows()
    assert (kept.flow_id, kept.status) == (priced, FlowStatus.HOSPITALIZED)
    assert alice.kill_flow(priced) is True  # an operator can end it
    assert alice.store.query("SELECT status FROM flow_header") == [("KILLED",)]


def test_a_flow_whose_constructor_fails_otherwise_on_restore_does_not_stop_the_others(
    tmp_path: Path,
) -> None:
    alice, (priced, plain) = restart_with_constructor_raising(tmp_path, KeyError)
    assert alice.outcomes == {plain: (True, "plain")}
    assert [(f.flow_id, f.status) for f in alice.flows()] == [(priced, FlowStatus.HOSPITALIZED)]


class Validates(FlowLogic[None]):
    def __init__(self, amount: int) -> None:
        self.amount = amount

    async def call(self) -> None:
        if self.amount <= 0:
            raise ValueError(f"{self.amount} is not an amount")
        await self.sleep(1)


def test_a_flow_failing_before_its_first_checkpoint_leaves_no_checkpoint(tmp_path: Path) -> None:
    _net, alice, _ = two_nodes(tmp_path)
    handle = alice.start_flow(Validates(0), client_id="pay-0")
    with pytest.raises(ValueError, match="0 is not an amount"):
        handle.result()
    assert [(r.staff, r.outcome) for r in alice.hospital.records] == [("general", "propagate")]
    assert start_rows(alice) == []
    assert alice.live_flows == []
    assert alice.store.query("SELECT client_id, status FROM flow_result") == [("pay-0", "FAILED")]


def test_a_responder_failing_before_its_first_checkpoint_tells_its_initiator_once(
    tmp_path: Path,
) -> None:
    net, alice, bob = two_nodes(tmp_path)
    with pytest.raises(UnexpectedFlowEndException) as ended:
        alice.start_flow(Order("bob", -1)).result()  # its first receive commits nothing
    assert ended.value.peer == "bob"
    assert [p.recipient for p in net.published if isinstance(p.message, Error)] == ["alice"]
    assert [(r.staff, r.outcome) for r in bob.hospital.records] == [("general", "propagate")]
    assert start_rows(bob) == []
    assert settled(net)


class Opaque:
    """A value the codec can't record."""


def unrecordable() -> Opaque:
    RUNS.append("looked up")
    return Opaque()


class CatchesWhatCantBeRecorded(FlowLogic[str]):
    async def call(self) -> str:
        try:
            await self.execute(unrecordable)
        except SerializationError:
            await self.sleep(1)
            return "fell back"
        return "recorded"


def test_an_outcome_that_cant_be_recorded_is_thrown_into_the_flow_which_can_catch_it(
    tmp_path: Path,
) -> None:
    net = MockNetwork(data_dir=tmp_path, auto_advance=False)
    alice = net.create_node("alice")
    handle = alice.start_flow(CatchesWhatCantBeRecorded())
    net.run_network()
    net.restart_node(alice)  # the caught error was journaled: the same path after a restore
    net.run_network()
    net.advance_clock(1)
    assert handle.result() == "fell back"
    assert RUNS == ["looked up"]
    assert list(alice.hospital.records) == []

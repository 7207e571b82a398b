"""Messaging, sessions, errors and versions: the reference's scenarios 1-20, on MockNetwork."""

from __future__ import annotations

import contextlib
import importlib
from pathlib import Path

import pytest

from parley import (
    FlowException,
    FlowLogic,
    FlowSession,
    FlowUsageError,
    UnexpectedFlowEndException,
    initiating_flow,
)
from parley.engine.inits import MAX_HELD_PER_PEER
from parley.flows.progress import ProgressChange, ProgressTracker, Step
from parley.protocol import codec, ids
from parley.protocol.messages import Confirm, Data, End, Envelope, Error, Init, Reject
from parley.protocol.messages import encode_envelope as encode
from parley.testing import MockNetwork, MockNode


class MyFlowException(FlowException):
    pass


class CarryingException(FlowException):
    """A FlowException with a declared field of its own."""

    counterparty_note: str

    def __init__(self, message: str, counterparty_note: str) -> None:
        super().__init__(message)
        self.counterparty_note = counterparty_note


class NotSerializable:
    pass


def kinds(node_a: MockNode, node_b: MockNode, net: MockNetwork) -> list[str]:
    """The delivered messages between two nodes, as ``"a->b Kind"`` strings."""
    return [
        f"{t.sender}->{t.recipient} {type(t.message).__name__}"
        for t in net.transfers_between(node_a.name, node_b.name)
    ]


# ---- 1. both sides send first ---------------------------------------------------------------


@initiating_flow
class PingPongFlow(FlowLogic[tuple[int, int]]):
    def __init__(self, peer: str | FlowSession, payload: int) -> None:
        self.peer, self.payload = peer, payload

    async def call(self) -> tuple[int, int]:
        session = self.peer if isinstance(self.peer, FlowSession) else self.initiate_flow(self.peer)
        first = (await session.send_and_receive(int, self.payload)).unwrap(int)
        second = (await session.send_and_receive(int, self.payload + 1)).unwrap(int)
        return first, second


class PingPongResponder(PingPongFlow):
    def __init__(self, session: FlowSession) -> None:
        super().__init__(session, 20)


def test_both_sides_sending_first_gives_corda_wire_order(
    net: MockNetwork, alice: MockNode, bob: MockNode
) -> None:
    bob.registry.register(PingPongFlow, PingPongResponder)
    handle = alice.start_flow(PingPongFlow("bob", 10))
    assert handle.result() == (20, 21)
    wire = [(t.sender, t.recipient, t.message) for t in net.transfers]
    described = [
        (s, r, type(m).__name__, codec.decode(m.payload) if isinstance(m, Data) else None)
        for s, r, m in wire
    ]
    assert described == [
        ("alice", "bob", "Init", None),
        ("bob", "alice", "Confirm", None),
        ("bob", "alice", "Data", 20),
        ("alice", "bob", "Data", 11),
        ("bob", "alice", "Data", 21),
        ("alice", "bob", "End", None),
        ("bob", "alice", "End", None),
    ]
    init = wire[0][2]
    assert isinstance(init, Init)
    assert init.first_payload is not None
    assert codec.decode(init.first_payload) == 10


# ---- 2, 3. the other side ends early ----------------------------------------------------------


@initiating_flow
class ReceiveFlow(FlowLogic[int]):
    def __init__(self, peer: str) -> None:
        self.peer = peer

    async def call(self) -> int:
        session = self.initiate_flow(self.peer)
        return (await session.receive(int)).unwrap(int)


class NoOpFlow(FlowLogic[None]):
    def __init__(self, session: FlowSession) -> None:
        self.session = session

    async def call(self) -> None:
        return None


def test_receiving_from_a_responder_that_ended_raises_unexpected_flow_end(
    alice: MockNode, bob: MockNode
) -> None:
    bob.registry.register(ReceiveFlow, NoOpFlow)
    handle = alice.start_flow(ReceiveFlow("bob"))
    with pytest.raises(UnexpectedFlowEndException, match="Mismatched send and receive"):
        handle.result()


@initiating_flow
class WaitForEndThenSendAndReceive(FlowLogic[int]):
    def __init__(self, peer: str) -> None:
        self.peer = peer

    async def call(self) -> int:
        session = self.initiate_flow(self.peer)
        await session.send(1)
        await self.sleep(60)  # the peer's End arrives meanwhile
        return (await session.send_and_receive(int, 2)).unwrap(int)


def test_send_and_receive_after_the_peer_ended_raises_unexpected_flow_end(
    net: MockNetwork, alice: MockNode, bob: MockNode
) -> None:
    bob.registry.register(WaitForEndThenSendAndReceive, NoOpFlow)
    handle = alice.start_flow(WaitForEndThenSendAndReceive("bob"))
    with pytest.raises(UnexpectedFlowEndException, match="ended session"):
        handle.result()
    assert "End" in [type(t.message).__name__ for t in net.transfers if t.recipient == "alice"]


# ---- 4, 5, 6, 7. errors crossing the wire -----------------------------------------------------


class Thrower(FlowLogic[None]):
    """Responder that raises whatever the test configured on the class."""

    error: BaseException = MyFlowException("Nothing useful")
    STEP = Step("About to throw")
    progress_tracker = ProgressTracker(STEP)

    def __init__(self, session: FlowSession) -> None:
        self.session = session

    async def call(self) -> None:
        self.progress_tracker.subscribe(PROGRESS_SEEN.append)
        self.progress_tracker.current_step = self.STEP
        await self.session.receive(int)
        raise type(self).error


PROGRESS_SEEN: list[ProgressChange] = []


@initiating_flow
class SendAndReceiveFlow(FlowLogic[int]):
    def __init__(self, peer: str, payload: object = 1) -> None:
        self.peer, self.payload = peer, payload

    async def call(self) -> int:
        return (await self.initiate_flow(self.peer).send_and_receive(int, self.payload)).unwrap(int)


def _thrower(error: BaseException) -> type[Thrower]:
    return type("ConfiguredThrower", (Thrower,), {"error": error})


def test_flow_exception_reaches_the_initiator_with_type_and_message(
    net: MockNetwork, alice: MockNode, bob: MockNode
) -> None:
    bob.registry.register(SendAndReceiveFlow, _thrower(MyFlowException("Nothing useful")))
    PROGRESS_SEEN.clear()
    handle = alice.start_flow(SendAndReceiveFlow("bob"))
    with pytest.raises(MyFlowException) as raised:
        handle.result()
    assert str(raised.value) == "Nothing useful"
    assert raised.value.peer == "bob"
    assert any("Received counter-flow exception from peer bob" in n for n in raised.value.__notes__)
    assert kinds(alice, bob, net) == [
        "alice->bob Init",
        "bob->alice Confirm",
        "bob->alice Error",
    ]
    error = net.transfers[-1].message
    assert isinstance(error, Error)
    assert error.exception is not None
    assert bob.store.list_flows() == []
    assert [c.kind for c in PROGRESS_SEEN] == ["position", "error"]


def test_any_other_exception_reaches_the_initiator_without_its_message(
    net: MockNetwork, alice: MockNode, bob: MockNode
) -> None:
    bob.registry.register(SendAndReceiveFlow, _thrower(ValueError("evil bug!")))
    with pytest.raises(UnexpectedFlowEndException) as raised:
        alice.start_flow(SendAndReceiveFlow("bob")).result()
    assert "evil bug!" not in str(raised.value)
    assert any(
        "unexpected counter-flow exception from peer bob" in n for n in raised.value.__notes__
    )
    error = net.transfers[-1].message
    assert isinstance(error, Error)
    assert error.exception is None


def test_flow_exception_keeps_its_declared_fields_and_gets_the_peer(
    alice: MockNode, bob: MockNode
) -> None:
    bob.registry.register(SendAndReceiveFlow, _thrower(CarryingException("no", "from bob's code")))
    with pytest.raises(CarryingException) as raised:
        alice.start_flow(SendAndReceiveFlow("bob")).result()
    assert raised.value.counterparty_note == "from bob's code"
    assert raised.value.peer == "bob"


class SendsNonSerializable(FlowLogic[None]):
    def __init__(self, session: FlowSession) -> None:
        self.session = session

    async def call(self) -> None:
        await self.session.receive(int)
        await self.session.send(NotSerializable())


def test_a_responder_sending_an_unserializable_payload_ends_the_initiator(
    alice: MockNode, bob: MockNode
) -> None:
    bob.registry.register(SendAndReceiveFlow, SendsNonSerializable)
    with pytest.raises(UnexpectedFlowEndException):
        alice.start_flow(SendAndReceiveFlow("bob")).result()


class HoldingException(FlowException):
    thing: object

    def __init__(self, message: str, thing: object) -> None:
        super().__init__(message)
        self.thing = thing


def test_a_flow_exception_holding_an_unserializable_value_still_arrives_as_flow_exception(
    alice: MockNode, bob: MockNode
) -> None:
    bob.registry.register(SendAndReceiveFlow, _thrower(HoldingException("held", NotSerializable())))
    with pytest.raises(FlowException, match="held"):
        alice.start_flow(SendAndReceiveFlow("bob")).result()


# ---- 8. a caught FlowException, then a new session ------------------------------------------


@initiating_flow
class FailingSubFlow(FlowLogic[str]):
    def __init__(self, peer: str) -> None:
        self.peer = peer

    async def call(self) -> str:
        return (await self.initiate_flow(self.peer).send_and_receive(str, "go")).unwrap(str)


class FailingResponder(FlowLogic[None]):
    def __init__(self, session: FlowSession) -> None:
        self.session = session

    async def call(self) -> None:
        await self.session.receive(str)
        raise MyFlowException("first sub-flow fails")


@initiating_flow
class HelloSubFlow(FlowLogic[str]):
    def __init__(self, peer: str) -> None:
        self.peer = peer

    async def call(self) -> str:
        return (await self.initiate_flow(self.peer).receive(str)).unwrap(str)


class HelloResponder(FlowLogic[None]):
    def __init__(self, session: FlowSession) -> None:
        self.session = session

    async def call(self) -> None:
        await self.session.send("Hello")


class CatchAndRetry(FlowLogic[str]):
    def __init__(self, peer: str) -> None:
        self.peer = peer

    async def call(self) -> str:
        with contextlib.suppress(MyFlowException):
            await self.sub_flow(FailingSubFlow(self.peer))
        return await self.sub_flow(HelloSubFlow(self.peer))


def test_a_flow_that_catches_a_peer_error_can_open_a_new_session(
    alice: MockNode, bob: MockNode
) -> None:
    bob.registry.register(FailingSubFlow, FailingResponder)
    bob.registry.register(HelloSubFlow, HelloResponder)
    assert alice.start_flow(CatchAndRetry("bob")).result() == "Hello"


# ---- 9. versions ----------------------------------------------------------------------------


@initiating_flow(version=2)
class VersionedInitiator(FlowLogic[int]):
    def __init__(self, peer: str) -> None:
        self.peer = peer

    async def call(self) -> int:
        info = await self.initiate_flow(self.peer).get_counterparty_flow_info()
        return info.flow_version


class VersionReporter(FlowLogic[None]):
    def __init__(self, session: FlowSession) -> None:
        self.session = session

    async def call(self) -> None:
        info = await self.session.get_counterparty_flow_info()
        await self.session.send(info.flow_version)


def test_each_side_sees_the_flow_version_of_the_other(
    net: MockNetwork, alice: MockNode, bob: MockNode
) -> None:
    bob.registry.register(VersionedInitiator, VersionReporter, version=1)
    assert alice.start_flow(VersionedInitiator("bob")).result() == 1
    init, confirm = net.transfers[0].message, net.transfers[1].message
    assert isinstance(init, Init)
    assert init.flow_version == 2
    assert isinstance(confirm, Confirm)
    assert confirm.flow_version == 1


@initiating_flow(version=2)
class AsksResponderVersion(FlowLogic[tuple[int, int]]):
    def __init__(self, peer: str) -> None:
        self.peer = peer

    async def call(self) -> tuple[int, int]:
        session = self.initiate_flow(self.peer)
        theirs = (await session.get_counterparty_flow_info()).flow_version
        seen = (await session.receive(int)).unwrap(int)
        return theirs, seen


def test_an_upgraded_responder_reports_its_version(alice: MockNode, bob: MockNode) -> None:
    bob.registry.register(AsksResponderVersion, VersionReporter, version=3)
    assert alice.start_flow(AsksResponderVersion("bob")).result() == (3, 2)


# ---- 10, 11, 12. what a node refuses --------------------------------------------------------


def test_an_initiator_without_a_responder_on_the_peer_gets_not_registered(
    alice: MockNode, bob: MockNode
) -> None:
    bob.registry.unregister(SendAndReceiveFlow)
    with pytest.raises(UnexpectedFlowEndException, match=r"SendAndReceiveFlow is not registered$"):
        alice.start_flow(SendAndReceiveFlow("bob")).result()


def _init_from(net: MockNetwork, sender: str, recipient: str, flow_class: str) -> Init:
    init = Init("x" * 32 + ".0", flow_class, 1, "tests", None)
    env = Envelope(ids.message_id(init.initiator_session, 0), sender, recipient, init)
    net.inject(recipient, encode(env))
    return init


def test_an_unknown_flow_class_is_held_for_observation_until_dropped(
    net: MockNetwork, bob: MockNode
) -> None:
    _init_from(net, "mallory", "bob", "not.a.real:Class")
    net.run_network()
    assert [type(t.message).__name__ for t in net.transfers] == ["Init"]
    assert len(bob.runtime.held_inits) == 1
    assert not bob.in_flight  # stored and acked: held inits can't fill the node's consumer
    assert len(bob.store.held_inits()) == 1
    bob = net.restart_node(bob)  # still not deployed: held again, from the store
    net.run_network()
    (held_id,) = bob.runtime.held_inits
    assert bob.kill_flow(held_id) is True
    net.run_network()
    reject = net.published[-1].message
    assert isinstance(reject, Reject)
    assert reject.reason == "Don't know not.a.real:Class"
    assert not bob.in_flight
    assert bob.store.held_inits() == []


def test_a_held_init_is_admitted_when_the_node_restarts_with_the_app(
    net: MockNetwork, bob: MockNode, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = f"late_app_{tmp_path.name.replace('-', '_')}"
    _init_from(net, "mallory", "bob", f"{module}:Late")
    net.run_network()
    assert len(bob.runtime.held_inits) == 1
    # the app is deployed: its module can be imported now, and the node restarts
    (tmp_path / f"{module}.py").write_text(LATE_APP)
    monkeypatch.syspath_prepend(str(tmp_path))
    deployed = importlib.import_module(module)
    bob.registry.register(deployed.Late, deployed.LateResponder)
    bob = net.restart_node(bob)
    net.run_network()
    confirms = [t for t in net.published if isinstance(t.message, Confirm)]
    assert [t.recipient for t in confirms] == ["mallory"]
    assert bob.runtime.held_inits == {}


LATE_APP = """
from parley import FlowLogic, FlowSession, initiated_by, initiating_flow


@initiating_flow
class Late(FlowLogic[None]):
    async def call(self) -> None: ...


@initiated_by(Late)
class LateResponder(FlowLogic[None]):
    def __init__(self, session: FlowSession) -> None:
        self.session = session

    async def call(self) -> None:
        await self.session.send("hello")
        await self.sleep(60)
"""


def test_a_peer_with_too_many_inits_held_gets_the_next_rejected(
    net: MockNetwork, bob: MockNode
) -> None:
    for n in range(MAX_HELD_PER_PEER + 1):
        init = Init(f"{n:032d}.0", "not.a.real:Class", 1, "tests", None)
        env = Envelope(ids.message_id(init.initiator_session, 0), "mallory", "bob", init)
        net.inject("bob", encode(env))
    net.run_network()
    assert len(bob.runtime.held_inits) == MAX_HELD_PER_PEER
    rejects = [t for t in net.published if isinstance(t.message, Reject)]
    assert len(rejects) == 1
    assert not bob.in_flight


def test_an_init_naming_a_class_that_is_not_a_flow_is_rejected_at_once(
    net: MockNetwork, bob: MockNode
) -> None:
    _init_from(net, "mallory", "bob", "builtins:str")
    net.run_network()
    reject = net.published[-1].message
    assert isinstance(reject, Reject)
    assert reject.reason == "builtins:str is not a flow"
    assert not bob.in_flight


# ---- 13. initiating flows and subclasses ----------------------------------------------------


class SubclassedInitiator(SendAndReceiveFlow):
    pass


class Echo(FlowLogic[None]):
    def __init__(self, session: FlowSession) -> None:
        self.session = session

    async def call(self) -> None:
        n = (await self.session.receive(int)).unwrap(int)
        await self.session.send(n)


def test_a_subclass_of_an_initiating_flow_uses_the_parents_responder(
    net: MockNetwork, alice: MockNode, bob: MockNode
) -> None:
    bob.registry.register(SendAndReceiveFlow, Echo)
    assert alice.start_flow(SubclassedInitiator("bob", 7)).result() == 7
    init = net.transfers[0].message
    assert isinstance(init, Init)
    assert init.flow_class.endswith(":SendAndReceiveFlow")


def test_marking_a_subclass_of_an_initiating_flow_again_is_refused() -> None:
    with pytest.raises(FlowUsageError, match="initiating_flow"):

        @initiating_flow
        class Twice(SendAndReceiveFlow):
            pass


# ---- 14. inlined sub-flows on the responder side ----------------------------------------------


class SendHello(FlowLogic[None]):
    def __init__(self, session: FlowSession) -> None:
        self.session = session

    async def call(self) -> None:
        await self.session.send("Hello")


class DoubleInlined(FlowLogic[None]):
    def __init__(self, session: FlowSession) -> None:
        self.session = session

    async def call(self) -> None:
        await self.sub_flow(SendHello(self.session))
        await self.sub_flow(Wrapper(self.session))


class Wrapper(FlowLogic[None]):
    def __init__(self, session: FlowSession) -> None:
        self.session = session

    async def call(self) -> None:
        await self.sub_flow(SendHello(self.session))


@initiating_flow
class ReceiveTwo(FlowLogic[str]):
    def __init__(self, peer: str) -> None:
        self.peer = peer

    async def call(self) -> str:
        session = self.initiate_flow(self.peer)
        first = (await session.receive(str)).unwrap(str)
        return first + (await session.receive(str)).unwrap(str)


def test_single_and_nested_inlined_sub_flows_on_the_responder(
    alice: MockNode, bob: MockNode
) -> None:
    bob.registry.register(ReceiveTwo, DoubleInlined)
    assert alice.start_flow(ReceiveTwo("bob")).result() == "HelloHello"


# ---- 15. destinations -----------------------------------------------------------------------


def test_initiating_to_an_unresolvable_destination_is_a_usage_error(alice: MockNode) -> None:
    with pytest.raises(FlowUsageError, match="Could not resolve destination"):
        alice.start_flow(ReceiveFlow("no such.node")).result()


def test_initiating_to_a_destination_that_is_not_a_string_is_a_usage_error(
    alice: MockNode,
) -> None:
    with pytest.raises(FlowUsageError, match="Could not resolve destination"):
        alice.start_flow(ReceiveFlow(["bob"])).result()  # type: ignore[arg-type]


def test_a_flow_can_open_a_session_to_its_own_node(alice: MockNode) -> None:
    alice.registry.register(SendAndReceiveFlow, Echo)
    assert alice.start_flow(SendAndReceiveFlow("alice", 5)).result() == 5


# ---- 16, 17. several parties -----------------------------------------------------------------


@initiating_flow
class SendToMany(FlowLogic[None]):
    def __init__(self, peers: list[str]) -> None:
        self.peers = peers

    async def call(self) -> None:
        for peer in self.peers:
            await self.initiate_flow(peer).send("payload")


class NeverEnds(FlowLogic[None]):
    def __init__(self, session: FlowSession) -> None:
        self.session = session

    async def call(self) -> None:
        await self.session.receive(str)
        await self.sleep(10**9)


def test_sending_to_two_parties_whose_flows_never_finish(
    net: MockNetwork, alice: MockNode, bob: MockNode, charlie: MockNode
) -> None:
    net.auto_advance = False
    for node in (bob, charlie):
        node.registry.register(SendToMany, NeverEnds)
    handle = alice.start_flow(SendToMany(["bob", "charlie"]))
    net.run_network()
    assert handle.done
    assert handle.result() is None
    for peer in (bob, charlie):
        assert kinds(alice, peer, net) == [
            f"alice->{peer.name} Init",
            f"{peer.name}->alice Confirm",
            f"alice->{peer.name} End",
        ]
        assert len(peer.live_flows) == 1


@initiating_flow
class ReceiveFromMany(FlowLogic[list[str]]):
    def __init__(self, peers: list[str]) -> None:
        self.peers = peers

    async def call(self) -> list[str]:
        sessions = [self.initiate_flow(p) for p in self.peers]
        return [(await s.receive(str)).unwrap(str) for s in sessions]


class SendName(FlowLogic[None]):
    def __init__(self, session: FlowSession) -> None:
        self.session = session

    async def call(self) -> None:
        await self.session.send(self.our_identity)


def test_receiving_from_two_parties_in_order(
    net: MockNetwork, alice: MockNode, bob: MockNode, charlie: MockNode
) -> None:
    for node in (bob, charlie):
        node.registry.register(ReceiveFromMany, SendName)
    assert alice.start_flow(ReceiveFromMany(["bob", "charlie"])).result() == ["bob", "charlie"]
    assert kinds(alice, bob, net) == [
        "alice->bob Init",
        "bob->alice Confirm",
        "bob->alice Data",
        "bob->alice End",
    ]
    # alice finishes as soon as charlie's data arrives, before charlie's End does
    assert kinds(alice, charlie, net) == [
        "alice->charlie Init",
        "charlie->alice Confirm",
        "charlie->alice Data",
        "alice->charlie End",
        "charlie->alice End",
    ]


# ---- 18, 19. errors reach direct counterparties only ----------------------------------------


@initiating_flow
class RelayFlow(FlowLogic[str]):
    """alice -> bob; bob's responder asks charlie, whose error bob doesn't catch."""

    def __init__(self, peer: str) -> None:
        self.peer = peer

    async def call(self) -> str:
        return (await self.initiate_flow(self.peer).send_and_receive(str, "ask")).unwrap(str)


@initiating_flow
class RelayOnward(FlowLogic[None]):
    def __init__(self, session: FlowSession) -> None:
        self.session = session

    async def call(self) -> None:
        await self.session.receive(str)
        answer = await self.initiate_flow("charlie").send_and_receive(str, "ask")
        await self.session.send(answer.unwrap(str))


class ThrowsMine(FlowLogic[None]):
    def __init__(self, session: FlowSession) -> None:
        self.session = session

    async def call(self) -> None:
        await self.session.receive(str)
        raise MyFlowException("charlie's reason")


def test_a_flow_exception_reaches_only_direct_counterparties(
    alice: MockNode, bob: MockNode, charlie: MockNode
) -> None:
    bob.registry.register(RelayFlow, RelayOnward)
    charlie.registry.register(RelayOnward, ThrowsMine)
    with pytest.raises(UnexpectedFlowEndException) as raised:
        alice.start_flow(RelayFlow("bob")).result()
    assert "charlie's reason" not in str(raised.value)
    assert not isinstance(raised.value, MyFlowException)


@initiating_flow
class TalksToTwo(FlowLogic[None]):
    def __init__(self) -> None:
        pass

    async def call(self) -> None:
        waiting = self.initiate_flow("bob")
        await waiting.send("hold on")
        await self.initiate_flow("charlie").send_and_receive(str, "ask")


class WaitsForMore(FlowLogic[None]):
    def __init__(self, session: FlowSession) -> None:
        self.session = session

    async def call(self) -> None:
        await self.session.receive(str)
        await self.session.receive(str)


def test_a_failing_peer_fails_the_initiator_which_tells_its_other_peer(
    net: MockNetwork, alice: MockNode, bob: MockNode, charlie: MockNode
) -> None:
    bob.registry.register(TalksToTwo, WaitsForMore)
    charlie.registry.register(TalksToTwo, ThrowsMine)
    handle = alice.start_flow(TalksToTwo())
    with pytest.raises(MyFlowException, match="charlie's reason"):
        handle.result()
    (bob_outcome,) = bob.outcomes.values()
    assert bob_outcome[0] is False
    assert isinstance(bob_outcome[1], UnexpectedFlowEndException)
    to_bob = [t.message for t in net.transfers if t.recipient == "bob"]
    assert isinstance(to_bob[-1], Error)
    assert to_bob[-1].exception is None
    assert not [
        t for t in net.transfers if t.recipient == "charlie" and isinstance(t.message, Error)
    ]


# ---- 20. send_all / receive_all ---------------------------------------------------------------


@initiating_flow
class AllAtOnce(FlowLogic[list[int]]):
    def __init__(self, peers: list[str], twice: bool = False) -> None:
        self.peers, self.twice = peers, twice

    async def call(self) -> list[int]:
        sessions = [self.initiate_flow(p) for p in self.peers]
        if self.twice:
            sessions.append(sessions[0])
        await self.send_all(3, sessions)
        return [r.unwrap(int) for r in await self.receive_all(int, sessions)]


class Doubler(FlowLogic[None]):
    def __init__(self, session: FlowSession) -> None:
        self.session = session

    async def call(self) -> None:
        n = (await self.session.receive(int)).unwrap(int)
        await self.session.send(n * 2)


def test_send_all_and_receive_all_with_two_parties_and_ourselves(
    alice: MockNode, bob: MockNode, charlie: MockNode
) -> None:
    for node in (alice, bob, charlie):
        node.registry.register(AllAtOnce, Doubler)
    assert alice.start_flow(AllAtOnce(["bob", "charlie", "alice"])).result() == [6, 6, 6]


def test_receive_all_raises_the_flow_exception_of_a_peer_that_fails(
    alice: MockNode, bob: MockNode, charlie: MockNode
) -> None:
    bob.registry.register(AllAtOnce, Doubler)
    charlie.registry.register(AllAtOnce, _thrower(MyFlowException("graceful failure")))
    with pytest.raises(MyFlowException, match="graceful failure"):
        alice.start_flow(AllAtOnce(["bob", "charlie"])).result()


def test_receive_all_raises_unexpected_end_when_a_peer_crashes(
    alice: MockNode, bob: MockNode, charlie: MockNode
) -> None:
    bob.registry.register(AllAtOnce, Doubler)
    charlie.registry.register(AllAtOnce, _thrower(RuntimeError("crash")))
    with pytest.raises(UnexpectedFlowEndException):
        alice.start_flow(AllAtOnce(["bob", "charlie"])).result()


@initiating_flow
class MixedSendAll(FlowLogic[list[int]]):
    async def call(self) -> list[int]:
        bob, charlie = self.initiate_flow("bob"), self.initiate_flow("charlie")
        first = (await bob.send_and_receive(int, 1)).unwrap(int)
        await self.send_all(first, [bob, charlie])  # bob initiated, charlie not yet
        return [r.unwrap(int) for r in await self.receive_all(int, [bob, charlie])]


class TwoRounds(FlowLogic[None]):
    def __init__(self, session: FlowSession) -> None:
        self.session = session

    async def call(self) -> None:
        n = (await self.session.receive(int)).unwrap(int)
        await self.session.send(n + 1)
        n = (await self.session.receive(int)).unwrap(int)
        await self.session.send(n + 1)


def test_send_all_mixing_new_and_established_sessions(
    alice: MockNode, bob: MockNode, charlie: MockNode
) -> None:
    bob.registry.register(MixedSendAll, TwoRounds)
    charlie.registry.register(MixedSendAll, Doubler)
    assert alice.start_flow(MixedSendAll()).result() == [3, 4]


def test_the_same_session_twice_in_send_all_is_refused(alice: MockNode, bob: MockNode) -> None:
    bob.registry.register(AllAtOnce, Doubler)
    with pytest.raises(FlowUsageError, match=r"A flow session can only appear once as argument\."):
        alice.start_flow(AllAtOnce(["bob"], twice=True)).result()


def test_end_messages_close_sessions_in_both_directions(
    net: MockNetwork, alice: MockNode, bob: MockNode
) -> None:
    bob.registry.register(SendAndReceiveFlow, Echo)
    alice.start_flow(SendAndReceiveFlow("bob", 1)).result()
    ends = [t for t in net.transfers if isinstance(t.message, End)]
    assert {(t.sender, t.recipient) for t in ends} == {("alice", "bob"), ("bob", "alice")}

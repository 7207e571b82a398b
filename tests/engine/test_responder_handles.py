"""A responder (a flow a peer's session-init started) can be followed: asked for its handle, it
gets one, whose tracker shows its steps and whose future ends with it (what RPC ``track`` needs)."""

from __future__ import annotations

from parley import (
    FlowLogic,
    FlowSession,
    ProgressChange,
    ProgressTracker,
    Step,
    initiated_by,
    initiating_flow,
)
from parley.testing import MockFlowHandle, MockNetwork, MockNode


@initiating_flow
class Ask(FlowLogic[int]):
    def __init__(self, peer: str) -> None:
        self.peer = peer

    async def call(self) -> int:
        return (await self.initiate_flow(self.peer).send_and_receive(int, 1)).unwrap(int)


@initiated_by(Ask)
class Answer(FlowLogic[None]):
    RECEIVING = Step("Receiving the question")
    APPROVING = Step("Awaiting approval")
    ANSWERING = Step("Answering")
    progress_tracker = ProgressTracker(RECEIVING, APPROVING, ANSWERING)

    def __init__(self, session: FlowSession) -> None:
        self.session = session

    async def call(self) -> None:
        self.progress_tracker.current_step = self.RECEIVING
        n = (await self.session.receive(int)).unwrap(int)
        self.progress_tracker.current_step = self.APPROVING
        await self.wait_for_signal("go", bool)
        self.progress_tracker.current_step = self.ANSWERING
        await self.session.send(n + 1)


def _waiting_responder() -> tuple[MockNetwork, MockNode, str, MockFlowHandle[int]]:
    net = MockNetwork()
    alice, bob = net.create_node("alice"), net.create_node("bob")
    asked = alice.start_flow(Ask("bob"))
    net.run_network()
    (responder,) = bob.live_flows
    return net, bob, responder, asked


def _follow_to_the_end(net: MockNetwork, bob: MockNode, responder: str) -> list[str]:
    handle = bob.runtime.handle_of(responder)
    assert handle is not None
    assert handle.progress is not None
    assert handle.progress.current_label() == "Awaiting approval"
    assert bob.runtime.handle_of(responder) is handle
    tracker, labels = handle.progress, list[str]()

    def changed(change: ProgressChange) -> None:
        labels.append(tracker.current_label() or "")

    tracker.subscribe(changed)
    bob.signal(responder, "go", True)
    net.run_network()
    assert handle.done
    assert handle.result() is None
    return labels


def test_a_running_responder_is_given_a_handle_that_follows_it_to_its_end() -> None:
    net, bob, responder, asked = _waiting_responder()
    assert _follow_to_the_end(net, bob, responder)[-2:] == ["Answering", "Done"]
    assert asked.result() == 2
    # Finished without a client id: nothing is kept, as for a flow started here.
    assert bob.runtime.handle_of(responder) is None
    assert len(bob.runtime.flows) == 0


def test_a_passivated_responder_is_restored_to_be_followed() -> None:
    net, bob, responder, asked = _waiting_responder()
    bob.passivate(responder)
    net.run_network()
    assert bob.live_flows == []
    assert _follow_to_the_end(net, bob, responder)[-2:] == ["Answering", "Done"]
    assert asked.result() == 2


def test_a_responder_not_asked_for_gets_no_handle() -> None:
    _, bob, responder, _ = _waiting_responder()
    record = bob.runtime.flows.get(responder)
    assert record is not None
    assert record.handle is None
    assert bob.runtime.handle_count() == 0

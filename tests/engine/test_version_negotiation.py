"""Version negotiation: a responder serves a range of initiator versions and rejects the rest.

The rule (``parley.flows.registry``, "Version negotiation"): a responder serves the initiator
versions from its ``min_version`` up to the newest this node knows (the larger of the version it
reports and the version of the initiating class loaded here). An init outside the range gets a
Reject naming both; an init inside it is confirmed with the responder's own version.
"""

from __future__ import annotations

import pytest

from parley import (
    FlowLogic,
    FlowSession,
    FlowUsageError,
    UnexpectedFlowEndException,
    initiating_flow,
)
from parley.apps.pingpong import Pong
from parley.flows.registry import FlowRegistry, Responder
from parley.protocol import codec, ids
from parley.protocol.messages import Confirm, Envelope, Init, Reject, encode_envelope
from parley.testing import MockNetwork, MockNode

PING = "parley.apps.pingpong:Ping"


def init_from_mallory(net: MockNetwork, version: int, session: str = "m" * 32 + ".0") -> Init:
    """A hand-made Ping init at ``version`` from a node that runs no Parley code."""
    init = Init(session, PING, version, "parley.apps.pingpong", codec.encode((1, 41)))
    envelope = Envelope(ids.message_id(session, 0), "mallory", "bob", init)
    net.inject("bob", encode_envelope(envelope))
    net.run_network()
    return init


def answers_to(net: MockNetwork, recipient: str) -> list[Confirm | Reject]:
    return [
        t.message
        for t in net.published
        if t.recipient == recipient and isinstance(t.message, Confirm | Reject)
    ]


def test_an_init_of_a_version_newer_than_the_responder_knows_is_rejected_with_the_reason(
    net: MockNetwork, bob: MockNode
) -> None:
    init = init_from_mallory(net, 99)
    (answer,) = answers_to(net, "mallory")
    assert answer == Reject(
        init.initiator_session,
        ids.reject_id(init.initiator_session),
        f"{PING} version 99 is not supported here (this node serves versions 1 to 1)",
    )
    assert bob.live_flows == []
    assert bob.in_flight == {}, "the rejected init is acked"


@pytest.mark.parametrize("version", [0, -1])
def test_an_init_with_a_version_below_one_is_rejected(
    net: MockNetwork, bob: MockNode, version: int
) -> None:
    init_from_mallory(net, version)
    (answer,) = answers_to(net, "mallory")
    assert isinstance(answer, Reject)
    assert f"version {version} is not supported" in answer.reason


def test_an_init_of_a_served_version_is_confirmed_with_the_responders_own_version(
    net: MockNetwork, bob: MockNode
) -> None:
    init = init_from_mallory(net, 1)
    (answer,) = answers_to(net, "mallory")
    assert isinstance(answer, Confirm)
    assert (answer.session, answer.flow_version) == (init.initiator_session, 1)


@initiating_flow(version=3)
class Current(FlowLogic[int]):
    """An initiating flow at version 3 whose responder reports the version it sees."""

    def __init__(self, peer: str) -> None:
        self.peer = peer

    async def call(self) -> int:
        return (await self.initiate_flow(self.peer).receive(int)).unwrap_unchecked()


class ReportsVersion(FlowLogic[None]):
    def __init__(self, session: FlowSession) -> None:
        self.session = session

    async def call(self) -> None:
        info = await self.session.get_counterparty_flow_info()
        await self.session.send(info.flow_version)


def test_a_responder_that_dropped_old_versions_rejects_them_and_the_initiator_sees_why(
    alice: MockNode, bob: MockNode
) -> None:
    bob.registry.register(Current, ReportsVersion, version=5, min_version=4)
    with pytest.raises(UnexpectedFlowEndException, match=r"version 3 is not supported here"):
        alice.start_flow(Current("bob")).result()


def test_a_responder_serves_every_version_up_to_the_initiating_class_loaded_here(
    alice: MockNode, bob: MockNode
) -> None:
    bob.registry.register(Current, ReportsVersion, version=1)
    assert alice.start_flow(Current("bob")).result() == 3


def test_the_registry_records_the_range_each_responder_serves() -> None:
    registry = FlowRegistry()
    registry.register(Current, ReportsVersion, version=2, min_version=2)
    assert registry.responders()[Current.__module__ + ":Current"] == Responder(
        ReportsVersion, 2, 2, 3
    )
    assert FlowRegistry.default().responder_for(PING) == Responder(Pong, 1)


@pytest.mark.parametrize("min_version", [0, 4, True])
def test_a_min_version_outside_the_versions_known_here_is_refused(min_version: int) -> None:
    with pytest.raises(FlowUsageError, match="min_version must be between 1 and 3"):
        FlowRegistry().register(Current, ReportsVersion, min_version=min_version)


def test_an_unversioned_responder_reports_refusals_in_one_sentence() -> None:
    responder = Responder(Pong, 2)
    assert responder.refusal(PING, 2) is None
    assert responder.refusal(PING, 1) is None
    assert responder.refusal(PING, 3) == (
        f"{PING} version 3 is not supported here (this node serves versions 1 to 2)"
    )

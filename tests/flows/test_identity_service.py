"""Flows sign with their node's key and check other nodes' signatures (``services.identity``);
every answer is journaled, so a replay sees the same one."""

from __future__ import annotations

from parley import FlowLogic, FlowSession, FlowUsageError, initiated_by, initiating_flow
from parley.testing import MockNetwork, MockNode

DOCUMENT = b"pay bob 100 EUR"


@initiating_flow
class AsksForASignature(FlowLogic[tuple[bool, bool, bool]]):
    def __init__(self, signer: str) -> None:
        self.signer = signer

    async def call(self) -> tuple[bool, bool, bool]:
        session = self.initiate_flow(self.signer)
        signature = (await session.send_and_receive(bytes, DOCUMENT)).unwrap_unchecked()
        identity = self.services.identity
        genuine = identity.verify(self.signer, DOCUMENT, signature)
        tampered = identity.verify(self.signer, DOCUMENT + b"0", signature)
        wrong_signer = identity.verify(self.our_identity, DOCUMENT, signature)
        return genuine, tampered, wrong_signer


@initiated_by(AsksForASignature)
class Signs(FlowLogic[None]):
    def __init__(self, session: FlowSession) -> None:
        self.session = session

    async def call(self) -> None:
        document = (await self.session.receive(bytes)).unwrap_unchecked()
        await self.session.send(self.services.identity.sign(document))


def test_a_signature_verifies_only_for_its_signer_and_its_data(
    alice: MockNode, bob: MockNode
) -> None:
    assert alice.start_flow(AsksForASignature("bob")).result() == (True, False, False)


def test_a_revoked_nodes_signature_no_longer_verifies(
    net: MockNetwork, alice: MockNode, bob: MockNode
) -> None:
    net.revoked.add("bob")
    assert alice.start_flow(AsksForASignature("bob")).result() == (False, False, False)


class KeyOf(FlowLogic[str | None]):
    def __init__(self, node: str) -> None:
        self.node = node

    async def call(self) -> str | None:
        key = self.services.identity.public_key(self.node)
        await self.sleep(1)
        return key


def test_public_keys_are_recorded_so_a_replay_sees_the_same(
    net: MockNetwork, alice: MockNode, bob: MockNode
) -> None:
    net.auto_advance = False
    handle = alice.start_flow(KeyOf("bob"))
    net.run_network()
    before = net.keys["bob"].public_key
    net.revoked.add("bob")  # the map changed while the flow slept
    restarted = net.restart_node(alice)
    net.run_network()  # the restored flow replays and sets its timer again
    net.advance_clock(1)
    assert handle.result() == before
    net.auto_advance = True
    assert restarted.start_flow(KeyOf("bob")).result() is None


class SignsBytesOnly(FlowLogic[str]):
    async def call(self) -> str:
        try:
            self.services.identity.sign("text")  # type: ignore[arg-type]
        except FlowUsageError as exc:
            return str(exc)
        return "signed"


def test_signing_anything_but_bytes_is_a_usage_error(alice: MockNode) -> None:
    assert "takes bytes" in alice.start_flow(SignsBytesOnly()).result()

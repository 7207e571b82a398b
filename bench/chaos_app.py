"""The flows of the chaos run (``bench.chaos``): node processes import this module as an app.

Every flow gets a ``tag`` (its client id) and writes a row ``(tag, side)`` to ``chaos_effects``
at its end, on the node where it runs; responders write ``(tag, "responder")`` on theirs. Rows are
flow-owned writes, committed with the flow's checkpoint, so a flow that is replayed after a crash,
or a message that is delivered twice, must not leave a second row: the run checks that each
expected row exists exactly once (:func:`expected_rows`).

The shapes: ``TwoParty`` (one round trip), ``ThreeParty`` (a round trip with each of two peers),
``WithSubFlow`` (a ``TwoParty`` as a sub-flow, then a round trip of its own), ``Sleeper`` (a
durable timer) and ``External`` (an external operation that takes a moment, then a round trip).
"""

from __future__ import annotations

import hashlib
import threading
from typing import Any

from parley import (
    FlowLogic,
    FlowSession,
    initiated_by,
    initiating_flow,
    startable_by_rpc,
)

MIGRATIONS = [
    "CREATE TABLE IF NOT EXISTS chaos_effects (tag TEXT NOT NULL, side TEXT NOT NULL)",
]

#: The shapes, in the order the run deals them out.
SHAPES = ("two", "three", "sub", "sleep", "external")


def effect(flow: FlowLogic[Any], tag: str, side: str) -> None:
    flow.services.db.execute("INSERT INTO chaos_effects VALUES (?, ?)", (tag, side))


def tag_of(text: str) -> str:
    """A peer's tag, checked: it must look like one of ours."""
    if not 0 < len(text) <= 100 or not text.startswith("chaos-"):
        raise ValueError(f"not a chaos tag: {text[:40]!r}")
    return text


def fingerprint(tag: str) -> str:
    """The external operation: slow enough (50 ms) that kills land while it runs."""
    threading.Event().wait(0.05)  # stands for a call to another system
    return hashlib.sha256(tag.encode()).hexdigest()[:16]


async def round_trip(flow: FlowLogic[Any], peer: str, tag: str) -> int:
    session = flow.initiate_flow(peer)
    return (await session.send_and_receive(int, tag)).unwrap(int)


@initiating_flow
@startable_by_rpc
class TwoParty(FlowLogic[int]):
    def __init__(self, tag: str, peer: str) -> None:
        self.tag, self.peer = tag, peer

    async def call(self) -> int:
        answer = await round_trip(self, self.peer, self.tag)
        effect(self, self.tag, "initiator")
        return answer


@initiating_flow
@startable_by_rpc
class ThreeParty(FlowLogic[int]):
    def __init__(self, tag: str, first: str, second: str) -> None:
        self.tag, self.first, self.second = tag, first, second

    async def call(self) -> int:
        one, two = self.initiate_flow(self.first), self.initiate_flow(self.second)
        await one.send(self.tag)
        await two.send(self.tag)
        total = (await one.receive(int)).unwrap(int) + (await two.receive(int)).unwrap(int)
        effect(self, self.tag, "initiator")
        return total


@initiating_flow
@startable_by_rpc
class WithSubFlow(FlowLogic[int]):
    def __init__(self, tag: str, peer: str) -> None:
        self.tag, self.peer = tag, peer

    async def call(self) -> int:
        inner = await self.sub_flow(TwoParty(f"{self.tag}/sub", self.peer))
        outer = await round_trip(self, self.peer, self.tag)
        effect(self, self.tag, "initiator")
        return inner + outer


@startable_by_rpc
class Sleeper(FlowLogic[str]):
    def __init__(self, tag: str, seconds: float) -> None:
        self.tag, self.seconds = tag, seconds

    async def call(self) -> str:
        await self.sleep(self.seconds)
        effect(self, self.tag, "initiator")
        return self.tag


@initiating_flow
@startable_by_rpc
class External(FlowLogic[int]):
    def __init__(self, tag: str, peer: str) -> None:
        self.tag, self.peer = tag, peer

    async def call(self) -> int:
        await self.execute(fingerprint, self.tag)
        answer = await round_trip(self, self.peer, self.tag)
        effect(self, self.tag, "initiator")
        return answer


class Responder(FlowLogic[None]):
    """Answers a tag with its length, after writing its row."""

    def __init__(self, session: FlowSession) -> None:
        self.session = session

    async def call(self) -> None:
        tag = (await self.session.receive(str)).unwrap(tag_of)
        effect(self, tag, "responder")
        await self.session.send(len(tag))


@initiated_by(TwoParty)
class TwoPartyResponder(Responder):
    pass


@initiated_by(ThreeParty)
class ThreePartyResponder(Responder):
    pass


@initiated_by(WithSubFlow)
class WithSubFlowResponder(Responder):
    pass


@initiated_by(External)
class ExternalResponder(Responder):
    pass


def flow_for(index: int, nodes: list[str], sleep: float) -> tuple[str, str, list[object]]:
    """Flow number ``index``: the node that starts it, its class (``module:Class``), its args."""
    tag = f"chaos-{index}"
    here = nodes[index % len(nodes)]
    peers = [n for n in nodes if n != here]
    peer = peers[index % len(peers)]
    shape = SHAPES[(index // len(nodes)) % len(SHAPES)]
    name = {
        "two": "TwoParty",
        "three": "ThreeParty",
        "sub": "WithSubFlow",
        "sleep": "Sleeper",
        "external": "External",
    }[shape]
    choices: dict[str, list[object]] = {
        "two": [tag, peer],
        "three": [tag, *peers[:2]],
        "sub": [tag, peer],
        "sleep": [tag, sleep],
        "external": [tag, peer],
    }
    return here, f"{__name__}:{name}", choices[shape]


def expected_rows(index: int, nodes: list[str], sleep: float) -> list[tuple[str, str, str]]:
    """The ``(node, tag, side)`` rows flow number ``index`` leaves, each exactly once."""
    here, name, args = flow_for(index, nodes, sleep)
    tag = str(args[0])
    rows = [(here, tag, "initiator")]
    if name.endswith(":Sleeper"):
        return rows
    if name.endswith(":ThreeParty"):
        return rows + [(str(peer), tag, "responder") for peer in args[1:]]
    peer = str(args[1])
    rows.append((peer, tag, "responder"))
    if name.endswith(":WithSubFlow"):
        rows += [(here, f"{tag}/sub", "initiator"), (peer, f"{tag}/sub", "responder")]
    return rows

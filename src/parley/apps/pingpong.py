"""Ping-pong: the smallest useful pair of flows, and a multi-party variant.

``Ping(peer, n)`` sends ``n`` to ``peer`` and returns the reply (``n + 1``) — ``rounds`` times in a
row, each round sending the previous reply. ``PingAll(peers, n)`` does one round with several peers
at once and returns their replies in order. Used by the tests, the docs and the benchmarks.
"""

from __future__ import annotations

from parley import FlowLogic, FlowSession, initiated_by, initiating_flow, startable_by_rpc


def _is_int(value: int) -> int:
    if isinstance(value, bool):
        raise ValueError("expected an int, got a bool")
    return value


@initiating_flow
@startable_by_rpc
class Ping(FlowLogic[int]):
    """Send ``n`` to ``peer``, which answers ``n + 1``; ``rounds`` times. Returns the last reply."""

    def __init__(self, peer: str, n: int = 0, rounds: int = 1) -> None:
        self.peer, self.n, self.rounds = peer, n, rounds

    async def call(self) -> int:
        session = self.initiate_flow(self.peer)
        await session.send(self.rounds)
        value = self.n
        for _ in range(self.rounds):
            value = (await session.send_and_receive(int, value)).unwrap(_is_int)
        return value


@initiated_by(Ping)
class Pong(FlowLogic[None]):
    """Answer each of the initiator's numbers with the number plus one."""

    def __init__(self, session: FlowSession) -> None:
        self.session = session

    async def call(self) -> None:
        rounds = (await self.session.receive(int)).unwrap(_is_int)
        for _ in range(rounds):
            n = (await self.session.receive(int)).unwrap(_is_int)
            await self.session.send(n + 1)


@initiating_flow
@startable_by_rpc
class PingAll(FlowLogic[list[int]]):
    """Send ``n`` to every peer at once and return their answers, in the order of ``peers``."""

    def __init__(self, peers: list[str], n: int = 0) -> None:
        self.peers, self.n = list(peers), n

    async def call(self) -> list[int]:
        sessions = [self.initiate_flow(peer) for peer in self.peers]
        await self.send_all(self.n, sessions)
        replies = await self.receive_all(int, sessions)
        return [reply.unwrap(_is_int) for reply in replies]


@initiated_by(PingAll)
class PongAll(FlowLogic[None]):
    """Answer the one number with the number plus one."""

    def __init__(self, session: FlowSession) -> None:
        self.session = session

    async def call(self) -> None:
        n = (await self.session.receive(int)).unwrap(_is_int)
        await self.session.send(n + 1)

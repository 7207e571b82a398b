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
    """Send ``n`` to ``peer``, which answers ``n + 1``; ``rounds`` times. Returns the last reply.

    Each message carries the number of rounds still to go, so the responder knows when to stop.
    """

    def __init__(self, peer: str, n: int = 0, rounds: int = 1) -> None:
        if rounds < 1:
            raise ValueError("rounds must be at least 1")
        self.peer, self.n, self.rounds = peer, n, rounds

    async def call(self) -> int:
        session = self.initiate_flow(self.peer)
        value = self.n
        for remaining in range(self.rounds, 0, -1):
            value = (await session.send_and_receive(int, (remaining, value))).unwrap(_is_int)
        return value


def _round(message: tuple[int, int]) -> tuple[int, int]:
    remaining, value = message
    return _is_int(remaining), _is_int(value)


@initiated_by(Ping)
class Pong(FlowLogic[None]):
    """Answer each of the initiator's numbers with the number plus one."""

    def __init__(self, session: FlowSession) -> None:
        self.session = session

    async def call(self) -> None:
        remaining = 1
        while remaining > 0:
            remaining, value = (await self.session.receive(tuple)).unwrap(_round)
            await self.session.send(value + 1)
            remaining -= 1


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

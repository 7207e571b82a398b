"""FlowException subclasses: their declared fields travel; an undeclared one is refused at once."""

from __future__ import annotations

import pytest

from parley import FlowException, FlowLogic, FlowSession, initiated_by, initiating_flow
from parley.protocol import codec
from parley.protocol.errors import FlowUsageError
from parley.testing import MockNetwork


class PriceTooHigh(FlowException):
    limit: int

    def __init__(self, message: str, limit: int) -> None:
        super().__init__(message)
        self.limit = limit
        self._seen_locally = True  # private: not meant to travel, allowed


def test_declared_fields_travel_and_private_attributes_stay_home() -> None:
    decoded = codec.decode(codec.encode(PriceTooHigh("too much", 7)))
    assert isinstance(decoded, PriceTooHigh)
    assert (str(decoded), decoded.limit) == ("too much", 7)
    assert not hasattr(decoded, "_seen_locally")


def test_a_field_set_in_init_but_not_declared_is_refused_when_the_class_is_defined() -> None:
    with pytest.raises(FlowUsageError, match=r"sets reason without declaring it.*`reason: int`"):

        class Refused(FlowException):
            def __init__(self, message: str, reason: str) -> None:
                super().__init__(message)
                self.reason = reason


@initiating_flow
class Buys(FlowLogic[str]):
    def __init__(self, peer: str) -> None:
        self.peer = peer

    async def call(self) -> str:
        session = self.initiate_flow(self.peer)
        try:
            await session.send_and_receive(int, 100)
        except PriceTooHigh as exc:
            return f"{exc} (limit {exc.limit}, from {exc.peer})"
        return "bought"


@initiated_by(Buys)
class Sells(FlowLogic[None]):
    def __init__(self, session: FlowSession) -> None:
        self.session = session

    async def call(self) -> None:
        offer = (await self.session.receive(int)).unwrap(lambda x: x)
        raise PriceTooHigh(f"{offer} is too little", 150)


def test_a_counterparty_sees_the_exception_with_its_declared_fields() -> None:
    net = MockNetwork()
    alice, _ = net.create_node("alice"), net.create_node("bob")
    assert alice.start_flow(Buys("bob")).result() == "100 is too little (limit 150, from bob)"

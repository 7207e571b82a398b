"""Payload type expressions: what ``receive(expected)`` checks, what it refuses, what it says."""

from __future__ import annotations

import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, NewType, Optional, TypedDict

import pytest

from parley import (
    FlowLogic,
    FlowSession,
    FlowUsageError,
    UnexpectedPayloadError,
    initiated_by,
    initiating_flow,
    serializable,
)
from parley.flows.session import check_for, checked
from parley.protocol import codec
from parley.testing import MockNode


@serializable
@dataclass(frozen=True)
class Item:
    name: str


UserId = NewType("UserId", int)

ACCEPTED: list[tuple[object, object]] = [
    (int, 3),
    (float, 3),
    (float, 2.5),
    (str, "x"),
    (Item, Item("a")),
    (int | None, None),
    (int | None, 4),
    (Optional[str], "s"),  # noqa: UP045 - the typing spelling is accepted too
    (list[int], [1, 2]),
    (list[int], []),
    (typing.List[int], [1]),  # noqa: UP006
    (set[str], {"a"}),
    (frozenset[int], frozenset({1})),
    (tuple[int, ...], (1, 2, 3)),
    (tuple[int, str], (1, "a")),
    (tuple[()], ()),
    (dict[str, Item], {"k": Item("v")}),
    (dict[str, list[int | None]], {"a": [1, None]}),
    (Literal["buy", "sell"], "sell"),
    (Literal[1], 1),
    (Annotated[int, "a price"], 5),
    (UserId, 7),
    (Any, Item("anything")),
    (object, [1]),
    (None, None),
    (list, [1, "mixed"]),
]

REFUSED_VALUES: list[tuple[object, object]] = [
    (int, True),
    (int, 1.5),
    (float, False),
    (str, b"x"),
    (int | None, "x"),
    (list[int], [1, "2"]),
    (list[int], (1, 2)),
    (set[str], {1}),
    (tuple[int, ...], (1, "a")),
    (tuple[int, str], (1, "a", "b")),
    (tuple[int, str], ("a", 1)),
    (tuple[()], (1,)),
    (dict[str, int], {1: 1}),
    (dict[str, int], {"a": "b"}),
    (dict[str, list[int | None]], {"a": [1, "x"]}),
    (Literal["buy", "sell"], "hold"),
    (Literal[1], True),  # 1 == True, but a bool is not the literal 1
    (UserId, "7"),
    (None, 0),
]


@pytest.mark.parametrize(("expected", "value"), ACCEPTED)
def test_a_value_of_the_expected_shape_is_accepted(expected: Any, value: object) -> None:
    assert check_for(expected)(value)
    assert checked(expected, codec.encode(value)).unwrap_unchecked() == value


@pytest.mark.parametrize(("expected", "value"), REFUSED_VALUES)
def test_a_value_of_another_shape_is_refused(expected: Any, value: object) -> None:
    assert not check_for(expected)(value)
    with pytest.raises(UnexpectedPayloadError):
        checked(expected, codec.encode(value))


def test_the_error_names_the_first_item_that_does_not_fit() -> None:
    with pytest.raises(UnexpectedPayloadError) as raised:
        checked(dict[str, list[int]], codec.encode({"a": [1], "b": [2, "three"]}))
    message = str(raised.value)
    assert "Expected a payload of type dict[str, list[int]]" in message
    assert "at ['b'][1]: str, not int" in message


def test_the_error_describes_a_tuple_of_the_wrong_length() -> None:
    with pytest.raises(UnexpectedPayloadError) as raised:
        checked(tuple[int, str], codec.encode((1, "a", "b")))
    assert "received tuple[int, str, str]" in str(raised.value)


class NotCheckable(TypedDict):
    a: int


REFUSED_EXPRESSIONS: list[object] = [
    Callable[[int], int],
    Sequence[int],
    NotCheckable,
    "int",
    typing.TypeVar("T"),
    list[Callable[[], None]],
]


@pytest.mark.parametrize("expected", REFUSED_EXPRESSIONS, ids=repr)
def test_a_type_expression_parley_cannot_check_is_a_usage_error(expected: object) -> None:
    with pytest.raises(FlowUsageError, match="Can't check a payload against"):
        check_for(expected)


def test_a_user_generic_is_refused_with_a_hint_to_receive_the_plain_class() -> None:
    T = typing.TypeVar("T")

    class Box(typing.Generic[T]):
        pass

    with pytest.raises(FlowUsageError, match=r"receive .*Box and check the rest in unwrap\(\)"):
        check_for(Box[int])


def test_unwrap_applies_the_validator_and_unwrap_unchecked_does_not() -> None:
    data = checked(int, codec.encode(5))

    def positive(n: int) -> int:
        if n <= 0:
            raise ValueError("must be positive")
        return n

    assert data.unwrap(positive) == 5
    assert data.unwrap_unchecked() == 5
    with pytest.raises(ValueError, match="positive"):
        checked(int, codec.encode(-1)).unwrap(positive)
    assert checked(int, codec.encode(-1)).unwrap_unchecked() == -1


# ---- in flows ---------------------------------------------------------------------------------

ORDER_REPLY: dict[str, object] = {"numbers": [1, 2, 3]}


@initiating_flow
class AsksForNumbers(FlowLogic[list[int]]):
    def __init__(self, peer: str) -> None:
        self.peer = peer

    async def call(self) -> list[int]:
        reply = await self.initiate_flow(self.peer).send_and_receive(list[int], "numbers?")
        return reply.unwrap_unchecked()


@initiated_by(AsksForNumbers)
class SendsNumbers(FlowLogic[None]):
    def __init__(self, session: FlowSession) -> None:
        self.session = session

    async def call(self) -> None:
        await self.session.receive(str)
        await self.session.send(ORDER_REPLY["numbers"])


def test_a_flow_receives_a_list_checked_item_by_item(
    alice: MockNode, bob: MockNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert alice.start_flow(AsksForNumbers("bob")).result() == [1, 2, 3]
    monkeypatch.setitem(ORDER_REPLY, "numbers", [1, "two"])
    with pytest.raises(UnexpectedPayloadError, match=r"at \[1\]: str, not int"):
        alice.start_flow(AsksForNumbers("bob")).result()


@initiating_flow
class ReceivesACallable(FlowLogic[str]):
    def __init__(self, peer: str) -> None:
        self.peer = peer

    async def call(self) -> str:
        session = self.initiate_flow(self.peer)
        try:
            await session.receive(Callable[[], None])
        except FlowUsageError as exc:
            return str(exc)
        return "waited"


def test_an_uncheckable_type_fails_at_the_call_before_anything_is_sent(
    alice: MockNode, bob: MockNode
) -> None:
    handle = alice.start_flow(ReceivesACallable("bob"))
    assert "Can't check a payload against" in handle.result()
    assert bob.flows() == []


# ---- a payload that does not decode ------------------------------------------------------------


def test_an_undecodable_payload_is_an_unexpected_payload_naming_the_reason() -> None:
    with pytest.raises(UnexpectedPayloadError, match="undecodable payload") as raised:
        checked(int, b"\xff\x00not cbor")
    chain = []
    error: BaseException | None = raised.value
    while error is not None:
        chain.append(type(error).__name__)
        error = error.__cause__ or error.__context__
    assert chain == ["UnexpectedPayloadError"], "a decoding error in the chain parks the flow"

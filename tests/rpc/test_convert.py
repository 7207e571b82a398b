"""Flow classes by name and their arguments from text: what converts, and what is refused how."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest

from parley.rpc import BadArgument, NotStartable, UnknownFlowClass
from parley.rpc.convert import build_flow, parse_text, resolve_flow_class
from tests.integration.apps import Books, Order, Steps


def test_a_flow_class_is_found_by_its_full_name_or_its_unique_class_name() -> None:
    assert resolve_flow_class("tests.integration.apps:Steps", "alice") is Steps
    assert resolve_flow_class("Steps", "alice") is Steps


def test_an_unknown_name_suggests_the_closest_startable_flows() -> None:
    with pytest.raises(UnknownFlowClass) as refused:
        resolve_flow_class("tests.integration.apps:Stepz", "alice")
    assert refused.value.details["suggestions"][0] == "tests.integration.apps:Steps"
    assert "node alice has no flow class" in str(refused.value)


def test_a_flow_without_the_mark_is_not_startable() -> None:
    with pytest.raises(NotStartable, match="mark it @startable_by_rpc"):
        resolve_flow_class("tests.integration.apps:Consult", "alice")


def test_text_arguments_become_dataclasses_datetimes_and_bools() -> None:
    order = '{"item": "tea", "quantity": 3, "price": "2.50"}'
    flow = build_flow(Books, [order, "2025-03-01T10:00:00+00:00"], {"express": "no"}, text=True)
    assert isinstance(flow, Books)
    assert flow.order == Order("tea", 3, Decimal("2.50"))
    assert flow.when == datetime(2025, 3, 1, 10, tzinfo=UTC)
    assert flow.express is False


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["bob", "notanint"], "argument n of tests.integration.apps:Steps expects int, got"),
        (["bob", "1", "maybe"], "argument approval of .* expects bool \\(true or false\\)"),
        (["bob", "1", "true", "x"], "too many positional arguments"),
        ([], "missing a required argument: 'peer'"),
    ],
)
def test_text_that_does_not_fit_names_the_parameter_and_its_type(
    args: list[str], message: str
) -> None:
    with pytest.raises(BadArgument, match=message):
        build_flow(Steps, args, {}, text=True)


def test_a_dataclass_field_that_does_not_fit_is_named_with_its_path() -> None:
    order = '{"item": "tea", "quantity": "three", "price": "2.50"}'
    with pytest.raises(BadArgument) as refused:
        build_flow(Books, [order, "2025-03-01"], {}, text=True)
    assert "argument order.quantity of tests.integration.apps:Books expects int" in str(
        refused.value
    )
    assert refused.value.details["parameter"] == "order"


def test_a_dataclass_given_with_unknown_fields_is_refused_listing_its_fields() -> None:
    with pytest.raises(BadArgument, match="Order \\(fields item, quantity, price\\)"):
        build_flow(Books, ['{"item": "tea", "colour": "red"}', "2025-03-01"], {}, text=True)


def test_typed_arguments_are_checked_against_the_annotations() -> None:
    flow = build_flow(Steps, ["bob", 2], {"approval": True}, text=False)
    assert isinstance(flow, Steps)
    assert (flow.peer, flow.n, flow.approval) == ("bob", 2, True)
    with pytest.raises(BadArgument, match=r"argument n of .* expects int, got True"):
        build_flow(Steps, ["bob", True], {}, text=False)


@pytest.mark.parametrize(
    ("text", "hint", "value"),
    [
        ("12", int, 12),
        ("1.50", Decimal, Decimal("1.50")),
        ("2025-01-31", date, date(2025, 1, 31)),
        ("null", int | None, None),
        ("7", int | None, 7),
        ('["a", "b"]', list[str], ["a", "b"]),
        ('{"x": 1}', dict[str, int], {"x": 1}),
        ("[1, 2]", tuple[int, int], (1, 2)),
        ("anything", Any, "anything"),
    ],
)
def test_parse_text_converts_by_type(text: str, hint: Any, value: object) -> None:
    assert parse_text(text, hint) == value


@pytest.mark.parametrize(
    ("text", "hint", "message"),
    [
        ("1.5", int, "expected int, got '1.5'"),
        ("NaN", Decimal, "expected Decimal \\(a finite number\\)"),
        ("[1, 2, 3]", tuple[int, int], "2 items"),
        ('["a", 1]', list[str], "expected str at \\[1\\], got 1"),
    ],
)
def test_parse_text_refuses_what_does_not_fit(text: str, hint: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_text(text, hint)

"""The whitelist codec: exact round trips for every whitelisted type, refusals for everything else.

Hypothesis properties cover the round trips; hand-built CBOR documents cover what a hostile or
broken peer could send (forbidden tags, unknown names, truncation, garbage, oversized or too deeply
nested documents). Whatever the input, ``decode`` returns whitelisted values or raises
``DeserializationError``, and ``encode`` returns bytes or raises ``SerializationError``.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import fractions
import ipaddress
import math
import random
import re
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, ClassVar, NamedTuple

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parley.protocol.codec import (
    DEFAULT_MAX_DEPTH,
    DEFAULT_MAX_SIZE,
    decode,
    encode,
    is_serializable,
    serializable,
)
from parley.protocol.errors import (
    EXCEPTION_TYPES,
    DeserializationError,
    FlowException,
    KilledFlowException,
    SerializationError,
    UnexpectedPayloadError,
    type_name,
)

TAG_TUPLE = 40100
TAG_OBJECT = 40110
TAG_ENUM = 40111
TAG_EXCEPTION = 40112


# --------------------------------------------------------------------------------------------
# Test-local registered types
# --------------------------------------------------------------------------------------------


@serializable(name="test.codec.Point")
@dataclass(frozen=True, slots=True)
class Point:
    x: int
    y: int


@serializable(name="test.codec.Record")
@dataclass(frozen=True)
class Record:
    name: str
    count: int
    blob: bytes
    tags: tuple[str, ...]
    note: str | None = None


@serializable
@dataclass
class Bag:
    """Mutable, unnamed (registered as module:QualName), holding mutable containers."""

    items: list[Any]
    index: dict[str, Any] = field(default_factory=dict)


@serializable(name="test.codec.Options")
@dataclass(frozen=True, kw_only=True)
class Options:
    verbose: bool
    level: int = 1


@serializable(name="test.codec.Mixed")
@dataclass(frozen=True)
class Mixed:
    first: str
    _: dataclasses.KW_ONLY
    flag: bool = False


@serializable(name="test.codec.Positive")
@dataclass(frozen=True)
class Positive:
    value: int

    def __post_init__(self) -> None:
        if self.value <= 0:
            raise ValueError(f"{self.value} is not positive")


@serializable(name="test.codec.Empty")
@dataclass(frozen=True)
class Empty:
    pass


@serializable(name="test.codec.Holder")
@dataclass(frozen=True)
class Holder:
    point: Point
    points: tuple[Point, ...]
    by_name: dict[str, Point]
    color: Color | None = None


@serializable(name="test.codec.Color")
class Color(enum.Enum):
    RED = 1
    GREEN = "green"
    BLUE = (0, 0, 255)


@serializable(name="test.codec.Status")
class Status(enum.StrEnum):
    OPEN = "open"
    CLOSED = "closed"


@serializable(name="test.codec.Level")
class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class InsufficientFunds(FlowException):
    """A user's flow exception with a declared field."""

    needed: int

    def __init__(self, message: str, needed: int) -> None:
        super().__init__(message)
        self.needed = needed


class CountingError(FlowException):
    """Counts calls to ``__init__``, to show decoding does not call it."""

    inits: ClassVar[int] = 0
    detail: str

    def __init__(self, message: str, detail: str) -> None:
        type(self).inits += 1
        super().__init__(message)
        self.detail = detail


class Plain:
    """An ordinary class nobody registered."""


@dataclass(frozen=True)
class Unregistered:
    x: int


class NotAParleyError(Exception):
    pass


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def declared_fields(error: BaseException) -> dict[str, object]:
    names = {
        name
        for klass in type(error).__mro__
        for name, hint in vars(klass).get("__annotations__", {}).items()
        if not name.startswith("_") and "ClassVar" not in str(hint)
    }
    return {name: getattr(error, name, None) for name in sorted(names)}


def same(a: object, b: object) -> bool:
    """Equal value *and* type, recursively; NaN equals NaN; exceptions by type, args, fields."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and str(a) == str(b))
    if isinstance(a, Decimal) and isinstance(b, Decimal):
        return a.compare_total(b) == 0
    if isinstance(a, datetime) and isinstance(b, datetime):
        return (a.replace(tzinfo=None), a.utcoffset()) == (b.replace(tzinfo=None), b.utcoffset())
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a) == list(b) and all(
            same(ka, kb) and same(a[ka], b[kb]) for ka, kb in zip(a, b, strict=True)
        )
    if isinstance(a, set | frozenset) and isinstance(b, set | frozenset):
        originals = {item: item for item in a}
        return a == b and all(same(originals[item], item) for item in b)
    if isinstance(a, BaseException) and isinstance(b, BaseException):
        return same(a.args, b.args) and same(declared_fields(a), declared_fields(b))
    if dataclasses.is_dataclass(a) and not isinstance(a, type):
        return all(same(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a))
    return a == b


def round_trip(value: object) -> object:
    return decode(encode(value))


def assert_round_trips(value: object) -> None:
    decoded = round_trip(value)
    assert same(decoded, value), f"{value!r} came back as {decoded!r}"


SCALAR_TYPES = (type(None), bool, int, float, str, bytes, Decimal, datetime, date, uuid.UUID)


def assert_whitelisted(value: object) -> None:
    """Fail if ``value`` holds anything but whitelisted types."""
    kind = type(value)
    if kind in SCALAR_TYPES:
        return
    if isinstance(value, list | tuple | set | frozenset) and kind in (list, tuple, set, frozenset):
        for item in value:
            assert_whitelisted(item)
    elif isinstance(value, dict) and kind is dict:
        for key, item in value.items():
            assert_whitelisted(key)
            assert_whitelisted(item)
    elif isinstance(value, BaseException):
        assert is_serializable(kind), kind
        assert_whitelisted(value.args)
    elif dataclasses.is_dataclass(value) or isinstance(value, enum.Enum):
        assert is_serializable(kind), kind
    else:
        raise AssertionError(f"decoded a value of non-whitelisted type {type_name(kind)}")


def tagged(tag: int, payload: object) -> bytes:
    """A hand-built document: ``tag`` over ``payload`` (encoded by plain cbor2)."""
    return cbor2.dumps(cbor2.CBORTag(tag, payload))


def nested_lists(depth: int, leaf: object = 0) -> object:
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


# --------------------------------------------------------------------------------------------
# Strategies
# --------------------------------------------------------------------------------------------

offsets = st.timedeltas(min_value=timedelta(hours=-23, minutes=-59), max_value=timedelta(hours=23))
naive_datetimes = st.datetimes()
#: Away from datetime.min/max, where hashing an aware datetime overflows.
aware_datetimes = st.builds(
    lambda moment, offset: moment.replace(tzinfo=timezone(offset)),
    st.datetimes(min_value=datetime(2, 1, 1), max_value=datetime(9998, 12, 31)),
    offsets,
)
hashable_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**130), max_value=2**130),
    st.floats(allow_nan=False),
    st.text(),
    st.binary(),
    st.decimals(allow_nan=False),
    naive_datetimes,
    aware_datetimes,
    st.dates(),
    st.uuids(),
)
scalars = st.one_of(
    hashable_scalars,
    st.floats(allow_nan=True, allow_infinity=True),
    st.decimals(allow_nan=True, allow_infinity=True),
)
hashables = st.recursive(
    hashable_scalars | st.builds(Point, st.integers(), st.integers()) | st.sampled_from(Status),
    lambda children: st.one_of(
        st.lists(children, max_size=3).map(tuple),
        st.frozensets(children, max_size=3),
    ),
    max_leaves=8,
)
points = st.builds(Point, st.integers(), st.integers())
records = st.builds(
    Record,
    st.text(),
    st.integers(),
    st.binary(),
    st.lists(st.text(), max_size=4).map(tuple),
    st.none() | st.text(),
)
enums = st.sampled_from([*Color, *Status, *Level])
flow_errors = st.builds(InsufficientFunds, st.text(), st.integers())
builtin_errors = st.one_of(
    st.builds(ValueError, st.text()),
    st.builds(KeyError, st.text() | st.integers()),
    st.builds(RuntimeError, st.text(), st.integers()),
    st.builds(ZeroDivisionError, st.text()),
)
registered = st.one_of(points, records, enums, flow_errors, builtin_errors)


def containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(hashables, children, max_size=4),
        st.lists(children, max_size=4).map(tuple),
        st.sets(hashables, max_size=4),
        st.frozensets(hashables, max_size=4),
        st.builds(Bag, st.lists(children, max_size=3), st.dictionaries(st.text(), children)),
    )


values = st.recursive(st.one_of(scalars, registered), containers, max_leaves=30)


# --------------------------------------------------------------------------------------------
# Round trips
# --------------------------------------------------------------------------------------------


@given(scalars)
def test_scalars_round_trip_with_their_exact_type(value: object) -> None:
    assert_round_trips(value)


@given(st.integers(min_value=-(2**300), max_value=2**300))
def test_integers_round_trip_including_bigints(value: int) -> None:
    assert_round_trips(value)


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_floats_round_trip_including_nan_infinities_and_negative_zero(value: float) -> None:
    assert_round_trips(value)


@given(st.decimals(allow_nan=True, allow_infinity=True))
def test_decimals_round_trip_keeping_exponent_sign_and_nans(value: Decimal) -> None:
    decoded = round_trip(value)
    assert isinstance(decoded, Decimal)
    assert str(decoded) == str(value)


@given(naive_datetimes)
def test_naive_datetimes_stay_naive(value: datetime) -> None:
    decoded = round_trip(value)
    assert isinstance(decoded, datetime)
    assert decoded.tzinfo is None
    assert decoded == value


@given(aware_datetimes)
def test_aware_datetimes_keep_their_offset_and_microseconds(value: datetime) -> None:
    decoded = round_trip(value)
    assert isinstance(decoded, datetime)
    assert decoded.utcoffset() == value.utcoffset()
    assert decoded.replace(tzinfo=None) == value.replace(tzinfo=None)


@pytest.mark.parametrize(
    "offset",
    [timedelta(0), timedelta(microseconds=1), -timedelta(microseconds=1), timedelta(seconds=-1)],
    ids=str,
)
def test_sub_minute_and_sub_second_utc_offsets_survive(offset: timedelta) -> None:
    moment = datetime(2000, 1, 1, 12, 30, 15, 999_999, tzinfo=timezone(offset))
    decoded = round_trip(moment)
    assert isinstance(decoded, datetime)
    assert decoded.utcoffset() == offset
    assert decoded.replace(tzinfo=None) == moment.replace(tzinfo=None)


@given(st.dates())
def test_dates_round_trip_as_dates(value: date) -> None:
    assert_round_trips(value)


@given(st.uuids())
def test_uuids_round_trip_as_standard_tag_37(value: uuid.UUID) -> None:
    data = encode(value)
    assert data[:2] == b"\xd8\x25"
    assert_round_trips(value)


@given(st.lists(scalars, max_size=5).map(tuple), st.sets(hashables), st.frozensets(hashables))
def test_tuples_sets_and_frozensets_keep_their_types(
    as_tuple: tuple[object, ...], as_set: set[object], as_frozenset: frozenset[object]
) -> None:
    assert_round_trips(as_tuple)
    assert_round_trips(as_set)
    assert_round_trips(as_frozenset)


@given(st.dictionaries(hashables, scalars, max_size=6))
def test_dicts_with_any_hashable_whitelisted_keys_round_trip(value: dict[object, object]) -> None:
    assert_round_trips(value)


@given(points, records, st.builds(Options, verbose=st.booleans(), level=st.integers()))
def test_registered_dataclasses_round_trip(point: Point, record: Record, options: Options) -> None:
    assert_round_trips(point)
    assert_round_trips(record)
    assert_round_trips(options)
    assert_round_trips(Mixed("a", flag=True))
    assert_round_trips(Empty())


@given(enums)
def test_registered_enums_round_trip_to_the_same_member(member: enum.Enum) -> None:
    assert round_trip(member) is member


@given(flow_errors, st.text(), st.text())
def test_flow_exceptions_round_trip_with_their_declared_fields(
    error: InsufficientFunds, peer: str, error_id: str
) -> None:
    error.peer = peer
    error.error_id = error_id
    decoded = round_trip(error)
    assert isinstance(decoded, InsufficientFunds)
    assert decoded.args == error.args
    assert (decoded.needed, decoded.peer, decoded.error_id) == (error.needed, peer, error_id)
    assert str(decoded) == str(error)


@given(builtin_errors)
def test_builtin_exceptions_round_trip_with_their_args(error: Exception) -> None:
    assert_round_trips(error)


@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(values)
def test_any_nesting_of_whitelisted_values_round_trips(value: object) -> None:
    assert_round_trips(value)


def test_nested_registered_dataclasses_tuples_and_dicts_of_them_round_trip() -> None:
    holder = Holder(
        Point(1, 2),
        (Point(3, 4), Point(5, 6)),
        {"a": Point(7, 8)},
        Color.BLUE,
    )
    assert_round_trips(holder)
    assert_round_trips({Point(1, 2): [holder, (holder,)], Status.OPEN: {Level.HIGH}})


def test_exceptions_can_be_dict_keys() -> None:
    error = InsufficientFunds("short", 3)
    decoded = round_trip({error: 1, (KeyError("k"), 2): 3})
    assert isinstance(decoded, dict)
    first, second = decoded
    assert same(first, error)
    assert same(second, (KeyError("k"), 2))


@serializable(name="test.codec.Derived")
@dataclass(frozen=True)
class Derived:
    base: int
    doubled: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "doubled", self.base * 2)


def test_fields_outside_init_are_not_encoded_but_rebuilt_by_the_class() -> None:
    assert encode(Derived(4)) == tagged(TAG_OBJECT, ["test.codec.Derived", 4])
    assert round_trip(Derived(4)) == Derived(4)


def test_containers_inside_a_registered_dataclass_decode_mutable() -> None:
    decoded = round_trip(Bag([1, [2, 3], {"k": [4]}], {"i": {"j": [5]}}))
    assert isinstance(decoded, Bag)
    assert type(decoded.items) is list
    assert type(decoded.items[1]) is list
    assert type(decoded.items[2]) is dict
    assert type(decoded.index["i"]) is dict
    decoded.items.append(6)
    decoded.index["new"] = 7


def test_a_dataclass_is_encoded_compactly_as_name_and_field_values() -> None:
    assert encode(Point(1, 2)) == tagged(TAG_OBJECT, ["test.codec.Point", 1, 2])


def test_an_unnamed_registration_uses_the_stable_module_qualname() -> None:
    data = encode(Bag([1]))
    assert data == tagged(TAG_OBJECT, [type_name(Bag), [1], {}])


def test_special_floats_round_trip() -> None:
    for value in (math.inf, -math.inf, -0.0, 5e-324, 1.7976931348623157e308):
        assert_round_trips(value)
    decoded = round_trip(math.nan)
    assert isinstance(decoded, float)
    assert math.isnan(decoded)


def test_killed_flow_exception_round_trips_by_its_message() -> None:
    decoded = round_trip(KilledFlowException("flow-1"))
    assert isinstance(decoded, KilledFlowException)
    assert str(decoded) == "Flow flow-1 was killed"


def test_parley_errors_round_trip_with_their_declared_fields() -> None:
    decoded = round_trip(UnexpectedPayloadError("str", "int"))
    assert isinstance(decoded, UnexpectedPayloadError)
    assert (decoded.expected, decoded.actual) == ("str", "int")
    assert decoded.args == UnexpectedPayloadError("str", "int").args


def test_exceptions_are_rebuilt_without_calling_init() -> None:
    error = CountingError("boom", "details")
    before = CountingError.inits
    decoded = round_trip(error)
    assert CountingError.inits == before
    assert isinstance(decoded, CountingError)
    assert (decoded.args, decoded.detail) == (("boom",), "details")


def test_class_variables_and_private_names_are_not_declared_fields() -> None:
    data = encode(CountingError("boom", "details"))
    payload = cbor2.loads(data, tag_hook=lambda tag, immutable: tag.value)
    assert set(payload[2]) == {"detail", "peer", "error_id"}


def test_builtin_exception_with_several_args_round_trips() -> None:
    for error in (
        FileNotFoundError(2, "No such file"),
        UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"),
        KeyError(("a", 1)),
        StopIteration(42),
    ):
        decoded = round_trip(error)
        assert type(decoded) is type(error)
        assert same(decoded, error)


# --------------------------------------------------------------------------------------------
# Refusals on encode
# --------------------------------------------------------------------------------------------


def test_unregistered_class_is_refused_with_its_name() -> None:
    with pytest.raises(SerializationError, match=re.escape(type_name(Plain))):
        encode(Plain())
    with pytest.raises(SerializationError, match=re.escape(type_name(Unregistered))):
        encode({"nested": [Unregistered(1)]})


class Pair(NamedTuple):
    a: int
    b: int


class Name(str):
    pass


class Loose(enum.StrEnum):
    A = "a"


@pytest.mark.parametrize(
    "value",
    [
        lambda: None,
        (item for item in (1, 2)),
        object(),
        bytearray(b"x"),
        memoryview(b"x"),
        range(3),
        1 + 2j,
        fractions.Fraction(1, 3),
        re.compile("a+"),
        ipaddress.ip_address("127.0.0.1"),
        collections.OrderedDict(a=1),
        collections.defaultdict(int),
        collections.deque([1]),
        Pair(1, 2),
        Name("subclass of str"),
        Loose.A,
        cbor2.CBORTag(55555, 1),
        cbor2.CBORSimpleValue(0),
        cbor2.undefined,
        {"k": {1, 2}.__iter__()},
        type,
    ],
    ids=lambda value: type(value).__name__,
)
def test_non_whitelisted_values_and_subclasses_of_whitelisted_types_are_refused(
    value: object,
) -> None:
    with pytest.raises(SerializationError, match="cannot encode"):
        encode(value)


@pytest.mark.parametrize(
    "error",
    [SystemExit(1), KeyboardInterrupt(), GeneratorExit(), NotAParleyError("x")],
    ids=lambda error: type(error).__name__,
)
def test_exceptions_outside_parley_and_builtin_exceptions_are_refused(error: BaseException) -> None:
    with pytest.raises(SerializationError, match=re.escape(type_name(type(error)))):
        encode(error)


def test_exception_args_must_themselves_be_encodable() -> None:
    with pytest.raises(SerializationError, match=re.escape(type_name(Plain))):
        encode(ValueError(Plain()))
    with pytest.raises(SerializationError, match=re.escape(type_name(Plain))):
        encode(InsufficientFunds("x", Plain()))  # type: ignore[arg-type]


def test_encoding_a_10000_deep_list_is_refused_not_a_crash() -> None:
    with pytest.raises(SerializationError, match="nested deeper"):
        encode(nested_lists(10_000))


def test_encoding_refuses_what_decoding_with_the_default_depth_would_refuse() -> None:
    deepest = DEFAULT_MAX_DEPTH - 1
    assert same(round_trip(nested_lists(deepest, leaf=2**100)), nested_lists(deepest, 2**100))
    with pytest.raises(SerializationError):
        encode(nested_lists(deepest + 1))
    nested_tuples: object = 0
    for _ in range(DEFAULT_MAX_DEPTH):
        nested_tuples = (nested_tuples,)
    with pytest.raises(SerializationError):
        encode(nested_tuples)


def test_cyclic_values_are_refused() -> None:
    cycle: list[object] = []
    cycle.append(cycle)
    with pytest.raises(SerializationError):
        encode(cycle)


def test_strings_that_are_not_valid_unicode_are_refused() -> None:
    with pytest.raises(SerializationError):
        encode("lone surrogate \ud800")


def test_encoding_longer_than_max_size_is_refused() -> None:
    with pytest.raises(SerializationError, match="over the limit"):
        encode(b"x" * 100, max_size=10)
    with pytest.raises(SerializationError, match="over the limit"):
        encode(b"x" * DEFAULT_MAX_SIZE)


def test_concurrent_encodings_keep_their_own_depth_accounting() -> None:
    # Long enough (thousands of nested containers) for threads to interleave mid-encoding.
    value = [nested_lists(DEFAULT_MAX_DEPTH - 2) for _ in range(40)]
    expected = encode(value)

    def work(_: int) -> bool:
        return all(encode(value) == expected for _ in range(3))

    with ThreadPoolExecutor(max_workers=4) as pool:
        assert all(pool.map(work, range(8)))


# --------------------------------------------------------------------------------------------
# Registration
# --------------------------------------------------------------------------------------------


def test_serializable_refuses_classes_that_are_neither_dataclasses_nor_enums() -> None:
    with pytest.raises(TypeError, match=r"dataclasses and enum\.Enum"):
        serializable(Plain)
    with pytest.raises(TypeError):
        serializable(NotAParleyError)


def test_serializable_refuses_dataclasses_with_initvar_fields() -> None:
    @dataclass
    class WithInitVar:
        a: int
        secret: dataclasses.InitVar[str]

    with pytest.raises(TypeError, match="InitVar"):
        serializable(WithInitVar)


def test_registering_another_class_under_a_taken_name_is_refused() -> None:
    @dataclass(frozen=True)
    class Impostor:
        x: int
        y: int

    with pytest.raises(ValueError, match=r"test\.codec\.Point"):
        serializable(name="test.codec.Point")(Impostor)


def test_registering_the_same_class_again_is_a_no_op() -> None:
    assert serializable(name="test.codec.Point")(Point) is Point
    assert serializable(Bag) is Bag
    assert_round_trips(Point(1, 2))


def test_registering_a_class_under_a_second_name_is_refused() -> None:
    with pytest.raises(ValueError, match="already registered"):
        serializable(name="test.codec.PointAlias")(Point)


def test_is_serializable_knows_whitelisted_and_registered_types() -> None:
    whitelisted: list[type] = [int, str, bytes, list, dict, tuple, set, frozenset, type(None)]
    whitelisted += [Decimal, datetime, date, uuid.UUID, Point, Color, Status, Level]
    whitelisted += [InsufficientFunds, KilledFlowException, ValueError, KeyError]
    for cls in whitelisted:
        assert is_serializable(cls), cls
    refused: list[type] = [Plain, Unregistered, Loose, SystemExit, NotAParleyError, Name]
    refused += [bytearray, collections.OrderedDict, complex, object]
    for cls in refused:
        assert not is_serializable(cls), cls


def test_every_registered_exception_type_is_serializable() -> None:
    for cls in list(EXCEPTION_TYPES.values()):
        assert is_serializable(cls), cls


# --------------------------------------------------------------------------------------------
# Schema evolution (hand-built documents)
# --------------------------------------------------------------------------------------------


def test_missing_trailing_fields_with_defaults_take_their_defaults() -> None:
    old = tagged(TAG_OBJECT, ["test.codec.Record", "n", 1, b"", cbor2.CBORTag(TAG_TUPLE, [])])
    assert decode(old) == Record("n", 1, b"", ())
    older_kw = tagged(TAG_OBJECT, ["test.codec.Options", True])
    assert decode(older_kw) == Options(verbose=True)


def test_missing_fields_without_defaults_are_refused() -> None:
    with pytest.raises(DeserializationError, match=r"test\.codec\.Record"):
        decode(tagged(TAG_OBJECT, ["test.codec.Record", "n"]))


def test_more_values_than_fields_are_refused() -> None:
    with pytest.raises(DeserializationError, match="2 fields but the data has 3 values"):
        decode(tagged(TAG_OBJECT, ["test.codec.Point", 1, 2, 3]))


def test_a_constructor_that_rejects_the_values_gives_a_deserialization_error() -> None:
    with pytest.raises(DeserializationError, match="not positive"):
        decode(tagged(TAG_OBJECT, ["test.codec.Positive", -1]))


# --------------------------------------------------------------------------------------------
# Refusals on decode
# --------------------------------------------------------------------------------------------


def test_unregistered_type_name_in_data_is_refused_with_its_name() -> None:
    with pytest.raises(DeserializationError, match=re.escape("'elsewhere:Ghost'")):
        decode(tagged(TAG_OBJECT, ["elsewhere:Ghost", 1, 2]))
    with pytest.raises(DeserializationError, match=re.escape("'elsewhere:Ghost'")):
        decode(tagged(TAG_ENUM, ["elsewhere:Ghost", 1]))
    with pytest.raises(DeserializationError, match=re.escape("'elsewhere:GhostError'")):
        decode(tagged(TAG_EXCEPTION, ["elsewhere:GhostError", ["boo"], {}]))


@pytest.mark.parametrize(
    "document",
    [
        tagged(TAG_OBJECT, []),
        tagged(TAG_OBJECT, "test.codec.Point"),
        tagged(TAG_OBJECT, [1, 2]),
        tagged(TAG_OBJECT, ["test.codec.Color", 1]),
        tagged(TAG_ENUM, ["test.codec.Point", 1]),
        tagged(TAG_ENUM, ["test.codec.Color", 99]),
        tagged(TAG_ENUM, ["test.codec.Color"]),
        tagged(TAG_TUPLE, "abc"),
        tagged(40101, [[1]]),
        tagged(40103, "not a datetime"),
        tagged(40103, 0),
        tagged(40103, "2020-01-01T00:00:00+01:00"),
        tagged(40103, ["2020-01-01T00:00:00+01:00", 0]),
        tagged(40103, ["2020-01-01T00:00:00", "+01:00"]),
        tagged(40103, ["2020-01-01T00:00:00", 86_400_000_000]),
        tagged(40103, ["2020-01-01T00:00:00"]),
        tagged(40104, "2020-13-45"),
        tagged(40105, "one"),
        tagged(40199, 0),
        tagged(37, b"short"),
        tagged(2, 5),
        tagged(TAG_EXCEPTION, ["builtins:ValueError", ["x"]]),
        tagged(TAG_EXCEPTION, ["builtins:ValueError", "x", {}]),
        tagged(TAG_EXCEPTION, ["builtins:ValueError", ["x"], {"extra": 1}]),
        tagged(TAG_EXCEPTION, ["builtins:SystemExit", [1], {}]),
        tagged(TAG_EXCEPTION, ["builtins:print", [1], {}]),
        tagged(TAG_EXCEPTION, ["builtins:UnicodeDecodeError", ["too few"], {}]),
        tagged(TAG_EXCEPTION, [type_name(InsufficientFunds), ["x"], {"undeclared": 1}]),
        tagged(TAG_EXCEPTION, [type_name(InsufficientFunds), ["x"], {"inits": 1}]),
    ],
    ids=lambda document: document.hex()[:40],
)
def test_malformed_payloads_of_our_tags_are_refused(document: bytes) -> None:
    with pytest.raises(DeserializationError):
        decode(document)


def test_an_undeclared_exception_field_is_refused_and_named() -> None:
    document = tagged(TAG_EXCEPTION, [type_name(InsufficientFunds), ["x"], {"secret": 1}])
    with pytest.raises(DeserializationError, match="'secret'"):
        decode(document)


FORBIDDEN_TAGS = {
    "datetime string 0": tagged(0, "2020-01-01T00:00:00Z"),
    "epoch datetime 1": tagged(1, 0),
    "decimal fraction 4": tagged(4, [-1, 15]),
    "bigfloat 5": tagged(5, [-1, 3]),
    "expected base64url 21": tagged(21, b"x"),
    "expected base64 22": tagged(22, b"x"),
    "expected base16 23": tagged(23, b"x"),
    "encoded cbor 24": tagged(24, b"\x01"),
    "string reference 25": tagged(256, ["abc", cbor2.CBORTag(25, 0)]),
    "string reference 25 alone": tagged(25, 0),
    "shareable 28": tagged(28, [1]),
    "shared reference 29": cbor2.dumps([cbor2.CBORTag(28, [1]), cbor2.CBORTag(29, 0)]),
    "shared reference 29 alone": tagged(29, 0),
    "rational 30": tagged(30, [1, 3]),
    "uri 32": tagged(32, "http://example.com"),
    "base64url 33": tagged(33, "YQ"),
    "base64 34": tagged(34, "YQ=="),
    "regex 35": tagged(35, "(a+)+$"),
    "mime 36": tagged(36, "Content-Type: text/plain\n\nhello"),
    "ipv4 52": tagged(52, b"\x7f\x00\x00\x01"),
    "ipv6 54": tagged(54, b"\x00" * 16),
    "epoch date 100": tagged(100, 0),
    "string namespace 256": tagged(256, ["abc", "abc"]),
    "set 258": tagged(258, [1, 2]),
    "ip address 260": tagged(260, b"\x7f\x00\x00\x01"),
    "ip network 261": tagged(261, {b"\x7f\x00\x00\x00": 8}),
    "date string 1004": tagged(1004, "2020-01-01"),
    "complex 43000": tagged(43000, [1.0, 2.0]),
    "unknown 55555": tagged(55555, [1, 2]),
    "self-described 55799": tagged(55799, 1),
    "unknown inside a list": cbor2.dumps([1, cbor2.CBORTag(55555, 0)]),
    "regex inside a dataclass": tagged(TAG_OBJECT, ["test.codec.Point", 1, cbor2.CBORTag(35, "a")]),
}


@pytest.mark.parametrize("document", FORBIDDEN_TAGS.values(), ids=FORBIDDEN_TAGS.keys())
def test_forbidden_and_unknown_tags_are_refused(document: bytes) -> None:
    with pytest.raises(DeserializationError, match="not allowed"):
        decode(document)


SIMPLE_VALUES = {
    "simple 0": b"\xe0",
    "simple 19": b"\xf3",
    "undefined": b"\xf7",
    "simple 255": b"\xf8\xff",
    "in a list": b"\x82\x01\xf7",
    "in a nested list": b"\x81\x81\x81\xe5",
    "as a map value": b"\xa1\x61k\xf7",
    "as a map key": b"\xa1\xe0\x01",
    "in a map key": b"\xa1\xd9\x9c\xa4\x81\xf7\x01",
    "in a dataclass field": tagged(TAG_OBJECT, ["test.codec.Point", 1, cbor2.undefined]),
    "in a tuple": tagged(TAG_TUPLE, [cbor2.CBORSimpleValue(7)]),
    "in exception args": tagged(TAG_EXCEPTION, ["builtins:ValueError", [cbor2.undefined], {}]),
}


@pytest.mark.parametrize("document", SIMPLE_VALUES.values(), ids=SIMPLE_VALUES.keys())
def test_cbor_simple_values_and_undefined_are_refused(document: bytes) -> None:
    with pytest.raises(DeserializationError):
        decode(document)


@pytest.mark.parametrize(
    "document", [b"\xa1\xa1\x01\x02\x03", b"\xa1\x81\xa1\x01\x02\x03"], ids=["map", "in an array"]
)
def test_a_map_used_as_a_map_key_is_refused(document: bytes) -> None:
    with pytest.raises(DeserializationError, match="unhashable"):
        decode(document)


def test_duplicate_map_keys_are_refused() -> None:
    with pytest.raises(DeserializationError, match="Duplicate"):
        decode(b"\xa2\x61a\x01\x61a\x02")


@pytest.mark.parametrize(
    "document",
    [b"\x9f\x01\x02\xff", b"\xbf\x61a\x01\xff", b"\x5f\x41a\xff", b"\x7f\x61a\xff"],
    ids=["array", "map", "bytes", "text"],
)
def test_indefinite_lengths_are_refused(document: bytes) -> None:
    with pytest.raises(DeserializationError, match="indefinite"):
        decode(document)


def test_every_prefix_of_a_valid_document_is_refused() -> None:
    value = {
        "points": (Point(1, 2), Point(3, 4)),
        "record": Record("name", 2**70, b"\x00\xff", ("a", "b")),
        "when": datetime(2024, 5, 6, 7, 8, 9, 10, tzinfo=timezone(timedelta(hours=2))),
        "error": InsufficientFunds("short", 10),
        "set": frozenset({1, 2}),
        "id": uuid.UUID(int=7),
        "amount": Decimal("1.50"),
    }
    data = encode(value)
    assert same(decode(data), value)
    for end in range(len(data)):
        with pytest.raises(DeserializationError):
            decode(data[:end])


@pytest.mark.parametrize("garbage", [b"\x00", b"\xff", b"\x01\x02\x03", encode(Point(1, 2))])
def test_trailing_bytes_after_the_document_are_refused(garbage: bytes) -> None:
    with pytest.raises(DeserializationError, match="trailing"):
        decode(encode([1, 2, 3]) + garbage)


@pytest.mark.parametrize("data", ["text", bytearray(b"\x01"), memoryview(b"\x01"), None, 1])
def test_anything_but_bytes_is_refused(data: Any) -> None:
    with pytest.raises(DeserializationError, match="can only decode bytes"):
        decode(data)


def test_a_document_over_2_mib_is_refused_before_decoding() -> None:
    big = encode(b"x" * (2 << 20), max_size=4 << 20)
    with pytest.raises(DeserializationError, match="over the limit"):
        decode(big)
    with pytest.raises(DeserializationError, match="over the limit"):
        decode(b"\xff" * (2 << 20))


def test_max_size_is_configurable_both_ways() -> None:
    with pytest.raises(DeserializationError, match="over the limit of 10"):
        decode(encode("more than ten bytes"), max_size=10)
    payload = b"y" * (3 << 19)  # 1.5 MiB
    data = encode(payload, max_size=2 << 20)
    with pytest.raises(DeserializationError):
        decode(data)
    assert decode(data, max_size=2 << 20) == payload


def test_a_10000_deep_document_is_refused() -> None:
    with pytest.raises(DeserializationError, match="depth"):
        decode(b"\x81" * 10_000 + b"\x00")


def test_deeply_nested_tags_are_refused() -> None:
    with pytest.raises(DeserializationError):
        decode(b"\xd9\x9c\xa4\x81" * 10_000 + b"\x00")


def test_max_depth_is_configurable() -> None:
    data = encode(nested_lists(10))
    assert decode(data) == nested_lists(10)
    with pytest.raises(DeserializationError, match="depth"):
        decode(data, max_depth=5)
    assert decode(data, max_depth=10) == nested_lists(10)


def test_decode_errors_surface_the_reason_from_our_hooks() -> None:
    with pytest.raises(DeserializationError) as caught:
        decode(tagged(TAG_OBJECT, ["test.codec.Positive", 0]))
    assert "test.codec.Positive" in str(caught.value)
    assert "not positive" in str(caught.value)


# --------------------------------------------------------------------------------------------
# Fuzzing: any bytes give a whitelisted value or a DeserializationError
# --------------------------------------------------------------------------------------------


def decode_or_refuse(data: bytes) -> None:
    try:
        value = decode(data)
    except DeserializationError:
        return
    assert_whitelisted(value)


@settings(max_examples=1000)
@given(st.binary(max_size=64))
def test_random_bytes_decode_to_whitelisted_values_or_are_refused(data: bytes) -> None:
    decode_or_refuse(data)


def test_mutated_valid_documents_decode_to_whitelisted_values_or_are_refused() -> None:
    rng = random.Random(20240601)
    samples = [
        encode({"a": [1, 2.5, "x", b"\x00"], "b": (Point(1, 2), Color.GREEN)}),
        encode(Holder(Point(1, 2), (Point(3, 4),), {"p": Point(5, 6)}, Color.RED)),
        encode(InsufficientFunds("no money", 5)),
        encode([uuid.UUID(int=1), Decimal("2.5"), datetime(2020, 1, 1), {1, 2}]),
    ]
    mutations: list[Callable[[bytearray], None]] = [
        lambda doc: doc.__setitem__(rng.randrange(len(doc)), rng.randrange(256)),
        lambda doc: doc.insert(rng.randrange(len(doc)), rng.randrange(256)),
        lambda doc: doc.__delitem__(rng.randrange(len(doc))),
    ]
    for _ in range(3000):
        document = bytearray(rng.choice(samples))
        for _ in range(rng.randint(1, 3)):
            rng.choice(mutations)(document)
        decode_or_refuse(bytes(document))

"""The codec's decoder hooks: one per private tag, the map and tag checks, the strict mode.

Private to :mod:`parley.protocol.codec`, whose ``decode`` hands cbor2 :data:`_FAST_OPTIONS`, or
:data:`_STRICT_OPTIONS` for a document that may hold a CBOR simple value (see
:data:`_NOT_SIMPLE_VALUE_BYTES`), and whose docstring gives the format each hook reads. Every tag
without a hook here is refused, and every failure is a
:class:`~parley.protocol.errors.DeserializationError`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import cbor2

from parley.protocol.codec_registry import (
    _BY_NAME,
    _OBJECT_BUILDERS,
    TAG_DATE,
    TAG_DATETIME,
    TAG_DECIMAL,
    TAG_ENUM,
    TAG_EXCEPTION,
    TAG_FROZENSET,
    TAG_OBJECT,
    TAG_SET,
    TAG_TUPLE,
    _builtin_exception,
    _declared_fields,
    _Registration,
)
from parley.protocol.errors import EXCEPTION_TYPES, DeserializationError


def _decode_error(exc: BaseException) -> DeserializationError:
    """Translate a cbor2 failure, surfacing our own message if one of our hooks raised it."""
    cause: BaseException | None = exc
    for _ in range(8):
        if cause is None:
            break
        if isinstance(cause, DeserializationError):
            return DeserializationError(str(cause))
        cause = cause.__cause__ or cause.__context__
    detail = str(exc)
    if exc.__cause__ is not None:
        detail = f"{detail}: {type(exc.__cause__).__name__}: {exc.__cause__}"
    return DeserializationError(f"malformed CBOR: {detail}")


def _reject_tag(tag: cbor2.CBORTag, immutable: bool) -> object:
    raise DeserializationError(f"CBOR tag {tag.tag} is not allowed")


def _check_map(mapping: Mapping[Any, Any], immutable: bool) -> object:
    # Inside a map key cbor2 makes maps frozendicts. A plain dict instead keeps the output
    # whitelisted: a map used as a key is then refused as unhashable, while the fields map of an
    # exception used as a key still works.
    return dict(mapping) if immutable else mapping


def _check_map_strict(mapping: Mapping[Any, Any], immutable: bool) -> object:
    if not _UNCHECKED.isdisjoint(map(type, mapping)):
        _check_items(mapping)
    if not _UNCHECKED.isdisjoint(map(type, mapping.values())):
        _check_items(mapping.values())
    return dict(mapping) if immutable else mapping


def _payload(value: object, what: str) -> Sequence[Any]:
    if isinstance(value, list | tuple):
        return value
    raise DeserializationError(f"malformed {what}: expected an array, got {type(value).__name__}")


def _text(value: object, what: str) -> str:
    if isinstance(value, str):
        return value
    raise DeserializationError(f"malformed {what}: expected text, got {type(value).__name__}")


def _decode_tuple(value: Any) -> object:
    if type(value) is list:
        return tuple(value)
    return tuple(_payload(value, "tuple"))


def _decode_set(value: Any) -> object:
    return set(_payload(value, "set"))


def _decode_frozenset(value: Any) -> object:
    return frozenset(_payload(value, "frozenset"))


def _decode_datetime(value: Any) -> object:
    if isinstance(value, str):
        return _naive_datetime(value)
    payload = _payload(value, "datetime")
    if len(payload) != 2 or type(payload[1]) is not int:
        raise DeserializationError("malformed datetime: expected [text, offset]")
    offset = timezone(timedelta(microseconds=payload[1]))
    return _naive_datetime(_text(payload[0], "datetime")).replace(tzinfo=offset)


def _naive_datetime(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is not None:
        raise DeserializationError("malformed datetime: the text must not carry an offset")
    return moment


def _decode_date(value: Any) -> object:
    return date.fromisoformat(_text(value, "date"))


def _decode_decimal(value: Any) -> object:
    return Decimal(_text(value, "decimal"))


def _registration(payload: Sequence[Any], is_enum: bool) -> _Registration:
    what = "enum" if is_enum else "object"
    if not payload:
        raise DeserializationError(f"malformed {what}: empty array")
    name = _text(payload[0], f"{what} name")
    registration = _BY_NAME.get(name)
    if registration is None:
        raise DeserializationError(f"type {name!r} is not registered with @serializable")
    if registration.is_enum != is_enum:
        raise DeserializationError(f"type {name!r} is not an {what} type")
    return registration


def _decode_object(value: Any) -> object:
    if (type(value) is list or type(value) is tuple) and value and type(value[0]) is str:
        build = _OBJECT_BUILDERS.get(value[0])
        if build is not None:
            return build(value)
    payload = _payload(value, "object")  # the slow path finds what is wrong
    return _registration(payload, is_enum=False).build(payload)


def _decode_enum(value: Any) -> object:
    payload = _payload(value, "enum")
    return _registration(payload, is_enum=True).build(payload)


def _decode_exception(value: Any) -> object:
    payload = _payload(value, "exception")
    if len(payload) != 3:
        raise DeserializationError("malformed exception: expected [name, args, fields]")
    name = _text(payload[0], "exception name")
    args = _payload(payload[1], "exception args")
    fields = payload[2]
    if type(fields) is not dict:
        raise DeserializationError("malformed exception: fields must be a map")
    cls = EXCEPTION_TYPES.get(name)
    if cls is None:
        module, _, qualname = name.partition(":")
        builtin = _builtin_exception(qualname) if module == "builtins" else None
        if builtin is None:
            raise DeserializationError(f"exception type {name!r} is not registered")
        if fields:
            raise DeserializationError(f"built-in exception {name} has no fields to set")
        try:
            return builtin(*args)
        except Exception as exc:
            raise DeserializationError(f"cannot rebuild {name}: {exc}") from exc
    declared = _declared_fields(cls)
    error = cls.__new__(cls)
    error.args = tuple(args)
    for field, field_value in fields.items():
        if field not in declared:
            raise DeserializationError(f"exception {name} has no declared field {field!r}")
        try:
            setattr(error, field, field_value)
        except Exception as exc:
            raise DeserializationError(f"cannot set {name}.{field}: {exc}") from exc
    return error


_Callback = Callable[[Any], object]
_TwoStage = Callable[[bool], tuple[None, _Callback]]


def _two_stage(callback: _Callback) -> _TwoStage:
    """Wrap ``callback`` as a cbor2 two-stage decoder that creates no container up front.

    cbor2 calls a plain semantic decoder only after probing it for the two-stage attributes, and
    that failed attribute lookup costs about as much as the call; a two-stage decoder has them.
    """
    stages = (None, callback)

    def first_stage(immutable: bool) -> tuple[None, _Callback]:
        return stages

    return cbor2.shareable_decoder(first_stage)


class _DecoderTable(dict[int, _TwoStage]):
    """cbor2's ``semantic_decoders``: our tags; bignums and UUIDs natively; every other tag refused.

    cbor2 consults this mapping before its built-in tag decoders, so refusing in ``__missing__``
    also covers tags a later cbor2 version may start decoding by itself.
    """

    def __missing__(self, tag: int) -> _TwoStage:
        if tag in _NATIVE_TAGS:
            raise KeyError(tag)  # let cbor2 decode it
        raise DeserializationError(f"CBOR tag {tag} is not allowed")


#: Standard tags cbor2 decodes for us: positive and negative bignums, UUID.
_NATIVE_TAGS = frozenset({2, 3, 37})

_CALLBACKS: dict[int, _Callback] = {
    TAG_TUPLE: _decode_tuple,
    TAG_SET: _decode_set,
    TAG_FROZENSET: _decode_frozenset,
    TAG_DATETIME: _decode_datetime,
    TAG_DATE: _decode_date,
    TAG_DECIMAL: _decode_decimal,
    TAG_OBJECT: _decode_object,
    TAG_ENUM: _decode_enum,
    TAG_EXCEPTION: _decode_exception,
}

#: Initial bytes of CBOR simple values 0-19 (0xe0-0xf3), undefined (0xf7) and one-byte simple
#: values (0xf8). If none of them occurs anywhere in a document, it holds no simple value.
_SIMPLE_VALUE_BYTES = bytes([*range(0xE0, 0xF4), 0xF7, 0xF8])
_NOT_SIMPLE_VALUE_BYTES = bytes(b for b in range(256) if b not in _SIMPLE_VALUE_BYTES)
_FOREIGN = frozenset({cbor2.CBORSimpleValue, type(cbor2.undefined)})
#: Types a strict check must look at: simple values, and arrays, which no hook sees. Maps are
#: checked by the object hook and tag payloads by the semantic decoders, as they are decoded.
_UNCHECKED = _FOREIGN | {list, tuple}


def _check_items(items: Iterable[object]) -> None:
    """Raise if ``items`` hold a simple value, directly or in arrays nested in them."""
    for item in items:
        if isinstance(item, list | tuple):
            if not _UNCHECKED.isdisjoint(map(type, item)):
                _check_items(item)
        elif type(item) in _FOREIGN:
            raise DeserializationError(f"CBOR simple value {item!r} is not allowed")


def _strict(callback: _Callback) -> _Callback:
    def checked(value: Any) -> object:
        _check_items((value,))
        return callback(value)

    return checked


_FAST_OPTIONS: dict[str, Any] = {
    "tag_hook": _reject_tag,
    "object_hook": _check_map,
    "semantic_decoders": _DecoderTable({t: _two_stage(f) for t, f in _CALLBACKS.items()}),
    "allow_indefinite": False,
    "allow_duplicate_keys": False,
}
_STRICT_OPTIONS: dict[str, Any] = {
    **_FAST_OPTIONS,
    "object_hook": _check_map_strict,
    "semantic_decoders": _DecoderTable(
        {tag: _two_stage(_strict(callback)) for tag, callback in _CALLBACKS.items()}
    ),
}

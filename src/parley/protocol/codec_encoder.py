"""The codec's encoder hooks: one per whitelisted type, in the table cbor2 dispatches on.

Private to :mod:`parley.protocol.codec`, whose ``encode`` passes :data:`_ENCODERS` to cbor2 and
whose docstring gives the format each hook writes. The hooks also count the nesting depth of the
document being written, so that cbor2 never recurses deep enough to overflow the C stack.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Sequence
from datetime import date, datetime, timedelta
from decimal import Decimal
from operator import attrgetter
from typing import Any

import cbor2

from parley.protocol.codec_registry import (
    DEFAULT_MAX_DEPTH,
    TAG_DATE,
    TAG_DATETIME,
    TAG_DECIMAL,
    TAG_ENUM,
    TAG_EXCEPTION,
    TAG_FROZENSET,
    TAG_OBJECT,
    TAG_SET,
    TAG_TUPLE,
    _declared_fields,
    _exception_name,
    _is_uuid_class,
)
from parley.protocol.errors import EXCEPTION_TYPES, SerializationError, type_name

_MICROSECOND = timedelta(microseconds=1)
_Encoder = cbor2.CBOREncoder
_EncodeHook = Callable[[_Encoder, Any], None]

#: Nesting ``encode`` allows. One level is kept free for a leaf tag (bigint, UUID, datetime, ...)
#: in the innermost container, so every encoded document decodes with ``DEFAULT_MAX_DEPTH``.
_MAX_ENCODE_DEPTH = DEFAULT_MAX_DEPTH - 1
#: Nesting depth per encoder in progress, keyed by ``id(encoder)``: cbor2 itself only limits the
#: nesting of tags, and it overflows the C stack (segfault) on a list nested ~10,000 deep.
_depths: dict[int, int] = {}


def _too_deep(value: object) -> SerializationError:
    return SerializationError(
        f"cannot encode {type_name(type(value))}: nested deeper than {_MAX_ENCODE_DEPTH} levels"
    )


def _encode_list(encoder: _Encoder, value: list[Any]) -> None:
    key = id(encoder)
    depth = _depths.get(key, 0) + 1
    if depth > _MAX_ENCODE_DEPTH:
        raise _too_deep(value)
    _depths[key] = depth
    try:
        encoder.encode_array(value)
    finally:
        if depth == 1:
            del _depths[key]
        else:
            _depths[key] = depth - 1


def _encode_dict(encoder: _Encoder, value: dict[Any, Any]) -> None:
    key = id(encoder)
    depth = _depths.get(key, 0) + 1
    if depth > _MAX_ENCODE_DEPTH:
        raise _too_deep(value)
    _depths[key] = depth
    try:
        encoder.encode_map(value)
    finally:
        if depth == 1:
            del _depths[key]
        else:
            _depths[key] = depth - 1


def _encode_tagged(encoder: _Encoder, tag: int, items: Sequence[Any], value: object) -> None:
    """Write ``tag`` over the array ``items`` (two levels of nesting)."""
    key = id(encoder)
    depth = _depths.get(key, 0) + 2
    if depth > _MAX_ENCODE_DEPTH:
        raise _too_deep(value)
    _depths[key] = depth
    try:
        encoder.encode_length(6, tag)
        encoder.encode_array(items)
    finally:
        if depth == 2:
            del _depths[key]
        else:
            _depths[key] = depth - 2


def _encode_tuple(encoder: _Encoder, value: tuple[Any, ...]) -> None:
    # _encode_tagged, inlined: frozen dataclasses hold tuples.
    key = id(encoder)
    depth = _depths.get(key, 0) + 2
    if depth > _MAX_ENCODE_DEPTH:
        raise _too_deep(value)
    _depths[key] = depth
    try:
        encoder.encode_length(6, TAG_TUPLE)
        encoder.encode_array(value)
    finally:
        if depth == 2:
            del _depths[key]
        else:
            _depths[key] = depth - 2


def _encode_set(encoder: _Encoder, value: set[Any]) -> None:
    _encode_tagged(encoder, TAG_SET, list(value), value)


def _encode_frozenset(encoder: _Encoder, value: frozenset[Any]) -> None:
    _encode_tagged(encoder, TAG_FROZENSET, list(value), value)


def _encode_none(encoder: _Encoder, value: None) -> None:
    encoder.encode_none()


def _leaf_encoder(tag: int, to_text: Callable[[Any], str]) -> _EncodeHook:
    def hook(encoder: _Encoder, value: Any) -> None:
        encoder.encode_length(6, tag)
        encoder.encode_string(to_text(value))

    return hook


def _encode_datetime(encoder: _Encoder, value: datetime) -> None:
    offset = value.utcoffset()
    if offset is None:
        encoder.encode_length(6, TAG_DATETIME)
        encoder.encode_string(value.isoformat())
    else:
        naive = value.replace(tzinfo=None).isoformat()
        _encode_tagged(encoder, TAG_DATETIME, (naive, offset // _MICROSECOND), value)


def _object_encoder(name: str, fields: tuple[str, ...]) -> _EncodeHook:
    if len(fields) > 1:
        values: Callable[[Any], tuple[Any, ...]] = attrgetter(*fields)
    elif fields:
        only = attrgetter(fields[0])

        def values(obj: Any) -> tuple[Any, ...]:
            return (only(obj),)
    else:

        def values(obj: Any) -> tuple[Any, ...]:
            return ()

    def hook(encoder: _Encoder, value: Any) -> None:
        # _encode_tagged, inlined: this is the checkpoint hot path.
        key = id(encoder)
        depth = _depths.get(key, 0) + 2
        if depth > _MAX_ENCODE_DEPTH:
            raise _too_deep(value)
        _depths[key] = depth
        try:
            encoder.encode_length(6, TAG_OBJECT)
            encoder.encode_array([name, *values(value)])
        finally:
            if depth == 2:
                del _depths[key]
            else:
                _depths[key] = depth - 2

    return hook


def _enum_encoder(name: str) -> _EncodeHook:
    def hook(encoder: _Encoder, value: Any) -> None:
        _encode_tagged(encoder, TAG_ENUM, (name, value.value), value)

    return hook


def _exception_encoder(cls: type[BaseException], name: str, registered: bool) -> _EncodeHook:
    fields = _declared_fields(cls) if registered else ()

    def hook(encoder: _Encoder, value: Any) -> None:
        if registered and EXCEPTION_TYPES.get(name) is not cls:
            raise SerializationError(f"exception type {type_name(cls)} is no longer registered")
        declared = {field: getattr(value, field, None) for field in fields}
        _encode_tagged(encoder, TAG_EXCEPTION, (name, list(value.args), declared), value)

    return hook


class _EncoderTable(dict[type, _EncodeHook]):
    """cbor2's ``encoders``: one hook per exact type; any other type is refused here.

    cbor2 looks every value's exact type up in this mapping before its own dispatch (which goes by
    ``isinstance``). Native types map to cbor2's own methods, so they cost one lookup and no Python
    frame. ``__missing__`` sees every other type once: exceptions and UUIDs get a cached hook,
    anything else raises :class:`SerializationError`.
    """

    def __missing__(self, cls: type) -> _EncodeHook:
        hook: _EncodeHook
        if _is_uuid_class(cls):
            hook = _Encoder.encode_uuid
        elif issubclass(cls, BaseException) and (name := _exception_name(cls)) is not None:
            hook = _exception_encoder(cls, name, registered=name in EXCEPTION_TYPES)
        else:
            raise SerializationError(_refusal(cls))
        self[cls] = hook
        return hook


def _refusal(cls: type) -> str:
    if issubclass(cls, BaseException):
        hint = "only ParleyError subclasses and built-in Exception subclasses are encodable"
    elif dataclasses.is_dataclass(cls) or issubclass(cls, enum.Enum):
        hint = "register it with @serializable"
    else:
        hint = "it is not whitelisted"
    return f"cannot encode type {type_name(cls)}: {hint}"


_ENCODERS = _EncoderTable(
    {
        str: _Encoder.encode_string,
        bytes: _Encoder.encode_bytes,
        int: _Encoder.encode_int,
        float: _Encoder.encode_float,
        bool: _Encoder.encode_bool,
        type(None): _encode_none,
        list: _encode_list,
        dict: _encode_dict,
        tuple: _encode_tuple,
        set: _encode_set,
        frozenset: _encode_frozenset,
        datetime: _encode_datetime,
        date: _leaf_encoder(TAG_DATE, date.isoformat),
        Decimal: _leaf_encoder(TAG_DECIMAL, str),
    }
)

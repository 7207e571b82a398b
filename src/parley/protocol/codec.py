"""The whitelist codec: CBOR for everything that crosses a node boundary or goes into a checkpoint.

Theory of operation
===================

:func:`encode` turns a value into CBOR bytes and :func:`decode` turns them back. Only whitelisted
types go either way; there is no pickle and no "import a class named in the data". Both sides
dispatch on the *exact* type, so a subclass of a whitelisted type (an ``OrderedDict``, an
unregistered ``StrEnum``, a ``bool`` subclass, ...) is refused instead of silently losing its type.

Whitelist, and how each type is written:

* ``None``, ``bool``, ``int`` (bigints as tags 2/3), ``float``, ``str``, ``bytes``, ``list`` and
  ``dict``: plain CBOR. Decoded lists and dicts are plain, mutable ``list`` and ``dict``.
* ``uuid.UUID``: the standard tag 37 over its 16 bytes.
* Everything else uses a private tag:

  ======  ==========================  ============================================================
  tag     type                        payload
  ======  ==========================  ============================================================
  40100   ``tuple``                   array of the items
  40101   ``set``                     array of the items
  40102   ``frozenset``               array of the items
  40103   ``datetime.datetime``       naive: ``isoformat()`` text; aware: ``[naive isoformat() text,
                                      UTC offset in microseconds]`` (3.11's ``fromisoformat`` drops
                                      sub-second offsets, so the offset travels as a number)
  40104   ``datetime.date``           ``isoformat()`` text
  40105   ``decimal.Decimal``         ``str()`` text (keeps the exponent, ``-0``, NaN, infinities)
  40110   a ``@serializable``         ``[name, v1, v2, ...]``: the stable name, then the values of
          dataclass                   the ``init`` fields in declaration order
  40111   a ``@serializable`` enum    ``[name, value]``
  40112   an exception                ``[name, [args...], {declared field: value}]``
  ======  ==========================  ============================================================

Classes are named by :func:`parley.protocol.errors.type_name` (``"module:QualName"``) unless
registered with an explicit ``name``; give wire types an explicit name so they can move.

A dataclass is rebuilt by calling its constructor with the values positionally (keyword-only fields
by keyword). **Evolution rule: append new fields at the end, with defaults.** An old document then
has fewer values than the class has fields and the defaults fill the rest; a document with *more*
values than fields (written by a newer version) is refused. Never reorder, remove or retype fields.

Exceptions: every class in :data:`~parley.protocol.errors.EXCEPTION_TYPES` (``ParleyError`` and its
subclasses, users' ``FlowException`` subclasses, ``KilledFlowException``) carries its ``args``
and its *declared fields* (the names annotated on the classes of its MRO, except ``ClassVar`` ones
and names starting with ``_``). It is rebuilt without calling ``__init__``: ``cls.__new__(cls)``,
then ``args``, then the declared fields. Built-in exceptions (``builtins`` classes deriving from
``Exception``) carry only their args and are rebuilt with ``cls(*args)``. Causes and tracebacks
are not encoded.

Limits. A document is at most ``max_size`` bytes (default :data:`DEFAULT_MAX_SIZE`; checked before
decoding) and nests at most ``max_depth`` containers and tags (default :data:`DEFAULT_MAX_DEPTH`).
:func:`encode` refuses values nested deeper than the default depth allows, so whatever it produces
decodes with the defaults. The decoder also refuses trailing bytes, indefinite lengths, duplicate
map keys, maps as map keys, CBOR simple values and ``undefined``, and every tag not listed
above (regex 35, MIME 36, shared and string references 28/29/25/256, sets 258, IP addresses,
dates 0/1/100/1004, decimal fractions 4/5, rationals 30, complex numbers 43000, self-described
CBOR 55799, and all unknown tags).

Failures: :func:`encode` raises only :class:`~parley.protocol.errors.SerializationError` and
:func:`decode` only :class:`~parley.protocol.errors.DeserializationError`; messages name the type.
"""

from __future__ import annotations

import builtins
import dataclasses
import enum
import inspect
import io
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from operator import attrgetter
from typing import Any, ClassVar, TypeVar, get_origin, overload

import cbor2

from parley.protocol.errors import (
    EXCEPTION_TYPES,
    DeserializationError,
    SerializationError,
    type_name,
)

__all__ = [
    "DEFAULT_MAX_DEPTH",
    "DEFAULT_MAX_SIZE",
    "decode",
    "encode",
    "is_serializable",
    "serializable",
]

DEFAULT_MAX_SIZE: int = 1 << 20
"""Largest document :func:`decode` accepts by default (1 MiB, NATS' default ``max_payload``)."""

DEFAULT_MAX_DEPTH: int = 128
"""Deepest nesting of containers and tags :func:`decode` accepts by default."""

TAG_TUPLE = 40100
TAG_SET = 40101
TAG_FROZENSET = 40102
TAG_DATETIME = 40103
TAG_DATE = 40104
TAG_DECIMAL = 40105
TAG_OBJECT = 40110
TAG_ENUM = 40111
TAG_EXCEPTION = 40112

_T = TypeVar("_T")
_MICROSECOND = timedelta(microseconds=1)
_Encoder = cbor2.CBOREncoder
_EncodeHook = Callable[[_Encoder, Any], None]

#: Nesting ``encode`` allows. One level is kept free for a leaf tag (bigint, UUID, datetime, ...)
#: in the innermost container, so every encoded document decodes with ``DEFAULT_MAX_DEPTH``.
_MAX_ENCODE_DEPTH = DEFAULT_MAX_DEPTH - 1
#: Nesting depth per encoder in progress, keyed by ``id(encoder)``: cbor2 itself only limits the
#: nesting of tags, and it overflows the C stack (segfault) on a list nested ~10,000 deep.
_depths: dict[int, int] = {}


# --------------------------------------------------------------------------------------------
# Registry of @serializable classes
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class _Registration:
    cls: type
    name: str
    is_enum: bool
    #: The init fields of a dataclass, in declaration order (empty for an enum).
    fields: tuple[str, ...]
    #: Rebuild an instance from a decoded payload ``[name, v1, ...]`` (or ``[name, value]``).
    build: Callable[[Sequence[Any]], object]


_BY_NAME: dict[str, _Registration] = {}
_BY_TYPE: dict[type, _Registration] = {}
#: ``build`` of the registered dataclasses by name: the decoder's fast path.
_OBJECT_BUILDERS: dict[str, Callable[[Sequence[Any]], object]] = {}


@overload
def serializable(cls: type[_T], /) -> type[_T]: ...


@overload
def serializable(*, name: str | None = None) -> Callable[[type[_T]], type[_T]]: ...


def serializable(
    cls: type[_T] | None = None, /, *, name: str | None = None
) -> type[_T] | Callable[[type[_T]], type[_T]]:
    """Register a dataclass or an enum with the codec.

    Usable bare (``@serializable``) or with a stable wire name (``@serializable(name="p.Data")``).
    Put it *above* ``@dataclass``. Without a name the class is registered as ``"module:QualName"``.

    Raises:
        TypeError: the class is not a dataclass or an ``enum.Enum`` subclass, or its constructor
            does not take exactly its init fields.
        ValueError: another class is already registered under the name, or this class is
            already registered under another name.
    """

    def register(klass: type[_T]) -> type[_T]:
        _register(klass, name)
        return klass

    if cls is None:
        return register
    return register(cls)


def is_serializable(cls: type) -> bool:
    """Return whether :func:`encode` accepts instances of exactly ``cls``."""
    if cls in _BY_TYPE or cls in _ENCODERS:
        return True
    if _is_uuid_class(cls):
        return True
    if isinstance(cls, type) and issubclass(cls, BaseException):
        return _exception_name(cls) is not None
    return False


def _register(cls: type, name: str | None) -> None:
    if not isinstance(cls, type):
        raise TypeError(f"@serializable applies to classes, not to {cls!r}")
    stable = type_name(cls) if name is None else name
    if not isinstance(stable, str) or not stable:
        raise TypeError(f"@serializable name must be a non-empty string, not {stable!r}")
    if issubclass(cls, enum.Enum):
        registration = _Registration(cls, stable, True, (), _enum_builder(cls, stable))
        hook = _enum_encoder(stable)
    elif dataclasses.is_dataclass(cls):
        fields = _init_fields(cls)
        build = _object_builder(cls, stable, fields)
        registration = _Registration(cls, stable, False, fields, build)
        hook = _object_encoder(stable, fields)
    else:
        raise TypeError(
            f"@serializable accepts dataclasses and enum.Enum subclasses, not {type_name(cls)}"
            " (if it is a dataclass, put @serializable above @dataclass)"
        )
    existing = _BY_NAME.get(stable)
    if existing is not None:
        if existing.cls is cls:
            return
        raise ValueError(
            f"cannot register {type_name(cls)} as {stable!r}: "
            f"that name already belongs to {type_name(existing.cls)}"
        )
    if cls in _BY_TYPE:
        raise ValueError(f"{type_name(cls)} is already registered as {_BY_TYPE[cls].name!r}")
    _BY_NAME[stable] = registration
    _BY_TYPE[cls] = registration
    if not registration.is_enum:
        _OBJECT_BUILDERS[stable] = registration.build
    _ENCODERS[cls] = hook


def _init_fields(cls: type) -> tuple[str, ...]:
    """The init fields of a dataclass, checked against its constructor's signature."""
    fields = tuple(f.name for f in dataclasses.fields(cls) if f.init)
    kw_only = {f.name for f in dataclasses.fields(cls) if f.init and f.kw_only}
    try:
        params = list(inspect.signature(cls).parameters.values())
    except (TypeError, ValueError) as exc:  # pragma: no cover - dataclasses have signatures
        raise TypeError(f"cannot inspect the constructor of {type_name(cls)}: {exc}") from exc
    expected = [
        (
            f,
            inspect.Parameter.KEYWORD_ONLY
            if f in kw_only
            else inspect.Parameter.POSITIONAL_OR_KEYWORD,
        )
        for f in fields
    ]
    if [(p.name, p.kind) for p in params] != expected:
        raise TypeError(
            f"@serializable needs the constructor of {type_name(cls)} to take exactly its init "
            f"fields {list(fields)} (InitVar fields and custom __init__ methods are not supported)"
        )
    return fields


def _object_builder(
    cls: type, name: str, fields: tuple[str, ...]
) -> Callable[[Sequence[Any]], object]:
    kw_only = tuple(f.name for f in dataclasses.fields(cls) if f.init and f.kw_only)
    positional = len(fields) - len(kw_only)
    count = len(fields)

    def build(payload: Sequence[Any]) -> object:
        if len(payload) - 1 > count:
            raise DeserializationError(
                f"{name} has {count} fields but the data has {len(payload) - 1} values"
            )
        try:
            if not kw_only:
                return cls(*payload[1:])
            keywords = dict(zip(kw_only, payload[1 + positional :], strict=False))
            return cls(*payload[1 : 1 + positional], **keywords)
        except Exception as exc:
            raise DeserializationError(f"cannot rebuild {name}: {exc}") from exc

    return build


def _enum_builder(cls: type[enum.Enum], name: str) -> Callable[[Sequence[Any]], object]:
    def build(payload: Sequence[Any]) -> object:
        if len(payload) != 2:
            raise DeserializationError(f"enum {name} needs exactly one value")
        try:
            return cls(payload[1])
        except Exception as exc:
            raise DeserializationError(f"{payload[1]!r} is not a member of {name}") from exc

    return build


# --------------------------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------------------------


def encode(value: object, *, max_size: int = DEFAULT_MAX_SIZE) -> bytes:
    """Encode ``value`` (built from whitelisted types only) as CBOR.

    Raises:
        SerializationError: a type is not whitelisted (the message names it), the value nests
            deeper than :data:`DEFAULT_MAX_DEPTH` allows or is cyclic, or the encoding is longer
            than ``max_size`` bytes. Nothing else is raised.
    """
    try:
        data = cbor2.dumps(value, encoders=_ENCODERS)
    except SerializationError:
        raise
    except RecursionError as exc:
        raise SerializationError(
            f"cannot encode {type_name(type(value))}: nested too deep"
        ) from exc
    except Exception as exc:
        raise SerializationError(f"cannot encode {type_name(type(value))}: {exc}") from exc
    if len(data) > max_size:
        raise SerializationError(
            f"encoded {type_name(type(value))} is {len(data)} bytes, over the limit of {max_size}"
        )
    return data


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


def _is_uuid_class(cls: type) -> bool:
    # protocol/ must not import uuid, so recognise the class by name.
    module = getattr(cls, "__module__", None)
    return module == "uuid" and getattr(cls, "__qualname__", None) == "UUID"


def _exception_name(cls: type[BaseException]) -> str | None:
    """The stable name of an exception class the codec may carry, or ``None``."""
    name = cls.__dict__.get("parley_name") or type_name(cls)
    if EXCEPTION_TYPES.get(name) is cls:
        return name
    for other, klass in list(EXCEPTION_TYPES.items()):
        if klass is cls:
            return other
    if _builtin_exception(cls.__qualname__) is cls and cls.__module__ == "builtins":
        return type_name(cls)
    return None


def _builtin_exception(qualname: str) -> type[Exception] | None:
    cls = getattr(builtins, qualname, None)
    if isinstance(cls, type) and issubclass(cls, Exception) and cls.__module__ == "builtins":
        return cls
    return None


_declared_cache: dict[type, tuple[str, ...]] = {}


def _declared_fields(cls: type) -> tuple[str, ...]:
    """Names annotated on the classes of ``cls.__mro__``, minus ClassVars and ``_private`` ones."""
    cached = _declared_cache.get(cls)
    if cached is not None:
        return cached
    names: list[str] = []
    for klass in cls.__mro__:
        for field, hint in inspect.get_annotations(klass).items():
            if field.startswith("_") or field in names or _is_classvar(hint):
                continue
            names.append(field)
    result = _declared_cache[cls] = tuple(names)
    return result


def _is_classvar(hint: object) -> bool:
    if isinstance(hint, str):  # postponed annotations: "ClassVar[str | None]"
        head = hint.strip().split("[", 1)[0].strip()
        return head.rsplit(".", 1)[-1] == "ClassVar"
    return hint is ClassVar or get_origin(hint) is ClassVar


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


# --------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------


def decode(
    data: bytes, *, max_size: int = DEFAULT_MAX_SIZE, max_depth: int = DEFAULT_MAX_DEPTH
) -> object:
    """Decode one CBOR document made of whitelisted types.

    Raises:
        DeserializationError: ``data`` is not bytes, is longer than ``max_size``, is not exactly
            one well-formed CBOR item, nests deeper than ``max_depth``, uses indefinite lengths,
            duplicate map keys, a forbidden tag or simple value, names a type that is not
            registered (the message names it), or a registered class refuses the values.
            Nothing else is raised.
    """
    if not isinstance(data, bytes):
        raise DeserializationError(f"can only decode bytes, not {type_name(type(data))}")
    if len(data) > max_size:
        raise DeserializationError(f"document is {len(data)} bytes, over the limit of {max_size}")
    # Simple values and undefined have no hook in cbor2. Only documents holding one of their
    # initial bytes can contain one; those are decoded with hooks that look for them.
    strict = bool(data.translate(None, _NOT_SIMPLE_VALUE_BYTES))
    stream = io.BytesIO(data)
    try:
        value = cbor2.CBORDecoder(
            stream,
            read_size=max(len(data), 1),
            max_depth=max_depth,
            **(_STRICT_OPTIONS if strict else _FAST_OPTIONS),
        ).decode()
        if strict:
            _check_items((value,))
    except Exception as exc:
        raise _decode_error(exc) from exc
    # A seekable stream is rewound to the end of the item, so this finds trailing bytes.
    if stream.tell() != len(data):
        raise DeserializationError(
            f"{len(data) - stream.tell()} trailing bytes after the CBOR item"
        )
    return value


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

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

The code is split along these sections, with this module as the only one to import from:
:mod:`~parley.protocol.codec_registry` holds the tags, the limits, the ``@serializable`` registry
and the naming of exceptions; :mod:`~parley.protocol.codec_encoder` the encoder hooks;
:mod:`~parley.protocol.codec_decoder` the decoder hooks and checks.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import TypeVar, overload

import cbor2

from parley.protocol.codec_decoder import (
    _FAST_OPTIONS,
    _NOT_SIMPLE_VALUE_BYTES,
    _STRICT_OPTIONS,
    _check_items,
    _decode_error,
)
from parley.protocol.codec_encoder import (
    _ENCODERS,
    _EncodeHook,
    _enum_encoder,
    _object_encoder,
)
from parley.protocol.codec_registry import (
    _BY_TYPE,
    DEFAULT_MAX_DEPTH,
    DEFAULT_MAX_SIZE,
    TAG_DATE,
    TAG_DATETIME,
    TAG_DECIMAL,
    TAG_ENUM,
    TAG_EXCEPTION,
    TAG_FROZENSET,
    TAG_OBJECT,
    TAG_SET,
    TAG_TUPLE,
    _add_registration,
    _exception_name,
    _is_uuid_class,
    _make_registration,
)
from parley.protocol.errors import DeserializationError, SerializationError, type_name

__all__ = [
    "DEFAULT_MAX_DEPTH",
    "DEFAULT_MAX_SIZE",
    "TAG_DATE",
    "TAG_DATETIME",
    "TAG_DECIMAL",
    "TAG_ENUM",
    "TAG_EXCEPTION",
    "TAG_FROZENSET",
    "TAG_OBJECT",
    "TAG_SET",
    "TAG_TUPLE",
    "decode",
    "encode",
    "is_serializable",
    "serializable",
]

_T = TypeVar("_T")


# --------------------------------------------------------------------------------------------
# Registration
# --------------------------------------------------------------------------------------------


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
    registration = _make_registration(cls, name)
    hook: _EncodeHook
    if registration.is_enum:
        hook = _enum_encoder(registration.name)
    else:
        hook = _object_encoder(registration.name, registration.fields)
    if _add_registration(registration):
        _ENCODERS[cls] = hook


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

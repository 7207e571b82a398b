"""The codec's vocabulary: its tags and limits, the ``@serializable`` registry, exception naming.

Private to :mod:`parley.protocol.codec`, which re-exports the public names and documents the
contract (import from there). This is the bottom of the codec: :mod:`~parley.protocol.codec_encoder`
and :mod:`~parley.protocol.codec_decoder` both build on it and it imports neither.

* The tag numbers and the default limits.
* The registry of ``@serializable`` classes: :func:`_make_registration` checks a class and builds
  its rebuilder, :func:`_add_registration` files it under its name and type (the public
  ``serializable`` also installs the class's encoder hook).
* Which exception classes the codec carries, under which name, with which declared fields.
"""

from __future__ import annotations

import builtins
import dataclasses
import enum
import inspect
from collections.abc import Callable, Sequence
from typing import Any

from parley.protocol.errors import (
    EXCEPTION_TYPES,
    DeserializationError,
    declared_fields,
    type_name,
)

DEFAULT_MAX_SIZE: int = 1 << 20
"""Largest document :func:`~parley.protocol.codec.decode` accepts by default (1 MiB, NATS'
default ``max_payload``)."""

DEFAULT_MAX_DEPTH: int = 128
"""Deepest nesting of containers and tags :func:`~parley.protocol.codec.decode` accepts by
default."""

TAG_TUPLE = 40100
TAG_SET = 40101
TAG_FROZENSET = 40102
TAG_DATETIME = 40103
TAG_DATE = 40104
TAG_DECIMAL = 40105
TAG_OBJECT = 40110
TAG_ENUM = 40111
TAG_EXCEPTION = 40112


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


def _make_registration(cls: type, name: str | None) -> _Registration:
    """Check that ``cls`` can be registered and build its registration (nothing is filed yet).

    Raises:
        TypeError: ``cls`` is not a dataclass or an ``enum.Enum`` subclass, the name is not a
            non-empty string, or the constructor does not take exactly the init fields.
    """
    if not isinstance(cls, type):
        raise TypeError(f"@serializable applies to classes, not to {cls!r}")
    stable = type_name(cls) if name is None else name
    if not isinstance(stable, str) or not stable:
        raise TypeError(f"@serializable name must be a non-empty string, not {stable!r}")
    if issubclass(cls, enum.Enum):
        return _Registration(cls, stable, True, (), _enum_builder(cls, stable))
    if dataclasses.is_dataclass(cls):
        fields = _init_fields(cls)
        return _Registration(cls, stable, False, fields, _object_builder(cls, stable, fields))
    raise TypeError(
        f"@serializable accepts dataclasses and enum.Enum subclasses, not {type_name(cls)}"
        " (if it is a dataclass, put @serializable above @dataclass)"
    )


def _add_registration(registration: _Registration) -> bool:
    """File ``registration``; return ``False`` if its class already has exactly it.

    Raises:
        ValueError: another class is already registered under the name, or this class is
            already registered under another name.
    """
    cls, stable = registration.cls, registration.name
    existing = _BY_NAME.get(stable)
    if existing is not None:
        if existing.cls is cls:
            return False
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
    return True


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
# UUIDs and exceptions: whitelisted without registration
# --------------------------------------------------------------------------------------------


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


#: The declared fields of an exception class: see :func:`parley.protocol.errors.declared_fields`.
_declared_fields = declared_fields

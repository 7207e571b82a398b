"""From what a client sends to a flow object: the flow class by name, its arguments by type.

Rules:

* A flow class is found only among the classes already loaded on the node (its apps): a client
  can never make a node import a module. It must be marked ``@startable_by_rpc`` itself (the mark
  is not inherited). A bare class name (``Ping``) is accepted when exactly one startable flow has
  it; an unknown name gets the closest names the node has as suggestions.
* Arguments come typed (CBOR values, from programs) or as text (``text=True``, from the command
  line). Text is converted with the annotations of the flow's constructor: ``str``, ``int``,
  ``float``, ``Decimal``, ``bool`` (true/false, yes/no, 1/0), ``datetime``/``date`` (ISO 8601),
  ``UUID``, enums (by name or value), ``X | None`` (``null``/``none``), and JSON for lists,
  tuples, sets, dicts and ``@serializable`` dataclasses (a JSON object of their fields, nested
  fields converted by their own annotations). Typed arguments are checked against the same
  annotations (the outer type: ``list`` for ``list[int]``), so a wrong type is refused before the
  flow starts instead of failing inside it.
* Every refusal is a :class:`~parley.rpc.errors.BadArgument` naming the parameter and the type
  it expects, in one line.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import inspect
import json
import types
import typing
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Final, Union

from parley.flows.logic import FlowLogic
from parley.flows.marks import FLOW_CLASSES, RPC_MARK
from parley.protocol.errors import type_name
from parley.rpc.errors import BadArgument, NotStartable, UnknownFlowClass

__all__ = ["build_flow", "parse_text", "resolve_flow_class", "startable_flow_names"]

_TRUE: Final = frozenset({"true", "yes", "y", "1", "on"})
_FALSE: Final = frozenset({"false", "no", "n", "0", "off"})
_NONE: Final = frozenset({"null", "none", ""})


class _Mismatch(ValueError):
    """A value does not fit a type; ``path`` says where inside the argument."""

    def __init__(self, expected: str, got: object, path: str = "") -> None:
        super().__init__(expected)
        self.expected, self.got, self.path = expected, got, path


# ---------------------------------------------------------------------- flow classes


def startable_flow_names() -> list[str]:
    """The names of the loaded flow classes marked ``@startable_by_rpc``, sorted."""
    return sorted(name for name, cls in FLOW_CLASSES.items() if cls.__dict__.get(RPC_MARK))


def resolve_flow_class(name: str, node: str) -> type[FlowLogic[Any]]:
    """The startable flow class called ``name`` on this node.

    Raises:
        UnknownFlowClass: no loaded flow has that name (``details["suggestions"]``).
        NotStartable: the class is not marked ``@startable_by_rpc``.
    """
    cls = FLOW_CLASSES.get(name)
    if cls is None and ":" not in name:
        same = [n for n in FLOW_CLASSES if n.rpartition(":")[2] == name]
        startable = [n for n in same if FLOW_CLASSES[n].__dict__.get(RPC_MARK)]
        same = startable if startable else same
        if len(same) == 1:
            cls = FLOW_CLASSES[same[0]]
    if cls is None:
        suggestions = _close_names(name)
        hint = f": did you mean {' or '.join(suggestions)}?" if suggestions else ""
        raise UnknownFlowClass(
            f"node {node} has no flow class {name!r}{hint} (flows are named module:Class and "
            "must be in one of the node's apps)",
            flow=name,
            suggestions=suggestions,
        )
    if not cls.__dict__.get(RPC_MARK):
        raise NotStartable(
            f"{type_name(cls)} is not startable over RPC: mark it @startable_by_rpc",
            flow=type_name(cls),
        )
    return cls


def _close_names(name: str) -> list[str]:
    names = startable_flow_names()
    by_class = {n.rpartition(":")[2]: n for n in names}
    found = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
    found += [by_class[c] for c in difflib.get_close_matches(name.rpartition(":")[2], by_class)]
    return list(dict.fromkeys(found))[:3]


# ---------------------------------------------------------------------- building the flow


def build_flow(
    cls: type[FlowLogic[Any]],
    args: Sequence[object],
    kwargs: Mapping[str, object],
    *,
    text: bool,
) -> FlowLogic[Any]:
    """``cls(*args, **kwargs)``, the arguments converted (``text``) or checked by annotation.

    Raises:
        BadArgument: an argument does not fit, is missing or is one too many; or the
            constructor refused the values (its message is passed on).
    """
    flow = type_name(cls)
    signature, hints = _signature(cls)
    try:
        bound = signature.bind(*args, **kwargs)
    except TypeError as exc:
        raise BadArgument(f"{flow}{_describe(signature, hints)}: {exc}", flow=flow) from None
    for param_name, value in list(bound.arguments.items()):
        param = signature.parameters[param_name]
        hint = hints.get(param_name, Any)
        if param.kind is param.VAR_POSITIONAL:
            items = (_fit(flow, param_name, v, hint, text) for v in value)
            bound.arguments[param_name] = tuple(items)
        elif param.kind is param.VAR_KEYWORD:
            bound.arguments[param_name] = {
                k: _fit(flow, k, v, hint, text) for k, v in dict(value).items()
            }
        else:
            bound.arguments[param_name] = _fit(flow, param_name, value, hint, text)
    try:
        return cls(*bound.args, **bound.kwargs)
    except Exception as exc:
        raise BadArgument(f"{flow} refused its arguments: {exc}", flow=flow) from None


def _signature(cls: type) -> tuple[inspect.Signature, dict[str, Any]]:
    init: Callable[..., None] = cls.__init__  # type: ignore[misc]
    signature = inspect.signature(init)
    params = list(signature.parameters.values())[1:]  # without self
    try:
        hints = typing.get_type_hints(init)
    except Exception:  # an annotation that does not resolve: take those parameters as text
        hints = {}
    return signature.replace(parameters=params), hints


def _describe(signature: inspect.Signature, hints: Mapping[str, Any]) -> str:
    names = [
        f"{p.name}: {_label(hints.get(p.name, Any))}"
        for p in signature.parameters.values()
        if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    return f"({', '.join(names)})"


def _fit(flow: str, param: str, value: object, hint: Any, text: bool) -> object:
    try:
        if text:
            if not isinstance(value, str):
                raise _Mismatch("text", value)
            return _from_text(value, hint)
        return _checked(value, hint)
    except _Mismatch as exc:
        where = f"{param}{exc.path}"
        raise BadArgument(
            f"argument {where} of {flow} expects {exc.expected}, got {_show(exc.got)}",
            flow=flow,
            parameter=param,
            expected=exc.expected,
        ) from None


def _show(value: object) -> str:
    shown = repr(value)
    return shown if len(shown) <= 60 else shown[:57] + "..."


# ---------------------------------------------------------------------- text -> value


def parse_text(text: str, hint: Any) -> object:
    """``text`` as a value of type ``hint``, converted as flow arguments are.

    Raises:
        ValueError: it does not fit (the message names the type expected).
    """
    try:
        return _from_text(text, hint)
    except _Mismatch as exc:
        where = f" at {exc.path}" if exc.path else ""
        raise ValueError(f"expected {exc.expected}{where}, got {_show(exc.got)}") from None


def _from_text(text: str, hint: Any) -> object:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any or hint is str or hint is object:
        return text
    if origin in (Union, types.UnionType):
        return _from_union_text(text, hint, args)
    scalar = _SCALARS.get(hint)
    if scalar is not None:
        return scalar(text)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return _enum(text, hint)
    try:
        data = json.loads(text)
    except ValueError:
        raise _Mismatch(_label(hint), text) from None
    return _from_json(data, hint)


def _from_union_text(text: str, hint: Any, args: tuple[Any, ...]) -> object:
    if type(None) in args and text.strip().lower() in _NONE:
        return None
    for option in args:
        if option is type(None):
            continue
        try:
            return _from_text(text, option)
        except _Mismatch:
            continue
    raise _Mismatch(_label(hint), text)


def _int(text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise _Mismatch("int", text) from None


def _float(text: str) -> float:
    try:
        return float(text.strip())
    except ValueError:
        raise _Mismatch("float", text) from None


def _decimal(text: str) -> Decimal:
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise _Mismatch("Decimal", text) from None
    if not value.is_finite():
        raise _Mismatch("Decimal (a finite number)", text)
    return value


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise _Mismatch("bool (true or false)", text)


def _datetime(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text.strip())
    except ValueError:
        raise _Mismatch("datetime (ISO 8601, like 2025-01-31T12:00:00+00:00)", text) from None


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise _Mismatch("date (ISO 8601, like 2025-01-31)", text) from None


def _uuid(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text.strip())
    except ValueError:
        raise _Mismatch("UUID", text) from None


_SCALARS: dict[Any, Callable[[str], object]] = {
    int: _int,
    float: _float,
    Decimal: _decimal,
    bool: _bool,
    datetime: _datetime,
    date: _date,
    uuid.UUID: _uuid,
}


def _enum(value: object, hint: type[enum.Enum]) -> enum.Enum:
    for member in hint:
        if value in (member.name, member.value) or str(member.value) == value:
            return member
    names = ", ".join(m.name for m in hint)
    raise _Mismatch(f"{hint.__name__} (one of {names})", value)


# ---------------------------------------------------------------------- JSON -> value


def _from_json(data: object, hint: Any, path: str = "") -> object:
    try:
        return _json_value(data, hint, path)
    except _Mismatch as exc:
        if not exc.path:
            exc.path = path
        raise


def _json_value(data: object, hint: Any, path: str) -> object:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any or hint is object:
        return data
    if origin in (Union, types.UnionType):
        if data is None and type(None) in args:
            return None
        for option in (a for a in args if a is not type(None)):
            try:
                return _from_json(data, option, path)
            except _Mismatch:
                continue
        raise _Mismatch(_label(hint), data)
    if isinstance(data, str) and (hint in _SCALARS or _is_enum(hint)):
        return _from_text(data, hint)
    if hint is str:
        return _expect(data, str, "str")
    if hint is bool:
        return _expect(data, bool, "bool")
    if hint is int:
        if isinstance(data, bool) or not isinstance(data, int):
            raise _Mismatch("int", data)
        return data
    if hint in (float, Decimal):
        if isinstance(data, bool) or not isinstance(data, int | float):
            raise _Mismatch(_label(hint), data)
        return float(data) if hint is float else Decimal(str(data))
    if _is_enum(hint):
        return _enum(data, hint)
    if origin in (list, set, frozenset, tuple) or hint in (list, set, frozenset, tuple):
        return _json_sequence(data, hint, origin or hint, args, path)
    if origin is dict or hint is dict:
        return _json_dict(data, hint, args, path)
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return _json_dataclass(data, hint, path)
    raise _Mismatch(_label(hint), data)


def _is_enum(hint: Any) -> bool:
    return isinstance(hint, type) and issubclass(hint, enum.Enum)


def _expect(data: object, cls: type, label: str) -> object:
    if type(data) is not cls:
        raise _Mismatch(label, data)
    return data


def _json_sequence(data: object, hint: Any, kind: Any, args: tuple[Any, ...], path: str) -> object:
    if not isinstance(data, list):
        raise _Mismatch(f"{_label(hint)} (a JSON array)", data)
    if kind is tuple and args and args[-1] is not Ellipsis:
        if len(args) != len(data):
            raise _Mismatch(f"{_label(hint)} ({len(args)} items)", data)
        pairs = enumerate(zip(data, args, strict=True))
        return tuple(_from_json(v, t, f"{path}[{i}]") for i, (v, t) in pairs)
    item = args[0] if args else Any
    items = [_from_json(v, item, f"{path}[{i}]") for i, v in enumerate(data)]
    return kind(items) if kind is not list else items


def _json_dict(data: object, hint: Any, args: tuple[Any, ...], path: str) -> object:
    if not isinstance(data, dict):
        raise _Mismatch(f"{_label(hint)} (a JSON object)", data)
    key_type, value_type = args if len(args) == 2 else (Any, Any)
    return {
        _from_text(k, key_type) if key_type is not Any else k: _from_json(
            v, value_type, f"{path}[{k!r}]"
        )
        for k, v in data.items()
    }


def _json_dataclass(data: object, hint: type, path: str) -> object:
    fields = {f.name: f for f in dataclasses.fields(hint) if f.init}
    if not isinstance(data, dict):
        raise _Mismatch(f"{hint.__name__} (a JSON object with {', '.join(fields)})", data)
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise _Mismatch(f"{hint.__name__} (fields {', '.join(fields)})", unknown[0])
    try:
        hints = typing.get_type_hints(hint)
    except Exception:
        hints = {}
    values = {
        name: _from_json(value, hints.get(name, Any), f"{path}.{name}")
        for name, value in data.items()
    }
    try:
        return hint(**values)
    except Exception as exc:
        raise _Mismatch(f"{hint.__name__} ({exc})", data) from None


# ---------------------------------------------------------------------- typed values


def _checked(value: object, hint: Any) -> object:
    """``value`` if it fits ``hint`` at the outer level (items are the flow's business)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any or hint is object:
        return value
    if origin in (Union, types.UnionType):
        for option in args:
            try:
                return _checked(value, option)
            except _Mismatch:
                continue
        raise _Mismatch(_label(hint), value)
    if hint is type(None):
        if value is None:
            return value
        raise _Mismatch("None", value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tuple in (hint, origin) and isinstance(value, list):
        return tuple(value)  # CBOR clients without a tuple tag send arrays
    cls = origin or hint
    if not isinstance(cls, type):
        return value  # a Literal, a NewType, a TypeVar...: the flow checks it
    if cls is int and isinstance(value, bool):
        raise _Mismatch("int", value)
    if not isinstance(value, cls):
        raise _Mismatch(_label(hint), value)
    return value


def _label(hint: Any) -> str:
    """A type as a person reads it: ``int``, ``list[str]``, ``Decimal | None``."""
    if hint is Any:
        return "any value"
    if hint is type(None):
        return "None"
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        return " | ".join(_label(a) for a in args)
    if origin is not None:
        inner = ", ".join("..." if a is Ellipsis else _label(a) for a in args)
        return f"{getattr(origin, '__name__', str(origin))}[{inner}]"
    return getattr(hint, "__name__", str(hint))

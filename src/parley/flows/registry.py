"""Flow registration: ``@initiating_flow``, ``@initiated_by``, ``@startable_by_rpc``, registries.

Every subclass of :class:`~parley.flows.logic.FlowLogic` is known by its stable name
``"module:QualName"`` as soon as its module is imported. A node decides which *responders* it runs
through its :class:`FlowRegistry`: by default every ``@initiated_by`` class imported in the process
(the apps named in its configuration), and tests can register or remove responders per node.

Names that arrive in a peer's session-init are resolved only against classes already imported:
a peer can never make a node import a module.

Version negotiation. A session-init carries the initiating flow's version (``@initiating_flow(
version=N)``). A responder serves the initiator versions from its ``min_version`` (1 unless
registered otherwise) up to the newest this node knows: the larger of the version it reports in
its Confirm and the version of the initiating class loaded here. An init outside that range is
rejected with a reason naming both (:meth:`Responder.refusal`); the node never confirms a version
it does not serve. Within the range the responder confirms with its own version, and each side
can read the other's with ``get_counterparty_flow_info()`` to adapt.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import import_module
from types import ModuleType
from typing import Any, TypeVar, overload

from parley.flows.logic import FlowLogic
from parley.flows.marks import (
    DECLARED_RESPONDERS,
    FLOW_CLASSES,
    INITIATING_MARK,
    RPC_MARK,
    flow_version,
    initiating_class,
)
from parley.protocol.errors import FlowUsageError, ParleyError, type_name

F = TypeVar("F", bound=type)


class SessionInitRejected(ParleyError):
    """This node will not start a responder for a session-init (the reason goes to the peer)."""


class UnknownFlowClass(SessionInitRejected):
    """A session-init names a class this node has never heard of (its app may not be deployed).

    The hospital keeps such inits for observation: deploy the app and retry, or kill the init.
    """


@overload
def initiating_flow(cls: F, /) -> F: ...
@overload
def initiating_flow(*, version: int = 1) -> Callable[[F], F]: ...
def initiating_flow(cls: F | None = None, /, *, version: int = 1) -> F | Callable[[F], F]:
    """Mark a flow as one that may open sessions (``initiate_flow``) — Corda's ``@InitiatingFlow``.

    ``version`` (>= 1) travels in the session-init; both sides can read the other's with
    ``session.get_counterparty_flow_info()``. A class hierarchy may carry the mark only once.
    """
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise FlowUsageError(f"@initiating_flow version must be an int >= 1, got {version!r}")

    def mark(klass: F) -> F:
        _require_flow(klass, "@initiating_flow")
        inherited = initiating_class(klass)
        if inherited is not None:
            raise FlowUsageError(
                f"{type_name(klass)} is annotated with @initiating_flow but already inherits it "
                f"from {type_name(inherited)}: a flow hierarchy may carry @initiating_flow once"
            )
        setattr(klass, INITIATING_MARK, version)
        return klass

    return mark(cls) if cls is not None else mark


def initiated_by(initiator: type) -> Callable[[F], F]:
    """Register the decorated flow as the responder to ``initiator`` (an ``@initiating_flow``).

    The responder's constructor takes the :class:`~parley.flows.session.FlowSession`.
    """
    initiating = initiating_class(initiator)
    if initiating is None:
        raise FlowUsageError(
            f"@initiated_by({type_name(initiator)}): "
            "that flow is not annotated with @initiating_flow"
        )

    def register(klass: F) -> F:
        _require_flow(klass, "@initiated_by")
        DECLARED_RESPONDERS[type_name(initiating)] = klass
        return klass

    return register


def startable_by_rpc(cls: F) -> F:
    """Allow clients (CLI, RPC) to start this flow by name."""
    _require_flow(cls, "@startable_by_rpc")
    setattr(cls, RPC_MARK, True)
    return cls


#: Attribute of a class marked with :func:`scheduled`: ``(name, every, missed)``.
SCHEDULE_MARK = "_parley_scheduled"


def scheduled(
    every: float, *, name: str | None = None, missed: str = "run_once"
) -> Callable[[F], F]:
    """Start this flow every ``every`` seconds on each node that loads its app.

    The flow's constructor must take no arguments. The schedule is created when a node first
    starts with the app (its first tick ``every`` seconds later) and kept in the node's database;
    ``missed`` says what a node that was down does with the ticks it missed (``"run_once"``,
    ``"catch_up"`` or ``"skip"``). Each tick starts exactly one flow (see ``Node.schedule``).

    Args:
        every: seconds between ticks.
        name: the schedule's name (default: the flow class's qualified name).
        missed: the policy for ticks missed while the node was down.
    """

    def mark(cls: F) -> F:
        _require_flow(cls, "@scheduled")
        setattr(cls, SCHEDULE_MARK, (name or cls.__qualname__, every, missed))
        return cls

    return mark


def _require_flow(klass: type, decorator: str) -> None:
    if not (isinstance(klass, type) and issubclass(klass, FlowLogic)):
        raise FlowUsageError(f"{decorator} applies to FlowLogic subclasses, not {klass!r}")


@dataclass(frozen=True, slots=True)
class Responder:
    """The responder a node starts for a session-init, the flow version it reports, and the
    initiator versions it serves (see the module docstring)."""

    flow_class: type[FlowLogic[Any]]
    version: int
    #: The oldest initiator version served.
    min_version: int = 1
    #: The newest initiator version served; ``0`` means ``version``.
    max_version: int = 0

    def refusal(self, flow_class: str, version: int) -> str | None:
        """Why a session-init of ``flow_class`` at ``version`` is refused, or ``None``.

        Args:
            flow_class: the initiating flow's name, as the init gives it.
            version: the initiator's flow version, as the init gives it.
        """
        newest = self.max_version or self.version
        if self.min_version <= version <= newest:
            return None
        return (
            f"{flow_class} version {version} is not supported here "
            f"(this node serves versions {self.min_version} to {newest})"
        )


class FlowRegistry:
    """The responders one node runs, and the resolution of flow names."""

    def __init__(self, responders: dict[str, Responder] | None = None) -> None:
        self._responders: dict[str, Responder] = dict(responders or {})

    @classmethod
    def default(cls) -> FlowRegistry:
        """Every responder declared with ``@initiated_by`` in an imported module."""
        return cls({name: _responder(name, r) for name, r in DECLARED_RESPONDERS.items()})

    @classmethod
    def from_apps(cls, apps: Iterable[str | ModuleType]) -> FlowRegistry:
        """Import the apps (modules named by the operator) and register their responders."""
        modules = [import_module(a) if isinstance(a, str) else a for a in apps]
        names = {m.__name__ for m in modules}
        registry = cls()
        for initiator, responder in DECLARED_RESPONDERS.items():
            module = responder.__module__
            if module in names or any(module.startswith(n + ".") for n in names):
                registry._responders[initiator] = _responder(initiator, responder)
        return registry

    def register(
        self,
        initiator: type | str,
        responder: type,
        *,
        version: int | None = None,
        min_version: int = 1,
    ) -> None:
        """Run ``responder`` for session-inits of ``initiator`` on this node.

        Args:
            initiator: the initiating flow (or its name ``"module:QualName"``).
            responder: the flow to start; its constructor takes the session.
            version: the flow version its Confirm reports (default: the initiating flow's).
            min_version: the oldest initiator version it serves; older inits are rejected.

        Raises:
            FlowUsageError: ``responder`` is not a flow, ``initiator`` is not an initiating
                flow, or ``min_version`` is below 1 or above the newest version served.
        """
        _require_flow(responder, "register")
        if isinstance(initiator, str):
            name = initiator
        else:
            initiating = initiating_class(initiator)
            if initiating is None:
                raise FlowUsageError(
                    f"{type_name(initiator)} is not annotated with @initiating_flow"
                )
            name = type_name(initiating)
        declared = _declared_version(name)
        reported = version or declared
        newest = max(reported, declared)
        if isinstance(min_version, bool) or not 1 <= min_version <= newest:
            raise FlowUsageError(
                f"min_version must be between 1 and {newest} (the newest version of {name} "
                f"served here), got {min_version!r}"
            )
        self._responders[name] = Responder(responder, reported, min_version, newest)

    def unregister(self, initiator: type | str) -> None:
        name = (
            initiator
            if isinstance(initiator, str)
            else type_name(initiating_class(initiator) or initiator)
        )
        self._responders.pop(name, None)

    def responders(self) -> dict[str, Responder]:
        return dict(self._responders)

    def responder_for(self, flow_class: str) -> Responder:
        """The responder for a session-init naming ``flow_class``.

        Raises:
            UnknownFlowClass: no class of that name is loaded here (the app is not deployed).
            SessionInitRejected: the class is loaded but is not a flow, or has no responder here.
        """
        responder = self._responders.get(flow_class)
        if responder is not None:
            return responder
        if flow_class in FLOW_CLASSES:
            raise SessionInitRejected(f"{flow_class} is not registered")
        if _resolve_loaded(flow_class) is not None:
            raise SessionInitRejected(f"{flow_class} is not a flow")
        raise UnknownFlowClass(f"Don't know {flow_class}")


def flow_class_named(name: str) -> type[FlowLogic[Any]]:
    """The FlowLogic subclass called ``name`` (already imported).

    Raises:
        FlowUsageError: no flow of that name is loaded.
    """
    cls = FLOW_CLASSES.get(name)
    if cls is None:
        raise FlowUsageError(f"no flow class named {name!r} is loaded on this node")
    return cls


def _responder(initiator: str, responder: type[FlowLogic[Any]]) -> Responder:
    """A declared responder: it reports, and serves up to, the initiating flow's version."""
    return Responder(responder, _declared_version(initiator))


def _declared_version(initiator: str) -> int:
    cls = FLOW_CLASSES.get(initiator)
    return flow_version(cls) if cls is not None else 1


def _resolve_loaded(name: str) -> object | None:
    module_name, _, qualname = name.partition(":")
    module = sys.modules.get(module_name)
    if module is None or not qualname:
        return None
    obj: object = module
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj if isinstance(obj, type) else None


__all__ = [
    "FlowRegistry",
    "Responder",
    "SessionInitRejected",
    "UnknownFlowClass",
    "flow_class_named",
    "initiated_by",
    "initiating_flow",
    "startable_by_rpc",
]

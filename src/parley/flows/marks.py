"""The marks a flow class carries, readable without importing the flow API: a leaf module.

Every subclass of :class:`~parley.flows.logic.FlowLogic` is known by its stable name
``"module:QualName"`` (:data:`FLOW_CLASSES`) as soon as its module is imported; the decorators of
:mod:`parley.flows.registry` record initiators and responders here. :func:`frame_for` turns a
class's marks into the sub-flow stack entry the state machine keeps.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from parley.protocol.errors import type_name
from parley.protocol.state import SubFlowFrame

if TYPE_CHECKING:
    from parley.flows.logic import FlowLogic

#: Every FlowLogic subclass imported in this process, by stable name.
FLOW_CLASSES: dict[str, type[FlowLogic[Any]]] = {}
#: Responders declared with ``@initiated_by``: initiating flow name -> responder class.
DECLARED_RESPONDERS: dict[str, type[FlowLogic[Any]]] = {}
#: The class attribute ``@initiating_flow`` sets (its value is the flow version).
INITIATING_MARK = "_parley_initiating"
#: The class attribute ``@startable_by_rpc`` sets.
RPC_MARK = "_parley_rpc"
#: The class attribute of flows that write no checkpoints while they run (``IdempotentFlow``).
IDEMPOTENT_MARK = "_parley_idempotent"
#: Attribute of a ``TimedFlow`` class: seconds its receives wait before it is retried (its
#: ``timeout``). Only ``TimedFlow`` has it: another flow's own ``timeout`` attribute is not a mark.
TIMED_MARK = "_parley_timed"


def initiating_class(cls: type) -> type | None:
    """The class in ``cls``'s hierarchy that carries ``@initiating_flow``, if any."""
    for klass in cls.__mro__:
        if INITIATING_MARK in klass.__dict__:
            return klass
    return None


def flow_version(cls: type) -> int:
    """The version ``@initiating_flow(version=N)`` gave ``cls``'s hierarchy (1 by default)."""
    klass = initiating_class(cls)
    return int(klass.__dict__[INITIATING_MARK]) if klass is not None else 1


def frame_for(cls: type) -> SubFlowFrame:
    """The sub-flow stack entry for a flow of class ``cls``."""
    initiating = initiating_class(cls)
    return SubFlowFrame(
        flow_class=type_name(cls),
        initiating=type_name(initiating) if initiating is not None else None,
        version=flow_version(cls),
        idempotent=bool(getattr(cls, IDEMPOTENT_MARK, False)),
    )


__all__ = [
    "DECLARED_RESPONDERS",
    "FLOW_CLASSES",
    "IDEMPOTENT_MARK",
    "INITIATING_MARK",
    "RPC_MARK",
    "TIMED_MARK",
    "flow_version",
    "frame_for",
    "initiating_class",
]

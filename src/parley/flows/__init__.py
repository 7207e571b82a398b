"""The user-facing flow API: flows, sessions, registration decorators and progress tracking."""

from parley.flows.context import FlowContext, Suspend
from parley.flows.logic import (
    FlowDatabase,
    FlowLogic,
    FlowServices,
    IdempotentFlow,
    TimedFlow,
)
from parley.flows.progress import ProgressChange, ProgressTracker, Step
from parley.flows.registry import (
    FlowRegistry,
    Responder,
    SessionInitRejected,
    UnknownFlowClass,
    flow_class_named,
    initiated_by,
    initiating_flow,
    scheduled,
    startable_by_rpc,
)
from parley.flows.session import FlowSession, UntrustworthyData

__all__ = [
    "FlowContext",
    "FlowDatabase",
    "FlowLogic",
    "FlowRegistry",
    "FlowServices",
    "FlowSession",
    "IdempotentFlow",
    "ProgressChange",
    "ProgressTracker",
    "Responder",
    "SessionInitRejected",
    "Step",
    "Suspend",
    "TimedFlow",
    "UnknownFlowClass",
    "UntrustworthyData",
    "flow_class_named",
    "initiated_by",
    "initiating_flow",
    "scheduled",
    "startable_by_rpc",
]

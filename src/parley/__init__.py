"""Parley: durable, peer-to-peer, multi-party flows.

Write flows as plain ``async def`` code; Parley checkpoints them at every suspension, delivers
their messages exactly once, and restores them after crashes. See ``docs/flows.md``.
"""

from parley.flows import (
    FlowLogic,
    FlowSession,
    IdempotentFlow,
    ProgressChange,
    ProgressTracker,
    Step,
    TimedFlow,
    UntrustworthyData,
    initiated_by,
    initiating_flow,
    scheduled,
    startable_by_rpc,
)
from parley.protocol.codec import serializable
from parley.protocol.errors import (
    DeserializationError,
    FlowException,
    FlowTimeoutException,
    FlowUsageError,
    HospitalizeFlowException,
    KilledFlowException,
    NonDeterministicFlowError,
    ParleyError,
    ReceiveTimeoutException,
    SerializationError,
    SignalTimeoutException,
    UnexpectedFlowEndException,
    UnexpectedPayloadError,
    UnknownPartyException,
)
from parley.protocol.messages import FlowInfo

__all__ = [
    "DeserializationError",
    "FlowException",
    "FlowInfo",
    "FlowLogic",
    "FlowSession",
    "FlowTimeoutException",
    "FlowUsageError",
    "HospitalizeFlowException",
    "IdempotentFlow",
    "KilledFlowException",
    "NonDeterministicFlowError",
    "ParleyError",
    "ProgressChange",
    "ProgressTracker",
    "ReceiveTimeoutException",
    "SerializationError",
    "SignalTimeoutException",
    "Step",
    "TimedFlow",
    "UnexpectedFlowEndException",
    "UnexpectedPayloadError",
    "UnknownPartyException",
    "UntrustworthyData",
    "initiated_by",
    "initiating_flow",
    "scheduled",
    "serializable",
    "startable_by_rpc",
]

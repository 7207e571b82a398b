"""The state machine's single entry point: ``transition(state, event) -> Transition``.

Rules of the machine
--------------------
1. ``transition`` is pure: the same state and event always give the same result; it does no I/O,
   reads no clock and draws no random numbers. Whatever must not change on replay (time, random
   values, session ids) arrives in events or is derived from the state.
2. States are never mutated; every change is a ``dataclasses.replace``.
3. A removed flow ignores everything. A killed flow is removed by the kill itself.
4. An errored flow ignores its code's events and waits for the hospital's verdict
   (:mod:`.error`).
5. Events are dispatched by type to one module per family: starting and suspending
   (:mod:`.suspend`), the pending work (:mod:`.remaining_work`), deliveries and revoked peers
   (:mod:`.deliver`), events from the running code (:mod:`.immediate`), completions
   (:mod:`.completion`), finishing (:mod:`.finish`), errors, the hospital's verdicts and kills
   (:mod:`.error`) and passivation (:mod:`.passivate`).
6. An event that can't happen in the state (say, a suspension while already suspended) raises
   :class:`~parley.protocol.errors.ProtocolViolation`: that is a bug in the driver, never in user
   code, and it is the only exception ``transition`` raises.
7. The actions of a result obey the ordering contract in :mod:`parley.protocol.actions`.
"""

from __future__ import annotations

from typing import assert_never

from parley.protocol.actions import Transition
from parley.protocol.events import (
    ActionFailed,
    DoRemainingWork,
    Event,
    FlowFailed,
    FlowFinished,
    InitiateFlow,
    KeepForObservation,
    KillRequested,
    OperationCompleted,
    OperationFailed,
    PassivationRequested,
    PeerRevoked,
    RetryFromCheckpoint,
    SessionMessageDelivered,
    SignalArrived,
    SignalRead,
    StartErrorPropagation,
    SubFlowEntered,
    SubFlowLeft,
    Suspended,
    TimedOut,
    ValueRecorded,
    WokeUp,
)
from parley.protocol.state import FlowState
from parley.protocol.transitions import (
    completion,
    deliver,
    error,
    finish,
    immediate,
    passivate,
    suspend,
)
from parley.protocol.transitions.remaining_work import pending_work
from parley.protocol.transitions.suspend import restore_pending


def transition(state: FlowState, event: Event) -> Transition:
    """Compute what ``event`` does to the flow in ``state``.

    Raises:
        ProtocolViolation: the event can't happen in this state (a driver bug).
    """
    if state.removed:
        return Transition(state)
    match event:
        case DoRemainingWork():
            return _remaining_work(state)
        case SessionMessageDelivered():
            return deliver.delivered(state, event)
        case Suspended():
            return suspend.suspended(state, event)
        case FlowFinished():
            return finish.flow_finished(state, event)
        case FlowFailed():
            return error.flow_failed(state, event)
        case InitiateFlow():
            return immediate.initiate_flow(state, event)
        case SubFlowEntered():
            return immediate.subflow_entered(state, event)
        case SubFlowLeft():
            return immediate.subflow_left(state, event)
        case ValueRecorded():
            return immediate.value_recorded(state, event)
        case OperationCompleted():
            return completion.operation_completed(state, event)
        case OperationFailed():
            return completion.operation_failed(state, event)
        case WokeUp():
            return completion.woke_up(state, event)
        case StartErrorPropagation():
            return error.start_error_propagation(state, event)
        case RetryFromCheckpoint():
            return error.retry_from_checkpoint(state)
        case KeepForObservation():
            return error.keep_for_observation(state, event)
        case KillRequested():
            return error.kill_requested(state)
        case ActionFailed():
            return error.action_failed(state, event)
        case PassivationRequested():
            return passivate.passivation_requested(state)
        case PeerRevoked():
            return deliver.peer_revoked(state, event)
        case SignalRead():
            return completion.signal_read(state, event)
        case SignalArrived():
            return completion.signal_arrived(state, event)
        case TimedOut():
            return completion.timed_out(state, event)
        case _:
            assert_never(event)


def _remaining_work(state: FlowState) -> Transition:
    if state.errors is not None:
        return error.errored_work(state)
    if not state.started:
        return suspend.start(state)
    if state.finishing is not None:
        return finish.finishing_work(state)
    if state.pending is None:
        return Transition(state)  # the flow's code is running, or it is being restored
    return pending_work(state, state.pending)


__all__ = ["restore_pending", "transition"]

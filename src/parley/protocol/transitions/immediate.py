"""Events processed while the flow's code is running: initiate, sub-flows, recorded values.

These never touch the network or the store. They resume the flow at once with their answer.
"""

from __future__ import annotations

from parley.protocol import codec
from parley.protocol.actions import Resume, Transition
from parley.protocol.errors import FlowUsageError, SerializationError, UnknownPartyException
from parley.protocol.events import InitiateFlow, SubFlowEntered, SubFlowLeft, ValueRecorded
from parley.protocol.evolve import replace
from parley.protocol.messages import is_node_name
from parley.protocol.state import Entry, FlowState, SessionState, SessionStatus, session_id_for
from parley.protocol.transitions.common import require, resume, throw


def _running(state: FlowState, what: str) -> None:
    require(
        state.started and state.pending is None and not state.removed and state.errors is None,
        f"{what} while the flow is not running",
    )


def initiate_flow(state: FlowState, event: InitiateFlow) -> Transition:
    """Create an uninitiated session to ``destination``; nothing is sent until it is used."""
    _running(state, "initiate_flow")
    key = f"initiate {event.destination}"
    frame = next((f for f in reversed(state.subflows) if f.initiating is not None), None)
    if frame is None:
        return _fail(
            state,
            key,
            FlowUsageError(
                f"initiate_flow() called in {_innermost(state)}, which is not annotated with "
                "@initiating_flow (nor is any enclosing flow)"
            ),
        )
    if not is_node_name(event.destination):
        return _fail(
            state, key, FlowUsageError(f"Could not resolve destination: {event.destination!r}")
        )
    if event.refusal is not None:
        # Deterministic like the usage errors: journaled, so a replay raises it again here.
        refused = UnknownPartyException(
            f"Can't open a session with {event.destination}: {event.refusal}", event.destination
        )
        return throw(state, key, refused)
    session_id = session_id_for(state.flow_id, state.session_count)
    session = SessionState(
        session_id=session_id,
        peer=event.destination,
        status=SessionStatus.UNINITIATED,
        initiating_flow=frame.initiating,
        flow_version=frame.version,
    )
    state = replace(state.with_session(session), session_count=state.session_count + 1)
    return resume(state, key, session_id)


def _innermost(state: FlowState) -> str:
    return state.subflows[-1].flow_class if state.subflows else state.flow_class


def _fail(state: FlowState, key: str, error: FlowUsageError) -> Transition:
    # Usage errors are raised in the flow's code at the call; they are deterministic, so they are
    # journaled like any other outcome and replay raises them again at the same point.
    return throw(state, key, error)


def subflow_entered(state: FlowState, event: SubFlowEntered) -> Transition:
    _running(state, "sub_flow")
    return Transition(replace(state, subflows=(*state.subflows, event.frame)), (), Resume(None))


def subflow_left(state: FlowState, event: SubFlowLeft) -> Transition:
    _running(state, "leaving a sub-flow")
    require(len(state.subflows) > 1, "left a sub-flow with none entered")
    return Transition(replace(state, subflows=state.subflows[:-1]), (), Resume(None))


def value_recorded(state: FlowState, event: ValueRecorded) -> Transition:
    """Record a value the flow must see again on replay (``now()``, ``random()``, ``uuid()``)."""
    _running(state, "recording a value")
    try:
        outcome = codec.encode(event.value)
    except SerializationError as exc:
        return throw(state, event.key, exc)
    return Transition(state.with_journal(Entry(event.key, outcome)), (), Resume(event.value))


__all__ = ["initiate_flow", "subflow_entered", "subflow_left", "value_recorded"]

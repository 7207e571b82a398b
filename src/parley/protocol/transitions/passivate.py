"""Passivation: take a waiting flow out of memory; its checkpoint is enough to bring it back.

Only a flow that waits — on a receive, a sleep, a session confirmation, an operation of another
incarnation — can go. A checkpoint is written first (its header records what the pending request
already sent, the messages delivered so far and the journal), and the deliveries are acked after it,
so nothing held in memory is lost — unless nothing was consumed since the last checkpoint, which
then is enough. A flow that is running, errored, finishing or inside an idempotent sub-flow stays
(the host tries again later).
"""

from __future__ import annotations

from parley.protocol.actions import Passivate, Transition
from parley.protocol.evolve import replace
from parley.protocol.requests import Execute, Query
from parley.protocol.state import FlowState
from parley.protocol.transitions.common import checkpoint


def passivation_requested(state: FlowState) -> Transition:
    pending = state.pending
    if (
        pending is None
        or not state.started
        or state.errors is not None
        or state.finishing is not None
        or state.idempotent
        or state.restored_pending is not None
        or isinstance(pending.request, Execute | Query)  # its result would come back to nobody
    ):
        return Transition(state)
    if state.persisted and not (state.deliveries or state.journal_tail or state.writes):
        # Nothing was consumed since the last checkpoint: it is the flow. (What the pending
        # request sent since then is sent again by the restored flow, under the same ids.)
        return Transition(replace(state, removed=True), (Passivate(),))
    state, actions = checkpoint(state)
    return Transition(replace(state, removed=True), (*actions, Passivate()))


__all__ = ["passivation_requested"]

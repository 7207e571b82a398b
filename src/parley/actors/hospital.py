"""The node's Hospital actor: every worker's errored flows are admitted to one hospital.

The policy (staff, diagnosis, backoff) is :class:`parley.engine.hospital.Hospital`, which
MockNetwork uses in-process; this actor gives a node one instance of it on its own thread, so that
budgets and records are per node, not per worker.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from datetime import datetime

import pykka

from parley.actors.base import Actor
from parley.engine.hospital import Admission, Hospital, Verdict
from parley.protocol.state import FlowState

log = logging.getLogger("parley.hospital")


@dataclass(frozen=True, slots=True)
class _Admit:
    state: FlowState
    now: datetime
    verdict: Verdict


@dataclass(frozen=True, slots=True)
class _Discharge:
    flow_id: str


class HospitalActor(Actor):
    """The node's one hospital: every worker's errored flows are admitted here."""

    def __init__(self, hospital: Hospital) -> None:
        super().__init__()
        self.hospital = hospital

    def on_receive(self, message: object) -> object:
        match message:
            case _Admit(state=state, now=now, verdict=verdict):
                try:
                    self.hospital.admit(state, now, verdict)
                except Exception:
                    # A bug in the policy or a verdict callback must not stop the node's only
                    # hospital: the flow stays errored (it is retried at the next restart).
                    log.exception("admitting flow %s failed", state.flow_id)
            case _Discharge(flow_id=flow_id):
                self.hospital.discharge(flow_id)
            case "records":
                return list(self.hospital.records)
        return None


class ActorHospital:
    """A :class:`HospitalPort` that forwards to a :class:`HospitalActor` (never blocks)."""

    def __init__(self, ref: pykka.ActorRef[HospitalActor]) -> None:
        self.ref = ref

    def admit(self, state: FlowState, now: datetime, verdict: Verdict) -> None:
        try:
            self.ref.tell(_Admit(state, now, verdict))
        except pykka.ActorDeadError:  # the node is stopping: the flow is retried at its restart
            log.info("hospital stopped; flow %s waits for the next start", state.flow_id)

    def discharge(self, flow_id: str) -> None:
        with contextlib.suppress(pykka.ActorDeadError):
            self.ref.tell(_Discharge(flow_id))

    def records(self, timeout: float = 5.0) -> list[Admission]:
        result = self.ref.ask("records", timeout=timeout)
        assert isinstance(result, list)
        return result


__all__ = ["ActorHospital", "HospitalActor"]

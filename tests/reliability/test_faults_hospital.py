"""Flows kept for observation: what is stored, restarts, operator retries and kills.

Every node keeps its database in a file (``MockNetwork(data_dir=tmp_path)``), so what a test reads
is what a restarted node finds.

Left out:

* Clearing a parked flow's error record when it is restored: Parley keeps every admission of a
  flow while it lives (an operator reads its history), so a re-run adds to it.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from parley import (
    FlowLogic,
    FlowSession,
    HospitalizeFlowException,
    KilledFlowException,
    initiated_by,
    initiating_flow,
)
from parley.protocol.records import FlowStatus
from parley.testing import FlowHospitalized, MockNetwork, MockNode

BROKEN = {"now": True}
RUNS: list[str] = []


def stored_status(node: MockNode, flow_id: str) -> list[tuple[object, ...]]:
    return node.store.query("SELECT status FROM flow_header WHERE flow_id = ?", (flow_id,))


TABLES = ("flow_start", "flow_header", "journal", "hospital_admission", "flow_result")
NOTHING = dict.fromkeys(TABLES, 0)


def rows_of(node: MockNode, flow_id: str) -> dict[str, object]:
    """How many rows each table of the node's store holds for ``flow_id``."""
    sql = "SELECT count(*) FROM {} WHERE flow_id = ?"
    return {t: node.store.query(sql.format(t), (flow_id,))[0][0] for t in TABLES}


class ParkedLater(FlowLogic[str]):
    """Checkpointed once, then kept for observation while ``BROKEN``."""

    async def call(self) -> str:
        RUNS.append("parked-later")
        await self.sleep(1)
        if BROKEN["now"]:
            raise HospitalizeFlowException("Overnight observation")
        await self.sleep(1)
        return "done"


class ParkedAtOnce(FlowLogic[str]):
    """Kept for observation before its first checkpoint while ``BROKEN``."""

    async def call(self) -> str:
        RUNS.append("parked-at-once")
        if BROKEN["now"]:
            raise HospitalizeFlowException("at once")
        await self.sleep(1)
        return "done"


@pytest.fixture(autouse=True)
def broken(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(BROKEN, "now", True)
    RUNS.clear()


def test_a_flow_parked_after_a_checkpoint_is_stored_hospitalized_and_completes_after_a_restart(
    tmp_path: Path,
) -> None:
    net = MockNetwork(data_dir=tmp_path, auto_advance=False)
    alice = net.create_node("alice")
    handle = alice.start_flow(ParkedLater())
    net.run_network()
    net.advance_clock(1)
    with pytest.raises(FlowHospitalized, match="Overnight observation"):
        handle.result()
    assert stored_status(alice, handle.flow_id) == [("HOSPITALIZED",)]
    assert alice.live_flows == [handle.flow_id]  # parked in memory too, not retried by itself
    net.advance_clock(3600)
    net.run_network()
    assert len(alice.hospital_show(handle.flow_id)) == 1

    BROKEN["now"] = False
    net.restart_node(alice)
    net.run_network()  # past the suspension it was parked after: checkpointed again
    assert stored_status(alice, handle.flow_id) == [("RUNNABLE",)]
    (waiting,) = alice.flows()
    assert waiting.waiting_for is not None
    assert waiting.waiting_for.startswith("sleep until")
    net.advance_clock(1)
    assert handle.result() == "done"
    assert rows_of(alice, handle.flow_id) == NOTHING


def test_the_stored_admission_names_the_error_and_can_be_read_from_the_file(
    tmp_path: Path,
) -> None:
    net = MockNetwork(data_dir=tmp_path)
    alice = net.create_node("alice")
    handle = alice.start_flow(ParkedLater())
    net.run_network()
    (admission,) = alice.hospital_show(handle.flow_id)
    assert (admission.staff, admission.outcome, admission.suspends) == ("sedation", "observe", 1)
    assert admission.error_type == "parley.protocol.errors.HospitalizeFlowException"
    assert admission.message == "Overnight observation"
    assert admission.causes == (
        "parley.protocol.errors.HospitalizeFlowException: Overnight observation",
    )
    assert "in call" in admission.traceback
    with sqlite3.connect(tmp_path / "alice.sqlite") as db:  # what any reader of the file sees
        rows = db.execute(
            "SELECT h.status, a.error_type, a.message, a.outcome FROM flow_header h"
            " JOIN hospital_admission a USING (flow_id) WHERE flow_id = ?",
            (handle.flow_id,),
        ).fetchall()
    db.close()
    assert rows == [
        (
            "HOSPITALIZED",
            "parley.protocol.errors.HospitalizeFlowException",
            "Overnight observation",
            "observe",
        )
    ]


def test_an_operator_retry_of_a_flow_still_broken_parks_it_again_and_nothing_retries_it(
    tmp_path: Path,
) -> None:
    net = MockNetwork(data_dir=tmp_path, auto_advance=False)
    alice = net.create_node("alice")
    handle = alice.start_flow(ParkedLater())
    net.run_network()
    net.advance_clock(1)
    net.run_network()
    assert alice.hospital_retry(handle.flow_id) is True
    net.run_network()
    history = alice.hospital_show(handle.flow_id)
    assert [(a.staff, a.outcome, a.attempt) for a in history] == [("sedation", "observe", 0)] * 2
    assert stored_status(alice, handle.flow_id) == [("HOSPITALIZED",)]
    net.advance_clock(24 * 3600)
    net.run_network()
    assert len(alice.hospital_show(handle.flow_id)) == 2  # no retry of its own, however long


def test_a_flow_still_broken_after_a_restart_is_parked_again_with_its_history_kept(
    tmp_path: Path,
) -> None:
    net = MockNetwork(data_dir=tmp_path)
    alice = net.create_node("alice")
    handle = alice.start_flow(ParkedLater())
    net.run_network()
    net.restart_node(alice)
    net.run_network()
    assert RUNS == ["parked-later"] * 2  # re-run from its checkpoint, and parked again
    assert stored_status(alice, handle.flow_id) == [("HOSPITALIZED",)]
    assert [a.outcome for a in alice.hospital_show(handle.flow_id)] == ["observe", "observe"]


def test_a_flow_parked_before_its_first_checkpoint_is_kept_in_memory_only(
    tmp_path: Path,
) -> None:
    net = MockNetwork(data_dir=tmp_path)
    alice = net.create_node("alice")
    handle = alice.start_flow(ParkedAtOnce())
    with pytest.raises(FlowHospitalized, match="at once"):
        handle.result()
    assert alice.live_flows == [handle.flow_id]
    assert rows_of(alice, handle.flow_id)["flow_start"] == 0  # nothing was promised yet
    BROKEN["now"] = False
    assert alice.hospital_retry(handle.flow_id) is True  # restarted from its start, in memory
    assert handle.result() == "done"
    assert RUNS == ["parked-at-once"] * 2


@initiating_flow
class Ask(FlowLogic[int]):
    def __init__(self, peer: str) -> None:
        self.peer = peer

    async def call(self) -> int:
        reply = await self.initiate_flow(self.peer).send_and_receive(int, 20)
        return reply.unwrap_unchecked()


@initiated_by(Ask)
class ParkedResponder(FlowLogic[None]):
    def __init__(self, session: FlowSession) -> None:
        self.session = session

    async def call(self) -> None:
        n = (await self.session.receive(int)).unwrap_unchecked()  # answered without a commit
        if BROKEN["now"]:
            raise HospitalizeFlowException("responder parked")
        await self.session.send(n + 1)


def test_a_responder_parked_before_its_first_checkpoint_runs_again_from_its_init_after_a_restart(
    tmp_path: Path,
) -> None:
    net = MockNetwork(data_dir=tmp_path)
    alice, bob = net.create_node("alice"), net.create_node("bob")
    handle = alice.start_flow(Ask("bob"))
    net.run_network()
    assert [a.outcome for a in bob.hospital.records] == ["observe"]
    assert bob.flows() == []
    assert len(bob.in_flight) == 1  # its session-init stays un-acked
    BROKEN["now"] = False
    net.restart_node(bob)
    assert handle.result() == 21
    assert bob.in_flight == {}
    assert bob.flows() == []
    assert alice.flows() == []


def test_killing_a_parked_flow_ends_it_with_killed_and_removes_its_records(tmp_path: Path) -> None:
    net = MockNetwork(data_dir=tmp_path)
    alice = net.create_node("alice")
    plain = alice.start_flow(ParkedLater())
    kept = alice.start_flow(ParkedLater(), client_id="kept")
    net.run_network()
    assert [f.status for f in alice.flows()] == [FlowStatus.HOSPITALIZED] * 2
    assert alice.kill_flow(plain.flow_id) is True
    assert alice.kill_flow(kept.flow_id) is True
    net.run_network()
    for handle in (plain, kept):
        with pytest.raises(KilledFlowException):
            handle.result()
        assert alice.hospital_show(handle.flow_id) == []
    assert rows_of(alice, plain.flow_id) == NOTHING
    assert alice.store.query("SELECT flow_id, status FROM flow_result") == [
        (kept.flow_id, "KILLED")
    ]
    assert alice.kill_flow(kept.flow_id) is False
    with pytest.raises(KilledFlowException):  # also to a client coming back with its id
        alice.start_flow(ParkedLater(), client_id="kept").result()


class Sedated(HospitalizeFlowException):
    """A flow's own kind of "keep me for observation"."""


class RaisesToObserve(FlowLogic[str]):
    def __init__(self, how: str) -> None:
        self.how = how

    async def call(self) -> str:
        await self.sleep(1)
        cause = HospitalizeFlowException("look at me")
        if self.how == "directly":
            raise cause
        if self.how == "subclassed":
            raise Sedated("look at me")
        if self.how == "as a cause":
            raise RuntimeError("wrapped") from cause
        if self.how == "as a context":
            try:
                raise cause
            except HospitalizeFlowException:
                raise ValueError("while handling it")  # noqa: B904 (the context is the point)
        locked = sqlite3.OperationalError("database is locked")
        raise HospitalizeFlowException("locked out") from locked


@pytest.mark.parametrize("how", ["directly", "subclassed", "as a cause", "as a context"])
def test_asking_for_observation_however_it_is_raised_parks_the_flow_exactly_once(
    how: str, tmp_path: Path
) -> None:
    net = MockNetwork(data_dir=tmp_path, auto_advance=False)
    alice = net.create_node("alice")
    handle = alice.start_flow(RaisesToObserve(how))
    net.run_network()
    net.advance_clock(1)
    net.run_network()
    net.advance_clock(3600)
    net.run_network()
    assert [(a.staff, a.outcome) for a in alice.hospital_show(handle.flow_id)] == [
        ("sedation", "observe")
    ]
    assert stored_status(alice, handle.flow_id) == [("HOSPITALIZED",)]


def test_observation_asked_for_because_the_database_was_locked_wins_over_retrying(
    tmp_path: Path,
) -> None:
    # Parley's staff decide in a fixed order and the sedation staff comes first: the flow asked
    # for an operator, so it gets one, even though a lock alone would be retried.
    net = MockNetwork(data_dir=tmp_path)
    alice = net.create_node("alice")
    handle = alice.start_flow(RaisesToObserve("locked"))
    net.run_network()
    history = alice.hospital_show(handle.flow_id)
    assert [(a.staff, a.outcome) for a in history] == [("sedation", "observe")]
    assert "sqlite3.OperationalError: database is locked" in history[0].causes


class WaitsOnTheRates(FlowLogic[float]):
    async def call(self) -> float:
        rate = await self.execute(rate_of, "USD")
        if BROKEN["now"]:
            raise HospitalizeFlowException("the rate looks wrong")
        return rate


def rate_of(currency: str) -> float:
    return {"USD": 1.25}[currency]


def test_a_restored_flow_that_waits_again_is_no_longer_stored_as_hospitalized(
    tmp_path: Path,
) -> None:
    net = MockNetwork(data_dir=tmp_path)
    alice = net.create_node("alice")
    handle = alice.start_flow(WaitsOnTheRates())
    net.run_network()
    assert stored_status(alice, handle.flow_id) == [("HOSPITALIZED",)]
    BROKEN["now"] = False
    alice.hold_operations()
    net.restart_node(alice)
    net.run_network()
    (waiting,) = alice.flows()
    assert waiting.pending_request == "execute"  # it runs again: it waits on the rates
    assert waiting.status is FlowStatus.RUNNABLE


@pytest.mark.parametrize("ending", ["parked", "failed"])
def test_the_records_of_a_flow_never_checkpointed_go_with_it(ending: str, tmp_path: Path) -> None:
    net = MockNetwork(data_dir=tmp_path)
    alice = net.create_node("alice")
    flow = ParkedAtOnce() if ending == "parked" else FailsAtOnce()
    handle = alice.start_flow(flow)
    net.run_network()
    net.restart_node(alice)  # the parked one was never promised: the restart forgets it
    net.run_network()
    assert alice.flows() == []
    assert alice.hospital_show(handle.flow_id) == []


class FailsAtOnce(FlowLogic[str]):
    async def call(self) -> str:
        raise ValueError("bad input")

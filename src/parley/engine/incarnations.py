"""Where a flow's incarnations begin and end: restored, passivated, retried, removed.

A flow lives in memory as one driver at a time, an *incarnation* (numbered in its state). An
incarnation begins when the flow is restored from its checkpoint (a node's start, a message or a
client for a passivated flow, an operator's or the hospital's retry) or, never checkpointed yet,
restarted from its start record. It ends when the flow finishes (:meth:`Incarnations.removed`),
leaves memory (:meth:`~Incarnations.passivated`) or is retried from its checkpoint
(:meth:`~Incarnations.restore_from_checkpoint`): the next incarnation takes over the flow's record
(its handle, and the messages delivered since its last commit). The hospital's verdicts come back
here too (:meth:`~Incarnations.admit`), also for a finished flow whose final commit failed.

:class:`Incarnations` is the part of a :class:`~parley.engine.runtime.FlowRuntime` that does this:
the runtime delegates those :class:`~parley.engine.host.FlowHost` ports to it, and it works on the
runtime's flow table, store and ports (read through the runtime at each call, as the runtime's own
methods do).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from parley.engine.driver import FlowDriver
from parley.engine.handles import FlowHandle
from parley.engine.ports import RuntimePorts
from parley.engine.records import FlowRecord
from parley.engine.restore import UNREADABLE, build, restored
from parley.engine.starts import finished
from parley.flows.progress import adopt_tracker, tracker_of
from parley.protocol.errors import KilledFlowException
from parley.protocol.events import (
    DoRemainingWork,
    Event,
    KillRequested,
    PassivationRequested,
    PeerRevoked,
    RetryFromCheckpoint,
    SessionMessageDelivered,
)
from parley.protocol.evolve import replace
from parley.protocol.records import DeleteAdmissions, FlowStatus, SetFlowStatus, StartKind, StoreOp
from parley.protocol.state import FlowState

if TYPE_CHECKING:
    from parley.engine.runtime import FlowRuntime

log = logging.getLogger("parley.runtime")


class Incarnations:
    """Begins and ends the incarnations of a runtime's flows; see the module docstring."""

    def __init__(self, runtime: FlowRuntime) -> None:
        self.runtime = runtime
        #: Flows admitted to the hospital before their first checkpoint.
        self._admitted_early: set[str] = set()

    def live(self, flow_id: str) -> FlowRecord | None:
        """The flow's record with its driver: in memory, or restored (passivated flows)."""
        record = self.runtime.flows.get(flow_id)
        if record is not None:
            if record.retiring is not None:
                return None
            if record.driver is not None:
                return record
        if self.restore(flow_id) is None:
            return None
        return self.runtime.flows.get(flow_id)

    def restore(self, flow_id: str, incarnation: int = 0) -> FlowDriver | None:
        """Bring a stored flow into memory from its checkpoint, replaying its journal.

        Returns:
            Its new driver; ``None`` if it has no checkpoint, or one that can't be restored (the
            flow is then kept for observation).
        """
        stored = self.runtime.store.load_flow(flow_id)
        if stored is None or stored.header is None:
            return None
        try:
            found = restored(stored)
        except Exception as exc:  # a broken checkpoint, or flow code that no longer fits it
            level = logging.ERROR if isinstance(exc, UNREADABLE) else logging.WARNING
            log.log(
                level, "flow %s can't be restored, keeping it for observation: %r", flow_id, exc
            )
            commit_quietly(self.runtime.ports, (SetFlowStatus(flow_id, FlowStatus.HOSPITALIZED),))
            return None
        state = found.state
        if stored.status is FlowStatus.HOSPITALIZED:
            # It runs again: stored as runnable now, not only at its next checkpoint (flows()
            # and an operator's retry see it as it is).
            state = replace(state, status=FlowStatus.RUNNABLE)
            commit_quietly(self.runtime.ports, (SetFlowStatus(flow_id, FlowStatus.RUNNABLE),))
        state = replace(state, incarnation=incarnation, client_id=stored.client_id)
        flow = found.flow
        driver = FlowDriver(self.runtime, state, flow, journal=found.journal)
        record = self.runtime.flows.attach(driver)
        if stored.kind is StartKind.RPC and record.handle is None:
            record.handle = FlowHandle(flow_id, tracker_of(flow))
            record.handle.started.set_result(None)  # it is durable: it has a checkpoint
        elif record.handle is not None and record.handle.progress is not None:
            # A handle that outlived the flow in memory (passivated, retried): its clients follow
            # its tracker, so the restored copy of the flow reports there.
            adopt_tracker(flow, record.handle.progress)
        driver.start_replay()
        if self.runtime.parties is not None:
            for peer in {s.peer for s in state.sessions.values()}:
                if self.runtime.parties.revoked(peer):
                    driver.post(PeerRevoked(peer, f"{peer} was revoked from the network"))
        return driver

    def _record_of(self, driver: FlowDriver) -> FlowRecord:
        """The driver's record (made anew for a removed flow whose last sends go out now)."""
        return self.runtime.flows.record(driver.flow_id)

    def removed(
        self, driver: FlowDriver, result: object, error: BaseException | None, *, durable: bool
    ) -> None:
        """The flow ended: log it, take it out of memory and settle its handle.

        Unless ``durable``, its final commit is still to come: its record stays ``retiring`` (and
        the hospital keeps its budgets) until that commit is done.
        """
        flow_id = driver.flow_id
        _log_end(driver, error, self.runtime.ports.now())
        record = self._record_of(driver)
        if durable:
            self.runtime.hospital.discharge(flow_id)
        else:  # until its checkpoint's deletion commits; the hospital keeps its budgets till then
            record.retiring = driver
        handle, record.handle = record.handle, None
        self.runtime.flows.detach(record)
        if flow_id in self._admitted_early:
            # Admitted before it was ever checkpointed: no stored flow deletes its records.
            self._admitted_early.discard(flow_id)
            commit_quietly(self.runtime.ports, (DeleteAdmissions(flow_id),))
        # Messages that reached the flow after its last step (while its final commit was in
        # flight) find no session any more: acked and dropped, as for any ended session.
        late = [
            e.delivery
            for e in driver.take_mailbox()
            if isinstance(e, SessionMessageDelivered) and e.delivery is not None
        ]
        if late:
            log.info("flow %s ended: dropping %d late messages", flow_id, len(late))
            self.runtime.ack(tuple(late))
        if self.runtime.on_flow_end is not None:
            self.runtime.on_flow_end(flow_id, result, error)
        if handle is None:
            return
        if not handle.started.done():
            handle.started.set_result(None)
        if error is None:
            handle.future.set_result(result)
        else:
            handle.future.set_exception(error)

    def passivated(self, driver: FlowDriver) -> None:
        """The flow left memory; events that came after the decision go to its next incarnation."""
        flow_id = driver.flow_id
        driver.close()
        record = self.runtime.flows.get(flow_id)
        if record is not None and record.driver is driver:
            self.runtime.flows.detach(record)
        # Events that arrived after the passivation was decided are for the restored flow.
        for event in driver.take_mailbox():
            if not isinstance(event, DoRemainingWork | PassivationRequested):
                record = self.live(flow_id)
                if record is None or record.driver is None:
                    continue
                if isinstance(event, SessionMessageDelivered):
                    record.uncommitted.append(event)
                record.driver.post(event)

    def restore_from_checkpoint(self, driver: FlowDriver) -> None:
        """The flow is to be retried from its checkpoint (``RestoreFromCheckpoint``): its next
        incarnation takes over its record and the messages it had not committed."""
        record = self._record_of(driver)
        driver.close()
        redeliver, record.uncommitted = record.uncommitted, []
        # Detach without forgetting: the record (handle, publishes) carries over to the new one.
        self.runtime.flows.detach(record)
        killed = any(isinstance(e, KillRequested) for e in driver.take_mailbox())
        self._reincarnate(driver, driver.state.incarnation + 1, redeliver, killed)

    def _reincarnate(
        self,
        driver: FlowDriver,
        incarnation: int,
        redeliver: list[SessionMessageDelivered],
        killed: bool,
    ) -> None:
        """Bring a retried flow back from its checkpoint (or its start record)."""
        try:
            fresh = self.restore(driver.flow_id, incarnation)
        except Exception as exc:  # the checkpoint could not be read (locked, an I/O error)
            log.warning(
                "flow %s: reading its checkpoint failed (%r); trying again", driver.flow_id, exc
            )
            when = self.runtime.ports.now() + timedelta(seconds=1)
            self.runtime.ports.call_at(
                when, lambda: self._reincarnate(driver, incarnation, redeliver, killed)
            )
            return
        if fresh is None and self._ended_durably(driver):
            # Its final commit was written although it was reported failed: it is over.
            end = driver.unconfirmed_end
            value, error = (end.result, end.error) if end is not None else (None, None)
            if end is None and driver.state.client_id is not None:
                stored = finished(self.runtime.store, driver.state.client_id)
                if stored is not None and stored.future.done():
                    error = stored.future.exception()
                    value = None if error is not None else stored.future.result()
            log.info("flow %s had ended already (its last commit was written)", driver.flow_id)
            self.removed(driver, value, error, durable=True)
            if redeliver:
                self.runtime.ack(tuple(e.delivery for e in redeliver if e.delivery is not None))
            return
        fresh = fresh or self._restart(driver, incarnation)
        if fresh is None:
            return
        fresh_record = self._record_of(fresh)
        for event in redeliver:
            fresh_record.uncommitted.append(event)
            fresh.post(event)
        if killed:
            fresh.post(KillRequested())

    def _ended_durably(self, driver: FlowDriver) -> bool:
        """Whether a flow found without a checkpoint had committed its end (not never begun)."""
        state = driver.state
        if state.persisted:
            return True  # it had a checkpoint: only its final commit deletes it
        if (
            state.client_id is not None
            and self.runtime.store.flow_result(state.client_id) is not None
        ):
            return True
        fact = driver.initial_state.init_fact
        return fact is not None and (
            self.runtime.store.processed_init(fact.sender, fact.initiator_session) is not None
        )

    def _restart(self, old: FlowDriver, incarnation: int) -> FlowDriver | None:
        """Start a never-checkpointed flow again from its start record."""
        start = old.initial_state.start_record
        if start is None:
            log.error("flow %s has no checkpoint and no start record: can't retry it", old.flow_id)
            return None
        flow = build(type(old.flow), old.flow_id, start.kind, start.args)
        fresh_state = replace(old.initial_state, incarnation=incarnation)
        driver = FlowDriver(self.runtime, fresh_state, flow)
        self.runtime.flows.attach(driver)
        driver.post(DoRemainingWork())
        return driver

    def admit(self, driver: FlowDriver, state: FlowState) -> None:
        """Admit the errored flow to the hospital; its verdict is posted to this incarnation."""
        flow_id = driver.flow_id
        if not state.persisted:
            self._admitted_early.add(flow_id)  # its records must go with it (see removed)

        def verdict(event: Event, delay: float) -> None:  # may be called on another thread
            if delay <= 0:
                self.runtime.ports.call_soon(lambda: self._verdict(flow_id, driver, event))
            else:
                at = self.runtime.ports.now() + timedelta(seconds=delay)
                self.runtime.ports.call_at(at, lambda: self._verdict(flow_id, driver, event))

        self.runtime.hospital.admit(state, self.runtime.ports.now(), verdict)

    def _verdict(self, flow_id: str, driver: FlowDriver, event: Event) -> None:
        if self.runtime.flows.driver(flow_id) is driver:
            driver.post(event)
            return
        record = self.runtime.flows.get(flow_id)
        if record is not None and record.retiring is driver:
            self._retiring_failed(record, driver, event)

    def _retiring_failed(self, record: FlowRecord, driver: FlowDriver, event: Event) -> None:
        """A finished flow's final publishes or commit failed, so its checkpoint is still stored.

        Its result was given already; what is left undone is telling its peers and deleting the
        checkpoint. On the hospital's retry it is restored from that checkpoint and finishes again
        (re-sending the same messages under the same ids); otherwise it is kept for observation,
        as a restart would find it.
        """
        record.retiring = None
        redeliver, record.uncommitted = record.uncommitted, []
        self.runtime.flows.forget_if_unused(record)
        if not isinstance(event, RetryFromCheckpoint):
            commit_quietly(
                self.runtime.ports, (SetFlowStatus(driver.flow_id, FlowStatus.HOSPITALIZED),)
            )
            return
        fresh = self.restore(driver.flow_id, driver.state.incarnation + 1)
        if fresh is None:
            return
        fresh_record = self._record_of(fresh)
        for delivered in redeliver:
            fresh_record.uncommitted.append(delivered)
            fresh.post(delivered)


def commit_quietly(ports: RuntimePorts, ops: tuple[StoreOp, ...]) -> None:
    """Commit ``ops``, logging a failure (bookkeeping nothing waits for)."""

    def done(error: BaseException | None) -> None:
        if error is not None:
            log.error("commit of %s failed: %r", ops, error)

    ports.commit(ops, done)


def _log_end(driver: FlowDriver, error: BaseException | None, now: datetime) -> None:
    """One INFO line per flow that ends (the hospital has warned already if it needed to)."""
    seconds = (now - driver.loaded_at).total_seconds()
    took = f"{seconds:.3f} s after it was restored" if driver.restored else f"in {seconds:.3f} s"
    state = driver.state
    if error is None:
        log.info("flow %s (%s) completed %s", state.flow_id, state.flow_class, took)
    elif isinstance(error, KilledFlowException):
        log.info("flow %s (%s) was killed %s", state.flow_id, state.flow_class, took)
    else:
        log.info(
            "flow %s (%s) failed %s with %s: %s",
            state.flow_id,
            state.flow_class,
            took,
            type(error).__name__,
            error,
        )


__all__ = ["Incarnations", "commit_quietly"]

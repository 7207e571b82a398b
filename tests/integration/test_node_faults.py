"""Faults inside a node on a real nats-server: failing publishes are retried as documented, a
worker that dies is replaced with its flows, and a flow that can't be restored can still be
killed."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from parley import KilledFlowException
from parley.actors.worker import Call
from parley.apps.pingpong import Ping
from parley.engine.hospital import Outcome
from parley.engine.outbox import Outgoing
from parley.node import Node, NodeConfig, NodeError
from parley.protocol.records import FlowStatus, FlowWrite, StoreOp
from parley.store import SqliteStore
from parley.transport.natsserver import EmbeddedNatsServer
from tests.integration.apps import Approves, Waits
from tests.integration.nodes import rows, wait_for

pytestmark = pytest.mark.integration

APPS = ["parley.apps.pingpong", "tests.integration.apps"]


def node(tmp_path: Path, server: EmbeddedNatsServer, name: str, **options: Any) -> Node:
    assert server.url is not None
    return Node(NodeConfig(name, tmp_path / name, nats_url=server.url, apps=APPS, **options))


def fail_publishes_to(target: Node, recipient: str, times: int) -> list[int]:
    """Make ``target``'s next ``times`` publishes to ``recipient`` raise; returns the count made."""
    bridge = target._bridge
    assert bridge is not None
    real = bridge.publish
    failed = [0]
    lock = threading.Lock()

    def publish(messages: Sequence[Outgoing], done: Callable[[BaseException | None], None]) -> None:
        with lock:
            if failed[0] < times and any(m.recipient == recipient for m in messages):
                failed[0] += 1
                raise ValueError("injected: the transport refused the message")
        real(messages, done)

    bridge.publish = publish  # type: ignore[method-assign]
    return failed


def test_a_reply_whose_publish_fails_is_retried_and_the_flow_completes(
    tmp_path: Path, nats_server: EmbeddedNatsServer
) -> None:
    with node(tmp_path, nats_server, "alice") as alice, node(tmp_path, nats_server, "bob") as bob:
        failed = fail_publishes_to(bob, "alice", 2)
        assert alice.start_flow(Ping("bob", 1)).result(30) == 2
        assert failed == [2]
        records = [r for r in bob.hospital_records() if r.staff == "transition"]
        assert [r.outcome for r in records] == [Outcome.RETRY, Outcome.RETRY]


def test_a_reply_that_keeps_failing_is_retried_three_times_then_kept_for_observation(
    tmp_path: Path, nats_server: EmbeddedNatsServer
) -> None:
    with node(tmp_path, nats_server, "alice") as alice, node(tmp_path, nats_server, "bob") as bob:
        fail_publishes_to(bob, "alice", 1000)
        handle = alice.start_flow(Ping("bob", 1))
        records = wait_for(
            lambda: (
                [r.outcome for r in bob.hospital_records() if r.staff == "transition"]
                if len(bob.hospital_records()) >= 4
                else None
            ),
            30,
            "bob's responder to be admitted four times",
        )
        assert records == [Outcome.RETRY] * 3 + [Outcome.OBSERVE]
        wait_for(
            lambda: [f.status for f in bob.flows()] == [FlowStatus.HOSPITALIZED],
            10,
            "bob's responder to be stored as HOSPITALIZED",
        )
        assert not handle.done


class Fatal(BaseException):
    """Not an Exception: what the worker's own error handling does not contain."""


def test_a_worker_that_dies_is_replaced_and_its_flows_and_handles_carry_on(
    tmp_path: Path, nats_server: EmbeddedNatsServer
) -> None:
    with (
        node(tmp_path, nats_server, "alice", workers=1) as alice,
        node(tmp_path, nats_server, "bob"),
    ):
        waiting = alice.start_flow(Waits(3600))
        old = alice._workers[0]

        def die() -> None:
            raise Fatal("injected")

        old.tell(Call(die))
        wait_for(lambda: alice._workers[0] is not old, 10, "the worker to be replaced")
        assert not old.is_alive()
        assert alice.start_flow(Ping("bob", 1)).result(30) == 2
        assert alice.kill_flow(waiting.flow_id) is True
        with pytest.raises(KilledFlowException):
            waiting.result(10)  # the handle was taken over by the new worker


def test_a_flow_whose_checkpoint_does_not_decode_can_be_killed(
    tmp_path: Path, nats_server: EmbeddedNatsServer
) -> None:
    with node(tmp_path, nats_server, "alice") as alice:
        flow_id = alice.start_flow(Waits(3600)).flow_id
    with sqlite3.connect(tmp_path / "alice" / "parley.sqlite") as db:
        db.execute("UPDATE flow_header SET header = x'ff00' WHERE flow_id = ?", (flow_id,))
    with node(tmp_path, nats_server, "alice") as alice:
        wait_for(
            lambda: [f.status for f in alice.flows()] == [FlowStatus.HOSPITALIZED],
            10,
            "the unreadable flow to be kept for observation",
        )
        assert alice.kill_flow(flow_id) is True
        wait_for(
            lambda: [f.status for f in alice.flows()] == [FlowStatus.KILLED],
            10,
            "the flow to be marked KILLED",
        )
        assert alice.kill_flow(flow_id) is False


def test_a_full_disk_parks_the_flow_and_stops_new_starts_until_the_operator_retries(
    tmp_path: Path, nats_server: EmbeddedNatsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_commit = SqliteStore.commit_group

    def full(
        store: SqliteStore, batches: Sequence[Sequence[StoreOp]]
    ) -> list[BaseException | None]:
        """The node's group commit, as on a disk too full for the flow's app write."""
        results: list[BaseException | None] = []
        for ops in batches:
            if any(isinstance(op, FlowWrite) and "effects" in op.sql for op in ops):
                results.append(sqlite3.OperationalError("database or disk is full"))
            else:
                results.extend(real_commit(store, [ops]))
        return results

    with node(tmp_path, nats_server, "alice") as alice:
        handle = alice.start_flow(Approves())
        wait_for(lambda: alice.flows()[0].pending_request == "signal", 10, "the wait")
        monkeypatch.setattr(SqliteStore, "commit_group", full)
        alice.signal(handle.flow_id, "approve", "ivan")
        wait_for(
            lambda: [f.status for f in alice.flows()] == [FlowStatus.HOSPITALIZED],
            10,
            "the flow to be kept for observation",
        )
        (admission,) = alice.hospital_show(handle.flow_id)
        assert (admission.staff, admission.outcome) == ("storage", "observe")
        with pytest.raises(NodeError, match="storage failed"):
            alice.start_flow(Waits(1))
        monkeypatch.setattr(SqliteStore, "commit_group", real_commit)  # space was freed
        assert alice.hospital_retry(handle.flow_id) is True
        assert handle.result(10) == "ivan"
        assert rows(alice.db_path, "SELECT side FROM effects") == [("approver",)]
        assert alice.start_flow(Waits(0.01)).result(10) == "woke"

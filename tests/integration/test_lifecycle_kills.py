"""Schedules and receive deadlines on node processes killed with SIGKILL: ticks are neither lost nor
doubled, and a deadline is kept across the crash (it is not restarted by the restore)."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from parley.transport.natsserver import EmbeddedNatsServer
from tests.integration.nodes import (
    NodeProcess,
    node_process,
    rows,
    run_flow_process,
    start_flow_process,
    wait_for,
)

pytestmark = pytest.mark.integration

SCHEDULED = ["tests.integration.scheduled_app"]


def beats(db: Path) -> int:
    found = rows(db, "SELECT count(*) FROM heartbeats")
    return int(str(found[0][0])) if found else 0


def test_a_schedule_on_a_node_killed_five_times_runs_every_tick_once_with_one_effect_each(
    tmp_path: Path, nats_server: EmbeddedNatsServer
) -> None:
    assert nats_server.url is not None
    data = tmp_path / "alice"
    node = NodeProcess("alice", nats_server.url, data, SCHEDULED)
    for _ in range(5):
        node.start()
        seen = beats(node.db)
        # the node has made progress since it started (a tick ran), then it crashes wherever it is
        wait_for(lambda: beats(node.db) >= seen + 2, 30, "two more heartbeats")  # noqa: B023
        node.kill()
    with node_process("alice", nats_server.url, data, SCHEDULED) as node:
        seen = beats(node.db)
        wait_for(lambda: beats(node.db) >= seen + 2, 30, "heartbeats after the last crash")
    doubled = rows(
        node.db, "SELECT flow, count(*) FROM heartbeats GROUP BY flow HAVING count(*) > 1"
    )
    assert doubled == [], "a tick's effect was written twice"
    finished = rows(
        node.db, "SELECT flow_id, client_id FROM flow_result WHERE status = 'COMPLETED'"
    )
    running = rows(node.db, "SELECT flow_id, client_id FROM flow_start")
    effects = {flow for (flow,) in rows(node.db, "SELECT flow FROM heartbeats")}
    assert len(finished) >= 10
    assert {flow for flow, _ in finished} <= effects, "a completed tick without its effect"
    assert effects <= {flow for flow, _ in finished + running}, "an effect of no flow"
    ticks = sorted(
        datetime.fromisoformat(str(client).split(":", 2)[2]) for _, client in finished + running
    )
    steps = [round((t - ticks[0]) / timedelta(seconds=0.2)) for t in ticks]
    assert steps == list(range(len(steps))), "every tick once, none missed across the crashes"


def test_a_receive_deadline_is_kept_across_a_kill_and_fires_at_restore_if_it_passed_meanwhile(
    tmp_path: Path, nats_server: EmbeddedNatsServer
) -> None:
    assert nats_server.url is not None
    apps = ["tests.integration.apps"]
    arguments = {
        "name": "alice",
        "nats_url": nats_server.url,
        "data_dir": tmp_path / "alice",
        "flow": "tests.integration.apps:Deadline",
        "args": json.dumps(["bob", 8]),
        "client_id": "deadline",
    }
    with node_process("bob", nats_server.url, tmp_path / "bob", apps) as bob:
        alice = start_flow_process(**arguments)  # type: ignore[arg-type]
        try:
            # bob's Mute took the number: alice's checkpoint with the deadline is committed
            wait_for(
                lambda: rows(bob.db, "SELECT 1 FROM flow_start WHERE flow_class LIKE '%Mute'"),
                30,
                "bob's responder to start",
            )
        finally:
            alice.kill()
            alice.communicate(timeout=10)
        assert alice.returncode == -9
        ((created_at,),) = rows(
            tmp_path / "alice" / "parley.sqlite", "SELECT created_at FROM flow_start"
        )
        assert isinstance(created_at, float)
        wait_for(lambda: time.time() > created_at + 9, 30, "alice's deadline to pass while down")
        restored = run_flow_process(**arguments)  # type: ignore[arg-type]
        assert restored.returncode == 0, restored.stderr[-2000:]
    elapsed = json.loads(restored.stdout.strip().splitlines()[-1])["result"]
    # measured on the flow's recorded clock: from its start to the timeout. Had the restore
    # restarted the 8 s deadline it would be over 18 s; it fired at the restore instead.
    assert 8 <= elapsed < 17, elapsed

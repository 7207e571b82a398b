"""Schedules on a real node: ticks on real time, one flow per tick, kept across restarts, and the
apps' @scheduled flows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from parley.engine.schedules import tick_client_id
from parley.node import Node, NodeConfig
from parley.protocol.records import FlowStatus
from parley.transport.natsserver import EmbeddedNatsServer
from tests.integration.apps import Waits
from tests.integration.nodes import rows, wait_for

pytestmark = pytest.mark.integration


def config(tmp_path: Path, server: EmbeddedNatsServer) -> NodeConfig:
    assert server.url is not None
    return NodeConfig(
        "alice", tmp_path / "alice", nats_url=server.url, apps=["tests.integration.apps"]
    )


def completed(node: Node) -> list[str]:
    return sorted(f.client_id or "" for f in node.flows(FlowStatus.COMPLETED))


def test_a_schedule_starts_one_flow_per_tick_and_survives_a_restart(
    tmp_path: Path, nats_server: EmbeddedNatsServer
) -> None:
    first = datetime.now(UTC) + timedelta(seconds=0.3)
    with Node(config(tmp_path, nats_server)) as node:
        node.schedule("beat", Waits(0.01), at=first, every=0.3, missed="catch_up")
        wait_for(lambda: len(completed(node)) >= 2, 10, "two ticks")
    # down for a while: the missed ticks are caught up at the next start, each once
    with Node(config(tmp_path, nats_server)) as node:
        wait_for(lambda: len(completed(node)) >= 6, 15, "the missed ticks and new ones")
        node.unschedule("beat")
        names = completed(node)
    ticks = sorted(datetime.fromisoformat(n.split(":", 2)[2]) for n in names)
    steps = [round((t - first) / timedelta(seconds=0.3)) for t in ticks]
    assert steps == list(range(len(steps))), "every tick once, none missing (catch_up)"
    assert tick_client_id("beat", first) in names


def test_an_apps_scheduled_flow_is_scheduled_when_the_node_starts(
    tmp_path: Path, nats_server: EmbeddedNatsServer
) -> None:
    assert nats_server.url is not None
    app_config = NodeConfig(
        "bob", tmp_path / "bob", nats_url=nats_server.url, apps=["tests.integration.scheduled_app"]
    )
    with Node(app_config) as node:
        (schedule,) = node.schedules()
        assert (schedule.name, schedule.every, schedule.missed) == ("heartbeat", 0.2, "catch_up")
        wait_for(lambda: len(rows(node.db_path, "SELECT at FROM heartbeats")) >= 3, 10, "3 beats")
    with Node(app_config) as node:  # started again: the same schedule, not a second one
        assert [s.name for s in node.schedules()] == ["heartbeat"]

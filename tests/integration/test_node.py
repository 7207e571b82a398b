"""Nodes in separate processes over a real nats-server: flows, crashes, restarts, exactly-once."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from parley.apps.pingpong import Ping, PingAll
from parley.node import Node, NodeConfig
from parley.transport.natsserver import EmbeddedNatsServer
from tests.integration.apps import Rounds
from tests.integration.nodes import node_process, rows, run_flow_process, wait_for

pytestmark = pytest.mark.integration

APPS = ["parley.apps.pingpong", "tests.integration.apps"]


@pytest.fixture
def alice(tmp_path: Path, nats_server: EmbeddedNatsServer) -> Iterator[Node]:
    assert nats_server.url is not None
    config = NodeConfig("alice", tmp_path / "alice", nats_url=nats_server.url, apps=APPS, workers=2)
    with Node(config) as node:
        yield node


def effects(db: Path, side: str) -> list[tuple[object, ...]]:
    return rows(
        db,
        "SELECT round, count(*) FROM effects WHERE side = ? GROUP BY round ORDER BY round",
        (side,),
    )


def test_two_node_processes_run_ping_pong_and_the_multi_party_variant(
    tmp_path: Path, nats_server: EmbeddedNatsServer, alice: Node
) -> None:
    assert nats_server.url is not None
    with (
        node_process("bob", nats_server.url, tmp_path / "bob", APPS),
        node_process("carol", nats_server.url, tmp_path / "carol", APPS),
    ):
        assert alice.start_flow(Ping("bob", 1, rounds=3)).result(30) == 4
        assert alice.start_flow(PingAll(["bob", "carol"], 10)).result(30) == [11, 11]
        handles = [alice.start_flow(Ping("carol", n), wait_started=False) for n in range(20)]
        assert [h.result(30) for h in handles] == [n + 1 for n in range(20)]
    assert alice.flows() == []


def test_a_responder_killed_after_receiving_the_init_completes_the_flow_once_restarted(
    tmp_path: Path, nats_server: EmbeddedNatsServer, alice: Node
) -> None:
    assert nats_server.url is not None
    hold = tmp_path / "release-bob"
    env = {"PARLEY_TEST_HOLD_MARKER": str(hold)}
    bob_dir = tmp_path / "bob"
    with node_process("bob", nats_server.url, bob_dir, APPS, env) as bob:
        handle = alice.start_flow(Rounds("bob", 3))
        # bob consumed the init and the first value, wrote its effect and holds before replying
        wait_for(lambda: effects(bob.db, "responder"), 30, "bob's first effect to be committed")
        bob.kill()
    hold.touch()
    with node_process("bob", nats_server.url, bob_dir, APPS, env) as bob:
        assert handle.result(60) == 3
        assert effects(bob.db, "responder") == [(0, 1), (1, 1), (2, 1)]
    assert effects(alice.db_path, "initiator") == [(0, 1), (1, 1), (2, 1)]


@pytest.mark.parametrize("crash_at", [0, 1, 2])
def test_an_initiator_killed_at_each_suspension_point_completes_exactly_once(
    crash_at: int, tmp_path: Path, nats_server: EmbeddedNatsServer
) -> None:
    assert nats_server.url is not None
    marker = tmp_path / "crashed"
    with node_process("bob", nats_server.url, tmp_path / "bob", APPS) as bob:
        arguments = {
            "name": "alice",
            "nats_url": nats_server.url,
            "data_dir": tmp_path / "alice",
            "flow": "tests.integration.apps:Rounds",
            "args": json.dumps(["bob", 3, crash_at, str(marker)]),
            "client_id": f"rounds-{crash_at}",
        }
        first = run_flow_process(**arguments)  # type: ignore[arg-type]
        assert first.returncode == -9, first.stderr[-2000:]
        assert marker.exists()
        second = run_flow_process(**arguments)  # type: ignore[arg-type]
        assert second.returncode == 0, second.stderr[-2000:]
        assert json.loads(second.stdout.strip().splitlines()[-1]) == {"result": 3}
        wait_for(
            lambda: effects(bob.db, "responder") == [(0, 1), (1, 1), (2, 1)],
            30,
            "bob's effects",
        )
    assert effects(tmp_path / "alice" / "parley.sqlite", "initiator") == [(0, 1), (1, 1), (2, 1)]


def test_flows_complete_when_the_nats_server_is_killed_and_restarted_mid_run(
    tmp_path: Path, nats_server: EmbeddedNatsServer, alice: Node
) -> None:
    assert nats_server.url is not None
    with node_process("bob", nats_server.url, tmp_path / "bob", APPS) as bob:
        handles = [alice.start_flow(Rounds("bob", 5), wait_started=False) for _ in range(20)]
        wait_for(lambda: effects(bob.db, "responder"), 30, "the flows to be under way")
        nats_server.kill()
        nats_server.restart()
        assert [h.result(90) for h in handles] == [5] * 20
        counts = rows(bob.db, "SELECT count(*) FROM effects WHERE side = 'responder'")
        assert counts == [(100,)]
    assert rows(alice.db_path, "SELECT count(*) FROM effects WHERE side = 'initiator'") == [(100,)]

"""The Node's Python API on a real nats-server: client ids across restarts, kill, the hospital,
and clear errors for misuse."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from parley import FlowUsageError, KilledFlowException, UnexpectedPayloadError
from parley.apps.pingpong import Ping
from parley.node import Node, NodeConfig, NodeError
from parley.protocol.errors import ClientIdInUseError
from parley.protocol.records import FlowStatus
from parley.transport.natsserver import EmbeddedNatsServer
from tests.integration.apps import Approves, AwaitsAsyncio, Waits
from tests.integration.nodes import rows, run_flow_process, wait_for

pytestmark = pytest.mark.integration

APPS = ["tests.integration.apps", "parley.apps.pingpong"]


def config(tmp_path: Path, server: EmbeddedNatsServer) -> NodeConfig:
    assert server.url is not None
    return NodeConfig("alice", tmp_path / "alice", nats_url=server.url, apps=APPS)


def test_a_client_id_returns_the_same_flow_and_its_result_also_after_a_restart(
    tmp_path: Path, nats_server: EmbeddedNatsServer
) -> None:
    with Node(config(tmp_path, nats_server)) as node:
        first = node.start_flow(Waits(0.05), client_id="order-1")
        again = node.start_flow(Waits(0.05), client_id="order-1")
        assert again.flow_id == first.flow_id
        assert first.result(10) == "woke"
        assert again.result(10) == "woke"
    with Node(config(tmp_path, nats_server)) as node:
        later = node.start_flow(Waits(0.05), client_id="order-1")
        assert later.flow_id == first.flow_id
        assert later.result(10) == "woke"
        assert [f.status for f in node.flows()] == [FlowStatus.COMPLETED]


def test_a_waiting_flow_can_be_killed_and_a_second_kill_says_so(
    tmp_path: Path, nats_server: EmbeddedNatsServer
) -> None:
    with Node(config(tmp_path, nats_server)) as node:
        handle = node.start_flow(Waits(3600))
        assert node.kill_flow(handle.flow_id) is True
        with pytest.raises(KilledFlowException):
            handle.result(10)
        assert node.kill_flow(handle.flow_id) is False
        assert node.flows() == []


def test_a_flow_asking_for_observation_is_hospitalized_and_recorded(
    tmp_path: Path, nats_server: EmbeddedNatsServer
) -> None:
    with Node(config(tmp_path, nats_server)) as node:
        handle = node.start_flow(Waits(0.01, observe=True))
        records = wait_for(node.hospital_records, 10, "the hospital admission")
        (record,) = records
        assert record.flow_id == handle.flow_id
        assert record.outcome == "observe"
        assert "please look at this" in record.message
        wait_for(
            lambda: [f.status for f in node.flows()] == [FlowStatus.HOSPITALIZED],
            10,
            "the flow's status to be HOSPITALIZED",
        )
        assert not handle.done


def test_a_flow_whose_arguments_cannot_be_stored_is_refused_at_start(
    tmp_path: Path, nats_server: EmbeddedNatsServer
) -> None:
    with Node(config(tmp_path, nats_server)) as node:
        with pytest.raises(FlowUsageError, match="can't be checkpointed"):
            node.start_flow(Waits(object()))  # type: ignore[arg-type]
        assert node.start_flow(Waits(0.01)).result(10) == "woke"


def test_a_node_that_is_not_running_says_so(
    tmp_path: Path, nats_server: EmbeddedNatsServer
) -> None:
    node = Node(config(tmp_path, nats_server))
    with pytest.raises(NodeError, match="not running"):
        node.start_flow(Waits(0.01))
    node.start()
    node.stop()
    with pytest.raises(NodeError, match="not running"):
        node.kill_flow("nothing")


def test_a_node_without_a_nats_url_runs_its_own_server_and_stops_it(tmp_path: Path) -> None:
    node = Node(NodeConfig("solo", tmp_path / "solo", apps=APPS))
    with node:
        assert node.nats is not None
        pid = node.nats.pid
        assert pid is not None
        assert node.url is not None
        assert node.url.startswith("nats://127.0.0.1:")
        assert node.start_flow(Waits(0.01)).result(10) == "woke"
    assert not node.running
    assert not Path(f"/proc/{pid}").exists()  # stopped by PID


def test_awaiting_asyncio_in_a_flow_on_a_node_gives_the_documented_usage_error(
    tmp_path: Path, nats_server: EmbeddedNatsServer
) -> None:
    with Node(config(tmp_path, nats_server)) as node:
        message = node.start_flow(AwaitsAsyncio()).result(10)
    assert message.startswith("flows may only await Parley operations")
    assert "asyncio.tasks.sleep()" in message


def test_a_client_id_reused_for_another_flow_is_refused_by_the_node(
    tmp_path: Path, nats_server: EmbeddedNatsServer
) -> None:
    with Node(config(tmp_path, nats_server)) as node:
        first = node.start_flow(Waits(0.05), client_id="order-2")
        with pytest.raises(ClientIdInUseError, match=first.flow_id):
            node.start_flow(Waits(3600), client_id="order-2")
        assert first.result(10) == "woke"
        with pytest.raises(ClientIdInUseError, match="other arguments"):
            node.start_flow(Waits(3600), client_id="order-2")


def test_a_signal_reaches_a_waiting_flow_exactly_once_across_a_kill_9(
    tmp_path: Path, nats_server: EmbeddedNatsServer
) -> None:
    assert nats_server.url is not None
    marker = tmp_path / "crashed"
    arguments = {
        "name": "alice",
        "nats_url": nats_server.url,
        "data_dir": tmp_path / "alice",
        "flow": "tests.integration.apps:Approves",
        "args": json.dumps([str(marker)]),
        "client_id": "approval-1",
    }
    first = run_flow_process(**arguments, signals=['approve="grace"'])  # type: ignore[arg-type]
    assert first.returncode == -9, first.stderr[-2000:]  # killed after consuming, before storing
    second = run_flow_process(**arguments)  # type: ignore[arg-type]
    assert second.returncode == 0, second.stderr[-2000:]
    assert json.loads(second.stdout.strip().splitlines()[-1]) == {"result": "grace"}
    database = tmp_path / "alice" / "parley.sqlite"
    assert rows(database, "SELECT side FROM effects") == [("approver",)]
    assert rows(database, "SELECT count(*) FROM flow_signal") == [(0,)]


def test_a_signal_of_the_wrong_type_is_refused_by_the_node_and_the_flow_keeps_waiting(
    tmp_path: Path, nats_server: EmbeddedNatsServer
) -> None:
    with Node(config(tmp_path, nats_server)) as node:
        handle = node.start_flow(Approves())
        wait_for(
            lambda: [f.pending_request for f in node.flows()] == ["signal"],
            10,
            "the flow to wait for its signal",
        )
        with pytest.raises(UnexpectedPayloadError, match="str"):
            node.signal(handle.flow_id, "approve", 42)
        with pytest.raises(FlowUsageError, match="no running flow"):
            node.signal("0" * 32, "approve", "x")
        node.signal(handle.flow_id, "approve", "heidi")
        assert handle.result(10) == "heidi"


def test_a_flows_handle_is_found_by_id_and_by_client_id_also_after_a_restart(
    tmp_path: Path, nats_server: EmbeddedNatsServer
) -> None:
    with Node(config(tmp_path, nats_server)) as node:
        waiting = node.start_flow(Waits(3600))
        done = node.start_flow(Waits(0.01), client_id="short")
        assert done.result(10) == "woke"
        assert node.flow_handle(waiting.flow_id) is waiting
        assert node.flow_handle("0" * 32) is None
        assert node.reattach("never-used") is None
    with Node(config(tmp_path, nats_server)) as node:
        found = node.flow_handle(waiting.flow_id)
        assert found is not None
        assert found.flow_id == waiting.flow_id
        assert not found.done
        assert node.kill_flow(waiting.flow_id)
        with pytest.raises(KilledFlowException):
            found.result(10)
        again = node.reattach("short")
        assert again is not None
        assert again.result(1) == "woke"
        by_id = node.flow_handle(done.flow_id)
        assert by_id is not None
        assert by_id.result(1) == "woke"


def test_an_operator_retries_a_flow_kept_for_observation_without_a_restart(
    tmp_path: Path, nats_server: EmbeddedNatsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Node(config(tmp_path, nats_server)) as node:
        handle = node.start_flow(Waits(0.01, observe=True))
        wait_for(
            lambda: [f.status for f in node.flows()] == [FlowStatus.HOSPITALIZED],
            10,
            "the flow to be kept for observation",
        )
        (first,) = node.hospital_show(handle.flow_id)
        assert (first.staff, first.outcome) == ("sedation", "observe")
    with Node(config(tmp_path, nats_server)) as node:  # records survive a restart
        wait_for(
            lambda: len(node.hospital_show(handle.flow_id)) == 2,
            10,
            "the flow to be admitted again after the restart",
        )
        assert [a.flow_id for a in node.hospital_list()] == [handle.flow_id]
        monkeypatch.setattr(Waits, "call", _fixed_call)
        handle = node.flow_handle(handle.flow_id) or handle
        assert node.hospital_retry(handle.flow_id) is True
        assert handle.result(10) == "fixed"
        assert node.hospital_retry(handle.flow_id) is False


async def _fixed_call(self: Waits) -> str:
    await self.sleep(self.seconds)
    return "fixed"


def test_a_draining_node_refuses_starts_finishes_running_flows_and_holds_peers_inits(
    tmp_path: Path, nats_server: EmbeddedNatsServer
) -> None:
    assert nats_server.url is not None
    bob_config = NodeConfig("bob", tmp_path / "bob", nats_url=nats_server.url, apps=APPS)
    with Node(config(tmp_path, nats_server)) as alice, Node(bob_config) as bob:
        running = alice.start_flow(Waits(0.5))
        alice.drain()
        assert alice.stats()["draining"] == 1
        with pytest.raises(NodeError, match="draining"):
            alice.start_flow(Waits(1))
        ping = bob.start_flow(Ping("alice", 1))  # its init waits at alice, un-acked
        assert running.result(10) == "woke"
        wait_for(alice.drained, 10, "alice to be drained")
        assert not ping.done
        alice.undrain()
        assert ping.result(30) == 2
        assert alice.start_flow(Waits(0.01)).result(10) == "woke"


def test_an_app_migration_that_fails_stops_the_start_with_its_own_error(
    tmp_path: Path, nats_server: EmbeddedNatsServer
) -> None:
    assert nats_server.url is not None
    apps = tmp_path / "apps"
    apps.mkdir()
    broken = 'MIGRATIONS = ["CREATE TABLE orders (id INTEGER PRIMARY"]\n'
    (apps / "broken_app.py").write_text(broken)
    config = NodeConfig(
        "alice",
        tmp_path / "alice",
        nats_url=nats_server.url,
        apps=["broken_app"],
        app_paths=[apps],
    )
    with pytest.raises(Exception, match=r"incomplete input|syntax error") as raised:
        Node(config).start()
    assert "stopped before handling the message" not in str(raised.value)

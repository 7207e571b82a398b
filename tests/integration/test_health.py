"""``parley node health`` against real nodes: the heartbeat their own parts answer for."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from parley import FlowLogic
from parley.cli import app
from parley.cli.health import check
from parley.node import HEALTH_FILE, Node, NodeConfig
from parley.transport.natsserver import EmbeddedNatsServer
from tests.integration.nodes import NodeProcess, wait_for

pytestmark = pytest.mark.integration

runner = CliRunner()

#: Released by the test that blocks a worker with :class:`Blocks`.
GATE = threading.Event()


class Blocks(FlowLogic[str]):
    """Blocks its worker's thread (no await) until :data:`GATE` opens: a wedged worker."""

    async def call(self) -> str:
        GATE.wait(60)
        return "released"


def health(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["node", "health", *args])
    return result.exit_code, result.output


@pytest.fixture
def node(tmp_path: Path, nats_server: EmbeddedNatsServer) -> Iterator[Node]:
    config = NodeConfig(
        "alice", tmp_path / "alice", nats_url=nats_server.url, workers=1, health_interval=0.3
    )
    with Node(config) as running:
        yield running


def test_a_running_node_is_healthy_and_a_stopped_one_says_so(node: Node) -> None:
    data_dir = str(node.config.data_dir)
    code, output = health("--data-dir", data_dir)
    assert code == 0, output
    assert f"node alice is healthy (pid {os.getpid()}" in output
    record = json.loads((node.config.data_dir / HEALTH_FILE).read_text())
    assert record["state"] == "running"
    assert record["nats"] == node.url
    assert "live" in record["stats"]
    node.stop()
    code, output = health("--data-dir", data_dir, "--timeout", "0.5")
    assert code == 1
    assert "node alice stopped at" in output


def test_a_wedged_worker_makes_the_node_unhealthy_until_it_answers_again(node: Node) -> None:
    data_dir = str(node.config.data_dir)
    GATE.clear()
    try:
        node.start_flow(Blocks(), wait_started=False)
        wait_for(
            lambda: "the flow workers did not answer within 0.3 s" in check(Path(data_dir)).reason,
            15,
            "a heartbeat naming the stuck worker",
        )
        code, output = health("--data-dir", data_dir)
        assert code == 1
        assert "node alice is unhealthy: the flow workers did not answer" in output
    finally:
        GATE.set()
    code, output = health("--data-dir", data_dir, "--timeout", "15")
    assert code == 0, output


def test_a_nats_server_that_is_gone_makes_the_node_unhealthy(
    node: Node, nats_server: EmbeddedNatsServer
) -> None:
    data_dir = str(node.config.data_dir)
    nats_server.kill()
    wait_for(
        lambda: f"NATS at {node.url}" in check(Path(data_dir)).reason,
        15,
        "a heartbeat saying NATS does not answer",
    )
    nats_server.start()  # the same port: the node reconnects
    code, output = health("--data-dir", data_dir, "--timeout", "30")
    assert code == 0, output


def test_an_embedded_nats_server_that_exited_is_named(tmp_path: Path) -> None:
    config = NodeConfig("solo", tmp_path / "solo", workers=1, health_interval=0.3)
    with Node(config) as node:
        assert node.nats is not None
        assert health("--data-dir", str(config.data_dir))[0] == 0
        node.nats.kill()
        wait_for(
            lambda: "the embedded nats-server exited" in check(config.data_dir).reason,
            15,
            "a heartbeat saying the embedded nats-server exited",
        )


def test_a_killed_node_process_is_not_running(
    tmp_path: Path, nats_server: EmbeddedNatsServer
) -> None:
    process = NodeProcess("bob", nats_server.url, tmp_path / "bob", ["parley.apps.pingpong"])
    process.start()
    try:
        code, output = health("--data-dir", str(process.data_dir), "--timeout", "30")
        assert code == 0, output
        assert process.proc is not None
        pid = process.proc.pid
    finally:
        process.kill()
    code, output = health("--data-dir", str(process.data_dir))
    assert code == 1
    assert f"node bob is not running: its process {pid} is gone" in output


def test_the_config_file_names_the_data_dir(node: Node, tmp_path: Path) -> None:
    toml = tmp_path / "parley.toml"
    toml.write_text(f'[node]\nname = "alice"\ndata_dir = "{node.config.data_dir}"\n')
    code, output = health("--config", str(toml))
    assert code == 0, output
    assert "node alice is healthy" in output


def test_what_is_not_a_healthy_heartbeat_is_said_plainly(tmp_path: Path) -> None:
    assert health()[0] == 2
    code, output = health("--data-dir", str(tmp_path / "nowhere"))
    assert (code, output.strip()) == (1, f"error: no such directory: {tmp_path / 'nowhere'}")
    assert "no node has run with this data dir yet" in check(tmp_path).reason
    path = tmp_path / HEALTH_FILE
    path.write_text("{")
    assert "is not a node's heartbeat" in check(tmp_path).reason
    record = {
        "node": "carol",
        "state": "running",
        "problems": [],
        "pid": os.getpid(),
        "host": "elsewhere",  # the pid can't be checked from here
        "time": 1000.0,
        "interval": 5.0,
        "stale_after": 15.0,
    }
    path.write_text(json.dumps(record))
    assert check(tmp_path, now=1010.0).healthy
    stale = check(tmp_path, now=1016.0)
    assert not stale.healthy
    assert "node carol is stuck or gone: its last heartbeat is 16 s old" in stale.reason
    path.write_text(json.dumps({**record, "state": "starting"}))
    assert "node carol is starting (for 10 s" in check(tmp_path, now=1010.0).reason

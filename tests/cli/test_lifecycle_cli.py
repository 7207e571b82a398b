"""Upgrades from the command line: `parley flow check-replay` against a copy of a node's store,
and `parley node drain|undrain` over the node's RPC service."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from parley import FlowLogic
from parley.cli.main import app
from parley.testing import MockNetwork
from parley.transport.natsserver import EmbeddedNatsServer
from tests.integration.apps import Waits
from tests.integration.nodes import wait_for
from tests.rpc.nodes import PASSWORD, Nodes

runner = CliRunner()


class Reminder(FlowLogic[str]):
    async def call(self) -> str:
        await self.sleep(3600)
        return "reminded"


async def _changed(self: Reminder) -> str:
    await self.execute(len, "now it asks for something else first")
    await self.sleep(3600)
    return "reminded"


def stored_waiting_flow(tmp_path: Path) -> Path:
    (tmp_path / "alice").mkdir()
    net = MockNetwork(auto_advance=False, data_dir=tmp_path / "alice")
    node = net.create_node("parley")
    node.start_flow(Reminder())
    net.run_network()
    node.store.close()  # as a stopped node leaves it: one file, its WAL folded in
    return tmp_path / "alice" / "parley.sqlite"


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_check_replay_passes_compatible_code_and_never_writes(tmp_path: Path) -> None:
    database = stored_waiting_flow(tmp_path)
    before = digest(database)
    result = runner.invoke(app, ["flow", "check-replay", "--data-dir", str(database.parent)])
    assert result.exit_code == 0, result.output
    assert "1 stored flows checked, 0 would fail: safe to deploy" in result.output
    assert digest(database) == before


def test_check_replay_lists_the_flows_an_incompatible_change_breaks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = stored_waiting_flow(tmp_path)
    before = digest(database)
    monkeypatch.setattr(Reminder, "call", _changed)  # the "new code"
    result = runner.invoke(
        app, ["flow", "check-replay", "--data-dir", str(database.parent), "--json"]
    )
    assert result.exit_code == 1, result.output
    report = json.loads(result.output)
    (failure,) = report["failures"]
    assert failure["flow_class"].endswith("test_lifecycle_cli:Reminder")
    assert "NonDeterministicFlowError" in failure["error_type"]
    assert digest(database) == before


def test_check_replay_of_a_missing_database_is_a_clear_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["flow", "check-replay", "--data-dir", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert "no node database" in result.output


@pytest.fixture
def nodes(nats_server: EmbeddedNatsServer, tmp_path: Path) -> Iterator[Nodes]:
    assert nats_server.url is not None
    made = Nodes(nats_server.url, tmp_path)
    try:
        made.start("alice")
        yield made
    finally:
        made.stop()


def test_drain_and_undrain_from_the_command_line(nodes: Nodes) -> None:
    env = {"PARLEY_NATS_URL": nodes.url, "PARLEY_USER": "ops", "PARLEY_PASSWORD": PASSWORD}
    alice = nodes["alice"]
    running = alice.start_flow(Waits(0.2))
    result = runner.invoke(app, ["node", "drain", "--node", "alice"], env=env)
    assert result.exit_code == 0, result.output
    assert "alice is draining" in result.output or "drained" in result.output
    assert alice.draining
    assert running.result(10) == "woke"
    wait_for(alice.drained, 10, "alice to be drained")
    result = runner.invoke(app, ["node", "undrain", "--node", "alice"], env=env)
    assert result.exit_code == 0, result.output
    assert not alice.draining


def test_draining_needs_the_all_permission(nodes: Nodes) -> None:
    env = {"PARLEY_NATS_URL": nodes.url, "PARLEY_USER": "reader", "PARLEY_PASSWORD": PASSWORD}
    result = runner.invoke(app, ["node", "drain", "--node", "alice"], env=env)
    assert result.exit_code == 1
    assert "lacks the permission ALL" in result.output
    assert not nodes["alice"].draining

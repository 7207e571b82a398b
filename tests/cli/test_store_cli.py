"""``parley node check`` and ``parley node backup`` against real databases, one of them a running
node's, and ``parley node run`` on a database of a newer Parley."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
from contextlib import closing
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from parley.cli import app
from parley.node import Node, NodeConfig
from parley.store import SqliteStore
from parley.store.maintenance import KNOWN_VERSION
from parley.transport.natsserver import EmbeddedNatsServer
from tests.integration.apps import Waits
from tests.integration.nodes import wait_for
from tests.store.helpers import checkpoint, start

runner = CliRunner()


def invoke(*args: str | Path) -> Result:
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A stopped node's directory with two flows in its database."""
    directory = tmp_path / "alice"
    directory.mkdir()
    with SqliteStore(directory / "parley.sqlite") as store:
        for flow_id in ("f1", "f2"):
            store.commit([start(flow_id), checkpoint(flow_id)])
    return directory


def test_check_says_healthy_and_exits_0(data_dir: Path) -> None:
    result = invoke("node", "check", "--data-dir", data_dir)

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0].endswith("parley.sqlite: healthy")
    assert "integrity: ok" in result.stdout
    assert f"schema: version {KNOWN_VERSION}" in result.stdout
    assert "flows 2" in result.stdout


def test_check_names_each_problem_and_exits_1_also_in_json(data_dir: Path) -> None:
    with closing(sqlite3.connect(data_dir / "parley.sqlite")) as conn:
        conn.execute("PRAGMA foreign_keys = OFF")
        conn.execute("DELETE FROM flow_start WHERE flow_id = 'f1'")
        conn.commit()

    text = invoke("node", "check", "--data-dir", data_dir)
    document = invoke("node", "check", "--data-dir", data_dir, "--json")

    assert text.exit_code == 1
    assert "NOT HEALTHY" in text.stdout
    assert "problem: 1 flow_header rows without a flow_start row" in text.stdout
    assert document.exit_code == 1
    report = json.loads(document.stdout)
    assert report["healthy"] is False
    assert report["orphans"] == {
        "flow_header rows without a flow_start row": 1,
        "journal rows without a flow_start row": 1,
    }
    assert report["integrity"] == ["ok"]


def test_check_finds_the_directory_in_the_config_and_refuses_a_missing_database(
    tmp_path: Path, data_dir: Path
) -> None:
    config = tmp_path / "parley.toml"
    config.write_text(f'[node]\nname = "alice"\ndata_dir = "{data_dir}"\n')

    assert invoke("node", "check", "--config", config).exit_code == 0
    missing = invoke("node", "check", "--data-dir", tmp_path / "bob")
    assert missing.exit_code == 2
    assert "no database at" in missing.output
    assert invoke("node", "check").exit_code == 2  # which node?


def test_backup_refuses_an_existing_target_unless_forced(tmp_path: Path, data_dir: Path) -> None:
    target = tmp_path / "backup.sqlite"
    target.write_text("yesterday's backup")

    refused = invoke("node", "backup", "--data-dir", data_dir, target)
    forced = invoke("node", "backup", "--data-dir", data_dir, target, "--force", "--json")

    assert refused.exit_code == 2
    assert "exists already: give --force" in refused.output
    assert forced.exit_code == 0, forced.output
    assert json.loads(forced.stdout)["counts"]["flows"] == 2
    assert invoke("node", "check", "--data-dir", target).exit_code == 0
    no_node = invoke("node", "backup", "--data-dir", tmp_path / "nobody", tmp_path / "b.sqlite")
    assert no_node.exit_code == 2


@pytest.mark.integration
def test_a_backup_of_a_running_node_opens_and_checks_clean(
    tmp_path: Path, nats_server: EmbeddedNatsServer
) -> None:
    config = NodeConfig(
        "alice", tmp_path / "alice", nats_url=nats_server.url, apps=["tests.integration.apps"]
    )
    done: list[object] = []
    stop = threading.Event()
    with Node(config) as node:

        def work() -> None:  # flows start, sleep and finish all through the backup
            while not stop.is_set():
                done.append(node.start_flow(Waits(0.01)).result(30))

        worker = threading.Thread(target=work)
        worker.start()
        try:
            wait_for(lambda: len(done) >= 20, 60, "flows before the backup")
            result = invoke("node", "backup", "--data-dir", config.data_dir, tmp_path)
            after = len(done)
            wait_for(lambda: len(done) >= after + 20, 60, "flows after the backup")
        finally:
            stop.set()
            worker.join(30)

    assert result.exit_code == 0, result.output
    assert "checked healthy" in result.stdout
    copy = tmp_path / "parley.sqlite"
    assert invoke("node", "check", "--data-dir", copy).exit_code == 0
    with SqliteStore(copy, readonly=True) as restored:
        assert all((f.flow_class or "").endswith(":Waits") for f in restored.list_flows())


def test_node_run_refuses_a_database_of_a_newer_parley_with_a_clear_error(
    data_dir: Path,
) -> None:
    with closing(sqlite3.connect(data_dir / "parley.sqlite")) as conn:
        conn.execute(f"PRAGMA user_version = {KNOWN_VERSION + 5}")

    # The refusal comes before NATS: nothing listens on port 9.
    command = [sys.executable, "-m", "parley.cli", "node", "run", "--name", "alice"]
    command += ["--data-dir", str(data_dir), "--nats", "nats://127.0.0.1:9", "--no-rpc"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)

    assert result.returncode == 1
    assert "error: node alice failed to start" in result.stderr
    assert f"schema version {KNOWN_VERSION + 5}, newer than this Parley's" in result.stderr
    assert "Run the newer Parley on it" in result.stderr

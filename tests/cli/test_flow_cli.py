"""``parley flow``, ``parley hospital``, ``parley nats serve`` and ``node init --user`` against
real nodes on a real nats-server: output, JSON, errors and exit codes."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import nats
import pytest
from rich.console import Console
from typer.testing import CliRunner, Result

from parley.cli import app
from parley.cli.render import LiveProgress, reached
from parley.cli.users import load_users
from parley.node import Node
from parley.rpc import NodeUnreachable, ProgressRow, ProgressUpdate
from parley.rpc.users import verify_password
from parley.transport.natsserver import EmbeddedNatsServer
from tests.cli.common import refused
from tests.integration.nodes import REPO, node_process, wait_for
from tests.rpc.nodes import PASSWORD, Nodes

pytestmark = pytest.mark.integration

runner = CliRunner()
WAIT = 20.0
PING = "parley.apps.pingpong:Ping"
STEPS = "tests.integration.apps:Steps"


@pytest.fixture(autouse=True)
def _no_stale_log_handlers() -> None:
    """Drop handlers left on the ``parley`` logger by earlier ``node run`` invocations.

    ``parley node run`` installs a StreamHandler on the stderr of the moment; under CliRunner
    that stream is closed once the command returns, and every later log line would write
    "--- Logging error ---" into whatever output is being captured then, including ours.
    """
    logger = logging.getLogger("parley")
    for handler in list(logger.handlers):
        stream = getattr(handler, "stream", None)
        if stream is not None and getattr(stream, "closed", False):
            logger.removeHandler(handler)


def parley(nodes: Nodes, *args: str, user: str = "ops", password: str = PASSWORD) -> Result:
    """``parley ARGS`` with the nodes' NATS and the user's credentials in the environment."""
    env = {"PARLEY_NATS_URL": nodes.url, "PARLEY_USER": user, "PARLEY_PASSWORD": password}
    return runner.invoke(app, list(args), env=env)


def as_json(result: Result) -> Any:
    return json.loads(result.stdout)


# ---------------------------------------------------------------------- flow start


@contextmanager
def approving(node: Node) -> Iterator[None]:
    """A person who approves (signal ``approve``: true) each flow that waits for it, meanwhile."""
    done = threading.Event()

    def approve() -> None:
        approved: set[str] = set()
        while not done.wait(0.02):
            for row in node.flows():
                if row.waiting_for == "signal approve" and row.flow_id not in approved:
                    node.signal(row.flow_id, "approve", True)
                    approved.add(row.flow_id)

    person = threading.Thread(target=approve, daemon=True)
    person.start()
    try:
        yield
    finally:
        done.set()
        person.join(10)


def test_flow_start_watch_shows_the_steps_in_order_with_the_sub_flows_indented(
    nodes: Nodes,
) -> None:
    with approving(nodes["alice"]):
        result = parley(nodes, "flow", "start", "alice", STEPS, "bob", "1", "true")
    assert result.exit_code == 0, result.output
    assert result.stdout == "2\n"
    lines = result.stderr.splitlines()
    assert lines[0].startswith(f"{STEPS} ")
    assert lines[1:] == [
        "Preparing",
        "Consulting the peer",
        "  Asking the peer",
        "  Reading the answer",
        "Awaiting approval",
        "Finishing",
    ]


def test_flow_start_json_prints_one_document_with_the_steps_and_the_result(nodes: Nodes) -> None:
    with approving(nodes["alice"]):
        result = parley(nodes, "flow", "start", "alice", "Steps", "bob", "4", "true", "--json")
    assert result.exit_code == 0, result.output
    document = as_json(result)
    assert document["flow"] == STEPS
    assert (document["outcome"], document["result"]) == ("completed", 5)
    assert document["steps"] == [
        "Preparing",
        "Consulting the peer",
        "Consulting the peer / Asking the peer",
        "Consulting the peer / Reading the answer",
        "Awaiting approval",
        "Finishing",
    ]


def test_flow_start_converts_dataclasses_datetimes_and_bools_from_text(nodes: Nodes) -> None:
    order = '{"item": "tea", "quantity": 2, "price": "1.25"}'
    result = parley(nodes, "flow", "start", "alice", "Books", order, "2025-03-01", "true")
    assert result.exit_code == 0, result.output
    assert result.stdout == "tea x2 = 2.50 on 2025-03-01 express\n"


def test_the_same_client_id_twice_gives_one_flow_and_one_result_across_a_restart(
    nodes: Nodes,
) -> None:
    start = ["flow", "start", "alice", "tests.integration.apps:Rounds", "bob", "2"]
    first = as_json(parley(nodes, *start, "--client-id", "c-9", "--json"))
    second = as_json(parley(nodes, *start, "--client-id", "c-9", "--json"))
    nodes.restart("alice")
    third = as_json(parley(nodes, *start, "--client-id", "c-9", "--json"))
    assert first["flow_id"] == second["flow_id"] == third["flow_id"]
    assert [d["result"] for d in (first, second, third)] == [2, 2, 2]
    listed = as_json(parley(nodes, "flow", "list", "--node", "alice", "--json"))
    assert [row["flow_id"] for row in listed if row["client_id"] == "c-9"] == [first["flow_id"]]


def test_flow_start_no_watch_prints_the_id_and_flow_result_the_result(nodes: Nodes) -> None:
    started = parley(nodes, "flow", "start", "alice", PING, "bob", "9", "--no-watch")
    assert started.exit_code == 0, started.output
    flow_id = started.stdout.strip()
    result = parley(nodes, "flow", "result", flow_id, "--node", "alice", "--json")
    assert result.exit_code == 0, result.output
    assert as_json(result)["result"] == 10


def test_an_argument_that_does_not_fit_names_the_parameter_and_its_type(nodes: Nodes) -> None:
    result = parley(nodes, "flow", "start", "alice", PING, "bob", "notanint")
    refused(result, 2, "argument n of parley.apps.pingpong:Ping expects int, got 'notanint'")
    assert nodes["alice"].flows() == []


def test_an_unknown_flow_class_is_refused_with_the_closest_names(nodes: Nodes) -> None:
    result = parley(nodes, "flow", "start", "alice", "parley.apps.pingpong:Pingg", "bob")
    refused(result, 2, "no flow class 'parley.apps.pingpong:Pingg'", "did you mean", PING)


def test_a_flow_not_startable_by_rpc_is_refused(nodes: Nodes) -> None:
    result = parley(nodes, "flow", "start", "alice", "tests.integration.apps:NotForRpc")
    refused(result, 2, "not startable over RPC", "@startable_by_rpc")
    assert nodes["alice"].flows() == []


def test_refused_credentials_and_permissions_start_nothing(nodes: Nodes) -> None:
    start = ["flow", "start", "alice", STEPS, "bob"]
    refused(parley(nodes, *start, password="wrong"), 1, "user 'ops' and password not accepted")
    refused(parley(nodes, *start, user="", password=""), 1, "carries no credentials")
    refused(
        parley(nodes, *start, user="pinger"),
        1,
        "user 'pinger' may not start tests.integration.apps:Steps",
        "lacks the permission StartFlow.tests.integration.apps:Steps",
    )
    assert nodes["alice"].flows() == []
    assert nodes["bob"].flows() == []


def test_a_node_out_of_reach_is_one_line_naming_the_url_or_the_node(nodes: Nodes) -> None:
    result = parley(nodes, "flow", "list", "--node", "alice", "--nats", "nats://127.0.0.1:1")
    refused(result, 1, "can't reach NATS at nats://127.0.0.1:1")
    result = parley(nodes, "flow", "list", "--node", "carol")
    refused(result, 1, "node carol is not reachable", nodes.url)


def test_debug_lets_the_traceback_through(nodes: Nodes) -> None:
    result = parley(nodes, "flow", "list", "--node", "carol", "--debug")
    assert isinstance(result.exception, NodeUnreachable)


# ---------------------------------------------------------------------- signals, kills, lists


def test_a_flow_waiting_for_approval_is_listed_refuses_a_wrong_signal_and_takes_the_right_one(
    nodes: Nodes,
) -> None:
    approves = "tests.integration.apps:Approves"
    flow_id = parley(nodes, "flow", "start", "alice", approves, "--no-watch").stdout.strip()

    def waiting() -> dict[str, Any] | None:
        rows = as_json(parley(nodes, "flow", "list", "--node", "alice", "--json"))
        return next((r for r in rows if r["flow_id"] == flow_id and r["waiting_for"]), None)

    assert wait_for(waiting, WAIT, "the flow to wait")["waiting_for"] == "signal approve"
    table = parley(nodes, "flow", "list", "--node", "alice", "--status", "runnable")
    assert flow_id in table.stdout
    assert "signal approve" in table.stdout
    wrong = parley(nodes, "flow", "signal", flow_id, "approve", "5", "--node", "alice")
    refused(wrong, 2, "the flow keeps waiting")
    assert wait_for(waiting, WAIT, "the flow to still wait")["status"] == "RUNNABLE"
    sent = parley(nodes, "flow", "signal", flow_id, "approve", "carol", "--node", "alice")
    assert sent.exit_code == 0, sent.output
    result = parley(nodes, "flow", "result", flow_id, "--node", "alice")
    assert (result.exit_code, result.stdout) == (0, "carol\n")


def test_killing_a_waiting_flow_ends_its_counterpartys_flow_with_unexpected_flow_end(
    nodes: Nodes,
) -> None:
    asks = "tests.integration.apps:AwaitReply"
    asker = parley(nodes, "flow", "start", "bob", asks, "alice", "--no-watch").stdout.strip()
    silent_class = ["--node", "alice", "--class", "Silent", "--json"]

    def silent() -> str | None:
        rows = as_json(parley(nodes, "flow", "list", *silent_class))
        waiting = [r["flow_id"] for r in rows if r["waiting_for"] == "signal never"]
        return waiting[0] if waiting else None

    victim = wait_for(silent, WAIT, "alice's responder to wait")
    killed = parley(nodes, "flow", "kill", victim, "--node", "alice")
    assert (killed.exit_code, killed.stdout) == (0, f"killed flow {victim} on alice\n")
    result = parley(nodes, "flow", "result", asker, "--node", "bob", "--json")
    assert result.exit_code == 1
    outcome = as_json(result)
    assert outcome["outcome"] == "failed"
    assert outcome["error"]["type"] == "parley.protocol.errors:UnexpectedFlowEndException"
    assert as_json(parley(nodes, "flow", "list", *silent_class)) == []
    again = parley(nodes, "flow", "kill", victim, "--node", "alice")
    refused(again, 1, f"node alice runs no flow {victim}")


def test_flow_list_watch_json_prints_a_line_per_change_until_interrupted(nodes: Nodes) -> None:
    command = [sys.executable, "-m", "parley.cli", "flow", "list", "--watch", "--json"]
    command += ["--node", "alice", "--class", "Approves"]
    env = {**os.environ, "PARLEY_NATS_URL": nodes.url, "PARLEY_USER": "ops"}
    watcher = subprocess.Popen(
        command,
        cwd=REPO,
        env={**env, "PARLEY_PASSWORD": PASSWORD},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert watcher.stdout is not None
        assert json.loads(watcher.stdout.readline()) == []
        with nodes.client() as rpc:
            handle = rpc.start_flow("tests.integration.apps:Approves", [], client_id="seen")
            while True:  # one line per change, until the flow waits for its approval
                rows = json.loads(watcher.stdout.readline())
                if rows and rows[0]["waiting_for"] == "signal approve":
                    break
            assert [row["flow_id"] for row in rows] == [handle.flow_id]
    finally:
        watcher.send_signal(signal.SIGINT)
        _, stderr = watcher.communicate(timeout=30)
    assert watcher.returncode == 130, stderr
    assert "Traceback" not in stderr


def test_flow_watch_of_a_finished_client_id_flow_prints_its_result(nodes: Nodes) -> None:
    started = parley(nodes, "flow", "start", "alice", PING, "bob", "1", "--client-id", "w-1")
    assert started.exit_code == 0, started.output
    flow_id = as_json(parley(nodes, "flow", "list", "--node", "alice", "--json"))[0]["flow_id"]
    watched = parley(nodes, "flow", "watch", flow_id, "--node", "alice")
    assert (watched.exit_code, watched.stdout) == (0, "2\n")


def test_waiting_longer_than_wait_is_a_one_line_timeout(nodes: Nodes) -> None:
    waits = "tests.integration.apps:Waits"
    flow_id = parley(nodes, "flow", "start", "alice", waits, "--no-watch").stdout.strip()
    result = parley(nodes, "flow", "result", flow_id, "--node", "alice", "--wait", "0.2")
    refused(result, 1, f"flow {flow_id} has not finished within 0.2 s")


# ---------------------------------------------------------------------- the hospital


def test_the_hospital_lists_shows_retries_and_kills_a_kept_flow(nodes: Nodes) -> None:
    waits = "tests.integration.apps:Waits"
    flow_id = parley(nodes, "flow", "start", "alice", waits, "0", "true", "--no-watch").stdout
    flow_id = flow_id.strip()

    def kept() -> list[dict[str, Any]] | None:
        rows = as_json(parley(nodes, "hospital", "list", "--node", "alice", "--json"))
        return [r for r in rows if r["flow_id"] == flow_id and r["admission"]] or None

    admission = wait_for(kept, WAIT, "the flow in the hospital")[0]["admission"]
    assert admission["error_type"].endswith("HospitalizeFlowException")
    shown = parley(nodes, "hospital", "show", flow_id, "--node", "alice")
    assert "please look at this" in shown.stdout
    assert "Traceback" in shown.stdout
    retried = parley(nodes, "hospital", "retry", flow_id, "--node", "alice")
    assert retried.exit_code == 0, retried.output

    def admitted_twice() -> bool:
        shown = as_json(parley(nodes, "hospital", "show", flow_id, "--node", "alice", "--json"))
        return len(shown["admissions"]) >= 2 and shown["flow"]["status"] == "HOSPITALIZED"

    wait_for(admitted_twice, WAIT, "the retried flow to come back")
    killed = parley(nodes, "hospital", "kill", flow_id, "--node", "alice")
    assert killed.exit_code == 0, killed.output
    result = parley(nodes, "flow", "result", flow_id, "--node", "alice", "--json")
    assert as_json(result)["outcome"] == "killed"
    refused(
        parley(nodes, "hospital", "retry", flow_id, "--node", "alice"),
        1,
        f"node alice keeps no flow {flow_id} for observation",
    )


def test_the_hospital_needs_the_hospital_permission(nodes: Nodes) -> None:
    result = parley(nodes, "hospital", "list", "--node", "alice", user="reader")
    refused(result, 1, "lacks the permission Hospital")


# ---------------------------------------------------------------------- node init, nats serve


def test_node_init_user_appends_a_hashed_entry_that_node_run_reads(tmp_path: Path) -> None:
    config = tmp_path / "parley.toml"
    config.write_text('[node]\nname = "alice"\n')
    args = ["node", "init", "--name", "alice", "--data-dir", str(tmp_path / "alice")]
    args += ["--user", "ops", "--permission", "ReadFlows", "--permission", "Signal"]
    result = runner.invoke(app, [*args, "--config", str(config)], env={"PARLEY_PASSWORD": "pw"})
    assert result.exit_code == 0, result.output
    entry = tomllib.loads(config.read_text())["users"][0]
    assert entry["name"] == "ops"
    assert entry["permissions"] == ["ReadFlows", "Signal"]
    assert verify_password("pw", entry["password"])
    assert "pw" not in config.read_text().replace(entry["password"], "")
    assert [u.name for u in load_users(config)] == ["ops"]
    twice = runner.invoke(app, [*args, "--config", str(config)], env={"PARLEY_PASSWORD": "pw"})
    assert twice.exit_code == 1
    assert "has a user 'ops' already" in twice.output


def test_node_init_user_prints_the_entry_without_a_config(tmp_path: Path) -> None:
    args = ["node", "init", "--name", "bob", "--data-dir", str(tmp_path / "bob")]
    result = runner.invoke(
        app, [*args, "--user", "ops", "--permission", "ALL"], env={"PARLEY_PASSWORD": "pw"}
    )
    assert result.exit_code == 0, result.output
    entry = tomllib.loads(result.stdout.split("\n", 1)[1])["users"][0]
    assert verify_password("pw", entry["password"])


def test_a_users_entry_with_a_plain_password_stops_node_run(tmp_path: Path) -> None:
    config = tmp_path / "parley.toml"
    config.write_text(
        '[node]\nname = "alice"\n\n[[users]]\nname = "ops"\npassword = "hunter2"\n'
        'permissions = ["ALL"]\n'
    )
    result = runner.invoke(app, ["node", "run", "--config", str(config)])
    refused(result, 2, "the password of user 'ops' is not a scrypt hash", "parley node init")


def test_a_node_process_serves_the_rpc_users_of_its_config_file(
    nats_server: EmbeddedNatsServer, tmp_path: Path
) -> None:
    config = tmp_path / "parley.toml"
    config.write_text(
        f'[node]\nname = "alice"\nnats = "{nats_server.url}"\n'
        f'data_dir = "{tmp_path / "alice"}"\napps = ["parley.apps.pingpong"]\n'
    )
    init = ["node", "init", "--name", "alice", "--data-dir", str(tmp_path / "alice")]
    init += ["--user", "ops", "--permission", "StartFlow.parley.apps.pingpong:Ping"]
    made = runner.invoke(app, [*init, "--config", str(config)], env={"PARLEY_PASSWORD": "pw"})
    assert made.exit_code == 0, made.output
    with node_process("bob", nats_server.url, tmp_path / "bob", ["parley.apps.pingpong"]):
        alice = subprocess.Popen(
            [sys.executable, "-m", "parley.cli", "node", "run", "--config", str(config)],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert alice.stderr is not None
            for line in alice.stderr:  # until it runs (or exits: then the loop ends)
                if "node alice running" in line:
                    break
            env = {"PARLEY_NATS_URL": nats_server.url, "PARLEY_PASSWORD": "pw"}
            started = runner.invoke(
                app, ["flow", "start", "alice", PING, "bob", "5", "--user", "ops"], env=env
            )
            listed = runner.invoke(
                app, ["flow", "list", "--node", "alice", "--user", "ops"], env=env
            )
        finally:
            alice.send_signal(signal.SIGTERM)
            alice.communicate(timeout=30)
    assert (started.exit_code, started.stdout) == (0, "6\n")
    refused(listed, 1, "lacks the permission ReadFlows")


def test_nats_serve_runs_a_server_nodes_can_use_until_sigterm(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "parley.cli", "nats", "serve", "--port", "0"]
    command += ["--store-dir", str(tmp_path / "nats")]
    process = subprocess.Popen(
        command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        assert url.startswith("nats://127.0.0.1:")

        async def ping() -> bool:
            connection = await nats.connect(url)
            info = await connection.jetstream().account_info()
            await connection.close()
            return info is not None

        import asyncio  # noqa: PLC0415 (this test's one loop)

        assert asyncio.run(ping())
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    assert "nats-server stopped" in stderr
    assert os.path.isdir(tmp_path / "nats")


# ---------------------------------------------------------------------- rendering


TREE = (
    ProgressRow(0, "Preparing", False),
    ProgressRow(0, "Consulting the peer", True),
    ProgressRow(1, "Asking the peer", False),
    ProgressRow(1, "Reading the answer", True),
    ProgressRow(1, "Done", False),
    ProgressRow(0, "Finishing", False),
    ProgressRow(0, "Done", False),
)


def test_steps_before_the_current_one_are_passed_and_those_after_to_come() -> None:
    states = [(" / ".join(path), state) for path, _, state in reached(TREE)]
    assert states == [
        ("Preparing", "done"),
        ("Consulting the peer", "current"),
        ("Consulting the peer / Asking the peer", "done"),
        ("Consulting the peer / Reading the answer", "current"),
        ("Consulting the peer / Done", "pending"),
        ("Finishing", "pending"),
        ("Done", "pending"),
    ]


def test_the_live_tree_marks_passed_current_and_coming_steps_with_sub_flows_indented() -> None:
    console = Console(file=io.StringIO(), force_terminal=True, width=60, record=True)
    progress = LiveProgress("Steps 1234", console=console)
    progress.update(ProgressUpdate("1234", 3, "position", TREE, step="Reading the answer"))
    progress.close()
    lines = [line.rstrip() for line in console.export_text().splitlines() if line.strip()]
    assert (
        lines[-7:]
        == [
            "Steps 1234",
            "├── ✓ Preparing",
            "├── ▶ Consulting the peer",
            "│   ├── ✓ Asking the peer",
            "│   └── ▶ Reading the answer",
            "└── · Finishing",
        ][-7:]
    )

"""The operator's commands (``parley network``) and ``parley node init`` against a real
nats-server: keys, admitting, listing and revoking nodes, NATS authorization, and the errors a
person can act on. One end-to-end test runs a ``parley node run`` process in a network set up
with these commands alone."""

from __future__ import annotations

import json
import os
import queue
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import nkeys
import pytest
from typer.testing import CliRunner, Result

from parley.apps.pingpong import Ping
from parley.cli import app
from parley.identity.keys import IDENTITY_FILE, operator_key, read_key
from parley.node import Node, NodeConfig
from parley.transport.natsserver import EmbeddedNatsServer
from tests.cli.common import refused

runner = CliRunner()
USER: int = nkeys.PREFIX_BYTE_USER
REPO = Path(__file__).resolve().parents[2]


def invoke(*args: str | Path, env: dict[str, str] | None = None) -> Result:
    return runner.invoke(app, [str(a) for a in args], env=env)


@pytest.fixture
def url(nats_server: EmbeddedNatsServer) -> str:
    assert nats_server.url is not None
    return nats_server.url


@pytest.fixture
def operator_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "network"
    result = invoke("network", "init", "--dir", directory)
    assert result.exit_code == 0, result.output
    return directory


def node_key(tmp_path: Path, name: str) -> str:
    result = invoke("node", "init", "--name", name, "--data-dir", tmp_path / name)
    assert result.exit_code == 0, result.output
    return result.stdout.strip()


def entries(operator_dir: Path, url: str) -> dict[str, dict[str, object]]:
    result = invoke("network", "list", "--json", "--dir", operator_dir, "--nats", url)
    assert result.exit_code == 0, result.output
    return {e["name"]: e for e in json.loads(result.stdout)}


# ---------------------------------------------------------------------- keys


def test_network_init_creates_owner_only_keys_and_prints_their_public_keys(tmp_path: Path) -> None:
    directory = tmp_path / "network"
    result = invoke("network", "init", "--dir", directory)
    assert result.exit_code == 0, result.output
    printed = dict(line.split() for line in result.stdout.strip().splitlines())
    operator = operator_key(directory / "operator.nk")
    assert printed["operator"] == operator.public_key
    assert printed["admin"] == read_key(directory / "admin.nk", kind=USER).public_key
    assert (directory / "operator.pub").read_text().strip() == operator.public_key
    for secret in ("operator.nk", "admin.nk"):
        assert stat.S_IMODE((directory / secret).stat().st_mode) == 0o600
    assert "parley network admit" in result.stderr


def test_network_init_never_overwrites_an_existing_operator_key(operator_dir: Path) -> None:
    before = (operator_dir / "operator.nk").read_bytes()
    result = invoke("network", "init", "--dir", operator_dir)
    refused(result, 1, "refusing to overwrite", str(operator_dir / "operator.nk"))
    assert (operator_dir / "operator.nk").read_bytes() == before


def test_node_init_prints_a_user_key_and_running_it_again_keeps_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    first = invoke("node", "init", "--name", "alice")
    assert first.exit_code == 0, first.output
    key = first.stdout.strip()
    assert key.startswith("U")
    assert len(key) == 56
    assert read_key(tmp_path / "alice" / IDENTITY_FILE, kind=USER).public_key == key
    assert f"parley network admit alice {key}" in first.stderr
    again = invoke("node", "init", "--name", "alice")
    assert again.exit_code == 0, again.output
    assert again.stdout.strip() == key


def test_node_init_refuses_a_bad_name_and_a_database_without_its_key(tmp_path: Path) -> None:
    refused(invoke("node", "init", "--name", "al.ice"), 2, "'al.ice' is not a node name")
    lost = tmp_path / "lost"
    lost.mkdir()
    (lost / "parley.sqlite").write_bytes(b"")
    refused(invoke("node", "init", "--name", "lost", "--data-dir", lost), 1, "no identity.nk")
    assert not (lost / IDENTITY_FILE).exists()


# ---------------------------------------------------------------------- the map


def test_admit_list_and_revoke_a_node_on_a_server_without_authorization(
    tmp_path: Path, operator_dir: Path, url: str
) -> None:
    # admin.nk exists, so the commands present it; a server without authorization ignores it.
    key = node_key(tmp_path, "alice")
    env = {"PARLEY_NATS_URL": url, "PARLEY_NETWORK_DIR": str(operator_dir)}
    admitted = invoke("network", "admit", "alice", key, "--app", "parley.apps.pingpong", env=env)
    assert admitted.exit_code == 0, admitted.output
    assert f"admitted alice under {key}" in admitted.stdout
    listed = entries(operator_dir, url)
    assert set(listed) == {"alice"}
    assert listed["alice"]["status"] == "admitted"
    assert listed["alice"]["keys"] == [key]
    assert listed["alice"]["apps"] == ["parley.apps.pingpong"]
    table = invoke("network", "list", env=env)
    assert table.exit_code == 0, table.output
    assert "alice" in table.stdout
    assert "admitted" in table.stdout

    revoked = invoke("network", "revoke", "alice", env=env)
    assert revoked.exit_code == 0, revoked.output
    after = entries(operator_dir, url)["alice"]
    assert after["status"] == "revoked"
    assert after["keys"] == [key]
    assert isinstance(after["serial"], int)
    assert isinstance(listed["alice"]["serial"], int)
    assert after["serial"] > listed["alice"]["serial"]
    assert "revoked" in invoke("network", "list", env=env).stdout


def test_a_node_is_admitted_under_two_keys_during_a_rotation(
    tmp_path: Path, operator_dir: Path, url: str
) -> None:
    old, new = node_key(tmp_path, "alice"), node_key(tmp_path / "next", "alice")
    options = ["--dir", str(operator_dir), "--nats", url]
    assert invoke("network", "admit", "alice", old, *options).exit_code == 0
    result = invoke("network", "admit", "alice", new, old, *options)
    assert result.exit_code == 0, result.output
    assert entries(operator_dir, url)["alice"]["keys"] == [new, old]
    config = invoke("network", "nats-config", *options)
    assert config.exit_code == 0, config.output
    assert new in config.stdout
    assert old in config.stdout  # NATS lets alice connect with either key until the rotation ends


def test_nats_config_lists_every_admitted_node_and_not_the_revoked_ones(
    tmp_path: Path, operator_dir: Path, url: str
) -> None:
    keys = {name: node_key(tmp_path, name) for name in ("alice", "bob", "carol")}
    options = ["--dir", str(operator_dir), "--nats", url]
    for name, key in keys.items():
        assert invoke("network", "admit", name, key, *options).exit_code == 0
    assert invoke("network", "revoke", "carol", *options).exit_code == 0
    out = tmp_path / "parley-authorization.conf"
    result = invoke("network", "nats-config", "--out", out, *options)
    assert result.exit_code == 0, result.output
    fragment = out.read_text()
    assert f'"{keys["alice"]}"' in fragment
    assert f'"{keys["bob"]}"' in fragment
    assert keys["carol"] not in fragment
    admin = read_key(operator_dir / "admin.nk", kind=USER).public_key
    assert f'"{admin}"' in fragment
    assert 'include "parley-authorization.conf"' in result.stderr


def test_nats_config_takes_nodes_from_the_command_line_without_a_server(
    tmp_path: Path, operator_dir: Path
) -> None:
    key = node_key(tmp_path, "alice")
    result = invoke(
        "network", "nats-config", "--dir", operator_dir, "--node", f"alice={key}",
        "--nats", "nats://127.0.0.1:1",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "# node alice" in result.stdout
    assert f'nkey: "{key}"' in result.stdout


# ---------------------------------------------------------------------- errors


def test_bad_names_and_keys_are_refused_before_anything_is_sent(
    tmp_path: Path, operator_dir: Path
) -> None:
    key = node_key(tmp_path, "alice")
    seed = (tmp_path / "alice" / IDENTITY_FILE).read_text().strip()
    operator = (operator_dir / "operator.pub").read_text().strip()
    nowhere = ["--dir", str(operator_dir), "--nats", "nats://127.0.0.1:1"]
    refused(invoke("network", "admit", "a.b", key, *nowhere), 2, "'a.b' is not a node name")
    refused(invoke("network", "admit", "alice", "UABC", *nowhere), 2, "not a public user NKey")
    mistyped = key[:-1] + ("B" if key.endswith("A") else "A")  # the checksum's last bits
    refused(invoke("network", "admit", "alice", mistyped, *nowhere), 2, "checksum")
    line = refused(invoke("network", "admit", "alice", seed, *nowhere), 2, "seed", "secret")
    assert seed not in line  # a seed typed by mistake is not echoed whole
    refused(invoke("network", "admit", "alice", operator, *nowhere), 2, "an operator key")
    refused(invoke("network", "admit", "alice", key, key, *nowhere), 2, "given twice")
    refused(invoke("network", "revoke", "a b", *nowhere), 2, "not a node name")
    refused(invoke("network", "nats-config", "--node", "alice", *nowhere), 2, "NAME=KEY")
    refused(invoke("network", "nats-config", "--node", "alice=U1", *nowhere), 2, "--node alice")


def test_revoking_a_node_that_is_not_in_the_map_is_refused(operator_dir: Path, url: str) -> None:
    result = invoke("network", "revoke", "bob", "--dir", operator_dir, "--nats", url)
    refused(result, 1, "bob is not in the network map")


def test_no_nats_server_is_an_error_naming_the_url(operator_dir: Path) -> None:
    started = time.monotonic()
    result = invoke("network", "list", "--dir", operator_dir, "--nats", "nats://127.0.0.1:1")
    refused(result, 1, "no NATS server at nats://127.0.0.1:1", "Connect call failed", "--nats")
    assert time.monotonic() - started < 8, "an interactive command should fail fast"


def test_a_missing_operator_key_names_its_path_and_the_command_that_creates_it(
    tmp_path: Path, url: str
) -> None:
    empty = tmp_path / "elsewhere"
    key = node_key(tmp_path, "alice")
    for command in (["admit", "alice", key], ["revoke", "alice"], ["list"]):
        result = invoke("network", *command, "--dir", empty, "--nats", url)
        refused(result, 1, str(empty / "operator.nk"), f"parley network init --dir {empty}")
    result = invoke("network", "nats-config", "--dir", empty, "--node", f"alice={key}")
    refused(result, 1, str(empty / "admin.nk"), "parley network init")


def test_unusable_tls_files_and_a_missing_admin_key_are_refused(
    tmp_path: Path, operator_dir: Path, url: str
) -> None:
    options = ["--dir", str(operator_dir), "--nats", url]
    ca = tmp_path / "nope-ca.pem"
    result = invoke("network", "list", "--nats-tls-ca", ca, *options)
    refused(result, 2, f"can't read the TLS CA file {ca}")
    result = invoke("network", "list", "--nats-tls-cert", tmp_path / "cert.pem", *options)
    refused(result, 2, "needs its key file")
    (operator_dir / "admin.nk").unlink()
    refused(invoke("network", "list", "--nats-nkey", *options), 1, "no admin key at")
    assert invoke("network", "list", *options).exit_code == 0  # by default: no key, no NKey


def test_node_run_refuses_an_operator_key_it_cannot_use(tmp_path: Path, operator_dir: Path) -> None:
    base: list[str | Path] = ["node", "run", "--name", "alice", "--data-dir", tmp_path / "alice"]
    base += ["--nats", "nats://127.0.0.1:1"]
    refused(invoke(*base, "--operator-key", "OABC"), 2, "neither the operator's public key")
    seed = (operator_dir / "operator.nk").read_text().strip()
    line = refused(invoke(*base, "--operator-key", seed), 2, "is a seed, which is secret")
    assert seed[2:] not in line
    seed_file = operator_dir / "operator.nk"
    refused(invoke(*base, "--operator-key", seed_file), 2, "secret seed", "operator.pub")
    refused(invoke(*base, "--operator-key", operator_dir / "admin.nk"), 2, "secret seed")
    user_file = tmp_path / "user.pub"
    user_file.write_text(node_key(tmp_path, "bob") + "\n")
    refused(invoke(*base, "--operator-key", user_file), 2, "does not hold an operator public key")


# ---------------------------------------------------------------------- end to end


class NodeProcess:
    """``parley node run`` in a child process with any extra arguments (the network's flags)."""

    def __init__(self, name: str, url: str, data_dir: Path, extra: Sequence[str]) -> None:
        self.name = name
        self.command = [
            sys.executable, "-m", "parley.cli", "node", "run", "--name", name, "--nats", url,
            "--data-dir", str(data_dir), "--app", "parley.apps.pingpong", *extra,
        ]  # fmt: skip
        self.lines: queue.Queue[str] = queue.Queue()
        self.log: list[str] = []
        self.proc: subprocess.Popen[str] | None = None

    def start(self, timeout: float = 30.0) -> None:
        self.proc = subprocess.Popen(
            self.command,
            cwd=REPO,
            env=dict(os.environ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.reader = threading.Thread(target=self._read, args=(self.proc,), daemon=True)
        self.reader.start()
        deadline = time.monotonic() + timeout
        while f"node {self.name} running" not in "".join(self.log[-1:]):
            try:
                self.log.append(self.lines.get(timeout=max(deadline - time.monotonic(), 0.01)))
            except queue.Empty:
                raise AssertionError(f"{self.name} did not start:\n{''.join(self.log)}") from None
            if self.proc.poll() is not None and self.lines.empty():
                raise AssertionError(f"{self.name} exited:\n{''.join(self.log)}")

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            self.lines.put(line)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.reader.join(10)
        assert self.proc.stderr is not None
        self.proc.stderr.close()


@pytest.fixture
def secured_server(tmp_path: Path, operator_dir: Path) -> Iterator[tuple[EmbeddedNatsServer, str]]:
    """A nats-server whose authorization is what ``network nats-config`` wrote for alice and bob.

    The fragment is pulled in with ``include``, next to the server's configuration file, as the
    command tells the operator to do.
    """
    keys = {name: node_key(tmp_path, name) for name in ("alice", "bob")}
    server = EmbeddedNatsServer(
        tmp_path / "nats-secured",
        max_file_store="256M",
        max_mem_store="64M",
        extra_config='include "parley-authorization.conf"\n',
    )
    out = server.config_file.parent / "parley-authorization.conf"
    pairs = [arg for name, key in keys.items() for arg in ("--node", f"{name}={key}")]
    written = invoke("network", "nats-config", "--dir", operator_dir, "--out", out, *pairs)
    assert written.exit_code == 0, written.output
    assert 'include "parley-authorization.conf"' in written.stderr
    try:
        yield server, server.start()
    finally:
        server.stop()


def test_a_node_process_run_with_the_operator_key_answers_a_ping_under_nats_authorization(
    tmp_path: Path, operator_dir: Path, secured_server: tuple[EmbeddedNatsServer, str]
) -> None:
    _, url = secured_server
    options = ["--dir", str(operator_dir), "--nats", url]
    # In a process of its own: nats-py leaves the socket of a refused connection open (a
    # ResourceWarning, an error under pytest); and this checks a real stderr for tracebacks.
    unauthenticated = subprocess.run(
        [sys.executable, "-m", "parley.cli", "network", "list", "--no-nats-nkey", *options],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert unauthenticated.returncode == 1
    assert unauthenticated.stdout == ""
    line = unauthenticated.stderr.strip()
    assert "\n" not in line, line
    assert line.startswith(f"error: the NATS server at {url} refused the admin's credentials")
    assert "Authorization Violation" in line
    names = ("alice", "bob")
    keys = {n: read_key(tmp_path / n / IDENTITY_FILE, kind=USER).public_key for n in names}
    for name, key in keys.items():
        admitted = invoke("network", "admit", name, key, *options)
        assert admitted.exit_code == 0, admitted.output
    bob = NodeProcess(
        "bob",
        url,
        tmp_path / "bob",
        ["--operator-key", str(operator_dir / "operator.pub"), "--nats-nkey", "--map-wait", "10"],
    )
    bob.start()
    try:
        config = NodeConfig(
            "alice",
            tmp_path / "alice",
            nats_url=url,
            apps=["parley.apps.pingpong"],
            operator_key=(operator_dir / "operator.pub").read_text().strip(),
            nats_nkey=True,
        )
        with Node(config) as alice:
            assert alice.start_flow(Ping("bob", 41)).result(30) == 42
            assert alice.stats()["refused_unsigned"] == 0
    finally:
        bob.stop()
    assert f"node bob has the identity {keys['bob']}" in "".join(bob.log)
    assert "runs without a network map" not in "".join(bob.log)

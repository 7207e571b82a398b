"""A counterparty in another language: the Node.js Pong and Ping of ``examples/js-counterparty``,
written from ``docs/wire.md`` and ``docs/wire.cddl`` alone, against a real Parley node.

The network has a map, so every message is signed both ways (the JavaScript nodes are admitted
under NKeys of their own) and the Parley node refuses anything unsigned. The npm dependencies are
installed with ``npm ci`` from the committed lock file, once per lock file, into a directory of
the system's temporary folder. Runs where ``node`` and ``npm`` are on the PATH (Node.js 20+).
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from parley import UnexpectedFlowEndException
from parley.apps.pingpong import Ping, PingAll
from parley.cli.wire import wire_app
from parley.identity.keys import KeyPair, load_identity, new_operator_key, write_key
from parley.node import Node, NodeConfig
from parley.protocol import codec, ids
from parley.protocol.messages import Init
from parley.testing import HandPeer
from parley.transport.admin import NetworkAdmin
from parley.transport.natsserver import EmbeddedNatsServer

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "js-counterparty"
NODE_JS = shutil.which("node")
NPM = shutil.which("npm")

pytestmark = pytest.mark.integration
needs_node = pytest.mark.skipif(
    NODE_JS is None or NPM is None, reason="needs Node.js (node and npm on the PATH)"
)


def installed_dependencies() -> Path:
    """``node_modules`` for the example's lock file, installed once (``npm ci``) and reused."""
    lock = EXAMPLE / "package-lock.json"
    digest = hashlib.sha256((EXAMPLE / "package.json").read_bytes() + lock.read_bytes())
    target = Path(tempfile.gettempdir()) / f"parley-js-counterparty-{digest.hexdigest()[:16]}"
    if (target / "node_modules" / ".package-lock.json").exists():
        return target / "node_modules"
    staging = Path(tempfile.mkdtemp(prefix="parley-js-install-"))
    for name in ("package.json", "package-lock.json", ".npmrc"):
        shutil.copy(EXAMPLE / name, staging / name)
    assert NPM is not None
    done = subprocess.run(
        [NPM, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=staging,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, f"npm ci failed:\n{done.stdout}\n{done.stderr}"
    try:
        staging.rename(target)  # atomic: a concurrent run that won keeps its copy
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
    return target / "node_modules"


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example's scripts beside its installed dependencies, in a directory of their own."""
    modules = installed_dependencies()
    where = tmp_path_factory.mktemp("js-counterparty")
    for script in EXAMPLE.glob("*.mjs"):
        shutil.copy(script, where / script.name)
    (where / "node_modules").symlink_to(modules, target_is_directory=True)
    return where


class JsNode:
    """One of the example's scripts, running as node ``name``; its stdout read as JSON events."""

    def __init__(self, example: Path, script: str, *args: str) -> None:
        assert NODE_JS is not None
        self.proc = subprocess.Popen(
            [NODE_JS, str(example / script), *args],
            cwd=example,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "NODE_NO_WARNINGS": "1"},
        )
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.stderr: list[str] = []
        self._readers = [
            threading.Thread(target=self._read, daemon=True),
            threading.Thread(target=self._read_errors, daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.events.put(json.loads(line))

    def _read_errors(self) -> None:
        assert self.proc.stderr is not None
        self.stderr.extend(self.proc.stderr)

    def next(self, timeout: float = 60.0) -> dict[str, Any]:
        try:
            return self.events.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(
                f"no event within {timeout} s; stderr: {''.join(self.stderr)}"
            ) from None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        for reader in self._readers:  # they end at the pipes' end of file
            reader.join(10)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()


class Network:
    """An operator, a Parley node ``alice`` on its map, and JavaScript nodes admitted to it."""

    def __init__(self, tmp_path: Path, url: str, example: Path) -> None:
        self.tmp_path, self.url, self.example = tmp_path, url, example
        self.operator = new_operator_key()
        self.admin = NetworkAdmin(url, self.operator)
        data_dir = tmp_path / "alice"
        self.admin.admit("alice", [load_identity(data_dir).public_key])
        config = NodeConfig(
            "alice",
            data_dir,
            nats_url=url,
            apps=["parley.apps.pingpong"],
            operator_key=self.operator.public_key,
        )
        self.alice = Node(config).start()
        self.alice_key = load_identity(data_dir).public_key
        self.js_nodes: list[JsNode] = []

    def js(self, script: str, name: str, *args: str) -> JsNode:
        key = KeyPair.generate()
        self.admin.admit(name, [key.public_key])
        seed_file = self.tmp_path / f"{name}.nk"
        write_key(seed_file, key)
        node = JsNode(
            self.example,
            script,
            *("--nats", self.url, "--name", name, "--seed-file", str(seed_file)),
            *("--trust", f"alice={self.alice_key}"),
            *args,
        )
        self.js_nodes.append(node)
        return node

    def refusals(self) -> dict[str, int]:
        return {k: v for k, v in self.alice.stats().items() if k.startswith("refused_") and v}

    def close(self) -> None:
        for node in self.js_nodes:
            node.stop()
        self.alice.stop()


@pytest.fixture
def network(tmp_path: Path, nats_server: EmbeddedNatsServer, example: Path) -> Iterator[Network]:
    assert nats_server.url is not None
    net = Network(tmp_path, nats_server.url, example)
    yield net
    net.close()


@needs_node
def test_a_parley_ping_gets_its_answers_from_the_javascript_pong(network: Network) -> None:
    pong = network.js("responder.mjs", "jsbob")
    assert pong.next()["event"] == "ready"
    assert network.alice.start_flow(Ping("jsbob", 41, rounds=3)).result(60) == 44
    served = pong.next()
    assert (served["event"], served["peer"], served["replies"]) == ("served", "alice", [42, 43, 44])
    assert network.alice.start_flow(Ping("jsbob", 2**64, rounds=1)).result(60) == 2**64 + 1
    assert pong.next()["replies"] == [str(2**64 + 1)]
    assert network.refusals() == {}, "every message the JavaScript node sent was accepted"


@needs_node
def test_the_javascript_pong_rejects_a_flow_it_does_not_run_and_parley_sees_why(
    network: Network,
) -> None:
    pong = network.js("responder.mjs", "jsbob")
    assert pong.next()["event"] == "ready"
    with pytest.raises(UnexpectedFlowEndException, match="PingAll is not registered"):
        network.alice.start_flow(PingAll(["jsbob"], 1)).result(60)
    assert pong.next()["event"] == "rejected"


@needs_node
def test_a_javascript_ping_gets_its_answers_from_the_parley_pong(network: Network) -> None:
    ping = network.js("initiator.mjs", "jscarol", "--peer", "alice", "--n", "41", "--rounds", "3")
    assert ping.next() == {
        "event": "result",
        "result": "44",
        "peer_flow_version": 1,
        "peer_app": "parley.apps.pingpong",
    }
    assert ping.proc.wait(30) == 0
    assert network.refusals() == {}


@needs_node
def test_parley_rejects_a_javascript_ping_of_a_version_it_does_not_serve(network: Network) -> None:
    ping = network.js("initiator.mjs", "jsdave", "--peer", "alice", "--version", "99")
    assert ping.next() == {
        "event": "rejected",
        "reason": "parley.apps.pingpong:Ping version 99 is not supported here "
        "(this node serves versions 1 to 1)",
    }
    assert ping.proc.wait(30) == 0


def test_wire_decode_reads_a_stream_and_consumes_nothing(nats_server: EmbeddedNatsServer) -> None:
    url = nats_server.url
    assert url is not None
    session = "c" * 32 + ".0"
    init = Init(
        session, "parley.apps.pingpong:Ping", 1, "parley.apps.pingpong", codec.encode((1, 41))
    )
    with HandPeer(url, "carol") as carol:  # ghost never ran: its stream is made for it
        carol.send("ghost", init, ids.message_id(session, 0))
        carol.publish_raw("ghost", b"\xff", "garbage-1")
    for _ in range(2):  # the second reading sees the same: the first consumed nothing
        result = CliRunner().invoke(
            wire_app, ["decode", "--compact", "--stream", "PARLEY_ghost", "--nats", url]
        )
        assert result.exit_code == 1, result.output
        init_shown, garbage = (json.loads(line) for line in result.output.splitlines())
        assert (init_shown["kind"], init_shown["stream_seq"]) == ("init", 1)
        assert init_shown["subject"] == "parley.p2p.ghost.carol"
        assert init_shown["headers"] == {"Nats-Msg-Id": f"{session}:0"}
        assert init_shown["body"]["first_payload"] == {"$tuple": [1, 41]}
        assert "malformed CBOR" in garbage["error"]
        assert garbage["headers"] == {"Nats-Msg-Id": "garbage-1"}

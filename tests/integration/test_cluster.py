"""Nodes on a real 3-server NATS cluster with R3 streams: a server, the stream leader included,
is killed with SIGKILL while flows run, and nothing is lost or done twice.

``alice`` runs ``Rounds`` flows (two round trips with a side-effect row per round on each side)
against ``bob``, each with a client id, several at a time, for the whole test. The test kills the
leader of bob's stream, then a server that leads neither node's stream, then the leader of alice's
stream, waiting each time for flows to complete on the surviving two servers before restarting the
killed one. At the end every flow has its one result and exactly ``rounds`` rows on each side.
``python -m bench.cluster`` measures the latency of the fail-overs.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
import typer
from typer.testing import CliRunner, Result

from parley.cli import app
from parley.cli.main import _node_config, load_config
from parley.node import Node, NodeConfig
from parley.transport.names import server_urls, stream_config, stream_name
from parley.transport.natscluster import NatsCluster
from tests.integration.apps import Rounds
from tests.integration.nodes import node_process, rows, wait_for

APPS = ["tests.integration.apps"]
ROUNDS = 2

# nats-py leaves the socket of a connection attempt open when a client is closed while it
# reconnects to a killed cluster server (it finds the other servers through the cluster's gossip
# and tries them). The sockets are finalized by the collection below, inside this module, so that
# their ResourceWarnings neither fail these tests nor surface in a later test.
pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]


@pytest.fixture(autouse=True)
def _finalize_leaked_sockets() -> Iterator[None]:
    yield
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


@pytest.fixture
def nats_cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    """Three routed nats-servers with JetStream on loopback, healthy (~1 s)."""
    cluster = NatsCluster(tmp_path / "nats", max_file_store="256M", max_mem_store="64M")
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


def node(tmp_path: Path, cluster: NatsCluster, name: str) -> Node:
    config = NodeConfig(
        name, tmp_path / name, nats_url=cluster.url, apps=APPS, stream_replicas=3, workers=2
    )
    return Node(config)


def stream_info(url: str, node_name: str) -> Any:
    """The stream's info, asked of any server that answers (retried through an election)."""

    async def ask() -> Any:
        nc = await nats.connect(server_urls(url), connect_timeout=5)
        try:
            last: BaseException | None = None
            for _ in range(200):
                try:
                    info = await nc.jetstream().stream_info(stream_name(node_name))
                    if info.cluster is not None and info.cluster.leader:
                        return info
                except Exception as exc:
                    last = exc
                await asyncio.sleep(0.05)  # polling an election, bounded: 10 s
            raise AssertionError(f"no leader for {stream_name(node_name)}: {last!r}")
        finally:
            await nc.close()

    return asyncio.run(ask())


def invoke(*args: str | Path, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(app, [str(a) for a in args], env=env)


# ---- pure parts ---------------------------------------------------------------------------------


def test_several_server_urls_are_split_at_commas_and_each_must_be_a_url() -> None:
    assert server_urls("nats://a:4222, nats://b:4222,") == ["nats://a:4222", "nats://b:4222"]
    assert server_urls("tls://a:4222") == ["tls://a:4222"]
    with pytest.raises(ValueError, match="no NATS server URL"):
        server_urls(" , ")
    with pytest.raises(ValueError, match="is not a NATS URL"):
        server_urls("nats://a:4222,b:4222")


def test_stream_replicas_go_into_the_stream_configuration_and_are_checked(tmp_path: Path) -> None:
    assert stream_config("alice", 120.0).num_replicas == 1
    assert stream_config("alice", 120.0, 3).num_replicas == 3
    with pytest.raises(ValueError, match="stream replicas must be 1 to 5"):
        stream_config("alice", 120.0, 0)
    with pytest.raises(ValueError, match="stream replicas must be 1 to 5"):
        NodeConfig("alice", tmp_path, nats_url="nats://a:4222", stream_replicas=6)
    with pytest.raises(ValueError, match="needs a NATS cluster"):
        NodeConfig("alice", tmp_path, stream_replicas=3)  # the embedded server is one server


def test_parley_toml_gives_the_cluster_urls_and_stream_replicas(tmp_path: Path) -> None:
    config = tmp_path / "parley.toml"
    urls = "nats://a:4222,nats://b:4222,nats://c:4222"
    config.write_text(f'[node]\nname = "alice"\nnats = "{urls}"\nstream_replicas = 3\n')

    node_config = _node_config(load_config(config))

    assert node_config.nats_url == urls
    assert node_config.stream_replicas == 3
    config.write_text('[node]\nname = "alice"\nnats = "nats://a:4222"\nstream_replicas = "3"\n')
    with pytest.raises(typer.Exit) as refused:
        _node_config(load_config(config))
    assert refused.value.exit_code == 2


# ---- on the cluster -----------------------------------------------------------------------------


@pytest.mark.integration
def test_a_node_on_the_cluster_creates_r3_streams_for_itself_and_for_peers(
    tmp_path: Path, nats_cluster: NatsCluster
) -> None:
    with node(tmp_path, nats_cluster, "alice") as alice:
        handle = alice.start_flow(Rounds("bob", 1))  # bob never ran: alice creates its stream
        own, peer = stream_info(nats_cluster.url, "alice"), stream_info(nats_cluster.url, "bob")
        assert own.config.num_replicas == 3
        assert peer.config.num_replicas == 3
        assert {p.name for p in own.cluster.replicas} | {own.cluster.leader} == {"n1", "n2", "n3"}
        with node(tmp_path, nats_cluster, "bob"):
            assert handle.result(60) == 1


@pytest.mark.integration
def test_network_admit_and_node_run_take_the_cluster_urls_and_stream_replicas(
    tmp_path: Path, nats_cluster: NatsCluster
) -> None:
    network = tmp_path / "network"
    assert invoke("network", "init", "--dir", network).exit_code == 0
    key = invoke("node", "init", "--name", "alice", "--data-dir", tmp_path / "alice").stdout.strip()
    env = {"PARLEY_NATS_URL": nats_cluster.url, "PARLEY_NETWORK_DIR": str(network)}

    admitted = invoke("network", "admit", "alice", key, "--stream-replicas", "3", env=env)

    assert admitted.exit_code == 0, admitted.output
    assert stream_info(nats_cluster.url, "alice").config.num_replicas == 3
    refused = invoke("network", "admit", "alice", key, "--stream-replicas", "7", env=env)
    assert refused.exit_code == 2
    # The node process reaches the map and its RPC service through the server its bridge
    # reached, and keeps its stream at three replicas.
    operator = (network / "operator.pub").read_text().strip()
    options = ["--stream-replicas", "3", "--operator-key", operator]
    with node_process("alice", nats_cluster.url, tmp_path / "alice", APPS, extra_args=options):
        info = stream_info(nats_cluster.url, "alice")
    assert info.config.num_replicas == 3
    assert info.state.consumer_count == 1


class Driver:
    """Starts Rounds flows from ``loops`` threads, one after another, until stopped."""

    def __init__(self, alice: Node, loops: int) -> None:
        self.alice = alice
        self.lock = threading.Lock()
        self.started = 0
        self.done = 0
        self.errors: list[str] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.loop, daemon=True) for _ in range(loops)]
        for thread in self.threads:
            thread.start()

    def loop(self) -> None:
        while not self.stop.is_set():
            with self.lock:
                self.started += 1
                n = self.started
            try:
                handle = self.alice.start_flow(Rounds("bob", ROUNDS), client_id=f"c{n}")
                result = handle.result(120)
            except Exception as exc:
                with self.lock:
                    self.errors.append(f"flow c{n}: {exc!r}")
                return
            with self.lock:
                if result != ROUNDS:
                    self.errors.append(f"flow c{n}: {result!r}")
                self.done += 1

    def completed(self) -> int:
        with self.lock:
            return self.done

    def wait_until_completed(self, count: int, timeout: float, what: str) -> None:
        wait_for(lambda: self.completed() >= count, timeout, f"{count} completed {what}")

    def finish(self) -> int:
        self.stop.set()
        for thread in self.threads:
            thread.join(150)
        assert not any(t.is_alive() for t in self.threads), "a flow did not finish in 150 s"
        return self.started


@pytest.mark.integration
@pytest.mark.slow
def test_killing_any_one_server_even_the_stream_leader_loses_nothing_and_does_nothing_twice(
    tmp_path: Path, nats_cluster: NatsCluster
) -> None:
    url = nats_cluster.url
    with node(tmp_path, nats_cluster, "bob") as bob, node(tmp_path, nats_cluster, "alice") as alice:
        driver = Driver(alice, loops=3)
        try:
            driver.wait_until_completed(10, 60, "before any kill")
            killed: list[str] = []
            for which in ("leader of bob's stream", "a server leading neither", "alice's leader"):
                leaders = {stream_info(url, "bob").cluster.leader}
                if which == "alice's leader":
                    victim = stream_info(url, "alice").cluster.leader
                elif which == "a server leading neither":
                    leaders.add(stream_info(url, "alice").cluster.leader)
                    victim = next(n for n in nats_cluster.names if n not in leaders)
                else:
                    victim = leaders.pop()
                index = nats_cluster.index(victim)
                goal = driver.completed() + 10
                nats_cluster.kill(index)
                killed.append(f"{victim} ({which})")
                # Flows go on on the two servers left (the first after an election).
                driver.wait_until_completed(goal, 90, f"flows after killing {victim} ({which})")
                nats_cluster.restart(index)
            assert len(killed) == 3
            assert stream_info(url, "bob").config.num_replicas == 3
        finally:
            started = driver.finish()
        assert driver.errors == []
        assert driver.completed() == started

        # Exactly once: one result per client id, every round's row once on each side, no flow
        # left over on either node.
        results = rows(alice.db_path, "SELECT client_id, status FROM flow_result")
        assert sorted(str(c) for c, _ in results) == sorted(f"c{n}" for n in range(1, started + 1))
        assert {s for _, s in results} == {"COMPLETED"}
        for db, side in ((alice.db_path, "initiator"), (bob.db_path, "responder")):
            sql = "SELECT round, count(*) FROM effects WHERE side = ? GROUP BY 1"
            counts = rows(db, sql, (side,))
            assert counts == [(n, started) for n in range(ROUNDS)], side
        wait_for(
            lambda: not rows(bob.db_path, "SELECT 1 FROM flow_start"),
            30,
            "bob's responders to end",
        )
        assert rows(alice.db_path, "SELECT count(*) FROM flow_start") == [(0,)]

"""Two real nodes (alice, bob) on a real nats-server, each serving RPC to the same users: the
``nodes`` fixture of the RPC and CLI tests (their conftest modules import it)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from parley.node import Node, NodeConfig
from parley.rpc import RpcClient, RpcUser, hash_password
from parley.transport.natsserver import EmbeddedNatsServer

PASSWORD = "correct horse"
_HASH = hash_password(PASSWORD)  # scrypt is slow on purpose: once per test session
APPS = ["parley.apps.pingpong", "tests.integration.apps"]
USERS = [
    RpcUser("ops", _HASH, ["ALL"]),
    RpcUser("reader", _HASH, ["ReadFlows"]),
    RpcUser("pinger", _HASH, ["StartFlow.parley.apps.pingpong:Ping"]),
]


@dataclass
class Nodes:
    """alice and bob, and how to reach them."""

    url: str
    tmp: Path
    running: dict[str, Node] = field(default_factory=dict)

    def config(self, name: str, **options: Any) -> NodeConfig:
        return NodeConfig(
            name,
            self.tmp / name,
            nats_url=self.url,
            apps=APPS,
            workers=2,
            rpc_users=USERS,
            **options,
        )

    def start(self, name: str, **options: Any) -> Node:
        self.running[name] = Node(self.config(name, **options)).start()
        return self.running[name]

    def restart(self, name: str) -> Node:
        self.running.pop(name).stop()
        return self.start(name)

    def __getitem__(self, name: str) -> Node:
        return self.running[name]

    def client(
        self, node: str = "alice", user: str | None = "ops", password: str | None = PASSWORD
    ) -> RpcClient:
        return RpcClient(self.url, node, user=user, password=password, timeout=10.0)

    def stop(self) -> None:
        for node in self.running.values():
            node.stop()
        self.running.clear()


@pytest.fixture
def nodes(nats_server: EmbeddedNatsServer, tmp_path: Path) -> Iterator[Nodes]:
    made = Nodes(nats_server.url, tmp_path)
    try:
        made.start("alice")
        made.start("bob")
        yield made
    finally:
        made.stop()

"""Fixtures shared by the tests: a real nats-server (with JetStream) per test that asks for one,
and a MockNetwork with the nodes alice, bob and charlie."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from parley.testing import MockNetwork, MockNode
from parley.transport.natsserver import EmbeddedNatsServer


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[EmbeddedNatsServer]:
    """A running nats-server with JetStream, its store under the test's tmp_path (~15 ms)."""
    server = EmbeddedNatsServer(tmp_path / "nats", max_file_store="256M", max_mem_store="64M")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def durable_nats_server(tmp_path: Path) -> Iterator[EmbeddedNatsServer]:
    """Like ``nats_server`` but with ``sync_interval: always``, for crash tests (kill -9)."""
    server = EmbeddedNatsServer(
        tmp_path / "nats-durable", sync_always=True, max_file_store="256M", max_mem_store="64M"
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def net() -> MockNetwork:
    return MockNetwork()


@pytest.fixture
def alice(net: MockNetwork) -> MockNode:
    return net.create_node("alice")


@pytest.fixture
def bob(net: MockNetwork) -> MockNode:
    return net.create_node("bob")


@pytest.fixture
def charlie(net: MockNetwork) -> MockNode:
    return net.create_node("charlie")

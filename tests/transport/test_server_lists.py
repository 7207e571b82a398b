"""A node's other connections (the network map's watch, the RPC service) and the RPC client take
the servers of a cluster as the bridge does: one URL, or several separated by commas."""

from __future__ import annotations

import socket
from typing import cast

import pytest

from parley.identity.keys import KeyPair, new_operator_key
from parley.identity.netmap import NetworkMap
from parley.rpc import NotAuthenticated, RpcClient
from parley.rpc.operations import NodeApi
from parley.rpc.service import RpcService
from parley.transport.admin import NetworkAdmin
from parley.transport.mapsync import MapSync
from parley.transport.natsserver import EmbeddedNatsServer

pytestmark = pytest.mark.integration


def _servers(nats_server: EmbeddedNatsServer) -> str:
    """A server that is down, then the one that runs."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    return f"nats://127.0.0.1:{closed}, {nats_server.url}"


def test_the_map_watch_takes_several_servers(nats_server: EmbeddedNatsServer) -> None:
    operator, alice = new_operator_key(), KeyPair.generate()
    NetworkAdmin(nats_server.url, operator).admit("alice", [alice.public_key])
    network_map = NetworkMap(operator.public_key)
    sync = MapSync("bob", _servers(nats_server), network_map)
    try:
        assert sync.start(wait=10.0)
    finally:
        sync.stop()
    assert network_map.keys_of("alice") == (alice.public_key,)


def test_the_rpc_service_takes_several_servers(nats_server: EmbeddedNatsServer) -> None:
    service = RpcService(cast(NodeApi, None), "alice", _servers(nats_server), []).start()
    try:
        with RpcClient(nats_server.url, "alice") as rpc, pytest.raises(NotAuthenticated):
            rpc.stats()  # answered: by a refusal, as it has no users
    finally:
        service.stop()


def test_the_rpc_client_takes_several_servers(nats_server: EmbeddedNatsServer) -> None:
    service = RpcService(cast(NodeApi, None), "alice", nats_server.url, []).start()
    try:
        with RpcClient(_servers(nats_server), "alice") as rpc, pytest.raises(NotAuthenticated):
            rpc.stats()
    finally:
        service.stop()

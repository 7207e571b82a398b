"""The whole production setup on a real nats-server: NKey authorization with least permissions,
mutual TLS, the network map and signed messages, with two nodes running flows through it."""

from __future__ import annotations

from pathlib import Path

import pytest

from parley.apps.pingpong import Ping
from parley.identity.keys import KeyPair, load_identity, new_operator_key
from parley.node import Node, NodeConfig
from parley.transport.admin import NetworkAdmin
from parley.transport.natsserver import EmbeddedNatsServer
from parley.transport.security import NatsAuth, nats_authorization
from tests.integration.intruder import Intruder
from tests.integration.nodes import wait_for
from tests.transport.test_tls import make_pki

pytestmark = pytest.mark.integration

APPS = ["parley.apps.pingpong"]


def test_nodes_run_flows_under_nkey_authorization_mutual_tls_and_a_signed_map(
    tmp_path: Path,
) -> None:
    pki = make_pki(tmp_path / "pki")
    operator, admin = new_operator_key(), KeyPair.generate()
    keys = {name: load_identity(tmp_path / name).public_key for name in ("alice", "bob")}
    server = EmbeddedNatsServer(
        tmp_path / "nats",
        max_file_store="256M",
        max_mem_store="64M",
        tls_cert=pki.server_cert,
        tls_key=pki.server_key,
        tls_ca=pki.ca,
        tls_verify=True,
        tls_handshake_first=True,
        extra_config=nats_authorization(sorted(keys.items()), admin.public_key),
    )
    url = server.start()
    nodes: list[Node] = []
    try:
        admin_options = NatsAuth(
            seed=admin.seed, ca_file=pki.ca, cert_file=pki.client_cert, key_file=pki.client_key
        ).connect_options("admin")
        network = NetworkAdmin(url, operator, admin_options)
        for name, key in keys.items():
            network.admit(name, [key])
        for name in keys:
            config = NodeConfig(
                name,
                tmp_path / name,
                nats_url=url,
                apps=APPS,
                operator_key=operator.public_key,
                nats_nkey=True,
                nats_tls_ca=pki.ca,
                nats_tls_cert=pki.client_cert,
                nats_tls_key=pki.client_key,
            )
            nodes.append(Node(config).start())
        alice, bob = nodes
        assert alice.start_flow(Ping("bob", 1, rounds=3)).result(30) == 4
        assert bob.start_flow(Ping("alice", 10)).result(30) == 11
        for node in nodes:
            refused = {k: v for k, v in node.stats().items() if k.startswith("refused_") and v}
            assert refused == {}
        # the admin sees both nodes' streams drained: everything was consumed and acked
        intruder = Intruder(url, **admin_options)
        try:
            # Acks are sent after the commits, so they may still be on their way.
            wait_for(
                lambda: all(intruder.consumer_state(n) == (0, 0) for n in keys),
                10,
                "both nodes' consumers to be drained",
            )
        finally:
            intruder.close()
    finally:
        for node in nodes:
            node.stop()
        server.stop()

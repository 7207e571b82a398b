"""TLS between nodes and nats-server, against real servers, with a throw-away CA made per test.

The CA, the server's certificate (SAN ``127.0.0.1`` and ``localhost``) and a client certificate
are made with ``cryptography``. Servers run with ``handshake_first`` where the client uses
:class:`~parley.transport.security.NatsAuth`'s default (TLS before the server's greeting).
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import logging
import queue
import re
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from nats.aio.client import Client as NATS

from parley.engine.outbox import Outgoing
from parley.identity.keys import KeyPair, new_operator_key
from parley.transport.bridge import Delivery, MessagingError, NatsBridge
from parley.transport.natsserver import EmbeddedNatsServer
from parley.transport.security import (
    NatsAuth,
    NatsSecurityError,
    ensure_node_stream,
    nats_authorization,
)

pytestmark = pytest.mark.integration

WAIT = 10.0  # generous upper bound for anything that should take milliseconds


# ------------------------------------------------------------------------------------------
# A throw-away PKI
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    """PEM files of a test CA and of certificates it issued."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> Path:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


def _write_cert(path: Path, cert: x509.Certificate) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def make_pki(directory: Path) -> Pki:
    """A CA valid for a day, a server certificate for 127.0.0.1/localhost, a client certificate."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name(f"parley test CA {directory.name}")

    def builder(subject: x509.Name, public_key: Any) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca_name)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
        )

    ca = (
        builder(ca_name, ca_key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(stem: str, usage: x509.ObjectIdentifier, san: list[x509.GeneralName]) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            builder(_name(stem), key.public_key())
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
            )
        )
        if san:
            cert = cert.add_extension(x509.SubjectAlternativeName(san), critical=False)
        _write_cert(directory / f"{stem}.pem", cert.sign(ca_key, hashes.SHA256()))
        _write_key(directory / f"{stem}-key.pem", key)

    _write_cert(directory / "ca.pem", ca)
    loopback = x509.IPAddress(ipaddress.ip_address("127.0.0.1"))
    leaf("server", ExtendedKeyUsageOID.SERVER_AUTH, [x509.DNSName("localhost"), loopback])
    leaf("client", ExtendedKeyUsageOID.CLIENT_AUTH, [])
    return Pki(
        ca=directory / "ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server-key.pem",
        client_cert=directory / "client.pem",
        client_key=directory / "client-key.pem",
    )


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


def tls_server(tmp_path: Path, pki: Pki, **options: Any) -> EmbeddedNatsServer:
    server = EmbeddedNatsServer(
        tmp_path / "nats",
        max_file_store="256M",
        max_mem_store="64M",
        tls_cert=pki.server_cert,
        tls_key=pki.server_key,
        **options,
    )
    server.start()
    return server


@pytest.fixture
def server(tmp_path: Path, pki: Pki) -> Iterator[EmbeddedNatsServer]:
    """TLS with handshake first, no client certificates."""
    made = tls_server(tmp_path, pki, tls_handshake_first=True)
    yield made
    made.stop()


# ------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------


class Inbox:
    """``on_messages`` for a bridge: what arrives, as a queue."""

    def __init__(self) -> None:
        self.batches: queue.Queue[list[tuple[bytes, Delivery]]] = queue.Queue()

    def __call__(self, batch: list[tuple[bytes, Delivery]]) -> None:
        self.batches.put(batch)

    def take_one(self) -> tuple[bytes, Delivery]:
        try:
            [item] = self.batches.get(timeout=WAIT)
        except queue.Empty:
            pytest.fail(f"no message within {WAIT} s")
        return item


def round_trip(url: str, node: str, options: dict[str, Any]) -> bytes:
    """Start a bridge with ``options``, send a message to itself, receive and ack it."""
    inbox = Inbox()
    outcome: queue.Queue[BaseException | None] = queue.Queue()
    with NatsBridge(node, url, on_messages=inbox, connect_options=options) as bridge:
        bridge.publish([Outgoing(node, node, "m:1", b"over tls")], outcome.put)
        assert outcome.get(timeout=WAIT) is None
        data, delivery = inbox.take_one()
        bridge.ack([delivery])
    return data


def refused_start(url: str, options: dict[str, Any], caplog: pytest.LogCaptureFixture) -> str:
    """Start a bridge that must fail; return what it logged about the connection's errors.

    The bridge keeps trying until its connect timeout and then says only that no server
    answered; the reason is in its log (the NATS client's error callback).
    """
    bridge = NatsBridge(
        "alice", url, on_messages=Inbox(), connect_timeout=1.0, connect_options=options
    )
    caplog.clear()
    with (
        caplog.at_level(logging.WARNING, logger="parley.messaging"),
        pytest.raises(MessagingError, match="no NATS server"),
    ):
        bridge.start()
    assert "alice: NATS error: SSL" in caplog.text
    return caplog.text


async def connect(url: str, **options: Any) -> Any:
    """A raw connection that gives up at the first failure (and closes what it opened).

    Only for failures after the TLS handshake: nats-py's ``close()`` hangs on a connection whose
    handshake failed.
    """
    nc = NATS()

    async def quiet(exc: Exception) -> None:
        pass  # the failure is raised by connect itself

    try:
        await nc.connect(url, allow_reconnect=False, connect_timeout=2, error_cb=quiet, **options)
    except BaseException:
        await nc.close()
        raise
    return nc


# ------------------------------------------------------------------------------------------
# The tests
# ------------------------------------------------------------------------------------------


def test_a_bridge_exchanges_messages_over_tls_trusting_the_test_ca(
    server: EmbeddedNatsServer, pki: Pki
) -> None:
    assert server.url.startswith("tls://127.0.0.1:")
    options = NatsAuth(ca_file=pki.ca).connect_options("alice")
    assert round_trip(server.url, "alice", options) == b"over tls"


def test_a_server_certificate_from_an_untrusted_ca_is_refused(
    server: EmbeddedNatsServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    other = make_pki(tmp_path / "other-pki")
    untrusted = NatsAuth(ca_file=other.ca).connect_options("alice")
    assert "CERTIFICATE_VERIFY_FAILED" in refused_start(server.url, untrusted, caplog)
    system_cas = {"tls": ssl.create_default_context(), "tls_handshake_first": True}
    assert "CERTIFICATE_VERIFY_FAILED" in refused_start(server.url, system_cas, caplog)


def test_a_server_verifying_client_certificates_refuses_a_client_without_one(
    tmp_path: Path, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    server = tls_server(tmp_path, pki, tls_ca=pki.ca, tls_verify=True, tls_handshake_first=True)
    try:
        without = NatsAuth(ca_file=pki.ca).connect_options("alice")
        assert "CERTIFICATE_REQUIRED" in refused_start(server.url, without, caplog)
        with_cert = NatsAuth(ca_file=pki.ca, cert_file=pki.client_cert, key_file=pki.client_key)
        assert round_trip(server.url, "alice", with_cert.connect_options("alice")) == b"over tls"
    finally:
        server.stop()


def test_nkey_authorization_and_mutual_tls_together(tmp_path: Path, pki: Pki) -> None:
    alice, admin = KeyPair.generate(), KeyPair.generate()
    server = tls_server(
        tmp_path,
        pki,
        tls_ca=pki.ca,
        tls_verify=True,
        tls_handshake_first=True,
        extra_config=nats_authorization([("alice", alice.public_key)], admin.public_key),
    )
    try:

        def auth(seed: str | None) -> NatsAuth:
            return NatsAuth(
                seed=seed, ca_file=pki.ca, cert_file=pki.client_cert, key_file=pki.client_key
            )

        async def admit() -> None:
            nc = await connect(server.url, **auth(admin.seed).connect_options("admin"))
            await ensure_node_stream(nc.jetstream(), "alice")
            await nc.close()

        asyncio.run(admit())
        assert round_trip(server.url, "alice", auth(alice.seed).connect_options("alice")) == (
            b"over tls"
        )

        async def without_key() -> None:
            with pytest.raises(nats.errors.Error, match="Authorization Violation"):
                await connect(server.url, **auth(None).connect_options("alice"))

        asyncio.run(without_key())
    finally:
        server.stop()


def test_handshake_first_refuses_a_server_that_does_not_speak_tls(
    nats_server: EmbeddedNatsServer, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    tls_url = nats_server.url.replace("nats://", "tls://")
    options = NatsAuth(ca_file=pki.ca).connect_options("alice")
    assert "WRONG_VERSION_NUMBER" in refused_start(tls_url, options, caplog)
    # Why handshake first is the default: without it nats-py 2.16 upgrades only when the server
    # asks, and talks in clear text to a server (or a man in the middle) that doesn't ask.
    late = NatsAuth(ca_file=pki.ca, tls_handshake_first=False).connect_options("alice")
    assert round_trip(tls_url, "alice", late) == b"over tls"  # it was not


# ------------------------------------------------------------------------------------------
# NatsAuth and the server's TLS options, without a server
# ------------------------------------------------------------------------------------------


def test_connect_options_carry_the_seed_the_inbox_prefix_and_a_verifying_tls_context(
    pki: Pki,
) -> None:
    key = KeyPair.generate()
    auth = NatsAuth(
        seed=key.seed,
        ca_file=pki.ca,
        cert_file=pki.client_cert,
        key_file=pki.client_key,
        tls_hostname="localhost",
    )
    options = auth.connect_options("alice")
    context = options.pop("tls")
    assert options == {
        "inbox_prefix": "_INBOX_alice",
        "nkeys_seed_str": key.seed,
        "tls_handshake_first": True,
        "tls_hostname": "localhost",
    }
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert key.seed not in repr(auth)
    assert NatsAuth().connect_options("bob") == {"inbox_prefix": "_INBOX_bob"}
    assert NatsAuth(inbox_prefix="_INBOX_tool").connect_options("bob") == {
        "inbox_prefix": "_INBOX_tool"
    }


def test_missing_or_unusable_files_and_keys_are_refused_with_the_reason(
    pki: Pki, tmp_path: Path
) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text(
        "-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n"
    )
    missing = tmp_path / "missing.pem"
    cases: list[tuple[NatsAuth, str]] = [
        (NatsAuth(ca_file=missing), f"can't read the TLS CA file {missing}"),
        (NatsAuth(ca_file=tmp_path), f"can't read the TLS CA file {tmp_path}"),
        (NatsAuth(ca_file=garbage), f"the CA file {garbage} holds no usable certificate"),
        (
            NatsAuth(ca_file=pki.ca, cert_file=missing, key_file=pki.client_key),
            f"can't read the TLS certificate file {missing}",
        ),
        (
            NatsAuth(ca_file=pki.ca, cert_file=pki.client_cert, key_file=pki.server_key),
            "can't be used together",
        ),
    ]
    for auth, reason in cases:
        with pytest.raises(NatsSecurityError, match=re.escape(reason)):
            auth.connect_options("alice")
    with pytest.raises(NatsSecurityError, match="needs its key file"):
        NatsAuth(ca_file=pki.ca, cert_file=pki.client_cert)
    with pytest.raises(NatsSecurityError, match="must be a user seed"):
        NatsAuth(seed=new_operator_key().seed)
    with pytest.raises(NatsSecurityError, match="not an NKey seed"):
        NatsAuth(seed="SUNOTASEED")


def test_the_embedded_server_refuses_tls_options_that_do_not_fit_together(
    tmp_path: Path, pki: Pki
) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"tls_cert": pki.server_cert}, "go together"),
        ({"tls_key": pki.server_key}, "go together"),
        ({"tls_ca": pki.ca}, "need tls_cert"),
        ({"tls_cert": pki.server_cert, "tls_key": pki.server_key, "tls_verify": True}, "needs"),
    ]
    for options, reason in cases:
        with pytest.raises(ValueError, match=reason):
            EmbeddedNatsServer(tmp_path / "nats", **options)

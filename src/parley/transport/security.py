"""NATS authorization and TLS for a network of nodes: who may publish and subscribe to what.

Rules (``docs/nats-security.md`` explains them for operators):

* Every node authenticates with its NKey **user** key (``SU...`` seed, ``U...`` public key: the
  node's identity) and gets exactly the subjects :func:`node_permissions` lists: it publishes only
  as itself (``parley.p2p.*.<me>``), uses only its own stream and consumer through the JetStream
  API, reads (never writes) the network map's bucket, receives on its own inbox prefix and its
  own RPC subjects, publishes its RPC service's progress feeds (``parley.feed.<me>.>``), and
  answers requests only through ``allow_responses``. The operator's admin
  tooling has an NKey user key of its own with every permission.
* The subjects were read off ``nats-server -DV`` traces of the real code paths (nats-py 2.16,
  nats-server 2.15), not guessed: nats-py builds every reply subject (requests, JetStream API
  calls, ``publish_async`` acks, pull inboxes, push deliveries) as ``<inbox_prefix>.<nuid>...``,
  so a node connected with ``inbox_prefix=node_inbox_prefix(node)`` receives everything under
  ``_INBOX_<node>.>`` and nobody else may subscribe there.
* The admin creates a node's stream (:func:`ensure_node_stream`) **before** admitting its key. A
  node may still send ``$JS.API.STREAM.CREATE`` for its own stream (the bridge makes sure of it
  at start), which JetStream answers only with "already in use" for any other configuration once
  the stream exists; on a missing stream the node could choose the configuration (sources, more
  subjects), and stream *updates* are therefore not granted at all. A node can't create a peer's
  stream: messages to a node whose stream the admin has not created fail.
* What subject permissions can't stop: nats-server does not check the *reply* subject of a
  publish, so a node can make JetStream send an answer (a pub ack, an API response, a message of
  its own stream pulled with that reply) to a subject of its choice, including a peer's
  ``parley.p2p.<peer>.<other>``. Receivers must therefore check each message's subject (its
  recipient token is themselves), its sender and its signature; see the documentation.

Nothing here imports the node, the actors or the engine; :func:`ensure_node_stream` is the one
function that talks to NATS.
"""

from __future__ import annotations

import json
import re
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import nats.js.errors
import nkeys

from parley.identity.keys import is_public_key
from parley.protocol.errors import ParleyError
from parley.transport.names import (
    MAP_BUCKET,
    RPC_PREFIX,
    SUBJECT_PREFIX,
    consumer_name,
    stream_config,
    stream_name,
    validate_node_name,
)

__all__ = [
    "FEED_PREFIX",
    "NatsAuth",
    "NatsSecurityError",
    "ensure_node_stream",
    "map_stream_name",
    "nats_authorization",
    "node_inbox_prefix",
    "node_permissions",
    "rpc_service_name",
]

#: JetStream's error code for "stream name already in use with a different configuration".
_STREAM_NAME_IN_USE: Final = 10058
#: A public NKey: 56 base32 characters (the checksum is checked as well).
_PUBLIC_KEY: Final = re.compile(r"^[A-Z2-7]{56}$")
#: Subjects a node's RPC service publishes progress and flow-list changes on:
#: ``parley.feed.<node>.<flow id>`` and ``parley.feed.<node>.flows`` (``docs/rpc.md``).
FEED_PREFIX: Final = "parley.feed"
#: nats.micro's discovery verbs (``$SRV.<verb>[.<service>[.<id>]]``).
_MICRO_VERBS: Final = ("PING", "INFO", "STATS")


class NatsSecurityError(ParleyError):
    """A key, certificate or CA file for NATS is missing or unusable, or an admission is invalid.

    The operator is at fault: the message says which file or entry, and what is wrong with it.
    """


def node_inbox_prefix(node: str) -> str:
    """The inbox prefix of ``node``'s connection: ``_INBOX_<node>``.

    nats-py puts every reply subject it makes under ``<prefix>.``, and the node may subscribe
    only to ``_INBOX_<node>.>``. (``_INBOX_alice.>`` does not match ``_INBOX_alice2.x``: subject
    tokens are compared whole.)

    Raises:
        ValueError: if ``node`` is not a valid node name.
    """
    return f"_INBOX_{validate_node_name(node)}"


def rpc_service_name(node: str) -> str:
    """The nats.micro service name of ``node``'s RPC service: ``parley-<node>``.

    The permissions let a node answer the discovery requests (``$SRV.PING`` and the like) only
    for this name, so the RPC service must be registered under it.

    Raises:
        ValueError: if ``node`` is not a valid node name.
    """
    return f"parley-{validate_node_name(node)}"


def map_stream_name() -> str:
    """The stream behind the network map's key-value bucket: ``KV_PARLEY_MAP``."""
    return f"KV_{MAP_BUCKET}"


def node_permissions(node: str) -> dict[str, list[str]]:
    """The subjects ``node`` may publish and subscribe to, each with the reason it is needed.

    Returns:
        ``{"publish": [...], "subscribe": [...]}``; besides these the node has
        ``allow_responses`` (one reply per request received, within two minutes).

    Raises:
        ValueError: if ``node`` is not a valid node name.
    """
    stream, consumer, kv = stream_name(node), consumer_name(node), map_stream_name()
    api = "$JS.API"
    service = rpc_service_name(node)
    publish = [
        f"{SUBJECT_PREFIX}.*.{node}",  # send to any node, as itself only
        f"{api}.INFO",  # account info (limits, usage)
        f"{api}.STREAM.INFO.{stream}",
        f"{api}.STREAM.CREATE.{stream}",  # the bridge's idempotent check at start
        f"{api}.CONSUMER.CREATE.{stream}.{consumer}",
        f"{api}.CONSUMER.INFO.{stream}.{consumer}",
        f"{api}.CONSUMER.DELETE.{stream}.{consumer}",  # the reclaim at start recreates it
        f"{api}.CONSUMER.MSG.NEXT.{stream}.{consumer}",  # pull requests
        f"$JS.ACK.{stream}.{consumer}.>",  # ack, nak
        f"{api}.STREAM.INFO.{kv}",  # js.key_value(): bucket lookup
        f"{api}.CONSUMER.CREATE.{kv}",  # watch: an ephemeral ordered consumer
        f"{api}.CONSUMER.INFO.{kv}.*",  # watch: its pending count
        f"{api}.STREAM.MSG.GET.{kv}",  # get (bucket without direct get)
        f"{api}.DIRECT.GET.{kv}",  # get (bucket with direct get)
        f"{api}.DIRECT.GET.{kv}.>",
        f"$JS.FC.{kv}.>",  # flow control answers of the watch's consumer
        f"{FEED_PREFIX}.{node}.>",  # its RPC service's progress and flow-list feeds
    ]
    subscribe = [
        f"{node_inbox_prefix(node)}.>",  # every reply to this node
        f"{RPC_PREFIX}.{node}.>",  # its RPC endpoints
        *(f"$SRV.{verb}" for verb in _MICRO_VERBS),  # nats.micro discovery of all services
        *(f"$SRV.{verb}.{service}" for verb in _MICRO_VERBS),
        *(f"$SRV.{verb}.{service}.*" for verb in _MICRO_VERBS),
    ]
    return {"publish": publish, "subscribe": subscribe}


def nats_authorization(nodes: Sequence[tuple[str, str]], admin_public_key: str) -> str:
    """A nats-server configuration fragment admitting ``nodes`` and the operator's tooling.

    Users stay in the server's default account, where JetStream is enabled by the ``jetstream``
    block; a client without credentials, or with a key not listed here, can't connect.

    Args:
        nodes: ``(name, public user NKey)`` of each admitted node; a node listed with two keys
            (during a key rotation) may connect with either, with the same permissions.
        admin_public_key: the public user NKey (``U...``) of the operator's admin tooling, which
            gets every permission (it creates streams, writes the network map).

    Returns:
        An ``authorization { users = [...] }`` block to include in the server's configuration.

    Raises:
        NatsSecurityError: a name or key is malformed, or a key is listed twice.
    """
    seen_keys = {_check_public_key(admin_public_key, "the admin key")}
    entries = []
    for name, key in nodes:
        try:
            validate_node_name(name)
        except ValueError as exc:
            raise NatsSecurityError(str(exc)) from exc
        if _check_public_key(key, f"the key of node {name}") in seen_keys:
            raise NatsSecurityError(f"the key of node {name} is used by another user")
        seen_keys.add(key)
        permissions = node_permissions(name)
        entries.append(
            f"    # node {name}\n"
            "    {\n"
            f"      nkey: {_quote(key)}\n"
            "      permissions: {\n"
            f"        publish: {{ allow: {_list(permissions['publish'], 8)} }}\n"
            f"        subscribe: {{ allow: {_list(permissions['subscribe'], 8)} }}\n"
            '        allow_responses: { max: 1, expires: "2m" }\n'
            "      }\n"
            "    }\n"
        )
    entries.append(
        "    # the operator's admin tooling: every permission\n"
        f"    {{ nkey: {_quote(admin_public_key)} }}\n"
    )
    return (
        "# Generated by parley.transport.security.nats_authorization (see docs/nats-security.md)\n"
        "authorization {\n  users = [\n" + "".join(entries) + "  ]\n}\n"
    )


def _check_public_key(key: str, what: str) -> str:
    if not isinstance(key, str) or not _PUBLIC_KEY.match(key) or not key.startswith("U"):
        raise NatsSecurityError(f"{what} is not a public NKey user key (U...): {key!r}")
    if not is_public_key(key):
        raise NatsSecurityError(f"{what} has a bad checksum (mistyped?): {key!r}")
    return key


def _quote(text: str) -> str:
    """A double-quoted nats-server config string (``$`` would otherwise start a variable)."""
    return json.dumps(text)


def _list(items: Sequence[str], indent: int) -> str:
    pad = " " * indent
    return "[\n" + "".join(f"{pad}  {_quote(i)}\n" for i in items) + f"{pad}]"


# ---------------------------------------------------------------------- the node's connection


@dataclass(frozen=True)
class NatsAuth:
    """How a node authenticates to nats-server and protects its connection.

    Args:
        seed: the node's NKey user seed (``SU...``), or ``None`` for a server without
            authorization (a local test network).
        ca_file: the CA certificate(s) (PEM) the server's certificate must chain to. With TLS on
            (a CA or a client certificate given) and no ``ca_file``, the system's trust store.
        cert_file: the client certificate (PEM), for a server that verifies client certificates.
        key_file: its private key (PEM); given together with ``cert_file``.
        inbox_prefix: the prefix of every reply subject of the connection; default
            :func:`node_inbox_prefix` of the node, which is what :func:`node_permissions` grants.
        tls_hostname: the name to check the server's certificate against, when it is not the
            host of the URL.
        tls_handshake_first: start TLS before the server's greeting. nats-py otherwise upgrades
            to TLS only if the server asks for it, so a man in the middle (or a server that lost
            its ``tls`` block) gets the connection in clear text even for a ``tls://`` URL. Needs
            ``handshake_first: true`` in the server's ``tls`` block.

    Raises:
        NatsSecurityError: the seed is not a user seed, or a client certificate comes without its
            key (or the key without the certificate).
    """

    seed: str | None = field(default=None, repr=False)
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    inbox_prefix: str | None = None
    tls_hostname: str | None = None
    tls_handshake_first: bool = True

    def __post_init__(self) -> None:
        if self.seed is not None:
            try:
                prefix, _ = nkeys.decode_seed(self.seed.encode())
            except (nkeys.NkeysError, ValueError) as exc:
                raise NatsSecurityError(f"the NATS seed is not an NKey seed: {exc}") from exc
            if prefix != nkeys.PREFIX_BYTE_USER:
                raise NatsSecurityError("the NATS seed must be a user seed (SU...)")
        if (self.cert_file is None) != (self.key_file is None):
            raise NatsSecurityError("a client certificate needs its key file, and the other way")

    @property
    def tls(self) -> bool:
        """Whether the connection uses TLS."""
        return self.ca_file is not None or self.cert_file is not None

    def connect_options(self, node: str) -> dict[str, Any]:
        """Keyword arguments for ``nats.connect`` (and ``NatsBridge(connect_options=...)``).

        Args:
            node: the node that connects (for the default inbox prefix).

        Returns:
            ``inbox_prefix``, and as configured ``nkeys_seed_str``, ``tls`` (an
            :class:`ssl.SSLContext`), ``tls_hostname``, ``tls_handshake_first``.

        Raises:
            NatsSecurityError: a CA, certificate or key file is missing, unreadable or invalid.
            ValueError: if ``node`` is not a valid node name.
        """
        options: dict[str, Any] = {
            "inbox_prefix": self.inbox_prefix or node_inbox_prefix(node),
        }
        if self.seed is not None:
            options["nkeys_seed_str"] = self.seed
        if self.tls:
            options["tls"] = self.ssl_context()
            options["tls_handshake_first"] = self.tls_handshake_first
            if self.tls_hostname is not None:
                options["tls_hostname"] = self.tls_hostname
        return options

    def ssl_context(self) -> ssl.SSLContext:
        """A client :class:`ssl.SSLContext`: TLS 1.2 or later, the server's name checked.

        Raises:
            NatsSecurityError: a CA, certificate or key file is missing, unreadable or invalid.
        """
        for what, path in (("CA", self.ca_file), ("certificate", self.cert_file)):
            _check_readable(what, path)
        _check_readable("key", self.key_file)
        try:
            context = ssl.create_default_context(
                cafile=str(self.ca_file) if self.ca_file is not None else None
            )
        except (ssl.SSLError, ValueError) as exc:
            raise NatsSecurityError(
                f"the CA file {self.ca_file} holds no usable certificate: {exc}"
            ) from exc
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.cert_file is not None and self.key_file is not None:
            try:
                context.load_cert_chain(str(self.cert_file), str(self.key_file))
            except (ssl.SSLError, ValueError) as exc:
                raise NatsSecurityError(
                    f"the client certificate {self.cert_file} and key {self.key_file} can't be "
                    f"used together: {exc}"
                ) from exc
        return context


def _check_readable(what: str, path: Path | None) -> None:
    if path is None:
        return
    try:
        with Path(path).open("rb") as file:
            file.read(1)
    except OSError as exc:
        raise NatsSecurityError(f"can't read the TLS {what} file {path}: {exc.strerror}") from exc


# ---------------------------------------------------------------------- admin tooling


async def ensure_node_stream(
    js: Any, node: str, *, duplicate_window: float = 120.0, replicas: int = 1
) -> Any:
    """Create ``node``'s stream with :func:`~parley.transport.names.stream_config` (admin tooling).

    Run with the admin's connection when admitting a node, before its key is in the server's
    authorization: nodes can't create each other's streams, and a node must not be the one that
    picks its own stream's configuration. A stream that exists with another configuration is
    updated to the canonical one (which also drops sources or subjects someone added).

    Args:
        js: a JetStream context of a connection with the admin's permissions.
        node: the node being admitted.
        duplicate_window: seconds of server-side dedup; the same as every node's bridge uses.
        replicas: the stream's replication factor (3 on a cluster); the same as the nodes use
            (``NodeConfig.stream_replicas``). A stream that has another is updated to it.

    Returns:
        The stream's ``StreamInfo``.

    Raises:
        ValueError: if ``node`` is not a valid node name or ``replicas`` is not 1 to 5.
        nats.js.errors.APIError: JetStream refused the stream.
    """
    config = stream_config(node, duplicate_window, replicas)
    try:
        return await js.add_stream(config)
    except nats.js.errors.BadRequestError as exc:
        if exc.err_code != _STREAM_NAME_IN_USE:
            raise
        return await js.update_stream(config)

"""Names and configuration every node agrees on: node names, subjects, streams, consumers.

Wire layout (``docs/wire.md``):

* Each node ``N`` has a JetStream stream ``PARLEY_N`` over ``parley.p2p.N.>``: file storage,
  work-queue retention (a message is removed once acked), ``duplicate_window`` for server-side
  dedup of ``Nats-Msg-Id``. Senders publish to ``parley.p2p.<recipient>.<sender>``.
* The stream is created idempotently, with the configuration of :func:`stream_config`, by its node
  at start **and by any sender whose publish finds it missing** (``NoStreamResponseError``), so
  messages to a node that is down or never ran wait in its stream. A sender therefore creates a
  missing recipient stream with exactly the configuration the recipient itself uses.
* Each node has one durable pull consumer ``parley-N`` with explicit acks
  (:func:`consumer_config`).
* On a NATS cluster the stream is replicated on ``replicas`` servers (3: it survives the loss of
  any one of them, its leader included). Everyone who creates a stream must pass the same number,
  as for ``duplicate_window``. A node is given its servers as one string of comma-separated URLs
  (:func:`server_urls` splits it); the client learns the cluster's other servers from the one it
  reaches.

Nothing here touches the network.
"""

from __future__ import annotations

from typing import Final

from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)

from parley.protocol.messages import is_node_name

__all__ = [
    "MAP_BUCKET",
    "MAX_REPLICAS",
    "RPC_PREFIX",
    "SUBJECT_PREFIX",
    "check_replicas",
    "consumer_config",
    "consumer_name",
    "server_urls",
    "stream_config",
    "stream_name",
    "subject_for",
    "validate_node_name",
]

SUBJECT_PREFIX: Final = "parley.p2p"
#: The JetStream key-value bucket that holds the network map (its stream is ``KV_PARLEY_MAP``).
MAP_BUCKET: Final = "PARLEY_MAP"
#: Subjects of a node's RPC service: ``parley.rpc.<node>.<operation>``.
RPC_PREFIX: Final = "parley.rpc"


def validate_node_name(node: str) -> str:
    """Check a node name: 1-128 characters from ``A-Z a-z 0-9 _ -`` (see ``NODE_NAME``).

    A node name becomes a subject token and part of stream and consumer names, so dots,
    wildcards and spaces are refused.

    Args:
        node: the name to check.

    Returns:
        ``node`` itself.

    Raises:
        ValueError: if ``node`` is not a valid node name.
    """
    if not is_node_name(node):  # cached there: this costs a set lookup per known name
        raise ValueError(f"invalid node name {node!r}: use 1-128 characters from A-Z a-z 0-9 _ -")
    return node


def stream_name(node: str) -> str:
    """The JetStream stream that holds the messages for ``node``.

    Raises:
        ValueError: if ``node`` is not a valid node name.
    """
    return f"PARLEY_{validate_node_name(node)}"


def consumer_name(node: str) -> str:
    """The durable consumer through which ``node`` receives its messages.

    Raises:
        ValueError: if ``node`` is not a valid node name.
    """
    return f"parley-{validate_node_name(node)}"


def subject_for(recipient: str, sender: str) -> str:
    """The subject a message from ``sender`` to ``recipient`` is published on.

    Raises:
        ValueError: if either is not a valid node name.
    """
    return f"{SUBJECT_PREFIX}.{validate_node_name(recipient)}.{validate_node_name(sender)}"


def stream_config(node: str, duplicate_window: float, replicas: int = 1) -> StreamConfig:
    """The configuration of ``node``'s stream: the same whoever creates it.

    Args:
        node: the node whose messages the stream holds.
        duplicate_window: seconds during which JetStream drops a repeated ``Nats-Msg-Id``; must
            be the same on every node.
        replicas: how many servers of a NATS cluster keep the stream (1 on a single server, 3 in
            a cluster: at most 5); must be the same on every node.

    Returns:
        A work-queue, file-backed stream over ``parley.p2p.<node>.>``.

    Raises:
        ValueError: if ``node`` is not a valid node name or ``replicas`` is not 1 to 5.
    """
    check_replicas(replicas)
    return StreamConfig(
        name=stream_name(node),
        subjects=[f"{SUBJECT_PREFIX}.{node}.>"],
        retention=RetentionPolicy.WORK_QUEUE,
        storage=StorageType.FILE,
        duplicate_window=duplicate_window,
        num_replicas=replicas,
    )


#: JetStream replicates a stream on at most this many servers.
MAX_REPLICAS: Final = 5


def check_replicas(replicas: int) -> int:
    """Check a stream replication factor: 1 to :data:`MAX_REPLICAS`.

    Returns:
        ``replicas`` itself.

    Raises:
        ValueError: if it is out of range.
    """
    if isinstance(replicas, bool) or not 1 <= replicas <= MAX_REPLICAS:
        raise ValueError(
            f"stream replicas must be 1 to {MAX_REPLICAS} (3 on a cluster), not {replicas!r}"
        )
    return replicas


def server_urls(url: str) -> list[str]:
    """The NATS servers of a URL setting: one URL, or several separated by commas.

    ``"nats://a:4222, nats://b:4222"`` gives ``["nats://a:4222", "nats://b:4222"]``. The client
    tries them in turn (and learns the rest of the cluster from the first it reaches).

    Raises:
        ValueError: if ``url`` names no server, or a URL has no ``scheme://``.
    """
    urls = [part.strip() for part in url.split(",") if part.strip()]
    if not urls:
        raise ValueError(f"no NATS server URL in {url!r}")
    for one in urls:
        if "://" not in one:
            raise ValueError(f"{one!r} is not a NATS URL: give nats://host:port (or tls://)")
    return urls


def consumer_config(node: str, ack_wait: float, max_ack_pending: int) -> ConsumerConfig:
    """The configuration of ``node``'s durable pull consumer.

    Args:
        node: the node that receives through the consumer.
        ack_wait: seconds after which JetStream redelivers a message that was not acked.
        max_ack_pending: at most this many delivered, unacked messages; then delivery pauses.

    Returns:
        A durable consumer with explicit acks that delivers everything, redelivering forever.
    """
    durable = consumer_name(node)
    return ConsumerConfig(
        name=durable,
        durable_name=durable,
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=ack_wait,
        # Unlimited redelivery. With a finite max_deliver, JetStream stops delivering a message
        # after that many attempts and only emits an advisory; on a work-queue stream the message
        # then sits in the stream forever, never delivered again: a session message silently
        # lost to its flow. Poison messages are the node's business instead: it acks and records
        # (or hospitalises) what it can't process, and ack_wait paces the redeliveries.
        max_deliver=-1,
        max_ack_pending=max_ack_pending,
    )

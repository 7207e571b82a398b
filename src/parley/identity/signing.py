"""Signed peer messages: every NATS message a node sends carries its Ed25519 signature.

The signature covers the message's payload exactly as published: the encoded envelope (or batch),
which holds everything a receiver relies on — sender, recipient, message ids, kind and body. It
travels in the ``Parley-Sig`` header as standard base64. A receiver checks it *before* decoding the
payload, against the keys the network map admits for the sender named by the subject
(:meth:`MessageVerifier.check`); the router then checks that every envelope inside names that same
sender and this node as recipient. So a message is accepted only if it was signed by a current key
of the node it claims to come from, and only for the node it was meant for.

One signature per NATS message: a batch of envelopes is signed once.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Final

from parley.identity.keys import SIGNATURE_BYTES, KeyPair, verify
from parley.identity.netmap import NetworkMap

__all__ = ["SIGNATURE_HEADER", "MessageSigner", "MessageVerifier"]

#: The NATS header that carries a message's signature.
SIGNATURE_HEADER: Final = "Parley-Sig"

#: Reasons :meth:`MessageVerifier.check` gives (each a key of the router's refusal counters).
UNSIGNED: Final = "unsigned"
UNKNOWN_NODE: Final = "unknown_node"
REVOKED_NODE: Final = "revoked_node"
BAD_SIGNATURE: Final = "bad_signature"


class MessageSigner:
    """Signs what a node publishes with the node's key."""

    __slots__ = ("_key",)

    def __init__(self, key: KeyPair) -> None:
        self._key = key

    @property
    def public_key(self) -> str:
        return self._key.public_key

    def __call__(self, data: bytes) -> str:
        """The ``Parley-Sig`` header value for a message whose payload is ``data``."""
        return base64.b64encode(self._key.sign(data)).decode("ascii")


class MessageVerifier:
    """Checks a received message's signature against the network map."""

    __slots__ = ("_map",)

    def __init__(self, network_map: NetworkMap) -> None:
        self._map = network_map

    def check(self, sender: str, data: bytes, headers: Mapping[str, str] | None) -> str | None:
        """Why the message from ``sender`` must be refused, or ``None`` if its signature holds.

        Args:
            sender: the sending node, as named by the message's subject.
            data: the payload, exactly as received.
            headers: the NATS headers of the message.

        Returns:
            ``None``, or one of ``"unsigned"``, ``"unknown_node"``, ``"revoked_node"``,
            ``"bad_signature"``. Never raises.
        """
        header = headers.get(SIGNATURE_HEADER) if headers else None
        if not header:
            return UNSIGNED
        keys = self._map.keys_of(sender)
        if keys is None:
            return UNKNOWN_NODE if self._map.entry(sender) is None else REVOKED_NODE
        try:
            signature = base64.b64decode(header, validate=True)
        except (binascii.Error, ValueError):
            return BAD_SIGNATURE
        if len(signature) != SIGNATURE_BYTES:
            return BAD_SIGNATURE
        if any(verify(key, data, signature) for key in keys):
            return None
        return BAD_SIGNATURE

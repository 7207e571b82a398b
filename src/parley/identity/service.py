"""What flows may do with their node's identity: sign, and check other nodes' signatures.

:class:`NodeIdentity` answers ``FlowLogic.services.identity`` on a node: it signs with the node's
own key and checks signatures against the keys the network map admits for the signer. Flows use it
for signatures that outlive a message — a transaction's, say — while the messages themselves are
signed by the node anyway (:mod:`parley.identity.signing`). Every answer is recorded in the flow's
journal, so a replay sees the same one even if the map changed since.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from parley.identity.keys import KeyPair, verify

__all__ = ["NodeIdentity"]


class NodeIdentity:
    """A node's key, and the keys of the nodes it may check.

    Args:
        key: the node's own key pair.
        keys_of: the public keys whose signatures count as a node's (``None``: not admitted).
    """

    __slots__ = ("_key", "_keys_of")

    def __init__(self, key: KeyPair, keys_of: Callable[[str], Sequence[str] | None]) -> None:
        self._key = key
        self._keys_of = keys_of

    def sign(self, data: bytes) -> bytes:
        """The node's Ed25519 signature of ``data`` (64 bytes)."""
        return self._key.sign(data)

    def verify(self, node: str, data: bytes, signature: bytes) -> bool:
        """Whether ``signature`` is ``node``'s signature of ``data``. Never raises."""
        keys = self._keys_of(node) or ()
        return any(verify(key, data, signature) for key in keys)

    def public_key(self, node: str) -> str | None:
        """``node``'s current public key (``None`` if it is not admitted)."""
        keys = self._keys_of(node)
        return keys[0] if keys else None

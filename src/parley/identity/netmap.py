"""The network map: which nodes are admitted, under which keys, signed by the network operator.

Each node of the network has one entry (:class:`NodeEntry`): its name, its public NKeys (the
current one first; during a key rotation the old one too), whether it is admitted or revoked, the
apps and flow versions it runs, and a serial number that grows with every change of the entry.
The operator signs each entry (:class:`SignedEntry`, :func:`sign_entry`) with its key; every node
is configured with the operator's public key and accepts an entry only if that key signed it and
its serial is newer than the one it has (:meth:`NetworkMap.accept`), so a replayed older entry
(say, one from before a revocation) changes nothing.

The signed entries live in a JetStream key-value bucket (see :mod:`parley.transport.mapsync`) and
in each node's SQLite database, so a node can start while the bucket is out of reach.

Nothing here touches the network or a file.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

import nkeys

from parley.identity.keys import KeyPair, is_public_key, verify
from parley.protocol import codec
from parley.protocol.errors import DeserializationError, ParleyError
from parley.protocol.messages import is_node_name

__all__ = [
    "MapEntryError",
    "NetworkMap",
    "NodeEntry",
    "NodeStatus",
    "SignedEntry",
    "new_serial",
    "open_entry",
    "sign_entry",
]


class MapEntryError(ParleyError):
    """A network map entry is malformed, or not signed by the trusted operator key."""


@codec.serializable(name="p.NodeStatus")
class NodeStatus(StrEnum):
    """Whether a node may take part in the network."""

    ADMITTED = "admitted"
    REVOKED = "revoked"


@codec.serializable(name="p.NodeEntry")
@dataclass(frozen=True, slots=True)
class NodeEntry:
    """One node's entry in the network map."""

    name: str
    #: Public NKeys (``U...``) whose signatures count as this node's; the current key first.
    keys: tuple[str, ...]
    status: NodeStatus
    #: Grows with every change of the entry (by default the time of the change, in ns).
    serial: int
    #: The apps the node runs (module names), for operators and peers.
    apps: tuple[str, ...] = ()
    #: ``(flow class, version)`` of the initiating flows it runs, for operators and peers.
    flow_versions: tuple[tuple[str, int], ...] = ()

    @property
    def admitted(self) -> bool:
        return self.status is NodeStatus.ADMITTED


@codec.serializable(name="p.SignedEntry")
@dataclass(frozen=True, slots=True)
class SignedEntry:
    """An encoded :class:`NodeEntry` and the operator's signature of exactly those bytes."""

    entry: bytes
    #: The public key (``O...``) of the operator that signed.
    operator: str
    signature: bytes


def new_serial() -> int:
    """A serial number for a new version of an entry: the time, in nanoseconds."""
    return time.time_ns()


def sign_entry(operator: KeyPair, entry: NodeEntry) -> bytes:
    """Sign ``entry`` with the operator's key; returns what the map's bucket stores.

    Raises:
        MapEntryError: the entry's name or keys are malformed.
    """
    _check(entry)
    data = codec.encode(entry)
    return codec.encode(SignedEntry(data, operator.public_key, operator.sign(data)))


def open_entry(data: bytes, operator_key: str) -> NodeEntry:
    """Check a stored signed entry against the trusted operator key and return the entry.

    Raises:
        MapEntryError: the data is not a signed entry, another key signed it, the signature does
            not verify, or the entry is malformed. Nothing else is raised.
    """
    try:
        signed = codec.decode(data, max_size=64 * 1024)
    except DeserializationError as exc:
        raise MapEntryError(f"not a signed map entry: {exc}") from None
    if not isinstance(signed, SignedEntry):
        raise MapEntryError(f"not a signed map entry but a {type(signed).__name__}")
    if signed.operator != operator_key:
        raise MapEntryError(f"signed by {signed.operator!r}, not by the trusted operator key")
    if not verify(operator_key, signed.entry, signed.signature):
        raise MapEntryError("the operator's signature does not verify")
    try:
        entry = codec.decode(signed.entry, max_size=64 * 1024)
    except DeserializationError as exc:
        raise MapEntryError(f"the signed entry does not decode: {exc}") from None
    if not isinstance(entry, NodeEntry):
        raise MapEntryError(f"the signed data is a {type(entry).__name__}, not a map entry")
    _check(entry)
    return entry


def _check(entry: NodeEntry) -> None:
    if not is_node_name(entry.name):
        raise MapEntryError(f"{entry.name!r} is not a node name")
    if not isinstance(entry.status, NodeStatus):
        raise MapEntryError(f"entry {entry.name}: status {entry.status!r} is not a NodeStatus")
    if not isinstance(entry.serial, int) or isinstance(entry.serial, bool) or entry.serial < 0:
        raise MapEntryError(f"entry {entry.name}: serial {entry.serial!r} is not a number >= 0")
    if not isinstance(entry.keys, tuple) or not all(
        isinstance(k, str) and is_public_key(k) for k in entry.keys
    ):
        raise MapEntryError(f"entry {entry.name}: keys must be public NKeys of users (U...)")
    if entry.status is NodeStatus.ADMITTED and not entry.keys:
        raise MapEntryError(f"entry {entry.name}: an admitted node needs a key")


class NetworkMap:
    """The entries a node trusts: only those the operator signed, each at its newest serial.

    Thread-safe: :meth:`accept` may run on any thread; readers see a consistent entry per name.

    Args:
        operator_key: the public key (``O...``) of the network operator: the trust root.

    Raises:
        MapEntryError: ``operator_key`` is not an operator's public NKey.
    """

    def __init__(self, operator_key: str) -> None:
        if not is_public_key(operator_key, kind=nkeys.PREFIX_BYTE_OPERATOR):
            raise MapEntryError(f"{operator_key!r} is not an operator's public NKey (O...)")
        self.operator_key = operator_key
        self._entries: dict[str, NodeEntry] = {}
        self._lock = threading.Lock()
        self._listeners: list[Callable[[NodeEntry, bytes], None]] = []

    def listen(self, listener: Callable[[NodeEntry, bytes], None]) -> None:
        """Call ``listener(entry, signed bytes)`` for every entry :meth:`accept` takes."""
        self._listeners.append(listener)

    def accept(self, data: bytes) -> NodeEntry | None:
        """Take a signed entry if it verifies and is newer than the one held for its node.

        Returns:
            The entry if it changed the map; ``None`` if it was stale (an equal or older serial).

        Raises:
            MapEntryError: the entry is not signed by the operator, or malformed.
        """
        entry = open_entry(data, self.operator_key)
        with self._lock:
            held = self._entries.get(entry.name)
            if held is not None and held.serial >= entry.serial:
                return None
            self._entries[entry.name] = entry
        for listener in self._listeners:
            listener(entry, data)
        return entry

    def entry(self, name: str) -> NodeEntry | None:
        """The entry held for ``name``, admitted or revoked; ``None`` if there is none."""
        return self._entries.get(name)

    def entries(self) -> list[NodeEntry]:
        """Every entry held, by name."""
        with self._lock:
            return sorted(self._entries.values(), key=lambda e: e.name)

    def keys_of(self, name: str) -> Sequence[str] | None:
        """The keys whose signatures count as ``name``'s, or ``None`` if it is not admitted."""
        entry = self._entries.get(name)
        if entry is None or not entry.admitted:
            return None
        return entry.keys

    def revoked(self, name: str) -> bool:
        """Whether ``name`` was admitted once and is revoked now."""
        entry = self._entries.get(name)
        return entry is not None and not entry.admitted

    def refusal(self, name: str) -> str | None:
        """Why a flow may not open a session with ``name`` (``None``: it may)."""
        entry = self._entries.get(name)
        if entry is None:
            return f"{name} is not in the network map"
        if not entry.admitted:
            return f"{name} was revoked from the network"
        return None

    def __repr__(self) -> str:
        return f"<NetworkMap {len(self._entries)} entries, operator {self.operator_key[:8]}...>"

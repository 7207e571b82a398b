"""Keys: a node's identity, the network operator's key, and checking signatures.

A node's identity is an Ed25519 key pair in NATS NKey form: the seed (``SU...``) lives in the
node's data directory, readable by its owner only; the public key (``U...``) is what the network
map admits. The same key authenticates the node to ``nats-server`` (NKey authentication) and
signs every message the node sends, so a message that verifies under a node's admitted key came
from that node.

The network operator has a key pair of its own (``SO...``/``O...``): it signs the entries of the
network map, and every node trusts exactly the operator public key in its configuration.

Rules:

* :func:`load_identity` creates a key only for a node that has never run: if the data directory
  already holds a database but no key (deleted, or the wrong directory), it stops with a clear
  error instead of silently becoming another node. A key file that is unreadable, of the wrong
  kind, or readable by others is refused too.
* Verifying never raises on bad input: :func:`verify` answers ``False`` for a malformed key,
  signature or data.
"""

from __future__ import annotations

import base64
import contextlib
import os
import stat
from functools import lru_cache
from pathlib import Path

import nacl.exceptions
import nacl.signing
import nkeys

from parley.protocol.errors import ParleyError

#: The file in a node's data directory that holds its seed.
IDENTITY_FILE = "identity.nk"
#: Length of an Ed25519 signature.
SIGNATURE_BYTES = 64

_USER = nkeys.PREFIX_BYTE_USER
_OPERATOR = nkeys.PREFIX_BYTE_OPERATOR


class IdentityError(ParleyError):
    """A key file is missing, unreadable, of the wrong kind or too widely readable.

    The operator is at fault: the message says which file and what to do.
    """


class KeyPair:
    """An NKey seed and what it does: sign, and say its public key."""

    __slots__ = ("_seed", "_signing", "public_key")

    def __init__(self, seed: bytes, *, kind: int) -> None:
        try:
            prefix, raw = nkeys.decode_seed(seed)
        except nkeys.NkeysError as exc:
            raise IdentityError(f"not an NKey seed: {exc}") from exc
        if prefix != kind:
            raise IdentityError(f"an NKey seed of the wrong kind ({_kind_name(prefix)})")
        self._seed = seed
        self._signing = nacl.signing.SigningKey(raw)
        self.public_key = _encode_public(prefix, bytes(self._signing.verify_key))

    @classmethod
    def generate(cls, *, kind: int = _USER) -> KeyPair:
        return cls(nkeys.encode_seed(os.urandom(32), kind), kind=kind)

    @property
    def seed(self) -> str:
        """The seed, as the NATS client takes it (``nkeys_seed_str``): keep it secret."""
        return self._seed.decode()

    def sign(self, data: bytes) -> bytes:
        """The Ed25519 signature of ``data`` (deterministic: the same data, the same signature)."""
        return self._signing.sign(data).signature

    def __repr__(self) -> str:
        return f"<KeyPair {self.public_key}>"


def load_identity(data_dir: Path, *, create: bool = True) -> KeyPair:
    """The node's key pair, from ``data_dir/identity.nk`` (created for a node that never ran).

    Raises:
        IdentityError: no key although the node has a database (or ``create`` is false), or the
            key file is unreadable, not a user seed, or readable by others.
    """
    path = data_dir / IDENTITY_FILE
    if path.exists():
        return read_key(path, kind=_USER)
    if not create:
        raise IdentityError(f"{path} does not exist: create it with `parley node init`")
    if any(data_dir.glob("*.sqlite")):
        raise IdentityError(
            f"{data_dir} holds a node database but no {IDENTITY_FILE}: the node's identity is "
            "lost or this is the wrong directory. Restore the key file from a backup; a new key "
            "would be a new node, which the network map does not know"
        )
    key = KeyPair.generate(kind=_USER)
    write_key(path, key)
    return key


def read_key(path: Path, *, kind: int) -> KeyPair:
    """Read a seed file written by :func:`write_key` (owner-only permissions are required)."""
    try:
        mode = path.stat().st_mode
        data = path.read_bytes().strip()
    except OSError as exc:
        raise IdentityError(f"can't read the key file {path}: {exc}") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise IdentityError(
            f"{path} is readable by other users (mode {stat.filemode(mode)}): "
            f"make it owner-only with `chmod 600 {path}`"
        )
    try:
        return KeyPair(data, kind=kind)
    except IdentityError as exc:
        raise IdentityError(f"{path} does not hold a valid key: {exc}") from exc


def write_key(path: Path, key: KeyPair) -> None:
    """Write ``key``'s seed to a new file that only its owner can read (never overwrites)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(key.seed.encode() + b"\n")
        file.flush()
        os.fsync(file.fileno())


def operator_key(path: Path) -> KeyPair:
    """The network operator's key pair, from its seed file."""
    return read_key(path, kind=_OPERATOR)


def new_operator_key() -> KeyPair:
    return KeyPair.generate(kind=_OPERATOR)


def verify(public_key: str, data: bytes, signature: bytes) -> bool:
    """Whether ``signature`` is ``public_key``'s signature of ``data``. Never raises."""
    if len(signature) != SIGNATURE_BYTES:
        return False
    verifier = _verifier(public_key)
    if verifier is None:
        return False
    try:
        verifier.verify(data, signature)
    except (nacl.exceptions.BadSignatureError, ValueError, TypeError):
        return False
    return True


def is_public_key(text: str, *, kind: int = _USER) -> bool:
    """Whether ``text`` is a well-formed public NKey of ``kind`` (user keys by default)."""
    return _decode_public(text, kind) is not None


@lru_cache(maxsize=4096)
def _verifier(public_key: str) -> nacl.signing.VerifyKey | None:
    raw = _decode_public(public_key, None)
    return nacl.signing.VerifyKey(raw) if raw is not None else None


def _decode_public(text: str, kind: int | None) -> bytes | None:
    """The raw 32-byte key of a public NKey (checksum checked), or None if it is not one."""
    if not isinstance(text, str) or len(text) != 56:
        return None
    with contextlib.suppress(ValueError, TypeError):
        raw = base64.b32decode(text + "=" * (-len(text) % 8))
        if len(raw) != 35:
            return None
        prefix, key, checksum = raw[0], raw[1:33], raw[33:]
        if kind is not None and prefix != kind:
            return None
        if prefix not in (_USER, _OPERATOR):
            return None
        if nkeys.crc16(bytearray(raw[:33])).to_bytes(2, "little") != checksum:
            return None
        return key
    return None


def _encode_public(prefix: int, raw: bytes) -> str:
    body = bytearray([prefix, *raw])
    body.extend(nkeys.crc16(body).to_bytes(2, "little"))
    return base64.b32encode(bytes(body)).decode().rstrip("=")


def _kind_name(prefix: int) -> str:
    return {_USER: "a user key", _OPERATOR: "an operator key"}.get(prefix, f"prefix {prefix}")


__all__ = [
    "IDENTITY_FILE",
    "IdentityError",
    "KeyPair",
    "is_public_key",
    "load_identity",
    "new_operator_key",
    "operator_key",
    "read_key",
    "verify",
    "write_key",
]

"""Node and operator keys: created once, kept private, never silently replaced."""

from __future__ import annotations

import os
from pathlib import Path

import nkeys
import pytest

from parley.identity.keys import (
    IDENTITY_FILE,
    IdentityError,
    KeyPair,
    is_public_key,
    load_identity,
    new_operator_key,
    operator_key,
    verify,
    write_key,
)


def test_a_new_node_gets_a_user_key_only_its_owner_can_read(tmp_path: Path) -> None:
    key = load_identity(tmp_path)
    path = tmp_path / IDENTITY_FILE
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert key.public_key.startswith("U")
    assert load_identity(tmp_path).public_key == key.public_key, "the same key on every start"


def test_the_key_is_a_real_nkey_the_nats_tools_accept(tmp_path: Path) -> None:
    key = load_identity(tmp_path)
    theirs = nkeys.from_seed(key.seed.encode())
    assert theirs.public_key.decode() == key.public_key
    signature = key.sign(b"hello")
    assert theirs.verify(b"hello", signature)


def test_a_node_with_a_database_but_no_key_stops_instead_of_becoming_another_node(
    tmp_path: Path,
) -> None:
    (tmp_path / "parley.sqlite").write_bytes(b"")
    with pytest.raises(IdentityError, match=r"holds a node database but no identity\.nk"):
        load_identity(tmp_path)
    assert not (tmp_path / IDENTITY_FILE).exists()


def test_a_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    load_identity(tmp_path)
    os.chmod(tmp_path / IDENTITY_FILE, 0o644)
    with pytest.raises(IdentityError, match="chmod 600"):
        load_identity(tmp_path)


@pytest.mark.parametrize(
    "content", [b"", b"garbage", b"SUAGARBAGE", new_operator_key().seed.encode()]
)
def test_a_corrupt_or_wrong_kind_of_key_file_is_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / IDENTITY_FILE
    path.write_bytes(content)
    os.chmod(path, 0o600)
    with pytest.raises(IdentityError, match="does not hold a valid key"):
        load_identity(tmp_path)


def test_without_create_a_missing_key_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(IdentityError, match="parley node init"):
        load_identity(tmp_path, create=False)


def test_a_key_file_is_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "op.nk"
    write_key(path, new_operator_key())
    with pytest.raises(FileExistsError):
        write_key(path, new_operator_key())
    assert operator_key(path).public_key.startswith("O")


def test_signatures_verify_only_for_the_right_key_and_data() -> None:
    alice, bob = KeyPair.generate(), KeyPair.generate()
    signature = alice.sign(b"payload")
    assert alice.sign(b"payload") == signature, "Ed25519 signatures are deterministic"
    assert verify(alice.public_key, b"payload", signature)
    assert not verify(bob.public_key, b"payload", signature)
    assert not verify(alice.public_key, b"payloaD", signature)
    flipped = signature[:-1] + bytes([signature[-1] ^ 0x01])  # always differs in its last byte
    assert not verify(alice.public_key, b"payload", flipped)


def _with_last_character_changed(key: str) -> str:
    """``key`` with its last character replaced by another one: the checksum no longer fits."""
    return key[:-1] + ("B" if key[-1] == "A" else "A")


@pytest.mark.parametrize(
    "public_key",
    [
        "",
        "U",
        "x" * 56,
        "U" + "A" * 55,
        _with_last_character_changed(KeyPair.generate().public_key),
    ],
)
def test_malformed_keys_and_signatures_verify_as_false_without_raising(public_key: str) -> None:
    assert not verify(public_key, b"data", b"\x00" * 64)
    assert not verify(KeyPair.generate().public_key, b"data", b"short")
    assert not is_public_key(public_key)

"""RPC users: scrypt-hashed passwords, permissions, the [[users]] configuration, authentication."""

from __future__ import annotations

import pytest

from parley.rpc import NotAuthenticated, PermissionRefused
from parley.rpc.users import (
    Authenticator,
    RpcUser,
    hash_password,
    start_permission,
    users_from_config,
    verify_password,
)

HASHED = hash_password("s3cret")


def test_a_hashed_password_verifies_and_another_does_not() -> None:
    assert verify_password("s3cret", HASHED)
    assert not verify_password("s3cret ", HASHED)
    assert HASHED.startswith("scrypt$16384$8$1$")
    assert "s3cret" not in HASHED


def test_the_same_password_hashes_differently_each_time() -> None:
    assert hash_password("s3cret") != HASHED


def test_a_malformed_hash_never_verifies() -> None:
    for bad in ("", "s3cret", "scrypt$1$8$1$AA==$AA==", "bcrypt$x", "scrypt$16384$8$1$!!$AA=="):
        assert not verify_password("s3cret", bad)


def test_a_user_holds_its_permissions_and_all_holds_every_one() -> None:
    user = RpcUser("ops", HASHED, [start_permission("a.b:C"), "ReadFlows"])
    assert user.may("StartFlow.a.b:C")
    assert user.may("ReadFlows")
    assert not user.may("StartFlow.a.b:D")
    assert not user.may("KillFlow")
    assert RpcUser("root", HASHED, ["ALL"]).may("KillFlow")


def test_a_refusal_names_the_missing_permission() -> None:
    user = RpcUser("ops", HASHED, ["ReadFlows"])
    with pytest.raises(PermissionRefused) as refused:
        user.require("KillFlow", "kill flows")
    assert str(refused.value) == "user 'ops' may not kill flows: it lacks the permission KillFlow"
    assert refused.value.details["permission"] == "KillFlow"


@pytest.mark.parametrize(
    ("permission", "message"),
    [
        ("readflows", "did you mean 'ReadFlows'?"),
        ("StartFlow.Ping", "use StartFlow.<module:Class>"),
        ("Everything", "unknown permission 'Everything'"),
    ],
)
def test_an_unknown_permission_is_refused_with_what_would_do(permission: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RpcUser("ops", HASHED, [permission])


def test_the_hash_stays_out_of_the_users_repr() -> None:
    assert HASHED not in repr(RpcUser("ops", HASHED, ["ALL"]))


def test_users_are_read_from_config_entries_and_written_back_as_toml() -> None:
    entry = {"name": "ops", "password": HASHED, "permissions": ["ALL", "Signal"]}
    (user,) = users_from_config([entry])
    assert (user.name, user.permissions) == ("ops", frozenset({"ALL", "Signal"}))
    assert f'password = "{HASHED}"' in user.toml()


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([{"name": "ops", "password": "hunter2", "permissions": []}], "is not a scrypt hash"),
        ([{"name": "ops", "password": HASHED, "colour": "red"}], "unknown keys: colour"),
        ([{"name": "ops", "password": HASHED, "permissions": "ALL"}], "a list of strings"),
        ({"name": "ops"}, r"an array of tables \(\[\[users\]\]\)"),
        ([{"name": "a b", "password": HASHED}], "invalid user name 'a b'"),
        (
            [{"name": "ops", "password": HASHED}, {"name": "ops", "password": HASHED}],
            "configured twice",
        ),
    ],
)
def test_a_malformed_users_entry_is_refused(entries: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        users_from_config(entries)


def test_the_authenticator_accepts_known_credentials_and_then_remembers_them() -> None:
    users = Authenticator([RpcUser("ops", HASHED, ["ALL"])])
    assert users.cached("ops", "s3cret") is None
    assert users.authenticate("ops", "s3cret").name == "ops"
    cached = users.cached("ops", "s3cret")
    assert cached is not None
    assert cached.name == "ops"
    assert users.cached("ops", "wrong") is None


@pytest.mark.parametrize(
    ("name", "password", "message"),
    [
        (None, None, "carries no credentials"),
        ("ops", None, "carries no credentials"),
        ("ops", "wrong", "user 'ops' and password not accepted"),
        ("nobody", "s3cret", "user 'nobody' and password not accepted"),
    ],
)
def test_the_authenticator_refuses(name: str | None, password: str | None, message: str) -> None:
    users = Authenticator([RpcUser("ops", HASHED, ["ALL"])])
    with pytest.raises(NotAuthenticated, match=message):
        users.authenticate(name, password)

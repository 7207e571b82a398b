"""RPC users in ``parley.toml``: ``parley node init --user`` writes them, ``node run`` reads them.

A user is a ``[[users]]`` entry (top level, beside ``[node]``) with its name, its password
hashed with scrypt, and its permissions (see :mod:`parley.rpc.users`)::

    [[users]]
    name = "ops"
    password = "scrypt$16384$8$1$..."
    permissions = ["StartFlow.parley.apps.pingpong:Ping", "ReadFlows"]

The plain password is never written anywhere; a file whose entry holds one is refused.
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from parley.cli.network import fail, hint

if TYPE_CHECKING:
    from parley.rpc.users import RpcUser


def load_users(path: Path) -> list[RpcUser]:
    """The ``[[users]]`` of a ``parley.toml`` (exit code 2 with the reason if one is wrong)."""
    from parley.rpc.users import users_from_config  # noqa: PLC0415 (hashlib, the rpc package)

    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return []  # load_config already said what is wrong with the file
    try:
        return users_from_config(data.get("users"))
    except ValueError as exc:
        fail(f"{path}: {exc}", 2)


def add_user(name: str, permissions: list[str], password: str | None, config: Path | None) -> None:
    """Hash ``password`` (asked for when missing) and write or print the user's entry."""
    from parley.rpc.users import RpcUser, hash_password  # noqa: PLC0415

    if not permissions:
        fail(
            f"user {name!r} needs at least one --permission: StartFlow.<module:Class>, "
            "KillFlow, ReadFlows, Signal, Hospital or ALL",
            2,
        )
    if password is None:
        if not sys.stdin.isatty():
            fail(f"give the password of {name!r} with --password or PARLEY_PASSWORD", 2)
        password = typer.prompt(f"password of {name}", hide_input=True, confirmation_prompt=True)
    try:
        user = RpcUser(name, hash_password(password), permissions)
    except ValueError as exc:
        fail(str(exc), 2)
    if config is None:
        typer.echo(user.toml(), nl=False)
        hint("Add the entry above to the node's parley.toml; the node reads it at its start")
        return
    if config.exists() and any(u.name == name for u in load_users(config)):
        fail(f"{config} has a user {name!r} already: remove its entry first to replace it")
    try:
        existing = config.read_text() if config.exists() else ""
        if existing and not existing.endswith("\n"):
            existing += "\n"
        config.write_text(existing + ("\n" if existing else "") + user.toml())
    except OSError as exc:
        fail(f"can't write {config}: {exc.strerror}")
    hint(f"{config} now has the user {name!r}; (re)start the node to let it in")

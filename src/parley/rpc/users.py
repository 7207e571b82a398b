"""RPC users: hashed passwords and permissions, as Corda's RPC users are configured.

Rules:

* A user is configured in the node's ``parley.toml`` as a ``[[users]]`` entry (``parley node init
  --user NAME`` writes one)::

      [[users]]
      name = "ops"
      password = "scrypt$16384$8$1$<salt>$<hash>"
      permissions = ["StartFlow.parley.apps.pingpong:Ping", "ReadFlows"]

* Passwords are stored hashed with scrypt (:func:`hash_password`); a configured password that is
  not such a hash is refused when the configuration is read, so a plain password never sits in a
  file the node accepts.
* Permissions: ``StartFlow.<module:Class>`` (start that flow), ``KillFlow``, ``ReadFlows`` (list
  flows, read any flow's result and progress, stats), ``Signal``, ``Hospital`` (list, show, retry
  and kill flows in the hospital) and ``ALL``. A user may always read the result and progress of a
  flow it started (see ``docs/rpc.md``).
* Checking a password costs one scrypt (tens of milliseconds, on purpose). A password that was
  accepted once is remembered as a keyed hash (the key is random per process, the password itself
  is never kept), so a client pays for scrypt once per process of the node, not per request.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from parley.rpc.errors import NotAuthenticated, PermissionRefused

__all__ = [
    "ALL",
    "HOSPITAL",
    "KILL_FLOW",
    "READ_FLOWS",
    "SIGNAL",
    "Authenticator",
    "RpcUser",
    "hash_password",
    "start_permission",
    "users_from_config",
    "verify_password",
]

ALL: Final = "ALL"
KILL_FLOW: Final = "KillFlow"
READ_FLOWS: Final = "ReadFlows"
SIGNAL: Final = "Signal"
HOSPITAL: Final = "Hospital"
_START: Final = "StartFlow."
_SIMPLE: Final = (ALL, KILL_FLOW, READ_FLOWS, SIGNAL, HOSPITAL)
_FLOW_NAME: Final = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
_USER_NAME: Final = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
#: scrypt's cost: N=2^14, r=8, p=1 (16 MiB, ~50 ms), OWASP's minimum for scrypt.
_N, _R, _P = 1 << 14, 8, 1
_MAXMEM: Final = 64 * 1024 * 1024
_DKLEN: Final = 32


def start_permission(flow_class: str) -> str:
    """The permission to start ``flow_class`` (``"module:QualName"``): ``StartFlow.<name>``."""
    return _START + flow_class


def check_permission(text: str) -> str:
    """``text`` if it is a permission; otherwise a ValueError naming the known ones."""
    if text in _SIMPLE:
        return text
    if text.startswith(_START) and _FLOW_NAME.match(text[len(_START) :]):
        return text
    lowered = {p.lower(): p for p in _SIMPLE}
    if text.lower() in lowered:
        raise ValueError(f"unknown permission {text!r}: did you mean {lowered[text.lower()]!r}?")
    raise ValueError(
        f"unknown permission {text!r}: use StartFlow.<module:Class>, "
        f"{', '.join(_SIMPLE[1:])} or ALL"
    )


# ---------------------------------------------------------------------- passwords


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """Hash ``password`` for a ``[[users]]`` entry: ``scrypt$N$r$p$<salt>$<hash>`` (base64)."""
    if not password:
        raise ValueError("a password can't be empty")
    salt = salt if salt is not None else os.urandom(16)
    digest = _scrypt(password, salt, _N, _R, _P)
    return f"scrypt${_N}${_R}${_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, hashed: str) -> bool:
    """Whether ``password`` matches ``hashed`` (constant time; a malformed hash never matches)."""
    try:
        n, r, p, salt, digest = _parse_hash(hashed)
    except ValueError:
        return False
    return hmac.compare_digest(_scrypt(password, salt, n, r, p), digest)


def _parse_hash(hashed: str) -> tuple[int, int, int, bytes, bytes]:
    parts = hashed.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        raise ValueError("not a scrypt hash (scrypt$N$r$p$salt$hash)")
    try:
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        salt, digest = base64.b64decode(parts[4], validate=True), base64.b64decode(parts[5])
    except ValueError as exc:
        raise ValueError(f"a malformed scrypt hash: {exc}") from exc
    if n < 2 or n & (n - 1) or not 1 <= r <= 64 or not 1 <= p <= 16 or not salt or not digest:
        raise ValueError("a scrypt hash with impossible parameters")
    return n, r, p, salt, digest


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=_MAXMEM, dklen=_DKLEN)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# ---------------------------------------------------------------------- users


@dataclass(frozen=True)
class RpcUser:
    """A user of the node's RPC service.

    Args:
        name: the user's name (1-64 of ``A-Z a-z 0-9 _ . @ -``).
        password_hash: :func:`hash_password` of the password.
        permissions: what the user may do (see the module docstring).

    Raises:
        ValueError: a malformed name, hash or permission (the message names it).
    """

    name: str
    password_hash: str
    permissions: frozenset[str]

    def __init__(self, name: str, password_hash: str, permissions: Iterable[str]) -> None:
        if not isinstance(name, str) or not _USER_NAME.match(name):
            raise ValueError(f"invalid user name {name!r}: 1-64 of A-Z a-z 0-9 _ . @ -")
        try:
            _parse_hash(password_hash)
        except (ValueError, AttributeError) as exc:
            raise ValueError(
                f"the password of user {name!r} is not a scrypt hash ({exc}): make the entry "
                f"with `parley node init --user {name}`, never a plain password"
            ) from None
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "password_hash", password_hash)
        object.__setattr__(self, "permissions", frozenset(map(check_permission, permissions)))

    def __repr__(self) -> str:  # the hash stays out of logs
        return f"RpcUser({self.name!r}, permissions={sorted(self.permissions)})"

    def may(self, permission: str) -> bool:
        """Whether the user holds ``permission`` (or ``ALL``)."""
        return ALL in self.permissions or permission in self.permissions

    def require(self, permission: str, what: str) -> None:
        """Raise :class:`PermissionRefused` unless the user holds ``permission``.

        Args:
            permission: the permission needed.
            what: the operation, for the message (``"start parley.apps.pingpong:Ping"``).
        """
        if not self.may(permission):
            raise PermissionRefused(
                f"user {self.name!r} may not {what}: it lacks the permission {permission}",
                permission=permission,
                user=self.name,
            )

    def toml(self) -> str:
        """The user as a ``[[users]]`` entry of ``parley.toml``."""
        permissions = ", ".join(f'"{p}"' for p in sorted(self.permissions))
        return (
            f'[[users]]\nname = "{self.name}"\npassword = "{self.password_hash}"\n'
            f"permissions = [{permissions}]\n"
        )


def users_from_config(entries: object) -> list[RpcUser]:
    """The users of a ``parley.toml``'s ``[[users]]`` array of tables.

    Raises:
        ValueError: an entry is malformed, names an unknown key, or a name is used twice.
    """
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise ValueError("users must be an array of tables ([[users]])")
    users: list[RpcUser] = []
    for index, entry in enumerate(entries, 1):
        if not isinstance(entry, Mapping):
            raise ValueError(f"users entry {index} is not a table")
        unknown = sorted(set(entry) - {"name", "password", "permissions"})
        if unknown:
            raise ValueError(f"users entry {index} has unknown keys: {', '.join(unknown)}")
        permissions: Any = entry.get("permissions", [])
        if not isinstance(permissions, list) or not all(isinstance(p, str) for p in permissions):
            raise ValueError(f"users entry {index}: permissions must be a list of strings")
        users.append(
            RpcUser(str(entry.get("name", "")), str(entry.get("password", "")), permissions)
        )
    names = [u.name for u in users]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"user {twice[0]!r} is configured twice")
    return users


class Authenticator:
    """Checks a request's credentials against the configured users (thread-safe)."""

    def __init__(self, users: Iterable[RpcUser]) -> None:
        self._users = {user.name: user for user in users}
        self._key = os.urandom(32)
        self._accepted: dict[str, bytes] = {}
        self._lock = threading.Lock()
        #: Hashed with the same cost as a real user's, so an unknown name takes as long.
        self._decoy = hash_password(os.urandom(8).hex())

    def cached(self, name: object, password: object) -> RpcUser | None:
        """The user, if these credentials were accepted before (no scrypt: cheap)."""
        if not isinstance(name, str) or not isinstance(password, str):
            return None
        with self._lock:
            accepted = self._accepted.get(name)
        if accepted is not None and hmac.compare_digest(accepted, self._mark(password)):
            return self._users.get(name)
        return None

    def authenticate(self, name: object, password: object) -> RpcUser:
        """The user these credentials belong to (may run scrypt: call it off the event loop).

        Raises:
            NotAuthenticated: no credentials, an unknown user or a wrong password.
        """
        if not isinstance(name, str) or not name or not isinstance(password, str):
            raise NotAuthenticated(
                "the request carries no credentials: give a user and password "
                "(--user and --password, or PARLEY_USER and PARLEY_PASSWORD)"
            )
        known = self.cached(name, password)
        if known is not None:
            return known
        user = self._users.get(name)
        if not verify_password(password, user.password_hash if user else self._decoy) or not user:
            raise NotAuthenticated(
                f"user {name!r} and password not accepted: check both (users are the [[users]] "
                "entries of the node's parley.toml)",
                user=name,
            )
        with self._lock:
            self._accepted[name] = self._mark(password)
        return user

    def _mark(self, password: str) -> bytes:
        return hmac.new(self._key, password.encode(), hashlib.sha256).digest()

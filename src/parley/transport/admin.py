"""The network operator's tooling: admit and revoke nodes in the network map.

:class:`NetworkAdmin` signs map entries with the operator's key and writes them to the map's
bucket over a connection with the admin's permissions (see ``docs/security.md``). Admitting a node
also creates its stream (:func:`~parley.transport.security.ensure_node_stream`), so that messages
to it wait for it even where nodes may not create each other's streams. Each call opens a
connection of its own and closes it: these are rare, interactive operations (``parley network``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Coroutine, Mapping, Sequence
from typing import Any, TypeVar

import nats
from nats.aio.client import Client

from parley.identity.keys import KeyPair, is_public_key
from parley.identity.netmap import (
    MapEntryError,
    NetworkMap,
    NodeEntry,
    NodeStatus,
    new_serial,
    sign_entry,
)
from parley.protocol.errors import ParleyError
from parley.protocol.messages import is_node_name
from parley.transport.mapsync import list_entries, put_entry
from parley.transport.names import server_urls
from parley.transport.security import ensure_node_stream

__all__ = ["AdminError", "NetworkAdmin"]


def _why_not_connected(
    url: str, error: BaseException, reported: Sequence[BaseException], timeout: float
) -> str:
    """One line on why the admin could not connect: refused credentials, TLS, or no server."""
    for cause in (*reported, error):
        text = str(cause).lower()
        if "authorization" in text or "authentication" in text:
            return f"the NATS server at {url} refused the admin's credentials ({cause})"
        if isinstance(cause, ssl.SSLError | ssl.CertificateError) or "tls" in text:
            return f"TLS with the NATS server at {url} failed: {cause}"
    return f"no NATS server at {url} within {timeout} s ({type(error).__name__}: {error})"


T = TypeVar("T")


class AdminError(ParleyError):
    """An operator action was refused: a bad name or key, an unknown node, no NATS server."""


class NetworkAdmin:
    """Admits and revokes nodes; see the module docstring.

    Args:
        url: the NATS server(s).
        operator: the operator's key pair (``SO...`` seed), which signs the entries.
        connect_options: more keyword arguments for ``nats.connect`` (the admin's credentials).
        timeout: bound on connecting and on each call.
    """

    def __init__(
        self,
        url: str,
        operator: KeyPair,
        connect_options: Mapping[str, Any] | None = None,
        *,
        timeout: float = 10.0,
    ) -> None:
        self.url = url
        self.operator = operator
        self._options = dict(connect_options or {})
        self._timeout = timeout

    def admit(
        self,
        name: str,
        keys: Sequence[str],
        *,
        apps: Sequence[str] = (),
        flow_versions: Sequence[tuple[str, int]] = (),
        stream_replicas: int = 1,
    ) -> NodeEntry:
        """Admit ``name`` under ``keys`` (the current key first; a second one during a rotation).

        Re-admitting a node replaces its entry (new keys, a revoked node admitted again).
        ``stream_replicas`` is the replication factor of the node's stream (3 on a cluster: the
        nodes' ``stream_replicas``).

        Raises:
            AdminError: the name or a key is malformed, or NATS can't be reached.
        """
        if not is_node_name(name):
            raise AdminError(f"{name!r} is not a node name (1-128 of A-Z a-z 0-9 _ -)")
        bad = [k for k in keys if not is_public_key(k)]
        if not keys or bad:
            raise AdminError(
                f"a node is admitted under public user NKeys (U...), not {bad or keys}"
            )
        entry = NodeEntry(
            name,
            tuple(keys),
            NodeStatus.ADMITTED,
            new_serial(),
            tuple(apps),
            tuple(flow_versions),
        )
        self._put(entry, create_stream=True, replicas=stream_replicas)
        return entry

    def revoke(self, name: str) -> NodeEntry:
        """Revoke ``name``: peers refuse its messages and end their sessions with it.

        Raises:
            AdminError: no such node in the map, or NATS can't be reached.
        """
        current = self.entries().get(name)
        if current is None:
            raise AdminError(f"{name} is not in the network map")
        entry = NodeEntry(
            name,
            current.keys,
            NodeStatus.REVOKED,
            new_serial(),
            current.apps,
            current.flow_versions,
        )
        self._put(entry, create_stream=False)
        return entry

    def entries(self) -> dict[str, NodeEntry]:
        """Every node's current entry (only entries signed by this operator's key count).

        Raises:
            AdminError: NATS can't be reached.
        """
        checked = NetworkMap(self.operator.public_key)
        for data in self._run(self._list()).values():
            with contextlib.suppress(MapEntryError):  # not this operator's: it does not count
                checked.accept(data)
        return {entry.name: entry for entry in checked.entries()}

    # ---- NATS -------------------------------------------------------------------------------
    def _put(self, entry: NodeEntry, *, create_stream: bool, replicas: int = 1) -> None:
        signed = sign_entry(self.operator, entry)

        async def put(nc: Any) -> None:
            js = nc.jetstream()
            if create_stream:
                await ensure_node_stream(js, entry.name, replicas=replicas)
            await put_entry(js, entry.name, signed)

        self._run(self._with_connection(put))

    async def _list(self) -> dict[str, bytes]:
        async def read(nc: Any) -> dict[str, bytes]:
            return await list_entries(nc.jetstream())

        found: dict[str, bytes] = await self._with_connection(read)
        return found

    async def _with_connection(self, use: Any) -> Any:
        nc = Client()
        errors: list[BaseException] = []
        options = dict(self._options)
        theirs = options.pop("error_cb", None)

        async def record(error: Exception) -> None:
            errors.append(error)
            if theirs is not None:
                await theirs(error)

        try:
            await asyncio.wait_for(
                nc.connect(
                    server_urls(self.url),
                    name="parley-network-admin",
                    allow_reconnect=False,
                    connect_timeout=max(1, round(self._timeout)),
                    error_cb=record,
                    **options,
                ),
                self._timeout,
            )
        except Exception as exc:
            with contextlib.suppress(Exception):  # a refused connection keeps its socket open
                await nc.close()
            raise AdminError(_why_not_connected(self.url, exc, errors, self._timeout)) from exc
        try:
            return await asyncio.wait_for(use(nc), self._timeout)
        finally:
            await nc.close()

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        try:
            return asyncio.run(coro)
        except AdminError:
            raise
        except (TimeoutError, nats.errors.Error) as exc:
            raise AdminError(f"the operation on {self.url} failed: {exc!r}") from exc

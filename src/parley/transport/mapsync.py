"""The network map's JetStream key-value bucket: the operator writes it, every node watches it.

The bucket :data:`~parley.transport.names.MAP_BUCKET` holds one key per node (its name) whose value
is the operator-signed entry (:func:`parley.identity.netmap.sign_entry`), with a short history so
that operators can see what changed. Writing is for the operator's tooling
(:func:`put_entry`); nodes only read.

:class:`MapSync` runs in a node: it watches the bucket on a connection and loop thread of its own
(so the node's message path never waits on it), hands every value to the node's
:class:`~parley.identity.netmap.NetworkMap` (which keeps only operator-signed, newer entries), and
looks up a single node on demand (a sender the map does not know yet: admitted a moment ago). If
the bucket is out of reach the node keeps the entries it has (its SQLite cache) and MapSync tries
again in the background.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Coroutine, Mapping
from concurrent.futures import Future
from typing import Any, Final, TypeVar

import nats
import nats.js.errors
from nats.js.api import KeyValueConfig, StorageType

from parley.identity.netmap import MapEntryError, NetworkMap
from parley.transport.names import MAP_BUCKET, server_urls

__all__ = ["MapSync", "ensure_bucket", "list_entries", "put_entry"]

log = logging.getLogger("parley.network")

T = TypeVar("T")

#: Versions of each entry the bucket keeps (for operators; nodes read the latest).
HISTORY: Final = 16
#: Seconds between attempts to reach a bucket that is missing or out of reach.
RETRY_EVERY: Final = 2.0


async def ensure_bucket(js: Any) -> Any:
    """The map's bucket, created if missing (operator tooling). Returns nats-py's KeyValue."""
    try:
        return await js.key_value(MAP_BUCKET)
    except nats.js.errors.BucketNotFoundError:
        config = KeyValueConfig(bucket=MAP_BUCKET, history=HISTORY, storage=StorageType.FILE)
        return await js.create_key_value(config)


async def put_entry(js: Any, name: str, signed: bytes) -> int:
    """Store a node's signed entry in the bucket (operator tooling); returns its revision."""
    kv = await ensure_bucket(js)
    revision: int = await kv.put(name, signed)
    return revision


async def list_entries(js: Any) -> dict[str, bytes]:
    """Every node's latest signed entry in the bucket (empty if there is no bucket)."""
    try:
        kv = await js.key_value(MAP_BUCKET)
    except nats.js.errors.BucketNotFoundError:
        return {}
    found: dict[str, bytes] = {}
    watcher = await kv.watchall(ignore_deletes=True)
    try:
        while True:
            entry = await watcher.updates(timeout=5.0)
            if entry is None:
                break
            found[entry.key] = entry.value
    finally:
        await watcher.stop()
    return found


class MapSync:
    """Keeps a node's network map in step with the bucket; see the module docstring.

    Args:
        node: the node's name (for its connection's name and the log).
        url: the NATS server, or several separated by commas (a cluster's).
        network_map: the map to feed.
        connect_options: more keyword arguments for ``nats.connect`` (credentials, TLS).
    """

    def __init__(
        self,
        node: str,
        url: str,
        network_map: NetworkMap,
        connect_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.node = node
        self.url = url
        self._servers = server_urls(url)
        self.map = network_map
        self._options = dict(connect_options or {})
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name=f"parley-map-{node}", daemon=True
        )
        self._nc: Any = None
        self._kv: Any = None
        self._task: asyncio.Task[None] | None = None
        self._loaded: asyncio.Event | None = None
        self._stopping = False

    def start(self, wait: float) -> bool:
        """Start watching; wait up to ``wait`` seconds for the bucket's current entries.

        Returns:
            Whether the current entries were all read (``False``: the node goes on with what it
            has, and the watch keeps trying).
        """
        self._thread.start()
        self._run(self._begin())
        try:
            return self._run(self._wait_loaded(wait), timeout=wait + 5.0)
        except TimeoutError:
            return False

    def lookup(self, name: str, done: Callable[[], None]) -> None:
        """Fetch ``name``'s entry from the bucket now, then call ``done()`` (on the map's thread).

        ``done`` is called whatever the outcome; the map has the entry if there was a valid one.
        """

        async def fetch() -> None:
            try:
                if self._kv is not None:
                    entry = await self._kv.get(name)
                    self._accept(name, entry.value)
            except Exception as exc:
                log.info("%s: no map entry for %s: %r", self.node, name, exc)
            finally:
                done()

        try:
            asyncio.run_coroutine_threadsafe(fetch(), self._loop)
        except RuntimeError:  # stopped
            done()

    def stop(self) -> None:
        """Stop watching and close the connection. Idempotent."""
        if self._stopping or not self._thread.is_alive():
            self._stopping = True
            return
        self._stopping = True
        with contextlib.suppress(Exception):
            self._run(self._end(), timeout=10.0)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10.0)
        if not self._thread.is_alive():
            self._loop.close()

    # ---- on the map's loop ----------------------------------------------------------------

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(timeout)

    async def _begin(self) -> None:
        self._loaded = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._watch_forever())

    async def _wait_loaded(self, wait: float) -> bool:
        assert self._loaded is not None
        try:
            await asyncio.wait_for(self._loaded.wait(), wait)
        except TimeoutError:
            return False
        return True

    async def _end(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._nc is not None and not self._nc.is_closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._nc.close(), 5.0)

    async def _watch_forever(self) -> None:
        warned = False
        while not self._stopping:
            try:
                await self._watch()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                level = logging.INFO if warned else logging.WARNING
                log.log(
                    level,
                    "%s: can't read the network map bucket %s (%r); using the entries it has "
                    "and trying again",
                    self.node,
                    MAP_BUCKET,
                    exc,
                )
                warned = True
            await asyncio.sleep(RETRY_EVERY)

    async def _watch(self) -> None:
        if self._nc is None or self._nc.is_closed:
            self._nc = await nats.connect(
                self._servers,
                name=f"parley-map-{self.node}",
                allow_reconnect=True,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                **self._options,
            )
        js = self._nc.jetstream()
        self._kv = await js.key_value(MAP_BUCKET)
        watcher = await self._kv.watchall(ignore_deletes=True)
        try:
            while not self._stopping:
                try:
                    entry = await watcher.updates(timeout=3600.0)
                except nats.errors.TimeoutError:
                    continue
                if entry is None:  # the current entries have all been read
                    assert self._loaded is not None
                    self._loaded.set()
                    continue
                self._accept(entry.key, entry.value)
        finally:
            with contextlib.suppress(Exception):
                await watcher.stop()

    def _accept(self, key: str, value: bytes | None) -> None:
        if not value:
            return
        try:
            entry = self.map.accept(value)
        except MapEntryError as exc:
            log.warning("%s: ignoring map entry %r: %s", self.node, key, exc)
            return
        if entry is not None and entry.name != key:
            log.warning("%s: map key %r holds the entry of %r", self.node, key, entry.name)
        if entry is not None:
            log.info(
                "%s: network map: %s is %s (serial %d)",
                self.node,
                entry.name,
                entry.status,
                entry.serial,
            )

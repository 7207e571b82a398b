"""Progress feeds: a flow's progress tree and every change to it, published in order.

Rules:

* A flow gets a :class:`FlowFeed` when someone first tracks it; the feed subscribes to the flow's
  :class:`~parley.flows.progress.ProgressTracker` and to its result, and publishes on
  ``parley.feed.<node>.<flow id>``: one event per change (``position``, ``structure``, ``done``,
  ``error``), then a ``result`` event with the flow's outcome, after which the feed ends.
* Every event carries a sequence number and the *whole* tree. A client subscribes first, then
  asks ``track``: the reply holds the current tree and the sequence number it reflects, and the
  client applies only events with a higher number. Trees are small, and a whole tree per event
  makes a duplicate or a snapshot taken mid-change harmless.
* Progress callbacks run on the flow's worker thread. A feed only numbers and encodes the event
  there (under its lock, so numbers follow the order of the changes) and hands it to
  ``publish``, which queues it for the service's event loop: a flow never waits for NATS.
* :class:`FlowListWatch` polls the node's flow list while someone watches it (a lease renewed by
  ``list_flows`` with ``watch``) and publishes what changed on ``parley.feed.<node>.flows``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import Future
from typing import Any, Final

from parley.engine.handles import FlowHandle
from parley.flows.progress import DONE, ProgressChange
from parley.protocol import codec
from parley.rpc.messages import VERSION, feed_subject, outcome_of, tree_rows

__all__ = ["FlowFeed", "FlowFeeds", "FlowListWatch"]

log = logging.getLogger("parley.rpc")

Publish = Callable[[str, bytes], None]
#: Seconds a ``list_flows(watch=True)`` keeps the list's feed going.
WATCH_LEASE: Final = 30.0
#: Seconds between two looks at the flow list while it is watched.
WATCH_EVERY: Final = 1.0


class FlowFeed:
    """One tracked flow's feed (see the module docstring)."""

    def __init__(
        self,
        node: str,
        handle: FlowHandle[Any],
        publish: Publish,
        ended: Callable[[FlowFeed], None],
    ) -> None:
        self.flow_id = handle.flow_id
        self.subject = feed_subject(node, handle.flow_id)
        self._handle = handle
        self._publish = publish
        self._ended = ended
        self._lock = threading.Lock()
        self._seq = 0
        self._finished = False
        tracker = handle.progress
        self._unsubscribe = tracker.subscribe(self._changed) if tracker is not None else None
        handle.future.add_done_callback(self._done)  # at once if it is done already

    def snapshot(self) -> dict[str, object]:
        """The current tree and the number of the last event it reflects (``track``'s reply)."""
        with self._lock:
            snapshot: dict[str, object] = {
                "flow_id": self.flow_id,
                "subject": self.subject,
                "seq": self._seq,
                "tree": self._tree(),
                "done": self._finished,
            }
            if self._finished:
                snapshot.update(outcome_of(self._handle.future))
            return snapshot

    def close(self) -> None:
        """Publish nothing more (the service stops)."""
        with self._lock:
            self._finished = True
        if self._unsubscribe is not None:
            self._unsubscribe()

    def _tree(self) -> list[list[object]]:
        tracker = self._handle.progress
        return tree_rows(tracker.tree()) if tracker is not None else []

    def _changed(self, change: ProgressChange) -> None:
        kind = "done" if change.kind == "position" and change.step is DONE else change.kind
        event: dict[str, object] = {"kind": kind, "step": change.step.label}
        if change.error is not None:
            event["error"] = f"{type(change.error).__name__}: {change.error}"
        self._emit(event)

    def _done(self, future: Future[Any]) -> None:
        self._emit({"kind": "result", **outcome_of(future)}, last=True)

    def _emit(self, event: dict[str, object], *, last: bool = False) -> None:
        with self._lock:
            if self._finished:
                return
            self._seq += 1
            document = {"v": VERSION, "flow_id": self.flow_id, "seq": self._seq, **event}
            document["tree"] = self._tree()
            try:
                data = codec.encode(document)
            except Exception:  # a feed must never fail the flow that reports to it
                log.exception("progress event of flow %s not published", self.flow_id)
                return
            self._publish(self.subject, data)
            if last:
                self._finished = True
        if last:
            if self._unsubscribe is not None:
                self._unsubscribe()
            self._ended(self)


class FlowFeeds:
    """The feeds of the flows being tracked, one per flow."""

    def __init__(self, node: str, publish: Publish) -> None:
        self._node = node
        self._publish = publish
        self._feeds: dict[str, FlowFeed] = {}
        # Reentrant: a feed of a flow that is done already ends (and is forgotten) as it is made.
        self._lock = threading.RLock()

    def track(self, handle: FlowHandle[Any]) -> dict[str, object]:
        """Start (or join) the flow's feed; returns its snapshot."""
        with self._lock:
            feed = self._feeds.get(handle.flow_id)
            if feed is None:
                feed = FlowFeed(self._node, handle, self._publish, self._forget)
                if not handle.done:
                    self._feeds[handle.flow_id] = feed
        return feed.snapshot()

    def _forget(self, feed: FlowFeed) -> None:
        with self._lock:
            if self._feeds.get(feed.flow_id) is feed:
                del self._feeds[feed.flow_id]

    def close(self) -> None:
        with self._lock:
            feeds, self._feeds = list(self._feeds.values()), {}
        for feed in feeds:
            feed.close()

    def __len__(self) -> int:
        return len(self._feeds)


class FlowListWatch:
    """Publishes the changes to the node's flow list while it is watched (on the event loop).

    Args:
        subject: where the changes go (``parley.feed.<node>.flows``).
        rows: reads the current list (runs off the loop), as rows keyed by flow id.
        publish: sends a document (from the loop).
    """

    def __init__(
        self,
        subject: str,
        rows: Callable[[], Awaitable[Mapping[str, dict[str, object]]]],
        publish: Publish,
    ) -> None:
        self.subject = subject
        self._rows = rows
        self._publish = publish
        self._seq = 0
        self._baseline: dict[str, dict[str, object]] = {}
        self._until = 0.0
        self._lock: asyncio.Lock | None = None
        self._task: asyncio.Task[None] | None = None

    async def watch(self) -> tuple[int, list[dict[str, object]]]:
        """Renew the lease; returns the current list and the number of the last change sent."""
        self._until = time.monotonic() + WATCH_LEASE
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            await self._look()
            seq, rows = self._seq, list(self._baseline.values())
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._poll())
        return seq, rows

    async def _poll(self) -> None:
        assert self._lock is not None
        while time.monotonic() < self._until:
            await asyncio.sleep(WATCH_EVERY)
            try:
                async with self._lock:
                    await self._look()
            except Exception:
                log.exception("watching the flow list failed")

    async def _look(self) -> None:
        current = dict(await self._rows())
        changed = [row for key, row in current.items() if self._baseline.get(key) != row]
        removed = sorted(set(self._baseline) - set(current))
        self._baseline = current
        if not changed and not removed:
            return
        self._seq += 1
        document = {"v": VERSION, "seq": self._seq, "changed": changed, "removed": removed}
        self._publish(self.subject, codec.encode(document))

    def stop(self) -> None:
        self._until = 0.0
        if self._task is not None:
            self._task.cancel()

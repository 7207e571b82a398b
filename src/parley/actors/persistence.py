"""The Persistence actor: the node's only SQLite writer, committing in groups.

Flows ask it to commit a checkpoint (the store operations of one transition) with :class:`Commit`.
When it wakes it takes *every* commit queued in its inbox and applies them in one transaction —
group commit: one fsync for all of them, each batch inside its own savepoint so one bad batch fails
alone. Then it calls each batch's ``done`` callback (from its own thread; callers hop back to their
thread themselves). The callbacks run only after the transaction committed.

It also applies the schema and the apps' migrations when it starts, before anything else uses the
database.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from parley.actors.base import Actor
from parley.protocol.records import StoreOp
from parley.store import SqliteStore

log = logging.getLogger("parley.persistence")

Done = Callable[[BaseException | None], None]


@dataclass(frozen=True, slots=True)
class Commit:
    """Commit ``ops`` atomically, then call ``done(None)`` — or ``done(error)`` if it failed."""

    ops: tuple[StoreOp, ...]
    done: Done


@dataclass(frozen=True, slots=True)
class AppMigrations:
    """An app's own tables: SQL scripts applied once, in order."""

    app: str
    scripts: tuple[str, ...]


@dataclass(slots=True)
class CommitStats:
    """What group commit achieved (for benchmarks and operators)."""

    transactions: int = 0
    batches: int = 0
    largest_group: int = 0
    seconds: float = 0.0


class Persistence(Actor):
    """Owns the writer connection; see the module docstring."""

    def __init__(
        self,
        path: Path,
        *,
        synchronous: str = "FULL",
        busy_timeout: float = 5.0,
        migrations: Sequence[AppMigrations] = (),
        max_group: int = 1000,
    ) -> None:
        super().__init__()
        self.path = path
        self.synchronous = synchronous
        self.busy_timeout = busy_timeout
        self.migrations = tuple(migrations)
        self.max_group = max_group
        self.stats = CommitStats()
        self._store: SqliteStore | None = None
        #: Why the database could not be opened or migrated (then nothing is written).
        self._start_error: Exception | None = None

    def on_start(self) -> None:
        try:
            store = SqliteStore(
                self.path, synchronous=self.synchronous, busy_timeout=self.busy_timeout
            )
        except Exception as exc:
            self._start_error = exc
            return
        try:
            for migration in self.migrations:
                applied = store.apply_app_migrations(migration.app, migration.scripts)
                if applied:
                    log.info("applied %d migration(s) of app %s", applied, migration.app)
        except Exception as exc:
            store.close()
            self._start_error = exc
            return
        self._store = store

    def on_stop(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    def on_failure(self, *args: object) -> None:
        self.on_stop()

    def on_receive(self, message: Any) -> Any:
        if self._start_error is not None:
            # The database could not be opened or migrated: every request gets that error (the
            # node's start asks for stats first, and so reports the real cause).
            if isinstance(message, Commit):
                message.done(self._start_error)
                return None
            raise self._start_error
        if isinstance(message, Commit):
            self._commit_group(message)
            return None
        if message == "stats":
            return CommitStats(**{f: getattr(self.stats, f) for f in CommitStats.__slots__})
        log.warning("Persistence ignored %r", message)
        return None

    def _commit_group(self, first: Commit) -> None:
        group = [first]
        deferred: list[Any] = []
        inbox = self.actor_inbox
        while len(group) < self.max_group and not inbox.empty():
            envelope: Any = inbox.get()
            message = getattr(envelope, "message", None)
            if isinstance(message, Commit) and getattr(envelope, "reply_to", None) is None:
                group.append(message)
            else:
                deferred.append(envelope)  # stop requests, asks: handled after this group
        for envelope in deferred:
            inbox.put(envelope)
        store = self._store
        assert store is not None
        started = time.perf_counter()
        try:
            results = store.commit_group([c.ops for c in group])
        except Exception as exc:  # the group could not even start: every batch failed
            log.exception("group commit of %d batches failed", len(group))
            results = [exc] * len(group)
        self.stats.transactions += 1
        self.stats.batches += len(group)
        self.stats.largest_group = max(self.stats.largest_group, len(group))
        self.stats.seconds += time.perf_counter() - started
        for commit, error in zip(group, results, strict=True):
            try:
                commit.done(error)
            except Exception:
                log.exception("commit callback failed")


__all__ = ["AppMigrations", "Commit", "CommitStats", "Persistence"]

"""The one module of Parley that imports :mod:`sqlite3`: opening connections, reading errors.

:func:`connect` opens a connection and sets every pragma Parley relies on, each with the reason
for it; :func:`classify_sqlite_error` tells the flow hospital which failed writes are worth a
retry; :func:`split_script` splits migration scripts into statements. The rest of
:mod:`parley.store` uses SQLite through these names and the exception aliases below.
"""

from __future__ import annotations

import errno
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Literal, TypeAlias

Connection: TypeAlias = sqlite3.Connection
#: Any error SQLite raises.
SqliteError = sqlite3.Error
#: SQLite refused an operation (locked, read-only, disk full, ...).
OperationalError = sqlite3.OperationalError
#: Primary result code of an attempt to write through a read-only connection.
SQLITE_READONLY = sqlite3.SQLITE_READONLY

#: Primary result codes meaning "another connection holds the lock": SQLITE_BUSY, SQLITE_LOCKED.
_LOCKED_CODES = frozenset({5, 6})
_LOCKED_MESSAGES = ("database is locked", "database table is locked", "database is busy")


def classify_sqlite_error(
    exc: BaseException,
) -> Literal["locked", "constraint", "storage"] | None:
    """Classify a failed write for the flow hospital.

    Returns ``"locked"`` if a "database is locked/busy" error appears anywhere in the exception's
    ``__cause__``/``__context__`` chain (another connection held the write lock: retrying later
    may succeed), ``"constraint"`` for an :class:`sqlite3.IntegrityError` there (the data broke a
    constraint: retrying the same write will fail again), ``"storage"`` for "database or disk is
    full" and disk I/O errors (nothing works until an operator frees space or fixes the disk),
    and ``None`` otherwise.
    """
    stack: list[BaseException] = [exc]
    seen: set[int] = set()
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, sqlite3.IntegrityError):
            return "constraint"
        if isinstance(current, sqlite3.OperationalError) and _is_locked(current):
            return "locked"
        if isinstance(current, sqlite3.OperationalError | sqlite3.DatabaseError | OSError) and (
            _is_storage(current)
        ):
            return "storage"
        stack.extend(e for e in (current.__context__, current.__cause__) if e is not None)
    return None


#: SQLite's primary result codes for a full disk or database and for I/O errors.
_STORAGE_CODES = frozenset({13, 10})  # SQLITE_FULL, SQLITE_IOERR
_STORAGE_MESSAGES = ("database or disk is full", "disk i/o error")
#: errno values of a full or failing disk.
_STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EIO, errno.EDQUOT})


def _is_storage(exc: BaseException) -> bool:
    if isinstance(exc, OSError):
        return exc.errno in _STORAGE_ERRNOS
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int) and code & 0xFF in _STORAGE_CODES:
        return True
    message = str(exc).lower()
    return any(m in message for m in _STORAGE_MESSAGES)


def _is_locked(exc: sqlite3.OperationalError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int) and code & 0xFF in _LOCKED_CODES:
        return True
    message = str(exc).lower()
    return any(m in message for m in _LOCKED_MESSAGES)


def connect(path: str, *, synchronous: str, busy_timeout: float, readonly: bool) -> Connection:
    """Open the connection and set every pragma Parley relies on (the only place that does)."""
    memory = path == ":memory:"
    if readonly:
        if memory:
            raise ValueError("an in-memory database cannot be opened read-only")
        target, uri = Path(path).resolve().as_uri() + "?mode=ro", True
    else:
        target, uri = path, False
    # isolation_level=None: the store writes BEGIN/COMMIT itself (sqlite3's implicit transactions
    # are DEFERRED and fall into the busy-snapshot trap). check_same_thread: one owner thread.
    conn = sqlite3.connect(
        target, uri=uri, timeout=busy_timeout, isolation_level=None, check_same_thread=True
    )
    try:
        # How long to wait for another connection's lock before "database is locked".
        conn.execute(f"PRAGMA busy_timeout = {round(busy_timeout * 1000)}")
        # Headers and journals reference their start row; SQLite checks foreign keys only when
        # asked, per connection.
        conn.execute("PRAGMA foreign_keys = ON")
        # Scratch space for sorts and temporary indexes stays in RAM, never in temp files.
        conn.execute("PRAGMA temp_store = MEMORY")
        # Triggers and views cannot call functions with side effects (defence in depth: apps
        # create tables through migrations).
        conn.execute("PRAGMA trusted_schema = OFF")
        if readonly:
            # Belt and braces on top of mode=ro: the connection refuses every write.
            conn.execute("PRAGMA query_only = ON")
            return conn
        if not memory:
            # WAL: a commit appends to the log (one fsync), and readers (CLI, queries on other
            # connections) neither block the writer nor wait for it. Persistent: the file stays
            # in WAL mode. An in-memory database has no WAL.
            conn.execute("PRAGMA journal_mode = WAL")
            # Truncate the WAL back to 64 MiB after a checkpoint so a burst does not keep disk.
            conn.execute("PRAGMA journal_size_limit = 67108864")
        # FULL: fsync the WAL at every commit, so a committed checkpoint survives power loss
        # (the default; messages are acked only after it). NORMAL: survives a process crash but
        # the last commits may roll back on an OS crash. OFF: tests and benchmarks only.
        conn.execute(f"PRAGMA synchronous = {synchronous}")
    except BaseException:
        conn.close()
        raise
    return conn


def copy_database(source: str | Path, target: str | Path) -> None:
    """Copy a database, consistently even while a node writes it, into one self-contained file.

    Uses SQLite's online backup, so the copy is a snapshot of committed data; the copy is put in
    rollback-journal mode so that it is one file, with no WAL beside it.
    """
    src = sqlite3.connect(f"{Path(source).resolve().as_uri()}?mode=ro", uri=True)
    try:
        dst = sqlite3.connect(target)
        try:
            src.backup(dst)
            dst.execute("PRAGMA journal_mode = DELETE")
        finally:
            dst.close()
    finally:
        src.close()


def split_script(script: str) -> Iterator[str]:
    """Split an SQL script into statements (``;`` inside strings, comments and triggers kept)."""
    start = 0
    for i, char in enumerate(script):
        if char == ";" and sqlite3.complete_statement(script[start : i + 1]):
            statement = script[start : i + 1].strip()
            if statement != ";":
                yield statement
            start = i + 1
    if script[start:].strip():
        yield script[start:]


__all__ = [
    "SQLITE_READONLY",
    "Connection",
    "OperationalError",
    "SqliteError",
    "classify_sqlite_error",
    "connect",
    "copy_database",
    "split_script",
]

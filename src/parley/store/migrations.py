"""Schema migrations: Parley's own (``PRAGMA user_version``) and each app's (``app_migrations``).

A migration is an SQL script, already split into statements by the caller. Each migration runs in
its own ``BEGIN IMMEDIATE`` transaction and re-checks, once it holds the write lock, that no other
process applied it meanwhile, so two nodes opening the same fresh file cannot apply one twice.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import suppress

from parley.store import schema
from parley.store.connection import Connection
from parley.store.ops import first_keyword
from parley.store.schema import SchemaVersionError

#: Statements a migration must not contain: they would end the migration's transaction.
TRANSACTION_KEYWORDS = frozenset(
    {"BEGIN", "COMMIT", "END", "ROLLBACK", "SAVEPOINT", "RELEASE", "VACUUM", "ATTACH", "DETACH"}
)

Script = Sequence[str]


def migrate(conn: Connection, scripts: Sequence[Script], *, readonly: bool) -> int:
    """Bring the core schema up to date; return how many migrations were applied.

    Raises:
        SchemaVersionError: The file is newer than ``scripts`` (or, read-only, older).
    """
    _check_scripts(scripts)
    version = _user_version(conn)
    if version > len(scripts):
        raise SchemaVersionError(
            f"the database schema is version {version} but this Parley knows only"
            f" {len(scripts)} migrations: the file was written by a newer Parley"
        )
    if readonly:
        if version < len(scripts):
            raise SchemaVersionError(
                f"the database schema is version {version}, not {len(scripts)}: open it"
                " read-write once (start the node) to migrate it"
            )
        return 0
    applied = 0
    for number, statements in enumerate(scripts, start=1):
        if number <= version:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            if _user_version(conn) < number:
                for statement in statements:
                    conn.execute(statement)
                # user_version lives in the file header and changes with the transaction.
                conn.execute(f"PRAGMA user_version = {number}")
                applied += 1
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise
    return applied


def apply_app(conn: Connection, app: str, scripts: Sequence[Script]) -> int:
    """Apply the app's scripts not yet recorded in ``app_migrations``; return how many ran."""
    _check_scripts(scripts)
    done = {idx for (idx,) in conn.execute(schema.SELECT_APPLIED_APP_MIGRATIONS, (app,))}
    applied = 0
    for idx, statements in enumerate(scripts):
        if idx in done:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Another process may have applied it between the read above and the write lock.
            rows = conn.execute(schema.SELECT_APPLIED_APP_MIGRATIONS, (app,))
            ran = idx not in {i for (i,) in rows}
            if ran:
                for statement in statements:
                    conn.execute(statement)
                conn.execute(schema.INSERT_APP_MIGRATION, (app, idx, time.time()))
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise
        applied += ran
    return applied


def _check_scripts(scripts: Sequence[Script]) -> None:
    for number, statements in enumerate(scripts):
        for statement in statements:
            if first_keyword(statement) in TRANSACTION_KEYWORDS:
                raise ValueError(
                    f"migration {number} must not control transactions: {statement[:80]!r}"
                )


def _user_version(conn: Connection) -> int:
    version: int = conn.execute("PRAGMA user_version").fetchone()[0]
    return version


def _rollback(conn: Connection) -> None:
    # Never hide the error that made us roll back (SQLite may already have rolled back).
    if conn.in_transaction:
        with suppress(Exception):
            conn.execute("ROLLBACK")

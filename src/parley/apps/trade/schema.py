"""The vault's tables, defined and migrated with sqlite-utils, applied by the node as SQL.

Rules:

* The tables are declared as sqlite-utils migrations (:data:`SCHEMA`, a
  ``sqlite_utils.migrations.Migrations`` set): ``create``, ``create_index``, ``add_column``, ...
  To add a change, append a migration; never edit one that nodes may have applied.
* A Parley node applies an app's ``MIGRATIONS`` (SQL scripts, once each, in order, recorded in
  ``app_migrations``). :func:`migration_scripts` turns the sqlite-utils migrations into those
  scripts: it runs each one against a scratch in-memory database and keeps the statements that
  sqlite-utils executed (its tracer hook) that change the schema. So the node, not sqlite-utils,
  applies them, inside its own migration transactions, and sqlite-utils never touches the node's
  database or its connection.
* Tables are ``STRICT``: a value of the wrong type is refused when a row is built (see
  :mod:`parley.apps.trade.vault`), not stored.
* :func:`shadow` is a per-thread, schema-only in-memory copy of these tables, built from the same
  scripts: the vault layer runs sqlite-utils against it to build and check statements.
"""

from __future__ import annotations

import sqlite3
import threading

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

SCHEMA = Migrations("parley.apps.trade")


@SCHEMA(name="vault")
def _vault(db: Database) -> None:
    db.table("vault_transactions").create(
        {"id": str, "body": bytes, "signatures": str, "recorded_at": str},
        pk="id",
        not_null={"body", "signatures", "recorded_at"},
        strict=True,
    )
    db.table("vault_states").create(
        {
            "ref": str,
            "tx_id": str,
            "idx": int,
            "kind": str,
            "owner": str,
            "issuer": str,
            "currency": str,
            "amount": str,
            "maturity": str,
            "recorded_at": str,
        },
        pk="ref",
        not_null={"tx_id", "idx", "kind", "owner", "issuer", "currency", "amount", "recorded_at"},
        strict=True,
    )
    db.table("vault_consumed").create(
        {"ref": str, "consumed_by": str, "consumed_at": str},
        pk="ref",
        not_null={"consumed_by", "consumed_at"},
        strict=True,
    )
    db.table("notary_commits").create(
        {"ref": str, "tx_id": str, "requested_by": str, "committed_at": str},
        pk="ref",
        not_null={"tx_id", "requested_by", "committed_at"},
        strict=True,
    )


@SCHEMA(name="bids")
def _bids(db: Database) -> None:
    db.table("trade_bids").create(
        {"seller": str, "asset": str, "currency": str, "max_price": str, "placed_at": str},
        pk=("seller", "asset"),
        not_null={"currency", "max_price", "placed_at"},
        strict=True,
    )
    db.table("vault_states").create_index(["kind", "currency"])


#: Statements a migration may hand to the node: the ones that change the schema.
_SCHEMA_KEYWORDS = ("CREATE", "ALTER", "DROP")


def migration_scripts(migrations: Migrations) -> list[str]:
    """One SQL script per migration of ``migrations``, in order, as sqlite-utils writes them.

    Raises:
        ValueError: a migration executed a schema statement with parameters (a script can't
            carry them).
    """
    scratch = Database(sqlite3.connect(":memory:"), execute_plugins=False)
    scripts = []
    for migration in migrations.pending(scratch):
        statements: list[str] = []

        def keep(sql: str, params: object, into: list[str] = statements) -> None:
            if sql.lstrip().upper().startswith(_SCHEMA_KEYWORDS):
                if params:
                    raise ValueError(f"a schema statement with parameters: {sql}")
                into.append(sql.strip().rstrip(";") + ";")

        with scratch.tracer(keep):
            migration.fn(scratch)
        scripts.append("\n".join(statements))
    scratch.close()
    return scripts


#: The app's migrations, as the node applies them.
MIGRATIONS = migration_scripts(SCHEMA)

_local = threading.local()


def shadow() -> Database:
    """This thread's schema-only in-memory copy of the tables (flows run on worker threads)."""
    db: Database | None = getattr(_local, "db", None)
    if db is None:
        db = Database(sqlite3.connect(":memory:"), execute_plugins=False)
        for script in MIGRATIONS:
            db.conn.executescript(script)
        _local.db = db
    return db


__all__ = ["MIGRATIONS", "SCHEMA", "migration_scripts", "shadow"]

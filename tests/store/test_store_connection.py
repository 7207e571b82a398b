"""Opening the store: pragmas, read-only and in-memory stores, migrations, error classification."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from parley.protocol.records import FlowWrite, PutProcessedInit
from parley.store import SchemaVersionError, SqliteStore, classify_sqlite_error
from parley.store.schema import MIGRATIONS

from .helpers import checkpoint, start


def pragma(store: SqliteStore, name: str) -> object:
    return store.query(f"SELECT * FROM pragma_{name}")[0][0]


# --- pragmas --------------------------------------------------------------------------------------


def test_a_file_store_uses_wal_with_full_synchronous_by_default(store: SqliteStore) -> None:
    assert pragma(store, "journal_mode") == "wal"
    assert pragma(store, "synchronous") == 2  # FULL
    assert pragma(store, "foreign_keys") == 1
    assert pragma(store, "busy_timeout") == 5000
    assert pragma(store, "temp_store") == 2  # MEMORY


@pytest.mark.parametrize(("level", "value"), [("NORMAL", 1), ("OFF", 0), ("full", 2)])
def test_the_synchronous_level_can_be_chosen(db_path: Path, level: str, value: int) -> None:
    with SqliteStore(db_path, synchronous=level, busy_timeout=0.25) as store:
        assert pragma(store, "synchronous") == value
        assert pragma(store, "busy_timeout") == 250


@pytest.mark.parametrize("level", ["EXTRA", "0", "FULL; DROP TABLE x", ""])
def test_an_unknown_synchronous_level_is_a_value_error(db_path: Path, level: str) -> None:
    with pytest.raises(ValueError, match="synchronous"):
        SqliteStore(db_path, synchronous=level)
    assert not db_path.exists()


def test_a_negative_busy_timeout_is_a_value_error(db_path: Path) -> None:
    with pytest.raises(ValueError, match="busy_timeout"):
        SqliteStore(db_path, busy_timeout=-1)


# --- in-memory and read-only stores ---------------------------------------------------------------


def test_an_in_memory_store_works_without_wal() -> None:
    with SqliteStore(":memory:") as store:
        store.commit([start("f1"), checkpoint("f1", journal=(b"a",))])
        store.commit_group([[checkpoint("f1", journal_start=1, journal=(b"b",))]])

        flow = store.load_flow("f1")
        assert flow is not None
        assert flow.journal == [b"a", b"b"]
        assert pragma(store, "journal_mode") == "memory"


def test_an_in_memory_store_cannot_be_read_only() -> None:
    with pytest.raises(ValueError, match="read-only"):
        SqliteStore(":memory:", readonly=True)


def test_a_read_only_store_reads_but_cannot_write(db_path: Path) -> None:
    with SqliteStore(db_path) as writer:
        writer.commit([start("f1"), checkpoint("f1")])

    with SqliteStore(db_path, readonly=True) as reader:
        assert reader.runnable_flow_ids() == ["f1"]
        assert reader.query("SELECT count(*) FROM journal") == [(1,)]
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            reader.commit([PutProcessedInit("bob", "s1", "f1")])
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            reader.apply_app_migrations("app", ["CREATE TABLE t (x INTEGER);"])
        assert reader.processed_init("bob", "s1") is None


def test_a_read_only_store_refuses_a_file_that_was_never_migrated(db_path: Path) -> None:
    sqlite3.connect(db_path).close()

    with pytest.raises(SchemaVersionError, match="read-write once"):
        SqliteStore(db_path, readonly=True)


def test_a_file_from_a_newer_parley_is_refused(db_path: Path) -> None:
    conn = sqlite3.connect(db_path)
    conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    conn.close()

    with pytest.raises(SchemaVersionError, match="newer"):
        SqliteStore(db_path)


def test_the_store_belongs_to_the_thread_that_opened_it(store: SqliteStore) -> None:
    errors: list[BaseException] = []

    def use() -> None:
        try:
            store.runnable_flow_ids()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=use)
    thread.start()
    thread.join(timeout=10)

    assert len(errors) == 1
    assert isinstance(errors[0], sqlite3.ProgrammingError)


def test_closing_twice_is_harmless(db_path: Path) -> None:
    store = SqliteStore(db_path)
    store.close()
    store.close()

    with pytest.raises(sqlite3.ProgrammingError):
        store.runnable_flow_ids()


# --- migrations -----------------------------------------------------------------------------------


def test_core_migrations_are_applied_once_and_tracked_in_user_version(db_path: Path) -> None:
    with SqliteStore(db_path) as store:
        store.commit([start("f1")])
    with SqliteStore(db_path) as store:
        assert pragma(store, "user_version") == len(MIGRATIONS)
        assert store.runnable_flow_ids() == ["f1"]


APP_V1 = [
    "CREATE TABLE iou (id TEXT PRIMARY KEY, amount INTEGER) STRICT;",
    """
    -- a trigger keeps its inner semicolons
    CREATE TABLE audit (id TEXT);
    CREATE TRIGGER iou_audit AFTER INSERT ON iou BEGIN INSERT INTO audit VALUES (NEW.id); END;
    """,
]


def test_app_migrations_are_applied_once_and_tracked_per_app(db_path: Path) -> None:
    with SqliteStore(db_path) as store:
        assert store.apply_app_migrations("iou", APP_V1) == 2
        assert store.apply_app_migrations("iou", APP_V1) == 0
        assert store.apply_app_migrations("other", ["CREATE TABLE o (x);"]) == 1

    with SqliteStore(db_path) as store:
        assert store.apply_app_migrations("iou", [*APP_V1, "ALTER TABLE iou ADD note TEXT;"]) == 1
        assert store.query("SELECT app, idx FROM app_migrations ORDER BY app, idx") == [
            ("iou", 0),
            ("iou", 1),
            ("iou", 2),
            ("other", 0),
        ]
        store.query("SELECT note FROM iou")  # the column exists
        store.commit(
            [start("f1"), FlowWrite("INSERT INTO iou (id, amount) VALUES (?, ?)", ("i1", 5))]
        )
        assert store.query("SELECT id FROM audit") == [("i1",)]


def test_a_failing_app_migration_is_rolled_back_and_not_recorded(store: SqliteStore) -> None:
    scripts = ["CREATE TABLE a (x);", "CREATE TABLE b (x); CREATE TABLE a (y);"]

    with pytest.raises(sqlite3.OperationalError, match="already exists"):
        store.apply_app_migrations("app", scripts)

    assert store.query("SELECT idx FROM app_migrations WHERE app = 'app'") == [(0,)]
    assert store.query("SELECT name FROM sqlite_master WHERE name = 'b'") == []


@pytest.mark.parametrize("statement", ["COMMIT;", "BEGIN;", "ROLLBACK;", "SAVEPOINT s;"])
def test_an_app_migration_must_not_control_transactions(store: SqliteStore, statement: str) -> None:
    with pytest.raises(ValueError, match="transactions"):
        store.apply_app_migrations("app", [f"CREATE TABLE a (x); {statement}"])

    assert store.query("SELECT count(*) FROM app_migrations") == [(0,)]


def test_an_app_needs_a_name(store: SqliteStore) -> None:
    with pytest.raises(ValueError, match="name"):
        store.apply_app_migrations("", ["CREATE TABLE a (x);"])


# --- classify_sqlite_error ------------------------------------------------------------------------


def test_a_held_write_lock_is_classified_as_locked(db_path: Path) -> None:
    with SqliteStore(db_path, busy_timeout=0.0) as store:
        other = sqlite3.connect(db_path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(sqlite3.OperationalError) as caught:
                store.commit([start("f1")])
        finally:
            other.execute("ROLLBACK")
            other.close()
        store.commit([start("f1")])  # the store recovers once the lock is released

    assert classify_sqlite_error(caught.value) == "locked"
    wrapped = RuntimeError("commit failed")
    wrapped.__cause__ = caught.value
    assert classify_sqlite_error(wrapped) == "locked"


def test_a_broken_constraint_is_classified_as_constraint(store: SqliteStore) -> None:
    store.commit([start("f1")])
    with pytest.raises(sqlite3.IntegrityError) as caught:
        store.commit([start("f1")])
    outer = KeyError("f1")
    outer.__context__ = caught.value  # as when raised inside the except block

    assert classify_sqlite_error(caught.value) == "constraint"
    assert classify_sqlite_error(outer) == "constraint"


def test_other_errors_are_not_classified() -> None:
    assert classify_sqlite_error(ValueError("x")) is None
    assert classify_sqlite_error(sqlite3.OperationalError("no such table: t")) is None
    assert classify_sqlite_error(sqlite3.OperationalError("database is locked")) == "locked"

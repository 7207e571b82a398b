"""Checking a node's database and backing it up online (``parley.store.maintenance``), and the
refusal of a database written by a newer Parley, on real SQLite files."""

from __future__ import annotations

import shutil
import sqlite3
import threading
from contextlib import closing
from pathlib import Path

import pytest

from parley.node import Node, NodeConfig
from parley.protocol.records import (
    FlowStatus,
    PutAdmission,
    PutHeldInit,
    PutProcessedInit,
    PutSignal,
)
from parley.store import (
    BackupError,
    SchemaVersionError,
    SqliteStore,
    backup_database,
    check_database,
    require_known_schema,
)
from parley.store.maintenance import KNOWN_VERSION, schema_version
from tests.store.helpers import checkpoint, start

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "data" / "db"


def raw(path: Path, *statements: str) -> None:
    """Write behind the store's back (foreign keys off, as a buggy or foreign writer would)."""
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA foreign_keys = OFF")
        for statement in statements:
            conn.execute(statement)
        conn.commit()


def flows(store: SqliteStore, count: int, first: int = 0) -> None:
    for n in range(first, first + count):
        store.commit([start(f"f{n}"), checkpoint(f"f{n}", journal=(b"e0", b"e1"))])


@pytest.fixture
def node_db(tmp_path: Path) -> Path:
    """A database with three flows, one of them waiting for a signal, and a processed init."""
    path = tmp_path / "parley.sqlite"
    with SqliteStore(path) as store:
        flows(store, 3)
        store.commit([PutSignal("f1", "approve", b"yes")])
        store.commit([PutProcessedInit("bob", "s1", "f2")])
    return path


# ---- check ----------------------------------------------------------------------------------


def test_a_sound_database_checks_healthy_with_its_counts(node_db: Path) -> None:
    report = check_database(node_db)

    assert report.healthy, report.problems
    assert report.integrity == ["ok"]
    assert report.schema_version == KNOWN_VERSION
    assert report.counts["flows"] == 3
    assert report.counts["journal_entries"] == 6
    assert report.counts["runnable"] == 3
    assert report.to_json()["healthy"] is True


@pytest.mark.parametrize("name", ["alice.sqlite", "bob.sqlite"])
def test_the_golden_node_databases_check_healthy(tmp_path: Path, name: str) -> None:
    copy = tmp_path / name
    shutil.copy(GOLDEN / name, copy)  # the check never writes, but SQLite may add a -shm file

    report = check_database(copy)

    assert report.healthy, report.problems
    assert report.counts["flows"] > 0


def test_rows_of_flows_that_are_not_there_are_each_reported(node_db: Path) -> None:
    with SqliteStore(node_db) as store:
        store.commit(
            [
                PutAdmission(
                    "f0", 1.0, "app:Pay", 1, "ValueError", "no", "tb", (), "general", "x", 0, 0.0
                ),
                PutHeldInit("f2", "bob", b"envelope"),  # f2 exists: the init was admitted
            ]
        )
    raw(
        node_db,
        "INSERT INTO flow_header VALUES ('ghost', 'RUNNABLE', x'00', 1, NULL, NULL, 1, 0.0)",
        "INSERT INTO journal VALUES ('ghost', 0, x'00')",
        "INSERT INTO journal VALUES ('phantom', 0, x'00')",
        "UPDATE flow_header SET journal_len = 5 WHERE flow_id = 'f0'",
        "DELETE FROM journal WHERE flow_id = 'f1' AND idx = 1",
        "DELETE FROM flow_header WHERE flow_id = 'f0'",
        "DELETE FROM journal WHERE flow_id = 'f0'",
        "DELETE FROM flow_start WHERE flow_id = 'f0'",  # its admission stays behind
        "INSERT INTO flow_signal (flow_id, name, payload, created_at) VALUES ('gone', 'a', x'', 0)",
    )

    report = check_database(node_db)

    assert not report.healthy
    assert report.integrity == ["ok"]  # SQLite's own structure is sound: these are ours
    assert report.orphans == {
        "flow_header rows without a flow_start row": 1,
        "journal rows without a flow_start row": 2,
        "flows whose journal does not have the length their header says": 1,
        "flow_signal rows of flows that no longer exist": 1,
        "hospital_admission rows of flows that no longer exist": 1,
        "held_init rows of flows that were started after all": 1,
    }
    assert "2 journal rows without a flow_start row" in report.problems


def test_a_broken_index_fails_the_integrity_check(node_db: Path) -> None:
    raw(
        node_db,
        "CREATE TABLE vault (a INTEGER, b INTEGER)",
        "CREATE INDEX vault_a ON vault (a)",
        "INSERT INTO vault VALUES (1, 2), (3, 4)",
    )
    # The index's definition now names the other column: its entries no longer match the rows.
    raw(
        node_db,
        "PRAGMA writable_schema = ON",
        "UPDATE sqlite_schema SET sql = 'CREATE INDEX vault_a ON vault (b)' WHERE name = 'vault_a'",
    )

    report = check_database(node_db)

    assert not report.healthy
    assert report.integrity != ["ok"]
    assert any("vault_a" in line for line in report.integrity)
    assert report.problems[0].startswith("integrity_check found")


def test_a_file_that_is_not_a_database_is_unhealthy_and_a_missing_one_is_an_error(
    tmp_path: Path,
) -> None:
    junk = tmp_path / "parley.sqlite"
    junk.write_bytes(b"this is not an SQLite database, not even its header" * 100)

    report = check_database(junk)

    assert not report.healthy
    assert "not a database" in report.problems[0]
    with pytest.raises(FileNotFoundError, match="no database at"):
        check_database(tmp_path / "missing.sqlite")


def test_a_newer_schema_is_a_problem_and_an_older_one_a_note(node_db: Path) -> None:
    raw(node_db, f"PRAGMA user_version = {KNOWN_VERSION + 1}")
    newer = check_database(node_db)
    raw(node_db, f"PRAGMA user_version = {KNOWN_VERSION - 1}")
    older = check_database(node_db)

    assert not newer.healthy
    assert "newer than this Parley's" in newer.problems[0]
    assert older.healthy
    assert "migrates it when it next starts" in older.notes[0]


# ---- a newer schema refused -------------------------------------------------------------------


def test_a_node_refuses_to_start_on_a_database_of_a_newer_parley_and_leaves_it_alone(
    tmp_path: Path, node_db: Path
) -> None:
    data_dir = node_db.parent
    raw(node_db, f"PRAGMA user_version = {KNOWN_VERSION + 1}")
    before = node_db.read_bytes()
    # No NATS server is needed: the node refuses before it connects.
    config = NodeConfig("alice", data_dir, nats_url="nats://127.0.0.1:9", rpc=False)

    with pytest.raises(SchemaVersionError, match="written by a newer Parley") as refused:
        Node(config).start()

    assert f"schema version {KNOWN_VERSION + 1}, newer than this Parley's" in str(refused.value)
    assert node_db.read_bytes() == before
    assert schema_version(node_db) == KNOWN_VERSION + 1
    require_known_schema(tmp_path / "new-node.sqlite")  # no file yet: a new node may start


# ---- backup -----------------------------------------------------------------------------------


def test_a_backup_taken_while_another_connection_commits_opens_and_checks_clean(
    tmp_path: Path, node_db: Path
) -> None:
    stop = threading.Event()
    committed = [3]
    errors: list[BaseException] = []

    def write() -> None:  # the node, committing flows all along
        try:
            with SqliteStore(node_db, synchronous="NORMAL") as store:
                while not stop.is_set():
                    flows(store, 5, committed[0])
                    committed[0] += 5
        except BaseException as exc:
            errors.append(exc)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        before = committed[0]
        report = backup_database(node_db, tmp_path / "copy.sqlite")
        during = committed[0]
    finally:
        stop.set()
        writer.join(30)
    assert errors == []

    copy = tmp_path / "copy.sqlite"
    assert report.healthy, report.problems
    assert report.path == str(copy)
    assert not (tmp_path / "copy.sqlite-wal").exists()  # one self-contained file
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".copy")) == []
    with SqliteStore(copy, readonly=True) as restored:
        stored = {s.flow_id for s in restored.list_flows(limit=100_000)}
        runnable = restored.list_flows(FlowStatus.RUNNABLE, limit=100_000)
    # A snapshot: whole flows (start, header, journal together), at least those committed before.
    assert before <= len(stored) <= during + 5
    assert stored == {f"f{n}" for n in range(len(stored))}
    assert len(runnable) == len(stored)
    assert check_database(copy).counts["journal_entries"] == 2 * len(stored)


def test_a_backup_refuses_to_overwrite_unless_asked_and_leaves_nothing_when_it_fails(
    tmp_path: Path, node_db: Path
) -> None:
    target = tmp_path / "backup.sqlite"
    target.write_text("an older backup")

    with pytest.raises(FileExistsError):
        backup_database(node_db, target)
    assert target.read_text() == "an older backup"
    with pytest.raises(BackupError, match="overwrite the database itself"):
        backup_database(node_db, node_db, overwrite=True)
    with pytest.raises(FileNotFoundError, match="no directory"):
        backup_database(node_db, tmp_path / "nowhere" / "b.sqlite")

    # A copy with our own problems is still a faithful copy: kept, with its report.
    raw(node_db, "DELETE FROM flow_start WHERE flow_id = 'f0'")
    kept = backup_database(node_db, target, overwrite=True)
    assert not kept.healthy
    assert kept.orphans == check_database(node_db).orphans != {}
    assert check_database(target).counts["flows"] == 2
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".backup")] == []


def test_a_database_sqlite_finds_damaged_is_not_backed_up(tmp_path: Path, node_db: Path) -> None:
    raw(node_db, "CREATE TABLE vault (a INTEGER, b INTEGER)", "CREATE INDEX vault_a ON vault (a)")
    raw(node_db, "INSERT INTO vault VALUES (1, 2)")
    raw(
        node_db,
        "PRAGMA writable_schema = ON",
        "UPDATE sqlite_schema SET sql = 'CREATE INDEX vault_a ON vault (b)' WHERE name = 'vault_a'",
    )
    target = tmp_path / "backup.sqlite"

    with pytest.raises(BackupError, match="is damaged"):
        backup_database(node_db, target)

    assert not target.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".backup")] == []

"""Operating a node's database: checking it, backing it up online, refusing a newer schema.

Rules:

* Nothing here writes the database it looks at: :func:`check_database` reads through a read-only
  connection (``mode=ro``, ``query_only``), :func:`backup_database` copies with SQLite's online
  backup, which reads one consistent snapshot of what was committed while the node goes on
  writing (WAL: the writer never waits for the copy).
* A backup is written beside its target under a temporary name, checked like any database, and
  only then renamed over the target: a target path never holds a half-written or damaged copy. A
  copy with our own problems (rows of flows that are gone, say) is kept, with its report: it is a
  faithful copy, and the moment something is wrong is when a backup matters most.
* :func:`check_database` reports, it does not raise, for whatever the file holds; it raises only
  when there is no file to look at.
* A database whose schema is newer than this code is refused (:func:`require_known_schema`), with
  what to do about it: the code can't know what the newer migrations mean.

What "healthy" means: ``PRAGMA integrity_check`` says ``ok``, the schema version is one this code
knows, and no row belongs to a flow that isn't there (a header or journal without its start row,
a journal shorter or longer than its header says, a signal or hospital admission of a flow that no
longer exists, a held session-init of a flow that was started after all).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from parley.store import schema
from parley.store.connection import Connection, SqliteError, connect, copy_database
from parley.store.schema import SchemaVersionError

__all__ = [
    "DATABASE_FILE",
    "BackupError",
    "StoreCheck",
    "backup_database",
    "check_database",
    "require_known_schema",
    "schema_version",
]

#: The database file in a node's data directory.
DATABASE_FILE = "parley.sqlite"
#: The schema version this code writes (the number of core migrations).
KNOWN_VERSION = len(schema.MIGRATIONS)

#: Rows that belong to no flow: (what, the query counting them, the version that added the table).
_ORPHANS: tuple[tuple[str, str, int], ...] = (
    (
        "flow_header rows without a flow_start row",
        "SELECT count(*) FROM flow_header h"
        " WHERE NOT EXISTS (SELECT 1 FROM flow_start s WHERE s.flow_id = h.flow_id)",
        1,
    ),
    (
        "journal rows without a flow_start row",
        "SELECT count(*) FROM journal j"
        " WHERE NOT EXISTS (SELECT 1 FROM flow_start s WHERE s.flow_id = j.flow_id)",
        1,
    ),
    (
        "flows whose journal does not have the length their header says",
        "SELECT count(*) FROM flow_header h"
        " WHERE h.journal_len <> (SELECT count(*) FROM journal j WHERE j.flow_id = h.flow_id)",
        1,
    ),
    (
        "flow_signal rows of flows that no longer exist",
        "SELECT count(*) FROM flow_signal g"
        " WHERE NOT EXISTS (SELECT 1 FROM flow_start s WHERE s.flow_id = g.flow_id)",
        3,
    ),
    (
        "hospital_admission rows of flows that no longer exist",
        "SELECT count(*) FROM hospital_admission a"
        " WHERE NOT EXISTS (SELECT 1 FROM flow_start s WHERE s.flow_id = a.flow_id)",
        3,
    ),
    (
        "held_init rows of flows that were started after all",
        "SELECT count(*) FROM held_init i"
        " WHERE EXISTS (SELECT 1 FROM flow_start s WHERE s.flow_id = i.flow_id)"
        " OR EXISTS (SELECT 1 FROM processed_init p WHERE p.flow_id = i.flow_id)",
        3,
    ),
)

#: What the report counts, for the operator's information.
_COUNTS: tuple[tuple[str, str, int], ...] = (
    ("flows", "SELECT count(*) FROM flow_start", 1),
    ("runnable", "SELECT count(*) FROM flow_header WHERE status = 'RUNNABLE'", 1),
    ("hospitalized", "SELECT count(*) FROM flow_header WHERE status = 'HOSPITALIZED'", 1),
    ("journal_entries", "SELECT count(*) FROM journal", 1),
    ("results", "SELECT count(*) FROM flow_result", 1),
    ("processed_inits", "SELECT count(*) FROM processed_init", 1),
    ("held_inits", "SELECT count(*) FROM held_init", 3),
    ("schedules", "SELECT count(*) FROM flow_schedule", 3),
)


class BackupError(Exception):
    """A backup could not be made, or the copy did not check clean (nothing is left behind)."""


@dataclass
class StoreCheck:
    """What :func:`check_database` found. ``healthy`` when ``problems`` is empty."""

    path: str
    #: ``PRAGMA integrity_check``'s lines: ``["ok"]`` for a sound file.
    integrity: list[str] = field(default_factory=list)
    #: The file's schema version (``PRAGMA user_version``), ``None`` if it could not be read.
    schema_version: int | None = None
    #: The version this Parley writes.
    known_version: int = KNOWN_VERSION
    #: Rows that belong to no flow, by kind (only kinds that have some).
    orphans: dict[str, int] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    #: Why the database is not healthy, one line each.
    problems: list[str] = field(default_factory=list)
    #: Facts that need no action (an older schema is migrated at the node's next start).
    notes: list[str] = field(default_factory=list)
    size_bytes: int = 0

    @property
    def healthy(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        """The report as JSON-ready data (``parley node check --json``)."""
        return {**asdict(self), "healthy": self.healthy}


def database_path(data_dir_or_file: str | os.PathLike[str]) -> Path:
    """The database of a node's data directory (or the file itself, if given a file)."""
    path = Path(data_dir_or_file)
    return path / DATABASE_FILE if path.is_dir() else path


def schema_version(path: str | os.PathLike[str]) -> int | None:
    """The schema version of the database at ``path`` (``None`` if there is no file yet).

    Raises:
        SqliteError: the file is not a database SQLite can read.
    """
    if not Path(path).exists():
        return None
    conn = connect(os.fspath(path), synchronous="FULL", busy_timeout=5.0, readonly=True)
    try:
        return _user_version(conn)
    finally:
        conn.close()


def require_known_schema(path: str | os.PathLike[str]) -> None:
    """Refuse a database written by a newer Parley, before anything opens it read-write.

    Raises:
        SchemaVersionError: its schema version is newer than this code's, saying what to do.
    """
    version = schema_version(path)
    if version is not None and version > KNOWN_VERSION:
        raise SchemaVersionError(
            f"{path} has schema version {version}, newer than this Parley's {KNOWN_VERSION}: "
            "it was written by a newer Parley, whose migrations this one does not know. Run the "
            "newer Parley on it (or restore a backup made before the upgrade); this one will "
            "neither start on it nor change it"
        )


def check_database(path: str | os.PathLike[str]) -> StoreCheck:
    """Check the database at ``path`` (read-only; the node may be running).

    Raises:
        FileNotFoundError: there is no file at ``path``.
    """
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"no database at {file}")
    report = StoreCheck(path=str(file), size_bytes=file.stat().st_size)
    try:
        conn = connect(str(file), synchronous="FULL", busy_timeout=10.0, readonly=True)
    except SqliteError as exc:
        report.problems.append(f"SQLite can't open it: {exc}")
        return report
    try:
        _check(conn, report)
    except SqliteError as exc:
        report.problems.append(f"SQLite can't read it: {exc}")
    finally:
        conn.close()
    return report


def _check(conn: Connection, report: StoreCheck) -> None:
    report.integrity = [str(row[0]) for row in conn.execute("PRAGMA integrity_check")]
    if report.integrity != ["ok"]:
        shown = "; ".join(report.integrity[:5])
        report.problems.append(f"integrity_check found {len(report.integrity)} problem(s): {shown}")
    version = report.schema_version = _user_version(conn)
    if version > KNOWN_VERSION:
        report.problems.append(
            f"schema version {version} is newer than this Parley's {KNOWN_VERSION}: it was "
            "written by a newer Parley (this one refuses to start on it)"
        )
    elif version < KNOWN_VERSION:
        report.notes.append(
            f"schema version {version} is older than this Parley's {KNOWN_VERSION}: the node "
            "migrates it when it next starts"
        )
    # One snapshot for all the queries below: the node may be writing meanwhile.
    conn.execute("BEGIN")
    try:
        for name, sql, since in _COUNTS:
            if version >= since:
                report.counts[name] = int(conn.execute(sql).fetchone()[0])
        for what, sql, since in _ORPHANS:
            found = int(conn.execute(sql).fetchone()[0]) if version >= since else 0
            if found:
                report.orphans[what] = found
                report.problems.append(f"{found} {what}")
    finally:
        conn.execute("COMMIT")


def backup_database(
    source: str | os.PathLike[str], target: str | os.PathLike[str], *, overwrite: bool = False
) -> StoreCheck:
    """Copy the database at ``source`` to ``target`` consistently, while a node may write it.

    The copy is one self-contained file (no WAL beside it), checked with :func:`check_database`
    before it is renamed into place.

    Args:
        source: the node's database.
        target: where the copy goes; its directory must exist.
        overwrite: replace an existing ``target``.

    Returns:
        The check of the copy (its ``path`` is ``target``): ``healthy``, or with the same
        problems as the database.

    Raises:
        FileNotFoundError: no database at ``source``, or no directory for ``target``.
        FileExistsError: ``target`` exists and ``overwrite`` is false.
        BackupError: the copy failed, or SQLite's integrity check of it did (nothing is left at
            ``target``).
    """
    source, target = Path(source), Path(target)
    if not source.is_file():
        raise FileNotFoundError(f"no database at {source}")
    if not target.parent.is_dir():
        raise FileNotFoundError(f"no directory {target.parent} for the backup")
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} exists already")
    if target.resolve() == source.resolve():
        raise BackupError(f"the backup {target} would overwrite the database itself")
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    try:
        copy_database(source, partial)
        _fsync(partial)
        report = check_database(partial)
        if report.integrity != ["ok"]:
            # A copy SQLite itself finds broken is no backup (the database is damaged: a copy
            # made earlier, or recovery with the sqlite3 shell's .recover, is what is left).
            raise BackupError(f"the copy of {source} is damaged: {'; '.join(report.problems)}")
        os.replace(partial, target)
        _fsync(target.parent)
    except SqliteError as exc:
        raise BackupError(f"copying {source} failed: {exc}") from exc
    finally:
        partial.unlink(missing_ok=True)
    report.path = str(target)
    return report


def _user_version(conn: Connection) -> int:
    version: int = conn.execute("PRAGMA user_version").fetchone()[0]
    return version


def _fsync(path: Path) -> None:
    """Flush a file (or a directory's entries) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

"""The node database's schema: migrations and the SQL of the hot path.

Tables (all ``STRICT``, so SQLite refuses a value of the wrong type):

``flow_start``
    How each flow was started (:class:`~parley.protocol.records.PutFlowStart`). ``seq`` gives the
    start order. Written once, deleted with the flow.
``flow_header``
    The flow's latest checkpoint header: status, encoded framework state, operator columns and
    ``journal_len`` (how many journal entries are stored). Rewritten at every checkpoint.
``journal``
    Append-only journal, one row per entry, keyed by ``(flow_id, idx)``.
``processed_init``
    Session-inits already consumed, keyed by ``(sender, initiator_session)``. Outlives the flow.
``flow_result``
    Outcomes of finished flows started with a client id. Outlives the flow.
``app_migrations``
    Which of each app's migration scripts were applied.
``network_map``
    The node's copy of the network map: each node's operator-signed entry, newest serial only.
``flow_signal``
    Signals sent to running flows, oldest first, until the flow consumes them.
``hospital_admission``
    Every hospital admission of every stored flow (error, cause chain, staff, outcome, attempt),
    deleted with the flow.
``flow_schedule``
    Schedules: the flow each starts, its next tick and its period.
``held_init``
    Session-inits for flow classes the node does not know, held for observation (acked).

``flow_header`` and ``journal`` reference ``flow_start`` through *deferred* foreign keys: a
checkpoint of an unknown flow fails at ``COMMIT``, whatever the order of the operations inside the
transaction.

A client id is unique among running flows (``flow_start``) and finished ones (``flow_result``):
each table has a ``UNIQUE`` index on it, and two triggers check the other table. A flow's own
result may share the client id of its start row.

Timestamps (``created_at``, ``updated_at``, ``finished_at``, ``applied_at``) are unix time in
seconds as ``REAL``, read from the wall clock once per transaction.

Core migrations are tracked with ``PRAGMA user_version`` (the number of scripts applied). Never
edit a released script: append a new one.
"""

from __future__ import annotations

from parley.protocol.errors import ParleyError


class SchemaVersionError(ParleyError):
    """The database file's schema does not match this version of Parley.

    The operator is at fault: the file was written by a newer Parley (upgrade the code), or a
    read-only store was opened on a file that was never opened read-write (start the node once).
    """


_STATUSES = "'RUNNABLE', 'HOSPITALIZED', 'COMPLETED', 'FAILED', 'KILLED'"

_V1 = f"""
CREATE TABLE flow_start (
    seq INTEGER PRIMARY KEY,
    flow_id TEXT NOT NULL UNIQUE,
    flow_class TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('RPC', 'INITIATED')),
    args BLOB NOT NULL,
    started_by TEXT,
    client_id TEXT UNIQUE,
    created_at REAL NOT NULL
) STRICT;

CREATE TABLE flow_header (
    flow_id TEXT PRIMARY KEY
        REFERENCES flow_start (flow_id) DEFERRABLE INITIALLY DEFERRED,
    status TEXT NOT NULL CHECK (status IN ({_STATUSES})),
    header BLOB NOT NULL,
    suspends INTEGER NOT NULL,
    pending_request TEXT,
    progress_step TEXT,
    journal_len INTEGER NOT NULL CHECK (journal_len >= 0),
    updated_at REAL NOT NULL
) STRICT;

CREATE TABLE journal (
    flow_id TEXT NOT NULL
        REFERENCES flow_start (flow_id) DEFERRABLE INITIALLY DEFERRED,
    idx INTEGER NOT NULL CHECK (idx >= 0),
    entry BLOB NOT NULL,
    PRIMARY KEY (flow_id, idx)
) STRICT, WITHOUT ROWID;

CREATE TABLE processed_init (
    sender TEXT NOT NULL,
    initiator_session TEXT NOT NULL,
    flow_id TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (sender, initiator_session)
) STRICT, WITHOUT ROWID;

CREATE TABLE flow_result (
    flow_id TEXT PRIMARY KEY,
    client_id TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL CHECK (status IN ('COMPLETED', 'FAILED', 'KILLED')),
    value BLOB,
    error BLOB,
    flow_class TEXT,
    created_at REAL,
    finished_at REAL NOT NULL
) STRICT;

CREATE TRIGGER flow_start_client_id_not_finished
BEFORE INSERT ON flow_start
WHEN NEW.client_id IS NOT NULL
    AND EXISTS (SELECT 1 FROM flow_result WHERE client_id = NEW.client_id)
BEGIN
    SELECT RAISE(ABORT, 'UNIQUE constraint failed: client_id is used by a finished flow');
END;

CREATE TRIGGER flow_result_client_id_not_running
BEFORE INSERT ON flow_result
WHEN EXISTS (
    SELECT 1 FROM flow_start WHERE client_id = NEW.client_id AND flow_id <> NEW.flow_id
)
BEGIN
    SELECT RAISE(ABORT, 'UNIQUE constraint failed: client_id is used by a running flow');
END;

CREATE TABLE app_migrations (
    app TEXT NOT NULL,
    idx INTEGER NOT NULL CHECK (idx >= 0),
    applied_at REAL NOT NULL,
    PRIMARY KEY (app, idx)
) STRICT, WITHOUT ROWID;
"""

# v2: a finished flow's result keeps its start arguments, so that a start repeating its client id
# with other arguments can be refused instead of answered with another flow's result. Rows written
# before it have NULL there (only their class is compared).
_V2 = """
ALTER TABLE flow_result ADD COLUMN args BLOB;
"""

# v3: the node's copy of the network map (operator-signed entries, newest serial per node), so
# that a node can start while the map's bucket is out of reach; signals sent to flows, kept until
# the flow consumes them (deleted with the checkpoint that records it, or with the flow); and the
# hospital's admissions of each flow, kept while the flow lives; and schedules (flows started by
# time: the flow, the next tick, the period); and session-inits held for observation.
_V3 = """
CREATE TABLE network_map (
    name TEXT PRIMARY KEY,
    serial INTEGER NOT NULL CHECK (serial >= 0),
    entry BLOB NOT NULL,
    updated_at REAL NOT NULL
) STRICT, WITHOUT ROWID;

CREATE TABLE flow_signal (
    seq INTEGER PRIMARY KEY,
    flow_id TEXT NOT NULL,
    name TEXT NOT NULL,
    payload BLOB NOT NULL,
    created_at REAL NOT NULL
) STRICT;

CREATE INDEX flow_signal_by_flow ON flow_signal (flow_id, name, seq);

CREATE TABLE hospital_admission (
    seq INTEGER PRIMARY KEY,
    flow_id TEXT NOT NULL,
    admitted_at REAL NOT NULL,
    flow_class TEXT NOT NULL,
    suspends INTEGER NOT NULL,
    error_type TEXT NOT NULL,
    message TEXT NOT NULL,
    traceback TEXT NOT NULL,
    causes TEXT NOT NULL,
    staff TEXT NOT NULL,
    outcome TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    retry_in REAL NOT NULL
) STRICT;

CREATE INDEX hospital_admission_by_flow ON hospital_admission (flow_id, seq);

CREATE TABLE flow_schedule (
    name TEXT PRIMARY KEY,
    flow_class TEXT NOT NULL,
    args BLOB NOT NULL,
    next_at REAL NOT NULL,
    every REAL CHECK (every IS NULL OR every > 0),
    missed TEXT NOT NULL CHECK (missed IN ('run_once', 'catch_up', 'skip')),
    updated_at REAL NOT NULL
) STRICT, WITHOUT ROWID;

CREATE TABLE held_init (
    flow_id TEXT PRIMARY KEY,
    sender TEXT NOT NULL,
    envelope BLOB NOT NULL,
    created_at REAL NOT NULL
) STRICT, WITHOUT ROWID;
"""

#: Core migrations, in order. ``PRAGMA user_version`` holds how many were applied.
MIGRATIONS: tuple[str, ...] = (_V1, _V2, _V3)

# ------------------------------------------------------------------------------------------------
# Writes (one statement each; the connection's statement cache keeps them prepared)
# ------------------------------------------------------------------------------------------------

INSERT_START = """
INSERT INTO flow_start (flow_id, flow_class, kind, args, started_by, client_id, created_at)
VALUES (?, ?, ?, ?, ?, ?, ?)
"""

SELECT_JOURNAL_LEN = "SELECT journal_len FROM flow_header WHERE flow_id = ?"

UPSERT_HEADER = """
INSERT INTO flow_header (
    flow_id, status, header, suspends, pending_request, progress_step, journal_len, updated_at
) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (flow_id) DO UPDATE SET
    status = excluded.status,
    header = excluded.header,
    suspends = excluded.suspends,
    pending_request = excluded.pending_request,
    progress_step = excluded.progress_step,
    journal_len = excluded.journal_len,
    updated_at = excluded.updated_at
"""

INSERT_JOURNAL = "INSERT INTO journal (flow_id, idx, entry) VALUES (?, ?, ?)"

UPDATE_STATUS = "UPDATE flow_header SET status = ?, updated_at = ? WHERE flow_id = ?"

DELETE_FLOW = (
    "DELETE FROM hospital_admission WHERE flow_id = ?",
    "DELETE FROM flow_signal WHERE flow_id = ?",
    "DELETE FROM journal WHERE flow_id = ?",
    "DELETE FROM flow_header WHERE flow_id = ?",
    "DELETE FROM flow_start WHERE flow_id = ?",
)

INSERT_PROCESSED_INIT = """
INSERT INTO processed_init (sender, initiator_session, flow_id, created_at) VALUES (?, ?, ?, ?)
"""

# flow_class, args and created_at are copied from the start row (if still there).
INSERT_RESULT = """
INSERT INTO flow_result (
    flow_id, client_id, status, value, error, flow_class, created_at, finished_at, args
)
SELECT :flow_id, :client_id, :status, :value, :error, s.flow_class, s.created_at, :now, s.args
FROM (SELECT 1) LEFT JOIN flow_start AS s ON s.flow_id = :flow_id
"""

INSERT_APP_MIGRATION = "INSERT INTO app_migrations (app, idx, applied_at) VALUES (?, ?, ?)"

# Only for a flow that is still stored (a signal for a flow that just ended is dropped).
INSERT_SIGNAL = """
INSERT INTO flow_signal (flow_id, name, payload, created_at)
SELECT ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM flow_start WHERE flow_id = ?)
"""

UPSERT_SCHEDULE = """
INSERT INTO flow_schedule (name, flow_class, args, next_at, every, missed, updated_at)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (name) DO UPDATE SET
    flow_class = excluded.flow_class, args = excluded.args, next_at = excluded.next_at,
    every = excluded.every, missed = excluded.missed, updated_at = excluded.updated_at
"""

DELETE_SCHEDULE = "DELETE FROM flow_schedule WHERE name = ?"

INSERT_HELD_INIT = """
INSERT OR IGNORE INTO held_init (flow_id, sender, envelope, created_at) VALUES (?, ?, ?, ?)
"""

DELETE_HELD_INIT = "DELETE FROM held_init WHERE flow_id = ?"

SELECT_HELD_INITS = "SELECT flow_id, envelope FROM held_init ORDER BY created_at, flow_id"

DELETE_ADMISSIONS = "DELETE FROM hospital_admission WHERE flow_id = ?"

DELETE_ORPHAN_ADMISSIONS = """
DELETE FROM hospital_admission WHERE flow_id NOT IN (SELECT flow_id FROM flow_start)
"""

INSERT_ADMISSION = """
INSERT INTO hospital_admission (
    flow_id, admitted_at, flow_class, suspends, error_type, message, traceback, causes, staff,
    outcome, attempt, retry_in
) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""

# An older serial never replaces a newer one (entries may arrive in any order).
UPSERT_MAP_ENTRY = """
INSERT INTO network_map (name, serial, entry, updated_at) VALUES (?, ?, ?, ?)
ON CONFLICT (name) DO UPDATE SET
    serial = excluded.serial, entry = excluded.entry, updated_at = excluded.updated_at
WHERE excluded.serial > network_map.serial
"""

# ------------------------------------------------------------------------------------------------
# Reads
# ------------------------------------------------------------------------------------------------

SELECT_FLOW = """
SELECT s.flow_class, s.kind, s.args, s.started_by, s.client_id,
       h.status, h.header, h.suspends, h.pending_request, h.progress_step
FROM flow_start AS s LEFT JOIN flow_header AS h ON h.flow_id = s.flow_id
WHERE s.flow_id = ?
"""

SELECT_JOURNAL = "SELECT entry FROM journal WHERE flow_id = ? ORDER BY idx"

SELECT_RUNNABLE = """
SELECT s.flow_id
FROM flow_start AS s LEFT JOIN flow_header AS h ON h.flow_id = s.flow_id
WHERE coalesce(h.status, 'RUNNABLE') IN ('RUNNABLE', 'HOSPITALIZED')
ORDER BY s.seq
"""

SELECT_PROCESSED_INIT = """
SELECT flow_id FROM processed_init WHERE sender = ? AND initiator_session = ?
"""

# A finished flow's result wins over its start row (when both are still there).
SELECT_FLOW_FOR_CLIENT_ID = """
SELECT flow_id, status, 0 AS rank FROM flow_result WHERE client_id = :client_id
UNION ALL
SELECT s.flow_id, coalesce(h.status, 'RUNNABLE'), 1
FROM flow_start AS s LEFT JOIN flow_header AS h ON h.flow_id = s.flow_id
WHERE s.client_id = :client_id
ORDER BY rank
LIMIT 1
"""

SELECT_RESULT = """
SELECT flow_id, client_id, status, value, error, flow_class, args
FROM flow_result WHERE client_id = ?
"""

SELECT_CLIENT_ID_OF_RESULT = "SELECT client_id FROM flow_result WHERE flow_id = ?"

# Flows still stored (with their result's status if they have one), then finished flows whose
# start row is gone. Columns: flow_id, flow_class, status, suspends, pending_request,
# progress_step, client_id, created_at, updated_at.
SELECT_SUMMARIES = """
SELECT * FROM (
    SELECT s.flow_id, s.flow_class,
           coalesce(r.status, h.status, 'RUNNABLE') AS status,
           coalesce(h.suspends, 0), h.pending_request, h.progress_step, s.client_id,
           s.created_at AS created_at, coalesce(r.finished_at, h.updated_at, s.created_at)
    FROM flow_start AS s
    LEFT JOIN flow_header AS h ON h.flow_id = s.flow_id
    LEFT JOIN flow_result AS r ON r.flow_id = s.flow_id
    UNION ALL
    SELECT r.flow_id, r.flow_class, r.status, NULL, NULL, NULL, r.client_id,
           r.created_at AS created_at, r.finished_at
    FROM flow_result AS r
    WHERE NOT EXISTS (SELECT 1 FROM flow_start AS s WHERE s.flow_id = r.flow_id)
)
WHERE :status IS NULL OR status = :status
ORDER BY created_at, flow_id
LIMIT :limit
"""

SELECT_APPLIED_APP_MIGRATIONS = "SELECT idx FROM app_migrations WHERE app = ?"

SELECT_MAP_ENTRIES = "SELECT entry FROM network_map ORDER BY name"

# Columns in PutAdmission's order (flow_id first); all of one flow, or every flow's, oldest first.
SELECT_ADMISSIONS = """
SELECT flow_id, admitted_at, flow_class, suspends, error_type, message, traceback, causes, staff,
       outcome, attempt, retry_in
FROM hospital_admission WHERE :flow_id IS NULL OR flow_id = :flow_id ORDER BY seq
"""

SELECT_SCHEDULES = """
SELECT name, flow_class, args, next_at, every, missed FROM flow_schedule ORDER BY name
"""

SELECT_NEXT_SIGNAL = """
SELECT seq, payload FROM flow_signal WHERE flow_id = ? AND name = ? ORDER BY seq LIMIT 1
"""

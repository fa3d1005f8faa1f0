"""The schema of the event store's SQLite file, versioned: ordered migrations run when it is opened.

Three owners share the file, each on a connection of its own: the event store
(``sqlite_db``: events, outbox, audit, allow list, revoked keys, node state),
the list sources (``livesafe.lists.sources.state``: checkpoints, entries, last
good copies) and the banks (``livesafe.banks.store``).  Whichever opens the file
first brings all of it to the current version, so the file has one version
(``PRAGMA user_version``) and one history, here.

``migrate`` runs every migration the file lacks, in order, in one ``BEGIN
IMMEDIATE`` transaction with the version bump: a crash or a failing step
leaves the file as it was, and two processes opening it at once do not both
migrate (the second waits, then finds the work done).  A file whose version is
newer than the code's is refused: a newer release may have changed what a
table means, and writing to it with old code could corrupt it.

A migration is SQL, frozen once released: a change is a new migration at the
end, never an edit of an old one (a file at version N has run exactly 1..N).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path


class SchemaTooNew(sqlite3.DatabaseError):
    """The file was written by a newer livesafe than this one (its schema version is past ours)."""


@dataclass(frozen=True)
class Migration:
    """One step: ``version`` (the file's version after it) and the SQL that gets it there."""

    version: int
    description: str
    script: str


# Version 1: the tables as they were before the file was versioned (created ``IF NOT EXISTS``,
# so a file from then, at version 0, keeps its rows and gains what it lacked), plus the counts of
# the outbox for a file from before the counts table (an empty one there: counted once).
_TABLES_1 = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL,
    stream_id TEXT,
    at REAL NOT NULL,
    severity TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_stream ON events(stream_id, seq);
CREATE INDEX IF NOT EXISTS events_by_type ON events(type, seq);
CREATE INDEX IF NOT EXISTS events_by_time ON events(at);
CREATE TABLE IF NOT EXISTS outbox (
    endpoint TEXT NOT NULL,
    event_seq INTEGER NOT NULL REFERENCES events(seq) ON DELETE CASCADE,
    state TEXT NOT NULL DEFAULT 'pending',  -- pending | delivered | failed
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt REAL NOT NULL,
    last_error TEXT,
    finished_at REAL,
    PRIMARY KEY (endpoint, event_seq)
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox(state, next_attempt);
-- Deleting an event cascades to its rows, and pruning skips events with a pending row: both find
-- them by event. Without this each deleted event scanned the whole outbox (hours, for a month's).
CREATE INDEX IF NOT EXISTS outbox_by_event ON outbox(event_seq);
CREATE INDEX IF NOT EXISTS outbox_errors ON outbox(endpoint, event_seq) WHERE last_error IS NOT NULL;
-- Rows per endpoint and state, kept by triggers, so counting them does not scan the outbox.
CREATE TABLE IF NOT EXISTS outbox_counts (
    endpoint TEXT NOT NULL,
    state TEXT NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (endpoint, state)
) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS outbox_counted_insert AFTER INSERT ON outbox BEGIN
    INSERT INTO outbox_counts VALUES (new.endpoint, new.state, 1)
    ON CONFLICT (endpoint, state) DO UPDATE SET count = count + 1;
END;
CREATE TRIGGER IF NOT EXISTS outbox_counted_update AFTER UPDATE OF state ON outbox WHEN old.state != new.state BEGIN
    UPDATE outbox_counts SET count = count - 1 WHERE endpoint = old.endpoint AND state = old.state;
    INSERT INTO outbox_counts VALUES (new.endpoint, new.state, 1)
    ON CONFLICT (endpoint, state) DO UPDATE SET count = count + 1;
END;
CREATE TRIGGER IF NOT EXISTS outbox_counted_delete AFTER DELETE ON outbox BEGIN
    UPDATE outbox_counts SET count = count - 1 WHERE endpoint = old.endpoint AND state = old.state;
END;
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    at REAL NOT NULL,
    actor TEXT NOT NULL,
    role TEXT NOT NULL,
    action TEXT NOT NULL,
    stream_id TEXT,
    reason TEXT NOT NULL,
    viewed_content INTEGER NOT NULL,
    event_id TEXT,
    details TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_by_stream ON audit(stream_id, seq);
CREATE TABLE IF NOT EXISTS allowlist (
    signal TEXT NOT NULL,
    hash TEXT NOT NULL,
    stream_id TEXT NOT NULL,  -- '' for every stream
    at REAL NOT NULL,
    actor TEXT NOT NULL,
    reason TEXT NOT NULL,
    PRIMARY KEY (signal, hash, stream_id)
);
CREATE TABLE IF NOT EXISTS revoked_keys (
    stream_id TEXT NOT NULL,
    key_sha256 TEXT NOT NULL,
    at REAL NOT NULL,
    actor TEXT NOT NULL,
    PRIMARY KEY (stream_id, key_sha256)
);
CREATE TABLE IF NOT EXISTS state (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS list_source_checkpoints (
    source TEXT PRIMARY KEY,
    checkpoint TEXT NOT NULL,
    saved_at REAL NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0)
);
CREATE TABLE IF NOT EXISTS list_source_entries (
    source TEXT NOT NULL,
    key TEXT NOT NULL,
    signal TEXT NOT NULL,
    hash TEXT NOT NULL,
    metadata TEXT NOT NULL,
    PRIMARY KEY (source, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS list_source_copies (
    source TEXT PRIMARY KEY,
    body BLOB NOT NULL,
    meta TEXT NOT NULL,
    saved_at REAL NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0)
);
CREATE TABLE IF NOT EXISTS banks (
    name TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    changed_at REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS bank_contents (
    bank TEXT NOT NULL,
    content_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    frames INTEGER NOT NULL,
    views INTEGER NOT NULL,
    added_by TEXT NOT NULL,
    added_at REAL NOT NULL,
    PRIMARY KEY (bank, content_id)
) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS bank_contents_by_sha256 ON bank_contents(bank, sha256);
CREATE TABLE IF NOT EXISTS bank_hashes (
    bank TEXT NOT NULL,
    content_id TEXT NOT NULL,
    signal TEXT NOT NULL,
    hash TEXT NOT NULL,
    view TEXT NOT NULL,
    frame_time REAL,
    quality INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS bank_hashes_by_content ON bank_hashes(bank, content_id);
"""

_COUNT_OUTBOX_1 = """
INSERT INTO outbox_counts SELECT endpoint, state, COUNT(*) FROM outbox
WHERE NOT EXISTS (SELECT 1 FROM outbox_counts) GROUP BY 1, 2;
"""

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "events, outbox, audit, access lists, node state, list sources, banks", _TABLES_1 + _COUNT_OUTBOX_1),
)


def latest_version(migrations: Sequence[Migration] = MIGRATIONS) -> int:
    return migrations[-1].version if migrations else 0


def schema_version(connection: sqlite3.Connection) -> int:
    return int(connection.execute("PRAGMA user_version").fetchone()[0])


def migrate(connection: sqlite3.Connection, migrations: Sequence[Migration] = MIGRATIONS) -> int:
    """Bring the file on ``connection`` (autocommit: ``isolation_level=None``) to the latest version; returns it.

    A too-new file raises ``SchemaTooNew`` (a ``sqlite3.DatabaseError``: callers that report
    the file's errors as one line, naming it, report this one too).
    """
    latest = latest_version(migrations)
    if [m.version for m in migrations] != list(range(1, latest + 1)):
        raise ValueError("migrations must be numbered 1, 2, 3 ... in order")
    if schema_version(connection) == latest:  # the usual open: no write lock taken
        return latest
    connection.execute("BEGIN IMMEDIATE")
    try:
        found = schema_version(connection)  # again, under the lock: another process may have migrated
        if found > latest:
            raise SchemaTooNew(
                f"schema version {found} is newer than this livesafe knows ({latest}); "
                "it was written by a newer release: run that release, or restore a backup taken before the upgrade"
            )
        for migration in migrations[found:]:
            for statement in _statements(migration.script):
                connection.execute(statement)
        if found < latest:
            connection.execute(f"PRAGMA user_version = {latest:d}")
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")
    return latest


def connect(database: str | Path) -> sqlite3.Connection:
    """A connection for a part of the store that has no writer thread of its own (list-source state, banks).

    Creates the file's directory, WAL (unless ``":memory:"``), autocommit with explicit transactions, a
    5 s busy timeout, and the schema migrated; a file too new (or not a database) raises, leaving nothing open.
    """
    if str(database) != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(str(database), check_same_thread=False, isolation_level=None)
    try:
        connection.execute("PRAGMA busy_timeout = 5000")
        if str(database) != ":memory:":
            connection.execute("PRAGMA journal_mode = WAL")
        migrate(connection)
    except sqlite3.Error:
        connection.close()
        raise
    return connection


def _statements(script: str) -> Iterator[str]:
    """The script's statements one by one: ``executescript`` would commit the transaction first.

    Split where ``sqlite3.complete_statement`` says a statement ends, so a trigger's body
    (semicolons between ``BEGIN`` and ``END``) stays whole.
    """
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            yield pending.strip()
            pending = ""
    if any(line.strip() and not line.strip().startswith("--") for line in pending.splitlines()):
        raise ValueError(f"migration script ends inside a statement: {pending.strip()[:60]!r}")

"""The store's file is versioned: an unversioned file from before keeps its rows, a newer one is refused.

``store_schema_0.sql`` is the schema every table had before versioning (dumped from
``sqlite_master`` of a file the three owners had opened), frozen here so the test starts
from what deployed files hold, not from whatever the code creates today.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from livesafe.banks.store import BankStore
from livesafe.cli import main
from livesafe.events import Event
from livesafe.lists.sources.state import SourceState
from livesafe.moderation.store.schema import MIGRATIONS, Migration, SchemaTooNew, latest_version, migrate
from livesafe.moderation.store.sqlite import SqliteStore

SCHEMA_0 = Path(__file__).with_name("store_schema_0.sql")


def _version_0_file(path: Path) -> None:
    """A file as the last unversioned release left it: its tables, some rows, user_version 0."""
    db = sqlite3.connect(path)
    db.executescript(SCHEMA_0.read_text())
    db.execute(
        "INSERT INTO events (id, type, stream_id, at, severity, body) VALUES "
        "('ev-1', 'match.started', 'studio', 1000.0, 'warning', '{\"data\":{}}')"
    )
    db.execute("INSERT INTO outbox (endpoint, event_seq, next_attempt) VALUES ('hook', 1, 1000.0)")
    db.execute("INSERT INTO state (key, value) VALUES ('cursor', '42')")
    db.execute("INSERT INTO list_source_checkpoints (source, checkpoint) VALUES ('ncmec', '{\"time\": 7}')")
    db.execute(
        "INSERT INTO list_source_entries (source, key, signal, hash, metadata) VALUES ('ncmec', 'k1', 'pdq', ?, '{}')",
        ("ab" * 32,),
    )
    db.execute("INSERT INTO banks (name, version, changed_at) VALUES ('ours', 3, 1000.0)")
    db.commit()
    assert db.execute("PRAGMA user_version").fetchone()[0] == 0
    db.close()


def _user_version(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        return db.execute("PRAGMA user_version").fetchone()[0]
    finally:
        db.close()


def test_an_unversioned_file_is_migrated_with_its_rows_kept(tmp_path: Path) -> None:
    path = tmp_path / "livesafe.db"
    _version_0_file(path)
    store = SqliteStore(path)
    try:
        assert _user_version(path) == latest_version() >= 1
        event = store.events.get("ev-1")
        assert event is not None and event.stream_id == "studio" and event.seq == 1
        assert store.state.get("cursor") == "42"
        # The counts table existed, empty (the file's outbox was never counted): counted once now.
        assert store.outbox.counts() == {"hook": {"pending": 1, "delivered": 0, "failed": 0}}
        stored = store.events.append(Event("match.started", "studio"))
        assert stored.seq == 2
    finally:
        store.close()
    state = SourceState(path)
    banks = BankStore(path)
    try:
        assert state.checkpoint("ncmec") == {"time": 7}
        assert [key for key, _ in state.entries("ncmec")] == ["k1"]
        assert banks.version("ours") == 3
    finally:
        state.close()
        banks.close()


def test_reopening_a_current_file_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "livesafe.db"
    for _ in range(2):
        for opened in (SourceState(path), SqliteStore(path), BankStore(path)):
            opened.close()
    db = sqlite3.connect(path)
    schema = db.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name").fetchall()
    db.close()
    store = SqliteStore(path)
    store.close()
    db = sqlite3.connect(path)
    assert db.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name").fetchall() == schema
    assert db.execute("PRAGMA user_version").fetchone()[0] == latest_version()
    db.close()


def test_the_current_schema_is_the_frozen_one_plus_nothing_lost(tmp_path: Path) -> None:
    """A fresh file has every table and index version 0 had (a migration may add, never drop silently)."""
    old, new = tmp_path / "old.db", tmp_path / "new.db"
    _version_0_file(old)
    SqliteStore(new).close()

    def names(path: Path) -> set[tuple[str, str]]:
        db = sqlite3.connect(path)
        try:
            return set(db.execute("SELECT type, name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"))
        finally:
            db.close()

    assert names(old) <= names(new)


@pytest.mark.parametrize("opener", [SqliteStore, SourceState, BankStore])
def test_a_file_from_a_newer_release_is_refused(tmp_path: Path, opener: type) -> None:
    path = tmp_path / "livesafe.db"
    SqliteStore(path).close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {latest_version() + 1}")
    db.execute("CREATE TABLE from_the_future (x)")
    db.commit()
    db.close()
    with pytest.raises(SchemaTooNew, match=rf"schema version {latest_version() + 1} is newer than this livesafe"):
        opener(path)
    assert _user_version(path) == latest_version() + 1  # left as it was


def test_serve_says_in_one_line_that_the_file_is_too_new(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "livesafe.db"
    SqliteStore(path).close()
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 999")
    db.commit()
    db.close()
    blocklist = tmp_path / "list.txt"
    blocklist.write_text("pdq " + "ab" * 32 + "\n")
    config = tmp_path / "livesafe.toml"
    config.write_text(
        f'[moderation]\ndatabase = "{path.name}"\n[[lists.file]]\npath = "list.txt"\nname = "t"\ncategory = "test"\n'
    )
    assert main(["serve", "--config", str(config), "--port", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "schema version 999 is newer than this livesafe knows" in err and "Traceback" not in err


def test_migrations_run_in_order_in_one_transaction(tmp_path: Path) -> None:
    """A failing step leaves the file at the version it had, with none of that run's changes."""
    path = tmp_path / "livesafe.db"
    db = sqlite3.connect(path, isolation_level=None)
    migrate(db, MIGRATIONS)
    db.execute("INSERT INTO state (key, value) VALUES ('k', 'v')")
    later = (
        *MIGRATIONS,
        Migration(len(MIGRATIONS) + 1, "a column", "ALTER TABLE state ADD COLUMN note TEXT;"),
        Migration(len(MIGRATIONS) + 2, "broken", "UPDATE state SET note = 'x';\nSELECT * FROM no_such_table;"),
    )
    with pytest.raises(sqlite3.OperationalError, match="no_such_table"):
        migrate(db, later)
    assert db.execute("PRAGMA user_version").fetchone()[0] == latest_version()
    assert [row[1] for row in db.execute("PRAGMA table_info(state)")] == ["key", "value"]
    assert migrate(db, later[:-1]) == len(MIGRATIONS) + 1
    assert db.execute("SELECT key, value, note FROM state").fetchall() == [("k", "v", None)]
    db.close()


def test_migrations_must_be_numbered_in_order(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "x.db", isolation_level=None)
    with pytest.raises(ValueError, match="numbered"):
        migrate(db, (Migration(2, "skips one", "SELECT 1;"),))
    db.close()


def test_a_script_that_ends_inside_a_statement_is_refused(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "x.db", isolation_level=None)
    broken = (Migration(1, "unfinished", "CREATE TABLE a (x);\n-- a comment\nCREATE TABLE b (\n"),)
    with pytest.raises(ValueError, match="ends inside a statement"):
        migrate(db, broken)
    assert db.execute("SELECT name FROM sqlite_master").fetchall() == []  # rolled back: a is not there
    db.close()

"""The SQLite database under the store: one file in WAL mode, nothing to run beside the proxy.

Tables: ``events`` (everything moderators are told, in order), ``outbox``
(one row per event and webhook endpoint, written in the same transaction as
the event, so a delivery cannot be lost between "stored" and "queued"),
``audit`` (what moderators did), ``allowlist`` (hashes moderators marked as
false positives), ``revoked_keys`` (stream keys of terminated streams) and
``state`` (named values of this node: the cluster's cursors).  Their schema,
and the versions of it a file may be at, are in ``schema``: opening the file
migrates it (and refuses one written by a newer release).

The database is used from the event loop only.  Each write is one short
transaction; with WAL and ``synchronous=NORMAL`` a commit does not wait for
the disk (a power cut may lose the last commits, a crashed process does not).
Checkpoints (copying the WAL back into the database file) run on a thread of
their own: SQLite's automatic one runs inside whichever commit crosses 1,000
WAL pages, which put 4-6 ms stalls on the event loop every ~150 events.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from livesafe.moderation.store.schema import migrate

log = logging.getLogger(__name__)


class SqliteDatabase:
    """The connection the store's parts share, and the one way they write.

    Reads go straight to ``connection``; every write goes through :meth:`transaction`
    (or :meth:`write`), because that is where the checkpointer learns of commits.
    """

    def __init__(self, path: str | Path, **checkpoints: Any) -> None:
        """``checkpoints``: settings of the checkpoint thread (see ``_Checkpointer``), for tests."""
        in_memory = str(path) == ":memory:"
        if not in_memory:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.connection = sqlite3.connect(str(path), isolation_level=None)  # autocommit; transactions explicit
        self.connection.execute("PRAGMA journal_mode=WAL")
        self.connection.execute("PRAGMA synchronous=NORMAL")
        self.connection.execute("PRAGMA foreign_keys=ON")
        self.connection.execute("PRAGMA busy_timeout=5000")
        self.connection.execute("PRAGMA wal_autocheckpoint=0")  # the checkpointer's job, off the loop
        self.connection.execute(f"PRAGMA journal_size_limit={_WAL_LIMIT_BYTES}")  # a WAL grown by a burst shrinks back
        try:
            migrate(self.connection)
        except sqlite3.Error:  # a file too new (or not a database): nothing stays open
            self.connection.close()
            raise
        self._checkpointer = None if in_memory else _Checkpointer(str(path), **checkpoints)
        if self._checkpointer is not None:
            self._checkpointer.start()

    def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.stop()
        self.connection.close()  # the last connection to close checkpoints what is left

    def write(self, sql: str, args: Sequence[Any]) -> sqlite3.Cursor:
        """One statement in a transaction of its own (so the checkpointer counts it, see below)."""
        with self.transaction():
            return self.connection.execute(sql, args)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Statements that commit together or not at all (an event and its outbox rows)."""
        self.connection.execute("BEGIN IMMEDIATE")
        try:
            yield self.connection
        except BaseException:
            self.connection.execute("ROLLBACK")
            raise
        self.connection.execute("COMMIT")
        checkpointer = self._checkpointer
        if checkpointer is not None:  # every write comes through here: the checkpointer counts commits
            checkpointer.commits += 1
            if checkpointer.restart:
                self._restart_wal(checkpointer)

    def _restart_wal(self, checkpointer: _Checkpointer) -> None:
        """Copy what the checkpointer has not (see ``_Checkpointer``), so the next commit starts the WAL over."""
        try:
            done = _passive_checkpoint(self.connection)
        except sqlite3.Error as exc:  # the commit stands; the next one tries again
            log.warning("event store checkpoint failed: %s", exc)
            return
        if done is not None and done[0] == done[1]:
            checkpointer.restart = False


_WAL_LIMIT_BYTES = 64 * 2**20
_CAUGHT_UP_FRAMES = 256  # what a checkpoint pass may leave for the writer's restart (~1 MiB)


class _Checkpointer(threading.Thread):
    """Copies the WAL into the database file on a connection and thread of its own.

    It looks every ``interval`` seconds and checkpoints once ``batch`` commits have
    accumulated, or when commits have paused for ``quiet_seconds``: a checkpoint after
    every trickle of commits would make each of them slower (measured: p50 0.45 -> 0.9 ms
    at 5 events/s), since a commit after a complete checkpoint starts the WAL over,
    rewriting pages the checkpoint has just synced.

    A PASSIVE checkpoint waits for no reader or writer, so appends on the loop go on
    meanwhile.  The WAL starts over only at a commit that finds it all copied; when
    commits come faster than a checkpoint takes, none does, and the WAL would grow for as
    long as they do.  So past ``restart_bytes`` this asks for ``restart``: the writer then
    checkpoints after its next commit itself (only the few frames this thread has not
    copied yet: a few milliseconds) and the commit after that starts the WAL over.
    """

    def __init__(
        self,
        path: str,
        *,
        interval: float = 0.2,
        batch: int = 64,
        quiet_seconds: float = 1.0,
        restart_bytes: int = 16 * 2**20,
    ) -> None:
        super().__init__(name="livesafe-checkpoint", daemon=True)
        self._path = path
        self._interval, self._batch, self._quiet_seconds = interval, batch, quiet_seconds
        self._restart_bytes = restart_bytes
        self._stopping = threading.Event()
        self.commits = 0  # counted by the writer; only read here
        self.restart = False  # set here, cleared by the writer once the WAL is all copied

    def run(self) -> None:
        db = sqlite3.connect(self._path, isolation_level=None)
        try:
            restart_frames = self._restart_bytes // db.execute("PRAGMA page_size").fetchone()[0]
            done = seen = self.commits
            last_commit = time.monotonic()
            while not self._stopping.wait(self._interval):
                commits, now = self.commits, time.monotonic()
                if commits != seen:
                    seen, last_commit = commits, now
                if commits - done < self._batch and not (commits > done and now - last_commit >= self._quiet_seconds):
                    continue
                done = commits
                try:
                    if self._checkpoint(db, restart_frames):
                        self.restart = True
                except sqlite3.Error as exc:  # e.g. the disk is full: the WAL grows meanwhile, writes go on
                    log.warning("event store checkpoint failed: %s", exc)
        finally:
            db.close()

    @staticmethod
    def _checkpoint(db: sqlite3.Connection, restart_frames: int) -> bool:
        """A checkpoint; True if the writer should restart the WAL (it is past ``restart_frames``).

        Before saying so, catch up: pass again while commits keep adding frames during a
        pass, so the writer is left with little to copy (measured while pruning a month of
        events: restarts took 40-60 ms without this, 8-11 ms with it).
        """
        result = _passive_checkpoint(db)
        if result is None or result[0] <= restart_frames:
            return False
        frames = result[0]
        for _ in range(8):
            # Commits faster than a pass copies (a burst: ~3,500 small appends/s on a fast
            # disk) would keep this from ever catching up while the WAL grows; past 4x the
            # limit the writer's own restart copying the rest is the lesser cost.
            if frames > 4 * restart_frames:
                break
            result = _passive_checkpoint(db)
            if result is None or result[0] - frames < _CAUGHT_UP_FRAMES:
                break
            frames = result[0]
        return True

    def stop(self) -> None:
        self._stopping.set()
        self.join()


def _passive_checkpoint(db: sqlite3.Connection) -> tuple[int, int] | None:
    """(frames in the WAL, frames copied to the database), or None if another checkpoint was running."""
    # All rows: a pending statement pins the WAL.
    busy, frames, copied = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()[0]
    return None if busy else (frames, copied)

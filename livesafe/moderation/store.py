"""The embedded event store: SQLite in WAL mode, one file, nothing to run beside the proxy.

Tables: ``events`` (everything moderators are told, in order), ``outbox``
(one row per event and webhook endpoint, written in the same transaction as
the event, so a delivery cannot be lost between "stored" and "queued"),
``audit`` (what moderators did), ``allowlist`` (hashes moderators marked as
false positives) and ``revoked_keys`` (stream keys of terminated streams).

The store is used from the event loop only.  Each write is one short
transaction; with WAL and ``synchronous=NORMAL`` a commit does not wait for
the disk (a power cut may lose the last commits, a crashed process does not).
Checkpoints (copying the WAL back into the database file) run on a thread of
their own: SQLite's automatic one runs inside whichever commit crosses 1,000
WAL pages, which put 4-6 ms stalls on the event loop every ~150 events.

DESIGN's growth path keeps this behind one class: a Redis Streams store with
the same methods replaces it when several proxies share an event log.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from livesafe.events import Event

log = logging.getLogger(__name__)

_SCHEMA = """
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
"""


@dataclass(frozen=True, slots=True)
class AuditEntry:
    actor: str
    role: str
    action: str
    stream_id: str | None
    reason: str
    viewed_content: bool
    event_id: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    at: float = field(default_factory=time.time)
    seq: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq, "id": self.id, "at": self.at, "actor": self.actor, "role": self.role, "action": self.action,
            "stream_id": self.stream_id, "reason": self.reason, "viewed_content": self.viewed_content,
            "event_id": self.event_id, "details": self.details,
        }  # fmt: skip


@dataclass(frozen=True, slots=True)
class Delivery:
    event: Event
    endpoint: str
    attempts: int  # attempts made before this one


@dataclass(frozen=True, slots=True)
class Allowed:
    signal: str
    hash: str
    stream_id: str | None  # None: every stream


class EventStore:
    def __init__(self, path: str | Path, **checkpoints: Any) -> None:
        """``checkpoints``: settings of the checkpoint thread (see ``_Checkpointer``), for tests."""
        in_memory = str(path) == ":memory:"
        if not in_memory:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.path = str(path)
        self._db = sqlite3.connect(self.path, isolation_level=None)  # autocommit; transactions explicit
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.execute("PRAGMA wal_autocheckpoint=0")  # the checkpointer's job, off the loop
        self._db.execute(f"PRAGMA journal_size_limit={_WAL_LIMIT_BYTES}")  # a WAL grown by a burst shrinks back
        self._db.executescript(_SCHEMA)
        if self._db.execute("SELECT 1 FROM outbox_counts LIMIT 1").fetchone() is None:
            # A database from before the counts table (or an empty one): count once.
            self._db.execute("INSERT INTO outbox_counts SELECT endpoint, state, COUNT(*) FROM outbox GROUP BY 1, 2")
        self._checkpointer = None if in_memory else _Checkpointer(self.path, **checkpoints)
        if self._checkpointer is not None:
            self._checkpointer.start()

    def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.stop()
        self._db.close()  # the last connection to close checkpoints what is left

    # ---------------------------------------------------------------- events

    def append(self, event: Event, endpoints: Iterable[str] = (), now: float | None = None) -> Event:
        """Store ``event`` and queue it for ``endpoints`` in one transaction; returns it with its ``seq``."""
        body = json.dumps(event.data, separators=(",", ":"), sort_keys=True)
        with self._transaction():
            cursor = self._db.execute(
                "INSERT INTO events (id, type, stream_id, at, severity, body) VALUES (?, ?, ?, ?, ?, ?)",
                (event.id, event.type, event.stream_id, event.at, event.severity, body),
            )
            seq = cursor.lastrowid
            due = time.time() if now is None else now
            self._db.executemany(
                "INSERT INTO outbox (endpoint, event_seq, next_attempt) VALUES (?, ?, ?)",
                [(name, seq, due) for name in endpoints],
            )
        return _with_seq(event, seq)

    def seq_of(self, event_id: str) -> int | None:
        row = self._db.execute("SELECT seq FROM events WHERE id = ?", (event_id,)).fetchone()
        return row[0] if row else None

    def event(self, event_id: str) -> Event | None:
        rows = self._select_events("WHERE id = ?", (event_id,), 1)
        return rows[0] if rows else None

    def last_seq(self) -> int:
        row = self._db.execute("SELECT MAX(seq) FROM events").fetchone()
        return row[0] or 0

    def events(
        self,
        after: int = 0,
        *,
        stream_id: str | None = None,
        types: Sequence[str] = (),
        since_time: float | None = None,
        limit: int = 100,
    ) -> list[Event]:
        """Events after ``seq`` ``after`` in order, optionally of one stream, some types, from a time."""
        where, args = self._filters(stream_id, types, since_time)
        return self._select_events("WHERE seq > ? " + where + " ORDER BY seq", (after, *args), limit)

    @staticmethod
    def _filters(stream_id: str | None, types: Sequence[str], since_time: float | None) -> tuple[str, tuple]:
        where, args = [], []
        if stream_id is not None:
            where.append("stream_id = ?")
            args.append(stream_id)
        if types:
            where.append(f"type IN ({','.join('?' * len(types))})")
            args.extend(types)
        if since_time is not None:
            where.append("at >= ?")
            args.append(since_time)
        return "".join(f" AND {w}" for w in where), tuple(args)

    def events_before(
        self, before: int, *, stream_id: str | None = None, types: Sequence[str] = (), since_time: float | None = None, limit: int = 100
    ) -> list[Event]:
        """The ``limit`` newest events before ``seq`` ``before`` (oldest first), filtered as :meth:`events`."""
        where, args = self._filters(stream_id, types, since_time)
        newest = self._select_events("WHERE seq < ? " + where + " ORDER BY seq DESC", (before, *args), limit)
        return newest[::-1]

    def latest(self, stream_id: str, types: Sequence[str]) -> Event | None:
        """The stream's most recent event of one of ``types``."""
        rows = self._select_events(
            f"WHERE stream_id = ? AND type IN ({','.join('?' * len(types))}) ORDER BY seq DESC", (stream_id, *types), 1
        )
        return rows[0] if rows else None

    def _select_events(self, clause: str, args: tuple, limit: int) -> list[Event]:
        rows = self._db.execute(
            f"SELECT seq, id, type, stream_id, at, severity, body FROM events {clause} LIMIT ?", (*args, limit)
        ).fetchall()
        return [_event(row) for row in rows]

    # ---------------------------------------------------------------- outbox

    def due(self, now: float, endpoints: Sequence[str], limit: int = 100) -> list[Delivery]:
        """Pending deliveries whose time has come, oldest first, for the configured ``endpoints``."""
        if not endpoints:
            return []
        rows = self._db.execute(
            f"""SELECT o.endpoint, o.attempts, e.seq, e.id, e.type, e.stream_id, e.at, e.severity, e.body
                FROM outbox o JOIN events e ON e.seq = o.event_seq
                WHERE o.state = 'pending' AND o.next_attempt <= ? AND o.endpoint IN ({','.join('?' * len(endpoints))})
                ORDER BY o.event_seq LIMIT ?""",
            (now, *endpoints, limit),
        ).fetchall()
        return [Delivery(_event(row[2:]), row[0], row[1]) for row in rows]

    def next_due(self, endpoints: Sequence[str]) -> float | None:
        if not endpoints:
            return None
        row = self._db.execute(
            f"SELECT MIN(next_attempt) FROM outbox WHERE state = 'pending' AND endpoint IN ({','.join('?' * len(endpoints))})",
            tuple(endpoints),
        ).fetchone()
        return row[0]

    def delivered(self, delivery: Delivery, now: float) -> None:
        self._finish(delivery, "delivered", None, now)

    def failed(self, delivery: Delivery, error: str, now: float) -> None:
        """Give up on ``delivery`` (it stays listed as failed until retention removes it)."""
        self._finish(delivery, "failed", error, now)

    def retry(self, delivery: Delivery, error: str, at: float) -> None:
        self._write(
            "UPDATE outbox SET attempts = attempts + 1, next_attempt = ?, last_error = ? WHERE endpoint = ? AND event_seq = ?",
            (at, error, delivery.endpoint, delivery.event.seq),
        )

    def due_now(self, endpoint: str, now: float) -> None:
        """Make every pending delivery to ``endpoint`` due at ``now`` (a failed one waits for its backoff)."""
        self._write(
            "UPDATE outbox SET next_attempt = ? WHERE endpoint = ? AND state = 'pending' AND next_attempt > ?", (now, endpoint, now)
        )

    def _finish(self, delivery: Delivery, state: str, error: str | None, now: float) -> None:
        self._write(
            """UPDATE outbox SET state = ?, attempts = attempts + 1, last_error = COALESCE(?, last_error), finished_at = ?
               WHERE endpoint = ? AND event_seq = ?""",
            (state, error, now, delivery.endpoint, delivery.event.seq),
        )

    def outbox_counts(self) -> dict[str, dict[str, Any]]:
        """Per endpoint: deliveries pending/delivered/failed, the last error and when it was."""
        out: dict[str, dict[str, Any]] = {}
        for endpoint, state, count in self._db.execute("SELECT endpoint, state, count FROM outbox_counts"):
            out.setdefault(endpoint, {"pending": 0, "delivered": 0, "failed": 0})[state] = count
        for endpoint in list(out):
            row = self._db.execute(
                "SELECT last_error FROM outbox WHERE endpoint = ? AND last_error IS NOT NULL ORDER BY event_seq DESC LIMIT 1",
                (endpoint,),
            ).fetchone()
            if row is not None:
                out[endpoint]["last_error"] = row[0]
        return out

    def abandon(self, configured: Sequence[str], now: float) -> int:
        """Mark pending deliveries to endpoints no longer configured as failed; returns how many.

        Otherwise they would wait forever, keep the backlog above zero and keep
        their events from ever being pruned.
        """
        marks = ",".join("?" * len(configured))
        return self._write(
            f"""UPDATE outbox SET state = 'failed', last_error = 'endpoint no longer configured', finished_at = ?
                WHERE state = 'pending' AND endpoint NOT IN ({marks})""",
            (now, *configured),
        ).rowcount

    def pending(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM outbox WHERE state = 'pending'").fetchone()[0]

    # ----------------------------------------------------------------- audit

    def audit(self, entry: AuditEntry) -> AuditEntry:
        cursor = self._write(
            """INSERT INTO audit (id, at, actor, role, action, stream_id, reason, viewed_content, event_id, details)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            (entry.id, entry.at, entry.actor, entry.role, entry.action, entry.stream_id, entry.reason,
             int(entry.viewed_content), entry.event_id, json.dumps(entry.details, sort_keys=True)),
        )  # fmt: skip
        return AuditEntry(**{**_fields(entry), "seq": cursor.lastrowid})

    def audit_log(self, after: int = 0, *, stream_id: str | None = None, limit: int = 100, newest: bool = False) -> list[AuditEntry]:
        """Entries after ``seq`` ``after``, oldest first; ``newest``: the last ``limit`` of them instead of the first."""
        clause, args = ("AND stream_id = ?", (stream_id,)) if stream_id is not None else ("", ())
        rows = self._db.execute(
            f"""SELECT seq, id, at, actor, role, action, stream_id, reason, viewed_content, event_id, details
                FROM audit WHERE seq > ? {clause} ORDER BY seq {'DESC' if newest else ''} LIMIT ?""",
            (after, *args, limit),
        ).fetchall()
        if newest:
            rows.reverse()
        return [
            AuditEntry(seq=r[0], id=r[1], at=r[2], actor=r[3], role=r[4], action=r[5], stream_id=r[6], reason=r[7],
                       viewed_content=bool(r[8]), event_id=r[9], details=json.loads(r[10]))
            for r in rows
        ]  # fmt: skip

    def viewed_since(self, actor: str, stream_id: str, since: float) -> bool:
        """Did ``actor`` view content of ``stream_id`` (an audited preview) since ``since``?"""
        row = self._db.execute(
            "SELECT 1 FROM audit WHERE actor = ? AND stream_id = ? AND action = 'preview' AND at >= ? LIMIT 1",
            (actor, stream_id, since),
        ).fetchone()
        return row is not None

    # ------------------------------------------------- allow list, revocations

    def allow(self, item: Allowed, actor: str, reason: str) -> None:
        self._write(
            "INSERT OR REPLACE INTO allowlist (signal, hash, stream_id, at, actor, reason) VALUES (?, ?, ?, ?, ?, ?)",
            (item.signal, item.hash, item.stream_id or "", time.time(), actor, reason),
        )

    def allowlist(self) -> list[Allowed]:
        rows = self._db.execute("SELECT signal, hash, stream_id FROM allowlist").fetchall()
        return [Allowed(signal, hash_, stream_id or None) for signal, hash_, stream_id in rows]

    def revoke(self, stream_id: str, key_sha256: str, actor: str) -> None:
        self._write(
            "INSERT OR IGNORE INTO revoked_keys (stream_id, key_sha256, at, actor) VALUES (?, ?, ?, ?)",
            (stream_id, key_sha256, time.time(), actor),
        )

    def revoked_keys(self) -> set[tuple[str, str]]:
        return set(self._db.execute("SELECT stream_id, key_sha256 FROM revoked_keys").fetchall())

    # ------------------------------------------------------------- retention

    def prune_events(self, before: float, limit: int) -> int:
        """Drop up to ``limit`` of the oldest events from before ``before`` (not one with a delivery
        still pending) and their outbox rows, in one transaction; returns how many.

        A batch at a time, because the caller is the event loop: a month of events at once
        would hold it for seconds.
        """
        return self._write(
            """DELETE FROM events WHERE seq IN (SELECT seq FROM events WHERE at < ? AND NOT EXISTS
               (SELECT 1 FROM outbox o WHERE o.event_seq = events.seq AND o.state = 'pending') ORDER BY at LIMIT ?)""",
            (before, limit),
        ).rowcount

    def prune_audit(self, before: float) -> int:
        """Drop audit entries from before ``before``; returns how many."""
        return self._write("DELETE FROM audit WHERE at < ?", (before,)).rowcount

    def _write(self, sql: str, args: Sequence[Any]) -> sqlite3.Cursor:
        """One statement in a transaction of its own (so the checkpointer counts it, see below)."""
        with self._transaction():
            return self._db.execute(sql, args)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
        if self._checkpointer is not None:  # every write comes through here: the checkpointer counts commits
            self._checkpointer.commits += 1
            if self._checkpointer.restart:
                self._restart_wal()

    def _restart_wal(self) -> None:
        """Copy what the checkpointer has not (see ``_Checkpointer``), so the next commit starts the WAL over."""
        try:
            done = _passive_checkpoint(self._db)
        except sqlite3.Error as exc:  # the commit stands; the next one tries again
            log.warning("event store checkpoint failed: %s", exc)
            return
        if done is not None and done[0] == done[1]:
            self._checkpointer.restart = False


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

    def __init__(self, path: str, *, interval: float = 0.2, batch: int = 64, quiet_seconds: float = 1.0,
                 restart_bytes: int = 16 * 2**20) -> None:  # fmt: skip
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
    busy, frames, copied = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()[0]  # all rows: a pending statement pins the WAL
    return None if busy else (frames, copied)


def _event(row: Sequence[Any]) -> Event:
    seq, id_, type_, stream_id, at, severity, body = row
    return Event(type=type_, stream_id=stream_id, severity=severity, data=json.loads(body), id=id_, at=at, seq=seq)


def _with_seq(event: Event, seq: int | None) -> Event:
    return Event(event.type, event.stream_id, event.severity, event.data, event.id, event.at, seq)


def _fields(entry: AuditEntry) -> dict[str, Any]:
    return {name: getattr(entry, name) for name in AuditEntry.__slots__}

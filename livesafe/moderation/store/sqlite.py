"""The store on one SQLite file: the parts of ``interfaces``, a class each, on one ``SqliteDatabase``.

Sharing the database is what keeps the event log and the outbox one unit: an event's
outbox rows are inserted in the event's transaction, a delivery joins its event, and
deleting an event cascades to its rows.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from livesafe.events import Event
from livesafe.moderation.store.interfaces import AccessLists, AuditLog, EventLog, NodeState, Outbox
from livesafe.moderation.store.records import Allowed, AuditEntry, Delivery
from livesafe.moderation.store.sqlite_db import SqliteDatabase


class SqliteStore:
    """The five parts on the file at ``path`` (``:memory:``: in memory, for tests), as ``build_proxy`` opens it."""

    def __init__(self, path: str | Path, **checkpoints: Any) -> None:
        """``checkpoints``: settings of the checkpoint thread (see ``sqlite_db._Checkpointer``), for tests."""
        self.database = SqliteDatabase(path, **checkpoints)  # public: tests and benchmarks look at its tables
        self.events: EventLog = SqliteEventLog(self.database)
        self.outbox: Outbox = SqliteOutbox(self.database)
        self.audit: AuditLog = SqliteAuditLog(self.database)
        self.access: AccessLists = SqliteAccessLists(self.database)
        self.state: NodeState = SqliteNodeState(self.database)

    def close(self) -> None:
        self.database.close()


class SqliteEventLog:
    """The event log: the ``events`` table; ``append`` inserts an event's outbox rows too, ``prune`` deletes them."""

    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    def append(self, event: Event, endpoints: Iterable[str] = (), now: float | None = None) -> Event:
        """Store ``event`` and queue it for ``endpoints`` in one transaction; returns it with its ``seq``."""
        body = _body(event)
        with self._db.transaction() as db:
            cursor = db.execute(
                "INSERT INTO events (id, type, stream_id, at, severity, body) VALUES (?, ?, ?, ?, ?, ?)",
                (event.id, event.type, event.stream_id, event.at, event.severity, body),
            )
            seq = cursor.lastrowid
            assert seq is not None  # an INSERT into a rowid table always sets it
            due = time.time() if now is None else now
            db.executemany(
                "INSERT INTO outbox (endpoint, event_seq, next_attempt) VALUES (?, ?, ?)",
                [(name, seq, due) for name in endpoints],
            )
        return event.stored_as(seq)

    def adopt(self, event: Event, endpoints: Iterable[str] = (), now: float | None = None) -> Event | None:
        """One transaction; ``INSERT OR IGNORE`` on the event's id and on each (endpoint, event) row."""
        with self._db.transaction() as db:
            cursor = db.execute(
                "INSERT OR IGNORE INTO events (id, type, stream_id, at, severity, body) VALUES (?, ?, ?, ?, ?, ?)",
                (event.id, event.type, event.stream_id, event.at, event.severity, _body(event)),
            )
            new = cursor.rowcount == 1
            seq = (
                cursor.lastrowid
                if new
                else db.execute("SELECT seq FROM events WHERE id = ?", (event.id,)).fetchone()[0]
            )
            assert seq is not None
            due = time.time() if now is None else now
            db.executemany(
                "INSERT OR IGNORE INTO outbox (endpoint, event_seq, next_attempt) VALUES (?, ?, ?)",
                [(name, seq, due) for name in endpoints],
            )
        return event.stored_as(seq) if new else None

    def count(self, after: int, *, origin: str, limit: int) -> int:
        return self._db.connection.execute(
            "SELECT COUNT(*) FROM (SELECT 1 FROM events WHERE seq > ? AND json_extract(body, '$.node') = ? LIMIT ?)",
            (after, origin, limit),
        ).fetchone()[0]

    def get(self, event_id: str) -> Event | None:
        rows = self._select("WHERE id = ?", (event_id,), 1)
        return rows[0] if rows else None

    def seq_of(self, event_id: str) -> int | None:
        row = self._db.connection.execute("SELECT seq FROM events WHERE id = ?", (event_id,)).fetchone()
        return row[0] if row else None

    def last_seq(self) -> int:
        row = self._db.connection.execute("SELECT MAX(seq) FROM events").fetchone()
        return row[0] or 0

    def read(
        self,
        after: int = 0,
        *,
        stream_id: str | None = None,
        types: Sequence[str] = (),
        since_time: float | None = None,
        origin: str | None = None,
        severities: Sequence[str] = (),
        limit: int = 100,
    ) -> list[Event]:
        where, args = self._filters(stream_id, types, since_time, severities)
        if origin is not None:
            where, args = f"{where} AND json_extract(body, '$.node') = ?", (*args, origin)
        return self._select("WHERE seq > ? " + where + " ORDER BY seq", (after, *args), limit)

    def read_before(
        self,
        before: int,
        *,
        stream_id: str | None = None,
        types: Sequence[str] = (),
        since_time: float | None = None,
        severities: Sequence[str] = (),
        limit: int = 100,
    ) -> list[Event]:
        where, args = self._filters(stream_id, types, since_time, severities)
        newest = self._select("WHERE seq < ? " + where + " ORDER BY seq DESC", (before, *args), limit)
        return newest[::-1]

    def latest(self, stream_id: str, types: Sequence[str]) -> Event | None:
        marks = ",".join("?" * len(types))
        rows = self._select(f"WHERE stream_id = ? AND type IN ({marks}) ORDER BY seq DESC", (stream_id, *types), 1)
        return rows[0] if rows else None

    def prune(self, before: float, limit: int) -> int:
        """One transaction; the outbox rows go by ``ON DELETE CASCADE``."""
        return self._db.write(
            """DELETE FROM events WHERE seq IN (SELECT seq FROM events WHERE at < ? AND NOT EXISTS
               (SELECT 1 FROM outbox o WHERE o.event_seq = events.seq AND o.state = 'pending') ORDER BY at LIMIT ?)""",
            (before, limit),
        ).rowcount

    @staticmethod
    def _filters(
        stream_id: str | None, types: Sequence[str], since_time: float | None, severities: Sequence[str] = ()
    ) -> tuple[str, tuple[Any, ...]]:
        where: list[str] = []
        args: list[Any] = []
        if stream_id is not None:
            where.append("stream_id = ?")
            args.append(stream_id)
        for column, values in (("type", types), ("severity", severities)):
            if values:
                where.append(f"{column} IN ({','.join('?' * len(values))})")
                args.extend(values)
        if since_time is not None:
            where.append("at >= ?")
            args.append(since_time)
        return "".join(f" AND {w}" for w in where), tuple(args)

    def _select(self, clause: str, args: tuple[Any, ...], limit: int) -> list[Event]:
        rows = self._db.connection.execute(
            f"SELECT seq, id, type, stream_id, at, severity, body FROM events {clause} LIMIT ?", (*args, limit)
        ).fetchall()
        return [_event(row) for row in rows]


class SqliteOutbox:
    """The outbox: the ``outbox`` table (rows inserted by ``SqliteEventLog.append``) and its ``outbox_counts``."""

    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    def due(self, now: float, endpoints: Sequence[str], limit: int = 100) -> list[Delivery]:
        if not endpoints:
            return []
        rows = self._db.connection.execute(
            f"""SELECT o.endpoint, o.attempts, e.seq, e.id, e.type, e.stream_id, e.at, e.severity, e.body
                FROM outbox o JOIN events e ON e.seq = o.event_seq
                WHERE o.state = 'pending' AND o.next_attempt <= ?
                AND o.endpoint IN ({",".join("?" * len(endpoints))})
                ORDER BY o.event_seq LIMIT ?""",
            (now, *endpoints, limit),
        ).fetchall()
        return [Delivery(_event(row[2:]), row[0], row[1]) for row in rows]

    def next_due(self, endpoints: Sequence[str]) -> float | None:
        if not endpoints:
            return None
        marks = ",".join("?" * len(endpoints))
        row = self._db.connection.execute(
            f"SELECT MIN(next_attempt) FROM outbox WHERE state = 'pending' AND endpoint IN ({marks})", tuple(endpoints)
        ).fetchone()
        return row[0]

    def delivered(self, delivery: Delivery, now: float) -> None:
        self._finish(delivery, "delivered", None, now)

    def failed(self, delivery: Delivery, error: str, now: float) -> None:
        self._finish(delivery, "failed", error, now)

    def retry(self, delivery: Delivery, error: str, at: float) -> None:
        self._db.write(
            """UPDATE outbox SET attempts = attempts + 1, next_attempt = ?, last_error = ?
               WHERE endpoint = ? AND event_seq = ?""",
            (at, error, delivery.endpoint, delivery.event.seq),
        )

    def due_now(self, endpoint: str, now: float) -> None:
        self._db.write(
            "UPDATE outbox SET next_attempt = ? WHERE endpoint = ? AND state = 'pending' AND next_attempt > ?",
            (now, endpoint, now),
        )

    def _finish(self, delivery: Delivery, state: str, error: str | None, now: float) -> None:
        self._db.write(
            """UPDATE outbox SET state = ?, attempts = attempts + 1, last_error = COALESCE(?, last_error),
               finished_at = ? WHERE endpoint = ? AND event_seq = ?""",
            (state, error, now, delivery.endpoint, delivery.event.seq),
        )

    def counts(self) -> dict[str, dict[str, Any]]:
        """From ``outbox_counts`` (kept by triggers) and one indexed read per endpoint: no scan of the outbox."""
        out: dict[str, dict[str, Any]] = {}
        for endpoint, state, count in self._db.connection.execute("SELECT endpoint, state, count FROM outbox_counts"):
            out.setdefault(endpoint, {"pending": 0, "delivered": 0, "failed": 0})[state] = count
        for endpoint in list(out):
            row = self._db.connection.execute(
                """SELECT last_error FROM outbox WHERE endpoint = ? AND last_error IS NOT NULL
                   ORDER BY event_seq DESC LIMIT 1""",
                (endpoint,),
            ).fetchone()
            if row is not None:
                out[endpoint]["last_error"] = row[0]
        return out

    def abandon(self, configured: Sequence[str], now: float) -> int:
        marks = ",".join("?" * len(configured))
        return self._db.write(
            f"""UPDATE outbox SET state = 'failed', last_error = 'endpoint no longer configured', finished_at = ?
                WHERE state = 'pending' AND endpoint NOT IN ({marks})""",
            (now, *configured),
        ).rowcount

    def pending(self) -> int:
        return self._db.connection.execute("SELECT COUNT(*) FROM outbox WHERE state = 'pending'").fetchone()[0]


class SqliteAuditLog:
    """The audit log: the ``audit`` table."""

    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    def append(self, entry: AuditEntry) -> AuditEntry:
        cursor = self._db.write(
            """INSERT INTO audit (id, at, actor, role, action, stream_id, reason, viewed_content, event_id, details)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            (
                entry.id,
                entry.at,
                entry.actor,
                entry.role,
                entry.action,
                entry.stream_id,
                entry.reason,
                int(entry.viewed_content),
                entry.event_id,
                json.dumps(entry.details, sort_keys=True),
            ),
        )
        return AuditEntry(**{**_fields(entry), "seq": cursor.lastrowid})

    def read(
        self, after: int = 0, *, stream_id: str | None = None, limit: int = 100, newest: bool = False
    ) -> list[AuditEntry]:
        clause, args = ("AND stream_id = ?", (stream_id,)) if stream_id is not None else ("", ())
        rows = self._db.connection.execute(
            f"""SELECT seq, id, at, actor, role, action, stream_id, reason, viewed_content, event_id, details
                FROM audit WHERE seq > ? {clause} ORDER BY seq {"DESC" if newest else ""} LIMIT ?""",
            (after, *args, limit),
        ).fetchall()
        if newest:
            rows.reverse()
        return [
            AuditEntry(
                seq=r[0],
                id=r[1],
                at=r[2],
                actor=r[3],
                role=r[4],
                action=r[5],
                stream_id=r[6],
                reason=r[7],
                viewed_content=bool(r[8]),
                event_id=r[9],
                details=json.loads(r[10]),
            )
            for r in rows
        ]

    def viewed_since(self, actor: str, stream_id: str, since: float) -> bool:
        row = self._db.connection.execute(
            "SELECT 1 FROM audit WHERE actor = ? AND stream_id = ? AND action = 'preview' AND at >= ? LIMIT 1",
            (actor, stream_id, since),
        ).fetchone()
        return row is not None

    def prune(self, before: float) -> int:
        return self._db.write("DELETE FROM audit WHERE at < ?", (before,)).rowcount


class SqliteAccessLists:
    """The allow list and the revoked stream keys: the ``allowlist`` and ``revoked_keys`` tables."""

    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    def allow(self, item: Allowed, actor: str, reason: str) -> None:
        self._db.write(
            "INSERT OR REPLACE INTO allowlist (signal, hash, stream_id, at, actor, reason) VALUES (?, ?, ?, ?, ?, ?)",
            (item.signal, item.hash, item.stream_id or "", time.time(), actor, reason),
        )

    def allowlist(self) -> list[Allowed]:
        rows = self._db.connection.execute("SELECT signal, hash, stream_id FROM allowlist").fetchall()
        return [Allowed(signal, hash_, stream_id or None) for signal, hash_, stream_id in rows]

    def revoke(self, stream_id: str, key_sha256: str, actor: str) -> None:
        self._db.write(
            "INSERT OR IGNORE INTO revoked_keys (stream_id, key_sha256, at, actor) VALUES (?, ?, ?, ?)",
            (stream_id, key_sha256, time.time(), actor),
        )

    def revoked_keys(self) -> set[tuple[str, str]]:
        return set(self._db.connection.execute("SELECT stream_id, key_sha256 FROM revoked_keys").fetchall())


class SqliteNodeState:
    """Named values of this node: the ``state`` table."""

    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    def get(self, key: str) -> str | None:
        row = self._db.connection.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def put(self, key: str, value: str) -> None:
        self._db.write("INSERT OR REPLACE INTO state (key, value) VALUES (?, ?)", (key, value))


def _fields(entry: AuditEntry) -> dict[str, Any]:
    return {name: getattr(entry, name) for name in AuditEntry.__slots__}


# How an Event is kept in an ``events`` row and read back: here and nowhere else.  A row is the
# event's one shape (``Event.to_dict``) with the fields SQL filters on as columns and the rest as
# the JSON body; reading puts them back together through ``Event.from_dict``.
_COLUMNS = ("seq", "id", "type", "stream_id", "at", "severity")


def _body(event: Event) -> str:
    record = event.to_dict()
    for key in _COLUMNS:
        del record[key]
    return json.dumps(record, separators=(",", ":"), sort_keys=True)


def _event(row: Sequence[Any]) -> Event:
    *columns, body = row
    return Event.from_dict(json.loads(body) | dict(zip(_COLUMNS, columns, strict=True)))

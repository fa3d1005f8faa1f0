"""Banks in the event store's SQLite file: per content its hashes and where they came from, never the content.

Tables: ``banks`` (each bank's ``version``, bumped by every change in the
change's own transaction: what a bank list source polls, one indexed read),
``bank_contents`` (what was banked: content id, image or video, the SHA-256
of the bytes, who added it and when) and ``bank_hashes`` (one row per view
and signal: the hash, the view, the frame time of a video's frame, the
view's quality).  No pixels, no thumbnails, no file names (a name can say
whom a picture shows).

One connection, serialised by a lock, as ``SourceState`` does: the bank's list
source reads it on the list thread, the HTTP API and the CLI write it.  Each
write is one short transaction; a bank list reads its rows in one read
transaction, so it never sees half of a change.  The tables' schema is in
``livesafe.moderation.store.schema`` with the rest of the file's.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from livesafe.lists.sources.state import Entry
from livesafe.moderation.store.schema import connect

if TYPE_CHECKING:  # media reads video through livesafe.scan, which imports the lists: only its type here
    from livesafe.banks.media import HashedContent

BANK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
CONTENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")


class BankConflict(ValueError):
    """The content id, or the very same file, is in the bank already."""


@dataclass(frozen=True, slots=True)
class BankContent:
    """One banked image or video as the bank describes it (no hash values: ``GET`` answers stay small)."""

    bank: str
    content_id: str
    kind: str
    sha256: str
    frames: int
    views: int
    hashes: int
    added_by: str
    added_at: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "bank": self.bank,
            "content_id": self.content_id,
            "kind": self.kind,
            "sha256": self.sha256,
            "frames": self.frames,
            "views": self.views,
            "hashes": self.hashes,
            "added_by": self.added_by,
            "added_at": self.added_at,
        }


@dataclass(frozen=True, slots=True)
class BankSummary:
    name: str
    version: int
    changed_at: float
    contents: int
    hashes: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "changed_at": self.changed_at,
            "contents": self.contents,
            "hashes": self.hashes,
        }


def check_bank_name(name: str) -> str:
    if not isinstance(name, str) or not BANK_NAME.fullmatch(name):
        raise ValueError(f"bank name {name!r}: expected 1-64 letters, digits, '.', '_' or '-'")
    return name


def check_content_id(content_id: str) -> str:
    if not isinstance(content_id, str) or not CONTENT_ID.fullmatch(content_id):
        raise ValueError(f"content id {content_id!r}: expected 1-128 letters, digits, '.', '_', ':' or '-'")
    return content_id


class BankStore:
    """The banks in the SQLite file at ``database`` (``":memory:"``: this connection only, for tests)."""

    def __init__(self, database: str | Path) -> None:
        self._db = connect(database)  # the event store's file, its schema migrated
        self._lock = threading.Lock()

    def add(self, bank: str, items: Sequence[tuple[str, HashedContent]], actor: str) -> list[BankContent]:
        """Bank every ``(content id, content)`` of ``items`` in one transaction, or none (BankConflict)."""
        check_bank_name(bank)
        now = time.time()
        ids = [check_content_id(content_id) for content_id, _ in items]
        if len(set(ids)) != len(ids):
            raise BankConflict(f"bank {bank!r}: the same content id twice in one add")
        shas = [content.sha256 for _, content in items]
        if len(set(shas)) != len(shas):
            raise BankConflict(f"bank {bank!r}: the same file twice in one add")
        added = []
        with self._write() as db:
            for content_id, content in items:
                taken = db.execute(
                    "SELECT content_id FROM bank_contents WHERE bank = ? AND (content_id = ? OR sha256 = ?)",
                    (bank, content_id, content.sha256),
                ).fetchone()
                if taken is not None and taken[0] == content_id:
                    raise BankConflict(f"bank {bank!r}: content id {content_id!r} is banked already")
                if taken is not None:
                    raise BankConflict(f"bank {bank!r}: this file is banked already, as content id {taken[0]!r}")
                views = len({(h.view, t) for h, t in content.hashes})
                db.execute(
                    "INSERT INTO bank_contents (bank, content_id, kind, sha256, frames, views, added_by, added_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (bank, content_id, content.kind, content.sha256, content.frames, views, actor, now),
                )
                db.executemany(
                    "INSERT INTO bank_hashes (bank, content_id, signal, hash, view, frame_time, quality) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [(bank, content_id, h.signal, h.hash, h.view, t, h.quality) for h, t in content.hashes],
                )
                added.append(
                    BankContent(
                        bank, content_id, content.kind, content.sha256, content.frames, views,
                        len(content.hashes), actor, now,
                    )
                )  # fmt: skip
            self._bump(db, bank, now)
        return added

    def remove(self, bank: str, content_id: str) -> BankContent | None:
        """Take the content and its hashes out of the bank; None if it is not there."""
        with self._write() as db:
            found = self._contents(db, bank, content_id)
            if not found:
                return None
            db.execute("DELETE FROM bank_hashes WHERE bank = ? AND content_id = ?", (bank, content_id))
            db.execute("DELETE FROM bank_contents WHERE bank = ? AND content_id = ?", (bank, content_id))
            self._bump(db, bank, time.time())
        return found[0]

    def banks(self) -> list[BankSummary]:
        with self._lock:
            rows = self._db.execute(
                "SELECT b.name, b.version, b.changed_at, "
                "(SELECT COUNT(*) FROM bank_contents c WHERE c.bank = b.name), "
                "(SELECT COUNT(*) FROM bank_hashes h WHERE h.bank = b.name) FROM banks b ORDER BY b.name"
            ).fetchall()
        return [BankSummary(*row) for row in rows]

    def contents(self, bank: str) -> list[BankContent] | None:
        """What the bank holds, oldest first; None if there is no such bank."""
        with self._lock:
            if self._db.execute("SELECT 1 FROM banks WHERE name = ?", (bank,)).fetchone() is None:
                return None
            return self._contents(self._db, bank)

    def version(self, bank: str) -> int | None:
        with self._lock:
            row = self._db.execute("SELECT version FROM banks WHERE name = ?", (bank,)).fetchone()
        return row[0] if row else None

    def snapshot(self, bank: str) -> tuple[int, list[Entry]] | None:
        """(version, rows as a list source's entries) read together; None if there is no such bank.

        Each row's metadata names the bank, the content id (``entry``: what
        ``/api/lookup`` answers as HMA's ``bank_content_id``), the view and, for
        a video, the frame's time.
        """
        with self._lock:
            self._db.execute("BEGIN")
            try:
                row = self._db.execute("SELECT version FROM banks WHERE name = ?", (bank,)).fetchone()
                rows = self._db.execute(
                    "SELECT content_id, signal, hash, view, frame_time FROM bank_hashes WHERE bank = ? "
                    "ORDER BY content_id, rowid",
                    (bank,),
                ).fetchall()
            finally:
                self._db.execute("COMMIT")
        if row is None:
            return None
        entries: list[Entry] = []
        for content_id, signal, hex_text, view, frame_time in rows:
            meta = {"bank": bank, "entry": content_id, "content_id": content_id, "view": view}
            if frame_time is not None:
                meta["frame_time"] = f"{frame_time:.3f}"
            entries.append((signal, hex_text, meta))
        return row[0], entries

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """The lock held and ``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on any error)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    @staticmethod
    def _bump(db: sqlite3.Connection, bank: str, now: float) -> None:
        db.execute(
            "INSERT INTO banks (name, version, changed_at) VALUES (?, 1, ?) "
            "ON CONFLICT (name) DO UPDATE SET version = version + 1, changed_at = excluded.changed_at",
            (bank, now),
        )

    @staticmethod
    def _contents(db: sqlite3.Connection, bank: str, content_id: str | None = None) -> list[BankContent]:
        where, args = ("AND c.content_id = ?", (bank, content_id)) if content_id is not None else ("", (bank,))
        rows = db.execute(
            "SELECT c.bank, c.content_id, c.kind, c.sha256, c.frames, c.views, "
            "(SELECT COUNT(*) FROM bank_hashes h WHERE h.bank = c.bank AND h.content_id = c.content_id), "
            f"c.added_by, c.added_at FROM bank_contents c WHERE c.bank = ? {where} ORDER BY c.added_at, c.content_id",
            args,
        ).fetchall()
        return [BankContent(*row) for row in rows]

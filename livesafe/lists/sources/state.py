"""What list sources keep between runs, in the event store's SQLite file.

An exchange is read as deltas from a checkpoint; a restart that forgot the
checkpoint would refetch everything (NCMEC's full history is millions of
entries, hours of paging), and one that kept the checkpoint but not the
entries would enforce nothing.  So both are kept, per source, and a page of a
delta is applied to them in one transaction: after a crash the source resumes
at the last page it saved, with exactly the entries that page left.  A URL
source keeps its last good download the same way, so a restart while the URL
is down still enforces the list.

One connection, serialised by a lock: sources are polled on one thread, but
status readers may ask from another.  The tables' schema is in
``livesafe.moderation.store.schema`` with the rest of the file's.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from livesafe.moderation.store.schema import connect

Entry = tuple[str, str, Mapping[str, str]]  # signal name, hash hex, metadata


class SourceState:
    """Checkpoints, entries and last good copies of list sources; ``":memory:"`` keeps them for this run only."""

    def __init__(self, database: str | Path = ":memory:") -> None:
        self._db = connect(database)  # the event store's file, its schema migrated
        self._lock = threading.Lock()

    def checkpoint(self, source: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute(
                "SELECT checkpoint FROM list_source_checkpoints WHERE source = ?", (source,)
            ).fetchone()
        return json.loads(row[0]) if row else None

    def entries(self, source: str) -> Iterator[tuple[str, Entry]]:
        """``(key, (signal, hex, metadata))`` of every entry the source's saved deltas left."""
        with self._lock:
            rows = self._db.execute(
                "SELECT key, signal, hash, metadata FROM list_source_entries WHERE source = ? ORDER BY key", (source,)
            ).fetchall()
        for key, signal, hex_text, metadata in rows:
            yield key, (signal, hex_text, json.loads(metadata))

    def apply(
        self,
        source: str,
        checkpoint: Mapping[str, Any],
        upserts: Mapping[str, Entry],
        deletes: Iterable[str] = (),
        *,
        replace: bool = False,
    ) -> None:
        """Save one delta and the checkpoint after it, atomically; ``replace``: the delta is the whole list."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                if replace:
                    self._db.execute("DELETE FROM list_source_entries WHERE source = ?", (source,))
                self._db.executemany(
                    "DELETE FROM list_source_entries WHERE source = ? AND key = ?", ((source, k) for k in deletes)
                )
                self._db.executemany(
                    "INSERT OR REPLACE INTO list_source_entries (source, key, signal, hash, metadata) "
                    "VALUES (?, ?, ?, ?, ?)",
                    ((source, k, s, h, json.dumps(dict(m), sort_keys=True)) for k, (s, h, m) in upserts.items()),
                )
                self._db.execute(
                    "INSERT OR REPLACE INTO list_source_checkpoints (source, checkpoint) VALUES (?, ?)",
                    (source, json.dumps(dict(checkpoint), sort_keys=True)),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def copy(self, source: str) -> tuple[bytes, dict[str, Any]] | None:
        """The last good download saved by ``keep_copy``, with what was said about it (ETag, signature...)."""
        with self._lock:
            row = self._db.execute("SELECT body, meta FROM list_source_copies WHERE source = ?", (source,)).fetchone()
        return (bytes(row[0]), json.loads(row[1])) if row else None

    def keep_copy(self, source: str, body: bytes, meta: Mapping[str, Any]) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO list_source_copies (source, body, meta) VALUES (?, ?, ?)",
                (source, body, json.dumps(dict(meta), sort_keys=True)),
            )

    def forget(self, source: str) -> None:
        """Drop everything kept for ``source`` (its next fetch starts from scratch)."""
        with self._lock:
            for table in ("list_source_checkpoints", "list_source_entries", "list_source_copies"):
                self._db.execute(f"DELETE FROM {table} WHERE source = ?", (source,))  # noqa: S608 - fixed names

    def close(self) -> None:
        with self._lock:
            self._db.close()

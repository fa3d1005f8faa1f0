"""Exchanges read as deltas from a checkpoint: the shared part of NCMEC, StopNCII, ThreatExchange and HMA sources.

A subclass says how to walk its API from a checkpoint (``deltas``: pages of
added/changed entries and tombstones, each with the checkpoint after it); this
class applies each page to the entries kept in ``SourceState`` together with
its checkpoint, in one transaction, so a restart resumes where the last saved
page left off and a crash mid-fetch loses nothing.  The Blocklist is rebuilt
from the entries when a fetch changed any (a page that only re-reads what is
kept, as an API resumed at an inclusive time does, changes nothing).

Entries from an exchange are checked like file lines, but a bad one (wrong
length, unknown signal) is skipped and reported, not fatal: refusing a whole
exchange for one malformed upstream entry would stop every later update.
Guards against a source that misbehaves: a page whose checkpoint does not
move ends the fetch with an error (an API repeating its "next" link), and one
fetch reads at most ``MAX_PAGES`` pages (the rest on the next poll).
"""

from __future__ import annotations

import hashlib
import json
from abc import abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from livesafe.lists.loader import build_blocklist
from livesafe.lists.model import Blocklist, BlocklistError, ListSpec
from livesafe.lists.sources.base import Source, SourceContext
from livesafe.lists.sources.state import Entry


@dataclass(frozen=True)
class Delta:
    """One page of changes and the checkpoint that resumes after it.

    ``replace``: the page starts the list afresh (a full snapshot, or the
    source told us our checkpoint is too old).
    """

    checkpoint: Mapping[str, Any]
    upserts: Mapping[str, Entry] = field(default_factory=dict)
    deletes: frozenset[str] = frozenset()
    replace: bool = False


class DeltaSource(Source):
    MAX_PAGES: ClassVar[int] = 10_000
    DEFAULT_POLL_SECONDS = 300.0

    def __init__(self, spec: ListSpec, context: SourceContext) -> None:
        super().__init__(spec, context)
        self._entries: dict[str, Entry] | None = None  # loaded from the state store on first use
        self._built = False

    @abstractmethod
    def deltas(self, checkpoint: Mapping[str, Any] | None) -> Iterator[Delta]:
        """Pages of changes since ``checkpoint`` (None: from the beginning); raises BlocklistError."""

    def fetch(self, skip_bad_lines: bool) -> Blocklist | None:
        entries = self._known()
        checkpoint: Mapping[str, Any] | None = self.context.state.checkpoint(self.spec.name)
        changed = not self._built
        for pages, delta in enumerate(self.deltas(checkpoint), 1):
            if pages > self.MAX_PAGES:
                break  # the rest next poll, from the checkpoint saved
            if checkpoint is not None and dict(delta.checkpoint) == dict(checkpoint) and not delta.replace:
                raise BlocklistError(self.spec.where, f"page {pages} did not move the checkpoint; the source repeats")
            self.context.state.apply(
                self.spec.name, delta.checkpoint, delta.upserts, delta.deletes, replace=delta.replace
            )
            changed = changed or delta.replace or _changes(entries, delta)
            if delta.replace:
                entries.clear()
            for key in delta.deletes:
                entries.pop(key, None)
            entries.update(delta.upserts)
            checkpoint = delta.checkpoint
        if not changed:
            return None
        return self._build(checkpoint)

    def restore(self, skip_bad_lines: bool) -> Blocklist | None:
        checkpoint = self.context.state.checkpoint(self.spec.name)
        return self._build(checkpoint) if checkpoint is not None else None

    def _known(self) -> dict[str, Entry]:
        if self._entries is None:
            self._entries = dict(self.context.state.entries(self.spec.name))
        return self._entries

    def _build(self, checkpoint: Mapping[str, Any] | None) -> Blocklist:
        entries = self._known()
        version = hashlib.sha256(json.dumps(checkpoint or {}, sort_keys=True).encode()).hexdigest()[:16]
        keys = sorted(entries)
        rows = [entries[key] for key in keys]
        blocklist = build_blocklist(
            self.spec,
            [
                (signal, hex_text, {**meta, "entry": key})
                for key, (signal, hex_text, meta) in zip(keys, rows, strict=True)
            ],
            version,
            skip_bad_rows=True,
        )
        self._built = True
        return blocklist


def _changes(entries: Mapping[str, Entry], delta: Delta) -> bool:
    """Does ``delta`` change ``entries``?  An API resumed at an inclusive time re-reads what it sent last."""
    return any(key in entries for key in delta.deletes) or any(
        entries.get(key) != (signal, hex_text, dict(meta)) for key, (signal, hex_text, meta) in delta.upserts.items()
    )

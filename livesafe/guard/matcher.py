"""Blocklists compiled for matching, and the live, hot-reloaded set of them.

A ``Matcher`` is an immutable snapshot: one ``HammingIndex`` per (list,
signal).  ``LiveMatcher`` owns the list files; when one changes it builds a
whole new ``Matcher`` off the frame path and swaps a single reference, so a
stream never sees a half-loaded list and never waits for a reload.  A reload
that fails keeps the previous lists and reports why.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from livesafe.guard.regions import Region
from livesafe.index import HammingIndex
from livesafe.lists import Blocklist, BlocklistError, ListSource, ListSpec
from livesafe.signals import RegionHashes, signal_named

log = logging.getLogger(__name__)

ORIENTATIONS = ("original", "rotate90", "rotate180", "rotate270", "flip_x", "flip_y", "flip_plus1", "flip_minus1")


@dataclass(frozen=True, slots=True)
class Match:
    list_name: str
    category: str
    action: str
    signal: str
    distance: int
    matched_hash: str
    query_hash: str
    region: Region
    orientation: str
    quality: int
    metadata: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class _CompiledList:
    blocklist: Blocklist
    indexes: Mapping[str, HammingIndex]


class Matcher:
    def __init__(self, blocklists: Sequence[Blocklist]) -> None:
        self._lists = [
            _CompiledList(
                bl,
                {signal: HammingIndex(hashes, bl.spec.threshold_for(signal)) for signal, hashes in bl.hashes.items() if len(hashes)},
            )
            for bl in blocklists
        ]
        self.signals: frozenset[str] = frozenset(s for c in self._lists for s in c.indexes)
        self.versions: dict[str, str] = {bl.spec.name: bl.version for bl in blocklists}

    @property
    def blocklists(self) -> list[Blocklist]:
        return [c.blocklist for c in self._lists]

    def match(self, hashed: Sequence[tuple[Region, str, RegionHashes]]) -> list[Match]:
        """The best match per list among all hashed regions and orientations.

        Regions below their signal's quality floor are not queried at all: a
        flat or black picture says nothing and must never match.
        """
        best: dict[str, Match] = {}
        for signal_name in self.signals:
            signal = signal_named(signal_name)
            owners: list[tuple[Region, int, RegionHashes]] = []
            rows: list[np.ndarray] = []
            for region, name, hashes in hashed:
                if name != signal_name or hashes.quality < signal.min_quality:
                    continue
                for k in range(len(hashes.variants)):
                    owners.append((region, k, hashes))
                rows.append(hashes.variants)
            if not rows:
                continue
            queries = np.concatenate(rows)
            for compiled in self._lists:
                index = compiled.indexes.get(signal_name)
                if index is None:
                    continue
                found, distance = index.nearest(queries)
                for q in np.flatnonzero(found >= 0):
                    spec = compiled.blocklist.spec
                    current = best.get(spec.name)
                    if current is not None and current.distance <= distance[q]:
                        continue
                    region, k, hashes = owners[q]
                    row = int(found[q])
                    best[spec.name] = Match(
                        list_name=spec.name,
                        category=spec.category,
                        action=spec.action,
                        signal=signal_name,
                        distance=int(distance[q]),
                        matched_hash=signal.format_hex(compiled.blocklist.hashes[signal_name][row]),
                        query_hash=signal.format_hex(hashes.variants[k]),
                        region=region,
                        orientation=ORIENTATIONS[k] if len(hashes.variants) == len(ORIENTATIONS) else "original",
                        quality=hashes.quality,
                        metadata=compiled.blocklist.entry_metadata(signal_name, row),
                    )
        return sorted(best.values(), key=lambda m: m.distance)


class LiveMatcher:
    """The current ``Matcher`` for a set of list files, reloaded when they change."""

    def __init__(self, specs: Sequence[ListSpec], *, skip_bad_lines: bool = False) -> None:
        self._sources = [ListSource(spec) for spec in specs]
        self._skip_bad_lines = skip_bad_lines
        self._reload_lock = threading.Lock()
        # Loading at start-up raises: a bad list must stop the service, not run it unguarded.
        self._loaded = [source.load(skip_bad_lines=skip_bad_lines) for source in self._sources]
        self.current = Matcher(self._loaded)

    def reload_if_changed(self) -> list[str]:
        """Reload changed lists; returns one message per list reloaded or refused.

        Safe to call from a worker thread while streams read ``current``.
        """
        messages: list[str] = []
        with self._reload_lock:
            changed = False
            loaded = list(self._loaded)
            for i, source in enumerate(self._sources):
                if not source.changed():
                    continue
                try:
                    loaded[i] = source.load(skip_bad_lines=self._skip_bad_lines)
                except (BlocklistError, OSError) as exc:
                    messages.append(f"kept previous version of list {source.spec.name!r}: {exc}")
                    continue
                changed = True
                messages.append(f"reloaded list {source.spec.name!r}: {len(loaded[i])} hashes, version {loaded[i].version}")
            if changed:
                matcher = Matcher(loaded)
                self._loaded = loaded
                self.current = matcher  # one reference assignment: atomic for readers
        for message in messages:
            log.info("%s", message)
        return messages


class ListWatcher:
    """Polls a ``LiveMatcher``'s files every ``interval`` seconds on a daemon thread.

    Reloading parses and indexes off the frame path; streams keep matching
    against the old lists until the new ``Matcher`` is swapped in whole.
    """

    def __init__(self, lists: LiveMatcher, interval: float) -> None:
        if interval <= 0:
            raise ValueError("reload interval must be positive")
        self._lists = lists
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="livesafe-list-watcher", daemon=True)

    def start(self) -> "ListWatcher":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self._interval + 5)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._lists.reload_if_changed()
            except Exception:  # noqa: BLE001 - the watcher must outlive any one bad reload
                log.exception("list reload failed; keeping the current lists")

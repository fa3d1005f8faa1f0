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
from typing import Any, Mapping, Sequence

import numpy as np

from livesafe.guard.search import ORIENTATIONS
from livesafe.index import HammingIndex
from livesafe.lists import Blocklist, BlocklistError, ListSource, ListSpec
from livesafe.signals import RegionHashes, signal_named

log = logging.getLogger(__name__)



@dataclass(frozen=True, slots=True)
class Match:
    list_name: str
    category: str
    action: str
    signal: str
    distance: int
    matched_hash: str
    query_hash: str
    region: tuple[int, int, int, int]  # x, y, w, h of the part of the frame that matched
    region_kind: str
    orientation: str
    quality: int
    metadata: Mapping[str, str]
    view: Any = None  # the search's View that matched (to look for the same picture in nearby frames)
    target: Any = None  # the matched entry's hash bytes
    near_distance: int = 0  # nearby frames within this of ``target`` in ``view`` show the same picture


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

    def lookup(self, signal: str, queries: np.ndarray, margin: int = 0) -> list[tuple[int, int, int, int]]:
        """(query, list, row, distance) of entries within each list's threshold + ``margin`` of each query.

        Within the threshold the answer is exact (every query's nearest entry);
        beyond it, up to ``margin`` more bits, it is the index's best effort:
        near hits only tell the search which views to refine.
        """
        found: list[tuple[int, int, int, int]] = []
        if len(queries) == 0:
            return found
        for li, compiled in enumerate(self._lists):
            index = compiled.indexes.get(signal)
            if index is None:
                continue
            radius = compiled.blocklist.spec.threshold_for(signal) + margin
            q, rows, dist = index.within(queries, radius, limit=2)
            found += [(int(a), li, int(b), int(c)) for a, b, c in zip(q, rows, dist)]
        return found

    def entry_hash(self, signal: str, list_index: int, row: int) -> np.ndarray:
        return self._lists[list_index].blocklist.hashes[signal][row]

    def threshold(self, signal: str, list_index: int) -> int:
        return self._lists[list_index].blocklist.spec.threshold_for(signal)

    def make_match(
        self,
        signal_name: str,
        list_index: int,
        row: int,
        distance: int,
        view: Any,
        orientation: int,
        quality: int,
        query: np.ndarray,
        width: int,
        height: int,
        margin: int,
    ) -> Match:
        blocklist = self._lists[list_index].blocklist
        signal = signal_named(signal_name)
        target = blocklist.hashes[signal_name][row]
        return Match(
            list_name=blocklist.spec.name,
            category=blocklist.spec.category,
            action=blocklist.spec.action,
            signal=signal_name,
            distance=int(distance),
            matched_hash=signal.format_hex(target),
            query_hash=signal.format_hex(query),
            region=view.bounds(width, height),
            region_kind=view.kind,
            orientation=ORIENTATIONS[orientation],
            quality=int(quality),
            metadata=blocklist.entry_metadata(signal_name, row),
            view=view,
            target=target,
            near_distance=blocklist.spec.threshold_for(signal_name) + margin,
        )


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

"""Blocklists compiled for matching.

A ``Matcher`` is an immutable snapshot: one ``HammingIndex`` per (list,
signal).  Loading and hot reload belong to ``livesafe.lists.live``;
``LiveMatcher`` is those live lists compiled into a ``Matcher`` at each change.

A list whose action is ``allow`` is a *negative* list (HMA's negative banks):
a hash within its threshold of an allow entry matches no blocklist, whatever
the blocklists say.  That is how a platform takes a known false positive (a
logo, a test card, a popular meme that collides) out of force without waiting
for the list's publisher to withdraw it.  Allow lists never redact anything
themselves and do not make the guard hash a signal it would not otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from livesafe.guard.search import ORIENTATIONS
from livesafe.index import HammingIndex
from livesafe.lists import Blocklist, ListSpec
from livesafe.lists.live import LiveLists
from livesafe.lists.sources import SourceContext
from livesafe.signals import signal_named


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
                {
                    signal: HammingIndex(hashes, bl.spec.threshold_for(signal))
                    for signal, hashes in bl.hashes.items()
                    if len(hashes)
                },
            )
            for bl in blocklists
        ]
        self.signals: frozenset[str] = frozenset(s for c in self._lists if not _allows(c.blocklist) for s in c.indexes)
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
        allowed = self._allowed(signal, queries)
        for li, compiled in enumerate(self._lists):
            index = compiled.indexes.get(signal)
            if index is None or _allows(compiled.blocklist):
                continue
            radius = compiled.blocklist.spec.threshold_for(signal) + margin
            q, rows, dist = index.within(queries, radius, limit=2)
            found += [
                (int(a), li, int(b), int(c)) for a, b, c in zip(q, rows, dist, strict=True) if int(a) not in allowed
            ]
        return found

    def _allowed(self, signal: str, queries: np.ndarray) -> set[int]:
        """The queries within an allow list's threshold of one of its entries."""
        allowed: set[int] = set()
        for compiled in self._lists:
            index = compiled.indexes.get(signal)
            if index is not None and _allows(compiled.blocklist):
                q, _, _ = index.within(queries, compiled.blocklist.spec.threshold_for(signal), limit=1)
                allowed.update(int(a) for a in q)
        return allowed

    def find(self, signal: str, value: np.ndarray, limit: int = 100) -> list[tuple[Blocklist, int, int]]:
        """Every list's entries within its threshold of one hash, allow lists included: (list, row, distance).

        What ``GET /api/lookup`` answers: the lists as they stand, not a frame's verdict.
        """
        queries = np.asarray(value, dtype=np.uint8).reshape(1, -1)
        found: list[tuple[Blocklist, int, int]] = []
        for compiled in self._lists:
            index = compiled.indexes.get(signal)
            if index is None:
                continue
            _, rows, dist = index.within(queries, compiled.blocklist.spec.threshold_for(signal), limit=limit)
            found += [(compiled.blocklist, int(row), int(d)) for row, d in zip(rows, dist, strict=True)]
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


def _allows(blocklist: Blocklist) -> bool:
    return blocklist.spec.action == "allow"


class LiveMatcher(LiveLists[Matcher]):
    """The live lists, compiled for matching (``current`` is a ``Matcher``)."""

    def __init__(
        self,
        specs: Sequence[ListSpec],
        *,
        skip_bad_lines: bool = False,
        context: SourceContext | None = None,
        reload_seconds: float = 2.0,
    ) -> None:
        super().__init__(specs, Matcher, skip_bad_lines=skip_bad_lines, context=context, reload_seconds=reload_seconds)

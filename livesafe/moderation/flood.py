"""Flood quarantine: one list entry matching far too many streams at once is probably a false positive.

A hash in a popular list that collides with something common (a game's HUD, a
logo, a test card) would blank every stream that shows it, silently.  The guard
keeps redacting -- a real match must never leak while people decide -- but
when one entry (list, signal, hash) has matched more than its list's
``flood_streams`` distinct streams within ``flood_window_seconds``, the entry
is **quarantined**: a high-severity ``lists.flood`` event pages the moderators
once, every later match of it is marked ``quarantined`` (and raised to high
severity) so the dashboard and webhook receivers can tell them apart, and
``GET /api/lists`` shows it.  The quarantine lifts once the window has passed
with the entry back within its limit.  A moderator who finds it benign marks
a match of it ``false_positive`` (scope ``global``) or adds it to an ``allow``
list.

Counted from the ``match.started`` events a node stores: its own, and in a
cluster the ones mirrored from the other nodes, so the count is the
cluster's.  A ``lists.flood`` mirrored from another node counts as paged here
too, so a cluster pages once, not once per node (two nodes crossing the limit
within the same second may both page; receivers deduplicate by entry).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Key = tuple[str, str, str]  # list name, signal, matched hash (hex)
DEFAULT_LIMITS = (10, 600.0)


@dataclass
class _Entry:
    seen: dict[str, float] = field(default_factory=dict)  # stream -> time of its latest match of the entry
    quarantined_since: float | None = None
    paged: bool = False


@dataclass(frozen=True)
class Verdict:
    """What one match of an entry finds: is the entry quarantined, and must this match page a moderator?"""

    quarantined: bool
    page: bool
    streams: int
    limit: int
    window_seconds: float


class FloodWatch:
    """Distinct streams per list entry over a sliding window; bounded to ``MAX_TRACKED`` entries."""

    MAX_TRACKED = 100_000  # entries followed at once: the least recently matched is forgotten beyond
    MAX_STREAMS_SHOWN = 20  # stream names a lists.flood event carries

    def __init__(self, limits: Callable[[str], tuple[int, float] | None] = lambda name: None) -> None:
        """``limits(list_name)``: (flood_streams, flood_window_seconds), None for the defaults."""
        self.limits = limits
        self._entries: OrderedDict[Key, _Entry] = OrderedDict()

    def saw(self, key: Key, stream_id: str, at: float, *, own: bool = True) -> Verdict:
        """Count a match of ``key`` on ``stream_id`` at ``at``; ``own``: this node's (not mirrored) match."""
        limit, window = self.limits(key[0]) or DEFAULT_LIMITS
        entry = self._entries.pop(key, None) or _Entry()
        self._entries[key] = entry  # most recently matched last
        while len(self._entries) > self.MAX_TRACKED:
            self._entries.popitem(last=False)
        entry.seen[stream_id] = max(at, entry.seen.get(stream_id, at))
        self._expire(entry, at, limit, window)
        if len(entry.seen) > limit and entry.quarantined_since is None:
            entry.quarantined_since = at
        quarantined = entry.quarantined_since is not None
        page = quarantined and own and not entry.paged
        if page:
            entry.paged = True
        return Verdict(quarantined, page, len(entry.seen), limit, window)

    def paged_elsewhere(self, key: Key) -> None:
        """Another node paged for ``key`` (its ``lists.flood`` was mirrored here): do not page again."""
        entry = self._entries.get(key)
        if entry is not None:
            entry.paged = True

    def streams(self, key: Key) -> list[str]:
        entry = self._entries.get(key)
        return sorted(entry.seen)[: self.MAX_STREAMS_SHOWN] if entry is not None else []

    def quarantined(self, now: float) -> list[dict[str, Any]]:
        """The entries quarantined now, for ``GET /api/lists``."""
        out = []
        for (list_name, signal, matched_hash), entry in list(self._entries.items()):
            self._expire(entry, now, *(self.limits(list_name) or DEFAULT_LIMITS))
            if entry.quarantined_since is not None:
                out.append(
                    {
                        "list_name": list_name,
                        "signal": signal,
                        "matched_hash": matched_hash,
                        "streams": len(entry.seen),
                        "since": entry.quarantined_since,
                    }
                )
        return out

    def _expire(self, entry: _Entry, now: float, limit: int, window: float) -> None:
        for stream_id in [s for s, seen_at in entry.seen.items() if now - seen_at > window]:
            del entry.seen[stream_id]
        if entry.quarantined_since is not None and now - entry.quarantined_since > window and len(entry.seen) <= limit:
            entry.quarantined_since, entry.paged = None, False

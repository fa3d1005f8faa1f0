"""What live-feed subscribers read: the newest events, each serialised once.

Every subscriber of ``/api/events/stream`` wants the same new events at nearly
the same moment.  Reading them from the store and serialising them per
subscriber cost ~170 µs of the proxy's CPU per delivery (BENCHMARKS.md); this
keeps the last ``size`` events as they were recorded, with their JSON, and
hands every subscriber the same objects.  A subscriber further behind (one
resuming after a reconnect) is served from the store, as before.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass

from livesafe.events import Event
from livesafe.moderation.store.interfaces import EventLog


@dataclass(frozen=True, slots=True)
class FeedItem:
    event: Event
    json: str  # ``event.to_json()``

    @classmethod
    def of(cls, event: Event) -> FeedItem:
        return cls(event, event.to_json())


class RecentEvents:
    """The last ``size`` events stored by this process, in ``seq`` order.

    Complete from its oldest item on, because every event is stored through
    ``Moderation`` (``record``; in a cluster also ``mirror`` and ``take_webhooks``), which
    adds it here right after the store gave it its ``seq`` (on the one event loop, so in order).
    """

    def __init__(self, events: EventLog, size: int = 1024) -> None:
        self._events = events
        self._size = size
        self._items: list[FeedItem] = []
        self._seqs: list[int] = []
        self.last_seq = events.last_seq()  # the newest event's, kept here so waiting feeds need not ask the store

    def add(self, event: Event) -> None:
        assert event.seq is not None, "only stored events have a place in the feed"
        self._items.append(FeedItem.of(event))
        self._seqs.append(event.seq)
        self.last_seq = event.seq
        if len(self._items) > 2 * self._size:  # trimmed in halves: amortised O(1) per event
            del self._items[: self._size], self._seqs[: self._size]

    def after(self, seq: int, limit: int) -> list[FeedItem]:
        """Up to ``limit`` events after ``seq``, oldest first."""
        if self._seqs and self._seqs[0] <= seq + 1:
            start = bisect_right(self._seqs, seq)
            return self._items[start : start + limit]
        return [FeedItem.of(e) for e in self._events.read(seq, limit=limit)]

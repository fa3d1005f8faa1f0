"""The recent events every live feed shares (livesafe/moderation/feed.py), on a real SQLite
file: whatever a subscriber's cursor, it gets exactly what the store holds after it, in
order -- from the shared copies while the cursor is recent, from the store when it is not,
and across a restart."""

from __future__ import annotations

import json
from pathlib import Path

from livesafe.events import Event
from livesafe.moderation.feed import RecentEvents
from livesafe.moderation.service import Moderation
from livesafe.moderation.settings import ModerationSettings
from livesafe.moderation.store.interfaces import EventLog
from livesafe.moderation.store.sqlite import SqliteStore


def _moderation(path: Path) -> Moderation:
    return Moderation(ModerationSettings(database=str(path)), SqliteStore(path))


def _record(moderation: Moderation, n: int) -> list[Event]:
    return [moderation.record(Event("report.received", f"s{i % 3}", "info", {"n": i})) for i in range(n)]


def _check_every_cursor(recent: RecentEvents, events: EventLog, limit: int) -> None:
    last = events.last_seq()
    for seq in range(last + 2):
        expected = events.read(seq, limit=limit)
        got = recent.after(seq, limit)
        assert [i.event.seq for i in got] == [e.seq for e in expected], f"after {seq}"
        assert [json.loads(i.json) for i in got] == [e.to_dict() for e in expected], f"after {seq}"


async def test_subscribers_share_one_serialised_copy_of_each_new_event_and_query_no_store(tmp_path: Path) -> None:
    moderation = _moderation(tmp_path / "feed.db")
    queries = []
    read = moderation.store.events.read
    moderation.store.events.read = lambda *a, **k: queries.append(a) or read(*a, **k)  # type: ignore[method-assign]
    try:
        first, *_ = _record(moderation, 5)
        a = moderation.recent.after(first.seq - 1, 100)
        b = moderation.recent.after(first.seq - 1, 100)
        assert len(a) == 5 and all(x is y for x, y in zip(a, b, strict=True)), (
            "each event serialised once, for every subscriber"
        )
        assert moderation.recent.after(a[-1].event.seq, 100) == []
        assert queries == []
    finally:
        moderation.close()


async def test_every_cursor_gets_exactly_what_the_store_holds_after_it(tmp_path: Path) -> None:
    """A ring of 4 that has been trimmed several times: cursors inside it, before it, at its
    edges and past the end, with a limit smaller than what is waiting."""
    moderation = _moderation(tmp_path / "feed.db")
    moderation.recent = RecentEvents(moderation.store.events, size=4)
    try:
        _record(moderation, 23)
        for limit in (1, 3, 100):
            _check_every_cursor(moderation.recent, moderation.store.events, limit)
    finally:
        moderation.close()


async def test_after_a_restart_older_events_come_from_the_store_and_new_ones_follow_without_a_gap(
    tmp_path: Path,
) -> None:
    path = tmp_path / "feed.db"
    before = _moderation(path)
    _record(before, 7)
    before.close()
    after = _moderation(path)
    try:
        _record(after, 5)
        _check_every_cursor(after.recent, after.store.events, 100)
    finally:
        after.close()

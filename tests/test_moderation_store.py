"""The event store on a real SQLite file: what the feed, the history API, the webhook
dispatcher and the audit log rely on -- order, filters, the outbox written with its
event, delivery bookkeeping, retention, and that everything survives a restart."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest

from livesafe.events import Event
from livesafe.moderation.store.records import Allowed, AuditEntry
from livesafe.moderation.store.sqlite import SqliteStore

DAY = 86400.0
NOW = 1_700_000_000.0


@pytest.fixture
def store(tmp_path: Path):
    store = SqliteStore(tmp_path / "events.db")
    yield store
    store.close()


def event(type_: str = "match.started", stream: str | None = "s1", at: float = NOW, **data) -> Event:
    return Event(type_, stream, "warning" if type_ == "match.started" else "info", data, at=at)


def test_file_is_in_wal_mode_so_readers_never_block_the_writer(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "events.db"  # a missing directory is created
    store = SqliteStore(path)
    store.events.append(event())
    other = sqlite3.connect(path)  # WAL is a property of the file, seen by every connection
    try:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert other.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 1  # committed, visible to others
    finally:
        other.close()
        store.close()


def test_events_round_trip_in_seq_order(store: SqliteStore) -> None:
    sent = [event("stream.started"), event(distance=3, region={"x": 1}), event("stream.ended", stream=None)]
    stored = [store.events.append(e) for e in sent]
    assert [e.seq for e in stored] == [1, 2, 3] and store.events.last_seq() == 3
    back = store.events.read()
    assert [e.to_dict() for e in back] == [e.to_dict() for e in stored]
    assert back[1].data == {"distance": 3, "region": {"x": 1}} and back[2].stream_id is None
    assert store.events.get(sent[1].id) == stored[1] and store.events.seq_of(sent[2].id) == 3
    assert store.events.get("0" * 32) is None and store.events.seq_of("0" * 32) is None


def test_events_after_a_seq_with_limit(store: SqliteStore) -> None:
    ids = [store.events.append(event(n=i)).id for i in range(10)]
    assert [e.id for e in store.events.read(after=4, limit=3)] == ids[4:7]
    assert store.events.read(after=10) == []


def test_events_filter_by_stream_type_and_time(store: SqliteStore) -> None:
    a1 = store.events.append(event("match.started", "a", at=NOW))
    b1 = store.events.append(event("match.started", "b", at=NOW + 1))
    a2 = store.events.append(event("match.cleared", "a", at=NOW + 2))
    a3 = store.events.append(event("stream.ended", "a", at=NOW + 3))
    assert store.events.read(stream_id="a") == [a1, a2, a3]
    assert store.events.read(types=["match.started"]) == [a1, b1]
    assert store.events.read(types=["match.cleared", "stream.ended"]) == [a2, a3]
    assert store.events.read(since_time=NOW + 1) == [b1, a2, a3]  # from that time, inclusive
    assert store.events.read(stream_id="a", types=["match.started", "stream.ended"], since_time=NOW + 0.5) == [a3]
    assert store.events.read(after=a1.seq, stream_id="a") == [a2, a3]
    assert store.events.read(stream_id="nobody") == []


def test_events_before_gives_the_newest_oldest_first(store: SqliteStore) -> None:
    stored = [store.events.append(event("match.started" if i % 2 else "stream.started", at=NOW + i)) for i in range(8)]
    assert store.events.read_before(store.events.last_seq() + 1, limit=3) == stored[5:]
    assert store.events.read_before(stored[5].seq, limit=2) == stored[3:5]
    assert store.events.read_before(stored[6].seq, types=["match.started"], limit=2) == [stored[3], stored[5]]
    assert store.events.read_before(99, since_time=NOW + 6, limit=10) == stored[6:]
    assert store.events.read_before(1) == []


def test_outbox_rows_are_written_with_the_event(store: SqliteStore) -> None:
    stored = store.events.append(event(), ["hook-a", "hook-b"], now=NOW)
    due = store.outbox.due(NOW, ["hook-a", "hook-b"])
    assert sorted(d.endpoint for d in due) == ["hook-a", "hook-b"]
    assert all(d.event == stored and d.attempts == 0 for d in due)
    assert store.outbox.due(NOW - 1, ["hook-a", "hook-b"]) == []  # not due before its time
    assert [d.endpoint for d in store.outbox.due(NOW, ["hook-a"])] == ["hook-a"]  # only configured endpoints
    assert store.outbox.due(NOW, []) == [] and store.outbox.next_due(["hook-a"]) == NOW and store.outbox.pending() == 2


def test_event_and_outbox_commit_or_fail_together(store: SqliteStore) -> None:
    """A failing outbox insert (a duplicate endpoint) must not leave the event stored without it."""
    with pytest.raises(sqlite3.IntegrityError):
        store.events.append(event(), ["hook", "hook"], now=NOW)
    assert store.events.read() == [] and store.outbox.pending() == 0
    first = store.events.append(event(), ["hook"], now=NOW)
    with pytest.raises(sqlite3.IntegrityError):  # the same event id again
        store.events.append(first, ["other"], now=NOW)
    assert store.events.read() == [first]
    assert store.outbox.counts() == {"hook": {"pending": 1, "delivered": 0, "failed": 0}}


def test_delivery_transitions_and_counts(store: SqliteStore) -> None:
    e1 = store.events.append(event(), ["a", "b"], now=NOW)
    e2 = store.events.append(event(), ["a"], now=NOW)
    by_key = {(d.endpoint, d.event.seq): d for d in store.outbox.due(NOW, ["a", "b"])}
    store.outbox.delivered(by_key[("a", e1.seq)], NOW + 1)
    store.outbox.retry(by_key[("b", e1.seq)], "HTTP 500", at=NOW + 60)
    store.outbox.failed(by_key[("a", e2.seq)], "gave up: timeout", NOW + 2)
    assert store.outbox.due(NOW + 59, ["a", "b"]) == []  # delivered and failed are done; the retry waits
    (retry,) = store.outbox.due(NOW + 60, ["a", "b"])
    assert (retry.endpoint, retry.event.seq, retry.attempts) == ("b", e1.seq, 1)
    assert store.outbox.next_due(["a", "b"]) == NOW + 60 and store.outbox.next_due(["a"]) is None
    assert store.outbox.pending() == 1
    assert store.outbox.counts() == {
        "a": {"pending": 0, "delivered": 1, "failed": 1, "last_error": "gave up: timeout"},
        "b": {"pending": 1, "delivered": 0, "failed": 0, "last_error": "HTTP 500"},
    }
    store.outbox.delivered(retry, NOW + 61)
    assert store.outbox.counts()["b"] == {"pending": 0, "delivered": 1, "failed": 0, "last_error": "HTTP 500"}


def test_prune_keeps_pending_deliveries_and_recent_events(store: SqliteStore) -> None:
    old = NOW - 31 * DAY
    gone = store.events.append(event(at=old))
    delivered = store.events.append(event(at=old), ["hook"], now=old)
    store.outbox.delivered(store.outbox.due(old, ["hook"])[0], old)
    waiting = store.events.append(event(at=old - 1), ["hook"], now=NOW)  # its delivery is still pending
    recent = store.events.append(event(at=NOW - 29 * DAY))
    assert store.events.prune(NOW - 30 * DAY, 100) == 2
    assert store.events.read() == [waiting, recent]
    assert store.events.get(gone.id) is None and store.events.get(delivered.id) is None
    assert store.outbox.counts() == {"hook": {"pending": 1, "delivered": 0, "failed": 0}}  # its row went with it
    assert store.outbox.due(NOW, ["hook"])[0].event == waiting


def test_prune_drops_audit_entries_by_their_own_retention(store: SqliteStore) -> None:
    kept = store.audit.append(
        AuditEntry("mo", "moderator", "keep", "s1", "still within a year", False, at=NOW - 364 * DAY)
    )
    store.audit.append(AuditEntry("mo", "moderator", "resume", "s1", "too old", False, at=NOW - 366 * DAY))
    store.events.append(event(at=NOW - 100 * DAY))
    assert store.audit.prune(NOW - 365 * DAY) == 1
    assert [e.id for e in store.audit.read()] == [kept.id] and len(store.events.read()) == 1


def test_audit_log_round_trip_and_filters(store: SqliteStore) -> None:
    first = store.audit.append(AuditEntry("mo", "moderator", "confirm", "s1", "clearly it", True, "e1", {"n": [1, 2]}))
    second = store.audit.append(AuditEntry("ann", "moderator", "preview", "s2", "looked", True))
    assert (first.seq, second.seq) == (1, 2)
    assert store.audit.read() == [first, second]
    assert store.audit.read(stream_id="s2") == [second] and store.audit.read(after=1) == [second]
    assert store.audit.read()[0].details == {"n": [1, 2]} and store.audit.read()[0].viewed_content is True
    assert store.audit.viewed_since("ann", "s2", second.at - 1)
    assert not store.audit.viewed_since("ann", "s2", second.at + 1)
    assert not store.audit.viewed_since("mo", "s1", 0)  # a confirm is not a preview


def test_allowlist_and_revoked_keys_round_trip(store: SqliteStore) -> None:
    store.access.allow(Allowed("pdq", "ab" * 32, "s1"), "mo", "a poster on the wall")
    store.access.allow(Allowed("pdq", "cd" * 32, None), "mo", "everywhere")
    store.access.allow(Allowed("pdq", "cd" * 32, None), "ann", "again")  # the same item once
    allowed = sorted(store.access.allowlist(), key=lambda a: a.hash)
    assert allowed == [Allowed("pdq", "ab" * 32, "s1"), Allowed("pdq", "cd" * 32, None)]
    store.access.revoke("s1", "f" * 64, "mo")
    store.access.revoke("s1", "f" * 64, "ann")
    store.access.revoke("s2", "e" * 64, "mo")
    assert store.access.revoked_keys() == {("s1", "f" * 64), ("s2", "e" * 64)}


def test_everything_survives_closing_and_reopening(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    store = SqliteStore(path)
    stored = [store.events.append(event(n=i), ["hook"], now=NOW) for i in range(3)]
    entry = store.audit.append(
        AuditEntry("mo", "moderator", "terminate", "s1", "done", False, details={"stream_key_revoked": True})
    )
    store.access.allow(Allowed("pdq", "ab" * 32, None), "mo", "fp")
    store.access.revoke("s1", "f" * 64, "mo")
    store.close()

    reopened = SqliteStore(path)
    try:
        assert reopened.events.read() == stored and reopened.outbox.pending() == 3
        assert reopened.audit.read() == [entry]
        assert reopened.access.allowlist() == [Allowed("pdq", "ab" * 32, None)]
        assert reopened.access.revoked_keys() == {("s1", "f" * 64)}
        assert reopened.events.append(event()).seq == 4
    finally:
        reopened.close()


def test_seq_is_never_reused_after_the_newest_events_are_pruned(tmp_path: Path) -> None:
    """A feed reading "after seq N" must not skip an event that reuses a pruned number."""
    path = tmp_path / "events.db"
    store = SqliteStore(path)
    store.events.append(event(at=NOW - 40 * DAY))
    store.events.append(event(at=NOW - 40 * DAY))
    assert store.events.prune(NOW - 30 * DAY, 100) == 2 and store.events.last_seq() == 0
    store.close()
    store = SqliteStore(path)
    try:
        assert store.events.append(event()).seq == 3
    finally:
        store.close()


def test_the_audit_log_reads_its_newest_entries_oldest_first(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "audit.db")
    for n in range(5):
        store.audit.append(AuditEntry("mo", "moderator", "confirm", "s1", f"reason {n}", viewed_content=False))
    assert [e.reason for e in store.audit.read(limit=2, newest=True)] == ["reason 3", "reason 4"]
    assert [e.reason for e in store.audit.read(limit=2)] == ["reason 0", "reason 1"]


def test_outbox_counts_follow_inserts_state_changes_and_cascading_deletes(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "counts.db")
    old = [store.events.append(Event("match.started", "s1", at=1000.0 + i), ["a", "b"], now=0) for i in range(3)]
    store.events.append(Event("match.started", "s1"), ["a"], now=0)
    first, second = store.outbox.due(1.0, ["a"], limit=2)
    store.outbox.delivered(first, 2.0)
    store.outbox.failed(second, "HTTP 500", 2.0)
    counts = store.outbox.counts()
    assert {k: counts["a"][k] for k in ("pending", "delivered", "failed")} == {
        "pending": 2,
        "delivered": 1,
        "failed": 1,
    }
    assert counts["a"]["last_error"] == "HTTP 500" and counts["b"]["pending"] == 3
    for delivery in store.outbox.due(3.0, ["a", "b"], limit=100):
        store.outbox.delivered(delivery, 3.0)
    assert store.events.prune(1000.0 + DAY, 100) == len(old)
    counts = store.outbox.counts()
    assert (counts["a"]["delivered"], counts["a"]["failed"], counts["b"]["delivered"]) == (1, 0, 0)
    store.close()
    reopened = SqliteStore(tmp_path / "counts.db")
    assert reopened.outbox.counts()["a"]["delivered"] == 1


def test_deliveries_to_an_endpoint_no_longer_configured_are_abandoned(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "gone.db")
    store.events.append(Event("match.started", "s1"), ["kept", "removed"], now=0)
    assert store.outbox.abandon(["kept"], now=5.0) == 1
    assert store.outbox.pending() == 1 and store.outbox.counts()["removed"]["failed"] == 1
    assert store.outbox.counts()["removed"]["last_error"] == "endpoint no longer configured"


def _largest_wal(path: Path, *, pause: float = 0.0, **checkpoints) -> int:
    """Append 1,000 events (two outbox rows each) in bursts of 100, ``pause`` s apart; the WAL's largest size."""
    store = SqliteStore(path, **checkpoints)
    largest = 0
    try:
        for _ in range(10):
            for _ in range(100):
                store.events.append(event(matched_hash="ab" * 32, distance=3), ["hook1", "hook2"])
            time.sleep(pause)
            largest = max(largest, Path(f"{path}-wal").stat().st_size)
    finally:
        store.close()
    reopened = SqliteStore(path)
    try:
        assert len(reopened.events.read(limit=2000)) == 1000
    finally:
        reopened.close()
    return largest


def test_checkpoints_happen_off_the_writers_commits_and_keep_the_wal_small(tmp_path: Path) -> None:
    """SQLite's automatic checkpoint runs inside whichever commit crosses 1,000 WAL pages -- on
    the event loop.  The store turns it off and checkpoints on a thread of its own instead."""
    # Pauses of 0.1 s between bursts: the thread (looking every 10 ms) must get to run in them
    # even on a loaded machine (with 0.05 s a loaded 2-core VM once let three bursts pile up).
    unchecked = _largest_wal(tmp_path / "unchecked.db", pause=0.1, interval=3600)  # the thread never gets to run
    checked = _largest_wal(tmp_path / "checked.db", pause=0.1, interval=0.01, quiet_seconds=0.02)
    assert unchecked > 20 * 2**20, f"appends checkpointed by themselves: WAL only {unchecked:,} B"
    assert checked < unchecked / 4, f"WAL {checked:,} B with the checkpointer, {unchecked:,} B without"


def test_a_wal_written_without_a_pause_is_restarted_by_the_writer(tmp_path: Path) -> None:
    """Commits back to back: every checkpoint ends with frames it did not copy, so the WAL never
    starts over by itself; past the limit the writer finishes the copy and it does."""
    grown = _largest_wal(tmp_path / "grown.db", interval=0.005, batch=1, restart_bytes=2**40)
    bounded = _largest_wal(tmp_path / "bounded.db", interval=0.005, batch=1, restart_bytes=2**20)
    assert grown > 20 * 2**20, f"the WAL started over without help: {grown:,} B"
    # How far the WAL gets before the first restart depends on how fast commits come against
    # how often the checkpoint thread gets to run (measured 7-12 MiB on one machine, < 10 on
    # another); relative to the unbounded run it does not.
    assert bounded < grown / 3, f"WAL {bounded:,} B with a 1 MiB restart limit, {grown:,} B without"


def test_pruning_finds_an_events_outbox_rows_by_index(tmp_path: Path) -> None:
    """Deleting an event cascades to its outbox rows and pruning skips events with a pending
    one; without an index on the event, each deleted event scanned the whole outbox
    (a month of a busy proxy took longer than the hour between prunes)."""
    store = SqliteStore(tmp_path / "plan.db")
    try:
        plan = store.database.connection.execute(
            "EXPLAIN QUERY PLAN SELECT 1 FROM outbox o WHERE o.event_seq = ? AND o.state = 'pending'", (1,)
        ).fetchall()
        assert any("outbox_by_event" in row[-1] for row in plan), plan
    finally:
        store.close()


async def test_retention_deletes_in_batches_and_lets_the_loop_run_between_them(tmp_path: Path) -> None:
    from livesafe.moderation.service import PRUNE_BATCH, Moderation
    from livesafe.moderation.settings import ModerationSettings

    path = tmp_path / "prune.db"
    moderation = Moderation(ModerationSettings(database=str(path), retention_days=30), SqliteStore(path))
    store = moderation.store
    try:
        n = 5 * PRUNE_BATCH + 7
        old = [store.events.append(event(at=NOW - 40 * DAY + i), ["hook"], now=0) for i in range(n)]
        for delivery in store.outbox.due(1.0, ["hook"], limit=n - 1):  # all delivered but the newest old one
            store.outbox.delivered(delivery, 1.0)
        recent = store.events.append(event(at=NOW - DAY))
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0)
                ticks += 1

        task = asyncio.ensure_future(ticker())
        await asyncio.sleep(0)
        before = ticks
        removed = await moderation.prune(NOW)
        task.cancel()
        assert removed == n - 1
        kept = [e.id for e in store.events.read(limit=10)]
        assert kept == [old[-1].id, recent.id], "a pending delivery keeps its event"
        assert ticks - before >= 5, "the loop ran between the batches"
    finally:
        moderation.close()


def test_delivery_bookkeeping_alone_keeps_the_checkpointer_going(tmp_path: Path) -> None:
    """A backlog draining after an outage writes only outbox updates, no new events: those
    commits count too, or the WAL would grow for the whole drain and never be copied after it."""
    path = tmp_path / "drain.db"
    store = SqliteStore(path)
    queued = [store.events.append(event(), ["hook1", "hook2"], now=0) for _ in range(1000)]
    store.close()  # the appends are all in the database file; no WAL
    store = SqliteStore(path, interval=0.01, quiet_seconds=0.02)
    try:
        largest = 0
        deliveries = store.outbox.due(1.0, ["hook1", "hook2"], limit=2000)
        assert len(deliveries) == 2 * len(queued)
        for start in range(0, len(deliveries), 200):
            for delivery in deliveries[start : start + 200]:
                store.outbox.delivered(delivery, 2.0)
            time.sleep(0.05)
            largest = max(largest, Path(f"{path}-wal").stat().st_size)
    finally:
        store.close()
    assert largest < 8 * 2**20, f"WAL {largest:,} B while only delivery bookkeeping was written"

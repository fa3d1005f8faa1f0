"""The cluster's shared events against a real redis-server: every node's log, feed and counts
hold the whole cluster's events in order, and a real loopback webhook receiver gets each
event exactly once however many nodes consume -- across Redis stopping and coming back
empty, a consumer dying with entries it never acked, and nodes restarting from their
persisted cursors.  Each node is a real ``Moderation`` on its own SQLite file with its
own ``ClusterEvents``; timings are shrunk through ``EventsTuning``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
from aiohttp import web
from standardwebhooks import Webhook

from livesafe.cluster.events import GROUP, ClusterEvents, EventsTuning
from livesafe.cluster.nodes import connect
from livesafe.cluster.settings import ClusterSettings
from livesafe.events import Event
from livesafe.moderation.service import Moderation
from livesafe.moderation.settings import ModerationSettings, WebhookEndpoint
from livesafe.moderation.store.sqlite import SqliteStore

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
CLUSTER_SECRET = "cluster-secret-for-tests-only"
FAST = EventsTuning(
    maxlen=1000,
    batch=20,
    block_seconds=0.1,
    claim_idle_seconds=0.5,
    retry_seconds=0.05,
    max_retry_seconds=0.2,
    mirror_wait_seconds=0.5,
)


@dataclass
class Receiver:
    """Records the ``webhook-id`` of every request whose signature verifies (any other fails the test)."""

    ids: list[str] = field(default_factory=list)
    bad: list[str] = field(default_factory=list)
    runner: web.AppRunner | None = None
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            Webhook(SECRET).verify(body, dict(request.headers))
        except Exception as exc:  # noqa: BLE001 - recorded, and the test fails on it
            self.bad.append(repr(exc))
            return web.Response(status=400)
        self.ids.append(request.headers["webhook-id"])
        return web.Response(text="ok")

    def once(self) -> bool:
        return all(n == 1 for n in Counter(self.ids).values())


@contextlib.asynccontextmanager
async def receiver() -> AsyncIterator[Receiver]:
    hook = Receiver()
    app = web.Application()
    app.router.add_post("/hook", hook.handle)
    hook.runner = web.AppRunner(app, access_log=None)
    await hook.runner.setup()
    site = web.TCPSite(hook.runner, "127.0.0.1", 0)
    await site.start()
    port = hook.runner.addresses[0][1]
    hook.url = f"http://127.0.0.1:{port}/hook"
    try:
        yield hook
    finally:
        await hook.runner.cleanup()
        assert hook.bad == [], "every delivery is signed"


@dataclass
class Node:
    name: str
    moderation: Moderation
    events: ClusterEvents
    runs: asyncio.Task[None] | None = None

    async def start(self) -> Node:
        await self.events.start()
        self.runs = asyncio.ensure_future(self.moderation.run())
        return self

    async def stop(self) -> None:
        await self.events.stop()
        if self.runs is not None:
            self.runs.cancel()
            await asyncio.gather(self.runs, return_exceptions=True)
        self.moderation.close()

    def record(self, n: int, stream: str | None = None) -> list[Event]:
        return [
            self.moderation.record(Event("report.received", stream or self.name, "info", {"n": i})) for i in range(n)
        ]

    def stored_ids(self) -> list[str]:
        return [e.id for e in self.moderation.store.events.read(0, limit=10_000)]


def node(tmp_path: Path, redis_url: str, name: str, hook: Receiver, tuning: EventsTuning = FAST) -> Node:
    endpoint = WebhookEndpoint(hook.url, SECRET, name="hook")
    database = str(tmp_path / f"{name}.db")
    moderation = Moderation(
        ModerationSettings(database=database, webhooks=(endpoint,), webhook_backoff_seconds=0.05),
        SqliteStore(database),
    )
    cluster = ClusterSettings(redis_url, CLUSTER_SECRET, node_name=name)
    return Node(name, moderation, ClusterEvents(cluster, connect(cluster), moderation, tuning))


async def until(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def in_order(ids: list[str], of: list[Event]) -> bool:
    """Whether ``of`` are all in ``ids``, in their order."""
    wanted = [e.id for e in of]
    return [i for i in ids if i in set(wanted)] == wanted


# -------------------------------------------------------------------- tests


async def test_every_node_holds_the_cluster_in_order_and_each_event_reaches_the_receiver_once(
    redis_server, tmp_path: Path
) -> None:
    async with receiver() as hook:
        nodes = [await node(tmp_path, redis_server.url, name, hook).start() for name in ("a", "b", "c")]
        a, b, c = nodes
        try:
            recorded: list[Event] = []
            for _ in range(6):  # in rounds, so the group hands entries to whichever node is waiting
                recorded += a.record(4) + b.record(2)
                await asyncio.sleep(0.05)
            ids = {e.id for e in recorded}
            await until(lambda: set(hook.ids) == ids, "every event delivered")
            await until(lambda: all(set(n.stored_ids()) == ids for n in nodes), "every node storing every event")
            await asyncio.sleep(0.3)  # a duplicate would have arrived by now
            assert len(hook.ids) == len(ids) and hook.once()
            assert sum(n.events.stats["taken"] for n in nodes) == len(ids)
            assert sum(1 for n in nodes if n.events.stats["taken"]) >= 2, "the group spreads them over the nodes"
            for n in nodes:
                stored = n.stored_ids()
                assert in_order(stored, [e for e in recorded if e.data["node"] == "a"])
                assert in_order(stored, [e for e in recorded if e.data["node"] == "b"])
                feed = [item.event.id for item in n.moderation.recent.after(0, 1000)]
                assert feed == stored, "the live feed shows what the log holds"
                assert n.moderation.counts["report.received"] == len(ids), "each event counted once per node"
                assert n.events.status()["relay_backlog"] == 0
            mirrored = c.moderation.store.events.get(recorded[0].id)
            assert mirrored is not None and mirrored.data == {"n": 0, "node": "a"}
            assert c.moderation.store.outbox.pending() == 0
        finally:
            for n in nodes:
                await n.stop()


async def test_redis_down_while_recording_loses_nothing_and_an_empty_restart_delivers_once(
    redis_server, tmp_path: Path
) -> None:
    async with receiver() as hook:
        a = await node(tmp_path, redis_server.url, "a", hook).start()
        b = await node(tmp_path, redis_server.url, "b", hook).start()
        try:
            before = a.record(5)
            await until(lambda: len(hook.ids) == 5, "the first events delivered")
            await until(lambda: a.events.status()["unconfirmed"] == 0, "a confirming they were handed over")
            redis_server.stop()
            during = a.record(5) + b.record(2)
            await until(lambda: not a.events.connected, "a noticing Redis is gone")
            assert a.events.status()["relay_backlog"] == 5 and a.events.last_error is not None
            assert set(a.stored_ids()) >= {e.id for e in during[:5]}, "recorded locally meanwhile"
            redis_server.start()  # empty: no stream, no group, no markers
            ids = {e.id for e in before + during}
            await until(lambda: set(hook.ids) == ids, "the events of the outage delivered")
            await until(lambda: set(b.stored_ids()) == ids and set(a.stored_ids()) == ids, "both nodes caught up")
            await asyncio.sleep(0.3)
            assert len(hook.ids) == len(ids) and hook.once()
            assert a.events.stats["resets"] == 1 and a.events.status()["relay_backlog"] == 0
            assert in_order(b.stored_ids(), before + during[:5])
        finally:
            await a.stop()
            await b.stop()


async def test_entries_in_redis_but_not_yet_queued_survive_an_empty_restart(redis_server, tmp_path: Path) -> None:
    """What a node relayed but no node had queued for delivery when Redis lost it is relayed again."""
    async with receiver() as hook:
        a = node(tmp_path, redis_server.url, "a", hook)
        a.moderation.join_cluster("a")
        recorded = a.record(3)
        await a.events.relay_round()  # in the stream; no consumer running yet
        assert a.events.stats["relayed"] == 3 and a.events.status()["unconfirmed"] == 3
        redis_server.stop()
        redis_server.start()
        await a.start()
        b = await node(tmp_path, redis_server.url, "b", hook).start()
        try:
            await until(lambda: len(hook.ids) == 3, "the lost entries delivered")
            await asyncio.sleep(0.3)
            assert sorted(hook.ids) == sorted(e.id for e in recorded) and hook.once()
        finally:
            await a.stop()
            await b.stop()


async def test_entries_a_dead_consumer_held_are_taken_over_and_delivered_once(redis_server, tmp_path: Path) -> None:
    async with receiver() as hook:
        a = node(tmp_path, redis_server.url, "a", hook)
        a.moderation.join_cluster("a")
        recorded = a.record(4)
        await a.events.relay_round()
        # A node "dead" read them from the group and died before queueing or acking any.
        redis = a.events.redis
        held = await redis.xreadgroup(GROUP, "dead", {"livesafe:events": ">"}, count=100)
        assert len(held[0][1]) == 4
        b = await node(tmp_path, redis_server.url, "b", hook).start()
        try:
            await until(lambda: len(hook.ids) == 4, "the held entries delivered", timeout=5)
            await asyncio.sleep(0.3)
            assert hook.ids == [e.id for e in recorded] and hook.once()
            assert b.events.stats["claimed"] == 4
            assert (await redis.xpending("livesafe:events", GROUP))["pending"] == 0
            assert in_order(b.stored_ids(), recorded)
        finally:
            await b.stop()
            a.moderation.close()


async def test_restarted_nodes_resume_from_their_cursors_without_duplicates(
    redis_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with receiver() as hook:
        a = await node(tmp_path, redis_server.url, "a", hook).start()
        b = await node(tmp_path, redis_server.url, "b", hook).start()
        try:
            first = a.record(5)
            await until(lambda: len(hook.ids) == 5 and len(b.stored_ids()) == 5, "delivered and mirrored")
            await b.stop()
            second = a.record(5)
            await until(lambda: len(hook.ids) == 10, "a delivering alone")
            b = await node(tmp_path, redis_server.url, "b", hook).start()
            await until(lambda: len(b.stored_ids()) == 10, "b catching up")
            assert b.events.stats["mirrored"] == 5, "from its cursor, not the stream's start"
            assert b.stored_ids() == [e.id for e in first + second]
            await a.stop()
            a = node(tmp_path, redis_server.url, "a", hook)
            # a crashes after queueing its next entries, before acking them: the restart reads them again.
            crashed = asyncio.Event()

            async def no_ack(*args: object) -> int:
                crashed.set()
                raise ConnectionError("killed before the ack")

            monkeypatch.setattr(a.events.redis, "xack", no_ack)
            await b.stop()  # a alone consumes
            await a.start()
            third = a.record(3)
            await asyncio.wait_for(crashed.wait(), 5)
            await a.stop()
            monkeypatch.undo()
            # No taking over within the test: only reading its own pending entries first delivers them.
            a = await node(tmp_path, redis_server.url, "a", hook, replace(FAST, claim_idle_seconds=60)).start()
            await until(lambda: len(hook.ids) == 13, "the unacked ones delivered")
            await until(lambda: a.events.status()["webhook_pending"] == 0, "acked after the restart")
            await asyncio.sleep(0.3)
            assert hook.ids[:10] == [e.id for e in first + second] and set(hook.ids[10:]) == {e.id for e in third}
            assert hook.once() and a.events.stats["relayed"] == 0, "nothing relayed twice"
        finally:
            await a.stop()
            await b.stop()


async def test_malformed_entries_are_skipped_counted_and_acked(redis_server, tmp_path: Path, caplog) -> None:
    async with receiver() as hook:
        a = await node(tmp_path, redis_server.url, "a", hook).start()
        b = await node(tmp_path, redis_server.url, "b", hook).start()
        try:
            await until(lambda: a.events.status()["webhook_lag"] is not None, "the group set up")
            redis = a.events.redis
            caplog.set_level(logging.WARNING, "livesafe.cluster.events")
            for fields in ({"event": "not json"}, {"other": "x"}, {"event": '{"id": 5}'}, {"event": "[1]"}):
                await redis.xadd("livesafe:events", fields)
            good = a.record(1)
            await until(lambda: hook.ids == [good[0].id], "the good event delivered")
            await until(lambda: b.events.stats["malformed"] == 4, "b skipping the bad ones")
            await until(lambda: a.events.status()["webhook_pending"] == 0, "the bad ones acked")
            assert b.stored_ids() == [good[0].id]
            assert "skipped malformed stream entry" in caplog.text
        finally:
            await a.stop()
            await b.stop()


def test_adopt_stores_an_event_once_and_queues_each_delivery_once(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "n.db")
    try:
        event = Event("report.received", "s", "info", {"node": "a"})
        first = store.events.adopt(event)
        assert first is not None and first.seq == 1
        assert store.events.adopt(event, ["hook"]) is None and store.outbox.pending() == 1
        assert store.events.adopt(event, ["hook"]) is None and store.outbox.pending() == 1
        assert store.events.count(0, origin="a", limit=10) == 1 and store.events.count(0, origin="b", limit=10) == 0
        assert [e.id for e in store.events.read(0, origin="a")] == [event.id]
    finally:
        store.close()


def test_node_state_survives_a_restart_and_an_older_database_gains_its_table(tmp_path: Path) -> None:
    path = tmp_path / "n.db"
    store = SqliteStore(path)
    store.state.put("k", "1")
    store.state.put("k", "2")
    store.close()
    store = SqliteStore(path)
    assert store.state.get("k") == "2"
    store.close()
    old = sqlite3.connect(path)
    old.execute("DROP TABLE state")  # as a database from before the table (and so before versioning)
    old.execute("PRAGMA user_version = 0")
    old.commit()
    old.close()
    store = SqliteStore(path)
    try:
        assert store.state.get("k") is None
        store.state.put("k", "3")
        assert store.state.get("k") == "3"
    finally:
        store.close()

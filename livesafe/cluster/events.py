"""The cluster's events: one event log across nodes, each webhook delivery queued by exactly one node.

Each node keeps its own durable SQLite log, as a single node does, and Redis only
carries events between them; three loops per node (:class:`ClusterEvents`):

- **relay**: this node's own events (``Moderation`` marks them ``data["node"]``), in
  ``seq`` order from a cursor kept in the SQLite store, are XADDed to one stream
  (``prefix:events``, trimmed ``MAXLEN ~``).  A Lua script adds an event only if its
  id has no marker key yet (``prefix:events:id:ID``, holding the entry id, with a TTL),
  so a crash between XADD and the cursor write relays the batch again without
  duplicating anything.  Redis down: the cursor stays, events pile up in SQLite
  (nothing is lost), the loop retries with backoff and catches up a batch per round.
- **mirror**: every node XREADs the whole stream from its last entry id (kept in
  SQLite) and stores other nodes' events in its own log (skipping ids it has), adds
  them to the live feed and wakes feed waiters: ``/api/events``, the live feed and the
  dashboard on any node show the whole cluster through their unchanged code paths.
  ``Moderation.counts`` counts each event once per node, however it arrived, so every
  node's ``/metrics`` shows the cluster's counts (do not sum them across nodes).
- **webhooks**: a consumer group (``webhooks``, consumer = node name) hands each entry
  to one node, which queues its deliveries in its *own durable outbox* -- storing the
  event first if its mirror has not yet, in one transaction -- and only then XACKs.
  From there the dispatcher's retry, backoff, give-up and ``webhook.failed`` apply
  unchanged.  ``Moderation.record`` queues nothing locally in a cluster.

Why this delivers once: an entry is handed to one consumer at a time; that consumer
makes the delivery durable before acking, so a crash before the ack leaves the entry
pending, and it is read again by the same node after a restart (its own pending
entries come first) or taken over with XAUTOCLAIM by another node once it has been
idle ``claim_idle_seconds``.  Queueing is idempotent per node (``EventLog.adopt``), so
re-reading on the node that queued it adds nothing.  What remains -- a node that
queued an event and died before acking, whose entry another node then claims -- can
send the event twice, with the same ``webhook-id`` (the event id, on every node):
Standard Webhooks receivers deduplicate on it.

Redis restarted empty (no persistence): the stream, the group and the marker keys are
gone.  The stream carries an *epoch* (a random token set when the group is created);
a node that finds it changed knows Redis was reset.  Its relay then goes back to the
last own event it had confirmed handed over (every entry up to it delivered to the
group and acked: a cursor kept beside the relay's) and relays the rest again, and its
mirror reads the new stream from the start.  So an entry that was in the stream but
not yet queued by any node is not lost.  Entries trimmed by ``MAXLEN`` before the
group read them are, so ``maxlen`` must be far above what the cluster adds while no
node consumes (a relay's backlog while Redis is away waits in SQLite, not in the stream).

An entry that does not parse (another version, or anything else writing to the
stream) is skipped with a log line, counted (``malformed``), and acked.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from livesafe.cluster.nodes import text
from livesafe.cluster.settings import ClusterSettings
from livesafe.cluster.tasks import cancel_and_wait
from livesafe.events import Event
from livesafe.moderation.service import Moderation

log = logging.getLogger(__name__)

GROUP = "webhooks"
# Where this node's cursors are kept (``Store.state``).
RELAYED = "cluster.events.relayed"  # seq: every own event up to it is in the stream
HANDED = "cluster.events.handed"  # seq: every own event up to it was queued for delivery by some node
MIRRORED = "cluster.events.mirrored"  # stream entry id: the mirror has stored everything up to it
EPOCH = "cluster.events.epoch"  # the stream's epoch the cursors above belong to
_BACKLOG_CAP = 10_000  # a backlog is counted up to this (``status`` is read on every scrape)

# KEYS: stream, epoch.  ARGV: a new epoch, group.  The epoch (set if there is none) is returned.
_SETUP = """
local epoch = redis.call('GET', KEYS[2])
if not epoch then
  epoch = ARGV[1]
  redis.call('SET', KEYS[2], epoch)
end
local created = redis.pcall('XGROUP', 'CREATE', KEYS[1], ARGV[2], '0', 'MKSTREAM')
if type(created) == 'table' and created.err and not string.find(created.err, 'BUSYGROUP') then
  return redis.error_reply(created.err)
end
return epoch
"""
# KEYS: stream, the event's marker, epoch.  ARGV: entry, maxlen, marker ttl (s), our epoch.
# Returns the event's entry id (the one it had if relayed before), nil if the epoch is not ours.
_RELAY = """
if redis.call('GET', KEYS[3]) ~= ARGV[4] then return nil end
local seen = redis.call('GET', KEYS[2])
if seen then return seen end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'event', ARGV[1])
redis.call('SET', KEYS[2], id, 'EX', ARGV[3])
return id
"""


@dataclass(frozen=True)
class EventsTuning:
    """Bounds and timings of the three loops (tests shrink them)."""

    maxlen: int = 100_000  # entries the stream keeps (approximately: XADD MAXLEN ~)
    marker_seconds: int = 86_400  # how long a relayed event's id is remembered against relaying it twice
    batch: int = 200  # entries or events per round of each loop
    block_seconds: float = 1.0  # how long a read waits for new entries; below the client's 2 s socket timeout
    claim_idle_seconds: float = 30.0  # an entry a consumer has held unacked this long is taken over
    retry_seconds: float = 0.5  # the first wait after a failed round; doubles up to max_retry_seconds
    max_retry_seconds: float = 30.0
    mirror_wait_seconds: float = 2.0  # delivery waits this long for the mirror to store an event (keeps order)

    def __post_init__(self) -> None:
        if self.maxlen < 1000 or self.batch < 1 or self.marker_seconds < 60:
            raise ValueError("expected maxlen >= 1000, batch >= 1, marker_seconds >= 60")
        if not 0 < self.block_seconds <= 1.5:
            raise ValueError("block_seconds must be in (0, 1.5]: a blocked read must end before the socket timeout")
        if not 0 < self.retry_seconds <= self.max_retry_seconds or self.claim_idle_seconds <= 0:
            raise ValueError("expected 0 < retry_seconds <= max_retry_seconds and claim_idle_seconds > 0")
        if self.mirror_wait_seconds < 0:
            raise ValueError("mirror_wait_seconds must be >= 0")


StreamId = tuple[int, int]
Entry = tuple[bytes, dict[bytes, bytes] | None]  # (entry id, fields); None: a pending entry trimmed since


class ClusterEvents:
    """This node's part of the cluster's events: :meth:`start` its loops, :meth:`stop` them, :meth:`status`."""

    def __init__(
        self,
        settings: ClusterSettings,
        redis: aioredis.Redis,
        moderation: Moderation,
        tuning: EventsTuning | None = None,
    ) -> None:
        self.settings = settings
        self.redis = redis
        self.moderation = moderation
        self.tuning = tuning or EventsTuning()
        self.node = settings.node_name
        self._stream = settings.key("events")
        self._epoch_key = settings.key("events", "epoch")
        self._state = moderation.store.state
        self._setup = redis.register_script(_SETUP)
        self._relay = redis.register_script(_RELAY)
        # The relay loop owns the epoch check and both relay cursors; the others only ask it (see _reset).
        self._epoch: str | None = None  # the stream's epoch as set up; None: set up before relaying again
        self._relayed = int(self._state.get(RELAYED) or 0)
        self._handed = int(self._state.get(HANDED) or 0)
        self._mirrored = self._state.get(MIRRORED) or "0-0"
        self._mirror_from_start = False  # the stream was reset: the mirror reads the new one from its start
        self._mirror_moved = asyncio.Event()
        self._own_pending = True  # read this consumer's unacked entries (from before a restart) first
        self._next_claim = 0.0
        self._tasks: list[asyncio.Task[None]] = []
        self.connected = False
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.webhook_lag: int | None = None  # entries not yet handed to any node (the group's lag)
        self.webhook_pending = 0  # entries handed to a node and not yet acked
        self.stats: Counter[str] = Counter()  # relayed, mirrored, taken, claimed, malformed, resets

    # -------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Mark this node's events from now on and run the loops.  Never waits for Redis: they retry."""
        self.moderation.join_cluster(self.node)
        rounds: dict[str, Callable[[], Awaitable[None]]] = {
            "relay": self.relay_round,
            "mirror": self.mirror_round,
            "webhooks": self.deliver_round,
        }
        self._tasks = [asyncio.create_task(self._forever(name, round_)) for name, round_ in rounds.items()]

    async def stop(self) -> None:
        """Before the store closes.  What is unrelayed or unacked waits (in SQLite, in the group) for the next start."""
        await cancel_and_wait(self._tasks)
        self._tasks = []

    def status(self) -> dict[str, Any]:
        """For ``/healthz`` and ``/metrics``: ``relay_backlog`` is own events not yet in Redis, ``unconfirmed``
        own events in Redis not yet queued for delivery by any node."""
        events = self.moderation.store.events
        backlog = events.count(self._relayed, origin=self.node, limit=_BACKLOG_CAP)
        in_redis = events.count(self._handed, origin=self.node, limit=_BACKLOG_CAP) - backlog
        return {
            "connected": self.connected,
            "relay_backlog": backlog,
            "unconfirmed": max(in_redis, 0),
            "webhook_lag": self.webhook_lag,
            "webhook_pending": self.webhook_pending,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
            **{name: self.stats[name] for name in ("relayed", "mirrored", "taken", "claimed", "malformed", "resets")},
        }

    async def _forever(self, name: str, round_: Callable[[], Awaitable[None]]) -> None:
        """Run ``round_`` until cancelled; a failed round is retried with backoff (Redis away, the disk failing)."""
        delay = self.tuning.retry_seconds
        while True:
            try:
                await round_()
            except RedisError as exc:
                self._failed(name, f"{type(exc).__name__}: {exc}")
            except Exception as exc:  # noqa: BLE001 - e.g. the store failing: the loop must go on, and say so
                log.exception("cluster events: %s round failed", name)
                self._failed(name, f"{type(exc).__name__}: {exc}")
            else:
                if not self.connected:
                    log.info("cluster events: %s: Redis reachable", name)
                self.connected, delay = True, self.tuning.retry_seconds
                continue
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.tuning.max_retry_seconds)

    def _failed(self, loop: str, error: str) -> None:
        if self.connected or self.last_error is None:  # once per outage, not every retry
            log.warning("cluster events: %s: %s; retrying with backoff", loop, error)
        self.connected = False
        self.last_error, self.last_error_at = f"{loop}: {error}", time.time()

    # ------------------------------------------------------------------ relay

    async def relay_round(self) -> None:
        """Relay the next batch of this node's events; confirm what has been handed over; wait when caught up."""
        epoch = await self._set_up()
        events = self.moderation.store.events.read(self._relayed, limit=self.tuning.batch)
        for event in events:
            if event.data.get("node") != self.node:
                continue  # mirrored from another node, or recorded before this node joined (delivered locally)
            keys = [self._stream, self.settings.key("events", "id", event.id), self._epoch_key]
            args: list[str | int] = [_entry(event), self.tuning.maxlen, self.tuning.marker_seconds, epoch]
            if await self._relay(keys=keys, args=args) is None:
                self._epoch = None  # Redis was reset under us: set up again (and go back) before relaying on
                return
            self.stats["relayed"] += 1
        if events:
            self._relayed = events[-1].stored_seq
            self._state.put(RELAYED, str(self._relayed))
        await self._confirm(epoch)
        if len(events) < self.tuning.batch:
            await self.moderation.wait_for_events(self._relayed, self.tuning.block_seconds)

    async def _set_up(self) -> str:
        """The stream's epoch, creating the group (and the stream) if missing; a changed epoch resets the cursors."""
        if self._epoch is not None:
            return self._epoch
        reply = await self._setup(keys=[self._stream, self._epoch_key], args=[secrets.token_hex(8), GROUP])
        epoch = text(reply)
        known = self._state.get(EPOCH)
        if known is not None and known != epoch:
            self._reset()
        if known != epoch:
            self._state.put(EPOCH, epoch)
        self._epoch = epoch
        return epoch

    def _reset(self) -> None:
        """The stream is new (Redis restarted empty): relay again what no node was confirmed to have queued."""
        log.warning(
            "cluster events: the event stream was reset (Redis restarted empty?): relaying this node's events "
            "after seq %d again, mirroring the new stream from its start",
            self._handed,
        )
        self.stats["resets"] += 1
        self._relayed = self._handed
        self._state.put(RELAYED, str(self._relayed))
        self._mirror_from_start = True
        self._own_pending = True

    async def _confirm(self, epoch: str) -> None:
        """Move the handed cursor over own events whose entries the group has handed out and had acked."""
        try:
            groups = await self.redis.xinfo_groups(self._stream)
        except ResponseError:  # no stream: Redis was reset
            self._epoch = None
            return
        group = next((g for g in groups if text(g["name"]) == GROUP), None)
        if group is None:
            self._epoch = None
            return
        lag = group.get("lag")
        self.webhook_lag, self.webhook_pending = (int(lag) if lag is not None else None), int(group["pending"])
        if self._handed >= self._relayed:
            return
        rows = self.moderation.store.events.read(self._handed, origin=self.node, limit=self.tuning.batch)
        own = [e for e in rows if e.stored_seq <= self._relayed]
        seen_all = len(own) < len(rows) or len(rows) < self.tuning.batch
        delivered = _stream_id(group["last-delivered-id"])
        oldest_pending: StreamId | None = None
        if self.webhook_pending:  # (acked since, perhaps: then there is no oldest)
            oldest = (await self.redis.xpending(self._stream, GROUP))["min"]
            oldest_pending = _stream_id(oldest) if oldest is not None else None
        # The epoch read in the same command as the markers: markers missing because Redis was reset (after the
        # group was read, perhaps) must not pass for expired ones, which would confirm what no node has queued.
        current, *entries = await self.redis.mget(
            [self._epoch_key, *(self.settings.key("events", "id", e.id) for e in own)]
        )
        if current is None or text(current) != epoch:
            self._epoch = None
            return
        handed = self._handed
        for event, entry in zip(own, entries, strict=True):
            # No marker: it expired (marker_seconds after relaying), and nothing can tell any more.
            if entry is not None:
                at = _stream_id(entry)
                if at > delivered or (oldest_pending is not None and at >= oldest_pending):
                    seen_all = False
                    break
            handed = event.stored_seq
        if seen_all:
            handed = self._relayed
        if handed != self._handed:
            self._handed = handed
            self._state.put(HANDED, str(handed))

    # ----------------------------------------------------------------- mirror

    async def mirror_round(self) -> None:
        """Store the next batch of other nodes' events from the stream (waiting up to ``block_seconds``)."""
        if self._mirror_from_start:
            self._mirror_from_start, self._mirrored = False, "0-0"
        block = int(self.tuning.block_seconds * 1000)
        reply = await self.redis.xread({self._stream: self._mirrored}, count=self.tuning.batch, block=block)
        entries = _entries(reply)
        for entry_id, fields in entries:
            event = self._parse(entry_id, fields, count=True)
            if event is not None and event.data["node"] != self.node and self.moderation.mirror(event) is not None:
                self.stats["mirrored"] += 1
            self._mirrored = text(entry_id)
        if entries:
            self._state.put(MIRRORED, self._mirrored)
            moved, self._mirror_moved = self._mirror_moved, asyncio.Event()
            moved.set()

    # --------------------------------------------------------------- webhooks

    async def deliver_round(self) -> None:
        """Take the entries the group hands this node (and any held too long by another), queue them, ack."""
        if self._epoch is None:  # the relay loop creates the group first
            await asyncio.sleep(self.tuning.retry_seconds)
            return
        try:
            entries = await self._read_group()
            if time.monotonic() >= self._next_claim:
                self._next_claim = time.monotonic() + self.tuning.claim_idle_seconds / 2
                claimed = await self._claim()
                entries += claimed
                self.stats["claimed"] += len(claimed)
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            self._epoch = None  # the group is gone (Redis reset): the relay loop sets it up again
            self._own_pending = True
            return
        if not entries:
            return
        try:
            await self._take(entries)
        except BaseException:
            self._own_pending = True  # not acked: read them again from this consumer's pending entries
            raise

    async def _read_group(self) -> list[Entry]:
        if self._own_pending:
            entries = _entries(await self.redis.xreadgroup(GROUP, self.node, {self._stream: "0"}, self.tuning.batch))
            if entries:
                return entries
            self._own_pending = False
        block = int(self.tuning.block_seconds * 1000)
        reply = await self.redis.xreadgroup(GROUP, self.node, {self._stream: ">"}, self.tuning.batch, block)
        return _entries(reply)

    async def _claim(self) -> list[Entry]:
        """Entries another consumer (a dead node) has held unacked for ``claim_idle_seconds``, now ours."""
        idle = int(self.tuning.claim_idle_seconds * 1000)
        reply = await self.redis.xautoclaim(self._stream, GROUP, self.node, idle, "0-0", self.tuning.batch)
        claimed: list[Entry] = reply[1]  # without the trimmed ones: XAUTOCLAIM drops those from the group
        if claimed:
            log.info("cluster events: took over %d webhook entries another node held too long", len(claimed))
        return claimed

    async def _take(self, entries: list[Entry]) -> None:
        """Queue each entry's deliveries in this node's outbox (durably), then ack them all."""
        parsed = [(entry_id, self._parse(entry_id, fields, count=False)) for entry_id, fields in entries]
        foreign = [_stream_id(i) for i, event in parsed if event is not None and event.data["node"] != self.node]
        if foreign:
            await self._mirror_reached(max(foreign))
        for _, event in parsed:
            if event is not None:
                self.moderation.take_webhooks(event)
                self.stats["taken"] += 1
        await self.redis.xack(self._stream, GROUP, *(entry_id for entry_id, _ in parsed))

    async def _mirror_reached(self, entry: StreamId) -> None:
        """Wait (up to ``mirror_wait_seconds``) for the mirror to store ``entry``, so every node's log keeps the
        stream's order; past that, delivery stores the event itself."""
        try:
            async with asyncio.timeout(self.tuning.mirror_wait_seconds):
                while _stream_id(self._mirrored) < entry:
                    await self._mirror_moved.wait()
        except TimeoutError:
            pass

    def _parse(self, entry_id: bytes, fields: dict[bytes, bytes] | None, *, count: bool) -> Event | None:
        """The event an entry carries, or None if it was trimmed or does not parse (logged and counted by the
        mirror alone, so each node reports each bad entry once)."""
        if fields is None:
            return None
        try:
            return _event(fields)
        except (ValueError, KeyError, TypeError) as exc:
            if count:
                self.stats["malformed"] += 1
                log.warning("cluster events: skipped malformed stream entry %s: %s", text(entry_id), exc)
            return None


def _entry(event: Event) -> str:
    """The stream entry of ``event``: its one shape, without this node's ``seq`` (each node has its own)."""
    return json.dumps(event.to_dict() | {"seq": None}, separators=(",", ":"), sort_keys=True)


def _event(fields: dict[bytes, bytes]) -> Event:
    """``_entry``'s inverse, checked: raises ValueError, KeyError or TypeError on anything else."""
    record = json.loads(fields[b"event"])
    if not isinstance(record, dict):
        raise TypeError("entry is not a JSON object")
    event = Event.from_dict(record | {"seq": None})
    if not (isinstance(event.id, str) and event.id and isinstance(event.type, str) and event.type):
        raise TypeError("id and type must be non-empty strings")
    if event.stream_id is not None and not isinstance(event.stream_id, str):
        raise TypeError("stream_id must be a string or null")
    if isinstance(event.at, bool) or not isinstance(event.at, int | float):
        raise TypeError("at must be a number")
    if not isinstance(event.data.get("node"), str):
        raise KeyError("node")
    return event


def _entries(reply: Any) -> list[Entry]:
    """The entries of an XREAD/XREADGROUP reply on the one stream (RESP2, as ``nodes.connect`` speaks)."""
    return [(entry_id, fields) for _, entries in reply or [] for entry_id, fields in entries]


def _stream_id(value: str | bytes) -> StreamId:
    ms, _, seq = text(value).partition("-")
    return int(ms), int(seq or 0)

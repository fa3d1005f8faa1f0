"""Shared list versions: every node of a cluster enforces the same lists, or says it cannot and fails safe.

What Redis holds, per list name:

- ``prefix:lists`` (a hash): name -> ``{"version", "digest", "count", "at", "by"}``,
  the cluster's current version of each list.  ``version`` only grows;
  ``digest`` is the SHA-256 of the list's canonical form (below), so two files
  with the same hashes in another syntax are the same version.
- ``prefix:list:NAME:v:VERSION``: the canonical form, zlib-compressed.  A
  replaced version expires a couple of minutes later, so a node still fetching
  it finishes (or finds it gone and reads the index again).

**Versioned state, polled; pub/sub only a hint.**  Every node reads the index
every ``poll_seconds`` (one small HGETALL) and compares it with what it
enforces.  A publish also sends ``prefix:lists:changed`` so nodes look at once
rather than within the second, but pub/sub drops whatever is sent while a
subscriber reconnects; the index cannot be missed, so a node converges
whatever messages it lost.

**Publishing is compare-and-set** (one Lua script): a node publishes a change
on top of the version it saw, and a node that lost the race reads the index
again and publishes on top of the winner, so two publishes never interleave
and no version number is used twice.

**Who publishes what.**  A node publishes a list when *its own* file watcher
loads a changed file (``LiveLists.on_loaded``): a real local change.  At start
it publishes only lists Redis does not have; for the others **Redis's version
wins**, and the node fetches it rather than enforcing its file: a node booting
with an old copy of a file must not roll the whole cluster back to it.  If
Redis loses everything (restarted without persistence), each node re-publishes
what it enforces with that version number, the highest version winning, and
the nodes converge on it again.

**Applying** a version means fetching it, checking its digest, parsing and
indexing it off the event loop (a million PDQ hashes is 32 MB) and swapping it
into the same ``LiveLists.current`` the guards read (``LiveLists.install``).
An entry that is missing, corrupt or does not match its digest never replaces
the list in force: it is kept, and the problem reported.

**Stale, and failing safe.**  A node's lists' *age* is the time since it last
confirmed, with a successful read of the index, that it enforces the current
version of every list (infinite until the first confirmation).  Past
``max_list_age_seconds`` the lists are *stale*: the node may be enforcing an
old version that another node has already replaced, say because it is cut off
from Redis or a new version cannot be used here.  Guarding with possibly old
lists must never happen silently, so a stale node says so (``/healthz`` 503
with the reason, ``livesafe_lists_stale`` 1) and, per ``stale_lists``:

- ``"slate"``: every stream on the node shows the slate, audio muted, until the
  lists are fresh again (``Relay.hold_streams``; each stream reports a
  ``guard.error`` saying why).  Nothing unchecked against current lists reaches
  a viewer.
- ``"refuse"``: new publishers get 503 (``Relay.refuse_publishers``) while
  running streams carry on with the lists in force: for operators who prefer
  continuity for streams already checked over the strictest guarantee.

List specs (category, action, thresholds) stay each node's configuration;
only the hashes (and their per-row metadata) are shared.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np
import redis
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from livesafe.cluster.nodes import safe_url, text
from livesafe.cluster.settings import ClusterSettings
from livesafe.cluster.tasks import cancel_and_wait
from livesafe.lists.formats import NO_METADATA
from livesafe.lists.health import ListsHealth, ListState
from livesafe.lists.live import LiveLists
from livesafe.lists.model import Blocklist, ListSpec
from livesafe.signals import SIGNALS

if TYPE_CHECKING:
    from livesafe.relay.registry import Relay

log = logging.getLogger(__name__)

MAGIC = b"livesafe-list/1\n"
MAX_CANONICAL_BYTES = 1 << 30  # what a stored entry may decompress to (a 1M-hash list is ~32 MB)
REPLACED_VERSION_TTL_MS = 120_000  # how long a replaced version stays fetchable
RETRY_SECONDS = 5.0  # an entry that could not be used is fetched again this often, not every poll
COMPRESSION_LEVEL = 1  # PDQ hashes barely compress: spend little CPU trying
FETCH_CHUNK_BYTES = 1 << 20  # content is read in GETRANGE pieces of this size (see ``_fetch``)


class SharedListError(ValueError):
    """A list entry in Redis that cannot be used; the message says which part and why."""


# ------------------------------------------------------------ canonical form


@dataclass(frozen=True)
class Packed:
    """A list's canonical form compressed for Redis, with the digest of the uncompressed form."""

    digest: str
    count: int
    blob: bytes


def canonical(blocklist: Blocklist) -> bytes:
    """The list's content independent of its file's syntax: ``MAGIC``, header length, JSON header, hash bytes.

    The header names each signal with its rows and bytes per hash (in signal
    name order) and carries per-row metadata for the signals that have any;
    the hashes follow, signal after signal, in file order.  File line numbers
    are left out: the same hashes with a comment added are the same version.
    """
    signals: list[list[Any]] = []
    metadata: dict[str, list[dict[str, str]]] = {}
    chunks: list[bytes] = []
    for name in sorted(blocklist.hashes):
        values = np.ascontiguousarray(blocklist.hashes[name], dtype=np.uint8)
        if not len(values):
            continue
        signals.append([name, int(values.shape[0]), int(values.shape[1])])
        chunks.append(values.tobytes())
        rows = blocklist.metadata.get(name)
        if rows is not None and any(rows):
            metadata[name] = [dict(row) for row in rows]
    fields: dict[str, Any] = {"signals": signals, "metadata": metadata}
    if blocklist.unmatchable:  # MD5s counted at load: every node shows and warns about them, none indexes them
        fields["unmatchable"] = dict(blocklist.unmatchable)
    header = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return b"".join([MAGIC, len(header).to_bytes(8, "big"), header, *chunks])


def pack(blocklist: Blocklist) -> Packed:
    """Canonical form, digest and compression: CPU-bound for a big list, so call it in a thread."""
    data = canonical(blocklist)
    return Packed(hashlib.sha256(data).hexdigest(), len(blocklist), zlib.compress(data, COMPRESSION_LEVEL))


def unpack(spec: ListSpec, blob: bytes | bytearray, digest: str) -> Blocklist:
    """The Blocklist (enforced as ``spec``) of a stored entry; SharedListError unless it is whole and matches."""
    inflate = zlib.decompressobj()
    try:
        data = inflate.decompress(blob, MAX_CANONICAL_BYTES)
    except zlib.error as exc:
        raise SharedListError(f"content is not zlib data ({exc})") from None
    if inflate.unconsumed_tail:
        raise SharedListError(f"content inflates to more than {MAX_CANONICAL_BYTES} bytes")
    if not inflate.eof:
        raise SharedListError("content is truncated")
    actual = hashlib.sha256(data).hexdigest()
    if actual != digest:
        raise SharedListError(f"content digest {actual[:12]} does not match the index's {digest[:12]}")
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + 8:
        raise SharedListError("content is not a livesafe list (bad magic)")
    start = len(MAGIC) + 8
    end = start + int.from_bytes(data[len(MAGIC) : start], "big")
    try:
        header = json.loads(data[start:end])
        signals = [(str(name), int(rows), int(width)) for name, rows, width in header["signals"]]
        metadata = header["metadata"]
        unmatchable = {str(name): int(count) for name, count in header.get("unmatchable", {}).items()}
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise SharedListError(f"content header is malformed ({exc})") from None
    hashes: dict[str, np.ndarray] = {}
    row_metadata: dict[str, list[Mapping[str, str]]] = {}
    offset = end
    for name, rows, width in signals:
        signal = SIGNALS.get(name)
        if signal is None:
            raise SharedListError(f"content has an unknown signal {name!r}")
        if width != signal.bits // 8 or rows < 0:
            raise SharedListError(
                f"content has {rows} x {width}-byte {name} hashes; {name} hashes are {signal.bits // 8}"
            )
        size = rows * width
        if offset + size > len(data):
            raise SharedListError(f"content ends inside the {name} hashes")
        values = np.frombuffer(data, dtype=np.uint8, count=size, offset=offset).reshape(rows, width)
        offset += size
        meta = metadata.get(name) if isinstance(metadata, dict) else None
        if meta is None:
            row_metadata[name] = [NO_METADATA] * rows
        elif isinstance(meta, list) and len(meta) == rows and all(_is_metadata(row) for row in meta):
            row_metadata[name] = [MappingProxyType(row) if row else NO_METADATA for row in meta]
        else:
            raise SharedListError(f"content has malformed metadata for {name}")
        hashes[name] = values
    if offset != len(data):
        raise SharedListError(f"content has {len(data) - offset} bytes after the hashes")
    return Blocklist(
        spec=spec,
        hashes=MappingProxyType(hashes),
        metadata=MappingProxyType(row_metadata),
        skipped=0,
        errors=[],
        version=digest[:16],
        unmatchable=MappingProxyType(unmatchable),
    )


def _is_metadata(row: object) -> bool:
    return isinstance(row, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in row.items())


# ------------------------------------------------------------ the index


@dataclass(frozen=True)
class Entry:
    """The cluster's current version of one list, as the index holds it."""

    version: int
    digest: str
    count: int
    at: float  # wall time it was published
    by: str  # the node that published it

    def to_json(self) -> str:
        fields = {"version": self.version, "digest": self.digest, "count": self.count, "at": self.at, "by": self.by}
        return json.dumps(fields, separators=(",", ":"))

    @classmethod
    def parse(cls, raw: str | bytes) -> Entry:
        try:
            data = json.loads(raw)
            entry = cls(
                int(data["version"]), str(data["digest"]), int(data["count"]), float(data["at"]), str(data["by"])
            )
        except (ValueError, TypeError, KeyError) as exc:
            raise SharedListError(f"index entry is malformed ({exc})") from None
        if entry.version < 1 or len(entry.digest) != 64:
            raise SharedListError(f"index entry is malformed (version {entry.version}, digest {entry.digest!r})")
        return entry


# KEYS: index, new content.  ARGV: name, entry JSON, version, mode, expected version, channel,
# content key prefix (before the version), replaced-version TTL ms, content.
# mode "change": only on top of the expected version (0: none yet).  mode "restore": only over
# nothing or a lower version.  Returns 1 if published, else what the index holds now ("" if nothing).
_PUBLISH = """
local current = redis.call('HGET', KEYS[1], ARGV[1])
local version = tonumber(ARGV[3])
local have = 0
if current then have = tonumber(cjson.decode(current)['version']) end
if ARGV[4] == 'change' then
  if have ~= tonumber(ARGV[5]) then return current or '' end
elseif current and have >= version then
  return current
end
redis.call('SET', KEYS[2], ARGV[9])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if current and have ~= version then redis.call('PEXPIRE', ARGV[7] .. have, ARGV[8]) end
redis.call('PUBLISH', ARGV[6], ARGV[1] .. ' ' .. version)
return 1
"""


# ------------------------------------------------------------ one node's view


@dataclass
class _Tracked:
    """What this node enforces for one list, and what it knows of the cluster's version."""

    name: str
    blocklist: Blocklist | None = None  # the object LiveLists holds (as of the last round)
    digest: str = ""
    version: int | None = None  # the cluster's version of ``blocklist``, once known
    highest: int = 0  # the highest version this node has seen for the list (restores never go below it)
    unpublished: bool = False  # reloaded from this node's file and not yet in Redis
    packed: Packed | None = None  # ``blocklist`` packed, kept until Redis has it
    confirmed: float | None = None  # monotonic time the index last said ``version`` is current
    error: str | None = None
    failed: tuple[int, str] | None = None  # (version, digest) of the entry that could not be used
    failed_at: float = 0.0  # monotonic time it failed

    def track(self, blocklist: Blocklist, packed: Packed) -> None:
        """A list LiveLists holds that Redis has not confirmed yet (its version is unknown until then)."""
        self.blocklist, self.digest, self.packed, self.version = blocklist, packed.digest, packed, None

    def confirm(self, version: int, at: float) -> None:
        self.version, self.confirmed, self.error, self.failed = version, at, None, None
        self.highest = max(self.highest, version)
        self.unpublished = False
        self.packed = None

    def state(self) -> ListState:
        hashes = len(self.blocklist) if self.blocklist is not None else 0
        return ListState(self.name, self.version, self.digest, hashes, self.error)


class SharedLists:
    """Keeps one node's ``LiveLists`` at the cluster's versions, publishes its local changes, reports freshness.

    ``start`` makes a first round (so a node that reaches Redis starts fresh)
    and runs the poll, the pub/sub hint and the staleness check until ``stop``.
    ``protect(relay)`` applies ``settings.stale_lists`` to that relay; ``health``
    is what ``/healthz`` and ``/metrics`` show (``relay.app.add_lists_health``).
    """

    def __init__(
        self,
        settings: ClusterSettings,
        redis_client: aioredis.Redis,
        lists: LiveLists[Any],
        *,
        poll_seconds: float = 1.0,
    ) -> None:
        if poll_seconds <= 0 or poll_seconds >= settings.max_list_age_seconds:
            raise ValueError("poll_seconds must be > 0 and less than max_list_age_seconds")
        self.settings = settings
        self._redis = redis_client
        self._lists = lists
        self._poll = poll_seconds
        # Content moves in a worker thread on a blocking client of its own: a big list's transfer and
        # (de)compression never hold the event loop.
        self._bulk = redis.Redis.from_url(settings.redis_url, socket_timeout=10.0, socket_connect_timeout=2.0)
        self._publish = self._bulk.register_script(_PUBLISH)
        self._index_key = settings.key("lists")
        self._channel = settings.key("lists", "changed")
        self._tracked = {blocklist.spec.name: _Tracked(blocklist.spec.name) for blocklist in lists.loaded}
        self._problem = "not yet in touch with Redis"  # why the last round failed ("" if it did not)
        self._relay: Relay | None = None
        self._stale = False
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: list[asyncio.Task[None]] = []

    # ------------------------------------------------------------ lifecycle

    def protect(self, relay: Relay) -> None:
        """While the lists are stale, slate ``relay``'s streams or refuse its new publishers (``stale_lists``)."""
        self._relay = relay

    async def start(self) -> None:
        """One round now, then keep at it; never raises for Redis: an unreachable Redis makes the lists stale."""
        self._loop = asyncio.get_running_loop()
        self._lists.on_loaded.append(self._file_loaded)
        await self._round()
        self._check()
        self._tasks = [
            asyncio.create_task(self._run(), name="livesafe-shared-lists"),
            asyncio.create_task(self._listen(), name="livesafe-shared-lists-hint"),
            asyncio.create_task(self._watch(), name="livesafe-shared-lists-age"),
        ]

    async def stop(self) -> None:
        if self._file_loaded in self._lists.on_loaded:
            self._lists.on_loaded.remove(self._file_loaded)
        await cancel_and_wait(self._tasks)
        self._tasks = []
        await asyncio.to_thread(self._bulk.close)

    # ------------------------------------------------------------ freshness

    @property
    def age(self) -> float:
        """Seconds since every list was last confirmed current (infinite before the first confirmation)."""
        confirmed = [t.confirmed for t in self._tracked.values()]
        if not confirmed or any(at is None for at in confirmed):
            return math.inf
        return time.monotonic() - min(at for at in confirmed if at is not None)

    @property
    def stale(self) -> bool:
        return self.age > self.settings.max_list_age_seconds

    def health(self) -> ListsHealth:
        age = self.age
        stale = age > self.settings.max_list_age_seconds
        return ListsHealth(
            lists=tuple(t.state() for t in self._tracked.values()),
            age_seconds=age,
            max_age_seconds=self.settings.max_list_age_seconds,
            stale=stale,
            on_stale=self.settings.stale_lists,
            reason=self._reason(age) if stale else "",
        )

    def _reason(self, age: float) -> str:
        since = "never confirmed current" if math.isinf(age) else f"not confirmed current for {age:.1f} s"
        problems = [self._problem] if self._problem else []
        problems += [f"list {t.name!r}: {t.error}" for t in self._tracked.values() if t.error]
        limit = f"max {self.settings.max_list_age_seconds:g} s"
        return f"lists stale: {since} ({limit}): {'; '.join(problems) or 'no round completed in time'}"

    def _check(self) -> None:
        """Act on a change between fresh and stale (the relay's hold or refusal)."""
        stale = self.stale
        if stale == self._stale:
            return
        self._stale = stale
        if stale:
            reason = self._reason(self.age)
            log.error("cluster: %s; %s", reason, "slating every stream" if self._slates else "refusing new publishers")
            if self._relay is not None:
                if self._slates:
                    self._relay.hold_streams(reason)
                else:
                    self._relay.refuse_publishers(reason)
        else:
            log.info("cluster: lists current again: %s", self._versions())
            if self._relay is not None:
                if self._slates:
                    self._relay.release_streams()
                else:
                    self._relay.refuse_publishers(None)

    @property
    def _slates(self) -> bool:
        return self.settings.stale_lists == "slate"

    def _versions(self) -> str:
        return ", ".join(f"{t.name} v{t.version}" for t in self._tracked.values())

    # ------------------------------------------------------------ the loops

    def _file_loaded(self, blocklist: Blocklist) -> None:
        """From the file watcher's thread: a list changed on this node's disk; the next round publishes it."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(self._wake.set)
        except RuntimeError:  # the loop closed meanwhile: nothing left to publish to
            pass

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            await self._round()
            try:
                async with asyncio.timeout(self._poll):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def _round(self) -> None:
        try:
            await self.sync()
        except RedisError as exc:
            if not self._problem.startswith("Redis unreachable"):
                log.warning("cluster: Redis unreachable for the lists (%s); keeping the lists in force", exc)
            self._problem = f"Redis unreachable at {safe_url(self.settings.redis_url)} ({exc})"
        except Exception as exc:  # noqa: BLE001 - the lists must keep converging whatever one round hit
            log.exception("cluster: list round failed")
            self._problem = f"list round failed: {exc}"

    async def _listen(self) -> None:
        """The pub/sub hint: wake the poll at once when any node publishes (resubscribing after errors)."""
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self._channel)
                self._wake.set()  # messages sent while we were away are lost: look now
                while True:
                    if await pubsub.get_message(timeout=1.0) is not None:
                        self._wake.set()
            except (RedisError, OSError):
                await asyncio.sleep(self._poll)
            finally:
                await pubsub.aclose()

    async def _watch(self) -> None:
        """Staleness is checked on its own timer: a round stuck on a dead Redis must not delay failing safe."""
        while True:
            await asyncio.sleep(min(0.2, self._poll))
            self._check()

    # ------------------------------------------------------------ one round

    async def sync(self) -> None:
        """Read the index once and bring every list in line with it; raises RedisError."""
        for tracked in self._tracked.values():
            await self._track(tracked)
        read_at = time.monotonic()
        index = {text(name): raw for name, raw in (await self._redis.hgetall(self._index_key)).items()}
        if self._problem.startswith("Redis unreachable"):
            log.info("cluster: Redis reachable again for the lists")
        self._problem = ""
        for name, tracked in self._tracked.items():
            await self._sync_list(tracked, index.get(name), read_at)

    async def _track(self, tracked: _Tracked) -> None:
        """Notice what LiveLists holds now: first sight (at start), or reloaded from this node's file."""
        current = self._loaded(tracked.name)
        if current is not tracked.blocklist:
            tracked.unpublished = tracked.blocklist is not None
            tracked.track(current, await asyncio.to_thread(pack, current))

    async def _sync_list(self, tracked: _Tracked, raw: bytes | str | None, read_at: float) -> None:
        entry = None
        if raw is not None:
            try:
                entry = Entry.parse(raw)
            except SharedListError as exc:
                self._report(tracked, f"kept the list in force: {exc}")
                return
            tracked.highest = max(tracked.highest, entry.version)
        if tracked.unpublished:
            await self._publish_change(tracked, entry, read_at)
        elif entry is None or (tracked.version is not None and entry.version < tracked.version):
            await self._restore(tracked, entry, read_at)
        elif entry.digest == tracked.digest:
            tracked.confirm(entry.version, read_at)
        else:
            await self._apply(tracked, entry, read_at)

    def _loaded(self, name: str) -> Blocklist:
        return next(blocklist for blocklist in self._lists.loaded if blocklist.spec.name == name)

    async def _publish_change(self, tracked: _Tracked, entry: Entry | None, read_at: float) -> None:
        if entry is not None and entry.digest == tracked.digest:
            tracked.confirm(entry.version, read_at)  # someone published the same content already
            return
        version = max(entry.version if entry is not None else 0, tracked.highest) + 1
        expected = entry.version if entry is not None else 0
        if await self._put(tracked, version, "change", expected):
            log.info("cluster: published list %r version %d (%d hashes)", tracked.name, version, tracked.state().hashes)
            tracked.confirm(version, read_at)

    async def _restore(self, tracked: _Tracked, entry: Entry | None, read_at: float) -> None:
        """Redis lacks the list, or holds an older version than ours (it lost its data): put ours back."""
        version = tracked.version if tracked.version is not None else 1
        if await self._put(tracked, version, "restore", 0):
            what = "published" if tracked.version is None else "restored"
            log.info("cluster: %s list %r version %d", what, tracked.name, version)
            tracked.confirm(version, read_at)

    async def _put(self, tracked: _Tracked, version: int, mode: str, expected: int) -> bool:
        """The compare-and-set publish; False (and a round again at once) if another node got there first."""
        assert tracked.blocklist is not None
        packed = tracked.packed
        if packed is None:
            packed = tracked.packed = await asyncio.to_thread(pack, tracked.blocklist)
        entry = Entry(version, packed.digest, packed.count, time.time(), self.settings.node_name)
        prefix = self.settings.key("list", tracked.name, "v", "")
        result = await asyncio.to_thread(
            self._publish,
            keys=[self._index_key, prefix + str(version)],
            args=[
                tracked.name,
                entry.to_json(),
                version,
                mode,
                expected,
                self._channel,
                prefix,
                REPLACED_VERSION_TTL_MS,
                packed.blob,
            ],
        )
        if result == 1:
            return True
        log.info("cluster: list %r: another node published first; looking again", tracked.name)
        self._wake.set()
        return False

    async def _apply(self, tracked: _Tracked, entry: Entry, read_at: float) -> None:
        """Fetch, verify, index and swap in the cluster's version; a bad entry leaves the list in force."""
        if tracked.failed == (entry.version, entry.digest) and time.monotonic() - tracked.failed_at < RETRY_SECONDS:
            return
        in_force = tracked.blocklist
        assert in_force is not None
        spec = in_force.spec
        try:
            blocklist = await asyncio.to_thread(self._fetch_and_install, in_force, entry)
        except SharedListError as exc:
            tracked.failed, tracked.failed_at = (entry.version, entry.digest), time.monotonic()
            kept = f"version {tracked.version}" if tracked.version is not None else "this node's file"
            self._report(tracked, f"kept {kept}: version {entry.version} from {entry.by} is unusable: {exc}")
            return
        if blocklist is None:
            self._wake.set()  # the file changed while we fetched: the next round publishes that on top
            return
        log.info("cluster: list %r now version %d from %s (%d hashes)", spec.name, entry.version, entry.by, entry.count)
        tracked.blocklist, tracked.digest = blocklist, entry.digest
        tracked.confirm(entry.version, read_at)

    def _fetch_and_install(self, in_force: Blocklist, entry: Entry) -> Blocklist | None:
        """In a worker thread: the whole transfer, decompression, parse and index build (None: see ``install``)."""
        spec = in_force.spec
        blob = self._fetch(self.settings.key("list", spec.name, "v", str(entry.version)))
        if blob is None:
            raise SharedListError("its content is missing from Redis (replaced or lost); will look again")
        blocklist = unpack(spec, blob, entry.digest)
        if len(blocklist) != entry.count:
            raise SharedListError(f"content has {len(blocklist)} hashes, the index says {entry.count}")
        return blocklist if self._lists.install(blocklist, replacing=in_force) else None

    def _fetch(self, key: str) -> bytearray | None:
        """A version's content, read a piece at a time; None if the key is gone (or goes while we read).

        One GET of a 32 MB reply has redis-py copy the whole reply several
        times while holding the GIL, which stalled the event loop for over a
        quarter of a second on a loaded machine; pieces of a megabyte keep each
        hold short.  A version's key is never rewritten, only expired, so the
        pieces are of one content or the read finds the key gone.
        """
        size = self._bulk.strlen(key)
        if not isinstance(size, int) or size == 0:
            return None
        if size > MAX_CANONICAL_BYTES:
            raise SharedListError(f"its content is {size} bytes, more than a list may be")
        blob = bytearray()
        while len(blob) < size:
            piece = self._bulk.getrange(key, len(blob), min(len(blob) + FETCH_CHUNK_BYTES, size) - 1)
            if not isinstance(piece, bytes) or not piece:
                return None
            blob += piece
        return blob

    def _report(self, tracked: _Tracked, error: str) -> None:
        if error != tracked.error:
            log.error("cluster: list %r: %s", tracked.name, error)
        tracked.error = error

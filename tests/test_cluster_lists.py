"""Shared list versions against a real redis-server: nodes (each its own list file, LiveMatcher, file
watcher and SharedLists) converge on one version of each list, Redis's version wins at start, bad
files and bad entries never replace a good list, an emptied Redis is refilled, and a node cut off
from Redis goes stale and fails safe (slate or refuse) until it is back."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import av
import numpy as np
import pytest
import redis.asyncio as aioredis
from harness import (
    ICE,
    SAMPLES,
    RunningRelay,
    downscale_clip,
    looks_like_slate,
    make_offer,
    publishing,
    read_recording,
    sample_lists,
    send,
    serving,
)

from livesafe.clients import watch
from livesafe.cluster.lists import Entry, SharedListError, SharedLists, canonical, pack, unpack
from livesafe.cluster.nodes import connect
from livesafe.cluster.settings import ClusterSettings
from livesafe.guard.matcher import LiveMatcher
from livesafe.guard.stream_guard import GuardSettings, StreamGuard
from livesafe.lists import ListSpec, load_blocklist
from livesafe.lists.live import ListWatcher
from livesafe.moderation.settings import ModerationSettings
from livesafe.policy import Action
from livesafe.proxy import build_proxy
from livesafe.relay.app import add_lists_health
from livesafe.relay.encoder import Encoded
from livesafe.relay.fanout import PacketTrack
from livesafe.relay.settings import RelaySettings
from livesafe.relay.stream import LiveStream, StreamSettings, Viewer

SECRET = "cluster-secret-for-tests-only"
HEXES = [f"{i:02x}" * 32 for i in range(1, 8)]
POLL = 0.2


def text(*hexes: str) -> str:
    return "".join(f"pdq {h}\n" for h in hexes)


def rewrite(path: Path, content: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(content)
    os.replace(tmp, path)


def cluster(url: str, name: str, **extra: object) -> ClusterSettings:
    return ClusterSettings(url, SECRET, node_name=name, **extra)


class Node:
    """One node's lists: its own file, the guard's LiveMatcher, the file watcher and the shared versions."""

    def __init__(self, tmp_path: Path, url: str, name: str, content: str, poll: float = POLL, **extra: object) -> None:
        self.path = tmp_path / name / "l.txt"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(content)
        self.settings = cluster(url, name, **extra)
        self.lists = LiveMatcher([ListSpec(path=self.path, name="l", action="slate")])
        self.watcher = ListWatcher(self.lists, interval=0.05)
        self.redis = connect(self.settings)
        self.shared = SharedLists(self.settings, self.redis, self.lists, poll_seconds=poll)

    async def start(self) -> Node:
        self.watcher.start()
        await self.shared.start()
        return self

    async def stop(self) -> None:
        await self.shared.stop()
        self.watcher.stop()
        await self.redis.aclose()

    @property
    def hashes(self) -> set[str]:
        return {row.tobytes().hex() for row in self.lists.current.blocklists[0].hashes.get("pdq", [])}

    @property
    def version(self) -> int | None:
        return self.shared.health().lists[0].version

    def matches(self, hex_hash: str) -> bool:
        """Does the guard's matcher (what streams read) find this exact hash?"""
        query = np.frombuffer(bytes.fromhex(hex_hash), dtype=np.uint8)[None, :]
        return any(distance == 0 for *_, distance in self.lists.current.lookup("pdq", query))


@contextlib.asynccontextmanager
async def nodes(tmp_path: Path, url: str, contents: list[str], **extra: object) -> AsyncIterator[list[Node]]:
    started: list[Node] = []
    try:
        for i, content in enumerate(contents):
            started.append(await Node(tmp_path, url, "abc"[i], content, **extra).start())
        yield started
    finally:
        for node in started:
            await node.stop()


async def until(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Seconds until ``condition`` holds; fails the test after ``timeout``."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.02)
    return time.monotonic() - start


async def index(url: str) -> dict[str, Entry]:
    client = aioredis.Redis.from_url(url)
    try:
        return {k.decode(): Entry.parse(v) for k, v in (await client.hgetall("livesafe:lists")).items()}
    finally:
        await client.aclose()


# ------------------------------------------------------------------ the canonical form


def test_the_canonical_form_ignores_file_syntax_and_refuses_damaged_content(tmp_path: Path) -> None:
    plain, csv = tmp_path / "a.txt", tmp_path / "b.csv"
    plain.write_text("# a comment\n" + text(*HEXES[:3]).upper().replace("PDQ", "pdq"))
    csv.write_text("signal_type,signal_str\n" + "".join(f"pdq,{h}\n" for h in HEXES[:3]))
    a, b = load_blocklist(ListSpec(path=plain, name="l")), load_blocklist(ListSpec(path=csv, name="l"))
    assert canonical(a) == canonical(b)
    packed = pack(a)
    back = unpack(ListSpec(path=plain, name="l", action="slate"), packed.blob, packed.digest)
    assert back.spec.action == "slate" and len(back) == 3 and np.array_equal(back.hashes["pdq"], a.hashes["pdq"])
    with pytest.raises(SharedListError, match="does not match"):
        unpack(a.spec, packed.blob, "0" * 64)
    with pytest.raises(SharedListError, match="truncated"):
        unpack(a.spec, packed.blob[:-8], packed.digest)
    with pytest.raises(SharedListError, match="not zlib"):
        unpack(a.spec, b"garbage", packed.digest)
    with pytest.raises(SharedListError, match="malformed"):
        Entry.parse(b'{"version": "x"}')


def test_md5s_counted_at_load_travel_with_the_shared_list(tmp_path: Path) -> None:
    """A node that takes the list from Redis shows (and warns about) the MD5s no frame can match, as the node
    that read the file does; they are counted, never hashes to index."""
    path = tmp_path / "l.txt"
    path.write_text(text(*HEXES[:2]) + f"md5 {'ab' * 16}\nmd5 {'cd' * 16}\n")
    loaded = load_blocklist(ListSpec(path=path, name="l"))
    assert dict(loaded.unmatchable) == {"md5": 2}
    packed = pack(loaded)
    back = unpack(loaded.spec, packed.blob, packed.digest)
    assert dict(back.unmatchable) == {"md5": 2} and len(back) == 2 and set(back.hashes) == {"pdq"}
    other = tmp_path / "other.txt"
    other.write_text(text(HEXES[3]))
    lists = LiveMatcher([ListSpec(path=other, name="l")])
    assert lists.install(back, replacing=lists.loaded[0])
    (status,) = lists.status()
    assert (status["entries"], status["unmatchable"], status["version"]) == (2, {"md5": 2}, back.version)
    path.write_text(text(*HEXES[:2]))
    assert b"unmatchable" not in canonical(load_blocklist(ListSpec(path=path, name="l"))), (
        "lists without MD5s keep their form"
    )


# ------------------------------------------------------------------ converging


async def test_a_change_on_one_node_is_enforced_by_every_node_within_seconds(tmp_path: Path, redis_server) -> None:
    async with nodes(tmp_path, redis_server.url, [text(*HEXES[:2])] * 3) as (a, b, c):
        assert [n.version for n in (a, b, c)] == [1, 1, 1]
        assert (await index(redis_server.url))["l"].count == 2
        rewrite(a.path, text(*HEXES[:3]))
        took = await until(lambda: b.matches(HEXES[2]) and c.matches(HEXES[2]), 5.0, "B and C enforce A's change")
        assert took < 5.0
        await until(lambda: [n.version for n in (a, b, c)] == [2, 2, 2], 2.0, "every node at version 2")
        entry = (await index(redis_server.url))["l"]
        assert (entry.version, entry.count, entry.by) == (2, 3, "a")
        assert {n.shared.health().lists[0].digest for n in (a, b, c)} == {entry.digest}
        assert not any(n.shared.stale for n in (a, b, c))
        # B's file is untouched: the shared version is in force there, not B's file.
        assert b.path.read_text() == text(*HEXES[:2]) and b.hashes == set(HEXES[:3])


async def test_the_pubsub_hint_brings_a_change_long_before_the_next_poll(tmp_path: Path, redis_server) -> None:
    a = await Node(tmp_path, redis_server.url, "a", text(HEXES[0]), poll=10.0).start()
    b = await Node(tmp_path, redis_server.url, "b", text(HEXES[0]), poll=10.0).start()
    try:
        await asyncio.sleep(0.3)  # b's subscription is up (it looks at the index once more when it is)
        rewrite(a.path, text(*HEXES[:2]))
        took = await until(lambda: b.matches(HEXES[1]), 5.0, "B hears of A's change")
        assert took < 2.0, f"took {took:.2f} s: polled, not hinted"
    finally:
        await b.stop()
        await a.stop()


async def test_two_nodes_changing_at_once_end_on_one_version_everywhere(tmp_path: Path, redis_server) -> None:
    """Compare-and-set: both changes are published, one on top of the other, never two version 2s."""
    async with nodes(tmp_path, redis_server.url, [text(HEXES[0])] * 3) as (a, b, c):
        rewrite(a.path, text(HEXES[0], HEXES[1]))
        rewrite(b.path, text(HEXES[0], HEXES[2]))

        def agreed() -> bool:
            digests = {n.shared.health().lists[0].digest for n in (a, b, c)}
            return len(digests) == 1 and a.version == b.version == c.version == 3

        await until(agreed, 5.0, "every node on the same, third, version")
        entry = (await index(redis_server.url))["l"]
        assert entry.version == 3 and entry.digest == a.shared.health().lists[0].digest
        assert a.hashes == b.hashes == c.hashes and a.hashes in ({HEXES[0], HEXES[1]}, {HEXES[0], HEXES[2]})


async def test_a_node_starting_with_an_older_file_does_not_roll_the_cluster_back(tmp_path: Path, redis_server) -> None:
    async with nodes(tmp_path, redis_server.url, [text(HEXES[0])]) as (a,):
        rewrite(a.path, text(*HEXES[:4]))
        await until(lambda: a.version == 2, 5.0, "A publishes its change")
        late = await Node(tmp_path, redis_server.url, "d", text(HEXES[0])).start()  # the old copy of the file
        try:
            assert late.version == 2 and late.hashes == set(HEXES[:4]), "Redis's version wins at start"
            await asyncio.sleep(3 * POLL)
            assert (await index(redis_server.url))["l"].version == 2 and a.hashes == set(HEXES[:4])
        finally:
            await late.stop()


async def test_bad_files_and_bad_entries_never_replace_a_good_list(tmp_path: Path, redis_server) -> None:
    async with nodes(tmp_path, redis_server.url, [text(*HEXES[:2])] * 2, max_list_age_seconds=1.0) as (a, b):
        rewrite(a.path, text(HEXES[0]) + "not a hash line\n")
        await asyncio.sleep(5 * POLL)
        assert (await index(redis_server.url))["l"].version == 1
        assert a.hashes == b.hashes == set(HEXES[:2]) and a.version == b.version == 1
        # A damaged version 2 in Redis (as if a publisher died mid-write): both keep version 1 and say why.
        entry = (await index(redis_server.url))["l"]
        client = aioredis.Redis.from_url(redis_server.url)
        try:
            bad = Entry(2, "f" * 64, 9, time.time(), "x")
            await client.set("livesafe:list:l:v:2", b"not a list")
            await client.hset("livesafe:lists", "l", bad.to_json())
            await until(lambda: all(n.shared.health().lists[0].error for n in (a, b)), 3.0, "the bad entry reported")
            health = b.shared.health()
            assert "version 2 from x is unusable" in (health.lists[0].error or "")
            assert b.hashes == set(HEXES[:2]) and health.lists[0].version == 1
            await until(lambda: b.shared.stale, 3.0, "a node that cannot enforce the current version goes stale")
            assert "unusable" in b.shared.health().reason
            # A fixed file on A is published on top, and everyone is current again.
            rewrite(a.path, text(*HEXES[:3]))
            await until(lambda: b.matches(HEXES[2]) and not b.shared.stale, 5.0, "B takes A's fixed list")
            assert (await index(redis_server.url))["l"].version == 3 and entry.version == 1
        finally:
            await client.aclose()


async def test_an_emptied_redis_is_refilled_and_the_nodes_converge(tmp_path: Path, redis_server) -> None:
    async with nodes(tmp_path, redis_server.url, [text(HEXES[0])] * 2) as (a, b):
        (a.path.parent / "old.txt").write_text(a.path.read_text())
        rewrite(a.path, text(*HEXES[:2]))
        await until(lambda: a.version == b.version == 2 and b.matches(HEXES[1]), 5.0, "version 2 everywhere")
        digest = (await index(redis_server.url))["l"].digest
        redis_server.stop()
        redis_server.start()  # empty
        restored: dict[str, Entry] = {}

        async def refilled() -> bool:
            restored.update(await index(redis_server.url))
            return "l" in restored

        deadline = time.monotonic() + 5.0
        while not await refilled():
            assert time.monotonic() < deadline, "the nodes re-published the list"
            await asyncio.sleep(0.05)
        assert (restored["l"].version, restored["l"].digest) == (2, digest), "the version in force, not a new one"
        await until(lambda: a.version == b.version == 2 and not a.shared.stale and not b.shared.stale, 3.0, "fresh")
        assert a.hashes == b.hashes == set(HEXES[:2])
        # A node that booted on an old file while Redis was empty got its copy in as version 1:
        # the nodes enforcing version 2 put theirs back over it, and everyone converges on 2.
        old = pack(load_blocklist(ListSpec(path=a.path.parent / "old.txt", name="l")))
        client = aioredis.Redis.from_url(redis_server.url)
        try:
            await client.set("livesafe:list:l:v:1", old.blob)
            await client.hset("livesafe:lists", "l", Entry(1, old.digest, old.count, time.time(), "d").to_json())
        finally:
            await client.aclose()
        late = await Node(tmp_path, redis_server.url, "d", text(HEXES[0])).start()
        try:
            await until(lambda: late.version == 2 and late.hashes == set(HEXES[:2]), 5.0, "the old copy loses")
            assert (await index(redis_server.url))["l"].digest == digest
        finally:
            await late.stop()
        # Publishing carries on from there.
        rewrite(b.path, text(*HEXES[:3]))
        await until(lambda: a.matches(HEXES[2]) and a.version == 3, 5.0, "A takes B's change as version 3")


def write_big_list(path: Path, rows: int) -> np.ndarray:
    """``rows`` random PDQ hashes as ``pdq HEX`` lines, written with numpy (a million in well under a second)."""
    hashes = np.random.default_rng(7).integers(0, 256, (rows, 32), dtype=np.uint8)
    digits = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
    lines = np.empty((rows, 69), dtype=np.uint8)
    lines[:, :4] = np.frombuffer(b"pdq ", dtype=np.uint8)
    lines[:, 4:68:2], lines[:, 5:69:2] = digits[hashes >> 4], digits[hashes & 15]
    lines[:, 68] = ord("\n")
    path.write_bytes(lines.tobytes())
    return hashes


async def test_a_million_hash_list_is_shared_without_holding_the_event_loop(tmp_path: Path, redis_server) -> None:
    """Packing, the 32 MB transfer, parsing and indexing all happen in threads: the loop keeps ticking."""
    big = tmp_path / "big.txt"
    hashes = write_big_list(big, 1_000_000)
    gaps: list[float] = []

    async def ticker() -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    ticking = asyncio.ensure_future(ticker())
    try:
        a = Node(tmp_path, redis_server.url, "a", big.read_text())
        await a.start()
        b = Node(tmp_path, redis_server.url, "b", text(HEXES[0]))
        try:
            await b.start()
            assert b.version == 1 and len(b.lists.current.blocklists[0]) == 1_000_000
            assert b.matches(hashes[123_456].tobytes().hex())
        finally:
            await b.stop()
            await a.stop()
    finally:
        ticking.cancel()
    # Any one step on the loop would stall it for over half a second (indexing a million hashes takes
    # a second, packing them half); what threads cost it, handing the GIL to and fro, is tens of ms.
    assert max(gaps) < 0.5, f"the event loop stalled for {max(gaps):.3f} s"


# ------------------------------------------------------------------ failing safe


@pytest.fixture(scope="module")
def benign_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return downscale_clip(SAMPLES / "benign_mix.mp4", tmp_path_factory.mktemp("clips") / "benign_360p.mp4")


@contextlib.asynccontextmanager
async def clustered_relay(node: Node) -> AsyncIterator[RunningRelay]:
    """The whole proxy guarding with ``node``'s lists, wired as a clustered node is (see SharedLists)."""
    proxy = build_proxy(
        RelaySettings(ice=ICE, stream=StreamSettings(ended_grace_seconds=1.0)),
        lambda: node.lists.current,
        GuardSettings(hold_seconds=0.5),
        ModerationSettings(database=":memory:"),
    )
    node.shared.protect(proxy.relay)
    add_lists_health(proxy.app, node.shared.health)
    await node.start()
    try:
        async with serving(proxy.app) as base:
            yield RunningRelay(proxy.relay, base, proxy.moderation)
    finally:
        await node.stop()


def metric(body: str, name: str) -> float:
    line = next(line for line in body.splitlines() if line.startswith(name + " ") or line.startswith(name + "{"))
    return float(line.rsplit(" ", 1)[1])


def slate_share(path: Path) -> float:
    luma = read_recording(path).luma
    assert len(luma) >= 5, f"the viewer got {len(luma)} frames"
    return sum(looks_like_slate(y) for y in luma[-5:]) / 5


async def test_a_node_cut_off_from_redis_goes_stale_and_slates_every_stream_until_back(
    tmp_path: Path, redis_server, benign_clip: Path, http
) -> None:
    node = Node(tmp_path, redis_server.url, "a", text(*HEXES[:2]), max_list_age_seconds=1.0)
    async with clustered_relay(node) as r:
        events: list = []
        r.relay._sink = events.append
        health = await send(http, "GET", f"{r.base}/healthz")
        assert health.status == 200 and health.json()["lists"]["versions"]["l"]["version"] == 1
        async with publishing(r, benign_clip, "s", loop=True):
            stream = r.relay.streams["s"]
            await watch(r.url("whep", "s"), ice=ICE, record=tmp_path / "fresh.mkv", duration=2.0)
            assert slate_share(tmp_path / "fresh.mkv") == 0, "fresh lists: guarded pictures"
            redis_server.stop()
            took = await until(lambda: stream.failsafe.active, 4.0, "the stale node slates its stream")
            assert took >= 1.0 - 2 * POLL, "not before max_list_age_seconds"
            assert stream.failsafe.held is not None and "lists stale" in stream.failsafe.held
            assert any(e.type == "guard.error" and "lists stale" in e.details["error"] for e in events)
            reply = await send(http, "GET", f"{r.base}/healthz")
            assert reply.status == 503 and reply.json()["status"] == "stale_lists"
            assert "Redis unreachable" in reply.json()["reason"]
            body = (await send(http, "GET", f"{r.base}/metrics")).text
            assert metric(body, "livesafe_lists_stale") == 1 and metric(body, "livesafe_lists_age_seconds") > 1.0
            assert metric(body, 'livesafe_list_version{list="l"}') == 1
            await watch(r.url("whep", "s"), ice=ICE, record=tmp_path / "stale.mkv", duration=2.0)
            assert slate_share(tmp_path / "stale.mkv") == 1, "a stale node's viewers see only the slate"
            assert r.summary("s")["state"] == "redacted"

            redis_server.start()  # back, and empty: the node re-publishes and is fresh again
            await until(lambda: not stream.failsafe.active, 5.0, "fresh again: the hold is released")
            assert (await send(http, "GET", f"{r.base}/healthz")).status == 200
            await watch(r.url("whep", "s"), ice=ICE, record=tmp_path / "again.mkv", duration=2.5)
            assert slate_share(tmp_path / "again.mkv") == 0, "guarded pictures again"
            body = (await send(http, "GET", f"{r.base}/metrics")).text
            assert metric(body, "livesafe_lists_stale") == 0


async def test_with_refuse_a_stale_node_turns_publishers_away_and_keeps_running_streams(
    tmp_path: Path, redis_server, benign_clip: Path, http
) -> None:
    node = Node(tmp_path, redis_server.url, "a", text(HEXES[0]), max_list_age_seconds=1.0, stale_lists="refuse")
    async with clustered_relay(node) as r:
        async with publishing(r, benign_clip, "s", loop=True):
            stream = r.relay.streams["s"]
            redis_server.stop()
            await until(lambda: r.relay.refusing is not None, 4.0, "the stale node refuses publishers")
            reply = await send(http, "POST", r.url("whip", "t"), await make_offer(), content_type="application/sdp")
            assert reply.status == 503 and "lists stale" in reply.text and "Redis unreachable" in reply.text
            assert "t" not in r.relay.streams
            frames = stream.counters.frames_in
            await asyncio.sleep(0.5)
            assert not stream.failsafe.active and stream.counters.frames_in > frames, "the running stream carries on"
            assert (await send(http, "GET", f"{r.base}/healthz")).status == 503
            redis_server.start()
            await until(lambda: r.relay.refusing is None, 5.0, "fresh again: publishers welcome")
            assert (await send(http, "GET", f"{r.base}/healthz")).status == 200


async def test_a_node_that_never_reaches_redis_is_stale_from_the_start(tmp_path: Path, benign_clip: Path, http) -> None:
    node = Node(tmp_path, "redis://127.0.0.1:1/0", "a", text(HEXES[0]))
    async with clustered_relay(node) as r:
        assert r.relay.held is not None and "never confirmed" in r.relay.held
        async with publishing(r, benign_clip, "s"):
            assert r.relay.streams["s"].failsafe.held == r.relay.held, "a stream started while stale is held too"
        reply = await send(http, "GET", f"{r.base}/healthz")
        assert reply.status == 503 and reply.json()["lists"]["versions"]["l"]["version"] is None
        body = (await send(http, "GET", f"{r.base}/metrics")).text
        assert metric(body, "livesafe_lists_age_seconds") == float("inf")


async def test_a_relay_wide_hold_composes_with_the_failsafe_s_own_slate() -> None:
    """Held: only the slate passes; released: guarded frames again, unless the worker failed meanwhile."""

    def frame(slate: bool = False) -> Encoded:
        packet = av.Packet(b"\x00" * 10)
        packet.is_keyframe = True
        return Encoded(time.monotonic(), Action.SLATE if slate else Action.PASS, {"vp8": [packet]}, slate=slate)

    events: list = []
    stream = LiveStream(
        "s",
        StreamGuard(sample_lists(), GuardSettings()),
        StreamSettings(),
        on_event=events.append,
        on_ended=lambda s: None,
    )
    track = PacketTrack("video", capacity=100, max_age=10)

    async def close() -> None:
        pass

    stream.add_viewer(Viewer("v", "vp8", track, None, close))
    try:
        stream.failsafe.deliver([frame()])
        assert len(track._queue) == 1
        stream.failsafe.hold("lists stale: test")
        stream.failsafe.hold("lists stale: again")  # reported once
        stream.failsafe.deliver([frame(), frame(slate=True)])
        assert len(track._queue) == 2 and stream.counters.slate_frames == 1, "held: the slate only"
        assert [e.details["error"] for e in events if e.type == "guard.error"] == ["lists stale: test"]
        stream.failsafe.release()
        stream.failsafe.deliver([frame(), frame(slate=True)])
        assert len(track._queue) == 3 and stream.counters.slate_frames == 1, "released: guarded frames only"
        stream.failsafe.hold("lists stale: test")
        stream.failsafe.worker_failed("boom")
        stream.failsafe.release()
        stream.failsafe.deliver([frame()])
        assert len(track._queue) == 3 and stream.failsafe.active, "a failed worker keeps the slate after release"
    finally:
        await stream.end()

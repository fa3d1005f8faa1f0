"""Nodes of one cluster against a real redis-server: placement and redirects, one origin per stream,
moderator requests reaching the origin, shared revocations, Redis outages, bad input."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest
from cluster_harness import SECRET, RunningNode, cluster_node, node_settings
from harness import (
    BLOCKLIST,
    FAST_END,
    ICE,
    ROOT,
    SAMPLES,
    classify,
    make_offer,
    publishing,
    read_recording,
    sample_lists,
    serving,
    source_luma,
    unused_port,
)
from prometheus_client.parser import text_string_to_metric_families

from livesafe.clients import ClientError, publish, watch
from livesafe.cluster.auth import HEADER, ClusterAuth
from livesafe.cluster.nodes import NodeNameTaken, RegistryUnavailable
from livesafe.events import ACTION_TAKEN, STREAM_CUT
from livesafe.guard.matcher import LiveMatcher
from livesafe.guard.stream_guard import GuardSettings
from livesafe.lists import ListSpec
from livesafe.moderation.settings import ModerationSettings, Principal
from livesafe.proxy import build_proxy
from livesafe.relay.settings import RelaySettings, StreamAccess

ALICE = Principal("alice", "moderator", "alice-token-0123456789")
KEY = "studio-key-0123456789"
KEYED = RelaySettings(ice=ICE, stream=FAST_END, streams={"studio": StreamAccess(key=KEY)})


def moderated(tmp_path: Path, name: str) -> ModerationSettings:
    return ModerationSettings(database=str(tmp_path / f"{name}.db"), tokens=(ALICE,))


async def until(condition: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout:g} s")
        await asyncio.sleep(0.05)


def live_frames(node: RunningNode, stream: str = "studio") -> int:
    live = node.relay.streams.get(stream)
    return live.counters.frames_in if live is not None and live.publisher is not None else 0


@contextlib.asynccontextmanager
async def publisher(url: str, clip: Path, key: str | None = KEY) -> AsyncIterator[asyncio.Task]:
    task = asyncio.ensure_future(publish(clip, url, token=key, ice=ICE, loop=True))
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, ClientError):
            await task


async def post_offer(http: aiohttp.ClientSession, url: str, key: str | None = KEY) -> tuple[int, str, dict]:
    headers = {"Content-Type": "application/sdp"} | ({"Authorization": f"Bearer {key}"} if key else {})
    async with http.post(url, data=await make_offer(), headers=headers, allow_redirects=False) as response:
        return response.status, await response.text(), dict(response.headers)


async def test_placement_sends_a_publisher_to_the_node_with_room_and_a_reconnect_to_its_origin(
    redis_server, tmp_path, blocked_cut_360p, http
) -> None:
    async with (
        cluster_node(redis_server.url, "a", tmp_path, relay=KEYED, signalling="redirect") as a,
        cluster_node(
            redis_server.url, "b", tmp_path, relay=KEYED, signalling="redirect", moderation=moderated(tmp_path, "b")
        ) as b,
    ):
        b.node.admitting = lambda: False  # b is full: placement must send new streams to a
        await asyncio.sleep(0.5)  # b's next heartbeat says so
        status, _, headers = await post_offer(http, b.url("whip", "studio"))
        assert status == 307 and headers["Location"] == f"{a.base}/whip/studio?node=a"
        assert "studio" not in b.relay.streams and not b.node.leases.held  # nothing started on b
        async with publisher(b.url("whip", "studio"), blocked_cut_360p):  # our client follows the 307
            await until(lambda: live_frames(a) > 10, what="frames on node a")
            assert "studio" not in b.relay.streams
            assert (await b.node.leases.holder("studio")).node == "a"
            # b's /api/streams lists the stream on a (shared on each heartbeat).
            await until(lambda: any(s["id"] == "studio" for s in b.relay.cluster_streams), what="b lists it")
            async with http.get(
                f"{b.base}/api/streams", headers={"Authorization": f"Bearer {ALICE.token}"}
            ) as response:
                listed = {s["id"]: s for s in await response.json()}
            assert listed["studio"]["node"] == "a" and listed["studio"]["state"] in ("live", "redacted")
            # Now a is the full one; still a reconnect of studio goes back to its origin, a.
            b.node.admitting, a.node.admitting = (lambda: True), (lambda: False)
            await asyncio.sleep(0.5)
            status, _, headers = await post_offer(http, b.url("whip", "studio"))
            assert status == 307 and headers["Location"].startswith(a.base)
            status, _, headers = await post_offer(http, a.url("whip", "other"), key=None)
            assert status == 401  # auth comes before placement: nothing is revealed to a stranger
        await until(lambda: "studio" not in a.relay.streams, what="the stream to end on a")
        await until(lambda: not a.node.leases.held, what="a to release the lease")
        assert await a.node.leases.holder("studio") is None
        async with http.get(f"{b.base}/healthz") as response:
            health = await response.json()
        cluster = health["cluster"]
        assert {k: cluster[k] for k in ("node", "registry", "nodes", "leases", "draining")} == {
            "node": "b", "registry": "ok", "nodes": 2, "leases": 0, "draining": False
        }  # fmt: skip
        assert cluster["events"]["connected"] and cluster["events"]["relay_backlog"] == 0
        async with http.get(f"{b.base}/metrics") as response:
            families = {f.name: f for f in text_string_to_metric_families(await response.text())}
        placed = {s.labels["outcome"]: s.value for s in families["livesafe_cluster_placements"].samples}
        assert placed == {"local": 0, "redirected": 3, "refused": 0}  # two POSTs, one publisher, all sent to a
        assert families["livesafe_cluster_registry_up"].samples[0].value == 1
        assert families["livesafe_cluster_nodes"].samples[0].value == 2


async def test_proxied_an_offer_to_any_node_is_answered_by_the_node_that_takes_it(
    redis_server, tmp_path, blocked_cut_360p, http
) -> None:
    """The default: the stream key reaches the origin (clients drop it on a redirect to another host)."""
    async with (
        cluster_node(redis_server.url, "a", tmp_path, relay=KEYED) as a,
        cluster_node(redis_server.url, "b", tmp_path, relay=KEYED) as b,
    ):
        b.node.admitting = lambda: False
        await asyncio.sleep(0.5)
        status, answer, headers = await post_offer(http, b.url("whip", "studio"))
        assert status == 201 and answer.startswith("v=0"), answer
        assert headers["Location"].startswith(f"{a.base}/whip/studio/")  # absolute: the session lives on a
        assert len(a.relay.sessions) == 1 and not b.relay.sessions
        async with http.delete(headers["Location"], headers={"Authorization": f"Bearer {KEY}"}) as response:
            assert response.status == 200
        assert not a.relay.sessions
        status, text, _ = await post_offer(http, b.url("whip", "studio"), key="wrong-key-0123456789")
        assert status == 403, text  # b refuses a wrong key itself, before passing anything on
        async with publisher(b.url("whip", "studio"), blocked_cut_360p):
            await until(lambda: live_frames(a) > 10, what="frames on node a")
            assert "studio" not in b.relay.streams


async def test_a_moderator_acting_on_another_node_reaches_the_origin_and_the_revocation_is_everywhere(
    redis_server, tmp_path, blocked_cut_360p, http
) -> None:
    async with (
        cluster_node(redis_server.url, "a", tmp_path, relay=KEYED, moderation=moderated(tmp_path, "a")) as a,
        cluster_node(redis_server.url, "b", tmp_path, relay=KEYED, moderation=moderated(tmp_path, "b")) as b,
    ):
        async with publisher(a.url("whip", "studio"), blocked_cut_360p):
            await until(lambda: live_frames(a) + live_frames(b) > 5, what="frames on a node")
            origin, other = (a, b) if live_frames(a) else (b, a)  # placement chose; either is fine here
            body = json.dumps({"action": "terminate", "reason": "test: acted on the other node"})
            headers = {"Authorization": f"Bearer {ALICE.token}", "Content-Type": "application/json"}
            async with http.post(f"{other.base}/api/streams/studio/actions", data=body, headers=headers) as response:
                answer = await response.json()
                assert response.status == 200, answer
            assert answer["audit"]["actor"] == "alice" and answer["event"]["type"] == ACTION_TAKEN
            assert answer["event"]["stream_key_revoked"] is True
            await until(lambda: live_frames(origin) == 0, what="the publisher cut on its origin")
            assert origin.moderation.store.events.latest("studio", [STREAM_CUT]) is not None
            # The key is refused on the other node too, once its heartbeat has merged the revocation.
            await until(lambda: len(other.relay.revoked_keys) == 1, what="the other node to learn the revocation")
            status, text, _ = await post_offer(http, other.url("whip", "studio"))
            assert status == 403 and "revoked" in text
            # Unknown moderators are refused by the origin as they would be locally.
            bad = headers | {"Authorization": "Bearer not-a-token-of-anyone"}
            async with http.post(f"{other.base}/api/streams/studio/actions", data=body, headers=bad) as response:
                assert response.status in (401, 403)


async def test_forged_and_replayed_inter_node_requests_are_refused(redis_server, tmp_path, http) -> None:
    async with cluster_node(redis_server.url, "a", tmp_path, moderation=moderated(tmp_path, "a")) as a:
        path, body = "/api/streams/studio/reports", b'{"reason": "spam"}'
        forged = ClusterAuth("not-the-cluster-secret!", "b").sign("POST", path, "a", body)
        genuine = ClusterAuth(SECRET, "b").sign("POST", path, "a", body)
        for headers, expected in ((forged, "does not match"), (genuine, None), (genuine, "replayed")):
            sent = headers | {"Content-Type": "application/json"}
            async with http.post(a.base + path, data=body, headers=sent) as response:
                text = await response.text()
            if expected is None:
                assert response.status == 404, text  # accepted as a node's request: no such live stream
            else:
                assert response.status == 401 and expected in text
                assert SECRET not in text
        assert HEADER in genuine


async def test_a_second_node_with_a_taken_name_is_refused(redis_server, tmp_path) -> None:
    async with cluster_node(redis_server.url, "a", tmp_path):
        with pytest.raises(NodeNameTaken, match="'a' is in use"):
            async with cluster_node(redis_server.url, "a", tmp_path):
                pass


async def test_without_redis_streams_go_on_and_new_ones_get_503_then_all_converges(
    redis_server, tmp_path, blocked_cut_360p, http
) -> None:
    async with cluster_node(redis_server.url, "a", tmp_path) as a:
        async with publisher(a.url("whip", "studio"), blocked_cut_360p, key=None):
            await until(lambda: live_frames(a) > 5, what="frames on a")
            redis_server.stop()
            await asyncio.sleep(0.6)  # past a heartbeat: a knows Redis is gone
            assert not a.node.registry.reachable
            status, text, headers = await post_offer(http, a.url("whip", "other"), key=None)
            assert status == 503 and "registry unreachable" in text and headers["Retry-After"]
            before = live_frames(a)
            await asyncio.sleep(1.5)  # longer than the lease TTL: still guarding what it has
            assert live_frames(a) > before + 10
            redis_server.start()  # empty: registration, lease and access lists are put back
            await until(lambda: a.node.registry.reachable, what="a to reconnect")
            await asyncio.sleep(0.5)  # the heartbeat after reconnecting renews (restores) the lease
            assert (await a.node.leases.holder("studio")).node == "a"
            assert [n.name for n in await a.node.registry.nodes()] == ["a"]
            status, _, _ = await post_offer(http, a.url("whip", "other"), key=None)
            assert status == 201


async def test_a_lease_taken_by_another_node_cuts_the_stream_here(redis_server, tmp_path, blocked_cut_360p) -> None:
    async with cluster_node(redis_server.url, "a", tmp_path) as a:
        async with publisher(a.url("whip", "studio"), blocked_cut_360p, key=None):
            await until(lambda: live_frames(a) > 5, what="frames on a")
            # As if a had been cut off past its lease and node b took the stream meanwhile.
            await a.node.redis.set(a.node.settings.key("stream", "studio", "owner"), "b|99", px=5000)
            await until(lambda: live_frames(a) == 0, timeout=5, what="a to cut the stream")
            cut = a.moderation.store.events.latest("studio", [STREAM_CUT])
            assert cut is not None and "guarded by b" in cut.data["details"]["reason"]


async def test_join_fails_clearly_when_redis_does_not_answer() -> None:
    proxy = build_proxy(
        RelaySettings(ice=ICE),
        sample_lists(),
        GuardSettings(),
        ModerationSettings(database=":memory:"),
        cluster=node_settings("redis://127.0.0.1:1/0", "a", unused_port()),
        lists=LiveMatcher([ListSpec(path=BLOCKLIST, name="samples", category="test", action="slate")]),
    )
    with pytest.raises(RegistryUnavailable, match="Redis at redis://127.0.0.1:1/0"):
        async with serving(proxy.app):
            pass


def test_serve_with_a_redis_that_does_not_answer_exits_2_with_one_line(tmp_path) -> None:
    env = os.environ | {"LIVESAFE_CLUSTER_SECRET": SECRET}
    args = ["serve", "--redis", "redis://127.0.0.1:1/0", "--node", "a", "--port", str(unused_port())]
    args += ["--blocklist", "sample_streams/blocklist.txt"]
    result = subprocess.run(
        [sys.executable, "-m", "livesafe.cli", *args, "--db", str(tmp_path / "a.db")],
        cwd=ROOT, capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert errors == [errors[0]] and "cluster: Redis at redis://127.0.0.1:1/0" in errors[0]
    assert "Traceback" not in result.stderr and SECRET not in result.stderr
    missing = subprocess.run(
        [sys.executable, "-m", "livesafe.cli", *args], cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={k: v for k, v in os.environ.items() if k != "LIVESAFE_CLUSTER_SECRET"},
    )  # fmt: skip
    assert missing.returncode == 2 and "LIVESAFE_CLUSTER_SECRET" in missing.stderr


async def test_published_on_a_watched_on_b_and_c_the_blocked_segment_is_redacted_on_every_viewer(
    redis_server, tmp_path, blocked_cut_360p
) -> None:
    segment = json.loads((SAMPLES / "blocked_cut.truth.json").read_text())["segments"][0]
    async with (
        cluster_node(redis_server.url, "a", tmp_path) as a,
        cluster_node(redis_server.url, "b", tmp_path) as b,
        cluster_node(redis_server.url, "c", tmp_path) as c,
    ):
        for edge in (b, c):
            edge.node.admitting = lambda: False  # the stream must start on a (placement is tested above)
        await asyncio.sleep(0.5)
        async with publishing(a, blocked_cut_360p, "studio"):
            results = await asyncio.gather(
                *(
                    watch(n.url("whep", "studio"), record=tmp_path / f"{n.name}.mkv", ice=ICE, duration=20)
                    for n in (b, c)
                )
            )
            assert b.relay.edges is not None and b.relay.edges.counters.links_opened == 1
            assert "studio" not in b.relay.streams and "studio" not in c.relay.streams  # edges: no pipeline
    assert all(r.ended_by_server for r in results)
    source = source_luma(blocked_cut_360p)
    for name in ("b", "c"):
        seen = classify(read_recording(tmp_path / f"{name}.mkv"), source)
        inside = {k: v for k, v in seen.items() if segment["start"] <= k <= segment["end"]}
        assert len(inside) >= 0.8 * (segment["end"] - segment["start"] + 1), f"{name} got {len(inside)} frames"
        leaked = sorted(k for k, v in inside.items() if v != "slate")
        assert not leaked, f"viewer on {name} saw frames {leaked} of the blocked segment"
        before = {k: v for k, v in seen.items() if k < segment["start"]}
        assert len(before) > 30 and all(v == "source" for v in before.values()), f"{name}: {before}"

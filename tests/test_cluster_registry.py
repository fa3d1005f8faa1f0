"""The cluster's registry against a real redis-server: node names, liveness, leases, fencing; inter-node auth."""

from __future__ import annotations

import asyncio

import pytest

from livesafe.cluster.auth import ClusterAuth, ClusterAuthError
from livesafe.cluster.leases import Lease, StreamLeases
from livesafe.cluster.nodes import NodeLoad, NodeNameTaken, NodeRegistry, RegistryUnavailable, SecretMismatch, connect
from livesafe.cluster.settings import ClusterSettings

SECRET = "cluster-secret-for-tests-only"


FAST_TIMING = {"heartbeat_seconds": 0.2, "node_ttl_seconds": 1.0, "lease_ttl_seconds": 0.6}


def settings(url: str, name: str, **extra: float) -> ClusterSettings:
    timing = FAST_TIMING | extra
    return ClusterSettings(url, SECRET, node_name=name, **timing)


async def test_nodes_register_expire_and_refuse_a_second_holder_of_a_name(redis_server) -> None:
    a = NodeRegistry(settings(redis_server.url, "a"), connect(settings(redis_server.url, "a")), NodeLoad)
    b = NodeRegistry(settings(redis_server.url, "b"), connect(settings(redis_server.url, "b")), NodeLoad)
    await a.join()
    await b.join()
    assert [n.name for n in await a.nodes()] == ["a", "b"]
    twin = NodeRegistry(settings(redis_server.url, "a"), connect(settings(redis_server.url, "a")), NodeLoad)
    with pytest.raises(NodeNameTaken, match="'a' is in use"):
        await twin.join()
    # b stops refreshing (as if killed): it drops out after its TTL, a stays.
    assert b._task is not None
    b._task.cancel()
    await asyncio.sleep(1.4)
    assert [n.name for n in await a.nodes()] == ["a"]
    await a.leave()
    assert await b.nodes() == []


async def test_leases_are_exclusive_fenced_renewed_and_lost(redis_server) -> None:
    sa, sb = settings(redis_server.url, "a"), settings(redis_server.url, "b")
    a, b = StreamLeases(sa, connect(sa)), StreamLeases(sb, connect(sb))
    first = await a.acquire("studio")
    assert first == Lease("studio", "a", 1)
    assert await b.acquire("studio") == first  # held: b learns who has it
    assert "studio" not in b.held
    for _ in range(5):  # renewals keep it past its TTL
        await asyncio.sleep(0.2)
        await a.renew()
    assert await b.holder("studio") == first
    await a.release("studio")
    second = await b.acquire("studio")
    assert second.node == "b" and second.token > first.token  # a later holder's token is larger
    lost: list[tuple[Lease, Lease | None]] = []

    async def on_lost(ours: Lease, now: Lease | None) -> None:
        lost.append((ours, now))

    a.on_lost = on_lost
    a.held["studio"] = first  # a believes it still holds it (cut off while b took over)
    await a.renew()
    assert lost == [(first, second)] and "studio" not in a.held


async def test_a_lease_survives_redis_losing_it(redis_server) -> None:
    s = settings(redis_server.url, "a")
    leases = StreamLeases(s, connect(s))
    ours = await leases.acquire("studio")
    redis_server.stop()
    await leases.renew()  # unreachable: kept, nothing raised
    assert leases.held == {"studio": ours}
    with pytest.raises(RegistryUnavailable):
        await leases.holder("studio")
    redis_server.start()  # empty: the lease and the fence counter are gone
    await leases.renew()
    assert await leases.holder("studio") == ours
    other = StreamLeases(settings(redis_server.url, "b"), connect(settings(redis_server.url, "b")))
    await leases.release("studio")
    assert (await other.acquire("studio")).token > ours.token  # the fence counter was restored


async def test_join_fails_clearly_when_redis_does_not_answer() -> None:
    s = settings("redis://127.0.0.1:1/0", "a")
    registry = NodeRegistry(s, connect(s), NodeLoad)
    with pytest.raises(RegistryUnavailable, match="Redis at redis://127.0.0.1:1/0"):
        await registry.join()


def test_inter_node_requests_are_signed_for_one_node_once() -> None:
    a, b, c = ClusterAuth(SECRET, "a"), ClusterAuth(SECRET, "b"), ClusterAuth(SECRET, "c")
    headers = a.sign("POST", "/cluster/act/studio", "b", b'{"action":"resume"}')
    header = headers["X-Livesafe-Cluster"]
    assert SECRET not in header and SECRET not in repr(a)
    assert b.verify("POST", "/cluster/act/studio", header, b'{"action":"resume"}') == "a"
    with pytest.raises(ClusterAuthError, match="replayed"):
        b.verify("POST", "/cluster/act/studio", header, b'{"action":"resume"}')
    with pytest.raises(ClusterAuthError, match="does not match"):  # the same request sent on to another node
        c.verify("POST", "/cluster/act/studio", header, b'{"action":"resume"}')
    fresh = a.sign("POST", "/cluster/act/studio", "b", b"{}")["X-Livesafe-Cluster"]
    with pytest.raises(ClusterAuthError, match="does not match"):  # body changed
        b.verify("POST", "/cluster/act/studio", fresh, b'{"action":"terminate"}')
    forged = ClusterAuth("another-secret-entirely", "a").sign("GET", "/x", "b")["X-Livesafe-Cluster"]
    with pytest.raises(ClusterAuthError, match="does not match"):
        b.verify("GET", "/x", forged)
    old = a.sign("GET", "/x", "b", now=1000.0)["X-Livesafe-Cluster"]
    with pytest.raises(ClusterAuthError, match="stale"):
        b.verify("GET", "/x", old)
    for bad in (None, "", "v2 from=a", "v1 from=a ts=x nonce=1 sig=2"):
        with pytest.raises(ClusterAuthError):
            b.verify("GET", "/x", bad)


def test_cluster_settings_refuse_what_would_not_work() -> None:
    for kwargs, message in (
        ({"redis_url": "http://x"}, "redis_url"),
        ({"secret": "short"}, "at least 16"),
        ({"node_name": "a b"}, "node_name"),
        ({"advertise_url": "ftp://x"}, "advertise_url"),
        ({"lease_ttl_seconds": 0.1}, "lease_ttl_seconds"),
        ({"stale_lists": "ignore"}, "stale_lists"),
    ):
        with pytest.raises(ValueError, match=message):
            ClusterSettings(**({"redis_url": "redis://127.0.0.1:6379", "secret": SECRET} | kwargs))


async def test_a_node_with_another_secret_is_refused_at_join(redis_server) -> None:
    first = NodeRegistry(settings(redis_server.url, "a"), connect(settings(redis_server.url, "a")), NodeLoad)
    await first.join()
    other = ClusterSettings(redis_server.url, "not-the-cluster-secret", node_name="b", **FAST_TIMING)
    stranger = NodeRegistry(other, connect(other), NodeLoad)
    with pytest.raises(SecretMismatch, match="LIVESAFE_CLUSTER_SECRET is not the one") as info:
        await stranger.join()
    assert "not-the-cluster-secret" not in str(info.value) and SECRET not in str(info.value)
    assert [n.name for n in await first.nodes()] == ["a"]  # it never registered
    stored = await first.redis.get("livesafe:secret-check")
    assert stored is not None and SECRET.encode() not in stored
    await first.leave()


def test_advertise_url_is_kept_without_a_trailing_slash() -> None:
    s = ClusterSettings("redis://127.0.0.1:6379", SECRET, advertise_url="http://10.0.0.5:8080/")
    assert s.advertise_url == "http://10.0.0.5:8080"

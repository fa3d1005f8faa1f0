"""Cluster nodes in one test process: each a whole proxy (relay, guard, moderation, its own SQLite
file) joined to the suite's redis-server, served on its own loopback port.

Timings are shortened (heartbeat 0.2 s, node TTL 1 s, lease 0.6 s) so failures show within a second.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import BLOCKLIST, FAST_END, ICE, RunningRelay, serving, unused_port

from livesafe.cluster.node import ClusterNode
from livesafe.cluster.settings import ClusterSettings
from livesafe.guard.matcher import LiveMatcher
from livesafe.guard.stream_guard import GuardSettings
from livesafe.lists import ListSpec
from livesafe.moderation.settings import ModerationSettings
from livesafe.proxy import build_proxy
from livesafe.relay.settings import RelaySettings

SECRET = "cluster-secret-for-tests-only"
FAST = {"heartbeat_seconds": 0.2, "node_ttl_seconds": 1.0, "lease_ttl_seconds": 0.6}


@dataclass
class RunningNode(RunningRelay):
    node: ClusterNode

    @property
    def name(self) -> str:
        return self.node.name


def node_settings(redis_url: str, name: str, port: int, **extra: Any) -> ClusterSettings:
    return ClusterSettings(
        redis_url, SECRET, node_name=name, advertise_url=f"http://127.0.0.1:{port}", **(FAST | extra)
    )


@contextlib.asynccontextmanager
async def cluster_node(
    redis_url: str,
    name: str,
    tmp_path: Path,
    *,
    relay: RelaySettings | None = None,
    moderation: ModerationSettings | None = None,
    lists: LiveMatcher | None = None,
    **cluster: Any,
) -> AsyncIterator[RunningNode]:
    """``lists``: the node's blocklists (default: the sample list, this node's own copy)."""
    port = unused_port()
    lists = lists or LiveMatcher([ListSpec(path=BLOCKLIST, name="samples", category="test", action="slate")])
    proxy = build_proxy(
        relay or RelaySettings(ice=ICE, stream=FAST_END),
        lambda: lists.current,
        GuardSettings(hold_seconds=0.5),
        moderation or ModerationSettings(database=str(tmp_path / f"{name}.db")),
        cluster=node_settings(redis_url, name, port, **cluster),
        lists=lists,
    )
    assert proxy.cluster is not None
    async with serving(proxy.app, port) as base:
        yield RunningNode(proxy.relay, base, proxy.moderation, proxy.cluster)

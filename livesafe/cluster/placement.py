"""Where a new stream goes: the least loaded live node with room, or back to the origin it has.

Pure functions over what the registry says, so the rule is tested without Redis.
"""

from __future__ import annotations

from collections.abc import Sequence

from livesafe.cluster.nodes import NodeInfo


def choose(nodes: Sequence[NodeInfo], me: str) -> NodeInfo | None:
    """The node a new stream should start on (None: no node has room).

    Most CPU headroom first (per-stream cost as admission measures it), then
    fewer streams; on a tie this node, to save the publisher a redirect.
    """
    candidates = [n for n in nodes if n.has_room]
    if not candidates:
        return None
    return max(candidates, key=lambda n: (round(n.load.headroom_cores, 1), -n.load.streams, n.name == me))


def is_fresh(node: NodeInfo, now: float, heartbeat_seconds: float) -> bool:
    """Has ``node`` refreshed recently enough to be trusted with a publisher?

    A killed node's registration lingers until its TTL; a redirect to it would
    fail.  Two missed heartbeats and it is not sent publishers.
    """
    return now - node.at <= 2.5 * heartbeat_seconds

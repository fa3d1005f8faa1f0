"""Where a new stream goes: the least loaded live node with room, or back to the origin it has.

Pure functions over what the registry says, so the rule is tested without Redis.
"""

from __future__ import annotations

from collections.abc import Sequence

from livesafe.cluster.nodes import NodeInfo


def choose(nodes: Sequence[NodeInfo], me: str) -> NodeInfo | None:
    """The node a new stream should start on (None: no node has room).

    Room for the most streams first (CPU headroom over the per-stream cost
    admission measures: whole streams, so that CPU noise between idle nodes
    does not bounce publishers around), then fewer streams; on a tie this
    node, to save the publisher a redirect.
    """
    candidates = [n for n in nodes if n.has_room]
    if not candidates:
        return None
    return max(candidates, key=lambda n: (slots(n), -n.load.streams, n.name == me))


def slots(node: NodeInfo) -> int:
    """How many more streams ``node`` can take, as admission would count them."""
    return int(node.load.headroom_cores // max(node.load.stream_cost_cores, 1e-3))


def is_fresh(node: NodeInfo, now: float, heartbeat_seconds: float) -> bool:
    """Has ``node`` refreshed recently enough to be trusted with a publisher?

    A killed node's registration lingers until its TTL; a redirect to it would
    fail.  Two missed heartbeats and it is not sent publishers.
    """
    return now - node.at <= 2.5 * heartbeat_seconds

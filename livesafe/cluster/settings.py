"""``[cluster]``: which Redis, who this node is, where other nodes reach it."""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass, field, replace
from urllib.parse import urlsplit

NODE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
STALE_LIST_ACTIONS = ("slate", "refuse")
SIGNALLING = ("proxy", "redirect")


@dataclass(frozen=True)
class ClusterSettings:
    """A node's place in a cluster.

    ``secret`` (from the environment, never the file) signs every request one node
    makes of another.  Timings: a node refreshes its registration every
    ``heartbeat_seconds`` and is dead ``node_ttl_seconds`` after the last refresh; a
    stream lease lasts ``lease_ttl_seconds`` and is renewed every heartbeat.
    """

    redis_url: str
    secret: str = field(repr=False)
    node_name: str = field(default_factory=socket.gethostname)
    advertise_url: str = ""  # how other nodes and redirected clients reach this node (default: its listen address)
    prefix: str = "livesafe"  # of every Redis key, so several clusters can share one Redis
    heartbeat_seconds: float = 1.0
    node_ttl_seconds: float = 5.0
    lease_ttl_seconds: float = 3.0
    max_list_age_seconds: float = 30.0  # lists not confirmed current for this long are stale
    stale_lists: str = "slate"  # what a node with stale lists does: slate its streams, or refuse new ones
    # How a WHIP/WHEP offer another node must answer gets there: "proxy" (this node passes it on and
    # returns that node's answer, with an absolute Location) or "redirect" (307, RFC 9725 section 4.5).
    # Proxy by default: OBS (libcurl), browsers (fetch) and aiohttp drop the Authorization header on a
    # redirect to another host or port, so a redirected stream key or viewer token never arrives.
    signalling: str = "proxy"
    drain_seconds: float = 30.0  # on SIGTERM: how long viewers may keep watching before the node leaves

    def __post_init__(self) -> None:
        if urlsplit(self.redis_url).scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"redis_url {self.redis_url!r}: expected redis://HOST:PORT[/DB], rediss:// or unix://")
        if not NODE_NAME.match(self.node_name):
            raise ValueError(f"node_name {self.node_name!r}: letters, digits, '.', '_' and '-', at most 63")
        if self.advertise_url:
            parts = urlsplit(self.advertise_url)
            if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
                raise ValueError(f"advertise_url {self.advertise_url!r}: expected http(s)://HOST[:PORT]")
            object.__setattr__(self, "advertise_url", self.advertise_url.rstrip("/"))
        if len(self.secret) < 16:
            raise ValueError("the cluster secret (LIVESAFE_CLUSTER_SECRET) must be at least 16 characters")
        if not 0 < self.heartbeat_seconds * 2 < self.lease_ttl_seconds <= self.node_ttl_seconds:
            raise ValueError("expected 2 * heartbeat_seconds < lease_ttl_seconds <= node_ttl_seconds")
        if self.max_list_age_seconds <= 0:
            raise ValueError("max_list_age_seconds must be > 0")
        if self.signalling not in SIGNALLING:
            raise ValueError(f"signalling {self.signalling!r}: expected one of {', '.join(SIGNALLING)}")
        if self.drain_seconds < 0:
            raise ValueError("drain_seconds must be >= 0")
        if self.stale_lists not in STALE_LIST_ACTIONS:
            raise ValueError(f"stale_lists {self.stale_lists!r}: expected one of {', '.join(STALE_LIST_ACTIONS)}")

    SECRET_ENV = "LIVESAFE_CLUSTER_SECRET"

    def key(self, *parts: str) -> str:
        """A Redis key of this cluster: ``prefix:part:part``."""
        return ":".join((self.prefix, *parts))

    def with_advertise(self, url: str) -> ClusterSettings:
        """These settings with ``advertise_url`` defaulted (to the address the node listens on)."""
        if self.advertise_url:
            return self
        return replace(self, advertise_url=url.rstrip("/"))

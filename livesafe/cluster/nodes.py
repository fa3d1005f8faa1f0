"""The nodes of a cluster as Redis knows them: who is up, where to reach them, how loaded they are.

Each node writes ``prefix:node:NAME`` (its URL, load and an instance id) with a
TTL of ``node_ttl_seconds`` and refreshes it every ``heartbeat_seconds``; a node
that stops refreshing (killed, cut off) drops out of :meth:`NodeRegistry.nodes`
when the key expires.  A name is claimed with ``SET NX``: a second process
starting with a name a live node holds is refused, and a node whose key was
taken over while it was cut off stops claiming it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from livesafe.cluster.settings import ClusterSettings
from livesafe.cluster.tasks import cancel_and_wait

log = logging.getLogger(__name__)


class RegistryUnavailable(Exception):
    """Redis did not answer: placement and anything shared waits; streams already here carry on."""


class NodeNameTaken(Exception):
    """Another live process holds this node name."""


class SecretMismatch(Exception):
    """This node's cluster secret is not the one the cluster's other nodes use."""


@dataclass(frozen=True)
class NodeLoad:
    """What placement weighs: streams guarded here and the CPU headroom admission measures."""

    streams: int = 0  # streams this node is the origin of
    edge_streams: int = 0  # streams pulled from other origins for viewers here
    viewers: int = 0
    cpu_cores: float = 0.0  # cores this process uses now
    headroom_cores: float = 1.0  # cores left before admission refuses another stream
    stream_cost_cores: float = 0.35  # what one more stream is expected to cost
    admitting: bool = True  # not overloaded, not draining, lists current

    @property
    def has_room(self) -> bool:
        """Would admission take one more stream here?"""
        return self.admitting and self.headroom_cores >= self.stream_cost_cores


@dataclass(frozen=True)
class NodeInfo:
    name: str
    url: str
    instance: str
    started: float
    at: float  # wall time of its last refresh
    load: NodeLoad

    @property
    def has_room(self) -> bool:
        return self.load.has_room

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> NodeInfo:
        data = json.loads(text)
        return cls(**{**data, "load": NodeLoad(**data["load"])})


# Refresh only our own registration: if the key expired and another process took
# the name meanwhile, leave it (and say so), rather than both claiming one name.
_REFRESH = """
local current = redis.call('GET', KEYS[1])
if current and cjson.decode(current)['instance'] ~= ARGV[2] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
redis.call('SADD', KEYS[2], ARGV[4])
return 1
"""


def connect(settings: ClusterSettings) -> aioredis.Redis:
    """A client that gives up quickly: a Redis outage must not stall the event loop's work for long."""
    return aioredis.Redis.from_url(
        settings.redis_url, socket_timeout=2.0, socket_connect_timeout=2.0, health_check_interval=10
    )


class NodeRegistry:
    """This node's registration, kept fresh, and the live nodes' as read from Redis."""

    def __init__(self, settings: ClusterSettings, redis: aioredis.Redis, load: Callable[[], NodeLoad]) -> None:
        self.settings = settings
        self.redis = redis
        self._load = load
        self.instance = secrets.token_hex(8)
        self.started = time.time()
        self.reachable = False  # did the last call to Redis succeed?
        self.last_contact = 0.0  # monotonic time of the last successful refresh
        self._refresh = redis.register_script(_REFRESH)
        self._task: asyncio.Task[None] | None = None
        self.on_refresh: list[Callable[[], Any]] = []  # run after each refresh (lease renewals ride on it)

    @property
    def name(self) -> str:
        return self.settings.node_name

    def info(self) -> NodeInfo:
        return NodeInfo(self.name, self.settings.advertise_url, self.instance, self.started, time.time(), self._load())

    async def join(self, wait_seconds: float = 0.0) -> None:
        """Claim the name and start refreshing; raises NodeNameTaken or RegistryUnavailable.

        ``wait_seconds``: how long a name still held may take to be freed before we give up.
        A process restarted after a crash (``--workers`` restarting a killed worker) finds its
        old registration alive until its TTL runs out; a name a live node keeps refreshing is
        refused after the wait all the same.
        """
        key = self.settings.key("node", self.name)
        deadline = time.monotonic() + wait_seconds
        try:
            await self._check_secret()
            while not await self.redis.set(key, self.info().to_json(), nx=True, px=self._ttl_ms):
                if time.monotonic() >= deadline:
                    holder = await self.redis.get(key)
                    url = NodeInfo.from_json(holder).url if holder else "?"
                    raise NodeNameTaken(f"node name {self.name!r} is in use by a live node ({url})")
                await asyncio.sleep(min(0.2, self.settings.heartbeat_seconds))
            await self.redis.sadd(self.settings.key("nodes"), self.name)
        except RedisError as exc:
            raise RegistryUnavailable(f"Redis at {safe_url(self.settings.redis_url)}: {exc}") from None
        self.reachable, self.last_contact = True, time.monotonic()
        self._task = asyncio.ensure_future(self._heartbeat())

    async def _check_secret(self) -> None:
        """Refuse to join with another secret than the cluster's: such a node would register, be placed
        streams and viewers, and have every request it makes of the others refused (401).

        Redis keeps an HMAC of a fixed text under the secret (never the secret), set by the first node.
        """
        proof = hmac.new(self.settings.secret.encode(), b"livesafe cluster secret check", hashlib.sha256).hexdigest()
        key = self.settings.key("secret-check")
        await self.redis.set(key, proof, nx=True)
        held = await self.redis.get(key)
        if held is not None and not hmac.compare_digest(text(held).encode(), proof.encode()):
            raise SecretMismatch(
                f"this node's {ClusterSettings.SECRET_ENV} is not the one the cluster's other nodes use"
            )

    async def leave(self) -> None:
        """Stop refreshing and remove the registration (a drained node leaves the registry clean)."""
        if self._task is not None:
            await cancel_and_wait([self._task])
            self._task = None
        try:
            key = self.settings.key("node", self.name)
            current = await self.redis.get(key)
            if current and NodeInfo.from_json(current).instance == self.instance:
                await self.redis.delete(key)
            await self.redis.srem(self.settings.key("nodes"), self.name)
        except RedisError as exc:
            log.warning("cluster: could not remove node %s from the registry: %s", self.name, exc)

    @property
    def _ttl_ms(self) -> int:
        return int(self.settings.node_ttl_seconds * 1000)

    async def refresh(self) -> bool:
        """One refresh now; False if Redis did not answer or the name was taken over."""
        try:
            ok = await self._refresh(
                keys=[self.settings.key("node", self.name), self.settings.key("nodes")],
                args=[self.info().to_json(), self.instance, self._ttl_ms, self.name],
            )
        except RedisError as exc:
            if self.reachable:
                log.warning("cluster: Redis unreachable (%s); carrying on with the streams here", exc)
            self.reachable = False
            return False
        if not self.reachable:
            log.info("cluster: Redis reachable again")
        self.reachable, self.last_contact = True, time.monotonic()
        if not ok:
            log.error("cluster: node name %s was taken over by another process; not refreshing it", self.name)
        return bool(ok)

    async def _heartbeat(self) -> None:
        while True:
            await self.refresh()
            for hook in self.on_refresh:
                try:
                    result = hook()
                    if asyncio.iscoroutine(result):
                        await result
                except Exception:  # noqa: BLE001 - one failing hook must not stop the heartbeat
                    log.exception("cluster: heartbeat hook failed")
            await asyncio.sleep(self.settings.heartbeat_seconds)

    async def nodes(self) -> list[NodeInfo]:
        """The live nodes (this one included while registered); raises RegistryUnavailable."""
        try:
            names = sorted(text(n) for n in await self.redis.smembers(self.settings.key("nodes")))
            values = await self.redis.mget([self.settings.key("node", n) for n in names]) if names else []
        except RedisError as exc:
            raise RegistryUnavailable(str(exc)) from None
        return [NodeInfo.from_json(v) for v in values if v is not None]

    async def node(self, name: str) -> NodeInfo | None:
        try:
            value = await self.redis.get(self.settings.key("node", name))
        except RedisError as exc:
            raise RegistryUnavailable(str(exc)) from None
        return NodeInfo.from_json(value) if value is not None else None


def text(value: str | bytes) -> str:
    """A Redis reply as text (the client returns bytes unless told to decode)."""
    return value.decode() if isinstance(value, bytes) else value


def safe_url(url: str) -> str:
    """The Redis URL without its password (what logs and errors show)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    return parts._replace(netloc=f"***@{netloc}").geturl()

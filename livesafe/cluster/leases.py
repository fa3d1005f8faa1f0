"""Who guards a stream: one origin at a time, by lease, with a fencing token.

``prefix:stream:ID:owner`` holds ``NODE|TOKEN`` with a TTL of
``lease_ttl_seconds``; the origin renews its leases on every heartbeat.  The
token comes from ``prefix:stream:ID:fence`` (INCR), so each new holder's is
larger than every earlier one's: a node that lost its lease while cut off and
still thinks it guards the stream presents a smaller token, and edges and
forwarded actions check it.  A renewal that finds the lease held by another
node means this node must stop guarding the stream (:attr:`StreamLeases.on_lost`).
If Redis lost the key (restarted without persistence), renewal puts it back,
with the fence counter raised to at least our token.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from livesafe.cluster.nodes import RegistryUnavailable, text
from livesafe.cluster.settings import ClusterSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Lease:
    stream_id: str
    node: str
    token: int

    @property
    def value(self) -> str:
        return f"{self.node}|{self.token}"

    @classmethod
    def parse(cls, stream_id: str, value: str | bytes) -> Lease:
        node, _, token = text(value).rpartition("|")
        return cls(stream_id, node, int(token))


# KEYS: owner, fence.  ARGV: node, ttl ms.  Returns the holder's value (ours if we got it).
_ACQUIRE = """
local current = redis.call('GET', KEYS[1])
if current then return current end
local value = ARGV[1] .. '|' .. redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], value, 'PX', ARGV[2])
return value
"""
# KEYS: owner, fence.  ARGV: our value, ttl ms, our token.  1 renewed, 2 restored, 0 lost.
_RENEW = """
local current = redis.call('GET', KEYS[1])
if current == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
if current then return 0 end
local fence = tonumber(redis.call('GET', KEYS[2]) or '0')
if fence > tonumber(ARGV[3]) then return 0 end
redis.call('SET', KEYS[2], ARGV[3])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 2
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class StreamLeases:
    """The leases this node holds, and lookups of anyone's."""

    def __init__(self, settings: ClusterSettings, redis: aioredis.Redis) -> None:
        self.settings = settings
        self.redis = redis
        self.held: dict[str, Lease] = {}
        self.on_lost: Callable[[Lease, Lease | None], Awaitable[None]] | None = None  # (ours, the new holder's)
        self._acquire = redis.register_script(_ACQUIRE)
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)

    def _keys(self, stream_id: str) -> list[str]:
        return [self.settings.key("stream", stream_id, "owner"), self.settings.key("stream", stream_id, "fence")]

    @property
    def _ttl_ms(self) -> int:
        return int(self.settings.lease_ttl_seconds * 1000)

    async def holder(self, stream_id: str) -> Lease | None:
        """Whoever holds the stream now (None: nobody); raises RegistryUnavailable."""
        try:
            value = await self.redis.get(self._keys(stream_id)[0])
        except RedisError as exc:
            raise RegistryUnavailable(str(exc)) from None
        return Lease.parse(stream_id, value) if value is not None else None

    async def acquire(self, stream_id: str) -> Lease:
        """Take the stream if nobody holds it; returns the holder (ours, or the node that has it)."""
        try:
            value = await self._acquire(keys=self._keys(stream_id), args=[self.settings.node_name, self._ttl_ms])
        except RedisError as exc:
            raise RegistryUnavailable(str(exc)) from None
        lease = Lease.parse(stream_id, value)
        if lease.node == self.settings.node_name:
            self.held[stream_id] = lease
        return lease

    async def release(self, stream_id: str) -> None:
        lease = self.held.pop(stream_id, None)
        if lease is None:
            return
        try:
            await self._release(keys=self._keys(stream_id)[:1], args=[lease.value])
        except RedisError as exc:  # it expires on its own within the TTL
            log.warning("cluster: could not release stream %s: %s", stream_id, exc)

    async def renew(self) -> None:
        """Renew every lease held (run on each heartbeat); a lease found taken is lost."""
        for stream_id, lease in list(self.held.items()):
            try:
                result = await self._renew(keys=self._keys(stream_id), args=[lease.value, self._ttl_ms, lease.token])
            except RedisError:
                return  # Redis away: keep guarding what we have; nobody else can take it meanwhile
            if result == 2:
                log.info("cluster: stream %s lease restored after Redis lost it", stream_id)
            elif result == 0 and self.held.get(stream_id) == lease:
                del self.held[stream_id]
                try:
                    now = await self.holder(stream_id)
                except RegistryUnavailable:
                    now = None
                log.error("cluster: stream %s: lease lost to %s; cutting it here", stream_id, now.node if now else "?")
                if self.on_lost is not None:
                    await self.on_lost(lease, now)

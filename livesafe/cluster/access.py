"""Moderators' decisions about keys and hashes, shared: a key revoked on one node is refused on all.

``SharedAccess`` wraps a node's own ``AccessLists`` (durable, local): every
revocation and allowed hash is kept there first, then published to Redis
(two hashes and a version counter).  Each heartbeat a node compares the
version and, if it moved, merges what others published into its own lists
and into the live sets the relay and the guards read.  Merging is a union,
so order does not matter and a Redis that lost everything is refilled from
any node's copy.  Publishing that fails (Redis away) is retried on the next
heartbeat; nothing a moderator decided is lost.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from livesafe.cluster.nodes import text
from livesafe.cluster.settings import ClusterSettings
from livesafe.moderation.store.interfaces import AccessLists, AuditLog, EventLog, NodeState, Outbox, Store
from livesafe.moderation.store.records import Allowed

log = logging.getLogger(__name__)

_SEP = "\x1f"  # between fields of a hash key; never in a stream name, signal name or hex hash


class SharedAccess:
    """An ``AccessLists`` whose changes reach every node (see the module docstring)."""

    def __init__(
        self,
        inner: AccessLists,
        settings: ClusterSettings,
        redis: aioredis.Redis,
        *,
        on_revoked: Callable[[str, str], None],
        on_allowed: Callable[[Allowed], None],
    ) -> None:
        """``on_revoked(stream, key_sha256)`` / ``on_allowed(item)``: what another node decided, to apply live."""
        self._inner = inner
        self._redis = redis
        self._revoked_key = settings.key("access", "revoked")
        self._allowed_key = settings.key("access", "allowed")
        self._version_key = settings.key("access", "version")
        self._on_revoked = on_revoked
        self._on_allowed = on_allowed
        self._unpublished: list[tuple[str, str, str]] = []  # (hash key, field, value) still to write
        self._seen_version: int | None = None
        self._republish = True  # everything local goes up once (and again after Redis lost it)

    # ------------------------------------------------------------ AccessLists

    def allow(self, item: Allowed, actor: str, reason: str) -> None:
        self._inner.allow(item, actor, reason)
        value = json.dumps({"actor": actor, "reason": reason})
        self._unpublished.append((self._allowed_key, _allowed_field(item), value))

    def allowlist(self) -> list[Allowed]:
        return self._inner.allowlist()

    def revoke(self, stream_id: str, key_sha256: str, actor: str) -> None:
        self._inner.revoke(stream_id, key_sha256, actor)
        self._unpublished.append((self._revoked_key, f"{stream_id}{_SEP}{key_sha256}", json.dumps({"actor": actor})))

    def revoked_keys(self) -> set[tuple[str, str]]:
        return self._inner.revoked_keys()

    # ------------------------------------------------------------------ sync

    async def sync(self) -> None:
        """Publish what is new here and merge what is new elsewhere (each heartbeat)."""
        try:
            version = int(await self._redis.get(self._version_key) or 0)
            if version == 0 and self._seen_version:
                self._republish = True  # Redis restarted empty: put our copy back
            if self._republish:
                self._unpublished += [(self._allowed_key, _allowed_field(a), "{}") for a in self._inner.allowlist()]
                self._unpublished += [(self._revoked_key, f"{s}{_SEP}{k}", "{}") for s, k in self._inner.revoked_keys()]
                self._republish = False
            if self._unpublished:
                async with self._redis.pipeline(transaction=True) as pipe:
                    for key, field, value in self._unpublished:
                        pipe.hsetnx(key, field, value)
                    pipe.incr(self._version_key)
                    results = await pipe.execute()
                self._unpublished.clear()
                version = int(results[-1])
            if version != self._seen_version:
                await self._merge()
                self._seen_version = version
        except RedisError as exc:
            log.debug("cluster: access lists not synced now: %s", exc)

    async def _merge(self) -> None:
        revoked = await self._redis.hkeys(self._revoked_key)
        allowed = await self._redis.hkeys(self._allowed_key)
        have_keys = self._inner.revoked_keys()
        for raw in revoked:
            stream_id, _, key_sha256 = text(raw).partition(_SEP)
            if (stream_id, key_sha256) not in have_keys:
                self._inner.revoke(stream_id, key_sha256, "cluster")
                self._on_revoked(stream_id, key_sha256)
        have_items = {_allowed_field(a) for a in self._inner.allowlist()}
        for raw in allowed:
            field = text(raw)
            if field in have_items:
                continue
            signal, digest, stream = field.split(_SEP)
            item = Allowed(signal, digest, stream or None)
            self._inner.allow(item, "cluster", "allowed on another node")
            self._on_allowed(item)


def _allowed_field(item: Allowed) -> str:
    return _SEP.join((item.signal, item.hash.lower(), item.stream_id or ""))


class ClusteredStore:
    """A node's own store with its access lists shared (``Store``; the rest is the node's alone)."""

    def __init__(self, inner: Store, access: SharedAccess) -> None:
        self._inner = inner
        self._access = access

    @property
    def events(self) -> EventLog:
        return self._inner.events

    @property
    def outbox(self) -> Outbox:
        return self._inner.outbox

    @property
    def audit(self) -> AuditLog:
        return self._inner.audit

    @property
    def access(self) -> AccessLists:
        return self._access

    @property
    def state(self) -> NodeState:
        return self._inner.state

    def close(self) -> None:
        self._inner.close()

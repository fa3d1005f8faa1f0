"""This process as one node of a cluster: registration, leases, placement, and asking other nodes.

``ClusterNode`` is what the relay and the moderation API see of the cluster:

- :meth:`ClusterNode.place` decides, for a WHIP POST, whether this node takes
  the stream (and holds its lease) or answers ``307`` to the node that should
  (RFC 9725 section 4.5): the stream's origin while it is alive, else the least
  loaded node with room.  A registry that does not answer is a 503: nobody can
  know who guards the stream.
- :meth:`ClusterNode.origin_of` names the node guarding a stream, for edges
  and for moderator requests made on another node (:meth:`forwarding`
  passes them to the origin, signed, and returns its answer).
- Each heartbeat renews the leases, syncs revoked keys and allowed hashes
  (:mod:`~livesafe.cluster.access`), and publishes this node's streams so
  ``/api/streams`` on any node lists the whole cluster.
- A lease found taken cuts the stream here: two nodes never both guard it.
- Behind a port shared by several nodes of one machine (``serve --workers``,
  :attr:`ClusterNode.shared_port`), a WHIP or WHEP offer is answered with a
  ``307`` to the chosen node's own port, even when that is this node: the
  session's resource (``DELETE``, ``PATCH``) must reach the process that holds
  it, and through the shared port the kernel picks a process at random.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Callable
from typing import Any, NoReturn
from urllib.parse import unquote, urljoin, urlsplit

import aiohttp
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from redis.exceptions import RedisError

from livesafe.cluster.auth import HEADER, ClusterAuth, ClusterAuthError
from livesafe.cluster.edge import Origin
from livesafe.cluster.leases import Lease, StreamLeases
from livesafe.cluster.nodes import NodeInfo, NodeLoad, NodeRegistry, RegistryUnavailable
from livesafe.cluster.placement import choose, is_fresh
from livesafe.cluster.settings import ClusterSettings
from livesafe.events import STREAM_ENDED, Fact
from livesafe.relay.registry import Relay

log = logging.getLogger(__name__)

# Moderator and viewer requests about one stream, answered by the node that guards it.
_STREAM_API = re.compile(r"^/api/streams/([^/]+)/(actions|reports|preview)$")
_WHEP_OFFER = re.compile(r"^/whep/([^/]+)$")
_FORWARD_TIMEOUT = aiohttp.ClientTimeout(total=10)
# What a proxied offer carries to the node that answers it, and what of its answer comes back.
_PASSED_ON = ("Authorization", "Content-Type", "User-Agent")
_PASSED_BACK = ("Content-Type", "Location", "ETag", "Link", "Retry-After", "Accept-Post")
_PLACED = "node"  # query parameter of a placement redirect: the node it sent the publisher to


class _Handoff(Exception):
    """Placement's verdict: another node answers this offer."""

    def __init__(self, node: NodeInfo) -> None:
        self.node = node


class ClusterNode:
    def __init__(self, settings: ClusterSettings, relay: Relay, redis: aioredis.Redis) -> None:
        """``redis``: a client from :func:`~livesafe.cluster.nodes.connect` (closed by :meth:`stop`)."""
        self.settings = settings
        self.relay = relay
        self.redis = redis
        self.auth = ClusterAuth(settings.secret, settings.node_name)
        self.registry = NodeRegistry(settings, self.redis, self._load)
        self.leases = StreamLeases(settings, self.redis)
        self.leases.on_lost = self._lease_lost
        self.registry.on_refresh += [self._prune_leases, self.leases.renew, self._share_streams]
        self.draining = False
        self.placements = {"local": 0, "redirected": 0, "refused": 0}
        self.extra_load: Callable[[], dict[str, Any]] = dict  # edge counts etc., filled by whoever has them
        self.admitting: Callable[[], bool] = lambda: True  # e.g. lists current (refuse mode)
        self.reports: dict[str, Callable[[], dict[str, Any]]] = {}  # more of the node's state for /healthz
        self.known_nodes = 0  # live nodes at the last heartbeat that could ask
        self._placing: dict[str, float] = {}  # stream -> when its lease was taken for a publisher negotiating
        self.shared_port: int | None = None  # a port other nodes of this machine listen on too
        self.claim_wait_seconds = 0.0  # how long a starting node waits for a dead predecessor's name to expire
        self._http: aiohttp.ClientSession | None = None

    @property
    def name(self) -> str:
        return self.settings.node_name

    # -------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Join the cluster; raises RegistryUnavailable (Redis does not answer) or NodeNameTaken."""
        self._http = aiohttp.ClientSession(timeout=_FORWARD_TIMEOUT)
        try:
            await self.registry.join(self.claim_wait_seconds)
        except BaseException:
            await self._close_clients()
            raise

    async def stop(self) -> None:
        """Give up every lease and leave the registry clean (after the relay has shut down)."""
        for stream_id in list(self.leases.held):
            await self.leases.release(stream_id)
        await self.registry.leave()
        try:
            await self.redis.delete(self.settings.key("node", self.name, "streams"))
        except RedisError:
            pass  # expires on its own
        await self._close_clients()

    async def _close_clients(self) -> None:
        if self._http is not None:
            await self._http.close()
        await self.redis.aclose()

    async def drain(self, grace_seconds: float) -> None:
        """Take no new streams; let viewers watch until they leave or ``grace_seconds`` pass."""
        self.draining = True
        await self.registry.refresh()  # others stop placing streams here now, not at the next heartbeat
        log.info("cluster: node %s draining (up to %.0f s for viewers to leave)", self.name, grace_seconds)
        deadline = time.monotonic() + grace_seconds
        while time.monotonic() < deadline and any(s.viewers for s in self.relay.streams.values()):
            await asyncio.sleep(0.2)

    def _load(self) -> NodeLoad:
        relay, shedder = self.relay, self.relay.shedder
        live = [s for s in relay.streams.values() if s.publisher is not None]
        headroom, cost = shedder.room(time.monotonic(), len(live))  # as admission will count them
        extra = self.extra_load()
        return NodeLoad(
            streams=len(live),
            edge_streams=int(extra.get("edge_streams", 0)),
            viewers=sum(len(s.viewers) for s in relay.streams.values()) + int(extra.get("edge_viewers", 0)),
            cpu_cores=round(shedder.cpu, 3),
            headroom_cores=round(headroom, 3),
            stream_cost_cores=round(cost, 3),
            admitting=not (self.draining or shedder.overloaded)
            and self.admitting()
            and len(relay.streams) < relay.settings.max_streams,
        )

    # -------------------------------------------------------------- placement

    async def place(self, stream_id: str, request: web.Request) -> bool | web.Response:
        """Take ``stream_id`` here (True: a new lease, to release if negotiation fails; False: ours already),
        or the answer that sends the publisher to the node that should: that node's own answer
        (``signalling = "proxy"``) or a 307 to it.  Raises 503 when no node can take it.
        """
        try:
            return await self._place(stream_id, request)
        except _Handoff as handoff:
            return await self.hand_off(handoff.node, request)
        except RegistryUnavailable as exc:
            if stream_id in self.leases.held and stream_id in self.relay.streams:
                return False  # our own stream reconnecting: we still guard it, Redis or not
            self.placements["refused"] += 1
            raise web.HTTPServiceUnavailable(
                text=f"cluster registry unreachable, cannot place a stream now: {exc}\n", headers={"Retry-After": "5"}
            ) from None

    async def _place(self, stream_id: str, request: web.Request) -> bool:
        holder = await self.leases.holder(stream_id)
        if holder is not None and holder.node == self.name:
            if self._via_shared_port(request):
                self._send_to(self.registry.info(), request)
            self.leases.held.setdefault(stream_id, holder)
            return False
        if holder is not None:
            node = await self.registry.node(holder.node)
            if node is not None and is_fresh(node, time.time(), self.settings.heartbeat_seconds):
                self._send_to(node, request)  # a reconnecting publisher goes back to its origin
            await self._wait_for_lapse(holder)  # its node is gone: its lease lapses within the TTL
        if self.draining:
            target = choose([n for n in await self.registry.nodes() if n.name != self.name], self.name)
            if target is None:
                self._refuse("this node is draining and no other node has room")
            self._send_to(target, request)
        if request.query.get(_PLACED) != self.name:  # sent here by placement: take it if we can at all
            nodes = [
                n for n in await self.registry.nodes() if is_fresh(n, time.time(), self.settings.heartbeat_seconds)
            ]
            if not self._load().has_room:  # fresher than what this node last registered
                nodes = [n for n in nodes if n.name != self.name]
            target = choose(nodes, self.name)
            if target is None:
                self._refuse("no node in the cluster has room for another stream")
            if target.name != self.name or self._via_shared_port(request):
                self._send_to(target, request)
        elif self._via_shared_port(request):
            self._send_to(self.registry.info(), request)
        lease = await self.leases.acquire(stream_id)
        if lease.node != self.name:  # another node took it a moment ago
            node = await self.registry.node(lease.node)
            if node is None:
                self._refuse(f"stream {stream_id!r} is being placed on node {lease.node}")
            self._send_to(node, request)
        self.placements["local"] += 1
        self._placing[stream_id] = time.monotonic()
        return True

    async def _wait_for_lapse(self, holder: Lease) -> None:
        deadline = time.monotonic() + self.settings.lease_ttl_seconds + 0.5
        while time.monotonic() < deadline:
            if await self.leases.holder(holder.stream_id) != holder:
                return
            await asyncio.sleep(0.1)
        self._refuse(f"stream {holder.stream_id!r} is still held by node {holder.node}")

    def _send_to(self, node: NodeInfo, request: web.Request) -> NoReturn:
        """This offer is for ``node`` (see :meth:`hand_off`)."""
        raise _Handoff(node)

    async def hand_off(self, node: NodeInfo | Origin, request: web.Request) -> web.Response:
        """Send this WHIP/WHEP offer to ``node``: a 307, or (proxy) its answer passed back.

        Proxied, the answer's ``Location`` is made absolute on that node, so the
        session's DELETE goes straight to the process that holds it; ICE then runs
        between the client and that node, as its answer's candidates say.
        """
        self.placements["redirected"] += 1
        name = node.name if isinstance(node, NodeInfo) else node.node
        base = for_client(node.url, request)
        target = f"{base}{request.path}?{_PLACED}={name}"
        if self.settings.signalling == "redirect":
            raise web.HTTPTemporaryRedirect(target)
        assert self._http is not None  # started
        headers = {k: request.headers[k] for k in _PASSED_ON if k in request.headers}
        try:
            async with self._http.post(
                node.url + request.path, params={_PLACED: name}, data=await request.read(), headers=headers,
                allow_redirects=False,
            ) as response:  # fmt: skip
                body = await response.read()
                kept = {k: response.headers[k] for k in _PASSED_BACK if k in response.headers}
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise web.HTTPBadGateway(text=f"node {name}, which takes this stream, did not answer: {exc}\n") from None
        if "Location" in kept:
            kept["Location"] = urljoin(base + "/", kept["Location"])
        return web.Response(status=response.status, body=body, headers=kept)

    def _via_shared_port(self, request: web.Request) -> bool:
        """Did ``request`` come in on the port other nodes share (whichever of us the kernel picked)?"""
        if self.shared_port is None or request.transport is None:
            return False
        sockname = request.transport.get_extra_info("sockname")
        return isinstance(sockname, tuple) and len(sockname) >= 2 and sockname[1] == self.shared_port

    def _refuse(self, reason: str) -> NoReturn:
        self.placements["refused"] += 1
        raise web.HTTPServiceUnavailable(text=f"{reason}\n", headers={"Retry-After": "5"})

    async def release(self, stream_id: str) -> None:
        self._placing.pop(stream_id, None)
        await self.leases.release(stream_id)

    async def _prune_leases(self) -> None:
        """Give up leases of streams not here (a publisher that never got through, a missed end)."""
        now = time.monotonic()
        limit = self.relay.settings.connect_timeout_seconds + 5
        self._placing = {k: t for k, t in self._placing.items() if now - t < limit and k not in self.relay.streams}
        for stream_id in list(self.leases.held):
            if stream_id not in self.relay.streams and stream_id not in self._placing:
                await self.leases.release(stream_id)

    def status(self) -> dict[str, Any]:
        """What ``/healthz`` says of the cluster (no secrets, no Redis password)."""
        return {
            "node": self.name,
            "registry": "ok" if self.registry.reachable else "unreachable",
            "seconds_since_registry": round(time.monotonic() - self.registry.last_contact, 1),
            "nodes": self.known_nodes,
            "leases": len(self.leases.held),
            "draining": self.draining,
        } | {name: report() for name, report in self.reports.items()}

    def on_fact(self, fact: Fact) -> None:
        """The relay's events: a stream that ended gives up its lease."""
        if fact.type == STREAM_ENDED and fact.stream_id not in self.relay.streams:
            asyncio.ensure_future(self.leases.release(fact.stream_id))

    async def _lease_lost(self, ours: Lease, now: Lease | None) -> None:
        stream = self.relay.streams.get(ours.stream_id)
        if stream is not None:
            taker = now.node if now is not None else "another node"
            await self.relay.cut(stream, f"cluster: the stream is now guarded by {taker}")

    # ----------------------------------------------------------------- origins

    async def origin_of(self, stream_id: str) -> Origin | None:
        """The live node guarding ``stream_id`` (None: none does); raises RegistryUnavailable."""
        lease = await self.leases.holder(stream_id)
        if lease is None:
            return None
        node = await self.registry.node(lease.node)
        if node is None:
            return None
        return Origin(node.name, node.url, lease.token)

    def fence_of(self, stream_id: str) -> int | None:
        lease = self.leases.held.get(stream_id)
        return lease.token if lease is not None else None

    # ------------------------------------------------------ streams everywhere

    async def _share_streams(self) -> None:
        """Publish our live streams and read everyone else's (what ``/api/streams`` lists)."""
        mine = [s | {"node": self.name} for s in self.relay.summaries() if "node" not in s and s["state"] != "ended"]
        try:
            await self.redis.set(
                self.settings.key("node", self.name, "streams"),
                json.dumps(mine),
                px=int(self.settings.node_ttl_seconds * 1000),
            )
            nodes = await self.registry.nodes()
            self.known_nodes = len(nodes)
            others = [n.name for n in nodes if n.name != self.name]
            values = await self.redis.mget([self.settings.key("node", n, "streams") for n in others]) if others else []
        except (RedisError, RegistryUnavailable):
            return  # keep showing what we last knew; it is refreshed when Redis is back
        self.relay.cluster_streams = [s for v in values if v for s in json.loads(v)]

    # ----------------------------------------------------- requests between nodes

    def forwarding(self) -> Middleware:
        """Middleware: a stream's actions, reports and preview asked of a node that does not guard it
        go to the node that does, signed; the receiving node checks the signature here (and only
        then believes the ``X-Forwarded-For`` it names the client by).  A WHEP offer arriving on
        a port the workers of one machine share goes to the origin worker's own port (see
        ``_via_shared_port``)."""

        @web.middleware
        async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
            offer = _WHEP_OFFER.match(request.path)
            if offer is not None and request.method == "POST" and self._via_shared_port(request):
                try:
                    origin = await self.origin_of(unquote(offer.group(1)))
                except RegistryUnavailable:
                    origin = None
                if origin is not None:  # a viewer goes to the node guarding the stream, as a publisher does
                    return await self.hand_off(origin, request)
                return await handler(request)  # not live anywhere: this node's own 404
            match = _STREAM_API.match(request.path)
            if match is None or request.method != "POST":
                return await handler(request)  # inter-node routes (/cluster/...) check signatures themselves
            if HEADER in request.headers:  # another node passing a request on: answer it here
                client = request.headers.get("X-Forwarded-For")  # believed only once the signature checks
                forwarded = request.clone(remote=client) if client else request
                body = await forwarded.read()
                try:
                    self.auth.verify(request.method, request.path_qs, request.headers[HEADER], body)
                except ClusterAuthError as exc:
                    raise web.HTTPUnauthorized(text=f"{exc}\n") from None
                return await handler(forwarded)
            if self.relay.is_live(unquote(match.group(1))):
                return await handler(request)
            try:
                origin = await self.origin_of(unquote(match.group(1)))
            except RegistryUnavailable:
                origin = None
            if origin is None or origin.node == self.name:
                return await handler(request)
            return await self._forward(request, origin)

        return middleware

    async def _forward(self, request: web.Request, origin: Origin) -> web.Response:
        assert self._http is not None  # started
        body = await request.read()
        headers = {
            k: request.headers[k] for k in ("Authorization", "Content-Type", "User-Agent") if k in request.headers
        }
        headers |= self.auth.sign(request.method, request.path_qs, origin.node, body)
        headers["X-Forwarded-For"] = request.remote or ""
        try:
            async with self._http.request(
                request.method, origin.url + request.path_qs, data=body, headers=headers, allow_redirects=False
            ) as response:
                payload = await response.read()
                kept = {k: response.headers[k] for k in ("Retry-After", "Cache-Control") if k in response.headers}
                return web.Response(
                    status=response.status, body=payload, headers=kept, content_type=response.content_type
                )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise web.HTTPBadGateway(
                text=f"node {origin.node}, which guards this stream, did not answer: {exc}\n"
            ) from None


_LOOPBACK = ("127.0.0.1", "::1", "localhost")


def for_client(url: str, request: web.Request) -> str:
    """A node's advertised ``url`` as the client of ``request`` should dial it.

    A loopback address means "this machine" (the default of nodes listening on
    every interface without ``--advertise``, and of ``--workers``): a client that
    reached us by another name gets that name, with the node's port.  The name
    comes from the client's own Host header, so it can only send itself elsewhere.
    """
    parts = urlsplit(url)
    host = request.url.host
    if parts.hostname not in _LOOPBACK or not host or host in _LOOPBACK:
        return url
    shown = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{shown}:{parts.port}" if parts.port else f"{parts.scheme}://{shown}"


def listen_url(host: str, port: int) -> str:
    """The URL a node listening on ``host:port`` advertises by default."""
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else "::1" if host == "::" else host
    return f"http://{'[' + shown + ']' if ':' in shown else shown}:{port}"


CLUSTER: web.AppKey[ClusterNode] = web.AppKey("cluster")

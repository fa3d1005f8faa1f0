"""The relay's aiohttp application: routes, CORS, lifecycle, and the small read-only pages.

Handlers live beside what they serve (``whip``, ``whep``, ``sessions``); this
module only wires them, and starts and stops what runs with the app (the load
shedder; on shutdown every session and stream).

What it serves needs no moderator: the media endpoints, the player and publish
pages, ``/healthz``, and ``/api/streams/{stream}/state`` -- a stream's state
(live, redacted, ended) for whoever may watch or publish it, which is all the
two pages show; the listing of every stream with its profile is the moderation
API's (``moderation.api``).  These routes are the ones ``serve_publicly`` marks
for the public port when there is an admin listener (``livesafe.listeners``).

``/healthz`` is ``ok`` unless a lists-health provider is added
(``add_lists_health``, in a cluster): then it also shows the lists' shared
versions and age, and answers 503 with the reason while they are stale, so a
load balancer stops sending streams to a node that cannot vouch for its lists.
Likewise, with ``add_sources_health``, while a list's own source has been
failing longer than its ``max_stale_seconds`` (the node guards with a copy
that may lack what was added since).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web

from livesafe.http import asset, bearer, cors, page, stream_name, unauthorized
from livesafe.listeners import ADMIN_LISTENER, AdminListener, serve_publicly
from livesafe.lists.health import ListsHealth
from livesafe.relay.access import PUBLISH, VIEW
from livesafe.relay.registry import RELAY, Relay
from livesafe.relay.sessions import endpoint_options, session_delete, session_options, session_patch
from livesafe.relay.whep import whep_post
from livesafe.relay.whip import whip_post

LISTS_HEALTH: web.AppKey[Callable[[], ListsHealth]] = web.AppKey("lists_health")
STALE_SOURCES: web.AppKey[Callable[[], list[str]]] = web.AppKey("stale_sources")
CONFIG_STATUS: web.AppKey[Callable[[], dict[str, Any]]] = web.AppKey("config_status")


def create_app(relay: Relay) -> web.Application:
    admin = AdminListener(enabled=relay.settings.admin_port is not None)
    app = web.Application(
        client_max_size=relay.settings.max_body_bytes,
        middlewares=[cors(relay.settings.cors_origin), admin.middleware()],
    )
    app[RELAY] = relay
    app[ADMIN_LISTENER] = admin
    routes = [app.router.add_post("/whip/{stream}", whip_post), app.router.add_post("/whep/{stream}", whep_post)]
    for kind in ("whip", "whep"):
        routes.append(app.router.add_route("OPTIONS", f"/{kind}/{{stream}}", endpoint_options))
        routes.append(app.router.add_delete(f"/{kind}/{{stream}}/{{session}}", session_delete))
        routes.append(app.router.add_patch(f"/{kind}/{{stream}}/{{session}}", session_patch))
        routes.append(app.router.add_route("OPTIONS", f"/{kind}/{{stream}}/{{session}}", session_options))
    routes.append(app.router.add_get("/healthz", healthz))
    routes.append(app.router.add_get("/api/streams/{stream}/state", stream_state))
    routes.append(app.router.add_get("/watch/{stream}", page("player.html")))
    routes.append(app.router.add_get("/publish/{stream}", page("publish.html")))
    routes.append(app.router.add_get("/web/whip.js", asset("whip.js", "text/javascript")))
    serve_publicly(app, *routes)
    app.router.add_get("/web/dashboard.js", asset("dashboard.js", "text/javascript"))
    app.router.add_get("/web/dashboard.css", asset("dashboard.css", "text/css"))

    async def _shed_load(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.ensure_future(relay.shedder.run(lambda: relay.streams.values(), relay.cut))
        yield
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await relay.shutdown()

    app.cleanup_ctx.append(_shed_load)
    return app


def add_lists_health(app: web.Application, health: Callable[[], ListsHealth]) -> None:
    """Have ``/healthz`` and ``/metrics`` report ``health()`` (the shared lists' versions and age)."""
    app[LISTS_HEALTH] = health


def add_sources_health(app: web.Application, stale: Callable[[], list[str]]) -> None:
    """Have ``/healthz`` answer 503 while ``stale()`` names list sources failing past their max_stale_seconds."""
    app[STALE_SOURCES] = stale


def add_config_status(app: web.Application, status: Callable[[], dict[str, Any]]) -> None:
    """Have ``/healthz`` show ``status()`` as ``config``: when the config in force was loaded, how the last
    reload went (``livesafe.reload``).  A refused reload leaves the node ``ok``: it guards as before."""
    app[CONFIG_STATUS] = status


async def healthz(request: web.Request) -> web.Response:
    relay: Relay = request.app[RELAY]
    health: dict[str, Any] = {"status": "ok", "streams": len(relay.streams), "sessions": len(relay.sessions)}
    if relay.placement is not None:
        health["cluster"] = relay.placement.status()
        if health["cluster"].get("draining") and health["status"] == "ok":
            health["status"] = "draining"  # a load balancer's health check stops sending clients here
    provider = request.app.get(LISTS_HEALTH)
    if provider is not None:
        lists = provider()
        health["lists"] = lists.to_json()
        if lists.stale:
            health |= {"status": "stale_lists", "reason": lists.reason}
    config = request.app.get(CONFIG_STATUS)
    if config is not None:
        health["config"] = config()
    stale_sources = request.app.get(STALE_SOURCES)
    names = stale_sources() if stale_sources is not None else []
    if names:
        health["stale_sources"] = names
        if health["status"] == "ok":
            reason = f"list source(s) failing for longer than their max_stale_seconds: {', '.join(names)}"
            health |= {"status": "stale_lists", "reason": reason}
    return web.json_response(health, status=200 if health["status"] == "ok" else 503)


async def stream_state(request: web.Request) -> web.Response:
    """``{"id", "state"}`` of one stream, for its viewers (viewer token, if it has one) and its publisher
    (stream key): what the player and publish pages show, and nothing more -- not the profile, not
    the counters, not the other streams."""
    relay: Relay = request.app[RELAY]
    stream_id = stream_name(request)
    token = bearer(request)
    access, remote = relay.access, request.remote
    publisher = (
        not relay.settings.dev_mode and token is not None and await access.allows(stream_id, PUBLISH, token, remote)
    )
    if not (publisher or await access.allows(stream_id, VIEW, token, remote)):
        raise unauthorized("this stream's state needs its viewer token (or its stream key)")
    summary = next((s for s in relay.summaries() if s["id"] == stream_id), None)
    if summary is None:
        raise web.HTTPNotFound(text=f"no stream named {stream_id!r} is live or recently ended\n")
    return web.json_response({"id": stream_id, "state": summary["state"]}, headers={"Cache-Control": "no-store"})

"""The relay's aiohttp application: routes, CORS, lifecycle, and the small read-only pages.

Handlers live beside what they serve (``whip``, ``whep``, ``sessions``); this
module only wires them, and starts and stops what runs with the app (the load
shedder; on shutdown every session and stream).

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

from livesafe.http import asset, cors, page
from livesafe.lists.health import ListsHealth
from livesafe.relay.registry import RELAY, Relay
from livesafe.relay.sessions import endpoint_options, session_delete, session_options, session_patch
from livesafe.relay.whep import whep_post
from livesafe.relay.whip import whip_post

LISTS_HEALTH: web.AppKey[Callable[[], ListsHealth]] = web.AppKey("lists_health")
STALE_SOURCES: web.AppKey[Callable[[], list[str]]] = web.AppKey("stale_sources")


def create_app(relay: Relay) -> web.Application:
    app = web.Application(client_max_size=relay.settings.max_body_bytes, middlewares=[cors(relay.settings.cors_origin)])
    app[RELAY] = relay
    app.router.add_post("/whip/{stream}", whip_post)
    app.router.add_post("/whep/{stream}", whep_post)
    for kind in ("whip", "whep"):
        app.router.add_route("OPTIONS", f"/{kind}/{{stream}}", endpoint_options)
        app.router.add_delete(f"/{kind}/{{stream}}/{{session}}", session_delete)
        app.router.add_patch(f"/{kind}/{{stream}}/{{session}}", session_patch)
        app.router.add_route("OPTIONS", f"/{kind}/{{stream}}/{{session}}", session_options)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/api/streams", api_streams)
    app.router.add_get("/watch/{stream}", page("player.html"))
    app.router.add_get("/publish/{stream}", page("publish.html"))
    app.router.add_get("/web/whip.js", asset("whip.js", "text/javascript"))
    app.router.add_get("/web/dashboard.js", asset("dashboard.js", "text/javascript"))
    app.router.add_get("/web/dashboard.css", asset("dashboard.css", "text/css"))
    app.router.add_get("/", index_page)

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
    stale_sources = request.app.get(STALE_SOURCES)
    names = stale_sources() if stale_sources is not None else []
    if names:
        health["stale_sources"] = names
        if health["status"] == "ok":
            reason = f"list source(s) failing for longer than their max_stale_seconds: {', '.join(names)}"
            health |= {"status": "stale_lists", "reason": reason}
    return web.json_response(health, status=200 if health["status"] == "ok" else 503)


async def api_streams(request: web.Request) -> web.Response:
    return web.json_response(request.app[RELAY].summaries())


async def index_page(request: web.Request) -> web.Response:
    relay: Relay = request.app[RELAY]
    rows = "".join(
        f'<li><a href="/watch/{s["id"]}">{s["id"]}</a> — {s["state"]}, {s["viewers"]} viewer(s)</li>'
        for s in relay.summaries()
    )
    head = "<!doctype html><meta charset=utf-8><title>livesafe</title><h1>livesafe streams</h1>"
    html = f"{head}<ul>{rows or '<li>none yet</li>'}</ul>"
    return web.Response(text=html, content_type="text/html")

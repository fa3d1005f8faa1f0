"""HTTP pieces every part of livesafe's web face shares: bearer tokens, stream names in URLs, pages, CORS.

Public so that the relay's handlers and the moderation API use the same ones
(neither imports the other's privates).
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from aiohttp import web

from livesafe.relay.settings import STREAM_ID


def stream_name(request: web.Request) -> str:
    """The ``{stream}`` of the URL, refused unless it is a valid stream name."""
    name = request.match_info["stream"]
    if not STREAM_ID.match(name):
        raise web.HTTPBadRequest(text="stream name: use 1-64 letters, digits, '-' or '_'\n")
    return name


def bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def unauthorized(what: str) -> web.HTTPException:
    return web.HTTPUnauthorized(text=f"{what}\n", headers={"WWW-Authenticate": 'Bearer realm="livesafe"'})


def page(name: str, per_stream: bool = True) -> Any:
    """A page of ``livesafe/web`` (``per_stream``: for one stream, which the page reads from its URL)."""
    html = resources.files("livesafe.web").joinpath(name).read_text(encoding="utf-8")

    async def handler(request: web.Request) -> web.Response:
        if per_stream:
            stream_name(request)
        return web.Response(text=html, content_type="text/html", headers={"Cache-Control": "no-store"})

    return handler


def asset(name: str, content_type: str) -> Any:
    text = resources.files("livesafe.web").joinpath(name).read_text(encoding="utf-8")

    async def handler(request: web.Request) -> web.Response:
        return web.Response(text=text, content_type=content_type, headers={"Cache-Control": "no-cache"})

    return handler


def cors(origin: str) -> Any:
    @web.middleware
    async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            response = exc
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Expose-Headers"] = "Location, Link, ETag, Accept-Patch, Accept-Post"
        if isinstance(response, web.HTTPException):  # raised again: aiohttp deprecates returning one
            raise response
        return response

    return middleware

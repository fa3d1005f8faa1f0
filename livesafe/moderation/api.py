"""The moderation HTTP API: events (history and live feed), actions, audit log, reports, webhooks.

Reading needs an ``observer`` or ``moderator`` token, acting a ``moderator``
one (``Authorization: Bearer``).  The list of streams (``/api/streams``, and
the index page ``/``) is a read like any other: each stream's policy profile
(``child``) and whether it is redacted now are not for anyone who can reach the
port.  Viewers' reports need only what watching needs (the viewer token, if
any), and are the one route here served on the public port when there is an
admin listener (``livesafe.listeners``).

With no token configured *and* the relay in dev mode (no stream keys), the API
is open, as publishing is -- for trying it out only; a relay with stream keys
but no moderator tokens refuses everyone.

Every error is a status with a one-line (or ``;``-separated) reason.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

from aiohttp import WSMsgType, web

from livesafe.http import bearer, page, stream_name, unauthorized
from livesafe.listeners import serve_publicly
from livesafe.moderation.actions import ActionError, ActionRequest, parse_reason
from livesafe.moderation.feed import FeedItem
from livesafe.moderation.preview import blurred_thumbnail
from livesafe.moderation.reports import MAX_REASON, RateLimited, ReportDesk
from livesafe.moderation.service import Moderation
from livesafe.moderation.settings import Principal
from livesafe.policy import SEVERITIES
from livesafe.relay.access import VIEW
from livesafe.relay.registry import RELAY, Relay

log = logging.getLogger(__name__)

MODERATION: web.AppKey[Moderation] = web.AppKey("moderation")
_FEEDS: web.AppKey[set[asyncio.Task[Any]]] = web.AppKey("feeds")
DEV_PRINCIPAL = Principal("anonymous (dev mode)", "moderator", token="-" * 16)
MAX_FEEDS = 64
MAX_PAGE = 1000
FEED_BATCH = 200
HEARTBEAT_SECONDS = 15.0
CLIENT_CHECK_SECONDS = 0.5  # how soon a quiet feed notices its client left


def add_moderation(app: web.Application, moderation: Moderation) -> None:
    """Mount the moderation API and dashboard on the relay's app; run delivery with it."""
    app[MODERATION] = moderation
    app[_FEEDS] = set()
    moderation.attach(app[RELAY])
    app.router.add_get("/api/events", api_events)
    app.router.add_get("/api/events/stream", api_feed)
    app.router.add_get("/api/audit", api_audit)
    app.router.add_get("/api/webhooks", api_webhooks)
    app.router.add_post("/api/webhooks/{name}/retry", api_webhook_retry)
    app.router.add_get("/api/whoami", api_whoami)
    app.router.add_get("/api/streams", api_streams)
    app.router.add_get("/", index_page)
    app.router.add_post("/api/streams/{stream}/actions", api_action)
    serve_publicly(app, app.router.add_post("/api/streams/{stream}/reports", api_report))
    app.router.add_post("/api/streams/{stream}/preview", api_preview)
    app.router.add_get("/dashboard", page("dashboard.html", per_stream=False))

    async def _run(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.ensure_future(moderation.run())
        yield
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    async def _close_feeds(app: web.Application) -> None:
        feeds = app[_FEEDS]  # not inside list(): mypy would solve the key's type against Iterable
        for feed in list(feeds):
            feed.cancel()

    async def _close_store(app: web.Application) -> None:
        moderation.close()  # on_cleanup runs after every cleanup_ctx, so after the relay's last events

    app.cleanup_ctx.append(_run)
    app.on_shutdown.append(_close_feeds)
    app.on_cleanup.append(_close_store)


def open_access(relay: Relay, moderation: Moderation) -> bool:
    """No access control configured at all (the demo): no moderator token and nothing that decides who
    may publish or watch (:attr:`~livesafe.relay.settings.RelaySettings.access_controlled`)."""
    return not moderation.settings.tokens and not relay.settings.access_controlled


def authorise(request: web.Request, *, act: bool = False) -> Principal:
    """Who is asking (observer or moderator; ``act``: moderator only); 401/403 otherwise."""
    moderation = request.app[MODERATION]
    if open_access(request.app[RELAY], moderation):
        return DEV_PRINCIPAL
    token = bearer(request)
    if token is None:
        raise unauthorized("the moderation API needs Authorization: Bearer <token>")
    principal = moderation.settings.principal(token)
    if principal is None:
        raise unauthorized("unknown token")
    if act and not principal.may_act:
        raise web.HTTPForbidden(text=f"role {principal.role!r} may not act (moderator only)\n")
    return principal


async def api_whoami(request: web.Request) -> web.Response:
    principal = authorise(request)
    moderation = request.app[MODERATION]
    return web.json_response({"name": principal.name, "role": principal.role, "preview": moderation.settings.preview})


async def api_streams(request: web.Request) -> web.Response:
    """Every stream (live, then recently ended), with its profile, state and counters."""
    authorise(request)
    return web.json_response(request.app[RELAY].summaries())


async def index_page(request: web.Request) -> web.Response:
    """The streams as links to their players (for whoever may read ``/api/streams``)."""
    authorise(request)
    rows = "".join(
        f'<li><a href="/watch/{s["id"]}">{s["id"]}</a> — {s["state"]}, {s["viewers"]} viewer(s)</li>'
        for s in request.app[RELAY].summaries()
    )
    head = "<!doctype html><meta charset=utf-8><title>livesafe</title><h1>livesafe streams</h1>"
    html = f"{head}<ul>{rows or '<li>none yet</li>'}</ul>"
    return web.Response(text=html, content_type="text/html")


# ------------------------------------------------------------------ history


async def api_events(request: web.Request) -> web.Response:
    """``?stream=&type=&min_severity=&since=&before=&last=&limit=``: since = an event id (after it) or a time
    (unix or ISO 8601); ``min_severity``: that severity and above (info < warning < high), as the
    dashboard's feed filter and a webhook's ``min_severity`` mean it.

    ``before=<event id>&last=N``: the N newest events older than that one -- a dashboard's
    "older events" page, with the oldest id it shows as the cursor.
    """
    authorise(request)
    history = request.app[MODERATION].store.events
    query = request.query
    limit = _int(query.get("limit", "100"), "limit", 1, MAX_PAGE)
    types = [t for value in query.getall("type", []) for t in value.split(",") if t]
    stream = query.get("stream") or None
    least = query.get("min_severity") or SEVERITIES[0]
    if least not in SEVERITIES:
        raise web.HTTPBadRequest(text=f"min_severity: expected one of {', '.join(SEVERITIES)}\n")
    severities = SEVERITIES[SEVERITIES.index(least) :]
    after, since_time = 0, None
    if "since" in query:
        after, since_time = _since(request, query["since"])
    if "before" in query and "last" not in query:
        raise web.HTTPBadRequest(text="before: goes with last=N (the N newest events before that one)\n")
    if "last" in query:
        last = _int(query["last"], "last", 1, MAX_PAGE)
        before = _seq_of(request, query["before"], "before") if "before" in query else history.last_seq() + 1
        newest = history.read_before(
            before, stream_id=stream, types=types, since_time=since_time, severities=severities, limit=last
        )
        events = [e for e in newest if e.stored_seq > after]
    else:
        events = history.read(
            after, stream_id=stream, types=types, since_time=since_time, severities=severities, limit=limit
        )
    return web.json_response({"events": [e.to_dict() for e in events], "last_id": events[-1].id if events else None})


def _since(request: web.Request, value: str) -> tuple[int, float | None]:
    """(seq to read after, earliest time) for ``since``: an event id, unix seconds or an ISO 8601 time."""
    try:
        number = float(value)
    except ValueError:
        pass
    else:
        if not math.isfinite(number):
            raise web.HTTPBadRequest(text="since: expected a finite time\n")
        return 0, number
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        pass
    else:
        return 0, (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()  # no offset: UTC
    return _seq_of(request, value), None


def _seq_of(request: web.Request, event_id: str, name: str = "since") -> int:
    if not event_id.isalnum() or len(event_id) > 64:
        expected = "an event id, unix seconds or an ISO 8601 time" if name == "since" else "an event id"
        raise web.HTTPBadRequest(text=f"{name}: expected {expected}\n")
    seq = request.app[MODERATION].store.events.seq_of(event_id)
    if seq is None:
        raise web.HTTPGone(
            text=f"event {event_id!r} is unknown (never issued, or past retention): catch up with ?since=<time>\n"
        )
    return seq


def _int(value: str, name: str, low: int, high: int) -> int:
    try:
        number = int(value)
    except ValueError:
        raise web.HTTPBadRequest(text=f"{name}: expected a whole number\n") from None
    if not low <= number <= high:
        raise web.HTTPBadRequest(text=f"{name}: expected {low}..{high}\n")
    return number


async def api_audit(request: web.Request) -> web.Response:
    """``?stream=&after=&limit=&last=``: the audit log, oldest first.

    ``after``: an entry's seq; ``last=N``: the newest N.
    """
    authorise(request)
    after = _int(request.query.get("after", "0"), "after", 0, 2**62)
    newest = "last" in request.query
    limit = (
        _int(request.query["last"], "last", 1, MAX_PAGE)
        if newest
        else _int(request.query.get("limit", "100"), "limit", 1, MAX_PAGE)
    )
    stream = request.query.get("stream") or None
    entries = request.app[MODERATION].store.audit.read(after, stream_id=stream, limit=limit, newest=newest)
    return web.json_response({"entries": [e.to_dict() for e in entries]})


async def api_webhooks(request: web.Request) -> web.Response:
    authorise(request)
    moderation = request.app[MODERATION]
    return web.json_response({"endpoints": moderation.webhooks.status(), "pending": moderation.store.outbox.pending()})


async def api_webhook_retry(request: web.Request) -> web.Response:
    """``{"reason"}`` -> try a failing endpoint now; the audit entry and the endpoint's status."""
    principal = authorise(request, act=True)
    moderation = request.app[MODERATION]
    name = request.match_info["name"]
    try:
        entry, _ = moderation.retry_webhook(principal, name, parse_reason(await _json(request)))
    except ActionError as exc:
        raise _error(exc) from None
    (status,) = [s for s in moderation.webhooks.status() if s["name"] == name]
    return web.json_response({"audit": entry.to_dict(), "endpoint": status})


# --------------------------------------------------------------------- feed


async def api_feed(request: web.Request) -> web.StreamResponse:
    """Live events, as Server-Sent Events or (with an Upgrade) a WebSocket.

    Resumes after ``Last-Event-ID`` (what browsers send on reconnect) or
    ``?since=<event id>``; without either it starts with the next event.
    Events are read from the recent events every feed shares (or, further
    back, the store), never queued per client: a slow client costs a cursor,
    not memory, and misses nothing.
    """
    authorise(request)
    moderation = request.app[MODERATION]
    resume = request.headers.get("Last-Event-ID") or request.query.get("since")
    after = _seq_of(request, resume) if resume else moderation.store.events.last_seq()
    feeds = request.app[_FEEDS]
    if len(feeds) >= MAX_FEEDS:
        raise web.HTTPServiceUnavailable(text=f"at most {MAX_FEEDS} live feeds at once\n", headers={"Retry-After": "5"})
    task = asyncio.current_task()
    assert task is not None  # aiohttp runs each handler in a task
    feeds.add(task)
    try:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await _websocket_feed(request, moderation, after)
        return await _sse_feed(request, moderation, after)
    finally:
        feeds.discard(task)


async def _events_after(moderation: Moderation, after: int, gone: Callable[[], bool]) -> list[FeedItem]:
    """The next events after ``after``; [] after HEARTBEAT_SECONDS without any, or soon after the client left.

    aiohttp does not cancel a handler whose client hung up, so a quiet feed looks
    for itself: otherwise a closed dashboard would hold one of MAX_FEEDS until the keepalive.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + HEARTBEAT_SECONDS
    while not gone() and (left := deadline - loop.time()) > 0:
        if await moderation.wait_for_events(after, min(left, CLIENT_CHECK_SECONDS)):
            return moderation.recent.after(after, FEED_BATCH)
    return []


def _client_gone(request: web.Request) -> Callable[[], bool]:
    return lambda: request.transport is None or request.transport.is_closing()


async def _sse_feed(request: web.Request, moderation: Moderation, after: int) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    )
    await response.prepare(request)
    await response.write(b": livesafe events\n\n")
    try:
        while True:
            items = await _events_after(moderation, after, _client_gone(request))
            if not items:
                await response.write(b": keepalive\n\n")
                continue
            await response.write(
                "".join(f"id: {i.event.id}\nevent: {i.event.type}\ndata: {i.json}\n\n" for i in items).encode()
            )
            after = items[-1].event.stored_seq
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    return response


async def _websocket_feed(request: web.Request, moderation: Moderation, after: int) -> web.StreamResponse:
    ws = web.WebSocketResponse(
        heartbeat=HEARTBEAT_SECONDS, timeout=2.0
    )  # a client not reading must not hold up shutdown
    await ws.prepare(request)

    async def drain_incoming() -> None:
        async for message in ws:  # nothing is expected from the client; this notices it leaving
            if message.type == WSMsgType.ERROR:
                break

    reader = asyncio.ensure_future(drain_incoming())
    try:
        while not ws.closed and not reader.done():
            for item in await _events_after(moderation, after, lambda: ws.closed or reader.done()):
                await ws.send_str(item.json)
                after = item.event.stored_seq
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        reader.cancel()
        await ws.close()
    return ws


# ------------------------------------------------------------------ actions


async def api_action(request: web.Request) -> web.Response:
    """``{"action", "reason", "event_id"?, "scope"?}`` -> the audit entry and the ``action.taken`` event."""
    principal = authorise(request, act=True)
    stream_id = stream_name(request)
    body = await _json(request)
    try:
        action = ActionRequest.parse(body)
        entry, event = await request.app[MODERATION].act(principal, stream_id, action)
    except ActionError as exc:
        raise _error(exc) from None
    return web.json_response({"audit": entry.to_dict(), "event": event.to_dict()})


async def api_preview(request: web.Request) -> web.Response:
    """The blurred greyscale preview (PNG), if enabled; a moderator's explicit, audited request (hence POST)."""
    principal = authorise(request, act=True)
    try:
        frame = request.app[MODERATION].preview_frame(principal, stream_name(request))
    except ActionError as exc:
        raise _error(exc) from None
    png = await asyncio.to_thread(blurred_thumbnail, frame)
    return web.Response(body=png, content_type="image/png", headers={"Cache-Control": "no-store"})


async def api_report(request: web.Request) -> web.Response:
    """A viewer's report ``{"reason", "category"?, "session"?}``; anyone who may watch the stream may send one."""
    relay: Relay = request.app[RELAY]
    stream_id = stream_name(request)
    if not await relay.access.allows(stream_id, VIEW, bearer(request), request.remote):
        raise unauthorized("reporting this stream needs the viewer token")
    body = await _json(request)
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text='expected a JSON object like {"reason": "..."}\n')
    problems = []
    unknown = set(body) - {"reason", "category", "session"}
    if unknown:
        problems.append(f"unknown field(s) {sorted(unknown)}")
    reason, category, session_id = body.get("reason"), body.get("category"), body.get("session")
    if not isinstance(reason, str) or not reason.strip():
        problems.append("reason: required, a non-empty string")
    elif len(reason.strip()) > MAX_REASON:
        problems.append(f"reason: at most {MAX_REASON} characters")
    if category is not None and (not isinstance(category, str) or not 0 < len(category) <= 64):
        problems.append("category: expected a short string")
    if session_id is not None and not isinstance(session_id, str):
        problems.append("session: expected the viewer's WHEP session id")
    if problems:
        raise web.HTTPBadRequest(text="; ".join(problems) + "\n")
    assert isinstance(reason, str)  # checked above
    session = relay.sessions.get(session_id) if session_id else None
    viewing = (
        session is not None
        and session.kind == "whep"
        and session.stream_id == stream_id
        and session.pc.connectionState == "connected"
    )
    if session_id and not viewing:
        session_id = None  # not a connected viewer of this stream (offers alone are cheap): counted by address
    client = ReportDesk.client_key(session_id, request.remote)
    try:
        event = request.app[MODERATION].report(stream_id, client, reason.strip(), category)
    except RateLimited as exc:
        raise web.HTTPTooManyRequests(text=f"{exc}\n", headers={"Retry-After": str(int(exc.retry_after) + 1)}) from None
    except ActionError as exc:
        raise _error(exc) from None
    return web.json_response({"id": event.id, "received": True}, status=202)


async def _json(request: web.Request) -> Any:
    if request.content_type != "application/json":
        raise web.HTTPUnsupportedMediaType(text="expected Content-Type: application/json\n")
    try:
        return json.loads(await request.text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise web.HTTPBadRequest(text=f"body is not JSON: {exc}\n") from None


def _error(exc: ActionError) -> web.HTTPException:
    statuses: dict[int, type[web.HTTPException]] = {
        400: web.HTTPBadRequest,
        403: web.HTTPForbidden,
        404: web.HTTPNotFound,
        409: web.HTTPConflict,
        503: web.HTTPServiceUnavailable,
    }
    return statuses.get(exc.status, web.HTTPBadRequest)(text=f"{exc}\n")

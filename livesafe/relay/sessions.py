"""What WHIP (RFC 9725) and WHEP share: reading and checking an offer, negotiating, the session resource.

Both POST an SDP offer and get ``201 Created`` with the answer and a session
``Location``; ``DELETE`` that resource to hang up.  Our answers carry every ICE
candidate (aiortc gathers before answering), so trickle ICE is not needed and
``PATCH`` answers 405, as the RFC allows.  Every error is a status with a
one-line reason; nothing a client sends can affect another session.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

from aiohttp import web
from aiortc import RTCSessionDescription
from aiortc.sdp import SessionDescription

from livesafe.http import bearer, unauthorized
from livesafe.relay.registry import RELAY, Relay, Session

SDP = "application/sdp"


async def read_offer(request: web.Request) -> str:
    if request.content_type != SDP:
        raise web.HTTPUnsupportedMediaType(text=f"expected Content-Type: {SDP}\n")
    limit = request.app[RELAY].settings.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length)
    try:
        body = (await request.read()).decode("utf-8")  # SDP is UTF-8 (RFC 8866), whatever charset= says
    except UnicodeDecodeError:
        raise web.HTTPBadRequest(text="SDP offer is not UTF-8 text\n") from None
    problem = offer_problem(body, sends=request.path.startswith("/whip/"))
    if problem:
        raise web.HTTPBadRequest(text=f"malformed SDP offer: {problem}\n")
    return body


def offer_problem(sdp: str, *, sends: bool) -> str | None:
    """What is wrong with this offer (or None), checked before any peer connection exists.

    ``sends``: a WHIP offer must send video; a WHEP offer must receive it.
    """
    if not sdp.startswith("v=0"):
        return "must start with v=0"
    try:
        parsed = SessionDescription.parse(sdp)
    except Exception as exc:  # noqa: BLE001 - aiortc's parser raises all sorts on garbage
        return f"cannot parse: {type(exc).__name__}: {exc}"
    media = [m for m in parsed.media if m.kind in ("audio", "video")]
    if not media:
        return "no audio or video media section"
    for m in media:
        assert m.ice is not None  # SessionDescription.parse gives every media section its ICE parameters
        if not m.ice.usernameFragment or not m.ice.password:
            return f"{m.kind} section has no ICE credentials (a=ice-ufrag / a=ice-pwd)"
        if not m.dtls or not m.dtls.fingerprints:
            return f"{m.kind} section has no DTLS fingerprint (a=fingerprint)"
    wanted = ("sendonly", "sendrecv") if sends else ("recvonly", "sendrecv")
    if not any(m.kind == "video" and (m.direction or "sendrecv") in wanted for m in media):
        return (
            "no video section that sends (WHIP publishes video)"
            if sends
            else "no video section that receives (WHEP plays video)"
        )
    return None


async def negotiate(session: Session, offer: str, add_tracks: Callable[[], None] | None = None) -> str:
    """Negotiate ``offer``; ``add_tracks`` runs between the offer and the answer (our sending tracks)."""
    try:
        await session.pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        if add_tracks is not None:
            add_tracks()
        await session.pc.setLocalDescription(await session.pc.createAnswer())
    except Exception as exc:  # noqa: BLE001 - e.g. no codec in common: the client's problem, say so
        raise web.HTTPBadRequest(text=f"cannot negotiate this offer: {exc}\n") from None
    return session.pc.localDescription.sdp


def created(request: web.Request, session: Session, answer: str) -> web.Response:
    relay: Relay = request.app[RELAY]
    headers = {
        "Location": f"/{session.kind}/{session.stream_id}/{session.id}",
        "ETag": f'"{session.id}"',
    }
    links = relay.settings.ice.link_headers()
    if links:
        headers["Link"] = ", ".join(links)
    return web.Response(status=201, text=relay.settings.ice.rewrite_sdp(answer), content_type=SDP, headers=headers)


def session_of(request: web.Request) -> Session:
    relay: Relay = request.app[RELAY]
    session = relay.sessions.get(request.match_info["session"])
    kind = request.path.split("/")[1]
    if session is None or session.kind != kind or session.stream_id != request.match_info["stream"]:
        raise web.HTTPNotFound(text="no such session\n")
    if session.token is not None:
        token = bearer(request)
        if token is None or not secrets.compare_digest(token.encode(), session.token.encode()):
            raise unauthorized("this session belongs to another token")
    return session


async def session_delete(request: web.Request) -> web.Response:
    session = session_of(request)
    await request.app[RELAY].close_session(session)
    return web.Response(status=200)


async def session_patch(request: web.Request) -> web.Response:
    session_of(request)
    # Our answer already holds all our candidates, and aiortc cannot add remote ones later.
    raise web.HTTPMethodNotAllowed(
        "PATCH", ["DELETE", "OPTIONS"], text="trickle ICE is not supported: send all candidates in the offer\n"
    )


async def endpoint_options(request: web.Request) -> web.Response:
    return web.Response(status=204, headers=_preflight(request, "POST, OPTIONS") | {"Accept-Post": SDP})


async def session_options(request: web.Request) -> web.Response:
    return web.Response(status=204, headers=_preflight(request, "DELETE, OPTIONS"))


def _preflight(request: web.Request, methods: str) -> dict[str, str]:
    # No ICE server Links here: they may carry TURN credentials, which only an
    # authorized POST gets (RFC 9725 section 4.6 allows either).
    headers = {
        "Access-Control-Allow-Methods": methods,
        "Access-Control-Allow-Headers": "Authorization, Content-Type, If-Match",
        "Access-Control-Max-Age": "600",
    }
    return headers

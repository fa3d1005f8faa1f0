"""The relay's HTTP face: WHIP ingest, WHEP viewers, stream list, health, player page.

WHIP (RFC 9725) and WHEP share one shape: ``POST`` an SDP offer, get ``201
Created`` with the answer and a session ``Location``; ``DELETE`` that
resource to hang up.  Our answers carry every ICE candidate (aiortc gathers
before answering), so trickle ICE is not needed and ``PATCH`` answers 405, as
the RFC allows.  Every error is a status with a one-line reason; nothing a
client sends can affect another session.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Callable

import av
from aiohttp import web
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.sdp import SessionDescription

from livesafe.guard.events import STREAM_CUT, STREAM_ENDED, STREAM_STARTED, GuardEvent
from livesafe.guard.matcher import Match, Matcher
from livesafe.guard.redact import Action
from livesafe.guard.stream_guard import PUSH_SECONDS_BUCKETS, GuardSettings, StreamGuard
from livesafe.moderation.policy import PolicyProfile
from livesafe.relay.compat import accept_rsa_peers, route_keyframe_requests
from livesafe.relay.fanout import PacketTrack
from livesafe.relay.ice import apply_ice_settings
from livesafe.relay.overload import LoadShedder
from livesafe.relay.settings import STREAM_ID, RelaySettings
from livesafe.relay.stream import LiveStream, Viewer

log = logging.getLogger(__name__)

SDP = "application/sdp"
RELAY: web.AppKey[Relay] = web.AppKey("relay")


@dataclass
class Session:
    id: str
    kind: str  # "whip" or "whep"
    stream_id: str
    pc: RTCPeerConnection
    token: str | None = field(repr=False)
    deadline: asyncio.Task | None = None  # closes the session if it never connects


@dataclass
class EndedTotals:
    """What the streams that have ended counted, so relay-wide totals (``/metrics``) never go down."""

    streams: int = 0
    frames_in: int = 0
    frames_guarded: int = 0
    frames_redacted: int = 0
    frames_dropped: int = 0
    guard_errors: int = 0
    stalls: int = 0
    push_buckets: list[int] = field(default_factory=lambda: [0] * (len(PUSH_SECONDS_BUCKETS) + 1))
    push_seconds: float = 0.0

    def add(self, stream: LiveStream) -> None:
        stats, counters = stream.guard.stats, stream.counters
        self.streams += 1
        self.frames_in += counters.frames_in
        self.frames_guarded += stats.frames_out
        self.frames_redacted += stats.frames_redacted
        self.frames_dropped += counters.frames_dropped
        self.guard_errors += stats.errors
        self.stalls += counters.stalls
        self.push_buckets = [a + b for a, b in zip(self.push_buckets, stats.push_buckets)]
        self.push_seconds += stats.push_seconds


def key_fingerprint(token: str | None) -> str:
    """What is stored of a revoked stream key: its SHA-256, never the key ("" for dev mode's no key)."""
    return hashlib.sha256((token or "").encode()).hexdigest()


class Relay:
    """Streams, sessions and the peer connections behind them (one per process).

    Also the moderation service's ``StreamControl``: resume/keep/impose reach a
    stream's guard, terminate hangs up its publisher and revokes the key.
    """

    def __init__(
        self,
        settings: RelaySettings,
        matcher: Callable[[], Matcher],
        guard_settings: GuardSettings,
        on_event: Callable[[GuardEvent], None] | None = None,
        allow: Callable[[str, Match], bool] | None = None,
        revoked_keys: set[tuple[str, str]] | None = None,
    ) -> None:
        """``allow(stream, match)``: ignore that match (false positives); ``revoked_keys``: (stream, key SHA-256) refused."""
        self.settings = settings
        self._matcher = matcher
        self._guard_settings = guard_settings
        self._sink = on_event
        self._allow = allow
        self.revoked_keys = set(revoked_keys or ())
        self.streams: dict[str, LiveStream] = {}
        self.ended: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.ended_totals = EndedTotals()  # streams leave self.streams and their counts land here, on the loop
        self.sessions: dict[str, Session] = {}
        self.shedder = LoadShedder(settings.overload)
        apply_ice_settings(settings.ice)
        accept_rsa_peers()

    # ------------------------------------------------------------- streams

    def stream_for_publisher(self, stream_id: str) -> LiveStream:
        stream = self.streams.get(stream_id)
        if stream is None:
            if len(self.streams) >= self.settings.max_streams:
                raise web.HTTPServiceUnavailable(text=f"at most {self.settings.max_streams} streams at once\n")
            loop = asyncio.get_running_loop()
            allow = self._allow
            guard = StreamGuard(
                self._matcher,
                self._guard_settings,
                stream_id=stream_id,
                # The guard runs on the stream's worker thread; events go back to the loop.
                on_event=lambda event: loop.call_soon_threadsafe(self._on_event, event),
                floor=self.profile(stream_id).floor,
                allow=(lambda match: allow(stream_id, match)) if allow is not None else None,
            )
            stream = LiveStream(stream_id, guard, self.settings.stream, on_event=self._on_event, on_ended=self._stream_ended)
            self.streams[stream_id] = stream
            self.ended.pop(stream_id, None)
            self._lifecycle(STREAM_STARTED, stream, {"profile": self.profile(stream_id).name})
        return stream

    def _stream_ended(self, stream: LiveStream) -> None:
        if self.streams.get(stream.id) is stream:
            del self.streams[stream.id]
            self.ended_totals.add(stream)
            summary = self.ended[stream.id] = self._summary(stream)
            while len(self.ended) > self.settings.ended_streams_listed:
                self.ended.popitem(last=False)
            self._lifecycle(STREAM_ENDED, stream, {"summary": summary})

    def _lifecycle(self, kind: str, stream: LiveStream, details: dict[str, Any], action: Action | None = None) -> None:
        """A stream event from the relay (``action``: what viewers get; default the guard's current action)."""
        self._on_event(
            GuardEvent(type=kind, stream_id=stream.id, frame_index=stream.guard.stats.frames_in, pts=None, media_time=0.0,
                       action=(stream.guard.action if action is None else action).label, details=details)
        )  # fmt: skip

    def _summary(self, stream: LiveStream) -> dict[str, Any]:
        return stream.summary() | {"profile": self.profile(stream.id).name}

    def summaries(self) -> list[dict[str, Any]]:
        live = [self._summary(s) for s in self.streams.values()]
        return live + [s for k, s in self.ended.items() if k not in self.streams]

    # ------------------------------------------------------------ sessions

    def new_session(self, kind: str, stream_id: str, token: str | None) -> Session:
        pc = RTCPeerConnection(self.settings.ice.rtc_configuration())
        session = Session(secrets.token_urlsafe(18), kind, stream_id, pc, token)
        self.sessions[session.id] = session
        return session

    async def discard(self, session: Session) -> None:
        """Drop a session whose negotiation failed (nothing attached to a stream yet)."""
        self.sessions.pop(session.id, None)
        await session.pc.close()

    async def close_session(self, session: Session) -> None:
        if self.sessions.pop(session.id, None) is None:
            return
        if session.deadline is not None and session.deadline is not asyncio.current_task():
            session.deadline.cancel()
        stream = self.streams.get(session.stream_id)
        if stream is not None:
            if session.kind == "whip":
                stream.publisher_left(session)
            else:
                await stream.remove_viewer(session.id)
        await session.pc.close()

    def watch_connection(self, session: Session) -> None:
        """Drop the session when its peer connection fails, closes, or never connects."""

        @session.pc.on("connectionstatechange")
        async def _changed() -> None:
            if session.pc.connectionState in ("failed", "closed"):
                await self.close_session(session)

        async def _deadline() -> None:
            await asyncio.sleep(self.settings.connect_timeout_seconds)
            if session.pc.connectionState != "connected" and session.id in self.sessions:
                log.warning("%s session for %s never connected; closing it", session.kind.upper(), session.stream_id)
                await self.close_session(session)

        session.deadline = asyncio.ensure_future(_deadline())

    async def cut(self, stream: LiveStream, reason: str) -> None:
        """End ``stream``'s publisher session (viewers get the slate, then are hung up)."""
        self._lifecycle(STREAM_CUT, stream, {"reason": reason}, action=Action.SLATE)
        publisher = stream.publisher
        if publisher is not None:
            await self.close_session(publisher)

    def _on_event(self, event: GuardEvent) -> None:
        _log_event(event)
        if self._sink is not None:
            self._sink(event)

    # ---------------------------------------------- StreamControl (moderation)

    def profile(self, stream_id: str) -> PolicyProfile:
        return self.settings.profile_for(stream_id)

    def latest_frame(self, stream_id: str) -> av.VideoFrame | None:
        return self.streams[stream_id].latest_frame if self.is_live(stream_id) else None

    def is_live(self, stream_id: str) -> bool:
        stream = self.streams.get(stream_id)
        return stream is not None and stream.publisher is not None

    def is_redacting(self, stream_id: str) -> bool:
        stream = self.streams.get(stream_id)
        return stream is not None and stream.guard.redacting

    def resume(self, stream_id: str, by: str) -> None:
        self.streams[stream_id].guard.resume(by)

    def keep(self, stream_id: str) -> bool:
        return self.streams[stream_id].guard.keep()

    def impose(self, stream_id: str, action: Action, reason: str) -> None:
        self.streams[stream_id].guard.impose(max(action, self.profile(stream_id).floor), reason)

    async def terminate(self, stream_id: str, reason: str) -> str:
        """Hang up the publisher and refuse its stream key from now on."""
        stream = self.streams[stream_id]
        publisher = stream.publisher
        fingerprint = key_fingerprint(publisher.token if publisher is not None else None)
        self.revoked_keys.add((stream_id, fingerprint))
        await self.cut(stream, reason)
        return fingerprint

    async def shutdown(self) -> None:
        for session in list(self.sessions.values()):
            await self.close_session(session)
        for stream in list(self.streams.values()):
            await stream.end()


def _log_event(event: GuardEvent) -> None:
    if event.type == "match.started":
        log.warning(
            "stream %s: %s at %.2fs: list %s (%s) %s distance %s -> %s",
            event.stream_id, event.type, event.media_time, event.list_name, event.category,
            event.signal, event.distance, event.action,
        )  # fmt: skip
    else:
        log.info("stream %s: %s %s", event.stream_id, event.type, json.dumps(event.details))


# ---------------------------------------------------------------- handlers


def create_app(relay: Relay) -> web.Application:
    app = web.Application(client_max_size=relay.settings.max_body_bytes, middlewares=[_cors(relay.settings.cors_origin)])
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
    app.router.add_get("/watch/{stream}", _page("player.html"))
    app.router.add_get("/publish/{stream}", _page("publish.html"))
    app.router.add_get("/web/whip.js", _asset("whip.js", "text/javascript"))
    app.router.add_get("/web/dashboard.js", _asset("dashboard.js", "text/javascript"))
    app.router.add_get("/web/dashboard.css", _asset("dashboard.css", "text/css"))
    app.router.add_get("/", index_page)

    async def _shed_load(app: web.Application):
        task = asyncio.ensure_future(relay.shedder.run(lambda: relay.streams.values(), relay.cut))
        yield
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await relay.shutdown()

    app.cleanup_ctx.append(_shed_load)
    return app


def _cors(origin: str) -> Any:
    @web.middleware
    async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            response = exc
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Expose-Headers"] = "Location, Link, ETag, Accept-Patch, Accept-Post"
        if isinstance(response, web.HTTPException) and response.status >= 400:
            raise response
        return response

    return middleware


def _stream_id(request: web.Request) -> str:
    stream_id = request.match_info["stream"]
    if not STREAM_ID.match(stream_id):
        raise web.HTTPBadRequest(text="stream name: use 1-64 letters, digits, '-' or '_'\n")
    return stream_id


def _bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def _unauthorized(what: str) -> web.HTTPException:
    return web.HTTPUnauthorized(text=f"{what}\n", headers={"WWW-Authenticate": 'Bearer realm="livesafe"'})


async def _read_offer(request: web.Request) -> str:
    if request.content_type != SDP:
        raise web.HTTPUnsupportedMediaType(text=f"expected Content-Type: {SDP}\n")
    limit = request.app[RELAY].settings.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length)
    try:
        body = (await request.read()).decode("utf-8")  # SDP is UTF-8 (RFC 8866), whatever charset= says
    except UnicodeDecodeError:
        raise web.HTTPBadRequest(text="SDP offer is not UTF-8 text\n") from None
    problem = _offer_problem(body, sends=request.path.startswith("/whip/"))
    if problem:
        raise web.HTTPBadRequest(text=f"malformed SDP offer: {problem}\n")
    return body


def _offer_problem(sdp: str, *, sends: bool) -> str | None:
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
        if not m.ice.usernameFragment or not m.ice.password:
            return f"{m.kind} section has no ICE credentials (a=ice-ufrag / a=ice-pwd)"
        if not m.dtls or not m.dtls.fingerprints:
            return f"{m.kind} section has no DTLS fingerprint (a=fingerprint)"
    wanted = ("sendonly", "sendrecv") if sends else ("recvonly", "sendrecv")
    if not any(m.kind == "video" and (m.direction or "sendrecv") in wanted for m in media):
        return "no video section that sends (WHIP publishes video)" if sends else "no video section that receives (WHEP plays video)"
    return None


async def _answer(session: Session, offer: str, add_tracks: Callable[[], None] | None = None) -> str:
    """Negotiate ``offer``; ``add_tracks`` runs between the offer and the answer (our sending tracks)."""
    try:
        await session.pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        if add_tracks is not None:
            add_tracks()
        await session.pc.setLocalDescription(await session.pc.createAnswer())
    except Exception as exc:  # noqa: BLE001 - e.g. no codec in common: the client's problem, say so
        raise web.HTTPBadRequest(text=f"cannot negotiate this offer: {exc}\n") from None
    return session.pc.localDescription.sdp


def _created(request: web.Request, session: Session, answer: str) -> web.Response:
    relay: Relay = request.app[RELAY]
    headers = {
        "Location": f"/{session.kind}/{session.stream_id}/{session.id}",
        "ETag": f'"{session.id}"',
    }
    links = relay.settings.ice.link_headers()
    if links:
        headers["Link"] = ", ".join(links)
    return web.Response(status=201, text=relay.settings.ice.rewrite_sdp(answer), content_type=SDP, headers=headers)


async def whip_post(request: web.Request) -> web.Response:
    relay: Relay = request.app[RELAY]
    stream_id = _stream_id(request)
    token = _bearer(request)
    if not relay.settings.dev_mode:
        if token is None:
            raise _unauthorized("publishing needs Authorization: Bearer <stream key>")
        if not relay.settings.may_publish(stream_id, token):
            raise web.HTTPForbidden(text="this stream key may not publish this stream\n")
    if (stream_id, key_fingerprint(token)) in relay.revoked_keys:
        raise web.HTTPForbidden(text="this stream key was revoked by a moderator\n")
    offer = await _read_offer(request)
    session = relay.new_session("whip", stream_id, token)
    try:
        answer = await _answer(session, offer)
        video = audio = receiver = None
        for transceiver in session.pc.getTransceivers():
            track = transceiver.receiver.track
            if transceiver.kind == "video" and video is None:
                video, receiver = track, transceiver.receiver
            elif transceiver.kind == "audio" and audio is None:
                audio = track
        _admit(relay, stream_id)  # only offers that negotiated count against capacity
        stream = relay.stream_for_publisher(stream_id)
    except web.HTTPException:
        await relay.discard(session)
        raise
    previous = stream.attach_publisher(session, video, audio, receiver)
    if previous is not None:
        log.warning("stream %s: publisher reconnected; the previous session is replaced", stream_id)
        await relay.close_session(previous)
    relay.watch_connection(session)
    log.info("stream %s: publisher session started", stream_id)
    return _created(request, session, answer)


def _admit(relay: Relay, stream_id: str) -> None:
    live = relay.streams.get(stream_id)
    if live is not None and live.publisher is not None:
        return  # a reconnect replaces its own stream: no new load
    running = sum(s.publisher is not None for s in relay.streams.values())
    if not relay.shedder.admit(time.monotonic(), running):
        raise web.HTTPServiceUnavailable(text="at capacity: not taking new streams now\n", headers={"Retry-After": "10"})


async def whep_post(request: web.Request) -> web.Response:
    relay: Relay = request.app[RELAY]
    stream_id = _stream_id(request)
    token = _bearer(request)
    if not relay.settings.may_watch(stream_id, token):
        if token is None:
            raise _unauthorized("watching this stream needs Authorization: Bearer <viewer token>")
        raise web.HTTPForbidden(text="this viewer token may not watch this stream\n")
    profile = relay.profile(stream_id)
    if profile.refuse_recording and profile.is_recorder(request.headers.get("User-Agent", "")):
        raise web.HTTPForbidden(text=f"recording clients may not watch this stream (profile {profile.name!r})\n")
    stream = relay.streams.get(stream_id)
    if stream is None or stream.publisher is None:
        raise web.HTTPNotFound(text=f"no live stream named {stream_id!r}\n")
    if len(stream.viewers) >= relay.settings.max_viewers_per_stream:
        raise web.HTTPServiceUnavailable(text="this stream has as many viewers as it may have\n")
    offer = await _read_offer(request)
    session = relay.new_session("whep", stream_id, token)
    limits = relay.settings.stream
    capacity, max_age = limits.viewer_queue_packets, limits.viewer_queue_seconds
    video = PacketTrack("video", capacity, request_keyframe=lambda: stream.request_keyframe(codec or "vp8"), max_age=max_age)
    audio = PacketTrack("audio", capacity, max_age=max_age)
    codec: str | None = None
    kinds: set[str] = set()

    def add_tracks() -> None:
        kinds.update(t.kind for t in session.pc.getTransceivers())
        for kind, track in (("video", video), ("audio", audio)):
            if kind in kinds:
                session.pc.addTrack(track)

    try:
        answer = await _answer(session, offer, add_tracks)
        codec = _video_codec(answer)
        if codec is None:
            raise web.HTTPBadRequest(text="no video codec in common (this relay sends VP8 or H264)\n")
    except web.HTTPException:
        await relay.discard(session)
        raise
    video_sender = next(t.sender for t in session.pc.getTransceivers() if t.sender.track is video)
    # aiortc forwards packets as they are, ignoring keyframe requests (PLI/FIR);
    # route them to the stream's one encoder instead.
    route_keyframe_requests(video_sender, lambda: stream.request_keyframe(codec))
    stream.add_viewer(
        Viewer(
            id=session.id,
            codec=codec,
            video=video,
            audio=audio if "audio" in kinds else None,
            close=session.pc.close,
        )
    )
    relay.watch_connection(session)
    return _created(request, session, answer)


def _video_codec(answer: str) -> str | None:
    for media in SessionDescription.parse(answer).media:
        if media.kind == "video" and media.rtp.codecs:
            name = media.rtp.codecs[0].mimeType.split("/")[1].lower()
            return name if name in ("vp8", "h264") else None
    return None


def _session(request: web.Request) -> Session:
    relay: Relay = request.app[RELAY]
    session = relay.sessions.get(request.match_info["session"])
    kind = request.path.split("/")[1]
    if session is None or session.kind != kind or session.stream_id != request.match_info["stream"]:
        raise web.HTTPNotFound(text="no such session\n")
    if session.token is not None:
        token = _bearer(request)
        if token is None or not secrets.compare_digest(token.encode(), session.token.encode()):
            raise _unauthorized("this session belongs to another token")
    return session


async def session_delete(request: web.Request) -> web.Response:
    session = _session(request)
    await request.app[RELAY].close_session(session)
    return web.Response(status=200)


async def session_patch(request: web.Request) -> web.Response:
    _session(request)
    # Our answer already holds all our candidates, and aiortc cannot add remote ones later.
    raise web.HTTPMethodNotAllowed("PATCH", ["DELETE", "OPTIONS"], text="trickle ICE is not supported: send all candidates in the offer\n")


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


async def healthz(request: web.Request) -> web.Response:
    relay: Relay = request.app[RELAY]
    return web.json_response({"status": "ok", "streams": len(relay.streams), "sessions": len(relay.sessions)})


async def api_streams(request: web.Request) -> web.Response:
    return web.json_response(request.app[RELAY].summaries())


def _asset(name: str, content_type: str) -> Any:
    text = resources.files("livesafe.web").joinpath(name).read_text(encoding="utf-8")

    async def handler(request: web.Request) -> web.Response:
        return web.Response(text=text, content_type=content_type, headers={"Cache-Control": "no-cache"})

    return handler


def _page(name: str, per_stream: bool = True) -> Any:
    """A page of ``livesafe/web`` (``per_stream``: for one stream, which the page reads from its URL)."""
    html = resources.files("livesafe.web").joinpath(name).read_text(encoding="utf-8")

    async def handler(request: web.Request) -> web.Response:
        if per_stream:
            _stream_id(request)
        return web.Response(text=html, content_type="text/html", headers={"Cache-Control": "no-store"})

    return handler


async def index_page(request: web.Request) -> web.Response:
    relay: Relay = request.app[RELAY]
    rows = "".join(
        f'<li><a href="/watch/{s["id"]}">{s["id"]}</a> — {s["state"]}, {s["viewers"]} viewer(s)</li>'
        for s in relay.summaries()
    )
    page = f"<!doctype html><meta charset=utf-8><title>livesafe</title><h1>livesafe streams</h1><ul>{rows or '<li>none yet</li>'}</ul>"
    return web.Response(text=page, content_type="text/html")

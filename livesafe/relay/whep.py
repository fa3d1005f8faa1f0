"""WHEP viewers: each gets the stream's one guarded encode, never a frame the guard has not passed."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from aiortc.sdp import SessionDescription

from livesafe.http import bearer, stream_name
from livesafe.relay.access import VIEW
from livesafe.relay.compat import route_keyframe_requests
from livesafe.relay.delivery import Viewer
from livesafe.relay.fanout import PacketTrack
from livesafe.relay.registry import RELAY, Relay, RemoteStreams
from livesafe.relay.sessions import created, negotiate, read_offer


async def whep_post(request: web.Request) -> web.Response:
    relay: Relay = request.app[RELAY]
    stream_id = stream_name(request)
    token = bearer(request)
    await relay.access.check(stream_id, VIEW, token, request.remote)
    profile = relay.profile(stream_id)
    if profile.refuse_recording and profile.is_recorder(request.headers.get("User-Agent", "")):
        raise web.HTTPForbidden(text="recording clients may not watch this stream\n")  # not naming its profile
    stream = relay.streams.get(stream_id)
    if stream is None or stream.publisher is None:
        if relay.edges is not None:
            return await _edge_post(request, relay, relay.edges, stream_id, token)
        raise web.HTTPNotFound(text=f"no live stream named {stream_id!r}\n")
    if len(stream.viewers) >= relay.settings.max_viewers_per_stream:
        raise web.HTTPServiceUnavailable(text="this stream has as many viewers as it may have\n")

    async def attach(viewer: Viewer) -> None:
        stream.add_viewer(viewer)

    return await _viewer_session(request, relay, stream_id, token, stream.request_keyframe, attach)


async def _edge_post(
    request: web.Request, relay: Relay, edges: RemoteStreams, stream_id: str, token: str | None
) -> web.Response:
    """A viewer of a stream guarded on another node: fed from the origin's link, packets as they came.

    Authorised and profile-checked like any viewer (by the caller); the same
    limits, the same session resource.
    """
    attach = await edges.admit(stream_id)

    def keyframe(codec: str) -> None:
        edges.request_keyframe(stream_id, codec)

    return await _viewer_session(request, relay, stream_id, token, keyframe, attach)


async def _viewer_session(
    request: web.Request,
    relay: Relay,
    stream_id: str,
    token: str | None,
    request_keyframe: Callable[[str], None],
    attach: Callable[[Viewer], Awaitable[None]],
) -> web.Response:
    """What every viewer's session is, wherever its packets come from: the offer negotiated with
    one bounded track per kind, keyframe requests (PLI/FIR, queue resyncs) sent to ``request_keyframe``
    for the negotiated codec, and the viewer handed to ``attach`` (which may refuse it)."""
    offer = await read_offer(request)
    session = relay.new_session("whep", stream_id, token)
    limits = relay.settings.stream
    capacity, max_age = limits.viewer_queue_packets, limits.viewer_queue_seconds
    codec: str | None = None
    video = PacketTrack("video", capacity, lambda: request_keyframe(codec or "vp8"), max_age=max_age)
    audio = PacketTrack("audio", capacity, max_age=max_age)
    kinds: set[str] = set()

    def add_tracks() -> None:
        kinds.update(t.kind for t in session.pc.getTransceivers())
        for kind, track in (("video", video), ("audio", audio)):
            if kind in kinds:
                session.pc.addTrack(track)

    try:
        answer = await negotiate(session, offer, add_tracks)
        codec = _video_codec(answer)
        if codec is None:
            raise web.HTTPBadRequest(text="no video codec in common (this relay sends VP8 or H264)\n")
        await attach(Viewer(session.id, codec, video, audio if "audio" in kinds else None, close=session.pc.close))
    except web.HTTPException:
        await relay.discard(session)
        raise
    video_sender = next(t.sender for t in session.pc.getTransceivers() if t.sender.track is video)
    # aiortc forwards packets as they are, ignoring keyframe requests (PLI/FIR): route them to
    # the one encoder (here, or up the edge's link to the origin's).
    route_keyframe_requests(video_sender, lambda: request_keyframe(codec or "vp8"))
    relay.watch_connection(session)
    return created(request, session, answer)


def _video_codec(answer: str) -> str | None:
    for media in SessionDescription.parse(answer).media:
        if media.kind == "video" and media.rtp.codecs:
            name = media.rtp.codecs[0].mimeType.split("/")[1].lower()
            return name if name in ("vp8", "h264") else None
    return None

"""WHEP viewers: each gets the stream's one guarded encode, never a frame the guard has not passed."""

from __future__ import annotations

from aiohttp import web
from aiortc.sdp import SessionDescription

from livesafe.cluster.edge import EdgeStreams, EdgeUnavailable
from livesafe.cluster.nodes import RegistryUnavailable
from livesafe.http import bearer, stream_name, unauthorized
from livesafe.relay.compat import route_keyframe_requests
from livesafe.relay.delivery import Viewer
from livesafe.relay.fanout import PacketTrack
from livesafe.relay.registry import RELAY, Relay
from livesafe.relay.sessions import created, negotiate, read_offer


async def whep_post(request: web.Request) -> web.Response:
    relay: Relay = request.app[RELAY]
    stream_id = stream_name(request)
    token = bearer(request)
    if not relay.settings.may_watch(stream_id, token):
        if token is None:
            raise unauthorized("watching this stream needs Authorization: Bearer <viewer token>")
        raise web.HTTPForbidden(text="this viewer token may not watch this stream\n")
    profile = relay.profile(stream_id)
    if profile.refuse_recording and profile.is_recorder(request.headers.get("User-Agent", "")):
        raise web.HTTPForbidden(text=f"recording clients may not watch this stream (profile {profile.name!r})\n")
    stream = relay.streams.get(stream_id)
    if stream is None or stream.publisher is None:
        if relay.edges is not None:
            return await _edge_post(request, relay, relay.edges, stream_id, token)
        raise web.HTTPNotFound(text=f"no live stream named {stream_id!r}\n")
    if len(stream.viewers) >= relay.settings.max_viewers_per_stream:
        raise web.HTTPServiceUnavailable(text="this stream has as many viewers as it may have\n")
    offer = await read_offer(request)
    session = relay.new_session("whep", stream_id, token)
    limits = relay.settings.stream
    capacity, max_age = limits.viewer_queue_packets, limits.viewer_queue_seconds
    video = PacketTrack(
        "video", capacity, request_keyframe=lambda: stream.request_keyframe(codec or "vp8"), max_age=max_age
    )
    audio = PacketTrack("audio", capacity, max_age=max_age)
    codec: str | None = None
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
    return created(request, session, answer)


async def _edge_post(
    request: web.Request, relay: Relay, edges: EdgeStreams, stream_id: str, token: str | None
) -> web.Response:
    """A viewer of a stream guarded on another node: fed from the origin's link, packets as they came.

    Authorised and profile-checked like any viewer (by the caller); the same
    limits, the same session resource.
    """
    if edges.viewer_count(stream_id) >= relay.settings.max_viewers_per_stream:
        raise web.HTTPServiceUnavailable(text="this stream has as many viewers as it may have\n")
    try:
        origin = await edges.locate(stream_id)
    except RegistryUnavailable:
        raise web.HTTPServiceUnavailable(text="the cluster registry is unavailable; try again\n") from None
    if origin is None:
        raise web.HTTPNotFound(text=f"no live stream named {stream_id!r}\n")
    offer = await read_offer(request)
    session = relay.new_session("whep", stream_id, token)
    limits = relay.settings.stream
    capacity, max_age = limits.viewer_queue_packets, limits.viewer_queue_seconds
    codec: str | None = None
    video = PacketTrack("video", capacity, lambda: edges.request_keyframe(stream_id, codec or "vp8"), max_age=max_age)
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
        viewer = Viewer(session.id, codec, video, audio if "audio" in kinds else None, close=session.pc.close)
        await edges.add_viewer(stream_id, origin, viewer)
    except EdgeUnavailable as exc:
        await relay.discard(session)
        status = {404: web.HTTPNotFound, 503: web.HTTPServiceUnavailable}.get(exc.status, web.HTTPBadGateway)
        raise status(text=f"{exc}\n") from None
    except web.HTTPException:
        await relay.discard(session)
        raise
    video_sender = next(t.sender for t in session.pc.getTransceivers() if t.sender.track is video)
    route_keyframe_requests(video_sender, lambda: edges.request_keyframe(stream_id, codec))
    relay.watch_connection(session)
    return created(request, session, answer)


def _video_codec(answer: str) -> str | None:
    for media in SessionDescription.parse(answer).media:
        if media.kind == "video" and media.rtp.codecs:
            name = media.rtp.codecs[0].mimeType.split("/")[1].lower()
            return name if name in ("vp8", "h264") else None
    return None

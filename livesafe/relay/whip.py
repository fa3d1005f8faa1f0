"""WHIP ingest (RFC 9725): a broadcaster's offer becomes the publisher of a guarded stream."""

from __future__ import annotations

import logging
import time

from aiohttp import web

from livesafe.http import bearer, stream_name
from livesafe.relay.access import PUBLISH
from livesafe.relay.registry import RELAY, Relay, key_fingerprint
from livesafe.relay.sessions import created, negotiate, read_offer

log = logging.getLogger(__name__)


async def whip_post(request: web.Request) -> web.Response:
    relay: Relay = request.app[RELAY]
    stream_id = stream_name(request)
    token = bearer(request)
    grant = await relay.access.check(stream_id, PUBLISH, token, request.remote)
    if (stream_id, key_fingerprint(token)) in relay.revoked_keys:
        raise web.HTTPForbidden(text="this stream key was revoked by a moderator\n")
    offer = await read_offer(request)
    placement = relay.placement
    placed = placement is not None and await placement.place(stream_id, request)
    if isinstance(placed, web.Response):
        return placed  # another node of the cluster answered (or a 307 to it)
    if relay.refusing is not None and stream_id not in relay.streams:  # placement found no better node
        if placed and placement is not None:
            await placement.release(stream_id)
        raise web.HTTPServiceUnavailable(
            text=f"not taking publishers: {relay.refusing}\n", headers={"Retry-After": "5"}
        )
    session = relay.new_session("whip", stream_id, token)
    try:
        answer = await negotiate(session, offer)
        video = audio = receiver = None
        for transceiver in session.pc.getTransceivers():
            track = transceiver.receiver.track
            if transceiver.kind == "video" and video is None:
                video, receiver = track, transceiver.receiver
            elif transceiver.kind == "audio" and audio is None:
                audio = track
        _admit(relay, stream_id)  # only offers that negotiated count against capacity
        stream = relay.stream_for_publisher(stream_id, grant)
    except web.HTTPException:
        await relay.discard(session)
        if placed and placement is not None:
            await placement.release(stream_id)
        raise
    previous = stream.attach_publisher(session, video, audio, receiver)
    if previous is not None:
        log.warning("stream %s: publisher reconnected; the previous session is replaced", stream_id)
        await relay.close_session(previous)
    relay.watch_connection(session)
    log.info("stream %s: publisher session started", stream_id)
    return created(request, session, answer)


def _admit(relay: Relay, stream_id: str) -> None:
    live = relay.streams.get(stream_id)
    if live is not None and live.publisher is not None:
        return  # a reconnect replaces its own stream: no new load
    running = sum(s.publisher is not None for s in relay.streams.values())
    if not relay.shedder.admit(time.monotonic(), running):
        raise web.HTTPServiceUnavailable(
            text="at capacity: not taking new streams now\n", headers={"Retry-After": "10"}
        )

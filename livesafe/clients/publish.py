"""The WHIP publisher: streams a video file at real-time pace (optionally looping, time running on)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

from livesafe.clients.signalling import ClientError, connected, hang_up, negotiate, peer_connection, prefer_codec
from livesafe.clients.sources import FileSource
from livesafe.relay.ice import IceSettings


@dataclass
class PublishResult:
    frames_sent: int
    seconds: float


async def publish(
    path: Path,
    url: str,
    *,
    token: str | None = None,
    loop: bool = False,
    duration: float | None = None,
    codec: str | None = None,
    passthrough: bool = False,
    ice: IceSettings | None = None,
    connect_timeout: float = 15.0,
    retries: int = 0,
) -> PublishResult:
    """Publish ``path`` over WHIP until it ends (or ``duration`` seconds), then hang up.

    ``passthrough``: send the file's own H.264 packets (see :class:`FileSource`).
    ``retries``: start again, up to this many times, when an attempt fails in a way
    worth retrying (no answer, 5xx or 429, the connection failing or the server
    ending the session) -- what a real encoder does when its node goes away; the
    new attempt goes to ``url`` again, so a cluster places the stream anew.  The
    pause between attempts doubles from 0.5 s to 4 s.  ``duration`` counts from
    the first attempt.
    """
    started = time.monotonic()
    frames = 0
    for attempt in range(retries + 1):
        left = None if duration is None else max(0.0, duration - (time.monotonic() - started))
        source = FileSource(path, loop=loop, passthrough=passthrough)
        try:
            await _publish_once(source, url, token, left, "h264" if passthrough else codec, ice, connect_timeout)
        except ClientError as exc:
            if attempt == retries or not exc.worth_retrying:
                raise
            await asyncio.sleep(min(0.5 * 2**attempt, 4.0))
            continue
        finally:
            frames += source.frames_sent
        break
    return PublishResult(frames, time.monotonic() - started)


async def _publish_once(
    source: FileSource,
    url: str,
    token: str | None,
    duration: float | None,
    codec: str | None,
    ice: IceSettings | None,
    connect_timeout: float,
) -> None:
    pc = peer_connection(ice)
    resource = None
    try:
        pc.addTransceiver(source.video, direction="sendonly")
        if source.audio is not None:
            pc.addTransceiver(source.audio, direction="sendonly")
        prefer_codec(pc, codec)
        resource = await negotiate(pc, url, token)
        await connected(pc, connect_timeout)
        ended = asyncio.get_running_loop().create_future()

        def _ended() -> None:
            if not ended.done():
                ended.set_result(None)

        source.video.on("ended", _ended)

        @pc.on("connectionstatechange")
        def _changed() -> None:
            if pc.connectionState in ("failed", "closed") and not ended.done():
                ended.set_exception(ClientError(f"WebRTC connection {pc.connectionState}"))

        try:
            await asyncio.wait_for(ended, duration)
        except TimeoutError:
            pass
        else:
            if not source.exhausted:
                raise ClientError("the server ended the session (another publisher took over, or it shut down)")
    finally:
        await hang_up(resource, token)
        await pc.close()
        source.stop()

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
) -> PublishResult:
    """Publish ``path`` over WHIP until it ends (or ``duration`` seconds), then hang up.

    ``passthrough``: send the file's own H.264 packets (see :class:`FileSource`).
    """
    source = FileSource(path, loop=loop, passthrough=passthrough)
    pc = peer_connection(ice)
    resource = None
    started = time.monotonic()
    try:
        pc.addTransceiver(source.video, direction="sendonly")
        if source.audio is not None:
            pc.addTransceiver(source.audio, direction="sendonly")
        prefer_codec(pc, "h264" if passthrough else codec)
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
        return PublishResult(source.frames_sent, time.monotonic() - started)
    finally:
        await hang_up(resource, token)
        await pc.close()
        source.stop()

"""The viewer's side of the fan-out: a track that hands encoded packets to one RTCRtpSender.

Each viewer has its own short queue, so one slow viewer cannot hold up the
stream or the other viewers: when its queue is full it is emptied and the
viewer waits for the next keyframe (and asks for one) -- a brief freeze for
that viewer, never growing latency.  A video track starts at a keyframe.
"""

from __future__ import annotations

import asyncio
from typing import Callable

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack


class PacketTrack(MediaStreamTrack):
    def __init__(self, kind: str, capacity: int, request_keyframe: Callable[[], None] | None = None) -> None:
        super().__init__()
        self.kind = kind
        self._queue: asyncio.Queue[av.Packet | None] = asyncio.Queue(maxsize=capacity)
        self._request_keyframe = request_keyframe
        self._awaiting_keyframe = kind == "video"
        self.packets_sent = 0
        self.packets_dropped = 0

    def offer(self, packet: av.Packet) -> None:
        """Queue ``packet`` for this viewer (called on the event loop; never blocks)."""
        if self.readyState != "live":
            return
        if self._awaiting_keyframe:
            if not packet.is_keyframe:
                self.packets_dropped += 1
                return
            self._awaiting_keyframe = False
        try:
            self._queue.put_nowait(packet)
        except asyncio.QueueFull:
            self.packets_dropped += self._queue.qsize() + 1
            while not self._queue.empty():
                self._queue.get_nowait()
            if self.kind == "video":
                self._awaiting_keyframe = True
                if self._request_keyframe is not None:
                    self._request_keyframe()
            else:
                self._queue.put_nowait(packet)

    async def recv(self) -> av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        packet = await self._queue.get()
        if packet is None:
            raise MediaStreamError
        self.packets_sent += 1
        return packet

    def stop(self) -> None:
        if self.readyState == "live":
            # Wake a sender blocked in recv() so its task ends with the track.
            while not self._queue.empty():
                self._queue.get_nowait()
            self._queue.put_nowait(None)
        super().stop()

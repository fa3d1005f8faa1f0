"""The viewer's side of the fan-out: a track that hands encoded packets to one RTCRtpSender.

Each viewer has its own short queue, so one slow viewer cannot hold up the
stream or the other viewers: when its queue is full, or its oldest packet has
waited longer than ``max_age`` seconds, it is emptied and the viewer waits for
the next keyframe (and asks for one) -- a brief freeze for that viewer, never
growing latency.  A video track starts at a keyframe.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack


class PacketTrack(MediaStreamTrack):
    def __init__(
        self, kind: str, capacity: int, request_keyframe: Callable[[], None] | None = None, max_age: float = 0.5
    ) -> None:
        super().__init__()
        self.kind = kind
        self._queue: deque[tuple[av.Packet[Any], float]] = deque()
        self._ready = asyncio.Event()
        self._capacity = capacity
        self._max_age = max_age
        self._request_keyframe = request_keyframe
        self._awaiting_keyframe = kind == "video"
        self.packets_sent = 0
        self.packets_dropped = 0

    def offer(self, packet: av.Packet[Any]) -> None:
        """Queue ``packet`` for this viewer (called on the event loop; never blocks)."""
        if self.readyState != "live":
            return
        now = time.monotonic()
        if len(self._queue) >= self._capacity or (self._queue and now - self._queue[0][1] > self._max_age):
            self._resync()
        if self._awaiting_keyframe:
            if not packet.is_keyframe:
                self.packets_dropped += 1
                return
            self._awaiting_keyframe = False
        self._queue.append((packet, now))
        self._ready.set()

    def _resync(self) -> None:
        """Drop what is queued; video then restarts at a keyframe (requested now)."""
        self.packets_dropped += len(self._queue)
        self._queue.clear()
        if self.kind == "video":
            self._awaiting_keyframe = True
            if self._request_keyframe is not None:
                self._request_keyframe()

    async def recv(self) -> av.Packet[Any]:
        while not self._queue:
            if self.readyState != "live":
                raise MediaStreamError
            self._ready.clear()
            await self._ready.wait()
        self.packets_sent += 1
        return self._queue.popleft()[0]

    def stop(self) -> None:
        super().stop()
        self._queue.clear()
        self._ready.set()  # wake a sender blocked in recv() so its task ends with the track

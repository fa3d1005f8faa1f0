"""WHIP publisher and WHEP viewer clients (aiortc), for users (``livesafe publish``/``watch``), the demo,
tests and benchmarks.  They speak to the relay only over HTTP and WebRTC, as any client would."""

from __future__ import annotations

from livesafe.clients.publish import PublishResult, publish
from livesafe.clients.signalling import ClientError, user_agent
from livesafe.clients.sources import FileSource, webrtc_h264_copy
from livesafe.clients.watch import Recorder, WatchResult, watch

__all__ = [
    "ClientError",
    "FileSource",
    "PublishResult",
    "Recorder",
    "WatchResult",
    "publish",
    "user_agent",
    "watch",
    "webrtc_h264_copy",
]

"""The WHEP viewer: records exactly what a viewer receives.

Losslessly, with the stream's own timestamps, so a dropped frame is a gap in
time rather than a shift, and the recording can be compared frame by frame
with the source.
"""

from __future__ import annotations

import asyncio
import fractions
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from livesafe.clients.signalling import connected, hang_up, negotiate, peer_connection, user_agent
from livesafe.relay.ice import IceSettings


class Recorder:
    """Lossless Matroska of what arrives: H.264 at qp 0 (bit-exact yuv420p), PCM audio.

    Timestamps are the stream's own, relative to the first video frame, in
    milliseconds.  The file keeps the first frame's size; later frames of
    another size are scaled to it (the sizes seen are reported).
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._out = av.open(str(path), "w", format="matroska")
        self._video: av.VideoStream | None = None
        self._audio: av.AudioStream | None = None
        self._last_video_ms = -1
        self._last_audio_ms = -1
        self._resampler = av.AudioResampler(format="s16", layout="stereo", rate=48000)
        self._lock = threading.Lock()

    def video(self, frame: av.VideoFrame, ms: int) -> None:
        with self._lock:
            if ms <= self._last_video_ms:
                return
            if self._video is None:
                self._video = self._out.add_stream("libx264", rate=30)
                self._video.width, self._video.height = frame.width, frame.height
                self._video.pix_fmt = "yuv420p"
                self._video.codec_context.time_base = fractions.Fraction(1, 1000)
                self._video.time_base = fractions.Fraction(1, 1000)
                self._video.codec_context.options = {"preset": "ultrafast", "qp": "0"}
                # Every stream must exist before the first packet is written.
                self._audio = self._out.add_stream("pcm_s16le", rate=48000, layout="stereo")
                self._audio.time_base = fractions.Fraction(1, 1000)
            out = frame.reformat(width=self._video.width, height=self._video.height, format="yuv420p")
            out.pts, out.time_base = ms, fractions.Fraction(1, 1000)
            out.pict_type = av.video.frame.PictureType.NONE
            self._out.mux(self._video.encode(out))
            self._last_video_ms = ms

    def audio(self, frame: av.AudioFrame, ms: int) -> None:
        with self._lock:
            if ms <= self._last_audio_ms or self._audio is None:
                return
            for chunk in self._resampler.resample(frame):
                chunk.pts, chunk.time_base = ms, fractions.Fraction(1, 1000)
                self._out.mux(self._audio.encode(chunk))
                ms += round(chunk.samples / 48)
            self._last_audio_ms = ms

    def close(self) -> None:
        with self._lock:
            for stream in (self._video, self._audio):
                if stream is not None:
                    self._out.mux(stream.encode())
            self._out.close()


@dataclass
class WatchResult:
    frames: int = 0
    audio_frames: int = 0
    first_frame_after: float | None = None  # seconds from request to first decoded frame
    sizes: list[tuple[int, int]] = field(default_factory=list)
    gaps: int = 0  # places where time jumped by more than 1.5 frame intervals
    ended_by_server: bool = False
    seconds: float = 0.0


async def watch(
    url: str,
    *,
    token: str | None = None,
    record: Path | None = None,
    duration: float | None = None,
    ice: IceSettings | None = None,
    connect_timeout: float = 15.0,
    on_frame: Callable[[av.VideoFrame, float], None] | None = None,
) -> WatchResult:
    """Watch over WHEP until the stream ends (or ``duration`` seconds); optionally record it."""
    pc = peer_connection(ice)
    pc.addTransceiver("video", direction="recvonly")
    pc.addTransceiver("audio", direction="recvonly")
    result = WatchResult()
    recorder = Recorder(record) if record is not None else None
    tracks: list[MediaStreamTrack] = []
    pc.on("track", tracks.append)
    resource = None
    started = time.monotonic()
    clock: dict[str, float] = {}  # first video pts (s) and its arrival (monotonic)

    async def consume_video(track: MediaStreamTrack) -> None:
        last: float | None = None
        while True:
            frame = await track.recv()
            assert isinstance(frame, av.VideoFrame)  # a received video track yields decoded frames
            now = time.monotonic()
            t = _seconds(frame)
            if not clock:
                clock.update(pts=t, arrival=now)
                result.first_frame_after = now - started
            if last is not None and t - last > 1.5 / 30:
                result.gaps += 1
            last = t
            result.frames += 1
            size = (frame.width, frame.height)
            if not result.sizes or result.sizes[-1] != size:
                result.sizes.append(size)
            if on_frame is not None:
                on_frame(frame, t - clock["pts"])
            if recorder is not None:
                await asyncio.to_thread(recorder.video, frame, round((t - clock["pts"]) * 1000))

    async def consume_audio(track: MediaStreamTrack) -> None:
        first: tuple[float, float] | None = None
        while True:
            frame = await track.recv()
            assert isinstance(frame, av.AudioFrame)  # a received audio track yields decoded frames
            result.audio_frames += 1
            if recorder is None or not clock:
                continue
            t = _seconds(frame)
            if first is None:  # separate RTP clocks: place audio by arrival against video
                first = (t, time.monotonic() - clock["arrival"])
            recorder.audio(frame, round((t - first[0] + first[1]) * 1000))

    try:
        resource = await negotiate(pc, url, token, user_agent(recording=recorder is not None))
        await connected(pc, connect_timeout)
        consumers = [asyncio.ensure_future(consume_video(t) if t.kind == "video" else consume_audio(t)) for t in tracks]
        video_consumers = [c for c, t in zip(consumers, tracks, strict=True) if t.kind == "video"]
        done, _ = await asyncio.wait(video_consumers or consumers, timeout=duration)
        for task in done:
            error = task.exception()
            if isinstance(error, MediaStreamError):
                result.ended_by_server = True
            elif error is not None:
                raise error
        for task in consumers:
            task.cancel()
        await asyncio.gather(*consumers, return_exceptions=True)
    finally:
        result.seconds = time.monotonic() - started
        await hang_up(resource, token)
        await pc.close()
        if recorder is not None:
            recorder.close()
    return result


def _seconds(frame: av.VideoFrame | av.AudioFrame) -> float:
    """A received frame's media time: aiortc stamps each with a pts and its RTP clock's time base."""
    assert frame.pts is not None and frame.time_base is not None
    return float(frame.pts * frame.time_base)

"""What a publisher sends: a video file's frames and audio at real-time pace, as two aiortc tracks."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TypeAlias

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av.bitstream import BitStreamFilterContext

from livesafe.clients.signalling import ClientError
from livesafe.relay.encoder import AUDIO_CLOCK, VIDEO_CLOCK

log = logging.getLogger(__name__)

# What the reader thread hands the tracks: decoded frames, or (passing through) Annex B video packets.
Media: TypeAlias = "av.VideoFrame | av.AudioFrame | av.Packet[av.VideoStream]"


class FileSource:
    """A file's video and audio at real-time pace, as two tracks.

    A reader thread decodes ahead into short queues (it blocks when they are
    full); the tracks release each frame at its media time.  On ``loop`` the
    file restarts and timestamps continue from where the last pass ended.

    ``passthrough``: hand the file's H.264 packets to aiortc as they are
    instead of decoding and re-encoding them (aiortc's sender packetizes
    ``av.Packet``s), which saves the publisher a whole encoder.  WebRTC needs
    H.264 without B-frames for that; see :func:`webrtc_h264_copy`.
    """

    def __init__(self, path: Path, *, loop: bool = False, passthrough: bool = False, queue_frames: int = 15) -> None:
        try:
            self._container = av.open(str(path))
        except (av.FFmpegError, OSError) as exc:
            raise ClientError(f"{path}: cannot open: {exc}") from None
        if not self._container.streams.video:
            raise ClientError(f"{path}: no video stream")
        video = self._container.streams.video[0].codec_context
        if passthrough and (video.name != "h264" or video.has_b_frames):
            self._container.close()
            raise ClientError(
                f"{path}: passthrough needs H.264 without B-frames (this is {video.name}, profile {video.profile})"
            )
        self._passthrough = passthrough
        self.path = path
        self._loop_file = loop
        self._has_audio = bool(self._container.streams.audio)
        self._event_loop = asyncio.get_running_loop()
        self._queues: dict[str, asyncio.Queue[Media | None]] = {
            "video": asyncio.Queue(queue_frames),
            "audio": asyncio.Queue(queue_frames * 3),
        }
        self._stop = threading.Event()
        self._start: float | None = None
        self.video = _SourceTrack("video", self)
        self.audio = _SourceTrack("audio", self) if self._has_audio else None
        self.frames_sent = 0
        self.exhausted = False  # the file ended (rather than the connection)
        self._thread = threading.Thread(target=self._read, name=f"source-{path.name}", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        streams = [self._container.streams.video[0]] + ([self._container.streams.audio[0]] if self._has_audio else [])
        resampler = av.AudioResampler(format="s16", layout="stereo", rate=48000, frame_size=960)
        video_offset = audio_samples = 0
        last_video = 0
        first_pts: int | None = None
        try:
            while not self._stop.is_set():
                for item in self._items(streams):
                    if self._stop.is_set():
                        return
                    if isinstance(item, (av.VideoFrame, av.Packet)):
                        if item.pts is None:
                            continue
                        assert item.time_base is not None  # a decoded frame (or packet) with a pts has one
                        ticks = int(item.pts * item.time_base / VIDEO_CLOCK)
                        first_pts = ticks if first_pts is None else first_pts
                        item.pts = last_video = video_offset + ticks - first_pts
                        item.time_base = VIDEO_CLOCK
                        self._put("video", item)
                    else:
                        for chunk in resampler.resample(item):
                            chunk.pts, chunk.time_base = audio_samples, AUDIO_CLOCK
                            audio_samples += chunk.samples
                            self._put("audio", chunk)
                if not self._loop_file:
                    break
                self._container.seek(0)
                video_offset = last_video + 3000  # one 30 fps frame after the last
                first_pts = None
        except av.FFmpegError as exc:
            log.warning("%s: stopped reading: %s", self.path, exc)
        finally:
            self._put("video", None)
            self._put("audio", None)

    def _items(self, streams: Sequence[av.VideoStream | av.AudioStream]) -> Iterator[Media]:
        """Decoded frames; or, passing through, Annex B video packets and decoded audio frames."""
        if not self._passthrough:
            for frame in self._container.decode(*streams):
                assert isinstance(frame, (av.VideoFrame, av.AudioFrame))  # only video and audio are decoded
                yield frame
            return
        annexb = BitStreamFilterContext("h264_mp4toannexb", streams[0])
        for packet in self._container.demux(*streams):
            if packet.stream.type == "video":
                time_base = packet.time_base
                for out in annexb.filter(packet if packet.size else None):
                    out.time_base = time_base
                    yield out
            elif packet.size:
                for audio in packet.decode():
                    assert isinstance(audio, av.AudioFrame)  # the one other stream is audio
                    yield audio

    def _put(self, kind: str, item: Media | None) -> None:
        if (kind == "audio" and not self._has_audio) or self._stop.is_set():
            return
        future = asyncio.run_coroutine_threadsafe(self._queues[kind].put(item), self._event_loop)
        while not self._stop.is_set():
            try:
                future.result(timeout=0.2)
                return
            except TimeoutError:
                continue
        future.cancel()

    async def next(self, kind: str) -> Media:
        frame = await self._queues[kind].get()
        if frame is None:
            raise MediaStreamError
        now = time.monotonic()
        if self._start is None:
            self._start = now - _media_time(frame)
        wait = self._start + _media_time(frame) - now
        if wait > 0:
            await asyncio.sleep(wait)
        if kind == "video":
            self.frames_sent += 1
        return frame

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._container.close()


def _media_time(item: Media) -> float:
    """Seconds at a queued item: the reader thread stamps each with a pts and a time base."""
    assert item.pts is not None and item.time_base is not None
    return float(item.pts * item.time_base)


class _SourceTrack(MediaStreamTrack):
    def __init__(self, kind: str, source: FileSource) -> None:
        super().__init__()
        self.kind = kind
        self._source = source

    async def recv(self) -> Media:
        if self.readyState != "live":
            raise MediaStreamError
        try:
            return await self._source.next(self.kind)
        except MediaStreamError:
            self._source.exhausted = True
            self.stop()
            raise


def webrtc_h264_copy(source: Path, target: Path) -> Path:
    """``source`` re-encoded once as WebRTC-ready H.264 (Constrained Baseline, no B-frames,
    a keyframe every second), audio copied: a file ``FileSource(passthrough=True)`` can send."""
    try:
        with av.open(str(source)) as inp, av.open(str(target), "w") as out:
            if not inp.streams.video:
                raise ClientError(f"{source}: no video stream")
            vin = inp.streams.video[0]
            vout = out.add_stream("libx264", rate=vin.average_rate or 30)
            vout.width, vout.height, vout.pix_fmt = vin.codec_context.width, vin.codec_context.height, "yuv420p"
            vout.codec_context.options = {
                "profile": "baseline",
                "preset": "veryfast",
                "tune": "zerolatency",
                "g": "30",
                "crf": "20",
            }
            ain = inp.streams.audio[0] if inp.streams.audio else None
            aout = out.add_stream_from_template(ain) if ain is not None else None
            for packet in inp.demux(*([vin] + ([ain] if ain is not None else []))):
                if packet.stream is vin:
                    for frame in packet.decode():
                        assert isinstance(frame, av.VideoFrame)  # vin's packets decode to video
                        frame.pict_type = av.video.frame.PictureType.NONE
                        out.mux(vout.encode(frame))
                elif packet.size and packet.dts is not None:
                    assert aout is not None  # a packet not of vin is of ain, so aout exists
                    packet.stream = aout
                    out.mux(packet)
            out.mux(vout.encode())
    except (av.FFmpegError, OSError) as exc:
        raise ClientError(f"{source}: cannot prepare for passthrough: {exc}") from None
    return target

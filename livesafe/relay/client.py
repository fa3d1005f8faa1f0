"""WHIP publisher and WHEP viewer clients (aiortc), for users, the demo, tests and benchmarks.

``publish`` streams a video file at real-time pace (optionally looping, with
time running on across loops).  ``watch`` records exactly what a viewer
receives -- losslessly, with the stream's own timestamps, so a dropped frame
is a gap in time rather than a shift -- and can be compared frame by frame
with the source.
"""

from __future__ import annotations

import asyncio
import fractions
import importlib.metadata
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Callable, Iterator
from urllib.parse import urljoin

import aiohttp
import av
from av.bitstream import BitStreamFilterContext
from aiortc import RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from livesafe.relay.encoder import AUDIO_CLOCK, VIDEO_CLOCK
from livesafe.relay.compat import accept_rsa_peers
from livesafe.relay.ice import IceSettings, apply_ice_settings

log = logging.getLogger(__name__)


class ClientError(Exception):
    """The server refused or the media could not flow (message says which)."""


# ------------------------------------------------------------------ sources


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
            raise ClientError(f"{path}: passthrough needs H.264 without B-frames (this is {video.name}, profile {video.profile})")
        self._passthrough = passthrough
        self.path = path
        self._loop_file = loop
        self._has_audio = bool(self._container.streams.audio)
        self._event_loop = asyncio.get_running_loop()
        self._queues: dict[str, asyncio.Queue] = {"video": asyncio.Queue(queue_frames), "audio": asyncio.Queue(queue_frames * 3)}
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

    def _items(self, streams: list[av.stream.Stream]) -> Iterator[av.VideoFrame | av.AudioFrame | av.Packet]:
        """Decoded frames; or, passing through, Annex B video packets and decoded audio frames."""
        if not self._passthrough:
            yield from self._container.decode(*streams)
            return
        annexb = BitStreamFilterContext("h264_mp4toannexb", streams[0])
        for packet in self._container.demux(*streams):
            if packet.stream.type == "video":
                time_base = packet.time_base
                for out in annexb.filter(packet if packet.size else None):
                    out.time_base = time_base
                    yield out
            elif packet.size:
                yield from packet.decode()

    def _put(self, kind: str, item: av.Frame | av.Packet | None) -> None:
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

    async def next(self, kind: str) -> av.Frame | av.Packet:
        frame = await self._queues[kind].get()
        if frame is None:
            raise MediaStreamError
        now = time.monotonic()
        if self._start is None:
            self._start = now - float(frame.pts * frame.time_base)
        wait = self._start + float(frame.pts * frame.time_base) - now
        if wait > 0:
            await asyncio.sleep(wait)
        if kind == "video":
            self.frames_sent += 1
        return frame

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._container.close()


class _SourceTrack(MediaStreamTrack):
    def __init__(self, kind: str, source: FileSource) -> None:
        super().__init__()
        self.kind = kind
        self._source = source

    async def recv(self) -> av.Frame | av.Packet:
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
            vout.codec_context.options = {"profile": "baseline", "preset": "veryfast", "tune": "zerolatency", "g": "30", "crf": "20"}
            ain = inp.streams.audio[0] if inp.streams.audio else None
            aout = out.add_stream_from_template(ain) if ain is not None else None
            for packet in inp.demux(*([vin] + ([ain] if ain is not None else []))):
                if packet.stream is vin:
                    for frame in packet.decode():
                        frame.pict_type = av.video.frame.PictureType.NONE
                        out.mux(vout.encode(frame))
                elif packet.size and packet.dts is not None:
                    packet.stream = aout
                    out.mux(packet)
            out.mux(vout.encode())
    except (av.FFmpegError, OSError) as exc:
        raise ClientError(f"{source}: cannot prepare for passthrough: {exc}") from None
    return target


# ----------------------------------------------------------------- signalling


def _peer_connection(ice: IceSettings | None) -> RTCPeerConnection:
    ice = ice or IceSettings()
    apply_ice_settings(ice)  # host addresses and ports are process-wide in aioice
    accept_rsa_peers()
    return RTCPeerConnection(ice.rtc_configuration())


try:
    CLIENT_VERSION = importlib.metadata.version("livesafe")
except importlib.metadata.PackageNotFoundError:  # running from a source tree
    CLIENT_VERSION = "dev"


# A WHIP/WHEP exchange is one request; a relay that does not answer in this time is not coming back.
_SIGNALLING_TIMEOUT = aiohttp.ClientTimeout(total=30)


def user_agent(recording: bool = False) -> str:
    """Who we are to the relay; a recording viewer says so (policy profiles may refuse recorders)."""
    return f"livesafe-watch/{CLIENT_VERSION} (recording)" if recording else f"livesafe/{CLIENT_VERSION}"


async def _negotiate(pc: RTCPeerConnection, url: str, token: str | None, agent: str = user_agent()) -> str:
    """POST our offer (every candidate in it), apply the answer; returns the session URL."""
    await pc.setLocalDescription(await pc.createOffer())
    headers = {"Content-Type": "application/sdp", "User-Agent": agent}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        async with aiohttp.ClientSession(timeout=_SIGNALLING_TIMEOUT) as http:
            async with http.post(url, data=pc.localDescription.sdp, headers=headers) as response:
                body = await response.text()
                if response.status != 201:
                    raise ClientError(f"{url}: {response.status} {response.reason}: {body.strip()}")
                location = response.headers.get("Location")
    except aiohttp.ClientError as exc:
        raise ClientError(f"{url}: {exc}") from None
    except asyncio.TimeoutError:
        raise ClientError(f"{url}: no answer within {_SIGNALLING_TIMEOUT.total:g} s") from None
    if not location:
        raise ClientError(f"{url}: 201 without a Location header")
    await pc.setRemoteDescription(RTCSessionDescription(sdp=body, type="answer"))
    return urljoin(url, location)


async def _hang_up(resource: str | None, token: str | None) -> None:
    if resource is None:
        return
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        async with aiohttp.ClientSession(timeout=_SIGNALLING_TIMEOUT) as http:
            async with http.delete(resource, headers=headers) as response:
                await response.read()
    except (aiohttp.ClientError, asyncio.TimeoutError):
        pass  # the server is gone or already closed the session: nothing left to hang up


async def _connected(pc: RTCPeerConnection, timeout: float) -> None:
    if pc.connectionState == "connected":
        return
    done = asyncio.get_running_loop().create_future()

    @pc.on("connectionstatechange")
    def _changed() -> None:
        if pc.connectionState in ("connected", "failed", "closed") and not done.done():
            done.set_result(pc.connectionState)

    try:
        state = await asyncio.wait_for(done, timeout)
    except TimeoutError:
        raise ClientError(f"no WebRTC connection within {timeout:g} s (ICE could not reach the server)") from None
    if state != "connected":
        raise ClientError(f"WebRTC connection {state}")


def _prefer_codec(pc: RTCPeerConnection, codec: str | None) -> None:
    if codec is None:
        return
    wanted = f"video/{codec.upper()}" if codec.lower() == "vp8" else "video/H264"
    capabilities = [c for c in RTCRtpSender.getCapabilities("video").codecs if c.mimeType in (wanted, "video/rtx")]
    for transceiver in pc.getTransceivers():
        if transceiver.kind == "video":
            transceiver.setCodecPreferences(capabilities)


# ------------------------------------------------------------------ publish


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
    pc = _peer_connection(ice)
    resource = None
    started = time.monotonic()
    try:
        pc.addTransceiver(source.video, direction="sendonly")
        if source.audio is not None:
            pc.addTransceiver(source.audio, direction="sendonly")
        _prefer_codec(pc, "h264" if passthrough else codec)
        resource = await _negotiate(pc, url, token)
        await _connected(pc, connect_timeout)
        ended = asyncio.get_running_loop().create_future()
        source.video.on("ended", lambda: ended.done() or ended.set_result(None))

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
        await _hang_up(resource, token)
        await pc.close()
        source.stop()


# -------------------------------------------------------------------- watch


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
    pc = _peer_connection(ice)
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
            now = time.monotonic()
            t = float(frame.pts * frame.time_base)
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
            result.audio_frames += 1
            if recorder is None or not clock:
                continue
            t = float(frame.pts * frame.time_base)
            if first is None:  # separate RTP clocks: place audio by arrival against video
                first = (t, time.monotonic() - clock["arrival"])
            recorder.audio(frame, round((t - first[0] + first[1]) * 1000))

    try:
        resource = await _negotiate(pc, url, token, user_agent(recording=recorder is not None))
        await _connected(pc, connect_timeout)
        consumers = [
            asyncio.ensure_future(consume_video(t) if t.kind == "video" else consume_audio(t)) for t in tracks
        ]
        video_consumers = [c for c, t in zip(consumers, tracks) if t.kind == "video"]
        done, _ = await asyncio.wait(video_consumers or consumers, timeout=duration)
        for task in done:
            if isinstance(task.exception(), MediaStreamError):
                result.ended_by_server = True
            elif task.exception() is not None:
                raise task.exception()
        for task in consumers:
            task.cancel()
        await asyncio.gather(*consumers, return_exceptions=True)
    finally:
        result.seconds = time.monotonic() - started
        await _hang_up(resource, token)
        await pc.close()
        if recorder is not None:
            recorder.close()
    return result

"""Encode once per stream: guarded frames -> packets that every viewer's sender forwards.

aiortc's ``RTCRtpSender`` accepts already-encoded ``av.Packet``s and only
packetizes them, so one encoder per stream and codec feeds any number of
viewers (a plain aiortc relay runs one encoder per viewer).  Settings follow
WebRTC practice: no B-frames, no lookahead, a keyframe only when someone needs
one (a viewer joins or reports loss) plus a long safety interval.
"""

from __future__ import annotations

import fractions
import logging
import threading
import time
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import av

from livesafe.policy import Action

log = logging.getLogger(__name__)

VIDEO_CLOCK = fractions.Fraction(1, 90000)  # RTP video clock
AUDIO_CLOCK = fractions.Fraction(1, 48000)
CODECS = ("vp8", "h264")  # the names aiortc negotiates (video/VP8, video/H264)


class Timeline:
    """One monotonic output clock across publisher reconnects and stalls.

    Output time is input time plus an offset, so gaps (dropped frames) stay
    gaps and a recording lines up with its source.  The offset changes only
    at a discontinuity -- the input clock jumping back or ahead by more than
    ``max_step`` (a new publisher session starts a new RTP clock) -- so that
    output continues one nominal frame after the last.  Slate frames sent
    while the input is stuck advance the clock by wall time (:meth:`skip`);
    frames that arrive late after such a stall are squeezed in just after the
    slate, the ones after them land on their own time again.
    """

    def __init__(self, clock: fractions.Fraction, nominal_step: int, max_step: int) -> None:
        self.clock = clock
        self._nominal = nominal_step
        self._max = max_step
        self._last_in: int | None = None
        self._offset = 0
        self._last_out = 0
        self._lock = threading.Lock()

    def next(self, pts: int | None, time_base: fractions.Fraction | None) -> int:
        with self._lock:
            if pts is None or time_base is None:
                ticks = (self._last_in if self._last_in is not None else 0) + self._nominal
            else:
                ticks = int(pts * time_base / self.clock)
            if self._last_in is None or not 0 < ticks - self._last_in <= self._max:
                self._offset = self._last_out + self._nominal - ticks
            self._last_in = ticks
            self._last_out = max(ticks + self._offset, self._last_out + max(1, self._nominal // 4))
            return self._last_out

    def skip(self, seconds: float) -> int:
        """Advance by wall time where no input drives the clock (the slate during a stall)."""
        with self._lock:
            self._last_out += max(1, int(seconds / self.clock))
            return self._last_out


class VideoEncoder:
    """One codec's encoder for one stream; recreated when the picture size changes."""

    def __init__(self, codec: str, bitrate: int) -> None:
        if codec not in CODECS:
            raise ValueError(f"unsupported video codec {codec!r} (supported: {', '.join(CODECS)})")
        self.codec = codec
        self.bitrate = bitrate
        self._context: av.VideoCodecContext | None = None
        self.frames = 0
        self.keyframes = 0

    def encode(self, frame: av.VideoFrame, pts: int, keyframe: bool) -> list[av.Packet[Any]]:
        """``frame`` at output time ``pts`` (90 kHz); a forced keyframe if asked or if the size changed."""
        context = self._context
        if context is None or (context.width, context.height) != (frame.width, frame.height):
            context = self._context = self._open(frame.width, frame.height)
            keyframe = True
        if frame.format.name != "yuv420p" or frame.width % 2 or frame.height % 2:
            frame = frame.reformat(width=context.width, height=context.height, format="yuv420p")
        frame.pts = pts
        frame.time_base = VIDEO_CLOCK
        frame.pict_type = av.video.frame.PictureType.I if keyframe else av.video.frame.PictureType.NONE
        packets = context.encode(frame)
        for packet in packets:
            packet.time_base = VIDEO_CLOCK
            self.keyframes += packet.is_keyframe
        self.frames += 1
        return packets

    def _open(self, width: int, height: int) -> av.VideoCodecContext:
        # yuv420p needs even sizes; an odd-sized source is scaled by one pixel.
        width, height = width + width % 2, height + height % 2
        if self.codec == "h264":
            context = av.CodecContext.create("libx264", "w")
            context.profile = "Baseline"  # what every WebRTC peer decodes (profile-level-id 42e01f)
            context.options = {
                "preset": "ultrafast",
                "tune": "zerolatency",
                "level": "31" if width * height <= 1280 * 720 else "41",
            }
        else:
            context = av.CodecContext.create("libvpx", "w")
            context.options = {
                "deadline": "realtime",
                "cpu-used": "-6",
                "lag-in-frames": "0",
                "static-thresh": "1",
                "undershoot-pct": "100",
                "overshoot-pct": "15",
            }
        context.width, context.height = width, height
        context.pix_fmt = "yuv420p"
        context.bit_rate = self.bitrate
        context.time_base = VIDEO_CLOCK
        context.framerate = fractions.Fraction(30, 1)
        context.gop_size = 3000  # keyframes on request; this is only the safety net (100 s)
        context.thread_count = 1  # one thread per stream: streams, not slices, use the cores
        log.debug("%s encoder opened at %dx%d, %d bps", self.codec, width, height, self.bitrate)
        return context


@dataclass(frozen=True, slots=True)
class Encoded:
    """One picture encoded for every codec in use, on its way to the viewers."""

    arrived: float  # monotonic time the frame reached the relay (a slate: when it was made)
    action: Action  # what the guard did to it
    packets: dict[str, list[av.Packet[Any]]]  # codec -> packets
    slate: bool = False  # the failsafe's slate rather than a guarded frame


class Encoders:
    """The video encoders of one producer (the guard worker, or the slate): one per codec in use.

    A producer's encoders are its own: libav contexts are not thread-safe, and
    the slate must be encodable while the worker is stuck, maybe inside its
    encoder.  One producer calls :meth:`encode` at a time.
    """

    def __init__(self, bitrate: int) -> None:
        self._bitrate = bitrate
        self._by_codec: dict[str, VideoEncoder] = {}

    @property
    def codecs(self) -> frozenset[str]:
        """Codecs with an encoder open now."""
        return frozenset(self._by_codec)

    def encode(
        self, frame: av.VideoFrame, pts: int, codecs: Collection[str], keyframes: Collection[str]
    ) -> dict[str, list[av.Packet[Any]]]:
        """``frame`` at ``pts`` for each of ``codecs`` (a keyframe for those in ``keyframes``).

        Encoders of codecs no longer in use are closed; new ones open.
        """
        for codec in self._by_codec.keys() - set(codecs):
            del self._by_codec[codec]  # nobody watches in this codec any more
        packets = {}
        for codec in sorted(codecs):
            encoder = self._by_codec.get(codec)
            if encoder is None:
                encoder = self._by_codec[codec] = VideoEncoder(codec, self._bitrate)
            packets[codec] = encoder.encode(frame, pts, codec in keyframes)
        return packets


class KeyframeRequests:
    """Keyframes viewers asked for, at most one per codec every ``interval`` seconds (PLI storms).

    Asked for on the loop, taken on the worker thread.
    """

    def __init__(self, interval: float) -> None:
        self._interval = interval
        self._lock = threading.Lock()
        self._wanted: set[str] = set()
        self._last: dict[str, float] = {}

    def request(self, codec: str) -> None:
        with self._lock:
            self._wanted.add(codec)

    def due(self) -> set[str]:
        """The codecs whose next frame is to be a keyframe (taken: the next call returns them no more)."""
        with self._lock:
            now = time.monotonic()
            due = {c for c in self._wanted if now - self._last.get(c, 0.0) >= self._interval}
            self._wanted -= due
            for codec in due:
                self._last[codec] = now
            return due

    def resync(self, codecs: Collection[str]) -> None:
        """A keyframe in each of ``codecs`` as soon as possible, whatever was sent lately."""
        with self._lock:
            self._wanted |= set(codecs)
            self._last.clear()


class AudioEncoder:
    """Opus, once per stream; the muted variant encodes silence in the same frames."""

    def __init__(self, bitrate: int = 64000) -> None:
        self._context = av.CodecContext.create("libopus", "w")
        self._context.bit_rate = bitrate
        self._context.sample_rate = 48000
        self._context.layout = "stereo"
        self._context.format = "s16"
        self._context.time_base = AUDIO_CLOCK
        self._resampler = av.AudioResampler(format="s16", layout="stereo", rate=48000, frame_size=960)

    def encode(self, frame: av.AudioFrame, pts: int, mute: bool) -> list[av.Packet[Any]]:
        frame.pts = None  # the resampler keeps its own sample count; we stamp the packets
        packets: list[av.Packet[Any]] = []
        for chunk in self._resampler.resample(frame):
            if mute:
                for plane in chunk.planes:
                    plane.update(bytes(plane.buffer_size))
            packets.extend(self._context.encode(chunk))
        for i, packet in enumerate(packets):
            packet.pts = pts + i * 960
            packet.time_base = AUDIO_CLOCK
        return packets

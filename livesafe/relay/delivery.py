"""The viewers of one stream and getting packets to them, on the event loop.

Video goes to each viewer's track for the codec it negotiated; a viewer's own
queue (:class:`~livesafe.relay.fanout.PacketTrack`) keeps one slow viewer from
holding up the others.  After the slate, guarded video resumes mid-GOP, so
each codec is *gated*: nothing reaches its viewers until a keyframe does.

Audio waits here beside the video and is released with the video frame that
arrived at the same moment (muted if that frame was slated), encoded once for
every viewer.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import av

from livesafe.relay.encoder import AUDIO_CLOCK, AudioEncoder, Encoded, KeyframeRequests, Timeline
from livesafe.relay.fanout import PacketTrack

if TYPE_CHECKING:
    from livesafe.relay.stream import StreamCounters, StreamSettings

log = logging.getLogger(__name__)

AUDIO_WAITING = 150  # 3 s of 20 ms frames: beyond this, video has stopped flowing and the oldest goes


@dataclass
class Viewer:
    id: str
    codec: str | None  # negotiated video codec, None if the viewer takes no video
    video: PacketTrack | None
    audio: PacketTrack | None
    close: Callable[[], Any]  # closes the viewer's peer connection (a coroutine function)
    joined: float = field(default_factory=time.monotonic)


class Delivery:
    """On the loop: who watches, and handing them what the failsafe lets through."""

    def __init__(
        self, stream_id: str, settings: StreamSettings, counters: StreamCounters, keyframes: KeyframeRequests
    ) -> None:
        self._id = stream_id
        self._settings = settings
        self._counters = counters
        self._keyframes = keyframes
        self.viewers: dict[str, Viewer] = {}
        # Codecs viewers use now; replaced whole, so the worker and the slate read it without a lock.
        self.codecs: frozenset[str] = frozenset()
        self.latency: deque[float] = deque(maxlen=512)  # seconds from arrival to fan-out, recent frames
        self._gated: set[str] = set()  # codecs whose viewers wait for a keyframe after a slate
        self._audio: deque[tuple[av.AudioFrame, float]] = deque()
        self._audio_encoder: AudioEncoder | None = None
        self._audio_clock = Timeline(AUDIO_CLOCK, nominal_step=960, max_step=480_000)

    # --------------------------------------------------------------- viewers

    def add(self, viewer: Viewer) -> None:
        self.viewers[viewer.id] = viewer
        self._update_codecs()

    def remove(self, viewer_id: str) -> Viewer | None:
        """Forget the viewer and stop its tracks; returns it (its connection still to close), if there was one."""
        viewer = self.viewers.pop(viewer_id, None)
        if viewer is None:
            return None
        self._update_codecs()
        for track in (viewer.video, viewer.audio):
            if track is not None:
                track.stop()
        return viewer

    def _update_codecs(self) -> None:
        self.codecs = frozenset(v.codec for v in self.viewers.values() if v.codec is not None)

    # ----------------------------------------------------------------- video

    def guarded(self, frame: Encoded, now: float, *, mute: bool) -> None:
        """A guarded frame reached delivery: count it, time it, release the audio that came with it."""
        self._counters.frames_out += 1
        self.latency.append(now - frame.arrived)
        self.release_audio(frame.arrived, mute=mute)

    def gate(self) -> None:
        """From now on, each codec's viewers get nothing until that codec's next keyframe."""
        self._gated = set(self.codecs)

    def fan_out(self, frame: Encoded) -> None:
        for codec, packets in frame.packets.items():
            for packet in packets:
                if codec in self._gated:
                    if not packet.is_keyframe:
                        self._keyframes.request(codec)
                        continue
                    self._gated.discard(codec)
                for viewer in self.viewers.values():
                    if viewer.codec == codec and viewer.video is not None:
                        viewer.video.offer(packet)

    # ----------------------------------------------------------------- audio

    def hold_audio(self, frame: av.AudioFrame) -> None:
        """Keep ``frame`` until the video that arrived with it is released."""
        if len(self._audio) >= AUDIO_WAITING:
            self._audio.popleft()
            self._counters.audio_frames_dropped += 1
        self._audio.append((frame, time.monotonic()))

    @property
    def audio_since(self) -> float | None:
        """When the oldest waiting audio frame arrived (None: none waits)."""
        return self._audio[0][1] if self._audio else None

    def release_audio(self, until: float, *, mute: bool) -> None:
        """Encode and send the audio that arrived up to ``until`` (silence if ``mute``)."""
        while self._audio and self._audio[0][1] <= until:
            frame, _ = self._audio.popleft()
            if not any(v.audio is not None for v in self.viewers.values()):
                continue
            if self._audio_encoder is None:
                self._audio_encoder = AudioEncoder(self._settings.audio_bitrate)
            pts = self._audio_clock.next(frame.pts, frame.time_base)
            try:
                packets = self._audio_encoder.encode(frame, pts, mute)
            except (av.FFmpegError, ValueError) as exc:
                log.warning("stream %s: audio frame dropped: %s", self._id, exc)
                continue
            for packet in packets:
                for viewer in self.viewers.values():
                    if viewer.audio is not None:
                        viewer.audio.offer(packet)

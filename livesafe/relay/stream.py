"""One published stream: ingest -> StreamGuard -> encode once -> every viewer.

Threads and queues, and why:

- aiortc decodes each incoming track on its own thread.  Our pumps move
  decoded frames off aiortc's (unbounded) queue at once into a short
  ``ingest_frames`` deque; when the guard falls behind, the oldest waiting
  frame is dropped (counted), so latency cannot grow.  If aiortc's decoder
  itself falls behind, its backlog is discarded and a keyframe requested.
- One worker thread per stream runs the guard and the encoders (PyAV, NumPy
  and OpenCV release the GIL there, so streams use both cores and the event
  loop stays free).  Every frame a viewer can get has left the guard's delay
  buffer: there is no path from the publisher to a viewer around it.
- A watchdog fails closed: if the worker spends longer than
  ``stall_seconds`` on one frame, or dies, viewers get the slate and audio is
  muted until guarded frames flow again.  Slate frames take the same path as
  guarded ones (``Encoders``, then ``_deliver``) but with encoders of their
  own, in a thread of their own: the worker may be stuck inside its encoder.
- Audio waits beside the video and is released with the video frame that
  arrived at the same moment, muted if that frame was slated.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from livesafe.guard.events import GUARD_ERROR, GuardEvent
from livesafe.guard.redact import Action, slate_frame
from livesafe.guard.stream_guard import StreamGuard
from livesafe.relay import compat
from livesafe.relay.encoder import (
    AUDIO_CLOCK, VIDEO_CLOCK, AudioEncoder, Encoded, Encoders, KeyframeRequests, Timeline,
)  # fmt: skip
from livesafe.relay.fanout import PacketTrack

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StreamSettings:
    video_bitrate: int = 1_500_000
    audio_bitrate: int = 64_000
    ingest_frames: int = 4  # decoded frames waiting for the guard; beyond this the oldest is dropped
    decoder_backlog_frames: int = 15  # encoded frames waiting in aiortc's decoder before we shed them
    viewer_queue_packets: int = 30  # per viewer and track; overflow resyncs that viewer at a keyframe
    viewer_queue_seconds: float = 0.3  # a viewer's oldest packet older than this: resync it too
    stall_seconds: float = 0.5  # one frame in the guard/encoder longer than this -> slate (fail closed)
    # The delay buffer is counted in frames; when they thin out or stop, a frame waiting longer than
    # this triggers a deep check of the newest one and the buffer is released (StreamGuard.release).
    max_delay_seconds: float = 0.6
    ended_grace_seconds: float = 5.0  # slate after the publisher leaves, in case it comes back
    keyframe_interval: float = 0.5  # at most one forced keyframe per codec this often (PLI storms)
    slate_fps: float = 5.0

    def __post_init__(self) -> None:
        for name in ("video_bitrate", "audio_bitrate", "ingest_frames", "decoder_backlog_frames", "viewer_queue_packets"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        for name in ("stall_seconds", "keyframe_interval", "slate_fps", "viewer_queue_seconds", "max_delay_seconds"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0")
        if self.ended_grace_seconds < 0:
            raise ValueError("ended_grace_seconds must be >= 0")


class StreamState(str, enum.Enum):
    LIVE = "live"
    REDACTED = "redacted"
    ENDED = "ended"


class _Slate(enum.Enum):
    OFF = 0
    STALLED = 1  # worker over budget: back to guarded frames when it catches up
    FAILED = 2  # worker died: slate until the stream ends
    ENDED = 3  # publisher left: slate through the grace period


@dataclass
class Viewer:
    id: str
    codec: str | None  # negotiated video codec, None if the viewer takes no video
    video: PacketTrack | None
    audio: PacketTrack | None
    close: Callable[[], Any]  # closes the viewer's peer connection (a coroutine function)
    joined: float = field(default_factory=time.monotonic)


@dataclass(slots=True)
class StreamCounters:
    frames_in: int = 0
    frames_dropped: int = 0  # before the guard (overload); never shown to anyone
    frames_out: int = 0
    stalls: int = 0
    slate_frames: int = 0
    audio_frames_in: int = 0
    audio_frames_dropped: int = 0


_FLUSH = object()


class LiveStream:
    def __init__(
        self,
        stream_id: str,
        guard: StreamGuard,
        settings: StreamSettings,
        *,
        on_event: Callable[[GuardEvent], None],
        on_ended: Callable[["LiveStream"], None],
    ) -> None:
        self.id = stream_id
        self.guard = guard
        self.settings = settings
        self.counters = StreamCounters()
        self.viewers: dict[str, Viewer] = {}
        self.started = time.time()
        self.ended_at: float | None = None
        self.publisher: Any = None  # the current publisher session (relay.sessions)
        self.size: tuple[int, int] | None = None
        self.latest_frame: av.VideoFrame | None = None  # newest frame in, for the moderators' blurred preview only
        self._on_event = on_event
        self._on_ended = on_ended
        self._loop = asyncio.get_running_loop()
        self._pending: deque[Any] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._busy_since: float | None = None
        self._arrivals: deque[float] = deque()  # wall time each frame in the guard arrived (worker only)
        self._encoders = Encoders(settings.video_bitrate)
        self._codecs: frozenset[str] = frozenset()  # codecs viewers are using now
        self._keyframes = KeyframeRequests(settings.keyframe_interval)
        # A jump of up to 10 s is frames lost (e.g. dropped during a stall); beyond that, a new clock.
        self._video_clock = Timeline(VIDEO_CLOCK, nominal_step=3000, max_step=900_000)
        self._audio_clock = Timeline(AUDIO_CLOCK, nominal_step=960, max_step=480_000)
        self._audio: deque[tuple[av.AudioFrame, float]] = deque()
        self._audio_encoder: AudioEncoder | None = None
        self._slate = _Slate.OFF
        self._gated: set[str] = set()  # codecs whose viewers wait for a keyframe after a slate
        self._slate_encoders = Encoders(settings.video_bitrate)
        self._slate_busy = False
        self._last_slate = 0.0
        self._pumps: set[asyncio.Task] = set()
        self._end_timer: asyncio.TimerHandle | None = None
        self.latency: deque[float] = deque(maxlen=512)  # seconds from arrival to fan-out, recent frames
        # How far behind real time frames reach us: transit (arrival - media time) above the
        # fastest seen.  Grows when backlogs build in front of us (kernel buffers, decoder).
        self.lateness = 0.0
        self._transit_floor: float | None = None
        self._worker = threading.Thread(target=self._work, name=f"guard-{stream_id}", daemon=True)
        self._worker.start()
        self._watchdog = asyncio.create_task(self._watch())

    # ----------------------------------------------------------------- state

    @property
    def state(self) -> StreamState:
        if self.publisher is None:
            return StreamState.ENDED
        if self.guard.redacting or self._slate is not _Slate.OFF:
            return StreamState.REDACTED
        return StreamState.LIVE

    def summary(self) -> dict[str, Any]:
        stats = self.guard.stats
        return {
            "id": self.id,
            "state": self.state.value,
            "viewers": len(self.viewers),
            "frames_in": self.counters.frames_in,
            "frames_guarded": stats.frames_out,
            "frames_redacted": stats.frames_redacted,
            "frames_dropped": self.counters.frames_dropped,
            "frames_slated_by_failsafe": self.counters.slate_frames,
            "guard_errors": stats.errors,
            "stalls": self.counters.stalls,
            "lateness_seconds": round(self.lateness, 3),
            "redaction_kept": self.guard.kept,
            "width": self.size[0] if self.size else None,
            "height": self.size[1] if self.size else None,
            "started_at": self.started,
            "ended_at": self.ended_at,
        }

    # ------------------------------------------------------------ publisher

    def attach_publisher(self, session: Any, video: MediaStreamTrack | None, audio: MediaStreamTrack | None, receiver: Any) -> Any:
        """Make ``session`` the publisher; returns the session it replaced (to be closed), if any."""
        previous, self.publisher = self.publisher, session
        if self._end_timer is not None:
            self._end_timer.cancel()
            self._end_timer = None
        if self._slate is _Slate.ENDED:
            self._end_slate()
        self.ended_at = None
        if video is not None:
            self._spawn(self._pump_video(session, video, receiver))
        if audio is not None:
            self._spawn(self._pump_audio(session, audio))
        return previous

    def publisher_left(self, session: Any) -> None:
        """The publisher hung up (or was replaced by ``attach_publisher``, then this is a no-op)."""
        if session is not self.publisher:
            return
        self.publisher = None
        self.ended_at = time.time()
        self._submit(_FLUSH)  # the last frames leave the delay buffer, then the slate (see _deliver)
        self._end_timer = self._loop.call_later(self.settings.ended_grace_seconds, lambda: self._spawn(self.end()))

    async def end(self) -> None:
        """Close every viewer and stop the worker; the stream stays listed as ended."""
        if self._end_timer is not None:
            self._end_timer.cancel()
            self._end_timer = None
        for viewer in list(self.viewers.values()):
            await self.remove_viewer(viewer.id)
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._watchdog.cancel()
        current = asyncio.current_task()
        for task in list(self._pumps):
            if task is not current:
                task.cancel()
        await asyncio.to_thread(self._worker.join, 5)
        self._on_ended(self)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._pumps.add(task)
        task.add_done_callback(self._pumps.discard)

    async def _pump_video(self, session: Any, track: MediaStreamTrack, receiver: Any) -> None:
        try:
            awaiting_keyframe = False
            self._transit_floor = None  # a new publisher: a new media clock
            while session is self.publisher:
                frame = await track.recv()
                self.counters.frames_in += 1
                self._measure_lateness(frame)
                if self._shed_decoder_backlog(receiver):
                    awaiting_keyframe = True
                if awaiting_keyframe and not frame.key_frame:
                    # Decoded without its references: a broken picture, not worth showing.
                    self.counters.frames_dropped += 1
                    continue
                awaiting_keyframe = False
                self._submit(frame)
        except MediaStreamError:
            pass
        finally:
            self.publisher_left(session)

    async def _pump_audio(self, session: Any, track: MediaStreamTrack) -> None:
        try:
            while session is self.publisher:
                frame = await track.recv()
                self.counters.audio_frames_in += 1
                if len(self._audio) >= 150:  # 3 s of 20 ms frames: video has stopped flowing
                    self._audio.popleft()
                    self.counters.audio_frames_dropped += 1
                self._audio.append((frame, time.monotonic()))
        except MediaStreamError:
            pass

    def _submit(self, item: Any) -> None:
        with self._cond:
            if item is not _FLUSH and sum(x is not _FLUSH for x in self._pending) >= self.settings.ingest_frames:
                # Drop the oldest waiting frame: the freshest picture is what viewers should get.
                for i, waiting in enumerate(self._pending):
                    if waiting is not _FLUSH:
                        del self._pending[i]
                        self.counters.frames_dropped += 1
                        break
            self._pending.append(item if item is _FLUSH else (item, time.monotonic()))
            self._cond.notify()

    def _measure_lateness(self, frame: av.VideoFrame) -> None:
        if frame.pts is None or frame.time_base is None:
            return
        transit = time.monotonic() - float(frame.pts * frame.time_base)
        floor = self._transit_floor
        if floor is None or transit < floor or transit - floor > 10.0:  # > 10 s: the clock jumped
            self._transit_floor = floor = transit
        self.lateness = transit - floor

    def _shed_decoder_backlog(self, receiver: Any) -> bool:
        """aiortc decodes from an unbounded queue; under overload discard it and ask for a keyframe.

        Returns whether it shed anything (frames decoded next lack their references).
        """
        if receiver is None or compat.decoder_backlog(receiver) <= self.settings.decoder_backlog_frames:
            return False
        shed = compat.drain_decoder_queue(receiver)
        self.counters.frames_dropped += shed
        log.warning("stream %s: decoder %d frames behind; shed them and requested a keyframe", self.id, shed)
        self._spawn(compat.send_pli(receiver))
        return True

    # --------------------------------------------------------------- viewers

    def add_viewer(self, viewer: Viewer) -> None:
        self.viewers[viewer.id] = viewer
        self._update_codecs()
        if viewer.codec is not None:
            self.request_keyframe(viewer.codec)
            if self._slate is not _Slate.OFF:
                self._last_slate = 0.0  # send the newcomer a slate at once

    async def remove_viewer(self, viewer_id: str) -> None:
        viewer = self.viewers.pop(viewer_id, None)
        if viewer is None:
            return
        self._update_codecs()
        for track in (viewer.video, viewer.audio):
            if track is not None:
                track.stop()
        await viewer.close()

    def _update_codecs(self) -> None:
        with self._cond:
            self._codecs = frozenset(v.codec for v in self.viewers.values() if v.codec is not None)

    def request_keyframe(self, codec: str) -> None:
        self._keyframes.request(codec)

    # ---------------------------------------------------------------- worker

    def _work(self) -> None:
        limit = self.settings.max_delay_seconds
        while True:
            with self._cond:
                while not self._pending and not self._stopping and not self._overdue(limit):
                    self._cond.wait(timeout=limit / 4)
                if self._stopping:
                    return
                item = self._pending.popleft() if self._pending else None
                self._busy_since = time.monotonic()
            try:
                if item is _FLUSH:
                    guarded = self.guard.flush()
                elif item is None:  # no frame for a while: check and release what waits
                    guarded = self.guard.release()
                else:
                    frame, arrived = item
                    self._arrivals.append(arrived)
                    self.size = (frame.width, frame.height)
                    self.latest_frame = frame
                    guarded = self.guard.push(frame)
                    if self._overdue(limit):  # frames arrive too slowly to push the buffer on
                        guarded += self.guard.release()
                out = [self._encode(g.frame, g.action, self._arrivals.popleft()) for g in guarded]
            except Exception as exc:  # noqa: BLE001 - anything here means frames are not being guarded
                log.exception("stream %s: worker failed; viewers get the slate until the stream ends", self.id)
                self._loop.call_soon_threadsafe(self._worker_failed, f"{type(exc).__name__}: {exc}")
                return
            finally:
                self._busy_since = None
            if out or item is _FLUSH:
                self._loop.call_soon_threadsafe(self._deliver, out, item is _FLUSH)

    def _overdue(self, limit: float) -> bool:
        """Has the oldest frame in the guard's delay buffer waited longer than ``limit``?"""
        return bool(self._arrivals) and time.monotonic() - self._arrivals[0] > limit

    def _encode(self, frame: av.VideoFrame, action: Action, arrived: float) -> Encoded:
        pts = self._video_clock.next(frame.pts, frame.time_base)
        with self._cond:
            codecs = self._codecs
        return Encoded(arrived, action, self._encoders.encode(frame, pts, codecs, self._keyframes.due()))

    def _deliver(self, out: list[Encoded], flushed: bool = False) -> None:
        """On the loop: hand guarded or slate frames to the viewers (and the audio that goes with them).

        ``flushed``: these were the last frames of a publisher that left; unless
        another has taken over meanwhile, the slate follows them.
        """
        now = time.monotonic()
        for frame in out:
            if frame.slate:
                if self._slate is _Slate.OFF:
                    continue  # guarded frames took over while it was being encoded
                self.counters.slate_frames += len(frame.packets)
            else:
                self.counters.frames_out += 1
                self.latency.append(now - frame.arrived)
                mute = frame.action is Action.SLATE or self._slate is not _Slate.OFF
                self._release_audio(frame.arrived, mute=mute)
                if self._slate is _Slate.STALLED:
                    self._end_slate()
                if self._slate is not _Slate.OFF:
                    continue  # ended or failed: the slate owns the viewers
            self._fan_out(frame)
        if flushed and self.publisher is None and self._slate in (_Slate.OFF, _Slate.STALLED):
            self._begin_slate(_Slate.ENDED)

    def _fan_out(self, frame: Encoded) -> None:
        for codec, packets in frame.packets.items():
            for packet in packets:
                if codec in self._gated:
                    if not packet.is_keyframe:
                        self.request_keyframe(codec)
                        continue
                    self._gated.discard(codec)
                for viewer in self.viewers.values():
                    if viewer.codec == codec and viewer.video is not None:
                        viewer.video.offer(packet)

    def _release_audio(self, until: float, *, mute: bool) -> None:
        while self._audio and self._audio[0][1] <= until:
            frame, _ = self._audio.popleft()
            if not any(v.audio is not None for v in self.viewers.values()):
                continue
            if self._audio_encoder is None:
                self._audio_encoder = AudioEncoder(self.settings.audio_bitrate)
            pts = self._audio_clock.next(frame.pts, frame.time_base)
            try:
                packets = self._audio_encoder.encode(frame, pts, mute)
            except (av.FFmpegError, ValueError) as exc:
                log.warning("stream %s: audio frame dropped: %s", self.id, exc)
                continue
            for packet in packets:
                for viewer in self.viewers.values():
                    if viewer.audio is not None:
                        viewer.audio.offer(packet)

    # ------------------------------------------------------- fail closed

    async def _watch(self) -> None:
        """Every 50 ms: is the worker over budget? Is the slate due? Is audio waiting on dead video?"""
        while True:
            await asyncio.sleep(0.05)
            now = time.monotonic()
            busy = self._busy_since
            if busy is not None and now - busy > self.settings.stall_seconds and self._slate is _Slate.OFF:
                self.counters.stalls += 1
                self._emit_error(f"guard stalled for more than {self.settings.stall_seconds:g} s on one frame")
                self._begin_slate(_Slate.STALLED)
            if self._slate is not _Slate.OFF:
                if now - self._last_slate >= 1 / self.settings.slate_fps and not self._slate_busy:
                    self._last_slate = now
                    self._spawn(self._send_slate())
                # Audio under the slate is muted, and it must not wait for video that is not coming.
                self._release_audio(now, mute=True)
            elif self._audio and now - self._audio[0][1] > max(1.0, self.settings.stall_seconds * 2):
                self._release_audio(now - 1.0, mute=True)

    def _begin_slate(self, reason: _Slate) -> None:
        self._slate = reason
        self._last_slate = 0.0

    def _end_slate(self) -> None:
        self._slate = _Slate.OFF
        # Guarded packets resume mid-GOP; viewers' decoders need a keyframe first.
        self._gated = set(self._codecs)
        self._keyframes.resync(self._codecs)

    def _worker_failed(self, error: str) -> None:
        self._emit_error(f"worker failed: {error}")
        self._begin_slate(_Slate.FAILED)

    def _emit_error(self, error: str) -> None:
        self._on_event(
            GuardEvent(
                type=GUARD_ERROR,
                stream_id=self.id,
                frame_index=self.guard.stats.frames_in,
                pts=None,
                media_time=0.0,
                action=Action.SLATE.label,
                details={"error": error},
            )
        )

    async def _send_slate(self) -> None:
        self._slate_busy = True
        try:
            self._deliver([await asyncio.to_thread(self._encode_slate, self._codecs)])
        finally:
            self._slate_busy = False

    def _encode_slate(self, codecs: frozenset[str]) -> Encoded:
        """One slate keyframe per codec in use, off the loop and off the (maybe stuck) worker."""
        width, height = self.size or (1280, 720)
        pts = self._video_clock.skip(1 / self.settings.slate_fps)
        packets = self._slate_encoders.encode(slate_frame(width, height), pts, codecs, keyframes=codecs)
        return Encoded(time.monotonic(), Action.SLATE, packets, slate=True)

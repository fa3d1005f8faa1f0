"""One published stream: ingest -> StreamGuard -> encode once -> every viewer.

:class:`LiveStream` is what the relay server holds per stream; the pipeline
behind it, in the order frames take:

- :mod:`~livesafe.relay.ingest`: pumps decoded frames off aiortc's tracks,
  measures lateness, sheds aiortc's decoder backlog;
- :mod:`~livesafe.relay.worker`: the stream's one thread, with its short
  queue: guard, then encode once per codec in use;
- :mod:`~livesafe.relay.failsafe`: the only way to the viewers; the watchdog
  and the slate (fail closed: a stuck or dead worker means the slate, never
  unchecked frames);
- :mod:`~livesafe.relay.delivery`: the viewers, fan-out per codec with
  keyframe gating, and the audio that waits beside the video.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import av
from aiortc.mediastreams import MediaStreamTrack

from livesafe.events import FactSink
from livesafe.guard.stream_guard import StreamGuard
from livesafe.relay.delivery import Delivery, Viewer
from livesafe.relay.encoder import VIDEO_CLOCK, Encoded, KeyframeRequests, Timeline
from livesafe.relay.failsafe import Failsafe
from livesafe.relay.ingest import Ingest
from livesafe.relay.worker import GuardWorker


@dataclass(frozen=True)
class StreamSettings:
    video_bitrate: int = 1_500_000
    audio_bitrate: int = 64_000
    ingest_frames: int = 4  # decoded frames waiting for the guard; beyond this the oldest is dropped
    decoder_backlog_frames: int = 15  # encoded frames waiting in aiortc's decoder before we shed them
    keyframe_wait_seconds: float = 3.0  # after a shed, drop broken pictures this long at most, awaiting a keyframe
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
        for name in (
            "video_bitrate",
            "audio_bitrate",
            "ingest_frames",
            "decoder_backlog_frames",
            "viewer_queue_packets",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        for name in (
            "stall_seconds",
            "keyframe_interval",
            "keyframe_wait_seconds",
            "slate_fps",
            "viewer_queue_seconds",
            "max_delay_seconds",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0")
        if self.ended_grace_seconds < 0:
            raise ValueError("ended_grace_seconds must be >= 0")


class StreamState(enum.StrEnum):
    LIVE = "live"
    REDACTED = "redacted"
    ENDED = "ended"


@dataclass(slots=True)
class StreamCounters:
    frames_in: int = 0
    frames_dropped: int = 0  # before the guard (overload); never shown to anyone
    frames_out: int = 0
    stalls: int = 0
    slate_frames: int = 0
    audio_frames_in: int = 0
    audio_frames_dropped: int = 0


class LiveStream:
    """One stream's pipeline behind the surface the relay server, metrics and moderation use."""

    def __init__(
        self,
        stream_id: str,
        guard: StreamGuard,
        settings: StreamSettings,
        *,
        on_event: FactSink,
        on_ended: Callable[[LiveStream], None],
    ) -> None:
        self.id = stream_id
        self.guard = guard
        self.settings = settings
        self.counters = StreamCounters()
        self.started = time.time()
        self.ended_at: float | None = None
        self.publisher: Any = None  # the current publisher session (relay.sessions)
        self._on_ended = on_ended
        self._loop = asyncio.get_running_loop()
        self._tasks: set[asyncio.Task[None]] = set()
        self._end_timer: asyncio.TimerHandle | None = None
        keyframes = self._keyframes = KeyframeRequests(settings.keyframe_interval)
        # A jump of up to 10 s is frames lost (e.g. dropped during a stall); beyond that, a new clock.
        clock = Timeline(VIDEO_CLOCK, nominal_step=3000, max_step=900_000)
        self.delivery = Delivery(stream_id, settings, self.counters, keyframes)
        self.worker = GuardWorker(
            stream_id,
            guard,
            settings,
            self.counters,
            clock=clock,
            keyframes=keyframes,
            codecs=lambda: self.delivery.codecs,
            deliver=self._delivered,
            failed=lambda error: self.failsafe.worker_failed(error),
        )
        self.failsafe = Failsafe(
            stream_id,
            guard,
            settings,
            self.counters,
            worker=self.worker,
            delivery=self.delivery,
            keyframes=keyframes,
            clock=clock,
            on_event=on_event,
            spawn=self._spawn,
        )
        self.ingest = Ingest(
            stream_id,
            settings,
            self.counters,
            worker=self.worker,
            delivery=self.delivery,
            publishing=lambda session: session is self.publisher,
            left=self.publisher_left,
            spawn=self._spawn,
        )
        self.worker.start()
        self._watchdog = asyncio.create_task(self.failsafe.watch())

    # ----------------------------------------------------------------- state

    @property
    def state(self) -> StreamState:
        if self.publisher is None:
            return StreamState.ENDED
        if self.guard.redacting or self.failsafe.active:
            return StreamState.REDACTED
        return StreamState.LIVE

    @property
    def viewers(self) -> dict[str, Viewer]:
        return self.delivery.viewers

    @property
    def size(self) -> tuple[int, int] | None:
        return self.worker.size

    @property
    def latest_frame(self) -> av.VideoFrame | None:
        """The newest frame in, for the moderators' blurred preview only."""
        return self.worker.latest_frame

    @property
    def latency(self) -> deque[float]:
        """Seconds from arrival to fan-out, recent frames."""
        return self.delivery.latency

    @property
    def lateness(self) -> float:
        """How far behind real time frames reach us (see :mod:`~livesafe.relay.ingest`)."""
        return self.ingest.lateness

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

    def attach_publisher(
        self, session: Any, video: MediaStreamTrack | None, audio: MediaStreamTrack | None, receiver: Any
    ) -> Any:
        """Make ``session`` the publisher; returns the session it replaced (to be closed), if any."""
        previous, self.publisher = self.publisher, session
        if self._end_timer is not None:
            self._end_timer.cancel()
            self._end_timer = None
        self.failsafe.publisher_back()
        self.ended_at = None
        self.ingest.start(session, video, audio, receiver)
        return previous

    def publisher_left(self, session: Any) -> None:
        """The publisher hung up (or was replaced by ``attach_publisher``, then this is a no-op)."""
        if session is not self.publisher:
            return
        self.publisher = None
        self.ended_at = time.time()
        self.worker.flush()  # the last frames leave the delay buffer, then the slate (see _delivered)
        self._end_timer = self._loop.call_later(self.settings.ended_grace_seconds, lambda: self._spawn(self.end()))

    async def end(self) -> None:
        """Close every viewer and stop the worker; the stream stays listed as ended."""
        if self._end_timer is not None:
            self._end_timer.cancel()
            self._end_timer = None
        for viewer in list(self.viewers.values()):
            await self.remove_viewer(viewer.id)
        self.worker.stop()
        self._watchdog.cancel()
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current:
                task.cancel()
        await asyncio.to_thread(self.worker.join, 5)
        self._on_ended(self)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _delivered(self, frames: list[Encoded], flushed: bool) -> None:
        """From the worker: ``flushed``, these were the last frames of a publisher that left."""
        self.failsafe.deliver(frames)
        if flushed and self.publisher is None:  # unless another has taken over meanwhile
            self.failsafe.publisher_gone()

    # --------------------------------------------------------------- viewers

    def add_viewer(self, viewer: Viewer) -> None:
        self.delivery.add(viewer)
        if viewer.codec is not None:
            self.request_keyframe(viewer.codec)
            self.failsafe.viewer_joined()

    async def remove_viewer(self, viewer_id: str) -> None:
        viewer = self.delivery.remove(viewer_id)
        if viewer is not None:
            await viewer.close()

    def request_keyframe(self, codec: str) -> None:
        self._keyframes.request(codec)

"""The stream's one worker thread: every frame through the guard, then encoded once per codec.

One thread per stream runs the guard and the encoders: PyAV, NumPy and OpenCV
release the GIL there, so streams use every core and the event loop stays
free.  Frames wait for it in a short queue (``ingest_frames``); when the guard
falls behind, the oldest waiting frame is dropped (counted), so latency
cannot grow.  Every frame the worker encodes has left the guard's delay
buffer: there is no path from the publisher to a viewer around it.

The delay buffer is counted in frames.  When frames thin out or stop, one
that has waited longer than ``max_delay_seconds`` is overdue: the worker then
has the guard check and release what waits (:meth:`StreamGuard.release`)
rather than hold it for frames that may never come.

The worker reports back on the event loop: packets to deliver, or that it
died (the failsafe then slates the stream for good).  While it works on a
frame, :attr:`GuardWorker.busy_since` says since when, for the watchdog.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import av

from livesafe.guard.stream_guard import StreamGuard
from livesafe.policy import Action
from livesafe.relay.encoder import Encoded, Encoders, KeyframeRequests, Timeline

if TYPE_CHECKING:
    from livesafe.relay.stream import StreamCounters, StreamSettings

log = logging.getLogger(__name__)

_FLUSH = object()  # in the queue: the publisher left, empty the delay buffer


class GuardWorker:
    def __init__(
        self,
        stream_id: str,
        guard: StreamGuard,
        settings: StreamSettings,
        counters: StreamCounters,
        *,
        clock: Timeline,
        keyframes: KeyframeRequests,
        codecs: Callable[[], frozenset[str]],
        deliver: Callable[[list[Encoded], bool], None],
        failed: Callable[[str], None],
    ) -> None:
        """``deliver(frames, flushed)`` and ``failed(error)`` are called on the event loop.

        ``codecs()``: the codecs viewers use now; ``clock``: the stream's video
        output clock (shared with the slate).
        """
        self._id = stream_id
        self._guard = guard
        self._settings = settings
        self._counters = counters
        self._clock = clock
        self._keyframes = keyframes
        self._codecs = codecs
        self._deliver = deliver
        self._failed = failed
        self._loop = asyncio.get_running_loop()
        self.encoders = Encoders(settings.video_bitrate)
        self.busy_since: float | None = None  # when the frame in hand was taken up, None when idle
        self.size: tuple[int, int] | None = None
        self.latest_frame: av.VideoFrame | None = None  # newest frame in, for the moderators' blurred preview only
        self._pending: deque[Any] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._arrivals: deque[float] = deque()  # wall time each frame in the guard arrived (worker only)
        self._thread = threading.Thread(target=self._work, name=f"guard-{stream_id}", daemon=True)

    @property
    def waiting(self) -> int:
        """Frames queued for the worker now."""
        with self._cond:
            return sum(x is not _FLUSH for x in self._pending)

    def start(self) -> None:
        self._thread.start()

    def submit(self, frame: av.VideoFrame) -> None:
        """Queue ``frame`` for the guard, dropping the oldest waiting one if the queue is full."""
        with self._cond:
            if self.waiting >= self._settings.ingest_frames:
                # Drop the oldest waiting frame: the freshest picture is what viewers should get.
                for i, waiting in enumerate(self._pending):
                    if waiting is not _FLUSH:
                        del self._pending[i]
                        self._counters.frames_dropped += 1
                        break
            self._pending.append((frame, time.monotonic()))
            self._cond.notify()

    def flush(self) -> None:
        """After the frames queued now, empty the guard's delay buffer (the publisher left)."""
        with self._cond:
            self._pending.append(_FLUSH)
            self._cond.notify()

    def stop(self) -> None:
        """Stop after the frame in hand (see :meth:`join`)."""
        with self._cond:
            self._stopping = True
            self._cond.notify()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def _work(self) -> None:
        limit = self._settings.max_delay_seconds
        while True:
            with self._cond:
                while not self._pending and not self._stopping and not self._overdue(limit):
                    self._cond.wait(timeout=limit / 4)
                if self._stopping:
                    return
                item = self._pending.popleft() if self._pending else None
                self.busy_since = time.monotonic()
            try:
                if item is _FLUSH:
                    guarded = self._guard.flush()
                elif item is None:  # no frame for a while: check and release what waits
                    guarded = self._guard.release()
                else:
                    frame, arrived = item
                    self._arrivals.append(arrived)
                    self.size = (frame.width, frame.height)
                    self.latest_frame = frame
                    guarded = self._guard.push(frame)
                    if self._overdue(limit):  # frames arrive too slowly to push the buffer on
                        guarded += self._guard.release()
                out = [self._encode(g.frame, g.action, self._arrivals.popleft()) for g in guarded]
            except Exception as exc:  # noqa: BLE001 - anything here means frames are not being guarded
                log.exception("stream %s: worker failed; viewers get the slate until the stream ends", self._id)
                self._loop.call_soon_threadsafe(self._failed, f"{type(exc).__name__}: {exc}")
                return
            finally:
                self.busy_since = None
            if out or item is _FLUSH:
                self._loop.call_soon_threadsafe(self._deliver, out, item is _FLUSH)

    def _overdue(self, limit: float) -> bool:
        """Has the oldest frame in the guard's delay buffer waited longer than ``limit``?"""
        return bool(self._arrivals) and time.monotonic() - self._arrivals[0] > limit

    def _encode(self, frame: av.VideoFrame, action: Action, arrived: float) -> Encoded:
        pts = self._clock.next(frame.pts, frame.time_base)
        packets = self.encoders.encode(frame, pts, self._codecs(), self._keyframes.due())
        return Encoded(arrived, action, packets)

"""Fail closed: the one way encoded frames reach viewers, and the slate when guarded ones stop.

Guarded frames (from the worker) and slate frames both come through
:meth:`Failsafe.deliver`, which lets through whichever owns the viewers now:

- guarded frames, normally;
- the slate, while the worker spends longer than ``stall_seconds`` on one
  frame (back to guarded frames when it catches up), after it died (until the
  stream ends) and after the publisher left (through the grace period);
- the slate, while the relay holds every stream (:meth:`Failsafe.hold`): it
  cannot vouch for the guard's lists (a cluster node whose lists are stale),
  and guarding with lists that may be out of date must never pass silently.

A watchdog on the event loop checks every 50 ms.  While the slate holds the
stream it makes a slate keyframe ``slate_fps`` times a second: through the
same kind of encoders as guarded frames, but its own, in a thread of its own
-- the worker may be stuck inside its encoder, and is never waited for.  The
slate never needs the worker, so a stuck or dead worker means the slate,
never unchecked frames.  Audio under the slate is muted.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from livesafe.events import GUARD_ERROR, FactSink, StreamEvent
from livesafe.guard.redact import slate_frame
from livesafe.guard.stream_guard import StreamGuard
from livesafe.policy import Action
from livesafe.relay.delivery import Delivery
from livesafe.relay.encoder import Encoded, Encoders, KeyframeRequests, Timeline
from livesafe.relay.worker import GuardWorker

if TYPE_CHECKING:
    from livesafe.relay.stream import StreamCounters, StreamSettings


class Slate(enum.Enum):
    OFF = 0
    STALLED = 1  # worker over budget: back to guarded frames when it catches up
    FAILED = 2  # worker died: slate until the stream ends
    ENDED = 3  # publisher left: slate through the grace period


class Failsafe:
    def __init__(
        self,
        stream_id: str,
        guard: StreamGuard,
        settings: StreamSettings,
        counters: StreamCounters,
        *,
        worker: GuardWorker,
        delivery: Delivery,
        keyframes: KeyframeRequests,
        clock: Timeline,
        on_event: FactSink,
        spawn: Callable[[Any], None],
    ) -> None:
        """``clock``: the stream's video output clock; ``spawn``: run a coroutine as one of the stream's tasks."""
        self._id = stream_id
        self._guard = guard
        self._settings = settings
        self._counters = counters
        self._worker = worker
        self._delivery = delivery
        self._keyframes = keyframes
        self._clock = clock
        self._on_event = on_event
        self._spawn = spawn
        self._encoders = Encoders(settings.video_bitrate)
        self._slate = Slate.OFF
        self._held: str | None = None  # why the relay holds the stream (see ``hold``), if it does
        self._busy = False  # a slate frame is being encoded
        self._last_slate = 0.0

    @property
    def active(self) -> bool:
        """Does the slate own the viewers now?"""
        return self._slate is not Slate.OFF or self._held is not None

    @property
    def held(self) -> str | None:
        """Why the relay holds this stream on the slate, or None."""
        return self._held

    # ------------------------------------------------------------ frames in

    def deliver(self, frames: list[Encoded]) -> None:
        """On the loop: hand guarded or slate frames to the viewers, if theirs is the turn."""
        now = time.monotonic()
        for frame in frames:
            if frame.slate:
                if not self.active:
                    continue  # guarded frames took over while it was being encoded
                self._counters.slate_frames += len(frame.packets)
            else:
                self._delivery.guarded(frame, now, mute=frame.action is Action.SLATE or self.active)
                if self._slate is Slate.STALLED:
                    self._end()
                if self.active:
                    continue  # ended or failed: the slate owns the viewers
            self._delivery.fan_out(frame)

    # --------------------------------------------------------------- events

    def publisher_gone(self) -> None:
        """The last frames of a publisher that left were delivered: the slate follows them."""
        if self._slate in (Slate.OFF, Slate.STALLED):
            self._begin(Slate.ENDED)

    def publisher_back(self) -> None:
        if self._slate is Slate.ENDED:
            self._end()

    def viewer_joined(self) -> None:
        if self.active:
            self._last_slate = 0.0  # send the newcomer a slate at once

    def hold(self, reason: str) -> None:
        """The slate, whatever the guard finds, until ``release``; reported once as a guard error saying why.

        Orthogonal to the guard's own states: a stall or a publisher leaving
        during a hold still counts, and ``release`` hands the viewers back to
        guarded frames only if nothing else holds the slate.
        """
        if self._held is not None:
            return
        if not self.active:
            self._last_slate = 0.0
        self._held = reason
        self._emit_error(reason)

    def release(self) -> None:
        if self._held is None:
            return
        self._held = None
        if self._slate is Slate.OFF:
            self._resync()

    def worker_failed(self, error: str) -> None:
        self._emit_error(f"worker failed: {error}")
        self._begin(Slate.FAILED)

    # ------------------------------------------------------------ watchdog

    async def watch(self) -> None:
        """Every 50 ms: is the worker over budget? Is the slate due? Is audio waiting on dead video?"""
        while True:
            await asyncio.sleep(0.05)
            now = time.monotonic()
            busy = self._worker.busy_since
            if busy is not None and now - busy > self._settings.stall_seconds and self._slate is Slate.OFF:
                self._counters.stalls += 1
                self._emit_error(f"guard stalled for more than {self._settings.stall_seconds:g} s on one frame")
                self._begin(Slate.STALLED)
            if self.active:
                if now - self._last_slate >= 1 / self._settings.slate_fps and not self._busy:
                    self._last_slate = now
                    self._spawn(self._send_slate())
                # Audio under the slate is muted, and it must not wait for video that is not coming.
                self._delivery.release_audio(now, mute=True)
            else:
                since = self._delivery.audio_since
                if since is not None and now - since > max(1.0, self._settings.stall_seconds * 2):
                    self._delivery.release_audio(now - 1.0, mute=True)

    def _begin(self, reason: Slate) -> None:
        self._slate = reason
        self._last_slate = 0.0

    def _end(self) -> None:
        self._slate = Slate.OFF
        if self._held is None:
            self._resync()

    def _resync(self) -> None:
        # Guarded packets resume mid-GOP; viewers' decoders need a keyframe first.
        self._delivery.gate()
        self._keyframes.resync(self._delivery.codecs)

    def _emit_error(self, error: str) -> None:
        """The stream's guard cannot be relied on (no frame to place it at): the slate holds it."""
        details = {"error": error, "frames_in": self._guard.stats.frames_in}
        self._on_event(StreamEvent(GUARD_ERROR, self._id, Action.SLATE.label, details))

    # --------------------------------------------------------------- slate

    async def _send_slate(self) -> None:
        self._busy = True
        try:
            self.deliver([await asyncio.to_thread(self._encode_slate, self._delivery.codecs)])
        finally:
            self._busy = False

    def _encode_slate(self, codecs: frozenset[str]) -> Encoded:
        """One slate keyframe per codec in use, off the loop and off the (maybe stuck) worker."""
        width, height = self._worker.size or (1280, 720)
        pts = self._clock.skip(1 / self._settings.slate_fps)
        packets = self._encoders.encode(slate_frame(width, height), pts, codecs, keyframes=codecs)
        return Encoded(time.monotonic(), Action.SLATE, packets, slate=True)

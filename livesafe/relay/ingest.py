"""The publisher's side: decoded frames off aiortc's tracks, into the guard's queue.

aiortc decodes each incoming track on its own thread, into an unbounded queue.
The pumps here move frames off it at once (video to the worker's short queue,
audio to wait beside the video in delivery), so no backlog builds up in the
relay.  Two things are measured on the way in:

- lateness: how far behind real time frames reach us, i.e. transit (arrival
  minus media time) above the fastest seen.  It grows when backlogs build in
  front of us (kernel buffers, the decoder); the overload controller reads it.
- aiortc's decoder backlog: if the decoder itself falls behind, what waits in
  it is discarded and a keyframe requested; the frames decoded until that
  keyframe lack their references (broken pictures) and are dropped too.  The
  request is repeated every second (a PLI is one unreliable RTCP packet); a
  publisher that sends no keyframe within ``keyframe_wait_seconds`` gets its
  frames shown as they decode rather than a picture frozen for good.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from livesafe.relay import compat
from livesafe.relay.delivery import Delivery
from livesafe.relay.worker import GuardWorker

if TYPE_CHECKING:
    from livesafe.relay.stream import StreamCounters, StreamSettings

log = logging.getLogger(__name__)


class Ingest:
    def __init__(
        self,
        stream_id: str,
        settings: StreamSettings,
        counters: StreamCounters,
        *,
        worker: GuardWorker,
        delivery: Delivery,
        publishing: Callable[[Any], bool],
        left: Callable[[Any], None],
        spawn: Callable[[Any], None],
    ) -> None:
        """``publishing(session)``: is it still the publisher?  ``left(session)``: its video ended."""
        self._id = stream_id
        self._settings = settings
        self._counters = counters
        self._worker = worker
        self._delivery = delivery
        self._publishing = publishing
        self._left = left
        self._spawn = spawn
        self.lateness = 0.0  # seconds
        self._transit_floor: float | None = None

    def start(
        self, session: Any, video: MediaStreamTrack | None, audio: MediaStreamTrack | None, receiver: Any
    ) -> None:
        """Pump ``session``'s tracks for as long as it is the publisher (``receiver``: the video's, if any)."""
        if video is not None:
            self._spawn(self._pump_video(session, video, receiver))
        if audio is not None:
            self._spawn(self._pump_audio(session, audio))

    async def _pump_video(self, session: Any, track: MediaStreamTrack, receiver: Any) -> None:
        try:
            shed_at: float | None = None  # when the decoder backlog was last shed, until a keyframe comes
            asked_at = 0.0  # when a keyframe was last requested
            self._transit_floor = None  # a new publisher: a new media clock
            while self._publishing(session):
                frame = await track.recv()
                assert isinstance(frame, av.VideoFrame)  # aiortc's remote video tracks yield decoded frames
                self._counters.frames_in += 1
                self._measure_lateness(frame)
                now = time.monotonic()
                if self._shed_decoder_backlog(receiver):
                    shed_at = asked_at = now
                if shed_at is not None and not frame.key_frame:
                    if now - shed_at < self._settings.keyframe_wait_seconds:
                        # Decoded without its references: a broken picture, not worth showing.
                        self._counters.frames_dropped += 1
                        if now - asked_at >= 1.0:
                            asked_at = now
                            self._spawn(compat.send_pli(receiver))
                        continue
                    log.warning(
                        "stream %s: no keyframe %.0f s after a decoder shed; showing frames as they decode",
                        self._id,
                        self._settings.keyframe_wait_seconds,
                    )
                shed_at = None
                self._worker.submit(frame)
        except MediaStreamError:
            pass
        finally:
            self._left(session)

    async def _pump_audio(self, session: Any, track: MediaStreamTrack) -> None:
        try:
            while self._publishing(session):
                frame = await track.recv()
                assert isinstance(frame, av.AudioFrame)  # aiortc's remote audio tracks yield decoded frames
                self._counters.audio_frames_in += 1
                self._delivery.hold_audio(frame)
        except MediaStreamError:
            pass

    def _measure_lateness(self, frame: av.VideoFrame) -> None:
        if frame.pts is None or frame.time_base is None:
            return
        transit = time.monotonic() - float(frame.pts * frame.time_base)
        floor = self._transit_floor
        if floor is None or transit < floor or transit - floor > 10.0:  # > 10 s: the clock jumped
            self._transit_floor = floor = transit
        self.lateness = transit - floor

    def _shed_decoder_backlog(self, receiver: Any) -> bool:
        """Discard aiortc's decoder backlog if it is longer than ``decoder_backlog_frames``, and ask for a keyframe.

        Returns whether it shed anything (frames decoded next lack their references).
        """
        if receiver is None or compat.decoder_backlog(receiver) <= self._settings.decoder_backlog_frames:
            return False
        shed = compat.drain_decoder_queue(receiver)
        self._counters.frames_dropped += shed
        log.warning("stream %s: decoder %d frames behind; shed them and requested a keyframe", self._id, shed)
        self._spawn(compat.send_pli(receiver))
        return True

"""Offline scan: drive the same StreamGuard from a file instead of a peer connection.

What ``livesafe scan`` shows on the sample streams is therefore what the live
relay does.  The redacted output keeps the input's frame count, size and frame
rate; audio is re-encoded with silence wherever the picture was slated (as the
relay mutes it), and carried unchanged in sound elsewhere.
"""

from __future__ import annotations

import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO, TextIO

import av
import numpy as np

from livesafe.events import GuardEvent
from livesafe.guard.frames import luma_view
from livesafe.guard.matcher import Matcher
from livesafe.guard.stream_guard import GuardedFrame, GuardSettings, StreamGuard
from livesafe.policy import Action
from livesafe.signals import RegionHashes, SignalType


class ScanError(Exception):
    """The input or output cannot be processed; the message is one line for the user."""


@dataclass
class ScanResult:
    frames: int = 0
    frames_redacted: int = 0
    frames_slated: int = 0
    events: list[GuardEvent] = field(default_factory=list)
    guard_seconds: float = 0.0
    guard_errors: int = 0  # frames whose check failed (slated: fail closed)
    first_guard_error: str | None = None
    damaged_packets: int = 0  # video packets the decoder rejected and we skipped
    expected_frames: int = 0  # what the container claims, 0 if unknown
    expected_seconds: float = 0.0  # the video's duration as the container claims it, 0 if unknown
    checked_seconds: float = 0.0  # from the video's start to the end of the last frame decoded, 0 if unknown
    frame_seconds: float = 1 / 30

    @property
    def matched(self) -> bool:
        return any(e.type == "match.started" for e in self.events)

    @property
    def unchecked(self) -> str | None:
        """Why part of the input was not checked (cut short, damaged); None when all of it was.

        A scan that says "clean" about a file it read only part of would be a lie, so the
        command line reports this in its summary and exit status.
        """
        reasons = []
        if self.expected_frames and self.frames < self.expected_frames:
            reasons.append(f"decoded {self.frames} of {self.expected_frames} frames")
        elif 0 < self.checked_seconds < self.expected_seconds - 2 * self.frame_seconds:
            # Matroska/WebM give no frame count, but the video's duration (a tag written at the start).
            reasons.append(f"decoded {self.checked_seconds:.2f} s of {self.expected_seconds:.2f} s")
        if self.damaged_packets:
            reasons.append(f"skipped {self.damaged_packets} damaged video packet(s)")
        return "; ".join(reasons) or None


class _SlateTimeline:
    """Media-time intervals shown as slate, so audio over them can be muted."""

    def __init__(self) -> None:
        self.intervals: list[tuple[float, float]] = []
        self.decided_until = float("-inf")

    def add(self, item: GuardedFrame, duration: float) -> None:
        self.decided_until = item.media_time + duration
        if item.action is not Action.SLATE:
            return
        start, end = item.media_time, item.media_time + duration
        if self.intervals and start <= self.intervals[-1][1] + 1e-6:
            self.intervals[-1] = (self.intervals[-1][0], end)
        else:
            self.intervals.append((start, end))

    def mask(self, start: float, count: int, rate: int) -> np.ndarray:
        """Boolean mask of which of ``count`` samples from ``start`` are slated."""
        times = start + np.arange(count) / rate
        muted = np.zeros(count, dtype=bool)
        for a, b in self.intervals:
            if b > start:
                muted |= (times >= a) & (times < b)
        return muted


def scan_file(
    input_path: Path,
    matcher: Callable[[], Matcher],
    settings: GuardSettings,
    *,
    output_path: Path | None = None,
    on_event: Callable[[GuardEvent], None] | None = None,
    progress: TextIO | None = None,
) -> ScanResult:
    result = ScanResult()

    def record(event: GuardEvent) -> None:
        result.events.append(event)
        if on_event is not None:
            on_event(event)

    with open_video(input_path) as source:
        vin = source.streams.video[0]
        ain = source.streams.audio[0] if source.streams.audio else None
        vin.thread_type = "AUTO"
        guard = StreamGuard(matcher, settings, stream_id=Path(input_path).name, on_event=record)
        writer = _Writer(output_path, vin, ain) if output_path is not None else None
        timeline = _SlateTimeline()
        frame_duration = float(1 / vin.average_rate) if vin.average_rate else 1 / 30
        total = vin.frames or 0
        expected_seconds = _video_seconds(vin)
        start = float(vin.start_time * vin.time_base) if vin.start_time is not None and vin.time_base else 0.0
        last_time: float | None = None  # the last video frame's time (None: no frame had one)
        try:
            streams = [vin] + ([ain] if ain is not None and writer is not None else [])
            for packet in source.demux(*streams):
                try:
                    frames = packet.decode()
                except av.FFmpegError as exc:
                    if packet.stream is vin and result.frames == 0 and guard.stats.frames_in == 0:
                        raise ScanError(f"{input_path}: cannot decode video: {_reason(exc)}") from None
                    if packet.stream is vin:
                        result.damaged_packets += 1
                    continue  # a corrupt packet mid-file: skip it, scan the rest, report it
                for frame in frames:
                    if packet.stream is vin:
                        assert isinstance(frame, av.VideoFrame)  # a video stream's packets decode to video
                        if frame.time is not None:
                            last_time = float(frame.time) if last_time is None else max(last_time, float(frame.time))
                        out = guard.push(frame)
                        _emit_video(out, writer, timeline, result, frame_duration)
                        if progress is not None and total:
                            progress.write(
                                f"\rscanning {Path(input_path).name}: {100 * guard.stats.frames_in // total:3d}%"
                            )
                    elif writer is not None:
                        assert isinstance(frame, av.AudioFrame)  # the only other stream demuxed is ain
                        writer.queue_audio(frame)
                if writer is not None:
                    writer.write_audio(timeline, final=False)
            _emit_video(guard.flush(), writer, timeline, result, frame_duration)
            if guard.stats.frames_in == 0:
                raise ScanError(f"{input_path}: no decodable video frames")
            if writer is not None:
                writer.write_audio(timeline, final=True)
                writer.close()
        except av.FFmpegError as exc:
            raise ScanError(f"{input_path}: {_reason(exc)}") from None
        finally:
            if progress is not None and total:
                progress.write("\n")
    result.guard_seconds = guard.stats.guard_seconds
    result.guard_errors = guard.stats.errors
    result.first_guard_error = guard.last_error
    result.expected_frames = total
    result.expected_seconds = expected_seconds
    if last_time is not None:
        result.checked_seconds = last_time + frame_duration - start
    result.frame_seconds = frame_duration
    return result


def _video_seconds(stream: av.VideoStream) -> float:
    """The video's duration as the container states it (MP4 and TS: the stream's; Matroska: its DURATION tag)."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    tag = stream.metadata.get("DURATION", "")  # e.g. 00:00:03.000000000
    hours, _, rest = tag.partition(":")
    minutes, _, seconds = rest.partition(":")
    try:
        return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    except ValueError:
        return 0.0


# FFmpeg "decodes" text files as video: its tty demuxer renders any text as ANSI art, and
# there are binary text-art formats too.  Scanning those would report a text file clean.
_TEXT_ART_CODECS = frozenset({"ansi", "bintext", "xbin", "idf"})


def open_video(path: Path | BinaryIO, label: str = "") -> av.container.InputContainer:
    """An opened container with at least one (real) video stream, or a one-line ScanError.

    ``path`` may be an open binary file (an upload held in memory), named ``label`` in errors.
    """
    where = label or str(path)
    try:
        container = av.open(str(path) if isinstance(path, Path) else path, "r")
    except (av.FFmpegError, OSError) as exc:
        raise ScanError(f"{where}: cannot open as video: {_reason(exc)}") from None
    if not container.streams.video:
        container.close()
        raise ScanError(f"{where}: no video stream")
    codec = container.streams.video[0].codec_context.name
    if codec in _TEXT_ART_CODECS:
        container.close()
        raise ScanError(f"{where}: not a video (FFmpeg would read it as {codec} text art)")
    return container


@dataclass(frozen=True)
class VideoSample:
    """A frame picked by :func:`sample_frames`, with its full-frame hash (already paid for by the cut test)."""

    time: float
    luma: np.ndarray
    scale: float
    hashes: RegionHashes
    cut: bool  # picked because the picture changed, between two steps


def sample_frames(frames: Iterable[av.VideoFrame], every: float, signal: SignalType) -> Iterator[VideoSample]:
    """The frames at 0, ``every``, 2 × ``every``... seconds, and each cut between them.

    What ``livesafe hash`` prints and a bank holds of a video.  A shot shorter than the
    step, falling between two steps, must not be missed: a cut is a frame whose full-frame
    ``signal`` hash is farther than the signal's threshold from the previous frame's (within a
    shot the picture moves a little at a time).
    """
    next_time = 0.0
    previous: np.ndarray | None = None
    for index, frame in enumerate(frames):
        t = float(frame.time) if frame.time is not None else index / 30
        y, scale = luma_view(frame)
        hashes = signal.hash_luma(y, scale)
        here = hashes.variants[0]
        due = t + 1e-9 >= next_time
        cut = previous is not None and int(np.bitwise_count(here ^ previous).sum()) > signal.default_threshold
        previous = here
        if due:
            next_time = t + every
        if due or cut:
            yield VideoSample(t, y, scale, hashes, cut and not due)


def _emit_video(
    out: list[GuardedFrame], writer: _Writer | None, timeline: _SlateTimeline, result: ScanResult, duration: float
) -> None:
    for item in out:
        result.frames += 1
        if item.action is not Action.PASS:
            result.frames_redacted += 1
        if item.action is Action.SLATE:
            result.frames_slated += 1
        timeline.add(item, duration)
        if writer is not None:
            writer.write_video(item.frame)


def _reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc).splitlines()[0]


class _Writer:
    """H.264 + AAC (or the input's audio codec) output with the input's timing."""

    def __init__(self, path: Path, vin: av.VideoStream, ain: av.AudioStream | None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.container = av.open(str(path), "w")
        except (av.FFmpegError, OSError) as exc:
            raise ScanError(f"{path}: cannot write: {_reason(exc)}") from None
        rate = vin.average_rate or Fraction(30)
        self.video = self.container.add_stream("libx264", rate=rate)
        self.video.width = vin.codec_context.width
        self.video.height = vin.codec_context.height
        self.video.pix_fmt = "yuv420p"
        assert vin.time_base is not None  # a demuxed stream always has one
        self.video.time_base = vin.time_base
        self.video.codec_context.time_base = vin.time_base
        self.video.options = {"crf": "20", "preset": "veryfast"}
        self.audio: av.AudioStream | None = None
        self._pending: deque[av.AudioFrame] = deque()
        if ain is not None:
            self.audio = self.container.add_stream("aac", rate=ain.codec_context.sample_rate)
            self.audio.layout = ain.codec_context.layout
            self._resampler = av.AudioResampler(
                format="fltp", layout=ain.codec_context.layout, rate=ain.codec_context.sample_rate
            )

    def write_video(self, frame: av.VideoFrame) -> None:
        if frame.format.name != "yuv420p" or frame.width != self.video.width or frame.height != self.video.height:
            frame = _reformat(frame, self.video.width, self.video.height)
        frame.pict_type = av.video.frame.PictureType.NONE
        self.container.mux(self.video.encode(frame))

    def queue_audio(self, frame: av.AudioFrame) -> None:
        if self.audio is not None:
            self._pending.append(frame)

    def write_audio(self, timeline: _SlateTimeline, *, final: bool) -> None:
        """Write audio whose muting is decided (video output has passed it)."""
        while self._pending:
            frame = self._pending[0]
            start = _start(frame)
            if not final and start + frame.samples / frame.sample_rate > timeline.decided_until:
                break
            self._pending.popleft()
            assert self.audio is not None  # queue_audio queues frames only for an audio output
            for resampled in self._resampler.resample(frame):
                self.container.mux(self.audio.encode(_muted(resampled, timeline)))
        if final and self.audio is not None:
            self.container.mux(self.audio.encode(None))

    def close(self) -> None:
        self.container.mux(self.video.encode(None))
        self.container.close()


def _start(frame: av.AudioFrame) -> float:
    """Seconds at the frame's first sample; 0 for a frame without a pts."""
    if frame.pts is None:
        return 0.0
    assert frame.time_base is not None  # a decoded or resampled frame with a pts has its time base
    return float(frame.pts * frame.time_base)


def _muted(frame: av.AudioFrame, timeline: _SlateTimeline) -> av.AudioFrame:
    start = _start(frame)
    mask = timeline.mask(start, frame.samples, frame.sample_rate)
    if not mask.any():
        return frame
    samples = frame.to_ndarray().copy()
    samples[:, mask] = 0
    out = av.AudioFrame.from_ndarray(samples, format=frame.format.name, layout=frame.layout.name)
    out.sample_rate = frame.sample_rate
    out.pts = frame.pts
    out.time_base = frame.time_base
    return out


def _reformat(frame: av.VideoFrame, width: int, height: int) -> av.VideoFrame:
    out = frame.reformat(width=width, height=height, format="yuv420p")
    out.pts = frame.pts
    out.time_base = frame.time_base
    return out


def progress_stream() -> TextIO | None:
    """A progress bar on a terminal, nothing when piped or in CI."""
    return sys.stderr if sys.stderr.isatty() else None

"""StreamGuard: the one engine between a decoder and anything that shows frames.

Frames go in in decode order and come out ``delay_frames`` later, each either
untouched or redacted.  Why a delay: we hash only some frames (every
``sample_every``-th, plus any frame where the picture changes abruptly), so
when a sample matches, the frames since the previous look are suspect too.
Holding ``delay_frames >= sample_every`` frames back lets a match redact them
*before* they leave -- zero frames of matched content escape, including those
ahead of the first sampled hit.  Cost: ``delay_frames / fps`` of latency
(10 frames = 333 ms at 30 fps by default).

Samples come in two depths.  A deep one looks for windows, panes, tilted
pictures and filmed screens as well as the whole picture; it runs on every
cut and on every ``deep_every``-th periodic sample.  The samples in between
check only the whole picture (cheap).  ``delay_frames`` must cover the gap
between deep samples too, so a picture-in-picture that appears without a cut
is still caught before its first frame leaves.

Redaction reaches back to the moment the content appeared: the first picture
cut since the last clean deep sample; if there was none, the latest cut still
in the buffer (so one sample that missed does not let frames through), or the
whole buffer.  It holds for ``hold_seconds`` after the last match.  If hashing fails,
the guard fails closed: the frame and everything buffered is slated.
"""

from __future__ import annotations

import logging
import threading
import time
from bisect import bisect_left
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import av
import numpy as np

from livesafe.events import (
    GUARD_ERROR,
    MATCH_CLEARED,
    MATCH_STARTED,
    REDACTION_IMPOSED,
    EventSink,
    GuardEvent,
)
from livesafe.guard.frames import luma_view
from livesafe.guard.matcher import Match, Matcher
from livesafe.guard.redact import redact
from livesafe.guard.search import Search, SearchSettings, View
from livesafe.guard.views import Planes
from livesafe.policy import Action

log = logging.getLogger(__name__)

# Upper bounds (seconds) of the per-frame guard latency histogram (``GuardStats.push_buckets``,
# exported by /metrics): a cheap light sample is ~0.1 ms, a deep one a few ms, and a frame
# past the relay's 0.5 s stall limit is slated, so nothing above that needs resolving.
PUSH_SECONDS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5)


@dataclass(frozen=True, slots=True)
class GuardSettings:
    sample_every: int = 5
    delay_frames: int = 10
    hold_seconds: float = 3.0
    # Mean absolute luma change (0..255) of any 1/16th of a thumbnail that
    # counts as a cut: it triggers a sample and bounds retroactive redaction.
    cut_threshold: float = 28.0
    # A sample whose picture differs from the last hashed one by no more than
    # this (same measure as cuts) reuses that verdict: the hash of an
    # unchanged picture is unchanged.  Static scenes then cost almost nothing.
    unchanged_threshold: float = 1.5
    min_sample_gap: int = 2
    deep_every: int = 2  # every 2nd periodic sample (and every cut) is deep
    search: SearchSettings = field(default_factory=SearchSettings)
    fallback_fps: float = 30.0

    def __post_init__(self) -> None:
        if self.sample_every < 1:
            raise ValueError("sample_every must be at least 1")
        if self.deep_every < 1:
            raise ValueError("deep_every must be at least 1")
        if self.delay_frames < self.sample_every * self.deep_every:
            raise ValueError(
                f"delay_frames ({self.delay_frames}) must be >= sample_every x deep_every "
                f"({self.sample_every * self.deep_every}), or frames ahead of a sampled match would leave unredacted"
            )
        if self.hold_seconds < 0:
            raise ValueError("hold_seconds must be >= 0")


@dataclass(slots=True)
class GuardedFrame:
    frame: av.VideoFrame
    index: int
    media_time: float
    action: Action = Action.PASS
    sampled: bool = False
    deep: bool = False  # sampled with the full set of regions


@dataclass(slots=True)
class GuardStats:
    frames_in: int = 0
    frames_out: int = 0
    frames_redacted: int = 0
    samples: int = 0
    samples_reused: int = 0  # of which: picture unchanged, previous verdict kept
    matches: int = 0
    errors: int = 0
    guard_seconds: float = 0.0  # all time spent in push/flush
    redact_seconds: float = 0.0  # of which: producing blurred/slate frames
    # Frames by time spent in push(), counted per bucket of PUSH_SECONDS_BUCKETS (last: above it).
    # Written only by the guard's thread, one int at a time, so a reader on another thread needs no
    # lock: it may see a frame counted in a bucket but not yet in push_seconds, never a count going down.
    push_buckets: list[int] = field(default_factory=lambda: [0] * (len(PUSH_SECONDS_BUCKETS) + 1))
    push_seconds: float = 0.0


class StreamGuard:
    def __init__(
        self,
        matcher: Callable[[], Matcher],
        settings: GuardSettings | None = None,
        *,
        stream_id: str = "stream",
        on_event: EventSink | None = None,
        floor: Action = Action.PASS,
        allow: Callable[[Match], bool] | None = None,
    ) -> None:
        """``matcher`` returns the current lists (read per sample, so reloads apply at once).

        ``floor``: every match redacts at least this hard (a policy profile's
        "cut instead of blur").  ``allow``: matches it returns True for are
        ignored (hashes moderators marked as false positives).
        """
        self._matcher = matcher
        self._floor = floor
        self._allow = allow
        # Moderator commands, queued from any thread and applied on the guard's own
        # thread before its next frame (deque append/popleft are thread-safe).
        self._commands: deque[tuple[str, Any]] = deque()
        self._kept = False  # a moderator holds the redaction until they resume
        self._hold_lock = threading.Lock()  # keep() against the guard's clear when a hold expires
        self._keeps = 0  # keep() calls so far: a resume asked for before the latest keep is void
        self.settings = settings or GuardSettings()
        self.stream_id = stream_id
        self._on_event = on_event
        self._buffer: deque[GuardedFrame] = deque()
        self.stats = GuardStats()
        self._index = 0
        self._last_sample = -(10**9)
        self._periodic = 0  # periodic samples so far, to space the deep ones
        self._thumb: np.ndarray | None = None
        self._checked: tuple[np.ndarray, Matcher, list[Match]] | None = None  # last hashed picture's verdict
        self._search = Search(self.settings.search)
        self._tracked: list[View] = []  # views that matched in the current episode: checked on every sample
        # Cuts too close to the previous sample to be sampled themselves (min_sample_gap): a picture
        # flashed for a frame or two.  Each is checked, deeply, with the next sample.
        self._skipped_cuts: list[GuardedFrame] = []
        self._last_released: av.VideoFrame | None = None  # the newest frame out of the buffer (as decoded)
        self.action = Action.PASS  # redaction in force now (for frames entering the buffer)
        self._episode_start: GuardedFrame | None = None
        self._episode_lists: set[str] = set()
        self._last_match_time = 0.0
        self._last_time = 0.0
        self.last_error: str | None = None
        self._failing = False  # the last check failed (cleared by the next one that works)

    @property
    def redacting(self) -> bool:
        return self.action is not Action.PASS

    @property
    def kept(self) -> bool:
        return self._kept

    # ------------------------------------------------------ moderator commands

    def resume(self, by: str) -> None:
        """Lift the redaction now (and any hold); a match on a later sample redacts again.

        Applied before the next frame, unless :meth:`keep` is called in between (the later word wins).
        """
        self._commands.append(("resume", (by, self._keeps)))

    def keep(self) -> bool:
        """Hold the current redaction until :meth:`resume`, however clean later samples are.

        Unlike the other commands this applies at once, from any thread: the hold must not
        expire between a moderator's "it is redacted" and "keep it", or they would be told
        it is kept while viewers see the stream again.  False: there was nothing to keep.
        """
        with self._hold_lock:
            if not self.redacting:
                return False
            self._kept = True
            self._keeps += 1
            return True

    def impose(self, action: Action, reason: str) -> None:
        """Redact from the oldest buffered frame on, held until :meth:`resume`."""
        self._commands.append(("impose", (action, reason)))

    def _apply_commands(self) -> None:
        while self._commands:
            kind, arg = self._commands.popleft()
            if kind == "resume":
                by, keeps = arg
                with self._hold_lock:
                    if keeps != self._keeps:  # a keep came after this resume was asked for: the later word wins
                        continue
                    self._kept = False
                    if self.redacting:
                        self._clear(self._last_time, self._index - 1, ended=False, resumed_by=by)
            elif kind == "impose":
                action, reason = arg
                self._kept = True
                joined = self.redacting  # already redacted (a match): now also held for review
                if not joined:
                    self._episode_start = self._buffer[0] if self._buffer else None
                    self._episode_lists = set()
                if action > self.action:
                    self.action = action
                    self._redact_episode(action)
                self._emit(
                    REDACTION_IMPOSED,
                    self._index,
                    None,
                    self._last_time,
                    self.action,
                    details={"reason": reason, "joined_existing": joined},
                )

    # ------------------------------------------------------------------ frames

    def push(self, frame: av.VideoFrame) -> list[GuardedFrame]:
        """Take the next decoded frame; return frames now leaving the delay buffer."""
        started = time.perf_counter()
        self._apply_commands()
        item = GuardedFrame(frame, self._index, self._media_time(frame))
        self._index += 1
        self.stats.frames_in += 1
        self._buffer.append(item)
        try:
            y, scale = luma_view(frame)
            is_cut = self._is_cut(y)
            due = item.index - self._last_sample >= self.settings.sample_every
            if due or (is_cut and item.index - self._last_sample >= self.settings.min_sample_gap):
                self._check_skipped_cuts()
                item.sampled = True
                self._last_sample = item.index
                self.stats.samples += 1
                self._periodic += 0 if is_cut else 1
                deep = item.deep = is_cut or self._periodic % self.settings.deep_every == 0
                self._observe(item, self._check(y, scale, deep), deep)
            elif is_cut:
                self._skipped_cuts.append(item)
        except Exception as exc:  # noqa: BLE001 - any failure of the check must fail closed
            self._fail_closed(item, exc)
        item.action = max(item.action, self.action)
        out = self._drain(self.settings.delay_frames)
        elapsed = time.perf_counter() - started
        stats = self.stats
        stats.guard_seconds += elapsed
        stats.push_buckets[bisect_left(PUSH_SECONDS_BUCKETS, elapsed)] += 1
        stats.push_seconds += elapsed
        return out

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def release(self) -> list[GuardedFrame]:
        """Check the newest buffered frame deeply (unless it was), then release every buffered frame.

        For a live source whose frames stop or thin out: the delay buffer is
        counted in frames, so without this, frames would wait for later ones
        that may not come.  A deep check of the newest frame covers the frames
        before it just as the next deep sample would have.
        """
        self._apply_commands()
        if not self._buffer:
            return []
        started = time.perf_counter()
        item = self._buffer[-1]
        if not item.deep:
            item.sampled = item.deep = True
            self._last_sample = item.index
            self.stats.samples += 1
            try:
                y, scale = luma_view(item.frame)
                self._observe(item, self._check(y, scale, True), True)
            except Exception as exc:  # noqa: BLE001 - fail closed, as in push()
                self._fail_closed(item, exc)
            item.action = max(item.action, self.action)
        out = self._drain(0)
        self.stats.guard_seconds += time.perf_counter() - started
        return out

    def flush(self) -> list[GuardedFrame]:
        """End of stream: release everything still buffered (with its decided action)."""
        out = self._drain(0)
        if self.redacting:
            self._clear(self._last_time, self._index - 1, ended=True)
        return out

    def _media_time(self, frame: av.VideoFrame) -> float:
        if frame.pts is not None and frame.time_base is not None:
            t = float(frame.pts * frame.time_base)
        else:
            t = self._index / self.settings.fallback_fps
        self._last_time = t
        return t

    def _is_cut(self, y: np.ndarray) -> bool:
        # A 1/8 strided subsample is plenty to see a cut and costs microseconds.
        thumb = y[4::8, 4::8].astype(np.int16)
        previous, self._thumb = self._thumb, thumb
        return _change(previous, thumb) > self.settings.cut_threshold

    def _check_skipped_cuts(self) -> None:
        skipped, self._skipped_cuts = self._skipped_cuts, []
        oldest = self._buffer[0].index
        for cut in skipped:
            if cut.index < oldest:  # already released (a delay shorter than the sample gap)
                continue
            y, scale = luma_view(cut.frame)
            cut.sampled = cut.deep = True
            self.stats.samples += 1
            self._observe(cut, self._not_allowed(self._match(self._matcher(), y, scale, True)), True)
            cut.action = max(cut.action, self.action)

    def _check(self, y: np.ndarray, scale: float, deep: bool) -> list[Match]:
        """Matches for this picture, reusing the last deep verdict if nothing changed."""
        matcher = self._matcher()
        thumb = self._thumb
        if self._checked is not None and thumb is not None:
            last_thumb, last_matcher, last_matches = self._checked
            if last_matcher is matcher and _change(last_thumb, thumb) <= self.settings.unchanged_threshold:
                self.stats.samples_reused += 1
                return self._not_allowed(last_matches)
        matches = self._match(matcher, y, scale, deep)
        if thumb is not None and deep:
            self._checked = (thumb, matcher, matches)
        return self._not_allowed(matches)

    def _not_allowed(self, matches: list[Match]) -> list[Match]:
        return matches if self._allow is None else [m for m in matches if not self._allow(m)]

    def _match(self, matcher: Matcher, y: np.ndarray, scale: float, deep: bool) -> list[Match]:
        if not matcher.signals:
            return []
        return self._search.run(Planes(y, scale), matcher, deep=deep, extra=self._tracked)

    def _observe(self, item: GuardedFrame, matches: list[Match], deep: bool) -> None:
        self._failing = False
        if matches:
            self.stats.matches += 1
            self._last_match_time = item.media_time
            action = max(max(Action.named(m.action) for m in matches), self._floor)
            if not self.redacting:
                self._start(item, matches[0], action)
            elif action > self.action:
                self._redact_episode(action)
            self.action = max(self.action, action)
            self._episode_lists.update(m.list_name for m in matches)
            self._tracked = [m.view for m in matches if m.view is not None][:2]
        elif deep:  # a light sample may have missed a window: it does not release
            if self.redacting and item.media_time - self._last_match_time >= self.settings.hold_seconds:
                with self._hold_lock:
                    if not self._kept:
                        self._clear(item.media_time, item.index, ended=False)

    def _first_showing(self, item: GuardedFrame, match: Match) -> GuardedFrame:
        """The oldest buffered frame that shows the matched picture (``item`` at the latest).

        Samples are sparse and a sample can miss (a fade-in still too dark, a
        window not yet found), so neither the last clean sample nor the last cut
        says when the picture appeared: the matched view, applied to each
        buffered frame before ``item``, does (``Search.showing_since``).  A frame
        that cannot be checked counts as showing it: fail closed.
        """
        if match.view is None:
            return item
        frames = [b for b in self._buffer if b.index <= item.index]
        try:
            before = None if self._last_released is None else luma_view(self._last_released)
            first = self._search.showing_since([luma_view(b.frame) for b in frames], match, before)
        except Exception:  # noqa: BLE001 - cannot tell: redact the whole buffer
            log.exception("stream %s: reach-back check failed; redacting the buffer", self.stream_id)
            first = 0
        return frames[first]

    def _start(self, item: GuardedFrame, match: Match, action: Action) -> None:
        self._episode_start = self._first_showing(item, match)
        self._episode_lists = set()
        self._redact_episode(action)
        self._emit(
            MATCH_STARTED,
            item.index,
            item.frame.pts,
            item.media_time,
            action,
            match,
            details={
                "redacted_from_frame": self._episode_start.index,
                "redacted_from_time": round(self._episode_start.media_time, 6),
                # What the list says of the entry: an exchange's case, a bank's content id and view.
                **({"entry": dict(match.metadata)} if match.metadata else {}),
            },
        )

    def _redact_episode(self, action: Action) -> None:
        """Apply ``action`` (or escalate, e.g. blur -> slate) to every buffered frame of the current episode."""
        first = self._episode_start.index if self._episode_start else 0
        for buffered in self._buffer:
            if buffered.index >= first:
                buffered.action = max(buffered.action, action)

    def _clear(self, media_time: float, index: int, *, ended: bool, resumed_by: str | None = None) -> None:
        started_at = self._episode_start.media_time if self._episode_start else media_time
        action = self.action
        self.action = Action.PASS
        self._kept = False
        self._episode_start = None
        self._tracked = []
        details = {
            "duration": round(media_time - started_at, 6),
            "lists": sorted(self._episode_lists),
            "stream_ended": ended,
            "resumed_by": resumed_by,
        }
        self._emit(MATCH_CLEARED, index, None, media_time, action, details=details)

    def _fail_closed(self, item: GuardedFrame, exc: Exception) -> None:
        self.stats.errors += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        if self.stats.errors == 1:  # one traceback per stream; the rest are counted
            log.exception("stream %s: guard failed on frame %d; slating", self.stream_id, item.index)
        else:
            log.debug("stream %s: guard failed again on frame %d: %s", self.stream_id, item.index, exc)
        self._last_match_time = item.media_time
        if not self.redacting:
            self._episode_start = self._buffer[0]
            self._episode_lists = set()
        self.action = Action.SLATE
        self._redact_episode(Action.SLATE)
        if not self._failing:  # one event per run of failures, not one per frame: moderators are paged by it
            self._failing = True
            self._emit(
                GUARD_ERROR,
                item.index,
                item.frame.pts,
                item.media_time,
                Action.SLATE,
                details={"error": self.last_error},
            )

    def _emit(
        self,
        kind: str,
        index: int,
        pts: int | None,
        media_time: float,
        action: Action,
        match: Match | None = None,
        *,
        details: dict[str, Any],
    ) -> None:
        """Every event the guard raises is built here, at the frame it is about."""
        fields: dict[str, Any] = {}
        if match is not None:
            fields = dict(
                list_name=match.list_name,
                category=match.category,
                signal=match.signal,
                distance=match.distance,
                matched_hash=match.matched_hash,
                query_hash=match.query_hash,
                region=list(match.region),
                region_kind=match.region_kind,
                orientation=match.orientation,
                quality=match.quality,
            )
        event = GuardEvent(
            type=kind,
            stream_id=self.stream_id,
            frame_index=index,
            pts=pts,
            media_time=round(media_time, 6),
            action=action.label,
            details=details,
            **fields,
        )
        if self._on_event is None:
            return
        try:
            self._on_event(event)
        except Exception:  # noqa: BLE001 - a broken sink must not stop the guard
            log.exception("stream %s: event sink failed for %s", self.stream_id, event.type)

    def _drain(self, keep: int) -> list[GuardedFrame]:
        out: list[GuardedFrame] = []
        while len(self._buffer) > keep:
            item = self._buffer.popleft()
            self._last_released = item.frame
            if item.action is not Action.PASS:
                started = time.perf_counter()
                item.frame = redact(item.frame, item.action)
                self.stats.redact_seconds += time.perf_counter() - started
                self.stats.frames_redacted += 1
            self.stats.frames_out += 1
            out.append(item)
        return out


def _change(before: np.ndarray | None, after: np.ndarray) -> float:
    """Largest mean absolute luma change over a 4x4 grid of blocks (inf if incomparable).

    Blocks rather than the whole picture, so a window opening in one corner
    counts as much as a cut.
    """
    if before is None or before.shape != after.shape:
        return float("inf")
    diff = np.abs(after - before)
    rows, cols = diff.shape
    if rows < 4 or cols < 4:  # a thumbnail of a tiny frame: the whole of it is one block
        return float(diff.mean()) if diff.size else 0.0
    # Integer block sums, one division: the same float as the largest block mean, at half the cost
    # (this runs on every frame).
    blocks = diff[: rows // 4 * 4, : cols // 4 * 4].reshape(4, rows // 4, 4, cols // 4).sum(axis=(1, 3), dtype=np.int64)
    return float(blocks.max() / ((rows // 4) * (cols // 4)))

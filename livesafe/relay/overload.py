"""Overload protection: admit only the streams the machine can carry; cut if it still cannot.

Bounded queues inside the relay keep *our* latency flat, but past capacity the
backlog moves where we cannot bound it: the kernel's UDP buffers in front of
the event loop (about a second of video each) and aiortc's receive path.
Every stream then runs seconds behind and loses packets.  A relay that
serves more streams than it can must drop some -- so, like an admission
controller, it refuses new publishers (503) while overloaded and, if that is
not enough, ends the most recently started stream (its viewers get the slate,
then are hung up), one at a time with a pause to let the rest recover.

Admission comes first, because a backlog, once built, takes seconds to drain:
a new stream is accepted only while this process's CPU use plus the expected
cost of the new stream (what the running streams cost each, or
``stream_cost_cores`` before any has been measured) stays within
``max_cpu_fraction`` of the machine's cores.  Streams admitted in the last
``ramp_seconds`` count at that cost too, since their load has not shown yet.

Overloaded means, for ``sustain_seconds`` in a row: the event loop runs late
by more than ``loop_lag_seconds``, or two or more streams reach the guard
more than ``lateness_seconds`` behind real time.  One late stream alone is
its own publisher's network, not our load.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass
from typing import Any, Protocol

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OverloadSettings:
    max_cpu_fraction: float = 0.85  # of all cores, for admitting a new stream
    stream_cost_cores: float = 0.35  # a 720p30 stream before any has been measured
    ramp_seconds: float = 3.0
    lateness_seconds: float = 0.5
    loop_lag_seconds: float = 0.2
    sustain_seconds: float = 2.0  # start-up bursts (new encoders, keyframes) pass within this
    shed_interval_seconds: float = 1.5
    check_seconds: float = 0.1

    def __post_init__(self) -> None:
        for name in (
            "max_cpu_fraction",
            "stream_cost_cores",
            "lateness_seconds",
            "loop_lag_seconds",
            "shed_interval_seconds",
            "check_seconds",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0")
        if self.sustain_seconds < 0 or self.ramp_seconds < 0:
            raise ValueError("sustain_seconds and ramp_seconds must be >= 0")


class Sheddable(Protocol):
    id: str
    started: float
    lateness: float
    publisher: Any


class LoadShedder:
    def __init__(self, settings: OverloadSettings, cores: int | None = None) -> None:
        self.settings = settings
        self.cores = cores or os.cpu_count() or 1
        self._since: float | None = None  # when the current overload began
        self._last_shed = -1e9
        self._admitted: list[float] = []  # when recent streams were admitted
        self.loop_lag = 0.0
        self.cpu = 0.0  # cores this process uses (smoothed over ~1 s)
        self.shed = 0
        self.overloaded = False  # sustained: new publishers are refused

    def room(self, now: float, live_streams: int) -> tuple[float, float]:
        """(cores left for new streams, what one more is expected to cost), as :meth:`admit` counts them:
        what a cluster's placement weighs, so that it and admission agree."""
        self._admitted = [t for t in self._admitted if now - t < self.settings.ramp_seconds]
        ramping = len(self._admitted)  # including any still negotiating (not live yet)
        settled = max(0, live_streams - ramping)
        per_stream = self.cpu / settled if settled else self.settings.stream_cost_cores
        per_stream = max(per_stream, 0.5 * self.settings.stream_cost_cores)  # an idle stream is not free
        return self.settings.max_cpu_fraction * self.cores - self.cpu - per_stream * ramping, per_stream

    def admit(self, now: float, live_streams: int) -> bool:
        """May one more stream start now?  (If so, it is counted as ramping up.)"""
        left, per_stream = self.room(now, live_streams)
        if self.overloaded or per_stream > left:
            return False
        self._admitted.append(now)
        return True

    def measure_cpu(self, cpu_seconds: float, wall_seconds: float) -> None:
        if wall_seconds > 0:
            alpha = min(1.0, wall_seconds)  # ~1 s smoothing
            self.cpu += alpha * (cpu_seconds / wall_seconds - self.cpu)

    def assess(self, now: float, loop_lag: float, streams: list[Sheddable]) -> Sheddable | None:
        """The stream to end now, if any (call every ``check_seconds``)."""
        live = [s for s in streams if s.publisher is not None]
        late = [s for s in live if s.lateness > self.settings.lateness_seconds]
        if loop_lag > self.settings.loop_lag_seconds or len(late) >= 2:
            self._since = now if self._since is None else self._since
        elif now - self._last_shed >= self.settings.shed_interval_seconds:
            self._since = None  # recovered (judged only after the pause that follows a cut)
        self.overloaded = self._since is not None and now - self._since >= self.settings.sustain_seconds
        if not self.overloaded or now - self._last_shed < self.settings.shed_interval_seconds or not live:
            return None
        self._last_shed = now
        self.shed += 1
        return max(live, key=lambda s: s.started)

    async def run(self, streams: Any, cut: Any) -> None:
        """Watch ``streams()`` forever; ``await cut(stream, reason)`` for each one to end."""
        interval = self.settings.check_seconds
        while True:
            before, cpu_before = time.monotonic(), time.process_time()
            await asyncio.sleep(interval)
            now = time.monotonic()
            self.loop_lag = now - before - interval
            self.measure_cpu(time.process_time() - cpu_before, now - before)
            victim = self.assess(now, self.loop_lag, list(streams()))
            if victim is not None:
                reason = (
                    f"overload: event loop {self.loop_lag * 1000:.0f} ms late, stream {victim.lateness:.2f} s behind"
                )
                log.warning("stream %s: ended to shed load (%s)", victim.id, reason)
                await cut(victim, reason)

#!/usr/bin/env python
"""Issue 14's list targets: source-to-redaction latency, a 1M reload under a live stream, memory at 10M.

Three parts, each with the product's own classes (nothing of them is mocked):

1. ``latency``: a ``url`` source (``livesafe.lists.sources.url.UrlSource``,
   ETag / If-None-Match) polled by the real ``ListWatcher`` every ``--polls``
   seconds, against an aiohttp server on 127.0.0.1 (``tests/list_server.py``)
   serving ``--base-size`` random PDQ hashes.  A ``StreamGuard`` with default
   settings (but ``hold_seconds`` 1 s, so trials are shorter; the hold only acts
   after the first match) reads ``LiveMatcher.current`` on a thread of its own,
   as the relay's guard worker does, fed 720p yuv420p frames at 30 fps that
   show one synthetic picture (smooth random colour fields with sensor noise,
   so every sample is hashed anew).  Each trial shows a new picture, waits
   until the guard is clear, waits a random 0..poll seconds, then serves a
   new list version holding that picture's PDQ hash; measured: from the
   moment the server serves it to the moment the first redacted frame leaves
   the guard.  Split: until the new list is in force (``on_loaded``), and
   from then until the redacted frame.  With 20 trials p99 lies between the
   two largest.
2. ``reload``: a ``file`` source of ``--reload-size`` random hashes in force
   while a guard thread runs a real-looking 720p30 stream at real-time pace
   (bench_guard's ``streamer`` clip: a screen share with a face-cam, through
   libx264 and decoded).  The list file is replaced by another of the same size
   and ``LiveLists.refresh`` -- what the watcher's thread runs -- reloads it
   on a thread of its own, ``--reloads`` times.  Per frame: time in
   ``StreamGuard.push`` and lateness (push end minus the frame's due time at
   30 fps: a stall shows as lateness, a frame that waits for the GIL as
   either), before any reload and during one.  Beside the stream, a ticker
   thread sleeping 1 ms records how late it wakes: the longest time some
   thread held the GIL; a wake over 10 ms late is put down to the reloading
   thread (with where it stood) only if that thread's CPU clock ran through
   most of the gap.  Then the swap's memory, without a stream: tracemalloc
   (numpy's buffers included) and RSS peak while a reload replaces the list
   in force (a list of ``--swap-size`` hashes), against one loaded list and
   against one ``HammingIndex``.
3. ``memory``: ``--index-size`` (10M) random hashes in a list file loaded by
   ``LiveMatcher``: load time, RSS of the loaded list and its peak while
   loading; then the ``HammingIndex`` alone: ``memory_bytes()`` and bytes per
   hash, and single-query latency.

    python benchmarks/bench_lists.py [--quick] [--parts latency,reload,memory] [--trials 20] [--json OUT]

Loopback only: the list server listens on 127.0.0.1 and nothing else is contacted.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import random
import sys
import tempfile
import threading
import time
import traceback
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # list_server: the loopback server the url source's tests use
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import print_report  # noqa: E402
from bench_guard import commit, generated_clips, h264  # noqa: E402
from list_server import ThreadedServer  # noqa: E402

from livesafe.guard.frames import luma_view  # noqa: E402
from livesafe.guard.matcher import LiveMatcher  # noqa: E402
from livesafe.guard.stream_guard import GuardSettings, StreamGuard  # noqa: E402
from livesafe.index import HammingIndex  # noqa: E402
from livesafe.lists import ListSpec  # noqa: E402
from livesafe.lists.live import ListWatcher  # noqa: E402
from livesafe.policy import Action  # noqa: E402
from livesafe.signals import signal_named  # noqa: E402

PARTS = ("latency", "reload", "memory")
FPS = 30
TIME_BASE = Fraction(1, FPS)
RELOAD_SECONDS = 2.0  # [lists] reload_seconds default: the watcher's tick is min(this, poll, 1 s)
HOLD_SECONDS = 1.0
PDQ = signal_named("pdq")
MiB = 2**20


# --------------------------------------------------------------------------- lists


def random_hashes(count: int, rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 256, size=(count, 32), dtype=np.uint8)


def pdq_body(hashes: np.ndarray) -> bytes:
    """``pdq <hex>`` lines, built with numpy (a 10M list in seconds, not minutes)."""
    hexes = np.frombuffer(hashes.tobytes().hex().encode(), dtype=np.uint8).reshape(len(hashes), 64)
    lines = np.empty((len(hashes), 69), dtype=np.uint8)
    lines[:, :4] = np.frombuffer(b"pdq ", dtype=np.uint8)
    lines[:, 4:68] = hexes
    lines[:, 68] = ord("\n")
    return lines.tobytes()


def replace_file(path: Path, body: bytes) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(body)
    os.replace(tmp, path)  # what a list publisher should do: a reader never sees half a file


class ListHost:
    """The list as a server publishes it: one body and its ETag, swapped whole."""

    def __init__(self, body: bytes) -> None:
        self._lock = threading.Lock()
        self._body = body
        self._version = 0

    def publish(self, body: bytes) -> float:
        """Serve ``body`` from now on; returns the monotonic time it became visible."""
        with self._lock:
            self._body, self._version = body, self._version + 1
            return time.monotonic()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        with self._lock:
            body, etag = self._body, f'"v{self._version}"'
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers={"ETag": etag})
        return web.Response(body=body, headers={"ETag": etag}, content_type="text/plain")


# --------------------------------------------------------------------------- the stream


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def reset_peak_rss() -> None:
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # resets VmHWM to the current RSS


def peak_rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


@dataclass(slots=True)
class FrameRecord:
    due: float  # when the frame would arrive from a 30 fps source
    started: float
    ended: float
    redacted_out: bool  # a frame leaving the guard with it was redacted


class PacedStream:
    """A StreamGuard fed at 30 fps from a thread of its own, as the relay's guard worker feeds it.

    A frame the thread is late for is pushed at once (it would be waiting in
    the worker's queue), so a stall shows as lateness, not as fewer frames.
    """

    def __init__(self, guard: StreamGuard, frame_at: Callable[[int], av.VideoFrame]) -> None:
        self.guard = guard
        self._frame_at = frame_at
        self.records: list[FrameRecord] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="guard-bench", daemon=True)

    def __enter__(self) -> PacedStream:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        start = time.monotonic()
        i = 0
        while not self._stop.is_set():
            due = start + i / FPS
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            frame = self._frame_at(i)
            frame.pts, frame.time_base = i, TIME_BASE
            started = time.monotonic()
            out = self.guard.push(frame)
            ended = time.monotonic()
            self.records.append(FrameRecord(due, started, ended, any(f.action is not Action.PASS for f in out)))
            i += 1

    def redacted_since(self, moment: float) -> float | None:
        """When the first redacted frame at or after ``moment`` left the guard, if one has."""
        for record in self.records[-FPS * 60 :]:
            if record.ended >= moment and record.redacted_out:
                return record.ended
        return None

    def clear_for(self, seconds: float) -> bool:
        """No redacted frame has left for ``seconds`` and the guard is not redacting now."""
        recent = [r for r in self.records[-FPS * 5 :] if r.ended >= time.monotonic() - seconds]
        if self.guard.redacting or any(r.redacted_out for r in recent):
            return False
        return len(recent) >= seconds * FPS * 0.8


class GilTicker:
    """A thread that sleeps 1 ms at a time and records how late it wakes: the longest GIL holds of others.

    While a thread is ``watch``ed, a wake more than ``culprit_seconds`` late
    notes where that thread stands and how much CPU it used in the gap.  A
    thread that ran for nearly all of the gap while the ticker could not is
    what held the GIL (on a busy machine a late wake is also just the ticker
    not being scheduled: then the watched thread did not run through it), and
    the call it held it in has just returned there or is still running.
    """

    def __init__(self, culprit_seconds: float = 0.010) -> None:
        self.wakes: list[tuple[float, float]] = []  # (woke at, seconds late)
        self.culprits: list[tuple[float, float, str]] = []  # (seconds late, watched thread's CPU seconds, where)
        self._watched: tuple[int, int] | None = None  # (thread ident, its CPU clock)
        self._culprit_seconds = culprit_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gil-ticker", daemon=True)

    def __enter__(self) -> GilTicker:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def watch(self, run: Callable[[], object]) -> None:
        """Run ``run`` on a thread of its own, watched, and wait for it."""

        def watched() -> None:
            ident = threading.get_ident()
            self._watched = (ident, time.pthread_getcpuclockid(ident))  # asked from the live thread itself
            try:
                run()
            finally:
                self._watched = None

        thread = threading.Thread(target=watched, name="reloader")
        thread.start()
        thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            watched = self._watched
            cpu = self._cpu(watched)
            before = time.monotonic()
            time.sleep(0.001)
            now = time.monotonic()
            late = now - before - 0.001
            self.wakes.append((now, late))
            if late <= self._culprit_seconds or watched is None or cpu is None:
                continue
            ran = self._cpu(watched)
            frame = sys._current_frames().get(watched[0])
            if ran is not None and frame is not None:
                stack = traceback.extract_stack(frame)[-3:]
                where = " < ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in reversed(stack))
                self.culprits.append((late, ran - cpu, where))

    @staticmethod
    def _cpu(watched: tuple[int, int] | None) -> float | None:
        if watched is None:
            return None
        try:
            return time.clock_gettime(watched[1])
        except OSError:  # the thread has just ended
            return None


def synthetic_picture(seed: int) -> np.ndarray:
    """A benign 720p RGB picture: random colour fields at two scales (hashes of different seeds are unrelated)."""
    rng = np.random.default_rng(seed)
    coarse = cv2.resize(rng.integers(0, 256, (9, 16, 3), dtype=np.uint8), (1280, 720), interpolation=cv2.INTER_CUBIC)
    fine = cv2.resize(rng.integers(0, 256, (45, 80, 3), dtype=np.uint8), (1280, 720), interpolation=cv2.INTER_CUBIC)
    return cv2.addWeighted(coarse, 0.7, fine, 0.3, 0)


def yuv_frames(rgb: np.ndarray, count: int, rng: np.random.Generator) -> list[np.ndarray]:
    """``count`` yuv420p arrays of ``rgb`` with sensor noise (a camera's: no two frames alike)."""
    out = []
    for _ in range(count):
        noisy = np.clip(rgb + rng.normal(0, 3, rgb.shape), 0, 255).astype(np.uint8)
        out.append(av.VideoFrame.from_ndarray(noisy, format="rgb24").reformat(format="yuv420p").to_ndarray())
    return out


def listed_hash(yuv: np.ndarray) -> np.ndarray:
    """The picture's PDQ hash as a list would hold it (the full-size hash of the whole frame)."""
    y, scale = luma_view(av.VideoFrame.from_ndarray(yuv, format="yuv420p"))
    hashes = PDQ.hash_luma(y, scale)
    if hashes.quality < PDQ.min_quality:
        raise SystemExit(f"synthetic picture has PDQ quality {hashes.quality}: pick other seeds")
    return hashes.variants[0]


def percentiles(values: list[float], scale: float = 1.0) -> dict[str, float]:
    if not values:
        return {"n": 0}
    a = np.asarray(values) * scale
    return {
        "n": len(a),
        "p50": float(np.percentile(a, 50)),
        "p95": float(np.percentile(a, 95)),
        "p99": float(np.percentile(a, 99)),
        "max": float(a.max()),
    }


def fmt(stats: dict[str, float], unit: str, digits: int = 2) -> str:
    if not stats.get("n"):
        return "no samples"
    return "  ".join(f"{k} {stats[k]:.{digits}f}" for k in ("p50", "p95", "p99", "max")) + f" {unit} (n={stats['n']})"


# --------------------------------------------------------------------------- part 1: latency


def latency(poll: float, trials: int, base_size: int, seed: int) -> tuple[list[str], dict[str, Any]]:
    rng = np.random.default_rng(seed)
    pick = random.Random(seed)
    base = random_hashes(base_size, rng)
    pictures = [yuv_frames(synthetic_picture(seed * 1000 + t), 6, rng) for t in range(trials)]
    listed: list[np.ndarray] = []
    shown = [0]

    def frame_at(i: int) -> av.VideoFrame:
        variants = pictures[shown[0]]
        return av.VideoFrame.from_ndarray(variants[i % len(variants)], format="yuv420p")

    host = ListHost(pdq_body(base))
    total, in_force, guard_part, missed = [], [], [], 0
    with ThreadedServer(host.handle).running() as server:
        spec = ListSpec(kind="url", url=server.base + "/list.txt", name="bench-url", poll_seconds=poll)
        lists = LiveMatcher([spec], reload_seconds=RELOAD_SECONDS)
        loads: list[float] = []
        lists.on_loaded.append(lambda _blocklist: loads.append(time.monotonic()))
        watcher = ListWatcher(lists, RELOAD_SECONDS).start()
        guard = StreamGuard(lambda: lists.current, GuardSettings(hold_seconds=HOLD_SECONDS), stream_id="bench")
        try:
            with PacedStream(guard, frame_at) as stream:
                for trial in range(trials):
                    shown[0] = trial
                    deadline = time.monotonic() + 30
                    time.sleep(1.0)
                    while not stream.clear_for(1.0):
                        if time.monotonic() > deadline:
                            raise SystemExit(f"trial {trial}: the guard redacts a picture not yet listed")
                        time.sleep(0.05)
                    time.sleep(pick.uniform(0, poll))
                    listed.append(listed_hash(pictures[trial][0]))
                    body = pdq_body(np.vstack([base, *listed]))
                    published = host.publish(body)
                    redacted = None
                    deadline = published + poll + 30
                    while redacted is None and time.monotonic() < deadline:
                        time.sleep(0.01)
                        redacted = stream.redacted_since(published)
                    if redacted is None:
                        missed += 1
                        continue
                    loaded = next((t for t in loads if t >= published), redacted)
                    total.append(redacted - published)
                    in_force.append(loaded - published)
                    guard_part.append(redacted - loaded)
        finally:
            watcher.stop()
    stats: dict[str, Any] = {
        "poll_seconds": poll,
        "trials": trials,
        "missed": missed,
        "source_to_redacted_s": percentiles(total),
        "source_to_in_force_s": percentiles(in_force),
        "in_force_to_redacted_s": percentiles(guard_part),
    }
    lines = [
        f"latency, url source polled every {poll:g} s ({base_size:,} hashes + 1 new per trial), {trials} trials"
        + (f", {missed} NOT REDACTED within poll + 30 s" if missed else ""),
        f"  source -> first redacted frame out   {fmt(stats['source_to_redacted_s'], 's')}",
        f"    of which source -> list in force   {fmt(stats['source_to_in_force_s'], 's')}",
        f"    of which in force -> redacted      {fmt(stats['in_force_to_redacted_s'], 's')}",
    ]
    return lines, stats


# --------------------------------------------------------------------------- part 2: reload under a stream


@dataclass
class Window:
    start: float
    end: float
    frames: list[FrameRecord] = field(default_factory=list)


def stream_clip(seconds: float) -> list[av.VideoFrame]:
    clip = generated_clips()["streamer"]
    return h264(clip(i) for i in range(round(seconds * FPS)))


def reload_stall(
    size: int, reloads: int, seed: int, clip: list[av.VideoFrame], swap_size: int
) -> tuple[list[str], dict[str, Any]]:
    rng = np.random.default_rng(seed)
    bodies = [pdq_body(random_hashes(size, rng)) for _ in range(2)]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.txt"
        replace_file(path, bodies[0])
        started = time.perf_counter()
        lists = LiveMatcher([ListSpec(path=path, name="big")], reload_seconds=RELOAD_SECONDS)
        first_load = time.perf_counter() - started
        guard = StreamGuard(lambda: lists.current, stream_id="bench")
        windows: list[Window] = []
        with GilTicker() as ticker, PacedStream(guard, lambda i: clip[i % len(clip)]) as stream:
            time.sleep(8.0)
            quiet_until = time.monotonic()
            for r in range(reloads):
                replace_file(path, bodies[(r + 1) % 2])
                time.sleep(1.0)
                window = Window(time.monotonic(), 0.0)
                ticker.watch(lambda: lists.refresh(0, force=True))
                window.end = time.monotonic()
                windows.append(window)
                time.sleep(3.0)
        records = stream.records
        wakes = ticker.wakes
    warm = records[0].due + 2.0  # the first frames pay first-call costs
    before = [r for r in records if warm <= r.due and r.ended < quiet_until]
    during = [r for r in records if any(r.ended >= w.start and r.started <= w.end for w in windows)]
    ticks_before = [late for t, late in wakes if warm <= t < quiet_until]
    ticks_during = [late for t, late in wakes if any(w.start <= t <= w.end for w in windows)]
    swap_seconds = [w.end - w.start for w in windows]
    stats: dict[str, Any] = {"size": size, "reloads": reloads, "first_load_s": first_load, "swap_s": swap_seconds}
    lines = [
        f"reload of a {size:,}-hash file list under a 720p30 stream ({len(clip)}-frame clip looped), "
        f"{reloads} reloads: {', '.join(f'{s:.2f}' for s in swap_seconds)} s each (first load {first_load:.2f} s)",
    ]
    for label, frames, ticks in (("before", before, ticks_before), ("during", during, ticks_during)):
        push = percentiles([r.ended - r.started for r in frames], 1000)
        late = percentiles([r.ended - r.due for r in frames], 1000)
        gil = percentiles(ticks, 1000)
        stats[label] = {"push_ms": push, "lateness_ms": late, "ticker_late_ms": gil}
        lines += [
            f"  {label:<6} push      {fmt(push, 'ms')}",
            f"  {'':<6} lateness  {fmt(late, 'ms')}",
            f"  {'':<6} 1 ms ticker woke late by  p99 {gil.get('p99', 0):.1f}  max {gil.get('max', 0):.1f} ms",
        ]
    held = sorted(((late, where) for late, ran, where in ticker.culprits if ran >= 0.75 * late), reverse=True)
    stats["longest_holds"] = held[:6]
    lines.append(
        f"  late ticker wakes (> 10 ms) during the reloads: {len(ticker.culprits)}, of which the reloading thread "
        f"ran >= 75 % of the gap (held the GIL) {len(held)}; the longest, and where it stood:"
    )
    lines += [f"    {late * 1000:6.1f} ms  {where}" for late, where in held[:6]]
    if swap_size != size:
        bodies = [pdq_body(random_hashes(swap_size, rng)) for _ in range(2)]
    memory_lines, memory = swap_memory(swap_size, bodies)
    stats["memory"] = memory
    return lines + memory_lines, stats


def swap_memory(size: int, bodies: list[bytes]) -> tuple[list[str], dict[str, Any]]:
    """Traced and RSS peak while a reload replaces the list in force, against one list and one index."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.txt"
        replace_file(path, bodies[0])
        gc.collect()
        tracemalloc.start()
        lists = LiveMatcher([ListSpec(path=path, name="big")], reload_seconds=RELOAD_SECONDS)
        gc.collect()
        one_list = tracemalloc.get_traced_memory()[0]
        replace_file(path, bodies[1])
        gc.collect()
        tracemalloc.reset_peak()
        rss_before = rss_bytes()
        reset_peak_rss()
        lists.refresh(0, force=True)
        traced_peak = tracemalloc.get_traced_memory()[1]
        rss_peak = peak_rss_bytes()
        tracemalloc.stop()
        hashes = lists.current.blocklists[0].hashes["pdq"]
        index_bytes = HammingIndex(hashes, PDQ.default_threshold).memory_bytes()
    stats = {
        "one_list_traced": one_list,
        "index_memory_bytes": index_bytes,
        "swap_traced_peak": traced_peak,
        "rss_before": rss_before,
        "rss_peak_during_swap": rss_peak,
    }
    lines = [
        f"  memory, a {size:,}-hash list: one loaded (blocklist + index) {one_list / MiB:.0f} MiB traced, "
        f"of which HammingIndex.memory_bytes {index_bytes / MiB:.0f} MiB",
        f"  {'':<6}  peak while swapping {traced_peak / MiB:.0f} MiB traced = {traced_peak / one_list:.2f}x one list, "
        f"{traced_peak / index_bytes:.2f}x one index; RSS {rss_before / MiB:.0f} -> peak {rss_peak / MiB:.0f} MiB "
        f"(+{(rss_peak - rss_before) / MiB:.0f})",
    ]
    return lines, stats


# --------------------------------------------------------------------------- part 3: memory at 10M


def index_memory(size: int, seed: int) -> tuple[list[str], dict[str, Any]]:
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "huge.txt"
        with path.open("wb") as out:
            for lo in range(0, size, 1_000_000):
                out.write(pdq_body(random_hashes(min(1_000_000, size - lo), rng)))
        gc.collect()
        rss_before = rss_bytes()
        reset_peak_rss()
        started = time.perf_counter()
        lists = LiveMatcher([ListSpec(path=path, name="huge")], reload_seconds=RELOAD_SECONDS)
        load_seconds = time.perf_counter() - started
    gc.collect()
    loaded_rss = rss_bytes() - rss_before
    load_peak = peak_rss_bytes() - rss_before
    blocklist = lists.current.blocklists[0]
    hashes = blocklist.hashes["pdq"]
    del lists
    gc.collect()
    rss_before = rss_bytes()
    reset_peak_rss()
    started = time.perf_counter()
    index = HammingIndex(hashes, PDQ.default_threshold)
    build_seconds = time.perf_counter() - started
    index_rss = rss_bytes() - rss_before
    build_peak = peak_rss_bytes() - rss_before
    queries = random_hashes(200, rng)
    index.nearest(queries[:1])
    times = []
    for i in range(len(queries)):
        t = time.perf_counter()
        index.nearest(queries[i : i + 1])
        times.append(time.perf_counter() - t)
    q = percentiles(times, 1e3)
    stats = {
        "size": size,
        "load_s": load_seconds,
        "loaded_rss": loaded_rss,
        "load_peak_rss": load_peak,
        "index_memory_bytes": index.memory_bytes(),
        "index_rss": index_rss,
        "index_build_s": build_seconds,
        "index_build_peak_rss": build_peak,
        "query_ms": q,
    }
    lines = [
        f"memory at {size:,} PDQ hashes (file list through LiveMatcher, then the HammingIndex alone)",
        f"  LiveMatcher load {load_seconds:.1f} s: RSS +{loaded_rss / 2**30:.2f} GiB "
        f"({loaded_rss / size:.0f} B/hash), peak while loading +{load_peak / 2**30:.2f} GiB",
        f"  HammingIndex built in {build_seconds:.1f} s: memory_bytes {index.memory_bytes() / 2**30:.2f} GiB "
        f"({index.memory_bytes() / size:.0f} B/hash), RSS +{index_rss / 2**30:.2f} GiB, "
        f"peak while building +{build_peak / 2**30:.2f} GiB",
        f"  single query (miss)  {fmt(q, 'ms', 3)}",
    ]
    return lines, stats


def chunks(text: str) -> Iterator[str]:
    yield from (part.strip() for part in text.split(",") if part.strip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: 3 trials at poll 1 s, 100k / 1M lists")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    parser.add_argument("--trials", type=int, default=20, help="latency trials per poll interval")
    parser.add_argument("--polls", default="5,1", help="poll intervals (seconds) of the url source")
    parser.add_argument("--base-size", type=int, default=100_000, help="hashes the url list holds before the trials")
    parser.add_argument("--reload-size", type=int, default=1_000_000)
    parser.add_argument("--reloads", type=int, default=3)
    parser.add_argument(
        "--swap-size", type=int, help="hashes of the list whose swap memory is measured (default: --reload-size)"
    )
    parser.add_argument("--index-size", type=int, default=10_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    parts = list(chunks(args.parts))
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f"unknown part {unknown[0]!r} (parts: {', '.join(PARTS)})")
    polls = [float(p) for p in chunks(args.polls)]
    if args.quick:
        args.trials, polls = 3, [1.0]
        args.base_size, args.reload_size, args.reloads, args.index_size = 10_000, 100_000, 1, 1_000_000

    began = time.perf_counter()
    header = [
        f"commit {commit()}; Python {platform.python_version()}, numpy {np.__version__}, PyAV {av.__version__}; "
        f"{os.cpu_count()} CPUs, {os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') / 2**30:.0f} GiB; "
        f"load average {os.getloadavg()[0]:.2f} at start",
    ]
    sections: list[list[str]] = []
    report: dict[str, Any] = {"args": vars(args) | {"polls": polls}}
    if "latency" in parts:
        report["latency"] = []
        for poll in polls:
            lines, stats = latency(poll, args.trials, args.base_size, args.seed)
            print(lines[0], f"({time.perf_counter() - began:.0f} s)", flush=True)
            sections.append(lines)
            report["latency"].append(stats)
    if "reload" in parts:
        swap_size = args.swap_size or args.reload_size
        lines, stats = reload_stall(args.reload_size, args.reloads, args.seed, stream_clip(4.0), swap_size)
        print(lines[0], f"({time.perf_counter() - began:.0f} s)", flush=True)
        sections.append(lines)
        report["reload"] = stats
    if "memory" in parts:
        lines, stats = index_memory(args.index_size, args.seed)
        print(lines[0], f"({time.perf_counter() - began:.0f} s)", flush=True)
        sections.append(lines)
        report["memory"] = stats
    header.append(f"total {time.perf_counter() - began:.0f} s, load average {os.getloadavg()[0]:.2f} at the end")
    print_report(header, sections, report, args.json)


if __name__ == "__main__":
    main()

"""Cost of the StreamGuard per 720p30 frame: sampling + region search + hashing + matching.

Issue 10's target: the guard's whole per-frame cost, averaged over a mix of
real-looking streams, stays <= 1 ms at 720p30 against a 1M-hash list, and its
worst (deep) sample fits in the delay buffer's time (10 frames = 333 ms).

Clips: every ``sample_streams/*.mp4`` plus a generated mix of benign 720p30
streams built from ``sample_streams.synthetic`` (a slow pan, a montage of hard cuts,
a picture-in-picture over a moving backdrop, a screen share with a face-cam,
a two-up interview, a webcam with a caption bar).  The generated clips go
through libx264 in memory and are decoded again, so the guard sees what a
decoder gives it (nothing is written to disk).  Every clip is decoded up front
and ``StreamGuard.push`` is timed on each frame: that is ``livesafe scan``'s
time minus its decode time, without the noise of timing two separate runs.

Lists: the sample blocklist (3 hashes) alone, and with random PDQ hashes up to
``--list-size`` (1M).  Per clip: mean ms/frame, each sample's time (p99 and max;
the max is always a deep sample), the queries sent to the index per sample
(counted by wrapping the ``Matcher`` here, not in the product), and where a
sample's time goes (planes / propose / DCTs / index lookup / verify+refine /
other), from a second, instrumented pass.  For scale: Meta's reference PDQ
(``pdqhash``) on one 720p frame.

    python benchmarks/bench_guard.py [--list-size 1000000] [--repeat 2] [--seconds 10]
    python benchmarks/bench_guard.py --profile pip_pan     # cProfile of one clip at the big list

Single process: at most the two cores OpenBLAS/OpenCV may use for one product.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from fractions import Fraction
from functools import wraps
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np

import livesafe.guard.search as search_module
import livesafe.guard.stream_guard as guard_module
from livesafe.guard.matcher import LiveMatcher, Matcher
from livesafe.guard.stream_guard import GuardSettings, StreamGuard
from livesafe.lists import ListSpec

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # sample_streams.synthetic is in the checkout, not in the installed package
from sample_streams import synthetic as syn  # noqa: E402

SAMPLES = ROOT / "sample_streams"
TIME_BASE = Fraction(1, syn.FPS)
# What sample_streams/generate.py uses: what a streamer's encoder gives the relay.
H264_OPTIONS = {"crf": "26", "preset": "veryfast", "g": "60", "bf": "2", "sc_threshold": "0"}
DELAY_MS = GuardSettings().delay_frames * 1000 / syn.FPS
SPLIT = ("planes", "propose", "dcts", "lookup", "verify+refine", "other")


# --------------------------------------------------------------------------- clips


def decode(source: Path | io.BytesIO) -> list[av.VideoFrame]:
    with av.open(source if isinstance(source, io.BytesIO) else str(source)) as container:
        return list(container.decode(video=0))


def h264(frames: Iterator[np.ndarray]) -> list[av.VideoFrame]:
    """RGB frames through libx264 into an in-memory MP4 and decoded again."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=syn.FPS)
        stream.width, stream.height, stream.pix_fmt = syn.WIDTH, syn.HEIGHT, "yuv420p"
        stream.time_base = TIME_BASE
        stream.options = dict(H264_OPTIONS)
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24").reformat(format="yuv420p")
            frame.pts, frame.time_base = i, TIME_BASE
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    buffer.seek(0)
    return decode(buffer)


def _scene(name: str, seed: int) -> syn.FrameSource:
    return syn.BENIGN_SCENES[name](np.random.default_rng(seed))


def _inset(frame: np.ndarray, picture: np.ndarray, box: tuple[int, int, int, int], border: int = 3) -> np.ndarray:
    """``picture`` resized into ``box`` (x, y, w, h) of ``frame`` with a light border: a face-cam."""
    x, y, w, h = box
    out = frame.copy()
    out[y - border : y + h + border, x - border : x + w + border] = (230, 230, 230)
    out[y : y + h, x : x + w] = cv2.resize(picture, (w, h), interpolation=cv2.INTER_AREA)
    return out


def generated_clips() -> dict[str, Callable[[int], np.ndarray]]:
    """Benign streams that look like real ones; frame ``i`` of each (RGB, 720p)."""
    benign = syn.benign_images()
    pan = _scene("ken_burns", 11)
    cuts = _scene("fast_cuts", 12)
    backdrop = _scene("ken_burns", 13)
    screen = _scene("screen_share", 14)
    heads = (_scene("talking_head", 15), _scene("talking_head", 16))
    webcam = _scene("talking_head", 17)

    def pip_pan(i: int) -> np.ndarray:
        # The same window every frame (a fixed seed), over a photo slowly panned behind it.
        return syn.picture_in_picture(benign["astronaut"], np.random.default_rng(3), background=backdrop(i))

    def streamer(i: int) -> np.ndarray:
        return _inset(screen(i), heads[0](i), (syn.WIDTH - 340, syn.HEIGHT - 200, 320, 180))

    def interview(i: int) -> np.ndarray:
        return syn.split_screen(heads[0](i)[:, 200:1080], np.random.default_rng(4), other=heads[1](i)[:, 200:1080])

    def captioned(i: int) -> np.ndarray:
        out = webcam(i)
        out[600:680] = (out[600:680] * 0.3).astype(np.uint8)
        cv2.putText(
            out,
            f"LIVE  {i // syn.FPS:02d}s  say hi in chat",
            (40, 655),
            cv2.FONT_HERSHEY_SIMPLEX,
            1.2,
            (240, 240, 240),
            2,
            cv2.LINE_AA,
        )
        return out

    return {
        "slow_pan": pan,
        "cuts": cuts,
        "pip_pan": pip_pan,
        "streamer": streamer,
        "interview": interview,
        "captioned": captioned,
    }


def load_clips(seconds: float, only: str | None = None) -> dict[str, list[av.VideoFrame]]:
    clips: dict[str, list[av.VideoFrame]] = {}
    for path in sorted(SAMPLES.glob("*.mp4")):
        if only in (None, path.stem):
            clips[path.stem] = decode(path)
    count = round(seconds * syn.FPS)
    for name, source in generated_clips().items():
        if only in (None, name):
            clips[name] = h264(source(i) for i in range(count))
    return clips


def big_list(size: int, directory: Path) -> Path:
    rng = np.random.default_rng(1)
    path = directory / "big.txt"
    lines = (SAMPLES / "blocklist.txt").read_text().splitlines()
    random_hashes = rng.integers(0, 256, size=(max(0, size - 3), 32), dtype=np.uint8)
    with path.open("w") as out:
        out.write("\n".join(lines) + "\n")
        out.writelines(f"pdq {row.tobytes().hex()}\n" for row in random_hashes)
    return path


# --------------------------------------------------------------------------- instrumentation


class CountingMatcher:
    """A ``Matcher`` that counts the queries sent to its indexes (the guard sees no difference)."""

    def __init__(self, matcher: Matcher, timer: SplitTimer | None = None) -> None:
        self._matcher = matcher
        self._timer = timer
        self.queries = 0
        self.lookups = 0
        self.signals = matcher.signals

    def lookup(self, signal: str, queries: np.ndarray, margin: int = 0) -> list[tuple[int, int, int, int]]:
        self.queries += len(queries)
        self.lookups += 1
        if self._timer is None:
            return self._matcher.lookup(signal, queries, margin)
        with self._timer.part("lookup"):
            return self._matcher.lookup(signal, queries, margin)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._matcher, name)


class SplitTimer:
    """Time spent per part of a sample; a part called inside another counts towards the outer one
    (a DCT inside a refinement is refinement)."""

    def __init__(self) -> None:
        self.seconds = dict.fromkeys(SPLIT, 0.0)
        self._depth = 0

    @contextmanager
    def part(self, name: str) -> Iterator[None]:
        if self._depth:
            yield
            return
        self._depth += 1
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - started
            self._depth -= 1

    def wrap(self, name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        @wraps(function)
        def timed(*args: Any, **kwargs: Any) -> Any:
            with self.part(name):
                return function(*args, **kwargs)

        return timed


@contextmanager
def instrumented(timer: SplitTimer) -> Iterator[None]:
    """Wrap the search's parts (module globals and ``Search`` methods) for the duration."""
    patches = [
        (guard_module, "Planes", "planes"),
        (search_module, "propose", "propose"),
        (search_module, "dcts", "dcts"),
        (search_module, "oriented_hashes", "dcts"),
        (
            search_module,
            "variant_hashes",
            "dcts",
        ),  # its name on commits before oriented_hashes (for a before/after run on an older commit)
        (search_module.Search, "verify", "verify+refine"),
        (search_module.Search, "refine", "verify+refine"),
        (search_module.Search, "hash_of", "verify+refine"),
    ]
    patches = [p for p in patches if hasattr(p[0], p[1])]
    saved = [(owner, name, getattr(owner, name)) for owner, name, _ in patches]
    for owner, name, part in patches:
        setattr(owner, name, timer.wrap(part, getattr(owner, name)))
    try:
        yield
    finally:
        for owner, name, original in saved:
            setattr(owner, name, original)


# --------------------------------------------------------------------------- running


@dataclass
class Sample:
    ms: float
    deep: bool
    reused: bool
    queries: int


@dataclass
class ClipRun:
    frame_ms: np.ndarray
    samples: list[Sample]
    redact_ms: float
    split_ms: dict[str, float] = field(default_factory=dict)  # per frame, from the instrumented pass

    @property
    def check_ms(self) -> float:
        """Mean guard time per frame without producing redacted frames (which only a match causes)."""
        return float(self.frame_ms.mean()) - self.redact_ms


def run(frames: list[av.VideoFrame], matcher: Matcher, timer: SplitTimer | None = None) -> ClipRun:
    counting = CountingMatcher(matcher, timer)
    guard = StreamGuard(lambda: counting, GuardSettings())  # type: ignore[arg-type, return-value]
    per_frame, samples = [], []
    for frame in frames:
        before, reused, queries = guard.stats.samples, guard.stats.samples_reused, counting.queries
        started = time.perf_counter()
        guard.push(frame)
        elapsed = time.perf_counter() - started
        per_frame.append(elapsed)
        if guard.stats.samples > before:
            # The pushed frame is the newest in the delay buffer (benchmark-only peek at it).
            deep = guard._buffer[-1].deep  # noqa: SLF001
            samples.append(
                Sample(elapsed * 1000, deep, guard.stats.samples_reused > reused, counting.queries - queries)
            )
    guard.flush()
    return ClipRun(np.array(per_frame) * 1000, samples, guard.stats.redact_seconds * 1000 / len(frames))


def measure(frames: list[av.VideoFrame], matcher: Matcher, repeat: int) -> ClipRun:
    best = min((run(frames, matcher) for _ in range(repeat)), key=lambda r: r.frame_ms.sum())
    timer = SplitTimer()
    with instrumented(timer):
        started = time.perf_counter()
        run(frames, matcher, timer)
        total = time.perf_counter() - started
    timer.seconds["other"] = total - sum(timer.seconds.values())
    best.split_ms = {k: v * 1000 / len(frames) for k, v in timer.seconds.items()}
    return best


def row(label: str, name: str, frames: int, r: ClipRun) -> str:
    sample_ms = np.array([s.ms for s in r.samples]) if r.samples else np.zeros(1)
    computed = [s for s in r.samples if not s.reused]
    deep = [s for s in computed if s.deep]
    queries = np.array([s.queries for s in deep]) if deep else np.zeros(1)
    split = r.split_ms
    share = " / ".join(f"{split[k]:.2f}" for k in SPLIT)
    return (
        f"| {label} | {name} | {frames} | {len(r.samples)} ({len(deep)} deep, {len(r.samples) - len(computed)} reused) "
        f"| **{r.check_ms:.2f}** | {r.redact_ms:.2f} | {np.percentile(sample_ms, 99):.1f} | {sample_ms.max():.1f} "
        f"| {queries.mean():.0f} / {queries.max():.0f} | {share} |"
    )


def profile(frames: list[av.VideoFrame], matcher: Matcher) -> None:
    profiler = cProfile.Profile()
    profiler.enable()
    run(frames, matcher)
    profiler.disable()
    stats = pstats.Stats(profiler)
    stats.sort_stats("tottime").print_stats(25)
    stats.sort_stats("cumulative").print_stats(30)


def commit() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        )
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "livesafe"], capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return out.stdout.strip() + (" (livesafe/ modified)" if dirty.stdout.strip() else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--list-size", type=int, default=1_000_000)
    parser.add_argument(
        "--repeat", type=int, default=2, help="timed passes per clip and list (the fastest is reported)"
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each generated clip")
    parser.add_argument("--profile", metavar="CLIP", help="cProfile one clip against the big list instead")
    args = parser.parse_args()

    started = time.perf_counter()
    clips = load_clips(args.seconds, args.profile)
    if args.profile and not clips:
        parser.error(f"no clip named {args.profile!r}")
    print(
        f"clips decoded in {time.perf_counter() - started:.1f} s: "
        f"{', '.join(f'{k} ({len(v)})' for k, v in clips.items())}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        lists = {
            f"{args.list_size / 1e6:g}M PDQ": LiveMatcher([ListSpec(path=big_list(args.list_size, Path(tmp)))]).current
        }
        if not args.profile:
            lists = {"sample (3)": LiveMatcher([ListSpec(path=SAMPLES / "blocklist.txt")]).current, **lists}
        print(f"lists written and loaded in {time.perf_counter() - started:.1f} s")
    if args.profile:
        profile(next(iter(clips.values())), next(iter(lists.values())))
        return

    print(f"\ncommit {commit()}; delay buffer {DELAY_MS:.0f} ms")
    print()
    print(
        "| list | clip | frames | samples | guard ms/frame | of which redaction | sample p99 ms | sample max ms "
        "| queries per deep sample (mean / max) | split ms/frame: " + " / ".join(SPLIT) + " |"
    )
    print("|---|---|---:|---|---:|---:|---:|---:|---:|---|")
    summary = []
    for label, matcher in lists.items():
        checks, worst = [], 0.0
        for name, frames in clips.items():
            r = measure(frames, matcher, args.repeat)
            checks.append(r.check_ms)
            worst = max(worst, max((s.ms for s in r.samples), default=0.0))
            print(row(label, name, len(frames), r), flush=True)
        summary.append(
            f"{label}: guard ms/frame (without redaction), mean over {len(checks)} clips = {np.mean(checks):.2f}; "
            f"worst clip {max(checks):.2f}; worst sample {worst:.1f} ms (delay buffer {DELAY_MS:.0f} ms)"
        )
    print()
    print("\n".join(summary))
    try:
        import pdqhash
    except ImportError:
        return
    rgb = (
        clips["benign_mix"][60].to_ndarray(format="rgb24")
        if "benign_mix" in clips
        else next(iter(clips.values()))[0].to_ndarray(format="rgb24")
    )
    pdqhash.compute(rgb)
    started = time.perf_counter()
    for _ in range(10):
        pdqhash.compute(rgb)
    print(f"reference pdqhash on one full 720p frame: {(time.perf_counter() - started) * 100:.1f} ms")


if __name__ == "__main__":
    main()

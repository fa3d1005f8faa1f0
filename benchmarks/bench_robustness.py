#!/usr/bin/env python
"""Robustness of the live guard: every blocked stand-in under every synthetic transform.

    python benchmarks/bench_robustness.py [--seeds N] [--quick] [--jobs J] [--h264 K] [--json PATH]

For each blocked stand-in image x each transform in ``livesafe.synthetic.TRANSFORMS``
x each seed we build a short segment as a livestream would show it:

* 12 frames of a benign scene (one of ``BENIGN_SCENES``, rotating),
* 24 frames of the transformed blocked image, held still with fresh sensor noise
  every frame (Gaussian, added in YUV: sigma 1.2 luma / 0.6 chroma levels, about
  what ``synthetic.add_sensor_noise(sigma=2)`` gives after RGB->YUV; noise comes
  from a bank of precomputed fields because drawing it per frame costs 40 ms),
* 12 frames of another benign scene,

as ``av.VideoFrame`` yuv420p frames (pts = index, time base 1/30), and push them
through a fresh ``StreamGuard`` (default ``GuardSettings``) whose matcher is a
blocklist of the three stand-ins' PDQ hashes.  A subset (``--h264`` segments per
transform) is also sent through a real H.264 round trip first
(libx264 in memory: CRF 26, preset veryfast, keyframe every 60 frames, no
scene-cut keyframes, 2 B-frames -- as OBS-style live encoders send), because
compressed frames are what the live path sees.

Per transform we report segments detected (at least one blocked frame came out
redacted) / total, frames leaked (blocked frames that came out unredacted in a
detected segment: the guard is designed for zero), and the best PDQ distance the
guard saw while the image was on screen (a recording proxy around the real
``Matcher`` sees every region the guard hashed).

False redaction: every ``BENIGN_SCENES`` generator runs for ``--benign-frames``
frames, and every benign photo is shown under every transform (a benign picture
letterboxed, as PiP, on a filmed screen, ...): these must never be redacted.  We
count redacted frames and report the closest any quality-passing benign region
came to the blocklist.

Nothing is written to disk except the temporary blocklist (hashes only, in a
temporary directory or ``--workdir``) and, with ``--json``, the per-segment
results; never a frame.  tests/test_robustness.py runs a small configuration of
this script and asserts on its ``--json`` output.
"""

from __future__ import annotations

import os

# OpenBLAS's threads make PDQ's (64 x W) @ (W x 64) column product ~100x slower on
# a small shared VM (34 ms instead of 0.3 ms a 720p frame on the 2-vCPU dev box).
# livesafe/__init__.py pins BLAS to one thread, but only if it is imported before
# numpy; do it here first so the order of imports below cannot matter.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import io
import json
import multiprocessing
import platform
import subprocess
import sys
import tempfile
import time
import zlib
from collections import Counter
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from livesafe import synthetic as syn
from livesafe.guard.matcher import LiveMatcher, Matcher
from livesafe.guard.redact import Action
from livesafe.guard.stream_guard import GuardSettings, StreamGuard
from livesafe.lists import ListSpec
from livesafe.signals import SIGNALS
from livesafe.signals.pdq import luma_from_rgb

FPS = syn.FPS
TIME_BASE = Fraction(1, FPS)
LEAD_IN, BLOCKED, LEAD_OUT = 12, 24, 12
SEGMENT_FRAMES = LEAD_IN + BLOCKED + LEAD_OUT
Y_NOISE, C_NOISE = 1.2, 0.6
NOISE_FIELDS = 16
H264_OPTIONS = {
    "crf": "26",
    "preset": "veryfast",
    "threads": "1",  # one per worker process; also keeps x264's output reproducible
    "x264-params": "keyint=60:min-keyint=60:scenecut=0:bframes=2",
}
PDQ = SIGNALS["pdq"]
NO_REGION = 999  # "distance" of a sample where no region passed PDQ's quality floor
THRESHOLD = PDQ.default_threshold


# --- blocklist ------------------------------------------------------------------------------------


def blocklist_hashes() -> dict[str, str]:
    """PDQ hex of each blocked stand-in, as the sample blocklist has them."""
    return {
        name: PDQ.format_hex(PDQ.hash_luma(luma_from_rgb(np.asarray(image))).variants[0])
        for name, image in syn.blocked_images().items()
    }


def write_blocklist(path: Path) -> Path:
    lines = ["# livesafe robustness benchmark: PDQ of the benign stand-in 'blocked' photos"]
    lines += [f"pdq {value}" for value in blocklist_hashes().values()]
    path.write_text("\n".join(lines) + "\n")
    return path


class RecordingMatcher:
    """Wraps a ``Matcher``: answers exactly as it does, and records, per sample, how
    close the best quality-passing region (any orientation) came to the blocklist."""

    def __init__(self, matcher: Matcher) -> None:
        self._matcher = matcher
        self.signals = matcher.signals
        self._targets = np.concatenate([bl.hashes["pdq"] for bl in matcher.blocklists if "pdq" in bl.hashes])
        self.frame = -1  # index of the frame being pushed, set by the caller
        self.samples: list[tuple[int, int, str]] = []  # (frame, best distance, region kind)

    def match(self, hashed):  # noqa: ANN001, ANN201 - same signature as Matcher.match
        best, kind = NO_REGION, ""
        for region, name, hashes in hashed:
            if name != "pdq" or hashes.quality < PDQ.min_quality:
                continue
            xor = hashes.variants[:, None, :] ^ self._targets[None, :, :]
            distance = int(np.unpackbits(xor, axis=2).sum(axis=2).min())
            if distance < best:
                best, kind = distance, region.kind
        self.samples.append((self.frame, best, kind))
        matches = self._matcher.match(hashed)
        if bool(matches) != (best <= THRESHOLD):  # the guard fails closed on this, and guard_frames raises
            raise AssertionError(f"recorder saw distance {best} but the matcher returned {len(matches)} matches")
        return matches


# --- frames ---------------------------------------------------------------------------------------


def to_yuv(rgb: np.ndarray) -> np.ndarray:
    """The (H*3/2, W) yuv420p array of an RGB frame, converted the way the brief's frames are."""
    return av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24").reformat(format="yuv420p").to_ndarray()


def video_frame(yuv: np.ndarray, index: int) -> av.VideoFrame:
    frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
    frame.pts = index
    frame.time_base = TIME_BASE
    return frame


_NOISE: np.ndarray | None = None


def noise_bank() -> np.ndarray:
    global _NOISE
    if _NOISE is None:
        rng = np.random.default_rng(20240611)
        h = syn.HEIGHT
        bank = np.empty((NOISE_FIELDS, h * 3 // 2, syn.WIDTH), dtype=np.int16)
        for k in range(NOISE_FIELDS):
            bank[k, :h] = np.rint(rng.standard_normal((h, syn.WIDTH), dtype=np.float32) * Y_NOISE)
            bank[k, h:] = np.rint(rng.standard_normal((h // 2, syn.WIDTH), dtype=np.float32) * C_NOISE)
        _NOISE = bank
    return _NOISE


def noisy_frames(rgb: np.ndarray, count: int, seed: int) -> list[np.ndarray]:
    """``count`` yuv frames of a still picture, each with fresh sensor noise."""
    base = to_yuv(rgb).astype(np.int16)
    bank = noise_bank()
    first = seed % NOISE_FIELDS
    return [np.clip(base + bank[(first + j) % NOISE_FIELDS], 0, 255).astype(np.uint8) for j in range(count)]


def _key(*parts: object) -> list[int]:
    """A stable seed sequence from names and numbers (hash() of str is salted per process)."""
    return [p if isinstance(p, int) else zlib.crc32(str(p).encode()) for p in parts]


_SCENES = tuple(syn.BENIGN_SCENES)
_BENIGN_CLIPS: dict[str, list[np.ndarray]] = {}


def benign_clip(scene: str) -> list[np.ndarray]:
    """Frames 0..23 of a benign scene (yuv), cached per process: lead-ins and lead-outs."""
    if scene not in _BENIGN_CLIPS:
        source = syn.BENIGN_SCENES[scene](np.random.default_rng(_key("lead", scene)))
        _BENIGN_CLIPS[scene] = [to_yuv(source(i)) for i in range(LEAD_IN + LEAD_OUT)]
    return _BENIGN_CLIPS[scene]


def transformed(image: str, transform: str, seed: int) -> np.ndarray:
    """The RGB frame showing a blocked stand-in under a transform (deterministic per seed)."""
    rng = np.random.default_rng(_key(seed, image, transform))
    return syn.TRANSFORMS[transform](syn.blocked_images()[image], rng)


def segment_yuv(image: str, transform: str, seed: int) -> list[np.ndarray]:
    """12 benign, 24 blocked (still + noise), 12 benign frames."""
    k = (seed + syn.BLOCKED_NAMES.index(image) + list(syn.TRANSFORMS).index(transform)) % len(_SCENES)
    before = benign_clip(_SCENES[k])[:LEAD_IN]
    after = benign_clip(_SCENES[(k + 3) % len(_SCENES)])[LEAD_IN:]
    shown = noisy_frames(transformed(image, transform, seed), BLOCKED, seed)
    return [*before, *shown, *after]


def h264_round_trip(frames: list[av.VideoFrame]) -> list[av.VideoFrame]:
    """Encode with libx264 into an in-memory MP4 and decode again (output order = input order)."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = syn.WIDTH, syn.HEIGHT, "yuv420p"
        stream.time_base = TIME_BASE
        stream.options = dict(H264_OPTIONS)
        for frame in frames:
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    buffer.seek(0)
    with av.open(buffer, "r") as source:
        decoded = list(source.decode(video=0))
    if len(decoded) != len(frames):
        raise RuntimeError(f"H.264 round trip returned {len(decoded)} of {len(frames)} frames")
    for i, frame in enumerate(decoded):
        frame.pts, frame.time_base = i, TIME_BASE
    return decoded


# --- running the guard -----------------------------------------------------------------------------

_LIVE: dict[str, LiveMatcher] = {}


def _matcher(blocklist: Path) -> Matcher:
    key = str(blocklist)
    if key not in _LIVE:
        _LIVE[key] = LiveMatcher([ListSpec(path=Path(blocklist))])
    return _LIVE[key].current


def guard_frames(frames: list[av.VideoFrame], blocklist: Path) -> tuple[list[Action], list[tuple[int, int, str]]]:
    """Push frames through a fresh default StreamGuard: (action per frame index, samples recorded)."""
    recorder = RecordingMatcher(_matcher(blocklist))
    guard = StreamGuard(lambda: recorder, GuardSettings(), stream_id="robustness")
    actions: dict[int, Action] = {}
    for i, frame in enumerate(frames):
        recorder.frame = i
        for item in guard.push(frame):
            actions[item.index] = item.action
    for item in guard.flush():
        actions[item.index] = item.action
    if sorted(actions) != list(range(len(frames))) or guard.stats.errors:
        raise RuntimeError(f"guard returned frames {sorted(actions)[:5]}... with {guard.stats.errors} errors")
    return [actions[i] for i in range(len(frames))], recorder.samples


@dataclass(frozen=True)
class SegmentResult:
    image: str
    transform: str
    seed: int
    codec: str
    detected: bool
    leaked: int  # blocked frames passed unredacted (counted whether or not detected)
    lead_in_redacted: int  # benign frames before the cut that were redacted
    best_distance: int  # best PDQ distance among samples taken while the image was shown
    best_region: str
    first_hit: int | None  # frame offset (from the first blocked frame) of the first matching sample


def run_segment(image: str, transform: str, seed: int, codec: str, blocklist: Path) -> SegmentResult:
    frames = [video_frame(yuv, i) for i, yuv in enumerate(segment_yuv(image, transform, seed))]
    if codec == "h264":
        frames = h264_round_trip(frames)
    actions, samples = guard_frames(frames, blocklist)
    shown = actions[LEAD_IN : LEAD_IN + BLOCKED]
    redacted = sum(a is not Action.PASS for a in shown)
    inside = [(f, d, k) for f, d, k in samples if LEAD_IN <= f < LEAD_IN + BLOCKED]
    best = min(inside, key=lambda s: s[1], default=(0, NO_REGION, ""))
    hits = [f - LEAD_IN for f, d, _ in inside if d <= THRESHOLD]
    return SegmentResult(
        image=image,
        transform=transform,
        seed=seed,
        codec=codec,
        detected=redacted > 0,
        leaked=BLOCKED - redacted,
        lead_in_redacted=sum(a is not Action.PASS for a in actions[:LEAD_IN]),
        best_distance=best[1],
        best_region=best[2],
        first_hit=hits[0] if hits else None,
    )


@dataclass
class BenignResult:
    name: str
    frames: int = 0
    redacted: int = 0
    closest: int = NO_REGION
    closest_region: str = ""
    samples: int = 0

    def add(self, actions: list[Action], samples: list[tuple[int, int, str]]) -> None:
        self.frames += len(actions)
        self.redacted += sum(a is not Action.PASS for a in actions)
        self.samples += len(samples)
        for _, distance, kind in samples:
            if distance < self.closest:
                self.closest, self.closest_region = distance, kind


def run_scene(scene: str, frames: int, blocklist: Path) -> BenignResult:
    source = syn.BENIGN_SCENES[scene](np.random.default_rng(_key("benign", scene)))
    video = [video_frame(to_yuv(source(i)), i) for i in range(frames)]
    result = BenignResult(f"scene `{scene}`")
    result.add(*guard_frames(video, blocklist))
    return result


def run_decoys(transform: str, seeds: int, frames: int, blocklist: Path) -> BenignResult:
    """Every benign photo under ``transform`` (``seeds`` placements, ``frames`` frames each), one after another."""
    yuv: list[np.ndarray] = []
    for seed in range(seeds):
        for name, image in syn.benign_images().items():
            rgb = syn.TRANSFORMS[transform](image, np.random.default_rng(_key("decoy", seed, name, transform)))
            yuv += noisy_frames(rgb, frames, seed)
    result = BenignResult(f"benign photos × `{transform}`")
    result.add(*guard_frames([video_frame(y, i) for i, y in enumerate(yuv)], blocklist))
    return result


# --- the whole suite ---------------------------------------------------------------------------------


@dataclass
class Suite:
    segments: list[SegmentResult] = field(default_factory=list)
    benign: list[BenignResult] = field(default_factory=list)
    seconds: float = 0.0


def _warm_up() -> None:
    """Fill the per-process caches (forked workers inherit them) before any work."""
    noise_bank()
    for scene in _SCENES:
        benign_clip(scene)
    syn.blocked_images()
    syn.benign_images()


def _worker_init() -> None:
    import cv2

    cv2.setNumThreads(1)  # one process per core: OpenCV's own threads would only contend


def _run_task(task: tuple) -> SegmentResult | BenignResult:
    kind, *args = task
    if kind == "segment":
        return run_segment(*args)
    if kind == "scene":
        return run_scene(*args)
    return run_decoys(*args)


def _cost(task: tuple) -> float:
    """Rough seconds, to start the slow tasks first."""
    kind, *args = task
    if kind == "scene":
        return args[1] * (0.045 if args[0] == "talking_head" else 0.006)
    if kind == "decoys":
        return args[1] * 9 * (0.3 if args[0] == "screen_camera" else 0.05 + 0.008 * args[2])
    return (1.0 if args[3] == "h264" else 0.3) + (0.3 if args[1] == "screen_camera" else 0.0)


def run_suite(
    blocklist: Path,
    *,
    seeds: int,
    h264: int,
    benign_frames: int,
    decoy_seeds: int,
    decoy_frames: int,
    jobs: int = 1,
    transforms: tuple[str, ...] | None = None,
    decoy_transforms: tuple[str, ...] | None = None,
    images: tuple[str, ...] = syn.BLOCKED_NAMES,
) -> Suite:
    """Run everything; ``h264`` is how many of each transform's segments also go through H.264.

    ``transforms`` limits the blocked segments, ``decoy_transforms`` the benign
    photos (both default to all of ``TRANSFORMS``).
    """
    transforms = tuple(syn.TRANSFORMS if transforms is None else transforms)
    decoy_transforms = tuple(syn.TRANSFORMS if decoy_transforms is None else decoy_transforms)
    tasks: list[tuple] = []
    for t, transform in enumerate(transforms):
        cases = [(image, seed) for seed in range(seeds) for image in images]
        for image, seed in cases:
            tasks.append(("segment", image, transform, seed, "raw", blocklist))
        for image, seed in (cases[t % len(images) :] + cases[: t % len(images)])[:h264]:
            tasks.append(("segment", image, transform, seed, "h264", blocklist))
    if benign_frames:
        tasks += [("scene", scene, benign_frames, blocklist) for scene in syn.BENIGN_SCENES]
    if decoy_seeds and decoy_frames:
        tasks += [("decoys", transform, decoy_seeds, decoy_frames, blocklist) for transform in decoy_transforms]
    tasks.sort(key=_cost, reverse=True)
    started = time.perf_counter()
    _warm_up()
    if jobs > 1:
        with multiprocessing.get_context("fork").Pool(jobs, initializer=_worker_init) as pool:
            results = list(pool.imap_unordered(_run_task, tasks, chunksize=1))
    else:
        results = [_run_task(task) for task in tasks]
    suite = Suite(seconds=time.perf_counter() - started)
    for result in results:
        (suite.segments if isinstance(result, SegmentResult) else suite.benign).append(result)
    order = {t: i for i, t in enumerate(syn.TRANSFORMS)}
    suite.segments.sort(key=lambda r: (order[r.transform], r.codec, r.image, r.seed))
    benign_order = [f"scene `{s}`" for s in syn.BENIGN_SCENES] + [f"benign photos × `{t}`" for t in syn.TRANSFORMS]
    suite.benign.sort(key=lambda r: benign_order.index(r.name))
    return suite


# --- summaries ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    transform: str
    codec: str
    total: int
    detected: int
    leaked_detected: int  # blocked frames unredacted within detected segments
    mean_distance: float
    worst_distance: int
    regions: str

    @property
    def recall(self) -> float:
        return self.detected / self.total if self.total else float("nan")


def summarise(segments: list[SegmentResult], codec: str) -> dict[str, Row]:
    rows: dict[str, Row] = {}
    for transform in syn.TRANSFORMS:
        group = [s for s in segments if s.transform == transform and s.codec == codec]
        if not group:
            continue
        detected = [s for s in group if s.detected]
        distances = [min(s.best_distance, 256) for s in group]
        kinds = Counter(s.best_region for s in detected if s.best_region)
        rows[transform] = Row(
            transform=transform,
            codec=codec,
            total=len(group),
            detected=len(detected),
            leaked_detected=sum(s.leaked for s in detected),
            mean_distance=float(np.mean(distances)),
            worst_distance=max(distances),
            regions=" ".join(f"{k} {n}" for k, n in kinds.most_common(2)),
        )
    return rows


def _recall_cell(row: Row | None) -> str:
    if row is None:
        return "–"
    return f"{row.detected}/{row.total} ({100 * row.recall:.0f} %)"


def _dist_cell(row: Row | None) -> str:
    return "–" if row is None else f"{row.mean_distance:.1f} / {row.worst_distance}"


def markdown(suite: Suite, *, seeds: int) -> str:
    raw, h264 = summarise(suite.segments, "raw"), summarise(suite.segments, "h264")
    per = max((r.total for r in h264.values()), default=0)
    lines = [
        f"Blocked stand-ins ({', '.join(syn.BLOCKED_NAMES)}) × {len(raw)} transforms × {seeds} seeds "
        f"(raw frames; {per} of each transform's segments also through H.264: libx264 CRF 26 veryfast, 2 B-frames). "
        f"Segment = {LEAD_IN} benign + {BLOCKED} blocked (still, fresh sensor noise) + {LEAD_OUT} benign frames; "
        f"default `GuardSettings` (sample every 5, delay 10), PDQ threshold {THRESHOLD}. "
        "Recall = segments with ≥ 1 blocked frame redacted; leaked = blocked frames passed unredacted inside "
        "detected segments; distance = best PDQ distance the guard saw while the image was shown (mean / worst "
        "segment); *via* = region kind of the best match (detected segments).",
        "",
        "| Transform | Recall (raw) | Leaked | Best distance | via | Recall (H.264) | Leaked | Best distance |",
        "| --- | --- | ---: | --- | --- | --- | ---: | --- |",
    ]
    for transform in syn.TRANSFORMS:
        r, h = raw.get(transform), h264.get(transform)
        if r is None and h is None:
            continue
        lines.append(
            f"| `{transform}` | {_recall_cell(r)} | {r.leaked_detected if r else '–'} | {_dist_cell(r)} | "
            f"{r.regions if r else ''} | {_recall_cell(h)} | {h.leaked_detected if h else '–'} | {_dist_cell(h)} |"
        )
    for codec, rows in (("raw", raw), ("h264", h264)):
        if rows:
            total = sum(r.total for r in rows.values())
            detected = sum(r.detected for r in rows.values())
            leaked = sum(r.leaked_detected for r in rows.values())
            lines.append(
                f"| **all ({codec})** | **{detected}/{total} ({100 * detected / total:.1f} %)** | **{leaked}** | | | | | |"
            )
    early = sum(s.lead_in_redacted for s in suite.segments)
    hits = [s.first_hit for s in suite.segments if s.first_hit is not None]
    lines += [
        "",
        f"Benign lead-in frames redacted (reach-back past the cut): {early}. "
        + (f"First matching sample: median {np.median(hits):.0f}, max {max(hits)} frames after the image appeared." if hits else ""),
    ]
    if suite.benign:
        lines += [
            "",
            "| Benign material | Frames | Redacted | Closest distance (region) |",
            "| --- | ---: | ---: | --- |",
        ]
        for b in suite.benign:
            closest = "no region above quality floor" if b.closest == NO_REGION else f"{b.closest} ({b.closest_region})"
            lines.append(f"| {b.name} | {b.frames} | {b.redacted} | {closest} |")
        frames = sum(b.frames for b in suite.benign)
        redacted = sum(b.redacted for b in suite.benign)
        closest = min(b.closest for b in suite.benign)
        lines.append(f"| **all benign** | **{frames}** | **{redacted}** | **{closest}** |")
    return "\n".join(lines)


def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(Path(__file__).resolve().parent), "describe", "--always", "--dirty"],
            capture_output=True, text=True, timeout=5,
        )
        return out.stdout.strip() or "?"
    except (OSError, subprocess.SubprocessError):
        return "?"


def _names(text: str | None) -> tuple[str, ...] | None:
    if text is None:
        return None
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = sorted(set(names) - set(syn.TRANSFORMS))
    if unknown:
        raise SystemExit(f"unknown transform(s): {', '.join(unknown)} (known: {', '.join(syn.TRANSFORMS)})")
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=None, help="seeds per image x transform (default 10; --quick: 1)")
    parser.add_argument("--h264", type=int, default=None, help="segments per transform also sent through H.264 (default 3; --quick: 1)")
    parser.add_argument("--benign-frames", type=int, default=None, help="frames per benign scene (default 300; --quick: 60)")
    parser.add_argument("--decoy-seeds", type=int, default=None, help="placements of each benign photo per transform (default 2; --quick: 1)")
    parser.add_argument("--decoy-frames", type=int, default=None, help="frames per placed benign photo (default 17; --quick: 6)")
    parser.add_argument("--transforms", help="comma-separated transforms for the blocked segments (default all)")
    parser.add_argument("--decoy-transforms", help="comma-separated transforms for the benign photos (default all)")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="worker processes (default 2)")
    parser.add_argument("--workdir", type=Path, help="where to write the temporary blocklist (default: a temp dir)")
    parser.add_argument("--json", type=Path, help="also write per-segment and benign results here")
    parser.add_argument("--quick", action="store_true", help="a smaller run (well under a minute)")
    args = parser.parse_args(argv)

    def pick(value: int | None, full: int, quick: int) -> int:
        return value if value is not None else (quick if args.quick else full)

    seeds = pick(args.seeds, 10, 1)
    h264 = pick(args.h264, 3, 1)
    benign_frames = pick(args.benign_frames, 300, 60)
    decoy_seeds = pick(args.decoy_seeds, 2, 1)
    decoy_frames = pick(args.decoy_frames, 17, 6)
    command = "python benchmarks/bench_robustness.py " + " ".join(sys.argv[1:] if argv is None else argv)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="livesafe-robustness-", dir=args.workdir) as tmp:
        blocklist = write_blocklist(Path(tmp) / "blocklist.txt")
        suite = run_suite(
            blocklist,
            seeds=seeds,
            h264=h264,
            benign_frames=benign_frames,
            decoy_seeds=decoy_seeds,
            decoy_frames=decoy_frames,
            jobs=args.jobs,
            transforms=_names(args.transforms),
            decoy_transforms=_names(args.decoy_transforms),
        )
    elapsed = time.perf_counter() - started
    print(markdown(suite, seeds=seeds))
    frames = len(suite.segments) * SEGMENT_FRAMES + sum(b.frames for b in suite.benign)
    print()
    print(
        f"Command: `{command.strip()}` — {elapsed:.1f} s wall, {args.jobs} worker process(es), "
        f"{frames} frames ({len(suite.segments)} segments); {platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, PyAV {av.__version__}, livesafe {_commit()}."
    )
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {
                    "seeds": seeds,
                    "threshold": THRESHOLD,
                    "lead_in": LEAD_IN,
                    "blocked": BLOCKED,
                    "lead_out": LEAD_OUT,
                    "seconds": elapsed,
                    "segments": [asdict(r) for r in suite.segments],
                    "benign": [asdict(b) for b in suite.benign],
                },
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

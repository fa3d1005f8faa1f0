#!/usr/bin/env python
"""Robustness curves: recall of the live guard against each transform's parameter, beside reference PDQ.

    python benchmarks/bench_robustness.py [--split report] [--pool all] [--per-family 30]
        [--decoys-per-family 16] [--list-size 1000000] [--jobs 2] [--json PATH] [--quick] [--bank]

What one *segment* is: 15 frames of a benign moving scene, then a picture shown
for 36 frames (1.2 s) under one of ``families.FAMILIES``' transforms with
parameters drawn at random over the family's whole range (30 % of segments
dissolve in over 4-12 frames instead of cutting), then 15 benign frames.  Each
frame gets fresh sensor noise, the whole segment goes through a real H.264
round trip (libx264, 2.5 Mb/s unless the family sets a bitrate, keyframe every
2 s, no B-frames: what a WebRTC publisher sends) and the decoded frames go
through a fresh ``StreamGuard`` with default settings.

The picture is a *listed* one of the chosen split of ``image_pool`` (its
reference PDQ hash, from ``pdqhash`` on the original picture, is in the
blocklist with ``--list-size`` random hashes, plus three hard negatives per
decoy 48, 56 and 64 bits from it) or, for the false-match side, a *decoy* (a
benign picture shown the same way: it must never be redacted).

Per segment we score from the guard's output alone: **caught** (any frame
showing the picture came out redacted), **leaked** (frames showing the picture,
alpha >= 0.5 in a dissolve, that came out unredacted although the segment was
caught: the design goal is 0), **early** (frames before the picture appeared
that were redacted: the reach-back overshooting), **hold** (frames after it
that stayed redacted: ``hold_seconds`` by design).  Beside it, **reference**:
Meta's PDQ (``pdqhash.compute_dihedral``) on every full decoded frame showing
the picture, caught if any of the 8 dihedral hashes is within 31 of the listed
hash with quality >= 50 -- what a plain frame-hashing relay would catch.

With ``--bank`` the guard also enforces a *bank* of the listed pictures
(``livesafe.banks``: each original hashed with its crop, cover and tile views,
as ``livesafe bank add`` does, read through a ``kind = "bank"`` list source),
beside the same list: what a platform holding the originals adds to a list
of their hashes.

Report on the **report** split (``--split report``, the default): pictures
nobody tuned the guard against.  Tune on ``--split tune`` only.  Nothing is
written to disk except the temporary blocklist (hashes only) and, with
``--json``, the per-segment results; never a frame.
"""

from __future__ import annotations

import os

# PDQ's column products are ~100x slower with OpenBLAS threads on a small VM; pin
# before numpy is imported (livesafe/__init__.py does it too, if imported first).
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
from collections import defaultdict
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:0] = [
    str(HERE.parent),
    str(HERE),
]  # the checkout (livesafe, sample_streams.synthetic) and this folder (families, image_pool)

import image_pool  # noqa: E402
from families import FAMILIES, HEIGHT, WIDTH, Stock  # noqa: E402

from livesafe.banks.media import hash_content  # noqa: E402
from livesafe.banks.store import BankStore  # noqa: E402
from livesafe.guard.matcher import LiveMatcher, Matcher  # noqa: E402
from livesafe.guard.stream_guard import GuardSettings, StreamGuard  # noqa: E402
from livesafe.lists import ListSpec  # noqa: E402
from livesafe.lists.sources import SourceContext  # noqa: E402
from livesafe.policy import Action  # noqa: E402
from livesafe.signals import signal_named  # noqa: E402

FPS = 30
TIME_BASE = Fraction(1, FPS)
LEAD_IN, SHOWN, LEAD_OUT = 15, 36, 15
THRESHOLD, MIN_QUALITY = 31, 50
DEFAULT_KBPS = 2500
Y_NOISE, C_NOISE, NOISE_FIELDS = 1.2, 0.6, 16
HARD_NEGATIVES = (48, 56, 64)


# --- the list ----------------------------------------------------------------------------------


def _flip(value: np.ndarray, bits: int, rng: np.random.Generator) -> np.ndarray:
    unpacked = np.unpackbits(value)
    unpacked[rng.choice(unpacked.size, size=bits, replace=False)] ^= 1
    return np.packbits(unpacked)


def write_blocklist(
    path: Path, listed: dict[str, np.ndarray], decoys: dict[str, np.ndarray], size: int
) -> dict[str, str]:
    """The listed pictures' reference hashes, hard negatives near each decoy, random hashes up to ``size``.

    Returns each listed picture's hash (hex)."""
    rng = np.random.default_rng(20261203)
    listed_hex = {name: image_pool.reference_hash(p).tobytes().hex() for name, p in listed.items()}
    negatives = [_flip(image_pool.reference_hash(p), d, rng) for p in decoys.values() for d in HARD_NEGATIVES]
    count = max(0, size - len(listed_hex) - len(negatives))
    with path.open("w") as out:
        out.write("# livesafe robustness benchmark: reference PDQ of benign stand-in pictures + random hashes\n")
        out.writelines(f"pdq {h}\n" for h in listed_hex.values())
        out.writelines(f"pdq {h.tobytes().hex()}\n" for h in negatives)
        for lo in range(0, count, 100_000):
            block = rng.integers(0, 256, size=(min(100_000, count - lo), 32), dtype=np.uint8)
            out.writelines(f"pdq {row.tobytes().hex()}\n" for row in block)
    return listed_hex


def bank_of(listed: dict[str, np.ndarray]) -> BankStore:
    """The listed pictures banked with their views, from PNG bytes in memory as ``livesafe bank add`` reads files."""
    banks = BankStore(":memory:")
    items = []
    for name, picture in sorted(listed.items()):
        ok, png = cv2.imencode(".png", np.ascontiguousarray(picture[..., ::-1]))
        assert ok
        items.append(
            (name.replace(":", "-").replace("/", "-")[:100], hash_content(png.tobytes(), name, [signal_named("pdq")]))
        )
    banks.add("bench", items, "bench_robustness")
    return banks


# --- segments ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Task:
    family: str
    number: int  # the segment's number within its family (and kind)
    decoy: bool
    seed: int


@dataclass
class Result:
    family: str
    number: int
    decoy: bool
    picture: str
    bin: str
    params: dict
    fade: int  # frames of dissolve, 0: a cut
    frames: int
    blocked: int  # frames showing the picture (alpha >= 0.5)
    caught: bool
    leaked: int
    early: int
    hold: int
    redacted: int  # frames redacted in all
    reference_caught: bool
    reference_best: int  # best reference distance over the frames showing the picture
    first_hit: int | None  # shown-frame index of the first redacted frame showing the picture
    guard_ms: float  # StreamGuard.push per frame, mean


_STATE: dict = {}


def _yuv(rgb: np.ndarray) -> np.ndarray:
    return av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24").reformat(format="yuv420p").to_ndarray()


def _noise() -> np.ndarray:
    if "noise" not in _STATE:
        rng = np.random.default_rng(20240611)
        bank = np.empty((NOISE_FIELDS, HEIGHT * 3 // 2, WIDTH), dtype=np.int16)
        for k in range(NOISE_FIELDS):
            bank[k, :HEIGHT] = np.rint(rng.standard_normal((HEIGHT, WIDTH), dtype=np.float32) * Y_NOISE)
            bank[k, HEIGHT:] = np.rint(rng.standard_normal((HEIGHT // 2, WIDTH), dtype=np.float32) * C_NOISE)
        _STATE["noise"] = bank
    return _STATE["noise"]


def render(
    task: Task, listed: dict[str, np.ndarray], decoys: dict[str, np.ndarray]
) -> tuple[str, dict, str, int, list[np.ndarray], np.ndarray, int | None]:
    """(picture, params, bin, fade, yuv frames, alpha per frame, bitrate) of one segment."""
    family = FAMILIES[task.family]
    rng = np.random.default_rng([task.seed, list(FAMILIES).index(task.family), task.number, int(task.decoy)])
    names = sorted(decoys if task.decoy else listed)
    name = names[(task.number + task.seed) % len(names)]
    picture = (decoys if task.decoy else listed)[name]
    stock = Stock([p for n, p in sorted(decoys.items()) if n != name])
    params = family.draw(rng)
    shown = family.render(picture, params, rng, stock)
    before, after = stock.backdrop(rng), stock.backdrop(rng)
    fade = int(rng.integers(4, 13)) if rng.random() < 0.3 else 0
    rgb: list[np.ndarray] = []
    alpha = np.zeros(LEAD_IN + SHOWN + LEAD_OUT, np.float32)
    for i in range(LEAD_IN):
        rgb.append(before(i))
    for j in range(SHOWN):
        a = min(1.0, (j + 1) / fade) if fade else 1.0
        frame = shown.frames(j)
        if a < 1.0:
            frame = np.clip(before(LEAD_IN + j) * (1 - a) + frame * a, 0, 255).astype(np.uint8)
        alpha[LEAD_IN + j] = a
        rgb.append(frame)
    for i in range(LEAD_OUT):
        rgb.append(after(i))
    bank = _noise()
    first = int(rng.integers(NOISE_FIELDS))
    yuv = [
        np.clip(_yuv(f).astype(np.int16) + bank[(first + k) % NOISE_FIELDS], 0, 255).astype(np.uint8)
        for k, f in enumerate(rgb)
    ]
    return name, params, family.bin_of(params), fade, yuv, alpha, shown.bitrate_kbps


def h264_round_trip(yuv: list[np.ndarray], kbps: int) -> list[av.VideoFrame]:
    """libx264 at ``kbps`` into an in-memory MP4 and back (output order = input order)."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.time_base = TIME_BASE
        stream.bit_rate = kbps * 1000
        stream.options = {
            "preset": "veryfast",
            "threads": "1",  # one per worker; also keeps the output reproducible
            "x264-params": f"keyint=60:min-keyint=60:scenecut=0:bframes=0:vbv-maxrate={kbps}:vbv-bufsize={kbps}",
        }
        for i, plane in enumerate(yuv):
            frame = av.VideoFrame.from_ndarray(plane, format="yuv420p")
            frame.pts, frame.time_base = i, TIME_BASE
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    buffer.seek(0)
    with av.open(buffer, "r") as source:
        decoded = list(source.decode(video=0))
    if len(decoded) != len(yuv):
        raise RuntimeError(f"H.264 round trip returned {len(decoded)} of {len(yuv)} frames")
    for i, frame in enumerate(decoded):
        frame.pts, frame.time_base = i, TIME_BASE
    return decoded


def guard(frames: list[av.VideoFrame], matcher: Matcher, stream: str) -> tuple[list[Action], float]:
    """Actions per frame of a fresh default StreamGuard, and its mean push time (ms)."""
    g = StreamGuard(lambda: matcher, GuardSettings(), stream_id=stream)
    actions: dict[int, Action] = {}
    started = time.perf_counter()
    for frame in frames:
        for item in g.push(frame):
            actions[item.index] = item.action
    for item in g.flush():
        actions[item.index] = item.action
    elapsed = time.perf_counter() - started
    if sorted(actions) != list(range(len(frames))) or g.stats.errors:
        raise RuntimeError(
            f"{stream}: guard returned {len(actions)} of {len(frames)} frames with {g.stats.errors} errors"
        )
    return [actions[i] for i in range(len(frames))], 1000 * elapsed / len(frames)


def reference(frames: list[av.VideoFrame], alpha: np.ndarray, target: str | None) -> tuple[bool, int]:
    """Reference PDQ, dihedral, on every full frame showing the picture: (caught, best distance)."""
    import pdqhash

    if target is None:
        return False, 256
    want = np.unpackbits(np.frombuffer(bytes.fromhex(target), np.uint8)).astype(bool)
    best, caught = 256, False
    for frame, a in zip(frames, alpha, strict=True):
        if a < 0.5:
            continue
        hashes, quality = pdqhash.compute_dihedral(frame.to_ndarray(format="rgb24"))
        d = min(int((np.asarray(h, bool) != want).sum()) for h in hashes)
        best = min(best, d)
        caught |= d <= THRESHOLD and quality >= MIN_QUALITY
    return caught, best


def run(task: Task) -> Result:
    listed, decoys, listed_hex, matcher = _STATE["listed"], _STATE["decoys"], _STATE["hex"], _STATE["matcher"]
    name, params, bin_, fade, yuv, alpha, kbps = render(task, listed, decoys)
    frames = h264_round_trip(yuv, kbps or DEFAULT_KBPS)
    actions, ms = guard(frames, matcher, f"{task.family}-{task.number}")
    redacted = np.array([a != Action.PASS for a in actions])
    showing = alpha >= 0.5
    shown_at = np.flatnonzero(showing)
    caught = bool((redacted & showing).any())
    ref_caught, ref_best = reference(frames, alpha, None if task.decoy else listed_hex[name])
    hits = np.flatnonzero(redacted & showing)
    return Result(
        family=task.family, number=task.number, decoy=task.decoy, picture=name, bin=bin_,
        params={k: (round(v, 3) if isinstance(v, float) else v) for k, v in params.items()},
        fade=fade, frames=len(frames), blocked=int(showing.sum()), caught=caught,
        leaked=int((showing & ~redacted).sum()) if caught else 0,
        early=int(redacted[: LEAD_IN].sum()),
        hold=int(redacted[LEAD_IN + SHOWN :].sum()),
        redacted=int(redacted.sum()),
        reference_caught=ref_caught, reference_best=ref_best,
        first_hit=int(hits[0] - shown_at[0]) if len(hits) else None,
        guard_ms=round(ms, 3),
    )  # fmt: skip


def _worker_init() -> None:
    import cv2

    cv2.setNumThreads(1)


def run_all(tasks: list[Task], jobs: int) -> list[Result]:
    if jobs <= 1:
        _worker_init()
        return [run(t) for t in tasks]
    # Forked workers share the parent's matcher (a 1M index is built once).
    with multiprocessing.get_context("fork").Pool(jobs, initializer=_worker_init) as pool:
        return list(pool.imap_unordered(run, tasks, chunksize=1))


# --- report ------------------------------------------------------------------------------------


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.0f} % ({part}/{whole})" if whole else "–"


def markdown(results: list[Result], meta: dict) -> str:
    blocked = [r for r in results if not r.decoy]
    decoys = [r for r in results if r.decoy]
    lines = [
        f"Split **{meta['split']}** (pool {meta['pool']}: {meta['listed']} listed pictures, {meta['decoys']} decoys), "
        f"list of {meta['list_size']:,} PDQ hashes{meta['bank']}, "
        f"H.264 at {DEFAULT_KBPS} kb/s unless the family sets it, "
        f"seed {meta['seed']}, commit {meta['commit']}, {meta['machine']}; {meta['seconds']:.0f} s.",
        "",
        "| family | segments | livesafe caught | reference PDQ caught "
        "| leaked frames in caught | early / hold frames | guard ms/frame |",
        "|---|---|---|---|---|---|---|",
    ]
    by_family: dict[str, list[Result]] = defaultdict(list)
    for r in blocked:
        by_family[r.family].append(r)
    for name in FAMILIES:
        rs = by_family.get(name, [])
        if not rs:
            continue
        caught = [r for r in rs if r.caught]
        lines.append(
            f"| {name} | {len(rs)} | {_pct(len(caught), len(rs))} "
            f"| {_pct(sum(r.reference_caught for r in rs), len(rs))} "
            f"| {sum(r.leaked for r in caught)} in {sum(r.leaked > 0 for r in caught)} segments "
            f"| {sum(r.early for r in rs)} / {sum(r.hold for r in rs)} | {np.mean([r.guard_ms for r in rs]):.2f} |"
        )
    total_caught = [r for r in blocked if r.caught]
    lines.append(
        f"| **all** | {len(blocked)} | **{_pct(len(total_caught), len(blocked))}** "
        f"| {_pct(sum(r.reference_caught for r in blocked), len(blocked))} | **{sum(r.leaked for r in total_caught)}** "
        f"| {sum(r.early for r in blocked)} / {sum(r.hold for r in blocked)} "
        f"| {np.mean([r.guard_ms for r in blocked] or [0]):.2f} |"
    )
    frames = sum(r.frames for r in decoys) + sum(LEAD_IN + LEAD_OUT for r in blocked)
    lines += [
        "",
        f"False side: {len(decoys)} segments of decoy pictures under the same families "
        f"({sum(r.frames for r in decoys):,} frames), "
        f"plus the benign lead-ins and lead-outs of the segments above "
        f"({sum(LEAD_IN + LEAD_OUT for r in blocked):,} frames): "
        f"**{sum(r.redacted for r in decoys)} decoy frames redacted** "
        f"in {sum(r.redacted > 0 for r in decoys)} segments; "
        f"{frames:,} benign frames in all "
        "(lead-in frames redacted are the *early* column above, lead-out frames the *hold*).",
        "",
        "Curves (recall against the family's parameter, livesafe / reference PDQ on the same frames):",
        "",
    ]
    for name, family in FAMILIES.items():
        rs = by_family.get(name, [])
        if not rs:
            continue
        cells = []
        for b in family.bins:
            in_bin = [r for r in rs if r.bin == b]
            if in_bin:
                cells.append(
                    f"{b}: {sum(r.caught for r in in_bin)}/{len(in_bin)} vs {sum(r.reference_caught for r in in_bin)}"
                )
        lines.append(f"* **{name}** ({family.parameter}): " + " · ".join(cells))
    firsts = [r.first_hit for r in total_caught if r.first_hit is not None]
    if firsts:
        lines += [
            "",
            "First redacted frame showing the picture, from its first frame: "
            f"median {np.median(firsts):.0f}, max {max(firsts)} (0 = redacted from its first frame).",
        ]
    return "\n".join(lines) + "\n"


def _commit() -> str:
    try:
        return subprocess.run(
            ["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--split", choices=image_pool.SPLITS, default="report", help="report (default): figures; tune: development only"
    )
    parser.add_argument(
        "--pool",
        choices=image_pool.POOLS,
        default="all",
        help="skimage (ships with the test extras), debian (wallpaper packages) or all",
    )
    parser.add_argument(
        "--per-family", type=int, default=None, help="listed-picture segments per family (default 30; --quick 4)"
    )
    parser.add_argument(
        "--decoys-per-family", type=int, default=None, help="decoy segments per family (default 16; --quick 2)"
    )
    parser.add_argument(
        "--list-size", type=int, default=None, help="PDQ hashes in the list (default 1,000,000; --quick 10,000)"
    )
    parser.add_argument("--families", help="comma-separated families (default all)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--json", type=Path, help="also write the per-segment results here")
    parser.add_argument("--quick", action="store_true", help="a small run (a few minutes)")
    parser.add_argument("--bank", action="store_true", help="also a bank of the listed pictures with their views")
    args = parser.parse_args(argv)
    per_family = args.per_family if args.per_family is not None else (4 if args.quick else 30)
    per_decoy = args.decoys_per_family if args.decoys_per_family is not None else (2 if args.quick else 16)
    list_size = args.list_size if args.list_size is not None else (10_000 if args.quick else 1_000_000)
    names = tuple(FAMILIES) if not args.families else tuple(n.strip() for n in args.families.split(","))
    unknown = [n for n in names if n not in FAMILIES]
    if unknown:
        parser.error(f"unknown families {unknown}; known: {', '.join(FAMILIES)}")

    started = time.perf_counter()
    listed, decoys = image_pool.pool(args.split, args.pool)
    with tempfile.TemporaryDirectory(prefix="livesafe-robustness-") as tmp:
        path = Path(tmp) / "list.txt"
        _STATE["hex"] = write_blocklist(path, listed, decoys, list_size)
        _STATE["listed"], _STATE["decoys"] = listed, decoys
        specs = [ListSpec(path=path)]
        context = SourceContext()
        bank_note = ""
        if args.bank:
            context = SourceContext(banks=bank_of(listed))
            specs.append(ListSpec(kind="bank", name="bench"))
            (summary,) = context.banks.banks() if context.banks else ()
            bank_note = f" plus a bank of the {summary.contents} listed pictures' views ({summary.hashes:,} PDQ hashes)"
        _STATE["matcher"] = LiveMatcher(specs, context=context).current
    _noise()
    tasks = [Task(n, k, False, args.seed) for n in names for k in range(per_family)]
    tasks += [Task(n, k, True, args.seed) for n in names for k in range(per_decoy)]
    results = run_all(tasks, args.jobs)
    order = {n: i for i, n in enumerate(FAMILIES)}
    results.sort(key=lambda r: (r.decoy, order[r.family], r.number))
    meta = {
        "split": args.split, "pool": args.pool, "listed": len(listed), "decoys": len(decoys), "list_size": list_size,
        "seed": args.seed, "commit": _commit(), "bank": bank_note,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {args.jobs} jobs",
        "seconds": time.perf_counter() - started,
    }  # fmt: skip
    print(markdown(results, meta))
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "segments": [asdict(r) for r in results]}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

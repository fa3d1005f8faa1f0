"""Our PDQ vs Meta's reference (``pdqhash``): agreement and speed.

Natural photos: the scikit-image samples of ``sample_streams.synthetic`` plus random
crops at random scales.  Three paths are compared with the reference hash of the RGB image:
exact float luma at full size (should be 0 bits), the live path (RGB ->
yuv420p -> Y plane, hashed at half size with ``shrink=2``), and the Y plane at
full size.  Then timing on a 720p frame.

    python benchmarks/bench_pdq.py [--crops 12]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import av
import cv2
import numpy as np
import pdqhash

from livesafe.guard.frames import luma_view
from livesafe.guard.search import View, view_luma
from livesafe.guard.views import Planes
from livesafe.signals import SIGNALS
from livesafe.signals.pdq import luma_from_rgb

sys.path.insert(
    0, str(Path(__file__).resolve().parent.parent)
)  # sample_streams.synthetic is in the checkout, not in the installed package
from sample_streams.synthetic import natural_samples  # noqa: E402

PDQ = SIGNALS["pdq"]


def live_hash(y: np.ndarray, scale: float):
    """What the guard hashes for the whole frame (half size above 256 px)."""
    luma, shrink = view_luma(Planes(y, scale), View("frame", box=(0, 0, y.shape[1], y.shape[0])))
    return PDQ.hash_luma(luma, scale, shrink=shrink)


def reference_bits(rgb: np.ndarray) -> tuple[int, int]:
    vector, quality = pdqhash.compute(rgb)
    return int("".join(str(int(b)) for b in vector), 2), quality


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--crops", type=int, default=12)
    args = parser.parse_args()
    images = natural_samples(args.crops)
    paths = {"exact (float luma, full size)": [], "live (Y plane, half size)": [], "Y plane, full size": []}
    quality_gap = []
    for rgb in images:
        ref, ref_quality = reference_bits(rgb)
        y, scale = luma_view(av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p"))
        hashes = {
            "exact (float luma, full size)": PDQ.hash_luma(luma_from_rgb(rgb)),
            "live (Y plane, half size)": live_hash(y, scale),
            "Y plane, full size": PDQ.hash_luma(y, scale),
        }
        for name, h in hashes.items():
            paths[name].append(bin(int(PDQ.format_hex(h.variants[0]), 16) ^ ref).count("1"))
        quality_gap.append(abs(hashes["live (Y plane, half size)"].quality - ref_quality))
    print(f"{len(images)} natural images (scikit-image samples + random crops/scales)\n")
    print("| path | mean bits from reference | p95 | max |")
    print("|---|---|---|---|")
    for name, distances in paths.items():
        d = np.array(distances)
        print(f"| {name} | {d.mean():.2f} | {np.percentile(d, 95):.0f} | {d.max()} |")
    print(f"\nlive-path quality: mean |difference| {np.mean(quality_gap):.2f}, max {max(quality_gap)}")
    frame = av.VideoFrame.from_ndarray(cv2.resize(images[3], (1280, 720)), format="rgb24").reformat(format="yuv420p")
    rgb = frame.to_ndarray(format="rgb24")
    y, scale = luma_view(frame)

    def per_call(fn, n: int = 100) -> float:
        fn()
        started = time.perf_counter()
        for _ in range(n):
            fn()
        return (time.perf_counter() - started) / n * 1000

    print("\n| 720p frame | ms per hash |")
    print("|---|---|")
    print(f"| reference pdqhash (RGB, full size) | {per_call(lambda: pdqhash.compute(rgb), 20):.2f} |")
    print(f"| ours, Y plane full size | {per_call(lambda: PDQ.hash_luma(y, scale)):.2f} |")
    live = per_call(lambda: PDQ.hash_luma(Planes(y, scale).fine.luma, scale, shrink=2))
    print(f"| ours, live path (half-size copy + hash) | {live:.2f} |")
    dihedral = per_call(lambda: PDQ.hash_luma(Planes(y, scale).fine.luma, scale, shrink=2, all_orientations=True))
    print(f"| ours, live path + 8 dihedral variants | {dihedral:.2f} |")


if __name__ == "__main__":
    main()

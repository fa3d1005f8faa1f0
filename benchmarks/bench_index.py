#!/usr/bin/env python
"""Speed and memory of ``HammingIndex`` on random hashes.

    python benchmarks/bench_index.py [--n 1000000] [--seed 0]

For 256-bit (PDQ, radius 31) lists of 10k, 100k and ``--n`` hashes, and a
64-bit (imagehash, radius 8) list of ``--n`` hashes, prints: build time,
``memory_bytes()`` and the process RSS growth, single-query latency p50/p99
for misses (random queries) and hits (a stored hash with some bits flipped:
10-30 for PDQ, 3-8 for imagehash), and the per-query time of batches of 48,
the live path's batch size.  Every hit must be found (the index is exact); the
run fails loudly if one is not.

Random hashes spread evenly over the index's buckets; real lists are
clustered, which fills some buckets more.  Timings on a shared VM move by tens
of percent between runs, so the load average is printed.
"""

from __future__ import annotations

import argparse
import gc
import os
import time

import numpy as np

from livesafe.index import HammingIndex

_BATCH = 48
_SINGLE_RUNS = 1000
_BATCH_RUNS = 100


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def near(
    hashes: np.ndarray, count: int, flips: tuple[int, int], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``count`` random stored rows with a random number (within ``flips``) of distinct bits flipped.

    Returns (queries, flips)."""
    rows = rng.integers(0, len(hashes), size=count)
    bits = hashes.shape[1] * 8
    flip_counts = rng.integers(flips[0], flips[1] + 1, size=count)
    order = np.argsort(rng.random((count, bits)), axis=1)  # a random permutation of bit positions per query
    mask = np.zeros((count, bits), dtype=bool)
    mask[np.arange(count)[:, None], order] = np.arange(bits)[None, :] < flip_counts[:, None]
    return hashes[rows] ^ np.packbits(mask, axis=1), flip_counts


def percentile_us(samples: list[float], q: float) -> float:
    return float(np.percentile(samples, q)) * 1e6


def bench(label: str, n: int, nbytes: int, radius: int, flips: tuple[int, int], rng: np.random.Generator) -> None:
    hashes = rng.integers(0, 256, size=(n, nbytes), dtype=np.uint8)
    gc.collect()
    rss_before = rss_bytes()
    start = time.perf_counter()
    index = HammingIndex(hashes, radius)
    build = time.perf_counter() - start
    rss_growth = rss_bytes() - rss_before

    misses = rng.integers(0, 256, size=(_SINGLE_RUNS, nbytes), dtype=np.uint8)
    hits, hit_flips = near(hashes, _SINGLE_RUNS, flips, rng)
    index.nearest(misses[:_BATCH])  # warm-up: first-call costs are not per-query costs

    single: dict[str, list[float]] = {"miss": [], "hit": []}
    found = 0
    for i in range(_SINGLE_RUNS):
        for kind, queries in (("miss", misses), ("hit", hits)):
            t = time.perf_counter()
            _, dists = index.nearest(queries[i : i + 1])
            single[kind].append(time.perf_counter() - t)
            found += kind == "hit" and 0 <= dists[0] <= hit_flips[i]

    batch_misses = rng.integers(0, 256, size=(_BATCH_RUNS, _BATCH, nbytes), dtype=np.uint8)
    batch_hits, batch_flips = near(hashes, _BATCH_RUNS * _BATCH, flips, rng)
    batched: dict[str, list[float]] = {"miss": [], "hit": []}
    for b in range(_BATCH_RUNS):
        for kind, queries in (("miss", batch_misses[b]), ("hit", batch_hits[b * _BATCH : (b + 1) * _BATCH])):
            t = time.perf_counter()
            _, dists = index.nearest(queries)
            batched[kind].append((time.perf_counter() - t) / _BATCH)
            if kind == "hit":
                found += int(((dists >= 0) & (dists <= batch_flips[b * _BATCH : (b + 1) * _BATCH])).sum())
    expected = _SINGLE_RUNS + _BATCH_RUNS * _BATCH
    if found != expected:
        raise SystemExit(f"{label}: only {found} of {expected} planted near neighbours found")

    print(
        f"{label:<22} build {build:6.2f} s   memory_bytes {index.memory_bytes() / 2**20:7.1f} MiB"
        f"   RSS +{rss_growth / 2**20:7.1f} MiB   hits found {found}/{expected}"
    )
    for kind in ("miss", "hit"):
        print(
            f"{'':<22} {kind:<4}  single p50 {percentile_us(single[kind], 50):7.1f} us"
            f"  p99 {percentile_us(single[kind], 99):7.1f} us"
            f"   batch of {_BATCH}: {percentile_us(batched[kind], 50):6.1f} us/query (p50 over batches)"
        )
    if nbytes == 32:
        near_hits(index, hashes, rng)


def near_hits(index: HammingIndex, hashes: np.ndarray, rng: np.random.Generator) -> None:
    """``within(radius 54)``, what the guard's search asks (threshold 31 + near margin 23): share of
    planted neighbours found by distance, and cost.

    Beyond the index's own radius the search is best effort (the same buckets are read), so
    this is a recall, not a check."""
    cells = []
    for distance in (32, 40, 48, 54):
        queries, _ = near(hashes, _BATCH * 20, (distance, distance), rng)
        times, found = [], 0
        for b in range(20):
            part = slice(b * _BATCH, (b + 1) * _BATCH)
            t = time.perf_counter()
            q, r, _ = index.within(queries[part], 54, limit=2)
            times.append((time.perf_counter() - t) / _BATCH)
            # A query's own row is the only hash within 54 of it (random hashes sit near 128).
            found += len(set(q.tolist()))
        cells.append(f"{distance}: {100 * found / len(queries):.1f} %")
    print(
        f"{'':<22} near hits within 54 found, by distance: {', '.join(cells)}   "
        f"batch of {_BATCH}: {percentile_us(times, 50):6.1f} us/query"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="largest list size (default 1,000,000)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)

    print(f"numpy {np.__version__}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    started = time.perf_counter()
    for n in sorted({min(10_000, args.n), min(100_000, args.n), args.n}):
        bench(f"PDQ 256-bit r=31 N={n:,}", n, 32, 31, (10, 30), rng)
    bench(f"64-bit r=8 N={args.n:,}", args.n, 8, 8, (3, 8), rng)
    print(f"total {time.perf_counter() - started:.0f} s, load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()

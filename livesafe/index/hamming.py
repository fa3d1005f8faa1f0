"""Exact fixed-radius Hamming search over binary hashes by multi-index hashing.

Each stored hash is cut into chunks of at most 16 bits.  If every chunk ``i``
differed from the query in more than ``r_i`` bits, the whole hash would differ in
at least ``sum(r_i + 1)`` bits, so choosing radii with ``sum(r_i + 1) >
max_distance`` guarantees that every match agrees with the query within ``r_i``
bits in some chunk (Norouzi et al., "Fast search in Hamming space with
multi-index hashing").  Probing each chunk's value and its neighbours within
``r_i`` bits therefore finds every match: the search is exact.

Per chunk the hashes are kept sorted by chunk value (CSR: an offsets array with
one slot per possible value), each sorted entry holding up to 128 bits of the
hash, the row numbers alongside.  A probe is then one contiguous run of entries,
and nearly all non-matches are rejected from those bits instead of by a random
read of the full hash: on large lists memory latency, not arithmetic, is what
costs.  Everything is vectorised over all queries and probes at once, in
segments that bound temporary memory.  Lists of a few hundred hashes are
scanned by brute force instead, which is cheaper there and needs no tables.
"""

from __future__ import annotations

import heapq
import itertools
import math
import operator
from dataclasses import dataclass

import numpy as np

# Costs per query (~ns, fitted to batched timings on a 2-core EPYC VM); they
# only choose between strategies, all of them exact.
_PROBE_COST = 40.0  # per probed bucket
_CANDIDATE_COST = 14.0  # per entry read from a bucket
_VERIFY_COST = 50.0  # per entry that passes the filter and needs its full hash read
_BRUTE_COST = 1.5  # per stored 64-bit word

_MAX_CHUNK_BITS = 16
# 64-bit words of each hash stored in the entries: 128 bits leave an unrelated
# hash ~1e-9 chance of passing for PDQ's radius 31.
_FILTER_WORDS = 2
# Candidates per vectorised step and query x hash cells per brute-force step:
# bounds temporary memory.
_SEGMENT_CANDIDATES = 1 << 16
_BRUTE_CELLS = 1 << 20
_NO_MATCH = np.iinfo(np.int64).max


@dataclass(frozen=True, slots=True)
class _Plan:
    """The chunks to index and how far to probe each."""

    words: tuple[int, ...]  # 64-bit word holding each chunk
    shifts: tuple[int, ...]
    widths: tuple[int, ...]
    radii: tuple[int, ...]
    cost: float


class HammingIndex:
    """Nearest-neighbour search by Hamming distance within a fixed radius."""

    def __init__(self, hashes: np.ndarray, max_distance: int) -> None:
        if not isinstance(hashes, np.ndarray) or hashes.dtype != np.uint8 or hashes.ndim != 2:
            raise ValueError("hashes must be a 2-D uint8 numpy array (N, nbytes)")
        nbytes = int(hashes.shape[1])
        if nbytes == 0 or nbytes % 8:
            raise ValueError(f"hash length must be a positive multiple of 8 bytes, got {nbytes}")
        if isinstance(max_distance, bool):
            raise ValueError("max_distance must be an integer")
        try:
            radius = operator.index(max_distance)
        except TypeError:
            raise ValueError(f"max_distance must be an integer, got {max_distance!r}") from None
        if not 0 <= radius <= nbytes * 8:
            raise ValueError(f"max_distance must be in 0..{nbytes * 8}, got {radius}")
        if len(hashes) >= 1 << 32:
            raise ValueError("at most 2**32 - 1 hashes are supported")

        self._nbytes = nbytes
        self._radius = radius
        self._count = len(hashes)
        # Our own copy: the index must not change if the caller reuses their array.
        words = np.array(hashes, order="C").view(np.uint64)
        self._plan = _choose_plan(nbytes * 8, radius, self._count)
        # Entries hold the whole hash when it has at most _FILTER_WORDS words.
        self._exact_entries = words.shape[1] <= _FILTER_WORDS
        self._words: np.ndarray | None = None
        if self._plan is None or not self._exact_entries:
            self._words = words
        if self._plan is not None:
            self._build_tables(words, self._plan)

    def __len__(self) -> int:
        return self._count

    @property
    def nbytes(self) -> int:
        return self._nbytes

    def memory_bytes(self) -> int:
        """Bytes of the arrays held (tables, entries, the copy of the hashes when still needed)."""
        arrays = [] if self._words is None else [self._words]
        if self._plan is not None:
            arrays += [
                self._entries,
                self._rows,
                self._offsets,
                self._probe_base,
                self._probe_chunk,
                self._probe_mask,
                self._probe_filter,
            ]
        return int(sum(a.nbytes for a in arrays))

    def nearest(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Row of the nearest stored hash within the radius (ties: lowest row) and its distance; -1 when none."""
        q64 = self._queries(queries)
        index = np.full(len(q64), -1, dtype=np.int64)
        distance = np.full(len(q64), -1, dtype=np.int64)
        hit_query, rows, dists = self._hits(q64, self._radius)
        if len(hit_query):
            best = np.full(len(q64), _NO_MATCH, dtype=np.int64)
            np.minimum.at(best, hit_query, (dists << 32) | rows)
            found = best != _NO_MATCH
            index[found] = best[found] & 0xFFFFFFFF
            distance[found] = best[found] >> 32
        return index, distance

    def within(self, queries: np.ndarray, radius: int, limit: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Up to ``limit`` stored hashes per query within ``radius``, nearest first (ties: lowest row).

        Returns ``(query, row, distance)`` arrays, sorted by query then
        distance.  Exact up to the index's own radius, like ``nearest``.  Beyond
        it the search is *best effort*: it reads the same buckets, which hold
        a hash ``d`` bits away only if some chunk differs in at most its probe
        radius (for PDQ at 1M hashes and radius 31: 98 % of hashes 48 bits
        away, 91 % at 54; ``benchmarks/bench_index.py`` measures it).  Small
        lists, scanned by brute force, are exact at any radius.  The guard uses
        this for views that are *nearly* a listed picture, to refine them:
        missing a few costs a refinement, never a false match.
        """
        q64 = self._queries(queries)
        if isinstance(radius, bool) or not isinstance(radius, (int, np.integer)) or not 0 <= radius <= self._nbytes * 8:
            raise ValueError(f"radius must be an integer in 0..{self._nbytes * 8}, got {radius!r}")
        if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1:
            raise ValueError(f"limit must be a positive integer, got {limit!r}")
        hit_query, rows, dists = self._hits(q64, int(radius))
        if len(hit_query) == 0:
            return hit_query, rows, dists
        order = np.lexsort((rows, dists, hit_query))
        hit_query, rows, dists = hit_query[order], rows[order], dists[order]
        # Rank within each query's run; a row can appear from several chunks' probes.
        fresh = np.r_[True, (hit_query[1:] != hit_query[:-1]) | (rows[1:] != rows[:-1])]
        hit_query, rows, dists = hit_query[fresh], rows[fresh], dists[fresh]
        first = np.r_[0, np.flatnonzero(np.diff(hit_query)) + 1]
        rank = np.arange(len(hit_query)) - np.repeat(first, np.diff(np.r_[first, len(hit_query)]))
        keep = rank < limit
        return hit_query[keep], rows[keep], dists[keep]

    def _queries(self, queries: np.ndarray) -> np.ndarray:
        if not isinstance(queries, np.ndarray) or queries.dtype != np.uint8 or queries.ndim != 2:
            raise ValueError("queries must be a 2-D uint8 numpy array (Q, nbytes)")
        if queries.shape[1] != self._nbytes:
            raise ValueError(f"queries must have {self._nbytes} bytes per hash, got {queries.shape[1]}")
        return np.ascontiguousarray(queries).view(np.uint64)

    def _hits(self, q64: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(query, row, distance) of stored hashes found within ``radius``, unordered, maybe repeated."""
        if len(q64) == 0 or self._count == 0:
            empty = np.empty(0, dtype=np.int64)
            return empty, empty, empty
        if self._plan is None:
            return self._brute_force(q64, radius)
        return self._multi_index(q64, radius)

    # -- brute force -------------------------------------------------------

    def _brute_force(self, q64: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Scan every stored hash, a block of queries at a time."""
        words = self._words
        assert words is not None
        step = max(1, _BRUTE_CELLS // self._count)
        found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        for lo in range(0, len(q64), step):
            block = q64[lo : lo + step]
            dist = np.zeros((len(block), self._count), dtype=np.uint16)
            for w in range(words.shape[1]):
                dist += np.bitwise_count(words[:, w] ^ block[:, w, None])
            qi, rows = np.nonzero(dist <= radius)
            found.append((qi + lo, rows, dist[qi, rows]))
        queries, hit_rows, distances = (np.concatenate([f[i] for f in found]).astype(np.int64) for i in range(3))
        return queries, hit_rows, distances

    # -- multi-index hashing -----------------------------------------------

    def _build_tables(self, words: np.ndarray, plan: _Plan) -> None:
        n, chunks, nwords = self._count, len(plan.widths), words.shape[1]
        nfilter = min(nwords, _FILTER_WORDS)
        # The words after the chunk's own: its bits are already known to be close.
        filter_cols = [[(w + 1 + i) % nwords for i in range(nfilter)] for w in plan.words]
        entries = np.empty((chunks * n, nfilter), dtype=np.uint64)
        rows = np.empty(chunks * n, dtype=np.uint32)
        bases = np.cumsum([0] + [(1 << b) + 1 for b in plan.widths])
        offsets = np.empty(bases[-1], dtype=np.int32 if chunks * n < 2**31 else np.int64)
        columns = np.ascontiguousarray(words.T)  # strided columns make every pass below several times slower
        for c, (w, shift, width) in enumerate(zip(plan.words, plan.shifts, plan.widths, strict=True)):
            keys = ((columns[w] >> np.uint64(shift)) & np.uint64((1 << width) - 1)).astype(np.uint16)
            order = np.argsort(keys, kind="stable")  # a radix sort for uint16
            for i, col in enumerate(filter_cols[c]):
                entries[c * n : (c + 1) * n, i] = columns[col].take(order)
            rows[c * n : (c + 1) * n] = order
            chunk_offsets = offsets[bases[c] : bases[c + 1]]
            chunk_offsets[0] = 0
            np.cumsum(np.bincount(keys, minlength=1 << width), out=chunk_offsets[1:])
            chunk_offsets += c * n

        probe_chunk: list[np.ndarray] = []
        probe_mask: list[np.ndarray] = []
        for c, (width, radius) in enumerate(zip(plan.widths, plan.radii, strict=True)):
            values = np.arange(1 << width)
            masks = values[np.bitwise_count(values) <= radius]
            probe_chunk.append(np.full(len(masks), c))
            probe_mask.append(masks)
        self._probe_chunk = np.concatenate(probe_chunk).astype(np.intp)
        self._probe_mask = np.concatenate(probe_mask).astype(np.intp)
        self._probe_base = bases[self._probe_chunk].astype(np.intp)
        self._probe_filter = np.array(filter_cols, dtype=np.intp)[self._probe_chunk]  # (P, nfilter)
        self._chunk_word = np.array(plan.words, dtype=np.intp)
        self._chunk_shift = np.array(plan.shifts, dtype=np.uint64)
        self._chunk_mask = np.array([(1 << b) - 1 for b in plan.widths], dtype=np.uint64)
        self._entries = entries
        # One opaque item per entry: numpy gathers and repeats those much faster than rows.
        self._entry_items = entries.view(np.dtype((np.void, 8 * nfilter))).reshape(-1)
        self._rows = rows
        self._offsets = offsets

    def _multi_index(self, q64: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Probe all queries' buckets at once, filter on the entries' bits, verify the rest."""
        nfilter = self._entries.shape[1]
        # The entries' bits are part of each hash (128 of PDQ's 256): a hash within the index's
        # radius is within it on those bits too, so up to that radius the filter is exact.
        # Beyond it (best effort anyway) a hash d bits away differs in about d/2 of them
        # (sd ~3 at d = 54), so filtering at 3/4 of the radius loses ~1 in 30,000 of them,
        # while an unrelated entry passes 40 of 128 bits ~1e-5 of the time against ~4 % for 54:
        # near-hit queries at 1M cost 136 instead of 194 us.
        partial = radius if self._exact_entries or radius <= self._radius else max(self._radius, 3 * radius // 4)
        probes = len(self._probe_chunk)
        chunk_values = ((q64[:, self._chunk_word] >> self._chunk_shift) & self._chunk_mask).astype(np.intp)
        buckets = (self._probe_base + (chunk_values[:, self._probe_chunk] ^ self._probe_mask)).reshape(-1)
        starts = self._offsets.take(buckets)
        lengths = self._offsets.take(buckets + 1) - starts
        # Per run (query x probe), the query words its entries are compared with.
        run_items = np.ascontiguousarray(q64[:, self._probe_filter]).view(self._entry_items.dtype).reshape(-1)
        # Segments of whole runs holding about _SEGMENT_CANDIDATES entries each.
        ends = np.cumsum(lengths)
        cuts = np.searchsorted(ends, np.arange(_SEGMENT_CANDIDATES, ends[-1], _SEGMENT_CANDIDATES)) + 1
        bounds = [0, *cuts.tolist(), len(lengths)]

        hit_query: list[np.ndarray] = []
        hit_position: list[np.ndarray] = []
        hit_dist: list[np.ndarray] = []
        for r0, r1 in itertools.pairwise(bounds):
            seg_lengths = lengths[r0:r1]
            seg_ends = np.cumsum(seg_lengths)
            count = int(seg_ends[-1]) if r1 > r0 else 0
            if count == 0:
                continue
            positions = np.repeat(starts[r0:r1] - (seg_ends - seg_lengths), seg_lengths)
            positions += np.arange(count)
            diff = self._entry_items.take(positions).view(np.uint64)
            diff ^= np.repeat(run_items[r0:r1], seg_lengths).view(np.uint64)
            bits = np.bitwise_count(diff)
            if nfilter == 1:
                dist = bits
            else:  # (b0 + 256 b1) * 0x0101 has b0 + b1 in its high byte; no carry as each is <= 64
                dist = (bits.view(np.uint16) * np.uint16(0x0101)) >> np.uint16(8)
            keep = np.flatnonzero(dist <= partial)
            if len(keep):
                hit_query.append((r0 + np.searchsorted(seg_ends, keep, side="right")) // probes)
                hit_position.append(positions[keep])
                hit_dist.append(dist[keep])
        if not hit_query:
            empty = np.empty(0, dtype=np.int64)
            return empty, empty, empty
        queries = np.concatenate(hit_query).astype(np.int64)
        rows = self._rows[np.concatenate(hit_position)].astype(np.int64)
        if self._exact_entries:
            return queries, rows, np.concatenate(hit_dist).astype(np.int64)
        assert self._words is not None
        dists = np.bitwise_count(self._words[rows] ^ q64[queries]).sum(axis=1, dtype=np.int64)
        match = dists <= radius
        return queries[match], rows[match], dists[match]


def _choose_plan(bits: int, radius: int, n: int) -> _Plan | None:
    """The cheapest chunking by the cost model, or None when brute force is cheaper."""
    words = bits // 64
    brute = _BRUTE_COST * n * words
    candidate = _CANDIDATE_COST
    if words > _FILTER_WORDS:  # unrelated entries that pass the partial-hash filter
        filter_bits = 64 * _FILTER_WORDS
        candidate += _VERIFY_COST * sum(math.comb(filter_bits, j) for j in range(radius + 1)) / 2.0**filter_bits
    best: _Plan | None = None
    per_word_max = max(64 // _MAX_CHUNK_BITS, -(-(radius + 1) // words))
    for per_word in range(64 // _MAX_CHUNK_BITS, min(per_word_max, 64) + 1):
        widths = [64 // per_word + (i < 64 % per_word) for i in range(per_word)]
        shifts = [sum(widths[:i]) for i in range(per_word)]
        layout = [(w, s, b) for w in range(words) for s, b in zip(shifts, widths, strict=True)]
        radii, cost = _allocate_radii([b for _, _, b in layout], radius, n * candidate)
        if cost >= brute or (best is not None and cost >= best.cost):
            continue
        kept = [(chunk, r) for chunk, r in zip(layout, radii, strict=True) if r >= 0]
        best = _Plan(
            words=tuple(c[0] for c, _ in kept),
            shifts=tuple(c[1] for c, _ in kept),
            widths=tuple(c[2] for c, _ in kept),
            radii=tuple(r for _, r in kept),
            cost=cost,
        )
    return best


def _allocate_radii(widths: list[int], radius: int, scan_cost: float) -> tuple[list[int], float]:
    """Per-chunk probe radii (-1: not probed) with sum(r + 1) > radius at least expected cost.

    ``scan_cost`` is the cost of reading every stored hash once; a bucket of a
    ``b``-bit chunk holds 1 / 2**b of them on random data.

    Each unit of sum(r + 1) is bought separately and the marginal cost of a
    chunk's next unit only grows (for radii below half its width, the only ones
    worth buying), so buying the cheapest unit each time is optimal.
    """

    def unit_cost(chunk: int, level: int) -> float:
        width = widths[chunk]
        return math.comb(width, level) * (_PROBE_COST + scan_cost / 2.0**width)

    radii = [-1] * len(widths)
    heap = [(unit_cost(c, 0), c) for c in range(len(widths))]
    heapq.heapify(heap)
    cost = 0.0
    for _ in range(radius + 1):
        step, c = heapq.heappop(heap)
        cost += step
        radii[c] += 1
        if radii[c] < widths[c]:
            heapq.heappush(heap, (unit_cost(c, radii[c] + 1), c))
    return radii, cost

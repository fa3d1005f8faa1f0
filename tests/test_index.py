"""HammingIndex must give exactly what a brute-force scan gives, on both of its strategies."""

from __future__ import annotations

import numpy as np
import pytest

from livesafe.index import HammingIndex, hamming

# Popcount of every byte value, computed independently of the code under test.
_POPCOUNT = np.array([v.bit_count() for v in range(256)], dtype=np.uint8)

# (bytes per hash, radius): PDQ, imagehash at its usual thresholds, and two
# other widths to exercise the generic chunking.
_CONFIGS = [(32, 31), (8, 8), (8, 10), (16, 20), (24, 25)]


@pytest.fixture(params=["brute", "multi-index", "multi-index-small-segments"])
def strategy(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Force each search strategy regardless of the cost model; tiny segments test the segment seams."""
    if request.param == "brute":
        monkeypatch.setattr(hamming, "_BRUTE_COST", 0.0)
    else:
        monkeypatch.setattr(hamming, "_BRUTE_COST", float("inf"))
    if request.param == "multi-index-small-segments":
        monkeypatch.setattr(hamming, "_SEGMENT_CANDIDATES", 97)
    return str(request.param)


def reference(hashes: np.ndarray, queries: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray]:
    if len(hashes) == 0:
        return np.full(len(queries), -1), np.full(len(queries), -1)
    dist = _POPCOUNT[hashes[None, :, :] ^ queries[:, None, :]].sum(axis=2, dtype=np.int64)
    best = dist.argmin(axis=1)  # first minimum: lowest row
    best_dist = dist[np.arange(len(queries)), best]
    found = best_dist <= radius
    return np.where(found, best, -1), np.where(found, best_dist, -1)


def flip_bits(value: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """``value`` with exactly ``count`` distinct bits flipped."""
    bits = np.unpackbits(value)
    bits[rng.choice(len(bits), size=count, replace=False)] ^= 1
    return np.packbits(bits)


def random_hashes(rng: np.random.Generator, n: int, nbytes: int) -> np.ndarray:
    return rng.integers(0, 256, size=(n, nbytes), dtype=np.uint8)


def planted_queries(
    hashes: np.ndarray, radius: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Queries at distance 0, 1, r-1, r and r+1 from random stored rows: (queries, rows, distances)."""
    distances = np.array([0, 1, radius - 1, radius, radius + 1] * 6)
    rows = rng.integers(0, len(hashes), size=len(distances))
    queries = np.stack([flip_bits(hashes[r], d, rng) for r, d in zip(rows, distances, strict=True)])
    return queries, rows, distances


def assert_same(got: tuple[np.ndarray, np.ndarray], expected: tuple[np.ndarray, np.ndarray]) -> None:
    np.testing.assert_array_equal(got[0], expected[0])
    np.testing.assert_array_equal(got[1], expected[1])


@pytest.mark.parametrize(("nbytes", "radius"), _CONFIGS)
@pytest.mark.parametrize("n", [1, 700, 20_000])
def test_matches_brute_force(strategy: str, nbytes: int, radius: int, n: int) -> None:
    rng = np.random.default_rng([nbytes, radius, n])
    hashes = random_hashes(rng, n, nbytes)
    planted, _, _ = planted_queries(hashes, radius, rng)
    queries = np.concatenate([planted, random_hashes(rng, 30, nbytes)])
    index = HammingIndex(hashes, radius)
    assert_same(index.nearest(queries), reference(hashes, queries, radius))


@pytest.mark.parametrize(("nbytes", "radius"), _CONFIGS)
def test_planted_neighbours_found_up_to_radius_and_not_beyond(strategy: str, nbytes: int, radius: int) -> None:
    rng = np.random.default_rng([nbytes, radius])
    hashes = random_hashes(rng, 5000, nbytes)
    queries, rows, distances = planted_queries(hashes, radius, rng)
    index, distance = HammingIndex(hashes, radius).nearest(queries)
    within = distances <= radius
    # Random stored hashes are far from each other, so the planted row is the answer.
    np.testing.assert_array_equal(index[within], rows[within])
    np.testing.assert_array_equal(distance[within], distances[within])
    np.testing.assert_array_equal(index[~within], -1)
    np.testing.assert_array_equal(distance[~within], -1)


def test_empty_index(strategy: str) -> None:
    index = HammingIndex(np.zeros((0, 32), dtype=np.uint8), 31)
    assert len(index) == 0
    assert index.nbytes == 32
    assert index.memory_bytes() >= 0
    rows, dists = index.nearest(np.zeros((3, 32), dtype=np.uint8))
    np.testing.assert_array_equal(rows, [-1, -1, -1])
    np.testing.assert_array_equal(dists, [-1, -1, -1])


def test_single_hash(strategy: str) -> None:
    rng = np.random.default_rng(1)
    stored = random_hashes(rng, 1, 8)
    queries = np.stack([stored[0], flip_bits(stored[0], 8, rng), flip_bits(stored[0], 9, rng)])
    rows, dists = HammingIndex(stored, 8).nearest(queries)
    np.testing.assert_array_equal(rows, [0, 0, -1])
    np.testing.assert_array_equal(dists, [0, 8, -1])


def with_bits_flipped(value: np.ndarray, positions: list[int]) -> np.ndarray:
    bits = np.unpackbits(value)
    bits[positions] ^= 1
    return np.packbits(bits)


@pytest.mark.parametrize("nbytes", [8, 32])
def test_ties_go_to_the_lowest_row(strategy: str, nbytes: int) -> None:
    rng = np.random.default_rng(2)
    hashes = random_hashes(rng, 50, nbytes)
    hashes[[7, 23, 41]] = hashes[10]  # exact duplicates of row 10
    query = random_hashes(rng, 1, nbytes)[0]
    hashes[30] = with_bits_flipped(query, [0, 1])
    hashes[4] = with_bits_flipped(query, [2, 3])  # as near as row 30
    rows, dists = HammingIndex(hashes, 6).nearest(np.stack([hashes[10], query]))
    np.testing.assert_array_equal(rows, [7, 4])
    np.testing.assert_array_equal(dists, [0, 2])


def test_no_queries(strategy: str) -> None:
    index = HammingIndex(random_hashes(np.random.default_rng(3), 100, 32), 31)
    rows, dists = index.nearest(np.zeros((0, 32), dtype=np.uint8))
    assert rows.shape == (0,) and dists.shape == (0,)


def test_clustered_hashes_with_crowded_buckets(strategy: str) -> None:
    """Real lists hold near-duplicates, so some buckets are far fuller than on random data."""
    rng = np.random.default_rng(4)
    base = random_hashes(rng, 5, 32)
    hashes = np.stack([flip_bits(base[i % 5], int(rng.integers(0, 40)), rng) for i in range(3000)])
    queries = np.concatenate([np.stack([flip_bits(b, 16, rng) for b in base]), random_hashes(rng, 5, 32)])
    assert_same(HammingIndex(hashes, 31).nearest(queries), reference(hashes, queries, 31))


@pytest.mark.parametrize("radius", [0, 64])
def test_extreme_radii(strategy: str, radius: int) -> None:
    rng = np.random.default_rng(5)
    hashes = random_hashes(rng, 300, 8)
    queries = np.concatenate([hashes[[5, 9]], random_hashes(rng, 4, 8)])
    assert_same(HammingIndex(hashes, radius).nearest(queries), reference(hashes, queries, radius))


def test_index_owns_its_data() -> None:
    rng = np.random.default_rng(6)
    hashes = random_hashes(rng, 100, 32)
    index = HammingIndex(hashes, 31)
    query = hashes[[17]].copy()
    hashes[:] = 0
    rows, dists = index.nearest(query)
    assert rows[0] == 17 and dists[0] == 0


def test_non_contiguous_queries() -> None:
    rng = np.random.default_rng(7)
    hashes = random_hashes(rng, 1000, 32)
    index = HammingIndex(hashes, 31)
    queries = np.asfortranarray(hashes[::-3])
    assert_same(index.nearest(queries), reference(hashes, np.ascontiguousarray(queries), 31))


def test_sizes_and_memory() -> None:
    hashes = random_hashes(np.random.default_rng(8), 30_000, 32)
    index = HammingIndex(hashes, 31)
    assert len(index) == 30_000
    assert index.nbytes == 32
    assert index.memory_bytes() >= hashes.nbytes


@pytest.mark.parametrize(
    "hashes",
    [
        np.zeros((4, 32), dtype=np.int64),
        np.zeros((4, 32), dtype=bool),
        np.zeros((4, 32), dtype=np.float32),
        np.zeros(32, dtype=np.uint8),
        np.zeros((2, 4, 32), dtype=np.uint8),
        np.zeros((4, 7), dtype=np.uint8),
        np.zeros((4, 0), dtype=np.uint8),
        [[0] * 32],
    ],
    ids=["int64", "bool", "float", "1-D", "3-D", "7 bytes", "0 bytes", "list"],
)
def test_bad_hashes_rejected(hashes: object) -> None:
    with pytest.raises(ValueError):
        HammingIndex(hashes, 31)  # type: ignore[arg-type]


@pytest.mark.parametrize("max_distance", [-1, 257, 3.0, True, "31", None])
def test_bad_radius_rejected(max_distance: object) -> None:
    with pytest.raises(ValueError):
        HammingIndex(np.zeros((4, 32), dtype=np.uint8), max_distance)  # type: ignore[arg-type]


def test_numpy_integer_radius_accepted() -> None:
    index = HammingIndex(np.zeros((4, 32), dtype=np.uint8), np.int64(31))  # type: ignore[arg-type]
    rows, _ = index.nearest(np.zeros((1, 32), dtype=np.uint8))
    assert rows[0] == 0


@pytest.mark.parametrize(
    "queries",
    [
        np.zeros((2, 8), dtype=np.uint8),
        np.zeros(32, dtype=np.uint8),
        np.zeros((2, 32), dtype=np.int16),
        np.zeros((1, 2, 32), dtype=np.uint8),
        [[0] * 32],
    ],
    ids=["wrong width", "1-D", "int16", "3-D", "list"],
)
def test_bad_queries_rejected(strategy: str, queries: object) -> None:
    index = HammingIndex(random_hashes(np.random.default_rng(9), 100, 32), 31)
    with pytest.raises(ValueError):
        index.nearest(queries)  # type: ignore[arg-type]


def within_reference(hashes: np.ndarray, queries: np.ndarray, radius: int, limit: int) -> list[tuple[int, int, int]]:
    """Every query's ``limit`` nearest stored hashes within ``radius`` (ties: lowest row), by brute force."""
    dist = _POPCOUNT[hashes[None, :, :] ^ queries[:, None, :]].sum(axis=2, dtype=np.int64)
    found = []
    for q in range(len(queries)):
        rows = [r for r in np.lexsort((np.arange(len(hashes)), dist[q])) if dist[q, r] <= radius]
        found += [(q, int(r), int(dist[q, r])) for r in rows[:limit]]
    return found


@pytest.mark.parametrize("limit", [1, 2, 5])
def test_within_up_to_the_index_radius_is_exact(strategy: str, limit: int) -> None:
    rng = np.random.default_rng(11)
    hashes = random_hashes(rng, 3000, 32)
    # Near duplicates, so queries have several neighbours in range.
    hashes[1000:1100] = np.stack([flip_bits(hashes[i], 5, rng) for i in range(100)])
    queries = np.concatenate([planted_queries(hashes, 31, rng)[0], hashes[:20]])
    got = list(zip(*(a.tolist() for a in HammingIndex(hashes, 31).within(queries, 31, limit=limit)), strict=True))
    assert got == within_reference(hashes, queries, 31, limit)


def test_within_beyond_the_index_radius_finds_only_true_neighbours(strategy: str) -> None:
    """Beyond the radius the search is best effort: what it returns is right, and on brute force complete."""
    rng = np.random.default_rng(12)
    hashes = random_hashes(rng, 4000, 32)
    rows = rng.integers(0, len(hashes), size=200)
    distances = rng.integers(32, 49, size=200)
    queries = np.stack([flip_bits(hashes[r], int(d), rng) for r, d in zip(rows, distances, strict=True)])
    q, r, d = HammingIndex(hashes, 31).within(queries, 48, limit=1)
    expected = {t[0]: t for t in within_reference(hashes, queries, 48, 1)}
    assert len(set(q.tolist())) == len(q)  # at most one per query with limit=1
    for t in zip(q.tolist(), r.tolist(), d.tolist(), strict=True):
        assert t == expected[t[0]]
    found = len(q) / len(expected)
    if strategy == "brute":
        assert found == 1.0
    else:  # 16 chunks probed at radius 1: ~95 % of hashes 40-48 bits away share a chunk within 1 bit
        assert found > 0.8, found


def test_within_no_queries_and_empty_index() -> None:
    empty = HammingIndex(np.zeros((0, 32), dtype=np.uint8), 31)
    assert all(len(a) == 0 for a in empty.within(np.zeros((3, 32), dtype=np.uint8), 40))
    index = HammingIndex(np.zeros((5, 32), dtype=np.uint8), 31)
    assert all(len(a) == 0 for a in index.within(np.zeros((0, 32), dtype=np.uint8), 40))


@pytest.mark.parametrize("radius, limit", [(-1, 2), (257, 2), (True, 2), (3.5, 2), (40, 0), (40, -1), (40, 1.5)])
def test_within_bad_arguments_rejected(radius: object, limit: object) -> None:
    index = HammingIndex(np.zeros((5, 32), dtype=np.uint8), 31)
    with pytest.raises(ValueError):
        index.within(np.zeros((1, 32), dtype=np.uint8), radius, limit=limit)  # type: ignore[arg-type]

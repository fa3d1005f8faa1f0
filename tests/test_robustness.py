"""The robustness benchmark in a small configuration, and its transform families.

``benchmarks/bench_robustness.py`` measures recall against each family's
parameter on the *report* split (BENCHMARKS.md).  Here it runs on the tune split
of scikit-image's photos (the pool that ships with the test extras), two
segments per family through H.264, and we assert what must hold on every run
rather than recall floors tuned to pass: no benign frame redacted, no frame
redacted before the picture appeared, every segment that reference PDQ catches
on the full frame caught by the guard too, and the guard never fails.

It runs as a subprocess on purpose: livesafe pins BLAS to one thread in
``livesafe/__init__.py``, which only works if it is imported before numpy --
under pytest, conftest.py imports numpy first, and then every PDQ hash is ~100x
slower on a small shared VM.  Everything is seeded and x264 runs
single-threaded, so a run is the same on every machine.  No timing assertions.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("skimage.data")
pytest.importorskip("pdqhash")

BENCH_DIR = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH_DIR))

from families import FAMILIES, HEIGHT, WIDTH, Stock  # noqa: E402

PER_FAMILY, DECOYS_PER_FAMILY = 2, 1


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("robustness") / "results.json"
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    command = [
        sys.executable, str(BENCH_DIR / "bench_robustness.py"),
        "--split", "tune", "--pool", "skimage",
        "--per-family", str(PER_FAMILY), "--decoys-per-family", str(DECOYS_PER_FAMILY),
        "--list-size", "5000",
        "--jobs", "2" if (os.cpu_count() or 1) > 1 else "1",
        "--json", str(out),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, f"benchmark failed:\n{done.stdout}\n{done.stderr}"
    assert "livesafe caught" in done.stdout  # the markdown report was printed
    return json.loads(out.read_text())


def test_every_family_ran(results: dict) -> None:
    segments = results["segments"]
    for name in FAMILIES:
        mine = [s for s in segments if s["family"] == name]
        assert sum(not s["decoy"] for s in mine) == PER_FAMILY, name
        assert sum(s["decoy"] for s in mine) == DECOYS_PER_FAMILY, name
        assert all(s["bin"] in FAMILIES[name].bins for s in mine), name
    assert all(s["frames"] == 66 and 0 < s["blocked"] <= 36 for s in segments)


def test_no_benign_frame_redacted(results: dict) -> None:
    decoys = [s for s in results["segments"] if s["decoy"]]
    assert [(s["family"], s["redacted"]) for s in decoys if s["redacted"]] == []


def test_nothing_redacted_before_the_picture_appeared(results: dict) -> None:
    assert [(s["family"], s["number"], s["early"]) for s in results["segments"] if s["early"]] == []


def test_guard_catches_whatever_reference_pdq_catches_on_the_full_frame(results: dict) -> None:
    """The search always hashes the whole frame in all 8 orientations: it can only add to a plain relay's recall."""
    missed = [
        (s["family"], s["number"], s["reference_best"])
        for s in results["segments"]
        if s["reference_caught"] and not s["caught"]
    ]
    assert missed == []


def test_scores_are_consistent(results: dict) -> None:
    for s in results["segments"]:
        assert 0 <= s["leaked"] <= s["blocked"]
        assert s["redacted"] >= s["early"] + s["hold"]
        assert s["caught"] == (s["first_hit"] is not None)
        if not s["caught"]:
            assert s["leaked"] == 0  # leaks are counted in caught segments only; a miss is a miss


# --- the families themselves -----------------------------------------------------------------


def _stock() -> Stock:
    rng = np.random.default_rng(0)
    return Stock([rng.integers(0, 256, size=(300, 400, 3), dtype=np.uint8) for _ in range(3)])


@pytest.mark.parametrize("name", list(FAMILIES))
def test_family_renders_full_frames_deterministically(name: str) -> None:
    family = FAMILIES[name]
    picture = np.random.default_rng(1).integers(
        0, 256, size=(360, 640, 3), dtype=np.uint8
    )  # 16:9: any padding share can occur
    renders = []
    for _ in range(2):
        rng = np.random.default_rng([7, 3])
        params = family.draw(rng)
        shown = family.render(picture, params, rng, _stock())
        renders.append((family.bin_of(params), [shown.frames(i) for i in (0, 17, 35)]))
    (bin_a, frames_a), (bin_b, frames_b) = renders
    assert bin_a == bin_b and bin_a in family.bins
    for a, b in zip(frames_a, frames_b, strict=True):
        assert a.shape == (HEIGHT, WIDTH, 3) and a.dtype == np.uint8
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_family_draws_cover_its_bins(name: str) -> None:
    """Over 300 draws every bin of the curve gets segments: the range asked for is the range drawn."""
    family = FAMILIES[name]
    picture = np.random.default_rng(1).integers(
        0, 256, size=(360, 640, 3), dtype=np.uint8
    )  # 16:9: any padding share can occur
    seen = set()
    for k in range(300 if name != "padding" else 120):
        rng = np.random.default_rng([k])
        params = family.draw(rng)
        if name == "padding":  # its bin is known once the picture is fitted
            family.render(picture, params, rng, _stock())
        seen.add(family.bin_of(params))
    assert seen == set(family.bins)

"""Robustness suite, small and deterministic: blocked stand-ins under the synthetic
transforms must be redacted, benign material never.

This runs ``benchmarks/bench_robustness.py`` (the full benchmark) in a small
configuration and checks its ``--json`` results.  It runs as a subprocess on
purpose: livesafe pins BLAS to one thread in ``livesafe/__init__.py``, which only
works if livesafe is imported before numpy -- under pytest, conftest.py imports
numpy first, and then every PDQ hash is ~100x slower on a small shared VM.

Everything is seeded and x264 runs single-threaded, so the numbers are the same
on every run.  No timing assertions.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from livesafe import synthetic as syn

pytest.importorskip("skimage.data")

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_robustness.py"

# Minimum share of segments detected, per transform, in this configuration
# (2 seeds x 3 images = 6 raw segments each).  All but ``partial`` measure 30/30
# in the full benchmark; a floor of 0.8 tolerates one miss in six.  ``partial``
# (split screen) measures 25/30 there, so its floor is 0.6.
RECALL_FLOORS: dict[str, float] = {
    "fullframe": 0.8,
    "letterbox": 0.8,
    "pillarbox": 0.8,
    "mirror": 0.8,
    "rot90": 0.8,
    "rot180": 0.8,
    "rot270": 0.8,
    "brightness_contrast": 0.8,
    "greyscale": 0.8,
    "low_res": 0.8,
    "rotate_small": 0.8,
    "screen_camera": 0.8,
    "partial": 0.6,
}
# Not yet robust (full benchmark recall well below 80 %), so not asserted here;
# see BENCHMARKS.md / bench_robustness.py for the numbers:
#   pip          -- 50 %: window outlines over busy backgrounds are found but often misplaced;
#   overlay_text -- 13 %: captions and tickers change the hash beyond PDQ's threshold;
#   crop_zoom    -- 3 %: an off-centre 5-10 % crop is beyond PDQ (centred zoom is padded back).
NOT_YET_ROBUST = ("pip", "overlay_text", "crop_zoom")

OVERALL_RECALL = 0.95
SEEDS = 2
H264_PER_TRANSFORM = 1  # one segment per asserted transform also goes through libx264


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict:
    workdir = tmp_path_factory.mktemp("robustness")
    out = workdir / "results.json"
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    command = [
        sys.executable,
        str(BENCH),
        "--seeds", str(SEEDS),
        "--h264", str(H264_PER_TRANSFORM),
        "--transforms", ",".join(RECALL_FLOORS),
        "--benign-frames", "60",
        "--decoy-seeds", "1",
        "--decoy-frames", "6",
        "--jobs", "2" if (os.cpu_count() or 1) > 1 else "1",
        "--workdir", str(workdir),
        "--json", str(out),
    ]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, f"benchmark failed:\n{done.stdout}\n{done.stderr}"
    data = json.loads(out.read_text())
    data["table"] = done.stdout
    return data


def _segments(results: dict, codec: str) -> list[dict]:
    return [s for s in results["segments"] if s["codec"] == codec]


def test_every_configured_segment_ran(results: dict) -> None:
    raw = _segments(results, "raw")
    assert {s["transform"] for s in raw} == set(RECALL_FLOORS)
    assert len(raw) == len(RECALL_FLOORS) * SEEDS * len(syn.BLOCKED_NAMES)
    assert len(_segments(results, "h264")) == len(RECALL_FLOORS) * H264_PER_TRANSFORM


def test_overall_recall(results: dict) -> None:
    raw = _segments(results, "raw")
    detected = sum(s["detected"] for s in raw)
    assert detected / len(raw) >= OVERALL_RECALL, f"{detected}/{len(raw)} segments detected\n{results['table']}"


@pytest.mark.parametrize("transform", sorted(RECALL_FLOORS))
def test_recall_per_transform(results: dict, transform: str) -> None:
    group = [s for s in _segments(results, "raw") if s["transform"] == transform]
    detected = [s for s in group if s["detected"]]
    missed = [(s["image"], s["seed"], s["best_distance"]) for s in group if not s["detected"]]
    assert len(detected) / len(group) >= RECALL_FLOORS[transform], (
        f"{transform}: {len(detected)}/{len(group)} detected; missed (image, seed, best distance): {missed}"
    )


def test_no_leaks_once_detected(results: dict) -> None:
    """Once a segment is caught, every one of its blocked frames comes out redacted."""
    leaky = [
        (s["codec"], s["transform"], s["image"], s["seed"], s["leaked"])
        for s in results["segments"]
        if s["detected"] and s["leaked"]
    ]
    assert not leaky, f"blocked frames passed unredacted in detected segments: {leaky}"


def test_no_reach_back_past_the_cut(results: dict) -> None:
    """Retroactive redaction stops at the cut: the benign lead-in stays untouched."""
    early = [(s["codec"], s["transform"], s["image"], s["seed"]) for s in results["segments"] if s["lead_in_redacted"]]
    assert not early


def test_h264_round_trip_still_detected(results: dict) -> None:
    missed = [(s["transform"], s["image"], s["seed"], s["best_distance"]) for s in _segments(results, "h264") if not s["detected"]]
    assert not missed, f"missed after H.264: {missed}"


def test_benign_material_is_never_redacted(results: dict) -> None:
    names = {b["name"] for b in results["benign"]}
    # every benign scene, and every benign photo under every transform
    assert len(names) == len(syn.BENIGN_SCENES) + len(syn.TRANSFORMS), names
    redacted = {b["name"]: b["redacted"] for b in results["benign"] if b["redacted"]}
    assert not redacted, f"benign frames redacted: {redacted}\n{results['table']}"
    closest = min(b["closest"] for b in results["benign"])
    assert closest > results["threshold"]

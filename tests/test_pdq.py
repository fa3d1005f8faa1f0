"""Our PDQ against Meta's reference (the ``pdqhash`` wrapper of the C++ code)."""

from __future__ import annotations

import av
import numpy as np
import pytest
from harness import hamming_hex

from livesafe.guard.frames import luma_view
from livesafe.guard.search import View, view_luma
from livesafe.guard.views import Planes
from livesafe.signals import SIGNALS, pdq
from sample_streams.synthetic import natural_samples

pdqhash = pytest.importorskip("pdqhash")
PDQ = SIGNALS["pdq"]


def reference(rgb: np.ndarray) -> tuple[str, int, list[str]]:
    """Hex hash, quality and dihedral hexes the way python-threatexchange prints them."""

    def to_hex(vector: np.ndarray) -> str:
        return format(int("".join(str(int(b)) for b in vector), 2), "064x")

    vectors, quality = pdqhash.compute_dihedral(np.ascontiguousarray(rgb))
    return to_hex(vectors[0]), quality, [to_hex(v) for v in vectors]


def test_float_luma_matches_reference_exactly(photos):
    for name, rgb in photos.items():
        ref_hex, ref_quality, ref_dihedral = reference(rgb)
        got = PDQ.hash_luma(pdq.luma_from_rgb(rgb), all_orientations=True)
        assert [PDQ.format_hex(v) for v in got.variants] == ref_dihedral, name
        assert got.quality == ref_quality, name


def test_live_path_stays_close_to_reference():
    """The live path: RGB -> yuv420p (as a decoder hands it over) -> Y plane -> the
    guard's whole-frame region (a half-size copy above 256 px) -> our PDQ."""
    distances, quality_gaps = [], []
    for rgb in natural_samples(10):
        ref_hex, ref_quality, _ = reference(rgb)
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
        y, scale = luma_view(frame)
        luma, shrink = view_luma(Planes(y, scale), View("frame", box=(0, 0, y.shape[1], y.shape[0])))
        got = PDQ.hash_luma(luma, scale, shrink=shrink)
        distances.append(hamming_hex(PDQ.format_hex(got.variants[0]), ref_hex))
        quality_gaps.append(abs(got.quality - ref_quality))
    distances = np.array(distances)
    assert len(distances) >= 100
    assert distances.mean() <= 4, f"mean {distances.mean():.2f}"
    assert distances.max() <= 16, f"max {distances.max()}"
    assert max(quality_gaps) <= 5


def test_flat_images_have_low_quality():
    for value in (0, 16, 128, 255):
        flat = np.full((720, 1280), value, dtype=np.uint8)
        assert PDQ.hash_luma(flat).quality < pdq.MIN_QUALITY
    tiny = np.zeros((3, 3), dtype=np.uint8)
    assert PDQ.hash_luma(tiny).quality == 0


def test_hex_round_trip_and_validation():
    value = PDQ.parse_hex("8C629E779A663698B9A33866C026726C21A679F61EB6E1F8C79BA7E23C8299E0")
    assert PDQ.format_hex(value) == "8c629e779a663698b9a33866c026726c21a679f61eb6e1f8c79ba7e23c8299e0"
    with pytest.raises(ValueError, match="64 hex digits"):
        PDQ.parse_hex("abc")
    with pytest.raises(ValueError, match="not hexadecimal"):
        PDQ.parse_hex("z" * 64)


def test_imagehash_signals_match_imagehash_library(photos):
    import imagehash
    from PIL import Image

    functions = {
        "phash": imagehash.phash,
        "dhash": imagehash.dhash,
        "ahash": imagehash.average_hash,
        "whash": imagehash.whash,
    }
    for name in ("coffee", "rocket", "camera"):
        grey = np.asarray(Image.fromarray(photos[name]).convert("L"))
        for signal_name, function in functions.items():
            ours = SIGNALS[signal_name].format_hex(SIGNALS[signal_name].hash_luma(grey).variants[0])
            theirs = str(function(Image.fromarray(photos[name])))
            assert hamming_hex(ours, theirs) <= 3, (name, signal_name, ours, theirs)


def test_hex_with_inner_spaces_is_rejected():
    with pytest.raises(ValueError, match="not hexadecimal"):
        PDQ.parse_hex("ab  " + "cd" * 30)

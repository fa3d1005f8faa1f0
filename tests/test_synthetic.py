"""The synthetic test material: right shape, reproducible, and the stand-in really is in the frame."""

from __future__ import annotations

import numpy as np
import pdqhash
import pytest

from livesafe.signals import SIGNALS
from livesafe.signals.pdq import luma_from_rgb
from sample_streams import synthetic as syn

THRESHOLD = 31
# Transforms that keep the whole frame the image: reference PDQ (some dihedral variant) stays close.
WHOLE_FRAME = ("fullframe", "mirror", "rot90", "rot180", "rot270", "brightness_contrast", "greyscale", "low_res")
# Transforms whose output does not depend on the generator.
SEED_FREE = ("fullframe", "mirror", "rot90", "rot180", "rot270", "greyscale")


def _reference_bits(rgb: np.ndarray) -> np.ndarray:
    bits, _quality = pdqhash.compute(np.ascontiguousarray(rgb))
    return np.asarray(bits)


def _dihedral_distance(frame: np.ndarray, original: np.ndarray) -> int:
    """Fewest differing bits between the original's reference PDQ and any rotation/flip of the frame's."""
    variants, _quality = pdqhash.compute_dihedral(np.ascontiguousarray(frame))
    target = _reference_bits(original)
    return min(int((np.asarray(v) != target).sum()) for v in variants)


def _distance(region: np.ndarray, original: np.ndarray) -> int:
    return int((_reference_bits(region) != _reference_bits(original)).sum())


def _changed_box(a: np.ndarray, b: np.ndarray, tolerance: int = 0) -> tuple[int, int, int, int]:
    """Bounding box (y0, y1, x0, x1; exclusive ends) of the pixels where two frames differ."""
    ys, xs = np.nonzero(np.any(np.abs(a.astype(np.int16) - b) > tolerance, axis=2))
    return int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1


@pytest.fixture(scope="module")
def blocked() -> dict[str, np.ndarray]:
    return syn.blocked_images()


def test_sample_images_are_read_only_rgb() -> None:
    images = {**syn.blocked_images(), **syn.benign_images()}
    assert set(images) == set(syn.BLOCKED_NAMES) | set(syn.BENIGN_NAMES)
    for image in images.values():
        assert image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8
        assert not image.flags.writeable


@pytest.mark.parametrize("name", sorted(syn.TRANSFORMS))
def test_transform_shape_and_determinism(name: str, blocked: dict[str, np.ndarray]) -> None:
    transform = syn.TRANSFORMS[name]
    image = blocked["coffee"]
    first = transform(image, np.random.default_rng(7))
    assert first.shape == (syn.HEIGHT, syn.WIDTH, 3) and first.dtype == np.uint8
    np.testing.assert_array_equal(first, transform(image, np.random.default_rng(7)))
    if name not in SEED_FREE:
        assert not np.array_equal(first, transform(image, np.random.default_rng(8)))


@pytest.mark.parametrize("name", WHOLE_FRAME)
def test_whole_frame_transforms_keep_the_pdq(name: str, blocked: dict[str, np.ndarray]) -> None:
    for image in blocked.values():
        for seed in range(3):
            frame = syn.TRANSFORMS[name](image, np.random.default_rng(seed))
            assert _dihedral_distance(frame, image) <= THRESHOLD


def test_livesafe_pdq_agrees_with_reference_on_frames(blocked: dict[str, np.ndarray]) -> None:
    """generate.py writes reference (pdqhash) hashes; livesafe must read frames the same way."""
    pdq = SIGNALS["pdq"]
    for image in blocked.values():
        frame = syn.fullframe(image, np.random.default_rng(0))
        reference = f"{int(''.join(str(int(b)) for b in _reference_bits(frame)), 2):064x}"
        assert pdq.format_hex(pdq.hash_luma(luma_from_rgb(frame)).variants[0]) == reference


@pytest.mark.parametrize("name", ["letterbox", "pillarbox"])
def test_bars_are_uniform_and_surround_the_image(name: str, blocked: dict[str, np.ndarray]) -> None:
    image = blocked["chelsea"]
    colours = set()
    for seed in range(8):
        frame = syn.TRANSFORMS[name](image, np.random.default_rng(seed))
        bar = frame[0, 0]
        colours.add(tuple(bar))
        assert (frame[:, :40] == bar).all() and (frame[:, -40:] == bar).all()
        if name == "letterbox":
            assert (frame[:20] == bar).all() and (frame[-20:] == bar).all()
        else:
            assert not (frame[0] == bar).all()  # the picture spans the full height
        y0, y1, x0, x1 = _changed_box(frame, np.broadcast_to(bar, frame.shape))
        assert _distance(frame[y0:y1, x0:x1], image) <= THRESHOLD
        if name == "letterbox":
            assert abs((x1 - x0) / (y1 - y0) - image.shape[1] / image.shape[0]) < 0.02  # aspect kept
    assert len(colours) > 2, "bars should not always be black"


def test_pip_window_size_and_content(blocked: dict[str, np.ndarray]) -> None:
    background = np.full((syn.HEIGHT, syn.WIDTH, 3), 128, np.uint8)
    image = blocked["rocket"]
    for seed in range(6):
        frame = syn.picture_in_picture(image, np.random.default_rng(seed), background)
        empty = syn.picture_in_picture(np.zeros_like(image), np.random.default_rng(seed), background)
        y0, y1, x0, x1 = _changed_box(frame, empty)
        assert 0.25 * syn.WIDTH - 14 <= x1 - x0 <= 0.45 * syn.WIDTH
        assert _distance(frame[y0:y1, x0:x1], image) <= THRESHOLD
        np.testing.assert_array_equal(frame[:10, :10], background[:10, :10])


def test_partial_fills_one_half(blocked: dict[str, np.ndarray]) -> None:
    image = blocked["chelsea"]
    for seed in range(4):
        frame = syn.split_screen(image, np.random.default_rng(seed))
        empty = syn.split_screen(np.zeros_like(image), np.random.default_rng(seed))
        y0, y1, x0, x1 = _changed_box(frame, empty)
        assert 0.45 * syn.WIDTH <= x1 - x0 <= 0.5 * syn.WIDTH
        assert x1 <= syn.WIDTH // 2 or x0 >= syn.WIDTH // 2
        assert _distance(frame[y0:y1, x0:x1], image) <= THRESHOLD


def test_overlays_cover_at_most_a_quarter(blocked: dict[str, np.ndarray]) -> None:
    for image in blocked.values():
        for seed in range(4):
            frame = syn.overlay_text(image, np.random.default_rng(seed))
            covered = np.any(frame != syn.fullframe(image, np.random.default_rng(0)), axis=2).mean()
            assert 0.05 < covered <= 0.25


def test_rotate_small_fills_corners(blocked: dict[str, np.ndarray]) -> None:
    frame = syn.rotate_small(blocked["coffee"], np.random.default_rng(3))
    corners = [frame[0, 0], frame[0, -1], frame[-1, 0], frame[-1, -1]]
    assert all((c == corners[0]).all() for c in corners)


def test_screen_camera_shows_the_image_on_a_screen(blocked: dict[str, np.ndarray]) -> None:
    image = blocked["chelsea"]
    frame = syn.screen_camera(image, np.random.default_rng(5))
    empty = syn.screen_camera(np.zeros_like(image), np.random.default_rng(5))
    y0, y1, x0, x1 = _changed_box(frame, empty, tolerance=40)
    assert 0.45 * syn.WIDTH <= x1 - x0 <= 0.75 * syn.WIDTH
    assert 0 < x0 < x1 < syn.WIDTH and 0 < y0 < y1 < syn.HEIGHT  # the room shows all round


@pytest.mark.parametrize("name", sorted(syn.BENIGN_SCENES))
def test_benign_scene_frames(name: str) -> None:
    frames = syn.BENIGN_SCENES[name](np.random.default_rng(11))
    again = syn.BENIGN_SCENES[name](np.random.default_rng(11))
    first, later = frames(0), frames(37)
    assert first.shape == (syn.HEIGHT, syn.WIDTH, 3) and first.dtype == np.uint8
    np.testing.assert_array_equal(later, again(37))
    if name == "black":
        assert not first.any()
    elif name != "slate":
        assert not np.array_equal(first, later)


def test_benign_material_never_matches_the_stand_ins(blocked: dict[str, np.ndarray]) -> None:
    pdq = SIGNALS["pdq"]
    targets = [pdq.hash_luma(luma_from_rgb(image)).variants[0] for image in blocked.values()]
    frames = [syn.fullframe(image, np.random.default_rng(0)) for image in syn.benign_images().values()]
    for factory in syn.BENIGN_SCENES.values():
        source = factory(np.random.default_rng(2))
        frames += [source(0), source(45)]
    for frame in frames:
        variants = pdq.hash_luma(luma_from_rgb(frame), all_orientations=True).variants
        nearest = min(int(np.unpackbits(v ^ t).sum()) for v in variants for t in targets)
        assert nearest > THRESHOLD

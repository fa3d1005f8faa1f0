"""Geometry proposals: a tilted picture and a filmed screen found as quads the search can hash upright.

Blocked stand-ins go through the synthetic transforms and the live path's
planes (yuv420p Y, area-halved once and twice); the quads, warped upright by the
search's own view code, must hash within PDQ's threshold of the original.
Nothing is written to disk.
"""

from __future__ import annotations

import av
import numpy as np
import pytest

from livesafe.guard.frames import luma_view
from livesafe.guard.geometry import screen_picture, screen_quads, tilted_quad
from livesafe.guard.search import SearchSettings, View, propose, view_luma
from livesafe.guard.views import Planes
from livesafe.signals import SIGNALS
from livesafe.signals.pdq import luma_from_rgb
from sample_streams import synthetic as syn

pytest.importorskip("skimage.data")

PDQ = SIGNALS["pdq"]
SEEDS = (0, 1, 2)
# Cases (of len(SEEDS) x 3 images) whose best quad must match.  Measured 9/9 for both.
MIN_MATCHED = 8


def planes(rgb: np.ndarray) -> Planes:
    """The planes of an RGB frame as the guard sees it."""
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24").reformat(format="yuv420p")
    return Planes(*luma_view(frame))


def distance(p: Planes, quad: np.ndarray | None, name: str) -> int:
    """Best PDQ distance (any orientation) of the picture inside a quad (frame pixel edges) to the original."""
    if quad is None:
        return 256
    original = PDQ.hash_luma(luma_from_rgb(syn.blocked_images()[name])).variants[0]
    luma, shrink = view_luma(p, View("screen", quad=tuple(map(tuple, quad))))
    hashes = PDQ.hash_luma(luma, p.luma_scale, shrink=shrink, all_orientations=True)
    return int(np.unpackbits(hashes.variants ^ original, axis=1).sum(axis=1).min())


def transformed(transform: str) -> list[tuple[str, np.ndarray]]:
    return [
        (name, syn.TRANSFORMS[transform](image, np.random.default_rng([seed, k])))
        for seed in SEEDS
        for k, (name, image) in enumerate(syn.blocked_images().items())
    ]


def screens(p: Planes) -> list[np.ndarray]:
    """Screen quads as the search makes them: found on the coarse plane, re-measured on the fine one."""
    ratio = p.coarse.pixels // p.fine.pixels
    return [
        (screen_picture(p.fine.luma, quad * ratio + (ratio - 1) / 2) + 0.5) * p.fine.pixels
        for quad in screen_quads(p.coarse.luma)
    ]


def test_tilted_picture_is_found_as_its_quad() -> None:
    distances = []
    for name, rgb in transformed("rotate_small"):
        p = planes(rgb)
        quad = tilted_quad(p.fine.luma)
        distances.append(distance(p, None if quad is None else quad * p.fine.pixels, name))
    assert sum(d <= PDQ.default_threshold for d in distances) >= MIN_MATCHED, distances


def test_filmed_screen_is_found_and_flattened() -> None:
    distances = []
    for name, rgb in transformed("screen_camera"):
        p = planes(rgb)
        quads = screens(p)
        assert quads, name
        distances.append(min(distance(p, quad, name) for quad in quads))
    assert sum(d <= PDQ.default_threshold for d in distances) >= MIN_MATCHED, distances


@pytest.mark.parametrize("transform", ["fullframe", "letterbox", "pillarbox", "screen_camera"])
def test_no_tilt_found_in_upright_pictures(transform: str) -> None:
    for seed, image in enumerate(syn.benign_images().values()):
        p = planes(syn.TRANSFORMS[transform](image, np.random.default_rng(seed)))
        assert tilted_quad(p.fine.luma) is None


@pytest.mark.parametrize("scene", ["procedural", "black", "slate"])
def test_plain_scenes_give_nothing(scene: str) -> None:
    source = syn.BENIGN_SCENES[scene](np.random.default_rng(7))
    for i in (0, 45, 90):
        p = planes(source(i))
        assert tilted_quad(p.fine.luma) is None
        assert screen_quads(p.coarse.luma) == []


def test_shapes_and_types() -> None:
    name, rgb = transformed("rotate_small")[0]
    p = planes(rgb)
    quad = tilted_quad(p.fine.luma)
    assert quad is not None and quad.shape == (4, 2) and quad.dtype == np.float32
    (tlx, tly), (trx, try_), (brx, bry), (blx, bly) = quad
    assert tlx < trx and blx < brx and tly < bly and try_ < bry  # tl, tr, br, bl

    name, rgb = transformed("screen_camera")[0]
    p = planes(rgb)
    quads = screen_quads(p.coarse.luma, max_quads=3)
    assert 1 <= len(quads) <= 3
    rows, cols = p.coarse.luma.shape
    for quad in quads:
        assert quad.shape == (4, 2) and quad.dtype == np.float32
        (tlx, tly), (trx, try_), (brx, bry), (blx, bly) = quad
        assert tlx < trx and blx < brx and tly < bly and try_ < bry
        assert (quad >= -2).all() and (quad[:, 0] <= cols + 2).all() and (quad[:, 1] <= rows + 2).all()
    luma, _ = view_luma(p, View("screen", quad=tuple(map(tuple, screens(p)[0]))))
    assert luma.dtype == np.uint8 and luma.ndim == 2
    # The screen spans 55-70 % of the frame width; its picture at the fine plane about as many pixels.
    assert 0.45 * p.fine.luma.shape[1] <= luma.shape[1] <= 0.75 * p.fine.luma.shape[1]


@pytest.mark.parametrize("shape", [(1, 1), (16, 16), (17, 31), (91, 161), (181, 333), (360, 640), (30, 1000)])
def test_degenerate_input(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(0)
    rows, cols = shape
    for luma in (np.zeros(shape, np.uint8), np.full(shape, 255, np.uint8), rng.integers(0, 256, shape, dtype=np.uint8)):
        quad = tilted_quad(luma)
        assert quad is None or quad.shape == (4, 2)
        quads = screen_quads(luma)
        assert all(q.shape == (4, 2) for q in quads)
        whole = [[0, 0], [cols - 1, 0], [cols - 1, rows - 1], [0, rows - 1]]
        for corners in (whole, np.zeros((4, 2)), [[5, 5], [3, 9], [9, 2], [1, 1]]):  # whole frame, a point, crossed
            assert screen_picture(luma, np.asarray(corners, np.float32)).shape == (4, 2)
    assert tilted_quad(np.zeros(shape, np.uint8)) is None
    assert screen_quads(np.zeros(shape, np.uint8)) == []


def test_portrait_and_odd_frames_do_not_crash_the_search() -> None:
    """Regression: screen_quads assumed landscape frames (a portrait phone stream crashed it)."""
    rng = np.random.default_rng(3)
    for shape in ((1280, 720), (720, 720), (481, 853), (300, 200), (64, 48)):
        y = rng.integers(0, 255, shape, dtype=np.uint8)
        y[shape[0] // 4 : shape[0] // 2, shape[1] // 4 : shape[1] // 2] = 200  # a bright window
        views = propose(Planes(y, 1.0), SearchSettings(), deep=True)
        assert views[0].kind == "frame"
        for view in views:
            luma, _ = view_luma(Planes(y, 1.0), view)
            assert luma.ndim == 2 and min(luma.shape) >= 1

"""The hypothesis search: batched view hashing, refinement, reach-back, and frames of any shape.

Blocked stand-ins are the benign scikit-image photos of ``sample_streams.synthetic``;
the list is the sample blocklist.  Nothing is written to disk.
"""

from __future__ import annotations

from fractions import Fraction

import av
import cv2
import numpy as np
import pytest
from harness import BLOCKLIST

from livesafe.guard.frames import luma_view
from livesafe.guard.matcher import LiveMatcher
from livesafe.guard.search import (
    ORIENTATIONS,
    Search,
    SearchSettings,
    View,
    _dct_hash,
    dcts,
    oriented_hashes,
    propose,
    view_image,
    view_luma,
)
from livesafe.guard.stream_guard import GuardSettings, StreamGuard
from livesafe.guard.views import Planes, box_dcts
from livesafe.lists import ListSpec
from livesafe.policy import Action
from livesafe.signals import SIGNALS, pdq

pytest.importorskip("skimage.data")
from sample_streams.synthetic import benign_images, blocked_images  # noqa: E402

PDQ = SIGNALS["pdq"]
W, H = 1280, 720


def lists() -> LiveMatcher:
    return LiveMatcher([ListSpec(BLOCKLIST)])


def yuv_frame(rgb: np.ndarray, index: int | None = None) -> av.VideoFrame:
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24").reformat(format="yuv420p")
    if index is not None:
        frame.pts, frame.time_base = index, Fraction(1, 30)
    return frame


def planes_of(rgb: np.ndarray) -> Planes:
    return Planes(*luma_view(yuv_frame(rgb)))


def fitted(name: str, width: int = W, height: int = H) -> np.ndarray:
    return cv2.resize(np.asarray(blocked_images()[name]), (width, height), interpolation=cv2.INTER_AREA)


def backdrop(name: str = "gravel") -> np.ndarray:
    return cv2.resize(np.asarray(benign_images()[name]), (W, H), interpolation=cv2.INTER_AREA)


def pip(name: str, box: tuple[int, int, int, int], background: np.ndarray | None = None) -> np.ndarray:
    x0, y0, x1, y1 = box
    frame = backdrop() if background is None else background.copy()
    frame[y0:y1, x0:x1] = fitted(name, x1 - x0, y1 - y0)
    return frame


def target(name: str) -> np.ndarray:
    return PDQ.hash_luma(pdq.luma_from_rgb(np.asarray(blocked_images()[name]))).variants[0]


# --- hashing views ------------------------------------------------------------------------------------


@pytest.mark.parametrize("fine", [True, False])
def test_batched_box_hashes_are_the_exact_hashes_of_the_same_pixels(fine: bool) -> None:
    """The separable batch (row spans shared) gives the very DCT the single-image path gives,
    for boxes inside the frame, across its edges (edge pixels repeated) and of any size."""
    p = planes_of(pip("chelsea", (300, 120, 900, 560)))
    rng = np.random.default_rng(1)
    boxes = [(0, 0, W, H), (300, 120, 900, 560), (-80, -40, W + 60, H), (1000, 600, 1400, 800), (5, 7, 77, 61)]
    for _ in range(20):
        x0, x1 = sorted(rng.uniform(-100, W + 100, 2))
        y0, y1 = sorted(rng.uniform(-60, H + 60, 2))
        if x1 - x0 > 40 and y1 - y0 > 40:
            boxes.append((x0, y0, x1, y1))
    level = p.fine if fine else p.coarse
    batch = box_dcts(p, level, np.array(boxes, np.float64))
    for box, block in zip(boxes, batch, strict=True):
        # The same box snapped to the level's grid, cut out with its edges repeated, hashed alone.
        x0, y0, x1, y1 = (int(v) for v in np.rint(np.array(box) / level.pixels))
        rows, cols = level.luma.shape
        inner = level.luma[max(0, y0) : min(rows, y1), max(0, x0) : min(cols, x1)]
        padded = cv2.copyMakeBorder(
            inner, max(0, -y0), max(0, y1 - rows), max(0, -x0), max(0, x1 - cols), cv2.BORDER_REPLICATE
        )
        exact = pdq.dct_of_luma(padded, shrink=level.pixels).coefficients
        assert np.abs(exact - block).max() < 1e-2, box


def test_variants_are_the_dihedral_hashes_and_the_complement() -> None:
    p = planes_of(fitted("rocket"))
    luma, shrink = view_luma(p, View("frame", box=(0, 0, W, H)))
    block = pdq.dct_of_luma(luma, shrink=shrink)
    every = oriented_hashes(
        np.repeat(block.coefficients[None], len(ORIENTATIONS), axis=0), np.arange(len(ORIENTATIONS))
    )
    assert (every[:8] == block.dihedral_bytes()).all()
    assert (every[8] == ~every[0]).all()
    # One orientation for all blocks, or one per block: each is the same variant as above.
    mixed = np.array([3, 0, 8, 6])
    assert (oriented_hashes(np.repeat(block.coefficients[None], 4, axis=0), mixed) == every[mixed]).all()
    assert (oriented_hashes(block.coefficients[None], 5)[0] == every[5]).all()


def test_masked_views_of_one_picture_hash_as_each_would_alone() -> None:
    """dcts resamples a picture shared by several masked views once; each view still gets its own fill."""
    p = planes_of(pip("coffee", (200, 100, 1000, 600)))
    box = (200.0, 100.0, 1000.0, 600.0)
    views = [View("masked", box=box, fill=(200.0, 520.0, 1000.0, 600.0)), View("box", box=box),
             View("masked", box=box, fill=(850.0, 120.0, 980.0, 220.0)),
             View("masked", box=box, fill=(0.0, 0.0, 1.0, 1.0))]  # fmt: skip
    blocks = dcts(p, views, coarse=True)
    for view, block in zip(views, blocks, strict=True):
        if view.fill is not None:
            assert (block == _dct_hash(view_image(p, view))).all(), view.fill
    assert len({block.tobytes() for block in blocks[[0, 2, 3]]}) == 3


def test_an_inverted_picture_matches_through_the_complement() -> None:
    negative = 255 - fitted("coffee")
    matches = Search(SearchSettings()).run(planes_of(negative), lists().current, deep=False)
    assert matches and matches[0].orientation == "inverted" and matches[0].distance <= 31


# --- refinement -------------------------------------------------------------------------------------------


def test_a_misplaced_window_is_refined_into_a_match() -> None:
    """A view a few percent off the picture is near (within 48) but not a match; refinement
    moves its sides onto the picture."""
    box = (310, 130, 910, 530)
    p = planes_of(pip("chelsea", box))
    off = View("box", box=(310 + 12, 130 - 8, 910 + 6, 530 + 10))
    search = Search(SearchSettings())
    goal = target("chelsea")
    _, before, _ = search.verify(p, off, 0, goal)
    assert 31 < before <= 48
    view, after, quality = search.refine(p, off, 0, goal, before, 31)
    assert after <= 31 and quality >= 50
    assert all(abs(a - b) <= 8 for a, b in zip(view.box, box, strict=True)), view.box


def test_a_small_tilt_is_refined_as_a_quad() -> None:
    """A picture turned 2 degrees: its upright box is near; the refinement goes on with corners."""
    picture = fitted("rocket", 640, 400)
    frame = backdrop("grass")
    matrix = cv2.getRotationMatrix2D((320, 200), 2.0, 1.0)
    matrix[:, 2] += (300, 150)
    warped = cv2.warpAffine(picture, matrix, (W, H))
    mask = cv2.warpAffine(np.full((400, 640), 255, np.uint8), matrix, (W, H)) > 127
    frame[mask] = warped[mask]
    p = planes_of(frame)
    search = Search(SearchSettings())
    upright = View("box", box=(300, 150, 940, 550))
    _, before, _ = search.verify(p, upright, 0, target("rocket"))
    assert before <= 48
    view, after, _ = search.refine(p, upright, 0, target("rocket"), before, 31)
    assert after <= 31 and view.quad is not None


def test_near_is_not_a_match_without_refinement_succeeding() -> None:
    """A picture under a big opaque box stays near its entry; it must not be reported as a match."""
    frame = fitted("chelsea")
    frame[100:620, 200:900] = (40, 90, 200)
    for match in Search(SearchSettings()).run(planes_of(frame), lists().current, deep=True):
        assert match.distance <= 31 and match.quality >= 50


# --- the guard on frames of any shape ----------------------------------------------------------------


@pytest.mark.parametrize(
    "size", [(1, 1), (2, 2), (3, 5), (16, 16), (17, 31), (90, 160), (121, 333), (480, 270), (1081, 1919), (2160, 3840)]
)
def test_frames_of_any_size_and_content_never_error_and_never_match(size: tuple[int, int]) -> None:
    rows, cols = size
    live = lists()
    guard = StreamGuard(lambda: live.current, GuardSettings(sample_every=1, deep_every=1, delay_frames=1))
    rng = np.random.default_rng(0)
    for index, rgb in enumerate([np.zeros((rows, cols, 3), np.uint8), np.full((rows, cols, 3), 255, np.uint8),
                                 rng.integers(0, 256, (rows, cols, 3), dtype=np.uint8)]):  # fmt: skip
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        if rows % 2 == 0 and cols % 2 == 0:
            frame = frame.reformat(format="yuv420p")
        frame.pts, frame.time_base = index, Fraction(1, 30)
        guard.push(frame)
    guard.flush()
    assert guard.stats.errors == 0, guard.last_error
    assert guard.stats.matches == 0 and guard.stats.frames_redacted == 0


def test_resolution_changes_mid_stream_are_checked_like_any_frame() -> None:
    live = lists()
    guard = StreamGuard(lambda: live.current)
    frames = [
        yuv_frame(cv2.resize(backdrop(), (w, h)), i) for i, (w, h) in enumerate([(1280, 720)] * 12 + [(640, 360)] * 12)
    ]
    frames += [yuv_frame(cv2.resize(fitted("chelsea"), (854, 480)), 24 + i) for i in range(20)]
    out = [item for f in frames for item in guard.push(f)] + guard.flush()
    assert guard.stats.errors == 0
    assert all(item.action is Action.PASS for item in out[:24])
    assert all(item.action is not Action.PASS for item in out[24:])


# --- reach-back -------------------------------------------------------------------------------------------


def _guard_run(frames: list[av.VideoFrame]) -> list[Action]:
    live = lists()
    guard = StreamGuard(lambda: live.current)
    out = [item for f in frames for item in guard.push(f)] + guard.flush()
    assert [item.index for item in out] == list(range(len(frames)))
    return [item.action for item in out]


def test_a_fade_in_from_black_is_redacted_from_its_first_visible_frame() -> None:
    picture = pip("coffee", (320, 180, 960, 540), background=np.zeros((H, W, 3), np.uint8)).astype(np.float32)
    frames = [yuv_frame(np.zeros((H, W, 3), np.uint8), i) for i in range(15)]
    frames += [yuv_frame((picture * min(1.0, (k + 1) / 20)).astype(np.uint8), 15 + k) for k in range(45)]
    actions = _guard_run(frames)
    assert all(a is Action.PASS for a in actions[:15])
    # From a quarter of its brightness on, every frame of the fade is redacted.
    assert all(a is not Action.PASS for a in actions[15 + 4 :]), [i for i, a in enumerate(actions) if a is Action.PASS]


def test_a_cut_bounds_the_reach_back() -> None:
    """A hard cut from benign video: frames before it stay untouched however soon the match comes."""
    lead = [yuv_frame(pip("rocket", (0, 0, 2, 2), background=backdrop("brick")), i) for i in range(13)]
    shown = [yuv_frame(pip("rocket", (200, 100, 1000, 600)), 13 + i) for i in range(30)]
    actions = _guard_run(lead + shown)
    assert all(a is Action.PASS for a in actions[:13])
    assert all(a is not Action.PASS for a in actions[13:])


def test_a_flash_between_samples_is_checked_with_the_next_sample() -> None:
    """A picture shown for two frames right after a sample (too soon to be sampled itself)."""
    benign = [yuv_frame(backdrop("brick"), i) for i in range(16)]
    flash = [yuv_frame(fitted("chelsea"), 16 + i) for i in range(2)]
    after = [yuv_frame(backdrop("grass"), 18 + i) for i in range(20)]
    actions = _guard_run(benign + flash + after)
    assert actions[16] is not Action.PASS and actions[17] is not Action.PASS
    assert all(a is Action.PASS for a in actions[:16])


def test_propose_offers_the_whole_frame_first_and_deep_views_only_when_deep() -> None:
    p = planes_of(pip("coffee", (100, 100, 600, 400)))
    light, deep = propose(p, SearchSettings(), deep=False), propose(p, SearchSettings(), deep=True)
    assert light[0].kind == "frame" and deep[0].kind == "frame"
    assert {v.kind for v in light} <= {"frame", "trimmed", "uncropped"}
    assert {"box", "window"} <= {v.kind for v in deep}
    assert len(dcts(p, deep, coarse=True)) == len(deep)

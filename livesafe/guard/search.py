"""The hypothesis search: every place in a frame a listed picture may be, hashed at once.

PDQ matches a picture only when the hashed view frames it as the original was
framed: a percent or two of misplacement, a degree of rotation or a few
percent of cropping moves the hash past the threshold.  So robustness comes
from *what* is hashed, never from loosening the distance.  A sampled frame is
turned into many candidate views (``View``):

* the frame, and the picture inside uniform bars;
* boxes outlined by long straight edges or by the frame's own borders
  (picture-in-picture, panes, a picture over a blurred copy of itself), and
  the picture inside each box's own margin;
* halves and quarters of the frame, for panes without a clean outline;
* the picture padded back out beyond the frame's edges by repeating them, at
  a grid of extents (a cropped or zoomed picture);
* a tilted picture and a filmed screen, warped upright;
* the picture with a caption strip or a chat column at one of its sides
  filled in from the picture next to it;

and all of them are hashed in one batch (``views.py``), with PDQ's 8
rotations/flips where they are plausible, and the complement for an inverted
picture.  The coarse views are hashed from the quarter-size plane.

A view rarely lands exactly on the picture.  So the index is asked for entries
within the list's threshold *plus a margin* (``near_margin``, 23 bits: within
54 of a PDQ entry; with 17, a tilted picture or filmed screen whose corners were
found 10-20 px off was out of reach: tune split, rotation + perspective 15 -> 19
of 24 segments).  Such a near hit says "this view is close to that entry",
and the view is then refined -- each side or corner moved in shrinking steps,
at the half-size plane, towards that one entry's hash -- until it is within the
list's own threshold (a match) or stops improving.  Unrelated pictures sit
near 128 bits from any entry, so near hits are rare on benign video and the
refinement costs nothing there.  Every match is verified at the half-size
plane, with PDQ's quality floor (>= 50) applied to the view that matched.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import cv2
import numpy as np

from livesafe.guard.geometry import screen_picture, screen_quads, tilted_quad
from livesafe.guard.layout import EdgeLines, content_box, edge_bands, outlined_boxes
from livesafe.guard.views import Planes, box_dcts, box_luma, warp_quads
from livesafe.signals import pdq, signal_named
from livesafe.signals.pdq import _DIHEDRAL_SIGNS, _DIHEDRAL_TRANSPOSED, _bits_to_bytes

if TYPE_CHECKING:
    from livesafe.guard.matcher import Match, Matcher

# PDQ's 8 dihedral variants (in the reference's order), then the complement: the picture's negative.
ORIENTATIONS = (
    "original",
    "rotate90",
    "rotate180",
    "rotate270",
    "flip_x",
    "flip_y",
    "flip_plus1",
    "flip_minus1",
    "inverted",
)
INVERTED = 8
# What a view can be (events name the kind of view that matched): see the module docstring.
VIEW_KINDS = ("frame", "trimmed", "uncropped", "box", "window", "tilted", "screen", "masked")

# Extents (left, top, right, bottom; fractions of the picture's size) the picture is padded out
# to when the frame may show only part of it.  Symmetric for a zoom, one side or two adjacent
# sides for an off-centre crop; the refinement takes it the rest of the way.
_UNCROP_LIGHT = tuple((e, e, e, e) for e in (0.035, 0.07))
_UNCROP = (
    # a zoom, centred or drifted by half its margin either way (camera shake, pan)
    tuple(
        (e + dx, e + dy, e - dx, e - dy)
        for e in (0.04, 0.08, 0.12)
        for dx in (-e / 2, 0, e / 2)
        for dy in (-e / 2, 0, e / 2)
    )
    + tuple((e, e, e, e) for e in (0.16,))
    # an off-centre crop: one side, or two adjacent sides
    + tuple(tuple(e if k == side else 0.0 for k in range(4)) for side in range(4) for e in (0.05, 0.1, 0.16))
    + tuple(
        tuple(e if k in pair else 0.0 for k in range(4))
        for pair in ((0, 1), (1, 2), (2, 3), (3, 0))
        for e in (0.06, 0.12)
    )
)
_MIN_LAYOUT = 32  # coarse-plane pixels: below this a frame is too small to hold windows worth finding
_WINDOWS = (
    (0, 0, 0.5, 1),
    (0.5, 0, 0.5, 1),
    (0, 0, 1, 0.5),
    (0, 0.5, 1, 0.5),
    (0, 0, 0.5, 0.5),
    (0.5, 0, 0.5, 0.5),
    (0, 0.5, 0.5, 0.5),
    (0.5, 0.5, 0.5, 0.5),
)


@dataclass(frozen=True, slots=True)
class SearchSettings:
    """How widely a sampled frame is searched (``[guard.search]`` in the config)."""

    boxes: int = 12  # outlined boxes per deep sample
    uncrop: bool = True  # pad the picture beyond the frame: crops, zoom, shake
    rectify: bool = True  # tilted pictures and filmed screens
    masks: bool = True  # paint over caption strips, chat columns and boxes (a face-cam) on the picture
    windows: bool = True  # halves and quarters of the frame
    near_margin: int = 23  # refine views within a list's threshold + this many bits of an entry
    refinements: int = 4  # (view, entry) pairs refined per sample, nearest first

    def __post_init__(self) -> None:
        if self.boxes < 0:
            raise ValueError("boxes must be >= 0")
        if not 0 <= self.near_margin <= 64:
            raise ValueError("near_margin must be 0..64")
        if self.refinements < 0:
            raise ValueError("refinements must be >= 0")


Box = tuple[float, float, float, float]  # x0, y0, x1, y1


def _box(values: Iterable[float]) -> Box:
    """Four coordinates as a ``Box`` (floats)."""
    x0, y0, x1, y1 = (float(v) for v in values)
    return x0, y0, x1, y1


@dataclass(frozen=True, slots=True)
class View:
    """A hypothesis about where a picture is, in frame pixel edges (pixel k spans [k, k + 1)).

    Exactly one of ``box`` (x0, y0, x1, y1; may extend beyond the frame, whose
    edge pixels then repeat) and ``quad`` (corners tl, tr, br, bl) is set.
    ``fill`` is a strip of the box (x0, y0, x1, y1) painted over from the
    picture beside it before hashing.  ``dihedral``: also try the picture's 8
    rotations/flips; ``inverted``: also its negative.
    """

    kind: str
    box: Box | None = None
    quad: tuple[tuple[float, float], ...] | None = None
    fill: Box | None = None
    dihedral: bool = False
    inverted: bool = False

    def bounds(self, width: int, height: int) -> tuple[int, int, int, int]:
        """(x, y, w, h) of the part of the frame the view covers, for events."""
        if self.box is not None:
            x0, y0, x1, y1 = self.box
        else:
            quad = self.require_quad()
            x0, y0 = min(x for x, _ in quad), min(y for _, y in quad)
            x1, y1 = max(x for x, _ in quad), max(y for _, y in quad)
        x0, y0 = max(0, int(np.floor(x0))), max(0, int(np.floor(y0)))
        x1, y1 = min(width, int(np.ceil(x1))), min(height, int(np.ceil(y1)))
        return x0, y0, max(1, x1 - x0), max(1, y1 - y0)

    def require_box(self) -> Box:
        """The box of a box view (the caller knows it is one)."""
        assert self.box is not None, f"{self.kind} view has no box"
        return self.box

    def require_quad(self) -> tuple[tuple[float, float], ...]:
        """The corners of a quad view: exactly one of box and quad is set."""
        assert self.quad is not None, f"{self.kind} view has neither box nor quad"
        return self.quad

    def parameters(self) -> np.ndarray:
        return np.asarray(self.box if self.box is not None else self.quad, np.float64).reshape(-1)

    def with_parameters(self, values: np.ndarray) -> View:
        if self.box is not None:
            return replace(self, box=_box(values))
        return replace(self, quad=tuple((float(x), float(y)) for x, y in values.reshape(4, 2)))

    def size(self) -> tuple[float, float]:
        p = self.parameters()
        if self.box is not None:
            return p[2] - p[0], p[3] - p[1]
        q = p.reshape(4, 2)
        return float(np.ptp(q[:, 0])), float(np.ptp(q[:, 1]))


# --------------------------------------------------------------------------- proposing views


def propose(planes: Planes, settings: SearchSettings, *, deep: bool) -> list[View]:
    """The views worth hashing in this frame (``deep=False``: the whole picture only)."""
    width, height = planes.width, planes.height
    frame = View("frame", box=(0.0, 0.0, float(width), float(height)), dihedral=True, inverted=True)
    views = [frame]
    fine, s = planes.fine.luma, planes.fine.pixels
    picture = frame
    inner = content_box(fine, 6.0)
    if inner is not None and (inner[2], inner[3]) != (fine.shape[1], fine.shape[0]) and min(inner[2:]) >= 8:
        x, y, w, h = inner
        picture = View("trimmed", box=(x * s, y * s, (x + w) * s, (y + h) * s), dihedral=True, inverted=True)
        views.append(picture)
    if settings.uncrop:
        views += _uncropped(picture, _UNCROP if deep else _UNCROP_LIGHT)
    small, q = planes.coarse.luma, planes.coarse.pixels
    if not deep or min(small.shape) < _MIN_LAYOUT:
        return views
    lines = EdgeLines(small)
    outlined = outlined_boxes(lines, settings.boxes)
    for rank, (box, _) in enumerate(outlined):
        x0, y0, x1, y1 = box
        views.append(View("box", box=(x0 * q, y0 * q, x1 * q, y1 * q), dihedral=rank < 4))
        # A window's or pane's own margin (a mount, a backdrop) inside the outline.
        # The picture inside the window's or pane's own margin (a mount, a backdrop with a name tag).
        for margin in _margins(small[y0:y1, x0:x1]) if rank < 6 else ():
            mx, my, mw, mh = margin
            inner = ((x0 + mx) * q, (y0 + my) * q, (x0 + mx + mw) * q, (y0 + my + mh) * q)
            views.append(View("box", box=_box(inner), dihedral=rank < 4))
    if settings.windows:
        rows, cols = small.shape
        for fx, fy, fw, fh in _WINDOWS:
            x, y, w, h = int(fx * cols), int(fy * rows), int(fw * cols), int(fh * rows)
            # A pane's backdrop (often a gradient, with a name tag): trim lines that are mostly backdrop.
            trimmed = content_box(small[y : y + h, x : x + w], 6.0, fill=0.85, drift=True)
            if trimmed is not None and min(trimmed[2:]) >= 4:
                x, y, (w, h) = x + trimmed[0], y + trimmed[1], trimmed[2:]
            views.append(View("window", box=(x * q, y * q, (x + w) * q, (y + h) * q)))
    if settings.rectify:
        views += _rectified(planes)
    if settings.masks:
        px0, py0, px1, py1 = (int(v) // q for v in picture.require_box())
        for band in edge_bands(lines, (px0, py0, px1, py1)):
            views.append(View("masked", box=picture.box, fill=_box(v * q for v in band)))
        # A box inside the picture covering a part of it (a face-cam, a sticker panel): painted over.
        area = (px1 - px0) * (py1 - py0)
        for (x0, y0, x1, y1), _ in outlined[: settings.boxes // 2]:
            inside = x0 >= px0 and y0 >= py0 and x1 <= px1 and y1 <= py1
            if inside and (x1 - x0) * (y1 - y0) <= 0.35 * area:
                views.append(View("masked", box=picture.box, fill=(x0 * q, y0 * q, x1 * q, y1 * q)))
    return views


def _uncropped(picture: View, extents: tuple[tuple[float, ...], ...]) -> list[View]:
    x0, y0, x1, y1 = picture.require_box()
    w, h = x1 - x0, y1 - y0
    return [
        View("uncropped", box=(x0 - left * w, y0 - top * h, x1 + right * w, y1 + bottom * h))
        for left, top, right, bottom in extents
    ]


def _margins(luma: np.ndarray) -> list[tuple[int, int, int, int]]:
    """The picture inside a window's or pane's own margin (x, y, w, h in ``luma``'s pixels), if there is
    one: bars of one colour (a mount, letterboxing), of mostly one colour (a backdrop carrying a name
    tag), or a gradient backdrop; inside a thin border line or not.  Each distinct box once."""
    rows, cols = luma.shape
    found: list[tuple[int, int, int, int]] = []
    for shave in (0, 2):  # a pane's border line is a pixel or two at this scale
        inner = luma[shave : rows - shave, shave : cols - shave]
        if min(inner.shape) < 8:
            continue
        for margin in (content_box(inner, 8.0), content_box(inner, 8.0, fill=0.85, drift=True)):
            if margin is None or min(margin[2:]) < 4 or margin[2] * margin[3] >= 0.95 * rows * cols:
                continue
            box = (margin[0] + shave, margin[1] + shave, margin[2], margin[3])
            if all(max(abs(a - b) for a, b in zip(box, other, strict=True)) > 1 for other in found):
                found.append(box)
    return found


def _rectified(planes: Planes) -> list[View]:
    """A tilted picture and filmed screens as quads (frame pixel edges), and the picture inside
    each one's own bars (a screen showing a picture letterboxed or pillarboxed)."""
    fine, s = planes.fine.luma, planes.fine.pixels
    quads: list[tuple[str, np.ndarray]] = []
    tilted = tilted_quad(fine)
    if tilted is not None:
        quads.append(("tilted", tilted * s))
    coarse, q = planes.coarse.luma, planes.coarse.pixels
    ratio = q // s
    for quad in screen_quads(coarse, max_quads=3):
        centres = quad * ratio + (ratio - 1) / 2  # coarse pixel centres -> fine pixel centres
        quads.append(("screen", (screen_picture(fine, centres) + 0.5) * s))
    views = []
    for kind, quad in quads:
        view = View(kind, quad=_corners(quad), dihedral=True)
        views.append(view)
        flat, shrink = view_luma(planes, view, coarse=True)
        for mx, my, mw, mh in _margins(flat):
            # The inner rectangle, back through the same homography the warp used.
            h, w = flat.shape
            unit = np.array([[mx, my], [mx + mw, my], [mx + mw, my + mh], [mx, my + mh]], np.float64) / (w, h)
            views.append(View(kind, quad=_corners(_bilinear(quad, unit)), dihedral=True))
    return views


def _bilinear(quad: np.ndarray, unit: np.ndarray) -> np.ndarray:
    """Points at ``unit`` (u, v in 0..1) of the quadrilateral ``quad`` (tl, tr, br, bl), by its homography."""
    square = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], np.float32)
    homography = cv2.getPerspectiveTransform(square, np.asarray(quad, np.float32))
    return cv2.perspectiveTransform(unit.astype(np.float32)[None], homography)[0]


def _corners(quad: np.ndarray) -> tuple[tuple[float, float], ...]:
    return tuple((float(x), float(y)) for x, y in np.asarray(quad, np.float64).reshape(4, 2))


# --------------------------------------------------------------------------- hashing views


def dcts(planes: Planes, views: list[View], *, coarse: bool) -> np.ndarray:
    """(N, 16, 16) PDQ DCT blocks of ``views``; large plain boxes from the coarse plane if ``coarse``."""
    out = np.empty((len(views), 16, 16), np.float32)
    plain = [i for i, v in enumerate(views) if v.box is not None and v.fill is None]
    for level in planes.levels():
        chosen = [i for i in plain if planes.level_for(*views[i].size(), coarse) is level]
        if chosen:
            out[chosen] = box_dcts(planes, level, np.array([views[i].box for i in chosen]))
    # Masked views of one picture share its box: its 64x64 image is resampled once, then each is
    # painted over on a copy (``_filled``).
    boxes: dict[tuple[float, ...], np.ndarray] = {}
    for i, view in enumerate(views):
        if view.box is None:
            out[i] = _dct_hash(view_image(planes, view, coarse=coarse))
        elif view.fill is not None:
            if view.box not in boxes:
                boxes[view.box] = pdq.downsample_64(*view_luma(planes, view))
            out[i] = _dct_hash(_filled(boxes[view.box], view))
    return out


def view_luma(planes: Planes, view: View, *, coarse: bool = False) -> tuple[np.ndarray, int]:
    """The pixels of a box or quad view, upright (a plane crop or a warped quad), and their shrink."""
    if view.quad is not None:
        return warp_quads(planes, np.array([view.quad]), coarse)[0]
    return box_luma(planes, np.array(view.box))


def view_image(planes: Planes, view: View, *, coarse: bool = False) -> np.ndarray:
    """The reference's 64x64 filtered image of a view (float32), its strip or patch filled in."""
    luma, shrink = view_luma(planes, view, coarse=coarse)
    image = pdq.downsample_64(luma, shrink)
    return image if view.fill is None else _filled(image, view)


def _filled(image: np.ndarray, view: View) -> np.ndarray:
    """``image`` (the view's 64x64) with the view's ``fill`` rectangle painted over from around it.

    A strip along a whole side (a caption bar, a chat column) repeats the
    picture's line next to it; a patch inside (a face-cam, a sticker) is
    inpainted from its surroundings.  At 64x64 both cost microseconds, and PDQ
    sees nothing finer anyway.
    """
    bx0, by0, bx1, by1 = view.require_box()
    assert view.fill is not None, "only a masked view is filled"
    fx0, fy0, fx1, fy1 = view.fill
    sx, sy = 64 / max(1e-6, bx1 - bx0), 64 / max(1e-6, by1 - by0)
    x0, x1 = int(np.floor((fx0 - bx0) * sx)), int(np.ceil((fx1 - bx0) * sx))
    y0, y1 = int(np.floor((fy0 - by0) * sy)), int(np.ceil((fy1 - by0) * sy))
    x0, x1, y0, y1 = max(0, x0), min(64, x1), max(0, y0), min(64, y1)
    if x1 - x0 < 1 or y1 - y0 < 1:
        return image
    out = image.copy()
    if x1 - x0 >= 63 and (y0 == 0) != (y1 == 64):  # a strip along the top or the bottom
        if y0 == 0:
            out[:y1] = out[y1]
        else:
            out[y0:] = out[y0 - 1]
    elif y1 - y0 >= 63 and (x0 == 0) != (x1 == 64):  # a strip along the left or the right
        if x0 == 0:
            out[:, :x1] = out[:, x1 : x1 + 1]
        else:
            out[:, x0:] = out[:, x0 - 1 : x0]
    else:
        mask = np.zeros((64, 64), np.uint8)
        mask[y0:y1, x0:x1] = 1
        painted = cv2.inpaint(np.clip(out, 0, 255).astype(np.uint8), mask, 3, cv2.INPAINT_TELEA)
        out[mask > 0] = painted[mask > 0]
    return out


def oriented_hashes(blocks: np.ndarray, orientations: np.ndarray | int) -> np.ndarray:
    """(N, 32) hash bytes of each of the N blocks in its orientation (an ``ORIENTATIONS`` index, one
    for all or one per block): a dihedral variant, or the complement for an inverted picture.

    Only the variants asked for are computed: most views are tried upright only,
    and each variant costs its own median (sign flips move it).
    """
    orientations = np.broadcast_to(np.asarray(orientations, np.intp), (len(blocks),))
    dihedral = np.where(orientations == INVERTED, 0, orientations)
    signed = blocks * _DIHEDRAL_SIGNS[dihedral]
    turned = _DIHEDRAL_TRANSPOSED[dihedral]
    if turned.any():
        signed[turned] = signed[turned].transpose(0, 2, 1)
    hashes = _bits_to_bytes(signed.reshape(-1, 256))
    inverted = orientations == INVERTED
    hashes[inverted] = ~hashes[inverted]
    return hashes


def _oriented_hash(image64: np.ndarray, orientation: int) -> np.ndarray:
    """The 32 hash bytes of one 64x64 view image in one orientation."""
    return oriented_hashes(_dct_hash(image64)[None], orientation)[0]


def _dct_hash(image64: np.ndarray) -> np.ndarray:
    """The 16x16 PDQ DCT block of a 64x64 image."""
    return pdq._DCT @ image64 @ pdq._DCT.T


def _distances(hashes: np.ndarray, target: np.ndarray) -> np.ndarray:
    return np.bitwise_count(hashes ^ target).sum(axis=-1, dtype=np.int64)


# --------------------------------------------------------------------------- the search


@dataclass(frozen=True, slots=True)
class Candidate:
    """A view's hash close to one list entry: what refinement starts from."""

    view: View
    orientation: int
    list_index: int
    row: int
    distance: int


class Search:
    """Runs the search of one sampled frame against a ``Matcher``'s PDQ lists."""

    def __init__(self, settings: SearchSettings) -> None:
        self.settings = settings

    def run(self, planes: Planes, matcher: Matcher, *, deep: bool, extra: Sequence[View] = ()) -> list[Match]:
        """The best match per list among all views (and ``extra`` ones, e.g. the last matched view)."""
        views = [*extra, *propose(planes, self.settings, deep=deep)]
        best: dict[int, Match] = {}
        if "pdq" in matcher.signals:
            best = self._pdq(planes, matcher, views)
        for name in sorted(matcher.signals - {"pdq"}):
            for match in self._other(planes, matcher, views, name):
                current = best.get(match[0])
                if current is None:
                    best[match[0]] = match[1]
        return sorted(best.values(), key=lambda m: m.distance)

    def _other(self, planes: Planes, matcher: Matcher, views: list[View], name: str) -> list[tuple[int, Match]]:
        """Exact matches of a signal without a batched form (imagehash's): the main views only.

        These hashes go through PIL per view, so only the views most likely to
        hold a whole picture are hashed: the frame, the picture inside bars,
        outlined boxes offered in all orientations, and rectified quads.
        """
        signal = signal_named(name)
        main = [v for v in views if v.dihedral][:8]
        hashed, owners = [], []
        for i, view in enumerate(main):
            luma, shrink = view_luma(planes, view)
            hashes = signal.hash_luma(luma, planes.luma_scale, shrink=shrink, all_orientations=view.dihedral)
            if hashes.quality < signal.min_quality:
                continue
            hashed.append(hashes.variants)
            owners += [(i, k, hashes.quality) for k in range(len(hashes.variants))]
        if not hashed:
            return []
        queries = np.concatenate(hashed)
        found: dict[int, Match] = {}
        for q, li, row, distance in matcher.lookup(name, queries):
            if li in found and found[li].distance <= distance:
                continue
            i, k, quality = owners[q]
            found[li] = matcher.make_match(
                name, li, row, distance, main[i], k, quality, queries[q], planes.width, planes.height, 0
            )
        return list(found.items())

    def _pdq(self, planes: Planes, matcher: Matcher, views: list[View]) -> dict[int, Match]:
        blocks = dcts(planes, views, coarse=True)
        owners, orientations = [], []
        for i, view in enumerate(views):
            allowed = list(range(8)) if view.dihedral else [0]
            if view.inverted:
                allowed.append(INVERTED)
            owners += [i] * len(allowed)
            orientations += allowed
        owners_a, orientations_a = np.array(owners), np.array(orientations)
        queries = oriented_hashes(blocks[owners_a], orientations_a)
        hits = matcher.lookup("pdq", queries, self.settings.near_margin)
        candidates = sorted(
            (Candidate(views[owners_a[q]], int(orientations_a[q]), li, row, d) for q, li, row, d in hits),
            key=lambda c: c.distance,
        )
        best: dict[int, Match] = {}
        refined = 0
        for candidate in candidates:
            if candidate.list_index in best and best[candidate.list_index].distance <= candidate.distance:
                continue
            target = matcher.entry_hash("pdq", candidate.list_index, candidate.row)
            threshold = matcher.threshold("pdq", candidate.list_index)
            view, distance, quality = self.verify(planes, candidate.view, candidate.orientation, target)
            if distance > threshold and refined < self.settings.refinements:
                refined += 1
                view, distance, quality = self.refine(planes, view, candidate.orientation, target, distance, threshold)
            if distance <= threshold and quality >= pdq.MIN_QUALITY:
                match = matcher.make_match(
                    "pdq",
                    candidate.list_index,
                    candidate.row,
                    distance,
                    view,
                    candidate.orientation,
                    quality,
                    self.hash_of(planes, view, candidate.orientation),
                    planes.width,
                    planes.height,
                    self.settings.near_margin,
                )
                current = best.get(candidate.list_index)
                if current is None or distance < current.distance:
                    best[candidate.list_index] = match
        return best

    def verify(self, planes: Planes, view: View, orientation: int, target: np.ndarray) -> tuple[View, int, int]:
        """(view, distance to ``target``, PDQ quality), hashed exactly at the fine plane."""
        image = view_image(planes, view)
        distance = int(_distances(_oriented_hash(image, orientation), target))
        return view, distance, pdq.quality_of_64(image * np.float32(planes.luma_scale))

    def showing_since(
        self, lumas: list[tuple[np.ndarray, float]], match: Match, before: tuple[np.ndarray, float] | None = None
    ) -> int:
        """Index into ``lumas`` (consecutive frames' Y planes and scales; the last is the frame that
        matched) of the first frame, walking back, that still shows the matched picture.

        Each frame is seen through the view that matched.  It shows the picture
        when its hash is within the list's threshold plus the search's margin of
        the entry (a fade from black keeps PDQ's hash, which ignores contrast),
        or when it is part of a dissolve into it: no cut since that frame, and
        least squares explains it as at least a quarter of the matched picture
        (a cross-fade's blend is 70 % the picture while its hash is still 60
        bits away).  ``before`` is the frame before ``lumas`` (already shown):
        unless it looks like the matched picture too, the fit also gets it as a
        second component, so a picture that merely resembles the matched one
        by chance is not taken for a blend.  The walk stops at the first frame
        that does neither.
        """
        orientation = ORIENTATIONS.index(match.orientation)
        images = [view_image(Planes(y, scale), match.view) for y, scale in lumas]
        matched = images[-1].reshape(-1)
        columns = [matched, np.ones(matched.size, np.float32)]
        # A step between frames bigger than this is a cut, not a dissolve.  A dissolve of n
        # frames moves each frame 1/n of the way from the background to the picture, so
        # with the background known a step of up to a third of that distance is one of a
        # dissolve of 3+ frames (fast ones of 4-7 frames move 15-25 levels a frame).
        cut_step = 12.0
        if before is not None:
            background = view_image(Planes(*before), match.view).reshape(-1)
            if abs(np.corrcoef(matched, background)[0, 1]) < 0.7:
                columns.insert(1, background)
                cut_step = max(cut_step, float(np.abs(matched - background).mean()) / 3)
        design = np.stack(columns, axis=1).astype(np.float64)
        first = len(images) - 1
        for j in range(len(images) - 2, -1, -1):
            image = images[j]
            near = int(_distances(_oriented_hash(image, orientation), match.target)) <= match.near_distance
            if not near:
                cut = np.abs(image - images[j + 1]).mean() > cut_step
                share = np.linalg.lstsq(design, image.reshape(-1).astype(np.float64), rcond=None)[0][0]
                if cut or share < 0.25:
                    break
            first = j
        return first

    def hash_of(self, planes: Planes, view: View, orientation: int) -> np.ndarray:
        return _oriented_hash(view_image(planes, view), orientation)

    def refine(
        self, planes: Planes, view: View, orientation: int, target: np.ndarray, distance: int, threshold: int
    ) -> tuple[View, int, int]:
        """Move the view's sides (or corners) in shrinking steps towards ``target``'s hash.

        A pattern search (``_pattern``) first on the coarse plane, where a trial
        costs a quarter, then on the fine one with small steps.  A box that gets
        close but not close enough goes on as a quad, which can follow a small
        tilt or keystone.  The result is verified on the fine plane.
        """
        refined, near = self._pattern(planes, view, orientation, target, threshold, coarse=True)
        if near <= threshold + 10:  # otherwise fine steps will not bridge the gap: give up early
            refined, near = self._pattern(planes, refined, orientation, target, threshold, coarse=False)
        if near > threshold and view.box is not None and view.fill is None and near <= threshold + 10:
            # Still out: the picture may be turned or keystoned a little, which a box cannot follow.
            refined, near = self._pattern(planes, _as_quad(refined), orientation, target, threshold, coarse=False)
        result = self.verify(planes, refined, orientation, target)
        return result if result[1] <= distance else self.verify(planes, view, orientation, target)

    def _pattern(
        self, planes: Planes, view: View, orientation: int, target: np.ndarray, threshold: int, *, coarse: bool
    ) -> tuple[View, int]:
        """One pattern search: each round tries every side (corner) moved out and in by ``step``, and
        the whole view shifted, scaled and (quads) turned; keeps the best if it is closer, else halves
        the step, down to about a pixel of the plane used.  Stops once within ``threshold``."""
        width, height = view.size()
        pixel = planes.level_for(width, height, coarse).pixels
        step = 0.03 if coarse else 1.5 * pixel / max(1.0, min(width, height))
        rounds = 12 if coarse else 6
        best = view.parameters()
        best_d = int(_distances(oriented_hashes(dcts(planes, [view], coarse=coarse), orientation)[0], target))
        for _ in range(rounds):
            if best_d <= threshold or step * min(width, height) < 0.75 * pixel:
                break
            trials = _neighbours(best, view.box is not None, step * width, step * height)
            blocks = dcts(planes, [view.with_parameters(t) for t in trials], coarse=coarse)
            d = _distances(oriented_hashes(blocks, orientation), target)
            k = int(d.argmin())
            if d[k] < best_d:
                best, best_d = trials[k], int(d[k])
            else:
                step /= 2
        return view.with_parameters(best), best_d


def _as_quad(view: View) -> View:
    x0, y0, x1, y1 = view.require_box()
    return replace(view, box=None, quad=((x0, y0), (x1, y0), (x1, y1), (x0, y1)))


def _neighbours(params: np.ndarray, is_box: bool, dx: float, dy: float) -> np.ndarray:
    """Trial parameter vectors around ``params``: each coordinate moved by +-dx (x) or +-dy (y), and
    the whole view shifted, scaled and (quads) turned, since those move every coordinate at once."""
    deltas = np.tile([dx, dy], len(params) // 2)
    trials = []
    for k in range(len(params)):
        for sign in (-1.0, 1.0):
            t = params.copy()
            t[k] += sign * deltas[k]
            trials.append(t)
    points = params.reshape(-1, 2)
    centre = points.mean(axis=0)
    extent = max(1.0, float(np.ptp(points[:, 0])))
    for sign in (-1.0, 1.0):
        trials.append((centre + (points - centre) * (1 + sign * 2 * dx / extent)).reshape(-1))
        trials.append((points + sign * np.array([dx, 0.0])).reshape(-1))
        trials.append((points + sign * np.array([0.0, dy])).reshape(-1))
        if not is_box:
            angle = sign * 2 * dx / extent
            turn = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
            trials.append(((points - centre) @ turn.T + centre).reshape(-1))
    return np.array(trials)

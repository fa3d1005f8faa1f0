"""Hashing many views of one frame at once: axis-aligned boxes and warped quadrilaterals.

A *view* is a geometric hypothesis about where a picture sits in the frame: the
whole frame, a window, the frame extended beyond its edges (a picture that was
cropped), a tilted or perspective-distorted quadrilateral.  PDQ reduces any
view to the 16x16 low-frequency DCT block of a 64x64 filtered resampling, and
both steps are linear and separable.  For an axis-aligned box, the block is
``P @ L @ Q.T`` where ``L`` is the luma plane, ``P`` (16 x rows) folds the
reference's Jarosz filter for the box's row span into the DCT, and ``Q``
likewise for its column span.  Boxes that share a row span share ``P @ L``, so
a grid of hundreds of boxes costs a few matrix products, not hundreds of hashes.
A box may extend beyond the plane: the missing pixels repeat the nearest edge
pixel (folded into the operator), which is how a cropped picture is padded back
out to the extent the original had.

Quadrilaterals (tilted pictures, filmed screens) are warped upright with OpenCV
and hashed as a batch.

Everything works on a ``Planes`` pyramid of the Y plane: half size (what the live
path has always hashed: ~1 bit from Meta's reference) and quarter size (~2-3
bits; used for the coarse search of large views, where only "close enough to
refine" matters).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from livesafe.signals import pdq

MIN_HALVED = 128  # smallest side worth hashing from a half-size copy


@lru_cache(maxsize=4096)
def _span_operator(n: int, shrink: int) -> np.ndarray:
    """(16, n) float32: the PDQ DCT rows of an ``n``-pixel span of a 1/``shrink`` copy."""
    index, weight = pdq._jarosz_operator(n * shrink, shrink)
    dense = np.zeros((64, n), np.float64)
    np.add.at(dense, (np.broadcast_to(np.arange(64)[:, None], index.shape), index), weight)
    op = (pdq._DCT.astype(np.float64) @ dense).astype(np.float32)
    op.flags.writeable = False
    return op


def _placed(a: int, b: int, size: int, shrink: int, lo: int, hi: int) -> np.ndarray:
    """(16, hi - lo) operator of span [a, b) on an axis of ``size`` pixels, restricted to
    the pixels [lo, hi) it reads (edge pixels repeat beyond 0 and ``size``)."""
    op = _span_operator(b - a, shrink)
    out = np.zeros((16, hi - lo), np.float32)
    s0, s1 = max(a, 0), min(b, size)
    out[:, s0 - lo : s1 - lo] = op[:, s0 - a : s1 - a]
    if a < 0:
        out[:, 0 - lo] += op[:, :-a].sum(axis=1)
    if b > size:
        out[:, size - 1 - lo] += op[:, size - a :].sum(axis=1)
    return out


@dataclass(frozen=True, slots=True, eq=False)
class Level:
    """One plane of the pyramid: ``pixels`` frame pixels per pixel."""

    luma: np.ndarray  # uint8
    pixels: int


class Planes:
    """The Y plane at the sizes views are hashed from (computed once per sampled frame)."""

    def __init__(self, y: np.ndarray, luma_scale: float) -> None:
        self.height, self.width = y.shape
        self.luma_scale = luma_scale
        if min(y.shape) >= 2 * MIN_HALVED:
            fine = Level(_halved(y), 2)
        else:
            fine = Level(np.ascontiguousarray(y), 1)
        self.fine = fine
        self.coarse = Level(_halved(fine.luma), fine.pixels * 2) if min(fine.luma.shape) >= 2 * MIN_HALVED else fine
        self._float: dict[int, np.ndarray] = {}

    def levels(self) -> tuple[Level, ...]:
        return (self.fine,) if self.coarse is self.fine else (self.fine, self.coarse)

    def as_float(self, level: Level) -> np.ndarray:
        key = level.pixels
        if key not in self._float:
            self._float[key] = level.luma.astype(np.float32)
        return self._float[key]

    def level_for(self, width: float, height: float, coarse: bool) -> Level:
        """The coarse plane for views large enough to keep >= 128 of its pixels on each side."""
        if coarse and self.coarse is not self.fine and min(width, height) / self.coarse.pixels >= MIN_HALVED:
            return self.coarse
        return self.fine


def _halved(y: np.ndarray) -> np.ndarray:
    rows, cols = y.shape
    return cv2.resize(y, (max(1, cols // 2), max(1, rows // 2)), interpolation=cv2.INTER_AREA)


def box_dcts(planes: Planes, level: Level, boxes: np.ndarray) -> np.ndarray:
    """PDQ DCT blocks (N, 16, 16) of ``boxes`` (N, 4: x0, y0, x1, y1 in frame pixels, may extend
    beyond the frame) hashed from ``level``.

    Boxes are snapped to the level's pixel grid.  Each distinct row span is one
    product with the plane; each distinct column span one operator; every box is
    then one small product of the two (see the module docstring).
    """
    n = len(boxes)
    out = np.empty((n, 16, 16), np.float32)
    if n == 0:
        return out
    luma = planes.as_float(level)
    rows, cols = luma.shape
    p = level.pixels
    grid = np.rint(np.asarray(boxes, np.float64) / p).astype(np.int64)
    grid[:, 2] = np.maximum(grid[:, 2], grid[:, 0] + 2)
    grid[:, 3] = np.maximum(grid[:, 3], grid[:, 1] + 2)
    row_spans, row_of = np.unique(grid[:, [1, 3]], axis=0, return_inverse=True)
    col_spans, col_of = np.unique(grid[:, [0, 2]], axis=0, return_inverse=True)
    col_ops = [_placed(int(a), int(b), cols, p, 0, cols) for a, b in col_spans]  # each (16, cols)
    order = np.argsort(row_of, kind="stable")
    bounds = np.searchsorted(row_of[order], np.arange(len(row_spans) + 1))
    for r, (a, b) in enumerate(row_spans):
        members = order[bounds[r] : bounds[r + 1]]
        used = np.array(sorted(set(col_of[members].tolist())))
        # Only the columns these boxes read (edge pixels stand in for those beyond the plane).
        c_lo = int(max(0, min(col_spans[used, 0].min(), cols - 1)))
        c_hi = int(min(cols, max(col_spans[used, 1].max(), c_lo + 1)))
        lo = max(0, min(int(a), rows - 1))
        hi = min(rows, max(int(b), lo + 1))
        shared = _placed(int(a), int(b), rows, p, lo, hi) @ luma[lo:hi, c_lo:c_hi]  # (16, c_hi - c_lo)
        stacked = np.concatenate([col_ops[c][:, c_lo:c_hi] for c in used])  # (16 len(used), c_hi - c_lo)
        blocks = (shared @ stacked.T).reshape(16, len(used), 16).transpose(1, 0, 2)
        out[members] = blocks[np.searchsorted(used, col_of[members])]
    return out


def warp_quads(planes: Planes, quads: np.ndarray, coarse: bool) -> list[tuple[np.ndarray, int]]:
    """Each quad (N, 4, 2: corners tl, tr, br, bl in frame pixels) warped upright: (luma, shrink).

    The output keeps the quad's own size at the chosen plane, so the folded
    Jarosz filter sees as many pixels as an upright box of that size would.
    """
    out = []
    for quad in np.asarray(quads, np.float64):
        width = 0.5 * (np.hypot(*(quad[1] - quad[0])) + np.hypot(*(quad[2] - quad[3])))
        height = 0.5 * (np.hypot(*(quad[3] - quad[0])) + np.hypot(*(quad[2] - quad[1])))
        level = planes.level_for(width, height, coarse)
        p = level.pixels
        w, h = max(8, round(width / p)), max(8, round(height / p))
        # Corners are pixel edges (frame pixel k spans [k, k + 1)); OpenCV maps pixel centres.
        src = (quad / p - 0.5).astype(np.float32)
        dst = np.array([[-0.5, -0.5], [w - 0.5, -0.5], [w - 0.5, h - 0.5], [-0.5, h - 0.5]], np.float32)
        matrix = cv2.getPerspectiveTransform(src, dst)
        flat = cv2.warpPerspective(level.luma, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        out.append((flat, p))
    return out


def quad_dcts(planes: Planes, quads: np.ndarray, coarse: bool) -> np.ndarray:
    """PDQ DCT blocks (N, 16, 16) of warped quads."""
    flats = warp_quads(planes, quads, coarse)
    out = np.empty((len(flats), 16, 16), np.float32)
    for k, (flat, shrink) in enumerate(flats):
        out[k] = pdq.dct_of_luma(flat, shrink=shrink).coefficients
    return out


def box_luma(planes: Planes, box: np.ndarray) -> tuple[np.ndarray, int]:
    """The pixels of one box at the fine plane (edges repeated beyond the frame) and their shrink."""
    level = planes.fine
    p = level.pixels
    x0, y0, x1, y1 = (int(v) for v in np.rint(np.asarray(box, np.float64) / p))
    rows, cols = level.luma.shape
    x1, y1 = max(x1, x0 + 2), max(y1, y0 + 2)
    inner = level.luma[
        max(0, min(y0, rows - 1)) : max(1, min(y1, rows)), max(0, min(x0, cols - 1)) : max(1, min(x1, cols))
    ]
    pad = (max(0, -y0), max(0, y1 - rows), max(0, -x0), max(0, x1 - cols))
    if any(pad):
        inner = cv2.copyMakeBorder(inner, *pad, cv2.BORDER_REPLICATE)
    return inner, p

"""Reading a frame's layout: where pictures, windows, panes and overlays sit.

This is the evidence the hypothesis search (``search.py``) builds its views
from.  Nothing here decides whether anything matches; it only says where a
picture's borders could be: bars of one colour around it, long straight edges
(a window, a pane, a caption strip), or the frame's own borders, which a
full-height picture-in-picture or a pane touching the frame edge uses as
sides.  It errs on the side of proposing: a wrong box costs a hash, a missing
one costs a miss, and the search's refinement tolerates a box a few pixels off.
"""

from __future__ import annotations

import cv2
import numpy as np

# Our planes are small (320x180 .. 640x360): OpenCV's worker threads cost more in
# hand-off than they save, and contend with other streams and the codecs.
cv2.setNumThreads(1)

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in the plane's pixel edges


def content_box(
    luma: np.ndarray, tolerance: float, *, fill: float = 0.98, drift: bool = False
) -> tuple[int, int, int, int] | None:
    """Bounding box inside uniform bars on each side, or None if the frame is all bar.

    A bar is a run of rows (columns) from the edge whose pixels (a ``fill``
    fraction of them) stay within ``tolerance`` of the edge's own median
    colour -- so grey, white or brand-coloured bars trim as well as black
    ones.  With ``drift``, each line is compared with its own median instead,
    which may wander slowly: the gradient backdrop of a split-screen layout.
    """
    rows, cols = luma.shape
    if rows < 8 or cols < 8:
        return None

    def run(lines: np.ndarray) -> int:
        """Leading uniform lines (at most half of them: a bar never covers more)."""
        lines = lines[: (len(lines) + 1) // 2 + 1, ::2]  # every other pixel is plenty
        needed = fill * lines.shape[1]
        middle = lines.shape[1] // 2
        edge = lines[0].astype(np.int16)
        # Most frames have no bar: then the edge line alone says so.
        if np.count_nonzero(np.abs(edge - np.partition(edge, middle)[middle]) <= tolerance) < needed:
            return 0
        lines = lines.astype(np.int16)
        if drift:
            medians = np.partition(lines, middle, axis=1)[:, middle]
            steps = np.abs(np.diff(medians, prepend=medians[:1]))
            uniform = (np.count_nonzero(np.abs(lines - medians[:, None]) <= tolerance, axis=1) >= needed) & (steps <= 3)
        else:
            colour = np.partition(lines[0], middle)[middle]  # the edge line's median colour
            uniform = np.count_nonzero(np.abs(lines - colour) <= tolerance, axis=1) >= needed
        return len(uniform) if uniform.all() else int(np.argmin(uniform))

    top = run(luma)
    bottom = run(luma[::-1])
    left = run(luma.T)
    right = run(luma.T[::-1])
    w, h = cols - left - right, rows - top - bottom
    if w <= 4 or h <= 4:
        return None
    return left, top, w, h


def axis_edges(small: np.ndarray, vertical: bool) -> np.ndarray:
    """Where a straight horizontal (``vertical=False``) or vertical boundary may pass: a bool
    map whose pixel ``p`` along the axis marks the boundary between pixels ``p - 1`` and ``p``.

    A picture's border is where the luma step *across* the line direction peaks,
    at nearly every point along it, at the same position; texture also has steps,
    but its peaks fall anywhere.  So each point is marked where its step (lightly
    smoothed along the line) is the largest within two pixels either way across
    it, and at least 3 levels: then a border covers ~95 % of its length and
    texture ~20-40 % of any line.  (Canny's direction-based thinning scatters a
    border over texture into short pieces; this does not.)
    """
    luma = (small.T if vertical else small).astype(np.int16)
    step: np.ndarray = np.zeros_like(luma)
    step[1:] = np.abs(luma[1:] - luma[:-1])
    step = cv2.blur(step, (3, 1), borderType=cv2.BORDER_REPLICATE) if luma.shape[1] >= 3 else step
    peak = cv2.dilate(step, np.ones((5, 1), np.uint8))
    marked = (step == peak) & (step >= 3)
    marked[0] = False
    return marked


class EdgeLines:
    """Coverage of straight axis-aligned lines by boundary points (``axis_edges``), for any span in O(1).

    A line at position ``p`` is the boundary between pixel rows (or columns)
    ``p - 1`` and ``p``; a point marked at ``p`` or at ``p + 1`` counts (a
    border falling inside a pixel peaks on either side of it).  Positions 0 and
    the plane's size are the frame's own borders and are always covered.
    """

    def __init__(self, small: np.ndarray) -> None:
        self.rows, self.cols = small.shape
        self._h = self._cumulative(axis_edges(small, vertical=False))
        self._v = self._cumulative(axis_edges(small, vertical=True))

    @staticmethod
    def _cumulative(marked: np.ndarray) -> np.ndarray:
        near = marked.copy()
        near[:-1] |= marked[1:]
        cum = np.zeros((marked.shape[0], marked.shape[1] + 1), np.int32)
        np.cumsum(near, axis=1, out=cum[:, 1:])
        return cum

    def positions(self, vertical: bool, span: int, limit: int, threshold: float = 0.8) -> np.ndarray:
        """Line positions (and the frame borders) where some ``span``-long stretch is mostly edge."""
        cum = self._v if vertical else self._h
        size = self.cols if vertical else self.rows
        if cum.shape[1] <= span:
            return np.array([0, size], np.int64)
        window = (cum[:, span:] - cum[:, :-span]) / span
        best = window.max(axis=1)
        candidates = np.flatnonzero(best >= threshold)
        kept: list[int] = []
        for p in candidates[np.argsort(-best[candidates], kind="stable")].tolist():
            if all(abs(p - k) > 1 for k in kept):
                kept.append(p)
                if len(kept) >= limit:
                    break
        return np.unique(np.concatenate([[0, size], np.asarray(kept, np.int64)]))

    def cover(self, vertical: bool, lines: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """(len(lo), len(lines)): share of each span [lo, hi) that each line covers."""
        cum = self._v if vertical else self._h
        size = self.cols if vertical else self.rows
        at = cum[np.clip(lines, 0, size - 1)]
        hits = (at[:, hi] - at[:, lo]).T
        share = hits / np.maximum(1, hi - lo)[:, None]
        return np.where(((lines == 0) | (lines == size))[None, :], 1.0, share)


def outlined_boxes(
    lines: EdgeLines, most: int, *, min_fraction: float = 0.015, limit: int = 32
) -> list[tuple[Box, float]]:
    """Upright boxes whose four sides are straight edges or frame borders, best outlined first.

    Candidate sides are the ``limit`` strongest line positions per axis: over a busy
    backdrop texture supplies many short strong lines, and with 20 a small pane's or
    window's sides were often crowded out (tune split, panes and PiP: 10 -> 12 of 24
    segments caught at 32, 13 at 40; more positions cost more pairs to score).

    Every pair of candidate rows times every pair of candidate columns is a
    box; it is kept when each side is >= 65 % covered and at least one side is
    a real edge (the frame itself is not a box).  The score counts covered
    minus uncovered pixels along the real sides, so a long, clean outline beats
    a short one and a chance box in texture (patchy sides) scores low.
    """
    rows, cols = lines.rows, lines.cols
    ys = lines.positions(False, max(8, int(0.08 * cols)), limit)
    xs = lines.positions(True, max(8, int(0.08 * rows)), limit)

    def spans(ps: np.ndarray, minimum: int) -> tuple[np.ndarray, np.ndarray]:
        a, b = np.meshgrid(ps, ps, indexing="ij")
        ok = b - a >= minimum
        return a[ok], b[ok]

    y0, y1 = spans(ys, max(8, rows // 10))
    x0, x1 = spans(xs, max(8, cols // 10))
    if not len(y0) or not len(x0):
        return []
    v_cov = lines.cover(True, xs, y0, y1)  # (row spans, column positions)
    h_cov = lines.cover(False, ys, x0, x1)  # (column spans, row positions)
    sides = np.stack(
        [
            h_cov[:, np.searchsorted(ys, y0)].T,  # top    (row spans, column spans)
            h_cov[:, np.searchsorted(ys, y1)].T,  # bottom
            v_cov[:, np.searchsorted(xs, x0)],  # left
            v_cov[:, np.searchsorted(xs, x1)],  # right
        ]
    )
    shape = sides.shape[1:]
    borders = np.stack(
        [
            np.broadcast_to((y0 == 0)[:, None], shape),
            np.broadcast_to((y1 == rows)[:, None], shape),
            np.broadcast_to((x0 == 0)[None, :], shape),
            np.broadcast_to((x1 == cols)[None, :], shape),
        ]
    )
    area = (y1 - y0)[:, None] * (x1 - x0)[None, :]
    good = (sides.min(axis=0) >= 0.65) & (~borders).any(axis=0)
    good &= (area >= min_fraction * rows * cols) & (area < 0.97 * rows * cols)
    ii, jj = np.nonzero(good)
    if not len(ii):
        return []
    lengths = np.stack([(x1 - x0)[jj], (x1 - x0)[jj], (y1 - y0)[ii], (y1 - y0)[ii]]).astype(np.float64)
    real = ~borders[:, ii, jj]
    score = np.where(real, (2 * sides[:, ii, jj] - 1) * lengths, 0.0).sum(axis=0)
    out: list[tuple[Box, float]] = []
    for k in np.argsort(-score)[: 20 * most].tolist():
        box = (int(x0[jj[k]]), int(y0[ii[k]]), int(x1[jj[k]]), int(y1[ii[k]]))
        if all(box_iou(box, other) < 0.85 for other, _ in out):
            out.append((box, float(score[k])))
            if len(out) >= most:
                break
    return out


def edge_bands(lines: EdgeLines, box: Box, reach: float = 0.35) -> list[Box]:
    """Strips along ``box``'s sides cut off by a straight edge spanning (nearly) its whole width or
    height within ``reach`` of that side: a caption bar, a ticker, a chat column over a picture."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    if w < 16 or h < 16:
        return []
    found: list[Box] = []
    rows = np.arange(y0 + 2, y1 - 1)
    cover = lines.cover(False, rows, np.array([x0]), np.array([x1]))[0]
    for lo, hi, side in ((y0 + 2, y0 + int(reach * h), "top"), (y1 - int(reach * h), y1 - 1, "bottom")):
        pick = np.flatnonzero((rows >= lo) & (rows <= hi) & (cover >= 0.85))
        if len(pick):
            # The innermost such line: a bar with an outline has two.
            line = int(rows[pick[-1]] if side == "top" else rows[pick[0]])
            found.append((x0, y0, x1, line) if side == "top" else (x0, line, x1, y1))
    cols = np.arange(x0 + 2, x1 - 1)
    cover = lines.cover(True, cols, np.array([y0]), np.array([y1]))[0]
    for lo, hi, side in ((x0 + 2, x0 + int(reach * w), "left"), (x1 - int(reach * w), x1 - 1, "right")):
        pick = np.flatnonzero((cols >= lo) & (cols <= hi) & (cover >= 0.85))
        if len(pick):
            line = int(cols[pick[-1]] if side == "left" else cols[pick[0]])
            found.append((x0, y0, line, y1) if side == "left" else (line, y0, x1, y1))
    return found


def box_iou(a: Box, b: Box) -> float:
    iw = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0

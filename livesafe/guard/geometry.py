"""Undoing simple geometry before hashing: a tilted picture, a screen filmed at an angle.

PDQ tolerates a fraction of a degree of rotation and a percent or two of
cropping; a picture tilted a few degrees, or a monitor filmed off-axis, is
beyond that however well it is cropped.  These functions find the picture's
straight edges, map it back to an upright rectangle and return that.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

_FILL_TOLERANCE = 6  # luma levels a fill colour (one flat colour + noise) may vary by
_MIN_TILT = math.radians(0.7)  # below this, trimming the bars is as good
_MAX_TILT = math.radians(8.0)
_MIN_RAMP = 16  # pixels: shortest picture edge we fit a line to


def tilted_picture(half: np.ndarray) -> np.ndarray | None:
    """For a picture rotated by a small angle inside the frame: the de-rotated, cropped luma (half-size coords), or None if no tilt is found.

    A picture turned by a few degrees leaves the frame's corners empty, filled
    with one colour: long thin triangles whose long sides are the picture's
    edges.  The slope of those edges gives the angle, their position the crop.
    Frames whose corners are not one colour, or whose edges are bars (all fill)
    or content (no fill), exit after reading a few lines.
    """
    rows, cols = half.shape
    if rows < 32 or cols < 32:
        return None
    corners = half[[0, 0, -1, -1], [0, -1, -1, 0]].astype(np.int16)
    fill = int(np.median(corners))
    if np.count_nonzero(np.abs(corners - fill) <= _FILL_TOLERANCE) < 3:
        return None
    low, high = max(0, fill - _FILL_TOLERANCE), min(255, fill + _FILL_TOLERANCE)
    # Every frame edge shows both fill (a corner) and picture (where the picture's edge crosses it).
    for line in (half[0], half[-1], half[:, 0], half[:, -1]):
        inside = cv2.inRange(line, low, high)
        if inside.all() or not inside.any():
            return None
    reach_v = min(rows // 2, int(cols * math.tan(_MAX_TILT)) + 3)  # deepest fill triangle from a horizontal edge
    reach_h = min(cols // 2, int(rows * math.tan(_MAX_TILT)) + 3)
    # (side, tan of the tilt, a point on the edge); tan = dy/dx of the picture's horizontal edges.
    edges: list[tuple[str, float, float, float]] = []
    for side, band in (
        ("top", half[:reach_v]),
        ("bottom", half[::-1][:reach_v]),
        ("left", half[:, :reach_h].T),
        ("right", half[:, ::-1][:, :reach_h].T),
    ):
        depth = _fill_depth(cv2.inRange(band, low, high))
        for t, d, slope in _ramps(depth):
            # Back from the band's (along, depth) to frame (x, y); tan from the edge's slope.
            if side == "top":
                edges.append((side, slope, t, d))
            elif side == "bottom":
                edges.append((side, -slope, t, rows - 1 - d))
            elif side == "left":
                edges.append((side, -slope, d, t))
            else:
                edges.append((side, slope, cols - 1 - d, t))
    # The picture's edges agree on one angle; a stray straight run in the content does not.
    tans = np.array([tan for _, tan, _, _ in edges])
    agree = np.abs(tans[:, None] - tans[None, :]) <= math.tan(math.radians(0.3))
    best = agree[agree.sum(axis=1).argmax()] if len(tans) else agree
    if np.count_nonzero(best) < 2:
        return None
    edges = [edge for edge, ok in zip(edges, best) if ok]
    angle = math.atan(float(tans[best].mean()))
    if not _MIN_TILT <= abs(angle) <= _MAX_TILT:
        return None
    matrix = cv2.getRotationMatrix2D(((cols - 1) / 2, (rows - 1) / 2), math.degrees(angle), 1.0)

    def upright(side: str, fallback: tuple[float, float]) -> float:
        """Where a picture side lies after de-rotation (the frame's own edge if not seen)."""
        points = [(x, y) for s, _, x, y in edges if s == side] or [fallback]
        axis = 1 if side in ("top", "bottom") else 0
        return float(np.mean([matrix[axis] @ (x, y, 1.0) for x, y in points]))

    top = upright("top", ((cols - 1) / 2, -0.5))
    bottom = upright("bottom", ((cols - 1) / 2, rows - 0.5))
    left = upright("left", (-0.5, (rows - 1) / 2))
    right = upright("right", (cols - 0.5, (rows - 1) / 2))
    width, height = round(right - left), round(bottom - top)
    if width < 16 or height < 16:
        return None
    matrix[:, 2] -= (left + 0.5, top + 0.5)
    # Where the picture ran off the frame, repeat the frame's edge pixels: far
    # closer to the lost content (for PDQ's coarse view) than any flat colour.
    # Nearest-neighbour costs a third of bilinear; PDQ's box filter hides the jaggies.
    return cv2.warpAffine(half, matrix, (width, height), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_REPLICATE)


def _fill_depth(is_fill: np.ndarray) -> np.ndarray:
    """Per column of a band (255 = fill), the number of leading fill rows (the band's height if all fill)."""
    rows = is_fill.shape[0]
    picture = is_fill == 0
    return np.where(picture.any(axis=0), picture.argmax(axis=0), rows)


def _ramps(depth: np.ndarray) -> list[tuple[float, float, float]]:
    """Straight fill edges running from either end of a depth profile down towards zero.

    Returns (position along, depth, slope) of each edge's midpoint; the depth
    is where the picture begins (between pixels: - 0.5).
    """
    found = []
    n = len(depth)
    cap = depth.max(initial=0)
    lo, hi = math.tan(_MIN_TILT), math.tan(_MAX_TILT)
    for forward in (True, False):
        profile = depth if forward else depth[::-1]
        zero = np.flatnonzero(profile == 0)
        length = min(int(zero[0]) if len(zero) else n, int(0.6 * n))
        if length < _MIN_RAMP:
            continue
        d = profile[length // 10 : length - length // 10].astype(np.float64)
        t = np.arange(length // 10, length - length // 10, dtype=np.float64)
        fit = _lower_envelope(t, d, (d < cap) & (d > 0))
        if fit is None:
            continue
        slope, offset, middle = fit
        if not lo <= -slope <= hi:
            continue
        depth_at = slope * middle + offset - 0.5
        found.append((middle if forward else n - 1 - middle, depth_at, slope if forward else -slope))
    return found


def _lower_envelope(t: np.ndarray, d: np.ndarray, usable: np.ndarray) -> tuple[float, float, float] | None:
    """Line d = slope * t + offset along the lower envelope of the ``usable`` points,
    and the mean t of the points on it; None unless most points lie on it.

    Picture content that happens to match the fill colour only ever makes the
    fill look deeper, so the line is first drawn through the lowest point of
    each of a few chunks, dropping chunks above it; then refitted to all
    points near it, which removes the minima's bias from noise.
    """
    chunks = 8
    size = len(t) // chunks
    if size < 2:
        return None
    lowest = np.where(usable, d, np.inf)[: chunks * size].reshape(chunks, size)
    at = lowest.argmin(axis=1)
    points = [
        (float(t[k * size + a]), float(lowest[k, a])) for k, a in enumerate(at.tolist()) if lowest[k, a] < np.inf
    ]
    while True:
        if len(points) < 3:
            return None
        slope, offset = _line_fit(points)
        below = [(x, y) for x, y in points if y - (slope * x + offset) <= 1.5]
        if len(below) == len(points):
            break
        points = below
    tt, td = t * t, t * d
    for tolerance in (2.5, 1.5):
        near = (usable & (np.abs(d - (slope * t + offset)) <= tolerance)).astype(np.float64)
        count = near.sum()
        if count < max(_MIN_RAMP, 0.5 * len(t)):
            return None
        st, sd, stt, std = t @ near, d @ near, tt @ near, td @ near
        slope = (count * std - st * sd) / max(count * stt - st * st, 1e-9)
        offset = (sd - slope * st) / count
    return float(slope), float(offset), float(st / count)


def _line_fit(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Least-squares y = slope * x + offset through a few points."""
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    sxy = sum((x - mx) * (y - my) for x, y in points)
    slope = sxy / sxx if sxx > 0 else 0.0
    return slope, my - slope * mx


_MAX_SKEW = math.radians(15.0)  # how far a filmed screen's sides may lean from horizontal/vertical
_MIN_QUAD_FRACTION = 0.05  # of the frame area


def screen_quads(quarter: np.ndarray, max_quads: int = 2) -> list[np.ndarray]:
    """Convex quadrilaterals outlined by straight lines: (4, 2) float32 corners tl, tr, br, bl in
    ``quarter``'s pixels, best supported first.

    A screen filmed at an angle rarely gives a clean closed contour: its outline
    runs into the wall, the floor line and the stand.  Its sides are still
    long straight edges, so we find lines (Hough, near horizontal and near
    vertical, on an eighth-size edge map where that is cheap), take every
    top/bottom/left/right choice that bounds a quadrilateral of plausible
    size, and rank each by how much of its perimeter lies on edges.
    """
    small = cv2.resize(quarter, (quarter.shape[1] // 2, quarter.shape[0] // 2), interpolation=cv2.INTER_AREA)
    rows, cols = small.shape
    if rows < 24 or cols < 24:
        return []
    edges = cv2.Canny(small, 30, 90)
    horizontal = _axis_lines(edges)
    vertical = _axis_lines(edges.T)
    if len(horizontal) < 2 or len(vertical) < 2:
        return []
    near = cv2.dilate(edges, np.ones((3, 3), np.uint8))
    h_cover = np.stack([_coverage(near, a, b) for a, b in horizontal])
    v_cover = np.stack([_coverage(near.T, a, b) for a, b in vertical])
    (a, b), (c, d) = np.array(horizontal).T, np.array(vertical).T
    # Corner of horizontal line h and vertical line v: y = a + b x meets x = c + d y.
    x = (c[None, :] + d[None, :] * a[:, None]) / (1 - d[None, :] * b[:, None])
    y = a[:, None] + b[:, None] * x
    # Every (top i, bottom j, left k, right m) at once, as arrays over (i, j, k, m).
    i, j, k, m = np.ix_(*(np.arange(n) for n in (len(a), len(a), len(c), len(c))))
    corners = [(x[i, k], y[i, k]), (x[i, m], y[i, m]), (x[j, m], y[j, m]), (x[j, k], y[j, k])]
    (x0, y0), (x1, y1), (x2, y2), (x3, y3) = corners
    area = 0.5 * ((x0 * y1 - x1 * y0) + (x1 * y2 - x2 * y1) + (x2 * y3 - x3 * y2) + (x3 * y0 - x0 * y3))
    ok = (
        (y3 - y0 >= 0.15 * rows) & (y2 - y1 >= 0.15 * rows)
        & (x1 - x0 >= 0.15 * cols) & (x2 - x3 >= 0.15 * cols)
        & (area >= _MIN_QUAD_FRACTION * rows * cols) & (area <= 0.95 * rows * cols)
    )
    for cx, cy in corners:
        ok &= (cx >= -1) & (cx <= cols) & (cy >= -1) & (cy <= rows)
    if not ok.any():
        return []
    sides = [
        _covered(h_cover, i, x0, x1, cols),
        _covered(v_cover, m, y1, y2, rows),
        _covered(h_cover, j, x3, x2, cols),
        _covered(v_cover, k, y0, y3, rows),
    ]
    ok &= np.minimum(np.minimum(sides[0], sides[1]), np.minimum(sides[2], sides[3])) >= 0.5
    # Edge pixels on the outline count for a candidate, gaps against it: a side
    # stretched past the screen's corner (to the floor line, say) loses.
    lengths = (x1 - x0, y2 - y1, x2 - x3, y3 - y0)
    score = np.where(ok, sum((2 * side - 1) * length for side, length in zip(sides, lengths)), -1)
    every = np.stack([np.broadcast_to(v, score.shape) for xy in corners for v in xy], axis=-1)
    kept: list[np.ndarray] = []
    for flat in np.argsort(-score, axis=None)[: 8 * max_quads]:
        at = np.unravel_index(flat, score.shape)
        if score[at] < 0:
            break
        quad = every[at].reshape(4, 2)
        if all(np.abs(quad - other).max() > 3 for other in kept):
            kept.append(quad)
            if len(kept) >= max_quads:
                break
    # Eighth-size pixel centres sit at 2x + 0.5 in quarter-size pixels.
    return [(quad * 2 + 0.5).astype(np.float32) for quad in kept]


def _axis_lines(edges: np.ndarray, most: int = 6) -> list[tuple[float, float]]:
    """Distinct near-horizontal lines through ``edges``, strongest first, as y = a + b * x."""
    length = edges.shape[1]
    lines = cv2.HoughLines(
        edges, 1, np.pi / 180, max(8, int(0.15 * length)), min_theta=np.pi / 2 - _MAX_SKEW, max_theta=np.pi / 2 + _MAX_SKEW
    )
    found: list[tuple[float, float]] = []
    for rho, theta in ([] if lines is None else lines[:, 0]):
        a, b = rho / math.sin(theta), -math.cos(theta) / math.sin(theta)
        if all(abs(a - a2) > 2 or abs(a + b * length - a2 - b2 * length) > 2 for a2, b2 in found):
            found.append((a, b))
            if len(found) == most:
                break
    return found


def _coverage(near: np.ndarray, a: float, b: float) -> np.ndarray:
    """Cumulative count of edge pixels along the line y = a + b * x (prefixed with 0)."""
    rows, cols = near.shape
    xs = np.arange(cols)
    ys = np.rint(a + b * xs).astype(np.intp)
    inside = (ys >= 0) & (ys < rows)
    hit = np.zeros(cols + 1, np.int32)
    hit[1:][inside] = near[ys[inside], xs[inside]] > 0
    return np.cumsum(hit)


def _covered(cover: np.ndarray, line: np.ndarray, start: np.ndarray, end: np.ndarray, size: int) -> np.ndarray:
    """Fraction of each line's span between two positions that lies on edges (arrays broadcast)."""
    lo = np.clip(np.floor(np.minimum(start, end)), 0, size).astype(np.intp)
    hi = np.clip(np.ceil(np.maximum(start, end)), 0, size).astype(np.intp)
    return (cover[line, hi] - cover[line, lo]) / np.maximum(1, hi - lo)

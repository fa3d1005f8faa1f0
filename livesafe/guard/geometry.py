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


def tilted_quad(half: np.ndarray) -> np.ndarray | None:
    """Corners (tl, tr, br, bl; (4, 2) float32 in ``half``'s pixel-edge coordinates) of a picture
    tilted by a small angle (0.7-8 degrees) inside ``half`` (a uint8 luma plane); None if there is no such tilt.

    A picture turned by a few degrees leaves the frame's corners empty, filled
    with one colour: long thin triangles whose long sides are the picture's
    edges.  Their slope gives the angle, their position the crop.  Frames whose
    corners are not one colour, or whose edges are bars (all fill) or content
    (no fill), return after reading a few pixels.  Where the picture runs off
    the frame, the corners lie outside it (the warp repeats the edge pixels).
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
        depth = _fill_depth(band, fill, low, high)
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
    if len(edges) < 2:
        return None
    # The picture's edges agree on one angle; a stray straight run in the content does not.
    tans = np.array([tan for _, tan, _, _ in edges])
    agree = np.abs(tans[:, None] - tans[None, :]) <= math.tan(math.radians(0.3))
    best = agree[agree.sum(axis=1).argmax()]
    if np.count_nonzero(best) < 2:
        return None
    edges = [edge for edge, ok in zip(edges, best, strict=True) if ok]
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
    if right - left < 16 or bottom - top < 16:
        return None
    # Back from de-rotated pixel centres to the frame: invert the rotation.
    inverse = cv2.invertAffineTransform(matrix)
    corners = np.array([[left, top], [right, top], [right, bottom], [left, bottom]], np.float64)
    centres = corners @ inverse[:, :2].T + inverse[:, 2]
    return (centres + 0.5).astype(np.float32)


def _fill_depth(band: np.ndarray, fill: int, low: int, high: int) -> np.ndarray:
    """Per column of a band, the depth of the fill from row 0 to where the picture starts, sub-pixel.

    The first picture pixel is usually part fill (the edge falls inside it):
    how far its value has moved from the fill towards the next pixel's says
    how much of it the picture covers.  All-fill columns get the band's height.
    """
    rows, cols = band.shape
    picture = cv2.inRange(band, low, high) == 0
    found = picture.any(axis=0)
    first = np.where(found, picture.argmax(axis=0), rows)
    at = np.minimum(first, rows - 2)
    columns = np.arange(cols)
    edge = band[at, columns].astype(np.float32) - fill
    inside = band[at + 1, columns].astype(np.float32) - fill
    covered = np.clip(edge / np.where(np.abs(inside) > np.abs(edge), inside, edge + (edge == 0)), 0.0, 1.0)
    return np.where(found & (first < rows - 1), first + 1.0 - covered, first.astype(np.float32))


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
        zero = np.flatnonzero(profile < 0.5)
        length = min(int(zero[0]) if len(zero) else n, int(0.6 * n))
        if length < _MIN_RAMP:
            continue
        d = profile[length // 10 : length - length // 10].astype(np.float64)
        t = np.arange(length // 10, length - length // 10, dtype=np.float64)
        fit = _lower_envelope(t, d, (d < cap) & (d >= 0.5))
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
    points = [(float(t[k * size + a]), float(lowest[k, a])) for k, a in enumerate(at.tolist()) if lowest[k, a] < np.inf]
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


_MAX_SKEW = math.radians(20.0)  # how far a screen's or tilted picture's sides may lean from horizontal/vertical
_MIN_QUAD_FRACTION = 0.05  # of the frame area
# Share of an outline that must lie on edges: each side, and all four on average.
_MIN_SIDE_COVER = 0.4
_MIN_COVER = 0.7


def screen_quads(small: np.ndarray, max_quads: int = 2, lines: int = 16) -> list[np.ndarray]:
    """Convex quadrilaterals outlined by straight lines in ``small`` (a uint8 luma plane, the
    quarter-size one): (4, 2) float32 corners tl, tr, br, bl in its pixel centres, best supported first.

    A screen filmed at an angle, or a picture turned a few degrees over a busy
    background, rarely gives a clean closed contour: its outline runs into the
    wall, the floor line, the stand or the texture behind.  Its sides are still
    long straight edges, so we find up to ``lines`` lines of each orientation
    (Hough, within 20 degrees of horizontal and vertical), take every
    top/bottom/left/right choice that bounds a quadrilateral of 5-95 % of the
    frame, and rank them by how much of their perimeter lies on edges (85 %
    overall, each side at least half).  The corners are as coarse as this
    plane: ``screen_picture`` and the search's refinement re-measure them.
    (An eighth-size map with 6 lines a side was cheaper but found a third of
    the pictures turned over texture that this finds.)
    """
    if min(small.shape) < 48:
        return []
    rows, cols = small.shape
    # Canny from our own gradients, so each edge pixel can go to the lines it may lie on.
    dx, dy = cv2.Sobel(small, cv2.CV_16S, 1, 0), cv2.Sobel(small, cv2.CV_16S, 0, 1)
    edges = cv2.Canny(dx, dy, 20, 60)
    h_edges = edges * (np.abs(dy) > np.abs(dx))  # edge pixels of near-horizontal edges
    v_edges = np.ascontiguousarray((edges - h_edges).T)  # the rest, transposed: vertical lines become horizontal
    horizontal = _lines(h_edges, lines)
    if horizontal is None:
        return []
    vertical = _lines(v_edges, lines)
    if vertical is None:
        return []
    (a, b), h_cover = horizontal[0].T, horizontal[1]
    (c, d), v_cover = vertical[0].T, vertical[1]
    # Corner of horizontal line h and vertical line v: y = a + b x meets x = c + d y.
    x = (c[None, :] + d[None, :] * a[:, None]) / (1 - d[None, :] * b[:, None])
    y = a[:, None] + b[:, None] * x
    # Every (top, bottom) pair at least 15 % of the frame apart, times every (left, right) pair.
    top, bottom = _pairs(a + b * cols / 2, 0.15 * rows)
    left, right = _pairs(c + d * rows / 2, 0.15 * cols)
    t, bm = np.repeat(top, len(left)), np.repeat(bottom, len(left))
    lf, rt = np.tile(left, len(top)), np.tile(right, len(top))
    quads = np.stack([x[t, lf], y[t, lf], x[t, rt], y[t, rt], x[bm, rt], y[bm, rt], x[bm, lf], y[bm, lf]], axis=1)
    x0, y0, x1, y1, x2, y2, x3, y3 = quads.T
    area = 0.5 * ((x0 * y1 - x1 * y0) + (x1 * y2 - x2 * y1) + (x2 * y3 - x3 * y2) + (x3 * y0 - x0 * y3))
    ok = (area >= _MIN_QUAD_FRACTION * rows * cols) & (area <= 0.95 * rows * cols)
    # A tilted picture may run off the frame: its corners may lie outside (by up to 15 % of the frame);
    # only the visible part of each side is measured below.
    slack_x, slack_y = 0.15 * cols, 0.15 * rows
    ok &= (quads[:, 0::2].min(axis=1) >= -slack_x) & (quads[:, 0::2].max(axis=1) <= cols + slack_x)
    ok &= (quads[:, 1::2].min(axis=1) >= -slack_y) & (quads[:, 1::2].max(axis=1) <= rows + slack_y)
    if not ok.any():
        return []
    quads, t, bm, lf, rt = quads[ok], t[ok], bm[ok], lf[ok], rt[ok]
    x0, y0, x1, y1, x2, y2, x3, y3 = quads.T
    # How much of each side lies on edges of its own orientation.  Sides (top, right,
    # bottom, left) index one table of cumulative counts, horizontal lines first.
    # (Tables run along x for horizontal lines, along y for vertical ones; pad the
    # shorter so portrait frames work too.)
    width = max(h_cover.shape[1], v_cover.shape[1])
    h_cover, v_cover = (np.pad(c, ((0, 0), (0, width - c.shape[1])), mode="edge") for c in (h_cover, v_cover))
    cover = np.concatenate([h_cover, v_cover])
    line = np.stack([t, len(a) + rt, bm, len(a) + lf])
    lengths = np.stack([x1 - x0, y2 - y1, x2 - x3, y3 - y0])
    lo = np.clip(np.floor(np.stack([x0, y1, x3, y0])), 0, cover.shape[1] - 1).astype(np.intp)
    hi = np.clip(np.ceil(np.stack([x1, y2, x2, y3])), 0, cover.shape[1] - 1).astype(np.intp)
    covered = (cover[line, hi] - cover[line, lo]) / np.maximum(1, hi - lo)
    ok = (covered >= _MIN_SIDE_COVER).all(axis=0) & (covered.mean(axis=0) >= _MIN_COVER)
    ok &= (lengths >= 4).all(axis=0)
    # Edge pixels on the outline count for a candidate, gaps against it.
    score = np.where(ok, ((2 * covered - 1) * lengths).sum(axis=0), -1.0)
    kept: list[np.ndarray] = []
    for best in np.argsort(-score)[: 8 * max_quads]:
        if score[best] < 0:
            break
        quad = quads[best].reshape(4, 2)
        if all(np.abs(quad - other).max() > 3 for other in kept):
            kept.append(quad)
            if len(kept) >= max_quads:
                break
    return [quad.astype(np.float32) for quad in kept]


def _lines(edges: np.ndarray, most: int = 6) -> tuple[np.ndarray, np.ndarray] | None:
    """Up to ``most`` distinct near-horizontal lines through ``edges``, strongest first; None if < 2.

    Returns the lines as rows (a, b) of y = a + b * x, and per line the
    cumulative count of columns where an edge pixel lies within a pixel of
    it (prefixed with 0), so any span's coverage is one subtraction.  Hough's
    1-degree steps leave a line a pixel or two off its edge at the ends --
    enough to make a real outline look half covered -- so each line is first
    refitted (least squares) to the edge pixels within a pixel of it.
    """
    rows, cols = edges.shape
    votes = max(8, int(0.15 * cols))  # edge pixels on a side 15 % of the frame long
    skew = (math.pi / 2 - _MAX_SKEW, math.pi / 2 + _MAX_SKEW)
    lines = cv2.HoughLines(edges, 1, math.pi / 180, votes, min_theta=skew[0], max_theta=skew[1])
    if lines is None:
        return None
    rho, theta = lines[: 16 * most, 0].T.astype(np.float64)
    starts, slopes = rho / np.sin(theta), -1 / np.tan(theta)
    ends = starts + slopes * cols
    # Hough gives each edge several times (neighbouring angles and offsets): once is enough.
    # A line repeats an earlier (stronger) one when both its ends lie within 2 pixels of it.
    same = (np.abs(starts[:, None] - starts[None, :]) <= 2) & (np.abs(ends[:, None] - ends[None, :]) <= 2)
    kept: list[int] = []
    for k in range(len(starts)):
        if not same[k, kept].any():
            kept.append(k)
            if len(kept) == most:
                break
    if len(kept) < 2:
        return None
    found = list(zip(starts[kept].tolist(), slopes[kept].tolist(), strict=True))
    # Edge pixels within a row of each position, and the sum of their rows.
    hit = (edges > 0).astype(np.float32)
    count_map = cv2.boxFilter(hit, -1, (1, 3), normalize=False, borderType=cv2.BORDER_CONSTANT)
    row_map = cv2.boxFilter(
        hit * np.arange(rows, dtype=np.float32)[:, None], -1, (1, 3), normalize=False, borderType=cv2.BORDER_CONSTANT
    )
    x = np.arange(cols)

    def along(a: np.ndarray, b: np.ndarray, *tables: np.ndarray) -> list[np.ndarray]:
        """Each table at each line's pixel in each column (0 outside the frame)."""
        y = np.rint(a[:, None] + b[:, None] * x).astype(np.intp)
        outside = (y < 0) | (y >= rows)
        y = np.clip(y, 0, rows - 1)
        return [np.where(outside, 0.0, table[y, x]) for table in tables]

    a, b = np.array(found).T
    count, row_sum = along(a, b, count_map, row_map)
    n, sx, sxx, sy, sxy = count.sum(axis=1), count @ x, count @ (x * x), row_sum.sum(axis=1), row_sum @ x
    det = n * sxx - sx * sx
    fit = (n >= 8) & (det > 0)
    b = np.where(fit, (n * sxy - sx * sy) / np.where(fit, det, 1.0), b)
    a = np.where(fit, (sy - b * sx) / np.maximum(n, 1.0), a)
    # Where a line leaves the frame (a tilted picture running off it) nothing can be seen: not a gap.
    ys = np.rint(a[:, None] + b[:, None] * x)
    covered = (along(a, b, count_map)[0] > 0) | (ys < 0) | (ys >= rows)
    cover = np.zeros((len(a), cols + 1), np.int32)
    np.cumsum(covered, axis=1, out=cover[:, 1:])
    return np.stack([a, b], axis=1), cover


def _pairs(position: np.ndarray, gap: float) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (first, second) of lines where the second lies at least ``gap`` beyond the first."""
    first, second = np.nonzero(position[None, :] - position[:, None] >= gap)
    return first, second


def screen_picture(half: np.ndarray, quad: np.ndarray) -> np.ndarray:
    """The corners of the picture inside the screen a coarse ``quad`` outlines (both in ``half``'s
    pixel-centre coordinates, corners tl, tr, br, bl), cut at the bezel's inner edge.

    ``quad`` may be the screen's outer edge, the inner edge of its bezel, or a
    mix; PDQ barely tolerates a percent of cropping, so each side is re-measured
    at this resolution (``_inner_edges``).  Where that fails, ``quad`` itself.
    """
    quad = np.asarray(quad, dtype=np.float32).reshape(4, 2)
    inner = _inner_edges(half, quad)
    return quad if inner is None else inner


_CHUNKS = 8  # per side: each yields one measurement of the edges
_PER_CHUNK = 6  # profiles averaged into one (noise, moiré)


def _inner_edges(image: np.ndarray, quad: np.ndarray) -> np.ndarray | None:
    """Corners of the picture inside a screen's bezel, found near the sides of a coarse ``quad``.

    A bezel is a flat band bounded by two steps: the room behind, then the
    picture.  Across each side we sample a band of profiles (a few chunks
    along it), find in each the flat run bounded by steps that starts or ends
    near the coarse side, and fit a line through the runs' inner ends.  Where
    the inner step is lost (dark picture content against a dark bezel), the
    outer step plus the bezel's typical width stands in.
    """
    start = quad.astype(np.float64)
    vector = start[[1, 2, 3, 0]] - start  # side k runs from corner k to corner k + 1
    lengths = np.hypot(vector[:, 0], vector[:, 1])
    if lengths.min() < 16:
        return None
    widest = max(3, int(0.08 * lengths.min()))  # widest bezel we look for
    reach = widest + 8  # plus the coarse outline's error
    normal = np.stack([-vector[:, 1], vector[:, 0]], axis=1) / lengths[:, None]  # inward: corners run clockwise
    across = np.arange(-reach, reach + 1, dtype=np.float64)
    along = (np.arange(_CHUNKS * _PER_CHUNK) + 0.5) / (_CHUNKS * _PER_CHUNK) * 0.8 + 0.1
    # Sample k across a side's point j lies at start + along[j] * vector + across[k] * normal.
    maps = [
        (
            (start[:, axis, None] + along[None, :] * vector[:, axis, None])[:, :, None]
            + (across[None, :] * normal[:, axis, None])[:, None, :]
        )
        .astype(np.float32)
        .reshape(4 * _CHUNKS * _PER_CHUNK, len(across))
        for axis in (0, 1)
    ]
    samples = cv2.remap(image, maps[0], maps[1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    profiles = samples.reshape(4 * _CHUNKS, _PER_CHUNK, -1).mean(axis=1, dtype=np.float32)
    runs = _bezel_runs(profiles, reach, widest)
    if runs is None:
        return None
    outer, inner = (v.reshape(4, _CHUNKS) - reach for v in runs)
    # The bezel's outer step (against the room) is the surer one.  Where its
    # inner step is missing, or a picture edge nearby made the bezel look wider
    # or narrower than it is on that side, its typical width stands in.
    widths = inner - outer
    width = _row_median(widths)
    width = np.where(np.isfinite(width), width, _row_median(widths.reshape(1, -1))[0])
    odd = ~(np.abs(widths - width[:, None]) <= 1.5)  # also where either end is missing
    estimate = np.where(odd & np.isfinite(outer), outer + width[:, None], inner)
    centres = (np.arange(_CHUNKS) + 0.5) / _CHUNKS * 0.8 + 0.1
    slope, offset, found = _side_lines(centres, estimate)
    # A side with neither step stays where the coarse outline put it.
    slope, offset = np.where(found, slope, 0.0), np.where(found, offset, 0.0)
    # Each side as point + t * direction, then corner k = side k - 1 meets side k.
    point = start + offset[:, None] * normal
    direction = vector + slope[:, None] * normal
    p, r = point[[3, 0, 1, 2]], direction[[3, 0, 1, 2]]
    denominator = r[:, 0] * direction[:, 1] - r[:, 1] * direction[:, 0]
    if (np.abs(denominator) < 1e-6).any():
        return None
    t = ((point - p)[:, 0] * direction[:, 1] - (point - p)[:, 1] * direction[:, 0]) / denominator
    return (p + t[:, None] * r).astype(np.float32)


def _bezel_runs(profiles: np.ndarray, origin: int, widest: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Per profile, the sub-pixel (outer, inner) ends of the bezel, NaN where not found.

    The bezel is a flat run (neighbours within 2.5 levels) of at most
    ``widest`` pixels with a clear step at both ends, beginning or ending
    within 8 pixels of ``origin`` (the coarse side); of several, the longest.
    Runs whose level is far from the typical bezel level are content.  Where
    the bezel merges with what is behind it (a dark floor) or with the
    picture (a night sky), its run is open on that side but still gives the
    other end.
    """
    rows, size = profiles.shape
    flat = np.abs(np.diff(profiles, axis=1)) <= 2.5  # flat[:, k]: pixels k and k + 1 agree
    begins = flat.copy()
    begins[:, 1:] &= ~flat[:, :-1]
    ends = flat.copy()
    ends[:, :-1] &= ~flat[:, 1:]
    row, first = np.nonzero(begins)
    last = np.nonzero(ends)[1] + 1  # runs in the same (row-major) order: pixels first..last are flat
    keep = last - first >= 2
    row, first, last = row[keep], first[keep], last[keep]
    level = (profiles[row, first] + profiles[row, last]) / 2
    # A step is a change of 6 levels (3 into the picture) within 3 pixels; none at the band's ends.
    outer_step = (first >= 3) & (np.abs(profiles[row, np.maximum(first - 3, 0)] - level) >= 6)
    inner_step = (last <= size - 4) & (np.abs(profiles[row, np.minimum(last + 3, size - 1)] - level) >= 3)
    near = (np.abs(first - origin) <= 8) | (np.abs(last - origin) <= 8)
    closed = outer_step & inner_step & near & (last - first < widest)
    if np.count_nonzero(closed) < 3:
        return None
    typical = np.sort(level[closed])[np.count_nonzero(closed) // 2]
    bezel = np.abs(level - typical) <= 10
    closed &= bezel
    # Open runs: only the end with a clear step, near the coarse side, is the bezel's.
    gives_inner = bezel & ~closed & inner_step & (last >= origin - 8) & (first <= origin + 8)
    gives_inner &= np.abs(profiles[row, np.minimum(last + 3, size - 1)] - level) >= 6
    gives_outer = bezel & ~closed & outer_step & (np.abs(first - origin) <= 8)
    outer = np.full(rows, np.nan, np.float32)
    inner = np.full(rows, np.nan, np.float32)
    length = last - first
    for ends_at, usable, step, found in ((first, gives_outer, -1, outer), (last, gives_inner, 1, inner)):
        # Per profile: the longest closed run, else an open one.
        rank = np.where(closed, length + size, np.where(usable, 0, -1))
        order = np.lexsort((-rank, row))
        pick = order[np.r_[True, row[order][1:] != row[order][:-1]]]
        pick = pick[rank[pick] >= 0]
        found[row[pick]] = _step_centre(profiles, row[pick], ends_at[pick], step)
    return outer, inner


def _step_centre(profiles: np.ndarray, row: np.ndarray, at: np.ndarray, step: int) -> np.ndarray:
    """Sub-pixel position of the step leaving a flat run at ``at`` in direction ``step``:
    the centroid of the profile's change over the next three pixels."""
    values = profiles[row[:, None], at[:, None] + step * np.arange(4)]
    change = np.abs(np.diff(values, axis=1))
    centre = change @ np.array([0.5, 1.5, 2.5], np.float32) / np.maximum(change.sum(axis=1), 1e-6)
    return at + step * centre


def _side_lines(t: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row of ``values`` (NaN = no measurement), a line value = slope * t + offset through
    the measurements that agree to within a pixel, and whether at least three did.

    The coarse outline is off by a few pixels at most, so measurements more than
    4 pixels from their row's median are dropped first; then the worst until the
    rest agree.
    """
    keep = np.abs(values - _row_median(values)[:, None]) <= 4  # False where NaN
    values = np.where(keep, values, 0.0)
    for _ in range(_CHUNKS - 2):
        w = keep.astype(np.float64)
        count, st, sv = w.sum(axis=1), w @ t, (w * values).sum(axis=1)
        stt, stv = w @ (t * t), (w * values * t).sum(axis=1)
        slope = (count * stv - st * sv) / np.maximum(count * stt - st * st, 1e-9)
        offset = (sv - slope * st) / np.maximum(count, 1)
        off = np.where(keep, np.abs(values - (slope[:, None] * t + offset[:, None])), -1.0)
        worst = off.argmax(axis=1)
        bad = off[np.arange(len(off)), worst] > 1.0
        if not bad.any():
            break
        keep[np.flatnonzero(bad), worst[bad]] = False
    return slope, offset, (count >= 3) & ~bad


def _row_median(values: np.ndarray) -> np.ndarray:
    """Per row, the (lower) median of the finite values; NaN for a row without any."""
    count = np.isfinite(values).sum(axis=1)
    ordered = np.sort(values, axis=1)  # NaN sorts last
    middle = ordered[np.arange(len(values)), np.maximum(count - 1, 0) // 2]
    return np.where(count > 0, middle, np.nan)

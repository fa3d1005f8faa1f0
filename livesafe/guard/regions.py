"""Where in a frame to look: the parts of a picture a blocked image may occupy.

A livestream rarely shows an image full-frame.  PDQ tolerates little cropping
or padding, so robustness comes from hashing the right sub-image, not from a
looser threshold.  For each sampled frame we propose:

* ``frame``   - the whole frame;
* ``trimmed`` - the frame minus uniform bars of any colour (letterbox,
  pillarbox, windowbox);
* ``rect``    - upright windows outlined by straight edges: picture-in-picture,
  split-screen panes, a framed photo (and the picture inside its frame);
* ``window``  - fixed halves of the frame minus their backdrop, for split
  screens whose panes have no clean outline;
* ``zoomed``  - the picture padded back out by mirroring its edges, for a
  camera zoomed in a few percent (centred zoom up to ~7 %);
* ``untilted`` / ``screen`` - a picture turned a few degrees, or a monitor
  filmed off-axis, mapped back to an upright rectangle (``geometry``).

Everything works on one area-averaged half-resolution copy of the Y plane
(frames under 256 px as they are): PDQ folds its full-size filter onto it
(``shrink=2``, ~1 bit from hashing at full size), edge detection runs on a
quarter-size copy, and the copies cost ~0.1 ms at 720p.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from livesafe.guard.geometry import screen_quads, tilted_picture, warp_quad

# Our images are small (320x180 .. 640x360): OpenCV's worker threads cost more
# in hand-off than they save, and contend with other streams and the codecs.
cv2.setNumThreads(1)


@dataclass(frozen=True, slots=True)
class RegionSettings:
    trim_borders: bool = True
    detect_rects: bool = True
    max_rects: int = 6
    min_rect_fraction: float = 0.03  # of the frame area
    windows: tuple[str, ...] = ("left", "right")
    # A camera zoomed in a few percent crops the picture's edges, which PDQ
    # barely tolerates.  Padding the picture back out by mirroring its edges
    # recovers most of the hash: per side, as a fraction of the size.
    zoom_out: tuple[float, ...] = (0.02, 0.035)
    # Undo a small tilt and a screen filmed at an angle (guard/geometry.py).
    rectify: bool = True
    border_tolerance: float = 6.0  # luma levels a bar may vary by


@dataclass(frozen=True, slots=True)
class Region:
    """A sub-image to hash; (x, y, w, h) is its bounding box in frame pixels."""

    kind: str
    x: int
    y: int
    w: int
    h: int
    luma: np.ndarray
    shrink: int
    all_orientations: bool

    def box(self) -> tuple[int, int, int, int]:
        return (self.x, self.y, self.w, self.h)


_WINDOWS: dict[str, tuple[float, float, float, float]] = {
    "left": (0.0, 0.0, 0.5, 1.0),
    "right": (0.5, 0.0, 0.5, 1.0),
    "top": (0.0, 0.0, 1.0, 0.5),
    "bottom": (0.0, 0.5, 1.0, 0.5),
    "centre": (0.2, 0.2, 0.6, 0.6),
}


MIN_HALVED = 128  # smallest side worth hashing from a half-size copy


def window_names() -> tuple[str, ...]:
    return tuple(_WINDOWS)


def half_resolution(y: np.ndarray) -> np.ndarray:
    """Area-averaged half-size copy (a fast path in OpenCV for exact factor 2)."""
    rows, cols = y.shape
    return cv2.resize(y, (max(1, cols // 2), max(1, rows // 2)), interpolation=cv2.INTER_AREA)


def propose_regions(y: np.ndarray, settings: RegionSettings, *, deep: bool = True) -> list[Region]:
    """Regions to hash.  ``deep=False`` keeps to the whole picture (frame, bars
    trimmed, zoomed out): the cheap check the guard runs between deep ones."""
    # Below 256 px halving loses too much for PDQ; small frames are used as they are.
    s = 2 if min(y.shape) >= 2 * MIN_HALVED else 1
    half = half_resolution(y) if s == 2 else y
    quarter = half_resolution(half)
    rows, cols = half.shape
    regions = [Region("frame", 0, 0, cols * s, rows * s, half, s, True)]
    if settings.trim_borders:
        box = content_box(half, settings.border_tolerance)
        if box is not None:
            x, yy, w, h = box
            if (w, h) != (cols, rows) and w >= 8 and h >= 8:
                regions.append(Region("trimmed", x * s, yy * s, w * s, h * s, half[yy : yy + h, x : x + w], s, True))
    picture = regions[-1]
    for fraction in settings.zoom_out:
        py, px = round(picture.luma.shape[0] * fraction), round(picture.luma.shape[1] * fraction)
        padded = cv2.copyMakeBorder(picture.luma, py, py, px, px, cv2.BORDER_REFLECT)
        regions.append(Region("zoomed", picture.x, picture.y, picture.w, picture.h, padded, s, False))
    if not deep:
        return regions
    if settings.detect_rects:
        for rank, quad in enumerate(find_quads(quarter, settings)):
            region = _quad_region(half, quad, s)
            if min(region.luma.shape) < 8:
                continue
            regions.append(region)
            if rank >= 2:
                continue
            # A framed photo's mount or a window's margin may sit inside the
            # outline we found (best outlines first): hash the picture within it too.
            inner = content_box(region.luma, settings.border_tolerance * 2)
            if inner is not None and inner[2] * inner[3] < 0.96 * region.luma.size and min(inner[2:]) >= 8:
                x, yy, w, h = inner
                regions.append(Region("rect", region.x + x * s, region.y + yy * s, w * s, h * s, region.luma[yy : yy + h, x : x + w], s, True))
    if settings.rectify:
        regions.extend(_rectified(half, quarter, s))
    for name in settings.windows:
        fx, fy, fw, fh = _WINDOWS[name]
        x, yy, w, h = int(fx * cols), int(fy * rows), int(fw * cols), int(fh * rows)
        # Windows are the fallback for split screens (one orientation).  A
        # pane sits inside a backdrop of its own, often a gradient with a name
        # tag under the picture: trim lines that are mostly (85 %) backdrop.
        if settings.trim_borders:
            inner = content_box(half[yy : yy + h, x : x + w], settings.border_tolerance, fill=0.85, drift=True)
            if inner is not None and min(inner[2:]) >= 8:
                ix, iy, w, h = inner
                x, yy = x + ix, yy + iy
        regions.append(Region("window", x * s, yy * s, w * s, h * s, half[yy : yy + h, x : x + w], s, False))
    return regions


def _rectified(half: np.ndarray, quarter: np.ndarray, s: int) -> list[Region]:
    """Tilted pictures and filmed screens, turned upright (at half of ``half``'s scale)."""
    rows, cols = half.shape
    found = []
    upright = tilted_picture(half)
    if upright is not None and min(upright.shape) >= 8:
        found.append(Region("untilted", 0, 0, cols * s, rows * s, upright, 2 * s, True))
    for quad in screen_quads(quarter, max_quads=1):
        corners = quad * 2.0 + 0.5  # quarter -> half pixel centres
        flat = warp_quad(half, corners)
        if flat is None or min(flat.shape) < 8:
            continue
        (x0, y0), (x1, y1) = np.floor(corners.min(axis=0)), np.ceil(corners.max(axis=0))
        found.append(Region("screen", int(x0) * s, int(y0) * s, int(x1 - x0) * s, int(y1 - y0) * s, flat, 2 * s, True))
    return found


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
        """Leading uniform lines, scanned in growing chunks: most frames have no
        bar, and then only the first line is read."""
        limit = (len(lines) + 1) // 2 + 1  # a bar never covers more than half the frame
        lines = lines[:, ::2]  # every other pixel along a line is plenty to judge it
        needed = fill * lines.shape[1]
        middle = lines.shape[1] // 2
        colour = np.partition(lines[0], middle)[middle].astype(np.int16)  # median, without np.median's overhead
        done, chunk = 0, 1
        while done < limit:
            block = lines[done : min(limit, done + chunk)].astype(np.int16)
            if drift:
                medians = np.partition(block, middle, axis=1)[:, middle]
                steps = np.abs(np.diff(np.concatenate([[colour], medians])))
                uniform = (np.count_nonzero(np.abs(block - medians[:, None]) <= tolerance, axis=1) >= needed) & (steps <= 3)
                colour = medians[-1]
            else:
                uniform = np.count_nonzero(np.abs(block - colour) <= tolerance, axis=1) >= needed
            if not uniform.all():
                return done + int(np.argmin(uniform))
            done += len(block)
            chunk = min(chunk * 4, 64)
        return done

    top = run(luma)
    bottom = run(luma[::-1])
    left = run(luma.T)
    right = run(luma.T[::-1])
    w, h = cols - left - right, rows - top - bottom
    if w <= 4 or h <= 4:
        return None
    return left, top, w, h


def find_quads(small: np.ndarray, settings: RegionSettings) -> list[np.ndarray]:
    """Upright windows outlined by edges (picture-in-picture, split-screen panes),
    biggest first, de-duplicated.

    Searched on the quarter-size copy (edge detection dominates the cost of a
    sample; outlines survive the shrink).  Returned as (4, 2) float32 corner
    arrays (tl, tr, br, bl) in half-size pixels, where they are cut out.
    Tilted outlines (a filmed screen) are ``geometry.screen_quads``' job.
    """
    rows, cols = small.shape
    # Edge pixels split by orientation: a window's top and bottom are made of
    # horizontal edges only, while texture (gravel, foliage) mixes all
    # orientations -- so texture forms far fewer long runs and chance outlines.
    dx, dy = cv2.Sobel(small, cv2.CV_16S, 1, 0), cv2.Sobel(small, cv2.CV_16S, 0, 1)
    thin = cv2.Canny(dx, dy, 40, 120)
    flat = np.abs(dy) > np.abs(dx)
    oriented = (np.where(flat, thin, 0).astype(np.uint8), np.where(flat, 0, thin).astype(np.uint8))
    found = _framed_windows(oriented, settings.min_rect_fraction * rows * cols)
    # Textured backgrounds offer many chance pairings of edges; a real window
    # is outlined on all four sides: require that, prefer the best outlined
    # (an outline that overshoots into texture has a weaker side), then size.
    ranked: list[tuple[float, float, np.ndarray]] = []
    if found:
        # Positions of thick runs are estimates: allow 2 px either way.
        near = tuple(cv2.dilate(mask, np.ones((5, 5), np.uint8)) for mask in oriented)
        support = _outline_support(near, np.stack([quad for _, quad in found]))
        ranked = [(round(float(s) * 10) / 10, area, quad) for (area, quad), s in zip(found, support) if s >= 0.75]
    ranked.sort(key=lambda item: (-item[0], -item[1]))
    kept: list[np.ndarray] = []
    for _, _, quad in ranked[: 8 * settings.max_rects]:
        if all(_box_iou(quad, other) < 0.85 for other in kept):
            kept.append(quad)
        if len(kept) >= settings.max_rects:
            break
    # Quarter-size pixel centres sit at 2x + 0.5 in half-size pixels.
    return [quad * 2.0 + 0.5 for quad in kept]


def _framed_windows(oriented: tuple[np.ndarray, np.ndarray], min_area: float) -> list[tuple[float, np.ndarray]]:
    """Axis-aligned windows outlined by long straight edges.

    A picture-in-picture over busy video rarely yields a clean closed contour:
    its border touches edges of the content and the background.  Its sides
    are still long straight runs, so we keep only those (morphological opening
    with a long line), pair a top with a bottom run that overlaps it, and take
    the left and right sides from vertical runs spanning most of the height
    (the horizontal runs often overshoot into the background).
    """
    rows, cols = oriented[0].shape
    run = max(6, cols // 20)
    tol = max(2, cols // 40)

    def segments(long_axis: int) -> np.ndarray:
        """(n, 3) array of (start, end, position) for thin runs along ``long_axis``.

        Edges are thickened across the run only (tolerating a slight tilt)
        so parallel content edges nearby do not merge into one thick blob.
        """
        across = np.ones((3, 1) if long_axis == 0 else (1, 3), np.uint8)
        along = np.ones((1, run) if long_axis == 0 else (run, 1), np.uint8)
        opened = cv2.morphologyEx(cv2.dilate(oriented[long_axis], across), cv2.MORPH_OPEN, along)
        if long_axis == 1:
            opened = np.ascontiguousarray(opened.T)  # work on rows either way
        # Outer contours are a much cheaper blob finder than labelling here.
        contours, _ = cv2.findContours(opened, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        boxes = [cv2.boundingRect(c) for c in contours]
        # A run that touched parallel texture is thick; its middle row is
        # close to the line (snapping refines it later).
        found = [(x, x + w, y + h // 2) for x, y, w, h in boxes if w >= run and h <= 16]
        return _join_collinear(np.array(found, dtype=np.int64).reshape(-1, 3))

    hs = segments(0)
    vs = segments(1)
    if len(hs) < 2 or not len(vs):
        return []
    # (top, bottom) pairs: far enough apart, overlapping by most of the shorter run.
    a, b = hs[:, None, :], hs[None, :, :]
    overlap = np.minimum(a[..., 1], b[..., 1]) - np.maximum(a[..., 0], b[..., 0])
    shorter = np.minimum(a[..., 1] - a[..., 0], b[..., 1] - b[..., 0])
    top_i, bottom_i = np.nonzero((b[..., 2] - a[..., 2] >= run) & (overlap >= 0.6 * shorter))
    if not len(top_i):
        return []
    lo = np.minimum(hs[top_i, 0], hs[bottom_i, 0])
    hi = np.maximum(hs[top_i, 1], hs[bottom_i, 1])
    top, bottom = hs[top_i, 2], hs[bottom_i, 2]
    mid = (lo + hi) / 2
    # Vertical runs covering >= 60 % of the height, in the left / right half.
    # Where the picture is dark against a dark background its top and bottom
    # edges fade out early, so the sides may lie a quarter width beyond them.
    covered = np.minimum(vs[None, :, 1], bottom[:, None]) - np.maximum(vs[None, :, 0], top[:, None])
    spanning = covered >= 0.6 * (bottom - top)[:, None]
    vx = vs[None, :, 2]
    reach = np.maximum(tol, (hi - lo) // 4)[:, None]
    left_ok = spanning & (vx >= lo[:, None] - reach) & (vx <= mid[:, None])
    right_ok = spanning & (vx >= mid[:, None]) & (vx <= hi[:, None] + reach)
    found_left, found_right = left_ok.any(axis=1), right_ok.any(axis=1)
    x0 = np.where(found_left, np.where(left_ok, vx, cols).min(axis=1), lo).astype(np.float32)
    x1 = np.where(found_right, np.where(right_ok, vx, -1).max(axis=1), hi).astype(np.float32)
    area = (x1 - x0) * (bottom - top)
    ok = (found_left | found_right) & (area >= min_area) & (area <= 0.92 * rows * cols) & (x1 - x0 >= run)
    return [
        (float(area[i]), np.array([[x0[i], top[i]], [x1[i], top[i]], [x1[i], bottom[i]], [x0[i], bottom[i]]], dtype=np.float32))
        for i in np.flatnonzero(ok)
    ]


def _outline_support(near: tuple[np.ndarray, np.ndarray], quads: np.ndarray, samples: int = 48) -> np.ndarray:
    """Per quad (n, 4, 2): the fraction of its weakest side lying on edge pixels of
    the side's own orientation (``near`` = horizontal, vertical edge masks)."""
    rows, cols = near[0].shape
    t = np.linspace(0.05, 0.95, samples)[None, None, :, None]
    start = quads[:, :, None, :]
    direction = (np.roll(quads, -1, axis=1) - quads)[:, :, None, :]
    points = np.rint(start + t * direction).astype(np.int64)  # (n, 4, samples, 2)
    xs = np.clip(points[..., 0], 0, cols - 1)
    ys = np.clip(points[..., 1], 0, rows - 1)
    # Sides in order top, right, bottom, left: horizontal, vertical, horizontal, vertical.
    hits = np.stack([near[k % 2][ys[:, k], xs[:, k]] > 0 for k in range(4)], axis=1)
    return hits.mean(axis=2).min(axis=1)


def _join_collinear(segments: np.ndarray, gap: int = 3) -> np.ndarray:
    """Merge runs on (nearly) the same line separated by a small gap.

    One border line often breaks where it touches other content; the pieces
    must be rejoined to compare its length with the opposite side.  Runs are
    grouped into lines first (positions within 2 px, chained), then merged by
    start within each line.  (Plain lists: there are only tens of runs.)
    """
    if len(segments) < 2:
        return segments
    runs = sorted(segments.tolist(), key=lambda r: r[2])
    lines: list[list[list[int]]] = [[runs[0]]]
    for run in runs[1:]:
        if run[2] - lines[-1][-1][2] <= 2:
            lines[-1].append(run)
        else:
            lines.append([run])
    merged: list[list[int]] = []
    for line in lines:
        line.sort()
        position = sorted(r[2] for r in line)[len(line) // 2]
        current = [line[0][0], line[0][1], position]
        for start, end, _ in line[1:]:
            if start <= current[1] + gap:
                current[1] = max(current[1], end)
            else:
                merged.append(current)
                current = [start, end, position]
        merged.append(current)
    return np.array(merged, dtype=np.int64)


def _box_iou(a: np.ndarray, b: np.ndarray) -> float:
    ax0, ay0 = a.min(axis=0)
    ax1, ay1 = a.max(axis=0)
    bx0, by0 = b.min(axis=0)
    bx1, by1 = b.max(axis=0)
    iw = max(0.0, min(ax1, bx1) - max(ax0, bx0))
    ih = max(0.0, min(ay1, by1) - max(ay0, by0))
    inter = iw * ih
    union = (ax1 - ax0) * (ay1 - ay0) + (bx1 - bx0) * (by1 - by0) - inter
    return float(inter / union) if union > 0 else 0.0


def _snap_to_edges(y: np.ndarray, x0: int, y0: int, x1: int, y1: int, reach: int = 4) -> tuple[int, int, int, int]:
    """Move each side of a box found at quarter size onto the picture's own edge.

    A few pixels of misplacement cost PDQ many bits (it tolerates little
    cropping), so the outline is re-measured at the resolution we hash.  A
    window often has a border line, which gives two edges (outside->line,
    line->picture): we take the innermost strong one.
    """
    rows, cols = y.shape
    lum = y.astype(np.int16)
    mx, my = max(1, (x1 - x0) // 8), max(1, (y1 - y0) // 8)

    def innermost(profile: np.ndarray, lo: int, at: int, inward: bool) -> int:
        if not len(profile) or profile.max() <= 0:
            return at
        strong = np.flatnonzero(profile >= 0.5 * profile.max())
        # Edge between pixel k and k+1: the picture starts at k+1 (or ends at k).
        return lo + int(strong[-1]) + 1 if inward else lo + int(strong[0]) + 1

    def rows_edge(at: int, inward: bool) -> int:
        lo, hi = max(0, at - reach), min(rows - 1, at + reach)
        band = np.abs(np.diff(lum[lo : hi + 1, x0 + mx : x1 - mx], axis=0)).mean(axis=1)
        return innermost(band, lo, at, inward)

    def cols_edge(at: int, inward: bool) -> int:
        lo, hi = max(0, at - reach), min(cols - 1, at + reach)
        band = np.abs(np.diff(lum[y0 + my : y1 - my, lo : hi + 1], axis=1)).mean(axis=0)
        return innermost(band, lo, at, inward)

    return cols_edge(x0, True), rows_edge(y0, True), cols_edge(x1, False), rows_edge(y1, False)


def _quad_region(y: np.ndarray, quad: np.ndarray, s: int) -> Region:
    """The upright window ``quad`` outlines, snapped to the picture's own edges, cut
    out of the working luma (``s`` frame pixels per pixel)."""
    rows, cols = y.shape
    x0, y0 = np.floor(quad.min(axis=0)).astype(int)
    x1, y1 = np.ceil(quad.max(axis=0)).astype(int)
    x0, y0, x1, y1 = _snap_to_edges(y, max(0, x0), max(0, y0), min(cols, x1), min(rows, y1))
    return Region("rect", int(x0) * s, int(y0) * s, int(x1 - x0) * s, int(y1 - y0) * s, y[y0:y1, x0:x1], s, True)

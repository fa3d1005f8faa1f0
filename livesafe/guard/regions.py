"""Where in a frame to look: the parts of a picture a blocked image may occupy.

A livestream rarely shows an image full-frame.  PDQ tolerates little cropping
or padding, so robustness comes from hashing the right sub-image, not from a
looser threshold.  For each sampled frame we propose:

* ``frame``   - the whole frame;
* ``trimmed`` - the frame minus uniform bars of any colour (letterbox,
  pillarbox, windowbox, the filled corners of a rotated picture);
* ``rect``    - quadrilaterals found from edges: a picture-in-picture window,
  a photo held up, a screen filmed at an angle (perspective-corrected);
* ``window``  - fixed halves of the frame, for split-screen layouts.

Proposals are found on a half-resolution copy (cheap) and cut from the
full-resolution luma (accurate hashes).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True, slots=True)
class RegionSettings:
    trim_borders: bool = True
    detect_rects: bool = True
    max_rects: int = 4
    min_rect_fraction: float = 0.03  # of the frame area
    windows: tuple[str, ...] = ("left", "right", "top", "bottom")
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


def window_names() -> tuple[str, ...]:
    return tuple(_WINDOWS)


def half_resolution(y: np.ndarray) -> np.ndarray:
    """Area-averaged half-size copy (a fast path in OpenCV for exact factor 2)."""
    rows, cols = y.shape
    return cv2.resize(y, (max(1, cols // 2), max(1, rows // 2)), interpolation=cv2.INTER_AREA)


def propose_regions(y: np.ndarray, settings: RegionSettings) -> list[Region]:
    rows, cols = y.shape
    regions = [Region("frame", 0, 0, cols, rows, y, True)]
    half = half_resolution(y)
    if settings.trim_borders:
        box = content_box(half, settings.border_tolerance)
        if box is not None:
            x, yy, w, h = (v * 2 for v in box)
            if (w, h) != (cols, rows) and w >= 16 and h >= 16:
                regions.append(Region("trimmed", x, yy, w, h, y[yy : yy + h, x : x + w], True))
    if settings.detect_rects:
        for quad in find_quads(half, settings):
            regions.append(_quad_region(y, quad * 2.0))
    for name in settings.windows:
        fx, fy, fw, fh = _WINDOWS[name]
        hx, hy = int(fx * half.shape[1]), int(fy * half.shape[0])
        hw, hh = int(fw * half.shape[1]), int(fh * half.shape[0])
        # Windows are a cheap fallback: hashed at half resolution, one orientation.
        regions.append(Region("window", hx * 2, hy * 2, hw * 2, hh * 2, half[hy : hy + hh, hx : hx + hw], False))
    return regions


def content_box(luma: np.ndarray, tolerance: float) -> tuple[int, int, int, int] | None:
    """Bounding box inside uniform bars on each side, or None if the frame is all bar.

    A bar is a run of rows (columns) from the edge whose pixels all stay within
    ``tolerance`` of the edge's own median colour -- so grey, white or
    brand-coloured bars trim as well as black ones.
    """
    rows, cols = luma.shape
    lum = luma.astype(np.int16)

    def run(lines: np.ndarray) -> int:
        # Bars never cover more than half the frame from one side: look no further.
        lines = lines[: (len(lines) + 1) // 2 + 1]
        colour = np.median(lines[0])
        uniform = (np.abs(lines - colour) <= tolerance).mean(axis=1) >= 0.98
        return len(uniform) if uniform.all() else int(np.argmin(uniform))

    top = run(lum)
    bottom = run(lum[::-1])
    left = run(lum.T)
    right = run(lum.T[::-1])
    w, h = cols - left - right, rows - top - bottom
    if w <= 4 or h <= 4:
        return None
    return left, top, w, h


def find_quads(half: np.ndarray, settings: RegionSettings) -> list[np.ndarray]:
    """Large convex quadrilaterals outlined by edges, biggest first, de-duplicated.

    Returned as (4, 2) float32 corner arrays (tl, tr, br, bl) in ``half`` pixels.
    """
    rows, cols = half.shape
    frame_area = rows * cols
    edges = cv2.Canny(half, 40, 120)
    edges = cv2.dilate(edges, np.ones((3, 3), np.uint8))
    contours, _ = cv2.findContours(edges, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    found: list[tuple[float, np.ndarray]] = []
    for contour in contours:
        area = cv2.contourArea(contour)
        if area < settings.min_rect_fraction * frame_area or area > 0.92 * frame_area:
            continue
        perimeter = cv2.arcLength(contour, True)
        approx = cv2.approxPolyDP(contour, 0.03 * perimeter, True)
        if len(approx) == 4 and cv2.isContourConvex(approx):
            quad = approx.reshape(4, 2).astype(np.float32)
        else:
            (cx, cy), (w, h), angle = rect = cv2.minAreaRect(contour)
            if w * h <= 0 or area / (w * h) < 0.85:
                continue
            quad = cv2.boxPoints(rect).astype(np.float32)
        found.append((area, _order_corners(quad)))
    found.sort(key=lambda item: -item[0])
    kept: list[np.ndarray] = []
    for _, quad in found:
        if all(_box_iou(quad, other) < 0.85 for other in kept):
            kept.append(quad)
        if len(kept) >= settings.max_rects:
            break
    return kept


def _order_corners(quad: np.ndarray) -> np.ndarray:
    s = quad.sum(axis=1)
    d = quad[:, 0] - quad[:, 1]
    return np.array([quad[np.argmin(s)], quad[np.argmax(d)], quad[np.argmax(s)], quad[np.argmin(d)]], dtype=np.float32)


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


def _quad_region(y: np.ndarray, quad: np.ndarray) -> Region:
    """Cut (or perspective-correct) the quadrilateral out of the full-res luma.

    Edges sit on the window's border line, so we inset by 2 % to hash the
    picture rather than its frame.
    """
    rows, cols = y.shape
    x0, y0 = np.floor(quad.min(axis=0)).astype(int)
    x1, y1 = np.ceil(quad.max(axis=0)).astype(int)
    x0, y0 = max(0, x0), max(0, y0)
    x1, y1 = min(cols, x1), min(rows, y1)
    tl, tr, br, bl = quad
    width = int(round((np.linalg.norm(tr - tl) + np.linalg.norm(br - bl)) / 2))
    height = int(round((np.linalg.norm(bl - tl) + np.linalg.norm(br - tr)) / 2))
    axis_aligned = np.abs(quad - np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float32)).max() <= 3.0
    ix, iy = max(1, int(width * 0.02)), max(1, int(height * 0.02))
    if axis_aligned:
        crop = y[y0 + iy : y1 - iy, x0 + ix : x1 - ix]
    else:
        target = np.array([[-ix, -iy], [width - ix, -iy], [width - ix, height - iy], [-ix, height - iy]], dtype=np.float32)
        transform = cv2.getPerspectiveTransform(quad, target)
        crop = cv2.warpPerspective(y, transform, (max(1, width - 2 * ix), max(1, height - 2 * iy)), flags=cv2.INTER_AREA)
    return Region("rect", int(x0), int(y0), int(x1 - x0), int(y1 - y0), crop, True)

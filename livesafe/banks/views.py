"""The views of a banked picture: what a stream may show of it, hashed from the original.

A hash list holds one hash per picture: the picture as its publisher hashed it.
A live stream rarely shows that.  It crops (a player's zoom, a pan, a window
cut to fit), it fills a pane or a phone screen by cutting the picture to that
shape, and it shows a part (a split screen, a zoom on one corner).  PDQ does
not survive any of these: cutting 3 % off one side already moves the hash
~40 bits, past the 31 that match.  A platform that holds the original can do
what a list publisher cannot: hash those views too, once, when it banks it.

Which views, and why this many:

* ``full``: the picture as it is.
* ``crop:WxH@X,Y``: windows keeping W and H of the width and height (1 down to
  0.72, in steps of 0.07), at offsets X, Y across the slack (every <= 7 % of
  the side), as long as they keep >= 66 % of the area.  Neighbouring windows
  are ~40-70 bits apart, close enough for the guard's search to refine a view
  of the frame onto the nearest one (its near hits reach 54 bits); views of
  the frame padded out beyond its edges cover a window larger than the one
  shown.
* ``cover:A``: the middle of the picture cut to a common screen shape A
  (9:16 phone, 3:4, 1:1, 4:3, 16:9, 21:9, and 8:9 and 32:9, the halves of a
  16:9 screen split side by side or stacked), as a grid tile or a phone app
  fills its box; left out when the picture already has about that shape.
  (8:9 and 32:9 took split-screen panes on the benchmark's tune split from
  12/20 to 16/20.)
* ``tile:...``: halves, quarters and the middle quarter: a part shown on its own.

Views too flat to hash (PDQ quality < 50: a blank corner) are dropped: the guard
never matches a view that flat either, and a flat hash matches flat frames.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np

from livesafe.signals import SignalType

MAX_SIDE = 1280  # a stream shows it at 720p at most; hashing more pixels changes nothing but the time
SIDES = (1.0, 0.93, 0.86, 0.79, 0.72)
MIN_AREA = 0.66
OFFSET_STEP = 0.07
ASPECTS = (
    ("9:16", 9 / 16),
    ("3:4", 3 / 4),
    ("8:9", 8 / 9),  # one side of a 16:9 screen split side by side
    ("1:1", 1.0),
    ("4:3", 4 / 3),
    ("16:9", 16 / 9),
    ("21:9", 21 / 9),
    ("32:9", 32 / 9),  # one of a 16:9 screen's halves stacked
)
SAME_SHAPE = 0.08  # a cover view within this (relative) of the picture's own shape would repeat ``full``
MIN_VIEW_SIDE = 32  # pixels: smaller views say too little to hash


@dataclass(frozen=True, slots=True)
class Window:
    """A view as a share of the picture: ``x0, y0, x1, y1`` in 0..1."""

    name: str
    x0: float
    y0: float
    x1: float
    y1: float


@dataclass(frozen=True, slots=True)
class ViewHash:
    """One view's hash under one signal (hex, the list wire format) with its quality."""

    view: str
    signal: str
    hash: str
    quality: int


def windows(aspect: float) -> list[Window]:
    """Every view of a picture of width/height ``aspect``, ``full`` first."""
    out = [Window("full", 0.0, 0.0, 1.0, 1.0)]
    for fw in SIDES:
        for fh in SIDES:
            if (fw, fh) == (1.0, 1.0) or fw * fh < MIN_AREA:
                continue
            for x in _offsets(fw):
                for y in _offsets(fh):
                    out.append(Window(f"crop:{fw:.2f}x{fh:.2f}@{x:.2f},{y:.2f}", x, y, x + fw, y + fh))
    for label, shape in ASPECTS:
        if abs(shape / aspect - 1) <= SAME_SHAPE:
            continue
        fw, fh = (shape / aspect, 1.0) if shape < aspect else (1.0, aspect / shape)
        out.append(Window(f"cover:{label}", (1 - fw) / 2, (1 - fh) / 2, (1 + fw) / 2, (1 + fh) / 2))
    tiles: dict[str, tuple[float, float, float, float]] = {
        "left": (0, 0, 0.5, 1),
        "right": (0.5, 0, 1, 1),
        "top": (0, 0, 1, 0.5),
        "bottom": (0, 0.5, 1, 1),
        "top-left": (0, 0, 0.5, 0.5),
        "top-right": (0.5, 0, 1, 0.5),
        "bottom-left": (0, 0.5, 0.5, 1),
        "bottom-right": (0.5, 0.5, 1, 1),
        "middle": (0.25, 0.25, 0.75, 0.75),
    }
    for label, (x0, y0, x1, y1) in tiles.items():
        out.append(Window(f"tile:{label}", x0, y0, x1, y1))
    return out


def _offsets(share: float) -> list[float]:
    """Where a window keeping ``share`` of a side may start: both ends and every <= OFFSET_STEP between."""
    slack = 1.0 - share
    if slack < 1e-9:
        return [0.0]
    steps = int(np.ceil(slack / OFFSET_STEP - 1e-9))
    return [round(float(v), 4) for v in np.linspace(0.0, slack, steps + 1)]


def normalised(luma: np.ndarray) -> np.ndarray:
    """Float32 luma at most MAX_SIDE pixels a side (area-averaged)."""
    rows, cols = luma.shape
    scale = MAX_SIDE / max(rows, cols)
    if scale < 1.0:
        luma = cv2.resize(
            np.asarray(luma, np.float32),
            (max(1, round(cols * scale)), max(1, round(rows * scale))),
            interpolation=cv2.INTER_AREA,
        )
    return np.asarray(luma, np.float32)


def view_hashes(luma: np.ndarray, luma_scale: float, signals: list[SignalType]) -> tuple[list[ViewHash], int]:
    """The hashes of every view of one picture (or video frame) worth hashing, and how many views were too flat."""
    luma = normalised(luma)
    rows, cols = luma.shape
    out: list[ViewHash] = []
    flat = 0
    for window, pixels in _cut(luma, windows(cols / rows)):
        kept = False
        for signal in signals:
            hashes = signal.hash_luma(pixels, luma_scale)
            if hashes.quality < signal.min_quality:
                continue
            kept = True
            out.append(ViewHash(window.name, signal.name, signal.format_hex(hashes.variants[0]), int(hashes.quality)))
        flat += not kept
    return out, flat


def _cut(luma: np.ndarray, views: list[Window]) -> Iterator[tuple[Window, np.ndarray]]:
    rows, cols = luma.shape
    for window in views:
        x0, x1 = round(window.x0 * cols), round(window.x1 * cols)
        y0, y1 = round(window.y0 * rows), round(window.y1 * rows)
        if min(x1 - x0, y1 - y0) >= MIN_VIEW_SIDE:
            yield window, np.ascontiguousarray(luma[y0:y1, x0:x1])

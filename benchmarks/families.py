"""Transform families for the robustness benchmark, with parameters drawn at random.

Each family draws its parameters from a seeded generator over the whole range
the engine issue asks for, and renders a picture the way a stream would show it
in 1280x720 frames.  The benchmark then reports recall *against the parameter*
(a curve per family), never a pass/fail for one hand-picked setting: a guard
tuned until fixed settings pass does not carry to the next stream.

A family is one ``Family``: ``draw(rng) -> params`` and ``render(picture,
params, rng, stock) -> Shown`` (one RGB frame per shown frame index, so motion
families can move, plus the bin the parameters fall in).  ``stock`` supplies the
benign material around the picture (busy backgrounds, other panes, face-cams),
always decoys, never listed pictures.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from sample_streams.synthetic import HEIGHT, WIDTH, cover, fit, project_plane, resize

Frames = Callable[[int], np.ndarray]  # shown frame index -> RGB uint8 (HEIGHT, WIDTH, 3)


@dataclass(frozen=True)
class Shown:
    frames: Frames
    bitrate_kbps: int | None = None  # a degradation family's encoder bitrate; None: the benchmark's default


class Stock:
    """Benign material around the picture: decoy pictures, drawn per segment."""

    def __init__(self, decoys: list[np.ndarray]) -> None:
        self._decoys = decoys

    def picture(self, rng: np.random.Generator) -> np.ndarray:
        return self._decoys[int(rng.integers(len(self._decoys)))]

    def backdrop(self, rng: np.random.Generator, width: int = WIDTH, height: int = HEIGHT) -> Frames:
        """A moving busy background: a decoy picture zoomed 1.2-1.6x, panning slowly, tinted."""
        picture = self.picture(rng)
        zoom = rng.uniform(1.2, 1.6)
        big = cover(picture, round(width * zoom), round(height * zoom))
        tint = rng.uniform(0.75, 1.1, size=3).astype(np.float32)
        big = np.clip(big * tint, 0, 255).astype(np.uint8)
        span_x, span_y = big.shape[1] - width, big.shape[0] - height
        x0, y0 = rng.uniform(0, span_x), rng.uniform(0, span_y)
        vx, vy = rng.uniform(-3, 3), rng.uniform(-2, 2)

        def frame(i: int) -> np.ndarray:
            x = int(np.clip(x0 + vx * i, 0, span_x))
            y = int(np.clip(y0 + vy * i, 0, span_y))
            return big[y : y + height, x : x + width].copy()

        return frame

    def plain(self, rng: np.random.Generator) -> Frames:
        """Black, a solid colour or a vertical gradient: a player's or an overlay's bars."""
        kind = rng.integers(3)
        if kind == 0:
            canvas = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
        elif kind == 1:
            canvas = np.full((HEIGHT, WIDTH, 3), rng.integers(0, 256, size=3), np.uint8)
        else:
            t = np.linspace(0, 1, HEIGHT, dtype=np.float32)[:, None, None]
            a, b = rng.integers(0, 256, size=(2, 3)).astype(np.float32)
            canvas = np.broadcast_to(a * (1 - t) + b * t, (HEIGHT, WIDTH, 3)).astype(np.uint8).copy()
        return lambda i: canvas.copy()

    def background(self, rng: np.random.Generator) -> Frames:
        return self.backdrop(rng) if rng.random() < 0.6 else self.plain(rng)


# --- drawing helpers ---------------------------------------------------------------------


def paste(canvas: np.ndarray, image: np.ndarray, x: int, y: int) -> None:
    """``image`` onto ``canvas`` at (x, y), clipped to the canvas."""
    h, w = image.shape[:2]
    x0, y0, x1, y1 = max(0, x), max(0, y), min(canvas.shape[1], x + w), min(canvas.shape[0], y + h)
    if x1 > x0 and y1 > y0:
        canvas[y0:y1, x0:x1] = image[y0 - y : y1 - y, x0 - x : x1 - x]


def blend(canvas: np.ndarray, x0: int, y0: int, x1: int, y1: int, colour: np.ndarray, alpha: float) -> None:
    region = canvas[y0:y1, x0:x1].astype(np.float32)
    canvas[y0:y1, x0:x1] = np.clip(region * (1 - alpha) + colour * alpha, 0, 255).astype(np.uint8)


def warp_onto(canvas: np.ndarray, image: np.ndarray, quad: np.ndarray) -> None:
    """``image`` warped onto ``canvas`` with its corners at ``quad`` (TL, TR, BR, BL), anti-aliased edge."""
    h, w = image.shape[:2]
    src = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float32)
    m = cv2.getPerspectiveTransform(src, quad.astype(np.float32))
    warped = cv2.warpPerspective(image, m, (canvas.shape[1], canvas.shape[0]), flags=cv2.INTER_LINEAR)
    mask = cv2.warpPerspective(
        np.full((h, w), 255, np.uint8), m, (canvas.shape[1], canvas.shape[0]), flags=cv2.INTER_LINEAR
    )
    alpha = (mask.astype(np.float32) / 255)[:, :, None]
    canvas[:] = np.clip(canvas * (1 - alpha) + warped * alpha, 0, 255).astype(np.uint8)


_WORDS = (
    "live now",
    "subscribe!",
    "GG",
    "lol",
    "nice",
    "hello chat",
    "brb",
    "wow",
    "follow",
    "12:04",
    "LIVE",
    "score 2-1",
)


def text_lines(
    canvas: np.ndarray, x0: int, y0: int, x1: int, y1: int, rng: np.random.Generator, colour: tuple[int, int, int]
) -> None:
    """Chat- or caption-like lines of text inside a box."""
    size = max(0.4, min(1.4, (y1 - y0) / 60))
    step = max(14, int(30 * size))
    for y in range(y0 + step, y1 - 4, step):
        words = " ".join(rng.choice(_WORDS, size=3))
        cv2.putText(
            canvas, words, (x0 + 6, y), cv2.FONT_HERSHEY_SIMPLEX, size, colour, max(1, int(2 * size)), cv2.LINE_AA
        )


def placed(picture: np.ndarray, scale: float, rng: np.random.Generator) -> tuple[np.ndarray, int, int]:
    """The picture fitted to ``scale`` of the frame, at a random position inside it."""
    shown = fit(picture, WIDTH * scale, HEIGHT * scale)
    h, w = shown.shape[:2]
    return shown, int(rng.integers(0, WIDTH - w + 1)), int(rng.integers(0, HEIGHT - h + 1))


def framed(
    picture: np.ndarray, p: dict, rng: np.random.Generator, stock: Stock
) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The picture as families that are not about placement show it, and its box (x, y, w, h):
    filling the frame (stretched, as a 16:9 video would) when ``p["fill"]``, else fitted at
    ``p["scale"]`` anywhere on plain bars."""
    if p["fill"]:
        return resize(picture, WIDTH, HEIGHT), (0, 0, WIDTH, HEIGHT)
    canvas = stock.plain(rng)(0)
    shown, x, y = placed(picture, p["scale"], rng)
    paste(canvas, shown, x, y)
    return canvas, (x, y, shown.shape[1], shown.shape[0])


def _framing(rng: np.random.Generator) -> dict:
    return {"fill": bool(rng.random() < 0.5), "scale": rng.uniform(0.85, 1.0)}


def still(canvas: np.ndarray) -> Frames:
    return lambda i: canvas


def over(background: Frames, draw: Callable[[np.ndarray], None]) -> Frames:
    """Each frame: the (moving) background, then ``draw`` on top."""

    def frame(i: int) -> np.ndarray:
        canvas = background(i)
        draw(canvas)
        return canvas

    return frame


# --- families ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Family:
    """``bin_of`` is called after ``render``: some bins (padding's share) are known only once fitted."""

    name: str
    parameter: str  # what the curve's x axis is
    bins: tuple[str, ...]
    draw: Callable[[np.random.Generator], dict]
    bin_of: Callable[[dict], str]
    render: Callable[[np.ndarray, dict, np.random.Generator, Stock], Shown]


def _bin(value: float, edges: tuple[float, ...], unit: str = "") -> str:
    for lo, hi in zip(edges, edges[1:], strict=False):
        if value < hi or hi == edges[-1]:
            return f"{lo:g}-{hi:g}{unit}"
    raise ValueError(value)


def _bins(edges: tuple[float, ...], unit: str = "") -> tuple[str, ...]:
    return tuple(f"{lo:g}-{hi:g}{unit}" for lo, hi in zip(edges, edges[1:], strict=False))


# crop: a random window of the picture (0-30 % of its area removed, any aspect, any offset), fitted.
_CROP = (0, 5, 10, 15, 20, 25, 30)


def _draw_crop(rng: np.random.Generator) -> dict:
    removed = rng.uniform(0, 0.30)
    u = rng.uniform(0, 1)
    fw, fh = (1 - removed) ** u, (1 - removed) ** (1 - u)
    return {
        "removed": removed,
        "fw": fw,
        "fh": fh,
        "x": rng.uniform(0, 1 - fw),
        "y": rng.uniform(0, 1 - fh),
        **_framing(rng),
    }


def _render_crop(picture: np.ndarray, p: dict, rng: np.random.Generator, stock: Stock) -> Shown:
    h, w = picture.shape[:2]
    x0, y0 = round(p["x"] * w), round(p["y"] * h)
    cut = picture[y0 : y0 + max(2, round(p["fh"] * h)), x0 : x0 + max(2, round(p["fw"] * w))]
    return Shown(still(framed(cut, p, rng, stock)[0]))


# padding: the picture shrunk and placed anywhere on bars (solid, gradient, or its own blurred copy).
_PAD = (0, 20, 40, 60, 80)


def _draw_padding(rng: np.random.Generator) -> dict:
    return {"scale": rng.uniform(0.45, 1.0), "fill": str(rng.choice(["plain", "plain", "blurred"]))}


def _render_padding(picture: np.ndarray, p: dict, rng: np.random.Generator, stock: Stock) -> Shown:
    shown, x, y = placed(picture, p["scale"], rng)
    if p["fill"] == "blurred":  # as phones post a landscape picture in a portrait story, and back
        canvas = cv2.GaussianBlur(cover(picture, WIDTH // 8, HEIGHT // 8), (0, 0), 3)
        canvas = (resize(canvas, WIDTH, HEIGHT) * 0.6).astype(np.uint8)
    else:
        canvas = stock.plain(rng)(0)
    paste(canvas, shown, x, y)
    p["padding"] = 100 * (1 - shown.shape[0] * shown.shape[1] / (WIDTH * HEIGHT))  # known once fitted: the bin
    return Shown(still(canvas))


# pip: a window 15-100 % of the frame's width, anywhere, over a moving busy background.
_PIP = (15, 30, 45, 60, 80, 100)


def _draw_pip(rng: np.random.Generator) -> dict:
    return {"width": rng.uniform(0.15, 1.0), "border": bool(rng.random() < 0.4), "shadow": bool(rng.random() < 0.3)}


def _render_pip(picture: np.ndarray, p: dict, rng: np.random.Generator, stock: Stock) -> Shown:
    h, w = picture.shape[:2]
    shown_w = round(WIDTH * p["width"])
    shown_h = round(shown_w * h / w)
    if shown_h > HEIGHT:
        shown_h, shown_w = HEIGHT, round(HEIGHT * w / h)
    shown = resize(picture, shown_w, shown_h)
    x, y = int(rng.integers(0, WIDTH - shown_w + 1)), int(rng.integers(0, HEIGHT - shown_h + 1))
    border = np.array(rng.integers(180, 256, size=3), np.uint8)
    background = stock.backdrop(rng)

    def draw(canvas: np.ndarray) -> None:
        if p["shadow"]:
            blend(
                canvas,
                x + 8,
                y + 8,
                min(WIDTH, x + shown_w + 8),
                min(HEIGHT, y + shown_h + 8),
                np.zeros(3, np.float32),
                0.5,
            )
        if p["border"]:
            cv2.rectangle(canvas, (x - 3, y - 3), (x + shown_w + 2, y + shown_h + 2), border.tolist(), 3)
        paste(canvas, shown, x, y)

    return Shown(over(background, draw))


# rotation: turned 0-15 degrees about its centre, fitted at 60-95 %.
_ROT = (0, 3, 6, 9, 12, 15)


def _draw_rotation(rng: np.random.Generator) -> dict:
    return {"angle": rng.uniform(0, 15), "sign": int(rng.choice([-1, 1])), "scale": rng.uniform(0.6, 0.95)}


def _render_rotation(picture: np.ndarray, p: dict, rng: np.random.Generator, stock: Stock) -> Shown:
    shown, x, y = placed(picture, p["scale"], rng)
    h, w = shown.shape[:2]
    centre = np.array([x + w / 2, y + h / 2])
    a = np.radians(p["angle"] * p["sign"])
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    corners = np.array([[-w / 2, -h / 2], [w / 2, -h / 2], [w / 2, h / 2], [-w / 2, h / 2]]) @ rot.T + centre
    background = stock.background(rng)
    return Shown(over(background, lambda canvas: warp_onto(canvas, shown, corners)))


# perspective: a screen filmed at an angle (keystone 0-15 degrees of yaw and/or pitch), with a bezel, in a room.
_PERS = (0, 3, 6, 9, 12, 15)


def _draw_perspective(rng: np.random.Generator) -> dict:
    angle = rng.uniform(0, 15)
    share = rng.uniform(0, 1)
    return {
        "angle": angle,
        "yaw": angle * np.sqrt(share) * rng.choice([-1, 1]),
        "pitch": angle * np.sqrt(1 - share) * rng.choice([-1, 1]),
        "roll": rng.uniform(-2, 2),
        "width": rng.uniform(0.5, 0.85),
        "bezel": bool(rng.random() < 0.7),
    }


def _render_perspective(picture: np.ndarray, p: dict, rng: np.random.Generator, stock: Stock) -> Shown:
    h, w = picture.shape[:2]
    screen = picture
    if p["bezel"]:
        pad = max(6, w // 30)
        screen = np.full((h + 2 * pad, w + 2 * pad, 3), rng.integers(5, 40), np.uint8)
        screen[pad : pad + h, pad : pad + w] = picture
    sh, sw = screen.shape[:2]
    shown_w = WIDTH * p["width"]
    shown_h = min(HEIGHT * 0.9, shown_w * sh / sw)
    shown_w = shown_h * sw / sh
    projected = project_plane(shown_w, shown_h, *np.radians([p["yaw"], p["pitch"], p["roll"]]))
    centre = [WIDTH / 2 + rng.uniform(-80, 80), HEIGHT / 2 + rng.uniform(-40, 40)]
    quad = projected + centre
    background = stock.background(rng)
    sigma, gamma = rng.uniform(0.4, 1.2), rng.uniform(0.85, 1.15)

    def frame(i: int) -> np.ndarray:
        canvas = background(i)
        warp_onto(canvas, screen, quad)
        canvas = cv2.GaussianBlur(canvas, (0, 0), sigma)  # the camera's optics
        return (255.0 * (canvas / 255.0) ** gamma).astype(np.uint8)

    return Shown(frame)


# occlusion: bars, stickers, a chat column or a face-cam over 0-40 % of the (fitted) picture.
_OCC = (0, 5, 10, 20, 30, 40)


def _draw_occlusion(rng: np.random.Generator) -> dict:
    return {
        "covered": rng.uniform(0, 0.40),
        "kind": str(rng.choice(["caption", "stickers", "chat", "facecam"])),
        "translucent": bool(rng.random() < 0.35),
        **_framing(rng),
    }


def _render_occlusion(picture: np.ndarray, p: dict, rng: np.random.Generator, stock: Stock) -> Shown:
    canvas, (x, y, w, h) = framed(picture, p, rng, stock)
    area = p["covered"] * w * h
    alpha = rng.uniform(0.55, 0.8) if p["translucent"] else 1.0
    colour = rng.integers(0, 256, size=3).astype(np.float32)
    kind = p["kind"]
    if kind == "caption":  # full-width bars, top and/or bottom
        sides = [y + h, y] if rng.random() < 0.4 else [y + h if rng.random() < 0.7 else y]
        bar_h = max(1, round(area / w / len(sides)))
        for edge in sides:
            y0 = edge - bar_h if edge > y else y
            blend(canvas, x, y0, x + w, y0 + bar_h, colour, alpha)
            text_lines(canvas, x, y0, x + w, y0 + bar_h, rng, (255, 255, 255))
    elif kind == "chat":  # a column down one side
        col_w = max(1, round(area / h))
        x0 = x + w - col_w if rng.random() < 0.7 else x
        blend(canvas, x0, y, x0 + col_w, y + h, colour * 0.3, alpha)
        text_lines(canvas, x0, y, x0 + col_w, y + h, rng, (235, 235, 235))
    elif kind == "facecam":  # a box of another picture, usually in a corner
        box_w = max(2, round(np.sqrt(area * 4 / 3)))
        box_h = max(2, round(box_w * 3 / 4))
        box_w, box_h = min(box_w, w), min(box_h, h)
        corner = rng.random() < 0.75
        bx = x + (int(rng.choice([0, w - box_w])) if corner else int(rng.integers(0, w - box_w + 1)))
        by = y + (int(rng.choice([0, h - box_h])) if corner else int(rng.integers(0, h - box_h + 1)))
        cam = cover(stock.picture(rng), box_w, box_h)
        region = canvas[by : by + box_h, bx : bx + box_w].astype(np.float32)
        canvas[by : by + box_h, bx : bx + box_w] = np.clip(region * (1 - alpha) + cam * alpha, 0, 255).astype(np.uint8)
    else:  # stickers: 1-4 round blobs
        count = int(rng.integers(1, 5))
        radius = max(2, round(np.sqrt(area / count / np.pi)))
        overlay = canvas.copy()
        for _ in range(count):
            cx, cy = int(rng.integers(x, x + w)), int(rng.integers(y, y + h))
            cv2.circle(overlay, (cx, cy), radius, rng.integers(0, 256, size=3).tolist(), -1, cv2.LINE_AA)
            cv2.circle(overlay, (cx, cy), radius, (255, 255, 255), max(2, radius // 10), cv2.LINE_AA)
        canvas[:] = np.clip(canvas * (1 - alpha) + overlay * alpha, 0, 255).astype(np.uint8)
    return Shown(still(canvas))


# colour: hue, saturation, gamma, greyscale, inversion, brightness/contrast.
_COLOURS = ("hue", "saturation", "gamma", "greyscale", "invert", "brightness")


def _draw_colour(rng: np.random.Generator) -> dict:
    kind = str(rng.choice(_COLOURS))
    amount = {
        "hue": rng.uniform(10, 180),
        "saturation": rng.choice([rng.uniform(0, 0.6), rng.uniform(1.4, 2.5)]),
        "gamma": rng.choice([rng.uniform(0.4, 0.8), rng.uniform(1.25, 2.5)]),
        "greyscale": 1.0,
        "invert": 1.0,
        "brightness": rng.uniform(-80, 80),
    }[kind]
    return {"kind": kind, "amount": float(amount), "contrast": rng.uniform(0.6, 1.5), **_framing(rng)}


def _render_colour(picture: np.ndarray, p: dict, rng: np.random.Generator, stock: Stock) -> Shown:
    img = picture.astype(np.float32)
    kind, amount = p["kind"], p["amount"]
    if kind == "hue" or kind == "saturation":
        hsv = cv2.cvtColor(picture, cv2.COLOR_RGB2HSV).astype(np.float32)
        if kind == "hue":
            hsv[:, :, 0] = (hsv[:, :, 0] + amount / 2) % 180
        else:
            hsv[:, :, 1] = np.clip(hsv[:, :, 1] * amount, 0, 255)
        img = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB).astype(np.float32)
    elif kind == "gamma":
        img = 255.0 * (img / 255.0) ** amount
    elif kind == "greyscale":
        img = np.repeat(cv2.cvtColor(picture, cv2.COLOR_RGB2GRAY)[:, :, None], 3, axis=2).astype(np.float32)
    elif kind == "invert":
        img = 255.0 - img
    else:
        img = (img - 128) * p["contrast"] + 128 + amount
    return Shown(still(framed(np.clip(img, 0, 255).astype(np.uint8), p, rng, stock)[0]))


# degradation: blur, noise, low resolution, and a low encoder bitrate (down to 200 kb/s).
_DEGRADE = ("blur", "noise", "low_res", "bitrate")


def _draw_degradation(rng: np.random.Generator) -> dict:
    kind = str(rng.choice(_DEGRADE))
    amount = {
        "blur": rng.uniform(1, 6),  # Gaussian sigma, frame pixels
        "noise": rng.uniform(5, 25),  # sigma, levels
        "low_res": rng.uniform(0.08, 0.4),  # shown at this share of its size, scaled back up
        "bitrate": rng.uniform(200, 800),  # kb/s for the whole 720p30 stream
    }[kind]
    return {"kind": kind, "amount": float(amount), **_framing(rng)}


def _render_degradation(picture: np.ndarray, p: dict, rng: np.random.Generator, stock: Stock) -> Shown:
    canvas, _ = framed(picture, p, rng, stock)
    kind, amount = p["kind"], p["amount"]
    if kind == "blur":
        canvas = cv2.GaussianBlur(canvas, (0, 0), amount)
    elif kind == "low_res":
        small = resize(canvas, round(WIDTH * amount), round(HEIGHT * amount))
        canvas = cv2.resize(
            small, (WIDTH, HEIGHT), interpolation=cv2.INTER_NEAREST if rng.random() < 0.5 else cv2.INTER_LINEAR
        )
    if kind == "noise":
        base = canvas.astype(np.float32)
        seed = int(rng.integers(1 << 31))
        return Shown(
            lambda i: np.clip(
                base + np.random.default_rng([seed, i]).standard_normal(base.shape, np.float32) * amount, 0, 255
            ).astype(np.uint8)
        )
    return Shown(still(canvas), bitrate_kbps=round(amount) if kind == "bitrate" else None)


# panes: the picture as one pane of a 2-4 pane layout (the others moving decoys).
def _draw_panes(rng: np.random.Generator) -> dict:
    count = int(rng.integers(2, 5))
    return {
        "panes": count,
        "layout": int(rng.integers(2)),
        "gap": int(rng.integers(0, 12)),
        "which": int(rng.integers(count)),
        "fit": bool(rng.random() < 0.5),
    }


def _pane_boxes(count: int, layout: int, gap: int) -> list[tuple[int, int, int, int]]:
    if count == 2:
        if layout == 0:  # side by side
            return [(0, 0, WIDTH // 2 - gap // 2, HEIGHT), (WIDTH // 2 + gap - gap // 2, 0, WIDTH, HEIGHT)]
        return [(0, 0, WIDTH, HEIGHT // 2 - gap // 2), (0, HEIGHT // 2 + gap - gap // 2, WIDTH, HEIGHT)]
    if count == 3:  # one large, two stacked
        big = WIDTH * 2 // 3
        return [
            (0, 0, big, HEIGHT),
            (big + gap, 0, WIDTH, HEIGHT // 2 - gap // 2),
            (big + gap, HEIGHT // 2 + gap - gap // 2, WIDTH, HEIGHT),
        ]
    hw, hh = WIDTH // 2, HEIGHT // 2
    return [(0, 0, hw - gap // 2, hh - gap // 2),
            (hw + gap - gap // 2, 0, WIDTH, hh - gap // 2),
            (0, hh + gap - gap // 2, hw - gap // 2, HEIGHT),
            (hw + gap - gap // 2, hh + gap - gap // 2, WIDTH, HEIGHT)]  # fmt: skip


def _render_panes(picture: np.ndarray, p: dict, rng: np.random.Generator, stock: Stock) -> Shown:
    boxes = _pane_boxes(p["panes"], p["layout"], p["gap"])
    gap_colour = rng.integers(0, 60, size=3).astype(np.uint8)
    others = [stock.backdrop(rng, x1 - x0, y1 - y0) for (x0, y0, x1, y1) in boxes]
    x0, y0, x1, y1 = boxes[p["which"]]
    if p["fit"]:
        pane = np.zeros((y1 - y0, x1 - x0, 3), np.uint8)
        shown = fit(picture, x1 - x0, y1 - y0)
        paste(pane, shown, (pane.shape[1] - shown.shape[1]) // 2, (pane.shape[0] - shown.shape[0]) // 2)
    else:  # filled: cropped to the pane's aspect, as video-call grids do
        pane = cover(picture, x1 - x0, y1 - y0)

    def frame(i: int) -> np.ndarray:
        canvas = np.empty((HEIGHT, WIDTH, 3), np.uint8)
        canvas[:] = gap_colour
        for k, (bx0, by0, bx1, by1) in enumerate(boxes):
            canvas[by0:by1, bx0:bx1] = pane if k == p["which"] else others[k](i)
        return canvas

    return Shown(frame)


# motion: camera shake, or a slow pan / zoom over the picture (Ken Burns).
_MOTION = ("shake", "pan", "zoom")


def _draw_motion(rng: np.random.Generator) -> dict:
    kind = str(rng.choice(_MOTION))
    amount = {"shake": rng.uniform(4, 40), "pan": rng.uniform(0.05, 0.2), "zoom": rng.uniform(1.05, 1.3)}[kind]
    return {"kind": kind, "amount": float(amount), **_framing(rng)}


def _render_motion(picture: np.ndarray, p: dict, rng: np.random.Generator, stock: Stock) -> Shown:
    kind, amount = p["kind"], p["amount"]
    base = stock.plain(rng)(0)
    if kind == "shake":  # the whole picture (filling the frame or fitted) moves; bars show at the edges
        shown, x, y = (resize(picture, WIDTH, HEIGHT), 0, 0) if p["fill"] else placed(picture, p["scale"], rng)
        seed = int(rng.integers(1 << 31))

        def frame(i: int) -> np.ndarray:
            dx, dy = np.random.default_rng([seed, i]).normal(0, amount / 2, size=2).clip(-amount, amount)
            canvas = base.copy()
            paste(canvas, shown, int(x + dx), int(y + dy))
            return canvas

        return Shown(frame)
    # pan: a window of 1/(1 + amount) of the picture sliding across it over 1.5 s; zoom: 1.0 -> amount.
    h, w = picture.shape[:2]
    direction = rng.uniform(0, 2 * np.pi)

    def frame(i: int) -> np.ndarray:
        t = min(1.0, i / 45)
        if kind == "pan":
            keep = 1 / (1 + amount)
            cx = 0.5 + (t - 0.5) * (1 - keep) * np.cos(direction)
            cy = 0.5 + (t - 0.5) * (1 - keep) * np.sin(direction)
        else:
            keep, cx, cy = 1 / (1 + (amount - 1) * t), 0.5, 0.5
        cw, ch = w * keep, h * keep
        x0, y0 = int(np.clip(cx * w - cw / 2, 0, w - cw)), int(np.clip(cy * h - ch / 2, 0, h - ch))
        window = picture[y0 : y0 + int(ch), x0 : x0 + int(cw)]
        if p["fill"]:
            return resize(window, WIDTH, HEIGHT)
        canvas = base.copy()
        shown = fit(window, WIDTH * p["scale"], HEIGHT * p["scale"])
        paste(canvas, shown, (WIDTH - shown.shape[1]) // 2, (HEIGHT - shown.shape[0]) // 2)
        return canvas

    return Shown(frame)


def _kind_bin(p: dict) -> str:
    return p["kind"]


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family(
            "crop",
            "area removed %",
            _bins(_CROP, "%"),
            _draw_crop,
            lambda p: _bin(100 * p["removed"], _CROP, "%"),
            _render_crop,
        ),
        Family(
            "padding",
            "frame that is padding %",
            _bins(_PAD, "%"),
            _draw_padding,
            lambda p: _bin(p["padding"], _PAD, "%"),
            _render_padding,
        ),
        Family(
            "pip",
            "window width % of frame",
            _bins(_PIP, "%"),
            _draw_pip,
            lambda p: _bin(100 * p["width"], _PIP, "%"),
            _render_pip,
        ),
        Family(
            "rotation",
            "angle",
            _bins(_ROT, "°"),
            _draw_rotation,
            lambda p: _bin(p["angle"], _ROT, "°"),
            _render_rotation,
        ),
        Family(
            "perspective",
            "keystone angle",
            _bins(_PERS, "°"),
            _draw_perspective,
            lambda p: _bin(p["angle"], _PERS, "°"),
            _render_perspective,
        ),
        Family(
            "occlusion",
            "picture covered %",
            _bins(_OCC, "%"),
            _draw_occlusion,
            lambda p: _bin(100 * p["covered"], _OCC, "%"),
            _render_occlusion,
        ),
        Family("colour", "filter", _COLOURS, _draw_colour, _kind_bin, _render_colour),
        Family("degradation", "kind", _DEGRADE, _draw_degradation, _kind_bin, _render_degradation),
        Family("panes", "panes", ("2", "3", "4"), _draw_panes, lambda p: str(p["panes"]), _render_panes),
        Family("motion", "kind", _MOTION, _draw_motion, _kind_bin, _render_motion),
    )
}

"""Synthetic but realistic test material: stand-in "blocked" images as a livestream shows them, and benign video.

livesafe has to recognise a blocklisted image after the things a stream does to it
(bars, picture-in-picture, captions, rescaling, a phone filming a monitor) and has
to stay quiet on ordinary video.  Real abuse imagery can never be used for that, so
permissively licensed scikit-image sample photos stand in: ``blocked_images()`` are
the pretend-blocked ones, ``benign_images()`` and the procedural scenes are content
that must never match.

Everything is deterministic given a seed, so tests, benchmarks and
``sample_streams/generate.py`` reproduce the same pixels.  Frames are
``(720, 1280, 3)`` uint8 RGB.

It lives beside the clips it made rather than in the ``livesafe`` package: the
proxy never uses it and it needs scikit-image, a test dependency.  Import it as
``sample_streams.synthetic`` with the checkout root on ``sys.path`` (pytest's
``pythonpath``; the scripts insert it themselves).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache, lru_cache

import cv2
import numpy as np

WIDTH = 1280
HEIGHT = 720
FPS = 30

BLOCKED_NAMES = ("chelsea", "coffee", "rocket")
# moon.png and motorcycle_left.png are left out: scikit-image states no licence for them.
BENIGN_NAMES = (
    "astronaut",
    "brick",
    "camera",
    "coins",
    "grass",
    "gravel",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
)
# Textured benign photos that make a plausible busy backdrop (desktop wallpaper, game, feed).
_BUSY_NAMES = ("brick", "coins", "grass", "gravel", "hubble_deep_field", "immunohistochemistry")

Transform = Callable[[np.ndarray, np.random.Generator], np.ndarray]
FrameSource = Callable[[int], np.ndarray]
"""Frame ``i`` of a scene; a pure function of the index so any frame can be rendered on its own."""
SceneFactory = Callable[[np.random.Generator], FrameSource]
"""Draws a scene's parameters once from the generator and returns its frames."""

_Colour = tuple[int, int, int]


# --- source images -----------------------------------------------------------------------


@cache
def _sample(name: str) -> np.ndarray:
    """A scikit-image sample photo as read-only RGB uint8 (grey photos stacked to 3 channels)."""
    import skimage.data  # test/benchmark dependency only; the proxy itself never needs it

    image = np.asarray(getattr(skimage.data, name)())
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    image = np.ascontiguousarray(image[:, :, :3], dtype=np.uint8)
    image.flags.writeable = False
    return image


def blocked_images() -> dict[str, np.ndarray]:
    """The benign photos that play the part of blocklisted images (read-only RGB uint8)."""
    return {name: _sample(name) for name in BLOCKED_NAMES}


def benign_images() -> dict[str, np.ndarray]:
    """Benign photos that must never match the blocklist (read-only RGB uint8)."""
    return {name: _sample(name) for name in BENIGN_NAMES}


def natural_samples(crops_per_photo: int, seed: int = 7) -> list[np.ndarray]:
    """Every sample photo plus random crops at random scales (even sizes, so they fit yuv420p):
    a varied set of natural images for checking PDQ against its reference."""
    rng = np.random.default_rng(seed)
    out = []
    for image in (*blocked_images().values(), *benign_images().values()):
        out.append(image)
        h, w = image.shape[:2]
        for _ in range(crops_per_photo):
            ch, cw = int(rng.integers(h // 3, h + 1)), int(rng.integers(w // 3, w + 1))
            y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
            scale = rng.uniform(0.5, 2.5)
            size = (max(16, int(cw * scale)), max(16, int(ch * scale)))
            interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
            out.append(cv2.resize(image[y : y + ch, x : x + cw], size, interpolation=interpolation))
    return [np.ascontiguousarray(p[: p.shape[0] // 2 * 2, : p.shape[1] // 2 * 2]) for p in out]


# --- small drawing helpers -------------------------------------------------------------------


def resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    width, height = max(1, width), max(1, height)
    shrinking = width < image.shape[1] and height < image.shape[0]
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def fit(image: np.ndarray, box_w: int, box_h: int) -> np.ndarray:
    """``image`` scaled to the largest size inside the box that keeps its aspect ratio."""
    h, w = image.shape[:2]
    scale = min(box_w / w, box_h / h)
    return resize(image, max(1, round(w * scale)), max(1, round(h * scale)))


def cover(image: np.ndarray, width: int, height: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """``image`` cropped to the target aspect ratio (at a random offset if ``rng``) and resized to it."""
    h, w = image.shape[:2]
    crop_w, crop_h = min(w, round(h * width / height)), min(h, round(w * height / width))
    x = int(rng.integers(0, w - crop_w + 1)) if rng is not None else (w - crop_w) // 2
    y = int(rng.integers(0, h - crop_h + 1)) if rng is not None else (h - crop_h) // 2
    return resize(image[y : y + crop_h, x : x + crop_w], width, height)


def _canvas(colour: _Colour, width: int = WIDTH, height: int = HEIGHT) -> np.ndarray:
    return np.full((height, width, 3), colour, dtype=np.uint8)


def _paste(canvas: np.ndarray, image: np.ndarray, x: int, y: int) -> None:
    canvas[y : y + image.shape[0], x : x + image.shape[1]] = image


def _paste_centred(canvas: np.ndarray, image: np.ndarray) -> None:
    _paste(canvas, image, (canvas.shape[1] - image.shape[1]) // 2, (canvas.shape[0] - image.shape[0]) // 2)


def _colour(rng: np.random.Generator, low: int = 0, high: int = 256) -> _Colour:
    r, g, b = rng.integers(low, high, size=3)
    return int(r), int(g), int(b)


def _bar_colour(rng: np.random.Generator) -> _Colour:
    """Black a quarter of the time, otherwise any colour: players and OBS scenes use both."""
    return (0, 0, 0) if rng.random() < 0.25 else _colour(rng)


def _text(
    canvas: np.ndarray,
    text: str,
    x: int,
    y: int,
    scale: float,
    colour: _Colour,
    thickness: int = 2,
    font: int = cv2.FONT_HERSHEY_SIMPLEX,
) -> None:
    cv2.putText(canvas, text, (x, y), font, scale, colour, thickness, cv2.LINE_AA)


def _blend_rect(canvas: np.ndarray, x0: int, y0: int, x1: int, y1: int, colour: _Colour, alpha: float) -> None:
    """A translucent box, as caption backgrounds are drawn."""
    region = canvas[y0:y1, x0:x1].astype(np.float32)
    canvas[y0:y1, x0:x1] = (
        (region * (1 - alpha) + np.asarray(colour, dtype=np.float32) * alpha).round().astype(np.uint8)
    )


def _vertical_gradient(top: _Colour, bottom: _Colour, width: int = WIDTH, height: int = HEIGHT) -> np.ndarray:
    t = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    column = np.asarray(top, dtype=np.float32) * (1 - t) + np.asarray(bottom, dtype=np.float32) * t
    return np.broadcast_to(column, (height, width, 3)).round().astype(np.uint8)


def add_sensor_noise(frame: np.ndarray, rng: np.random.Generator, sigma: float) -> np.ndarray:
    """Gaussian camera noise: what makes consecutive frames of a filmed scene differ."""
    noisy = frame.astype(np.float32) + rng.standard_normal(size=frame.shape, dtype=np.float32) * np.float32(sigma)
    return np.clip(noisy.round(), 0, 255).astype(np.uint8)


def _room(rng: np.random.Generator) -> np.ndarray:
    """A plain room (wall, floor, a framed picture, a lamp glow): background for filmed scenes."""
    wall = _colour(rng, 90, 200)
    shade = (int(wall[0] * 0.7), int(wall[1] * 0.7), int(wall[2] * 0.7))
    frame = _vertical_gradient(wall, shade)
    floor_y = int(rng.integers(int(HEIGHT * 0.72), int(HEIGHT * 0.85)))
    frame[floor_y:] = _vertical_gradient(_colour(rng, 40, 110), _colour(rng, 20, 60), WIDTH, HEIGHT - floor_y)
    busy = _sample(_BUSY_NAMES[int(rng.integers(len(_BUSY_NAMES)))])
    pw, ph = int(rng.integers(140, 220)), int(rng.integers(100, 160))
    px = int(rng.choice([rng.integers(20, 200), rng.integers(WIDTH - 200 - pw, WIDTH - 20 - pw)]))
    py = int(rng.integers(30, 120))
    cv2.rectangle(frame, (px - 8, py - 8), (px + pw + 8, py + ph + 8), (60, 40, 25), -1)
    _paste(frame, cover(busy, pw, ph), px, py)
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    lx, ly = float(rng.uniform(0, WIDTH)), float(rng.uniform(0, HEIGHT * 0.4))
    glow = 1.0 + 0.25 * np.exp(-((xx - lx) ** 2 + (yy - ly) ** 2) / (2 * 300.0**2))
    return np.clip(frame * glow[:, :, None], 0, 255).astype(np.uint8)


def _busy_background(rng: np.random.Generator) -> np.ndarray:
    """A full frame of benign texture, tinted, standing in for a game or wallpaper behind a PiP."""
    busy = _sample(_BUSY_NAMES[int(rng.integers(len(_BUSY_NAMES)))])
    tint = rng.uniform(0.7, 1.15, size=3).astype(np.float32)
    return np.clip(cover(busy, WIDTH, HEIGHT, rng) * tint, 0, 255).astype(np.uint8)


# --- transforms: a source image placed in a 1280x720 frame -----------------------------------


def fullframe(image: np.ndarray, _rng: np.random.Generator) -> np.ndarray:
    """Stretched to fill the frame (PDQ resamples to 64x64, so aspect changes do not move the hash)."""
    return resize(image, WIDTH, HEIGHT)


def letterbox(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Aspect kept, shrunk to 72-90 % of the frame and centred on one uniform bar colour.

    The shrink guarantees top/bottom bars even though the 3:2 stand-ins would only
    pillarbox in a plain 16:9 fit.
    """
    scale = rng.uniform(0.72, 0.9)
    frame = _canvas(_bar_colour(rng))
    _paste_centred(frame, fit(image, round(WIDTH * scale), round(HEIGHT * scale)))
    return frame


def pillarbox(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Full height with uniform side bars, as a 4:3/3:2 picture sits in a 16:9 stream.

    Wider-than-16:9 sources are squeezed to at most 80 % of the width so bars always exist.
    """
    h, w = image.shape[:2]
    width = min(round(HEIGHT * w / h), round(WIDTH * 0.8))
    frame = _canvas(_bar_colour(rng))
    _paste_centred(frame, resize(image, width, HEIGHT))
    return frame


def mirror(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Flipped left-right (webcam preview mirroring, evasion)."""
    return fullframe(image[:, ::-1], rng)


def rot90(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rotated 90 degrees counter-clockwise, then stretched to fill, so only the orientation changes."""
    return fullframe(np.rot90(image, 1), rng)


def rot180(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Upside down, stretched to fill."""
    return fullframe(np.rot90(image, 2), rng)


def rot270(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rotated 90 degrees clockwise, stretched to fill."""
    return fullframe(np.rot90(image, 3), rng)


def picture_in_picture(image: np.ndarray, rng: np.random.Generator, background: np.ndarray | None = None) -> np.ndarray:
    """The image in a bordered window 25-45 % of the frame wide at a random spot over a busy backdrop.

    ``background`` (a full frame) lets a clip put the window over moving video; by
    default it is a tinted benign texture.  The window width includes its border.
    """
    window_w = round(WIDTH * rng.uniform(0.25, 0.45))
    border = int(rng.integers(2, 7))
    inner = fit(image, window_w - 2 * border, round(HEIGHT * 0.9) - 2 * border)
    window_h = inner.shape[0] + 2 * border
    x = int(rng.integers(16, WIDTH - window_w - 16 + 1))
    y = int(rng.integers(16, HEIGHT - window_h - 16 + 1))
    border_colour = _colour(rng, 200, 256) if rng.random() < 0.5 else _colour(rng, 0, 50)
    frame = _busy_background(rng) if background is None else background.copy()
    frame[y : y + window_h, x : x + window_w] = border_colour
    _paste(frame, inner, x + border, y + border)
    return frame


def split_screen(image: np.ndarray, rng: np.random.Generator, other: np.ndarray | None = None) -> np.ndarray:
    """Two-up "interview" layout: the image fills the left or right half-frame pane, aspect kept.

    ``other`` (a full frame) is shown in the other pane; by default a benign photo.
    Each pane gets a name tag, as StreamYard-style layouts do.
    """
    gutter = 12
    pane_w = (WIDTH - 3 * gutter) // 2
    pane_h = HEIGHT - 2 * gutter - 60
    frame = _vertical_gradient(_colour(rng, 10, 60), _colour(rng, 0, 30))
    if other is None:
        benign = benign_images()
        other = benign[BENIGN_NAMES[int(rng.integers(len(BENIGN_NAMES)))]]
    left_first = rng.random() < 0.5
    for pane, content in enumerate((image, other) if left_first else (other, image)):
        shown = fit(content, pane_w, pane_h)
        x = gutter + pane * (pane_w + gutter) + (pane_w - shown.shape[1]) // 2
        y = gutter + (pane_h - shown.shape[0]) // 2
        _paste(frame, shown, x, y)
        tag_y = y + shown.shape[0] + 8
        _blend_rect(frame, x, tag_y, x + 170, tag_y + 36, (20, 20, 20), 0.8)
        _text(frame, f"Guest {pane + 1}", x + 10, tag_y + 26, 0.8, (240, 240, 240))
    return frame


_CAPTIONS = (
    "LIVE: weekend stream, say hi in chat!",
    "Q&A in 5 minutes",
    "Thanks for the follow!",
    "New video out now",
    "Subscribe for more",
)
_TICKER = "BREAKING: local bakery wins award  +++  weather: sunny, 22C  +++  scores: 2-1  +++  "


def _smiley(canvas: np.ndarray, cx: int, cy: int, r: int) -> None:
    cv2.circle(canvas, (cx, cy), r, (255, 205, 40), -1, cv2.LINE_AA)
    for dx in (-r // 3, r // 3):
        cv2.circle(canvas, (cx + dx, cy - r // 4), max(2, r // 8), (60, 40, 10), -1, cv2.LINE_AA)
    cv2.ellipse(canvas, (cx, cy + r // 8), (r // 2, r // 3), 0, 15, 165, (60, 40, 10), max(2, r // 12), cv2.LINE_AA)


def overlay_text(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Full frame under a caption box, a ticker bar, a LIVE badge, a logo and emoji (10-13 % of pixels)."""
    frame = fullframe(image, rng)
    caption = _CAPTIONS[int(rng.integers(len(_CAPTIONS)))]
    scale = rng.uniform(0.9, 1.2)
    (tw, th), _ = cv2.getTextSize(caption, cv2.FONT_HERSHEY_SIMPLEX, scale, 2)
    cx = int(rng.integers(20, WIDTH - tw - 60))
    cy = int(rng.integers(90, HEIGHT // 2))
    _blend_rect(frame, cx, cy - th - 14, cx + tw + 28, cy + 14, (0, 0, 0), 0.6)
    _text(frame, caption, cx + 14, cy, scale, (255, 255, 255))
    ticker_h = 48
    _blend_rect(frame, 0, HEIGHT - ticker_h, WIDTH, HEIGHT, _colour(rng, 0, 120), 0.85)
    start = int(rng.integers(len(_TICKER)))
    _text(frame, (_TICKER[start:] + _TICKER)[:70], 16, HEIGHT - 15, 0.8, (255, 255, 255))
    cv2.rectangle(frame, (20, 20), (120, 60), (220, 30, 30), -1)
    _text(frame, "LIVE", 32, 52, 0.9, (255, 255, 255))
    logo_c = (WIDTH - 70, 70)
    cv2.circle(frame, logo_c, 45, _colour(rng, 0, 256), -1, cv2.LINE_AA)
    _text(frame, "TV", logo_c[0] - 28, logo_c[1] + 14, 1.3, (255, 255, 255), 3)
    for _ in range(int(rng.integers(2, 4))):
        r = int(rng.integers(28, 46))
        _smiley(frame, int(rng.integers(r, WIDTH - r)), int(rng.integers(HEIGHT // 2, HEIGHT - ticker_h - r)), r)
    return frame


def crop_zoom(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Zoomed in 5-10 % towards a random off-centre point, then filling the frame."""
    h, w = image.shape[:2]
    keep = 1.0 / (1.0 + rng.uniform(0.05, 0.10))
    crop_w, crop_h = round(w * keep), round(h * keep)

    def offset(slack: int) -> int:
        # Either the first or last 30 % of the slack: never (nearly) centred.
        t = rng.uniform(0.0, 0.3) if rng.random() < 0.5 else rng.uniform(0.7, 1.0)
        return round(slack * t)

    x, y = offset(w - crop_w), offset(h - crop_h)
    return fullframe(image[y : y + crop_h, x : x + crop_w], rng)


def rotate_small(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Tilted 2-5 degrees either way; the exposed corners take one fill colour."""
    angle = rng.uniform(2.0, 5.0) * (1 if rng.random() < 0.5 else -1)
    matrix = cv2.getRotationMatrix2D((WIDTH / 2, HEIGHT / 2), angle, 1.0)
    return cv2.warpAffine(
        fullframe(image, rng),
        matrix,
        (WIDTH, HEIGHT),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=_colour(rng, 0, 80),
    )


def brightness_contrast(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Contrast x0.65-1.35 about mid-grey and brightness -45..+45 (camera exposure, filters)."""
    contrast = np.float32(rng.uniform(0.65, 1.35))
    brightness = np.float32(rng.uniform(-45, 45))
    adjusted = (fullframe(image, rng).astype(np.float32) - 128) * contrast + 128 + brightness
    return np.clip(adjusted.round(), 0, 255).astype(np.uint8)


def greyscale(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """BT.601 luma in all three channels."""
    luma = cv2.cvtColor(fullframe(image, rng), cv2.COLOR_RGB2GRAY)
    return np.repeat(luma[:, :, None], 3, axis=2)


def low_res(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Downscaled to 160-320 px wide, JPEG-compressed hard, upscaled: a re-shared thumbnail."""
    h, w = image.shape[:2]
    small_w = int(rng.integers(160, 321))
    small = resize(image, small_w, max(1, round(h * small_w / w)))
    quality = int(rng.integers(15, 46))
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(small, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("OpenCV could not JPEG-encode")
    bgr = cv2.imdecode(jpeg, cv2.IMREAD_COLOR)
    if bgr is None:
        raise RuntimeError("OpenCV could not decode its own JPEG")
    decoded = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    return cv2.resize(decoded, (WIDTH, HEIGHT), interpolation=cv2.INTER_LINEAR)


def _monitor_texture(image: np.ndarray, rng: np.random.Generator, scale: int) -> np.ndarray:
    """A 16:9 monitor face: dark bezel around a lit screen of 160x90 units, ``scale`` texels each.

    The screen carries a faint row/column grid a few texels apart; warping it down
    to the camera without anti-aliasing beats against the output grid: moiré.
    """
    screen_w, screen_h = 160 * scale, 90 * scale
    bezel = max(6, screen_w // 40)
    texture = _canvas(_colour(rng, 10, 35), screen_w + 2 * bezel, screen_h + 2 * bezel)
    screen = resize(image, screen_w, screen_h).astype(np.float32)
    pitch = rng.uniform(2.6, 3.4)
    yy, xx = np.mgrid[0:screen_h, 0:screen_w].astype(np.float32)
    rows = 0.5 + 0.5 * np.cos(2 * np.pi * yy / pitch)
    columns = 0.5 + 0.5 * np.cos(2 * np.pi * xx / pitch)
    grid = 1.0 - 0.10 * rows - 0.06 * columns
    _paste(texture, np.clip(screen * grid[:, :, None] * 1.08, 0, 255).astype(np.uint8), bezel, bezel)
    return texture


def project_plane(width: float, height: float, yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Image corners (tl, tr, br, bl; around the origin) of a width x height plane facing a
    camera of focal length 1.1 x WIDTH, turned by ``yaw``, ``pitch`` and ``roll`` (radians)."""
    cy, sy, cp, sp, cr, sr = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch), np.cos(roll), np.sin(roll)
    rotation = (
        np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
        @ np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
        @ np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    )
    focal = 1.1 * WIDTH
    corners = np.array([[-1, -1, 0], [1, -1, 0], [1, 1, 0], [-1, 1, 0]], dtype=np.float64) * [width / 2, height / 2, 0]
    camera = corners @ rotation.T + [0, 0, focal]
    return camera[:, :2] * focal / camera[:, 2:3]


def _project_quad(width: float, height: float, rng: np.random.Generator) -> np.ndarray:
    """Image corners of a width x height plane turned 5-10 degrees (yaw) plus a little pitch/roll."""
    yaw = np.radians(rng.uniform(5.0, 10.0) * (1 if rng.random() < 0.5 else -1))
    pitch = np.radians(rng.uniform(-4.0, 4.0))
    roll = np.radians(rng.uniform(-2.0, 2.0))
    projected = project_plane(width, height, yaw, pitch, roll)
    centre = [WIDTH / 2 + rng.uniform(-60, 60), HEIGHT * 0.47 + rng.uniform(-30, 30)]
    return (projected + centre).astype(np.float32)


def screen_camera(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The image on a monitor filmed by a camera in a room.

    Perspective (5-10 degrees yaw), dark bezel, moiré from the screen grid, then the
    camera: slight blur, gamma and colour cast, sensor noise.  The screen spans
    roughly 55-70 % of the frame width.
    """
    room = _room(rng)
    scale = 12  # texels per screen unit: well above the on-camera size, so the warp aliases
    texture = _monitor_texture(image, rng, scale)
    th, tw = texture.shape[:2]
    shown_w = WIDTH * rng.uniform(0.55, 0.70)
    quad = _project_quad(shown_w, shown_w * th / tw, rng)
    src = np.array([[0, 0], [tw, 0], [tw, th], [0, th]], dtype=np.float32)
    homography = cv2.getPerspectiveTransform(src, quad)
    warped = cv2.warpPerspective(texture, homography, (WIDTH, HEIGHT), flags=cv2.INTER_LINEAR)
    mask = cv2.warpPerspective(np.full((th, tw), 255, np.uint8), homography, (WIDTH, HEIGHT), flags=cv2.INTER_LINEAR)
    alpha = (mask.astype(np.float32) / 255)[:, :, None]
    # A stand under the monitor so it reads as an object in the room.
    base_x = int(quad[2:, 0].mean())
    base_y = int(quad[2:, 1].mean())
    cv2.rectangle(room, (base_x - 18, base_y), (base_x + 18, base_y + 70), (25, 25, 28), -1)
    cv2.rectangle(room, (base_x - 110, base_y + 62), (base_x + 110, base_y + 78), (25, 25, 28), -1)
    composite = room * (1 - alpha) + warped * alpha
    blurred = cv2.GaussianBlur(composite, (0, 0), rng.uniform(0.6, 1.2))
    gamma = rng.uniform(0.85, 1.15)
    cast = rng.uniform(0.9, 1.1, size=3)
    graded = 255.0 * (np.clip(blurred, 0, 255) / 255.0) ** gamma * cast
    return add_sensor_noise(np.clip(graded, 0, 255).astype(np.uint8), rng, rng.uniform(2.0, 5.0))


TRANSFORMS: dict[str, Transform] = {
    "fullframe": fullframe,
    "letterbox": letterbox,
    "pillarbox": pillarbox,
    "mirror": mirror,
    "rot90": rot90,
    "rot180": rot180,
    "rot270": rot270,
    "pip": picture_in_picture,
    "partial": split_screen,
    "overlay_text": overlay_text,
    "crop_zoom": crop_zoom,
    "rotate_small": rotate_small,
    "brightness_contrast": brightness_contrast,
    "greyscale": greyscale,
    "low_res": low_res,
    "screen_camera": screen_camera,
}


# --- benign scenes -------------------------------------------------------------------------------


def _bounce(position: float, velocity: float, limit: float, i: int) -> float:
    """Position after ``i`` steps moving at ``velocity`` and reflecting off 0 and ``limit``."""
    span = 2 * limit
    p = (position + velocity * i) % span
    return p if p <= limit else span - p


def procedural_scene(rng: np.random.Generator) -> FrameSource:
    """A drifting two-colour gradient with circles and boxes bouncing around: generic motion."""
    c0, c1 = (np.asarray(_colour(rng), dtype=np.float32) for _ in range(2))
    # The gradient is smooth, so it is computed at quarter size and upscaled.
    yy, xx = np.mgrid[0 : HEIGHT // 4, 0 : WIDTH // 4].astype(np.float32)
    diagonal = (xx / (WIDTH // 4) + yy / (HEIGHT // 4)) / 2
    shapes = [
        (
            bool(rng.random() < 0.5),
            int(rng.integers(30, 110)),
            _colour(rng),
            rng.uniform(0, WIDTH),
            rng.uniform(0, HEIGHT),
            rng.uniform(-9, 9),
            rng.uniform(-7, 7),
        )
        for _ in range(int(rng.integers(6, 11)))
    ]

    def frame(i: int) -> np.ndarray:
        t = (diagonal + 0.25 * np.sin(i / 40.0) + 0.25)[:, :, None]
        out = resize((c0 * (1 - t) + c1 * t).clip(0, 255).astype(np.uint8), WIDTH, HEIGHT)
        for is_circle, size, colour, x, y, vx, vy in shapes:
            px, py = round(_bounce(x, vx, WIDTH, i)), round(_bounce(y, vy, HEIGHT, i))
            if is_circle:
                cv2.circle(out, (px, py), size, colour, -1, cv2.LINE_AA)
            else:
                cv2.rectangle(out, (px - size, py - size // 2), (px + size, py + size // 2), colour, -1, cv2.LINE_AA)
        return out

    return frame


def ken_burns(rng: np.random.Generator) -> FrameSource:
    """A benign photo slowly panned and zoomed (1.0-1.35x), easing from one framing to another and back every 12 s."""
    period = 6 * FPS
    photo = _sample(BENIGN_NAMES[int(rng.integers(len(BENIGN_NAMES)))])
    h, w = photo.shape[:2]
    base_w = min(w, h * WIDTH / HEIGHT)

    def window() -> tuple[float, float, float]:
        crop_w = base_w / rng.uniform(1.0, 1.35)
        crop_h = crop_w * HEIGHT / WIDTH
        return crop_w, rng.uniform(0, w - crop_w), rng.uniform(0, h - crop_h)

    start, end = window(), window()

    def frame(i: int) -> np.ndarray:
        phase = (i % (2 * period)) / period
        t = phase if phase <= 1 else 2 - phase
        t = t * t * (3 - 2 * t)
        crop_w, x0, y0 = (a * (1 - t) + b * t for a, b in zip(start, end, strict=True))
        s = crop_w / WIDTH
        matrix = np.array([[s, 0, x0], [0, s, y0]], dtype=np.float32)
        return cv2.warpAffine(
            photo, matrix, (WIDTH, HEIGHT), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT
        )

    return frame


def fast_cuts(rng: np.random.Generator) -> FrameSource:
    """Hard cuts between benign photos every 5-12 frames (a montage): stresses cut handling."""
    shot_lengths = rng.integers(5, 13, size=64)
    starts = np.concatenate([[0], np.cumsum(shot_lengths)])
    names = [BENIGN_NAMES[int(k)] for k in rng.integers(len(BENIGN_NAMES), size=shot_lengths.size)]
    seeds = rng.integers(2**32, size=shot_lengths.size)

    @lru_cache(maxsize=2)
    def shot(k: int) -> np.ndarray:
        return cover(_sample(names[k]), WIDTH, HEIGHT, np.random.default_rng(int(seeds[k])))

    def frame(i: int) -> np.ndarray:
        k = int(np.searchsorted(starts, i % int(starts[-1]), side="right")) - 1
        return shot(k).copy()

    return frame


def black(_rng: np.random.Generator) -> FrameSource:
    """All-black frames (stream start, fade gaps): no hash must come from nothing."""
    return lambda i: np.zeros((HEIGHT, WIDTH, 3), dtype=np.uint8)


_SLATE_LINES = ("Stream starting soon", "We'll be right back", "Technical difficulties", "Thanks for watching")


def slate(rng: np.random.Generator) -> FrameSource:
    """A flat slate with a message and a ticking clock: almost no texture, so PDQ quality is low."""
    base = _canvas(_colour(rng, 0, 90))
    message = _SLATE_LINES[int(rng.integers(len(_SLATE_LINES)))]
    (tw, _), _ = cv2.getTextSize(message, cv2.FONT_HERSHEY_DUPLEX, 1.8, 3)
    _text(base, message, (WIDTH - tw) // 2, HEIGHT // 2 - 20, 1.8, (235, 235, 235), 3, cv2.FONT_HERSHEY_DUPLEX)
    minutes = int(rng.integers(1, 10))

    def frame(i: int) -> np.ndarray:
        out = base.copy()
        left = max(0, minutes * 60 - i // FPS)
        _text(out, f"{left // 60:02d}:{left % 60:02d}", WIDTH // 2 - 60, HEIGHT // 2 + 60, 1.4, (200, 200, 200))
        return out

    return frame


_SKIN = ((224, 172, 105), (198, 134, 66), (141, 85, 36), (255, 219, 172), (241, 194, 125))


def talking_head(rng: np.random.Generator) -> FrameSource:
    """A drawn presenter in a room: head sway, talking mouth, blinks, sensor noise (a webcam stream)."""
    room = _room(rng)
    skin, shirt, hair = _SKIN[int(rng.integers(len(_SKIN)))], _colour(rng, 20, 200), _colour(rng, 10, 90)
    cx = int(rng.integers(WIDTH // 2 - 150, WIDTH // 2 + 150))
    cv2.rectangle(room, (cx - 40, 420), (cx + 40, 600), skin, -1)
    cv2.ellipse(room, (cx, HEIGHT + 40), (260, 190), 0, 180, 360, shirt, -1, cv2.LINE_AA)
    noise_seed = int(rng.integers(2**32))
    blink_every = int(rng.integers(70, 110))

    def frame(i: int) -> np.ndarray:
        out = room.copy()
        hx = cx + round(8 * np.sin(2 * np.pi * i / 95))
        hy = 330 + round(4 * np.sin(2 * np.pi * i / 61))
        cv2.ellipse(out, (hx, hy - 60), (118, 95), 0, 180, 360, hair, -1, cv2.LINE_AA)
        cv2.ellipse(out, (hx, hy), (105, 135), 0, 0, 360, skin, -1, cv2.LINE_AA)
        eye_h = 2 if i % blink_every < 4 else 9
        for dx in (-38, 38):
            cv2.ellipse(out, (hx + dx, hy - 20), (14, eye_h), 0, 0, 360, (40, 30, 30), -1, cv2.LINE_AA)
        mouth = 4 + round(14 * abs(np.sin(i * 0.55)) * (np.sin(i / 23) > -0.3))
        cv2.ellipse(out, (hx, hy + 65), (34, mouth), 0, 0, 360, (120, 40, 50), -1, cv2.LINE_AA)
        return add_sensor_noise(out, np.random.default_rng([noise_seed, i]), 2.5)

    return frame


_WORDS = (
    "def return import from class self async await for in if else while yield None True False "
    "frame stream hash match viewer relay proxy config value index result buffer packet decode "
    "encode width height quality threshold window segment schedule render update print len range"
).split()


def screen_share(rng: np.random.Generator) -> FrameSource:
    """A code editor shared on screen, scrolling and with a blinking cursor: dense, high-contrast text."""
    line_h, lines = 26, 220
    doc = _canvas((30, 32, 38), WIDTH - 260, line_h * lines + HEIGHT)
    palette = ((220, 220, 220), (198, 120, 221), (97, 175, 239), (152, 195, 121), (229, 192, 123))
    for n in range(lines):
        indent = int(rng.integers(0, 4)) * 4
        words = [_WORDS[int(k)] for k in rng.integers(len(_WORDS), size=int(rng.integers(0, 11)))]
        x = 60 + indent * 11
        _text(doc, f"{n + 1:4d}", 4, (n + 1) * line_h, 0.5, (110, 110, 120), 1)
        for word in words:
            _text(doc, word, x, (n + 1) * line_h, 0.6, palette[int(rng.integers(len(palette)))], 1)
            x += cv2.getTextSize(word + " ", cv2.FONT_HERSHEY_SIMPLEX, 0.6, 1)[0][0]
    chrome = _canvas((45, 47, 53))
    cv2.rectangle(chrome, (0, 0), (WIDTH, 36), (60, 63, 70), -1)
    for k, colour in enumerate(((255, 95, 86), (255, 189, 46), (39, 201, 63))):
        cv2.circle(chrome, (20 + 24 * k, 18), 7, colour, -1, cv2.LINE_AA)
    _text(chrome, "relay.py - editor", WIDTH // 2 - 90, 25, 0.6, (200, 200, 200), 1)
    for k in range(12):
        _text(chrome, f"file_{k:02d}.py", 20, 80 + 30 * k, 0.55, (170, 170, 180), 1)
    view_h = HEIGHT - 40

    def frame(i: int) -> np.ndarray:
        out = chrome.copy()
        top = (i * 2) % (line_h * lines)
        out[40:, 260:] = doc[top : top + view_h]
        if (i // 15) % 2 == 0:
            cv2.rectangle(out, (400, 300), (402, 322), (240, 240, 240), -1)
        return out

    return frame


BENIGN_SCENES: dict[str, SceneFactory] = {
    "procedural": procedural_scene,
    "ken_burns": ken_burns,
    "fast_cuts": fast_cuts,
    "black": black,
    "slate": slate,
    "talking_head": talking_head,
    "screen_share": screen_share,
}

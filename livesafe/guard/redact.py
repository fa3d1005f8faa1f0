"""Turning a frame into something safe to show: blur or slate.

Both return a new frame of the original's size and timing (yuv420p blur, or
RGB at odd sizes; a greyscale slate), so redacted and passed frames interleave
seamlessly in the encoder, which converts the pixel format as needed.  The blur is deliberately
brutal (the picture is reduced to a ~1/48-scale colour field) because its
purpose is that nobody can recognise the content and that its hash no longer
matches.  Measured on photos: a 1/48-scale field still sits ~32 bits from
the original's PDQ (a match!); at 1/128 it is ~118 bits away, as far as an
unrelated image, and its quality falls below PDQ's floor.
"""

from __future__ import annotations

from functools import lru_cache

import av
import cv2
import numpy as np

from livesafe.policy import Action

BLUR_CELL = 128  # pixels per colour cell of the blurred field
SLATE_MESSAGE = ("Stream paused", "This content is being reviewed")
# Mid-grey text on a dark card: readable, yet flat enough (PDQ quality < 50 at
# every size) that a slate can never itself match a list.
SLATE_TEXT = 140


def redact(frame: av.VideoFrame, action: Action) -> av.VideoFrame:
    if action is Action.PASS:
        return frame
    out = blur_frame(frame) if action is Action.BLUR else slate_frame(frame.width, frame.height)
    out.pts = frame.pts
    if frame.time_base is not None:
        out.time_base = frame.time_base
    return out


def blur_frame(frame: av.VideoFrame) -> av.VideoFrame:
    if frame.width % 2 or frame.height % 2:
        # yuv420p arrays need even sizes; odd-sized video takes the RGB path.
        rgb = frame.to_ndarray(format="rgb24")
        return av.VideoFrame.from_ndarray(_colour_field(rgb, BLUR_CELL), format="rgb24")
    yuv = frame.to_ndarray(format="yuv420p")
    h, w = frame.height, frame.width
    out = np.empty_like(yuv)
    out[:h] = _colour_field(yuv[:h], BLUR_CELL)
    chroma_in = yuv[h:].reshape(2, h // 2, w // 2)
    chroma_out = out[h:].reshape(2, h // 2, w // 2)
    for i in range(2):
        chroma_out[i] = _colour_field(chroma_in[i], BLUR_CELL // 2)
    return av.VideoFrame.from_ndarray(out, format="yuv420p")


def _colour_field(image: np.ndarray, cell: int) -> np.ndarray:
    """The image averaged over ``cell``-pixel cells, then smoothly interpolated back."""
    rows, cols = image.shape[:2]
    # Each cell averages cell^2 pixels; a 1/4 subsample of them is as good an
    # average and spares OpenCV's slow non-integer area path on the full frame.
    step = max(1, cell // 32)
    tiny = cv2.resize(image[::step, ::step], (max(2, cols // cell), max(2, rows // cell)), interpolation=cv2.INTER_AREA)
    return cv2.resize(tiny, (cols, rows), interpolation=cv2.INTER_LINEAR)


@lru_cache(maxsize=8)
def _slate_luma(width: int, height: int) -> np.ndarray:
    y = np.full((height, width), 30, dtype=np.uint8)
    scale = max(0.4, width / 900)
    for i, text in enumerate(SLATE_MESSAGE):
        size = scale * (1.4 if i == 0 else 0.8)
        thickness = max(1, int(round(size * 2)))
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, size, thickness)
        org = ((width - tw) // 2, height // 2 + (i * 2 - 1) * int(th * 1.2) + (th if i == 0 else th // 2))
        cv2.putText(y, text, org, cv2.FONT_HERSHEY_SIMPLEX, size, SLATE_TEXT, thickness, cv2.LINE_AA)
    y.setflags(write=False)
    return y


def slate_frame(width: int, height: int) -> av.VideoFrame:
    """A dark card with a short neutral message (the broadcaster may see it too).

    Greyscale: the encoder converts it like any other frame, at any size.
    """
    return av.VideoFrame.from_ndarray(_slate_luma(width, height).copy(), format="gray")

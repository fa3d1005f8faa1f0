"""The reviewer's preview: a small, heavily blurred greyscale thumbnail of what a stream sends in.

Off by default (``[moderation] preview = true`` turns it on).  It exists so a
moderator can judge a likely false positive without seeing the content: at
160 px wide with a Gaussian blur of sigma 4 px, shapes and layout survive,
faces and detail do not.  It is built in memory on request, sent with
``Cache-Control: no-store``, never written anywhere, and each view is an
audited action (``preview`` in the audit log), which later actions on the
stream report as ``viewed_content``.
"""

from __future__ import annotations

import av
import cv2
import numpy as np

from livesafe.guard.frames import luma_view

WIDTH = 160
SIGMA = 4.0


def blurred_thumbnail(frame: av.VideoFrame) -> bytes:
    """PNG bytes of ``frame`` as a blurred greyscale thumbnail ``WIDTH`` pixels wide."""
    y, scale = luma_view(frame)
    height = max(1, round(y.shape[0] * WIDTH / y.shape[1]))
    small = cv2.resize(y, (WIDTH, height), interpolation=cv2.INTER_AREA).astype(np.float32) * scale
    blurred = cv2.GaussianBlur(np.clip(small, 0, 255).astype(np.uint8), (0, 0), SIGMA)
    ok, png = cv2.imencode(".png", blurred)
    if not ok:
        raise ValueError("could not encode the preview")
    return png.tobytes()

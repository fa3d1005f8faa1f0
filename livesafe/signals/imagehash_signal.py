"""imagehash's phash / dhash / ahash / whash, in imagehash's own hex format.

Lists built with ``imagehash`` (``str(imagehash.phash(img))``) match ours because
we call the same functions.  A full 720p frame is first shrunk with an area
filter to at most ``_PRESHRINK`` pixels a side: imagehash then resamples that to
8..32 pixels itself, which is what it would have done with the large image, at a
fraction of PIL's cost.  Quality gating reuses PDQ's gradient metric so a flat
frame (black, slate) never matches any signal.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import imagehash
import numpy as np
from PIL import Image

from livesafe.signals import pdq
from livesafe.signals.base import RegionHashes, SignalType

_PRESHRINK = 256


class ImagehashSignal(SignalType):
    bits = 64
    default_threshold = 8

    def __init__(self, name: str, function: Callable[[Image.Image], imagehash.ImageHash]) -> None:
        self.name = name  # type: ignore[misc]  # per-instance: one class serves four hash functions
        self._function = function

    def hash_luma(
        self, luma: np.ndarray, luma_scale: float = 1.0, *, shrink: int = 1, all_orientations: bool = False
    ) -> RegionHashes:
        quality = pdq.quality_of_64(pdq.downsample_64(luma, shrink) * np.float32(luma_scale))
        if luma.dtype != np.uint8:
            luma = np.clip(np.round(luma), 0, 255).astype(np.uint8)
        rows, cols = luma.shape
        scale = _PRESHRINK / max(rows, cols)
        if scale < 1.0:
            luma = cv2.resize(
                luma, (max(1, round(cols * scale)), max(1, round(rows * scale))), interpolation=cv2.INTER_AREA
            )
        image = Image.fromarray(np.ascontiguousarray(luma))
        value = self._function(image).hash.reshape(-1)
        return RegionHashes(np.packbits(value)[None, :], quality)


def imagehash_signals() -> list[ImagehashSignal]:
    return [
        ImagehashSignal("phash", imagehash.phash),
        ImagehashSignal("dhash", imagehash.dhash),
        ImagehashSignal("ahash", imagehash.average_hash),
        ImagehashSignal("whash", imagehash.whash),
    ]

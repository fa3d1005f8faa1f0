"""The pictures the robustness benchmark lists and shows: benign stand-ins, split in two.

Two sources, both permissively licensed and benign:

* **Debian wallpapers** (``/usr/share/backgrounds`` and friends, from the
  packages in ``DEBIAN_PACKAGES``): photos and artwork nobody on the team tuned
  the guard against.  Split by a hash of the file name into a
  *tune* half and a *report* half; BENCHMARKS.md's figures come from the report
  half only, and nothing may be tuned on it.
* **scikit-image's sample photos**: the guard was developed looking at these
  (the sample blocklist is three of them), so they belong to the tune split
  whatever their hash.  They ship with the test dependencies, which makes them
  the pool CI can always run on.

Every picture is kept only if reference PDQ (``pdqhash``) gives it quality >= 70
(a platform's list holds photos, not flat artwork, and PDQ's own gate is 50) and
it is not within 63 bits of a picture already kept: desktop-base ships one
theme at several sizes, and a decoy that *is* a listed picture would count as a
false match.  Each split is then dealt into *listed* pictures (hashed into the
blocklist) and *decoys* (benign pictures shown under the same transforms that
must never match), alternately by hash.
"""

from __future__ import annotations

import zlib
from functools import cache
from pathlib import Path

import cv2
import numpy as np

WALLPAPER_DIRS = (
    Path("/usr/share/backgrounds"),
    Path("/usr/share/wallpapers"),
    Path("/usr/share/desktop-base"),
)
DEBIAN_PACKAGES = (
    "mate-backgrounds", "ukui-wallpapers", "lomiri-wallpapers-16.04", "lomiri-wallpapers-20.04",
    "desktop-base", "debian-edu-artwork",
)  # fmt: skip
SKIMAGE_NAMES = (
    "astronaut", "brick", "camera", "cat", "chelsea", "coffee", "coins", "grass", "gravel",
    "hubble_deep_field", "immunohistochemistry", "retina", "rocket", "stereo_motorcycle",
)  # fmt: skip
SPLITS = ("tune", "report")
POOLS = ("skimage", "debian", "all")
MIN_QUALITY = 70
MIN_APART = 64  # bits between any two kept pictures
MAX_SIDE = 1280  # pictures are shown in 1280x720 frames; larger adds only decode time


def _limit(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    scale = MAX_SIDE / max(h, w)
    if scale < 1:
        image = cv2.resize(image, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(image[: image.shape[0] // 2 * 2, : image.shape[1] // 2 * 2])


def _skimage() -> dict[str, np.ndarray]:
    import skimage.data

    out = {}
    for name in SKIMAGE_NAMES:
        image = getattr(skimage.data, name)()
        image = np.asarray(image[0] if isinstance(image, tuple) else image)
        if image.ndim == 2:
            image = np.repeat(image[:, :, None], 3, axis=2)
        out[f"skimage:{name}"] = _limit(np.ascontiguousarray(image[:, :, :3], dtype=np.uint8))
    return out


def _wallpapers() -> dict[str, np.ndarray]:
    files = sorted(
        {
            p.resolve()
            for d in WALLPAPER_DIRS
            if d.is_dir()
            for p in d.rglob("*")
            if p.suffix.lower() in (".jpg", ".jpeg", ".png")
        }
    )
    out = {}
    for path in files:
        if "screenshot" in path.name.lower() or "thumb" in str(path).lower():
            continue
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None or min(bgr.shape[:2]) < 200:
            continue
        out[f"debian:{path.name}"] = _limit(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    return out


def _bits(name: str) -> int:
    return zlib.crc32(name.encode())


def split_of(name: str) -> str:
    """``tune`` or ``report``: skimage's photos are always tune (the guard was developed on them)."""
    if name.startswith("skimage:"):
        return "tune"
    return SPLITS[_bits(name) & 1]


@cache
def _kept(pool: str) -> tuple[tuple[str, np.ndarray, np.ndarray], ...]:
    """(name, RGB picture, reference PDQ hash bits) of every usable picture, in name order."""
    import pdqhash

    if pool not in POOLS:
        raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
    pictures = {**(_skimage() if pool != "debian" else {}), **(_wallpapers() if pool != "skimage" else {})}
    kept: list[tuple[str, np.ndarray, np.ndarray]] = []
    for name in sorted(pictures):
        image = pictures[name]
        bits, quality = pdqhash.compute(image)
        if quality < MIN_QUALITY:
            continue
        bits = bits.astype(bool)
        if any(int((bits != other).sum()) < MIN_APART for _, _, other in kept):
            continue
        image.flags.writeable = False
        kept.append((name, image, bits))
    return tuple(kept)


def pool(split: str, kind: str = "all") -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(listed, decoys) pictures of a split, by name.  ``kind``: skimage, debian or all."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    listed: dict[str, np.ndarray] = {}
    decoys: dict[str, np.ndarray] = {}
    for name, image, _ in _kept(kind):
        if split_of(name) != split:
            continue
        (listed if (_bits(name) >> 1) & 1 else decoys)[name] = image
    if not listed or not decoys:
        raise RuntimeError(
            f"the {kind!r} pool has no {split} pictures to list or no decoys"
            + (f" (apt-get install {' '.join(DEBIAN_PACKAGES)})" if kind != "skimage" else "")
        )
    return listed, decoys


def reference_hash(picture: np.ndarray) -> np.ndarray:
    """Reference PDQ of a picture as 32 bytes, the way a list holds it."""
    import pdqhash

    bits, _ = pdqhash.compute(np.ascontiguousarray(picture))
    return np.packbits(bits.astype(np.uint8))

"""PDQ, Meta's 256-bit perceptual hash, computed fast enough for live video.

The reference (``pdqhash``/ThreatExchange C++) converts RGB to float luma, runs a
"Jarosz" filter (two passes of a box filter whose window shrinks at the borders)
over the *full* image, point-samples 64x64, takes a 16x16 block of DCT
coefficients and thresholds them at their median.  Filtering every pixel of a
720p frame costs ~17 ms.  We only need 64x64 filtered samples, and the filter is
linear and separable, so we precompute, per input size, the 64 x n operator that
maps a row/column of pixels straight to the 64 filtered samples (exactly the
reference's arithmetic) and apply it as a banded gather.  The live path hashes
the Y plane at half resolution with the reference's full-size filter folded
onto it (``shrink=2``: ~0.3 ms a frame, ~1 bit from the reference on natural
photos); tests check both paths against ``pdqhash``.

Hex format: the 256-bit value whose bit ``k`` is reference bit ``k`` (DCT
coefficient row ``k // 16``, column ``k % 16``), printed as 64 hex digits, most
significant first -- what the C++ ``toString`` and python-threatexchange print.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

HASH_BITS = 256
DEFAULT_THRESHOLD = 31
MIN_QUALITY = 50
_MIN_HASHABLE_DIM = 5

_DCT = np.array(
    [[np.sqrt(2.0 / 64) * np.cos((np.pi / 2 / 64) * (i + 1) * (2 * j + 1)) for j in range(64)] for i in range(16)],
    dtype=np.float32,
)

# Bit k of the hash value lives in byte 31 - k // 8 of the big-endian 32-byte
# form; ``_BIT_ORDER`` reorders the 256 coefficient bits (k = 0..255) into the
# order np.packbits needs for that big-endian form.
_BIT_ORDER = np.arange(255, -1, -1)


@dataclass(frozen=True, slots=True)
class PdqDct:
    """The 16x16 DCT block of one image: from it the hash and its 8 dihedral variants."""

    coefficients: np.ndarray  # float32 (16, 16)
    quality: int

    def hash_bytes(self) -> np.ndarray:
        return _bits_to_bytes(self.coefficients.reshape(1, 256))[0]

    def dihedral_bytes(self) -> np.ndarray:
        """Hashes of the image as seen rotated by 0/90/180/270 degrees and mirrored.

        Computed from the DCT alone (the reference's ``dct16OriginalTo*``), so the
        8 variants cost one hash.  Shape (8, 32) uint8; row 0 is the original.
        """
        a = self.coefficients
        signed = a[None, :, :] * _DIHEDRAL_SIGNS  # (8, 16, 16)
        signed[_DIHEDRAL_TRANSPOSED] = signed[_DIHEDRAL_TRANSPOSED].transpose(0, 2, 1)
        return _bits_to_bytes(signed.reshape(8, 256))


def _dihedral_tables() -> tuple[np.ndarray, np.ndarray]:
    """Sign masks and transpose flags of the reference's 8 dihedral transforms.

    Order: original, rotate 90, rotate 180, rotate 270, flip x, flip y,
    flip +1 (transpose), flip -1.  A variant is ``(signs * A)``, transposed
    where flagged.
    """
    i = np.arange(16)[:, None]
    j = np.arange(16)[None, :]
    keep_odd_i = np.where(i & 1, 1.0, -1.0) * np.ones((1, 16))
    keep_odd_j = np.where(j & 1, 1.0, -1.0) * np.ones((16, 1))
    flip_odd_ij = np.where((i + j) & 1, -1.0, 1.0)
    ones = np.ones((16, 16))
    signs = np.stack([ones, keep_odd_j, flip_odd_ij, keep_odd_i, keep_odd_i, keep_odd_j, ones, flip_odd_ij])
    transposed = np.array([False, True, False, True, False, False, True, True])
    return signs.astype(np.float32), transposed


_DIHEDRAL_SIGNS, _DIHEDRAL_TRANSPOSED = _dihedral_tables()


def _bits_to_bytes(stack: np.ndarray) -> np.ndarray:
    """(n, 32) hash bytes of an (n, 256) stack of flattened DCT blocks."""
    # The reference uses Torben's median, which for an even count returns the
    # lower middle value; bits are set where strictly greater.
    median = np.partition(stack, 127, axis=1)[:, 127:128]
    return np.packbits(stack[:, _BIT_ORDER] > median, axis=1)


@lru_cache(maxsize=2048)
def _jarosz_operator(n: int, shrink: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Banded form of 'two Jarosz box passes then decimate to 64' along one axis.

    Returns (index, weight), each (64, K): sample ``o`` equals
    ``sum_k weight[o, k] * pixels[index[o, k]]``.  The weights are the
    reference's own box filter (window ``ceil(n / 128)``, shrinking at the
    edges) composed with itself, so the full-resolution result matches the C++
    to float rounding.

    ``shrink`` > 1 means the pixels are an area-averaged copy, ``shrink`` times
    smaller, of an ``n``-pixel line: each small pixel then takes the summed
    weights of the ``shrink`` original pixels it averages.  That keeps the
    reference's filter shape (hashing at half size with half-size windows
    instead would drift ~6 bits from the reference on natural photos).
    """
    window = (n + 2 * 64 - 1) // (2 * 64)
    half = (window + 2) // 2
    lo = np.maximum(0, np.arange(n) - (window - half))
    hi = np.minimum(n, np.arange(n) + half)
    sample_at = ((np.arange(64) + 0.5) * n / 64).astype(np.int64)
    # Second pass output at s averages first-pass outputs j in [lo[s], hi[s]);
    # each of those averages pixels in [lo[j], hi[j]).  Band: [lo[lo[s]], hi[hi[s]-1]).
    width = 2 * window + 1
    start = lo[lo[sample_at]]
    cols = start[:, None] + np.arange(width)[None, :]
    # Each (sample, j) pair adds a box [lo[j], hi[j]) of height 1/(|outer| |inner|):
    # accumulate box edges in a difference array, then integrate.
    j = lo[sample_at][:, None] + np.arange(window)[None, :]
    valid = j < hi[sample_at][:, None]
    j = np.minimum(j, n - 1)
    height = np.where(valid, 1.0 / ((hi[sample_at] - lo[sample_at])[:, None] * (hi[j] - lo[j])), 0.0)
    rows = np.broadcast_to(np.arange(64)[:, None], j.shape)
    edges = np.zeros((64, width + 1), dtype=np.float64)
    np.add.at(edges, (rows, lo[j] - start[:, None]), height)
    np.add.at(edges, (rows, hi[j] - start[:, None]), -height)
    weight = np.cumsum(edges, axis=1)[:, :width]
    if shrink > 1:
        small = n // shrink
        cols = cols // shrink
        merged = np.zeros((64, width // shrink + 2), dtype=np.float64)
        base = cols[:, :1]
        np.add.at(merged, (np.arange(64)[:, None], cols - base), weight)
        cols = np.minimum(base + np.arange(merged.shape[1])[None, :], small - 1)
        weight = np.where(base + np.arange(merged.shape[1])[None, :] < small, merged, 0.0)
        n = small
    index = np.minimum(cols, n - 1)
    weight = np.where(cols < n, weight, 0.0)
    return index, weight.astype(np.float32)


@lru_cache(maxsize=2048)
def _dense_operator(n: int, shrink: int) -> np.ndarray:
    """The (n // shrink, 64) matrix form of ``_jarosz_operator``, for one BLAS product."""
    index, weight = _jarosz_operator(n, shrink)
    dense = np.zeros((n // shrink, 64), dtype=np.float32)
    np.add.at(dense, (index, np.broadcast_to(np.arange(64)[:, None], index.shape)), weight)
    return dense


def downsample_64(luma: np.ndarray, shrink: int = 1) -> np.ndarray:
    """The reference's 64x64 float image of a 2-D luma array (any dtype).

    ``shrink``: ``luma`` is an area-averaged copy of the picture at 1/shrink
    size; the result approximates the reference on the full-size picture.
    """
    rows, cols = luma.shape
    r_idx, r_w = _jarosz_operator(rows * shrink, shrink)
    # Rows first, touching only the ~2 * 64 * window rows that matter:
    # a (64, K, cols) gather and weighted sum; then columns as one matrix product.
    vertical = np.matmul(r_w[:, None, :], luma[r_idx].astype(np.float32))[:, 0]
    return vertical @ _dense_operator(cols * shrink, shrink)


def dct_of_luma(luma: np.ndarray, luma_scale: float = 1.0, shrink: int = 1) -> PdqDct:
    """PDQ DCT block and quality of a 2-D luma array.

    ``luma_scale`` maps the input's luma range onto 0..255 for the quality
    metric (255/219 for limited-range video Y); the hash bits do not depend on it.
    """
    if luma.ndim != 2:
        raise ValueError(f"PDQ needs a 2-D luma array, got shape {luma.shape}")
    if min(luma.shape) * shrink < _MIN_HASHABLE_DIM:
        return PdqDct(np.zeros((16, 16), dtype=np.float32), 0)
    a = downsample_64(luma, shrink)
    return PdqDct(_DCT @ a @ _DCT.T, quality_of_64(a * np.float32(luma_scale)))


def quality_of_64(a: np.ndarray) -> int:
    """The reference's gradient-sum quality (0..100) of a 64x64 float image."""
    # int conversion truncates toward zero, as the C++ ``int d = ...`` does.
    dv = ((a[:-1, :] - a[1:, :]) * 100 / 255).astype(np.int32)
    dh = ((a[:, :-1] - a[:, 1:]) * 100 / 255).astype(np.int32)
    total = int(np.abs(dv).sum() + np.abs(dh).sum())
    return min(total // 90, 100)


def luma_from_rgb(rgb: np.ndarray) -> np.ndarray:
    """Float32 luma with the reference's coefficients (for still images)."""
    rgb = rgb.astype(np.float32)
    return rgb[..., 0] * np.float32(0.299) + rgb[..., 1] * np.float32(0.587) + rgb[..., 2] * np.float32(0.114)

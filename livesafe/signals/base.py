"""What every hash type ("signal") provides, so a new one is one class in one file."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np


@dataclass(frozen=True, slots=True)
class RegionHashes:
    """Hashes of one image region under one signal.

    ``variants`` is (V, nbytes) uint8: row 0 is the region as shown; further rows
    are the orientations the signal can derive cheaply (PDQ: the 8 dihedral
    transforms).  ``quality`` is 0..100; below the signal's minimum the region is
    too flat to say anything and must not be matched.
    """

    variants: np.ndarray
    quality: int


class SignalType(ABC):
    """A perceptual hash with a hex wire format, e.g. ``pdq`` or ``phash``."""

    name: ClassVar[str]
    bits: ClassVar[int]
    default_threshold: ClassVar[int]
    min_quality: ClassVar[int] = 50

    @property
    def nbytes(self) -> int:
        return self.bits // 8

    def parse_hex(self, text: str) -> np.ndarray:
        """Hash bytes (big-endian, most significant first) of a hex string; ValueError if malformed."""
        text = text.strip().lower()
        digits = self.bits // 4
        if len(text) != digits:
            raise ValueError(f"{self.name} hash must be {digits} hex digits, got {len(text)}")
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            raw = b""
        if len(raw) != self.nbytes:  # fromhex skips inner spaces: catch those too
            raise ValueError(f"{self.name} hash is not hexadecimal: {text[:20]!r}")
        return np.frombuffer(raw, dtype=np.uint8).copy()

    def format_hex(self, value: np.ndarray) -> str:
        return bytes(np.asarray(value, dtype=np.uint8)).hex()

    @abstractmethod
    def hash_luma(
        self, luma: np.ndarray, luma_scale: float = 1.0, *, shrink: int = 1, all_orientations: bool = False
    ) -> RegionHashes:
        """Hash a 2-D luma array (a frame's Y plane or a crop of it).

        ``luma_scale`` maps the luma range to 0..255 (255/219 for limited-range
        video) where the signal's quality metric depends on contrast.
        ``shrink`` says ``luma`` is an area-averaged copy at 1/shrink of the
        picture's size, so the signal can hash it as the full-size picture.
        """

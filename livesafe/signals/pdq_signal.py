"""The ``pdq`` signal: ThreatExchange-compatible PDQ with dihedral variants."""

from __future__ import annotations

import numpy as np

from livesafe.signals import pdq
from livesafe.signals.base import RegionHashes, SignalType


class PdqSignal(SignalType):
    name = "pdq"
    bits = pdq.HASH_BITS
    default_threshold = pdq.DEFAULT_THRESHOLD
    min_quality = pdq.MIN_QUALITY

    def hash_luma(
        self, luma: np.ndarray, luma_scale: float = 1.0, *, shrink: int = 1, all_orientations: bool = False
    ) -> RegionHashes:
        dct = pdq.dct_of_luma(luma, luma_scale, shrink)
        variants = dct.dihedral_bytes() if all_orientations else dct.hash_bytes()[None, :]
        return RegionHashes(variants, dct.quality)

"""Signal types by name: the one place a new hash type is registered."""

from __future__ import annotations

from livesafe.signals.base import RegionHashes, SignalType
from livesafe.signals.imagehash_signal import imagehash_signals
from livesafe.signals.pdq_signal import PdqSignal

SIGNALS: dict[str, SignalType] = {s.name: s for s in [PdqSignal(), *imagehash_signals()]}


def signal_named(name: str) -> SignalType:
    """The signal called ``name``; ValueError naming the known ones otherwise."""
    try:
        return SIGNALS[name.strip().lower()]
    except KeyError:
        raise ValueError(f"unknown signal type {name!r} (known: {', '.join(sorted(SIGNALS))})") from None


__all__ = ["SIGNALS", "RegionHashes", "SignalType", "signal_named"]

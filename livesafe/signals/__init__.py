"""Signal types by name: the one place a new hash type is registered."""

from __future__ import annotations

from livesafe.signals.base import RegionHashes, SignalType
from livesafe.signals.imagehash_signal import imagehash_signals
from livesafe.signals.pdq_signal import PdqSignal

SIGNALS: dict[str, SignalType] = {s.name: s for s in [PdqSignal(), *imagehash_signals()]}

# Hashes lists carry that no frame can ever match, by name, with their length in hex digits.  An MD5
# is a digest of a file's bytes: it matches only a byte-identical file, and a live stream is
# re-encoded from end to end.  Exchanges share them beside PDQ (NCMEC, StopNCII's VideoMD5), so a
# list may hold them: they are checked and counted, never indexed.
UNMATCHABLE: dict[str, int] = {"md5": 32}


def signal_named(name: str) -> SignalType:
    """The signal called ``name``; ValueError naming the known ones otherwise."""
    try:
        return SIGNALS[name.strip().lower()]
    except KeyError:
        raise ValueError(f"unknown signal type {name!r} (known: {', '.join(sorted(SIGNALS))})") from None


__all__ = ["SIGNALS", "UNMATCHABLE", "RegionHashes", "SignalType", "signal_named"]

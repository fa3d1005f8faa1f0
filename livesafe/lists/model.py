"""What a blocklist is once loaded: immutable, so the engine can swap a reloaded list in atomically."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import numpy as np

from livesafe.signals import signal_named

ACTIONS = ("blur", "slate")


def located(path: Path | str, line: int | None, reason: str) -> str:
    """``path:line: reason`` (or ``path: reason``), the form editors and log readers can jump to."""
    return f"{path}:{line}: {reason}" if line is not None else f"{path}: {reason}"


class BlocklistError(ValueError):
    """A list file that cannot be used; ``str()`` says where (``path:line: reason``) and why."""

    def __init__(self, path: Path | str, reason: str, line: int | None = None) -> None:
        super().__init__(located(path, line, reason))
        self.path = Path(path)
        self.line = line
        self.reason = reason


@dataclass(frozen=True)
class ListSpec:
    """Where a list lives and what a match against it means.

    ``name`` defaults to the file stem so a bare CLI path is enough.  ``thresholds``
    overrides a signal's default Hamming threshold for this list only; it is left
    out of the hash because mappings are not hashable (equality still compares it).
    """

    path: Path
    name: str = ""
    category: str = "test"
    action: str = "blur"
    thresholds: Mapping[str, int] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        path = Path(self.path)
        name = self.name or path.stem
        if self.action not in ACTIONS:
            raise ValueError(f"list {name!r}: action must be one of {', '.join(ACTIONS)}, got {self.action!r}")
        thresholds: dict[str, int] = {}
        for signal_name, value in self.thresholds.items():
            signal = signal_named(signal_name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= signal.bits:
                raise ValueError(
                    f"list {name!r}: {signal.name} threshold must be an integer 0..{signal.bits}, got {value!r}"
                )
            thresholds[signal.name] = value
        object.__setattr__(self, "path", path)
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "thresholds", MappingProxyType(thresholds))

    def threshold_for(self, signal: str) -> int:
        """Largest Hamming distance that counts as a match for ``signal`` in this list."""
        signal_type = signal_named(signal)
        return self.thresholds.get(signal_type.name, signal_type.default_threshold)


@dataclass(frozen=True)
class ListEntry:
    """One hash of a list with where it came from, for match reports."""

    signal: str
    value: np.ndarray
    line: int
    metadata: Mapping[str, str]


@dataclass(frozen=True, eq=False)
class Blocklist:
    """A loaded list: per signal an (N, nbytes) uint8 array in file order.

    Arrays are read-only.  ``lines`` gives each row's 1-based file line (0 means
    unknown, for lists built in code); ``errors`` holds at most the first 100
    skipped-line messages while ``skipped`` counts them all.
    """

    spec: ListSpec
    hashes: Mapping[str, np.ndarray] = field(repr=False)
    metadata: Mapping[str, list[Mapping[str, str]]] = field(repr=False)
    skipped: int
    errors: list[str] = field(repr=False)
    version: str
    lines: Mapping[str, np.ndarray] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return sum(len(values) for values in self.hashes.values())

    def entry_metadata(self, signal: str, row: int) -> Mapping[str, str]:
        return self.metadata[signal][row]

    def entry(self, signal: str, row: int) -> ListEntry:
        lines = self.lines.get(signal)
        line = int(lines[row]) if lines is not None else 0
        return ListEntry(signal, self.hashes[signal][row], line, self.metadata[signal][row])

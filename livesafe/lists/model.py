"""What a blocklist is once loaded: immutable, so the engine can swap a reloaded list in atomically."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from livesafe.signals import signal_named

ACTIONS = ("blur", "slate", "allow")  # allow: a negative list (see guard.matcher)


def located(path: Path | str, line: int | None, reason: str) -> str:
    """``path:line: reason`` (or ``path: reason``), the form editors and log readers can jump to."""
    return f"{path}:{line}: {reason}" if line is not None else f"{path}: {reason}"


class BlocklistError(ValueError):
    """A list that cannot be used; ``str()`` says where (``path:line: reason``, a URL, ``kind:name``) and why."""

    def __init__(self, where: Path | str, reason: str, line: int | None = None) -> None:
        super().__init__(located(where, line, reason))
        self.where = str(where)
        self.line = line
        self.reason = reason


@dataclass(frozen=True)
class ListSpec:
    """Where a list comes from and what a match against it means.

    ``kind`` names the source (``file``, ``url``, an exchange; see
    ``livesafe.lists.sources``); ``path`` is a file source's file, ``url`` a
    URL source's or an exchange's address.  ``name`` defaults to the file stem
    so a bare CLI path is enough.  ``thresholds`` overrides a signal's default
    Hamming threshold for this list only.  ``poll_seconds`` is how often the
    source is asked for changes (None: ``[lists] reload_seconds``);
    ``max_stale_seconds`` how long it may fail before that is a high-severity
    ``lists.stale`` event (None: never).  An entry that matches more than
    ``flood_streams`` distinct streams within ``flood_window_seconds`` is
    quarantined (``livesafe.moderation.flood``).  A list with no hash a stream
    could match is refused (at start and on reload: an emptied file or a
    source that answers nothing must not quietly guard nothing) unless
    ``allow_empty``; an allow list may always be empty.  ``options`` holds what only one kind
    of source reads (a public key, the environment variable of a token); the
    source checks them when it is built.  Mappings are left out of the hash
    (not hashable; equality still compares them).
    """

    path: Path | None = None
    name: str = ""
    category: str = "test"
    action: str = "blur"
    thresholds: Mapping[str, int] = field(default_factory=dict, hash=False)
    kind: str = "file"
    url: str = ""
    poll_seconds: float | None = None
    max_stale_seconds: float | None = None
    flood_streams: int = 10
    flood_window_seconds: float = 600.0
    allow_empty: bool = False
    options: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        path = Path(self.path) if self.path is not None else None
        name = self.name or (path.stem if path is not None else "")
        if not name:
            raise ValueError(f"a {self.kind} list needs a name")
        if self.action not in ACTIONS:
            raise ValueError(f"list {name!r}: action must be one of {', '.join(ACTIONS)}, got {self.action!r}")
        for key in ("poll_seconds", "max_stale_seconds"):
            value = getattr(self, key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float) or value <= 0):
                raise ValueError(f"list {name!r}: {key} must be a positive number of seconds, got {value!r}")
        if isinstance(self.flood_streams, bool) or not isinstance(self.flood_streams, int) or self.flood_streams < 1:
            raise ValueError(f"list {name!r}: flood_streams must be a whole number >= 1, got {self.flood_streams!r}")
        if not isinstance(self.allow_empty, bool):
            raise ValueError(f"list {name!r}: allow_empty must be true or false, got {self.allow_empty!r}")
        window = self.flood_window_seconds
        if isinstance(window, bool) or not isinstance(window, int | float) or window <= 0:
            raise ValueError(f"list {name!r}: flood_window_seconds must be a positive number, got {window!r}")
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
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))

    @property
    def where(self) -> str:
        """What error messages name: the file, the URL, or ``kind:name`` for an exchange."""
        if self.path is not None:
            return str(self.path)
        return self.url or f"{self.kind}:{self.name}"

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
    skipped-line messages while ``skipped`` counts them all.  ``unmatchable``
    counts, per name, the well-formed hashes of kinds no frame can match
    (``livesafe.signals.UNMATCHABLE``: MD5): read, never in ``hashes``.
    """

    spec: ListSpec
    hashes: Mapping[str, np.ndarray] = field(repr=False)
    metadata: Mapping[str, list[Mapping[str, str]]] = field(repr=False)
    skipped: int
    errors: list[str] = field(repr=False)
    version: str
    lines: Mapping[str, np.ndarray] = field(default_factory=dict, repr=False)
    unmatchable: Mapping[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return sum(len(values) for values in self.hashes.values())

    def entry_metadata(self, signal: str, row: int) -> Mapping[str, str]:
        return self.metadata[signal][row]

    def entry(self, signal: str, row: int) -> ListEntry:
        lines = self.lines.get(signal)
        line = int(lines[row]) if lines is not None else 0
        return ListEntry(signal, self.hashes[signal][row], line, self.metadata[signal][row])

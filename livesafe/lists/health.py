"""What a node reports about the lists it enforces: per list its shared version, and how fresh that knowledge is.

A plain snapshot, so ``/healthz`` and ``/metrics`` (which only read it) need
not know where the versions come from (``livesafe.cluster.lists`` in a cluster).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ListState:
    """One list as this node enforces it.

    ``version`` is the cluster's version number (None until Redis confirmed
    one); ``digest`` identifies the content whatever file syntax it came in;
    ``error`` is the last problem with this list (a bad entry in Redis, a
    failed publish), kept until the list is current again.
    """

    name: str
    version: int | None
    digest: str
    hashes: int
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "digest": self.digest, "hashes": self.hashes, "error": self.error}


@dataclass(frozen=True)
class ListsHealth:
    """The lists, and ``age_seconds``: since this node last confirmed it enforces the current version of all.

    ``age_seconds`` is infinite before the first confirmation.  ``stale`` is
    ``age_seconds > max_age_seconds``; ``on_stale`` says what the node does then
    ("slate" or "refuse"), ``reason`` why it is stale ("" while fresh).
    """

    lists: tuple[ListState, ...]
    age_seconds: float
    max_age_seconds: float
    stale: bool
    on_stale: str
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "stale": self.stale,
            "age_seconds": round(self.age_seconds, 3) if math.isfinite(self.age_seconds) else None,
            "max_age_seconds": self.max_age_seconds,
            "on_stale": self.on_stale,
            "versions": {state.name: state.to_json() for state in self.lists},
        } | ({"reason": self.reason} if self.reason else {})

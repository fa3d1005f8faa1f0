"""Every event livesafe reports, defined once: its type names, the facts that raise them, and the record.

Two kinds of fact happen, in two places, and one record carries both to moderators:

- ``GuardEvent``: what the guard saw at a frame (a match started or cleared, a
  check failed, a redaction was imposed), located by frame index and media time.
- ``StreamEvent``: what happened to a stream as a whole (it started, ended, was
  cut, its guard worker died): no frame, no match.
- ``Event``: what moderation stores, feeds and sends as webhooks, built from
  either fact (``Event.of``) or by moderation itself (actions, reports, webhook
  failures).  ``Event.to_dict``/``to_json`` is its one serialised shape, used
  by the store, the live feed and the webhooks alike.

None of them holds pixels, and neither may any event added here.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from itertools import islice
from typing import Any

from livesafe.policy import SEVERITIES

# A redaction episode opens with match.started (a list matched) or guard.error
# (the check failed: fail closed) and closes with one match.cleared.
MATCH_STARTED = "match.started"
MATCH_CLEARED = "match.cleared"
GUARD_ERROR = "guard.error"
# A moderator (or the report policy) redacted the stream: an episode with no match,
# held until a moderator resumes it.
REDACTION_IMPOSED = "redaction.imposed"
# The relay's stream lifecycle: a stream came up, ended, or was cut (details.reason says why).
STREAM_STARTED = "stream.started"
STREAM_ENDED = "stream.ended"
STREAM_CUT = "stream.cut"
# Moderation's own: what a moderator did, what a viewer reported, a webhook receiver that failed.
ACTION_TAKEN = "action.taken"
REPORT_RECEIVED = "report.received"
WEBHOOK_FAILED = "webhook.failed"
# The lists' own: a source failing longer than its max_stale_seconds (and its recovery); a list entry
# matching more distinct streams than its flood limit allows (quarantined: still redacting, paging).
LISTS_STALE = "lists.stale"
LISTS_RECOVERED = "lists.recovered"
LISTS_FLOOD = "lists.flood"


# A matched list entry's metadata rides on its match event (details["metadata"]), within these bounds:
# it comes from upstream (a CSV's columns, an exchange's fields), and one huge field must not make
# every event of every stream that matches the entry huge in the store, the feed and each webhook.
MAX_METADATA_KEYS = 16
MAX_METADATA_KEY_CHARS = 64
MAX_METADATA_VALUE_CHARS = 256


def _new_id() -> str:
    return uuid.uuid4().hex


def _clipped(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def bounded_metadata(metadata: Mapping[str, str]) -> tuple[dict[str, str], int]:
    """An entry's first ``MAX_METADATA_KEYS`` keys, keys and values clipped; and how many keys were left out."""
    kept = {
        _clipped(str(key), MAX_METADATA_KEY_CHARS): _clipped(str(value), MAX_METADATA_VALUE_CHARS)
        for key, value in islice(metadata.items(), MAX_METADATA_KEYS)
    }
    return kept, max(0, len(metadata) - MAX_METADATA_KEYS)


@dataclass(frozen=True, slots=True)
class GuardEvent:
    """One interruption-related fact the guard found at a frame.

    ``pts``/``media_time`` locate it in the stream (media_time in seconds);
    ``at`` is wall-clock time.  Match fields are None for events without a
    match.  ``region`` is [x, y, w, h] in frame pixels.
    """

    type: str
    stream_id: str
    frame_index: int
    pts: int | None
    media_time: float
    action: str
    list_name: str | None = None
    category: str | None = None
    signal: str | None = None
    distance: int | None = None
    matched_hash: str | None = None
    query_hash: str | None = None
    region: list[int] | None = None
    region_kind: str | None = None
    orientation: str | None = None
    quality: int | None = None
    details: dict[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=_new_id)
    at: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"), sort_keys=True)


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """A fact about a stream as a whole, from the relay: ``action`` is what its viewers get now."""

    type: str
    stream_id: str
    action: str
    details: dict[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=_new_id)
    at: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


Fact = GuardEvent | StreamEvent
EventSink = Callable[[GuardEvent], None]
FactSink = Callable[[Fact], None]


@dataclass(frozen=True, slots=True)
class Event:
    """A recorded event.

    ``seq`` is the store's order (set once stored); ``id`` is stable everywhere (webhook-id, feed id).
    """

    type: str
    stream_id: str | None
    severity: str = "info"
    data: dict[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=_new_id)
    at: float = field(default_factory=time.time)
    seq: int | None = None

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity {self.severity!r}: expected one of {', '.join(SEVERITIES)}")

    @property
    def category(self) -> str | None:
        return self.data.get("category")

    @property
    def stored_seq(self) -> int:
        """``seq`` of an event read back from the store or the feed, which always has one."""
        assert self.seq is not None, f"event {self.id} was never stored"
        return self.seq

    def to_dict(self) -> dict[str, Any]:
        """The one public shape: the fact's own fields, flat, beside the record's."""
        return {
            **self.data,
            "id": self.id,
            "seq": self.seq,
            "type": self.type,
            "stream_id": self.stream_id,
            "at": self.at,
            "severity": self.severity,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> Event:
        """``to_dict``'s inverse."""
        data = dict(record)
        head = {key: data.pop(key) for key in ("type", "stream_id", "severity", "id", "at", "seq")}
        return cls(data=data, **head)

    def stored_as(self, seq: int) -> Event:
        return Event(self.type, self.stream_id, self.severity, self.data, self.id, self.at, seq)

    @classmethod
    def of(cls, fact: Fact, severity: str, **extra: Any) -> Event:
        """The record of a guard or stream fact (``extra``: what moderation adds, e.g. the profile)."""
        data = fact.to_dict()
        for key in ("id", "at", "type", "stream_id"):
            del data[key]
        return cls(
            type=fact.type, stream_id=fact.stream_id, severity=severity, data=data | extra, id=fact.id, at=fact.at
        )

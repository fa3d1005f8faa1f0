"""Moderation events: every fact a moderator, bot or webhook receiver is told.

One record type for everything the proxy reports, so the store, the live
feed and the webhooks treat all of them alike.  Guard events (a match, a
clearance, a failed check) are carried over field for field; none of them
holds pixels, and neither may any event added here.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from livesafe.guard.events import GuardEvent

STREAM_STARTED = "stream.started"
STREAM_ENDED = "stream.ended"
ACTION_TAKEN = "action.taken"
REPORT_RECEIVED = "report.received"
WEBHOOK_FAILED = "webhook.failed"
REDACTION_IMPOSED = "redaction.imposed"  # a moderator or the report policy blurred/cut a stream

SEVERITIES = ("info", "warning", "high")


@dataclass(frozen=True, slots=True)
class Event:
    """``seq`` is the store's order (set once stored); ``id`` is stable everywhere (webhook-id, feed id)."""

    type: str
    stream_id: str | None
    severity: str = "info"
    data: dict[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    at: float = field(default_factory=time.time)
    seq: int | None = None

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity {self.severity!r}: expected one of {', '.join(SEVERITIES)}")

    @property
    def category(self) -> str | None:
        return self.data.get("category")

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.data,
            "id": self.id,
            "seq": self.seq,
            "type": self.type,
            "stream_id": self.stream_id,
            "at": self.at,
            "severity": self.severity,
        }

    @classmethod
    def from_guard(cls, event: GuardEvent, severity: str, **extra: Any) -> "Event":
        data = event.to_dict()
        for key in ("id", "at", "type", "stream_id"):
            del data[key]
        return cls(type=event.type, stream_id=event.stream_id, severity=severity, data={**data, **extra}, id=event.id, at=event.at)

"""The records the store's interfaces pass in and out, apart from :class:`Event` (``livesafe.events``).

Kept apart from any implementation: callers build and read them without knowing what stores them.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from livesafe.events import Event


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """What a moderator did, and whether they had seen the content (the audit log is the record of both)."""

    actor: str
    role: str
    action: str
    stream_id: str | None
    reason: str
    viewed_content: bool
    event_id: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    at: float = field(default_factory=time.time)
    seq: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "id": self.id,
            "at": self.at,
            "actor": self.actor,
            "role": self.role,
            "action": self.action,
            "stream_id": self.stream_id,
            "reason": self.reason,
            "viewed_content": self.viewed_content,
            "event_id": self.event_id,
            "details": self.details,
        }


@dataclass(frozen=True, slots=True)
class Delivery:
    """One event due at one webhook endpoint: what the dispatcher sends and then reports back on."""

    event: Event
    endpoint: str
    attempts: int  # attempts made before this one


@dataclass(frozen=True, slots=True)
class Allowed:
    """A hash moderators marked as a false positive: the guard lets it through."""

    signal: str
    hash: str
    stream_id: str | None  # None: every stream

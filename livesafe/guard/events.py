"""What the guard tells the world: plain records, JSON-ready, never pixels."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

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


@dataclass(frozen=True, slots=True)
class GuardEvent:
    """One interruption-related fact about a stream.

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
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    at: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"), sort_keys=True)


EventSink = Callable[[GuardEvent], None]

"""Moderator actions: what each one means, and how a request for one is read.

- ``redact``: slate the stream now, for review, whether or not anything matched;
  held until a moderator resumes (the guard's ``impose``).
- ``resume``: lift the redaction now (a still-matching picture redacts again).
- ``keep``: hold the redaction until a moderator resumes, however clean the stream turns.
- ``confirm``: the match is true (recorded; receivers may file reports on it).
- ``false_positive``: the matched hash joins an allow list, for this stream or
  every stream, so it stops firing; the redaction is lifted.
- ``terminate``: disconnect the publisher and revoke the stream key it used.

Not about a stream, but audited the same way: ``webhook_retry`` (try a failing
webhook endpoint now rather than at the end of its backoff).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ACTIONS = ("redact", "resume", "keep", "confirm", "false_positive", "terminate")
SCOPES = ("stream", "global")
MAX_REASON = 1000


class ActionError(ValueError):
    """The request cannot be carried out; ``status`` is the HTTP status that says why."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ActionRequest:
    action: str
    reason: str
    event_id: str | None = None  # the match this is about (default: the stream's latest)
    scope: str = "stream"  # false_positive only

    @classmethod
    def parse(cls, body: Any) -> ActionRequest:
        """A request from a JSON body; every problem is listed in the error, not just the first."""
        if not isinstance(body, dict):
            raise ActionError('expected a JSON object like {"action": "resume", "reason": "..."}')
        problems = []
        unknown = set(body) - {"action", "reason", "event_id", "scope"}
        if unknown:
            problems.append(f"unknown field(s) {sorted(unknown)}")
        action = body.get("action")
        if action not in ACTIONS:
            problems.append(f"action: expected one of {', '.join(ACTIONS)}, got {action!r}")
        reason = body.get("reason")
        problems += _reason_problems(reason)
        event_id = body.get("event_id")
        if event_id is not None and (not isinstance(event_id, str) or not event_id.isalnum() or len(event_id) > 64):
            problems.append("event_id: expected an event id from the feed")
        scope = body.get("scope", "stream")
        if scope not in SCOPES:
            problems.append(f"scope: expected one of {', '.join(SCOPES)}, got {scope!r}")
        elif scope != "stream" and action != "false_positive":
            problems.append("scope: applies to false_positive only")
        if problems:
            raise ActionError("; ".join(problems))
        assert isinstance(action, str) and isinstance(reason, str)  # in ACTIONS; checked by _reason_problems
        return cls(action=action, reason=reason.strip(), event_id=event_id, scope=scope)


def parse_reason(body: Any) -> str:
    """The reason of a request whose body is only ``{"reason": "..."}``."""
    if not isinstance(body, dict):
        raise ActionError('expected a JSON object like {"reason": "..."}')
    unknown = set(body) - {"reason"}
    problems = [f"unknown field(s) {sorted(unknown)}"] if unknown else []
    problems += _reason_problems(body.get("reason"))
    if problems:
        raise ActionError("; ".join(problems))
    return body["reason"].strip()


def _reason_problems(reason: Any) -> list[str]:
    if not isinstance(reason, str) or not reason.strip():
        return ["reason: required, a non-empty string (it goes in the audit log)"]
    if len(reason) > MAX_REASON:
        return [f"reason: at most {MAX_REASON} characters"]
    return []

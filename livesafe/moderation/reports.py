"""Viewer reports: rate-limited per client, and a policy that redacts on enough of them.

A client is a viewer's WHEP session when the report names one (the session
id is a secret only that viewer holds), else its address.  Each client may
report a stream ``reports_per_client`` times per window; the redaction
policy counts *different* clients, so one viewer cannot blur a stream alone.
"""

from __future__ import annotations

import hashlib
import math
from collections import deque
from dataclasses import dataclass

from livesafe.policy import PolicyProfile

MAX_REASON = 500
MAX_TRACKED = 10_000  # (stream, client) windows kept; the oldest are forgotten beyond this


class RateLimited(Exception):
    def __init__(self, retry_after: float) -> None:
        super().__init__(f"too many reports; try again in {math.ceil(retry_after)} s")
        self.retry_after = retry_after


@dataclass(frozen=True)
class Verdict:
    reporters: int  # different clients that reported the stream within the profile's window
    redact: bool  # this report crossed the profile's threshold


class ReportDesk:
    def __init__(self, per_client: int, client_window: float) -> None:
        self._per_client = per_client
        self._client_window = client_window
        self._by_client: dict[tuple[str, str], deque[float]] = {}
        self._by_stream: dict[str, deque[tuple[float, str]]] = {}

    @staticmethod
    def client_key(session_id: str | None, address: str | None) -> str:
        """A short stable pseudonym: events and memory hold no addresses or session ids."""
        raw = f"session:{session_id}" if session_id else f"addr:{address or 'unknown'}"
        return hashlib.sha256(raw.encode()).hexdigest()[:16]

    def admit(self, stream_id: str, client: str, now: float) -> None:
        """Count a report from ``client``, or raise :class:`RateLimited`."""
        times = self._by_client.setdefault((stream_id, client), deque())
        while times and now - times[0] >= self._client_window:
            times.popleft()
        if len(times) >= self._per_client:
            raise RateLimited(self._client_window - (now - times[0]))
        times.append(now)
        if len(self._by_client) > MAX_TRACKED:
            del self._by_client[next(iter(self._by_client))]

    def weigh(self, stream_id: str, client: str, now: float, profile: PolicyProfile) -> Verdict:
        recent = self._by_stream.setdefault(stream_id, deque())
        while recent and now - recent[0][0] >= profile.report_window_seconds:
            recent.popleft()
        before = len({c for _, c in recent})
        recent.append((now, client))
        reporters = len({c for _, c in recent})
        threshold = profile.reports_to_redact
        return Verdict(reporters, redact=threshold > 0 and before < threshold <= reporters)

    def forget(self, stream_id: str) -> None:
        """The stream ended: its reports no longer count toward redacting it (clients' limits stay)."""
        self._by_stream.pop(stream_id, None)

"""Policy: what the proxy does about a match, and how hard it acts on one stream.

Neutral ground for the three places that decide with it: the guard (``Action``:
what a matched frame becomes), the relay (the stream's profile, chosen at
publish time; whether a viewer may record) and moderation (severities, the
report policy).  It depends on nothing else in livesafe, so none of them has to
import another to decide.

A profile is attached to a stream by its configuration (``[streams.NAME]
profile = "child"``), so a broadcaster cannot pick a laxer one.  ``child``
(a broadcaster under 18) cuts to the slate where other streams blur, pages
moderators at high severity on any match or report, and refuses viewers that
identify as recording tools.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

SEVERITIES = ("info", "warning", "high")


class Action(enum.IntEnum):
    """What happens to a frame; higher values win when lists disagree."""

    PASS = 0
    BLUR = 1
    SLATE = 2

    @classmethod
    def named(cls, name: str) -> Action:
        try:
            return cls[name.upper()]
        except KeyError:
            raise ValueError(f"unknown action {name!r} (known: blur, slate)") from None

    @property
    def label(self) -> str:
        return self.name.lower()


# User-Agent patterns of WHEP clients that record rather than just play: our own
# `livesafe watch --record`, FFmpeg (Lavf), GStreamer, OBS.  A browser tab can still
# be screen-captured; this refuses the tools that record by design, not a determined user.
RECORDER_AGENTS = (
    r"livesafe-watch/\S+ \(recording\)",
    r"\bLavf/",
    r"(?i)\bffmpeg\b",
    r"(?i)\bgstreamer\b",
    r"(?i)\bobs-studio\b",
)


@dataclass(frozen=True)
class PolicyProfile:
    name: str = "default"
    min_action: str = "pass"  # every match redacts at least this hard ("slate": cut instead of blur)
    match_severity: str = "warning"
    report_severity: str = "warning"
    refuse_recording: bool = False
    # Reports from this many different viewers within report_window_seconds redact the
    # stream with report_action until a moderator resumes it (0: reports never redact).
    reports_to_redact: int = 5
    report_window_seconds: float = 60.0
    report_action: str = "blur"
    recorder_agents: tuple[str, ...] = RECORDER_AGENTS

    def __post_init__(self) -> None:
        if self.min_action not in ("pass", "blur", "slate"):
            raise ValueError(f"min_action {self.min_action!r}: expected pass, blur or slate")
        if self.report_action not in ("blur", "slate"):
            raise ValueError(f"report_action {self.report_action!r}: expected blur or slate")
        for key in ("match_severity", "report_severity"):
            if getattr(self, key) not in SEVERITIES:
                raise ValueError(f"{key} {getattr(self, key)!r}: expected one of {', '.join(SEVERITIES)}")
        if self.reports_to_redact < 0:
            raise ValueError("reports_to_redact must be >= 0")
        if self.report_window_seconds <= 0:
            raise ValueError("report_window_seconds must be > 0")
        for pattern in self.recorder_agents:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"recorder_agents: {pattern!r} is not a regular expression: {exc}") from None

    @property
    def floor(self) -> Action:
        return Action[self.min_action.upper()]

    def is_recorder(self, user_agent: str) -> bool:
        return any(re.search(p, user_agent) for p in self.recorder_agents)


DEFAULT = PolicyProfile()
CHILD = PolicyProfile(
    name="child",
    min_action="slate",
    match_severity="high",
    report_severity="high",
    refuse_recording=True,
    reports_to_redact=2,
    report_action="slate",
)
BUILTIN_PROFILES = {DEFAULT.name: DEFAULT, CHILD.name: CHILD}

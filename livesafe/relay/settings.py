"""Settings of the relay: who may publish and watch, ICE, limits.

Secrets (stream keys, viewer tokens) are held here and compared with
:func:`hmac.compare_digest`; their ``repr`` never shows them, so a logged
settings object leaks nothing.
"""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass, field

from livesafe.policy import BUILTIN_PROFILES, PolicyProfile
from livesafe.relay.hook import HookSettings
from livesafe.relay.ice import IceSettings
from livesafe.relay.overload import OverloadSettings
from livesafe.relay.stream import StreamSettings
from livesafe.relay.tokens import JwtSettings

STREAM_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# Compared against when a stream has no key, so a wrong guess costs the same time either way.
_NO_SECRET = "\x00" * 32


@dataclass(frozen=True)
class StreamAccess:
    key: str | None = field(default=None, repr=False)  # publisher's bearer token (stream key)
    viewer_token: str | None = field(default=None, repr=False)
    profile: str = "default"  # policy profile (RelaySettings.profiles), fixed by config, not by the publisher


@dataclass(frozen=True)
class RelaySettings:
    host: str = "127.0.0.1"
    port: int = 8080
    streams: dict[str, StreamAccess] = field(default_factory=dict)
    viewer_token: str | None = field(default=None, repr=False)  # for every stream without its own
    cors_origin: str = "*"
    max_body_bytes: int = 64 * 1024
    max_streams: int = 32
    max_viewers_per_stream: int = 500
    ended_streams_listed: int = 100
    connect_timeout_seconds: float = 20.0  # a peer that has not connected by then is dropped
    ice: IceSettings = field(default_factory=IceSettings)
    stream: StreamSettings = field(default_factory=StreamSettings)
    overload: OverloadSettings = field(default_factory=OverloadSettings)
    profiles: dict[str, PolicyProfile] = field(default_factory=lambda: dict(BUILTIN_PROFILES))
    workers: int = 1  # ``livesafe serve`` processes on this machine, behind this port ([server] workers, --workers)
    # A second listener for /metrics, the dashboard and the moderation API (livesafe.listeners); None: one port.
    admin_port: int | None = None
    admin_host: str | None = None  # default: host
    # Signed tokens and the platform's auth hook (livesafe.relay.access has the precedence); None: not used.
    jwt: JwtSettings | None = None
    hook: HookSettings | None = None

    @property
    def admin_address(self) -> tuple[str, int] | None:
        """Where the admin listener listens (None: there is none, everything is on ``port``)."""
        return None if self.admin_port is None else (self.admin_host or self.host, self.admin_port)

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:  # else the bind fails deep in asyncio with a traceback
            raise ValueError(f"port {self.port}: expected 0-65535 (0: any free port)")
        if "default" not in self.profiles:
            raise ValueError("profiles: a 'default' profile is required (streams without one use it)")
        for name, access in self.streams.items():
            if not STREAM_ID.match(name):
                raise ValueError(f"stream name {name!r}: use 1-64 letters, digits, '-' or '_'")
            if access.profile not in self.profiles:
                raise ValueError(
                    f"stream {name!r}: unknown profile {access.profile!r} (known: {', '.join(sorted(self.profiles))})"
                )
        if self.workers < 1:
            raise ValueError("workers must be at least 1")
        if self.admin_port is not None:
            if not 0 <= self.admin_port <= 65535:
                raise ValueError(f"admin_port {self.admin_port}: expected a port, 0-65535 (0: any free one)")
            if self.admin_port == self.port and self.port != 0 and (self.admin_host or self.host) == self.host:
                raise ValueError("admin_port: must differ from port (or listen on another admin_host)")
        elif self.admin_host is not None:
            raise ValueError("admin_host: set admin_port too (the admin listener's port)")
        if self.max_body_bytes < 1024:
            raise ValueError("max_body_bytes must be at least 1024")

    @property
    def dev_mode(self) -> bool:
        """No stream key, JWT or hook anywhere: anyone may publish any stream (for trying it out only)."""
        return self.jwt is None and self.hook is None and not any(access.key for access in self.streams.values())

    @property
    def access_controlled(self) -> bool:
        """Someone decided who may publish or who may watch: a stream key, ``[auth]``, or a viewer token.

        A viewer token alone counts: the streams and their moderation must not then be open to anyone.
        """
        viewer_tokens = self.viewer_token or any(access.viewer_token for access in self.streams.values())
        return not self.dev_mode or bool(viewer_tokens)

    def may_publish(self, stream_id: str, token: str | None) -> bool:
        if self.dev_mode:
            return True
        access = self.streams.get(stream_id)
        expected = access.key if access is not None and access.key else _NO_SECRET
        ok = token is not None and hmac.compare_digest(token.encode(), expected.encode())
        return ok and expected is not _NO_SECRET

    def profile_for(self, stream_id: str) -> PolicyProfile:
        access = self.streams.get(stream_id)
        return self.profiles[access.profile if access is not None else "default"]

    def may_watch(self, stream_id: str, token: str | None) -> bool:
        access = self.streams.get(stream_id)
        expected = access.viewer_token if access is not None and access.viewer_token else self.viewer_token
        if not expected:
            return True
        return token is not None and hmac.compare_digest(token.encode(), expected.encode())

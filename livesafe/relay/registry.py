"""The stream registry: the streams, sessions and peer connections of one relay process.

``Relay`` is also what moderation acts through (``StreamControl``): resume,
keep and impose reach a stream's guard, terminate hangs up its publisher and
revokes its key.  Every fact a stream or its guard reports enters through one
sink on the loop (``Relay._on_event``), which logs it and hands it on.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import secrets
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import av
from aiohttp import web
from aiortc import RTCPeerConnection

from livesafe.events import (
    GUARD_ERROR,
    MATCH_STARTED,
    STREAM_CUT,
    STREAM_ENDED,
    STREAM_STARTED,
    Fact,
    FactSink,
    GuardEvent,
    StreamEvent,
)
from livesafe.guard.matcher import Match, Matcher
from livesafe.guard.stream_guard import PUSH_SECONDS_BUCKETS, GuardSettings, StreamGuard
from livesafe.policy import Action, PolicyProfile
from livesafe.relay.access import Access, Grant
from livesafe.relay.compat import accept_rsa_peers, mark_vp8_keyframes
from livesafe.relay.delivery import Viewer
from livesafe.relay.hook import AuthHook
from livesafe.relay.ice import apply_ice_settings
from livesafe.relay.overload import LoadShedder
from livesafe.relay.settings import RelaySettings
from livesafe.relay.stream import LiveStream

log = logging.getLogger(__name__)


class Placement(Protocol):
    """Which node takes a new stream (the cluster's; a single node takes every stream itself)."""

    async def place(self, stream_id: str, request: web.Request) -> bool | web.Response:
        """Take ``stream_id`` here (True: newly, so :meth:`release` it if the publisher does not
        get through), or the response that sends the publisher elsewhere (raises when none can)."""
        ...

    async def release(self, stream_id: str) -> None: ...

    def status(self) -> dict[str, Any]:
        """For ``/healthz``: how placement stands (e.g. whether the cluster's registry answers)."""
        ...


class RemoteStreams(Protocol):
    """Streams guarded on another node and watched from this one (a cluster's edge)."""

    async def admit(self, stream_id: str) -> Callable[[Viewer], Awaitable[None]]:
        """How to attach a new viewer of ``stream_id``; raises the HTTP answer if it cannot be watched
        here (404: not live anywhere; 503: full, or the cluster cannot say)."""
        ...

    def request_keyframe(self, stream_id: str, codec: str) -> None: ...

    async def remove_viewer(self, stream_id: str, viewer_id: str) -> None: ...


@dataclass
class Session:
    id: str
    kind: str  # "whip" or "whep"
    stream_id: str
    pc: RTCPeerConnection
    token: str | None = field(repr=False)
    deadline: asyncio.Task[None] | None = None  # closes the session if it never connects


@dataclass
class EndedTotals:
    """What the streams that have ended counted, so relay-wide totals (``/metrics``) never go down."""

    streams: int = 0
    frames_in: int = 0
    frames_guarded: int = 0
    frames_redacted: int = 0
    frames_dropped: int = 0
    guard_errors: int = 0
    stalls: int = 0
    push_buckets: list[int] = field(default_factory=lambda: [0] * (len(PUSH_SECONDS_BUCKETS) + 1))
    push_seconds: float = 0.0

    def add(self, stream: LiveStream) -> None:
        stats, counters = stream.guard.stats, stream.counters
        self.streams += 1
        self.frames_in += counters.frames_in
        self.frames_guarded += stats.frames_out
        self.frames_redacted += stats.frames_redacted
        self.frames_dropped += counters.frames_dropped
        self.guard_errors += stats.errors
        self.stalls += counters.stalls
        self.push_buckets = [a + b for a, b in zip(self.push_buckets, stats.push_buckets, strict=True)]
        self.push_seconds += stats.push_seconds


def key_fingerprint(token: str | None) -> str:
    """What is stored of a revoked stream key: its SHA-256, never the key ("" for dev mode's no key)."""
    return hashlib.sha256((token or "").encode()).hexdigest()


class Relay:
    """Streams, sessions and the peer connections behind them (one per process).

    Also the moderation service's ``StreamControl``: resume/keep/impose reach a
    stream's guard, terminate hangs up its publisher and revokes the key.
    """

    def __init__(
        self,
        settings: RelaySettings,
        matcher: Callable[[], Matcher],
        guard_settings: GuardSettings,
        on_event: FactSink | None = None,
        allow: Callable[[str, Match], bool] | None = None,
        revoked_keys: set[tuple[str, str]] | None = None,
    ) -> None:
        """``allow(stream, match)``: ignore that match (false positives).

        ``revoked_keys``: (stream, key SHA-256) pairs refused.
        """
        self.settings = settings
        self._matcher = matcher
        self._guard_settings = guard_settings
        self._sink = on_event
        self._allow = allow
        self.revoked_keys = set(revoked_keys or ())
        self.streams: dict[str, LiveStream] = {}
        self.ended: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.ended_totals = EndedTotals()  # streams leave self.streams and their counts land here, on the loop
        self.sessions: dict[str, Session] = {}
        self.cluster_streams: list[dict[str, Any]] = []  # other nodes' live streams, when clustered
        self.placement: Placement | None = None  # set when clustered
        self.shedder = LoadShedder(settings.overload)
        self.held: str | None = None  # why every stream shows the slate (``hold_streams``), if they do
        self.refusing: str | None = None  # why new publishers are refused (``refuse_publishers``), if they are
        # Viewers of streams guarded on another node (set by whoever wires the cluster; None: single node).
        self.edges: RemoteStreams | None = None  # set when clustered: streams guarded elsewhere
        self.access = Access(settings)
        # The profile each live stream started under (its config's, or the one a signed token or the auth hook
        # granted a stream not listed in [streams]): kept until it ends, whatever a config reload changes.
        self._started_under: dict[str, PolicyProfile] = {}
        self._retired_hooks: list[AuthHook] = []  # replaced by a config reload, closed once checks under way end
        self._closing: set[asyncio.Task[None]] = set()
        apply_ice_settings(settings.ice)
        accept_rsa_peers()
        mark_vp8_keyframes()

    # ------------------------------------------------------------- streams

    def profile(self, stream_id: str) -> PolicyProfile:
        """The stream's policy profile: from configuration or a grant the platform signed, never the broadcaster.

        A live stream's is the one it started under, even if a config reload changed it since: its guard's
        floor and its viewers' rules were fixed then.
        """
        started = self._started_under.get(stream_id)
        return started if started is not None else self.settings.profile_for(stream_id)

    def reconfigure(self, settings: RelaySettings) -> None:
        """Take ``settings`` (a config reload) for what comes next: new publishers and viewers are checked
        against its keys, tokens and ``[auth]``; sessions already up carry on.  The caller keeps every
        setting fixed at start (ports, ICE, ...) as it was (``livesafe.reload``)."""
        previous = self.access
        self.settings = settings
        self.access = Access(settings, previous)
        hook = previous.hook
        if hook is not None and hook is not self.access.hook:
            # Closed later, not now: a check under way is asking through it (closing would refuse that attempt).
            self._retired_hooks.append(hook)
            asyncio.get_running_loop().call_later(hook.settings.timeout_seconds + 1, self._retire, hook)

    def _retire(self, hook: AuthHook) -> None:
        if hook in self._retired_hooks:
            self._retired_hooks.remove(hook)
            task = asyncio.ensure_future(hook.close())
            self._closing.add(task)  # held until done: the loop keeps only weak references to tasks
            task.add_done_callback(self._closing.discard)

    def stream_for_publisher(self, stream_id: str, grant: Grant | None = None) -> LiveStream:
        """The stream ``stream_id`` (started if new, under ``grant``'s profile if it names one).

        A live stream keeps the profile it started with: a reconnect granted another one is refused (409),
        since the guard's floor and the viewers' rules were fixed at the start.
        """
        stream = self.streams.get(stream_id)
        granted = grant.profile if grant is not None else None
        wanted = granted if granted is not None else self.settings.profile_for(stream_id).name
        if stream is not None and wanted != self.profile(stream_id).name:
            raise web.HTTPConflict(text="this stream is live under another policy profile; end it first\n")
        if stream is None:
            if len(self.streams) >= self.settings.max_streams:
                raise web.HTTPServiceUnavailable(text=f"at most {self.settings.max_streams} streams at once\n")
            profile = self.settings.profiles[wanted]
            loop = asyncio.get_running_loop()
            allow = self._allow

            def on_guard_event(event: GuardEvent) -> None:
                # The guard runs on the stream's worker thread; events go back to the loop.
                loop.call_soon_threadsafe(self._on_event, event)

            guard = StreamGuard(
                self._matcher,
                self._guard_settings,
                stream_id=stream_id,
                on_event=on_guard_event,
                floor=profile.floor,
                allow=(lambda match: allow(stream_id, match)) if allow is not None else None,
            )
            stream = LiveStream(
                stream_id, guard, self.settings.stream, on_event=self._on_event, on_ended=self._stream_ended
            )
            self.streams[stream_id] = stream
            self._started_under[stream_id] = profile
            self.ended.pop(stream_id, None)
            self._lifecycle(STREAM_STARTED, stream, {"profile": self.profile(stream_id).name})
            if self.held is not None:
                stream.failsafe.hold(self.held)
        return stream

    # --------------------------------------------------- relay-wide holds

    def hold_streams(self, reason: str) -> None:
        """Every stream, and every stream started until ``release_streams``, shows the slate (audio muted).

        For when the relay cannot vouch for its guard (a cluster node whose
        lists are stale): the guards keep running, viewers see only the slate.
        Each stream reports it once, as a guard error giving ``reason``.
        """
        self.held = reason
        for stream in list(self.streams.values()):
            stream.failsafe.hold(reason)

    def release_streams(self) -> None:
        self.held = None
        for stream in list(self.streams.values()):
            stream.failsafe.release()

    def refuse_publishers(self, reason: str | None) -> None:
        """While ``reason`` is set, WHIP answers 503 with it to every new publisher; running streams carry on.

        A publisher reconnecting to a stream still here is let in: it is a running stream.  In a cluster,
        placement runs first, so a publisher is sent to a node that can take it when there is one.
        """
        self.refusing = reason

    def _stream_ended(self, stream: LiveStream) -> None:
        if self.streams.get(stream.id) is stream:
            del self.streams[stream.id]
            self.ended_totals.add(stream)
            summary = self.ended[stream.id] = self._summary(stream)
            while len(self.ended) > self.settings.ended_streams_listed:
                self.ended.popitem(last=False)
            self._lifecycle(STREAM_ENDED, stream, {"summary": summary})
            self._started_under.pop(stream.id, None)

    def _lifecycle(self, kind: str, stream: LiveStream, details: dict[str, Any], action: Action | None = None) -> None:
        """A stream event from the relay (``action``: what viewers get; default the guard's current action)."""
        self._on_event(StreamEvent(kind, stream.id, (stream.guard.action if action is None else action).label, details))

    def _summary(self, stream: LiveStream) -> dict[str, Any]:
        return stream.summary() | {"profile": self.profile(stream.id).name}

    def summaries(self) -> list[dict[str, Any]]:
        """Every stream here, live then recently ended, and (clustered) the other nodes' live ones."""
        live = [self._summary(s) for s in self.streams.values()]
        elsewhere = [s for s in self.cluster_streams if s["id"] not in self.streams]
        return live + elsewhere + [s for k, s in self.ended.items() if k not in self.streams]

    # ------------------------------------------------------------ sessions

    def new_session(self, kind: str, stream_id: str, token: str | None) -> Session:
        pc = RTCPeerConnection(self.settings.ice.rtc_configuration())
        session = Session(secrets.token_urlsafe(18), kind, stream_id, pc, token)
        self.sessions[session.id] = session
        return session

    async def discard(self, session: Session) -> None:
        """Drop a session whose negotiation failed (nothing attached to a stream yet)."""
        self.sessions.pop(session.id, None)
        await session.pc.close()

    async def close_session(self, session: Session) -> None:
        if self.sessions.pop(session.id, None) is None:
            return
        if session.deadline is not None and session.deadline is not asyncio.current_task():
            session.deadline.cancel()
        stream = self.streams.get(session.stream_id)
        if stream is not None:
            if session.kind == "whip":
                stream.publisher_left(session)
            else:
                await stream.remove_viewer(session.id)
        if session.kind == "whep" and self.edges is not None:
            await self.edges.remove_viewer(session.stream_id, session.id)
        await session.pc.close()

    def watch_connection(self, session: Session) -> None:
        """Drop the session when its peer connection fails, closes, or never connects."""

        @session.pc.on("connectionstatechange")
        async def _changed() -> None:
            if session.pc.connectionState in ("failed", "closed"):
                await self.close_session(session)

        async def _deadline() -> None:
            await asyncio.sleep(self.settings.connect_timeout_seconds)
            if session.pc.connectionState != "connected" and session.id in self.sessions:
                log.warning("%s session for %s never connected; closing it", session.kind.upper(), session.stream_id)
                await self.close_session(session)

        session.deadline = asyncio.ensure_future(_deadline())

    async def cut(self, stream: LiveStream, reason: str) -> None:
        """End ``stream``'s publisher session (viewers get the slate, then are hung up)."""
        self._lifecycle(STREAM_CUT, stream, {"reason": reason}, action=Action.SLATE)
        publisher = stream.publisher
        if publisher is not None:
            await self.close_session(publisher)

    def _on_event(self, event: Fact) -> None:
        _log_event(event)
        if self._sink is not None:
            self._sink(event)

    # ---------------------------------------------- StreamControl (moderation)

    def latest_frame(self, stream_id: str) -> av.VideoFrame | None:
        return self.streams[stream_id].latest_frame if self.is_live(stream_id) else None

    def is_live(self, stream_id: str) -> bool:
        stream = self.streams.get(stream_id)
        return stream is not None and stream.publisher is not None

    def is_redacting(self, stream_id: str) -> bool:
        stream = self.streams.get(stream_id)
        return stream is not None and stream.guard.redacting

    def resume(self, stream_id: str, by: str) -> None:
        self.streams[stream_id].guard.resume(by)

    def keep(self, stream_id: str) -> bool:
        return self.streams[stream_id].guard.keep()

    def impose(self, stream_id: str, action: Action, reason: str) -> None:
        self.streams[stream_id].guard.impose(max(action, self.profile(stream_id).floor), reason)

    async def terminate(self, stream_id: str, reason: str) -> str:
        """Hang up the publisher and refuse its stream key from now on."""
        stream = self.streams[stream_id]
        publisher = stream.publisher
        fingerprint = key_fingerprint(publisher.token if publisher is not None else None)
        self.revoked_keys.add((stream_id, fingerprint))
        await self.cut(stream, reason)
        return fingerprint

    async def shutdown(self) -> None:
        for session in list(self.sessions.values()):
            await self.close_session(session)
        for stream in list(self.streams.values()):
            await stream.end()
        await self.access.close()
        for hook in self._retired_hooks:
            await hook.close()


def _log_event(event: Fact) -> None:
    if isinstance(event, GuardEvent) and event.type == MATCH_STARTED:
        log.warning(
            "stream %s: %s at %.2fs: list %s (%s) %s distance %s -> %s",
            event.stream_id,
            event.type,
            event.media_time,
            event.list_name,
            event.category,
            event.signal,
            event.distance,
            event.action,
        )
    elif event.type == GUARD_ERROR:  # the check failed and the stream is slated: an operator must look
        log.warning("stream %s: %s %s", event.stream_id, event.type, json.dumps(event.details))
    else:
        log.info("stream %s: %s %s", event.stream_id, event.type, json.dumps(event.details))


RELAY: web.AppKey[Relay] = web.AppKey("relay")

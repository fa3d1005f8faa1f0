"""The edge: viewers on a node that is not their stream's origin, fed from the origin's media link.

A WHEP viewer of a stream guarded elsewhere becomes an *edge viewer* here:
:class:`EdgeStreams` keeps one link per stream (:mod:`livesafe.cluster.media`:
a signed WebSocket to the origin carrying the codecs the viewers here use),
opened with the first viewer and closed shortly after the last one leaves.
The origin's packets are already guarded and encoded; they are rebuilt as
``av.Packet`` (bytes, pts, time base, keyframe flag -- all aiortc's senders
``pack()`` reads) and offered to each viewer's bounded
:class:`~livesafe.relay.fanout.PacketTrack`, never decoded or re-encoded here.
A viewer's keyframe request (PLI/FIR, or its queue resyncing) goes up the
link to the origin's encoder, which rate-limits them.

Fail closed: when the origin is lost -- the link closes without the origin's
orderly "ended", breaks, or stays silent for ``silence_seconds`` (the origin
sends a heartbeat twice a second) -- the viewers get the slate, encoded here
with this node's own encoders, keyframes a few times a second continuing the
timestamps after the last forwarded packet, while the edge looks the origin up
again and tries to reconnect (the stream's lease may have moved).  If that
fails within ``ended_grace_seconds``, they are hung up.  Nothing this node did
not get from a guarding origin is ever sent.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import av
from aiohttp import WSCloseCode, WSMsgType, web
from yarl import URL

from livesafe.cluster.auth import ClusterAuth
from livesafe.cluster.media import HEADER, MAX_PACKET_BYTES, WireError, decode_packet
from livesafe.cluster.nodes import RegistryUnavailable
from livesafe.cluster.tasks import cancel_and_wait
from livesafe.guard.redact import slate_frame
from livesafe.relay.delivery import Viewer
from livesafe.relay.encoder import AUDIO_CLOCK, VIDEO_CLOCK, Encoders
from livesafe.relay.fanout import PacketTrack
from livesafe.relay.settings import RelaySettings

log = logging.getLogger(__name__)

CONNECT_SECONDS = 3.0  # to open a link (the upgrade included)
RETRY_SECONDS = 0.5  # between reconnection attempts while the slate holds the viewers
KEYFRAME_SPACING = 0.1  # at most one keyframe request per codec this often up the link (the origin limits too)


@dataclass(frozen=True)
class Origin:
    """Where a stream is guarded: the node's name (what requests to it are signed for), its URL, its lease."""

    node: str
    url: str  # base URL, e.g. http://10.0.0.5:8080
    fence: int | None  # the origin's lease token (None: not clustered)


OriginLookup = Callable[[str], Awaitable[Origin | None]]


class EdgeUnavailable(Exception):
    """The stream cannot be watched through this edge (``status``: what the WHEP client gets)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


@dataclass(slots=True)
class EdgeCounters:
    """Totals since start (gauges are on :class:`EdgeStreams`)."""

    links_opened: int = 0
    packets_forwarded: int = 0  # packets offered to viewers' queues
    packets_dropped: int = 0  # of those, dropped by a viewer's queue (slow viewer, waiting for a keyframe)
    reconnects: int = 0  # links restored after the origin was lost
    origins_lost: int = 0
    slate_frames: int = 0


class EdgeStreams:
    """This node's edge viewers, by stream, and the one link per stream that feeds them."""

    def __init__(
        self,
        settings: RelaySettings,
        auth: ClusterAuth,
        origin_of: OriginLookup,
        *,
        linger_seconds: float = 1.0,
        silence_seconds: float = 2.0,
    ) -> None:
        """``origin_of(stream)``: the stream's origin now (None: nobody guards it); ``linger_seconds``:
        how long a link stays open after its last viewer left (a viewer reloading keeps it)."""
        self.settings = settings
        self.auth = auth
        self.origin_of = origin_of
        self.linger_seconds = linger_seconds
        self.silence_seconds = silence_seconds
        self.links: dict[str, EdgeLink] = {}
        self.counters = EdgeCounters()
        self._http: aiohttp.ClientSession | None = None

    @property
    def streams(self) -> int:
        """Streams pulled from an origin now."""
        return len(self.links)

    @property
    def viewers(self) -> int:
        return sum(len(link.viewers) for link in self.links.values())

    def viewer_count(self, stream_id: str) -> int:
        link = self.links.get(stream_id)
        return len(link.viewers) if link is not None else 0

    @property
    def http(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession()
        return self._http

    async def locate(self, stream_id: str) -> Origin | None:
        """The origin a viewer of ``stream_id`` would be fed from (None: the stream is not live anywhere)."""
        link = self.links.get(stream_id)
        return link.origin if link is not None else await self.origin_of(stream_id)

    async def admit(self, stream_id: str) -> Callable[[Viewer], Awaitable[None]]:
        """How to attach a new viewer of ``stream_id`` (``relay.registry.RemoteStreams``); raises the HTTP
        answer when it cannot be watched through this edge (no origin, registry away, full)."""
        if self.viewer_count(stream_id) >= self.settings.max_viewers_per_stream:
            raise web.HTTPServiceUnavailable(text="this stream has as many viewers as it may have\n")
        try:
            origin = await self.locate(stream_id)
        except RegistryUnavailable:
            raise web.HTTPServiceUnavailable(text="the cluster registry is unavailable; try again\n") from None
        if origin is None:
            raise web.HTTPNotFound(text=f"no live stream named {stream_id!r}\n")

        async def attach(viewer: Viewer) -> None:
            try:
                await self.add_viewer(stream_id, origin, viewer)
            except EdgeUnavailable as exc:
                status = {404: web.HTTPNotFound, 503: web.HTTPServiceUnavailable}.get(exc.status, web.HTTPBadGateway)
                raise status(text=f"{exc}\n") from None

        return attach

    async def add_viewer(self, stream_id: str, origin: Origin, viewer: Viewer) -> None:
        """Feed ``viewer`` from the stream's link, opening it (to ``origin``) if there is none.

        Raises :class:`EdgeUnavailable` if the origin refuses or cannot be reached.
        """
        link = self.links.get(stream_id)
        if link is None:
            link = self.links[stream_id] = EdgeLink(self, stream_id, origin)
        try:
            await link.add(viewer)
        except EdgeUnavailable:
            if not link.viewers and self.links.get(stream_id) is link:
                del self.links[stream_id]
            raise

    async def remove_viewer(self, stream_id: str, viewer_id: str) -> None:
        link = self.links.get(stream_id)
        if link is not None:
            link.remove(viewer_id)

    def request_keyframe(self, stream_id: str, codec: str) -> None:
        link = self.links.get(stream_id)
        if link is not None:
            link.request_keyframe(codec)

    def forget(self, link: EdgeLink) -> None:
        if self.links.get(link.stream_id) is link:
            del self.links[link.stream_id]

    async def close(self) -> None:
        """Hang up every edge viewer and close the links (the node is shutting down)."""
        for link in list(self.links.values()):
            await link.close(hang_up=True)
        if self._http is not None:
            await self._http.close()
            self._http = None


class _Rebase:
    """Output timestamps of one kind on an edge: the origin's spacing, never a step back.

    Within one link packets keep the origin's pts plus a fixed offset; after a
    reconnection (maybe to another origin, with its own clock) the offset is
    chosen so output continues after whatever went out last, the slate
    included (:meth:`advance`).
    """

    def __init__(self, step: int) -> None:
        self._step = step
        self._offset = 0
        self._fresh = True
        self.last: int | None = None

    def restart(self) -> None:
        self._fresh = True

    def __call__(self, pts: int) -> int:
        if self._fresh:
            self._fresh = False
            if self.last is not None:
                self._offset = max(self._offset, self.last + self._step - pts)
        out = pts + self._offset
        self.last = out if self.last is None else max(self.last, out)
        return out

    def advance(self, seconds: float) -> int:
        self.last = (self.last or 0) + max(1, int(seconds / VIDEO_CLOCK))
        return self.last


class EdgeLink:
    """One stream's link to its origin and the edge viewers it feeds."""

    def __init__(self, edges: EdgeStreams, stream_id: str, origin: Origin) -> None:
        self.edges = edges
        self.stream_id = stream_id
        self.origin = origin
        self.viewers: dict[str, Viewer] = {}
        self._codecs: frozenset[str] = frozenset()  # what the link carries (asked of the origin)
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._lock = asyncio.Lock()
        self._supervisor: asyncio.Task[None] | None = None
        self._linger: asyncio.TimerHandle | None = None
        self._outbox: dict[str, object] = {}  # control messages not sent yet (coalesced)
        self._keyframe_sent: dict[str, float] = {}
        self._keyframe_deferred: set[str] = set()  # codecs with a request waiting out KEYFRAME_SPACING
        self._video = _Rebase(3000)
        self._audio = _Rebase(960)
        self._size: tuple[int, int] = (1280, 720)  # the origin's picture size, from its heartbeats
        self._encoders: Encoders | None = None  # the slate's, opened only if the origin is lost
        self._closed = False

    # --------------------------------------------------------------- viewers

    async def add(self, viewer: Viewer) -> None:
        async with self._lock:
            if self._closed:
                raise EdgeUnavailable(503, "the stream's link is closing; try again")
            codecs = self._codecs | ({viewer.codec} if viewer.codec else set())
            if self._supervisor is None:
                await self._connect(self.origin, codecs)
                self.edges.counters.links_opened += 1
                self._supervisor = asyncio.ensure_future(self._supervise())
            self.viewers[viewer.id] = viewer
            if self._linger is not None:
                self._linger.cancel()
                self._linger = None
            self._want(codecs)
            if viewer.codec is not None:
                self.request_keyframe(viewer.codec)

    def remove(self, viewer_id: str) -> None:
        viewer = self.viewers.pop(viewer_id, None)
        if viewer is None:
            return
        for track in (viewer.video, viewer.audio):
            if track is not None:
                track.stop()
        if self.viewers:
            self._want(frozenset(v.codec for v in self.viewers.values() if v.codec))
        elif self._linger is None and not self._closed:
            self._linger = asyncio.get_running_loop().call_later(self.edges.linger_seconds, self._idle)

    def _idle(self) -> None:
        self._linger = None
        if not self.viewers:
            asyncio.ensure_future(self.close(hang_up=False))

    def _want(self, codecs: frozenset[str]) -> None:
        """The link is to carry ``codecs`` (the origin adds or drops its viewers to match)."""
        if codecs and codecs != self._codecs:
            self._codecs = codecs
            self._send({"codecs": sorted(codecs)})

    def request_keyframe(self, codec: str) -> None:
        """Ask the origin's encoder for a keyframe; one asked for too soon after the last is deferred, not
        dropped (a viewer joining right after another must get its keyframe too)."""
        if codec not in self._codecs or codec in self._keyframe_deferred:
            return
        wait = self._keyframe_sent.get(codec, 0.0) + KEYFRAME_SPACING - time.monotonic()
        if wait > 0:
            self._keyframe_deferred.add(codec)
            asyncio.get_running_loop().call_later(wait, self._deferred_keyframe, codec)
            return
        self._keyframe_sent[codec] = time.monotonic()
        self._send({"keyframe": codec})

    def _deferred_keyframe(self, codec: str) -> None:
        self._keyframe_deferred.discard(codec)
        if not self._closed:
            self.request_keyframe(codec)

    def _send(self, message: dict[str, object]) -> None:
        """A control message up the link, in order, without blocking the caller (a PLI handler, say)."""
        ws = self._ws
        if ws is not None and not ws.closed:
            asyncio.ensure_future(self._send_now(ws, json.dumps(message)))

    @staticmethod
    async def _send_now(ws: aiohttp.ClientWebSocketResponse, text: str) -> None:
        try:
            await ws.send_str(text)
        except (ConnectionError, RuntimeError):
            pass  # the link is going; the reader notices and handles it

    # ------------------------------------------------------------------ link

    async def _connect(self, origin: Origin, codecs: frozenset[str]) -> None:
        query = {"codecs": ",".join(sorted(codecs))}
        if origin.fence is not None:
            query["fence"] = str(origin.fence)
        url = (URL(origin.url) / "cluster" / "media" / self.stream_id).with_query(query)
        headers = self.edges.auth.sign("GET", url.raw_path_qs, to_node=origin.node)
        try:
            async with asyncio.timeout(CONNECT_SECONDS):
                ws = await self.edges.http.ws_connect(
                    url, headers=headers, max_msg_size=HEADER.size + MAX_PACKET_BYTES, autoping=True
                )
        except aiohttp.WSServerHandshakeError as exc:
            status = 404 if exc.status == 404 else 502
            raise EdgeUnavailable(status, f"origin {origin.node} refused the media link: {exc.status}") from None
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise EdgeUnavailable(502, f"origin {origin.node} unreachable: {exc or type(exc).__name__}") from None
        self._ws, self.origin, self._codecs = ws, origin, codecs
        self._video.restart()
        self._audio.restart()
        log.info("edge: %s linked to origin %s (%s)", self.stream_id, origin.node, ",".join(sorted(codecs)))

    async def _supervise(self) -> None:
        """Forward until the stream ends; through an origin loss, the slate and reconnection attempts."""
        try:
            while True:
                assert self._ws is not None  # connected before supervision starts, and after each reconnect
                lost = await self._forward(self._ws)
                await self._ws.close()
                self._ws = None
                if lost is None or not self.viewers:
                    break
                self.edges.counters.origins_lost += 1
                log.warning("edge: stream %s: origin %s lost (%s); slate", self.stream_id, self.origin.node, lost)
                if not await self._slate_until_back():
                    break
                self.edges.counters.reconnects += 1
        finally:
            await self.close(hang_up=True)  # a no-op if close() is what stopped us

    async def _forward(self, ws: aiohttp.ClientWebSocketResponse) -> str | None:
        """Hand the link's packets to the viewers; None when the stream ended, else why the origin is lost."""
        while True:
            try:
                message = await ws.receive(timeout=self.edges.silence_seconds)
            except TimeoutError:
                return f"nothing for {self.edges.silence_seconds:g} s"
            if message.type is WSMsgType.BINARY:
                try:
                    self._deliver(message.data)
                except WireError as exc:
                    await ws.close(code=WSCloseCode.UNSUPPORTED_DATA, message=str(exc).encode()[:120])
                    return f"bad media message: {exc}"
            elif message.type is WSMsgType.TEXT:
                try:
                    if self._control(message.data):
                        return None
                except WireError as exc:
                    await ws.close(code=WSCloseCode.UNSUPPORTED_DATA, message=str(exc).encode()[:120])
                    return f"bad control message: {exc}"
            elif message.type is WSMsgType.ERROR:
                return f"link error: {message.data}"
            else:  # closed, without the origin saying the stream ended
                return f"link closed ({ws.close_code})"

    def _control(self, text: str) -> bool:
        """A text message from the origin; True if it says the stream ended."""
        try:
            message = json.loads(text)
        except ValueError:
            raise WireError("control message is not JSON") from None
        if not isinstance(message, dict):
            raise WireError("control message is not a JSON object")
        size = message.get("size")
        if size is not None:
            if not (
                isinstance(size, list) and len(size) == 2 and all(isinstance(n, int) and 0 < n <= 8192 for n in size)
            ):
                raise WireError(f"size {size!r}: expected [width, height]")
            self._size = (size[0], size[1])
        return message.get("ended") is True

    def _deliver(self, data: bytes) -> None:
        wire = decode_packet(data)
        packet = wire.packet
        assert packet.pts is not None  # decode_packet always sets it
        if wire.kind == "video":
            if wire.codec not in self._codecs:
                return  # just dropped by us; the origin stops on our message
            packet.pts = self._video(int(packet.pts * packet.time_base / VIDEO_CLOCK))
            packet.time_base = VIDEO_CLOCK
            tracks = [v.video for v in self.viewers.values() if v.codec == wire.codec and v.video is not None]
        else:
            packet.pts = self._audio(int(packet.pts * packet.time_base / AUDIO_CLOCK))
            packet.time_base = AUDIO_CLOCK
            tracks = [v.audio for v in self.viewers.values() if v.audio is not None]
        self._offer(tracks, packet)

    def _offer(self, tracks: list[PacketTrack], packet: av.Packet[Any]) -> None:
        counters = self.edges.counters
        for track in tracks:
            dropped = track.packets_dropped
            track.offer(packet)
            counters.packets_forwarded += 1
            counters.packets_dropped += track.packets_dropped - dropped

    # ----------------------------------------------------------------- loss

    async def _slate_until_back(self) -> bool:
        """The slate, while looking for the origin again; True if a link is back within the grace period."""
        stream = self.edges.settings.stream
        loop = asyncio.get_running_loop()
        deadline = loop.time() + stream.ended_grace_seconds
        next_try = loop.time() + RETRY_SECONDS
        while True:
            await self._send_slate(1 / stream.slate_fps)
            if loop.time() >= deadline or not self.viewers:
                return False
            if loop.time() >= next_try:
                next_try = loop.time() + RETRY_SECONDS
                if await self._reconnect():
                    return True
            await asyncio.sleep(max(0.0, min(1 / stream.slate_fps, deadline - loop.time())))

    async def _reconnect(self) -> bool:
        try:
            origin = await asyncio.wait_for(self.edges.origin_of(self.stream_id), RETRY_SECONDS)
            if origin is None:
                return False
            await self._connect(origin, self._codecs)
        except (EdgeUnavailable, TimeoutError) as exc:
            log.info("edge: stream %s: origin not back yet (%s)", self.stream_id, exc)
            return False
        log.info("edge: stream %s: link restored to %s", self.stream_id, self.origin.node)
        return True

    async def _send_slate(self, interval: float) -> None:
        """One slate keyframe per codec in use, after the last timestamp sent (encoded off the loop)."""
        codecs = frozenset(v.codec for v in self.viewers.values() if v.codec)
        if not codecs:
            return
        if self._encoders is None:
            self._encoders = Encoders(self.edges.settings.stream.video_bitrate)
        pts = self._video.advance(interval)
        encode = self._encoders.encode
        packets = await asyncio.to_thread(encode, slate_frame(*self._size), pts, codecs, codecs)
        self.edges.counters.slate_frames += 1
        for codec, encoded in packets.items():
            tracks = [v.video for v in self.viewers.values() if v.codec == codec and v.video is not None]
            for packet in encoded:
                self._offer(tracks, packet)

    async def close(self, *, hang_up: bool) -> None:
        """Close the link (``hang_up``: and every viewer still on it); the stream's next viewer opens a new one."""
        if self._closed:
            return
        self._closed = True
        self.edges.forget(self)
        if self._linger is not None:
            self._linger.cancel()
        supervisor = self._supervisor
        if supervisor is not None and supervisor is not asyncio.current_task():
            await cancel_and_wait([supervisor])  # it asks Redis for the origin: see cluster.tasks
        if self._ws is not None:
            await self._ws.close()
            self._ws = None
        viewers, self.viewers = list(self.viewers.values()), {}
        if hang_up:
            for viewer in viewers:
                for track in (viewer.video, viewer.audio):
                    if track is not None:
                        track.stop()
                await viewer.close()
        log.info("edge: %s link to %s closed", self.stream_id, self.origin.node)

"""The origin's side of the media link: a stream's guarded, encoded output, pushed to an edge node.

An edge node with viewers of a stream guarded elsewhere opens one WebSocket
per stream to the stream's origin (``GET /cluster/media/{stream}``, signed with
:class:`~livesafe.cluster.auth.ClusterAuth`, fenced with the origin's lease
token).  The origin registers one :class:`~livesafe.relay.delivery.Viewer`
per video codec the edge asks for, and one for audio, so the link gets exactly
what a local WHEP viewer gets -- packets that went through ``Delivery.fan_out``: guarded frames or the
slate, already encoded.  Raw media never leaves the origin, and the edge
forwards the packets as they are, without decoding them.

Why a WebSocket over TCP and not WHEP between nodes (OvenMediaEngine's OVT
makes the same choice): inside a datacenter, packet loss is rare and
reordering rarer, so what WebRTC buys on the open internet -- a jitter buffer,
NACK/FEC, congestion control, DTLS-SRTP -- costs a second jitter buffer's
latency, a DTLS handshake and ICE per link, and an RTP depacketizer on the
edge, for nothing.  TCP gives ordered, reliable delivery; the WebSocket gives
message framing, an HTTP upgrade the cluster's signing covers, and the text
channel keyframe requests go up.  The honest cost is head-of-line blocking: a
lost segment holds every later packet until it is retransmitted (a few
milliseconds on a LAN, far longer on a congested link).  That is bounded the
same way a slow viewer is: the link's packets wait in the origin's
per-viewer :class:`~livesafe.relay.fanout.PacketTrack` queues while a send
waits for the socket to drain, and when a queue is full or its oldest packet
too old, it is emptied and the link resumes at the next keyframe (which it
asks for) -- the edge's viewers freeze briefly, latency never grows.  Between
regions, where loss is real, WHEP to the origin would be the better link.

Wire format: each binary message is one encoded packet, a fixed
:data:`HEADER` (version, kind, codec, flags, pts, time base) then the payload.
Text messages are JSON: the origin sends ``{"heartbeat": true, "size": [w,
h]}`` every :data:`HEARTBEAT_SECONDS` (an edge that hears nothing for a while
knows the origin is gone, even if TCP does not) and ``{"ended": true}`` when
the stream ends; the edge sends ``{"keyframe": "vp8"}`` and ``{"codecs":
["vp8", "h264"]}`` (the codecs its viewers use now).
"""

from __future__ import annotations

import asyncio
import fractions
import functools
import json
import logging
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import av
from aiohttp import WSCloseCode, WSMsgType, web

from livesafe.cluster.auth import HEADER as AUTH_HEADER
from livesafe.cluster.auth import PEER, ClusterAuth, ClusterAuthError
from livesafe.http import stream_name
from livesafe.relay.delivery import Viewer
from livesafe.relay.encoder import CODECS
from livesafe.relay.fanout import PacketTrack
from livesafe.relay.registry import Relay
from livesafe.relay.stream import LiveStream

log = logging.getLogger(__name__)

WIRE_VERSION = 1
HEADER = struct.Struct("!BBBBqII")  # version, kind, codec, flags, pts, time base numerator, denominator
KINDS = ("video", "audio")
WIRE_CODECS = (*CODECS, "opus")  # a codec's number on the wire is its index here
KEYFRAME = 0x01
HEARTBEAT_SECONDS = 0.5
MAX_PACKET_BYTES = 4 * 1024 * 1024  # far above any 1080p keyframe at our bitrates; beyond it the peer is broken
MAX_CONTROL_BYTES = 1024  # what an edge may send the origin (small JSON only)
PATH = "/cluster/media/{stream}"


class WireError(ValueError):
    """A message on the media link that does not follow the format (message says how)."""


@dataclass(frozen=True, slots=True)
class WirePacket:
    kind: str  # "video" or "audio"
    codec: str  # one of WIRE_CODECS
    packet: av.Packet[Any]


def encode_packet(kind: str, codec: str, packet: av.Packet[Any]) -> bytes:
    """``packet`` as one binary message (its pts and time base must be set: the encoders stamp both)."""
    if packet.pts is None or packet.time_base is None:
        raise WireError("a packet without pts or time base cannot be forwarded")
    flags = KEYFRAME if packet.is_keyframe else 0
    tb = packet.time_base
    head = HEADER.pack(
        WIRE_VERSION, KINDS.index(kind), WIRE_CODECS.index(codec), flags, packet.pts, tb.numerator, tb.denominator
    )
    return head + bytes(packet)


def decode_packet(data: bytes) -> WirePacket:
    """One binary message back as an ``av.Packet`` with what aiortc's ``pack()`` reads: bytes, pts, time base."""
    if len(data) < HEADER.size:
        raise WireError(f"media message of {len(data)} bytes is shorter than its {HEADER.size}-byte header")
    version, kind, codec, flags, pts, num, den = HEADER.unpack_from(data)
    if version != WIRE_VERSION:
        raise WireError(f"media message version {version} (this node speaks {WIRE_VERSION})")
    if kind >= len(KINDS) or codec >= len(WIRE_CODECS):
        raise WireError(f"unknown media kind {kind} or codec {codec}")
    if (KINDS[kind] == "audio") != (WIRE_CODECS[codec] == "opus"):
        raise WireError(f"{WIRE_CODECS[codec]} is not a {KINDS[kind]} codec")
    if flags & ~KEYFRAME or num == 0 or den == 0:
        raise WireError("malformed media message header (flags or time base)")
    if len(data) == HEADER.size:
        raise WireError("media message without payload")
    packet = av.Packet(data[HEADER.size :])
    packet.pts = pts
    packet.time_base = fractions.Fraction(num, den)
    packet.is_keyframe = bool(flags & KEYFRAME)
    return WirePacket(KINDS[kind], WIRE_CODECS[codec], packet)


def parse_codecs(value: str) -> frozenset[str]:
    """``vp8,h264`` -> the set; raises WireError on an empty list or a codec this relay does not encode."""
    codecs = [c for c in value.split(",") if c]
    unknown = [c for c in codecs if c not in CODECS]
    if unknown or not codecs:
        raise WireError(f"codecs {value!r}: expected a comma-separated list of {', '.join(CODECS)}")
    return frozenset(codecs)


class MediaLinks:
    """The origin's media links, one per edge and stream, each a viewer per codec (and one for audio)."""

    def __init__(self, relay: Relay, auth: ClusterAuth, fence_of: Callable[[str], int | None]) -> None:
        """``fence_of(stream)``: this node's lease token for the stream (None: not clustered, nothing to check)."""
        self._relay = relay
        self._auth = auth
        self._fence_of = fence_of
        self.links: set[_Link] = set()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """``GET /cluster/media/{stream}?codecs=vp8[,h264]&fence=N``, upgraded to a WebSocket."""
        node = request.get(PEER)  # verified by the cluster's middleware already (its nonce is spent)
        if node is None:
            try:
                node = self._auth.verify("GET", request.path_qs, request.headers.get(AUTH_HEADER))
            except ClusterAuthError as exc:
                raise web.HTTPUnauthorized(text=f"{exc}\n") from None
        stream_id = stream_name(request)
        try:
            codecs = parse_codecs(request.query.get("codecs", ""))
        except WireError as exc:
            raise web.HTTPBadRequest(text=f"{exc}\n") from None
        fence = self._fence_of(stream_id)
        if fence is not None and request.query.get("fence") != str(fence):
            raise web.HTTPConflict(
                text=f"fence {request.query.get('fence')!r} is not this origin's lease of {stream_id!r}\n"
            )
        stream = self._relay.streams.get(stream_id)
        if stream is None or not self._relay.is_live(stream_id):
            raise web.HTTPNotFound(text=f"no live stream named {stream_id!r} on this node\n")
        if len(stream.viewers) + len(codecs) > self._relay.settings.max_viewers_per_stream:
            raise web.HTTPServiceUnavailable(text="this stream has as many viewers as it may have\n")
        ws = web.WebSocketResponse(max_msg_size=MAX_CONTROL_BYTES, autoping=True)
        await ws.prepare(request)
        link = _Link(self._relay, stream, ws, node)
        self.links.add(link)
        log.info("cluster: media link for %s to %s opened (%s)", stream_id, node, ",".join(sorted(codecs)))
        try:
            await link.run(codecs)
        finally:
            self.links.discard(link)
            log.info("cluster: media link for %s to %s closed", stream_id, node)
        return ws


class _Link:
    """One edge's link for one stream: its viewers on the stream, the task that writes their packets.

    One viewer per video codec the edge asks for, and one for audio (a viewer
    without video), so the edge may change its codecs without losing audio.
    """

    def __init__(self, relay: Relay, stream: LiveStream, ws: web.WebSocketResponse, node: str) -> None:
        self._relay = relay
        self._stream = stream
        self._ws = ws
        self._node = node
        self._viewers: dict[str, Viewer] = {}  # codec ("opus" for audio) -> our viewer on the stream
        self._ended = asyncio.Event()
        self._changed = asyncio.Event()  # the viewers changed: the writer reads the new tracks

    async def run(self, codecs: frozenset[str]) -> None:
        await self._set_codecs(codecs)
        self._add_viewer("opus", None, PacketTrack("audio", *self._bounds))
        writer = asyncio.ensure_future(self._write())
        try:
            await self._read()
        finally:
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)
            for codec in list(self._viewers):
                await self._stream.remove_viewer(self._viewers.pop(codec).id)
            await self._ws.close()

    # ---------------------------------------------------------------- viewers

    @property
    def _bounds(self) -> tuple[int, None, float]:
        limits = self._relay.settings.stream
        return limits.viewer_queue_packets, None, limits.viewer_queue_seconds

    async def _set_codecs(self, codecs: frozenset[str]) -> None:
        """Exactly one viewer per video codec in ``codecs``."""
        for codec in self._viewers.keys() - codecs - {"opus"}:
            await self._stream.remove_viewer(self._viewers.pop(codec).id)  # popped first: not an end
        capacity, _, max_age = self._bounds
        for codec in sorted(codecs - self._viewers.keys()):
            request = functools.partial(self._stream.request_keyframe, codec)
            self._add_viewer(codec, PacketTrack("video", capacity, request, max_age), None)

    def _add_viewer(self, codec: str, video: PacketTrack | None, audio: PacketTrack | None) -> None:
        viewer_id = f"cluster:{self._node}:{id(self):x}:{codec}"

        async def close() -> None:
            # The stream closes its viewers when it ends; the ones we remove ourselves are popped first.
            if codec in self._viewers:
                self._ended.set()

        viewer = Viewer(id=viewer_id, codec=None if audio else codec, video=video, audio=audio, close=close)
        self._viewers[codec] = viewer
        self._stream.add_viewer(viewer)
        self._changed.set()

    def _tracks(self) -> dict[PacketTrack, tuple[str, str]]:
        """The tracks of the current viewers -> (kind, wire codec)."""
        tracks = {}
        for codec, viewer in self._viewers.items():
            if viewer.video is not None:
                tracks[viewer.video] = ("video", codec)
            if viewer.audio is not None:
                tracks[viewer.audio] = ("audio", codec)
        return tracks

    # ----------------------------------------------------------- from the edge

    async def _read(self) -> None:
        async for message in self._ws:
            if message.type is WSMsgType.TEXT:
                problem = await self._control(message.data)
            elif message.type is WSMsgType.BINARY:
                problem = "the edge sends JSON text messages only"
            else:
                return  # an error (oversized: aiohttp closes with 1009 and says so) or a close
            if problem is not None:
                log.warning("cluster: media link for %s from %s: %s; closing it", self._stream.id, self._node, problem)
                await self._ws.close(code=WSCloseCode.UNSUPPORTED_DATA, message=problem.encode()[:120])
                return

    async def _control(self, text: str) -> str | None:
        """Act on one control message; what is wrong with it, if anything."""
        try:
            message = json.loads(text)
        except ValueError:
            return "control message is not JSON"
        if not isinstance(message, dict) or not message.keys() & {"keyframe", "codecs"}:
            return "control message is not a JSON object with keyframe or codecs"
        if "codecs" in message:
            codecs = message["codecs"]
            if not isinstance(codecs, list) or not all(isinstance(c, str) for c in codecs):
                return "codecs: expected a list of codec names"
            try:
                wanted = parse_codecs(",".join(codecs))
            except WireError as exc:
                return str(exc)
            added = len(wanted - self._viewers.keys())
            if len(self._stream.viewers) + added > self._relay.settings.max_viewers_per_stream:
                return "this stream has as many viewers as it may have"
            await self._set_codecs(wanted)
        if "keyframe" in message:
            codec = message["keyframe"]
            if codec not in CODECS or codec not in self._viewers:
                return f"keyframe request for {codec!r}, which this link does not carry"
            self._stream.request_keyframe(codec)
        return None

    # ------------------------------------------------------------- to the edge

    async def _write(self) -> None:
        """The one writer of this socket: packets as the viewers' tracks release them, heartbeats, the end."""
        reads: dict[asyncio.Task[av.Packet[Any]], PacketTrack] = {}
        ended = asyncio.ensure_future(self._ended.wait())
        loop = asyncio.get_running_loop()
        next_heartbeat = loop.time()
        try:
            while not self._ended.is_set():
                tracks = self._tracks()
                if self._changed.is_set():
                    self._changed.clear()
                    reading = set(reads.values())
                    for track in tracks.keys() - reading:
                        reads[asyncio.ensure_future(track.recv())] = track
                if loop.time() >= next_heartbeat:
                    next_heartbeat = loop.time() + HEARTBEAT_SECONDS
                    await self._heartbeat()
                timeout = max(0.0, next_heartbeat - loop.time())
                done, _ = await asyncio.wait([*reads, ended], timeout=timeout, return_when="FIRST_COMPLETED")
                for task in [t for t in reads if t in done]:
                    track = reads.pop(task)
                    if task.exception() is not None or track not in tracks:
                        continue  # a viewer removed (MediaStreamError): the stream's end comes through close()
                    kind, codec = tracks[track]
                    await self._ws.send_bytes(encode_packet(kind, codec, task.result()))
                    reads[asyncio.ensure_future(track.recv())] = track
            await self._ws.send_str(json.dumps({"ended": True}))
            await self._ws.close(code=WSCloseCode.OK, message=b"stream ended")
        finally:
            ended.cancel()
            for read in reads:
                read.cancel()

    async def _heartbeat(self) -> None:
        size = self._stream.size
        await self._ws.send_str(json.dumps({"heartbeat": True, "size": list(size) if size else None}))


def add_media_routes(
    app: web.Application, relay: Relay, auth: ClusterAuth, fence_of: Callable[[str], int | None]
) -> MediaLinks:
    """Mount ``GET /cluster/media/{stream}`` (edges pull guarded streams from here); returns the links."""
    links = MediaLinks(relay, auth, fence_of)
    app.router.add_get(PATH, links.handle)
    return links

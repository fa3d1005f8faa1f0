"""The edge: viewers on node B of a stream guarded on node A, fed over A's signed media link.

Two whole relays in this process on loopback (no Redis: B's ``origin_of`` is
fixed).  What must hold: B's viewers get A's guarded packets byte for byte --
the blocked segment redacted frame by frame as on A, B never decoding or
encoding the stream -- keyframe requests go up to A's encoder, the link refuses
what is not signed, fresh and fenced, viewers share one link, and losing the
origin gives B's viewers the slate, then a hang-up, never anything unchecked."""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import hashlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import av
import pytest
from harness import (
    FAST_END,
    ICE,
    SAMPLES,
    RunningRelay,
    classify,
    looks_like_slate,
    publishing,
    read_recording,
    running_relay,
    sample_lists,
    serving,
    source_luma,
)

from livesafe.clients import watch
from livesafe.cluster.auth import ClusterAuth
from livesafe.cluster.edge import EdgeLink, EdgeStreams, Origin
from livesafe.cluster.media import MediaLinks, WireError, add_media_routes, decode_packet, encode_packet
from livesafe.guard.stream_guard import GuardSettings
from livesafe.moderation.settings import ModerationSettings
from livesafe.proxy import build_proxy
from livesafe.relay.settings import RelaySettings

SECRET = "a-cluster-secret-for-tests"
FENCE = 7
HOLD_FRAMES = 15


# ------------------------------------------------------------------ two nodes


class Cable:
    """A TCP forwarder standing for the network between B and A: ``cut`` aborts it, ``freeze`` stalls it."""

    def __init__(self, port: int) -> None:
        self._port = port
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._pipes: set[asyncio.Task[Any]] = set()
        self._frozen = asyncio.Event()

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._pipe, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._pipes.add(asyncio.current_task())  # type: ignore[arg-type]
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._port)
        self._writers += [writer, up_writer]

        async def copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError):
                while data := await src.read(65536):
                    if self._frozen.is_set():
                        await asyncio.Event().wait()  # silence, the connection still up (until cancelled)
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(copy(reader, up_writer), copy(up_reader, writer), return_exceptions=True)

    def cut(self) -> None:
        """The origin gone at once: no close frame, connections reset, nothing listening."""
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.transport.abort()

    async def close(self) -> None:
        for task in self._pipes:
            task.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)
        for writer in self._writers:
            writer.transport.abort()

    def freeze(self) -> None:
        """The origin silent: the connection stays up, nothing passes, nothing new connects."""
        assert self._server is not None
        self._server.close()
        self._frozen.set()


@contextlib.asynccontextmanager
async def origin_node(fence: int | None = FENCE) -> AsyncIterator[tuple[RunningRelay, MediaLinks]]:
    """Node A: the whole proxy with the media route mounted (as ``running_relay``, which cannot add a route)."""
    settings = RelaySettings(ice=ICE, stream=FAST_END)
    proxy = build_proxy(
        settings, sample_lists(), GuardSettings(hold_seconds=0.5), ModerationSettings(database=":memory:")
    )
    links = add_media_routes(proxy.app, proxy.relay, ClusterAuth(SECRET, "node-a"), lambda stream: fence)
    async with serving(proxy.app) as base:
        yield RunningRelay(proxy.relay, base, proxy.moderation), links


@contextlib.asynccontextmanager
async def edge_node(origin_url: str, fence: int | None = FENCE) -> AsyncIterator[tuple[RunningRelay, EdgeStreams]]:
    """Node B: a relay whose WHEP serves streams guarded on A (at ``origin_url``)."""

    async def origin_of(stream: str) -> Origin | None:
        return Origin("node-a", origin_url, fence)

    async with running_relay() as b:
        edges = b.relay.edges = EdgeStreams(b.relay.settings, ClusterAuth(SECRET, "node-b"), origin_of)
        try:
            yield b, edges
        finally:
            await edges.close()


def _digest(packet: av.Packet[Any]) -> str:
    return hashlib.sha256(bytes(packet)).hexdigest()


# ------------------------------------------------------------------ the wire format


def test_wire_format_round_trip_and_refusals() -> None:
    video = av.Packet(b"\x9d\x01\x2a" + bytes(range(200)))
    video.pts, video.time_base, video.is_keyframe = 123_456_789_012, fractions.Fraction(1, 90000), True
    back = decode_packet(encode_packet("video", "h264", video))
    assert (back.kind, back.codec) == ("video", "h264")
    assert bytes(back.packet) == bytes(video) and back.packet.pts == video.pts
    assert back.packet.time_base == video.time_base and back.packet.is_keyframe
    audio = av.Packet(b"opus!")
    audio.pts, audio.time_base = 960, fractions.Fraction(1, 48000)
    back = decode_packet(encode_packet("audio", "opus", audio))
    assert (back.kind, back.codec, bytes(back.packet), back.packet.is_keyframe) == ("audio", "opus", b"opus!", False)

    message = encode_packet("video", "vp8", video)
    for bad, why in [
        (message[:10], "shorter than"),
        (message[:20], "without payload"),
        (b"\x02" + message[1:], "version"),
        (message[:2] + b"\x09" + message[3:], "unknown media kind"),  # codec 9
        (message[:1] + b"\x01" + message[2:], "not a audio codec"),  # audio kind, vp8 codec
        (message[:3] + b"\x06" + message[4:], "flags"),
        (message[:16] + b"\x00\x00\x00\x00" + message[20:], "time base"),
    ]:
        with pytest.raises(WireError, match=why):
            decode_packet(bad)
    with pytest.raises(WireError):
        encode_packet("video", "vp8", av.Packet(b"no pts"))


# ------------------------------------------------------------------ guarded, frame by frame


async def test_edge_viewer_gets_the_origins_redaction_frame_by_frame_without_decoding(
    tmp_path: Path, blocked_cut_360p: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    segment = json.loads((SAMPLES / "blocked_cut.truth.json").read_text())["segments"][0]
    edge_packets: list[str] = []
    offer = EdgeLink._offer

    def recording_offer(self: EdgeLink, tracks: list[Any], packet: av.Packet[Any]) -> None:
        if packet.time_base == fractions.Fraction(1, 90000) and tracks:
            edge_packets.append(_digest(packet))
        offer(self, tracks, packet)

    monkeypatch.setattr(EdgeLink, "_offer", recording_offer)
    async with origin_node() as (a, links), edge_node(a.base) as (b, edges):
        async with publishing(a, blocked_cut_360p, "s1"):
            stream = a.relay.streams["s1"]
            origin_packets: set[str] = set()
            fan_out = stream.delivery.fan_out

            def recording_fan_out(frame: Any) -> None:
                origin_packets.update(_digest(p) for packets in frame.packets.values() for p in packets)
                fan_out(frame)

            stream.delivery.fan_out = recording_fan_out  # type: ignore[method-assign]
            senders_checked = asyncio.ensure_future(_edge_senders_never_encode(b, edges))
            results = await asyncio.gather(
                watch(b.url("whep", "s1"), record=tmp_path / "edge.mkv", ice=ICE, duration=20),
                watch(a.url("whep", "s1"), record=tmp_path / "origin.mkv", ice=ICE, duration=20),
            )
            assert await senders_checked >= 1
        assert "s1" not in b.relay.streams and "s1" not in b.relay.ended, "B never had a stream pipeline for s1"
        assert len(links.links) == 0 and edges.streams == 0
    assert all(r.ended_by_server for r in results), "the stream's end hangs up the edge viewer as the origin's"
    # B forwarded A's encoded bytes: no packet of its own (a decode and re-encode would change every one).
    assert len(edge_packets) > 60 and set(edge_packets) <= origin_packets
    source = source_luma(blocked_cut_360p)
    seen = {name: classify(read_recording(tmp_path / f"{name}.mkv"), source) for name in ("edge", "origin")}
    for name, got in seen.items():
        inside = {k: v for k, v in got.items() if segment["start"] <= k <= segment["end"]}
        assert len(inside) >= 0.8 * (segment["end"] - segment["start"] + 1), f"{name} got {len(inside)} frames"
        leaked = sorted(k for k, v in inside.items() if v != "slate")
        assert not leaked, f"{name} viewer saw frames {leaked} of the blocked segment"
        after = segment["end"] + HOLD_FRAMES + 10
        outside = {k: v for k, v in got.items() if k < segment["start"] or k > after}
        assert len(outside) > 30 and all(v == "source" for v in outside.values()), f"{name}: {outside}"
    both = seen["edge"].keys() & seen["origin"].keys()
    assert len(both) > 90
    differ = sorted(k for k in both if seen["edge"][k] != seen["origin"][k])
    assert not differ, f"the edge viewer saw frames {differ} otherwise than the origin's"


async def _edge_senders_never_encode(b: RunningRelay, edges: EdgeStreams) -> int:
    """Once packets flow, B's video senders hold no encoder context: aiortc only packetized what came."""
    deadline = time.monotonic() + 15
    while edges.counters.packets_forwarded < 100:
        assert time.monotonic() < deadline, "no packets forwarded on the edge"
        await asyncio.sleep(0.05)
    checked = 0
    for session in list(b.relay.sessions.values()):
        for sender in session.pc.getSenders():
            if sender.track is not None and sender.track.kind == "video":
                encoder = sender._RTCRtpSender__encoder  # private: read-only, in a test
                assert encoder is not None and encoder.codec is None, "an encoder context opened on the edge"
                checked += 1
    return checked


# ------------------------------------------------------------------ keyframes, sharing


async def test_keyframe_request_from_an_edge_viewer_reaches_the_origins_encoder(blocked_cut_360p: Path) -> None:
    async with origin_node() as (a, _), edge_node(a.base) as (b, edges):
        async with publishing(a, blocked_cut_360p, "s1", loop=True):
            viewer = asyncio.ensure_future(watch(b.url("whep", "s1"), ice=ICE, duration=6))
            await b.wait_for(lambda relay: edges.counters.packets_forwarded > 30)
            stream = a.relay.streams["s1"]
            asked: list[str] = []
            request = stream.request_keyframe
            stream.request_keyframe = lambda codec: (asked.append(codec), request(codec))[1]  # type: ignore[method-assign]
            await asyncio.sleep(0.8)  # past the origin's keyframe rate limit for the viewer's join
            encoder = stream.worker.encoders._by_codec["vp8"]
            before, asked[:] = encoder.keyframes, []
            session = next(iter(b.relay.sessions.values()))
            sender = next(s for s in session.pc.getSenders() if s.track is not None and s.track.kind == "video")
            sender._send_keyframe()  # what aiortc calls when the viewer's PLI arrives
            await a.wait_for(lambda relay: encoder.keyframes > before, timeout=3)
            assert asked == ["vp8"], "the request came up the link"
            viewer.cancel()
            await asyncio.gather(viewer, return_exceptions=True)


async def test_two_edge_viewers_share_one_link_which_closes_after_them(blocked_cut_360p: Path) -> None:
    async with origin_node() as (a, links), edge_node(a.base) as (b, edges):
        async with publishing(a, blocked_cut_360p, "s1", loop=True):
            results = asyncio.gather(*(watch(b.url("whep", "s1"), ice=ICE, duration=4) for _ in range(2)))
            await b.wait_for(lambda relay: edges.viewers == 2, timeout=10)
            assert edges.streams == 1 and len(links.links) == 1
            viewers = a.relay.streams["s1"].viewers
            assert sorted(v.codec or "audio" for v in viewers.values()) == ["audio", "vp8"], "one link, one encode"
            watched = await results
            assert all(r.frames > 30 and not r.ended_by_server for r in watched)
            await a.wait_for(lambda relay: not relay.streams["s1"].viewers and not links.links, timeout=5)
            assert edges.streams == 0 and edges.counters.links_opened == 1


# ------------------------------------------------------------------ the link refuses


async def test_media_link_refuses_unsigned_forged_replayed_and_unfenced_requests(blocked_cut_360p: Path) -> None:
    async with origin_node() as (a, links), aiohttp.ClientSession() as http:
        edge = ClusterAuth(SECRET, "node-b")
        forger = ClusterAuth("not-the-cluster-secret", "node-b")

        async def status(path: str, headers: dict[str, str]) -> int:
            try:
                async with http.ws_connect(a.base + path, headers=headers) as ws:
                    await ws.close()
                    return 101
            except aiohttp.WSServerHandshakeError as exc:
                return exc.status

        good = f"/cluster/media/s1?codecs=vp8&fence={FENCE}"
        assert await status(good, {}) == 401
        assert await status(good, forger.sign("GET", good, to_node="node-a")) == 401
        assert await status(good, edge.sign("GET", good, to_node="node-c")) == 401
        assert await status(good, edge.sign("GET", good, to_node="node-a")) == 404  # signed, but not live
        async with publishing(a, blocked_cut_360p, "s1", loop=True):
            headers = edge.sign("GET", good, to_node="node-a")
            assert await status(good, headers) == 101
            assert await status(good, headers) == 401, "a replayed upgrade"
            stale = f"/cluster/media/s1?codecs=vp8&fence={FENCE - 1}"
            assert await status(stale, edge.sign("GET", stale, to_node="node-a")) == 409
            odd = f"/cluster/media/s1?codecs=vp9&fence={FENCE}"
            assert await status(odd, edge.sign("GET", odd, to_node="node-a")) == 400
            await a.wait_for(lambda relay: not links.links)
            async with http.ws_connect(a.base + good, headers=edge.sign("GET", good, to_node="node-a")) as ws:
                first = await _next_packet(ws)
                assert first.codec == "vp8" and first.packet.is_keyframe, "the link starts at a keyframe"
                await ws.send_str(json.dumps({"codecs": ["vp8", "h264"]}))
                h264 = await _next_packet(ws, codec="h264")
                assert h264.packet.is_keyframe
                await ws.send_str(json.dumps({"keyframe": "vp9"}))
                message = await ws.receive(timeout=5)
                while message.type in (aiohttp.WSMsgType.BINARY, aiohttp.WSMsgType.TEXT):
                    message = await ws.receive(timeout=5)
                assert message.type is aiohttp.WSMsgType.CLOSE and message.data == 1003
                assert "vp9" in message.extra
            await a.wait_for(lambda relay: not relay.streams["s1"].viewers)


async def _next_packet(ws: aiohttp.ClientWebSocketResponse, codec: str | None = None) -> Any:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        message = await ws.receive(timeout=5)
        if message.type is aiohttp.WSMsgType.BINARY:
            wire = decode_packet(message.data)
            if wire.kind == "video" and (codec is None or wire.codec == codec):
                return wire
        else:
            assert message.type is aiohttp.WSMsgType.TEXT, message
    raise AssertionError(f"no {codec or 'video'} packet on the link")


# ------------------------------------------------------------------ the origin lost


@pytest.mark.parametrize("failure", ["cut", "freeze"])
async def test_origin_lost_gives_edge_viewers_the_slate_then_a_hang_up(blocked_cut_360p: Path, failure: str) -> None:
    async with origin_node() as (a, _):
        cable = Cable(int(a.base.rsplit(":", 1)[1]))
        async with edge_node(await cable.start()) as (b, edges), contextlib.AsyncExitStack() as cleanup:
            cleanup.push_async_callback(cable.close)
            async with publishing(a, blocked_cut_360p, "s1", loop=True):
                frames: list[tuple[float, bool]] = []

                def on_frame(frame: av.VideoFrame, t: float) -> None:
                    y = frame.to_ndarray(format="yuv420p")[: frame.height]
                    frames.append((time.monotonic(), looks_like_slate(y)))

                viewer = asyncio.ensure_future(watch(b.url("whep", "s1"), ice=ICE, duration=20, on_frame=on_frame))
                await b.wait_for(lambda relay: len(frames) >= 30, timeout=15)
                assert not any(slate for _, slate in frames), "the first 2 s are not blocked"
                lost_at = time.monotonic()
                getattr(cable, failure)()
                result = await asyncio.wait_for(viewer, 10)
    assert result.ended_by_server, "the edge hangs its viewers up"
    waited = time.monotonic() - lost_at
    assert waited < edges.silence_seconds + FAST_END.ended_grace_seconds + 3
    assert edges.counters.origins_lost == 1 and edges.counters.slate_frames >= 2
    after = [slate for at, slate in frames if at > lost_at + 0.3]  # what was in flight at the cut may land first
    assert after and after[-1], "the last frames the viewer saw were the slate"
    first_slate = next(i for i, slate in enumerate(after) if slate)
    assert all(after[first_slate:]), "nothing but the slate once the origin was lost"


async def test_edge_reconnects_within_the_grace_period_slate_in_between(blocked_cut_360p: Path) -> None:
    """The link breaks but the origin is still there (another route to it): slate, then guarded frames again."""
    async with origin_node() as (a, links):
        cable = Cable(int(a.base.rsplit(":", 1)[1]))
        async with edge_node(await cable.start()) as (b, edges), contextlib.AsyncExitStack() as cleanup:
            cleanup.push_async_callback(cable.close)
            async with publishing(a, blocked_cut_360p, "s1", loop=True):
                frames: list[tuple[float, bool]] = []

                def on_frame(frame: av.VideoFrame, t: float) -> None:
                    frames.append(
                        (time.monotonic(), looks_like_slate(frame.to_ndarray(format="yuv420p")[: frame.height]))
                    )

                viewer = asyncio.ensure_future(watch(b.url("whep", "s1"), ice=ICE, duration=5, on_frame=on_frame))
                await b.wait_for(lambda relay: len(frames) >= 20, timeout=15)

                async def direct(stream: str) -> Origin | None:
                    return Origin("node-a", a.base, FENCE)

                edges.origin_of = direct
                cable.cut()
                result = await asyncio.wait_for(viewer, 15)
                assert edges.streams == 1 and len(links.links) == 1, "the link is back"
    assert not result.ended_by_server and edges.counters.reconnects == 1
    kinds = [slate for _, slate in frames]
    first_slate = kinds.index(True)
    assert kinds[first_slate:].count(False) > 10, "guarded frames resumed after the slate"

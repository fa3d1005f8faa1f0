"""Child processes and media for ``bench_relay.py`` (not meant to be run by hand).

Roles, each a separate process started by the benchmark (``python relay_bench_support.py ROLE``):

- ``relay``: the relay under test, ``guarded`` (livesafe's ``Relay``) or ``plain`` (aiortc's
  ``MediaRelay``, one encoder per viewer), on 127.0.0.1; ``GET /bench/stats`` reports its
  internal counters.
- ``publish``: WHIP publishers sending a pre-encoded H.264 clip (Constrained Baseline, no
  B-frames, Annex B) at real-time pace; every frame carries its number in a barcode strip.
- ``view``: WHEP viewers (see :class:`Probe`).  ``full`` viewers are ordinary aiortc
  receivers that decode every frame and read its barcode; ``count`` viewers only note RTP
  packets as they arrive and decode keyframes alone (to read a barcode and anchor the RTP
  clock to frame numbers), numbering the frames in between by RTP timestamp, so that
  fifty of them cost the client process little.
- ``node`` (bench_cluster.py): a cluster node, ``livesafe serve`` itself (``livesafe.cli.main``)
  with ``/bench/stats`` added to its app and a watch on when each hash enters its matcher.

Protocol: the parent writes one JSON line (the config) on stdin, later ``stop``; the child
prints ``READY {json}`` when set up and writes its results to ``config["result"]``.  Every
child gives up by itself after ``config["max_seconds"]``.  Times are ``time.monotonic()``,
one clock for every process on the machine.
"""

from __future__ import annotations

import asyncio
import fractions
import json
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import av
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "sample_streams"
FPS = 30
TICKS = 3000  # 90 kHz ticks per frame at 30 fps
CLOCK = fractions.Fraction(1, 90000)
WIDTH, HEIGHT = 1280, 720
CLIP_FRAMES = 1200  # 40 s: a frame number read back is unambiguous for latencies below that
CLIP_GOP = 60  # the publisher cannot honour keyframe requests (pre-encoded): an IDR every 2 s
CLIP_BITRATE = 2_000_000
CLIP_VERSION = 2
CLIP_VBV_KBIT = 1000  # VBV buffer: no frame much above 125 KB (~100 RTP packets), as WebRTC encoders cap keyframes

# ------------------------------------------------------------------ barcode
#
# The bottom 16 rows of the picture: 16 bits, each a white/black pair of 40-pixel blocks
# (Manchester: 1 = white then black, 0 = black then white), so each bit is read as the sign
# of a difference, whatever the coding did to brightness.  12 bits are the clip frame index
# in Gray code, 4 bits the Gray code of its popcount: from one frame to the next at most two
# bits change, so the strip never looks like a picture cut to the guard (< 28 mean change
# in any 1/16th of the picture), and a misread needs two consistent errors.

BAR_BITS = 16
BAR_ROWS = 16


def _gray(n: int) -> int:
    return n ^ (n >> 1)


def _ungray(g: int) -> int:
    n = 0
    while g:
        n ^= g
        g >>= 1
    return n


def bar_word(index: int) -> int:
    g = _gray(index) & 0xFFF
    return g | ((_gray(g.bit_count()) & 0xF) << 12)


def draw_bar(yuv: np.ndarray, index: int, width: int, height: int) -> None:
    """Draw ``index`` into a yuv420p ndarray (``height * 3 // 2`` rows) in place."""
    half = width // (2 * BAR_BITS)
    y0 = height - BAR_ROWS
    word = bar_word(index)
    for bit in range(BAR_BITS):
        x = bit * 2 * half
        on = (word >> bit) & 1
        yuv[y0:height, x : x + half] = 235 if on else 16
        yuv[y0:height, x + half : x + 2 * half] = 16 if on else 235
    # neutral chroma under the strip (U and V planes follow Y, each half size)
    c0 = height + y0 // 4
    yuv[c0 : height + height // 4] = 128
    yuv[height + height // 4 + y0 // 4 :] = 128


def read_bar(frame: av.VideoFrame) -> int:
    """The clip index in ``frame``'s barcode, or -1 if it cannot be read with confidence."""
    plane = frame.planes[0]
    width, height = frame.width, frame.height
    y = np.frombuffer(plane, dtype=np.uint8).reshape(plane.height, plane.line_size)
    half = width // (2 * BAR_BITS)
    strip = y[height - BAR_ROWS + 3 : height - 3, : 2 * half * BAR_BITS].astype(np.float32)
    cells = strip.reshape(strip.shape[0], BAR_BITS, 2, half)[:, :, :, 8 : half - 8].mean(axis=(0, 3))
    diff = cells[:, 0] - cells[:, 1]
    if float(np.abs(diff).min()) < 60:
        return -1
    word = int(sum(1 << b for b in range(BAR_BITS) if diff[b] > 0))
    g = word & 0xFFF
    if (_gray(g.bit_count()) & 0xF) != word >> 12:
        return -1
    return _ungray(g)


# --------------------------------------------------------------------- clip


def clip_path(cache: Path) -> Path:
    return cache / f"clip-v{CLIP_VERSION}-{WIDTH}x{HEIGHT}-{CLIP_FRAMES}f-{CLIP_BITRATE // 1000}k-g{CLIP_GOP}.npz"


def build_clip(cache: Path, log=print) -> Path:
    """Encode the publishers' clip once (cached): benign_mix.mp4 looped, frame numbers drawn in."""
    path = clip_path(cache)
    if path.exists():
        return path
    cache.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    ctx = av.CodecContext.create("libx264", "w")
    ctx.width, ctx.height, ctx.pix_fmt = WIDTH, HEIGHT, "yuv420p"
    ctx.time_base, ctx.framerate = CLOCK, fractions.Fraction(FPS, 1)
    ctx.bit_rate = CLIP_BITRATE
    ctx.profile = "Baseline"  # Constrained Baseline in practice: no B-frames, CAVLC
    ctx.options = {
        "preset": "veryfast",
        "tune": "zerolatency",
        "bf": "0",
        "x264-params": (
            f"keyint={CLIP_GOP}:min-keyint={CLIP_GOP}:scenecut=0"
            f":vbv-maxrate={CLIP_BITRATE // 1000}:vbv-bufsize={CLIP_VBV_KBIT}:nal-hrd=none"
        ),
    }
    ctx.thread_count = 2
    packets: list[bytes] = []
    keys: list[bool] = []
    n = 0
    while n < CLIP_FRAMES:
        with av.open(str(SAMPLES / "benign_mix.mp4")) as source:
            for frame in source.decode(video=0):
                if n >= CLIP_FRAMES:
                    break
                if (frame.width, frame.height) != (WIDTH, HEIGHT):
                    frame = frame.reformat(width=WIDTH, height=HEIGHT)
                yuv = frame.to_ndarray(format="yuv420p").copy()
                draw_bar(yuv, n, WIDTH, HEIGHT)
                out = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
                out.pts, out.time_base = n * TICKS, CLOCK
                for packet in ctx.encode(out):
                    packets.append(bytes(packet))
                    keys.append(bool(packet.is_keyframe))
                n += 1
    for packet in ctx.encode(None):
        packets.append(bytes(packet))
        keys.append(bool(packet.is_keyframe))
    if len(packets) != CLIP_FRAMES:
        raise RuntimeError(f"expected one packet per frame, got {len(packets)} for {CLIP_FRAMES}")
    # Check: every frame decodes to its own number.
    dec = av.CodecContext.create("h264", "r")
    bad = 0
    for i, data in enumerate(packets):
        for frame in dec.decode(av.Packet(data)):
            bad += read_bar(frame) != i
    if bad:
        raise RuntimeError(f"{bad} frames of the clip do not read back their own number")
    sizes = np.array([len(p) for p in packets])
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, data=np.frombuffer(b"".join(packets), np.uint8), offsets=offsets, keys=np.array(keys))
    tmp.rename(path)
    log(
        f"clip: {CLIP_FRAMES} frames {WIDTH}x{HEIGHT} H.264 baseline, "
        f"{sizes.sum() * 8 / (CLIP_FRAMES / FPS) / 1e6:.2f} Mbit/s, "
        f"IDR every {CLIP_GOP}, largest frame {sizes.max() / 1024:.0f} KiB, "
        f"encoded in {time.perf_counter() - started:.0f} s -> {path}"
    )
    return path


def load_clip(path: Path) -> list[bytes]:
    with np.load(path) as z:
        data, offsets = z["data"].tobytes(), z["offsets"]
    return [data[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]


# --------------------------------------------------------------- plumbing


def _setup_ice() -> Any:
    """No STUN server, host candidates on 127.0.0.1 only (process-wide aioice patch)."""
    from livesafe.relay.ice import IceSettings, apply_ice_settings

    ice = IceSettings(host_addresses=("127.0.0.1",))
    apply_ice_settings(ice)
    return ice


def _ready(payload: dict | None = None) -> None:
    sys.stdout.write("READY " + json.dumps(payload or {}) + "\n")
    sys.stdout.flush()


async def _wait_stop(max_seconds: float, on_line: Any = None) -> None:
    """Until the parent writes ``stop`` (or closes stdin), or max_seconds pass; any other line
    is handed to ``on_line`` (bench_cluster's commands to a running child, e.g. ``republish``)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def readable() -> None:
        line = sys.stdin.readline()
        if not line or line.strip() == "stop":
            loop.remove_reader(sys.stdin.fileno())
            stop.set()
        elif on_line is not None and line.strip():
            on_line(line.strip())

    loop.add_reader(sys.stdin.fileno(), readable)
    try:
        await asyncio.wait_for(stop.wait(), max_seconds)
    except TimeoutError:
        logging.getLogger("bench").warning("no stop from the parent within %.0f s; stopping", max_seconds)


def _h264_preferences() -> list:
    from aiortc import RTCRtpSender

    return [c for c in RTCRtpSender.getCapabilities("video").codecs if c.mimeType in ("video/H264", "video/rtx")]


async def _negotiate(http: Any, pc: Any, url: str) -> None:
    from aiortc import RTCSessionDescription

    await pc.setLocalDescription(await pc.createOffer())
    async with http.post(url, data=pc.localDescription.sdp, headers={"Content-Type": "application/sdp"}) as response:
        body = await response.text()
        if response.status != 201:
            raise RuntimeError(f"{url}: {response.status} {body.strip()}")
    await pc.setRemoteDescription(RTCSessionDescription(sdp=body, type="answer"))


async def _connected(pc: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while pc.connectionState != "connected":
        if pc.connectionState in ("failed", "closed") or time.monotonic() > deadline:
            raise RuntimeError(f"WebRTC connection {pc.connectionState}")
        await asyncio.sleep(0.02)


def _percentiles(values: Any, qs=(50, 95, 99)) -> dict[str, float | None]:
    arr = np.asarray(list(values), dtype=float)
    return {f"p{q}": (float(np.percentile(arr, q)) if arr.size else None) for q in qs}


# ---------------------------------------------------------------- relays


async def role_relay(config: dict) -> None:
    from aiohttp import web

    ice = _setup_ice()
    if config.get("switch_interval"):
        sys.setswitchinterval(config["switch_interval"])  # diagnosis only (--relay-switch-interval)
    if config["kind"] == "guarded":
        app, stats = _guarded_app(ice, config)
    else:
        app, stats = _plain_app(ice, config)

    add_bench_stats(app, stats)
    if config.get("renice_threads"):
        renice_task = asyncio.ensure_future(_renice_other_threads(config["renice_threads"]))  # noqa: F841
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    _ready({"port": site._server.sockets[0].getsockname()[1], "pid": os.getpid()})
    await _wait_stop(config["max_seconds"])
    os._exit(0)  # no graceful hang-up of dozens of peer connections: the parent is done with us


def add_bench_stats(app: Any, stats: Any) -> None:
    """``GET /bench/stats[?since=T]``: ``stats()`` plus how late the event loop ran (since T), the
    thread count and CPU seconds by kind of thread; the loop watcher starts with the app."""
    from aiohttp import web

    lags: list[tuple[float, float]] = []

    async def watch_loop() -> None:
        # How late the event loop runs a 50 ms timer: aiortc's packet handling, the pumps and
        # every viewer's sender share this one thread.
        while True:
            due = time.monotonic() + 0.05
            await asyncio.sleep(0.05)
            lags.append((due, time.monotonic() - due))
            del lags[:-2400]

    async def bench_stats_with_loop(request: web.Request) -> web.Response:
        data = stats()
        since = float(request.query.get("since", 0))
        data["loop_lag_ms"] = _percentiles((1000 * lag for t, lag in lags if t >= since), (50, 99, 100))
        data["threads"] = len(os.listdir("/proc/self/task"))
        data["thread_cpu_s"] = _thread_cpu()
        return web.json_response(data)

    async def start(app: Any) -> None:
        app["bench_lag_task"] = asyncio.ensure_future(watch_loop())  # runs until the process exits

    app.on_startup.append(start)
    app.router.add_get("/bench/stats", bench_stats_with_loop)


_THREAD_CPU: dict[int, tuple[str, float]] = {}  # every thread seen: kind, CPU seconds when last seen


def _thread_cpu() -> dict[str, float]:
    """CPU seconds so far by kind of thread: the event loop's, guard workers, decoders, the rest
    (threads that have ended count with what they had used when last seen)."""
    main, tick = os.getpid(), os.sysconf("SC_CLK_TCK")
    names = {t.native_id: t.name for t in threading.enumerate()}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                head, rest = f.read().rsplit(")", 1)
        except OSError:
            continue
        name = names.get(int(tid), head.split("(", 1)[1])  # Python's thread name (the OS one is just "python")
        fields = rest.split()
        kind = (
            "event loop" if int(tid) == main
            else "guard workers" if name.startswith("guard-")
            else "decoders" if "decoder" in name
            else "executor" if name.startswith(("ThreadPoolExecutor", "asyncio_"))
            else "other (codec-internal threads...)"
        )  # fmt: skip
        _THREAD_CPU[int(tid)] = (kind, (int(fields[11]) + int(fields[12])) / tick)
    totals: dict[str, float] = {}
    for kind, cpu in _THREAD_CPU.values():
        totals[kind] = totals.get(kind, 0.0) + cpu
    return totals


async def _renice_other_threads(nice: int) -> None:
    """Diagnosis only (--relay-renice-threads): every thread but the event loop's at lower priority."""
    main = threading.get_native_id()
    while True:
        for tid in os.listdir("/proc/self/task"):
            if int(tid) != main:
                try:
                    os.setpriority(os.PRIO_PROCESS, int(tid), nice)
                except OSError:
                    pass
        await asyncio.sleep(0.5)


def _guarded_app(ice: Any, config: dict) -> tuple[Any, Any]:
    from livesafe.guard.matcher import LiveMatcher
    from livesafe.guard.stream_guard import GuardSettings
    from livesafe.lists import ListSpec
    from livesafe.relay.app import create_app
    from livesafe.relay.registry import Relay
    from livesafe.relay.settings import RelaySettings

    lists = LiveMatcher([ListSpec(path=SAMPLES / "blocklist.txt", name="samples", category="test", action="slate")])
    relay = Relay(RelaySettings(ice=ice), lambda: lists.current, GuardSettings())
    return create_app(relay), lambda: guarded_stats(relay)


def guarded_stats(relay: Any) -> dict:
    """livesafe's relay as ``/bench/stats`` reports it: per stream its counters and queue depths."""
    streams = []
    for stream in relay.streams.values():
        summary = stream.summary()
        summary["relay_latency_ms"] = _percentiles(1000 * x for x in list(stream.latency))
        summary["guard_seconds"] = stream.guard.stats.guard_seconds
        summary["guard_samples"] = stream.guard.stats.samples
        summary["viewer_packets_dropped"] = sum(v.video.packets_dropped for v in stream.viewers.values() if v.video)
        summary["frames_out"] = stream.counters.frames_out
        queues = [len(v.video._queue) for v in stream.viewers.values() if v.video is not None]
        summary["viewer_queue_max_frames"] = max(queues, default=0)  # av.Packets = frames waiting per viewer
        summary["ingest_waiting_frames"] = stream.worker.waiting
        decoder = getattr(getattr(stream.publisher, "pc", None), "getReceivers", list)()
        backlog = [getattr(r, "_RTCRtpReceiver__decoder_queue", None) for r in decoder if r.track.kind == "video"]
        summary["decoder_backlog_frames"] = max((q.qsize() for q in backlog if q is not None), default=0)
        summary["ingest_packets_lost"] = _packets_lost(decoder)
        tracks = [r.track for r in decoder if r.track.kind == "video"]
        summary["decoded_waiting_frames"] = max((t._queue.qsize() for t in tracks if hasattr(t, "_queue")), default=0)
        streams.append(summary)
    return {"kind": "guarded", "sessions": len(relay.sessions), "streams": streams}


def _plain_app(ice: Any, config: dict) -> tuple[Any, Any]:
    """The usual aiortc relay: decode the publisher once, MediaRelay to every viewer, and
    each viewer's RTCRtpSender encodes for itself (aiortc's H264Encoder: libx264, 1 Mbit/s)."""
    from aiohttp import web
    from aiortc import RTCPeerConnection, RTCSessionDescription
    from aiortc.contrib.media import MediaRelay
    from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

    media = MediaRelay()
    buffered = not config.get("plain_unbuffered", False)
    sources: dict[str, Any] = {}
    receivers: dict[str, Any] = {}
    viewers: dict[str, int] = {}
    pcs: set = set()
    tasks: set = set()

    class CountingTrack(MediaStreamTrack):
        kind = "video"

        def __init__(self, track: MediaStreamTrack) -> None:
            super().__init__()
            self._track = track
            self.frames = 0

        async def recv(self) -> Any:
            frame = await self._track.recv()
            self.frames += 1
            return frame

    async def drain(track: MediaStreamTrack) -> None:
        # Keep the source read from the start, so frames do not pile up before the first viewer.
        try:
            while True:
                await track.recv()
        except MediaStreamError:
            pass

    def new_pc() -> Any:
        pc = RTCPeerConnection(ice.rtc_configuration())
        pcs.add(pc)

        @pc.on("connectionstatechange")
        async def _changed() -> None:
            if pc.connectionState in ("failed", "closed"):
                pcs.discard(pc)
                await pc.close()

        return pc

    async def whip(request: web.Request) -> web.Response:
        name = request.match_info["stream"]
        offer = await request.text()
        pc = new_pc()

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "video":
                source = sources[name] = CountingTrack(track)
                task = asyncio.ensure_future(drain(media.subscribe(source, buffered=False)))
                tasks.add(task)

        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        for t in pc.getTransceivers():
            if t.kind == "video":
                receivers[name] = t.receiver
        return web.Response(status=201, text=pc.localDescription.sdp, content_type="application/sdp",
                            headers={"Location": f"/whip/{name}/{id(pc)}"})  # fmt: skip

    async def whep(request: web.Request) -> web.Response:
        name = request.match_info["stream"]
        source = sources.get(name)
        if source is None:
            raise web.HTTPNotFound(text="no such stream\n")
        offer = await request.text()
        pc = new_pc()
        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        pc.addTrack(media.subscribe(source, buffered=buffered))
        await pc.setLocalDescription(await pc.createAnswer())
        viewers[name] = viewers.get(name, 0) + 1
        return web.Response(status=201, text=pc.localDescription.sdp, content_type="application/sdp",
                            headers={"Location": f"/whep/{name}/{id(pc)}"})  # fmt: skip

    def stats() -> dict:
        proxies = getattr(media, "_MediaRelay__proxies", {})
        streams = []
        for name, source in sources.items():
            queues = [p._queue.qsize() for p in proxies.get(source, ()) if getattr(p, "_buffered", False)]
            decoder = getattr(receivers.get(name), "_RTCRtpReceiver__decoder_queue", None)
            streams.append(
                {
                    "id": name,
                    "frames_in": source.frames,
                    "viewers": viewers.get(name, 0),
                    "viewer_queue_max_frames": max(queues, default=0),
                    "decoder_backlog_frames": decoder.qsize() if decoder is not None else None,
                    "decoded_waiting_frames": source._track._queue.qsize(),
                    "ingest_packets_lost": _packets_lost([receivers.get(name)]),
                }
            )
        return {"kind": "plain", "sessions": len(pcs), "streams": streams}

    app = web.Application()
    app.router.add_post("/whip/{stream}", whip)
    app.router.add_post("/whep/{stream}", whep)
    return app, stats


def _packets_lost(receivers: list) -> int:
    """RTP packets a relay's receivers never got (aiortc's RTCP statistics, after NACK/RTX)."""
    total = 0
    for r in receivers:
        for stream in getattr(r, "_RTCRtpReceiver__remote_streams", {}).values():
            total += max(0, stream.packets_lost)
    return total


# -------------------------------------------------------------- publisher


async def role_publish(config: dict) -> None:
    """WHIP publishers, one per name in ``config["streams"]``, all at once or ``stagger`` seconds
    apart (so a cluster's placement sees each new stream's load before the next arrives), to
    ``{base}/whip/{name}{whip_query}``.  ``republish BASE`` on stdin (bench_cluster's failover):
    hang up and publish every stream again through BASE, retrying until it is taken, the clip
    continuing where it was; prints ``REPUBLISHED {json}`` with when that started and succeeded."""
    import aiohttp
    from aiortc import RTCPeerConnection
    from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

    ice = _setup_ice()
    clip = load_clip(Path(config["clip"]))
    period = 1 / FPS

    class ClipTrack(MediaStreamTrack):
        """Pre-encoded frames as av.Packets at real-time pace; aiortc only packetizes them.

        ``previous``: the track this one takes over from (a republish): the frame numbers,
        and the record of when each was sent, carry on from it -- from the clip's next IDR, as
        a restarted encoder starts with a keyframe (the frames skipped are recorded as never
        sent, NaN)."""

        kind = "video"

        def __init__(self, first_seq: int, phase: float, previous: ClipTrack | None = None) -> None:
            super().__init__()
            self.first_seq = previous.first_seq if previous else first_seq  # frame number of sent[0]
            self.phase = phase
            self.seq = -(-previous.seq // CLIP_GOP) * CLIP_GOP if previous else first_seq
            self.pace_from = self.seq
            self.t0: float | None = None
            self.sent: list[float] = previous.sent if previous else []
            self.late: list[float] = previous.late if previous else []
            self.sent += [float("nan")] * (self.seq - self.first_seq - len(self.sent))  # once, whatever the retries

        async def recv(self) -> av.Packet:
            if self.readyState != "live":
                raise MediaStreamError
            if self.t0 is None:
                self.t0 = time.monotonic() + self.phase
            due = self.t0 + (self.seq - self.pace_from) * period
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if self.readyState != "live":
                raise MediaStreamError  # hung up while waiting: this frame was never sent
            packet = av.Packet(clip[self.seq % len(clip)])
            packet.pts, packet.time_base = self.seq * TICKS, CLOCK
            now = time.monotonic()
            self.sent.append(now)
            self.late.append(now - due)
            self.seq += 1
            return packet

    streams = config["streams"]
    stagger = float(config.get("stagger", 0.0))
    query = config.get("whip_query", "")
    tracks: dict[str, ClipTrack] = {}
    pcs: dict[str, Any] = {}
    background: set[asyncio.Task] = set()

    def write_result() -> None:
        result = {}
        for name, track in tracks.items():
            result[name] = {
                "first_seq": track.first_seq,
                "sent": track.sent,
                "late_ms": _percentiles(1000 * x for x in track.late),
            }
        Path(config["result"]).write_text(json.dumps(result))

    def new_pc(track: ClipTrack) -> Any:
        pc = RTCPeerConnection(ice.rtc_configuration())
        transceiver = pc.addTransceiver(track, direction="sendonly")
        transceiver.setCodecPreferences(_h264_preferences())
        return pc

    async with aiohttp.ClientSession() as http:
        refused: list[str] = []

        async def start(k: int, name: str) -> None:
            await asyncio.sleep(k * stagger)
            # Streams start at different places in the clip and at different phases of the frame clock.
            track = ClipTrack(
                first_seq=(k * 7 * CLIP_GOP) % len(clip), phase=(k * period / max(1, len(streams))) % period
            )
            pc = pcs[name] = new_pc(track)
            try:
                await _negotiate(http, pc, f"{config['base']}/whip/{name}{query}")
            except RuntimeError as exc:
                if ": 503 " not in str(exc):
                    raise
                refused.append(name)  # the relay's admission control: at capacity
                await pc.close()
                return
            tracks[name] = track
            await _connected(pc, 15)

        async def republish(base: str) -> None:
            report: dict[str, Any] = {"base": base, "streams": {}}
            for name in list(tracks):
                old = tracks[name]
                old.stop()  # no more frames counted as sent to the old node
                background.add(asyncio.ensure_future(pcs[name].close()))
                started, attempts, errors = time.monotonic(), 0, []
                answered = connected = None
                while time.monotonic() < started + config.get("retry_seconds", 20.0):
                    attempts += 1
                    track = ClipTrack(0, 0.0, previous=old)
                    pc = new_pc(track)
                    try:
                        await asyncio.wait_for(_negotiate(http, pc, f"{base}/whip/{name}"), 10)
                        answered = time.monotonic()
                        await _connected(pc, 10)
                        connected = time.monotonic()
                    except (RuntimeError, aiohttp.ClientError, OSError, TimeoutError) as exc:
                        errors.append(f"{type(exc).__name__}: {str(exc)[:120]}")
                        track.stop()
                        await pc.close()
                        answered = None
                        await asyncio.sleep(0.2)  # the retry loop of a publisher that lost its node
                        continue
                    tracks[name], pcs[name] = track, pc
                    break
                kinds = sorted({e.split(":")[0] for e in errors})
                report["streams"][name] = {
                    "started": started, "answered": answered, "connected": connected,
                    "attempts": attempts, "errors": errors[-5:], "error_kinds": kinds,
                }  # fmt: skip
            sys.stdout.write("REPUBLISHED " + json.dumps(report) + "\n")
            sys.stdout.flush()

        def command(line: str) -> None:
            verb, _, arg = line.partition(" ")
            if verb == "republish":
                background.add(asyncio.ensure_future(republish(arg)))
            elif verb == "dump":  # the record so far, for a parent that keeps this publisher running
                write_result()
                sys.stdout.write("DUMPED {}\n")
                sys.stdout.flush()

        await asyncio.gather(*(start(k, name) for k, name in enumerate(streams)))
        _ready({"streams": len(tracks), "refused": refused})
        await _wait_stop(config["max_seconds"], command)
    write_result()
    os._exit(0)


# ----------------------------------------------------------------- viewers

_PROBES: dict[Any, Probe] = {}


class Probe:
    """What one viewer got: per video frame, when its last RTP packet arrived, when it was
    decoded (if it was), its RTP timestamp (unwrapped, 90 kHz), keyframe or not, complete or
    not (no packet missing), and the clip index read from its barcode (-1 if not read).

    ``full``: aiortc's own receive path runs as usual (jitter buffer, NACK, PLI, REMB); this
    probe stands in for the decoder (on aiortc's decoder thread), decodes every frame and
    reads its barcode.  Light (not ``full``): aiortc's receive path is replaced by
    :meth:`on_rtp`, which only notes packets (no jitter buffer, no NACK/PLI/REMB, no
    decoding) and decodes keyframes on a side thread to read their barcode -- the frames in
    between are numbered later by RTP timestamp.
    """

    def __init__(self, stream: str, full: bool, receiver: Any) -> None:
        self.stream = stream
        self.full = full
        self.codec = av.CodecContext.create("h264", "r")
        self.t_pkt: list[float | None] = []
        self.t_dec: list[float | None] = []
        self.ts: list[int] = []
        self.key: list[bool] = []
        self.complete: list[bool] = []
        self.index: list[int] = []
        self.decode_errors = 0
        self.lost_packets = 0
        self.packets = 0
        self.last_packet = time.monotonic()  # of the last RTP packet (from the start: none yet)
        self.joined = time.monotonic()
        self._receiver = receiver
        self._original = receiver._handle_rtp_packet
        self._markers: dict[int, float] = {}  # full: RTP timestamp -> arrival of its last packet
        # light: the frame being received
        self._last_seq: int | None = None
        self._raw_ts: int | None = None
        self._ext_ts = 0
        self._frame_ok = False
        self._frame_key = False
        self._parts: list[bytes] | None = None
        self._gap_since_marker = False
        self._executor: Any = None
        receiver._handle_rtp_packet = self.on_rtp_full if full else self.on_rtp

    # ----------------------------------------------------------- full viewers

    async def on_rtp_full(self, packet: Any, arrival_time_ms: int) -> None:
        self.last_packet = time.monotonic()
        if packet.marker:
            self._markers[packet.timestamp] = time.monotonic()
            if len(self._markers) > 512:
                for k in list(self._markers)[:256]:
                    del self._markers[k]
        await self._original(packet, arrival_time_ms=arrival_time_ms)

    def handle(self, encoded: Any) -> None:
        """On aiortc's decoder thread (full viewers): decode, read the barcode."""
        t_in = time.monotonic()
        mapper = getattr(self._receiver, "_RTCRtpReceiver__timestamp_mapper", None)
        origin = getattr(mapper, "_origin", None) or 0
        t_pkt = self._markers.get((encoded.timestamp + origin) & 0xFFFFFFFF, t_in)
        index, t_dec = -1, None
        try:
            for frame in self.codec.decode(av.Packet(encoded.data)):
                t_dec = time.monotonic()
                index = read_bar(frame)
        except av.FFmpegError:
            self.decode_errors += 1
        self._record(t_pkt, t_dec, encoded.timestamp, _has_idr(encoded.data), True, index)

    # ---------------------------------------------------------- light viewers

    async def on_rtp(self, packet: Any, arrival_time_ms: int) -> None:
        if packet.payload_type not in self._h264_types():
            return  # RTX (never asked for: we send no NACKs)
        self.last_packet = time.monotonic()
        self.packets += 1
        seq, payload = packet.sequence_number, packet.payload
        gap = self._last_seq is not None and seq != (self._last_seq + 1) & 0xFFFF
        if gap:
            self.lost_packets += (seq - self._last_seq - 1) & 0xFFFF
            self._gap_since_marker = True
            self._frame_ok = False
        self._last_seq = seq
        if packet.timestamp != self._raw_ts:  # first packet of a frame
            if self._raw_ts is not None:
                self._ext_ts += ((packet.timestamp - self._raw_ts + 2**31) & 0xFFFFFFFF) - 2**31
            self._raw_ts = packet.timestamp
            self._frame_ok = not self._gap_since_marker
            self._gap_since_marker = False
            self._frame_key = _payload_starts_keyframe(payload)
            self._parts = [] if self._frame_key else None
        if self._parts is not None and payload:
            try:
                from aiortc.codecs.h264 import h264_depayload

                self._parts.append(h264_depayload(payload))
            except ValueError:
                self._frame_ok = False
        if packet.marker:
            i = self._record(time.monotonic(), None, self._ext_ts, self._frame_key, self._frame_ok, -1)
            if self._parts is not None and self._frame_ok:
                data, self._parts = b"".join(self._parts), None
                if self._executor is None:
                    from concurrent.futures import ThreadPoolExecutor

                    self._executor = ThreadPoolExecutor(1)
                self._executor.submit(self._decode_key, i, data)
            self._parts = None

    def _decode_key(self, i: int, data: bytes) -> None:
        try:
            for frame in self.codec.decode(av.Packet(data)):
                self.index[i] = read_bar(frame)
        except av.FFmpegError:
            self.decode_errors += 1

    def _h264_types(self) -> set[int]:
        types = getattr(self, "_types", None)
        if types is None:
            codecs = getattr(self._receiver, "_RTCRtpReceiver__codecs", {})
            types = self._types = {pt for pt, c in codecs.items() if c.mimeType.lower() == "video/h264"}
        return types

    # ------------------------------------------------------------------ both

    def _record(self, t_pkt: float | None, t_dec: float | None, ts: int, key: bool, complete: bool, index: int) -> int:
        self.t_pkt.append(t_pkt)
        self.t_dec.append(t_dec)
        self.ts.append(ts)
        self.key.append(key)
        self.complete.append(complete)
        self.index.append(index)
        return len(self.index) - 1

    def result(self) -> dict:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        return {
            "stream": self.stream,
            "full": self.full,
            "t_pkt": self.t_pkt,
            "t_dec": self.t_dec,
            "ts": self.ts,
            "key": self.key,
            "complete": self.complete,
            "index": self.index,
            "decode_errors": self.decode_errors,
            "lost_packets": self.lost_packets,
            "packets": self.packets,
            "joined": self.joined,
        }


def _has_idr(data: bytes) -> bool:
    i = data.find(b"\x00\x00\x01")
    while i != -1 and i + 3 < len(data):
        nal = data[i + 3] & 0x1F
        if nal == 5:
            return True
        if nal == 1:
            return False
        i = data.find(b"\x00\x00\x01", i + 3)
    return False


def _payload_starts_keyframe(payload: bytes) -> bool:
    """Is this first RTP payload of a frame the start of an IDR picture (or its SPS)?"""
    if len(payload) < 2:
        return False
    nal = payload[0] & 0x1F
    if nal == 24 and len(payload) > 3:  # STAP-A: look at the first aggregated NAL
        nal = payload[3] & 0x1F
    elif nal == 28:  # FU-A
        nal = payload[1] & 0x1F
    return nal in (5, 7)


def _install_probes() -> None:
    import aiortc.rtcrtpreceiver as receiver_module

    original = receiver_module.decoder_worker

    def probe_worker(loop: Any, input_q: Any, output_q: Any, decode_error: Any) -> None:
        probe = _PROBES.get(input_q)
        if probe is None or not probe.full:
            return original(loop, input_q, output_q, decode_error)
        while True:
            task = input_q.get()
            if task is None:
                asyncio.run_coroutine_threadsafe(output_q.put(None), loop)
                return
            probe.handle(task[1])

    receiver_module.decoder_worker = probe_worker


async def role_view(config: dict) -> None:
    """WHEP viewers: ``targets`` is a list of ``[stream, count]`` (at ``base``) or ``[stream, count,
    base]`` (bench_cluster: viewers on a given node).  ``reconnect`` (bench_cluster's failover):
    a viewer whose connection fails, closes or brings nothing for ``silence_seconds`` joins again,
    as a player would, retrying until it is let in; each connection is a probe of its own."""
    import aiohttp
    from aiortc import RTCPeerConnection

    ice = _setup_ice()
    _install_probes()
    full = config["mode"] == "full"
    plan = [(t[0], t[2] if len(t) > 2 else config["base"]) for t in config["targets"] for _ in range(t[1])]
    probes: list[Probe] = []
    failures: list[str] = []
    rejoins: list[dict] = []
    pcs: list[Any] = []
    limit = asyncio.Semaphore(config.get("connect_concurrency", 4))
    silence = float(config.get("silence_seconds", 2.0))
    stopping = False
    async with aiohttp.ClientSession() as http:

        async def connect(name: str, base: str) -> tuple[Any, Probe]:
            pc = RTCPeerConnection(ice.rtc_configuration())
            transceiver = pc.addTransceiver("video", direction="recvonly")
            transceiver.setCodecPreferences(_h264_preferences())
            probe = Probe(name, full, transceiver.receiver)
            _PROBES[transceiver.receiver._RTCRtpReceiver__decoder_queue] = probe
            probes.append(probe)
            try:
                await _negotiate(http, pc, f"{base}/whep/{name}")
                await _connected(pc, 20)
            except BaseException:
                await pc.close()
                raise
            pcs.append(pc)
            return pc, probe

        async def keep(name: str, base: str, pc: Any, probe: Probe) -> None:
            while not stopping:
                lost = pc.connectionState in ("failed", "closed") or time.monotonic() - probe.last_packet > silence
                if not lost:
                    await asyncio.sleep(0.05)
                    continue
                record = {"lost": time.monotonic(), "state": pc.connectionState, "attempts": 0}
                rejoins.append(record)
                await pc.close()
                while not stopping:
                    record["attempts"] += 1
                    try:
                        pc, probe = await connect(name, base)
                        record["joined"] = time.monotonic()
                        break
                    except Exception as exc:  # noqa: BLE001 - a player retries whatever it was
                        record["error"] = f"{type(exc).__name__}: {str(exc)[:120]}"
                        await asyncio.sleep(0.2)

        keepers: list[asyncio.Task] = []

        async def join(name: str, base: str) -> None:
            async with limit:
                try:
                    pc, probe = await connect(name, base)
                except Exception as exc:  # noqa: BLE001 - reported to the parent
                    failures.append(f"{name}: {exc}")
                    return
            if config.get("reconnect"):
                keepers.append(asyncio.ensure_future(keep(name, base, pc, probe)))

        await asyncio.gather(*(join(name, base) for name, base in plan))
        _ready({"viewers": len(plan), "failed": failures})
        await _wait_stop(config["max_seconds"])
        stopping = True
        if config.get("hang_up"):  # bench_cluster: the node must not keep feeding viewers gone without a word
            await asyncio.wait([asyncio.ensure_future(pc.close()) for pc in pcs], timeout=5)
    result = {"viewers": [p.result() for p in probes], "failed": failures, "rejoins": rejoins}
    Path(config["result"]).write_text(json.dumps(result))
    os._exit(0)


# ------------------------------------------------------------- cluster nodes

_BACKGROUND: set[asyncio.Task] = set()  # the node role's helpers, alive as long as the process


def role_node(config: dict) -> None:
    """A cluster node exactly as ``livesafe serve`` runs it -- ``livesafe.cli.main(config["argv"])``,
    the cluster secret in the environment -- plus, on its app, ``/bench/stats`` (the relay's
    streams, its edge's counters, CPU by kind of thread) and a watch on its matcher that notes
    when each hash first appears in it (``lists_seen``: hex -> monotonic time), so the parent
    times a list change to enforcement on this node without polling it over HTTP.

    The additions ride on ``livesafe.cli.build_proxy``, wrapped before ``main`` calls it.
    READY comes once the node's port accepts connections (it has joined the cluster by then).
    """
    import livesafe.cli as cli
    from livesafe.cluster.settings import ClusterSettings

    original = cli.build_proxy
    port = config["port"]
    seen: dict[str, float] = {}

    def build_proxy(*args: Any, **kwargs: Any) -> Any:
        proxy = original(*args, **kwargs)
        lists = kwargs["lists"]

        def stats() -> dict:
            import dataclasses

            data = guarded_stats(proxy.relay)
            edges = proxy.relay.edges
            if edges is not None:
                data["edge"] = {"streams": edges.streams, "viewers": edges.viewers} | dataclasses.asdict(edges.counters)
            data["placements"] = proxy.cluster.placements if proxy.cluster is not None else None
            data["lists_seen"] = seen
            return data

        add_bench_stats(proxy.app, stats)

        async def watch_lists() -> None:
            current = None
            while True:
                if lists.current is not current:
                    current, now = lists.current, time.monotonic()
                    for blocklist in current.blocklists:
                        for rows in blocklist.hashes.values():
                            for row in rows:
                                seen.setdefault(row.tobytes().hex(), now)
                await asyncio.sleep(0.005)

        async def announce() -> None:
            while True:
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", port)
                    writer.close()
                    break
                except OSError:
                    await asyncio.sleep(0.05)
            _ready({"port": port, "pid": os.getpid()})

        async def stop_on_parent() -> None:
            await _wait_stop(config["max_seconds"])
            os._exit(0)  # as the relay role: no graceful hang-up, the parent is done with us

        async def start(app: Any) -> None:
            for work in (watch_lists(), announce(), stop_on_parent()):
                _BACKGROUND.add(asyncio.ensure_future(work))

        proxy.app.on_startup.append(start)
        return proxy

    cli.build_proxy = build_proxy
    os.environ[ClusterSettings.SECRET_ENV] = config["secret"]
    code = cli.main(config["argv"])
    sys.stdout.write(f"EXIT {code}\n")
    sys.stdout.flush()
    os._exit(int(code))


def main() -> None:
    role = sys.argv[1]
    logging.basicConfig(level=logging.WARNING, format=f"%(asctime)s {role} %(levelname)s %(name)s: %(message)s")
    # Import the heavy parts before waiting for the config: the parent starts all children at once.
    import aiohttp  # noqa: F401
    import aiortc  # noqa: F401

    if role == "relay":
        import livesafe.relay.app  # noqa: F401
    elif role == "node":
        import livesafe.cli  # noqa: F401
    config = json.loads(sys.stdin.readline())
    if role == "node":
        role_node(config)  # runs livesafe's own event loop (livesafe.cli.main)
    runner = {"relay": role_relay, "publish": role_publish, "view": role_view}[role]
    asyncio.run(runner(config))


if __name__ == "__main__":
    main()

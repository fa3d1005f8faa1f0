"""What the tests share, so that a helper is written (and fixed) once: the sample
blocklist, a relay on a loopback port and ways to drive it (WHIP publishing, real offers,
HTTP requests read whole), small test clips, reading a viewer's recording back frame by
frame against the source, hashes, config files, the check that an event carries no
picture, and headless Chromium.  Fixtures built on these are in conftest.py."""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import json
import shutil
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import av
import cv2
import numpy as np
import pytest
from aiohttp import web
from aiortc import RTCPeerConnection
from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack

from livesafe.clients import publish
from livesafe.config import Config, ConfigError, load_config
from livesafe.guard.matcher import LiveMatcher, Matcher
from livesafe.guard.redact import slate_frame
from livesafe.guard.stream_guard import GuardSettings
from livesafe.listeners import ADMIN_LISTENER, listen_admin
from livesafe.lists import ListSpec
from livesafe.moderation.service import Moderation
from livesafe.moderation.settings import ModerationSettings
from livesafe.proxy import build_proxy
from livesafe.relay.ice import IceSettings, apply_ice_settings
from livesafe.relay.registry import Relay
from livesafe.relay.settings import RelaySettings
from livesafe.relay.stream import StreamSettings

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "sample_streams"
BLOCKLIST = SAMPLES / "blocklist.txt"
LIST_HEX = [line.split()[1] for line in BLOCKLIST.read_text().splitlines() if line.startswith("pdq ")]
"""The sample blocklist's PDQ hashes in hex: chelsea, coffee, rocket."""

# No STUN server, host candidates on loopback only.
ICE = IceSettings(host_addresses=("127.0.0.1",))
FAST_END = StreamSettings(ended_grace_seconds=1.0)


# ------------------------------------------------------------------ a relay on loopback, and driving it


@dataclass
class RunningRelay:
    relay: Relay
    base: str
    moderation: Moderation
    admin: str | None = field(default=None, kw_only=True)  # the admin listener's base URL, with settings.admin_port

    def url(self, kind: str, stream: str) -> str:
        return f"{self.base}/{kind}/{stream}"

    async def wait_for(self, condition: Callable[[Relay], bool], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition(self.relay):
            if time.monotonic() > deadline:
                raise TimeoutError("relay did not reach the expected state")
            await asyncio.sleep(0.05)

    def summary(self, stream: str) -> dict:
        return next(s for s in self.relay.summaries() if s["id"] == stream)


def sample_lists(action: str = "slate") -> Callable[[], Matcher]:
    lists = LiveMatcher([ListSpec(path=BLOCKLIST, name="samples", category="test", action=action)])
    return lambda: lists.current


@contextlib.asynccontextmanager
async def serving(app: web.Application, port: int = 0) -> AsyncIterator[str]:
    """``app`` served on 127.0.0.1 (``port`` 0: a free one) while the block runs; yields its base URL."""
    async with serving_both(app, port) as (base, _):
        yield base


@contextlib.asynccontextmanager
async def serving_both(app: web.Application, port: int = 0) -> AsyncIterator[tuple[str, str | None]]:
    """``app`` served as ``livesafe serve`` serves it: its admin listener first (on a free loopback port) if
    the relay's settings ask for one, then the public one; yields both base URLs (admin None without one)."""
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        admin = None
        listener = app.get(ADMIN_LISTENER)
        if listener is not None and listener.enabled:
            await listen_admin(runner, "127.0.0.1", 0)
            admin = f"http://127.0.0.1:{runner.addresses[0][1]}"
        known = set(runner.addresses)
        await web.TCPSite(runner, "127.0.0.1", port).start()
        (public,) = set(runner.addresses) - known
        yield f"http://127.0.0.1:{public[1]}", admin
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def running_relay(
    settings: RelaySettings | None = None,
    matcher: Callable[[], Matcher] | None = None,
    guard: GuardSettings | None = None,
    moderation: ModerationSettings | None = None,
    port: int = 0,
) -> AsyncIterator[RunningRelay]:
    """The whole proxy (relay + moderation; an in-memory event store unless ``moderation`` names a file);
    with ``settings.admin_port``, its admin listener on a free port (``RunningRelay.admin``)."""
    settings = settings or RelaySettings(ice=ICE, stream=FAST_END)
    proxy = build_proxy(
        settings,
        matcher or sample_lists(),
        guard or GuardSettings(hold_seconds=0.5),
        moderation or ModerationSettings(database=":memory:"),
    )
    async with serving_both(proxy.app, port) as (base, admin):
        yield RunningRelay(proxy.relay, base, proxy.moderation, admin=admin)


def frames_in(relay: Relay, stream: str) -> int:
    """Frames the relay has taken in on ``stream`` (0 before it exists): where its publisher is in the clip."""
    live = relay.streams.get(stream)
    return live.counters.frames_in if live is not None else 0


@contextlib.asynccontextmanager
async def publishing(r: RunningRelay, clip: Path, stream: str, key: str | None = None, *,
                     tolerate: tuple[type[Exception], ...] = (),
                     **options: Any) -> AsyncIterator[asyncio.Task]:  # fmt: skip
    """Publish ``clip`` to ``stream`` (our WHIP client; ``options`` as for ``publish``) while the block runs.

    The block starts with frames flowing, so it acts on a live stream (a publisher that failed
    first fails the test there).  Leaving hangs up a publisher still running, rather than
    waiting out a fixed time: short on an idle machine, still passing on a loaded one.  The
    publisher's own error fails the test unless it is one of ``tolerate`` (say ``ClientError``
    where the test cuts the stream)."""
    task = asyncio.ensure_future(publish(clip, r.url("whip", stream), token=key, ice=ICE, **options))
    try:
        await r.wait_for(lambda relay: frames_in(relay, stream) > 0 or task.done(), 15)
        if task.done():
            task.result()  # raises the publisher's error
        yield task
    finally:
        if not task.done():
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError, *tolerate):
            await task


async def make_offer(video: bool = True, audio: bool = False, direction: str = "sendonly") -> str:
    """A real offer (loopback candidates only) from a peer connection that is closed again."""
    apply_ice_settings(ICE)
    pc = RTCPeerConnection(ICE.rtc_configuration())
    try:
        if video:
            pc.addTransceiver(VideoStreamTrack() if direction == "sendonly" else "video", direction=direction)
        if audio:
            pc.addTransceiver(AudioStreamTrack() if direction == "sendonly" else "audio", direction=direction)
        await pc.setLocalDescription(await pc.createOffer())
        return pc.localDescription.sdp
    finally:
        await pc.close()


def unused_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ------------------------------------------------------------------ HTTP


class Reply:
    """A response read whole, so a test asserts on it after the connection is gone (its repr shows what came back)."""

    def __init__(self, status: int, text: str, headers: Any) -> None:
        self.status, self.text, self.headers = status, text, headers

    def json(self) -> Any:
        return json.loads(self.text)

    def __repr__(self) -> str:
        return f"<{self.status} {self.text[:300]!r}>"


async def send(http: aiohttp.ClientSession, method: str, url: str, data: Any = None, *, token: str | None = None,
               content_type: str | None = None, headers: dict | None = None) -> Reply:  # fmt: skip
    """One request: ``data`` as is (labelled ``content_type`` if both are given), ``token`` as a Bearer credential."""
    sent = dict(headers or {})
    if content_type is not None and data is not None:
        sent["Content-Type"] = content_type
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    async with http.request(method, url, data=data, headers=sent) as response:
        return Reply(response.status, await response.text(errors="replace"), response.headers)


# ------------------------------------------------------------------ clips and recordings


def downscale_clip(source: Path, target: Path, width: int = 640, height: int = 360) -> Path:
    """``source`` re-encoded at a smaller size (same frames, same audio), to keep tests light."""
    with av.open(str(source)) as inp, av.open(str(target), "w") as out:
        vin = inp.streams.video[0]
        vout = out.add_stream("libx264", rate=vin.average_rate)
        vout.width, vout.height, vout.pix_fmt = width, height, "yuv420p"
        vout.codec_context.options = {"preset": "ultrafast", "crf": "16"}
        ain = inp.streams.audio[0] if inp.streams.audio else None
        aout = out.add_stream("aac", rate=48000) if ain is not None else None
        for frame in inp.decode(*([vin] + ([ain] if ain is not None else []))):
            if isinstance(frame, av.VideoFrame):
                small = frame.reformat(width=width, height=height, format="yuv420p")
                small.pts, small.time_base = frame.pts, frame.time_base
                out.mux(vout.encode(small))
            else:
                frame.pts = None
                out.mux(aout.encode(frame))
        out.mux(vout.encode())
        if aout is not None:
            out.mux(aout.encode())
    return target


def two_size_clip(target: Path, sizes: list[tuple[int, int]], frames_each: int = 45) -> Path:
    """An MPEG-TS whose picture size changes midway (TS files concatenate cleanly)."""
    parts = []
    for n, (w, h) in enumerate(sizes):
        part = target.with_suffix(f".{n}.ts")
        with av.open(str(part), "w", format="mpegts") as out:
            stream = out.add_stream("libx264", rate=30)
            stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
            stream.codec_context.options = {"preset": "ultrafast", "bf": "0"}
            for i in range(frames_each):
                index = n * frames_each + i
                rgb = np.zeros((h, w, 3), np.uint8)
                rgb[..., 0] = (np.arange(w) * 255 // w).astype(np.uint8)
                rgb[..., 1] = (index * 5) % 255
                cv2.putText(rgb, str(index), (w // 4, h // 2), cv2.FONT_HERSHEY_SIMPLEX, 2, (255, 255, 255), 3)
                frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
                frame.pts, frame.time_base = index, fractions.Fraction(1, 30)
                out.mux(stream.encode(frame))
            out.mux(stream.encode())
        parts.append(part.read_bytes())
    target.write_bytes(b"".join(parts))
    return target


@dataclass
class Recording:
    times_ms: list[int]
    luma: list[np.ndarray]
    audio: np.ndarray  # mono float samples at 48 kHz, from the recording's t=0
    sizes: set[tuple[int, int]] = field(default_factory=set)


def read_recording(path: Path) -> Recording:
    times, luma, sizes, samples = [], [], set(), []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            times.append(int(frame.pts))
            luma.append(frame.to_ndarray(format="yuv420p")[: frame.height].copy())
            sizes.add((frame.width, frame.height))
    with av.open(str(path)) as container:
        if container.streams.audio:
            first = None
            for frame in container.decode(audio=0):
                data = frame.to_ndarray().astype(np.float32)
                data = (
                    data.reshape(-1, frame.layout.nb_channels).mean(axis=1) if data.shape[0] == 1 else data.mean(axis=0)
                )
                start = round(float(frame.pts * frame.time_base) * 48000)
                first = start if first is None else first
                samples.append((start, data))
    audio = np.zeros(max((s + len(d) for s, d in samples), default=0), np.float32)
    for start, data in samples:
        audio[start : start + len(data)] = data
    return Recording(times, luma, audio, sizes)


def source_luma(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="yuv420p")[: f.height].copy() for f in container.decode(video=0)]


def _thumb(y: np.ndarray) -> np.ndarray:
    return cv2.resize(y, (80, 45), interpolation=cv2.INTER_AREA).astype(np.float32)


def _slate_thumb(width: int, height: int) -> np.ndarray:
    # The slate as the relay's encoder sees it (greyscale converted to video-range yuv420p).
    return _thumb(slate_frame(width, height).reformat(format="yuv420p").to_ndarray()[:height])


def looks_like_slate(y: np.ndarray) -> bool:
    h, w = y.shape
    return float(np.abs(_thumb(y) - _slate_thumb(w, h)).mean()) < 4.0


def classify(recording: Recording, source: list[np.ndarray], fps: float = 30.0) -> dict[int, str]:
    """Source frame index -> what the viewer got there: 'source', 'slate' or 'other'.

    The recording starts wherever the viewer joined; its first frame that is
    a source picture fixes the offset, and from there the recording's own
    timestamps place every frame (a dropped frame is a gap, not a shift).
    """
    thumbs = [_thumb(y) for y in source]
    offset = None
    for t, y in zip(recording.times_ms, recording.luma, strict=True):
        diffs = [float(np.abs(_thumb(y) - s).mean()) for s in thumbs]
        best = int(np.argmin(diffs))
        if diffs[best] < 3.0:
            offset = best - round(t * fps / 1000)
            break
    assert offset is not None, "no frame of the recording looks like the source"
    result: dict[int, str] = {}
    for t, y in zip(recording.times_ms, recording.luma, strict=True):
        index = offset + round(t * fps / 1000)
        if not 0 <= index < len(source):
            continue
        if float(np.abs(_thumb(y) - thumbs[index]).mean()) < 3.0:
            result[index] = "source"
        elif looks_like_slate(y):
            result[index] = "slate"
        else:
            result[index] = "other"
    return result


# ------------------------------------------------------------------ hashes


def hamming_hex(a: str, b: str) -> int:
    """Bits that differ between two hashes written in hex."""
    return bin(int(a, 16) ^ int(b, 16)).count("1")


# ------------------------------------------------------------------ config files


def config_from(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> Config:
    """``text`` as ``tmp_path/livesafe.toml``, loaded with secrets from ``env`` only, never the real environment."""
    path = tmp_path / "livesafe.toml"
    path.write_text(text)
    return load_config(path, env={} if env is None else env)


def config_error(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> str:
    """The message of the ConfigError that loading ``text`` raises, which must name the file first."""
    with pytest.raises(ConfigError) as info:
        config_from(tmp_path, text, env)
    message = str(info.value)
    assert message.startswith(str(tmp_path / "livesafe.toml") + ": "), message  # says which file
    return message


# ------------------------------------------------------------------ events


def assert_pixel_free(value: Any, where: str, *, max_string: int) -> None:
    """Nothing image-sized anywhere in an event: short strings, short lists, no bytes."""
    if isinstance(value, dict):
        for key, item in value.items():
            assert_pixel_free(item, f"{where}.{key}", max_string=max_string)
    elif isinstance(value, list):
        assert len(value) <= 8, f"{where}: a list of {len(value)} items in an event"
        for i, item in enumerate(value):
            assert_pixel_free(item, f"{where}[{i}]", max_string=max_string)
    elif isinstance(value, str):
        assert len(value) <= max_string, f"{where}: a string of {len(value)} characters in an event"
    else:
        assert value is None or isinstance(value, (int, float, bool)), f"{where}: {type(value).__name__}"


# ------------------------------------------------------------------ headless Chromium
# Debian's Chromium driven by Selenium, for tests of the pages the relay serves.  The test run
# lives in a loopback-only network namespace (see conftest.py), so Chromium's ICE can only use
# 127.0.0.1 -- which it gathers only with ``--allow-loopback-in-peer-connection``.  Local
# addresses are not hidden behind mDNS names (aiortc could not resolve them here).

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")


def chromium(extra_args: tuple[str, ...] = ()):
    """A headless Chromium WebDriver (the test is skipped where Chromium is not installed)."""
    webdriver = pytest.importorskip("selenium.webdriver")
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip("needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",  # we run as root in CI
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--allow-loopback-in-peer-connection",
        "--disable-features=WebRtcHideLocalIpsWithMdns",
        "--autoplay-policy=no-user-gesture-required",
        *extra_args,
    ):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def eventually(condition: Callable[[], object], timeout: float = 10.0) -> bool:
    """Whether ``condition()`` holds within ``timeout`` seconds, asked every 20 ms (from a thread or sync test)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


def wait_for_script(driver: Any, script: str, timeout: float, *, context: str, interval: float = 0.2) -> Any:
    """Poll ``script`` until it returns something truthy (returned).

    On timeout fail with the page's ``context`` script's value.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = driver.execute_script(script)
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for: {script} (page: {driver.execute_script(context)})")

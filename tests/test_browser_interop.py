"""Clients we did not write: headless Chromium publishes a file as its fake camera through the
publish page, another Chromium watches through the player page; GStreamer's whip-client
publishes a test pattern.  The relay must guard what they send like anything else."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from harness import FAST_END, ICE, SAMPLES, chromium, running_relay

from livesafe.clients import watch
from livesafe.guard.redact import slate_frame
from livesafe.relay.settings import RelaySettings, StreamAccess

KEY = "browser-studio-key"
THUMB = (80, 45)


def _y4m(source: Path, target: Path) -> Path:
    """Chromium's fake camera plays a .y4m file (looping)."""
    with av.open(str(source)) as inp, av.open(str(target), "w", format="yuv4mpegpipe") as out:
        stream = out.add_stream("rawvideo", rate=30)
        stream.width, stream.height, stream.pix_fmt = 640, 360, "yuv420p"
        for frame in inp.decode(video=0):
            frame.pts = None
            out.mux(stream.encode(frame.reformat(width=640, height=360, format="yuv420p")))
    return target


def _normalised(grey: np.ndarray) -> np.ndarray:
    small = cv2.resize(grey.astype(np.float32), THUMB, interpolation=cv2.INTER_AREA).ravel()
    return (small - small.mean()) / (small.std() + 1e-6)


def _similarity(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / a.size)  # Pearson correlation of two normalised thumbnails


SNAPSHOT = """
const v = document.getElementById('video');
if (!v.videoWidth) return null;
const c = document.createElement('canvas'); c.width = 160; c.height = 90;
const g = c.getContext('2d'); g.drawImage(v, 0, 0, 160, 90);
const d = g.getImageData(0, 0, 160, 90).data, out = [];
for (let i = 0; i < d.length; i += 4) out.push(Math.round(0.299 * d[i] + 0.587 * d[i + 1] + 0.114 * d[i + 2]));
return out;
"""

INBOUND_FRAMES = """
const done = arguments[arguments.length - 1];
window.livesafe.pc.getStats().then((stats) => {
  let frames = 0;
  stats.forEach((s) => { if (s.type === 'inbound-rtp' && s.kind === 'video') frames = s.framesDecoded; });
  done(frames);
});
"""


async def test_chromium_publishes_its_camera_and_a_chromium_viewer_never_sees_the_blocked_segment(
    tmp_path, blocked_cut_360p
):
    clip = blocked_cut_360p
    camera = _y4m(clip, tmp_path / "camera.y4m")
    truth = json.loads((SAMPLES / "blocked_cut.truth.json").read_text())["segments"][0]
    with av.open(str(clip)) as container:
        source = [_normalised(f.to_ndarray(format="gray")) for f in container.decode(video=0)]
    blocked = source[truth["start"] : truth["end"] + 1]
    benign = source[: truth["start"] - 5] + source[truth["end"] + 5 :]
    slate = _normalised(slate_frame(640, 360).to_ndarray())

    settings = RelaySettings(ice=ICE, stream=FAST_END, streams={"studio": StreamAccess(key=KEY)})
    async with running_relay(settings) as r:
        publisher = await asyncio.to_thread(
            chromium,
            (
                "--use-fake-ui-for-media-stream",
                "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-video-capture={camera}",
            ),
        )
        viewer = None
        try:
            await asyncio.to_thread(publisher.get, f"{r.base}/publish/studio")
            await asyncio.to_thread(publisher.find_element("id", "key").send_keys, KEY)
            await asyncio.to_thread(publisher.find_element("id", "start").click)
            await r.wait_for(
                lambda relay: "studio" in relay.streams and relay.streams["studio"].counters.frames_in > 30, timeout=30
            )
            viewer = await asyncio.to_thread(chromium)
            await asyncio.to_thread(viewer.get, f"{r.base}/watch/studio")
            snapshots, states, notices = [], set(), set()
            deadline = time.monotonic() + 14  # the 6 s camera file loops twice
            while time.monotonic() < deadline:
                pixels = await asyncio.to_thread(viewer.execute_script, SNAPSHOT)
                if pixels:
                    snapshots.append(_normalised(np.asarray(pixels, np.float32).reshape(90, 160)))
                states.add(r.summary("studio")["state"])
                notices.add(
                    await asyncio.to_thread(
                        publisher.execute_script, "return !document.getElementById('notice').hidden"
                    )
                )
                await asyncio.sleep(0.15)
            decoded = await asyncio.to_thread(viewer.execute_async_script, INBOUND_FRAMES)
            painted = await asyncio.to_thread(
                viewer.execute_script, "return window.livesafe.frames"
            )  # requestVideoFrameCallback
            summary = r.summary("studio")
        finally:
            for driver in (publisher, viewer):
                if driver is not None:
                    await asyncio.to_thread(driver.quit)
    assert summary["frames_in"] > 200 and summary["frames_redacted"] > 30, summary
    assert decoded > 150 and painted > 150, f"the browser viewer decoded {decoded} frames, painted {painted}"
    assert {"live", "redacted"} <= states, "the looping camera file went clean -> blocked -> clean"
    assert True in notices, "the broadcaster's page said the stream was interrupted"
    seen_benign = [s for s in snapshots if max(_similarity(s, b) for b in benign) > 0.9]
    seen_blocked = [s for s in snapshots if max(_similarity(s, b) for b in blocked) > 0.8]
    seen_slate = [s for s in snapshots if _similarity(s, slate) > 0.9]
    assert len(seen_benign) > 10, f"{len(seen_benign)} of {len(snapshots)} snapshots show the camera's benign pictures"
    assert seen_slate, "the viewer saw the slate while the blocked picture was on camera"
    assert not seen_blocked, f"{len(seen_blocked)} snapshots showed the blocked picture"


SYSTEM_PYTHON = "/usr/bin/python3"


def _has_gstreamer_webrtc() -> bool:
    probe = (
        "import gi; gi.require_version('GstWebRTC', '1.0'); gi.require_version('Nice', '0.1'); "
        "from gi.repository import Gst; Gst.init(None); "
        "assert Gst.ElementFactory.find('webrtcbin') and Gst.ElementFactory.find('nicesrc')"
    )
    return (
        shutil.which(SYSTEM_PYTHON) is not None
        and subprocess.run([SYSTEM_PYTHON, "-c", probe], capture_output=True).returncode == 0
    )


@pytest.mark.skipif(
    not _has_gstreamer_webrtc(),
    reason="needs Debian's python3-gst-1.0, gir1.2-gst-plugins-bad-1.0, gir1.2-nice-0.1, gstreamer1.0-nice",
)
async def test_gstreamer_webrtcbin_publishes_and_our_viewer_watches():
    settings = RelaySettings(ice=ICE, stream=FAST_END, streams={"gst": StreamAccess(key=KEY)})
    script = Path(__file__).with_name("gst_whip_publish.py")
    async with running_relay(settings) as r:
        client = await asyncio.create_subprocess_exec(
            SYSTEM_PYTHON, str(script), r.url("whip", "gst"), KEY, "20", "127.0.0.1",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        try:
            await r.wait_for(
                lambda relay: "gst" in relay.streams and relay.streams["gst"].counters.frames_in > 30, timeout=30
            )
            # aiortc's VP8 decoder may fall behind this publisher at start and shed its backlog; the
            # stream must be back at the keyframe that asks for (it froze for good while VP8
            # keyframes went unseen).
            result = await watch(r.url("whep", "gst"), ice=ICE, duration=6)
            summary = r.summary("gst")
            output = (await asyncio.wait_for(client.communicate(), 30))[0].decode()
        finally:
            if client.returncode is None:
                client.kill()
                await client.wait()
        await r.wait_for(
            lambda relay: relay.streams.get("gst") is None or relay.streams["gst"].publisher is None, timeout=10
        )
    assert client.returncode == 0 and "201" in output, output
    assert result.frames > 50 and result.sizes == [(640, 360)], result
    assert result.audio_frames > 50, "GStreamer's Opus audio came through too"
    assert summary["frames_in"] > 100 and summary["state"] in ("live", "redacted")

"""End to end over loopback with real aiortc peers: a sample stream with a blocklisted
segment is published over WHIP and watched over WHEP by two recording viewers; the
recordings, read back frame by frame, must show every frame of the segment redacted and
the frames outside it unchanged."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from harness import (
    FAST_END,
    ICE,
    SAMPLES,
    classify,
    downscale_clip,
    frames_in,
    publishing,
    read_recording,
    running_relay,
    source_luma,
)

from livesafe.clients import publish, watch
from livesafe.relay import compat
from livesafe.relay.settings import RelaySettings

FPS = 30
HOLD_FRAMES = 15  # hold_seconds=0.5 in the harness


@pytest.fixture(scope="module")
def cut_clip(blocked_cut_360p: Path) -> tuple[Path, dict]:
    truth = json.loads((SAMPLES / "blocked_cut.truth.json").read_text())
    return blocked_cut_360p, truth


@pytest.mark.parametrize("codec", ["vp8", "h264"])
async def test_every_frame_of_a_blocked_segment_is_redacted_for_every_viewer(tmp_path, cut_clip, codec):
    clip, truth = cut_clip
    segment = truth["segments"][0]
    async with running_relay() as r:
        publisher = asyncio.ensure_future(publish(clip, r.url("whip", "s1"), ice=ICE, codec=codec))
        await r.wait_for(lambda relay: "s1" in relay.streams and relay.streams["s1"].counters.frames_in > 0)
        viewers = [
            watch(r.url("whep", "s1"), record=tmp_path / f"viewer{i}.mkv", ice=ICE, duration=20) for i in range(2)
        ]
        results = await asyncio.gather(*viewers)
        await publisher
        summary = r.summary("s1")
    assert summary["state"] == "ended" and summary["frames_redacted"] >= segment["end"] - segment["start"] + 1
    source = source_luma(clip)
    for i, result in enumerate(results):
        assert result.ended_by_server, "viewers are ended after the publisher leaves"
        recording = read_recording(tmp_path / f"viewer{i}.mkv")
        seen = classify(recording, source)
        inside = {k: v for k, v in seen.items() if segment["start"] <= k <= segment["end"]}
        # The viewer joined before the segment and got nearly all of it...
        assert len(inside) >= 0.8 * (segment["end"] - segment["start"] + 1), (
            f"viewer {i} got {len(inside)} segment frames"
        )
        # ...and not one frame of it unredacted.
        leaked = sorted(k for k, v in inside.items() if v != "slate")
        assert not leaked, f"viewer {i} saw frames {leaked} of the blocked segment"
        # Outside the segment (and the hold after it) the picture is the source's.
        after = segment["end"] + HOLD_FRAMES + 10
        outside = {k: v for k, v in seen.items() if k < segment["start"] or k > after}
        changed = sorted(k for k, v in outside.items() if v != "source")
        assert len(outside) > 60 and not changed, f"viewer {i}: frames {changed} outside the segment were altered"
        _assert_muted_while_slated(recording, seen, segment)


def _assert_muted_while_slated(recording, seen: dict[int, str], segment: dict) -> None:
    """Audio is silent in the middle of the slated segment and audible before it."""
    first_index = min(seen)
    to_sample = lambda index: int((index - first_index) / FPS * 48000)  # noqa: E731
    margin = 12  # frames (0.4 s): audio is placed by arrival time, so allow slack at the edges
    quiet = recording.audio[to_sample(segment["start"] + margin) : to_sample(segment["end"] - margin)]
    loud = recording.audio[to_sample(max(first_index, segment["start"] - 40)) : to_sample(segment["start"] - margin)]
    assert len(quiet) > 4800 and len(loud) > 4800, "recording holds audio around the segment"
    assert float(np.abs(quiet).max()) == 0.0, "audio under the slate must be muted"
    assert float(np.sqrt(np.mean(loud**2))) > 100, "audio outside the slate passes through"


def _shed_once_after(monkeypatch, relay_box: list, after_frames: int) -> list[float]:
    """Make the ingest see a huge decoder backlog once the stream has taken ``after_frames``; returns when."""
    real, shed = compat.decoder_backlog, []

    def backlog(receiver):
        if not shed and relay_box and frames_in(relay_box[0], "s1") > after_frames:
            shed.append(asyncio.get_running_loop().time())
            return 10**6
        return real(receiver)

    monkeypatch.setattr(compat, "decoder_backlog", backlog)
    return shed


@pytest.mark.parametrize("codec", ["vp8", "h264"])
async def test_a_stream_shed_by_its_decoder_shows_video_again_from_the_keyframe_it_asked_for(
    tmp_path, monkeypatch, codec
):
    """After a shed the ingest drops broken pictures until a keyframe; it must see VP8's keyframes too.

    ``keyframe_wait_seconds`` is long here, so only the keyframe the PLI asks for can end the wait
    (a VP8 stream whose keyframes went unseen stayed frozen until the publisher left).
    """
    clip = downscale_clip(SAMPLES / "benign_mix.mp4", tmp_path / "benign_360p.mp4")
    box: list = []
    shed = _shed_once_after(monkeypatch, box, 30)
    settings = RelaySettings(ice=ICE, stream=dataclasses.replace(FAST_END, keyframe_wait_seconds=60.0))
    async with running_relay(settings) as r, publishing(r, clip, "s1", codec=codec):
        box.append(r.relay)
        await r.wait_for(lambda relay: bool(shed), 15)
        guarded = r.summary("s1")["frames_guarded"]
        await r.wait_for(lambda relay: r.summary("s1")["frames_guarded"] > guarded + 30, 10)
    assert r.summary("s1")["frames_dropped"] >= 1, "what was shed (and broken pictures after it) is counted"


async def test_a_publisher_that_sends_no_keyframe_after_a_shed_is_shown_as_it_decodes(tmp_path, monkeypatch, caplog):
    clip = downscale_clip(SAMPLES / "benign_mix.mp4", tmp_path / "benign_360p.mp4")
    box: list = []
    shed = _shed_once_after(monkeypatch, box, 30)
    asked: list[float] = []

    async def ignored_pli(receiver) -> None:  # the publisher never gets the request (lost RTCP, or ignores it)
        asked.append(asyncio.get_running_loop().time())

    monkeypatch.setattr(compat, "send_pli", ignored_pli)
    # ...and no keyframe comes of itself (aiortc's encoder makes one whenever its bitrate changes).
    monkeypatch.setattr(compat._Vp8KeyframeMarks, "decode", lambda self, encoded: self._decoder.decode(encoded))
    settings = RelaySettings(ice=ICE, stream=dataclasses.replace(FAST_END, keyframe_wait_seconds=2.0))
    async with running_relay(settings) as r, publishing(r, clip, "s1", codec="vp8"):
        box.append(r.relay)
        await r.wait_for(lambda relay: bool(shed), 15)
        guarded = r.summary("s1")["frames_guarded"]
        await r.wait_for(lambda relay: r.summary("s1")["frames_guarded"] > guarded + 30, 10)
    assert "no keyframe 2 s after a decoder shed; showing frames as they decode" in caplog.text, caplog.text
    assert len(asked) >= 2 and all(b - a >= 0.9 for a, b in itertools.pairwise(asked)), (
        "asked again about once a second"
    )

"""Streams over time: publisher leaving, reconnecting, picture size changing, viewers
leaving, the guard stalling or the worker dying (fail closed), overload (bounded), and
nothing left behind afterwards.  Real aiortc peers over loopback."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from pathlib import Path

import av
import pytest
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from harness import (
    ICE,
    SAMPLES,
    classify,
    downscale_clip,
    looks_like_slate,
    read_recording,
    running_relay,
    sample_lists,
    source_luma,
    two_size_clip,
)

from livesafe.clients import ClientError, publish, watch
from livesafe.relay.fanout import PacketTrack
from livesafe.relay.settings import RelaySettings, StreamAccess
from livesafe.relay.stream import StreamSettings


@pytest.fixture(scope="module")
def benign_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return downscale_clip(SAMPLES / "benign_mix.mp4", tmp_path_factory.mktemp("clips") / "benign_360p.mp4")


def _guard_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("guard-")]


async def test_publisher_leaving_gives_viewers_the_slate_then_ends_them_and_frees_everything(tmp_path, benign_clip):
    tasks_before = len(asyncio.all_tasks())
    async with running_relay() as r:
        publisher = asyncio.ensure_future(publish(benign_clip, r.url("whip", "s"), ice=ICE, duration=3))
        await r.wait_for(lambda relay: "s" in relay.streams and relay.streams["s"].counters.frames_in > 0)
        result = await watch(r.url("whep", "s"), ice=ICE, record=tmp_path / "v.mkv", duration=15)
        await publisher
        assert result.ended_by_server and result.seconds < 10, "viewer is ended ~1 s (grace) after the publisher"
        await r.wait_for(lambda relay: not relay.streams and not relay.sessions)
        assert r.summary("s")["state"] == "ended"
        assert _guard_threads() == []
    recording = read_recording(tmp_path / "v.mkv")
    seen = classify(recording, source_luma(benign_clip))
    assert max(k for k, v in seen.items() if v == "source") >= 60
    # After the last guarded frame the viewer got the slate until it was ended.
    assert all(looks_like_slate(y) for y in recording.luma[-3:])
    await asyncio.sleep(0.2)
    assert len(asyncio.all_tasks()) <= tasks_before + 1, "no tasks left running"


async def test_publisher_reconnecting_with_its_key_replaces_the_old_session_and_viewers_stay(benign_clip):
    settings = RelaySettings(
        ice=ICE, streams={"s": StreamAccess(key="k3y")}, stream=StreamSettings(ended_grace_seconds=1.0)
    )
    async with running_relay(settings) as r:
        first = asyncio.ensure_future(
            publish(benign_clip, r.url("whip", "s"), token="k3y", ice=ICE, loop=True, duration=20)
        )
        await r.wait_for(lambda relay: "s" in relay.streams and relay.streams["s"].counters.frames_in > 0)
        viewer = asyncio.ensure_future(watch(r.url("whep", "s"), ice=ICE, duration=5))
        await asyncio.sleep(1.5)
        stream = r.relay.streams["s"]
        old_session = stream.publisher
        second = asyncio.ensure_future(publish(benign_clip, r.url("whip", "s"), token="k3y", ice=ICE, duration=5))
        await r.wait_for(lambda relay: relay.streams["s"].publisher is not old_session)
        frames_at_switch = stream.counters.frames_in
        with pytest.raises(ClientError):
            await asyncio.wait_for(first, 15)  # the server closed the old session
        result = await viewer
        assert r.relay.streams["s"] is stream, "same stream object: viewers were not dropped"
        assert stream.counters.frames_in > frames_at_switch + 30, "frames kept flowing from the new session"
        assert not result.ended_by_server and result.frames > 100
        await second


async def test_a_picture_size_change_mid_stream_reaches_the_viewer(tmp_path):
    clip = two_size_clip(tmp_path / "sizes.ts", [(640, 360), (480, 272)], frames_each=60)
    async with running_relay() as r:
        publisher = asyncio.ensure_future(publish(clip, r.url("whip", "s"), ice=ICE))
        await r.wait_for(lambda relay: "s" in relay.streams and relay.streams["s"].counters.frames_in > 0)
        result = await watch(r.url("whep", "s"), ice=ICE, duration=10)
        await publisher
    assert result.sizes == [(640, 360), (480, 272)]
    assert result.frames >= 80


async def test_a_viewer_leaving_does_not_disturb_the_other(benign_clip):
    async with running_relay() as r:
        publisher = asyncio.ensure_future(publish(benign_clip, r.url("whip", "s"), ice=ICE, duration=5))
        await r.wait_for(lambda relay: "s" in relay.streams and relay.streams["s"].counters.frames_in > 0)
        stays = asyncio.ensure_future(watch(r.url("whep", "s"), ice=ICE, duration=3.5))
        leaves = await watch(r.url("whep", "s"), ice=ICE, duration=1.0)
        await r.wait_for(lambda relay: len(relay.streams["s"].viewers) == 1)
        result = await stays
        await publisher
    assert leaves.frames > 10
    assert result.frames >= 75 and not result.ended_by_server


class _StallOnce:
    """The lists, but the 12th lookup (a sample on the worker thread) hangs for ``seconds``."""

    def __init__(self, seconds: float) -> None:
        self._lists = sample_lists()
        self._seconds = seconds
        self.calls = 0

    def __call__(self):
        self.calls += 1
        if self.calls == 12:
            time.sleep(self._seconds)
        return self._lists()


async def test_a_stalled_guard_fails_closed_to_the_slate_then_recovers(tmp_path, benign_clip, caplog):
    events = []
    caplog.set_level(logging.INFO, logger="livesafe")
    async with running_relay(matcher=_StallOnce(2.0)) as r:
        logged = r.relay._on_event
        r.relay._on_event = lambda event: (events.append(event), logged(event))
        publisher = asyncio.ensure_future(publish(benign_clip, r.url("whip", "s"), ice=ICE, duration=6))
        await r.wait_for(lambda relay: "s" in relay.streams)
        result = await watch(r.url("whep", "s"), ice=ICE, record=tmp_path / "v.mkv", duration=5.5)
        stream = r.relay.streams["s"]
        stalls, slates, dropped = stream.counters.stalls, stream.counters.slate_frames, stream.counters.frames_dropped
        await publisher
    assert stalls == 1 and slates >= 5, "the watchdog slated the stalled stream"
    assert any(e.type == "guard.error" and "stalled" in e.details["error"] for e in events)
    assert any(  # the log says it at WARNING: an operator must see a stream the guard could not check
        record.levelno >= logging.WARNING and "guard.error" in record.getMessage() for record in caplog.records
    )
    assert dropped > 0, "frames that arrived during the stall were dropped, not queued"
    recording = read_recording(tmp_path / "v.mkv")
    seen = classify(recording, source_luma(benign_clip))
    # Guarded pictures resumed after the stall (and the viewer's decoder recovered at a keyframe).
    assert sum(v == "source" for k, v in seen.items() if k > 120) > 30
    assert result.frames > 60


async def test_a_dead_worker_fails_closed_for_good(monkeypatch, benign_clip):
    from livesafe.relay import worker as worker_module

    original = worker_module.GuardWorker._encode
    calls = {"n": 0}

    def failing_encode(self, *args):
        calls["n"] += 1
        if calls["n"] == 40:
            raise RuntimeError("encoder exploded")
        return original(self, *args)

    monkeypatch.setattr(worker_module.GuardWorker, "_encode", failing_encode)
    async with running_relay() as r:
        publisher = asyncio.ensure_future(publish(benign_clip, r.url("whip", "s"), ice=ICE, duration=4))
        await r.wait_for(lambda relay: "s" in relay.streams)
        viewer = asyncio.ensure_future(watch(r.url("whep", "s"), ice=ICE, duration=3.5))
        await r.wait_for(lambda relay: relay.streams["s"].counters.slate_frames >= 3, timeout=10)
        assert r.summary("s")["state"] == "redacted"
        slates = r.relay.streams["s"].counters.slate_frames
        await viewer
        assert r.relay.streams["s"].counters.slate_frames > slates, "still slating"
        await publisher


async def test_overload_drops_frames_instead_of_queueing_them(benign_clip):
    """A guard slower than the frame rate: latency stays bounded, the excess is dropped."""

    class Slow:
        def __init__(self) -> None:
            self._lists = sample_lists()

        def __call__(self):
            time.sleep(0.08)  # every sample; with sample_every=1 that is 12 fps of capacity for 30 fps
            return self._lists()

    from livesafe.guard.stream_guard import GuardSettings

    guard = GuardSettings(sample_every=1, deep_every=1, delay_frames=2, hold_seconds=0.5)
    async with running_relay(matcher=Slow(), guard=guard) as r:
        publisher = asyncio.ensure_future(publish(benign_clip, r.url("whip", "s"), ice=ICE, duration=5))
        await r.wait_for(lambda relay: "s" in relay.streams)
        result = await watch(r.url("whep", "s"), ice=ICE, duration=4.5)
        stream = r.relay.streams["s"]
        latency = sorted(stream.latency)
        dropped = stream.counters.frames_dropped
        await publisher
    assert dropped > 30
    # ingest_frames (4) + delay (2) frames at most wait, each ~0.08 s: bounded, not growing.
    assert latency and latency[-1] < 1.5, f"worst latency {latency[-1]:.2f} s"
    assert result.frames > 10


def _packet(keyframe: bool) -> av.Packet:
    packet = av.Packet(b"\x00" * 10)
    packet.is_keyframe = keyframe
    return packet


async def test_a_slow_viewer_queue_resyncs_at_a_keyframe_instead_of_growing():
    requested = []
    track = PacketTrack("video", capacity=3, request_keyframe=lambda: requested.append(1))
    track.offer(_packet(False))  # before any keyframe: not sent (undecodable)
    assert len(track._queue) == 0
    for keyframe in (True, False, False):
        track.offer(_packet(keyframe))
    track.offer(_packet(False))  # overflow
    assert len(track._queue) == 0 and requested == [1] and track.packets_dropped == 5
    track.offer(_packet(False))
    track.offer(_packet(True))
    assert len(track._queue) == 1
    assert (await track.recv()).is_keyframe
    # A keyframe arriving at a full queue starts the resync itself.
    for keyframe in (True, False, False, True):
        track.offer(_packet(keyframe))
    assert [p.is_keyframe for p, _ in track._queue] == [True]
    track.stop()
    with pytest.raises(MediaStreamError):
        await track.recv()


async def test_a_viewer_queue_never_holds_packets_older_than_its_limit():
    requested = []
    track = PacketTrack("video", capacity=100, request_keyframe=lambda: requested.append(1), max_age=0.05)
    track.offer(_packet(True))
    track.offer(_packet(False))
    await asyncio.sleep(0.1)  # nobody reads: the viewer's connection is stuck
    track.offer(_packet(False))
    assert len(track._queue) == 0 and requested == [1], "stale packets dropped, keyframe asked for"
    track.offer(_packet(True))
    assert len(track._queue) == 1
    track.stop()


async def test_viewer_churn_leaves_nothing_behind(benign_clip):
    """Three rounds of four viewers joining and leaving: sessions, tracks and tasks all go."""
    async with running_relay() as r:
        publisher = asyncio.ensure_future(publish(benign_clip, r.url("whip", "s"), ice=ICE, loop=True, duration=30))
        await r.wait_for(lambda relay: "s" in relay.streams and relay.streams["s"].counters.frames_in > 0)
        await asyncio.sleep(0.5)
        baseline_tasks = len(asyncio.all_tasks())
        for _ in range(3):
            results = await asyncio.gather(*(watch(r.url("whep", "s"), ice=ICE, duration=1.0) for _ in range(4)))
            assert all(result.frames > 5 for result in results)
        await r.wait_for(lambda relay: not relay.streams["s"].viewers and len(relay.sessions) == 1)
        await asyncio.sleep(0.5)
        assert len(asyncio.all_tasks()) <= baseline_tasks + 2
        stream = r.relay.streams["s"]
        assert stream.worker.encoders.codecs == frozenset() or stream.delivery.codecs == frozenset()
        publisher.cancel()
        await asyncio.gather(publisher, return_exceptions=True)


class _FramesThenSilence(MediaStreamTrack):
    """A live source that sends ``frames`` and then nothing, without hanging up."""

    kind = "video"

    def __init__(self, frames: list[av.VideoFrame]) -> None:
        super().__init__()
        self._frames = frames

    async def recv(self) -> av.VideoFrame:
        if not self._frames:
            await asyncio.Event().wait()  # connected, silent
        await asyncio.sleep(1 / 30)
        return self._frames.pop(0)


async def test_frames_in_the_delay_buffer_leave_when_the_source_goes_quiet(benign_clip):
    from livesafe.guard.stream_guard import GuardSettings, StreamGuard
    from livesafe.relay.stream import LiveStream, Viewer

    with av.open(str(benign_clip)) as container:
        frames = [frame for _, frame in zip(range(20), container.decode(video=0), strict=False)]
    guard = StreamGuard(sample_lists(), GuardSettings())
    stream = LiveStream(
        "s", guard, StreamSettings(max_delay_seconds=0.4), on_event=lambda e: None, on_ended=lambda s: None
    )
    track = PacketTrack("video", capacity=100, max_age=10)

    async def close() -> None:
        pass

    stream.add_viewer(Viewer("v", "vp8", track, None, close))
    stream.attach_publisher(object(), _FramesThenSilence(frames), None, None)
    await asyncio.sleep(20 / 30 + 1.0)
    assert guard.stats.frames_out == 20, "all 20 frames left the 10-frame buffer although no 21st came"
    assert len(track._queue) == 20 and track._queue[0][0].is_keyframe
    await stream.end()


async def test_the_failsafe_lets_through_only_whichever_owns_the_viewers():
    """Slate and guarded frames take one path to the viewers; only the current owner's pass."""
    from livesafe.guard.stream_guard import GuardSettings, StreamGuard
    from livesafe.policy import Action
    from livesafe.relay.encoder import Encoded
    from livesafe.relay.stream import LiveStream, Viewer

    guard = StreamGuard(sample_lists(), GuardSettings())
    stream = LiveStream("s", guard, StreamSettings(), on_event=lambda e: None, on_ended=lambda s: None)
    track = PacketTrack("video", capacity=100, max_age=10)

    async def close() -> None:
        pass

    stream.add_viewer(Viewer("v", "vp8", track, None, close))
    slate = Encoded(time.monotonic(), Action.SLATE, {"vp8": [_packet(True)]}, slate=True)
    guarded = Encoded(time.monotonic(), Action.PASS, {"vp8": [_packet(True)]})
    stream.failsafe.deliver([slate])
    assert len(track._queue) == 0 and stream.counters.slate_frames == 0, "a slate late for its turn is dropped"
    stream.failsafe.worker_failed("test")
    stream.failsafe.deliver([guarded, slate])
    assert len(track._queue) == 1 and stream.counters.slate_frames == 1, "a failed worker: the slate only"
    assert stream.counters.frames_out == 1, "the guarded frame was counted, not shown"
    await stream.end()

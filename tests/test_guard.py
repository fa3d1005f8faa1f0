"""StreamGuard end to end on real PyAV frames: zero leak, retroactive redaction, hold, events,
fail-closed, action precedence, hot reload, and that redaction really defeats the hash.

Synthetic frames use scikit-image stand-in photos (chelsea/coffee/rocket play "blocked", astronaut
is benign).  Nothing here writes frames to disk.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from fractions import Fraction
from functools import cache
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from harness import BLOCKLIST, LIST_HEX, SAMPLES, assert_pixel_free

from livesafe.events import GUARD_ERROR, MATCH_CLEARED, MATCH_STARTED, GuardEvent
from livesafe.guard.frames import luma_view
from livesafe.guard.matcher import ORIENTATIONS, LiveMatcher, Matcher
from livesafe.guard.redact import redact
from livesafe.guard.search import VIEW_KINDS
from livesafe.guard.stream_guard import GuardedFrame, GuardSettings, StreamGuard
from livesafe.lists import ListSpec
from livesafe.policy import Action
from livesafe.signals import SIGNALS

pytest.importorskip("skimage.data")
from sample_streams.synthetic import benign_images, blocked_images, letterbox, picture_in_picture  # noqa: E402

CHELSEA_HEX, COFFEE_HEX, ROCKET_HEX = LIST_HEX
CLIPS = sorted(p.name for p in SAMPLES.glob("*.mp4"))
PDQ = SIGNALS["pdq"]
FPS = 30
W, H = 640, 360


# --- helpers ---------------------------------------------------------------------------------


def hamming(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.unpackbits(np.bitwise_xor(a, b)).sum())


def hex_bytes(text: str) -> np.ndarray:
    return np.frombuffer(bytes.fromhex(text), dtype=np.uint8)


def whole_frame_distance(frame: av.VideoFrame, target_hex: str) -> tuple[int, int]:
    """(min distance over the 8 orientations of the frame's whole-frame PDQ to target, quality)."""
    y, scale = luma_view(frame)
    hashes = PDQ.hash_luma(y, scale, all_orientations=True)
    target = hex_bytes(target_hex)
    return min(hamming(v, target) for v in hashes.variants), hashes.quality


@cache
def yuv_of(name: str, width: int = W, height: int = H) -> np.ndarray:
    """A stand-in photo scaled to the frame size, as a read-only yuv420p array."""
    images = {**blocked_images(), **benign_images()}
    rgb = cv2.resize(np.asarray(images[name]), (width, height), interpolation=cv2.INTER_AREA)
    yuv = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24").reformat(format="yuv420p").to_ndarray()
    yuv.flags.writeable = False
    return yuv


def frame_from_yuv(yuv: np.ndarray, index: int | None) -> av.VideoFrame:
    frame = av.VideoFrame.from_ndarray(np.array(yuv), format="yuv420p")
    if index is not None:
        frame.pts = index
        frame.time_base = Fraction(1, FPS)
    return frame


def frame_of(name: str, index: int | None) -> av.VideoFrame:
    return frame_from_yuv(yuv_of(name), index)


def run(guard: StreamGuard, frames) -> list[GuardedFrame]:
    out: list[GuardedFrame] = []
    for frame in frames:
        out += guard.push(frame)
    out += guard.flush()
    return out


def sample_matcher(**spec) -> LiveMatcher:
    return LiveMatcher([ListSpec(BLOCKLIST, **spec)])


def redacted(out: list[GuardedFrame]) -> list[int]:
    return [item.index for item in out if item.action is not Action.PASS]


def assert_event_is_small_and_pixel_free(event: GuardEvent) -> None:
    text = event.to_json()
    assert len(text) < 1500, f"event JSON is {len(text)} bytes"
    assert_pixel_free(json.loads(text), "event", max_string=200)


def assert_match_fields(event: GuardEvent, *, list_name: str, category: str, width: int, height: int) -> None:
    assert event.list_name == list_name
    assert event.category == category
    assert event.signal == "pdq"
    assert isinstance(event.distance, int) and 0 <= event.distance <= 31
    assert event.matched_hash in LIST_HEX
    assert re.fullmatch(r"[0-9a-f]{64}", event.query_hash)
    assert hamming(hex_bytes(event.query_hash), hex_bytes(event.matched_hash)) == event.distance
    x, y, w, h = event.region
    assert all(isinstance(v, int) for v in event.region)
    assert 0 <= x and 0 <= y and w > 0 and h > 0 and x + w <= width and y + h <= height, event.region
    assert event.region_kind in VIEW_KINDS
    assert event.orientation in ORIENTATIONS
    assert event.quality >= 50
    assert_event_is_small_and_pixel_free(event)


# --- 1. the sample clips ---------------------------------------------------------------------

# Segments that must be caught on their own merits, not only carried by the 3 s hold of an
# earlier match: the README's whole-frame distance <= 31 rows, plus the bar / region / perspective
# cases the region search is there for.  (Not listed, because today only the hold covers them:
# coffee overlay_text, the end of rocket pip and chelsea pip, rocket crop_zoom, chelsea rotate_small.)
INDEPENDENT = {
    "blocked_cut.mp4": {75},
    "blocked_degraded.mp4": {15, 87, 117, 159},
    "blocked_letterbox_pip.mp4": {30},
    "blocked_screen.mp4": {45},
    "blocked_transforms.mp4": {15, 39, 72, 96, 120},
}


@pytest.mark.parametrize("clip", CLIPS)
def test_sample_clip_zero_leak_order_and_timing(clip: str) -> None:
    truth = json.loads((SAMPLES / clip).with_suffix(".truth.json").read_text())
    lists = sample_matcher()
    events: list[GuardEvent] = []
    guard = StreamGuard(lambda: lists.current, stream_id=clip, on_event=events.append)
    # Same frames, no hold: every segment in INDEPENDENT must be caught by its own samples.
    strict = StreamGuard(lambda: lists.current, GuardSettings(hold_seconds=0.0))
    out: list[GuardedFrame] = []
    strict_out: list[GuardedFrame] = []
    pts_in: list[int | None] = []
    with av.open(str(SAMPLES / clip)) as container:
        for frame in container.decode(video=0):
            pts_in.append(frame.pts)
            got = guard.push(frame)
            assert guard.stats.frames_in - guard.stats.frames_out == min(len(pts_in), guard.settings.delay_frames)
            out += got
            strict_out += strict.push(frame)
    out += guard.flush()
    strict_out += strict.flush()

    # One out per in, in order, untouched timing and size.
    assert len(pts_in) == truth["frames"]
    assert [item.index for item in out] == list(range(len(pts_in)))
    assert [item.frame.pts for item in out] == pts_in
    assert all((item.frame.width, item.frame.height) == (truth["width"], truth["height"]) for item in out)
    assert guard.stats.frames_in == guard.stats.frames_out == len(pts_in)

    blocked = {i for seg in truth["segments"] for i in range(seg["start"], seg["end"] + 1)}
    leaked = sorted(i for i in blocked if out[i].action is Action.PASS)
    assert not leaked, f"{clip}: blocked frames passed unredacted: {leaked}"

    for event in events:
        event.to_json()  # every event must serialise (a sink that fails would lose it)
    if not truth["segments"]:
        assert redacted(out) == [], f"{clip}: benign frames redacted: {redacted(out)}"
        assert events == []
        return
    started = [e for e in events if e.type == MATCH_STARTED]
    assert started and events[0].type == MATCH_STARTED
    for event in started:
        assert_match_fields(event, list_name="blocklist", category="test", width=truth["width"], height=truth["height"])
    # Redaction reaches back to the cut where the first blocked image appeared, not before.
    assert min(redacted(out)) == min(seg["start"] for seg in truth["segments"])

    for seg in truth["segments"]:
        if seg["start"] in INDEPENDENT[clip]:
            missed = [i for i in range(seg["start"], seg["end"] + 1) if strict_out[i].action is Action.PASS]
            assert not missed, f"{clip} {seg['image']}/{seg['transform']}: missed without hold: {missed}"


# --- 2. retroactive redaction ahead of the first sampled hit ---------------------------------


def fade_frames(n: int = 110, fade_from: int = 20, fade_frames_count: int = 30) -> list[av.VideoFrame]:
    """astronaut, cross-fading into chelsea over ``fade_frames_count`` frames: never a cut."""
    a, b = yuv_of("astronaut").astype(np.float32), yuv_of("chelsea").astype(np.float32)
    frames = []
    for i in range(n):
        alpha = min(1.0, max(0.0, (i - fade_from) / fade_frames_count))
        frames.append(frame_from_yuv(np.clip(a * (1 - alpha) + b * alpha + 0.5, 0, 255).astype(np.uint8), i))
    return frames


@pytest.mark.parametrize("sample_every,delay_frames", [(5, 10), (5, 5), (3, 3), (1, 1)])
def test_frames_before_a_periodic_first_hit_are_redacted(sample_every: int, delay_frames: int) -> None:
    frames = fade_frames()
    # Which frames would match on their own (whole frame, the list's threshold)?
    blocked = [i for i, f in enumerate(frames) if whole_frame_distance(f, CHELSEA_HEX)[0] <= 31]
    assert blocked and blocked[0] > 20 and blocked[-1] == len(frames) - 1

    lists = sample_matcher()
    events: list[GuardEvent] = []
    guard = StreamGuard(
        lambda: lists.current,
        GuardSettings(sample_every=sample_every, delay_frames=delay_frames, deep_every=1),
        on_event=events.append,
    )
    out = run(guard, frames)
    assert [item.index for item in out] == list(range(len(frames)))

    sampled = [item.index for item in out if item.sampled]
    assert sampled == list(range(0, len(frames), sample_every)), "a cut was detected: the fade must be gradual"
    started = [e for e in events if e.type == MATCH_STARTED]
    assert len(started) == 1
    hit = started[0].frame_index
    assert hit in sampled and hit - sample_every in sampled  # first hit on a periodic sample
    previous_clean = hit - sample_every
    assert out[previous_clean].sampled
    ahead = list(range(previous_clean + 1, hit + 1))
    assert all(out[i].action is not Action.PASS for i in ahead), [(i, out[i].action) for i in ahead]
    assert started[0].details["redacted_from_frame"] <= previous_clean + 1
    leaked = [i for i in blocked if out[i].action is Action.PASS]
    assert not leaked, f"frames that match on their own passed: {leaked}"


def test_content_arriving_on_an_unsampled_cut_is_redacted_when_a_later_cut_matches() -> None:
    # Samples at 0, 5, ..., 95.  Chelsea cuts in at 96 (only 1 frame after a sample: not sampled,
    # min_sample_gap=2); at 98 a second cut to coffee is sampled and matches.
    names = ["astronaut"] * 96 + ["chelsea"] * 2 + ["coffee"] * 20 + ["astronaut"] * 10
    lists = sample_matcher()
    out = run(StreamGuard(lambda: lists.current), [frame_of(n, i) for i, n in enumerate(names)])
    shown = [i for i, n in enumerate(names) if n != "astronaut"]
    leaked = [i for i in shown if out[i].action is Action.PASS]
    assert not leaked, f"blocked frames passed: {leaked}"


def test_release_checks_the_newest_frame_before_letting_the_buffer_go() -> None:
    """A live source that stops: frames still in the delay buffer leave, checked, not held forever."""
    names = ["astronaut"] * 31 + ["chelsea"]  # chelsea cuts in at 31, one frame after the sample at 30
    lists = sample_matcher()
    guard = StreamGuard(lambda: lists.current)
    out = [item for i, n in enumerate(names) for item in guard.push(frame_of(n, i))]
    assert guard.buffered == 10 and not any(item.sampled for item in out if item.index == 31)
    released = guard.release()
    assert [item.index for item in out + released] == list(range(32)) and guard.buffered == 0
    assert redacted(out + released) == [31], "the unsampled newest frame was checked, and only it matched"
    assert guard.release() == []


# --- 3. hold, release and events -------------------------------------------------------------


def test_hold_then_release_at_a_clean_sample_with_sensible_events() -> None:
    names = ["astronaut"] * 30 + ["chelsea"] * 30 + ["astronaut"] * 140
    lists = sample_matcher(name="stand-ins", category="unit-test")
    events: list[GuardEvent] = []
    settings = GuardSettings()
    guard = StreamGuard(lambda: lists.current, settings, stream_id="cam-1", on_event=events.append)
    out = run(guard, [frame_of(n, i) for i, n in enumerate(names)])
    assert len(out) == len(names)

    sampled = [item.index for item in out if item.sampled]
    deep = [item.index for item in out if item.sampled and item.deep]
    last_match = max(i for i in sampled if 30 <= i < 60)
    t = lambda i: float(Fraction(i, FPS))  # noqa: E731 - media time as the guard computes it
    # Only a deep sample may release: a light one does not look for windows.
    release = min(i for i in deep if i >= 60 and t(i) - t(last_match) >= settings.hold_seconds)
    assert release - last_match <= settings.hold_seconds * FPS + settings.sample_every * settings.deep_every
    assert redacted(out) == list(range(30, release)), "redaction must run from the cut to the releasing clean sample"
    assert all(out[i].action is Action.BLUR for i in range(30, release))
    assert out[release].action is Action.PASS

    assert [e.type for e in events] == [MATCH_STARTED, MATCH_CLEARED]
    started, cleared = events
    assert_match_fields(started, list_name="stand-ins", category="unit-test", width=W, height=H)
    assert started.matched_hash == CHELSEA_HEX
    assert started.stream_id == "cam-1" and started.action == "blur"
    assert started.frame_index == 30 and started.pts == 30 and started.media_time == pytest.approx(1.0)
    assert started.details["redacted_from_frame"] == 30
    assert cleared.frame_index == release and cleared.media_time == pytest.approx(t(release), abs=1e-5)
    assert cleared.details["lists"] == ["stand-ins"] and cleared.details["stream_ended"] is False
    assert cleared.details["duration"] == pytest.approx(t(release) - 1.0, abs=1e-5)
    assert_event_is_small_and_pixel_free(cleared)
    assert started.id != cleared.id


def test_stream_ending_while_redacting_clears_with_stream_ended() -> None:
    names = ["astronaut"] * 20 + ["chelsea"] * 20
    lists = sample_matcher()
    events: list[GuardEvent] = []
    out = run(StreamGuard(lambda: lists.current, on_event=events.append), [frame_of(n, i) for i, n in enumerate(names)])
    assert redacted(out) == list(range(20, 40))
    assert [e.type for e in events] == [MATCH_STARTED, MATCH_CLEARED]
    assert events[1].details["stream_ended"] is True


# --- 4. fail closed --------------------------------------------------------------------------


class _ExplodingMatcher(Matcher):
    def lookup(self, signal, queries, margin=0):  # noqa: ANN001
        raise RuntimeError("index corrupted")


def test_a_check_that_keeps_failing_slates_every_frame_but_says_so_once() -> None:
    """One guard.error per run of failures: each pages moderators, so one per frame would be a flood."""
    lists = sample_matcher()
    broken = _ExplodingMatcher(lists.current.blocklists)
    state = {"index": -1}
    events: list[GuardEvent] = []
    guard = StreamGuard(lambda: broken if 10 <= state["index"] < 70 else lists.current, GuardSettings(hold_seconds=0.5),
                        on_event=events.append)  # fmt: skip
    out: list[GuardedFrame] = []
    for i in range(110):
        state["index"] = i
        out += guard.push(frame_of("astronaut", i))
    out += guard.flush()
    assert guard.stats.errors > 10  # every failing sample counted...
    assert [e.type for e in events] == [GUARD_ERROR, MATCH_CLEARED]  # ...one event for the run
    assert all(out[i].action is Action.SLATE for i in range(10, 70))


@pytest.mark.parametrize("how", ["provider raises", "match raises"])
def test_a_failing_check_slates_and_the_guard_recovers(how: str) -> None:
    lists = sample_matcher()
    broken = _ExplodingMatcher(lists.current.blocklists)
    fail_at = {20}
    state = {"index": -1}

    def provider() -> Matcher:
        if state["index"] in fail_at:
            if how == "provider raises":
                raise RuntimeError("list store unreachable")
            return broken
        return lists.current

    names = ["astronaut"] * 80 + ["chelsea"] * 20 + ["astronaut"] * 10
    events: list[GuardEvent] = []
    guard = StreamGuard(provider, GuardSettings(hold_seconds=0.5), on_event=events.append)
    out: list[GuardedFrame] = []
    for i, name in enumerate(names):
        state["index"] = i
        out += guard.push(frame_of(name, i))
    out += guard.flush()

    assert [item.index for item in out] == list(range(len(names)))
    errors = [e for e in events if e.type == GUARD_ERROR]
    assert len(errors) == 1 and errors[0].frame_index == 20 and errors[0].action == "slate"
    assert "RuntimeError" in errors[0].details["error"]
    assert_event_is_small_and_pixel_free(errors[0])
    assert guard.stats.errors == 1
    # The failing frame and everything buffered with it (10..20), and the hold after it, are slated.
    assert all(out[i].action is Action.PASS for i in range(10))
    assert all(out[i].action is Action.SLATE for i in range(10, 35)), [out[i].action.name for i in range(10, 35)]
    # Then it releases and keeps working: benign passes, blocked is caught again.
    assert all(out[i].action is Action.PASS for i in range(40, 80))
    assert all(out[i].action is Action.BLUR for i in range(80, 100))
    assert [e.type for e in events] == [GUARD_ERROR, MATCH_CLEARED, MATCH_STARTED, MATCH_CLEARED]
    assert events[2].frame_index == 80


# --- 5. action precedence and settings -------------------------------------------------------


def _copy_list(tmp_path: Path, name: str, hexes: list[str]) -> Path:
    path = tmp_path / f"{name}.txt"
    path.write_text("".join(f"pdq {h}\n" for h in hexes))
    return path


@pytest.mark.parametrize("slate_first", [False, True])
def test_slate_wins_over_blur_when_two_lists_match(tmp_path: Path, slate_first: bool) -> None:
    specs = [
        ListSpec(_copy_list(tmp_path, "soft", LIST_HEX), action="blur", category="a"),
        ListSpec(_copy_list(tmp_path, "hard", LIST_HEX), action="slate", category="b"),
    ]
    lists = LiveMatcher(specs[::-1] if slate_first else specs)
    events: list[GuardEvent] = []
    names = ["astronaut"] * 20 + ["chelsea"] * 30 + ["astronaut"] * 20
    out = run(
        StreamGuard(lambda: lists.current, GuardSettings(hold_seconds=0.0), on_event=events.append),
        [frame_of(n, i) for i, n in enumerate(names)],
    )
    assert redacted(out) and all(out[i].action is Action.SLATE for i in redacted(out))
    assert set(range(20, 50)) <= set(redacted(out))
    assert events[0].type == MATCH_STARTED and events[0].action == "slate"
    assert sorted(events[-1].details["lists"]) == ["hard", "soft"]


def test_blur_episode_escalates_to_slate(tmp_path: Path) -> None:
    lists = LiveMatcher(
        [
            ListSpec(_copy_list(tmp_path, "soft", [CHELSEA_HEX]), action="blur"),
            ListSpec(_copy_list(tmp_path, "hard", [COFFEE_HEX]), action="slate"),
        ]
    )
    names = ["astronaut"] * 20 + ["chelsea"] * 30 + ["coffee"] * 20 + ["astronaut"] * 10
    out = run(StreamGuard(lambda: lists.current), [frame_of(n, i) for i, n in enumerate(names)])
    assert all(out[i].action is not Action.PASS for i in range(20, 80))
    assert all(out[i].action is Action.BLUR for i in range(20, 39))
    assert all(out[i].action is Action.SLATE for i in range(50, 80))


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(sample_every=5, delay_frames=4),
        dict(sample_every=10, delay_frames=9),
        dict(sample_every=0, delay_frames=10),
        dict(hold_seconds=-0.1),
        dict(sample_every=5, delay_frames=9, deep_every=2),
        dict(deep_every=0),
    ],
)
def test_invalid_settings_are_rejected(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        GuardSettings(**kwargs)


def test_delay_equal_to_the_deep_sampling_gap_is_allowed() -> None:
    assert GuardSettings(sample_every=4, delay_frames=4, deep_every=1).delay_frames == 4
    assert GuardSettings(sample_every=4, delay_frames=8, deep_every=2).delay_frames == 8


# --- 6. hot reload ---------------------------------------------------------------------------


def _rewrite(path: Path, text: str) -> None:
    before = path.stat().st_mtime_ns
    path.write_text(text)
    os.utime(path, ns=(before + 2_000_000_000, before + 2_000_000_000))  # a distinct mtime even on coarse clocks


def test_hot_reload_mid_stream_applies_at_once_and_drops_no_frame(tmp_path: Path) -> None:
    path = tmp_path / "live.txt"
    path.write_text("")
    lists = LiveMatcher([ListSpec(path, allow_empty=True)])
    assert len(lists.current.blocklists[0]) == 0
    events: list[GuardEvent] = []
    guard = StreamGuard(lambda: lists.current, GuardSettings(hold_seconds=0.0), on_event=events.append)

    names = ["astronaut"] * 30 + ["chelsea"] * 30 + ["chelsea"] * 30 + ["astronaut"] * 15 + ["chelsea"] * 20
    out: list[GuardedFrame] = []
    messages: list[str] = []
    for i, name in enumerate(names):
        if i == 60:
            assert lists.reload_if_changed() == []  # nothing changed yet
            _rewrite(path, f"# now with the cat\npdq {CHELSEA_HEX}\n")
            messages = lists.reload_if_changed()
        if i == 95:
            _rewrite(path, f"pdq {CHELSEA_HEX}\nthis line is bad\n")
            bad = lists.reload_if_changed()
            assert len(bad) == 1 and "kept previous version" in bad[0] and f"{path}:2:" in bad[0], bad
            assert lists.reload_if_changed() == []  # a broken file is reported once, not re-parsed every poll
        out += guard.push(frame_of(name, i))
    out += guard.flush()

    assert len(messages) == 1 and messages[0].startswith("reloaded list 'live'") and "1 hashes" in messages[0]
    assert len(out) == len(names) and [item.index for item in out] == list(range(len(names)))
    # Before the reload the cat was not listed and passed (the list was empty); afterwards every cat frame is redacted.
    assert all(out[i].action is Action.PASS for i in range(30, 50))
    assert all(out[i].action is not Action.PASS for i in range(60, 90))
    # After the refused reload the previous list still applies.
    assert all(out[i].action is Action.PASS for i in range(95, 105))
    assert all(out[i].action is not Action.PASS for i in range(105, 125))
    assert [e.type for e in events].count(MATCH_STARTED) == 2


# --- 7. what redaction does to the hash ------------------------------------------------------


def _stand_in_frames() -> list[tuple[str, av.VideoFrame]]:
    rng = np.random.default_rng(3)
    frames = []
    for name, image in blocked_images().items():
        for kind, rgb in (
            ("full", cv2.resize(np.asarray(image), (1280, 720), interpolation=cv2.INTER_AREA)),
            ("letterbox", letterbox(image, rng)),
            ("pip", picture_in_picture(image, rng)),
        ):
            frames.append(
                (
                    f"{name}/{kind}",
                    av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24").reformat(format="yuv420p"),
                )
            )
    return frames


def test_blur_defeats_the_hash_and_redacted_frames_never_match_again() -> None:
    lists = sample_matcher()
    recheck: list[av.VideoFrame] = []
    for label, frame in _stand_in_frames():
        frame.pts, frame.time_base = 7, Fraction(1, FPS)
        y, scale = luma_view(frame)
        original = PDQ.hash_luma(y, scale).variants[0]
        for action in (Action.BLUR, Action.SLATE):
            out = redact(frame, action)
            assert (out.width, out.height) == (frame.width, frame.height)
            assert out.pts == 7 and out.time_base == Fraction(1, FPS)
            y2, scale2 = luma_view(out)
            hashes = PDQ.hash_luma(y2, scale2, all_orientations=True)
            distance = min(hamming(v, original) for v in hashes.variants)
            assert hashes.quality < 50 or distance > 31, (
                f"{label} {action.name}: distance {distance}, quality {hashes.quality}"
            )
            for listed in LIST_HEX:
                assert hashes.quality < 50 or min(hamming(v, hex_bytes(listed)) for v in hashes.variants) > 31, label
            recheck.append(out)
    # The full guard (regions, bars, rects, windows) finds nothing in redacted output either.
    events: list[GuardEvent] = []
    guard = StreamGuard(
        lambda: lists.current, GuardSettings(sample_every=1, delay_frames=1, deep_every=1), on_event=events.append
    )
    for i, frame in enumerate(recheck):
        frame.pts = i
        guard.push(frame)
    guard.flush()
    assert guard.stats.samples == len(recheck)
    assert events == [], [(e.frame_index, e.region_kind, e.distance) for e in events]


def test_slate_is_below_pdq_quality_floor() -> None:
    for width, height in ((1280, 720), (640, 360), (1920, 1080)):
        y, scale = luma_view(redact(av.VideoFrame(width, height, "yuv420p"), Action.SLATE))
        assert PDQ.hash_luma(y, scale).quality < 50, (width, height)


def test_odd_sized_frames_are_redacted_without_crashing() -> None:
    """Decoders hand out odd sizes (853x481 is legal H.264/VP8); redaction must keep the size and not raise."""
    lists = sample_matcher()
    rgb = cv2.resize(np.asarray(blocked_images()["chelsea"]), (853, 481), interpolation=cv2.INTER_AREA)
    out: list[GuardedFrame] = []
    guard = StreamGuard(lambda: lists.current)
    for i in range(30):
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24").reformat(format="yuv420p")
        frame.pts, frame.time_base = i, Fraction(1, FPS)
        out += guard.push(frame)
    out += guard.flush()
    assert len(out) == 30 and all(item.action is not Action.PASS for item in out)
    assert all((item.frame.width, item.frame.height) == (853, 481) for item in out)
    slate = redact(av.VideoFrame(853, 481, "yuv420p"), Action.SLATE)
    assert (slate.width, slate.height) == (853, 481)


# --- 8. a broken event sink ------------------------------------------------------------------


def test_broken_event_sink_does_not_stop_frames() -> None:
    calls: list[str] = []

    def sink(event: GuardEvent) -> None:
        calls.append(event.type)
        raise OSError("event bus down")

    lists = sample_matcher()
    names = ["astronaut"] * 20 + ["chelsea"] * 20 + ["astronaut"] * 120
    # No pts at all: the guard falls back to index / fallback_fps for media time.
    out = run(StreamGuard(lambda: lists.current, on_event=sink), [frame_of(n, None) for n in names])
    assert [item.index for item in out] == list(range(len(names)))
    assert redacted(out) and min(redacted(out)) == 20 and all(out[i].action is Action.BLUR for i in range(20, 40))
    assert out[-1].action is Action.PASS  # released after the hold (media time from the fallback rate)
    assert calls == [MATCH_STARTED, MATCH_CLEARED]


# --- 9. moderator commands: keep and resume ---------------------------------------------------


def _guard(events: list[GuardEvent], cls: type[StreamGuard] = StreamGuard) -> tuple[StreamGuard, int]:
    """A guard with no hold of its own, pushed 20 frames of listed picture: redacting."""
    lists = sample_matcher()
    guard = cls(lambda: lists.current, GuardSettings(hold_seconds=0.0), on_event=events.append)
    for i in range(20):
        guard.push(frame_of("chelsea", i))
    assert guard.redacting
    return guard, 20


def test_keep_holds_a_redaction_until_resumed_and_says_whether_there_was_one() -> None:
    events: list[GuardEvent] = []
    lists = sample_matcher()
    guard = StreamGuard(lambda: lists.current, GuardSettings(hold_seconds=0.0), on_event=events.append)
    for i in range(10):
        guard.push(frame_of("astronaut", i))
    assert guard.keep() is False and not guard.kept, "nothing to keep"
    for i in range(10, 30):
        guard.push(frame_of("chelsea", i))
    assert guard.keep() is True and guard.kept
    for i in range(30, 120):  # 3 s of clean picture; without the keep the first deep sample would clear
        guard.push(frame_of("astronaut", i))
    assert guard.redacting and [e.type for e in events] == [MATCH_STARTED]
    guard.resume("mod")
    guard.push(frame_of("astronaut", 120))
    assert not guard.redacting and not guard.kept
    assert events[-1].type == MATCH_CLEARED and events[-1].details["resumed_by"] == "mod"


def test_a_keep_after_a_resume_was_asked_for_wins() -> None:
    """Two moderators: one resumes, the other keeps before the resume reached the guard's thread."""
    events: list[GuardEvent] = []
    guard, n = _guard(events)
    guard.resume("ann")
    assert guard.keep() is True
    for i in range(n, n + 60):
        guard.push(frame_of("astronaut", i))
    assert guard.redacting and guard.kept and [e.type for e in events] == [MATCH_STARTED]
    guard.resume("bob")  # a resume after the keep applies
    guard.push(frame_of("astronaut", n + 60))
    assert not guard.redacting and events[-1].details["resumed_by"] == "bob"


def test_a_keep_cannot_slip_in_while_the_guard_clears() -> None:
    """keep() runs on the event loop while the guard clears on its own thread.  A keep that
    lands while the guard is clearing must wait and answer False, never say True and be wiped
    by the clear (a moderator told "kept" while viewers see the stream again)."""
    answers: list[bool] = []

    class Racing(StreamGuard):
        def _clear(self, *args, **kwargs) -> None:
            if not answers:  # the first clear: a moderator's keep arrives right now, from another thread
                racer = threading.Thread(target=lambda: answers.append(self.keep()))
                racer.start()
                racer.join(0.2)  # returns at once unless keep() waits for the clear
            super()._clear(*args, **kwargs)

    events: list[GuardEvent] = []
    guard, n = _guard(events, Racing)
    for i in range(n, n + 60):
        guard.push(frame_of("astronaut", i))
        if answers:
            break
    deadline = time.monotonic() + 5
    while not answers and time.monotonic() < deadline:
        time.sleep(0.01)
    assert answers, "the clear happened and the racing keep returned"
    assert answers == [guard.redacting], (
        f"keep said {answers[0]} but the guard is {'' if guard.redacting else 'not '}redacting"
    )
    assert answers == [False] and [e.type for e in events] == [MATCH_STARTED, MATCH_CLEARED]

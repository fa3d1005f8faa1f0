"""Video lists: Meta's vPDQ hash files, a blocked video re-streamed live, and MD5 lines that cannot match.

The video is synthetic (scikit-image's benign sample photos, slowly zoomed, one
scene after another), encoded with PyAV; its vPDQ list is written the way
ThreatExchange's ``vpdq-hash-video`` writes one (``frame,quality,pdqHex,timestamp``,
reference PDQ on every decoded frame).  The "live" copy is that video decoded,
scaled down and re-encoded at a low bitrate, after a benign intro: what a
re-stream looks like, never byte-identical to the listed file.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import aiohttp
import av
import numpy as np
import pytest
from aiohttp import web
from harness import ICE, serving
from list_server import ThreadedServer

from livesafe import cli
from livesafe.events import MATCH_STARTED, MAX_METADATA_KEYS, MAX_METADATA_VALUE_CHARS, GuardEvent
from livesafe.guard.matcher import LiveMatcher, Matcher
from livesafe.guard.stream_guard import GuardSettings, StreamGuard
from livesafe.lists import Blocklist, BlocklistError, ListSpec, build_blocklist, load_blocklist, parse_list
from livesafe.moderation.settings import ModerationSettings, Principal
from livesafe.proxy import build_proxy
from livesafe.relay.settings import RelaySettings
from livesafe.signals import SIGNALS
from livesafe.signals.pdq import luma_from_rgb

pdqhash = pytest.importorskip("pdqhash")
syn = pytest.importorskip("sample_streams.synthetic")

FPS = 30
SCENE_FRAMES = 30  # one second each
RNG = np.random.default_rng(99)
OBSERVER = Principal("ob", "observer", "o" * 20)


def pdq_hex() -> str:
    return bytes(RNG.integers(0, 256, 32, dtype=np.uint8)).hex()


def write(tmp_path: Path, text: str, name: str = "chair-19.vpdq") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def frames_of(blocklist: Blocklist) -> list[tuple[str, str, str, str, str]]:
    """(hex, first/last frame, first/last timestamp) of each pdq entry, in file order."""
    return [
        (bytes(value).hex(), meta["first_frame"], meta["last_frame"], meta["first_timestamp"], meta["last_timestamp"])
        for value, meta in zip(blocklist.hashes["pdq"], blocklist.metadata["pdq"], strict=True)
    ]


def raises_at(path: Path, line: int, fragment: str) -> None:
    with pytest.raises(BlocklistError) as caught:
        load_blocklist(ListSpec(path))
    assert str(caught.value).startswith(f"{path}:{line}: ") and fragment in str(caught.value), str(caught.value)


# --- the format ------------------------------------------------------------------------------


def test_a_reference_hash_file_loads_as_the_videos_frames(tmp_path: Path) -> None:
    a, b = pdq_hex(), pdq_hex()
    # As vpdq-hash-video writes it (3-decimal timestamps), and as older sample files have it ("0", "0.0319").
    path = write(tmp_path, f"0,100,{a},0\n1,98,{b.upper()},0.0319\n2,87,{a},0.067\n")
    blocklist = load_blocklist(ListSpec(path))
    assert blocklist.spec.name == "chair-19" and len(blocklist) == 3 and not blocklist.skipped
    assert frames_of(blocklist) == [
        (a, "0", "0", "0.000", "0.000"),
        (b, "1", "1", "0.032", "0.032"),
        (a, "2", "2", "0.067", "0.067"),  # the same picture again later is an entry of its own
    ]
    assert blocklist.metadata["pdq"][0]["video"] == "chair-19"
    assert blocklist.lines["pdq"].tolist() == [1, 2, 3]


def test_the_content_decides_the_format_and_comments_blank_lines_and_crlf_are_fine(tmp_path: Path) -> None:
    a = pdq_hex()
    path = tmp_path / "clip.txt"
    path.write_bytes(f"# hashed 2026-12-04\r\n\r\n7,100,{a},0.233\r\n 8 , 100 , {a} , 0.267 \r\n".encode())
    blocklist = load_blocklist(ListSpec(path))
    assert frames_of(blocklist) == [(a, "7", "8", "0.233", "0.267")]
    assert blocklist.metadata["pdq"][0]["video"] == "clip"


def test_frames_below_quality_50_are_left_out_as_the_reference_matcher_does(tmp_path: Path) -> None:
    a, b, c = pdq_hex(), pdq_hex(), pdq_hex()
    blocklist = load_blocklist(ListSpec(write(tmp_path, f"0,49,{a},0.000\n1,50,{b},0.033\n2,0,{c},0.067\n")))
    assert [row[0] for row in frames_of(blocklist)] == [b] and not blocklist.skipped


def test_a_video_whose_every_frame_is_too_flat_is_refused_even_when_skipping(tmp_path: Path) -> None:
    path = write(tmp_path, f"# flat\n0,10,{pdq_hex()},0.000\n1,49,{pdq_hex()},0.033\n")
    with pytest.raises(BlocklistError, match=r":2: all 2 frames have quality below 50: too flat to match anything$"):
        load_blocklist(ListSpec(path), skip_bad_lines=True)


def test_consecutive_identical_frames_become_one_entry_with_their_range(tmp_path: Path) -> None:
    a, b = pdq_hex(), pdq_hex()
    lines = [
        f"10,100,{a},0.333",
        f"11,100,{a.upper()},0.367",  # the same hash in other case
        f"12,30,{b},0.400",  # too flat: left out, so it does not break the run
        f"13,100,{a},0.433",
        f"14,100,{b},0.467",
        f"15,100,{b},0.500",
        f"16,100,{a},0.533",
    ]
    blocklist = load_blocklist(ListSpec(write(tmp_path, "\n".join(lines) + "\n")))
    assert frames_of(blocklist) == [
        (a, "10", "13", "0.333", "0.433"),
        (b, "14", "15", "0.467", "0.500"),
        (a, "16", "16", "0.533", "0.533"),
    ]
    assert blocklist.lines["pdq"].tolist() == [1, 5, 7]


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("0,100,{h},0.0,extra", "expected 4 comma-separated fields 'frameNumber,quality,pdqHex,timestamp', got 5"),
        ("0,100,{h}", "expected 4 comma-separated fields 'frameNumber,quality,pdqHex,timestamp', got 3"),
        ("-1,100,{h},0.0", "frame number must be a whole number >= 0, got '-1'"),
        ("x,100,{h},0.0", "frame number must be a whole number >= 0, got 'x'"),
        ("3,101,{h},0.1", "quality must be a whole number 0..100, got '101'"),
        ("3,9.5,{h},0.1", "quality must be a whole number 0..100, got '9.5'"),
        ("3,100,{h}0,0.1", "expected a 64-digit pdq hash in field 3"),
        ("3,100,,0.1", "expected a 64-digit pdq hash in field 3, got '' (0 characters)"),
        ("3,100,{g},0.1", "expected a 64-digit pdq hash in field 3"),
        ("3,100,{h},-0.5", "timestamp must be seconds >= 0, got '-0.5'"),
        ("3,100,{h},nan", "timestamp must be seconds >= 0, got 'nan'"),
        ("3,100,{h},soon", "timestamp must be seconds >= 0, got 'soon'"),
    ],
)
def test_bad_lines_are_errors_with_their_line_number(tmp_path: Path, line: str, reason: str) -> None:
    good, value = f"0,100,{pdq_hex()},0.000", pdq_hex()
    text = f"{good}\n# next\n{line.format(h=value, g=value[:-1] + 'g')}\n{good}\n"
    raises_at(write(tmp_path, text), 3, reason)


def test_skip_mode_keeps_the_good_frames_and_counts_the_bad(tmp_path: Path) -> None:
    a, b = pdq_hex(), pdq_hex()
    text = f"0,100,{a},0.000\n1,100,{a[:-2]},0.033\n2,100\n3,100,{b},0.100\n"
    blocklist = load_blocklist(ListSpec(write(tmp_path, text)), skip_bad_lines=True)
    assert [row[0] for row in frames_of(blocklist)] == [a, b] and blocklist.skipped == 2
    assert [error.split(": ")[0].rsplit(":", 1)[1] for error in blocklist.errors] == ["2", "3"]


def test_a_list_from_a_url_names_the_video_after_the_urls_file() -> None:
    a = pdq_hex()
    spec = ListSpec(kind="url", name="partner-videos", url="http://127.0.0.1:9/videos/clip-42.vpdq?sig=x")
    blocklist = parse_list(spec, f"0,100,{a},0.000\n".encode())
    assert blocklist.metadata["pdq"][0]["video"] == "clip-42"
    a_file = parse_list(ListSpec(Path("/lists/clip #3?.vpdq")), f"0,100,{a},0.000\n".encode())
    assert a_file.metadata["pdq"][0]["video"] == "clip #3?"  # a file's name is not a URL


# --- MD5 lines -------------------------------------------------------------------------------


def test_md5_lines_are_checked_and_counted_but_never_among_the_hashes(tmp_path: Path) -> None:
    pdq = pdq_hex()
    md5s = [hashlib.md5(bytes([n])).hexdigest() for n in range(4)]
    text = (
        f"pdq {pdq}\n"
        f"md5 {md5s[0]}\n"  # the bulk path reads exact lines
        f"MD5 {md5s[1]}  # from NCMEC\n"  # the line-by-line path the rest
        f"md5,{md5s[2].upper()}\n"
    )
    blocklist = load_blocklist(ListSpec(write(tmp_path, text, "mixed.txt")))
    assert set(blocklist.hashes) == {"pdq"} and len(blocklist) == 1 and dict(blocklist.unmatchable) == {"md5": 3}
    csv = write(tmp_path, f"signal_type,signal_str,case\npdq,{pdq},1\nmd5,{md5s[3]},2\n", "mixed.csv")
    from_csv = load_blocklist(ListSpec(csv))
    assert set(from_csv.hashes) == {"pdq"} and dict(from_csv.unmatchable) == {"md5": 1}
    assert dict(build_blocklist(ListSpec(name="x"), [("md5", md5s[0], {})], "v1").unmatchable) == {"md5": 1}
    assert not load_blocklist(ListSpec(write(tmp_path, f"pdq {pdq}\n", "plain.txt"))).unmatchable


def test_a_bad_md5_is_an_error_like_any_bad_hash(tmp_path: Path) -> None:
    md5 = hashlib.md5(b"x").hexdigest()
    path = write(tmp_path, f"md5 {md5}\nmd5 {md5[:-1]}\n", "short.txt")
    with pytest.raises(BlocklistError, match=r":2: md5 hash must be 32 hex digits, got 31$"):
        load_blocklist(ListSpec(path))
    path = write(tmp_path, f"md5 {md5[:-1]}z\n", "nonhex.txt")
    with pytest.raises(BlocklistError, match=r":1: md5 hash has a non-hex character 'z' at position 32$"):
        load_blocklist(ListSpec(path))
    with pytest.raises(BlocklistError, match=r":1: missing hash after signal type 'md5'$"):
        load_blocklist(ListSpec(write(tmp_path, "md5\n", "bare.txt")))
    skipped = load_blocklist(ListSpec(write(tmp_path, f"md5 {md5}\nmd5 00\n", "skip.txt")), skip_bad_lines=True)
    assert dict(skipped.unmatchable) == {"md5": 1} and skipped.skipped == 1


async def test_md5_counts_are_on_the_status_and_warned_once_per_load(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(tmp_path, f"pdq {pdq_hex()}\nmd5 {hashlib.md5(b'a').hexdigest()}\n", "list.txt")
    lists = LiveMatcher([ListSpec(path, name="videos")])
    assert lists.current.signals == frozenset({"pdq"})
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "list 'videos': 1 md5 hash(es) loaded but never enforced: a file digest matches only a byte-identical "
        "file, never a re-encoded live stream"
    ]
    path.write_text(path.read_text() + f"md5 {hashlib.md5(b'b').hexdigest()}\n")
    assert lists.reload_if_changed() and lists.reload_if_changed() == []  # reloaded once, then unchanged
    assert sum("never enforced" in r.getMessage() for r in caplog.records) == 2
    proxy = build_proxy(
        RelaySettings(ice=ICE),
        lambda: lists.current,
        GuardSettings(),
        ModerationSettings(database=":memory:", tokens=(OBSERVER,)),
        None,
        lists=lists,
    )
    async with serving(proxy.app) as base, aiohttp.ClientSession() as http:
        async with http.get(f"{base}/api/lists", headers={"Authorization": f"Bearer {OBSERVER.token}"}) as reply:
            assert reply.status == 200
            (status,) = (await reply.json())["lists"]
        async with http.get(f"{base}/metrics") as reply:
            metrics = await reply.text()
    assert (status["entries"], status["unmatchable"]) == (1, {"md5": 2})
    assert 'livesafe_list_source_unmatchable_entries{list="videos",kind="file",signal="md5"} 2' in metrics


# --- a blocked video re-streamed -------------------------------------------------------------


def zooming(name: str, width: int, height: int) -> Callable[[int], np.ndarray]:
    """Frame i of a slow zoom into a sample photo: nearby frames alike, scenes far apart."""
    image = {**syn.blocked_images(), **syn.benign_images()}[name]

    def frame(i: int) -> np.ndarray:
        h, w = image.shape[:2]
        zoom = 1 + 0.006 * i
        ch, cw = int(h / zoom), int(w / zoom)
        y, x = (h - ch) // 2, (w - cw) // 2
        return syn.cover(image[y : y + ch, x : x + cw], width, height)

    return frame


def encode(path: Path, frames: list[np.ndarray], **options: str) -> Path:
    """RGB frames as H.264 at FPS (options: the encoder's, e.g. crf or b)."""
    height, width = frames[0].shape[:2]
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.options = {"preset": "ultrafast", **options}
        for index, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            frame.pts, frame.time_base = index, Fraction(1, FPS)
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return path


def decoded(path: Path) -> list[av.VideoFrame]:
    with av.open(str(path)) as container:
        return list(container.decode(video=0))


def vpdq_list(video: Path, target: Path) -> Path:
    """``video``'s vPDQ hash file as vpdq-hash-video writes it: reference PDQ of every frame."""
    lines = []
    for number, frame in enumerate(decoded(video)):
        bits, quality = pdqhash.compute(np.ascontiguousarray(frame.to_ndarray(format="rgb24")))
        hex_text = format(int("".join(str(int(b)) for b in bits), 2), "064x")
        lines.append(f"{number},{quality},{hex_text},{float(frame.time):.3f}\n")
    target.write_text("".join(lines))
    return target


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The listed video (two scenes, 640x360, high quality), its vPDQ list, and a re-stream of its second scene.

    The re-stream: 1.5 s of a benign scene, then the listed video's second
    scene (its 1.0-2.0 s) decoded, scaled to 480x270 and re-encoded at 200 kbps,
    then 0.5 s benign again.  So the re-streamed frames sit 0.5 s later in the
    stream than in the video.
    """
    root = tmp_path_factory.mktemp("vpdq")
    rocket, coffee = zooming("rocket", 640, 360), zooming("coffee", 640, 360)
    listed = encode(
        root / "blocked-clip.mp4",
        [rocket(i) for i in range(SCENE_FRAMES)] + [coffee(i) for i in range(SCENE_FRAMES)],
        crf="16",
    )
    intro, outro = zooming("astronaut", 480, 270), zooming("camera", 480, 270)
    second_scene = [f.to_ndarray(format="rgb24", width=480, height=270) for f in decoded(listed)[SCENE_FRAMES:]]
    restream = encode(
        root / "restream.mp4",
        [intro(i) for i in range(45)] + second_scene + [outro(i) for i in range(15)],
        b="200k",
        bf="0",
    )
    benign = encode(root / "benign.mp4", [intro(i) for i in range(45)] + [outro(i) for i in range(30)], crf="20")
    return {
        "listed": listed,
        "list": vpdq_list(listed, root / "blocked-clip.vpdq"),
        "restream": restream,
        "benign": benign,
    }


def scan(capsys: pytest.CaptureFixture[str], tmp_path: Path, video: Path, *blocklists: Path) -> tuple[int, list]:
    events = tmp_path / f"{video.stem}.jsonl"
    args = ["scan", str(video), "--events", str(events)]
    for blocklist in blocklists:
        args += ["--blocklist", str(blocklist)]
    code = cli.main(args)
    capsys.readouterr()
    return code, [json.loads(line) for line in events.read_text().splitlines()]


def test_the_vpdq_list_is_the_videos_frames(videos: dict[str, Path]) -> None:
    blocklist = load_blocklist(ListSpec(videos["list"]))
    assert 0 < len(blocklist) <= 2 * SCENE_FRAMES and not blocklist.skipped
    assert {meta["video"] for meta in blocklist.metadata["pdq"]} == {"blocked-clip"}
    assert videos["restream"].read_bytes() != videos["listed"].read_bytes()


def test_a_restreamed_part_of_a_listed_video_is_caught_and_named_with_its_timestamps(
    videos: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, events = scan(capsys, tmp_path, videos["restream"], videos["list"])
    assert code == cli.EXIT_MATCHED
    started = [e for e in events if e["type"] == MATCH_STARTED]
    assert len(started) == 1, events
    (event,) = started
    assert event["list_name"] == "blocked-clip" and event["signal"] == "pdq"
    assert 1.4 <= event["media_time"] < 2.5  # in the stream: while the second scene is on
    metadata = event["details"]["metadata"]
    assert metadata["video"] == "blocked-clip"
    # In the video: its second scene, 1.0-2.0 s, frames 30-59 (the first scene is ~128 bits away).
    assert 1.0 <= float(metadata["first_timestamp"]) <= float(metadata["last_timestamp"]) < 2.0, metadata
    assert SCENE_FRAMES <= int(metadata["first_frame"]) <= int(metadata["last_frame"]) < 2 * SCENE_FRAMES
    assert abs(event["media_time"] - 0.5 - float(metadata["first_timestamp"])) <= 0.5  # the same moment of it
    # Redaction covers the re-streamed scene and not the intro before it.
    assert 1.4 <= event["details"]["redacted_from_time"] <= event["media_time"]


def test_a_video_not_listed_is_not_matched(
    videos: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, events = scan(capsys, tmp_path, videos["benign"], videos["list"])
    assert code == cli.EXIT_CLEAN and not [e for e in events if e["type"] == MATCH_STARTED]


def test_the_listed_files_own_md5_never_matches_even_the_file_itself(
    videos: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    md5_list = tmp_path / "md5s.txt"
    md5 = hashlib.md5(videos["listed"].read_bytes()).hexdigest()
    md5_list.write_text(f"md5 {md5}\n")
    # A list of MD5s alone guards nothing: refused as empty, not a clean scan.
    assert cli.main(["scan", str(videos["listed"]), "--blocklist", str(md5_list)]) == 2
    assert "only 1 MD5s, which cannot match a stream" in capsys.readouterr().err
    md5_list.write_text(f"md5 {md5}\npdq {'5a' * 32}\n")  # with one unrelated PDQ hash beside it
    code, events = scan(capsys, tmp_path, videos["listed"], md5_list)
    assert code == cli.EXIT_CLEAN and events == []
    assert "'md5s': 1 md5 hash(es) loaded but never enforced" in caplog.text


# --- the entry's metadata on the event, bounded ----------------------------------------------


def test_a_match_event_carries_the_entrys_metadata_within_bounds() -> None:
    rgb = zooming("rocket", 320, 180)(0)
    signal = SIGNALS["pdq"]
    listed = signal.format_hex(signal.hash_luma(luma_from_rgb(rgb)).variants[0])
    metadata = {"video": "v", "note": "n" * 10_000} | {f"column{n:02d}": str(n) for n in range(40)}
    matcher = Matcher([build_blocklist(ListSpec(name="csv"), [("pdq", listed, metadata)], "v1")])
    events: list[GuardEvent] = []
    guard = StreamGuard(lambda: matcher, on_event=events.append)
    for index in range(12):
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24").reformat(format="yuv420p")
        frame.pts, frame.time_base = index, Fraction(1, FPS)
        guard.push(frame)
    guard.flush()
    (started,) = [e for e in events if e.type == MATCH_STARTED]
    shown = started.details["metadata"]
    assert len(shown) == MAX_METADATA_KEYS and shown["video"] == "v" and shown["column00"] == "0"
    assert len(shown["note"]) == MAX_METADATA_VALUE_CHARS and shown["note"].endswith("…")
    assert started.details["metadata_keys_left_out"] == len(metadata) - MAX_METADATA_KEYS
    assert len(started.to_json()) < 8_000
    cleared = [e for e in events if e.type != MATCH_STARTED]
    assert cleared and all("metadata" not in e.details for e in cleared)  # only the match carries it


async def test_a_vpdq_list_from_a_url_names_the_video_from_the_url(videos: dict[str, Path]) -> None:
    body = videos["list"].read_bytes()

    async def answer(request: web.Request) -> web.Response:
        return web.Response(body=body)

    with ThreadedServer(answer).running() as server:
        lists = LiveMatcher([ListSpec(kind="url", url=f"{server.base}/v1/blocked-clip.vpdq", name="partner")])
    (blocklist,) = lists.current.blocklists
    assert len(blocklist) > 0 and {m["video"] for m in blocklist.metadata["pdq"]} == {"blocked-clip"}

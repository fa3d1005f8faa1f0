"""The ``livesafe`` command line: scan (detection, redacted copy, audio muting, events), user
errors (exit 2, one line, no traceback), and ``hash``.

Every output goes to ``tmp_path``.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from harness import BLOCKLIST, LIST_HEX, SAMPLES, hamming_hex

from livesafe import cli
from livesafe.guard.frames import luma_view
from livesafe.signals import SIGNALS

BLOCKED_CUT = SAMPLES / "blocked_cut.mp4"
BENIGN = SAMPLES / "benign_mix.mp4"
CHELSEA_HEX = LIST_HEX[0]
TRUTH = json.loads(BLOCKED_CUT.with_suffix(".truth.json").read_text())
SEGMENT = TRUTH["segments"][0]  # frames 75..119
PDQ = SIGNALS["pdq"]
CONSOLE_SCRIPT = Path(sys.executable).with_name("livesafe")


# --- helpers ---------------------------------------------------------------------------------


def run_cli(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("livesafe: error: "), err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def min_distance_to(y: np.ndarray, scale: float, target_hex: str) -> tuple[int, int]:
    hashes = PDQ.hash_luma(y, scale, all_orientations=True)
    target = np.frombuffer(bytes.fromhex(target_hex), dtype=np.uint8)
    return min(int(np.unpackbits(v ^ target).sum()) for v in hashes.variants), hashes.quality


def lumas(path: Path):
    """Y planes (int16, with the limited-range scale) of every decoded video frame."""
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            y, scale = luma_view(frame)
            yield y.astype(np.int16), scale


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def decoded_audio(path: Path) -> tuple[np.ndarray, int]:
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        chunks = [frame.to_ndarray()[0] for frame in container.decode(stream)]  # planar: first channel
        return np.concatenate(chunks).astype(np.float64), stream.sample_rate


def rms(samples: np.ndarray, rate: int, start: float, end: float) -> float:
    part = samples[int(start * rate) : int(end * rate)]
    assert len(part) > rate // 20
    return float(np.sqrt(np.mean(part**2)))


def video_info(path: Path) -> tuple[int, int, int, object, int]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        decoded = sum(1 for _ in container.decode(stream))
        return (
            decoded,
            stream.codec_context.width,
            stream.codec_context.height,
            stream.average_rate,
            len(container.streams.audio),
        )


def read_events(path: Path) -> list[dict]:
    lines = path.read_text().splitlines()
    assert lines
    return [json.loads(line) for line in lines]


def assert_small_events(events: list[dict]) -> None:
    for event in events:
        assert len(json.dumps(event)) < 1500
        for value in event.values():
            assert not isinstance(value, list) or len(value) <= 8


# --- scan: the redacted copy -----------------------------------------------------------------


def test_scan_blocked_clip_writes_a_redacted_copy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, events_path = tmp_path / "out" / "redacted.mp4", tmp_path / "events.jsonl"
    code, stdout, err = run_cli(
        capsys, "scan", BLOCKED_CUT, "--blocklist", BLOCKLIST, "--output", out, "--events", events_path
    )
    assert code == 1, err
    assert "Traceback" not in err
    assert "1 interruption(s)" in stdout and "frame 75" in stdout

    frames_in, width, height, rate, audio_streams = video_info(BLOCKED_CUT)
    assert (
        video_info(out)
        == (frames_in, width, height, rate, 1)
        == (TRUTH["frames"], TRUTH["width"], TRUTH["height"], 30, 1)
    )
    with av.open(str(out)) as container:
        assert container.streams.audio[0].codec_context.name == "aac"

    events = read_events(events_path)
    assert events[0]["type"] == "match.started"
    started = events[0]
    assert started["frame_index"] == SEGMENT["start"] and started["signal"] == "pdq" and started["distance"] <= 31
    assert (
        started["matched_hash"] == CHELSEA_HEX and started["action"] == "blur" and started["list_name"] == "blocklist"
    )
    assert_small_events(events)

    hold_frames = 3 * TRUTH["fps"]
    for i, ((y_in, scale), (y_out, _)) in enumerate(zip(lumas(BLOCKED_CUT), lumas(out), strict=True)):
        if SEGMENT["start"] <= i <= SEGMENT["end"]:
            distance, quality = min_distance_to(y_out.astype(np.uint8), scale, CHELSEA_HEX)
            assert quality < 50 or distance > 31, f"frame {i}: redacted copy still {distance} bits from the cat"
            assert np.abs(y_out - y_in).mean() > 8, f"frame {i} barely changed"
        elif i < SEGMENT["start"] - 5 or i > SEGMENT["end"] + hold_frames + 10:
            assert psnr(y_out, y_in) > 30, f"frame {i}: untouched frame degraded ({psnr(y_out, y_in):.1f} dB)"

    # The redacted copy itself scans clean.
    code, stdout, err = run_cli(capsys, "scan", out, "--blocklist", BLOCKLIST)
    assert code == 0, stdout + err
    assert "0 interruption(s)" in stdout


def test_scan_with_config_lists_slates_and_mutes_audio(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "stand-ins.txt").write_bytes(BLOCKLIST.read_bytes())
    (tmp_path / "conf").mkdir()
    config = tmp_path / "conf" / "livesafe.toml"
    config.write_text(
        "[guard]\nhold_seconds = 0.5\n\n"
        '[[lists.file]]\npath = "../lists/stand-ins.txt"\nname = "samples"\ncategory = "test-cfg"\naction = "slate"\n'
    )
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # list paths are relative to the config file, not the working directory
    out, events_path = tmp_path / "slated.mp4", tmp_path / "events.jsonl"
    code, stdout, err = run_cli(
        capsys, "scan", BLOCKED_CUT, "--config", config, "--output", out, "--events", events_path
    )
    assert code == 1, err
    assert "samples (test-cfg)" in stdout and "-> slate" in stdout

    events = read_events(events_path)
    assert [e["type"] for e in events] == ["match.started", "match.cleared"]
    started, cleared = events
    assert started["list_name"] == "samples" and started["category"] == "test-cfg" and started["action"] == "slate"
    assert started["details"]["redacted_from_frame"] == SEGMENT["start"]
    release = cleared["frame_index"]
    assert SEGMENT["end"] < release <= SEGMENT["end"] + 0.5 * TRUTH["fps"] + 6
    assert cleared["details"]["stream_ended"] is False

    fps = TRUTH["fps"]
    slated_from, slated_to = SEGMENT["start"] / fps, release / fps
    for i, ((y_in, scale), (y_out, _)) in enumerate(zip(lumas(BLOCKED_CUT), lumas(out), strict=True)):
        if SEGMENT["start"] <= i < release:
            distance, quality = min_distance_to(y_out.astype(np.uint8), scale, CHELSEA_HEX)
            assert distance > 31, f"frame {i}"
            assert np.abs(y_out - y_in).mean() > 20, f"frame {i} is not a slate"
        elif i < SEGMENT["start"] - 5 or i > release + 5:
            assert psnr(y_out, y_in) > 30, f"frame {i}: {psnr(y_out, y_in):.1f} dB"

    samples, rate = decoded_audio(out)
    original, _ = decoded_audio(BLOCKED_CUT)
    tone = rms(original, rate, 0.1, 2.4)
    assert 0.05 < tone < 0.1  # a -20 dBFS sine
    assert rms(samples, rate, 0.1, slated_from - 0.05) == pytest.approx(tone, rel=0.15)
    assert rms(samples, rate, slated_from + 0.05, slated_to - 0.05) < 1e-3, "audio not muted under the slate"
    assert rms(samples, rate, slated_to + 0.1, TRUTH["frames"] / fps - 0.1) == pytest.approx(tone, rel=0.15)
    assert len(samples) >= TRUTH["frames"] / fps * rate


def test_benign_clip_is_clean_and_detection_only_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code, stdout, err = run_cli(capsys, "scan", BENIGN, "--blocklist", BLOCKLIST)
    assert code == 0, err
    assert stdout.strip() == f"{BENIGN}: 240 frames, 0 interruption(s), 0 frames redacted (0 slated)"
    assert list(tmp_path.iterdir()) == []


def test_console_script_detection_only_events_to_stdout(tmp_path: Path) -> None:
    """The installed entry point, as a user runs it: events on stdout, summary on stderr."""
    assert CONSOLE_SCRIPT.exists()
    result = subprocess.run(
        [str(CONSOLE_SCRIPT), "scan", str(BLOCKED_CUT), "--blocklist", str(BLOCKLIST), "--events", "-"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert events and events[0]["type"] == "match.started"
    assert "1 interruption(s)" in result.stderr
    assert list(tmp_path.iterdir()) == []

    (tmp_path / "notes.mp4").write_text("these are my notes, not a video\n")
    result = subprocess.run(
        [str(CONSOLE_SCRIPT), "scan", "notes.mp4", "--blocklist", str(BLOCKLIST)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert_one_line_error(result.returncode, result.stderr, "notes.mp4")
    assert result.stdout == ""


# --- scan: user errors -----------------------------------------------------------------------


def _audio_only(path: Path) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=48000)
        stream.layout = "mono"
        tone = (0.1 * np.sin(2 * np.pi * 440 * np.arange(48000) / 48000)).astype(np.float32)[None, :]
        for start in range(0, tone.shape[1], 1024):
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(tone[:, start : start + 1024]), format="fltp", layout="mono"
            )
            frame.sample_rate, frame.pts = 48000, start
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def _bad_case(tmp_path: Path, case: str) -> tuple[list[object], list[str]]:
    """(arguments, fragments the error line must contain) for one mistake a user can make."""
    good = ["--blocklist", BLOCKLIST]
    if case == "missing input":
        return ["scan", tmp_path / "nope.mp4", *good], ["nope.mp4", "no such file"]
    if case == "empty input":
        (tmp_path / "empty.mp4").write_bytes(b"")
        return ["scan", tmp_path / "empty.mp4", *good], ["empty.mp4"]
    if case == "text renamed .mp4":
        (tmp_path / "text.mp4").write_text("hello\n" * 50)
        return ["scan", tmp_path / "text.mp4", *good], ["text.mp4"]
    if case == "plain text file":  # FFmpeg's tty demuxer would "decode" it as ANSI art
        (tmp_path / "notes.txt").write_text("".join(f"line {i} of some notes\n" for i in range(40)))
        return ["scan", tmp_path / "notes.txt", *good], ["notes.txt", "not a video"]
    if case == "input is a directory":
        return ["scan", tmp_path, *good], [str(tmp_path)]
    if case == "audio only":
        _audio_only(tmp_path / "tone.m4a")
        return ["scan", tmp_path / "tone.m4a", *good], ["tone.m4a", "no video stream"]
    if case == "bad list line":
        bad = tmp_path / "bad.txt"
        bad.write_text(f"# ok\npdq {CHELSEA_HEX}\npdq 12345\n")
        return ["scan", BLOCKED_CUT, "--blocklist", bad], [f"{bad}:3:", "64 hex digits"]
    if case == "unknown signal":
        bad = tmp_path / "sig.txt"
        bad.write_text(f"pdq {CHELSEA_HEX}\nsha1 da39a3ee5e6b4b0d3255bfef95601890afd80709\n")
        return ["scan", BLOCKED_CUT, "--blocklist", bad], [f"{bad}:2:", "unknown signal type 'sha1'"]
    if case == "missing list":
        return ["scan", BLOCKED_CUT, "--blocklist", tmp_path / "gone.txt"], ["gone.txt", "no such file"]
    if case == "no blocklist":
        return ["scan", BLOCKED_CUT], ["no blocklist"]
    if case == "missing config":
        return ["scan", BLOCKED_CUT, "--config", tmp_path / "none.toml", *good], ["none.toml"]
    config = tmp_path / "bad.toml"
    text, fragments = {
        "config unknown key": ("[guard]\nsample_evry = 3\n", ["sample_evry", "unknown key"]),
        "config unknown section": ("[gaurd]\nsample_every = 3\n", ["gaurd"]),
        "config wrong type (str for int)": ('[guard]\nsample_every = "five"\n', ["guard.sample_every", "expected int"]),
        "config wrong type (str for float)": ('[guard]\nhold_seconds = "3"\n', ["guard.hold_seconds"]),
        "config wrong type (bool)": ("[lists]\n[guard]\ndelay_frames = true\n", ["guard.delay_frames"]),
        "config delay < sample_every": ("[guard]\nsample_every = 20\n", ["delay_frames", "sample_every"]),
        "config old regions table": ('[guard.regions]\nwindows = ["left"]\n', ["guard.regions", "[guard.search]"]),
        "config bad search setting": ("[guard.search]\nnear_margin = 99\n", ["guard.search", "near_margin"]),
        "config bad action": (
            '[[lists.file]]\npath = "x.txt"\ncategory = "test"\naction = "hide"\n',
            ["lists.file[0]", "hide"],
        ),
        "config list without path": ('[[lists.file]]\nname = "x"\n', ["lists.file[0]", "path"]),
        "config bad threshold": (
            '[[lists.file]]\npath = "x.txt"\ncategory = "test"\nthresholds = { pdq = 300 }\n',
            ["threshold"],
        ),
        "config list without category": ('[[lists.file]]\npath = "x.txt"\n', ["lists.file[0].category", "required"]),
        "config not TOML": ("[guard\n", ["not valid TOML"]),
    }[case]
    config.write_text(text)
    return ["scan", BLOCKED_CUT, "--config", config, *good], [str(config), *fragments]


BAD_CASES = [
    "missing input",
    "empty input",
    "text renamed .mp4",
    "plain text file",
    "input is a directory",
    "audio only",
    "bad list line",
    "unknown signal",
    "missing list",
    "no blocklist",
    "missing config",
    "config unknown key",
    "config unknown section",
    "config wrong type (str for int)",
    "config wrong type (str for float)",
    "config wrong type (bool)",
    "config delay < sample_every",
    "config old regions table",
    "config bad search setting",
    "config bad action",
    "config list without path",
    "config bad threshold",
    "config list without category",
    "config not TOML",
]


@pytest.mark.parametrize("case", BAD_CASES)
def test_user_errors_exit_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str) -> None:
    args, fragments = _bad_case(tmp_path, case)
    code, stdout, err = run_cli(capsys, *args)
    assert_one_line_error(code, err, *fragments)
    assert stdout == ""


@pytest.mark.parametrize(
    "text",
    [
        "guard = 5\n",
        "lists = 3\n",
        "[guard]\nregions = 5\n",
        "[lists]\nfile = [5]\n",
        "[[lists.file]]\npath = 5\n",
        '[[lists.file]]\npath = "x.txt"\ncategory = "test"\nthresholds = 5\n',
        '[lists]\nskip_bad_lines = "false"\n',
        '[lists]\nreload_seconds = "soon"\n',
    ],
)
def test_config_of_the_wrong_shape_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str
) -> None:
    config = tmp_path / "shape.toml"
    config.write_text(text)
    # A missing input keeps this fast: a config that is (wrongly) accepted fails on the input instead.
    code, _, err = run_cli(capsys, "scan", tmp_path / "absent.mp4", "--config", config, "--blocklist", BLOCKLIST)
    assert_one_line_error(code, err, str(config))


def test_skip_bad_lines_loads_the_rest_and_warns_with_the_count(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "mixed.txt"
    bad.write_text(f"pdq {CHELSEA_HEX}\nnot a hash at all\npdq {LIST_HEX[1]}\npdq zz\nmd5 00\n")
    code, _, err = run_cli(capsys, "scan", BLOCKED_CUT, "--blocklist", bad)
    assert_one_line_error(code, err, f"{bad}:2:")

    code, stdout, err = run_cli(capsys, "scan", BLOCKED_CUT, "--blocklist", bad, "--skip-bad-lines")
    assert code == 1, err
    assert "Traceback" not in err
    warnings = [line for line in err.splitlines() if line.startswith("livesafe: warning:")]
    assert len(warnings) == 1 and "skipped 3 bad line(s)" in warnings[0] and f"{bad}:2:" in warnings[0], err
    assert "1 interruption(s)" in stdout


# --- scan: damaged files ---------------------------------------------------------------------


def _truncated(tmp_path: Path, container: str = "mp4") -> Path:
    """A PyAV-encoded video with its bytes cut off: the MP4 sample (a frame count in its header)
    at 30%, or a Matroska copy of its first 60 frames (a duration in its header, no count) at half."""
    source = BLOCKED_CUT if container == "mp4" else _pyav_mkv(tmp_path, 60)
    data = source.read_bytes()
    path = tmp_path / f"truncated.{container}"
    path.write_bytes(data[: int(len(data) * (0.3 if container == "mp4" else 0.5))])
    return path


def _pyav_mkv(tmp_path: Path, frames: int) -> Path:
    """The first ``frames`` frames of the blocked clip, re-encoded by PyAV into Matroska."""
    path = tmp_path / "whole.mkv"
    with av.open(str(BLOCKED_CUT)) as source, av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=TRUTH["fps"])
        stream.width, stream.height, stream.pix_fmt = 320, 180, "yuv420p"
        for k, frame in enumerate(source.decode(video=0)):
            if k == frames:
                break
            out.mux(stream.encode(frame.reformat(width=320, height=180, format="yuv420p")))
        out.mux(stream.encode(None))
    return path


def _corrupted(tmp_path: Path) -> Path:
    """Random bytes over the packets of frames ~130..140: after the blocked segment, before the end."""
    with av.open(str(BLOCKED_CUT)) as container:
        stream = container.streams.video[0]
        positions = sorted(
            p.pos for p in container.demux(stream) if p.size and p.pts is not None and 130 * 512 <= p.pts < 140 * 512
        )
    data = bytearray(BLOCKED_CUT.read_bytes())
    start, end = positions[0], positions[-1]
    data[start:end] = np.random.default_rng(5).integers(0, 256, end - start, dtype=np.uint8).tobytes()
    path = tmp_path / "corrupted.mp4"
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("container", ["mp4", "mkv"])
def test_truncated_file_is_scanned_as_far_as_it_goes_and_never_called_clean(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], container: str
) -> None:
    path = _truncated(tmp_path, container)
    events = tmp_path / "events.jsonl"
    code, stdout, err = run_cli(
        capsys, "scan", path, "--blocklist", BLOCKLIST, "--output", tmp_path / "out.mp4", "--events", events
    )
    assert "Traceback" not in err
    assert code == 3, err  # the cut comes before the blocked segment (frame 75): no match, but not clean either
    summary = re.match(rf"{re.escape(str(path))}: (\d+) frames, .*; NOT the whole file: decoded (.*)$", stdout, re.M)
    assert summary, stdout
    frames = int(summary.group(1))
    assert 0 < frames < SEGMENT["start"]
    assert video_info(tmp_path / "out.mp4")[0] == frames
    last = read_events(events)[-1]
    assert last["type"] == "scan.incomplete" and last["frames"] == frames, last
    assert re.search(r"^livesafe: warning: .*incomplete input", err, re.M), err


def test_whole_matroska_file_is_clean(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The duration check does not call a whole file incomplete (its last frame ends at the duration)."""
    code, stdout, err = run_cli(capsys, "scan", _pyav_mkv(tmp_path, 60), "--blocklist", BLOCKLIST)
    assert code == 0, err
    assert "NOT the whole file" not in stdout and "warning" not in err


def test_scan_help_lists_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["scan", "--help"])
    out = capsys.readouterr().out
    for code in ("0  clean", "1  something matched", "2  error", "3  nothing matched in what was checked"):
        assert code in out, out


def test_corruption_mid_file_is_skipped_and_the_blocked_segment_still_caught(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _corrupted(tmp_path)
    events = tmp_path / "events.jsonl"
    code, stdout, err = run_cli(capsys, "scan", path, "--blocklist", BLOCKLIST, "--events", events)
    assert "Traceback" not in err
    assert code == 1, err
    frames = int(re.match(rf"{re.escape(str(path))}: (\d+) frames", stdout).group(1))
    assert TRUTH["frames"] - 15 <= frames <= TRUTH["frames"]
    started = [e for e in read_events(events) if e["type"] == "match.started"]
    assert (
        started[0]["frame_index"] == SEGMENT["start"]
        and started[0]["details"]["redacted_from_frame"] == SEGMENT["start"]
    )


@pytest.mark.parametrize("damage", ["truncated", "corrupted"])
def test_damaged_input_is_never_reported_silently(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], damage: str
) -> None:
    path = _truncated(tmp_path) if damage == "truncated" else _corrupted(tmp_path)
    code, stdout, err = run_cli(capsys, "scan", path, "--blocklist", BLOCKLIST)
    assert "Traceback" not in err
    assert code == (3 if damage == "truncated" else 1), err  # the corrupted one still has the blocked segment
    assert "; NOT the whole file: " in stdout.splitlines()[0], stdout
    assert re.search(r"^livesafe: warning: .*incomplete input: .*(decoded|skipped)", err, re.M), err


def test_scan_whose_checks_failed_is_not_reported_clean(capsys: pytest.CaptureFixture[str], monkeypatch) -> None:
    import livesafe.guard.search as search

    def broken(*args, **kwargs):
        raise RuntimeError("hash backend crashed")

    monkeypatch.setattr(search, "propose", broken)
    code, stdout, _ = run_cli(capsys, "scan", BENIGN, "--blocklist", BLOCKLIST)
    assert "240 frames redacted (240 slated)" in stdout  # it did fail closed on the frames...
    assert code != 0  # ...but must not then call the file clean


# --- hash --------------------------------------------------------------------------------------


def test_hash_png_matches_the_pdq_reference(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pdqhash = pytest.importorskip("pdqhash")
    skimage_data = pytest.importorskip("skimage.data")
    rgb = np.ascontiguousarray(skimage_data.astronaut())
    png = tmp_path / "astronaut.png"
    assert cv2.imwrite(str(png), rgb[..., ::-1])
    vector, quality = pdqhash.compute(rgb)
    reference = format(int("".join(str(int(b)) for b in vector), 2), "064x")

    code, stdout, err = run_cli(capsys, "hash", png)
    assert code == 0, err
    lines = stdout.splitlines()
    assert len(lines) == 1
    match = re.match(r"^pdq ([0-9a-f]{64})\b", lines[0])
    assert match, lines[0]
    assert match.group(1) == reference
    assert f"quality={quality}" in lines[0]

    code, stdout, err = run_cli(capsys, "hash", png, "--signal", "phash")
    assert code == 0, err
    match = re.fullmatch(r"phash ([0-9a-f]{16})\b.*", stdout.strip())
    assert match, stdout
    imagehash = pytest.importorskip("imagehash")
    from PIL import Image

    assert match.group(1) == str(imagehash.phash(Image.open(png)))


def test_hash_video_prints_one_line_per_second_and_one_per_cut(capsys: pytest.CaptureFixture[str]) -> None:
    code, stdout, err = run_cli(capsys, "hash", BLOCKED_CUT)
    assert code == 0, err
    lines = [line for line in stdout.splitlines() if "(cut)" not in line]
    seconds = TRUTH["frames"] // TRUTH["fps"]
    assert len(lines) == seconds
    for k, line in enumerate(lines):
        assert re.match(rf"^pdq [0-9a-f]{{64}}\s+# {re.escape(str(BLOCKED_CUT))}@{k}\.00s\b", line), line
    # The sample at 3 s is inside the blocked segment: its hash is what a list would hold.
    assert hamming_hex(lines[3].split()[1], CHELSEA_HEX) <= 31
    assert all(hamming_hex(lines[k].split()[1], CHELSEA_HEX) > 31 for k in (0, 1, 2, 4, 5))
    start = SEGMENT["start"] / TRUTH["fps"]
    assert f"@{start:.2f}s (cut)" in stdout  # the cut into the blocked segment has its own line


def test_hash_video_samples_a_shot_shorter_than_the_step(capsys: pytest.CaptureFixture[str]) -> None:
    """Every 2 s samples frames 0, 60, 120: the blocked shot (frames 75..119) lies between them."""
    code, stdout, err = run_cli(capsys, "hash", BLOCKED_CUT, "--every", "2")
    assert code == 0, err
    matching = [line for line in stdout.splitlines() if hamming_hex(line.split()[1], CHELSEA_HEX) <= 31]
    assert matching, stdout
    assert f"@{SEGMENT['start'] / TRUTH['fps']:.2f}s (cut)" in matching[0]


@pytest.mark.parametrize("case", ["missing", "not an image", "not a video"])
def test_hash_user_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str) -> None:
    path = {
        "missing": tmp_path / "nope.png",
        "not an image": tmp_path / "fake.png",
        "not a video": tmp_path / "fake.mkv",
    }[case]
    if case != "missing":
        path.write_text("not pixels\n")
    code, stdout, err = run_cli(capsys, "hash", path)
    assert_one_line_error(code, err, path.name)


@pytest.mark.parametrize("every", ["0", "-1"])
def test_hash_every_must_be_positive(capsys: pytest.CaptureFixture[str], every: str) -> None:
    code, _, err = run_cli(capsys, "hash", BLOCKED_CUT, "--every", every)
    assert_one_line_error(code, err, f"--every {every}")

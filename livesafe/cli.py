"""``livesafe`` command line: scan | hash (the relay's serve/publish/watch come next).

Errors a user can fix (unreadable input, bad list line, bad config) print one
line ``livesafe: error: ...`` and exit 2 -- never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from livesafe.config import ConfigError, load_config
from livesafe.guard.frames import luma_view
from livesafe.guard.matcher import LiveMatcher
from livesafe.lists import BlocklistError, ListSpec
from livesafe.scan import ScanError, open_video, progress_stream, scan_file
from livesafe.signals import SIGNALS, SignalType, signal_named
from livesafe.signals.pdq import luma_from_rgb

EXIT_CLEAN, EXIT_MATCHED, EXIT_ERROR = 0, 1, 2
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm"}


class UsageError(Exception):
    pass


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="livesafe: %(levelname)s: %(message)s")
    try:
        return int(args.run(args))
    except (UsageError, ScanError, ConfigError, BlocklistError, ValueError) as exc:
        print(f"livesafe: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="livesafe", description="Live-stream safety proxy: hash-match video against blocklists.")
    sub = parser.add_subparsers(dest="command", required=True)

    scan = sub.add_parser("scan", help="check a video file; optionally write a redacted copy")
    scan.add_argument("input", type=Path)
    scan.add_argument("--blocklist", type=Path, action="append", default=[], metavar="FILE", help="list file (repeatable)")
    scan.add_argument("--action", choices=["blur", "slate"], help="action for --blocklist lists (default blur)")
    scan.add_argument("--category", default="test", help="category for --blocklist lists")
    scan.add_argument("--output", type=Path, help="write the redacted video here")
    scan.add_argument("--events", type=Path, help="write events as JSON lines here ('-' for stdout)")
    scan.add_argument("--config", type=Path, help="TOML settings and lists")
    scan.add_argument("--skip-bad-lines", action="store_true", help="load lists without their bad lines (counted)")
    scan.set_defaults(run=_run_scan)

    hash_ = sub.add_parser("hash", help="print blocklist lines for images or sampled video frames")
    hash_.add_argument("files", type=Path, nargs="+")
    hash_.add_argument("--signal", default="pdq", choices=sorted(SIGNALS))
    hash_.add_argument("--every", type=float, default=1.0, metavar="SECONDS", help="video: one hash per this many seconds")
    hash_.set_defaults(run=_run_hash)
    return parser


def _run_scan(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    extra = [ListSpec(path=p, category=args.category, action=args.action or "blur") for p in args.blocklist]
    config = config.with_lists(extra)
    if not config.lists:
        raise UsageError("no blocklist given (use --blocklist FILE or lists in --config)")
    if not args.input.is_file():
        raise UsageError(f"{args.input}: no such file")
    skip = args.skip_bad_lines or config.skip_bad_lines
    lists = LiveMatcher(config.lists, skip_bad_lines=skip)
    for bl in lists.current.blocklists:
        if bl.skipped:
            print(f"livesafe: warning: list {bl.spec.name!r}: skipped {bl.skipped} bad line(s), first: {bl.errors[0]}", file=sys.stderr)
    events_out = None
    if args.events is not None:
        events_out = sys.stdout if str(args.events) == "-" else _open_for_write(args.events)
    try:
        result = scan_file(
            args.input,
            lambda: lists.current,
            config.guard,
            output_path=args.output,
            on_event=(lambda e: print(e.to_json(), file=events_out, flush=True)) if events_out else None,
            progress=progress_stream(),
        )
    finally:
        if events_out is not None and events_out is not sys.stdout:
            events_out.close()
    if result.damaged_packets:
        print(f"livesafe: warning: {args.input}: {result.damaged_packets} damaged video packet(s) skipped", file=sys.stderr)
    if result.expected_frames and result.frames < result.expected_frames:
        print(
            f"livesafe: warning: {args.input}: incomplete input: decoded {result.frames} of {result.expected_frames} frames",
            file=sys.stderr,
        )
    started = [e for e in result.events if e.type == "match.started"]
    summary = (
        f"{args.input}: {result.frames} frames, {len(started)} interruption(s), "
        f"{result.frames_redacted} frames redacted ({result.frames_slated} slated)"
    )
    print(summary, file=sys.stderr if events_out is sys.stdout else sys.stdout)
    for e in started:
        print(
            f"  t={e.media_time:7.2f}s frame {e.frame_index}: {e.list_name} ({e.category}) {e.signal} distance {e.distance} "
            f"in {e.region_kind} {e.region} [{e.orientation}] -> {e.action}",
            file=sys.stderr if events_out is sys.stdout else sys.stdout,
        )
    if result.guard_errors:
        # Fail closed: those frames were slated, but the file was not checked.
        raise UsageError(
            f"{args.input}: the check failed on {result.guard_errors} frame(s) (slated in the output): {result.first_guard_error}"
        )
    return EXIT_MATCHED if result.matched else EXIT_CLEAN


def _open_for_write(path: Path):
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return path.open("w", encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"{path}: cannot write: {exc.strerror}") from None


def _run_hash(args: argparse.Namespace) -> int:
    signal = signal_named(args.signal)
    for path in args.files:
        if not path.is_file():
            raise UsageError(f"{path}: no such file")
        if path.suffix.lower() in _IMAGE_SUFFIXES:
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is None:
                raise UsageError(f"{path}: cannot read as an image")
            luma = luma_from_rgb(image[..., ::-1])
            _print_hash(signal, luma, 1.0, f"{path}")
        else:
            _hash_video(signal, path, args.every)
    return EXIT_CLEAN


def _hash_video(signal: SignalType, path: Path, every: float) -> None:
    with open_video(path) as container:
        next_time = 0.0
        for index, frame in enumerate(container.decode(video=0)):
            t = float(frame.time) if frame.time is not None else index / 30
            if t + 1e-9 < next_time:
                continue
            next_time = t + every
            y, scale = luma_view(frame)
            _print_hash(signal, y, scale, f"{path}@{t:.2f}s")


def _print_hash(signal: SignalType, luma: np.ndarray, scale: float, label: str) -> None:
    hashes = signal.hash_luma(luma, scale)
    if hashes.quality < signal.min_quality:
        print(f"# {label}: quality {hashes.quality} < {signal.min_quality}, too flat to list", file=sys.stderr)
        return
    print(f"{signal.name} {signal.format_hex(hashes.variants[0])}  # {label} quality={hashes.quality}")


if __name__ == "__main__":
    sys.exit(main())

"""Blocklist file formats.

A format splits lines into raw ``(line, signal name, hex, metadata)`` rows; the
loader checks signal names and hex the same way for every format.  A format may
also read its commonest lines straight from the file's bytes with numpy
(``parse_bulk``), which is what makes million-line lists load fast; the lines it
does not take go through ``parse``.  Adding a format is one ``ListFormat``
subclass plus an entry in ``FORMATS``.
"""

from __future__ import annotations

import binascii
import csv
import math
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from types import MappingProxyType
from typing import ClassVar
from urllib.parse import urlsplit

import numpy as np

from livesafe.signals import SIGNALS, UNMATCHABLE

Row = tuple[int, str, str, Mapping[str, str]]
NumberedLine = tuple[int, str]

NO_METADATA: Mapping[str, str] = MappingProxyType({})

# Lines ``parse_bulk`` reads per step.  Its gather of the lines' bytes and the
# hex decode hold the GIL for as long as they run (~0.2 s for all of a 1M-line
# list at once), so a reload on the watcher's thread stalled every stream's
# guard thread that long; 64k lines is a few milliseconds a step.
_BULK_ROWS = 1 << 16


@dataclass(frozen=True, slots=True)
class LineError:
    """A bad line: skippable on request, otherwise fatal."""

    line: int
    reason: str


class FormatError(Exception):
    """A problem that makes the whole file unreadable (e.g. a bad CSV header), even when skipping bad lines."""

    def __init__(self, line: int, reason: str) -> None:
        super().__init__(reason)
        self.line = line
        self.reason = reason


@dataclass
class BulkRows:
    """What ``parse_bulk`` read: good rows only, as (1-based lines, values) chunks per signal."""

    handled: np.ndarray  # bool per line: read here, so ``parse`` never sees it
    found: dict[str, list[tuple[np.ndarray, np.ndarray]]] = field(default_factory=dict)


_NIBBLE = np.full(256, 0xFF, dtype=np.uint8)
for _digit in "0123456789abcdefABCDEF":
    _NIBBLE[ord(_digit)] = int(_digit, 16)


def decode_hex(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Hash bytes of (n, digits) ASCII hex codes, and which rows were all hex digits.

    ``unhexlify`` decodes an all-good block in one C call; only a block with a
    bad digit pays for the lookup table that finds which rows.
    """
    rows, digits = codes.shape
    try:
        values = np.frombuffer(binascii.unhexlify(np.ascontiguousarray(codes).data), dtype=np.uint8)
        return values.reshape(rows, digits // 2), np.ones(rows, dtype=bool)
    except binascii.Error:
        nibbles = _NIBBLE[codes]
        return (nibbles[:, 0::2] << 4) | nibbles[:, 1::2], (nibbles != 0xFF).all(axis=1)


def _is_data(line: str) -> bool:
    """False for blank lines and whole-line ``#`` comments, which every format allows anywhere."""
    stripped = line.lstrip()
    return bool(stripped) and stripped[0] != "#"


def _clip(text: str, limit: int = 20) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "…")


class ListFormat(ABC):
    name: ClassVar[str]

    @abstractmethod
    def detects(self, first_line: str) -> bool:
        """Whether a file whose first data line is ``first_line`` is in this format."""

    @abstractmethod
    def parse(self, lines: Iterable[NumberedLine], where: str) -> Iterator[Row | LineError]:
        """Rows and bad lines, in file order, of (line number, text without terminator) pairs.

        ``lines`` are the lines ``parse_bulk`` did not take, blank ones included;
        ``where`` is the list's file or URL, for a format whose rows are named
        after it (one vPDQ file is one video)."""

    def parse_bulk(self, codes: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> BulkRows:
        """Rows read without per-line Python work from the file's bytes ``codes``, line i being
        ``codes[starts[i]:ends[i]]``.  Only lines that are certainly good may be taken."""
        return BulkRows(np.zeros(len(starts), dtype=bool))


def _signals_by_digits() -> dict[int, list[str]]:
    by_digits: dict[int, list[str]] = {}
    for signal in SIGNALS.values():
        by_digits.setdefault(signal.bits // 4, []).append(signal.name)
    return by_digits


class TextFormat(ListFormat):
    """ThreatExchange-style ``SIGNAL HEX`` lines, and bare hex lines whose length names one signal (64 digits: pdq).

    Both kinds may be mixed in one file.  Fields are separated by whitespace,
    commas or tabs; ``#`` starts a comment anywhere on a line.
    """

    name = "text"
    SEPARATORS: ClassVar[bytes] = b" ,\t"
    _by_digits: ClassVar[dict[int, list[str]]] = _signals_by_digits()

    def detects(self, first_line: str) -> bool:
        return True

    def parse_bulk(self, codes: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> BulkRows:
        """Takes exact ``name<sep>hex`` lines (lower-case name, one separator) and bare hex lines, nothing else.

        Unmatchable names (md5) are taken too, so a list of millions of them loads as fast as PDQ."""
        bulk = BulkRows(np.zeros(len(starts), dtype=bool))
        lengths = ends - starts
        forms = [(signal.name, signal.name.encode(), signal.bits // 4) for signal in SIGNALS.values()]
        forms += [(name, name.encode(), digits) for name, digits in UNMATCHABLE.items()]
        forms += [(names[0], b"", digits) for digits, names in self._by_digits.items() if len(names) == 1]
        for name, prefix, digits in forms:
            width = len(prefix) + 1 + digits if prefix else digits
            every = np.flatnonzero((lengths == width) & ~bulk.handled)
            for at in range(0, len(every), _BULK_ROWS):
                candidates = every[at : at + _BULK_ROWS]
                if prefix:
                    head = np.lib.stride_tricks.sliding_window_view(codes, len(prefix) + 1)[starts[candidates]]
                    named = (head[:, :-1] == np.frombuffer(prefix, dtype=np.uint8)).all(axis=1)
                    named &= np.isin(head[:, -1], np.frombuffer(self.SEPARATORS, dtype=np.uint8))
                    candidates = candidates[named]
                windows = np.lib.stride_tricks.sliding_window_view(codes, digits)
                values, good = decode_hex(windows[starts[candidates] + (width - digits)])
                bulk.handled[candidates[good]] = True
                bulk.found.setdefault(name, []).append((candidates[good] + 1, values[good]))
        return bulk

    def parse(self, lines: Iterable[NumberedLine], where: str) -> Iterator[Row | LineError]:
        for line_no, line in lines:
            if "#" in line:
                line = line[: line.index("#")]
            if "," in line:
                line = line.replace(",", " ")
            fields = line.split()
            if len(fields) == 2:
                yield line_no, fields[0], fields[1], NO_METADATA
            elif len(fields) == 1:
                yield self._bare(line_no, fields[0])
            elif fields:
                yield LineError(
                    line_no, f"too many fields ({len(fields)}): expected 'SIGNAL HEX' (start comments with '#')"
                )

    def _bare(self, line_no: int, token: str) -> Row | LineError:
        names = self._by_digits.get(len(token), [])
        if len(names) == 1:
            return line_no, names[0], token, NO_METADATA
        if names:
            return LineError(
                line_no,
                f"ambiguous bare hash: {len(token)} hex digits could be {', '.join(names)}; "
                f"prefix it with the signal name, e.g. '{names[0]} {token}'",
            )
        if token.lower() in SIGNALS or token.lower() in UNMATCHABLE:
            return LineError(line_no, f"missing hash after signal type {token!r}")
        return LineError(
            line_no, f"expected 'SIGNAL HEX' or a bare 64-digit pdq hash, got {_clip(token)} ({len(token)} characters)"
        )


class CsvFormat(ListFormat):
    """CSV with a header naming ``signal_type`` and ``signal_str`` columns; other columns become per-row metadata."""

    name = "csv"
    SIGNAL_COLUMN: ClassVar[str] = "signal_type"
    HASH_COLUMN: ClassVar[str] = "signal_str"

    def detects(self, first_line: str) -> bool:
        cells = {cell.strip().lower() for cell in next(csv.reader([first_line]), [])}
        return self.SIGNAL_COLUMN in cells or self.HASH_COLUMN in cells

    def parse(self, lines: Iterable[NumberedLine], where: str) -> Iterator[Row | LineError]:
        numbers: list[int] = []  # file line of each line handed to the reader; records may span lines

        def records() -> Iterator[str]:
            quoted = False  # inside a quoted field, blank and '#' lines are content (quotes inside are doubled)
            for line_no, line in lines:
                if not quoted and not _is_data(line):
                    continue
                if line.count('"') % 2:
                    quoted = not quoted
                numbers.append(line_no)
                yield line + "\n"

        reader = csv.reader(records(), strict=True, skipinitialspace=True)
        try:
            header = [cell.strip() for cell in next(reader)]
        except csv.Error as error:
            raise FormatError(numbers[0], f"bad CSV header: {error}") from None
        keys = [cell.lower() for cell in header]
        for column in (self.SIGNAL_COLUMN, self.HASH_COLUMN):
            if keys.count(column) != 1:
                problem = "has no" if column not in keys else "repeats the"
                raise FormatError(numbers[0], f"CSV header {problem} {column!r} column")
        signal_at, hash_at = keys.index(self.SIGNAL_COLUMN), keys.index(self.HASH_COLUMN)
        extra = [(at, name) for at, name in enumerate(header) if at not in (signal_at, hash_at)]
        width = len(header)
        consumed = reader.line_num
        while True:
            try:
                for row in reader:
                    start, consumed = numbers[consumed], reader.line_num
                    if len(row) != width:
                        yield self._width_error(start, row, header)
                        continue
                    signal, hex_text = row[signal_at].strip(), row[hash_at].strip()
                    if not hex_text:
                        yield LineError(start, f"missing hash in column {self.HASH_COLUMN!r}")
                    elif not signal:
                        yield LineError(start, f"missing signal type in column {self.SIGNAL_COLUMN!r}")
                    else:
                        yield start, signal, hex_text, {name: row[at] for at, name in extra} if extra else NO_METADATA
                return
            except csv.Error as error:
                start, consumed = numbers[consumed], reader.line_num
                yield LineError(start, f"bad CSV: {error}")

    @staticmethod
    def _width_error(line: int, row: list[str], header: list[str]) -> LineError:
        if len(row) > len(header):
            return LineError(line, f"too many fields ({len(row)}): the CSV header has {len(header)} columns")
        missing = ", ".join(repr(name) for name in header[len(row) :])
        return LineError(line, f"missing columns {missing}: {len(row)} of {len(header)} fields")


class VpdqFormat(ListFormat):
    """Meta's vPDQ hash file: one video, a ``frameNumber,quality,pdqHex,timestamp`` line per hashed frame.

    The form ThreatExchange's ``vpdq-hash-video`` writes (``vpdq/cpp/io/vpdqio.cpp``:
    four comma-separated fields, timestamp in seconds), without a header.  A live
    stream showing the video is caught frame by frame: each frame is a ``pdq``
    entry, whose metadata names the video (the file's stem: vPDQ files are named
    after their video) and where in it the frame is, so a match says which part
    was re-streamed.  vPDQ's frame/video match percentages need the whole query
    video, which a live stream never is; any one frame within PDQ's threshold is
    what a guard can act on before the frame leaves.

    As the reference matcher does, frames of quality below ``MIN_QUALITY`` are
    left out (too flat to tell apart: they match unrelated pictures), and
    consecutive frames with the same hash become one entry that keeps the range
    of frames and timestamps it covers.  A file whose every frame is too flat
    cannot match anything and is refused as a whole.
    """

    name = "vpdq"
    # python-threatexchange's VPDQ_QUALITY_THRESHOLD (vpdq_util.py): frames below it are not compared.
    MIN_QUALITY: ClassVar[int] = 50
    FIELDS: ClassVar[str] = "frameNumber,quality,pdqHex,timestamp"
    _PDQ_HEX: ClassVar[re.Pattern[str]] = re.compile("[0-9a-fA-F]{64}")

    def detects(self, first_line: str) -> bool:
        """Four comma-separated fields starting with a frame number: never a valid text or CSV list line."""
        fields = first_line.split(",")
        return len(fields) == 4 and _is_count(fields[0].strip())

    def parse(self, lines: Iterable[NumberedLine], where: str) -> Iterator[Row | LineError]:
        video = PurePosixPath(urlsplit(where).path if where.startswith(("http://", "https://")) else where).stem
        run: _FrameRun | None = None
        frames = 0
        first_line: int | None = None
        for line_no, line in lines:
            if not _is_data(line):
                continue
            frame = self._frame(line_no, line)
            if isinstance(frame, LineError):
                yield frame
                continue
            frames += 1
            first_line = first_line or line_no
            number, quality, hex_text, timestamp = frame
            if quality < self.MIN_QUALITY:
                continue
            if run is not None and run.hex_text == hex_text:
                run.last_frame, run.last_timestamp = number, timestamp
                continue
            if run is not None:
                yield run.row(video)
            run = _FrameRun(line_no, hex_text, number, number, timestamp, timestamp)
        if run is not None:
            yield run.row(video)
        elif frames:
            assert first_line is not None  # set with the first frame
            raise FormatError(
                first_line,
                f"all {frames} frames have quality below {self.MIN_QUALITY}: too flat to match anything",
            )

    def _frame(self, line_no: int, line: str) -> tuple[int, int, str, float] | LineError:
        fields = [field.strip() for field in line.split(",")]
        if len(fields) != 4:
            return LineError(line_no, f"expected 4 comma-separated fields {self.FIELDS!r}, got {len(fields)}")
        number, quality, hex_text, timestamp = fields
        if not _is_count(number):
            return LineError(line_no, f"frame number must be a whole number >= 0, got {_clip(number)}")
        if not _is_count(quality) or int(quality) > 100:
            return LineError(line_no, f"quality must be a whole number 0..100, got {_clip(quality)}")
        if not self._PDQ_HEX.fullmatch(hex_text):
            return LineError(
                line_no, f"expected a 64-digit pdq hash in field 3, got {_clip(hex_text)} ({len(hex_text)} characters)"
            )
        try:
            seconds = float(timestamp)
        except ValueError:
            seconds = -1.0
        if not (math.isfinite(seconds) and seconds >= 0):
            return LineError(line_no, f"timestamp must be seconds >= 0, got {_clip(timestamp)}")
        return int(number), int(quality), hex_text.lower(), seconds


@dataclass
class _FrameRun:
    """Consecutive kept frames of a vPDQ file with one hash: one entry."""

    line: int
    hex_text: str
    first_frame: int
    last_frame: int
    first_timestamp: float
    last_timestamp: float

    def row(self, video: str) -> Row:
        return (
            self.line,
            "pdq",
            self.hex_text,
            {
                "video": video,
                "first_frame": str(self.first_frame),
                "last_frame": str(self.last_frame),
                "first_timestamp": f"{self.first_timestamp:.3f}",
                "last_timestamp": f"{self.last_timestamp:.3f}",
            },
        )


def _is_count(text: str) -> bool:
    return text.isascii() and text.isdecimal()


FORMATS: list[ListFormat] = [CsvFormat(), VpdqFormat(), TextFormat()]


def detect_format(lines: Iterable[str]) -> ListFormat:
    """The first format in ``FORMATS`` that claims the first data line (text, the fallback, claims any).

    The content decides, not the file's name: a list from a URL has no reliable one.
    """
    first = next((line for line in lines if _is_data(line)), "")
    return next(fmt for fmt in FORMATS if fmt.detects(first))

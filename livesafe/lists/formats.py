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
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import ClassVar

import numpy as np

from livesafe.signals import SIGNALS

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
    def parse(self, lines: Iterable[NumberedLine]) -> Iterator[Row | LineError]:
        """Rows and bad lines, in file order, of (line number, text without terminator) pairs.

        ``lines`` are the lines ``parse_bulk`` did not take, blank ones included."""

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
        """Takes exact ``name<sep>hex`` lines (lower-case name, one separator) and bare hex lines, nothing else."""
        bulk = BulkRows(np.zeros(len(starts), dtype=bool))
        lengths = ends - starts
        forms = [(signal.name, signal.name.encode(), signal.bits // 4) for signal in SIGNALS.values()]
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

    def parse(self, lines: Iterable[NumberedLine]) -> Iterator[Row | LineError]:
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
        if token.lower() in SIGNALS:
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

    def parse(self, lines: Iterable[NumberedLine]) -> Iterator[Row | LineError]:
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


FORMATS: list[ListFormat] = [CsvFormat(), TextFormat()]


def detect_format(lines: Iterable[str]) -> ListFormat:
    """The first format in ``FORMATS`` that claims the first data line (text, the fallback, claims any)."""
    first = next((line for line in lines if _is_data(line)), "")
    return next(fmt for fmt in FORMATS if fmt.detects(first))

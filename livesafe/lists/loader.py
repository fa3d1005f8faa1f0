"""Loading list files with ``file:line`` errors, and noticing when they change.

The file is split into lines by byte offset with numpy; the format reads its
plain lines in bulk from those bytes and only the rest (comments, odd spacing,
CSV, errors) are parsed line by line in Python.  Hex from the per-line path is
decoded for all rows of a signal at once, so every error still names its line.

Hashes no frame can match (``UNMATCHABLE``: MD5) are accepted, checked like any
other and counted on the Blocklist, but never stored with its hashes: nothing
can index or match them, and ``LiveLists`` warns about them at each load.
"""

from __future__ import annotations

import codecs
import hashlib
import os
import re
import stat
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from types import MappingProxyType

import numpy as np

from livesafe.lists.formats import (
    NO_METADATA,
    BulkRows,
    FormatError,
    LineError,
    NumberedLine,
    Row,
    decode_hex,
    detect_format,
)
from livesafe.lists.model import Blocklist, BlocklistError, ListSpec, located
from livesafe.signals import SIGNALS, UNMATCHABLE, SignalType, signal_named

MAX_STORED_ERRORS = 100
_HEX_DIGITS = re.compile("[0-9a-fA-F]*")

Stamp = tuple[int, int, int]


def file_stamp(st: os.stat_result) -> Stamp:
    return st.st_mtime_ns, st.st_size, st.st_ino


def read_list_file(path: Path) -> tuple[bytes, Stamp]:
    """The file's bytes and the stamp of the very file read (not of whatever the path names later)."""
    try:
        with open(path, "rb") as file:
            st = os.fstat(file.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise BlocklistError(path, "not a regular file")
            return file.read(), file_stamp(st)
    except FileNotFoundError:
        raise BlocklistError(path, "no such file") from None
    except IsADirectoryError:
        raise BlocklistError(path, "is a directory, not a list file") from None
    except OSError as error:
        raise BlocklistError(path, f"cannot read: {error.strerror or error}") from None


def _text_body(path: Path | str, data: bytes) -> bytes:
    """``data`` without its BOM, once known to be UTF-8 text."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise BlocklistError(path, "is UTF-16 text; save it as UTF-8")
    if not data.isascii():
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as error:
            line = data.count(b"\n", 0, error.start) + 1
            raise BlocklistError(path, f"not UTF-8 text (byte 0x{data[error.start]:02x} on line {line})") from None
    if b"\0" in data:
        line = data.count(b"\n", 0, data.index(b"\0")) + 1
        raise BlocklistError(path, f"binary data, not a text list (NUL byte on line {line})")
    return data.removeprefix(codecs.BOM_UTF8)


def _split_lines(body: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bytes as uint8, and each line's start and end offsets (end before any CR of a CRLF)."""
    codes = np.frombuffer(body, dtype=np.uint8)
    breaks = np.flatnonzero(codes == ord("\n"))
    starts = np.concatenate(([0], breaks + 1))
    ends = np.concatenate((breaks, [len(codes)]))
    has_cr = ends > starts
    has_cr[has_cr] = codes[ends[has_cr] - 1] == ord("\r")
    return codes, starts, ends - has_cr


class _Column:
    """The per-line rows of one signal, gathered as strings so their hex is decoded in one pass."""

    def __init__(self, signal: SignalType) -> None:
        self.signal = signal
        self.digits = signal.bits // 4
        self.lines: list[int] = []
        self.hexes: list[str] = []
        self.metadata: list[Mapping[str, str]] = []

    def decode(self) -> tuple[np.ndarray, np.ndarray, list[Mapping[str, str]], list[tuple[int, str]]]:
        """(lines, values, metadata) of the good rows, and (line, reason) of rows with a non-hex character."""
        text = "".join(self.hexes).encode("ascii", "replace")  # one byte per character keeps rows aligned
        values, good = decode_hex(np.frombuffer(text, dtype=np.uint8).reshape(len(self.hexes), self.digits))
        lines = np.asarray(self.lines, dtype=np.int64)
        if good.all():
            return lines, values, self.metadata, []
        problems = [
            (self.lines[row], _non_hex_reason(self.signal.name, self.hexes[row])) for row in np.flatnonzero(~good)
        ]
        metadata = [meta for meta, is_good in zip(self.metadata, good.tolist(), strict=True) if is_good]
        return lines[good], values[good], metadata, problems


def _non_hex_reason(name: str, hex_text: str) -> str:
    at = next(at for at, char in enumerate(hex_text) if char not in "0123456789abcdefABCDEF")
    return f"{name} hash has a non-hex character {hex_text[at]!r} at position {at + 1}"


def _unmatchable_problem(name: str, hex_text: str) -> str | None:
    """What is wrong with an unmatchable hash (checked like any other, though never stored), if anything."""
    digits = UNMATCHABLE[name]
    if len(hex_text) != digits:
        return f"{name} hash must be {digits} hex digits, got {len(hex_text)}"
    if not _HEX_DIGITS.fullmatch(hex_text):
        return _non_hex_reason(name, hex_text)
    return None


def _parse_lines(
    rows: Iterable[Row | LineError], problems: list[tuple[int, str]], unmatchable: dict[str, int]
) -> dict[str, _Column]:
    """The per-line path: check each row's signal and hex length, gather good rows by signal.

    Good rows of an unmatchable kind are only counted, in ``unmatchable``.
    """
    columns: dict[str, _Column] = {}
    by_token: dict[str, _Column] = {}  # by the name as written ("PDQ", "pdq"), to look each spelling up once
    for item in rows:
        if isinstance(item, LineError):
            problems.append((item.line, item.reason))
            continue
        line, token, hex_text, metadata = item
        column = by_token.get(token)
        if column is None:
            name = token.strip().lower()
            if name in UNMATCHABLE:
                reason = _unmatchable_problem(name, hex_text)
                if reason is None:
                    unmatchable[name] = unmatchable.get(name, 0) + 1
                else:
                    problems.append((line, reason))
                continue
            try:
                signal = signal_named(token)
            except ValueError as error:
                problems.append((line, str(error)))
                continue
            column = by_token[token] = columns.setdefault(signal.name, _Column(signal))
        if len(hex_text) != column.digits:
            problems.append(
                (line, f"{column.signal.name} hash must be {column.digits} hex digits, got {len(hex_text)}")
            )
            continue
        column.lines.append(line)
        column.hexes.append(hex_text)
        column.metadata.append(metadata)
    return columns


def parse_list(spec: ListSpec, data: bytes, skip_bad_lines: bool = False) -> Blocklist:
    """A list file's bytes (any format of ``FORMATS``) as a Blocklist; errors name ``spec.where``."""
    body = _text_body(spec.where, data)
    codes, starts, ends = _split_lines(body)

    def numbered(indices: np.ndarray) -> Iterator[NumberedLine]:
        for index, start, end in zip(indices.tolist(), starts[indices].tolist(), ends[indices].tolist(), strict=True):
            yield index + 1, body[start:end].decode()

    fmt = detect_format(
        body[start:end].decode() for start, end in zip(starts, ends, strict=True)
    )  # stops at the first data line
    bulk = fmt.parse_bulk(codes, starts, ends)
    problems: list[tuple[int, str]] = []
    unmatchable = {name: sum(len(lines) for lines, _ in bulk.found.pop(name, [])) for name in UNMATCHABLE}
    try:
        columns = _parse_lines(fmt.parse(numbered(np.flatnonzero(~bulk.handled)), spec.where), problems, unmatchable)
    except FormatError as error:
        raise BlocklistError(spec.where, error.reason, error.line) from None
    version = hashlib.sha256(data).hexdigest()[:16]
    return _blocklist(spec, columns, bulk, problems, skip_bad_lines, version, unmatchable)


def build_blocklist(
    spec: ListSpec, rows: Iterable[tuple[str, str, Mapping[str, str]]], version: str, skip_bad_rows: bool = False
) -> Blocklist:
    """A Blocklist from ``(signal name, hex, metadata)`` rows (an exchange's entries, a bank's hashes).

    Rows are checked exactly as file lines are (unknown signal, wrong length,
    non-hex); "line" in their errors is the row's 1-based position.
    """
    problems: list[tuple[int, str]] = []
    unmatchable: dict[str, int] = {}
    numbered = ((at, signal, hex_text, meta) for at, (signal, hex_text, meta) in enumerate(rows, 1))
    columns = _parse_lines(numbered, problems, unmatchable)
    bulk = BulkRows(handled=np.zeros(0, dtype=bool))
    return _blocklist(spec, columns, bulk, problems, skip_bad_rows, version, unmatchable)


def _blocklist(
    spec: ListSpec,
    columns: dict[str, _Column],
    bulk: BulkRows,
    problems: list[tuple[int, str]],
    skip_bad_lines: bool,
    version: str,
    unmatchable: Mapping[str, int],
) -> Blocklist:
    hashes: dict[str, np.ndarray] = {}
    row_lines: dict[str, np.ndarray] = {}
    row_metadata: dict[str, list[Mapping[str, str]]] = {}
    for name in SIGNALS:
        chunks = bulk.found.get(name, [])
        metadata = [NO_METADATA] * sum(len(chunk_lines) for chunk_lines, _ in chunks)
        if name in columns:
            column_lines, column_values, column_metadata, bad_hex = columns[name].decode()
            problems.extend(bad_hex)
            chunks = [*chunks, (column_lines, column_values)]
            metadata += column_metadata
        if not metadata:
            continue
        lines = np.concatenate([chunk_lines for chunk_lines, _ in chunks])
        values = np.concatenate([chunk_values for _, chunk_values in chunks])
        if len(chunks) > 1 and not (np.diff(lines) > 0).all():  # chunks from different paths interleave
            order = np.argsort(lines, kind="stable")
            lines, values, metadata = lines[order], values[order], [metadata[row] for row in order.tolist()]
        lines.flags.writeable = values.flags.writeable = False
        hashes[name], row_lines[name], row_metadata[name] = values, lines, metadata
    if problems and not skip_bad_lines:
        line, reason = min(problems)
        raise BlocklistError(spec.where, reason, line)
    problems.sort()
    return Blocklist(
        spec=spec,
        hashes=MappingProxyType(hashes),
        metadata=MappingProxyType(row_metadata),
        skipped=len(problems),
        errors=[located(spec.where, line, reason) for line, reason in problems[:MAX_STORED_ERRORS]],
        version=version,
        lines=MappingProxyType(row_lines),
        unmatchable=MappingProxyType({name: count for name, count in unmatchable.items() if count}),
    )


def load_blocklist(spec: ListSpec, *, skip_bad_lines: bool = False) -> Blocklist:
    """The list at ``spec.path``; BlocklistError at the first bad line unless ``skip_bad_lines``."""
    if spec.path is None:
        raise BlocklistError(spec.where, "not a file list")
    data, _ = read_list_file(spec.path)
    return parse_list(spec, data, skip_bad_lines)

"""Blocklist formats, file:line errors, skip mode and change detection."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from livesafe.lists import Blocklist, BlocklistError, ListEntry, ListSpec, load_blocklist
from livesafe.lists.sources import FileSource
from livesafe.signals import SIGNALS

RNG = np.random.default_rng(1234)


def random_hex(signal: str = "pdq") -> str:
    return bytes(RNG.integers(0, 256, SIGNALS[signal].nbytes, dtype=np.uint8)).hex()


def real_pdq_hex() -> str:
    luma = np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)
    return SIGNALS["pdq"].format_hex(SIGNALS["pdq"].hash_luma(luma).variants[0])


def write(tmp_path: Path, text: str, name: str = "list.txt", encoding: str = "utf-8", newline: str = "\n") -> Path:
    path = tmp_path / name
    path.write_bytes(text.replace("\n", newline).encode(encoding))
    return path


def load(path: Path, **kwargs: bool) -> Blocklist:
    return load_blocklist(ListSpec(path), **kwargs)


def as_hex(blocklist: Blocklist, signal: str) -> list[str]:
    return [bytes(row).hex() for row in blocklist.hashes[signal]]


def raises_at(path: Path, line: int, *fragments: str) -> None:
    with pytest.raises(BlocklistError) as caught:
        load(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:{line}: "), message
    assert caught.value.line == line and caught.value.where == str(path)
    for fragment in fragments:
        assert fragment in message, message


# --- formats ---------------------------------------------------------------------------------


def test_plain_format_all_signals_in_file_order(tmp_path: Path) -> None:
    pdq1, pdq2 = real_pdq_hex(), random_hex()
    small = {name: random_hex(name) for name in ("phash", "dhash", "ahash", "whash")}
    text = f"pdq {pdq1}\n" + "".join(f"{name} {value}\n" for name, value in small.items()) + f"pdq {pdq2}\n"
    blocklist = load(write(tmp_path, text))
    assert as_hex(blocklist, "pdq") == [pdq1, pdq2]
    for name, value in small.items():
        assert as_hex(blocklist, name) == [value]
        assert blocklist.hashes[name].shape == (1, 8) and blocklist.hashes[name].dtype == np.uint8
    assert len(blocklist) == 6
    assert blocklist.lines["pdq"].tolist() == [1, 6]
    assert blocklist.entry_metadata("pdq", 0) == {}
    assert blocklist.skipped == 0 and blocklist.errors == []


def test_separators_case_and_spacing(tmp_path: Path) -> None:
    values = [random_hex() for _ in range(6)]
    text = "\n".join(
        [
            f"pdq,{values[0]}",
            f"pdq\t{values[1]}",
            f"PDQ   {values[2]}",
            f"  Pdq , {values[3].upper()}  ",
            f"pdq, {values[4]}",
            values[5],
        ]
    )
    assert as_hex(load(write(tmp_path, text)), "pdq") == values


def test_bare_64_digit_lines_are_pdq(tmp_path: Path) -> None:
    values = [random_hex() for _ in range(3)]
    blocklist = load(write(tmp_path, "\n".join(values) + "\n"))
    assert list(blocklist.hashes) == ["pdq"]
    assert as_hex(blocklist, "pdq") == values


def test_comments_blank_lines_crlf_and_bom(tmp_path: Path) -> None:
    a, b, c = random_hex(), random_hex(), random_hex("phash")
    text = (
        f"# exported 2024-01-01\n\n   \npdq {a}   # trailing note\n"
        f"  # indented comment\n{b} # bare, commented\nphash {c}\n\n"
    )
    path = write(tmp_path, "\ufeff" + text, newline="\r\n")
    blocklist = load(path)
    assert as_hex(blocklist, "pdq") == [a, b]
    assert as_hex(blocklist, "phash") == [c]
    assert blocklist.lines["pdq"].tolist() == [4, 6]
    assert blocklist.lines["phash"].tolist() == [7]


def test_fast_and_per_line_rows_keep_file_order(tmp_path: Path) -> None:
    """Plain lines are read in bulk, odd ones line by line; the result must interleave them in file order."""
    values = [random_hex() for _ in range(2000)]
    styles = [
        lambda v: f"pdq {v}",
        lambda v: v,
        lambda v: f"pdq {v} # note",
        lambda v: f"PDQ {v}",
        lambda v: f" pdq\t{v}",
    ]
    lines = [styles[RNG.integers(len(styles))](value) for value in values]
    blocklist = load(write(tmp_path, "\n".join(lines)))
    assert as_hex(blocklist, "pdq") == values
    assert blocklist.lines["pdq"].tolist() == list(range(1, 2001))
    assert np.array_equal(blocklist.hashes["pdq"][7], SIGNALS["pdq"].parse_hex(values[7]))


def test_a_list_longer_than_one_bulk_step_keeps_every_row_in_file_order(tmp_path: Path) -> None:
    """The bulk reader takes lines in steps (so a reload never holds the GIL long); rows across steps stay whole."""
    count = 150_000  # more than two steps of 65,536 lines
    values = [bytes(row).hex() for row in RNG.integers(0, 256, (count, 32), dtype=np.uint8)]
    lines = [v if i % 3 == 0 else f"pdq {v}" for i, v in enumerate(values)]
    lines[100_001] = "pdq " + "z" * 64  # a bad line in the second step, read in bulk with the rest
    blocklist = load(write(tmp_path, "\n".join(lines)), skip_bad_lines=True)
    kept = [v for i, v in enumerate(values) if i != 100_001]
    assert as_hex(blocklist, "pdq") == kept
    assert blocklist.lines["pdq"].tolist() == [i + 1 for i in range(count) if i != 100_001]
    assert blocklist.skipped == 1 and blocklist.errors[0].startswith(f"{tmp_path / 'list.txt'}:100002: ")


def test_csv_with_metadata_in_any_column_order(tmp_path: Path) -> None:
    pdq, phash = real_pdq_hex(), random_hex("phash")
    text = f"# csv export\nid,signal_str,note,signal_type\n1,{pdq},first,pdq\n\n2,{phash},,PHASH\n"
    blocklist = load(write(tmp_path, text, "list.csv"))
    assert as_hex(blocklist, "pdq") == [pdq]
    assert as_hex(blocklist, "phash") == [phash]
    assert blocklist.entry_metadata("pdq", 0) == {"id": "1", "note": "first"}
    assert blocklist.entry_metadata("phash", 0) == {"id": "2", "note": ""}
    assert blocklist.lines["pdq"].tolist() == [3] and blocklist.lines["phash"].tolist() == [5]


def test_csv_quoted_fields_crlf_and_bom(tmp_path: Path) -> None:
    a, b = random_hex(), random_hex()
    text = (
        f'\ufeffSignal_Type, Signal_Str ,description\n"pdq","{a}","cat, dog and ""quotes"""\npdq, "{b}", "two\nlines"\n'
    )
    blocklist = load(write(tmp_path, text, "list.csv", newline="\r\n"))
    assert as_hex(blocklist, "pdq") == [a, b]
    assert blocklist.entry_metadata("pdq", 0) == {"description": 'cat, dog and "quotes"'}
    assert blocklist.entry_metadata("pdq", 1) == {"description": "two\nlines"}
    assert blocklist.lines["pdq"].tolist() == [2, 3]


def test_csv_with_only_the_two_columns_has_empty_metadata(tmp_path: Path) -> None:
    value = random_hex()
    blocklist = load(write(tmp_path, f"signal_type,signal_str\npdq,{value}\n", "list.csv"))
    assert as_hex(blocklist, "pdq") == [value]
    assert blocklist.entry_metadata("pdq", 0) == {}


def test_entry_and_read_only_arrays(tmp_path: Path) -> None:
    value = random_hex()
    blocklist = load(write(tmp_path, f"# header\npdq {value}\n"))
    entry = blocklist.entry("pdq", 0)
    assert isinstance(entry, ListEntry)
    assert (entry.signal, entry.line, dict(entry.metadata)) == ("pdq", 2, {})
    assert bytes(entry.value).hex() == value
    with pytest.raises(ValueError):
        blocklist.hashes["pdq"][0, 0] = 1


def test_empty_and_comment_only_files_load_with_no_entries(tmp_path: Path) -> None:
    for text in ("", "\n\n", "# nothing yet\n\n# still nothing\n"):
        blocklist = load(write(tmp_path, text))
        assert len(blocklist) == 0 and dict(blocklist.hashes) == {} and blocklist.skipped == 0


def test_version_is_a_content_digest(tmp_path: Path) -> None:
    value = random_hex()
    first = load(write(tmp_path, f"pdq {value}\n", "a.txt"))
    same = load(write(tmp_path, f"pdq {value}\n", "b.txt"))
    other = load(write(tmp_path, f"pdq {random_hex()}\n", "c.txt"))
    assert len(first.version) == 16 and int(first.version, 16) >= 0
    assert first.version == same.version != other.version


# --- line errors -----------------------------------------------------------------------------


def test_unknown_signal_names_the_known_ones(tmp_path: Path) -> None:
    path = write(tmp_path, f"pdq {random_hex()}\nsha1 {random_hex()[:40]}\n")
    raises_at(path, 2, "unknown signal type 'sha1'", "known: ahash, dhash, pdq, phash, whash")


def test_wrong_hex_length(tmp_path: Path) -> None:
    raises_at(
        write(tmp_path, f"pdq {random_hex()}\npdq {random_hex()[:-1]}\n"), 2, "pdq hash must be 64 hex digits, got 63"
    )
    raises_at(write(tmp_path, f"phash {random_hex()}\n"), 1, "phash hash must be 16 hex digits, got 64")


def test_non_hex_characters(tmp_path: Path) -> None:
    value = random_hex()
    raises_at(write(tmp_path, f"# c\npdq {value[:-1]}g\n"), 2, "non-hex character 'g' at position 64")
    raises_at(write(tmp_path, f"{value[:9]}x{value[10:]}\n"), 1, "non-hex character 'x' at position 10")
    raises_at(write(tmp_path, f"pdq {value[:-1]}é\n"), 1, "non-hex character 'é' at position 64")


def test_missing_hash(tmp_path: Path) -> None:
    raises_at(write(tmp_path, f"pdq {random_hex()}\n\npdq   # forgot it\n"), 3, "missing hash after signal type 'pdq'")


def test_too_many_fields(tmp_path: Path) -> None:
    raises_at(write(tmp_path, f"pdq {random_hex()} extra\n"), 1, "too many fields (3)")
    raises_at(write(tmp_path, f"pdq,{random_hex()},note\n"), 1, "too many fields (3)")


def test_bare_16_digit_line_is_ambiguous(tmp_path: Path) -> None:
    value = random_hex("phash")
    raises_at(
        write(tmp_path, f"pdq {random_hex()}\n{value}\n"), 2, "ambiguous", "phash", "prefix it with the signal name"
    )


def test_bare_hex_of_other_length(tmp_path: Path) -> None:
    raises_at(write(tmp_path, "abcdef0123\n"), 1, "expected 'SIGNAL HEX' or a bare 64-digit pdq hash")


def test_first_bad_line_is_reported_whichever_check_finds_it(tmp_path: Path) -> None:
    """Hex digits are checked after splitting lines, yet an early bad digit must win over a later syntax error."""
    value = random_hex()
    path = write(tmp_path, f"pdq {value}\npdq {value[:-1]}z\npdq {value} extra\nmd5 {value}\n")
    raises_at(path, 2, "non-hex character 'z'")


def test_csv_errors(tmp_path: Path) -> None:
    value = random_hex()
    header = "signal_type,signal_str,note\n"
    raises_at(write(tmp_path, f"{header}pdq,{value}\n", "a.csv"), 2, "missing columns 'note': 2 of 3 fields")
    raises_at(write(tmp_path, f"{header}pdq,{value},a,b\n", "b.csv"), 2, "too many fields (4)")
    raises_at(write(tmp_path, f"{header}pdq,,note\n", "c.csv"), 2, "missing hash in column 'signal_str'")
    raises_at(write(tmp_path, f"{header},{value},note\n", "d.csv"), 2, "missing signal type in column 'signal_type'")
    raises_at(write(tmp_path, f"{header}# c\nsha1,{value},x\n", "e.csv"), 3, "unknown signal type 'sha1'")
    raises_at(write(tmp_path, f'{header}pdq,"{value}"x,note\n', "f.csv"), 2, "bad CSV")
    raises_at(write(tmp_path, f"{header}pdq,{value[:-2]},note\n", "g.csv"), 2, "pdq hash must be 64 hex digits, got 62")


def test_csv_line_numbers_survive_multiline_records_and_bad_quoting(tmp_path: Path) -> None:
    a, b, c = random_hex(), random_hex(), random_hex()
    text = (
        "signal_type,signal_str,note\n"  # 1
        f'pdq,{a},"spans\n\n# not a comment\nlines"\n'  # 2-5
        "# comment\n"  # 6
        f'pdq,"{b}"oops,x\n'  # 7
        f"pdq,{b},y\n"  # 8
        f"pdq,{c}\n"  # 9
        f'pdq,{c},"last\nrow"\n'  # 10-11
    )
    path = write(tmp_path, text, "list.csv")
    blocklist = load(path, skip_bad_lines=True)
    assert as_hex(blocklist, "pdq") == [a, b, c]
    assert blocklist.lines["pdq"].tolist() == [2, 8, 10]
    assert blocklist.entry_metadata("pdq", 0) == {"note": "spans\n\n# not a comment\nlines"}
    assert blocklist.entry_metadata("pdq", 2) == {"note": "last\nrow"}
    assert [message.split(": ")[0] for message in blocklist.errors] == [f"{path}:7", f"{path}:9"]


def test_csv_header_problems_are_fatal_even_when_skipping(tmp_path: Path) -> None:
    value = random_hex()
    for text, reason in (
        (f"# list\nsignal_type,hash\npdq,{value}\n", "CSV header has no 'signal_str' column"),
        (
            f"# list\nsignal_type,signal_str,signal_str\npdq,{value},{value}\n",
            "CSV header repeats the 'signal_str' column",
        ),
    ):
        path = write(tmp_path, text, "h.csv")
        with pytest.raises(BlocklistError, match=f"^{path}:2: {reason}$"):
            load(path, skip_bad_lines=True)


# --- skip mode -------------------------------------------------------------------------------


def test_skip_bad_lines_keeps_good_rows_and_reports_the_rest(tmp_path: Path) -> None:
    good = [random_hex() for _ in range(3)]
    text = "\n".join(
        [
            f"pdq {good[0]}",
            "md5 abc",
            f"pdq {good[1][:-1]}q",
            f"pdq {good[1]}",
            "pdq",
            f"pdq {good[2]} x",
            random_hex("phash"),
            f"pdq {good[2]}",
        ]
    )
    path = write(tmp_path, text)
    blocklist = load(path, skip_bad_lines=True)
    assert as_hex(blocklist, "pdq") == [good[0], good[1], good[2]]
    assert blocklist.lines["pdq"].tolist() == [1, 4, 8]
    assert blocklist.skipped == 5
    assert [message.split(": ")[0] for message in blocklist.errors] == [f"{path}:{line}" for line in (2, 3, 5, 6, 7)]
    assert "md5 hash must be 32 hex digits, got 3" in blocklist.errors[0]


def test_skip_mode_drops_metadata_of_skipped_csv_rows(tmp_path: Path) -> None:
    a, b = random_hex(), random_hex()
    text = f"signal_type,signal_str,id\npdq,{a},1\npdq,{b[:-1]}x,2\npdq,{b},3\n"
    blocklist = load(write(tmp_path, text, "list.csv"), skip_bad_lines=True)
    assert as_hex(blocklist, "pdq") == [a, b]
    assert [blocklist.entry_metadata("pdq", row)["id"] for row in range(2)] == ["1", "3"]
    assert blocklist.skipped == 1


def test_skip_mode_counts_every_bad_line_but_stores_100_messages(tmp_path: Path) -> None:
    text = "".join(f"pdq {random_hex()}\nbogus line here\n" for _ in range(150))
    blocklist = load(write(tmp_path, text), skip_bad_lines=True)
    assert len(blocklist) == 150
    assert blocklist.skipped == 150
    assert len(blocklist.errors) == 100
    assert blocklist.errors[-1].startswith(f"{tmp_path / 'list.txt'}:200: ")


# --- file errors -----------------------------------------------------------------------------


def file_error(path: Path, reason: str) -> None:
    for skip in (False, True):
        with pytest.raises(BlocklistError) as caught:
            load(path, skip_bad_lines=skip)
        assert str(caught.value).startswith(f"{path}: {reason}"), str(caught.value)
        assert caught.value.line is None


def test_missing_file_and_directory(tmp_path: Path) -> None:
    file_error(tmp_path / "nope.txt", "no such file")
    file_error(tmp_path, "is a directory")


def test_not_utf8_and_binary(tmp_path: Path) -> None:
    value = random_hex()
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes(f"pdq {value}\n# caf".encode() + b"\xe9\n")
    file_error(latin1, "not UTF-8 text (byte 0xe9 on line 2)")
    binary = tmp_path / "binary.txt"
    binary.write_bytes(f"pdq {value}\n".encode() + bytes(range(0, 128)))
    file_error(binary, "binary data, not a text list (NUL byte on line 2)")
    file_error(write(tmp_path, f"pdq {value}\n", "utf16.txt", encoding="utf-16"), "is UTF-16 text; save it as UTF-8")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files regardless of permissions")
def test_unreadable_file(tmp_path: Path) -> None:
    path = write(tmp_path, f"pdq {random_hex()}\n")
    path.chmod(0)
    file_error(path, "cannot read: Permission denied")


# --- change detection ------------------------------------------------------------------------


def test_list_source_detects_rewrites_and_replacements(tmp_path: Path) -> None:
    a, b = random_hex(), random_hex()
    path = write(tmp_path, f"pdq {a}\n")
    source = FileSource(ListSpec(path))
    assert source.changed()
    assert as_hex(source.fetch(False), "pdq") == [a]
    assert not source.changed()

    path.write_text(f"pdq {a}\npdq {b}\n")
    assert source.changed()
    assert as_hex(source.fetch(False), "pdq") == [a, b]
    assert not source.changed()

    before = path.stat()
    path.write_text(f"pdq {b}\npdq {a}\n")  # same size: only the mtime tells
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000))
    assert source.changed()
    source.fetch(False)

    before = path.stat()
    replacement = write(tmp_path, f"pdq {a}\npdq {b}\n", "new.txt")
    os.utime(replacement, ns=(before.st_atime_ns, before.st_mtime_ns))  # same size and mtime: only the inode tells
    os.replace(replacement, path)
    assert source.changed()
    assert as_hex(source.fetch(False), "pdq") == [a, b]
    assert not source.changed()


def test_failed_reload_leaves_the_old_list_and_is_not_retried_until_the_file_changes(tmp_path: Path) -> None:
    a = random_hex()
    path = write(tmp_path, f"pdq {a}\n")
    source = FileSource(ListSpec(path))
    current = source.fetch(False)

    path.write_text(f"pdq {a}\npdq nothex\n")
    assert source.changed()
    with pytest.raises(BlocklistError, match=":2: "):
        current = source.fetch(False)
    assert as_hex(current, "pdq") == [a]
    assert not source.changed()

    path.unlink()
    assert source.changed()
    with pytest.raises(BlocklistError, match="no such file"):
        source.fetch(False)
    assert not source.changed()

    path.write_text(f"pdq {a}\n")
    assert source.changed()
    assert len(source.fetch(False)) == 1


# --- spec ------------------------------------------------------------------------------------


def test_spec_defaults_and_thresholds(tmp_path: Path) -> None:
    spec = ListSpec(tmp_path / "known-bad.csv")
    assert (spec.name, spec.category, spec.action) == ("known-bad", "test", "blur")
    assert spec.threshold_for("pdq") == 31
    assert spec.threshold_for("phash") == SIGNALS["phash"].default_threshold
    path = str(tmp_path / "x.txt")
    custom = ListSpec(path, name="ncii", category="ncii", action="slate", thresholds={"PDQ": 40})  # type: ignore[arg-type]
    assert custom.path == tmp_path / "x.txt" and custom.name == "ncii"
    assert custom.threshold_for("pdq") == 40 and custom.threshold_for("dhash") == SIGNALS["dhash"].default_threshold
    assert hash(custom) == hash(ListSpec(tmp_path / "x.txt", "ncii", "ncii", "slate", {"pdq": 40}))
    assert custom == ListSpec(tmp_path / "x.txt", "ncii", "ncii", "slate", {"pdq": 40})
    assert custom != ListSpec(tmp_path / "x.txt", "ncii", "ncii", "slate", {"pdq": 41})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"action": "block"}, "action must be one of blur, slate"),
        ({"thresholds": {"md5": 3}}, "unknown signal type 'md5'"),
        ({"thresholds": {"pdq": 300}}, "pdq threshold must be an integer 0..256"),
        ({"thresholds": {"phash": -1}}, "phash threshold must be an integer 0..64"),
        ({"thresholds": {"pdq": 3.5}}, "pdq threshold must be an integer"),
    ],
)
def test_spec_validation(tmp_path: Path, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ListSpec(tmp_path / "x.txt", **kwargs)  # type: ignore[arg-type]

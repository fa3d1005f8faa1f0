"""Every command's ``--help`` says what its exit statuses mean and shows an example, and scan's
documented statuses are the ones it returns (its behaviour for each: tests/test_scan_cli.py)."""

from __future__ import annotations

import argparse
import re

import pytest
from harness import ROOT

from livesafe import cli
from livesafe.cli_help import EXAMPLE_HEADING, EXIT_HEADING


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], str]]:
    """(argv prefix, --help text) of the parser and of every subcommand under it, found by walking the parser:
    a command added later is checked without this test naming it."""
    found = [(path, parser.format_help())]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _commands(sub, (*path, name))
    return found


COMMANDS = _commands(cli._parser())


def _statuses(help_text: str) -> dict[int, str]:
    section = help_text.split(EXIT_HEADING, 1)[1].split(EXAMPLE_HEADING, 1)[0]
    return {int(code): meaning for code, meaning in re.findall(r"^  (\d+)  (.+)$", section, re.M)}


def test_the_walk_finds_every_command() -> None:
    names = {" ".join(path) for path, _ in COMMANDS}
    assert {"", "scan", "serve", "demo", "publish", "watch", "hash", "bank", "bank add", "bank list"} <= names
    assert "bank remove" in names


@pytest.mark.parametrize(("path", "text"), COMMANDS, ids=[" ".join(p) or "livesafe" for p, _ in COMMANDS])
def test_help_shows_exit_statuses_and_an_example(path: tuple[str, ...], text: str) -> None:
    assert EXIT_HEADING in text and EXAMPLE_HEADING in text, text
    statuses = _statuses(text)
    assert 0 in statuses and cli.EXIT_ERROR in statuses, text  # every command can succeed and can fail
    examples = text.split(EXAMPLE_HEADING, 1)[1]
    lines = [line.strip() for line in examples.splitlines() if line.strip()]
    assert lines and all(line.startswith(("livesafe ", "LIVESAFE_")) for line in lines), examples
    assert all(" ".join(("livesafe", *path)) in line for line in lines), "each example runs the command it is under"


def test_help_prints_through_argparse_with_status_0(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        cli.main(["bank", "remove", "--help"])
    assert stopped.value.code == 0 and "exit status:" in capsys.readouterr().out


def test_scan_documents_exactly_the_statuses_it_returns() -> None:
    (text,) = [text for path, text in COMMANDS if path == ("scan",)]
    statuses = _statuses(text)
    assert set(statuses) == {cli.EXIT_CLEAN, cli.EXIT_MATCHED, cli.EXIT_ERROR, cli.EXIT_INCOMPLETE} == {0, 1, 2, 3}
    assert statuses[0].startswith("clean") and statuses[1].startswith("something matched")
    assert statuses[3].startswith("nothing matched in what was checked")
    top = _statuses(COMMANDS[0][1])
    assert set(top) == {0, 1, 2, 3, 130}, "the top level lists every status any command returns"


def test_the_readme_table_of_scan_statuses_is_the_help_s() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8").split("`scan`'s exit status:", 1)[1]
    table = dict(re.findall(r"^\| (\d+) \| (.+) \|$", readme.split("\n\n", 2)[1], re.M))
    (text,) = [text for path, text in COMMANDS if path == ("scan",)]
    assert {int(code) for code in table} == set(_statuses(text))

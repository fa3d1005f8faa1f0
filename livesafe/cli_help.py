"""What every command's ``--help`` ends with: its exit statuses and examples, in one format.

A script calling ``livesafe`` branches on the exit status, so each command says
which statuses it returns and what they mean (tests/test_cli_help.py checks that
every command has both sections and that scan's statuses are the ones it returns).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

EXIT_HEADING = "exit status:"
EXAMPLE_HEADING = "examples:"
# What every command may return besides its own statuses (cli.main turns these errors into 2).
ERROR = (2, "error: bad arguments, input, lists or config (one line, livesafe: error: ...)")
INTERRUPTED = (130, "interrupted (Ctrl-C)")


def epilog(exits: Sequence[tuple[int, str]], examples: Sequence[str]) -> str:
    """The exit statuses, one per line (``  0  meaning``, continued lines indented), then the examples."""
    lines = [EXIT_HEADING]
    for code, meaning in exits:
        first, *rest = meaning.split("\n")
        lines.append(f"  {code}  {first}")
        lines.extend(f"  {' ' * len(str(code))}  {more}" for more in rest)
    lines += ["", EXAMPLE_HEADING, *(f"  {example}" for example in examples)]
    return "\n".join(lines)


def add_command(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    help: str,
    exits: Sequence[tuple[int, str]],
    examples: Sequence[str],
    **kwargs: Any,
) -> argparse.ArgumentParser:
    """A subcommand whose ``--help`` shows ``help`` on top and the exit statuses and examples below."""
    return sub.add_parser(
        name,
        help=help,
        description=kwargs.pop("description", help),
        epilog=epilog(exits, examples),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        **kwargs,
    )

"""Hash blocklists: formats (text, CSV, vPDQ), loading with ``file:line`` errors, sources, live reload."""

from __future__ import annotations

from livesafe.lists.formats import FORMATS, CsvFormat, ListFormat, TextFormat, VpdqFormat
from livesafe.lists.loader import build_blocklist, load_blocklist, parse_list
from livesafe.lists.model import ACTIONS, Blocklist, BlocklistError, ListEntry, ListSpec

__all__ = [
    "ACTIONS",
    "FORMATS",
    "Blocklist",
    "BlocklistError",
    "CsvFormat",
    "ListEntry",
    "ListFormat",
    "ListSpec",
    "TextFormat",
    "VpdqFormat",
    "build_blocklist",
    "load_blocklist",
    "parse_list",
]

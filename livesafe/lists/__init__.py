"""Hash blocklists: formats, loading with ``file:line`` errors, sources (files, URLs, exchanges), live reload."""

from __future__ import annotations

from livesafe.lists.formats import FORMATS, CsvFormat, ListFormat, TextFormat
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
    "build_blocklist",
    "load_blocklist",
    "parse_list",
]

"""Hash blocklists: file formats, loading with ``file:line`` errors, and change detection for hot reload."""

from __future__ import annotations

from livesafe.lists.formats import FORMATS, CsvFormat, ListFormat, TextFormat
from livesafe.lists.loader import ListSource, load_blocklist
from livesafe.lists.model import ACTIONS, Blocklist, BlocklistError, ListEntry, ListSpec

__all__ = [
    "ACTIONS",
    "FORMATS",
    "Blocklist",
    "BlocklistError",
    "CsvFormat",
    "ListEntry",
    "ListFormat",
    "ListSource",
    "ListSpec",
    "TextFormat",
    "load_blocklist",
]

"""A bank of this platform's own content (``livesafe.banks``) as a list, read from the event store.

Polled like a local file: each poll reads the bank's ``version`` (one indexed
read; every add or remove bumps it in its own transaction) and only a new
version rebuilds the list, from one consistent read of the bank's hashes.  So
a content added or removed through the CLI or the API is enforced, or stops
being, at the next poll (``[lists] reload_seconds``), on every proxy reading
that file.

Each entry's metadata names the bank, the content id and the view (and a
video frame's time), so a match event says which banked content matched and
through which view.  A bank that does not exist is an error, not an empty
list: a misspelt bank name must not start a guard that enforces nothing.
"""

from __future__ import annotations

from livesafe.lists.loader import build_blocklist
from livesafe.lists.model import Blocklist, BlocklistError, ListSpec
from livesafe.lists.sources.base import Source, SourceContext


class BankSource(Source):
    KIND = "bank"
    OPTIONS = frozenset({"bank"})

    def __init__(self, spec: ListSpec, context: SourceContext) -> None:
        super().__init__(spec, context)
        bank = self.option("bank", spec.name)
        if not isinstance(bank, str) or not bank:
            raise ValueError(f"list {spec.name!r}: bank must name a bank, got {bank!r}")
        if context.banks is None:
            raise ValueError(f"list {spec.name!r}: a bank list reads the event store's banks, and none is open here")
        self.bank = bank
        self._banks = context.banks
        self._version: int | None = None

    def fetch(self, skip_bad_lines: bool) -> Blocklist | None:
        version = self._banks.version(self.bank)
        if version is not None and version == self._version:
            return None
        snapshot = self._banks.snapshot(self.bank)
        if snapshot is None:
            hint = f"livesafe bank add {self.bank} FILE makes one"
            raise BlocklistError(self.spec.where, f"no bank {self.bank!r} ({hint})")
        version, rows = snapshot
        blocklist = build_blocklist(self.spec, rows, f"{self.bank}@{version}", skip_bad_rows=True)
        self._version = version
        return blocklist

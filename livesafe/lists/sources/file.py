"""A list file on this machine, reloaded when it changes."""

from __future__ import annotations

import os

from livesafe.lists.loader import Stamp, file_stamp, parse_list, read_list_file
from livesafe.lists.model import Blocklist, BlocklistError, ListSpec
from livesafe.lists.sources.base import Source, SourceContext


class FileSource(Source):
    """Polled by its (mtime_ns, size, inode), which costs a single ``stat``.

    A change is judged against the last load *attempt*, failed or not: a broken
    file is reported once rather than re-parsed every poll, and tried again as
    soon as it is rewritten.
    """

    KIND = "file"

    def __init__(self, spec: ListSpec, context: SourceContext | None = None) -> None:
        super().__init__(spec, context or SourceContext())
        if spec.path is None:
            raise ValueError(f"list {spec.name!r}: a file source needs a path")
        self.path = spec.path
        self._attempted: Stamp | None = None
        self._ever_loaded = False
        self._failed = False

    def changed(self) -> bool:
        return not self._ever_loaded or self._current_stamp() != self._attempted

    def fetch(self, skip_bad_lines: bool) -> Blocklist | None:
        if not self.changed():
            return None
        self._ever_loaded = True
        self._failed = True
        try:
            data, self._attempted = read_list_file(self.path)
        except BlocklistError:
            self._attempted = self._current_stamp()
            raise
        blocklist = parse_list(self.spec, data, skip_bad_lines)
        self._failed = False
        return blocklist

    @property
    def still_failing(self) -> bool:
        return self._failed

    def _current_stamp(self) -> Stamp | None:
        try:
            return file_stamp(os.stat(self.path))
        except OSError:
            return None

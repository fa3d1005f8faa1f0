"""The live set of blocklists: loaded at start, reloaded when a file changes, swapped in whole.

``LiveLists`` owns the list sources and hands every successful load to a
``compile`` function (the guard's ``Matcher``: indexes built off the frame
path), then swaps a single reference, so a stream never sees a half-loaded
list and never waits for a reload.  A reload that fails keeps the previous
lists and reports why.  ``ListWatcher`` polls on a thread of its own; the app
that enforces the lists starts and stops it with its own lifecycle.

In a cluster a list may also arrive from elsewhere (another node published it):
``install`` swaps such a Blocklist in through the same single reference, and
``on_loaded`` tells whoever shares the lists which ones changed *on this
node's disk*, so only a real local change is published.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from livesafe.lists.loader import ListSource
from livesafe.lists.model import Blocklist, BlocklistError, ListSpec

log = logging.getLogger(__name__)

Compiled = TypeVar("Compiled")


class LiveLists(Generic[Compiled]):
    """The current compiled form of a set of list files, reloaded when they change."""

    def __init__(
        self,
        specs: Sequence[ListSpec],
        compile: Callable[[list[Blocklist]], Compiled],
        *,
        skip_bad_lines: bool = False,
    ) -> None:
        self._sources = [ListSource(spec) for spec in specs]
        self._compile = compile
        self._skip_bad_lines = skip_bad_lines
        self._reload_lock = threading.Lock()
        # Called (on the reloading thread) with each list reloaded from its file; not for ``install``.
        self.on_loaded: list[Callable[[Blocklist], None]] = []
        # Loading at start-up raises: a bad list must stop the service, not run it unguarded.
        self._loaded = [source.load(skip_bad_lines=skip_bad_lines) for source in self._sources]
        self.current: Compiled = compile(self._loaded)

    def reload_if_changed(self) -> list[str]:
        """Reload changed lists; returns one message per list reloaded or refused.

        Safe to call from a worker thread while streams read ``current``.
        """
        messages: list[str] = []
        with self._reload_lock:
            changed = False
            loaded = list(self._loaded)
            for i, source in enumerate(self._sources):
                if not source.changed():
                    continue
                try:
                    loaded[i] = source.load(skip_bad_lines=self._skip_bad_lines)
                except (BlocklistError, OSError) as exc:
                    messages.append(f"kept previous version of list {source.spec.name!r}: {exc}")
                    continue
                changed = True
                messages.append(
                    f"reloaded list {source.spec.name!r}: {len(loaded[i])} hashes, version {loaded[i].version}"
                )
            if changed:
                compiled = self._compile(loaded)
                before, self._loaded = self._loaded, loaded
                self.current = compiled  # one reference assignment: atomic for readers
                for old, new in zip(before, loaded, strict=True):
                    if new is not old:
                        for listener in self.on_loaded:
                            listener(new)
        for message in messages:
            log.info("%s", message)
        return messages

    @property
    def loaded(self) -> tuple[Blocklist, ...]:
        """The Blocklists ``current`` was compiled from, in spec order."""
        return tuple(self._loaded)

    def install(self, blocklist: Blocklist, *, replacing: Blocklist) -> bool:
        """Enforce ``blocklist``, which did not come from its file, in place of ``replacing``.

        Compiles (slow for a big list: call it off the event loop) and swaps
        ``current`` like a reload.  Returns False, changing nothing, if the list
        in force is no longer ``replacing``: it was reloaded from its file
        meanwhile, and that newer local change must not be overwritten unseen.
        The file is still watched: when it changes, its content replaces this.
        """
        names = [source.spec.name for source in self._sources]
        if blocklist.spec.name not in names:
            raise KeyError(f"no list named {blocklist.spec.name!r} here (have {', '.join(names)})")
        at = names.index(blocklist.spec.name)
        with self._reload_lock:
            if self._loaded[at] is not replacing:
                return False
            loaded = list(self._loaded)
            loaded[at] = blocklist
            compiled = self._compile(loaded)
            self._loaded = loaded
            self.current = compiled
        return True


class ListWatcher:
    """Polls a ``LiveLists``'s files every ``interval`` seconds on a daemon thread.

    Reloading parses and indexes off the frame path; streams keep matching
    against the old lists until the new ones are swapped in whole.
    """

    def __init__(self, lists: LiveLists[Any], interval: float) -> None:
        if interval <= 0:
            raise ValueError("reload interval must be positive")
        self._lists = lists
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="livesafe-list-watcher", daemon=True)

    def start(self) -> ListWatcher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self._interval + 5)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._lists.reload_if_changed()
            except Exception:  # noqa: BLE001 - the watcher must outlive any one bad reload
                log.exception("list reload failed; keeping the current lists")

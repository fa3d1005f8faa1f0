"""The live set of blocklists: fetched at start, refreshed from their sources, swapped in whole.

``LiveLists`` owns the list sources (``livesafe.lists.sources``: files, URLs,
exchanges) and hands every successful fetch to a ``compile`` function (the
guard's ``Matcher``: indexes built off the frame path), then swaps a single
reference, so a stream never sees a half-loaded list and never waits for a
fetch.  A fetch that fails keeps the previous list and is reported on that
source's ``SourceStatus``; one failing longer than its ``max_stale_seconds``
is told to ``on_stale`` once (the proxy sends a ``lists.stale`` event).
``ListWatcher`` polls each source on a thread of its own, at its own
``poll_seconds``, so a slow exchange never delays a local file's reload.

At start a list that cannot be fetched stops the service (running a safety
list unguarded is worse than not running), unless its source kept a copy from
an earlier run: then that copy is enforced and the error is on its status.

In a cluster a list may also arrive from elsewhere (another node published it):
``install`` swaps such a Blocklist in through the same single reference, and
``on_loaded`` tells whoever shares the lists which ones this node fetched
itself, so only a real local change is published.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from livesafe.lists.model import Blocklist, BlocklistError, ListSpec
from livesafe.lists.sources import RetryLater, Source, SourceContext, SourceStatus, make_source

log = logging.getLogger(__name__)

Compiled = TypeVar("Compiled")


class LiveLists(Generic[Compiled]):
    """The current compiled form of a set of lists, refreshed from their sources."""

    def __init__(
        self,
        specs: Sequence[ListSpec],
        compile: Callable[[list[Blocklist]], Compiled],
        *,
        skip_bad_lines: bool = False,
        context: SourceContext | None = None,
        reload_seconds: float = 2.0,
    ) -> None:
        self.context = context or SourceContext()
        self._sources: list[Source] = [make_source(spec, self.context) for spec in specs]
        self._compile = compile
        self._skip_bad_lines = skip_bad_lines
        self._reload_seconds = reload_seconds
        self._reload_lock = threading.Lock()
        self._next_due = [0.0] * len(self._sources)
        self._refused: list[str | None] = [None] * len(self._sources)  # why a source's content was refused
        # Called (on the fetching thread) with each list fetched from its source; not for ``install``.
        self.on_loaded: list[Callable[[Blocklist], None]] = []
        # Called once per outage with the status of a source failing longer than its max_stale_seconds,
        # and (on_recovered) when such a source answers again; on the fetching thread.
        self.on_stale: list[Callable[[SourceStatus], None]] = []
        self.on_recovered: list[Callable[[SourceStatus], None]] = []
        self.statuses = [
            SourceStatus(
                source.spec.name,
                source.spec.kind,
                source.spec.where,
                source.spec.category,
                source.spec.action,
                source.spec.max_stale_seconds,
            )
            for source in self._sources
        ]
        self._loaded = [self._first_load(i) for i in range(len(self._sources))]
        self.current: Compiled = compile(self._loaded)

    def _first_load(self, at: int) -> Blocklist:
        source, status = self._sources[at], self.statuses[at]
        now = time.time()
        status.last_attempt = now
        try:
            blocklist = source.fetch(self._skip_bad_lines)
            assert blocklist is not None, "a source's first fetch is never 'unchanged'"
            _refuse_empty(blocklist, _empty(blocklist))
        except BlocklistError as exc:
            kept = source.restore(self._skip_bad_lines)
            if kept is None:
                raise
            log.warning("list %r: %s; enforcing the copy kept from an earlier run", source.spec.name, exc)
            self._failed(at, exc, now)
            status.restored = True
            self._succeeded_with(status, kept)
            return kept
        self._succeeded(at, blocklist, now)
        return blocklist

    def spec(self, name: str) -> ListSpec | None:
        """The spec of the list called ``name`` here, if any."""
        return next((source.spec for source in self._sources if source.spec.name == name), None)

    def poll_seconds(self, at: int) -> float:
        return self._sources[at].poll_seconds(self._reload_seconds)

    def __len__(self) -> int:
        return len(self._sources)

    def reload_if_changed(self) -> list[str]:
        """Ask every source for changes now; returns one message per list reloaded or refused."""
        messages: list[str] = []
        for at in range(len(self._sources)):
            messages += self.refresh(at, force=True)
        return messages

    def refresh(self, at: int, *, force: bool = False) -> list[str]:
        """Ask source ``at`` for changes if it is due (or ``force``); swap a new list in.  Thread-safe.

        The fetch runs outside the swap lock, so sources on other threads
        carry on; the compile and the swap are serialised.
        """
        now = time.time()
        if not force and time.monotonic() < self._next_due[at]:
            return []
        source, status = self._sources[at], self.statuses[at]
        status.last_attempt = now
        self._next_due[at] = time.monotonic() + self.poll_seconds(at)
        messages: list[str] = []
        try:
            blocklist = source.fetch(self._skip_bad_lines)
            if blocklist is not None:
                # Remembered: the source answers "unchanged" while it holds that content, still refused.
                self._refused[at] = _empty(blocklist)
                _refuse_empty(blocklist, self._refused[at])
        except (BlocklistError, OSError) as exc:
            if isinstance(exc, RetryLater):
                self._next_due[at] = time.monotonic() + max(exc.seconds, self.poll_seconds(at))
            self._failed(at, exc, now)
            messages.append(f"kept previous version of list {source.spec.name!r}: {exc}")
        else:
            if blocklist is None:
                if not source.still_failing and self._refused[at] is None:
                    self._succeeded_with(status, None, now)
            else:
                self._swap(at, blocklist)
                self._succeeded(at, blocklist, now)
                messages.append(
                    f"reloaded list {source.spec.name!r}: {len(blocklist)} hashes, version {blocklist.version}"
                )
                for listener in self.on_loaded:
                    listener(blocklist)
        for message in messages:
            log.info("%s", message)
        self._report_stale(status)
        return messages

    def _swap(self, at: int, blocklist: Blocklist) -> None:
        with self._reload_lock:
            loaded = list(self._loaded)
            loaded[at] = blocklist
            compiled = self._compile(loaded)
            self._loaded = loaded
            self.current = compiled  # one reference assignment: atomic for readers

    def _succeeded(self, at: int, blocklist: Blocklist, now: float) -> None:
        status = self.statuses[at]
        status.restored = False
        self._succeeded_with(status, blocklist, now)

    def _succeeded_with(self, status: SourceStatus, blocklist: Blocklist | None, now: float | None = None) -> None:
        if blocklist is not None:
            status.version, status.entries, status.skipped = blocklist.version, len(blocklist), blocklist.skipped
            status.unmatchable = dict(blocklist.unmatchable)
            _warn_unmatchable(blocklist)
            if blocklist.skipped:
                status.last_error = f"skipped {blocklist.skipped} bad entries: {blocklist.errors[0]}"
        if now is not None:
            status.last_success = now
            if not (blocklist is not None and blocklist.skipped):
                status.last_error = None
            status.failing_since = None
            if status.stale_reported:
                status.stale_reported = False
                log.warning("list %r: its source answers again", status.name)
                for listener in self.on_recovered:
                    listener(status)

    def _failed(self, at: int, exc: Exception, now: float) -> None:
        status = self.statuses[at]
        status.last_error = str(exc)
        status.failures += 1
        if status.failing_since is None:
            status.failing_since = now

    def _report_stale(self, status: SourceStatus) -> None:
        if status.stale() and not status.stale_reported:
            status.stale_reported = True
            log.error(
                "list %r has failed for over %.0f s (max_stale_seconds): %s",
                status.name,
                status.max_stale_seconds,
                status.last_error,
            )
            for listener in self.on_stale:
                listener(status)

    def status(self) -> list[dict[str, Any]]:
        """Per source, what ``GET /api/lists`` shows."""
        now = time.time()
        return [status.to_json(now) for status in self.statuses]

    @property
    def loaded(self) -> tuple[Blocklist, ...]:
        """The Blocklists ``current`` was compiled from, in spec order."""
        return tuple(self._loaded)

    def install(self, blocklist: Blocklist, *, replacing: Blocklist) -> bool:
        """Enforce ``blocklist``, which did not come from its source, in place of ``replacing``.

        Compiles (slow for a big list: call it off the event loop) and swaps
        ``current`` like a reload.  Returns False, changing nothing, if the list
        in force is no longer ``replacing``: it was reloaded from its source
        meanwhile, and that newer local change must not be overwritten unseen.
        The source is still polled: when it changes, its content replaces this.
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
        status = self.statuses[at]  # what is enforced now; the source's own fetch times stay its own
        status.version, status.entries, status.unmatchable = (
            blocklist.version,
            len(blocklist),
            dict(blocklist.unmatchable),
        )
        _warn_unmatchable(blocklist)
        return True


def _empty(blocklist: Blocklist) -> str | None:
    """Why a list must be refused as empty: no hash a stream can match, and its spec does not allow that."""
    spec = blocklist.spec
    if len(blocklist) or spec.allow_empty or spec.action == "allow":
        return None
    md5s = sum(blocklist.unmatchable.values())
    held = f" (only {md5s} MD5s, which cannot match a stream)" if md5s else ""
    return f"the list has no hashes{held}: refused, so as not to guard nothing (allow_empty = true if meant)"


def _refuse_empty(blocklist: Blocklist, reason: str | None) -> None:
    if reason is not None:
        raise BlocklistError(blocklist.spec.where, reason)


def _warn_unmatchable(blocklist: Blocklist) -> None:
    """Once per load: hashes a list holds that cannot match a live stream (an MD5 matches identical files only)."""
    if blocklist.unmatchable:
        counts = ", ".join(f"{count} {name}" for name, count in sorted(blocklist.unmatchable.items()))
        log.warning(
            "list %r: %s hash(es) loaded but never enforced: a file digest matches only a byte-identical file, "
            "never a re-encoded live stream",
            blocklist.spec.name,
            counts,
        )


class ListWatcher:
    """Polls each of a ``LiveLists``'s sources on a daemon thread of its own, at the source's ``poll_seconds``.

    ``interval`` is the poll of local files (``[lists] reload_seconds``);
    fetching parses and indexes off the frame path; streams keep matching
    against the old lists until the new ones are swapped in whole.
    """

    def __init__(self, lists: LiveLists[Any], interval: float) -> None:
        if interval <= 0:
            raise ValueError("reload interval must be positive")
        self._lists = lists
        self._interval = interval
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(
                target=self._run, args=(at,), name=f"livesafe-list-watcher:{lists.statuses[at].name}", daemon=True
            )
            for at in range(len(lists))
        ]

    def start(self) -> ListWatcher:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            if thread.is_alive():
                thread.join(timeout=self._interval + 5)

    def _run(self, at: int) -> None:
        tick = min(self._interval, self._lists.poll_seconds(at), 1.0)
        while not self._stop.wait(tick):
            try:
                self._lists.refresh(at)
            except Exception:  # noqa: BLE001 - the watcher must outlive any one bad reload
                log.exception("list reload failed; keeping the current lists")

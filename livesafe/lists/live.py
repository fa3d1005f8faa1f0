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
The same holds for a list a config reload adds (``respec``): if it cannot be
fetched the reload is refused and the lists in force stay as they were.

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
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from livesafe.lists.model import Blocklist, BlocklistError, ListSpec
from livesafe.lists.sources import RetryLater, Source, SourceContext, SourceStatus, make_source

log = logging.getLogger(__name__)

Compiled = TypeVar("Compiled")


@dataclass(frozen=True)
class ListChanges:
    """What ``LiveLists.respec`` changed, by list name."""

    added: list[str]
    removed: list[str]
    changed: list[str]  # the same name, another spec (path, action, category, thresholds, ...)


@dataclass(eq=False)
class _Tracked:
    """One source and what is known of it, kept together so that changing the set of lists (``respec``)
    moves them as one and a poll already under way finds out its source is gone."""

    source: Source
    status: SourceStatus
    next_due: float = 0.0  # time.monotonic() of its next poll
    refused: str | None = None  # why its content was refused


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
        self._compile = compile
        self._skip_bad_lines = skip_bad_lines
        self._reload_seconds = reload_seconds
        self._reload_lock = threading.Lock()
        # Called (on the fetching thread) with each list fetched from its source; not for ``install``.
        self.on_loaded: list[Callable[[Blocklist], None]] = []
        # Called once per outage with the status of a source failing longer than its max_stale_seconds,
        # and (on_recovered) when such a source answers again; on the fetching thread.
        self.on_stale: list[Callable[[SourceStatus], None]] = []
        self.on_recovered: list[Callable[[SourceStatus], None]] = []
        self._tracked = [self._track(spec) for spec in specs]
        self._loaded = [self._first_load(tracked) for tracked in self._tracked]
        self.current: Compiled = compile(self._loaded)

    def _track(self, spec: ListSpec) -> _Tracked:
        status = SourceStatus(spec.name, spec.kind, spec.where, spec.category, spec.action, spec.max_stale_seconds)
        return _Tracked(make_source(spec, self.context), status)

    def _first_load(self, tracked: _Tracked) -> Blocklist:
        source, status = tracked.source, tracked.status
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
            self._failed(status, exc, now)
            status.restored = True
            self._succeeded_with(status, kept)
            return kept
        self._succeeded(status, blocklist, now)
        return blocklist

    @property
    def statuses(self) -> list[SourceStatus]:
        """Each source's status, in spec order."""
        return [tracked.status for tracked in self._tracked]

    @property
    def sources(self) -> tuple[Source, ...]:
        """The sources of the lists in force, in spec order (what ``ListWatcher`` polls)."""
        return tuple(tracked.source for tracked in self._tracked)

    def spec(self, name: str) -> ListSpec | None:
        """The spec of the list called ``name`` here, if any."""
        return next((source.spec for source in self.sources if source.spec.name == name), None)

    def poll_seconds(self, source: Source) -> float:
        return source.poll_seconds(self._reload_seconds)

    def __len__(self) -> int:
        return len(self._tracked)

    def reload_if_changed(self) -> list[str]:
        """Ask every source for changes now; returns one message per list reloaded or refused."""
        messages: list[str] = []
        for source in self.sources:
            messages += self.refresh_source(source, force=True)
        return messages

    def refresh(self, at: int, *, force: bool = False) -> list[str]:
        """``refresh_source`` of the ``at``-th list."""
        return self.refresh_source(self._tracked[at].source, force=force)

    def refresh_source(self, source: Source, *, force: bool = False) -> list[str]:
        """Ask ``source`` for changes if it is due (or ``force``); swap a new list in.  Thread-safe.

        The fetch runs outside the swap lock, so sources on other threads
        carry on; the compile and the swap are serialised.  A source no longer
        among the lists (``respec`` took it out) is not asked.
        """
        tracked = next((t for t in self._tracked if t.source is source), None)
        now = time.time()
        if tracked is None or (not force and time.monotonic() < tracked.next_due):
            return []
        status = tracked.status
        status.last_attempt = now
        tracked.next_due = time.monotonic() + self.poll_seconds(source)
        messages: list[str] = []
        try:
            blocklist = source.fetch(self._skip_bad_lines)
            if blocklist is not None:
                # Remembered: the source answers "unchanged" while it holds that content, still refused.
                tracked.refused = _empty(blocklist)
                _refuse_empty(blocklist, tracked.refused)
        except (BlocklistError, OSError) as exc:
            if isinstance(exc, RetryLater):
                tracked.next_due = time.monotonic() + max(exc.seconds, self.poll_seconds(source))
            self._failed(status, exc, now)
            messages.append(f"kept previous version of list {source.spec.name!r}: {exc}")
        else:
            if blocklist is None:
                if not source.still_failing and tracked.refused is None:
                    self._succeeded_with(status, None, now)
            elif self._swap(tracked, blocklist):
                self._succeeded(status, blocklist, now)
                messages.append(
                    f"reloaded list {source.spec.name!r}: {len(blocklist)} hashes, version {blocklist.version}"
                )
                for listener in self.on_loaded:
                    listener(blocklist)
        for message in messages:
            log.info("%s", message)
        self._report_stale(status)
        return messages

    def _swap(self, tracked: _Tracked, blocklist: Blocklist) -> bool:
        """Put ``blocklist`` in force for ``tracked`` (False: it is no longer among the lists)."""
        with self._reload_lock:
            at = next((i for i, t in enumerate(self._tracked) if t is tracked), None)
            if at is None:
                return False
            loaded = list(self._loaded)
            loaded[at] = blocklist
            compiled = self._compile(loaded)
            self._loaded = loaded
            self.current = compiled  # one reference assignment: atomic for readers
        return True

    def respec(self, specs: Sequence[ListSpec]) -> ListChanges:
        """Make ``specs`` the lists in force (a config reload): an unchanged spec keeps its source, its
        status and the list it holds; a new or changed one is fetched as at start, and one that cannot be
        (a ``BlocklistError``, a bad option: ``ValueError``) raises and changes nothing.  Slow (fetches,
        compiles): call it off the event loop.  Then the set is swapped in whole, like a reload.
        """
        plan: list[tuple[_Tracked, Blocklist | None]] = []
        for spec in specs:
            same = next((t for t in self._tracked if t.source.spec == spec), None)
            if same is not None:
                plan.append((same, None))
            else:
                tracked = self._track(spec)
                plan.append((tracked, self._first_load(tracked)))
        old = {t.source.spec.name for t in self._tracked}
        new = {t.source.spec.name for t, _ in plan}
        changed = {t.source.spec.name for t, fetched in plan if fetched is not None} & old
        with self._reload_lock:
            now = {id(t): blocklist for t, blocklist in zip(self._tracked, self._loaded, strict=True)}
            loaded = [fetched if fetched is not None else now[id(t)] for t, fetched in plan]
            compiled = self._compile(loaded)
            self._tracked = [t for t, _ in plan]
            self._loaded = loaded
            self.current = compiled
        return ListChanges(sorted(new - old), sorted(old - new), sorted(changed))

    def _succeeded(self, status: SourceStatus, blocklist: Blocklist, now: float) -> None:
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

    def _failed(self, status: SourceStatus, exc: Exception, now: float) -> None:
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
        names = [source.spec.name for source in self.sources]
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
        status = self._tracked[at].status  # what is enforced now; the source's own fetch times stay its own
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
    against the old lists until the new ones are swapped in whole.  After a
    ``LiveLists.respec``, ``sync`` polls the new set: a thread for each new
    source; a removed one's thread ends at its next tick (a fetch under way
    finishes, and is dropped).
    """

    def __init__(self, lists: LiveLists[Any], interval: float) -> None:
        if interval <= 0:
            raise ValueError("reload interval must be positive")
        self._lists = lists
        self._interval = interval
        self._running = False
        self._lock = threading.Lock()
        self._threads: dict[int, tuple[threading.Thread, threading.Event]] = {}  # by id() of the source

    def start(self) -> ListWatcher:
        self._running = True
        self.sync()
        return self

    def sync(self) -> None:
        """Poll the lists there are now (nothing before ``start``)."""
        with self._lock:
            if not self._running:
                return
            current = {id(source): source for source in self._lists.sources}
            for key in [key for key in self._threads if key not in current]:
                self._threads.pop(key)[1].set()
            for key, source in current.items():
                if key not in self._threads:
                    gone = threading.Event()
                    thread = threading.Thread(
                        target=self._run,
                        args=(source, gone),
                        name=f"livesafe-list-watcher:{source.spec.name}",
                        daemon=True,
                    )
                    self._threads[key] = (thread, gone)
                    thread.start()

    def stop(self) -> None:
        with self._lock:
            self._running = False
            threads = list(self._threads.values())
            self._threads.clear()
        for _, gone in threads:
            gone.set()
        for thread, _ in threads:
            if thread.is_alive():
                thread.join(timeout=self._interval + 5)

    def _run(self, source: Source, gone: threading.Event) -> None:
        tick = min(self._interval, self._lists.poll_seconds(source), 1.0)
        while not gone.wait(tick):
            try:
                self._lists.refresh_source(source)
            except Exception:  # noqa: BLE001 - the watcher must outlive any one bad reload
                log.exception("list reload failed; keeping the current lists")

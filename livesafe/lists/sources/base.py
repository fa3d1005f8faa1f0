"""What every list source is: asked for its list now and then, it answers a new one, "unchanged", or an error.

A source never half-updates what is enforced: ``fetch`` returns a whole new
``Blocklist`` or raises ``BlocklistError`` (the caller keeps the previous one
and reports the error on the source's status).  ``RetryLater`` is the error of
a source that asked us to come back later (HTTP 429/503 with ``Retry-After``).
``restore`` is the copy a source kept from an earlier run (``SourceState``),
used at start when the source cannot be reached: a restart during an outage
still enforces the list.

A new kind of source is one ``Source`` subclass in one module of this package,
registered in ``SOURCE_KINDS``.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from livesafe.lists.model import Blocklist, BlocklistError, ListSpec
from livesafe.lists.sources.state import SourceState

if TYPE_CHECKING:  # the banks' store imports this package's state module
    from livesafe.banks.store import BankStore


class RetryLater(BlocklistError):
    """The source is up but asked us to wait ``seconds`` (rate limited, or briefly unavailable)."""

    def __init__(self, where: str, reason: str, seconds: float) -> None:
        super().__init__(where, f"{reason} (retrying in {seconds:.0f} s)")
        self.seconds = seconds


@dataclass(frozen=True)
class SourceContext:
    """What sources share: the state store, the banks, the environment their credentials come from, HTTP limits.

    ``banks`` is the event store's banks (``livesafe.banks``), read by ``bank``
    sources; None where no event store is open.
    """

    state: SourceState = field(default_factory=SourceState)
    banks: BankStore | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    http_timeout: float = 30.0  # seconds for a connection or between bytes of a response
    max_bytes: int = 1 << 30  # largest response body (a list download, one page of an exchange)


class Source(ABC):
    """Where one list comes from.

    ``OPTIONS`` are the ``spec.options`` keys this kind reads; any other is a
    configuration error at start.  ``DEFAULT_POLL_SECONDS`` is used when the
    spec gives none (None: the ``[lists] reload_seconds`` of local files).
    """

    KIND: ClassVar[str]
    OPTIONS: ClassVar[frozenset[str]] = frozenset()
    DEFAULT_POLL_SECONDS: ClassVar[float | None] = None

    def __init__(self, spec: ListSpec, context: SourceContext) -> None:
        unknown = sorted(set(spec.options) - self.OPTIONS)
        if unknown:
            known = ", ".join(sorted(self.OPTIONS)) or "none"
            raise ValueError(
                f"list {spec.name!r}: {self.KIND} sources have no option {unknown[0]!r} (options: {known})"
            )
        self.spec = spec
        self.context = context

    def poll_seconds(self, default: float) -> float:
        return self.spec.poll_seconds or self.DEFAULT_POLL_SECONDS or default

    @abstractmethod
    def fetch(self, skip_bad_lines: bool) -> Blocklist | None:
        """The list if it changed since the last fetch (always, the first time), else None; raises BlocklistError."""

    def restore(self, skip_bad_lines: bool) -> Blocklist | None:
        """The copy kept from an earlier run, if this kind keeps one."""
        return None

    @property
    def still_failing(self) -> bool:
        """After ``fetch`` answered "unchanged": is what is unchanged the failure of the last attempt?

        A URL answering 304 is a success (the copy in force is current); a
        broken file not rewritten since is still broken.
        """
        return False

    def option(self, key: str, default: Any = None) -> Any:
        return self.spec.options.get(key, default)

    def secret(self, key: str, *, required: bool = True) -> str | None:
        """The value of the environment variable that option ``key`` names (credentials never sit in the file)."""
        var = self.option(key)
        if var is None:
            if required:
                raise ValueError(f"list {self.spec.name!r}: {key} (an environment variable's name) is required")
            return None
        if not isinstance(var, str):
            raise ValueError(f"list {self.spec.name!r}: {key} must name an environment variable, got {var!r}")
        value = self.context.env.get(var)
        if not value:
            raise ValueError(f"list {self.spec.name!r}: the environment variable {var!r} ({key}) is not set")
        return value


@dataclass
class SourceStatus:
    """How a source stands, for ``GET /api/lists``, the dashboard and ``/metrics`` (times are Unix seconds)."""

    name: str
    kind: str
    where: str
    category: str
    action: str
    max_stale_seconds: float | None
    version: str | None = None
    entries: int = 0
    skipped: int = 0
    unmatchable: dict[str, int] = field(default_factory=dict)  # per kind (md5): loaded, cannot match a stream
    last_success: float | None = None
    last_attempt: float | None = None
    last_error: str | None = None
    failing_since: float | None = None
    failures: int = 0  # failed fetches this run
    restored: bool = False  # enforcing a copy kept from an earlier run, not yet fetched this run
    stale_reported: bool = False  # a lists.stale event went out for the failure going on now

    def stale(self, now: float | None = None) -> bool:
        """Failing (or never fetched this run) for longer than ``max_stale_seconds``."""
        if self.max_stale_seconds is None or self.failing_since is None:
            return False
        return (now if now is not None else time.time()) - self.failing_since > self.max_stale_seconds

    def to_json(self, now: float | None = None) -> dict[str, Any]:
        now = now if now is not None else time.time()
        return {
            "name": self.name,
            "kind": self.kind,
            "source": self.where,
            "category": self.category,
            "action": self.action,
            "version": self.version,
            "entries": self.entries,
            "skipped": self.skipped,
            "unmatchable": dict(self.unmatchable),
            "last_success": self.last_success,
            "last_attempt": self.last_attempt,
            "last_error": self.last_error,
            "failing_since": self.failing_since,
            "failures": self.failures,
            "staleness_seconds": None if self.last_success is None else max(0.0, now - self.last_success),
            "max_stale_seconds": self.max_stale_seconds,
            "stale": self.stale(now),
            "restored": self.restored,
        }

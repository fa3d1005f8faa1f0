"""The store as the parts its callers use: an event log, an outbox, an audit log, access lists, node state.

Each caller takes only the part it needs (the live feed the event log, the webhook
dispatcher the outbox), so another implementation of a part replaces it without the
callers changing.  ``sqlite.SqliteStore`` is what every proxy runs; in a cluster each node
keeps its own and ``livesafe.cluster.events`` carries events between them over a Redis
Stream (:meth:`EventLog.adopt` stores another node's, :class:`NodeState` keeps the cursors).

The event log and the outbox are one unit: an event and its deliveries are written
together (:meth:`EventLog.append`), a delivery reads its event (:meth:`Outbox.due`),
and pruning an event drops its deliveries.  So an implementation provides the two over
one storage, and that write is atomic -- SQLite: one transaction; Redis: one
MULTI/EXEC or script.

Every method is called on the event loop and blocks it: each must be short (SQLite:
one small transaction or indexed read).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from livesafe.events import Event
from livesafe.moderation.store.records import Allowed, AuditEntry, Delivery


class EventLog(Protocol):
    """Everything moderators are told, in one order: ``seq``, which feeds and history pages resume from."""

    def append(self, event: Event, endpoints: Iterable[str] = (), now: float | None = None) -> Event:
        """Store ``event`` and queue a delivery of it to each of ``endpoints`` (due at ``now``, default the
        current time), atomically: both or neither, or a crash between them would lose a delivery or
        deliver an event that was never stored.  Returns ``event`` with its ``seq``: greater than every
        ``seq`` given before, even one pruned since (a feed resuming after ``seq`` N must not skip an
        event that reused a number).  Raises if the event's ``id`` is stored already."""
        ...

    def get(self, event_id: str) -> Event | None:
        """The event with this id (what a moderator's action names), if it is still kept."""
        ...

    def seq_of(self, event_id: str) -> int | None:
        """Where the event with this id is in the order (a feed resuming after it), if it is still kept."""
        ...

    def last_seq(self) -> int:
        """The newest event's ``seq`` (0 if none): where a new live feed starts."""
        ...

    def read(
        self,
        after: int = 0,
        *,
        stream_id: str | None = None,
        types: Sequence[str] = (),
        since_time: float | None = None,
        origin: str | None = None,
        severities: Sequence[str] = (),
        limit: int = 100,
    ) -> list[Event]:
        """Up to ``limit`` events after ``seq`` ``after``, oldest first; only of ``stream_id``, of one of
        ``types``, at or after ``since_time``, recorded by cluster node ``origin`` (``data["node"]``) and
        of one of ``severities``, for each given."""
        ...

    def adopt(self, event: Event, endpoints: Iterable[str] = (), now: float | None = None) -> Event | None:
        """Queue a delivery of ``event`` to each of ``endpoints``, storing the event first if it is not
        stored yet (another cluster node recorded it), atomically as :meth:`append`.  Idempotent: an
        event stored already is not stored again, a delivery queued already (even one finished since)
        is not queued again.  Returns the event as newly stored, None if it was stored already."""
        ...

    def count(self, after: int, *, origin: str, limit: int) -> int:
        """How many events after ``seq`` ``after`` were recorded by node ``origin``, counting up to
        ``limit`` (a backlog read on every ``/metrics`` scrape must not cost in proportion to the log)."""
        ...

    def read_before(
        self,
        before: int,
        *,
        stream_id: str | None = None,
        types: Sequence[str] = (),
        since_time: float | None = None,
        severities: Sequence[str] = (),
        limit: int = 100,
    ) -> list[Event]:
        """The ``limit`` newest events before ``seq`` ``before``, oldest first, filtered as :meth:`read`:
        the history page a dashboard opens with."""
        ...

    def latest(self, stream_id: str, types: Sequence[str]) -> Event | None:
        """The stream's most recent event of one of ``types``: the match an action refers to when the
        process has forgotten it (a restart)."""
        ...

    def prune(self, before: float, limit: int) -> int:
        """Drop up to ``limit`` of the oldest events from before ``before``, never one with a delivery
        still pending, and their deliveries with them; returns how many.

        A batch at a time, because the caller is the event loop: a month of events at once
        would hold it for seconds.
        """
        ...


class Outbox(Protocol):
    """Deliveries of events to webhook endpoints, queued by :meth:`EventLog.append`, kept across restarts
    so a receiver that was down gets everything when it returns.

    A delivery is pending until it is delivered or failed; finished ones stay (and are
    counted) until pruning their event removes them.
    """

    def due(self, now: float, endpoints: Sequence[str], limit: int = 100) -> list[Delivery]:
        """Up to ``limit`` pending deliveries to ``endpoints`` due by ``now``, in event order (so a
        receiver gets a stream's events in the order they happened)."""
        ...

    def next_due(self, endpoints: Sequence[str]) -> float | None:
        """When the next pending delivery to ``endpoints`` is due (None: none pending): how long the
        dispatcher may sleep."""
        ...

    def delivered(self, delivery: Delivery, now: float) -> None:
        """The endpoint took ``delivery``: it is done."""
        ...

    def failed(self, delivery: Delivery, error: str, now: float) -> None:
        """Give up on ``delivery`` (it stays listed as failed until retention removes it)."""
        ...

    def retry(self, delivery: Delivery, error: str, at: float) -> None:
        """``delivery`` failed with ``error``: count the attempt, remember the error, try again at ``at``."""
        ...

    def due_now(self, endpoint: str, now: float) -> None:
        """Make every pending delivery to ``endpoint`` due at ``now`` (a failed one waits for its backoff):
        a moderator says its receiver is back."""
        ...

    def counts(self) -> dict[str, dict[str, Any]]:
        """Per endpoint: deliveries ``pending``/``delivered``/``failed``, and ``last_error`` if there was
        one.  Read on every ``/metrics`` scrape, so it must not cost in proportion to the outbox."""
        ...

    def abandon(self, configured: Sequence[str], now: float) -> int:
        """Mark pending deliveries to endpoints not in ``configured`` failed; returns how many.

        Otherwise they would wait forever, keep the backlog above zero and keep their
        events from ever being pruned.
        """
        ...

    def pending(self) -> int:
        """Deliveries pending to every endpoint: the backlog."""
        ...


class AuditLog(Protocol):
    """What moderators did and whether they saw the content; kept for its own retention, apart from events."""

    def append(self, entry: AuditEntry) -> AuditEntry:
        """Keep ``entry``; returns it with its ``seq`` (the order the log is read in)."""
        ...

    def read(
        self, after: int = 0, *, stream_id: str | None = None, limit: int = 100, newest: bool = False
    ) -> list[AuditEntry]:
        """Up to ``limit`` entries after ``seq`` ``after`` (only of ``stream_id``, if given), oldest first;
        ``newest``: the last ``limit`` of them instead of the first."""
        ...

    def viewed_since(self, actor: str, stream_id: str, since: float) -> bool:
        """Did ``actor`` view content of ``stream_id`` (an audited ``preview``) since ``since``?  Every
        action records the answer, so the log says whether a decision was made on seeing it."""
        ...

    def prune(self, before: float) -> int:
        """Drop entries from before ``before``; returns how many."""
        ...


class AccessLists(Protocol):
    """What moderators decided about hashes and stream keys, read back when the proxy starts."""

    def allow(self, item: Allowed, actor: str, reason: str) -> None:
        """Keep ``item`` on the allow list (a false positive); the same item again is kept once."""
        ...

    def allowlist(self) -> list[Allowed]:
        """Every allowed hash (the guard's allow list is built from it at start)."""
        ...

    def revoke(self, stream_id: str, key_sha256: str, actor: str) -> None:
        """Refuse the stream key with this SHA-256 on ``stream_id`` from now on, across restarts."""
        ...

    def revoked_keys(self) -> set[tuple[str, str]]:
        """Every revoked (stream id, key SHA-256), for the relay to refuse at start."""
        ...


class NodeState(Protocol):
    """Small named values this node keeps across restarts beside its events: the cluster's cursors
    (how far the relay and the mirror have got), so a restart resumes where it stopped."""

    def get(self, key: str) -> str | None: ...

    def put(self, key: str, value: str) -> None: ...


class Store(Protocol):
    """The five parts, opened as one (``build_proxy``) and closed as one (``Moderation.close``)."""

    @property
    def events(self) -> EventLog: ...

    @property
    def outbox(self) -> Outbox: ...

    @property
    def audit(self) -> AuditLog: ...

    @property
    def access(self) -> AccessLists: ...

    @property
    def state(self) -> NodeState: ...

    def close(self) -> None:
        """After the last event: nothing is written after this."""
        ...

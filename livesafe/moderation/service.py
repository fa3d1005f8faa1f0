"""The moderation service: turns what the relay and the guard report into stored,
delivered events, and carries out what moderators decide.

Everything runs on the event loop.  The relay hands every fact (a ``GuardEvent``
or a ``StreamEvent``) to :meth:`Moderation.record_fact`; each becomes an
:class:`Event` with a severity from the stream's policy profile (a plain lookup
given at construction, the same the relay decides with), is stored with its outbox rows,
wakes the live feed and the webhook dispatcher.  The relay is reached only
through :class:`StreamControl`, so the actions work the same against a
relay in another process once there is a bus (DESIGN: growing past one machine).

In a cluster (``livesafe.cluster.events``) this node's events are marked with its name
and relayed; other nodes' arrive through :meth:`Moderation.mirror`, and the node the
cluster hands an event to queues its webhooks (:meth:`Moderation.take_webhooks`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, Protocol

import av

from livesafe.events import (
    ACTION_TAKEN,
    GUARD_ERROR,
    LISTS_FLOOD,
    MATCH_CLEARED,
    MATCH_STARTED,
    REDACTION_IMPOSED,
    REPORT_RECEIVED,
    STREAM_CUT,
    STREAM_ENDED,
    WEBHOOK_FAILED,
    Event,
    Fact,
    GuardEvent,
)
from livesafe.guard.matcher import Match
from livesafe.moderation.actions import ActionError, ActionRequest
from livesafe.moderation.feed import RecentEvents
from livesafe.moderation.flood import FloodWatch, Key, Verdict
from livesafe.moderation.reports import ReportDesk
from livesafe.moderation.settings import ModerationSettings, Principal, WebhookEndpoint
from livesafe.moderation.store.interfaces import Store
from livesafe.moderation.store.records import Allowed, AuditEntry
from livesafe.moderation.webhooks import WebhookDispatcher
from livesafe.policy import DEFAULT, Action, PolicyProfile

log = logging.getLogger(__name__)

# The events that open a redaction a moderator can confirm or mark (a failed check is neither).
_EPISODE_TYPES = (MATCH_STARTED, REDACTION_IMPOSED)
# What "viewed content" looks back over when an action has no episode to anchor it.
_VIEW_LOOKBACK = 3600.0
# Retention deletes this many events per transaction, then lets frames and requests through.
PRUNE_BATCH = 200
PRUNE_PAUSE_SECONDS = 0.01


class StreamControl(Protocol):
    """What moderation needs of the relay that carries a stream."""

    def latest_frame(self, stream_id: str) -> av.VideoFrame | None: ...
    def is_live(self, stream_id: str) -> bool: ...
    def is_redacting(self, stream_id: str) -> bool: ...
    def resume(self, stream_id: str, by: str) -> None: ...
    def keep(self, stream_id: str) -> bool:
        """Hold the redaction in force until a resume; False if there is none (at that instant)."""
        ...

    def impose(self, stream_id: str, action: Action, reason: str) -> None: ...
    async def terminate(self, stream_id: str, reason: str) -> str:
        """Disconnect the publisher; returns the SHA-256 of the stream key it used (to revoke)."""
        ...


class AllowList:
    """Hashes moderators marked as false positives; read by every stream's guard (any thread)."""

    def __init__(self, items: list[Allowed]) -> None:
        self._items = frozenset((a.signal, a.hash.lower(), a.stream_id) for a in items)

    def add(self, item: Allowed) -> None:
        self._items = self._items | {(item.signal, item.hash.lower(), item.stream_id)}  # one reference swap

    def allows(self, stream_id: str, match: Match) -> bool:
        items, key = self._items, (match.signal, match.matched_hash.lower())
        return (*key, None) in items or (*key, stream_id) in items

    def __len__(self) -> int:
        return len(self._items)


class Moderation:
    def __init__(
        self,
        settings: ModerationSettings,
        store: Store,
        profiles: Callable[[str], PolicyProfile] = lambda stream_id: DEFAULT,
    ) -> None:
        """``profiles``: each stream's policy profile, as the relay's configuration assigns it."""
        self.settings = settings
        self.profiles = profiles
        self.store = store
        self.allowlist = AllowList(store.access.allowlist())
        self.control: StreamControl | None = None
        self.webhooks = WebhookDispatcher(settings, store.outbox, self._webhook_failed)
        self.reports = ReportDesk(settings.reports_per_client, settings.report_client_window_seconds)
        # Events by type (for /metrics): each event in this node's log once, however it got here (recorded
        # here, mirrored or handed over for delivery), so in a cluster every node counts the whole cluster.
        self.counts: Counter[str] = Counter()
        self.matches: Counter[tuple[str, str]] = Counter()  # match.started by (list, category), counted as counts
        self.lost = 0  # events the store failed to take
        self.recent = RecentEvents(store.events)  # what live feeds read
        self.node: str | None = None  # this node's name in a cluster (join_cluster); None: a single node
        self._episodes: dict[str, Event] = {}  # stream -> the event that opened its current/last redaction
        self.flood = FloodWatch()  # its limits are the lists' (proxy.build_proxy sets them)
        self._new_event = asyncio.Event()
        self.closed = False

    def close(self) -> None:
        """Close the store (after the relay has shut down and told us its last events)."""
        self.closed = True
        self.store.close()

    def reconfigure(self, settings: ModerationSettings) -> None:
        """Take ``settings`` (a config reload): its tokens decide the next request, its webhooks get the next
        event.  The caller keeps every setting fixed at start (the store, ...) as it was (``livesafe.reload``)."""
        self.settings = settings
        self.webhooks.reconfigure(settings.webhooks)

    def attach(self, control: StreamControl) -> None:
        self.control = control

    # ------------------------------------------------------------- recording

    def record(self, event: Event) -> Event:
        """Store ``event``, queue it for every webhook that wants it, wake the feed.

        In a cluster (:meth:`join_cluster`) the event is marked as this node's and no delivery is
        queued here: the cluster hands each event to one node, which queues it (:meth:`take_webhooks`).
        """
        if self.closed:
            log.debug("store closed; event %s (%s) not stored", event.id, event.type)
            return event
        if self.node is not None:
            event = Event(
                event.type, event.stream_id, event.severity, event.data | {"node": self.node}, event.id, event.at
            )
        endpoints = self.endpoints_for(event) if self.node is None else []
        try:
            stored = self.store.events.append(event, endpoints)
        except Exception:  # noqa: BLE001 - the relay must keep guarding even if the disk fails
            self.lost += 1
            log.exception("could not store event %s (%s)", event.id, event.type)
            return event
        self._stored(stored)
        if endpoints:
            self.webhooks.wake()
        return stored

    def endpoints_for(self, event: Event) -> list[str]:
        """The webhook endpoints ``event`` goes to.  A ``webhook.failed`` is not queued for the endpoint that
        failed: that would feed its own backlog."""
        failed = event.data.get("endpoint") if event.type == WEBHOOK_FAILED else None
        return [w.name for w in self.settings.webhooks if w.name != failed and w.accepts(event)]

    def join_cluster(self, node: str) -> None:
        """From now on this node's events are marked ``data["node"]`` and delivered by the cluster."""
        self.node = node

    def mirror(self, event: Event) -> Event | None:
        """Keep another node's event here (its feed, history and dashboard show the whole cluster);
        None if it is here already."""
        stored = self.store.events.adopt(event)
        if stored is not None:
            self._adopted(stored)
        return stored

    def take_webhooks(self, event: Event) -> None:
        """The cluster handed ``event`` to this node for delivery: queue it in this node's outbox, storing
        the event first if the mirror has not yet.  Raises if the store cannot take it (the cluster then
        hands it out again)."""
        endpoints = self.endpoints_for(event)
        stored = self.store.events.adopt(event, endpoints)
        if stored is not None:
            self._adopted(stored)
        if endpoints:
            self.webhooks.wake()

    def _adopted(self, stored: Event) -> None:
        """Another node's event, new here: counted as :meth:`record_fact` counts this node's matches."""
        self._stored(stored)
        if stored.type == MATCH_STARTED:
            self.matches[(stored.data.get("list_name") or "", stored.category or "")] += 1
            if stored.stream_id is not None and (key := _flood_key(stored.data)) is not None:
                self.flood.saw(key, stored.stream_id, stored.at, own=False)
        elif stored.type == LISTS_FLOOD and (key := _flood_key(stored.data)) is not None:
            self.flood.paged_elsewhere(key)

    def _stored(self, stored: Event) -> None:
        """``stored`` is new in this node's log: count it once, add it to the feed, wake who waits for it."""
        self.counts[stored.type] += 1
        self.recent.add(stored)
        self._new_event.set()
        self._new_event = asyncio.Event()

    def record_fact(self, event: Fact) -> None:
        """The relay's event sink (on the loop): guard and stream lifecycle facts."""
        profile = self.profiles(event.stream_id)
        extra: dict[str, Any] = {"profile": profile.name}
        if event.type in (MATCH_STARTED, REDACTION_IMPOSED):
            severity = profile.match_severity
        elif event.type in (GUARD_ERROR, STREAM_CUT):
            severity = "warning"
        else:
            severity = "info"
        flood = None
        if isinstance(event, GuardEvent) and event.type == MATCH_STARTED and event.list_name and event.matched_hash:
            flood = self.flood.saw((event.list_name, event.signal or "", event.matched_hash), event.stream_id, event.at)
            if flood.quarantined:
                severity = "high"
                extra["quarantined"] = True
        episode = self._episodes.get(event.stream_id)
        if event.type == MATCH_CLEARED and episode is not None:
            # So a receiver filtering on a category hears the end of what it heard start.
            extra |= _episode_fields(episode)
        stored = self.record(Event.of(event, severity, **extra))
        if event.type in _EPISODE_TYPES and not event.details.get("joined_existing"):
            self._episodes[event.stream_id] = stored  # a hold joining a match's redaction leaves the match the episode
        if isinstance(event, GuardEvent) and event.type == MATCH_STARTED:
            self.matches[(event.list_name or "", event.category or "")] += 1
            if flood is not None and flood.page:
                self._page_flood(event, flood)
        if event.type == STREAM_ENDED:
            self.reports.forget(event.stream_id)
            self._episodes.pop(event.stream_id, None)  # the store still has it for later verdicts

    def _page_flood(self, event: GuardEvent, flood: Verdict) -> None:
        """``lists.flood``: the entry ``event`` matched is quarantined (see ``livesafe.moderation.flood``)."""
        assert event.list_name is not None and event.matched_hash is not None  # a match's
        key = (event.list_name, event.signal or "", event.matched_hash)
        log.error(
            "list %r entry %s matched %d streams within %.0f s (limit %d): quarantined, moderators paged",
            event.list_name,
            event.matched_hash[:16],
            flood.streams,
            flood.window_seconds,
            flood.limit,
        )
        data = {
            "list_name": event.list_name,
            "category": event.category,
            "signal": event.signal,
            "matched_hash": event.matched_hash,
            "streams": flood.streams,
            "limit": flood.limit,
            "window_seconds": flood.window_seconds,
            "stream_ids": self.flood.streams(key),
            "event_id": event.id,
        }
        self.record(Event(LISTS_FLOOD, None, "high", data))

    def _webhook_failed(self, endpoint: WebhookEndpoint, error: str, gave_up_on: Event | None) -> None:
        data = {
            "endpoint": endpoint.name,
            "url": endpoint.display_url,
            "error": error,
            "gave_up": gave_up_on is not None,
        }
        if gave_up_on is not None:
            data |= {"event_id": gave_up_on.id, "event_type": gave_up_on.type}
        stream = gave_up_on.stream_id if gave_up_on is not None else None
        self.record(Event(WEBHOOK_FAILED, stream, "warning", data))  # not queued for ``endpoint`` (endpoints_for)

    async def wait_for_events(self, after: int, timeout: float) -> bool:
        """Whether an event after ``seq`` ``after`` exists, waiting for one up to ``timeout``."""
        signal = self._new_event
        if self.recent.last_seq > after:
            return True
        try:
            async with asyncio.timeout(timeout):  # no task per wait, unlike wait_for: every feed waits here
                await signal.wait()
        except TimeoutError:
            return False
        return True

    # --------------------------------------------------------------- actions

    async def act(self, principal: Principal, stream_id: str, request: ActionRequest) -> tuple[AuditEntry, Event]:
        """Carry out ``request`` on ``stream_id``; audit it and tell everyone (``action.taken``)."""
        _require_moderator(principal)
        control = self._control()
        # A redaction by hand starts an episode of its own rather than joining the last match's.
        fresh = request.action == "redact" and request.event_id is None
        episode = None if fresh else self._episode(stream_id, request)
        details: dict[str, Any] = {}
        live = control.is_live(stream_id)
        if request.action in ("redact", "resume", "keep", "terminate") and not live:
            raise ActionError(f"stream {stream_id!r} is not live", 404)
        if request.action in ("resume", "keep") and not control.is_redacting(stream_id):
            raise ActionError(f"stream {stream_id!r} is not redacted now", 409)
        if request.action in ("confirm", "false_positive") and episode is None:
            raise ActionError(f"stream {stream_id!r} has no match to {request.action.replace('_', ' ')}", 409)
        if request.action == "redact":
            # The strongest redaction: the moderator acts on what a list does not know yet.
            control.impose(stream_id, Action.SLATE, f"redacted for review by {principal.name}: {request.reason}")
        elif request.action == "resume":
            control.resume(stream_id, principal.name)
        elif request.action == "keep" and not control.keep(stream_id):  # the hold expired just now
            raise ActionError(f"stream {stream_id!r} is not redacted now", 409)
        elif request.action == "false_positive":
            assert episode is not None  # refused above otherwise
            details = self._mark_false_positive(principal, stream_id, request, episode)
            if live and control.is_redacting(stream_id):
                control.resume(stream_id, principal.name)
        elif request.action == "terminate":
            key_sha256 = await control.terminate(stream_id, f"terminated by {principal.name}")
            self.store.access.revoke(stream_id, key_sha256, principal.name)
            details = {"stream_key_revoked": True}
        since = episode.at if episode is not None else time.time() - _VIEW_LOOKBACK
        entry = self.store.audit.append(
            AuditEntry(
                actor=principal.name,
                role=principal.role,
                action=request.action,
                stream_id=stream_id,
                reason=request.reason,
                viewed_content=self.store.audit.viewed_since(principal.name, stream_id, since),
                event_id=episode.id if episode is not None else None,
                details=details,
            )
        )
        return entry, self._announce(entry, _episode_fields(episode) if episode is not None else {})

    def retry_webhook(self, principal: Principal, name: str, reason: str) -> tuple[AuditEntry, Event]:
        """Try a failing webhook endpoint now, not at the end of its backoff (``WebhookDispatcher.retry_now``)."""
        _require_moderator(principal)
        try:
            pending = self.webhooks.retry_now(name)
        except KeyError:
            raise ActionError(f"no webhook endpoint {name!r}", 404) from None
        except ValueError as exc:
            raise ActionError(str(exc), 409) from None
        entry = self.store.audit.append(
            AuditEntry(
                actor=principal.name,
                role=principal.role,
                action="webhook_retry",
                stream_id=None,
                reason=reason,
                viewed_content=False,
                details={"endpoint": name, "pending": pending},
            )
        )
        return entry, self._announce(entry, {})

    def _announce(self, entry: AuditEntry, extra: dict[str, Any]) -> Event:
        """The ``action.taken`` event of an audited action."""
        data = {
            "action": entry.action,
            "actor": entry.actor,
            "reason": entry.reason,
            "audit_id": entry.id,
            "viewed_content": entry.viewed_content,
            **entry.details,
            **extra,
        }
        log.info("%s: %s by %s", f"stream {entry.stream_id}" if entry.stream_id else "proxy", entry.action, entry.actor)
        return self.record(Event(ACTION_TAKEN, entry.stream_id, "info", data))

    def _control(self) -> StreamControl:
        if self.control is None:
            raise ActionError("no relay attached", 503)
        return self.control

    def _episode(self, stream_id: str, request: ActionRequest) -> Event | None:
        if request.event_id is not None:
            event = self.store.events.get(request.event_id)
            if event is None or event.stream_id != stream_id:
                raise ActionError(f"no event {request.event_id!r} on stream {stream_id!r}", 404)
            return event
        remembered = self._episodes.get(stream_id)
        if remembered is not None:
            return remembered
        return self.store.events.latest(stream_id, _EPISODE_TYPES)

    def _mark_false_positive(
        self, principal: Principal, stream_id: str, request: ActionRequest, episode: Event
    ) -> dict[str, Any]:
        signal, matched = episode.data.get("signal"), episode.data.get("matched_hash")
        if episode.type != MATCH_STARTED or not signal or not matched:
            raise ActionError("false_positive needs a match event (this redaction was not a hash match)", 409)
        item = Allowed(signal, matched, stream_id if request.scope == "stream" else None)
        self.store.access.allow(item, principal.name, request.reason)
        self.allowlist.add(item)
        return {"allowed_hash": matched, "signal": signal, "scope": request.scope}

    def preview_frame(self, principal: Principal, stream_id: str) -> av.VideoFrame:
        """The frame to make a preview of (see ``preview.blurred_thumbnail``); the view is audited first."""
        if not self.settings.preview:
            raise ActionError("previews are off ([moderation] preview = true turns them on)", 404)
        frame = self._control().latest_frame(stream_id)
        if frame is None:
            raise ActionError(f"no live picture on stream {stream_id!r}", 404)
        self.store.audit.append(
            AuditEntry(
                principal.name, principal.role, "preview", stream_id, "viewed the blurred preview", viewed_content=True
            )
        )
        return frame

    # --------------------------------------------------------------- reports

    def report(self, stream_id: str, client: str, reason: str, category: str | None) -> Event:
        """A viewer's report: stored, delivered, and maybe (per the stream's profile) a redaction."""
        control = self._control()
        if not control.is_live(stream_id):
            raise ActionError(f"no live stream named {stream_id!r}", 404)
        now = time.time()
        self.reports.admit(stream_id, client, now)  # raises reports.RateLimited
        profile = self.profiles(stream_id)
        verdict = self.reports.weigh(stream_id, client, now, profile)
        data = {
            "reason": reason,
            "category": category,
            "client": client,
            "reporters_in_window": verdict.reporters,
            "profile": profile.name,
            "redacts": verdict.redact,
        }
        event = self.record(Event(REPORT_RECEIVED, stream_id, profile.report_severity, data))
        if verdict.redact:
            control.impose(
                stream_id,
                Action[profile.report_action.upper()],
                f"{verdict.reporters} viewer reports within {profile.report_window_seconds:g} s",
            )
        return event

    # ------------------------------------------------------------ background

    async def run(self) -> None:
        """Webhook delivery and retention pruning, until cancelled."""
        await asyncio.gather(self.webhooks.run(), self._prune_forever())

    async def _prune_forever(self) -> None:
        while True:
            try:
                removed = await self.prune(time.time())
                if removed:
                    log.info("retention: removed %d old events", removed)
            except Exception:  # noqa: BLE001 - pruning failing must not stop delivery
                log.exception("retention pruning failed")
            await asyncio.sleep(3600)

    async def prune(self, now: float) -> int:
        """Drop what is past retention, in batches with the loop free between them; returns the events dropped."""
        before, removed = now - self.settings.retention_days * 86400, 0
        while (batch := self.store.events.prune(before, PRUNE_BATCH)) == PRUNE_BATCH:
            removed += batch
            await asyncio.sleep(PRUNE_PAUSE_SECONDS)
        self.store.audit.prune(now - self.settings.audit_retention_days * 86400)
        return removed + batch


def _require_moderator(principal: Principal) -> None:
    if not principal.may_act:
        raise ActionError(f"role {principal.role!r} may not act (moderator only)", 403)


def _episode_fields(episode: Event) -> dict[str, Any]:
    """What an event about a redaction repeats of the event that opened it, so a receiver
    filtering on a category hears its end and what moderators did about it."""
    return {"episode": episode.id, "list_name": episode.data.get("list_name"), "category": episode.category}


def _flood_key(data: dict[str, Any]) -> Key | None:
    """The (list, signal, hash) a stored match or flood event is about."""
    list_name, matched_hash = data.get("list_name"), data.get("matched_hash")
    if not isinstance(list_name, str) or not isinstance(matched_hash, str):
        return None
    return (list_name, str(data.get("signal") or ""), matched_hash)

"""``GET /metrics``: the proxy's counters in the Prometheus text format (version 0.0.4).

Written out by hand rather than with ``prometheus-client``: a few dozen lines
of text are not worth a runtime dependency, and every figure already lives in
the relay, the guards and the moderation service -- a scrape only reads them.

Like ``/healthz``, the endpoint needs no token, so that any scraper can reach
it.  It tells nothing about content (no stream names, no profiles, no hashes),
but it does say how many streams are live, how often the lists match and by
which list, and which webhook receivers are failing: **keep it on an internal
network** (``[server] admin_port``: it is then served only there; or let the
reverse proxy in front refuse ``/metrics`` from outside).

Counters never go down while the process runs: a stream's frames are added to
``Relay.ended_totals`` when it ends, and live streams are summed on top.  The
guard latency histogram counts every frame's time in ``StreamGuard.push``
(sampling, hashing, matching, and the redaction of frames leaving the delay
buffer), in the buckets of ``PUSH_SECONDS_BUCKETS``.  Label values that come
from configuration (list names, categories, webhook names) are escaped as the
format requires; stream names are never used as labels (publishers choose
them, so they would be unbounded).

Each list's source (``list_source_*``, labelled by list name and kind): the
version in force (``list_source_info``, the version a label), its entries
(and, by signal, the hashes held that no live frame can match: MD5s), when
the source last answered and how long ago, its failed fetches, and whether
it is failing now or stale (failing past its ``max_stale_seconds``).

A clustered node (``relay.app.add_lists_health``) also reports its shared
lists: ``list_version`` and ``list_hashes`` per list, ``lists_age_seconds``
(since it last confirmed with Redis that it enforces the current versions) and
``lists_stale`` (1 while that age is over ``max_list_age_seconds``).

Config reloads (``livesafe.reload``, SIGHUP): ``config_reload_total`` by
result (ok, error), ``config_last_reload_successful`` (0 while the file on disk
was refused: what runs is not what it says) and when the config in force was
read (``config_loaded_timestamp_seconds``).
"""

from __future__ import annotations

import logging
import math
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence

from aiohttp import web

from livesafe.cluster.node import CLUSTER, ClusterNode
from livesafe.guard.stream_guard import PUSH_SECONDS_BUCKETS
from livesafe.lists.health import ListsHealth
from livesafe.lists.sources import SourceStatus
from livesafe.moderation.api import MODERATION
from livesafe.moderation.lists_api import LISTS
from livesafe.moderation.service import Moderation
from livesafe.relay.app import LISTS_HEALTH
from livesafe.relay.registry import RELAY, Relay
from livesafe.relay.stream import StreamState
from livesafe.reload import RELOAD, ReloadStatus

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PREFIX = "livesafe_"

Labels = dict[str, str]
Sample = tuple[str, Labels, float]  # (suffix after the family name, labels, value)


def add_metrics(app: web.Application) -> None:
    """Mount ``GET /metrics`` on the proxy's app (works without the moderation side too)."""
    app.router.add_get("/metrics", metrics_handler)


async def metrics_handler(request: web.Request) -> web.Response:
    lists = request.app.get(LISTS_HEALTH)
    sources = request.app.get(LISTS)
    reload = request.app.get(RELOAD)
    text = render(
        request.app[RELAY],
        request.app.get(MODERATION),
        request.app.get(CLUSTER),
        lists() if lists is not None else None,
        sources.statuses if sources is not None else None,
        reload.status if reload is not None else None,
    )
    return web.Response(body=text.encode(), headers={"Content-Type": CONTENT_TYPE, "Cache-Control": "no-store"})


# ----------------------------------------------------------------- format


def escape_label(value: str) -> str:
    """A label value as the text format needs it: backslash, double quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and abs(value) < 2**53):
        return str(int(value))
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


class Exposition:
    """Metric families in the order written; each with its HELP and TYPE lines, then its samples."""

    def __init__(self) -> None:
        self._lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str, samples: Iterable[Sample]) -> None:
        full = PREFIX + name
        self._lines.append(f"# HELP {full} {_escape_help(help_text)}")
        self._lines.append(f"# TYPE {full} {kind}")
        for suffix, labels, value in samples:
            rendered = ",".join(f'{key}="{escape_label(str(val))}"' for key, val in labels.items())
            self._lines.append(
                f"{full}{suffix}{{{rendered}}} {_number(value)}" if rendered else f"{full}{suffix} {_number(value)}"
            )

    def gauge(self, name: str, help_text: str, value: float, labels: Labels | None = None) -> None:
        self.family(name, "gauge", help_text, [("", labels or {}, value)])

    def counter(self, name: str, help_text: str, value: float, labels: Labels | None = None) -> None:
        self.family(name, "counter", help_text, [("", labels or {}, value)])

    def histogram(self, name: str, help_text: str, bounds: Iterable[float], counts: list[int], total: float) -> None:
        """``counts``: per bucket (not cumulative), one more than ``bounds`` (the last is above every bound)."""
        samples: list[Sample] = []
        running = 0
        for bound, count in zip([*bounds, math.inf], counts, strict=True):
            running += count
            samples.append(("_bucket", {"le": _number(bound)}, running))
        samples += [("_sum", {}, total), ("_count", {}, running)]
        self.family(name, "histogram", help_text, samples)

    def text(self) -> str:
        return "\n".join(self._lines) + "\n"


# ----------------------------------------------------------------- values


def render(
    relay: Relay,
    moderation: Moderation | None,
    cluster: ClusterNode | None = None,
    lists: ListsHealth | None = None,
    sources: Sequence[SourceStatus] | None = None,
    reloads: ReloadStatus | None = None,
) -> str:
    """Everything, read on the event loop; the guards' figures are read without locks (see GuardStats).

    ``lists``: the shared lists' versions and age (clustered nodes only);
    ``sources``: where each list comes from and how its fetches go;
    ``reloads``: how config reloads (SIGHUP) went.
    """
    out = Exposition()
    _relay_metrics(out, relay)
    if sources is not None:
        _source_metrics(out, sources, time.time())
    if lists is not None:
        _list_metrics(out, lists)
    if moderation is not None:
        _moderation_metrics(out, moderation)
    if cluster is not None:
        _cluster_metrics(out, cluster)
    if reloads is not None:
        _reload_metrics(out, reloads)
    return out.text()


def _reload_metrics(out: Exposition, reloads: ReloadStatus) -> None:
    out.family(
        "config_reload_total",
        "counter",
        "Config reloads (SIGHUP) by result: ok (applied) or error (refused; the previous config kept)",
        [("", {"result": "ok"}, reloads.ok), ("", {"result": "error"}, reloads.errors)],
    )
    out.gauge(
        "config_last_reload_successful",
        "0 if the last config reload was refused (the file on disk is not what runs), else 1",
        int(reloads.last_ok is not False),
    )
    out.gauge(
        "config_loaded_timestamp_seconds", "When the config in force was read (start or reload)", reloads.loaded_at
    )


def _cluster_metrics(out: Exposition, node: ClusterNode) -> None:
    out.gauge("cluster_registry_up", "1 if the last call to the cluster's Redis succeeded", node.registry.reachable)
    out.gauge("cluster_nodes", "Live nodes in the cluster, at this node's last heartbeat", node.known_nodes)
    out.gauge("cluster_leases", "Streams this node holds the lease of (is the origin of)", len(node.leases.held))
    out.gauge("cluster_draining", "1 while this node drains (takes no new streams)", node.draining)
    events = node.reports.get("events")
    if events is not None:
        shared = events()
        out.gauge(
            "cluster_events_up", "1 if the events relay to the cluster's stream is connected", shared["connected"]
        )
        out.gauge(
            "cluster_events_backlog", "This node's events not yet in the cluster's stream", shared["relay_backlog"]
        )
        out.gauge(
            "cluster_events_unconfirmed",
            "This node's events in the cluster's stream that no node has queued for delivery yet",
            shared["unconfirmed"],
        )
        out.counter("cluster_events_mirrored_total", "Other nodes' events stored here", shared["mirrored"])
        out.counter("cluster_events_malformed_total", "Entries of the cluster's stream skipped", shared["malformed"])
    out.family(
        "cluster_placements_total",
        "counter",
        "Publishers this node placed: here (local), sent to another node (redirected), or refused (503)",
        [("", {"outcome": outcome}, count) for outcome, count in sorted(node.placements.items())],
    )


def _relay_metrics(out: Exposition, relay: Relay) -> None:
    live = list(relay.streams.values())
    ended = relay.ended_totals
    states = {state.value: 0 for state in StreamState}
    for stream in live:
        states[stream.state.value] += 1
    out.family(
        "streams",
        "gauge",
        "Streams the relay holds now, by state (ended: publisher gone, within the grace period).",
        [("", {"state": state}, n) for state, n in states.items()],
    )
    out.counter("streams_ended_total", "Streams that have ended since the proxy started.", ended.streams)
    out.gauge("viewers", "WHEP viewers attached to streams now.", sum(len(s.viewers) for s in live))
    kinds = {"whip": 0, "whep": 0}
    for session in list(relay.sessions.values()):
        kinds[session.kind] = kinds.get(session.kind, 0) + 1
    out.family(
        "sessions",
        "gauge",
        "WebRTC sessions open now (whip: publishers, whep: viewers), connected or not.",
        [("", {"kind": kind}, n) for kind, n in kinds.items()],
    )

    stats = [s.guard.stats for s in live]
    counters = [s.counters for s in live]
    out.counter(
        "frames_in_total",
        "Video frames received from publishers.",
        ended.frames_in + sum(c.frames_in for c in counters),
    )
    out.counter(
        "frames_guarded_total",
        "Frames that left a guard's delay buffer (checked, redacted if needed).",
        ended.frames_guarded + sum(s.frames_out for s in stats),
    )
    out.counter(
        "frames_redacted_total",
        "Guarded frames that left blurred or slated.",
        ended.frames_redacted + sum(s.frames_redacted for s in stats),
    )
    out.counter(
        "frames_dropped_total",
        "Frames dropped before the guard under overload (never shown to anyone).",
        ended.frames_dropped + sum(c.frames_dropped for c in counters),
    )
    out.counter(
        "guard_errors_total",
        "Checks that failed (the guard slates: fail closed).",
        ended.guard_errors + sum(s.errors for s in stats),
    )
    out.counter(
        "guard_stalls_total",
        "Times a stream's worker spent longer than stall_seconds on one frame (viewers got the slate).",
        ended.stalls + sum(c.stalls for c in counters),
    )
    buckets = list(ended.push_buckets)
    seconds = ended.push_seconds
    for s in stats:
        for i, count in enumerate(list(s.push_buckets)):  # a copy: the guard's thread keeps counting
            buckets[i] += count
        seconds += s.push_seconds
    out.histogram(
        "guard_frame_seconds",
        "Time the guard spent on each frame (StreamGuard.push).",
        PUSH_SECONDS_BUCKETS,
        buckets,
        seconds,
    )


def _source_metrics(out: Exposition, sources: Sequence[SourceStatus], now: float) -> None:
    def each(value: Callable[[SourceStatus], float | None]) -> list[Sample]:
        samples = []
        for status in sources:
            figure = value(status)
            if figure is not None:
                samples.append(("", {"list": status.name, "kind": status.kind}, figure))
        return samples

    out.family("list_source_entries", "gauge", "Entries of each list in force.", each(lambda s: s.entries))
    out.family(
        "list_source_info",
        "gauge",
        "1 for the version of each list in force (its content's digest; one version per list at a time).",
        [("", {"list": s.name, "kind": s.kind, "version": s.version}, 1) for s in sources if s.version is not None],
    )
    out.family(
        "list_source_skipped_entries", "gauge", "Entries of each list skipped as malformed.", each(lambda s: s.skipped)
    )
    out.family(
        "list_source_unmatchable_entries",
        "gauge",
        "Hashes of each list that no live frame can match (md5), by signal: loaded, never enforced.",
        [
            ("", {"list": s.name, "kind": s.kind, "signal": signal}, count)
            for s in sources
            for signal, count in sorted(s.unmatchable.items())
        ],
    )
    out.family(
        "list_source_last_success_timestamp_seconds",
        "gauge",
        "When each list's source last answered (a new version or 'unchanged'), Unix time.",
        each(lambda s: s.last_success),
    )
    out.family(
        "list_source_staleness_seconds",
        "gauge",
        "Seconds since each list's source last answered.",
        each(lambda s: None if s.last_success is None else max(0.0, now - s.last_success)),
    )
    out.family(
        "list_source_failures_total", "counter", "Failed fetches of each list's source.", each(lambda s: s.failures)
    )
    out.family(
        "list_source_failing",
        "gauge",
        "1 while each list's source is failing (the last good version stays in force).",
        each(lambda s: s.failing_since is not None),
    )
    out.family(
        "list_source_stale",
        "gauge",
        "1 while each list's source has failed for longer than its max_stale_seconds.",
        each(lambda s: s.stale(now)),
    )


def _list_metrics(out: Exposition, lists: ListsHealth) -> None:
    out.family(
        "list_version",
        "gauge",
        "The cluster's version of each list this node enforces (0: not yet confirmed with Redis).",
        [("", {"list": state.name}, state.version or 0) for state in lists.lists],
    )
    out.family(
        "list_hashes",
        "gauge",
        "Hashes in each list this node enforces.",
        [("", {"list": state.name}, state.hashes) for state in lists.lists],
    )
    out.gauge(
        "lists_age_seconds",
        "Seconds since this node last confirmed with Redis that it enforces the current lists (+Inf: never).",
        lists.age_seconds,
    )
    out.gauge(
        "lists_stale",
        f"1 while the lists are stale (age over {lists.max_age_seconds:g} s): the node {lists.on_stale}s.",
        int(lists.stale),
    )


def _moderation_metrics(out: Exposition, moderation: Moderation) -> None:
    out.family(
        "matches_total",
        "counter",
        "List matches that opened a redaction (match.started), by list and category.",
        [("", {"list": name, "category": category}, n) for (name, category), n in sorted(moderation.matches.items())],
    )
    out.family(
        "events_total",
        "counter",
        "Moderation events stored, by type.",
        [("", {"type": kind}, n) for kind, n in sorted(moderation.counts.items())],
    )
    out.counter(
        "events_lost_total",
        "Events the store failed to take (disk errors); they reached no feed or webhook.",
        moderation.lost,
    )

    health = moderation.webhooks.health
    out.family(
        "webhook_deliveries_total",
        "counter",
        "Webhook deliveries answered 2xx since the proxy started, by endpoint.",
        [("", {"endpoint": name}, h.delivered) for name, h in health.items()],
    )
    out.family(
        "webhook_failed_attempts_total",
        "counter",
        "Webhook delivery attempts that failed (error, timeout, non-2xx), by endpoint.",
        [("", {"endpoint": name}, h.failed_attempts) for name, h in health.items()],
    )
    out.family(
        "webhook_failing",
        "gauge",
        "1 while an endpoint's last attempt failed (it is being retried with backoff).",
        [("", {"endpoint": name}, int(h.failures > 0)) for name, h in health.items()],
    )

    if moderation.closed:
        return
    try:
        stored = moderation.store.outbox.counts()
        backlog = moderation.store.outbox.pending()
    except sqlite3.Error:  # the scrape still says what the process knows
        log.exception("metrics: could not read the outbox")
        return
    rows = [
        ("", {"endpoint": name, "state": state}, stored.get(name, {}).get(state, 0))
        for name in sorted(set(health) | set(stored))
        for state in ("pending", "delivered", "failed")
    ]
    out.family(
        "webhook_outbox",
        "gauge",
        "Stored webhook deliveries by endpoint and state (until retention removes finished ones).",
        rows,
    )
    out.gauge("event_backlog", "Webhook deliveries waiting to be sent (pending outbox rows, all endpoints).", backlog)


__all__ = ["CONTENT_TYPE", "add_metrics", "escape_label", "render"]

"""The whole proxy as one aiohttp application: relay, guard, and moderation wired together.

Kept apart from the CLI so tests and embedders build exactly what
``livesafe serve`` runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from livesafe.banks.store import BankStore
from livesafe.cluster.access import ClusteredStore, SharedAccess
from livesafe.cluster.edge import EdgeStreams
from livesafe.cluster.events import ClusterEvents
from livesafe.cluster.lists import SharedLists
from livesafe.cluster.media import add_media_routes
from livesafe.cluster.node import CLUSTER, ClusterNode
from livesafe.cluster.nodes import connect
from livesafe.cluster.settings import ClusterSettings
from livesafe.events import LISTS_RECOVERED, LISTS_STALE, Event, Fact
from livesafe.guard.matcher import Matcher
from livesafe.guard.stream_guard import GuardSettings
from livesafe.lists.live import ListWatcher, LiveLists
from livesafe.lists.sources import SourceStatus
from livesafe.metrics import add_metrics
from livesafe.moderation.api import add_moderation
from livesafe.moderation.banks_api import add_bank_routes
from livesafe.moderation.lists_api import add_list_routes
from livesafe.moderation.service import Moderation
from livesafe.moderation.settings import ModerationSettings
from livesafe.moderation.store.interfaces import Store
from livesafe.moderation.store.sqlite import SqliteStore
from livesafe.relay.app import add_lists_health, add_sources_health, create_app
from livesafe.relay.registry import Relay
from livesafe.relay.settings import RelaySettings

# Nodes forward a stream's moderator actions to the node guarding it, on its public port.
ADMIN_PORT_IN_CLUSTER = "admin_port: not with a cluster yet (nodes forward moderator actions on the public port)"


@dataclass
class Proxy:
    app: web.Application
    relay: Relay
    moderation: Moderation
    cluster: ClusterNode | None = None


def build_proxy(
    relay_settings: RelaySettings,
    matcher: Callable[[], Matcher],
    guard: GuardSettings,
    moderation_settings: ModerationSettings,
    watcher: ListWatcher | None = None,
    cluster: ClusterSettings | None = None,
    lists: LiveLists[Any] | None = None,
    banks: BankStore | None = None,
) -> Proxy:
    """Open the event store (creating it if new) and build the app; the store closes with the app.

    ``watcher`` (the lists' hot reload) runs while the app does.  With ``cluster``
    the app joins the cluster when it starts (raising ``RegistryUnavailable`` or
    ``NodeNameTaken`` from ``AppRunner.setup``) and leaves it when it stops;
    ``lists`` (the ones ``matcher`` reads) are then kept at the cluster's versions.
    ``banks``: the banks the lists' bank sources read (so the API changes what they
    see even in a ``:memory:`` store); None opens them in the event store's file.
    With ``relay_settings.admin_port`` the app serves its private routes only on the
    listener that ``listeners.listen_admin`` starts (one app for both ports: see there).
    """
    if cluster is not None and lists is None:
        raise ValueError("a cluster node needs its lists (to keep them at the cluster's versions)")
    if cluster is not None and relay_settings.admin_port is not None:
        raise ValueError(ADMIN_PORT_IN_CLUSTER)
    store: Store = SqliteStore(moderation_settings.database)
    relay: Relay
    moderation: Moderation
    redis = connect(cluster) if cluster is not None else None
    if cluster is not None and redis is not None:
        shared = SharedAccess(
            store.access,
            cluster,
            redis,
            on_revoked=lambda stream_id, key: relay.revoked_keys.add((stream_id, key)),
            on_allowed=lambda item: moderation.allowlist.add(item),
        )
        store = ClusteredStore(store, shared)
    # The relay's profile: its config's, or the one a signed grant gave a stream it does not list.
    moderation = Moderation(moderation_settings, store, lambda stream_id: relay.profile(stream_id))

    node: ClusterNode | None = None

    def on_event(fact: Fact) -> None:
        moderation.record_fact(fact)
        if node is not None:
            node.on_fact(fact)

    relay = Relay(
        relay_settings,
        matcher,
        guard,
        on_event=on_event,
        allow=moderation.allowlist.allows,
        revoked_keys=store.access.revoked_keys(),
    )
    app = create_app(relay)
    if cluster is not None and redis is not None:
        node = ClusterNode(cluster, relay, redis)
        node.registry.on_refresh.append(shared.sync)
        relay.placement = node
        app[CLUSTER] = node
        app.middlewares.append(node.forwarding())
        add_media_routes(app, relay, node.auth, node.fence_of)  # edges pull guarded streams from here
        edges = relay.edges = EdgeStreams(relay_settings, node.auth, node.origin_of)
        node.extra_load = lambda: {"edge_streams": edges.streams, "edge_viewers": edges.viewers}
        assert lists is not None  # checked above
        shared_lists = SharedLists(cluster, redis, lists)
        shared_lists.protect(relay)  # before start: a node that cannot reach Redis is held at once
        node.admitting = lambda: not shared_lists.stale  # placement sends publishers to fresh nodes
        add_lists_health(app, shared_lists.health)
        events = ClusterEvents(cluster, redis, moderation)
        moderation.join_cluster(cluster.node_name)  # webhooks go out once across the cluster, not from here
        node.reports["events"] = events.status

        async def _join(app: web.Application) -> AsyncIterator[None]:
            await node.start()  # raises first if Redis does not answer or the name or secret is wrong
            await shared_lists.start()
            await node.registry.refresh()  # registered again now that its lists' freshness is known
            await events.start()
            yield
            await events.stop()  # after the relay's last events; relayed on the next start if not now
            await shared_lists.stop()
            await edges.close()
            await node.stop()

        app.cleanup_ctx.insert(0, _join)  # joined before the relay serves, left after it shut down
    add_moderation(app, moderation)
    if banks is None:
        banks = own_banks = BankStore(moderation_settings.database)

        async def _close_banks(app: web.Application) -> None:
            own_banks.close()

        app.on_cleanup.append(_close_banks)
    add_bank_routes(app, banks)
    if lists is not None:
        _report_lists(app, lists, moderation)
    add_metrics(app)
    if watcher is not None:

        async def _watch_lists(app: web.Application) -> AsyncIterator[None]:
            watcher.start()
            yield
            watcher.stop()

        app.cleanup_ctx.append(_watch_lists)
    return Proxy(app, relay, moderation, node)


def _report_lists(app: web.Application, lists: LiveLists[Any], moderation: Moderation) -> None:
    """``/api/lists`` and ``/api/lookup``; flood limits from each list; sources going stale are events (and
    ``/healthz`` 503 while they are).

    ``on_stale``/``on_recovered`` fire on a list's watcher thread: the event is
    recorded on the loop (``call_soon_threadsafe``), like every other event.
    """
    add_list_routes(app, lists)
    add_sources_health(app, lambda: [status.name for status in lists.statuses if status.stale()])

    def limits(name: str) -> tuple[int, float] | None:
        spec = lists.spec(name)
        return (spec.flood_streams, spec.flood_window_seconds) if spec is not None else None

    moderation.flood.limits = limits

    async def _list_events(app: web.Application) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()

        def report(kind: str, severity: str) -> Callable[[SourceStatus], None]:
            def listener(status: SourceStatus) -> None:
                data = status.to_json() | {"list_name": status.name}
                try:
                    loop.call_soon_threadsafe(moderation.record, Event(kind, None, severity, data))
                except RuntimeError:  # the loop closed while a fetch was ending: the log has it
                    pass

            return listener

        stale, recovered = report(LISTS_STALE, "high"), report(LISTS_RECOVERED, "info")
        lists.on_stale.append(stale)
        lists.on_recovered.append(recovered)
        yield
        lists.on_stale.remove(stale)
        lists.on_recovered.remove(recovered)

    app.cleanup_ctx.append(_list_events)

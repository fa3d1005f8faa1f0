"""The whole proxy as one aiohttp application: relay, guard, and moderation wired together.

Kept apart from the CLI so tests and embedders build exactly what
``livesafe serve`` runs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from aiohttp import web

from livesafe.guard.matcher import Matcher
from livesafe.guard.stream_guard import GuardSettings
from livesafe.lists.live import ListWatcher
from livesafe.metrics import add_metrics
from livesafe.moderation.api import add_moderation
from livesafe.moderation.service import Moderation
from livesafe.moderation.settings import ModerationSettings
from livesafe.moderation.store.sqlite import SqliteStore
from livesafe.relay.app import create_app
from livesafe.relay.registry import Relay
from livesafe.relay.settings import RelaySettings


@dataclass
class Proxy:
    app: web.Application
    relay: Relay
    moderation: Moderation


def build_proxy(
    relay_settings: RelaySettings,
    matcher: Callable[[], Matcher],
    guard: GuardSettings,
    moderation_settings: ModerationSettings,
    watcher: ListWatcher | None = None,
) -> Proxy:
    """Open the event store (creating it if new) and build the app; the store closes with the app.

    ``watcher`` (the lists' hot reload) runs while the app does.
    """
    store = SqliteStore(moderation_settings.database)
    moderation = Moderation(moderation_settings, store, relay_settings.profile_for)
    relay = Relay(
        relay_settings,
        matcher,
        guard,
        on_event=moderation.record_fact,
        allow=moderation.allowlist.allows,
        revoked_keys=store.access.revoked_keys(),
    )
    app = create_app(relay)
    add_moderation(app, moderation)
    add_metrics(app)
    if watcher is not None:

        async def _watch_lists(app: web.Application) -> AsyncIterator[None]:
            watcher.start()
            yield
            watcher.stop()

        app.cleanup_ctx.append(_watch_lists)
    return Proxy(app, relay, moderation)

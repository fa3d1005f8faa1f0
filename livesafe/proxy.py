"""The whole proxy as one aiohttp application: relay, guard, and moderation wired together.

Kept apart from the CLI so tests and embedders build exactly what
``livesafe serve`` runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from aiohttp import web

from livesafe.guard.matcher import Matcher
from livesafe.guard.stream_guard import GuardSettings
from livesafe.metrics import add_metrics
from livesafe.moderation.api import add_moderation
from livesafe.moderation.service import Moderation
from livesafe.moderation.settings import ModerationSettings
from livesafe.moderation.store.sqlite import SqliteStore
from livesafe.relay.server import Relay, create_app
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
) -> Proxy:
    """Open the event store (creating it if new) and build the app; the store closes with the app."""
    store = SqliteStore(moderation_settings.database)
    moderation = Moderation(moderation_settings, store)
    relay = Relay(
        relay_settings,
        matcher,
        guard,
        on_event=moderation.on_guard_event,
        allow=moderation.allowlist.allows,
        revoked_keys=store.access.revoked_keys(),
    )
    app = create_app(relay)
    add_moderation(app, moderation)
    add_metrics(app)
    return Proxy(app, relay, moderation)

"""Config reload (``SIGHUP`` to ``livesafe serve`` or ``demo``): new rules while every stream keeps running.

A reload takes from the file who may publish and watch (stream keys, viewer
tokens, ``[auth.jwt]``, ``[auth.hook]``, profiles and a few limits:
``RELAY_RELOADED``), the moderator tokens and webhooks (``MODERATION_RELOADED``)
and the set of lists (``LiveLists.respec``); each is swapped in whole (one
reference), so no request sees half of it.  Every other setting is fixed at
start: the running one is kept and, if the file changed it, a warning names it.
docs/reload.md has the table (a test keeps it in step with these sets).

The rule for what is already running: **sessions that are up carry on; new
ones meet the new rules.**  A publisher whose key was removed keeps
publishing until it disconnects (a moderator's ``terminate`` is the way to
stop it now); a live stream keeps the policy profile it started under.
Cutting running streams because a file changed would turn an operator's typo
into an outage, and the guard's floor must not change under a stream.  Lists
are the exception: they decide what viewers may see, so they apply to every
stream at once.

The whole file is read and checked first, and the new lists fetched; if
anything is wrong nothing changes and one ERROR line says why.  Secrets are
never logged: only names and counts.  ``/metrics`` counts reloads by result
and ``/healthz`` shows when the config in force was loaded and how the last
reload went.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import Any

from aiohttp import web

from livesafe.config import Config
from livesafe.lists import BlocklistError
from livesafe.lists.live import ListWatcher, LiveLists
from livesafe.moderation.service import Moderation
from livesafe.moderation.settings import ModerationSettings
from livesafe.relay.app import add_config_status
from livesafe.relay.registry import Relay
from livesafe.relay.settings import RelaySettings

log = logging.getLogger(__name__)

# The fields a reload takes from the file; every other field keeps its value from start.
RELAY_RELOADED = frozenset(
    {
        "streams",
        "viewer_token",
        "jwt",
        "hook",
        "profiles",
        "max_streams",
        "connect_timeout_seconds",
        "ended_streams_listed",
    }
)
MODERATION_RELOADED = frozenset({"tokens", "webhooks"})


@dataclass
class ReloadStatus:
    """How reloads went, for ``/metrics`` and ``/healthz``."""

    loaded_at: float  # when the config in force was read (start, or the last reload that took)
    ok: int = 0
    errors: int = 0
    last_ok: bool | None = None  # None: never reloaded

    def to_json(self) -> dict[str, Any]:
        last = None if self.last_ok is None else ("ok" if self.last_ok else "error")
        return {"loaded_at": self.loaded_at, "last_reload": last}


class ConfigReload:
    """Reads the config again (``load``: the same function start-up used) and applies what may change.

    ``loaded``: what ``load`` returned at start.  ``lists``/``watcher``: the
    live lists and their watcher (None: the set of lists is not reloaded).
    ``clustered``: a cluster node, whose set of lists stays as it started.
    """

    def __init__(
        self,
        load: Callable[[], Config],
        loaded: Config,
        relay: Relay,
        moderation: Moderation,
        lists: LiveLists[Any] | None = None,
        watcher: ListWatcher | None = None,
        *,
        clustered: bool = False,
        source: str = "the config",
    ) -> None:
        self._load = load
        self._started = loaded  # what runs of the settings fixed at start
        self._relay = relay
        self._moderation = moderation
        self._lists = lists
        self._watcher = watcher
        self._clustered = clustered
        self._source = source
        self._lock = asyncio.Lock()
        self._pending: set[asyncio.Task[bool]] = set()
        self.status = ReloadStatus(loaded_at=time.time())

    def attach(self, app: web.Application) -> None:
        """Report on ``/metrics`` and ``/healthz`` (see ``livesafe.metrics``, ``livesafe.relay.app``)."""
        app[RELOAD] = self
        add_config_status(app, self.status.to_json)

    def request(self) -> None:
        """Reload soon (the ``SIGHUP`` handler: it must not block); reloads run one at a time, in order."""
        task = asyncio.ensure_future(self.reload())
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def reload(self) -> bool:
        """Apply the config as it is now; False (and nothing changed, one ERROR line) if it is not valid."""
        async with self._lock:
            try:
                summary = await self._apply()
            except (ValueError, OSError, BlocklistError) as exc:  # ConfigError is a ValueError
                self._failed()
                log.error("config reload refused, nothing changed (still running the previous config): %s", exc)
                return False
            except Exception:  # a bug, not the file: said with its traceback; the relay keeps running
                self._failed()
                log.exception("config reload failed")
                return False
            self.status.ok += 1
            self.status.last_ok = True
            self.status.loaded_at = time.time()
            log.info("config reloaded from %s: %s", self._source, summary)
            return True

    def _failed(self) -> None:
        self.status.errors += 1
        self.status.last_ok = False

    async def _apply(self) -> str:
        """Check everything, then swap; raises (before anything is swapped) what makes the file unusable."""
        config = await asyncio.to_thread(self._load)  # reads files (a JWT key, the config itself)
        relay = self._relay_settings(config.relay)
        moderation = self._moderation_settings(config.moderation)
        restart = self._needs_restart(config)
        lists, listed = self._lists, ""
        if lists is not None and not self._clustered and tuple(s.spec for s in lists.sources) != config.lists:
            # Fetched (and compiled) off the loop; raises, changing nothing, if a new list cannot be had.
            changes = await asyncio.to_thread(lists.respec, config.lists)
            if self._watcher is not None:
                self._watcher.sync()
            listed = _marked(f"; lists {len(config.lists)}", changes.added, changes.removed, changes.changed)
        before_relay, before_moderation = self._relay.settings, self._moderation.settings
        self._relay.reconfigure(relay)
        self._moderation.reconfigure(moderation)
        if restart:
            log.warning(
                "config reload: %s changed, but fixed at start: restart livesafe to apply %s",
                ", ".join(restart),
                "it" if len(restart) == 1 else "them",
            )
        if relay.dev_mode and not before_relay.dev_mode:
            log.warning("DEV MODE again: no stream key, [auth.jwt] or [auth.hook] left, so anyone may publish")
        keys = _counted("stream keys", _keyed(before_relay), _keyed(relay))
        hooks = _counted("webhooks", _hooks(before_moderation), _hooks(moderation))
        auth = ", ".join(name for name in ("jwt", "hook") if getattr(relay, name) is not None) or "none"
        return f"{keys}; {hooks}{listed}; moderation tokens {len(moderation.tokens)}; [auth]: {auth}"

    def _relay_settings(self, loaded: RelaySettings) -> RelaySettings:
        """The running relay's settings with the reloadable fields from ``loaded`` (validated again)."""
        return replace(self._relay.settings, **{name: getattr(loaded, name) for name in RELAY_RELOADED})

    def _moderation_settings(self, loaded: ModerationSettings) -> ModerationSettings:
        return replace(self._moderation.settings, **{name: getattr(loaded, name) for name in MODERATION_RELOADED})

    def _needs_restart(self, config: Config) -> list[str]:
        """The settings fixed at start that the file now gives other values (their names only: no secrets)."""
        started = self._started
        changed = [
            f"server.{f.name}"
            for f in fields(RelaySettings)
            if f.name not in RELAY_RELOADED and getattr(config.relay, f.name) != getattr(started.relay, f.name)
        ]
        changed += [
            f"moderation.{f.name}"
            for f in fields(ModerationSettings)
            if f.name not in MODERATION_RELOADED
            and getattr(config.moderation, f.name) != getattr(started.moderation, f.name)
        ]
        for name, key in (("guard", "[guard]"), ("cluster", "[cluster]"), ("skip_bad_lines", "lists.skip_bad_lines"),
                          ("reload_seconds", "lists.reload_seconds")):  # fmt: skip
            if getattr(config, name) != getattr(started, name):
                changed.append(key)
        if self._clustered and config.lists != started.lists:
            changed.append("the set of lists (in a cluster)")
        return changed


def _keyed(settings: RelaySettings) -> set[str]:
    return {name for name, access in settings.streams.items() if access.key}


def _hooks(settings: ModerationSettings) -> set[str]:
    return {endpoint.name for endpoint in settings.webhooks}


def _counted(what: str, before: set[str], after: set[str]) -> str:
    return _marked(f"{what} {len(after)}", sorted(after - before), sorted(before - after), [])


def _marked(head: str, added: list[str], removed: list[str], changed: list[str]) -> str:
    """``head (+added -removed ~changed)``: names only (stream, list and webhook names are no secrets)."""
    marks = [f"{sign}{name}" for sign, names in (("+", added), ("-", removed), ("~", changed)) for name in names]
    return f"{head} ({' '.join(marks)})" if marks else head


RELOAD: web.AppKey[ConfigReload] = web.AppKey("config_reload")

"""The platform's HTTP auth hook: it answers allow (optionally with a profile) or deny for each attempt.

Why a hook: some platforms keep who-may-publish in their own database and
would rather be asked than mint tokens.  The relay POSTs
``{"stream", "role", "token", "remote"}`` and expects a 2xx answer
``{"allow": true|false, "profile": "..."?}``.  It fails closed: a timeout,
a connection error, a non-2xx status or an answer it cannot read is a deny.
Answers (allow and deny) are cached for ``cache_seconds`` per
(stream, role, token, remote address); failures are not, so the hook is asked
again once it is back.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass

import aiohttp

log = logging.getLogger(__name__)

_MAX_ANSWER_BYTES = 64 * 1024
_MAX_CACHED = 10_000  # bounded: a flood of distinct tokens must not grow memory without end


@dataclass(frozen=True)
class HookSettings:
    """``[auth.hook]``."""

    url: str
    timeout_seconds: float = 2.0
    cache_seconds: float = 10.0

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"auth.hook.url: expected an http(s) URL, got {self.url!r}")
        if not 0 < self.timeout_seconds <= 30:
            raise ValueError("auth.hook.timeout_seconds: expected more than 0, at most 30")
        if not 0 <= self.cache_seconds <= 3600:
            raise ValueError("auth.hook.cache_seconds: expected 0-3600 (0: ask every time)")


@dataclass(frozen=True)
class HookAnswer:
    allow: bool
    profile: str | None = None
    reason: str = ""  # why it was refused, for the log and the 403 text (never the token)


class AuthHook:
    """Asks the hook, caches its answers briefly, and denies whenever it cannot get one."""

    def __init__(self, settings: HookSettings) -> None:
        self.settings = settings
        self._cache: dict[str, tuple[float, HookAnswer]] = {}
        self._session: aiohttp.ClientSession | None = None

    async def ask(self, stream_id: str, role: str, token: str | None, remote: str | None) -> HookAnswer:
        key = hashlib.sha256(json.dumps([stream_id, role, token, remote]).encode()).hexdigest()
        now = time.monotonic()
        cached = self._cache.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        answer, cacheable = await self._post({"stream": stream_id, "role": role, "token": token, "remote": remote})
        if cacheable and self.settings.cache_seconds > 0:
            if len(self._cache) >= _MAX_CACHED:
                self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
                if len(self._cache) >= _MAX_CACHED:
                    self._cache.clear()
            self._cache[key] = (now + self.settings.cache_seconds, answer)
        return answer

    async def _post(self, body: dict[str, str | None]) -> tuple[HookAnswer, bool]:
        """The hook's answer and whether it may be cached (only real answers are)."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.settings.timeout_seconds))
        try:
            async with self._session.post(self.settings.url, json=body, allow_redirects=False) as response:
                raw = await response.content.read(_MAX_ANSWER_BYTES + 1)
                status = response.status
        except (TimeoutError, aiohttp.ClientError) as exc:
            log.warning("auth hook unreachable (%s): %s refused", type(exc).__name__, body["role"])
            return HookAnswer(False, reason="the auth hook did not answer"), False
        if not 200 <= status < 300:
            log.warning("auth hook answered %d: %s of %s refused", status, body["role"], body["stream"])
            return HookAnswer(False, reason=f"the auth hook answered {status}"), False
        try:
            answer = json.loads(raw) if len(raw) <= _MAX_ANSWER_BYTES else None
        except ValueError:
            answer = None
        allow = answer.get("allow") if isinstance(answer, dict) else None
        profile = answer.get("profile") if isinstance(answer, dict) else None
        if not isinstance(allow, bool) or not (profile is None or isinstance(profile, str)):
            log.warning('auth hook: unreadable answer (expected {"allow": bool, "profile"?: str}): refused')
            return HookAnswer(False, reason="the auth hook's answer was unreadable"), False
        return HookAnswer(allow, profile if allow else None, "" if allow else "the auth hook denied it"), True

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

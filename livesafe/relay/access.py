"""Who may publish or watch a stream: static keys, signed tokens, the platform's hook -- in that order.

Precedence, for each attempt:

1. A **static secret for that stream** decides alone: its ``[streams.NAME]``
   key for publishing; its viewer token (else ``[server] viewer_token``) for
   watching.  Small set-ups keep working as they did.
2. Else, with ``[auth.jwt]``, a presented token shaped like a JWT decides alone
   (a forged or expired JWT is refused, not passed on to the hook).
3. Else, with ``[auth.hook]``, the platform's hook decides (fail closed).
4. Else: publishing is open only in dev mode (no key, no JWT, no hook
   configured at all); watching is open.

A grant may carry a policy profile (a signed token's ``profile`` claim, the
hook's ``profile``); never anything the broadcaster chose.  It applies only to
streams not listed in ``[streams]``, whose profile the config fixes.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from livesafe.http import unauthorized
from livesafe.relay.hook import AuthHook
from livesafe.relay.settings import RelaySettings
from livesafe.relay.tokens import TokenError, TokenVerifier, looks_like_jwt

PUBLISH, VIEW = "publish", "view"


@dataclass(frozen=True)
class Grant:
    profile: str | None = None  # the profile the platform chose (None: the config's)


class Access:
    def __init__(self, settings: RelaySettings, previous: Access | None = None) -> None:
        """``previous``: the checks a config reload replaces; its auth hook (and the answers it cached) is
        kept if ``[auth.hook]`` did not change."""
        self.settings = settings
        self._tokens = TokenVerifier(settings.jwt) if settings.jwt is not None else None
        kept: AuthHook | None = previous.hook if previous is not None else None
        if kept is not None and kept.settings != settings.hook:
            kept = None
        self.hook: AuthHook | None = kept or (AuthHook(settings.hook) if settings.hook is not None else None)

    async def check(self, stream_id: str, role: str, token: str | None, remote: str | None) -> Grant:
        """The grant, or raises 401 (no or invalid credential) / 403 (valid, not for this stream or role)."""
        static = self._static_secret(stream_id, role)
        if static is not None:
            allowed = self.settings.may_publish if role == PUBLISH else self.settings.may_watch  # constant time
            if token is None:
                raise unauthorized(f"{_NEEDS[role]} Authorization: Bearer <{_SECRET[role]}>")
            if not allowed(stream_id, token):
                raise web.HTTPForbidden(text=f"this {_SECRET[role]} may not {_VERB[role]} this stream\n")
            return Grant()
        if self._tokens is not None and token is not None and looks_like_jwt(token):
            try:
                claims = self._tokens.verify(token, stream_id, role)
            except TokenError as exc:
                if exc.status == 401:
                    raise unauthorized(exc.reason) from None
                raise web.HTTPForbidden(text=f"{exc.reason}\n") from None
            return self._grant(stream_id, claims.profile)
        if self.hook is not None:
            answer = await self.hook.ask(stream_id, role, token, remote)
            if not answer.allow:
                if token is None:
                    raise unauthorized(f"{_NEEDS[role]} a token ({answer.reason})")
                raise web.HTTPForbidden(text=f"refused: {answer.reason}\n")
            return self._grant(stream_id, answer.profile)
        if self._tokens is not None:
            raise unauthorized(f"{_NEEDS[role]} Authorization: Bearer <signed token>")
        if role == VIEW or self.settings.dev_mode:
            return Grant()
        if token is None:
            raise unauthorized("publishing needs Authorization: Bearer <stream key>")
        raise web.HTTPForbidden(text="this stream key may not publish this stream\n")

    async def allows(self, stream_id: str, role: str, token: str | None, remote: str | None) -> bool:
        try:
            await self.check(stream_id, role, token, remote)
        except web.HTTPException:
            return False
        return True

    def _static_secret(self, stream_id: str, role: str) -> str | None:
        access = self.settings.streams.get(stream_id)
        if role == PUBLISH:
            return access.key if access is not None else None
        own = access.viewer_token if access is not None else None
        return own or self.settings.viewer_token

    def _grant(self, stream_id: str, profile: str | None) -> Grant:
        if profile is None or stream_id in self.settings.streams:
            return Grant()  # a listed stream keeps its configured profile
        if profile not in self.settings.profiles:
            raise web.HTTPForbidden(text="the grant names a policy profile this relay does not have\n")
        return Grant(profile)

    async def close(self) -> None:
        if self.hook is not None:
            await self.hook.close()


_NEEDS = {PUBLISH: "publishing needs", VIEW: "watching this stream needs"}
_SECRET = {PUBLISH: "stream key", VIEW: "viewer token"}
_VERB = {PUBLISH: "publish", VIEW: "watch"}

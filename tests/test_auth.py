"""The access model over real WHIP/WHEP on loopback: signed tokens (HS256, EdDSA), the platform's
auth hook (a real aiohttp server), and static keys first.

Tokens are minted here with PyJWT, as a platform would.  Refusals are checked at
the HTTP level (no ICE needed) and must leave nothing behind: no session, no
stream.  Valid tokens publish and watch real media between aiortc peers."""

from __future__ import annotations

import asyncio
import contextlib
import textwrap
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from harness import (
    FAST_END,
    ICE,
    SAMPLES,
    Reply,
    config_error,
    config_from,
    make_offer,
    publishing,
    running_relay,
    send,
    unused_port,
)
from test_relay_http import frames_watched

import livesafe.config
from livesafe.relay.hook import HookSettings
from livesafe.relay.settings import RelaySettings, StreamAccess
from livesafe.relay.tokens import JwtSettings

SDP = "application/sdp"
CLIP = SAMPLES / "benign_mix.mp4"
SECRET = "platform-secret-0123456789abcdef-0123456789"  # >= 32 bytes, as HS256 asks
STUDIO_KEY = "studio-static-key-4f2a"
PRIVATE = Ed25519PrivateKey.generate()
PUBLIC_PEM = (
    PRIVATE.public_key()
    .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    .decode()
)
JWT = JwtSettings(secret=SECRET, public_key=PUBLIC_PEM, issuer="https://platform.test", audience="livesafe")
SIGNED = RelaySettings(jwt=JWT, streams={"studio": StreamAccess(key=STUDIO_KEY)}, ice=ICE, stream=FAST_END)


def token(stream: str, role: str, *, expires_in: float = 300, key: Any = SECRET, algorithm: str = "HS256",
          **claims: Any) -> str:  # fmt: skip
    """A token as the platform mints it (``claims`` override or add to the usual ones)."""
    body = {"stream": stream, "role": role, "exp": int(time.time() + expires_in), "iss": "https://platform.test",
            "aud": "livesafe"} | claims  # fmt: skip
    return jwt.encode({k: v for k, v in body.items() if v is not None}, key, algorithm=algorithm)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def post(http: aiohttp.ClientSession, url: str, offer: str, credential: str | None, **headers: str) -> Reply:
    return await send(http, "POST", url, offer, token=credential, content_type=SDP, headers=headers)


# ------------------------------------------------------------------ signed tokens


async def test_signed_tokens_publish_and_watch_real_media():
    publish_token, view_token = token("cam-7", "publish"), token("cam-7", "view", key=PRIVATE, algorithm="EdDSA")
    async with running_relay(SIGNED) as r, publishing(r, CLIP, "cam-7", publish_token):
        assert r.relay.profile("cam-7").name == "default"  # no profile claim: the config's default
        assert await frames_watched(r.url("whep", "cam-7"), token=view_token) >= 3
        async with aiohttp.ClientSession() as http:
            state = await send(http, "GET", f"{r.base}/api/streams/cam-7/state", token=view_token)
            assert state.status == 200 and state.json()["id"] == "cam-7", state
            assert (await send(http, "GET", f"{r.base}/api/streams/cam-7/state")).status == 401


@pytest.mark.parametrize(
    ("what", "credential", "status", "says"),
    [
        ("none", None, 401, "needs Authorization"),
        ("expired", token("cam-7", "publish", expires_in=-60), 401, "expired"),
        ("forged", token("cam-7", "publish", key="another-secret-of-32-bytes-or-more!!"), 401, "Signature"),
        ("forged EdDSA", token("cam-7", "publish", key=Ed25519PrivateKey.generate(), algorithm="EdDSA"), 401, ""),
        ("no expiry", token("cam-7", "publish", exp=None), 401, "exp"),
        ("wrong issuer", token("cam-7", "publish", iss="https://elsewhere.test"), 401, "issuer"),
        ("wrong audience", token("cam-7", "publish", aud="someone-else"), 401, "Audience"),
        (
            "unsigned",
            jwt.encode({"stream": "cam-7", "role": "publish", "exp": 2**32}, None, algorithm="none"),
            401,
            "algorithm",
        ),  # fmt: skip
        ("HS384", token("cam-7", "publish", key=SECRET * 2, algorithm="HS384"), 401, "algorithm 'HS384'"),
        ("wrong stream", token("cam-8", "publish"), 403, "another stream"),
        ("wrong role", token("cam-7", "view"), 403, "may view, not publish"),
        ("pattern", token("*", "publish"), 403, "another stream"),
        ("not a JWT", "a-stream-key-guess", 401, "signed token"),
    ],
)
async def test_bad_publish_tokens_are_refused_and_change_nothing(http, what, credential, status, says):
    offer = await make_offer()
    async with running_relay(SIGNED) as r:
        reply = await post(http, r.url("whip", "cam-7"), offer, credential)
        assert reply.status == status and says in reply.text, (what, reply)
        if status == 401:
            assert reply.headers["WWW-Authenticate"].startswith("Bearer"), reply
        assert not r.relay.sessions and not r.relay.streams and not r.relay.ended


async def test_bad_view_tokens_are_refused_before_liveness(http):
    watcher = await make_offer(direction="recvonly")
    async with running_relay(SIGNED) as r:
        published = await post(http, r.url("whip", "cam-7"), await make_offer(), token("cam-7", "publish"))
        assert published.status == 201, published
        view = r.url("whep", "cam-7")
        for credential, status in [
            (None, 401),
            (token("cam-7", "view", expires_in=-60), 401),
            (token("cam-7", "view", key="forged-secret-forged-secret-forged!"), 401),
            (token("cam-9", "view"), 403),
            (token("cam-7", "publish"), 403),  # a publish token does not watch
        ]:
            reply = await post(http, view, watcher, credential)
            assert reply.status == status, (credential, reply)
            assert not r.relay.streams["cam-7"].viewers and len(r.relay.sessions) == 1
        # A stream nobody publishes: still refused first, so a stranger cannot probe which streams are live.
        assert (await post(http, r.url("whep", "nobody"), watcher, None)).status == 401
        assert (await post(http, r.url("whep", "nobody"), watcher, token("nobody", "view"))).status == 404
        ok = await post(http, view, watcher, token("cam-7", "view", key=PRIVATE, algorithm="EdDSA"))
        assert ok.status == 201 and len(r.relay.streams["cam-7"].viewers) == 1, ok


async def test_a_signed_profile_applies_to_unlisted_streams_only(http):
    watcher = await make_offer(direction="recvonly")
    recorder = {"User-Agent": "Lavf/60.3.100"}
    async with running_relay(SIGNED) as r:
        kid = await post(http, r.url("whip", "kid-1"), await make_offer(), token("kid-1", "publish", profile="child"))
        assert kid.status == 201, kid
        assert r.relay.profile("kid-1").name == "child" and r.summary("kid-1")["profile"] == "child"
        assert r.moderation.profiles("kid-1").name == "child"  # reports and match severities follow it too
        reports = f"{r.base}/api/streams/kid-1/reports"
        assert (await send(http, "POST", reports, '{"reason": "x"}', content_type="application/json")).status == 401
        report = await send(http, "POST", reports, '{"reason": "looks wrong"}', token=token("kid-1", "view"),
                            content_type="application/json")  # fmt: skip
        assert report.status == 202, report
        # The child profile refuses recording clients, even with a valid view token.
        refused = await post(http, r.url("whep", "kid-1"), watcher, token("kid-1", "view"), **recorder)
        assert refused.status == 403 and "recording" in refused.text, refused
        # A reconnect granted another profile would change the rules mid-stream: refused.
        other = await post(http, r.url("whip", "kid-1"), await make_offer(), token("kid-1", "publish"))
        assert other.status == 409 and r.relay.profile("kid-1").name == "child", other
        # A default stream lets the same client through that check (it is live, so 201).
        plain = await post(http, r.url("whip", "adult-1"), await make_offer(), token("adult-1", "publish"))
        assert plain.status == 201, plain
        watched = await post(http, r.url("whep", "adult-1"), watcher, token("adult-1", "view"), **recorder)
        assert watched.status == 201, watched
        # A profile the relay does not have is refused, not replaced by the default.
        unknown = await post(http, r.url("whip", "x-1"), await make_offer(), token("x-1", "publish", profile="vip"))
        assert unknown.status == 403 and "profile" in unknown.text and "x-1" not in r.relay.streams, unknown
        await r.relay.terminate("kid-1", "test")
        await r.wait_for(lambda relay: "kid-1" not in relay.streams)
        assert r.relay.profile("kid-1").name == "default"  # the grant ended with its stream


async def test_a_static_key_decides_alone_for_its_stream(http):
    offer = await make_offer()
    async with running_relay(SIGNED) as r:
        signed = await post(http, r.url("whip", "studio"), offer, token("studio", "publish", profile="child"))
        assert signed.status == 403 and "stream key" in signed.text and not r.relay.sessions, signed
        keyed = await post(http, r.url("whip", "studio"), offer, STUDIO_KEY)
        assert keyed.status == 201 and r.relay.profile("studio").name == "default", keyed


# ------------------------------------------------------------------ the auth hook


class Hook:
    """The platform's hook on loopback: records what it is asked, answers ``reply`` (or hangs, or fails)."""

    def __init__(self) -> None:
        self.asked: list[dict[str, Any]] = []
        self.reply: Any = {"allow": True}
        self.status = 200
        self.hang = False
        self.released = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        self.asked.append(await request.json())
        if self.hang:
            await self.released.wait()
        return web.json_response(self.reply, status=self.status)


@contextlib.asynccontextmanager
async def hooked(cache_seconds: float = 30.0, timeout: float = 0.5) -> AsyncIterator[tuple[Any, Hook]]:
    hook = Hook()
    app = web.Application()
    app.router.add_post("/auth", hook.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/auth"
    settings = RelaySettings(
        hook=HookSettings(url, timeout_seconds=timeout, cache_seconds=cache_seconds), ice=ICE, stream=FAST_END
    )
    try:
        async with running_relay(settings) as r:
            yield r, hook
    finally:
        hook.released.set()
        await runner.cleanup()


async def test_the_hook_allows_with_a_profile_and_is_asked_what_was_presented(http):
    async with hooked() as (r, hook):
        hook.reply = {"allow": True, "profile": "child"}
        async with publishing(r, CLIP, "cam-h", "platform-opaque-token"):
            assert hook.asked == [
                {"stream": "cam-h", "role": "publish", "token": "platform-opaque-token", "remote": "127.0.0.1"}
            ]
            assert r.relay.profile("cam-h").name == "child"
            hook.reply = {"allow": True}
            assert await frames_watched(r.url("whep", "cam-h"), token="viewer-opaque") >= 3
            assert hook.asked[-1]["role"] == "view" and hook.asked[-1]["token"] == "viewer-opaque"


@pytest.mark.parametrize(
    ("trouble", "status"),
    [("deny", 403), ("500", 403), ("not json", 403), ("hangs", 403), ("no token", 401)],
)
async def test_the_hook_fails_closed(http, trouble, status):
    offer = await make_offer()
    async with hooked() as (r, hook):
        credential: str | None = "some-token"
        if trouble == "deny":
            hook.reply = {"allow": False}
        elif trouble == "500":
            hook.status, hook.reply = 500, {"allow": True}  # an allowing body on an error status is no answer
        elif trouble == "not json":
            hook.reply = ["allow"]
        elif trouble == "hangs":
            hook.hang = True  # past timeout_seconds
        else:
            credential, hook.reply = None, {"allow": False}
        reply = await post(http, r.url("whip", "cam-h"), offer, credential)
        assert reply.status == status, (trouble, reply)
        assert len(hook.asked) == 1 and not r.relay.sessions and not r.relay.streams


async def test_a_hook_that_is_down_refuses(http):
    settings = RelaySettings(hook=HookSettings(f"http://127.0.0.1:{unused_port()}/auth"), ice=ICE, stream=FAST_END)
    async with running_relay(settings) as r:
        reply = await post(http, r.url("whip", "cam-h"), await make_offer(), "some-token")
        assert reply.status == 403 and "did not answer" in reply.text and "some-token" not in reply.text, reply
        watch = await post(http, r.url("whep", "cam-h"), await make_offer(direction="recvonly"), "v")
        assert watch.status == 403 and not r.relay.sessions and not r.relay.streams


async def test_hook_answers_are_cached_briefly_failures_are_not(http):
    offer = await make_offer()
    async with hooked(cache_seconds=0.5) as (r, hook):
        hook.reply = {"allow": False}
        for _ in range(3):
            assert (await post(http, r.url("whip", "cam-c"), offer, "tok")).status == 403
        assert len(hook.asked) == 1  # the deny was cached
        hook.reply = {"allow": True}
        assert (await post(http, r.url("whip", "cam-c"), offer, "other-tok")).status == 201  # another token: asked
        assert len(hook.asked) == 2
        await asyncio.sleep(0.6)  # past cache_seconds: asked again, and now allowed
        assert (await post(http, r.url("whip", "cam-c"), offer, "tok")).status == 201
        assert len(hook.asked) == 3
        hook.status = 503
        assert (await post(http, r.url("whep", "cam-c"), await make_offer(direction="recvonly"), "v")).status == 403
        hook.status = 200
        assert (await post(http, r.url("whep", "cam-c"), await make_offer(direction="recvonly"), "v")).status == 201
        assert len(hook.asked) == 5  # the 503 was not cached


# ------------------------------------------------------------------ configuration


def test_config_reads_auth_tables(tmp_path):
    (tmp_path / "ed.pem").write_text(PUBLIC_PEM)
    config = config_from(
        tmp_path,
        """
        [auth.jwt]
        secret_env = "JWT_SECRET"
        public_key = "ed.pem"
        issuer = "https://platform.test"
        leeway_seconds = 30
        [auth.hook]
        url = "http://127.0.0.1:9/auth"
        cache_seconds = 5
        """,
        env={"JWT_SECRET": SECRET},
    )
    relay = config.relay
    assert relay.jwt is not None and relay.jwt.secret == SECRET and relay.jwt.public_key == PUBLIC_PEM
    assert relay.jwt.leeway_seconds == 30.0 and relay.jwt.audience is None
    assert relay.hook == HookSettings("http://127.0.0.1:9/auth", cache_seconds=5.0)
    assert not relay.dev_mode and SECRET not in repr(relay)


def test_the_config_docstrings_auth_example_loads(tmp_path):
    """The [auth] tables livesafe.config documents are the ones it accepts."""
    doc = livesafe.config.__doc__ or ""
    example = textwrap.dedent(doc[doc.index("    [auth.jwt]") : doc.index("    [moderation]")])
    (tmp_path / "jwt-ed25519.pem").write_text(PUBLIC_PEM)
    relay = config_from(tmp_path, example, env={"LIVESAFE_JWT_SECRET": SECRET}).relay
    assert relay.jwt == JwtSettings(SECRET, PUBLIC_PEM, "https://platform.example", "livesafe", 30.0)
    assert relay.hook == HookSettings("http://10.0.0.3/livesafe-auth", 2.0, 10.0)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("[auth.jwt]\nissuer = 'x'", "give secret_env"),
        ("[auth.jwt]\nsecret = 'short'", "at least 32 bytes"),
        ("[auth.jwt]\nsecret_env = 'UNSET'", "'UNSET' is not set"),
        ("[auth.jwt]\npublic_key = 'missing.pem'", "cannot read 'missing.pem'"),
        ("[auth.jwt]\npublic_key = '-----BEGIN PUBLIC KEY-----\\nnope\\n-----END PUBLIC KEY-----'", "not a public key"),
        ("[auth.jwt]\nsecret = '" + SECRET + "'\nalgorithm = 'RS256'", "algorithm"),
        ("[auth.hook]\ntimeout_seconds = 1", "auth.hook.url: required"),
        ("[auth.hook]\nurl = 'ftp://x'", "http(s) URL"),
        ("[auth.hook]\nurl = 'http://x'\ntimeout_seconds = 0", "timeout_seconds"),
        ("[auth.other]\nx = 1", "auth"),
    ],
)
def test_config_refuses_bad_auth_tables(tmp_path, text, says):
    assert says in config_error(tmp_path, text)

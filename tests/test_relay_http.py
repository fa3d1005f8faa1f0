"""The relay's HTTP face, request by request: WHIP/WHEP authorisation, sessions and
their DELETE/PATCH, refusal of bad input (each with a reason), CORS, the stream list,
health and pages -- and that no refusal leaves anything behind or breaks a real stream.

Offers come from real aiortc peer connections that are closed straight away, so no
media flows unless a test publishes a file."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from typing import Any

import aiohttp
import pytest
from harness import FAST_END, ICE, SAMPLES, Reply, make_offer, publishing, running_relay, send

from livesafe.clients import ClientError, publish, watch
from livesafe.relay.settings import RelaySettings, StreamAccess

SDP = "application/sdp"
CLIP = SAMPLES / "benign_mix.mp4"
STUDIO_KEY = "studio-key-5f1c9e"
OTHER_KEY = "other-key-77a0d2"
SHOW_KEY = "show-key-0b3e41"
SHOW_VIEW = "show-viewer-token-9d8c"
KEYED = RelaySettings(
    streams={
        "studio": StreamAccess(key=STUDIO_KEY),
        "other": StreamAccess(key=OTHER_KEY),
        "show": StreamAccess(key=SHOW_KEY, viewer_token=SHOW_VIEW),
    },
    ice=ICE,
    stream=FAST_END,
)


# ------------------------------------------------------------------ helpers


@pytest.fixture
async def offer() -> str:
    return await make_offer()


async def request(http: aiohttp.ClientSession, method: str, url: str, data: Any = None, *, token: str | None = None,
                  content_type: str | None = SDP, headers: dict | None = None) -> Reply:  # fmt: skip
    """``send``, the body labelled SDP unless told otherwise: what WHIP and WHEP take."""
    return await send(http, method, url, data, token=token, content_type=content_type, headers=headers)


async def frames_watched(url: str, token: str | None = None, want: int = 3, timeout: float = 8.0) -> int:
    """Watch over WHEP until ``want`` video frames have arrived (or ``timeout``); how many did."""
    got = 0
    enough = asyncio.Event()

    def on_frame(frame, t: float) -> None:
        nonlocal got
        got += 1
        if got >= want:
            enough.set()

    viewer = asyncio.ensure_future(watch(url, token=token, duration=timeout, ice=ICE, on_frame=on_frame))
    waiter = asyncio.ensure_future(enough.wait())
    await asyncio.wait({viewer, waiter}, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    if not viewer.done():
        viewer.cancel()  # watch() hangs up in its finally
    with contextlib.suppress(asyncio.CancelledError):
        await viewer
    return got


def candidate_addresses(sdp: str) -> set[str]:
    return {line.split()[4] for line in sdp.splitlines() if line.startswith("a=candidate:")}


def without_lines(sdp: str, *prefixes: str) -> str:
    return "".join(line for line in sdp.splitlines(keepends=True) if not line.startswith(prefixes))


def only_codec(sdp: str, name: str) -> str:
    """``sdp`` with its video section offering nothing but a made-up codec."""
    out = []
    for line in sdp.splitlines(keepends=True):
        if line.startswith("m=video "):
            out.append(" ".join(line.split()[:3]) + " 96\r\n")
            out.append(f"a=rtpmap:96 {name}/90000\r\n")
        elif not line.startswith(("a=rtpmap:", "a=fmtp:", "a=rtcp-fb:", "a=ssrc-group:")):
            out.append(line)
    return "".join(out)


def assert_cors(reply: Reply, origin: str = "*") -> None:
    assert reply.headers.get("Access-Control-Allow-Origin") == origin, reply.headers
    exposed = {h.strip().lower() for h in reply.headers.get("Access-Control-Expose-Headers", "").split(",")}
    assert {"location", "etag", "link"} <= exposed, reply.headers


def assert_no_leftovers(r) -> None:
    assert r.relay.sessions == {}, r.relay.sessions
    assert r.relay.streams == {}, list(r.relay.streams)


# ------------------------------------------------------------------- auth


async def test_dev_mode_accepts_a_publisher_without_a_token(http, offer):
    async with running_relay() as r:
        assert r.relay.settings.dev_mode
        reply = await request(http, "POST", r.url("whip", "anything"), offer)
        assert reply.status == 201, reply
        (session,) = r.relay.sessions.values()
        assert (session.kind, session.stream_id) == ("whip", "anything") and "anything" in r.relay.streams


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer"}, {"Authorization": "Bearer    "}, {"Authorization": f"Basic {STUDIO_KEY}"},
     {"Authorization": STUDIO_KEY}],
    ids=["none", "empty-bearer", "blank-bearer", "basic", "no-scheme"],
)  # fmt: skip
async def test_publishing_without_a_bearer_token_is_401_with_www_authenticate(http, offer, headers):
    async with running_relay(KEYED) as r:
        reply = await request(http, "POST", r.url("whip", "studio"), offer, headers=headers)
        assert reply.status == 401, reply
        assert reply.headers["WWW-Authenticate"].startswith("Bearer"), reply.headers
        assert "Bearer" in reply.text
        assert_cors(reply)
        assert_no_leftovers(r)


@pytest.mark.parametrize(
    "stream, token",
    [
        ("studio", "wrong-key"),
        ("studio", STUDIO_KEY.upper()),
        ("studio", STUDIO_KEY[:-1]),
        ("studio", OTHER_KEY),  # another stream's key
        ("studio", SHOW_VIEW),  # a viewer token is no stream key
        ("unconfigured", STUDIO_KEY),  # no stream of that name is configured
    ],
)
async def test_a_wrong_stream_key_is_403(http, offer, stream, token):
    async with running_relay(KEYED) as r:
        reply = await request(http, "POST", r.url("whip", stream), offer, token=token)
        assert reply.status == 403, reply
        assert "stream key" in reply.text and token not in reply.text
        assert "WWW-Authenticate" not in reply.headers
        assert_no_leftovers(r)


async def test_the_right_key_gets_201_an_answer_and_a_session_that_only_it_may_delete(http, offer):
    async with running_relay(KEYED) as r:
        reply = await request(http, "POST", r.url("whip", "studio"), offer, token=STUDIO_KEY)
        assert reply.status == 201, reply
        assert reply.headers["Content-Type"].split(";")[0] == SDP
        location = reply.headers["Location"]
        match = re.fullmatch(r"/whip/studio/([A-Za-z0-9_-]{16,})", location)
        assert match, location
        session_id = match.group(1)
        assert reply.headers["ETag"] == f'"{session_id}"'
        assert reply.text.startswith("v=0\r\n") and "a=fingerprint:" in reply.text and "a=ice-ufrag:" in reply.text
        assert candidate_addresses(reply.text) == {"127.0.0.1"}
        assert "Link" not in reply.headers  # no ICE servers configured
        assert_cors(reply)
        session = r.relay.sessions[session_id]
        assert r.relay.streams["studio"].publisher is session
        assert STUDIO_KEY not in repr(session) and STUDIO_KEY not in repr(r.relay.sessions)

        resource = r.base + location
        for token in (None, "wrong-key", OTHER_KEY):
            denied = await request(http, "DELETE", resource, token=token)
            assert denied.status == 401, (token, denied)
            assert denied.headers["WWW-Authenticate"].startswith("Bearer")
        # The same session id under the wrong kind or stream is not this session.
        for other in (f"/whep/studio/{session_id}", f"/whip/other/{session_id}"):
            assert (await request(http, "DELETE", r.base + other, token=STUDIO_KEY)).status == 404
        assert session_id in r.relay.sessions

        deleted = await request(http, "DELETE", resource, token=STUDIO_KEY)
        assert deleted.status == 200, deleted
        assert_cors(deleted)
        assert session_id not in r.relay.sessions and r.relay.streams["studio"].publisher is None
        again = await request(http, "DELETE", resource, token=STUDIO_KEY)
        assert again.status == 404 and "no such session" in again.text


async def test_viewer_token_is_checked_before_whether_the_stream_is_live(http, offer):
    async with running_relay(KEYED) as r:
        view = r.url("whep", "show")
        watcher_offer = await make_offer(direction="recvonly")
        # Not live yet: auth comes first (so a stranger cannot probe which streams are live)...
        missing = await request(http, "POST", view, watcher_offer)
        assert missing.status == 401 and missing.headers["WWW-Authenticate"].startswith("Bearer"), missing
        for token in ("wrong", SHOW_KEY, SHOW_VIEW.upper()):
            wrong = await request(http, "POST", view, watcher_offer, token=token)
            assert wrong.status == 403 and "viewer token" in wrong.text, (token, wrong)
        # ...then liveness.
        not_live = await request(http, "POST", view, watcher_offer, token=SHOW_VIEW)
        assert not_live.status == 404 and "no live stream named 'show'" in not_live.text, not_live
        # Streams without a viewer token are open to anyone.
        assert (await request(http, "POST", r.url("whep", "studio"), watcher_offer)).status == 404

        published = await request(http, "POST", r.url("whip", "show"), offer, token=SHOW_KEY)
        assert published.status == 201, published
        assert (await request(http, "POST", view, watcher_offer)).status == 401
        assert (await request(http, "POST", view, watcher_offer, token="wrong")).status == 403
        assert len(r.relay.sessions) == 1 and not r.relay.streams["show"].viewers
        watching = await request(http, "POST", view, watcher_offer, token=SHOW_VIEW)
        assert watching.status == 201, watching
        assert re.fullmatch(r"/whep/show/[A-Za-z0-9_-]+", watching.headers["Location"])
        assert candidate_addresses(watching.text) == {"127.0.0.1"}
        assert len(r.relay.streams["show"].viewers) == 1

        resource = r.base + watching.headers["Location"]
        assert (await request(http, "DELETE", resource)).status == 401
        assert (await request(http, "DELETE", resource, token=SHOW_KEY)).status == 401
        assert (await request(http, "DELETE", resource, token=SHOW_VIEW)).status == 200
        assert not r.relay.streams["show"].viewers and len(r.relay.sessions) == 1


async def test_a_global_viewer_token_guards_streams_without_their_own(http, offer):
    settings = RelaySettings(
        streams={"show": StreamAccess(viewer_token=SHOW_VIEW)}, viewer_token="global-view", ice=ICE
    )
    async with running_relay(settings) as r:
        assert (await request(http, "POST", r.url("whip", "free"), offer)).status == 201  # dev mode
        watcher_offer = await make_offer(direction="recvonly")
        assert (await request(http, "POST", r.url("whep", "free"), watcher_offer)).status == 401
        assert (await request(http, "POST", r.url("whep", "free"), watcher_offer, token=SHOW_VIEW)).status == 403
        assert (await request(http, "POST", r.url("whep", "free"), watcher_offer, token="global-view")).status == 201
        # "show" has its own token, which replaces the global one.
        assert (await request(http, "POST", r.url("whep", "show"), watcher_offer, token="global-view")).status == 403


# -------------------------------------------------------------- bad input


def _no_media(sdp: str) -> str:
    return sdp[: sdp.index("m=")]


BAD_OFFERS = {
    "garbage": (lambda o: "hello, relay", "must start with v=0"),
    "empty": (lambda o: "", "must start with v=0"),
    "version-only": (lambda o: "v=0\r\n", "no audio or video media section"),
    "no-media": (_no_media, "no audio or video media section"),
    "datachannel-only": (
        lambda o: _no_media(o) + "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\n",
        "no audio or video media section",
    ),
    "no-ice-ufrag": (lambda o: without_lines(o, "a=ice-ufrag:"), "no ICE credentials"),
    "no-ice-pwd": (lambda o: without_lines(o, "a=ice-pwd:"), "no ICE credentials"),
    "no-fingerprint": (lambda o: without_lines(o, "a=fingerprint:"), "no DTLS fingerprint"),
    "truncated": (lambda o: o[: len(o) // 3], "malformed SDP offer"),
    "unknown-codec-only": (lambda o: only_codec(o, "X-NOPE"), "cannot negotiate this offer"),
}


@pytest.mark.parametrize("kind", ["whip", "whep"])
@pytest.mark.parametrize("name", list(BAD_OFFERS))
async def test_bad_offers_are_400_with_a_reason(http, offer, name, kind):
    make, reason = BAD_OFFERS[name]
    async with running_relay() as r:
        if kind == "whep":  # a viewer only gets as far as the offer on a live stream
            assert (await request(http, "POST", r.url("whip", "s"), offer)).status == 201
            base = await make_offer(audio=True, direction="recvonly")
        else:
            base = offer
        before = dict(r.relay.sessions)
        reply = await request(http, "POST", r.url(kind, "s"), make(base))
        assert reply.status == 400, reply
        assert reason in reply.text, reply
        assert_cors(reply)
        assert r.relay.sessions == before


async def test_non_utf8_offer_is_400(http, offer):
    async with running_relay() as r:
        for body in (b"v=0\r\n\xff\xfe\xfd", offer.encode()[:-20] + b"\xc3\x28\r\n"):
            reply = await request(http, "POST", r.url("whip", "s"), body)
            assert reply.status == 400 and "not UTF-8" in reply.text, reply
        assert_no_leftovers(r)


def _direction(sdp: str, kind: str, direction: str) -> str:
    """``sdp`` with the direction of its ``kind`` section(s) set to ``direction``."""
    out, current = [], None
    for line in sdp.splitlines(keepends=True):
        if line.startswith("m="):
            current = line[2:].split()[0]
        if current == kind and line.rstrip() in ("a=sendonly", "a=recvonly", "a=sendrecv", "a=inactive"):
            line = f"a={direction}\r\n"
        out.append(line)
    return "".join(out)


@pytest.mark.parametrize(
    "case",
    ["audio-only", "video-recvonly", "video-inactive"],
)
async def test_a_whip_offer_must_send_video(http, case):
    offers = {
        "audio-only": lambda: make_offer(video=False, audio=True),
        "video-recvonly": lambda: make_offer(audio=True, direction="recvonly"),
        "video-inactive": lambda: make_offer(),
    }
    body = await offers[case]()
    if case == "video-inactive":
        body = _direction(body, "video", "inactive")
        assert "a=inactive" in body
    async with running_relay() as r:
        reply = await request(http, "POST", r.url("whip", "s"), body)
        assert reply.status == 400 and "no video section that sends" in reply.text, reply
        assert_no_leftovers(r)


@pytest.mark.parametrize("case", ["audio-only", "video-sendonly", "video-inactive"])
async def test_a_whep_offer_must_receive_video(http, offer, case):
    if case == "audio-only":
        body = await make_offer(video=False, audio=True, direction="recvonly")
    elif case == "video-sendonly":
        body = offer  # a publisher's offer sent to the viewer endpoint
    else:
        body = _direction(await make_offer(direction="recvonly"), "video", "inactive")
    async with running_relay() as r:
        assert (await request(http, "POST", r.url("whip", "s"), offer)).status == 201
        reply = await request(http, "POST", r.url("whep", "s"), body)
        assert reply.status == 400 and "no video section that receives" in reply.text, reply
        assert len(r.relay.sessions) == 1 and not r.relay.streams["s"].viewers


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/json", "application/sdpx", "application/octet-stream"]
)
async def test_wrong_content_type_is_415(http, offer, content_type):
    async with running_relay() as r:
        for kind in ("whip", "whep"):
            if kind == "whep":
                assert (await request(http, "POST", r.url("whip", "live"), offer)).status == 201
            reply = await request(http, "POST", r.url(kind, "live"), offer, content_type=content_type)
            assert reply.status == 415 and SDP in reply.text, reply
            assert_cors(reply)
        assert len(r.relay.sessions) == 1


async def test_missing_content_type_is_415(http, offer):
    async with running_relay() as r:
        async with http.post(r.url("whip", "s"), data=offer.encode(), skip_auto_headers=["Content-Type"]) as response:
            assert response.status == 415, await response.text()
        assert_no_leftovers(r)


async def test_content_type_parameters_are_fine(http, offer):
    async with running_relay() as r:
        reply = await request(http, "POST", r.url("whip", "s"), offer, content_type="application/sdp; charset=utf-8")
        assert reply.status == 201, reply


async def test_an_unknown_charset_parameter_is_ignored_sdp_is_utf8(http, offer):
    async with running_relay() as r:
        reply = await request(
            http, "POST", r.url("whip", "s"), offer, content_type="application/sdp; charset=no-such-charset"
        )
        assert reply.status == 201, reply
        assert_cors(reply)


async def _chunks(body: bytes, size: int = 1000):
    for i in range(0, len(body), size):
        yield body[i : i + size]


async def test_a_body_over_max_body_bytes_is_413_with_or_without_content_length(http, offer):
    settings = RelaySettings(max_body_bytes=4096, ice=ICE, stream=FAST_END)
    async with running_relay(settings) as r:
        limit = settings.max_body_bytes
        # Padding the offer with a harmless attribute to exactly the limit is fine...
        pad = limit - len(offer.encode()) - len("a=x-pad:\r\n")
        assert pad > 0
        exact = offer + "a=x-pad:" + "p" * pad + "\r\n"
        assert len(exact.encode()) == limit
        accepted = await request(http, "POST", r.url("whip", "exact"), exact)
        assert accepted.status == 201, accepted
        chunked = await request(http, "POST", r.url("whip", "exact-chunked"), _chunks(exact.encode()))
        assert chunked.status == 201, chunked
        # ...one byte more is not, whether the size is announced or only found out while reading.
        over = (exact + "p").encode()
        for body in (over, _chunks(over), b"v=0\r\n" + b"x" * (10 * limit), _chunks(b"v=0\r\n" + b"x" * (10 * limit))):
            reply = await request(http, "POST", r.url("whip", "s"), body)
            assert reply.status == 413, reply
            assert str(limit) in reply.text, reply
            assert_cors(reply)
        watcher = await make_offer(direction="recvonly")
        reply = await request(http, "POST", r.url("whep", "exact"), _chunks((watcher + "a=x:" + "p" * limit).encode()))
        assert reply.status == 413, reply
        assert set(r.relay.streams) == {"exact", "exact-chunked"} and len(r.relay.sessions) == 2


async def test_an_announced_oversize_body_is_refused_before_it_is_sent():
    """Content-Length over the limit: 413 straight away, without waiting for (or reading) the body."""
    async with running_relay() as r:
        host, port = r.base.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            writer.write(
                b"POST /whip/s HTTP/1.1\r\nHost: relay\r\nContent-Type: application/sdp\r\n"
                b"Content-Length: 100000000\r\n\r\nv=0\r\n"
            )
            await writer.drain()
            status = await asyncio.wait_for(reader.readline(), 3)
            assert status.startswith(b"HTTP/1.1 413"), status
        finally:
            writer.close()
            await writer.wait_closed()
        assert_no_leftovers(r)


@pytest.mark.parametrize("name", ["a%20b", "x" * 65, "a.b", "%C3%A9", "a%00b", "-" * 65, "a%0Ab"])
async def test_bad_stream_names_are_400(http, offer, name):
    async with running_relay(KEYED) as r:
        for method, kind in (("POST", "whip"), ("POST", "whep"), ("GET", "watch")):
            reply = await request(http, method, f"{r.base}/{kind}/{name}", offer if method == "POST" else None,
                                  token=STUDIO_KEY)  # fmt: skip
            assert reply.status == 400 and "stream name" in reply.text, (kind, name, reply)
            assert_cors(reply)
        assert_no_leftovers(r)
        assert (await request(http, "GET", f"{r.base}/healthz")).status == 200


@pytest.mark.parametrize("name", ["a%2Fb", "%2E%2E", "a/b/c", ""])
async def test_names_the_router_cannot_match_are_4xx(http, offer, name):
    async with running_relay() as r:
        for kind in ("whip", "whep"):
            reply = await request(http, "POST", f"{r.base}/{kind}/{name}", offer)
            assert 400 <= reply.status < 500, (kind, name, reply)
        assert_no_leftovers(r)


async def test_whep_to_an_unknown_stream_is_404(http):
    async with running_relay() as r:
        reply = await request(http, "POST", r.url("whep", "nobody"), await make_offer(direction="recvonly"))
        assert reply.status == 404 and "no live stream named 'nobody'" in reply.text, reply
        assert_cors(reply)
        assert_no_leftovers(r)


async def test_patch_is_405_with_allow_and_unknown_sessions_are_404(http, offer):
    async with running_relay(KEYED) as r:
        created = await request(http, "POST", r.url("whip", "studio"), offer, token=STUDIO_KEY)
        resource = r.base + created.headers["Location"]
        patch = await request(http, "PATCH", resource, "a=candidate:1 1 udp 1 127.0.0.1 9 typ host\r\n",
                              token=STUDIO_KEY, content_type="application/trickle-ice-sdpfrag")  # fmt: skip
        assert patch.status == 405, patch
        allowed = {m.strip() for m in patch.headers["Allow"].split(",")}
        assert "DELETE" in allowed and "PATCH" not in allowed
        assert "trickle ICE" in patch.text
        assert_cors(patch)
        # Someone else's PATCH learns nothing about the session.
        assert (
            await request(http, "PATCH", resource, "x", content_type="application/trickle-ice-sdpfrag")
        ).status == 401
        for kind in ("whip", "whep"):
            for method in ("DELETE", "PATCH"):
                reply = await request(http, method, f"{r.base}/{kind}/studio/no-such-session", token=STUDIO_KEY)
                assert reply.status == 404 and "no such session" in reply.text, (kind, method, reply)
                assert_cors(reply)
        assert len(r.relay.sessions) == 1


async def test_other_methods_and_paths(http):
    async with running_relay() as r:
        get = await request(http, "GET", r.url("whip", "s"))
        assert get.status == 405 and "POST" in get.headers["Allow"], get
        assert_cors(get)
        missing = await request(http, "GET", f"{r.base}/nope")
        assert missing.status == 404
        assert_cors(missing)
        assert (await request(http, "POST", f"{r.base}/whip", "v=0")).status in (404, 405)


# ------------------------------------------------- nothing else breaks


async def test_a_barrage_of_bad_requests_leaves_nothing_behind_and_real_streams_still_work(http, offer):
    async with running_relay() as r:
        whip = r.url("whip", "s")
        bad = [make(offer) for make, _ in BAD_OFFERS.values()]
        no_codec = only_codec(offer, "X-NOPE")  # passes the checks, fails in aiortc's negotiation
        requests = [request(http, "POST", whip, body) for body in bad]
        requests += [request(http, "POST", whip, "v=0\r\ngarbage " * (i + 1)) for i in range(20)]
        requests += [request(http, "POST", whip, no_codec) for _ in range(10)]  # gets as far as a peer connection
        requests += [
            request(http, "POST", whip, b"\xff" * 100),
            request(http, "POST", whip, offer, content_type="text/plain"),
        ]
        requests += [request(http, "POST", whip, _chunks(b"v=0\r\n" + b"x" * 100_000)) for _ in range(3)]
        requests += [request(http, "POST", f"{r.base}/whip/bad%20name", offer)]
        requests += [
            request(http, "POST", r.url("whep", "s"), await make_offer(direction="recvonly")) for _ in range(5)
        ]
        requests += [request(http, m, f"{whip}/nope") for m in ("DELETE", "PATCH") for _ in range(3)]
        replies = await asyncio.gather(*requests)
        assert all(400 <= reply.status < 500 for reply in replies), [x for x in replies if not 400 <= x.status < 500]

        health = await request(http, "GET", f"{r.base}/healthz")
        assert health.status == 200 and '"status": "ok"' in health.text
        assert_no_leftovers(r)

        async with publishing(r, CLIP, "s", duration=8):
            await r.wait_for(lambda relay: "s" in relay.streams and relay.streams["s"].counters.frames_in > 0)
            assert await frames_watched(r.url("whep", "s")) >= 3
            assert r.relay.streams["s"].counters.frames_in > 0
        await r.wait_for(lambda relay: not relay.sessions, timeout=5)


# ------------------------------------------------------------------- CORS


@pytest.mark.parametrize("kind", ["whip", "whep"])
async def test_preflight_on_the_endpoints(http, kind):
    async with running_relay(KEYED) as r:  # a preflight carries no credentials, even when keys are configured
        reply = await request(http, "OPTIONS", r.url(kind, "studio"), headers={
            "Origin": "https://player.example", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type"})  # fmt: skip
        assert reply.status == 204, reply
        methods = {m.strip() for m in reply.headers["Access-Control-Allow-Methods"].split(",")}
        assert "POST" in methods
        allowed = {h.strip().lower() for h in reply.headers["Access-Control-Allow-Headers"].split(",")}
        assert {"authorization", "content-type"} <= allowed
        assert reply.headers["Accept-Post"] == SDP
        assert_cors(reply)


async def test_preflight_on_a_session(http):
    async with running_relay() as r:
        reply = await request(http, "OPTIONS", f"{r.url('whip', 's')}/some-session")
        assert reply.status == 204, reply
        assert "DELETE" in reply.headers["Access-Control-Allow-Methods"]
        assert "authorization" in reply.headers["Access-Control-Allow-Headers"].lower()
        assert_cors(reply)


async def test_cors_origin_comes_from_settings_on_success_and_error(http, offer):
    origin = "https://player.example"
    async with running_relay(RelaySettings(cors_origin=origin, ice=ICE, stream=FAST_END)) as r:
        created = await request(http, "POST", r.url("whip", "s"), offer, headers={"Origin": origin})
        assert created.status == 201
        assert_cors(created, origin)
        for reply in (
            await request(http, "POST", r.url("whip", "s"), "nonsense", headers={"Origin": origin}),
            await request(http, "POST", r.url("whep", "other"), offer, headers={"Origin": origin}),
            await request(http, "OPTIONS", r.url("whep", "s"), headers={"Origin": origin}),
            await request(http, "GET", f"{r.base}/healthz"),
        ):
            assert_cors(reply, origin)


# ------------------------------------------- stream list, health, pages


async def test_api_streams_health_and_pages_follow_a_stream_from_live_to_ended(http):
    async with running_relay() as r:
        health = await http.get(f"{r.base}/healthz")
        assert health.status == 200 and health.content_type == "application/json"
        assert await health.json() == {"status": "ok", "streams": 0, "sessions": 0}
        assert await (await http.get(f"{r.base}/api/streams")).json() == []
        index = await request(http, "GET", f"{r.base}/")
        assert index.status == 200 and "none yet" in index.text

        async with publishing(r, CLIP, "cam-1", duration=8):
            await r.wait_for(lambda relay: "cam-1" in relay.streams and relay.streams["cam-1"].counters.frames_in > 5)
            response = await http.get(f"{r.base}/api/streams")
            assert response.status == 200 and response.content_type == "application/json"
            (live,) = await response.json()
            assert live["id"] == "cam-1" and live["state"] in ("live", "redacted"), live
            assert live["viewers"] == 0 and live["frames_in"] > 5 and live["ended_at"] is None
            assert live["frames_redacted"] >= 0 and live["frames_dropped"] >= 0
            assert live["frames_redacted"] + live["frames_dropped"] <= live["frames_in"]
            health = await (await http.get(f"{r.base}/healthz")).json()
            assert health == {"status": "ok", "streams": 1, "sessions": 1}
            index = await request(http, "GET", f"{r.base}/")
            assert 'href="/watch/cam-1"' in index.text and "none yet" not in index.text
            # A viewer is counted while it watches, and no longer once it has hung up.
            viewer = asyncio.ensure_future(frames_watched(r.url("whep", "cam-1")))
            await r.wait_for(lambda relay: relay.streams["cam-1"].viewers or viewer.done())
            (watched,) = await (await http.get(f"{r.base}/api/streams")).json()
            assert watched["viewers"] == 1, watched
            assert await viewer >= 3
            (after,) = await (await http.get(f"{r.base}/api/streams")).json()
            assert after["viewers"] == 0 and after["state"] in ("live", "redacted"), after

        # Hung up: once the grace period (1 s here) has passed the stream is over for good,
        # and still listed, as ended.
        for _ in range(50):
            health = await (await http.get(f"{r.base}/healthz")).json()
            if health["streams"] == 0:
                break
            await asyncio.sleep(0.1)
        assert health == {"status": "ok", "streams": 0, "sessions": 0}
        (ended,) = await (await http.get(f"{r.base}/api/streams")).json()
        assert ended["state"] == "ended" and ended["id"] == "cam-1" and ended["ended_at"] is not None
        assert ended["frames_in"] >= live["frames_in"] and ended["viewers"] == 0
        # An ended stream is not watchable.
        reply = await request(http, "POST", r.url("whep", "cam-1"), await make_offer(direction="recvonly"))
        assert reply.status == 404


async def test_player_page(http):
    async with running_relay() as r:
        page = await request(http, "GET", f"{r.base}/watch/studio")
        assert page.status == 200 and page.headers["Content-Type"].startswith("text/html")
        assert (
            "<html" in page.text.lower()
            and "postOffer(pc, `/whep/" in page.text
            and '<script src="/web/whip.js">' in page.text
        )
        assert page.headers.get("Cache-Control") == "no-store"
        script = await request(http, "GET", f"{r.base}/web/whip.js")
        assert script.status == 200 and "application/sdp" in script.text and "function postOffer" in script.text


# ---------------------------------------------------------------- secrets


async def test_stream_keys_never_reach_the_logs(http, offer, caplog):
    caplog.set_level(logging.DEBUG, logger="livesafe")
    caplog.set_level(logging.DEBUG, logger="aiohttp")
    wrong_guess = "wrong-guess-3c1f5a"
    async with running_relay(KEYED) as r:
        with pytest.raises(ClientError) as refused:
            await publish(CLIP, r.url("whip", "studio"), token=wrong_guess, duration=1, ice=ICE)
        assert "403" in str(refused.value) and wrong_guess not in str(refused.value)
        assert (await request(http, "POST", r.url("whip", "studio"), offer, token=OTHER_KEY)).status == 403
        assert (await request(http, "POST", r.url("whip", "show"), offer)).status == 401

        async with publishing(r, CLIP, "show", SHOW_KEY, duration=8):
            await r.wait_for(lambda relay: "show" in relay.streams and relay.streams["show"].counters.frames_in > 0)
            assert (await request(http, "POST", r.url("whep", "show"), offer, token="bad-view")).status == 403
            assert await frames_watched(r.url("whep", "show"), token=SHOW_VIEW, want=1) >= 1
            for session in r.relay.sessions.values():
                assert SHOW_KEY not in repr(session) and SHOW_VIEW not in repr(session)
            assert not any(s in repr(r.relay.settings) for s in (STUDIO_KEY, OTHER_KEY, SHOW_KEY, SHOW_VIEW))
    messages = [record.getMessage() for record in caplog.records]
    assert any("publisher session started" in m for m in messages), messages  # the log was captured
    for record, message in zip(caplog.records, messages, strict=True):
        text = f"{message} {record.args!r} {record.exc_text or ''}"
        for secret in (STUDIO_KEY, OTHER_KEY, SHOW_KEY, SHOW_VIEW, wrong_guess, "bad-view"):
            assert secret not in text, (secret, record.name, message)
    assert not any(s in caplog.text for s in (STUDIO_KEY, OTHER_KEY, SHOW_KEY, SHOW_VIEW, wrong_guess))

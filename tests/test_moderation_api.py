"""The moderation API's plumbing over real HTTP against the whole proxy: the live feed
(SSE and WebSocket, resuming without loss or repeats, bounded per-client memory, closed
on shutdown), the event history's filters, who may read and who may act, and the
refusal of malformed bodies with every problem named.  What actions *do* to a stream is
tested in test_moderation_actions.py; nothing here needs WebRTC, so events are recorded
straight into the service as the relay would record them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from harness import FAST_END, ICE, Reply, RunningRelay, running_relay, sample_lists, send, serving

from livesafe.events import Event
from livesafe.guard.stream_guard import GuardSettings
from livesafe.moderation import settings as settings_module
from livesafe.moderation.settings import ModerationSettings, Principal, WebhookEndpoint
from livesafe.proxy import build_proxy
from livesafe.relay.settings import RelaySettings, StreamAccess

FEED = "/api/events/stream"
OLGA = Principal("olga", "observer", "o" * 20)
MO = Principal("mo", "moderator", "m" * 20)
STUDIO_KEY = "studio-key-5f1c9e"
KEYED = RelaySettings(streams={"studio": StreamAccess(key=STUDIO_KEY)}, ice=ICE, stream=FAST_END)
WITH_TOKENS = ModerationSettings(database=":memory:", tokens=(OLGA, MO))
JSON = "application/json"


async def call(http: aiohttp.ClientSession, method: str, url: str, body: Any = None, *, token: str | None = None,
               raw: str | bytes | None = None, content_type: str = JSON,
               headers: dict | None = None) -> Reply:  # fmt: skip
    """One request; ``body`` is sent as JSON, ``raw`` as is (both with ``content_type``)."""
    data = json.dumps(body) if body is not None else raw
    return await send(http, method, url, data, token=token, content_type=content_type, headers=headers)


class Sse:
    """A Server-Sent Events reader on an open response (comments skipped, every wait bounded)."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response

    async def next(self, timeout: float = 10.0) -> dict[str, str]:
        return await asyncio.wait_for(self._next(), timeout)

    async def _next(self) -> dict[str, str]:
        fields: dict[str, str] = {}
        while True:
            line = await self.response.content.readline()
            if not line:
                raise EOFError(f"the feed ended (after {fields})")
            text = line.decode().rstrip("\r\n")
            if not text:
                if fields:
                    return fields
                continue
            if text.startswith(":"):
                continue
            name, _, value = text.partition(":")
            fields[name] = value.removeprefix(" ")

    async def events(self, n: int) -> list[dict[str, str]]:
        return [await self.next() for _ in range(n)]

    async def nothing_more(self, wait: float = 0.3) -> bool:
        """True if no event arrives within ``wait`` (the feed stays open)."""
        try:
            await self.next(wait)
        except TimeoutError:
            return True
        return False


def record(r: RunningRelay, n: int, stream: str = "s1", type_: str = "match.started", **data: Any) -> list[Event]:
    """``n`` events stored as the relay would store them (and the feed woken for each)."""
    severity = "warning" if type_ == "match.started" else "info"
    return [r.moderation.record(Event(type_, stream, severity, {"n": i, **data})) for i in range(n)]


def ids(events: list) -> list[str]:
    return [e["id"] if isinstance(e, dict) else e.id for e in events]


def as_sent(event: Event) -> dict[str, Any]:
    """What the feed says about ``event``: its dict, as JSON would carry it."""
    return json.loads(json.dumps(event.to_dict()))


# ------------------------------------------------------------------ the feed (SSE)


async def test_sse_delivers_new_events_live_in_order_with_their_ids(http: aiohttp.ClientSession) -> None:
    async with running_relay() as r:
        (before,) = record(r, 1, type_="stream.started")
        async with http.get(r.base + FEED) as response:
            assert response.status == 200 and response.content_type == "text/event-stream"
            assert response.headers["Cache-Control"] == "no-store"
            feed = Sse(response)
            sent = record(r, 3) + record(r, 1, "s2", "stream.ended")
            got = await feed.events(4)
            assert ids(got) == ids(sent)  # starts at the next event: `before` is not replayed
            assert [g["event"] for g in got] == ["match.started"] * 3 + ["stream.ended"]
            assert [json.loads(g["data"]) for g in got] == [as_sent(e) for e in sent]
            assert [json.loads(g["data"])["seq"] for g in got] == list(range(before.seq + 1, before.seq + 5))
            late = record(r, 2, "s3")  # and keeps going
            assert ids(await feed.events(2)) == ids(late)


@pytest.mark.parametrize("how", ["Last-Event-ID", "since"])
async def test_sse_resumes_after_an_event_id_without_loss_or_repeats(http: aiohttp.ClientSession, how: str) -> None:
    async with running_relay() as r:
        async with http.get(r.base + FEED) as response:
            feed = Sse(response)
            first = record(r, 3)
            seen = await feed.events(3)
        assert ids(seen) == ids(first)
        # The client kept only the first two (say the third was in flight when it dropped).
        missed = record(r, 2, "s2")
        if how == "Last-Event-ID":
            headers, url = {"Last-Event-ID": seen[1]["id"]}, r.base + FEED
        else:
            headers, url = {}, f"{r.base}{FEED}?since={seen[1]['id']}"
        async with http.get(url, headers=headers) as response:
            assert response.status == 200
            feed = Sse(response)
            assert ids(await feed.events(3)) == ids(first[2:] + missed)
            assert await feed.nothing_more()  # no repeats after catching up
            later = record(r, 1, "s3")
            assert ids(await feed.events(1)) == ids(later)


async def test_feed_resume_from_an_unknown_id_is_410_and_a_malformed_one_400(http: aiohttp.ClientSession) -> None:
    async with running_relay() as r:
        record(r, 2)
        unknown = "0123456789abcdef0123456789abcdef"
        for reply in (await call(http, "GET", r.base + FEED, headers={"Last-Event-ID": unknown}),
                      await call(http, "GET", f"{r.base}{FEED}?since={unknown}")):  # fmt: skip
            assert reply.status == 410, reply
            assert unknown in reply.text and "since=<time>" in reply.text  # why, and how to catch up
        reply = await call(http, "GET", f"{r.base}{FEED}?since=not-an-id!")
        assert reply.status == 400 and "since" in reply.text, reply
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await http.ws_connect(f"{r.base}{FEED}?since={unknown}")
        assert info.value.status == 410


async def test_feeds_are_limited_in_number(http: aiohttp.ClientSession) -> None:
    from livesafe.moderation.api import MAX_FEEDS

    async with running_relay() as r, contextlib.AsyncExitStack() as stack:
        connector = aiohttp.TCPConnector(limit=MAX_FEEDS + 5)
        many = await stack.enter_async_context(aiohttp.ClientSession(connector=connector))
        for _ in range(MAX_FEEDS):
            response = await stack.enter_async_context(many.get(r.base + FEED))
            assert response.status == 200
        reply = await call(many, "GET", r.base + FEED)
        assert reply.status == 503 and reply.headers["Retry-After"] and str(MAX_FEEDS) in reply.text, reply


async def test_clients_that_hang_up_free_their_feed_slots_before_the_next_keepalive() -> None:
    """Dashboards reconnect (a reload, a network blip, EventSource's retry): a quiet feed whose client
    left must not hold one of the MAX_FEEDS slots until its next keepalive write, 15 s on.

    DEPENDS ON THE FIX proposed in the report (livesafe/moderation/api.py: a quiet feed checks
    whether its client is still there); without it this fails after HEARTBEAT_SECONDS / 2."""
    from livesafe.moderation.api import HEARTBEAT_SECONDS, MAX_FEEDS

    opened: list[aiohttp.ClientResponse] = []
    async with (
        running_relay() as r,
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=2 * MAX_FEEDS)) as again,
    ):
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=MAX_FEEDS + 5)) as many:
            half = MAX_FEEDS // 2
            responses = [await many.get(r.base + FEED) for _ in range(half)]
            sockets = [await many.ws_connect(r.base + FEED) for _ in range(MAX_FEEDS - half)]
            assert all(response.status == 200 for response in responses)
            assert (await call(many, "GET", r.base + FEED)).status == 503  # all slots taken
            for response in responses:
                response.close()
            for ws in sockets:
                await ws.close()
        deadline = time.monotonic() + HEARTBEAT_SECONDS / 2
        admitted = 0
        while admitted < MAX_FEEDS and time.monotonic() < deadline:
            response = await again.get(r.base + FEED)  # kept open: each admitted one takes a slot again
            opened.append(response)
            admitted += response.status == 200
            if response.status != 200:
                await asyncio.sleep(0.2)
        for response in opened:
            response.close()
        assert admitted == MAX_FEEDS, "feeds of clients that left still hold their slots"


# ------------------------------------------------------------ the feed (WebSocket)


async def test_websocket_gets_the_same_events_as_json_as_sse(http: aiohttp.ClientSession) -> None:
    async with running_relay() as r:
        async with http.get(r.base + FEED) as response, http.ws_connect(r.base + FEED) as ws:
            sent = record(r, 3) + record(r, 1, "s2", "report.received")
            over_ws = [json.loads(await ws.receive_str(timeout=10)) for _ in range(4)]
            over_sse = [json.loads(e["data"]) for e in await Sse(response).events(4)]
            assert over_ws == over_sse == [as_sent(e) for e in sent]


async def test_websocket_resumes_with_since_without_loss_or_repeats(http: aiohttp.ClientSession) -> None:
    async with running_relay() as r:
        async with http.ws_connect(r.base + FEED) as ws:
            first = record(r, 3)
            seen = [json.loads(await ws.receive_str(timeout=10)) for _ in range(3)]
        assert ids(seen) == ids(first)
        missed = record(r, 2, "s2")
        async with http.ws_connect(f"{r.base}{FEED}?since={seen[1]['id']}") as ws:
            caught_up = [json.loads(await ws.receive_str(timeout=10)) for _ in range(3)]
            assert ids(caught_up) == ids(first[2:] + missed)
            with pytest.raises(asyncio.TimeoutError):
                await ws.receive_str(timeout=0.3)  # nothing repeated
            later = record(r, 1)
            assert json.loads(await ws.receive_str(timeout=10))["id"] == later[0].id


# ------------------------------------------------------- a slow reader, shutdown


def small_receive_buffer(addr_info: tuple) -> socket.socket:
    """A client socket whose kernel buffer holds little, so a client that stops reading stops the sender."""
    family, kind, proto, _, _ = addr_info
    sock = socket.socket(family=family, type=kind, proto=proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return sock


async def test_a_reader_that_stops_reading_costs_bounded_memory_and_then_gets_everything_in_order() -> None:
    """About 20 MB of events are recorded while the client reads nothing: the server's send buffer
    for it must stay small (events wait in the store, not in memory), and then all arrive in order."""
    count, padding = 5000, "x" * 4000
    proxy = build_proxy(
        RelaySettings(ice=ICE, stream=FAST_END),
        sample_lists(),
        GuardSettings(),
        ModerationSettings(database=":memory:"),
    )
    transports: list[asyncio.Transport] = []

    async def note_feed_transport(request: web.Request, response: web.StreamResponse) -> None:
        if request.path == FEED:
            transports.append(request.transport)

    proxy.app.on_response_prepare.append(note_feed_transport)
    connector = aiohttp.TCPConnector(socket_factory=small_receive_buffer)
    async with (
        serving(proxy.app) as base,
        aiohttp.ClientSession(connector=connector) as http,
        http.get(base + FEED) as response,
    ):
        feed = Sse(response)
        (transport,) = transports
        sent, largest = [], 0
        for i in range(count):
            sent.append(proxy.moderation.record(Event("guard.error", "s1", "warning", {"n": i, "pad": padding})))
            if i % 50 == 49:
                await asyncio.sleep(0)  # the feed runs meanwhile, as it would under a real relay
                largest = max(largest, transport.get_write_buffer_size())
        for _ in range(20):  # time for the server to push all it would push
            await asyncio.sleep(0.05)
            largest = max(largest, transport.get_write_buffer_size())
        total = count * len(padding)
        assert largest > 0, "the client did not fall behind: the test proves nothing"
        assert largest < total // 5, f"{largest} bytes buffered for one client that reads nothing"
        got = [await feed.next() for _ in range(count)]
        assert ids(got) == ids(sent)
        assert json.loads(got[-1]["data"])["n"] == count - 1


async def test_open_feeds_are_closed_promptly_when_the_proxy_shuts_down(http: aiohttp.ClientSession) -> None:
    """aiohttp waits up to 60 s for running handlers; a feed left open would hold shutdown that long.

    Both clients keep reading, as a dashboard does (a WebSocket client that reads nothing
    cannot answer the close handshake; aiohttp gives it 10 s)."""
    relay = running_relay()
    r = await relay.__aenter__()
    open_ = True
    sse_got: list[dict[str, str]] = []
    ws_got: list[dict[str, Any]] = []
    try:
        response = await http.get(r.base + FEED)
        ws = await http.ws_connect(r.base + FEED)
    except BaseException:
        await relay.__aexit__(None, None, None)
        raise

    async def read_sse() -> None:
        feed = Sse(response)
        with contextlib.suppress(EOFError, aiohttp.ClientPayloadError):
            while True:
                sse_got.append(await feed.next(timeout=60))

    async def read_ws() -> None:
        async for message in ws:  # ends when the server closes
            if message.type == aiohttp.WSMsgType.TEXT:
                ws_got.append(json.loads(message.data))

    readers = [asyncio.ensure_future(read_sse()), asyncio.ensure_future(read_ws())]
    try:
        sent = record(r, 1)
        deadline = time.monotonic() + 10
        while not (sse_got and ws_got) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert ids(sse_got) == ids(ws_got) == ids(sent)  # both feeds were live
        open_ = False
        await asyncio.wait_for(relay.__aexit__(None, None, None), timeout=20)
        done, _ = await asyncio.wait(readers, timeout=5)
        assert len(done) == 2, "a feed is still open after shutdown"
        assert ws.closed
    finally:
        for reader in readers:
            reader.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        response.close()
        await ws.close()
        if open_:
            await relay.__aexit__(None, None, None)


# ------------------------------------------------------------------ history


@pytest.fixture
async def history() -> AsyncIterator[tuple[RunningRelay, list[Event], int]]:
    """Five events 10 s apart an hour ago (whole seconds, so times compare exactly; well within retention)."""
    t0 = int(time.time()) - 3600
    async with running_relay() as r:
        plan = [("s1", "match.started"), ("s2", "stream.started"), ("s1", "match.cleared"), ("s1", "stream.ended"),
                ("s2", "report.received")]  # fmt: skip
        sent = [
            r.moderation.record(Event(type_, stream, "info", {"k": i}, at=t0 + 10 * i))
            for i, (stream, type_) in enumerate(plan)
        ]
        yield r, sent, t0


async def events_page(http: aiohttp.ClientSession, r: RunningRelay, query: str) -> dict[str, Any]:
    reply = await call(http, "GET", f"{r.base}/api/events?{query}")
    assert reply.status == 200, reply
    return reply.json()


async def test_history_lists_everything_in_order_with_the_last_id(http: aiohttp.ClientSession, history) -> None:
    r, sent, _ = history
    page = await events_page(http, r, "")
    assert page["events"] == [as_sent(e) for e in sent] and page["last_id"] == sent[-1].id


@pytest.mark.parametrize(
    "query, expected",
    [
        ("stream=s1", [0, 2, 3]),
        ("stream=s2", [1, 4]),
        ("stream=nobody", []),
        ("type=match.started&type=stream.ended", [0, 3]),
        ("type=match.started,stream.ended", [0, 3]),
        ("type=match.started,&type=report.received", [0, 4]),
        ("stream=s1&type=match.cleared,report.received", [2]),
        ("limit=2", [0, 1]),
        ("last=2", [3, 4]),
        ("last=2&stream=s1", [2, 3]),
        ("last=1000&type=stream.started", [1]),
    ],
)
async def test_history_filters(http: aiohttp.ClientSession, history, query: str, expected: list[int]) -> None:
    r, sent, _ = history
    page = await events_page(http, r, query)
    assert ids(page["events"]) == ids([sent[i] for i in expected])
    assert page["last_id"] == (sent[expected[-1]].id if expected else None)


async def test_history_filters_by_least_severity_as_the_dashboard_does(http: aiohttp.ClientSession) -> None:
    """``min_severity``: that severity and above, server-side, so a filtered history page is a full page."""
    async with running_relay() as r:
        plan = [("s1", "info"), ("s1", "warning"), ("s2", "high"), ("s2", "info"), ("s1", "high")]
        sent = [r.moderation.record(Event("match.started", stream, severity, {"k": i}))
                for i, (stream, severity) in enumerate(plan)]  # fmt: skip
        for query, expected in [
            ("min_severity=info", [0, 1, 2, 3, 4]),
            ("min_severity=warning", [1, 2, 4]),
            ("min_severity=high", [2, 4]),
            ("min_severity=warning&stream=s1", [1, 4]),
            ("min_severity=warning&last=2", [2, 4]),
            (f"min_severity=high&before={sent[4].id}&last=5", [2]),
        ]:
            assert ids((await events_page(http, r, query))["events"]) == ids([sent[i] for i in expected]), query
        reply = await call(http, "GET", f"{r.base}/api/events?min_severity=urgent")
        assert reply.status == 400 and reply.text.strip() == "min_severity: expected one of info, warning, high"


async def test_history_since_an_event_id(http: aiohttp.ClientSession, history) -> None:
    r, sent, _ = history
    assert ids((await events_page(http, r, f"since={sent[1].id}"))["events"]) == ids(sent[2:])
    assert ids((await events_page(http, r, f"since={sent[1].id}&stream=s1"))["events"]) == ids([sent[2], sent[3]])
    assert ids((await events_page(http, r, f"since={sent[2].id}&last=4"))["events"]) == ids(
        sent[3:]
    )  # last N, none before since
    assert (await events_page(http, r, f"since={sent[-1].id}"))["events"] == []


async def test_history_pages_back_before_an_event_id(http: aiohttp.ClientSession, history) -> None:
    """What the dashboard's "older events" does: the oldest id it shows is the cursor of the next page."""
    r, sent, _ = history
    assert ids((await events_page(http, r, f"before={sent[4].id}&last=2"))["events"]) == ids(sent[2:4])
    assert ids((await events_page(http, r, f"before={sent[2].id}&last=2"))["events"]) == ids(sent[0:2])
    assert (await events_page(http, r, f"before={sent[0].id}&last=2"))["events"] == []
    assert ids((await events_page(http, r, f"before={sent[4].id}&last=5&stream=s1"))["events"]) == ids(
        [sent[0], sent[2], sent[3]]
    )
    assert ids((await events_page(http, r, f"before={sent[3].id}&last=5&type=match.started"))["events"]) == ids(
        [sent[0]]
    )
    reply = await call(http, "GET", f"{r.base}/api/events?before=ffffffffffffffffffffffffffffffff&last=2")
    assert reply.status == 410, reply


IST = timezone(timedelta(hours=5, minutes=30))


@pytest.mark.parametrize("form", ["unix", "unix-fraction", "iso-z", "iso-utc-offset", "iso-other-offset"])
async def test_history_since_a_time(http: aiohttp.ClientSession, history, form: str) -> None:
    r, sent, t0 = history
    at = datetime.fromtimestamp(t0 + 20, UTC)  # the third event's time: included
    value = {
        "unix": str(t0 + 20),
        "unix-fraction": str(t0 + 19.5),
        "iso-z": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "iso-utc-offset": at.isoformat(),
        "iso-other-offset": at.astimezone(IST).isoformat(),
    }[form]
    async with http.get(r.base + "/api/events", params={"since": value}) as response:
        assert response.status == 200, await response.text()
        assert ids((await response.json())["events"]) == ids(sent[2:])


@pytest.mark.parametrize(
    "query, reason",
    [
        ("limit=0", "limit: expected 1..1000"),
        ("limit=1001", "limit: expected 1..1000"),
        ("limit=x", "limit: expected a whole number"),
        ("limit=", "limit: expected a whole number"),
        ("last=0", "last: expected 1..1000"),
        ("last=many", "last: expected a whole number"),
        ("since=yesterday!", "since: expected an event id, unix seconds or an ISO 8601 time"),
        ("before=x!&last=2", "before: expected an event id"),
        ("before=abc", "before: goes with last=N"),
    ],
)
async def test_history_refuses_bad_parameters_with_a_reason(
    http: aiohttp.ClientSession, history, query: str, reason: str
) -> None:
    r, _, _ = history
    reply = await call(http, "GET", f"{r.base}/api/events?{query}")
    assert reply.status == 400 and reason in reply.text, reply


async def test_history_since_an_unknown_id_is_410(http: aiohttp.ClientSession, history) -> None:
    r, _, _ = history
    reply = await call(http, "GET", f"{r.base}/api/events?since=ffffffffffffffffffffffffffffffff")
    assert reply.status == 410 and "unknown" in reply.text, reply


# --------------------------------------------------------------------- auth


def test_principal_compares_every_token_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[tuple[bytes, bytes]] = []
    real = settings_module.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(settings_module.hmac, "compare_digest", spy)
    settings = WITH_TOKENS
    for token, expected in ((OLGA.token, OLGA), (MO.token, MO), ("o" * 19, None), ("o" * 21, None), ("x" * 20, None)):
        compared.clear()
        assert settings.principal(token) == expected
        assert len(compared) == 2, "every configured token is compared, found or not"
    for empty in ("", None):
        assert settings.principal(empty) is None
    assert ModerationSettings(database=":memory:").principal("o" * 20) is None


def test_tokens_and_secrets_are_not_in_any_repr() -> None:
    hook = WebhookEndpoint("https://u:url-pass@hooks.example.com/x?k=query-secret", "hook-secret-value", name="h")
    settings = ModerationSettings(database=":memory:", tokens=(OLGA, MO), webhooks=(hook,))
    shown = repr(settings) + repr(OLGA) + str(MO) + repr(hook)
    assert "olga" in shown and "moderator" in shown
    for secret in (OLGA.token, MO.token, "hook-secret-value", "url-pass", "query-secret"):
        assert secret not in shown


@pytest.fixture
async def guarded() -> AsyncIterator[RunningRelay]:
    """Stream keys and tokens configured: nothing is open."""
    async with running_relay(settings=KEYED, moderation=WITH_TOKENS) as r:
        yield r


READS = ["/api/events", "/api/audit", "/api/webhooks", "/api/whoami"]


async def test_no_token_or_a_wrong_one_is_401_with_a_bearer_challenge(
    http: aiohttp.ClientSession, guarded: RunningRelay
) -> None:
    action = {"action": "confirm", "reason": "r"}
    for token in (None, "o" * 19, MO.token + "x", STUDIO_KEY):
        for path in READS:
            reply = await call(http, "GET", guarded.base + path, token=token)
            assert reply.status == 401 and reply.headers["WWW-Authenticate"].startswith("Bearer"), (path, token, reply)
            assert reply.text.strip()
        reply = await call(http, "POST", guarded.base + "/api/streams/studio/actions", action, token=token)
        assert reply.status == 401 and reply.headers["WWW-Authenticate"].startswith("Bearer"), reply
    reply = await call(http, "GET", guarded.base + FEED)
    assert reply.status == 401, reply
    reply = await call(http, "GET", guarded.base + "/api/events", headers={"Authorization": f"Basic {MO.token}"})
    assert reply.status == 401, reply  # only Bearer counts
    assert guarded.moderation.store.audit.read() == []


async def test_observer_reads_but_may_not_act(http: aiohttp.ClientSession, guarded: RunningRelay) -> None:
    (match,) = record(guarded, 1, "studio", signal="pdq", matched_hash="ab" * 32, list_name="samples", category="test")
    for path in READS:
        reply = await call(http, "GET", guarded.base + path, token=OLGA.token)
        assert reply.status == 200, (path, reply)
    assert (await call(http, "GET", guarded.base + "/api/whoami", token=OLGA.token)).json() == {
        "name": "olga", "role": "observer", "preview": False}  # fmt: skip
    assert ids((await call(http, "GET", guarded.base + "/api/events", token=OLGA.token)).json()["events"]) == [match.id]
    async with http.get(guarded.base + FEED, headers={"Authorization": f"Bearer {OLGA.token}"}) as response:
        assert response.status == 200
    for action in ("confirm", "resume", "terminate"):
        reply = await call(
            http,
            "POST",
            guarded.base + "/api/streams/studio/actions",
            {"action": action, "reason": "r"},
            token=OLGA.token,
        )
        assert reply.status == 403 and "observer" in reply.text and "moderator" in reply.text, reply
    reply = await call(http, "POST", guarded.base + "/api/streams/studio/preview", token=OLGA.token)
    assert reply.status == 403, reply
    assert guarded.moderation.store.audit.read() == []


async def test_moderator_may_act_and_is_named_in_the_audit_log(
    http: aiohttp.ClientSession, guarded: RunningRelay
) -> None:
    (match,) = record(guarded, 1, "studio", signal="pdq", matched_hash="ab" * 32, list_name="samples", category="test")
    assert (await call(http, "GET", guarded.base + "/api/whoami", token=MO.token)).json()["name"] == "mo"
    reply = await call(
        http,
        "POST",
        guarded.base + "/api/streams/studio/actions",
        {"action": "confirm", "reason": "it is"},
        token=MO.token,
    )
    assert reply.status == 200, reply
    audit = reply.json()["audit"]
    assert (audit["actor"], audit["role"], audit["action"], audit["event_id"]) == (
        "mo",
        "moderator",
        "confirm",
        match.id,
    )
    entries = (await call(http, "GET", guarded.base + "/api/audit", token=OLGA.token)).json()["entries"]
    assert [e["id"] for e in entries] == [audit["id"]]
    reply = await call(
        http, "POST", guarded.base + "/api/streams/studio/actions", {"action": "resume", "reason": "r"}, token=MO.token
    )
    assert reply.status == 404, reply  # past auth: refused for the stream's state, not the caller


async def test_stream_keys_without_tokens_refuse_everyone(http: aiohttp.ClientSession) -> None:
    async with running_relay(settings=KEYED) as r:
        for token in (None, STUDIO_KEY, "anything-at-all-1234", "-" * 16):
            for path in READS:
                reply = await call(http, "GET", r.base + path, token=token)
                assert reply.status == 401, (path, token, reply)
            reply = await call(
                http, "POST", r.base + "/api/streams/studio/actions", {"action": "confirm", "reason": "r"}, token=token
            )
            assert reply.status == 401, reply


async def test_dev_mode_without_keys_or_tokens_is_open(http: aiohttp.ClientSession) -> None:
    async with running_relay() as r:
        for path in READS:
            assert (await call(http, "GET", r.base + path)).status == 200, path
        assert (await call(http, "GET", r.base + "/api/whoami")).json() == {
            "name": "anonymous (dev mode)", "role": "moderator", "preview": False}  # fmt: skip
        assert (await call(http, "GET", r.base + "/api/webhooks")).json() == {"endpoints": [], "pending": 0}


async def test_tokens_configured_close_the_api_even_in_dev_mode(http: aiohttp.ClientSession) -> None:
    async with running_relay(moderation=WITH_TOKENS) as r:
        assert (await call(http, "GET", r.base + "/api/events")).status == 401
        assert (await call(http, "GET", r.base + "/api/whoami", token=MO.token)).json()["name"] == "mo"


async def test_tokens_never_reach_the_logs(
    http: aiohttp.ClientSession, guarded: RunningRelay, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    near_miss = MO.token[:-1] + "x"
    for token in (near_miss, OLGA.token, MO.token):
        await call(http, "GET", guarded.base + "/api/events", token=token)
        await call(
            http, "POST", guarded.base + "/api/streams/studio/actions", {"action": "resume", "reason": "r"}, token=token
        )
    await call(http, "POST", guarded.base + "/api/streams/studio/actions", raw="{not json", token=MO.token)
    assert caplog.records, "nothing was logged: the check below would prove nothing"
    for secret in (near_miss, OLGA.token, MO.token):
        assert secret not in caplog.text
        assert not any(secret in str(record.args) for record in caplog.records)


# --------------------------------------------------------------- bad bodies


@pytest.mark.parametrize(
    "raw, reasons",
    [
        ("{not json", ["body is not JSON"]),
        ("", ["body is not JSON"]),
        ('["resume", "why"]', ["expected a JSON object"]),
        ('"resume"', ["expected a JSON object"]),
        (
            '{"action": "ban", "reason": "r"}',
            ["action: expected one of redact, resume, keep, confirm, false_positive, terminate, got 'ban'"],
        ),
        ('{"reason": "r"}', ["action: expected one of"]),
        ('{"action": "resume"}', ["reason: required"]),
        ('{"action": "resume", "reason": "   "}', ["reason: required"]),
        ('{"action": "resume", "reason": 5}', ["reason: required"]),
        (json.dumps({"action": "resume", "reason": "r" * 2000}), ["reason: at most 1000 characters"]),
        ('{"action": "resume", "reason": "r", "why": "x", "by": "y"}', ["unknown field(s) ['by', 'why']"]),
        ('{"action": "resume", "reason": "r", "scope": "global"}', ["scope: applies to false_positive only"]),
        (
            '{"action": "false_positive", "reason": "r", "scope": "planet"}',
            ["scope: expected one of stream, global, got 'planet'"],
        ),
        ('{"action": "confirm", "reason": "r", "event_id": "../etc"}', ["event_id: expected an event id"]),
        ('{"action": "confirm", "reason": "r", "event_id": 7}', ["event_id: expected an event id"]),
        (json.dumps({"action": "confirm", "reason": "r", "event_id": "a" * 65}), ["event_id: expected an event id"]),
        (
            '{"action": "nuke", "scope": "global", "event_id": "x y", "extra": 1}',
            [
                "unknown field(s) ['extra']",
                "action: expected one of",
                "reason: required",
                "event_id: expected",
                "scope: applies to false_positive only",
            ],
        ),
    ],
)
async def test_malformed_action_bodies_are_400_with_every_reason(
    http: aiohttp.ClientSession, raw: str, reasons: list[str]
) -> None:
    async with running_relay() as r:
        reply = await call(http, "POST", r.base + "/api/streams/s1/actions", raw=raw)
        assert reply.status == 400, reply
        for reason in reasons:
            assert reason in reply.text, (reason, reply)
        if len(reasons) > 1:
            assert reply.text.count(";") == len(reasons) - 1 and "\n" not in reply.text.strip()
        assert r.moderation.store.audit.read() == [] and r.moderation.store.events.read() == []


async def test_action_body_content_type_and_size(http: aiohttp.ClientSession) -> None:
    async with running_relay(settings=RelaySettings(ice=ICE, stream=FAST_END, max_body_bytes=1024)) as r:
        url = r.base + "/api/streams/s1/actions"
        good = json.dumps({"action": "resume", "reason": "r"})
        for content_type in ("text/plain", "application/x-www-form-urlencoded", "application/jsonx"):
            reply = await call(http, "POST", url, raw=good, content_type=content_type)
            assert reply.status == 415 and "application/json" in reply.text, reply
        reply = await call(http, "POST", url, raw=json.dumps({"action": "resume", "reason": "r" * 900}))
        assert reply.status == 404, reply  # under the limit (a valid body, a stream not live)
        reply = await call(http, "POST", url, raw=json.dumps({"action": "resume", "reason": "r" * 1100}))
        assert reply.status == 413 and "1024" in reply.text, reply
        reply = await call(http, "POST", url, raw=good, content_type="application/json; charset=utf-8")
        assert reply.status == 404, reply  # a charset parameter is fine


@pytest.mark.parametrize("name", ["bad.name", "a%20b", "x" * 65, "%C3%A9t%C3%A9"])
async def test_invalid_stream_names_are_400(http: aiohttp.ClientSession, name: str) -> None:
    async with running_relay() as r:
        for path in ("actions", "reports", "preview"):
            reply = await call(http, "POST", f"{r.base}/api/streams/{name}/{path}", {"action": "resume", "reason": "r"})
            assert reply.status == 400 and "stream name" in reply.text, (path, reply)


@pytest.mark.parametrize(
    "raw, reasons",
    [
        ("{oops", ["body is not JSON"]),
        ('["spam"]', ["expected a JSON object"]),
        ("{}", ["reason: required"]),
        ('{"reason": "  "}', ["reason: required"]),
        ('{"reason": ["a"]}', ["reason: required"]),
        ('{"reason": "r", "category": ""}', ["category: expected a short string"]),
        (json.dumps({"reason": "r", "category": "c" * 65}), ["category: expected a short string"]),
        ('{"reason": "r", "category": 3}', ["category: expected a short string"]),
        ('{"reason": "r", "session": 12}', ["session: expected the viewer's WHEP session id"]),
        ('{"reason": "r", "email": "a@b"}', ["unknown field(s) ['email']"]),
        (
            '{"category": 1, "session": false, "who": 1}',
            ["unknown field(s) ['who']", "reason: required", "category: expected", "session: expected"],
        ),
    ],
)
async def test_malformed_report_bodies_are_400_with_every_reason(
    http: aiohttp.ClientSession, raw: str, reasons: list[str]
) -> None:
    async with running_relay() as r:
        reply = await call(http, "POST", r.base + "/api/streams/s1/reports", raw=raw)
        assert reply.status == 400, reply
        for reason in reasons:
            assert reason in reply.text, (reason, reply)
        if len(reasons) > 1:
            assert reply.text.count(";") == len(reasons) - 1
        assert r.moderation.store.events.read() == []


async def test_report_content_type_and_a_valid_report_on_no_stream(http: aiohttp.ClientSession) -> None:
    async with running_relay() as r:
        url = r.base + "/api/streams/s1/reports"
        reply = await call(http, "POST", url, raw='{"reason": "r"}', content_type="text/plain")
        assert reply.status == 415, reply
        reply = await call(http, "POST", url, {"reason": "r", "category": "spam", "session": "not-a-session"})
        assert reply.status == 404 and "s1" in reply.text, reply  # well-formed; the stream is not live

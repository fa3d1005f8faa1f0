"""Webhook delivery over real HTTP on loopback: what a Standard Webhooks receiver gets
from a live stream (checked with the independent ``standardwebhooks`` verifier), and how
delivery behaves when the receiver is down, slow, broken or redirecting, across a
restart of the proxy, with filters, and when it gives up -- plus that no secret leaks.

The receiver is an aiohttp server on 127.0.0.1 whose socket is bound before it
listens: while "down" its port refuses connections (no other process can take the
port), and bringing it "up" is just starting to listen on the same socket.  Events come
from a real stream where the stream is the point (the 360p ``blocked_cut`` clip, its
blocked segment at 2.5-4.0 s), and otherwise from ``Moderation.record`` -- the same path
every guard event takes -- so the failure scenarios run in a second or two."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import socket
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from harness import FAST_END, ICE, SAMPLES, RunningRelay, assert_pixel_free, publishing, running_relay
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from livesafe import cli
from livesafe.clients import ClientError
from livesafe.events import Event
from livesafe.moderation.settings import ModerationSettings, Principal, WebhookEndpoint
from livesafe.relay.settings import RelaySettings, StreamAccess

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # Standard Webhooks format (base64 key)
PLAIN_SECRET = "plain-shared-secret-9f3a"  # any other string is the key as is
MOD = Principal("mo", "moderator", "m" * 20)
KID_KEY = "kid-stream-key-51c0"
PROFILED = RelaySettings(streams={"kid": StreamAccess(key=KID_KEY, profile="child")}, ice=ICE, stream=FAST_END)
FAST_RETRY = {"webhook_backoff_seconds": 0.05, "webhook_max_backoff_seconds": 0.5}


@pytest.fixture(scope="module")
def clip(blocked_cut_360p: Path) -> Path:
    truth = json.loads((SAMPLES / "blocked_cut.truth.json").read_text())
    assert truth["segments"][0]["start_s"] == 2.5 and truth["frames"] == 180, "the waits here follow the clip"
    return blocked_cut_360p


# ------------------------------------------------------------------ receiver


@dataclass
class Hit:
    """One request as the receiver got it: the raw body is what the signature covers."""

    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.time() on arrival

    @property
    def id(self) -> str:
        return self.headers["webhook-id"]

    def json(self) -> dict[str, Any]:
        return json.loads(self.body)


Respond = Callable[[Hit], "web.StreamResponse | Awaitable[web.StreamResponse]"]


@dataclass
class Receiver:
    """A webhook receiver on 127.0.0.1; down (connections refused) until :meth:`up`."""

    respond: Respond = field(default=lambda hit: web.Response(text="ok"))
    hits: list[Hit] = field(default_factory=list)

    def __post_init__(self) -> None:
        # Bound but not listening: a connection attempt gets a RST (refused) right away.
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        self.runner: web.AppRunner | None = None

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def on(self, path: str = "/hook") -> list[Hit]:
        return [h for h in self.hits if h.path == path]

    def ids(self, path: str = "/hook") -> list[str]:
        return [h.id for h in self.on(path)]

    async def up(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # No access log: it would print the query string, which the secrecy test plants a secret in.
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self.runner.setup()
        await web.SockSite(self.runner, self.sock).start()

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
        self.sock.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        hit = Hit(request.path, request.query_string, dict(request.headers), await request.read(), time.time())
        self.hits.append(hit)
        answer = self.respond(hit)
        return await answer if inspect.isawaitable(answer) else answer


@contextlib.asynccontextmanager
async def receiver(respond: Respond | None = None, *, up: bool = True) -> AsyncIterator[Receiver]:
    hook = Receiver(respond) if respond is not None else Receiver()
    try:
        if up:
            await hook.up()
        yield hook
    finally:
        await hook.close()


# ------------------------------------------------------------------- helpers


def settings(tmp_path: Path, *hooks: WebhookEndpoint, db: str = "ev.db", **options: Any) -> ModerationSettings:
    return ModerationSettings(database=str(tmp_path / db), webhooks=hooks, **options)


async def get(http: aiohttp.ClientSession, url: str, token: str | None = None, **params: str) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with http.get(url, params=params, headers=headers) as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def hooks_status(http: aiohttp.ClientSession, r: RunningRelay, token: str | None = None) -> dict[str, dict]:
    data = await get(http, r.base + "/api/webhooks", token)
    return {e["name"]: e for e in data["endpoints"]}


async def stored(http: aiohttp.ClientSession, r: RunningRelay, token: str | None = None, **params: str) -> list[dict]:
    return (await get(http, r.base + "/api/events", token, limit="1000", **params))["events"]


async def until(condition: Callable[[], Awaitable[bool] | bool], what: str, timeout: float = 10.0) -> None:
    """Poll ``condition`` (bounded in time) until it holds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        assert time.monotonic() < deadline, f"not within {timeout:g} s: {what}"
        await asyncio.sleep(0.02)


def fake_report(stream: str, n: int, at: float | None = None) -> Event:
    """A viewer report as the service would record it (no live stream needed to queue one)."""
    data = {"reason": f"report {n}", "category": None, "client": f"c{n}", "reporters_in_window": 1,
            "profile": "default", "redacts": False}  # fmt: skip
    return Event("report.received", stream, "warning", data, **({"at": at} if at is not None else {}))


def outbox(path: Path) -> list[tuple[str, str, str, int]]:
    """(endpoint, event id, state, attempts) of every outbox row, read straight from the SQLite file."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        return db.execute(
            "SELECT o.endpoint, e.id, o.state, o.attempts"
            " FROM outbox o JOIN events e ON e.seq = o.event_seq ORDER BY o.event_seq"
        ).fetchall()


# ------------------------------------------------------ 1. a real stream, signed


async def test_a_standard_webhooks_receiver_verifies_every_event_of_a_stream(http, clip, tmp_path):
    verifier = Webhook(SECRET)
    async with receiver() as hook:
        mod = settings(tmp_path, WebhookEndpoint(hook.url(), SECRET, name="bot"))
        async with running_relay(moderation=mod) as r:
            async with publishing(
                r, clip, "s1", tolerate=(ClientError,)
            ) as publisher:  # one pass of the clip (6 s), then it hangs up
                await asyncio.wait_for(publisher, 20)
            await until(lambda: "stream.ended" in [h.json()["type"] for h in hook.hits], "stream.ended delivered", 10)
            await until(lambda: r.moderation.store.outbox.pending() == 0, "outbox drained")
            events = await stored(http, r)

    assert [e["type"] for e in events][:2] == ["stream.started", "match.started"] and events[-1][
        "type"
    ] == "stream.ended"
    assert "match.cleared" in [e["type"] for e in events]
    # Every stored event arrived once, in the store's order, each verified by the independent library.
    assert hook.ids() == [e["id"] for e in events]
    for hit, event in zip(hook.hits, events, strict=True):
        envelope = verifier.verify(hit.body, hit.headers)
        assert set(envelope) == {"type", "timestamp", "data"}
        assert envelope["type"] == event["type"] and envelope["data"] == event
        assert datetime.fromisoformat(envelope["timestamp"].replace("Z", "+00:00")).timestamp() == pytest.approx(
            event["at"], abs=1e-3
        )
        assert hit.headers["webhook-id"] == event["id"]
        assert hit.headers["webhook-signature"].startswith("v1,")
        assert abs(int(hit.headers["webhook-timestamp"]) - hit.at) < 60, "webhook-timestamp is the time of sending"
        assert hit.headers["Content-Type"].startswith("application/json")
        assert_pixel_free(envelope["data"], "data", max_string=300)

    started = next(e for e in events if e["type"] == "match.started")
    assert (started["list_name"], started["category"], started["signal"]) == ("samples", "test", "pdq")
    assert isinstance(started["distance"], int) and len(started["matched_hash"]) == 64
    cleared = next(e for e in events if e["type"] == "match.cleared")
    assert (cleared["episode"], cleared["category"]) == (started["id"], "test")

    # The verifier can fail: a changed body, another secret, a missing header.
    body = hook.hits[1].body
    assert body.replace(b'"samples"', b'"sampler"') != body
    for bad_body, headers, secret in [
        (body.replace(b'"samples"', b'"sampler"'), hook.hits[1].headers, SECRET),
        (body + b" ", hook.hits[1].headers, SECRET),
        (body, hook.hits[1].headers, "whsec_" + "QUJD" * 8),
        (body, {k: v for k, v in hook.hits[1].headers.items() if k.lower() != "webhook-id"}, SECRET),
    ]:
        with pytest.raises(WebhookVerificationError):
            Webhook(secret).verify(bad_body, headers)


async def test_a_plain_string_secret_is_the_signing_key_as_is(tmp_path):
    async with receiver() as hook:
        async with running_relay(moderation=settings(tmp_path, WebhookEndpoint(hook.url(), PLAIN_SECRET))) as r:
            event = r.moderation.record(fake_report("s1", 1))
            await until(lambda: hook.hits, "delivered")
    (hit,) = hook.hits
    assert Webhook(PLAIN_SECRET.encode()).verify(hit.body, hit.headers)["data"]["id"] == event.id
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(hit.body, hit.headers)


# -------------------------------------------------- 2. receiver down, then up


async def test_events_queued_while_the_receiver_is_down_all_arrive_when_it_is_back(http, tmp_path):
    async with receiver(up=False) as hook:
        mod = settings(tmp_path, WebhookEndpoint(hook.url(), SECRET, name="bot"), **FAST_RETRY)
        async with running_relay(moderation=mod) as r:
            queued = [r.moderation.record(fake_report("s1", n)).id for n in range(5)]

            async def failing() -> bool:
                status = (await hooks_status(http, r))["bot"]
                return status["state"] == "failing" and status["consecutive_failures"] >= 2

            await until(failing, "the endpoint is reported failing")
            status = (await hooks_status(http, r))["bot"]
            assert status["pending"] == 5 and status["delivered"] == 0 and status["retry_at"]
            assert "Cannot connect" in status["last_error"] or "refused" in status["last_error"], status
            (failed,) = await stored(http, r, type="webhook.failed")
            assert (failed["endpoint"], failed["gave_up"], failed["severity"]) == ("bot", False, "warning")
            assert failed["url"] == hook.url() and failed["error"]
            queued.append(r.moderation.record(fake_report("s1", 5)).id)  # and one more while it is still down

            await hook.up()
            await until(lambda: r.moderation.store.outbox.pending() == 0, "the backlog is delivered", 10)
            status = (await hooks_status(http, r))["bot"]
            assert (status["state"], status["consecutive_failures"], status["pending"], status["delivered"]) == (
                "ok",
                0,
                0,
                6,
            )
            assert status["last_delivered_at"] and status["failed"] == 0

    # At least once each; deduplicated by webhook-id, exactly what was queued (the
    # webhook.failed about this endpoint is not queued for it: it would feed its own backlog).
    assert set(hook.ids()) == set(queued) and len(hook.ids()) >= len(queued)
    for hit in hook.hits:
        Webhook(SECRET).verify(hit.body, hit.headers)


# ---------------------------------------------------- 3. proxy restarted mid-retry


async def test_a_restarted_proxy_delivers_what_the_last_one_could_not(http, tmp_path):
    async with receiver(up=False) as hook:
        mod = settings(tmp_path, WebhookEndpoint(hook.url(), SECRET, name="bot"), **FAST_RETRY)
        async with running_relay(moderation=mod) as r:
            queued = [r.moderation.record(fake_report("s1", n)).id for n in range(3)]

            async def retried() -> bool:
                return (await hooks_status(http, r))["bot"]["consecutive_failures"] >= 2

            await until(retried, "delivery is being retried")
        # The first proxy is gone; its queue is in the file.
        assert [(state, event) for _, event, state, _ in outbox(tmp_path / "ev.db")] == [("pending", e) for e in queued]

        await hook.up()
        back = time.time()
        async with running_relay(moderation=mod) as r:
            await until(
                lambda: r.moderation.store.outbox.pending() == 0, "the queue is delivered after the restart", 10
            )
            status = (await hooks_status(http, r))["bot"]
            assert (status["state"], status["delivered"], status["pending"], status["failed"]) == ("ok", 3, 0, 0)

    assert sorted(hook.ids()) == sorted(queued), "each once, same ids"
    for hit in hook.hits:
        Webhook(SECRET).verify(hit.body, hit.headers)
        assert int(hit.headers["webhook-timestamp"]) >= int(back), "signed when sent, not when first tried"
    rows = outbox(tmp_path / "ev.db")
    assert [(endpoint, event, state) for endpoint, event, state, _ in rows] == [("bot", e, "delivered") for e in queued]
    assert rows[0][3] >= 2, "the first row carries the failed attempts before the restart"


# ------------------------------------------------------------------ 4. filters


async def test_filters_by_category_and_severity_on_a_child_profile_stream(http, clip, tmp_path):
    async with receiver() as hook:
        hooks = (
            WebhookEndpoint(hook.url("/csam"), SECRET, name="csam", categories=("csam",)),
            WebhookEndpoint(hook.url("/test"), SECRET, name="test", categories=("test",)),
            WebhookEndpoint(hook.url("/high"), SECRET, name="high", min_severity="high"),
        )
        mod = ModerationSettings(database=str(tmp_path / "ev.db"), webhooks=hooks, tokens=(MOD,))
        async with running_relay(PROFILED, moderation=mod) as r:
            async with publishing(r, clip, "kid", KID_KEY, tolerate=(ClientError,)):  # one pass: one match episode
                await until(
                    lambda: "match.cleared" in [h.json()["type"] for h in hook.on("/test")],
                    "match.cleared on /test",
                    20,
                )
                r.moderation.record(
                    Event("guard.error", "kid", "warning", {"error": "a warning, for the severity filter"})
                )
                async with http.post(f"{r.base}/api/streams/kid/actions",
                                     json={"action": "confirm", "reason": "seen it"},
                                     headers={"Authorization": f"Bearer {MOD.token}"}) as response:  # fmt: skip
                    assert response.status == 200, await response.text()
                    action = (await response.json())["event"]
                await until(lambda: action["id"] in hook.ids("/test"), "action.taken on /test")
                await until(lambda: r.moderation.store.outbox.pending() == 0, "outbox drained")
                events = await stored(http, r, MOD.token)
                status = await hooks_status(http, r, MOD.token)

    assert hook.on("/csam") == [] and (status["csam"]["delivered"], status["csam"]["pending"]) == (0, 0), (
        "nothing was even queued"
    )

    got = [h.json()["data"] for h in hook.on("/test")]
    assert {e["type"] for e in got} == {"match.started", "match.cleared", "action.taken"}
    assert all(e["category"] == "test" for e in got)
    assert [e["id"] for e in got] == [e["id"] for e in events if e.get("category") == "test"]
    assert any(e["type"] == "stream.started" for e in events) and action["category"] == "test"

    high = [h.json()["data"] for h in hook.on("/high")]
    assert high and {e["type"] for e in high} == {"match.started"}
    assert all(e["severity"] == "high" and e["profile"] == "child" for e in high)
    assert [e["id"] for e in high] == [e["id"] for e in events if e["severity"] == "high"]
    assert {e["severity"] for e in events} >= {"info", "warning", "high"}, "the store has what the filter left out"


# -------------------------------------------- 5. failures, backoff, give up


async def test_a_500_is_retried_with_growing_backoff_one_attempt_at_a_time(http, tmp_path):
    backoff, cap, fail_first = 0.05, 0.2, 5
    answers = iter([500] * fail_first)
    async with receiver(lambda hit: web.Response(status=next(answers, 200))) as hook:
        mod = settings(tmp_path, WebhookEndpoint(hook.url(), SECRET, name="bot"),
                       webhook_backoff_seconds=backoff, webhook_max_backoff_seconds=cap)  # fmt: skip
        async with running_relay(moderation=mod) as r:
            queued = [r.moderation.record(fake_report("s1", n)).id for n in range(3)]
            await until(lambda: r.moderation.store.outbox.pending() == 0, "delivered once the receiver answers 200")
            status = (await hooks_status(http, r))["bot"]
    assert (status["state"], status["delivered"], status["last_error"]) == ("ok", 3, "HTTP 500")
    # Three events, five failures: one attempt per failure (not one per queued event), then one each.
    assert len(hook.hits) == fail_first + 3 and set(hook.ids()) == set(queued)
    arrivals = [h.at for h in hook.hits[: fail_first + 1]]
    for n, (before, after) in enumerate(zip(arrivals, arrivals[1:], strict=False)):
        wait = min(backoff * 2**n, cap)
        assert after - before >= 0.9 * wait, (
            f"retry {n + 1} came {after - before:.3f} s after the failure, backoff is {wait} s"
        )


async def test_the_oldest_event_probes_a_failing_endpoint_and_the_backlog_then_drains_in_order(http, tmp_path):
    # Depends on the fix in the report (Outbox.due ordered by next_attempt): today each
    # failed probe moves its event to the back of the queue, so the probes rotate through
    # the backlog and it drains out of order -- against webhooks.py's "drains in order".
    fail_first = 3
    answers = iter([500] * fail_first)
    async with receiver(lambda hit: web.Response(status=next(answers, 200))) as hook:
        mod = settings(tmp_path, WebhookEndpoint(hook.url(), SECRET, name="bot"), **FAST_RETRY)
        async with running_relay(moderation=mod) as r:
            queued = [r.moderation.record(fake_report("s1", n)).id for n in range(4)]
            await until(lambda: r.moderation.store.outbox.pending() == 0, "delivered once the receiver answers 200")
    assert hook.ids() == [queued[0]] * (fail_first + 1) + queued[1:]


async def test_a_receiver_slower_than_the_timeout_is_retried(http, tmp_path):
    release = asyncio.Event()

    async def slow_first(hit: Hit) -> web.StreamResponse:
        if len(hook.hits) == 1:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(release.wait(), 5)
        return web.Response(text="ok")

    async with receiver(slow_first) as hook:
        mod = settings(
            tmp_path, WebhookEndpoint(hook.url(), SECRET, name="bot"), webhook_timeout_seconds=0.3, **FAST_RETRY
        )
        async with running_relay(moderation=mod) as r:
            event = r.moderation.record(fake_report("s1", 1))
            await until(lambda: r.moderation.store.outbox.pending() == 0, "delivered on the retry")
            release.set()
            status = (await hooks_status(http, r))["bot"]
            (failed,) = await stored(http, r, type="webhook.failed")
    assert hook.ids() == [event.id, event.id], "the timed-out attempt and the retry, same webhook-id"
    assert status["last_error"] == failed["error"] == "no answer within 0.3 s"
    assert (status["state"], status["delivered"]) == ("ok", 1)


async def test_a_redirect_is_a_failure_and_is_not_followed(http, tmp_path):
    def redirect(hit: Hit) -> web.StreamResponse:
        return (
            web.Response(text="ok")
            if hit.path == "/elsewhere"
            else web.Response(status=302, headers={"Location": "/elsewhere"})
        )

    async with receiver(redirect) as hook:
        mod = settings(tmp_path, WebhookEndpoint(hook.url(), SECRET, name="bot"), **FAST_RETRY)
        async with running_relay(moderation=mod) as r:
            r.moderation.record(fake_report("s1", 1))
            await until(lambda: len(hook.on("/hook")) >= 2, "retried")
            status = (await hooks_status(http, r))["bot"]
    assert hook.on("/elsewhere") == [], "the Location was not followed"
    assert (status["state"], status["last_error"], status["pending"], status["delivered"]) == (
        "failing",
        "HTTP 302",
        1,
        0,
    )


async def test_a_delivery_past_give_up_hours_is_marked_failed_and_reported(http, tmp_path):
    async with receiver(lambda hit: web.Response(status=500)) as hook:
        mod = settings(
            tmp_path, WebhookEndpoint(hook.url(), SECRET, name="bot"), webhook_give_up_hours=1e-4, **FAST_RETRY
        )
        async with running_relay(moderation=mod) as r:
            old = r.moderation.record(fake_report("s1", 1, at=time.time() - 3600))
            gave_up = []

            async def reported() -> bool:
                gave_up[:] = await stored(http, r, type="webhook.failed")
                return bool(gave_up)

            await until(reported, "webhook.failed recorded")
            await asyncio.sleep(0.3)  # six backoffs: time for a (wrong) retry to show
            status = (await hooks_status(http, r))["bot"]
            (event,) = await stored(http, r, type="webhook.failed")
    assert hook.ids() == [old.id], "one attempt, no retries after giving up"
    assert (event["gave_up"], event["event_id"], event["event_type"], event["endpoint"]) == (
        True,
        old.id,
        "report.received",
        "bot",
    )
    assert event["error"] == "HTTP 500" and event["stream_id"] == "s1"
    assert (status["failed"], status["pending"], status["delivered"]) == (1, 0, 0)
    assert [(endpoint, state, attempts) for endpoint, _, state, attempts in outbox(tmp_path / "ev.db")] == [
        ("bot", "failed", 1)
    ]


async def post_retry(
    http: aiohttp.ClientSession, r: RunningRelay, name: str, body: Any, token: str | None
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with http.post(f"{r.base}/api/webhooks/{name}/retry", json=body, headers=headers) as response:
        return response.status, await (response.json() if response.status == 200 else response.text())


async def test_retry_now_ends_a_long_backoff_as_soon_as_the_receiver_is_back(http, tmp_path):
    """After a long outage the endpoint waits minutes between probes; a moderator who knows
    the receiver is back says so and the queue moves at once, audited."""
    observer = Principal("obs", "observer", "o" * 20)
    async with receiver(up=False) as hook:
        mod = settings(tmp_path, WebhookEndpoint(hook.url(), SECRET, name="bot"), tokens=(MOD, observer),
                       webhook_backoff_seconds=600, webhook_max_backoff_seconds=600)  # fmt: skip
        async with running_relay(moderation=mod) as r:
            queued = [r.moderation.record(fake_report("s1", n)).id for n in range(3)]
            await until(lambda: r.moderation.webhooks.health["bot"].failures >= 1, "the first attempt failed")
            await hook.up()
            await asyncio.sleep(1.0)
            assert hook.hits == [], "a 10-minute backoff holds the queue although the receiver is up"

            assert (await post_retry(http, r, "bot", {"reason": "x"}, None))[0] == 401
            assert (await post_retry(http, r, "bot", {"reason": "x"}, observer.token))[0] == 403
            status, text = await post_retry(http, r, "nope", {"reason": "x"}, MOD.token)
            assert (status, text.strip()) == (404, "no webhook endpoint 'nope'")
            status, text = await post_retry(http, r, "bot", {"why": 1}, MOD.token)
            assert status == 400 and "unknown field(s) ['why']" in text and "reason: required" in text
            assert hook.hits == [], "refused requests change nothing"

            status, answer = await post_retry(http, r, "bot", {"reason": "receiver redeployed"}, MOD.token)
            assert status == 200, answer
            assert answer["audit"]["action"] == "webhook_retry" and answer["audit"]["actor"] == MOD.name
            assert answer["audit"]["details"] == {"endpoint": "bot", "pending": 3}
            await until(lambda: r.moderation.store.outbox.pending() == 0, "the backlog is delivered", 5)
            (taken,) = await stored(http, r, MOD.token, type="action.taken")
            after = (await hooks_status(http, r, MOD.token))["bot"]
            assert (after["state"], after["delivered"], after["pending"]) == ("ok", 4, 0), (
                "the reports and the action.taken"
            )
            described = (taken["action"], taken["endpoint"], taken["reason"], taken["stream_id"])
            assert described == ("webhook_retry", "bot", "receiver redeployed", None)
            (entry,) = (await get(http, r.base + "/api/audit", MOD.token))["entries"]
            assert entry["reason"] == "receiver redeployed" and entry["stream_id"] is None

            status, text = await post_retry(http, r, "bot", {"reason": "again"}, MOD.token)
            assert (status, text.strip()) == (409, "webhook 'bot' is not failing")
    assert hook.ids() == [*queued, taken["id"]], "in order, each once"


# ------------------------------------------------------------- 6. CLI, secrets


def test_serve_with_a_webhook_url_but_no_secret_exits_2_with_one_line(monkeypatch, capsys, tmp_path):
    monkeypatch.delenv("LIVESAFE_WEBHOOK_SECRET", raising=False)
    db = tmp_path / "never.db"
    argv = ["serve", "--blocklist", str(SAMPLES / "blocklist.txt"), "--db", str(db), "--port", "0",
            "--webhook-url", "https://hooks.example.com/in"]  # fmt: skip
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("livesafe: error: ") and "--webhook-secret" in err, err
    assert not db.exists(), "refused before anything was opened"


def test_secrets_are_not_in_the_settings_repr():
    hook = WebhookEndpoint("https://hooks.example.com/in?token=URL-TOKEN-1234", SECRET, name="bot")
    shown = repr(ModerationSettings(database=":memory:", webhooks=(hook,))) + repr(hook) + str(hook)
    assert "bot" in shown
    for secret in ("URL-TOKEN-1234", SECRET, SECRET.removeprefix("whsec_")):
        assert secret not in shown


@contextlib.asynccontextmanager
async def broken_receiver() -> AsyncIterator[tuple[int, list[int]]]:
    """A raw TCP server answering by turns: garbage, a 500, a hang-up, a redirect (all failures)."""
    answers = [b"garbage instead of HTTP\r\n\r\n", b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n", b"",
               b"HTTP/1.1 307 Moved\r\nLocation: /elsewhere\r\nContent-Length: 0\r\n\r\n"]  # fmt: skip
    count: list[int] = [0]

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower()
            length = next(
                (int(line.split(":", 1)[1]) for line in head.split("\r\n") if line.startswith("content-length:")), 0
            )
            await reader.readexactly(length)  # the whole request read, so the answer is what the client sees
            writer.write(answers[count[0] % len(answers)])
            count[0] += 1
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], count
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{port}/hook?token=URL-TOKEN-1234",
        # This one and the next need the fix in the report (webhooks._send): aiohttp's error
        # text names the URL without the user:password and with the query normalised, so
        # the current replace(endpoint.url, display_url) does not find it and the token leaks.
        "http://hooker:URL-PASSWORD-77@127.0.0.1:{port}/hook?token=URL-TOKEN-1234",
        "http://127.0.0.1:{port}/hook?token=URL-TOKEN-1234&x=%7e",
    ],
    ids=["query", "userinfo", "normalised-query"],
)
async def test_secrets_never_reach_the_logs_the_api_or_the_events(http, tmp_path, caplog, url):
    caplog.set_level(logging.DEBUG)
    async with broken_receiver() as (port, count):
        target = url.format(port=port)
        endpoints = (WebhookEndpoint(target, SECRET, name="broken"),)
        mod = settings(tmp_path, *endpoints, webhook_give_up_hours=1.5 / 3600, webhook_backoff_seconds=0.02,
                       webhook_max_backoff_seconds=0.05)  # fmt: skip
        async with running_relay(moderation=mod) as r:
            for n in range(3):  # retried for 1.5 s, then given up (the third at once: it is an hour old)
                r.moderation.record(fake_report("s1", n, at=time.time() - (3600 if n == 2 else 0)))
            await until(lambda: r.moderation.store.outbox.pending() == 0, "every delivery given up")
            shown = json.dumps([await get(http, r.base + "/api/webhooks"), await stored(http, r)])
    assert count[0] >= 8, "each kind of failure at least twice"
    logged = caplog.text + "".join(str(record.args) for record in caplog.records)
    assert "webhook" in logged and "gave up" in logged, "nothing was logged: the check below would prove nothing"
    for secret in ("URL-TOKEN-1234", "URL-PASSWORD-77", SECRET, SECRET.removeprefix("whsec_")):
        assert secret not in logged, f"{secret} in the log"
        assert secret not in shown, f"{secret} in /api/webhooks or /api/events"

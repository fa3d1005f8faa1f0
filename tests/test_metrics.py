"""``GET /metrics`` read as Prometheus reads it (``prometheus_client``'s parser): the
counters follow a real stream with a blocked segment and never go down when it ends,
the guard latency histogram accounts for every guarded frame, webhook failures and
deliveries are counted per endpoint against real HTTP receivers, label values from
configuration are escaped, and the endpoint is open (like /healthz) while the
moderation API is not."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from harness import FAST_END, ICE, running_relay, serving, unused_port
from prometheus_client.parser import text_string_to_metric_families

from livesafe.clients import publish
from livesafe.events import MATCH_STARTED, REPORT_RECEIVED, WEBHOOK_FAILED, Event, GuardEvent
from livesafe.metrics import CONTENT_TYPE
from livesafe.moderation.settings import ModerationSettings, Principal, WebhookEndpoint
from livesafe.relay.settings import RelaySettings, StreamAccess

SECRET = "whsec_" + "c2VjcmV0LWZvci10ZXN0cy0xMjM0NTY3OA=="


class Scrape:
    """One parsed /metrics answer: sample values by metric name and labels."""

    def __init__(self, text: str) -> None:
        self.families = {f.name: f for f in text_string_to_metric_families(text)}
        self.samples = {
            (s.name, frozenset(s.labels.items())): s.value for f in self.families.values() for s in f.samples
        }

    def value(self, name: str, **labels: str) -> float:
        return self.samples[(name, frozenset(labels.items()))]

    def counters(self) -> dict[tuple[str, frozenset], float]:
        """Every sample that must never go down: counters, and a histogram's buckets, sum and count."""
        kinds = {"counter", "histogram"}
        return {
            (s.name, frozenset(s.labels.items())): s.value
            for f in self.families.values()
            if f.type in kinds
            for s in f.samples
        }

    def buckets(self, name: str) -> list[tuple[float, float]]:
        family = self.families[name]
        return [(float(s.labels["le"]), s.value) for s in family.samples if s.name == f"{name}_bucket"]


async def scrape(http: aiohttp.ClientSession, base: str) -> Scrape:
    async with http.get(f"{base}/metrics") as response:
        assert response.status == 200, await response.text()
        assert response.headers["Content-Type"] == CONTENT_TYPE
        return Scrape(await response.text())


async def test_counters_follow_a_blocked_stream_and_never_go_down_after_it_ends(blocked_cut_360p, http):
    clip = blocked_cut_360p
    async with running_relay() as r:
        idle = await scrape(http, r.base)
        assert idle.value("livesafe_frames_in_total") == 0 and idle.value("livesafe_guard_frame_seconds_count") == 0
        publisher = asyncio.ensure_future(publish(clip, r.url("whip", "s1"), ice=ICE, duration=15))
        await r.wait_for(lambda relay: r.moderation.counts[MATCH_STARTED] >= 1, timeout=20)
        during = await scrape(http, r.base)
        assert during.value("livesafe_streams", state="live") + during.value("livesafe_streams", state="redacted") == 1
        await publisher
        await r.wait_for(lambda relay: "s1" not in relay.streams, timeout=15)
        after = await scrape(http, r.base)
        summary = r.summary("s1")
        async with http.get(f"{r.base}/api/events", params={"type": MATCH_STARTED, "limit": "1000"}) as response:
            started = len((await response.json())["events"])

    # What the stream counted, and nothing twice once it moved to the ended totals.
    assert after.value("livesafe_frames_in_total") == summary["frames_in"] > 0
    assert after.value("livesafe_frames_guarded_total") == summary["frames_guarded"] > 0
    assert after.value("livesafe_frames_redacted_total") == summary["frames_redacted"] > 0
    assert after.value("livesafe_frames_dropped_total") == summary["frames_dropped"]
    assert after.value("livesafe_streams_ended_total") == 1
    assert all(after.value("livesafe_streams", state=state) == 0 for state in ("live", "redacted", "ended"))
    assert started >= 1
    assert after.value("livesafe_matches_total", list="samples", category="test") == started
    assert after.value("livesafe_events_total", type=MATCH_STARTED) == started

    # One histogram observation per frame through the guard, in cumulative buckets.
    buckets = after.buckets("livesafe_guard_frame_seconds")
    bounds, counts = [b for b, _ in buckets], [c for _, c in buckets]
    assert bounds == sorted(bounds) and bounds[-1] == float("inf")
    assert counts == sorted(counts), f"buckets must be cumulative: {buckets}"
    assert counts[-1] == after.value("livesafe_guard_frame_seconds_count") == summary["frames_guarded"]
    assert after.value("livesafe_guard_frame_seconds_sum") > 0

    # Counters (and the histogram) only grow: mid-stream <= after the stream ended.
    went_down = {key: (value, after.counters().get(key)) for key, value in during.counters().items()
                 if after.counters().get(key, -1) < value}  # fmt: skip
    assert not went_down, f"counters went down when the stream ended: {went_down}"
    assert during.value("livesafe_frames_in_total") > 0


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[str, list[bytes]]]:
    """A webhook receiver on loopback answering 204; yields its URL and the bodies it got."""
    bodies: list[bytes] = []

    async def hook(request: web.Request) -> web.Response:
        bodies.append(await request.read())
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    async with serving(app) as base:
        yield f"{base}/hook", bodies


async def test_webhook_failures_rise_for_a_dead_endpoint_and_deliveries_for_a_live_one(http, receiver):
    url, bodies = receiver
    settings = ModerationSettings(
        database=":memory:",
        webhooks=(
            WebhookEndpoint(url=f"http://127.0.0.1:{unused_port()}/hook", secret=SECRET, name="dead"),
            WebhookEndpoint(url=url, secret=SECRET, name="live"),
        ),
        webhook_backoff_seconds=0.05,
        webhook_max_backoff_seconds=0.1,
    )
    async with running_relay(moderation=settings) as r:
        health = r.moderation.webhooks.health
        r.moderation.record(Event(REPORT_RECEIVED, None, "info", {"reason": "metrics test"}))
        await r.wait_for(lambda relay: health["dead"].failed_attempts >= 1 and len(bodies) >= 1, timeout=10)
        first = await scrape(http, r.base)
        seen = first.value("livesafe_webhook_failed_attempts_total", endpoint="dead")
        await r.wait_for(lambda relay: health["dead"].failed_attempts > seen, timeout=10)
        second = await scrape(http, r.base)

    assert seen >= 1
    assert second.value("livesafe_webhook_failed_attempts_total", endpoint="dead") > seen
    assert second.value("livesafe_webhook_failed_attempts_total", endpoint="live") == 0
    assert second.value("livesafe_webhook_deliveries_total", endpoint="dead") == 0
    assert second.value("livesafe_webhook_deliveries_total", endpoint="live") >= 1
    assert second.value("livesafe_webhook_failing", endpoint="dead") == 1
    assert second.value("livesafe_webhook_failing", endpoint="live") == 0
    assert second.value("livesafe_webhook_outbox", endpoint="dead", state="pending") == 1  # the report, retried
    assert second.value("livesafe_webhook_outbox", endpoint="live", state="delivered") >= 1
    assert second.value("livesafe_event_backlog") >= 1
    assert second.value("livesafe_events_total", type=WEBHOOK_FAILED) >= 1  # the dead endpoint going down


async def test_label_values_from_configuration_are_escaped(http):
    tricky = 'list "with quotes" and \\backslash\\\nand a newline'
    hook = 'hook "one" \\ two'
    settings = ModerationSettings(
        database=":memory:",
        webhooks=(WebhookEndpoint(url=f"http://127.0.0.1:{unused_port()}/hook", secret=SECRET, name=hook),),
    )
    async with running_relay(moderation=settings) as r:
        # What the relay hands moderation when a guard matches (the relay's event sink).
        for _ in range(2):
            r.moderation.record_fact(GuardEvent(type=MATCH_STARTED, stream_id="s1", frame_index=0, pts=None,
                                                   media_time=0.0, action="slate", list_name=tricky,
                                                   category='cat"x'))  # fmt: skip
        async with http.get(f"{r.base}/metrics") as response:
            text = await response.text()
    assert 'list="list \\"with quotes\\" and \\\\backslash\\\\\\nand a newline"' in text
    parsed = Scrape(text)
    assert parsed.value("livesafe_matches_total", list=tricky, category='cat"x') == 2
    assert parsed.value("livesafe_webhook_failed_attempts_total", endpoint=hook) >= 0


async def test_metrics_are_open_while_the_moderation_api_needs_a_token(http):
    settings = RelaySettings(streams={"studio": StreamAccess(key="studio-key-5f1c9e")}, ice=ICE, stream=FAST_END)
    moderation = ModerationSettings(
        database=":memory:", tokens=(Principal("mod", "moderator", "moderator-token-0123456789"),)
    )
    async with running_relay(settings=settings, moderation=moderation) as r:
        async with http.get(f"{r.base}/api/events") as response:
            assert response.status == 401
        parsed = await scrape(http, r.base)
    assert parsed.value("livesafe_streams", state="live") == 0
    for family in parsed.families.values():
        assert family.name.startswith("livesafe_") and family.documentation, f"{family.name} lacks a HELP line"

"""Webhook delivery from the outbox, signed the Standard Webhooks way.

Each event meant for an endpoint has an outbox row, written with the event.
The dispatcher sends due rows and marks them delivered on a 2xx answer.  A
failure backs the whole endpoint off (1 s, 2 s, 4 s, ... up to
``webhook_max_backoff_seconds``): while it is down, one delivery at a time
probes it instead of every queued event hammering a dead receiver.  When the
probe gets through, the queue drains in order.  A delivery still pending
``webhook_give_up_hours`` after its event is marked failed.  Rows survive a
restart, so a receiver that was down gets everything when it returns; each
event keeps its id across attempts (``webhook-id``) so receivers can
deduplicate.

Signature (https://www.standardwebhooks.com/): ``webhook-signature: v1,<base64
HMAC-SHA256(key, "<webhook-id>.<webhook-timestamp>.<body>")>``, where the
timestamp is the time of sending (receivers reject stale ones).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
import yarl

from livesafe.events import Event
from livesafe.moderation.settings import ModerationSettings, WebhookEndpoint
from livesafe.moderation.store.interfaces import Outbox
from livesafe.moderation.store.records import Delivery

log = logging.getLogger(__name__)

USER_AGENT = "livesafe-webhooks/1"
_IN_FLIGHT = 8


def signature(key: bytes, message_id: str, timestamp: int, body: str) -> str:
    mac = hmac.new(key, f"{message_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def payload(event: Event) -> str:
    """The body: Standard Webhooks' ``{type, timestamp, data}`` envelope around the event."""
    stamp = datetime.fromtimestamp(event.at, UTC).isoformat().replace("+00:00", "Z")
    return json.dumps(
        {"type": event.type, "timestamp": stamp, "data": event.to_dict()}, separators=(",", ":"), sort_keys=True
    )


def _describe(exc: aiohttp.ClientError, endpoint: WebhookEndpoint) -> str:
    """The failure on one line, without the URL's credentials or query string.

    aiohttp names the URL as it sent it: without user:password and with the query
    normalised, so replacing ``endpoint.url`` alone misses it.  A response error is
    described by its status and message only.
    """
    if isinstance(exc, aiohttp.ClientResponseError):
        text = f"{exc.status}, {exc.message}"
    else:
        url = yarl.URL(endpoint.url)
        text = str(exc)
        for form in (endpoint.url, str(url), str(url.with_user(None))):
            text = text.replace(form, endpoint.display_url)
    return f"{type(exc).__name__}: {' '.join(text.split())}"


@dataclass
class EndpointHealth:
    failures: int = 0  # consecutive failed attempts
    blocked_until: float = 0.0
    last_error: str | None = None
    last_error_at: float | None = None
    last_delivered_at: float | None = None
    delivered: int = 0  # since start (the store keeps the totals)
    failed_attempts: int = 0


class WebhookDispatcher:
    """Sends the outbox.

    ``on_failure(endpoint, error, gave_up_on)`` reports an endpoint going down or a delivery given up.
    """

    def __init__(
        self,
        settings: ModerationSettings,
        outbox: Outbox,
        on_failure: Callable[[WebhookEndpoint, str, Event | None], None],
    ) -> None:
        self._settings = settings
        self._outbox = outbox
        self._on_failure = on_failure
        self._give_up = settings.webhook_give_up_hours * 3600
        self._endpoints: dict[str, WebhookEndpoint] = {}
        self.health: dict[str, EndpointHealth] = {}
        self._wake = asyncio.Event()
        self.reconfigure(settings.webhooks)

    def reconfigure(self, endpoints: tuple[WebhookEndpoint, ...]) -> None:
        """Deliver to ``endpoints`` from now on (at start, and on a config reload).

        An endpoint kept by name keeps its health and its queue (a changed URL or
        secret applies to the next attempt); a new one gets the events recorded from
        now on; a removed one's pending deliveries are marked failed, as at start.
        """
        self._endpoints = {w.name: w for w in endpoints}
        self.health = {name: self.health.get(name) or EndpointHealth() for name in self._endpoints}
        abandoned = self._outbox.abandon(list(self._endpoints), time.time())
        if abandoned:
            log.warning(
                "%d pending webhook deliveries were for endpoints no longer configured: marked failed", abandoned
            )
        self.wake()

    def wake(self) -> None:
        """A new event was queued (or the endpoints changed): look at the outbox now."""
        self._wake.set()

    async def run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self._settings.webhook_timeout_seconds)
        async with aiohttp.ClientSession(timeout=timeout, headers={"User-Agent": USER_AGENT}) as http:
            while True:
                self._wake.clear()
                if not self._endpoints:  # none configured (yet: a config reload may add one)
                    await self._wake.wait()
                    continue
                now = time.time()
                open_ = [n for n, h in self.health.items() if h.blocked_until <= now]
                batch = self._outbox.due(now, open_, limit=_IN_FLIGHT * 4)
                if batch:
                    await self._send_batch(http, batch)
                    continue
                await self._sleep(now)

    async def _sleep(self, now: float) -> None:
        waits = [h.blocked_until - now for h in self.health.values() if h.blocked_until > now]
        due = self._outbox.next_due([n for n, h in self.health.items() if h.blocked_until <= now])
        if due is not None:
            waits.append(due - now)
        delay = min([30.0, *waits])
        try:
            await asyncio.wait_for(self._wake.wait(), timeout=max(delay, 0.01))
        except TimeoutError:
            pass

    async def _send_batch(self, http: aiohttp.ClientSession, batch: list[Delivery]) -> None:
        """Per endpoint in order; an endpoint that fails is skipped for the rest of the batch."""
        by_endpoint: dict[str, list[Delivery]] = {}
        for delivery in batch:
            by_endpoint.setdefault(delivery.endpoint, []).append(delivery)

        async def drain(name: str, deliveries: list[Delivery]) -> None:
            for delivery in deliveries:
                endpoint = self._endpoints.get(name)
                if endpoint is None or not await self._send(http, endpoint, delivery):
                    return  # failing, or removed by a config reload (its deliveries marked failed)

        await asyncio.gather(*(drain(name, items) for name, items in by_endpoint.items()))

    async def _send(self, http: aiohttp.ClientSession, endpoint: WebhookEndpoint, delivery: Delivery) -> bool:
        body = payload(delivery.event)
        stamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "webhook-id": delivery.event.id,
            "webhook-timestamp": str(stamp),
            "webhook-signature": signature(endpoint.signing_key, delivery.event.id, stamp, body),
        }
        try:
            async with http.post(endpoint.url, data=body.encode(), headers=headers, allow_redirects=False) as response:
                await response.read()
                error = None if 200 <= response.status < 300 else f"HTTP {response.status}"
        except TimeoutError:
            error = f"no answer within {self._settings.webhook_timeout_seconds:g} s"
        except aiohttp.ClientError as exc:
            error = _describe(exc, endpoint)
        now = time.time()
        health = self.health.get(endpoint.name) or EndpointHealth()  # removed meanwhile: counted nowhere
        if error is None:
            self._outbox.delivered(delivery, now)
            health.failures, health.blocked_until = 0, 0.0
            health.last_delivered_at = now
            health.delivered += 1
            return True
        health.failures += 1
        health.failed_attempts += 1
        health.last_error, health.last_error_at = error, now
        backoff = min(
            self._settings.webhook_backoff_seconds * 2 ** (health.failures - 1),
            self._settings.webhook_max_backoff_seconds,
        )
        health.blocked_until = now + backoff
        if now - delivery.event.at >= self._give_up:
            self._outbox.failed(delivery, error, now)
            log.warning(
                "webhook %s: gave up on event %s after %d attempts: %s",
                endpoint.display_url,
                delivery.event.id,
                delivery.attempts + 1,
                error,
            )
            self._on_failure(endpoint, error, delivery.event)
        else:
            self._outbox.retry(delivery, error, health.blocked_until)
            if health.failures == 1:
                log.warning("webhook %s failing (%s); retrying with backoff", endpoint.display_url, error)
                self._on_failure(endpoint, error, None)
        return False

    def retry_now(self, name: str) -> int:
        """Lift a failing endpoint's backoff and try it at once: someone says its receiver is back.

        After a long outage the backoff has reached ``webhook_max_backoff_seconds`` (5
        minutes by default), which is how long the queue would otherwise sit after the
        receiver returns.  The count of failures stays, so if the receiver is still down the
        next wait is as long as before.  Returns how many deliveries are pending.
        KeyError: no such endpoint; ValueError: it is not failing.
        """
        health = self.health[name]
        if not health.failures:
            raise ValueError(f"webhook {name!r} is not failing")
        health.blocked_until = 0.0
        self._outbox.due_now(name, time.time())
        self.wake()
        pending = self._outbox.counts().get(name, {}).get("pending", 0)
        log.info("webhook %s: retrying now (%d deliveries pending)", self._endpoints[name].display_url, pending)
        return pending

    def status(self) -> list[dict[str, Any]]:
        """Per endpoint: where it goes, what it takes, how delivery stands (for the API and dashboard)."""
        counts = self._outbox.counts()
        out = []
        for name, endpoint in self._endpoints.items():
            health = self.health[name]
            stored = counts.get(name, {})
            out.append(
                {
                    "name": name,
                    "url": endpoint.display_url,
                    "categories": list(endpoint.categories),
                    "types": list(endpoint.types),
                    "min_severity": endpoint.min_severity,
                    "state": "failing" if health.failures else "ok",
                    "consecutive_failures": health.failures,
                    "retry_at": health.blocked_until or None,
                    "last_error": health.last_error or stored.get("last_error"),
                    "last_error_at": health.last_error_at,
                    "last_delivered_at": health.last_delivered_at,
                    "pending": stored.get("pending", 0),
                    "delivered": stored.get("delivered", 0),
                    "failed": stored.get("failed", 0),
                }
            )
        return out

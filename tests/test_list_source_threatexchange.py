"""The ``threatexchange`` list source against a loopback server speaking the Graph API's ``/threat_updates``.

The fake serves ``GET /v26.0/{privacy_group}/threat_updates/`` as Meta
documents it (and as python-threatexchange's client reads it): the
``access_token`` query parameter, ``start_time`` (inclusive), ``limit``,
``fields`` and ``types``; it answers ``{"data": [...], "paging": {"next":
url}}`` with updates ordered by ``last_updated``, each ``should_delete`` or
carrying its ``descriptors`` (owner, status, tags).  Graph API errors are its
JSON ``error`` objects.  The client is synchronous (requests), so the source
runs in a thread while the server runs on the test's loop; the source's clock
is set by the test (``clock``).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp import web
from harness import config_from, serving
from list_server import failures_keep_the_list

from livesafe.lists import BlocklistError, ListSpec
from livesafe.lists.live import LiveLists
from livesafe.lists.sources import RetryLater, SourceContext, SourceState, make_source, threatexchange
from livesafe.lists.sources.threatexchange import ThreatExchangeSource

APP_ID = 1234567890
ENV = {"TX_TOKEN": f"{APP_ID}|" + secrets.token_hex(16)}
GROUP = 303
NOW = 1_700_000_000


def pdq() -> str:
    return secrets.token_hex(32)


def update(
    uid: int,
    indicator: str,
    when: int,
    *,
    kind: str = "HASH_PDQ",
    deleted: bool = False,
    status: str = "MALICIOUS",
    owner: int = 4242,
    tags: tuple[str, ...] = ("csam",),
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": str(uid),
        "indicator": indicator,
        "type": kind,
        "last_updated": when,
        "should_delete": deleted,
    }
    if not deleted:
        body["descriptors"] = {
            "data": [
                {
                    "id": str(uid * 10),
                    "owner": {"id": str(owner)},
                    "status": status,
                    "tags": {"data": [{"id": str(i), "text": t} for i, t in enumerate(tags)]},
                    "reactions": [],
                }
            ]
        }
    return body


@dataclass
class FakeThreatExchange:
    updates: dict[str, dict[str, Any]] = field(default_factory=dict)  # by indicator id: the newest update wins
    size: int = 1000  # the server's own page cap
    seen: list[dict[str, str]] = field(default_factory=list)
    fail_at: dict[int, web.Response] = field(default_factory=dict)  # by request number (1-based)
    repeats: list[dict[str, Any]] = field(default_factory=list)  # updates sent a second time, on every page
    stuck: bool = False  # every page links to the same next page
    next_host: str | None = None  # paging.next points at this host instead
    obey_types: bool = True

    def add(self, body: dict[str, Any]) -> dict[str, Any]:
        self.updates[body["id"]] = body
        return body

    async def threat_updates(self, request: web.Request) -> web.Response:
        query = dict(request.query)
        self.seen.append(query)
        if query.get("access_token") != ENV["TX_TOKEN"]:
            error = {"message": "Invalid OAuth access token.", "type": "OAuthException", "code": 190}
            return web.json_response({"error": error}, status=400)
        if len(self.seen) in self.fail_at:
            return self.fail_at.pop(len(self.seen))
        if request.match_info["group"] != str(GROUP):
            return web.json_response({"error": {"message": "Unsupported get request", "code": 100}}, status=400)
        start = int(query.get("start_time", 0))
        types = set(query["types"].split(",")) if "types" in query and self.obey_types else None
        window = sorted(
            (u for u in self.updates.values() if u["last_updated"] >= start and (types is None or u["type"] in types)),
            key=lambda u: (u["last_updated"], int(u["id"])),
        )
        size = min(self.size, int(query["limit"]))
        at = int(query.get("after", 0))
        page = window[at : at + size] + self.repeats
        body: dict[str, Any] = {"data": page}
        if self.stuck or at + size < len(window):
            following = {**query, "after": str(size if self.stuck else at + size)}
            url = request.url.with_query(following)
            if self.next_host is not None:
                url = url.with_host(self.next_host)
            body["paging"] = {"cursors": {"after": following["after"]}, "next": str(url)}
        return web.json_response(body)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v26.0/{group}/threat_updates/", self.threat_updates)
        return app


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """The source's ``time.time`` (only the threatexchange module's name for it), moved on by the test."""
    now = SimpleNamespace(value=float(NOW))
    monkeypatch.setattr(threatexchange, "time", SimpleNamespace(time=lambda: now.value))
    return now


def source(base: str, state: SourceState, env: dict[str, str] | None = None, **options: Any) -> ThreatExchangeSource:
    spec = ListSpec(
        name="tx",
        kind="threatexchange",
        category="terror",
        url=base + "/v26.0",
        options={"token_env": "TX_TOKEN", "privacy_group": GROUP, **options},
    )
    made = make_source(spec, SourceContext(state=state, env=ENV if env is None else env, http_timeout=5))
    assert isinstance(made, ThreatExchangeSource)
    return made


def seeded(fake: FakeThreatExchange, count: int = 5) -> list[dict[str, Any]]:
    return [fake.add(update(100 + i, pdq(), NOW - 5000 + i)) for i in range(count)]


def hashes(blocklist: Any) -> set[str]:
    return {row.tobytes().hex() for row in blocklist.hashes.get("pdq", [])}


async def test_first_fetch_pages_through_with_metadata_and_token(
    clock: SimpleNamespace, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=threatexchange.__name__)
    fake = FakeThreatExchange(size=2)
    pdqs = seeded(fake)
    async with serving(fake.app()) as base:
        blocklist = await asyncio.to_thread(source(base, SourceState()).fetch, True)
    assert blocklist is not None and hashes(blocklist) == {u["indicator"] for u in pdqs} and not blocklist.skipped
    assert [q.get("after") for q in fake.seen] == [None, "2", "4"]  # paging.next followed to the end
    first = fake.seen[0]
    assert "start_time" not in first and first["limit"] == "100" and first["types"] == "HASH_PDQ"
    assert first["fields"].startswith("indicator,type,last_updated,should_delete,descriptors{")
    assert {q["access_token"] for q in fake.seen} == {ENV["TX_TOKEN"]}  # from the variable token_env names
    assert "5 ThreatExchange updates read; 0 of other types than HASH_PDQ not loaded" in caplog.text
    assert ENV["TX_TOKEN"] not in caplog.text
    by_id = {m["indicator_id"]: m for m in blocklist.metadata["pdq"]}
    assert by_id["102"] == {
        "source": "threatexchange",
        "privacy_group": str(GROUP),
        "indicator_id": "102",
        "last_updated": str(NOW - 4998),
        "opinions": "4242:positive_class",
        "tags": "csam",
        "entry": "HASH_PDQ:" + pdqs[2]["indicator"],
    }


async def test_restart_resumes_from_the_checkpoint_and_deletes_are_tombstones(
    tmp_path: Path, clock: SimpleNamespace
) -> None:
    fake = FakeThreatExchange()
    pdqs = seeded(fake)
    database = tmp_path / "events.db"
    async with serving(fake.app()) as base:
        await asyncio.to_thread(source(base, SourceState(database)).fetch, True)
        fake.seen.clear()
        restarted = source(base, SourceState(database))  # a new run on the same SQLite file
        kept = restarted.restore(True)
        assert kept is not None and hashes(kept) == {u["indicator"] for u in pdqs} and not fake.seen
        clock.value += 300
        added = fake.add(update(200, pdq(), NOW + 100))
        fake.add(update(101, pdqs[1]["indicator"], NOW + 101, deleted=True))
        fake.add(update(103, pdqs[3]["indicator"], NOW + 102, status="NON_MALICIOUS"))  # a known false positive
        blocklist = await asyncio.to_thread(restarted.fetch, True)
        assert [q.get("start_time") for q in fake.seen] == [str(NOW - 4996)]  # the newest last_updated read
        assert blocklist is not None
        assert hashes(blocklist) == {pdqs[i]["indicator"] for i in (0, 2, 4)} | {added["indicator"]}
        fake.seen.clear()
        clock.value += 300
        assert await asyncio.to_thread(restarted.fetch, True) is None  # the last second read again: unchanged
        assert [q.get("start_time") for q in fake.seen] == [str(NOW + 102)]


async def test_a_failure_mid_walk_resumes_after_the_last_saved_page(tmp_path: Path, clock: SimpleNamespace) -> None:
    fake = FakeThreatExchange(size=2)
    pdqs = seeded(fake)
    database = tmp_path / "events.db"
    fake.fail_at[2] = web.Response(status=503, headers={"Retry-After": "7"}, text="busy")
    async with serving(fake.app()) as base:
        with pytest.raises(RetryLater):
            await asyncio.to_thread(source(base, SourceState(database)).fetch, True)
        fake.seen.clear()
        clock.value += 60
        blocklist = await asyncio.to_thread(source(base, SourceState(database)).fetch, True)  # a restart
    assert fake.seen[0]["start_time"] == str(NOW - 4999)  # page one's newest: page one is not read again
    assert blocklist is not None and hashes(blocklist) == {u["indicator"] for u in pdqs}


async def test_server_errors_keep_the_previous_list(clock: SimpleNamespace) -> None:
    fake = FakeThreatExchange()
    seeded(fake)

    def inject(reply: web.StreamResponse) -> None:
        clock.value += 60
        fake.fail_at[len(fake.seen) + 1] = reply

    failures = [
        (web.Response(status=500, text="down"), "HTTP 500 Internal Server Error: ThreatExchange answers 500"),
        (web.Response(status=502, text="bad gateway"), "HTTP 502"),
        (web.Response(text='{"data": [{"id": "1",', content_type="application/json"), "malformed JSON"),
        (web.json_response([1, 2]), "malformed response, not ThreatExchange's threat_updates JSON"),
    ]
    async with serving(fake.app()) as base:
        await failures_keep_the_list(source(base, SourceState()), inject, failures, ENV["TX_TOKEN"])


async def test_a_refused_token_is_a_clear_error_without_the_token(clock: SimpleNamespace) -> None:
    fake = FakeThreatExchange()
    wrong = {"TX_TOKEN": f"{APP_ID}|" + "0" * 32}
    async with serving(fake.app()) as base:
        with pytest.raises(BlocklistError) as info:
            await asyncio.to_thread(source(base, SourceState(), env=wrong).fetch, True)
    message = str(info.value)
    assert "HTTP 400" in message and f"refused the token in $TX_TOKEN for privacy group {GROUP}" in message
    assert wrong["TX_TOKEN"] not in message and len(fake.seen) == 1  # no retries


async def test_rate_limit_is_retry_later_with_the_servers_delay(clock: SimpleNamespace) -> None:
    fake = FakeThreatExchange()
    fake.fail_at[1] = web.Response(status=429, headers={"Retry-After": "90"}, text="slow down")
    async with serving(fake.app()) as base:
        with pytest.raises(RetryLater) as info:
            await asyncio.to_thread(source(base, SourceState()).fetch, True)
    assert info.value.seconds == 90 and len(fake.seen) == 1  # the client's own retries are off


async def test_a_next_link_to_the_same_page_is_an_error_once_it_repeats(clock: SimpleNamespace) -> None:
    fake = FakeThreatExchange(size=2, stuck=True)
    seeded(fake)
    async with serving(fake.app()) as base:
        with pytest.raises(BlocklistError, match="did not move the checkpoint"):
            await asyncio.to_thread(source(base, SourceState()).fetch, True)
    assert len(fake.seen) == 3  # page two links to itself: read again, its checkpoint did not move, stop there


async def test_a_next_link_to_another_host_is_refused(clock: SimpleNamespace) -> None:
    fake = FakeThreatExchange(size=2, next_host="localhost")
    seeded(fake)
    async with serving(fake.app()) as base:
        with pytest.raises(BlocklistError, match="paging.next leaves the configured host") as info:
            await asyncio.to_thread(source(base, SourceState()).fetch, True)
    assert len(fake.seen) == 1 and ENV["TX_TOKEN"] not in str(info.value)


async def test_bad_updates_are_skipped_and_reported(clock: SimpleNamespace, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=threatexchange.__name__)
    fake = FakeThreatExchange(obey_types=False)
    pdqs = seeded(fake, 4)
    fake.add(update(300, "ab" * 30, NOW - 4500))  # a PDQ of 60 digits
    fake.add(update(301, "c" * 32, NOW - 4400, kind="HASH_MD5"))  # sent though only HASH_PDQ was asked for
    fake.add({"id": "302", "type": "HASH_PDQ", "last_updated": NOW - 4300, "should_delete": False})  # no indicator
    async with serving(fake.app()) as base:
        blocklist = await asyncio.to_thread(source(base, SourceState()).fetch, True)
    assert blocklist is not None and hashes(blocklist) == {u["indicator"] for u in pdqs}
    assert blocklist.skipped == 1 and "pdq hash must be 64 hex digits, got 60" in blocklist.errors[0]
    assert "7 ThreatExchange updates read; 1 of other types than HASH_PDQ not loaded" in caplog.text
    assert "1 updates unreadable, skipped" in caplog.text


async def test_duplicates_make_one_entry(clock: SimpleNamespace) -> None:
    fake = FakeThreatExchange(size=2)
    pdqs = seeded(fake)
    fake.repeats = [update(100, pdqs[0]["indicator"].upper(), NOW - 5000)]  # the same indicator on every page
    async with serving(fake.app()) as base:
        blocklist = await asyncio.to_thread(source(base, SourceState()).fetch, True)
    assert blocklist is not None and len(blocklist) == 5 and hashes(blocklist) == {u["indicator"] for u in pdqs}


async def test_a_checkpoint_older_than_the_tombstones_refetches_everything(
    tmp_path: Path, clock: SimpleNamespace
) -> None:
    fake = FakeThreatExchange()
    pdqs = seeded(fake)
    database = tmp_path / "events.db"
    async with serving(fake.app()) as base:
        await asyncio.to_thread(source(base, SourceState(database)).fetch, True)
        del fake.updates["101"]  # deleted, and its tombstone since expired
        clock.value += threatexchange.STALE_SECONDS + 1
        fake.seen.clear()
        blocklist = await asyncio.to_thread(source(base, SourceState(database)).fetch, True)
    assert "start_time" not in fake.seen[0]  # from the beginning
    assert blocklist is not None and hashes(blocklist) == {u["indicator"] for u in pdqs if u["id"] != "101"}


def test_config_parses_and_bad_options_are_errors_at_start(tmp_path: Path) -> None:
    text = f"""
[[lists.source]]
kind = "threatexchange"
name = "tx-group"
category = "terror"
action = "slate"
token_env = "TX_TOKEN"
privacy_group = {GROUP}
"""
    (spec,) = config_from(tmp_path, text).lists
    made = make_source(spec, SourceContext(env=ENV))
    assert isinstance(made, ThreatExchangeSource) and spec.where == "threatexchange:tx-group"
    assert made._client._base_url == "https://graph.facebook.com/v26.0"
    with pytest.raises(ValueError, match="the environment variable 'TX_TOKEN' \\(token_env\\) is not set"):
        LiveLists([spec], list, context=SourceContext(env={}))
    with pytest.raises(ValueError, match="\\$TX_TOKEN is not a ThreatExchange app access token") as info:
        make_source(spec, SourceContext(env={"TX_TOKEN": "user-token-abc"}))
    assert "user-token-abc" not in str(info.value)
    for line, message in (
        ('privacy_group = "x"\n', "privacy_group must be a ThreatPrivacyGroup id"),
        ('privacy_group = 3\ncolour = "red"\n', "threatexchange sources have no option 'colour'"),
    ):
        (bad,) = config_from(tmp_path, text.replace(f"privacy_group = {GROUP}\n", line)).lists
        with pytest.raises(ValueError, match=message):
            make_source(bad, SourceContext(env=ENV))

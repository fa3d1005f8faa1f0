"""The ``stopncii`` list source against a loopback server speaking StopNCII's FetchHashes JSON.

The fake serves ``GET /v1/FetchHashes`` as StopNCII documents it (and as
python-threatexchange's client reads it): the ``x-functions-key`` and
``Ocp-Apim-Subscription-Key`` headers, ``startTimestamp``/``pageSize``/
``nextPageToken``, and answers with ``hashRecords``, ``nextPageToken``,
``hasMoreRecords`` and ``nextSetTimestamp``.  The client is synchronous
(requests), so the source runs in a thread while the server runs on the
test's loop.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from harness import config_from, serving
from list_server import failures_keep_the_list

from livesafe.lists import BlocklistError, ListSpec
from livesafe.lists.live import LiveLists
from livesafe.lists.sources import RetryLater, SourceContext, SourceState, make_source, stopncii
from livesafe.lists.sources.stopncii import StopNciiSource

ENV = {"STOPNCII_FETCH_KEY": "fetch-key-" + "f" * 16, "STOPNCII_SUBSCRIPTION_KEY": "sub-key-" + "s" * 16}


def pdq() -> str:
    return secrets.token_hex(32)


def record(hash_value: str, modified: int, *, status: str = "Active", kind: str = "ImagePDQ") -> dict[str, Any]:
    return {
        "lastModtimestamp": modified,
        "signalType": kind,
        "hashValue": hash_value,
        "hashStatus": status,
        "caseNumbers": {f"case-{modified}": status, "case-old": "Withdrawn"},
        "CSPFeedbacks": [
            {"feedbackValue": "Blocked", "tags": ["x"], "source": "csp-a"},
            {"feedbackValue": "NotBlocked", "tags": [], "source": "csp-b"},
            {"feedbackValue": "PendingReview", "tags": [], "source": "csp-c"},
        ],
    }


@dataclass
class FakeStopNcii:
    records: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    size: int = 1000  # the server's own page cap
    seen: list[dict[str, str]] = field(default_factory=list)
    keys: list[tuple[str, str]] = field(default_factory=list)
    fail_at: dict[int, web.Response] = field(default_factory=dict)  # by request number (1-based)
    stuck: bool = False  # every page hands out the same token

    def add(self, rec: dict[str, Any]) -> dict[str, Any]:
        self.records[rec["signalType"], rec["hashValue"]] = rec
        return rec

    async def fetch_hashes(self, request: web.Request) -> web.Response:
        query = dict(request.query)
        self.seen.append(query)
        self.keys.append(
            (request.headers.get("x-functions-key", ""), request.headers.get("Ocp-Apim-Subscription-Key", ""))
        )
        if self.keys[-1] != (ENV["STOPNCII_FETCH_KEY"], ENV["STOPNCII_SUBSCRIPTION_KEY"]):
            return web.json_response({"statusCode": 401, "message": "Access denied"}, status=401)
        if len(self.seen) in self.fail_at:
            return self.fail_at.pop(len(self.seen))
        start = int(query["startTimestamp"])
        size = min(self.size, int(query["pageSize"]))
        at = int(query["nextPageToken"].split("-")[1]) if "nextPageToken" in query else 0
        window = sorted(
            (r for r in self.records.values() if r["lastModtimestamp"] >= start),
            key=lambda r: (r["lastModtimestamp"], r["hashValue"]),
        )
        page = window[at : at + size]
        more = self.stuck or at + size < len(window)
        token = f"tok-{size if self.stuck else at + size}" if more else None
        newest = max((r["lastModtimestamp"] for r in window), default=start - 1)
        body = {
            "count": len(page),
            "nextPageToken": token,
            "nextSetTimestamp": newest + 1,
            "hasMoreRecords": more,
            "hashRecords": page,
        }
        return web.json_response(body)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/FetchHashes", self.fetch_hashes)
        return app


def source(base: str, state: SourceState, env: dict[str, str] | None = None, **options: Any) -> StopNciiSource:
    spec = ListSpec(
        name="stopncii",
        kind="stopncii",
        category="ncii",
        url=base + "/v1",
        options={"key_env": "STOPNCII_FETCH_KEY", "subscription_key_env": "STOPNCII_SUBSCRIPTION_KEY", **options},
    )
    made = make_source(spec, SourceContext(state=state, env=ENV if env is None else env, http_timeout=5))
    assert isinstance(made, StopNciiSource)
    return made


def seeded(fake: FakeStopNcii, count: int = 5) -> list[dict[str, Any]]:
    return [fake.add(record(pdq(), 1000 + i)) for i in range(count)]


def hashes(blocklist: Any) -> set[str]:
    return {row.tobytes().hex() for row in blocklist.hashes.get("pdq", [])}


async def test_first_fetch_pages_through_with_metadata_and_keys(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=stopncii.__name__)
    fake = FakeStopNcii()
    images = seeded(fake)
    fake.add(record("c" * 32, 1003, kind="VideoMD5"))  # cannot match a stream: counted, never indexed
    async with serving(fake.app()) as base:
        blocklist = await asyncio.to_thread(source(base, SourceState(), page_size=2).fetch, True)
    assert blocklist is not None and hashes(blocklist) == {r["hashValue"] for r in images} and not blocklist.skipped
    assert set(blocklist.hashes) == {"pdq"} and dict(blocklist.unmatchable) == {"md5": 1}
    assert [(q["startTimestamp"], q["pageSize"], q.get("nextPageToken")) for q in fake.seen] == [
        ("10", "2", None),
        ("10", "2", "tok-2"),
        ("10", "2", "tok-4"),
    ]
    assert set(fake.keys) == {(ENV["STOPNCII_FETCH_KEY"], ENV["STOPNCII_SUBSCRIPTION_KEY"])}
    assert "6 StopNCII records read; 0 records of other types not loaded" in caplog.text
    by_hash = {m["entry"]: m for m in blocklist.metadata["pdq"]}
    assert by_hash["ImagePDQ:" + images[2]["hashValue"]] == {
        "source": "stopncii",
        "signal_type": "ImagePDQ",
        "hash_status": "Active",
        "case_numbers": "case-1002",
        "last_modified": "1002",
        "csp_feedback": "+csp-a,-csp-b",
        "entry": "ImagePDQ:" + images[2]["hashValue"],
    }


async def test_restart_resumes_from_the_checkpoint_and_deletes_are_tombstones(tmp_path: Path) -> None:
    fake = FakeStopNcii()
    images = seeded(fake)
    database = tmp_path / "events.db"
    async with serving(fake.app()) as base:
        await asyncio.to_thread(source(base, SourceState(database)).fetch, True)
        fake.seen.clear()
        restarted = source(base, SourceState(database))  # a new run on the same SQLite file
        kept = restarted.restore(True)
        assert kept is not None and hashes(kept) == {r["hashValue"] for r in images} and not fake.seen
        added = fake.add(record(pdq(), 2000))
        fake.add(record(images[1]["hashValue"], 2001, status="Deleted"))
        fake.add(record("d" * 32, 2001, kind="VideoMD5"))
        blocklist = await asyncio.to_thread(restarted.fetch, True)
        assert [q["startTimestamp"] for q in fake.seen] == ["1005"]  # the last nextSetTimestamp, not the start
        assert blocklist is not None
        assert hashes(blocklist) == {r["hashValue"] for r in images if r is not images[1]} | {added["hashValue"]}
        assert dict(blocklist.unmatchable) == {"md5": 1}
        fake.seen.clear()
        assert await asyncio.to_thread(restarted.fetch, True) is None  # nothing newer: unchanged
        assert [q["startTimestamp"] for q in fake.seen] == ["2002"]
        fake.add(record("d" * 32, 2002, kind="VideoMD5", status="Withdrawn"))  # a tombstone for the MD5
        blocklist = await asyncio.to_thread(restarted.fetch, True)
        assert blocklist is not None and not blocklist.unmatchable and len(blocklist) == len(images)


async def test_a_failure_mid_walk_resumes_at_the_saved_token(tmp_path: Path) -> None:
    fake = FakeStopNcii()
    images = seeded(fake)
    database = tmp_path / "events.db"
    fake.fail_at[2] = web.Response(status=500, text="boom")
    async with serving(fake.app()) as base:
        with pytest.raises(BlocklistError, match="HTTP 500"):
            await asyncio.to_thread(source(base, SourceState(database), page_size=2).fetch, True)
        fake.seen.clear()
        blocklist = await asyncio.to_thread(source(base, SourceState(database), page_size=2).fetch, True)
    assert [q.get("nextPageToken") for q in fake.seen] == ["tok-2", "tok-4"]  # page one is not read again
    assert blocklist is not None and hashes(blocklist) == {r["hashValue"] for r in images}


async def test_server_errors_keep_the_previous_list() -> None:
    fake = FakeStopNcii()
    seeded(fake)

    def inject(reply: web.StreamResponse) -> None:
        fake.fail_at[len(fake.seen) + 1] = reply

    failures = [
        (web.Response(status=500, text="down"), "HTTP 500"),
        (web.Response(status=502, text="bad gateway"), "HTTP 502"),
        (web.Response(text='{"count": 1, "hashRecords": [', content_type="application/json"), "malformed JSON"),
        (web.json_response({"hashRecords": []}), "malformed response, not StopNCII's FetchHashes JSON"),
    ]
    async with serving(fake.app()) as base:
        await failures_keep_the_list(source(base, SourceState()), inject, failures, ENV["STOPNCII_FETCH_KEY"])


async def test_unauthorized_is_a_clear_error_without_the_keys() -> None:
    fake = FakeStopNcii()
    wrong = {**ENV, "STOPNCII_SUBSCRIPTION_KEY": "not-the-key-456"}
    async with serving(fake.app()) as base:
        with pytest.raises(BlocklistError) as info:
            await asyncio.to_thread(source(base, SourceState(), env=wrong).fetch, True)
    message = str(info.value)
    assert "HTTP 401" in message and "$STOPNCII_FETCH_KEY / $STOPNCII_SUBSCRIPTION_KEY" in message
    assert "not-the-key-456" not in message and len(fake.seen) == 1  # no retries


async def test_rate_limit_is_retry_later_with_the_servers_delay() -> None:
    fake = FakeStopNcii()
    fake.fail_at[1] = web.Response(status=429, headers={"Retry-After": "45"}, text="slow down")
    async with serving(fake.app()) as base:
        with pytest.raises(RetryLater) as info:
            await asyncio.to_thread(source(base, SourceState()).fetch, True)
    assert info.value.seconds == 45 and len(fake.seen) == 1  # the client's own retries are off


async def test_a_token_that_never_ends_is_an_error_after_two_pages() -> None:
    fake = FakeStopNcii(stuck=True)
    seeded(fake)
    async with serving(fake.app()) as base:
        with pytest.raises(BlocklistError, match="did not move the checkpoint"):
            await asyncio.to_thread(source(base, SourceState(), page_size=2).fetch, True)
    assert len(fake.seen) == 2  # page two hands out the token it was asked with: the checkpoint did not move


async def test_a_hash_of_the_wrong_length_is_skipped_and_reported() -> None:
    fake = FakeStopNcii()
    images = seeded(fake, 4)
    fake.add(record("ab" * 31, 1001))
    async with serving(fake.app()) as base:
        blocklist = await asyncio.to_thread(source(base, SourceState()).fetch, True)
    assert blocklist is not None and hashes(blocklist) == {r["hashValue"] for r in images}
    assert blocklist.skipped == 1 and "pdq hash must be 64 hex digits, got 62" in blocklist.errors[0]


async def test_an_oversized_page_is_refused() -> None:
    fake = FakeStopNcii()
    seeded(fake)
    async with serving(fake.app()) as base:
        made = source(base, SourceState())
        small = make_source(made.spec, SourceContext(state=SourceState(), env=ENV, max_bytes=200))
        with pytest.raises(BlocklistError, match="over the 200-byte limit"):
            await asyncio.to_thread(small.fetch, True)


def test_config_parses_and_a_missing_key_is_an_error_at_start(tmp_path: Path) -> None:
    text = """
[[lists.source]]
kind = "stopncii"
name = "stopncii"
category = "ncii"
action = "blur"
key_env = "STOPNCII_FETCH_KEY"
subscription_key_env = "STOPNCII_SUBSCRIPTION_KEY"
page_size = 500
"""
    (spec,) = config_from(tmp_path, text).lists
    assert (spec.kind, spec.category, dict(spec.options)["page_size"]) == ("stopncii", "ncii", 500)
    assert isinstance(make_source(spec, SourceContext(env=ENV)), StopNciiSource)
    with pytest.raises(ValueError, match="'STOPNCII_SUBSCRIPTION_KEY' \\(subscription_key_env\\) is not set"):
        LiveLists([spec], list, context=SourceContext(env={"STOPNCII_FETCH_KEY": "k"}))
    (bad,) = config_from(tmp_path, text.replace("500", "5000")).lists
    with pytest.raises(ValueError, match="page_size must be 1..1000 records"):
        make_source(bad, SourceContext(env=ENV))

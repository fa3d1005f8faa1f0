"""The ``ncmec`` list source against a loopback server speaking NCMEC's hash-sharing XML.

The fake serves ``GET /hashsharing/v2/entries`` as NCMEC documents it (and as
python-threatexchange's client reads it): basic auth, ``from``/``to`` window,
``images``/``videos`` with ``deletedImage`` tombstones, and a ``paging/next``
link with ``start``/``size``/``max``.  The client is synchronous (requests),
so the source runs in a thread while the server runs on the test's loop.
The source's clock is set by the test (``clock``), so successive windows
need no waiting.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from xml.sax.saxutils import escape

import pytest
from aiohttp import web
from harness import config_from, serving
from list_server import failures_keep_the_list

from livesafe.lists import BlocklistError, ListSpec
from livesafe.lists.live import LiveLists
from livesafe.lists.sources import RetryLater, SourceContext, SourceState, make_source, ncmec
from livesafe.lists.sources.ncmec import NcmecSource

DATE = "%Y-%m-%dT%H:%M:%SZ"
ENV = {"NCMEC_USER": "esp-user", "NCMEC_PASSWORD": "s3cret-pass-" + "x" * 12}
NOW = 1_700_000_000


def pdq() -> str:
    return secrets.token_hex(32)


def stamp(ts: int) -> str:
    return datetime.fromtimestamp(ts).strftime(DATE)  # the client's format (naive local time, "Z")


@dataclass
class Record:
    id: str
    member: int
    ts: int
    fingerprints: dict[str, str]
    kind: str = "image"
    deleted: bool = False
    classification: str = "A1"

    def xml(self) -> str:
        if self.deleted:
            tag = "deleted" + self.kind.capitalize()
            return f'<{tag}><id>{self.id}</id><member id="{self.member}">M</member></{tag}>'
        prints = "".join(f"<{k}>{v}</{k}>" for k, v in self.fingerprints.items())
        return (
            f'<{self.kind}><id>{self.id}</id><member id="{self.member}">Member {self.member}</member>'
            f"<timestamp>{stamp(self.ts)}</timestamp><classification>{self.classification}</classification>"
            f"<fingerprints>{prints}</fingerprints></{self.kind}>"
        )


@dataclass
class FakeNcmec:
    records: dict[str, Record] = field(default_factory=dict)
    size: int = 2
    seen: list[dict[str, str]] = field(default_factory=list)
    auth: list[str] = field(default_factory=list)
    replies: list[web.Response] = field(default_factory=list)  # answered first, in order, instead of entries
    fail_at: dict[int, web.Response] = field(default_factory=dict)  # by request number (1-based)
    stuck: bool = False  # every page links to the same next page
    body: str | None = None  # answered instead of entries

    def add(self, record: Record) -> Record:
        self.records[record.id] = record
        return record

    async def entries(self, request: web.Request) -> web.Response:
        query = dict(request.query)
        self.seen.append(query)
        self.auth.append(request.headers.get("Authorization", ""))
        user, password = ENV["NCMEC_USER"], ENV["NCMEC_PASSWORD"]
        if request.headers.get("Authorization") != "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode():
            return web.Response(status=401, text="unauthorized")
        if self.replies:
            return self.replies.pop(0)
        if len(self.seen) in self.fail_at:
            return self.fail_at.pop(len(self.seen))
        if self.body is not None:
            return web.Response(text=self.body, content_type="application/xml")
        start, end = (int(datetime.strptime(query[k], DATE).timestamp()) for k in ("from", "to"))
        window = sorted((r for r in self.records.values() if start <= r.ts <= end), key=lambda r: r.id)
        at = int(query.get("start", 0))
        page = window[at : at + self.size]
        images = "".join(r.xml() for r in page if r.kind == "image")
        videos = "".join(r.xml() for r in page if r.kind == "video")
        top = stamp(max((r.ts for r in page), default=start))
        following = self.size if self.stuck else at + self.size
        link = ""
        if self.stuck or following < len(window):
            link = escape(f"/v2/entries?from={query['from']}&to={query['to']}&start={following}&size={self.size}")
            link = f"<paging><next>{link}&amp;max={len(window)}</next></paging>"
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>'
            '<queryResult xmlns="https://hashsharing.ncmec.org/hashsharing/v2">'
            f'<images count="{len(page)}" maxTimestamp="{top}">{images}</images>'
            f'<videos count="{len(page)}" maxTimestamp="{top}">{videos}</videos>'
            f"{link}</queryResult>"
        )
        return web.Response(text=body, content_type="application/xml")

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/hashsharing/v2/entries", self.entries)
        return app


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """The source's ``time.time`` (only the ncmec module's name for it), moved on by the test."""
    now = SimpleNamespace(value=float(NOW))
    monkeypatch.setattr(ncmec, "time", SimpleNamespace(time=lambda: now.value))
    return now


def source(base: str, state: SourceState, env: dict[str, str] | None = None, **options: Any) -> NcmecSource:
    spec = ListSpec(
        name="ncmec",
        kind="ncmec",
        category="csam",
        url=base + "/hashsharing",
        options={"user_env": "NCMEC_USER", "password_env": "NCMEC_PASSWORD", **options},
    )
    made = make_source(spec, SourceContext(state=state, env=ENV if env is None else env, http_timeout=5))
    assert isinstance(made, NcmecSource)
    return made


def seeded(fake: FakeNcmec, count: int = 5) -> list[Record]:
    return [fake.add(Record(f"img{i}", 42, NOW - 5000 + i, {"md5": "a" * 32, "pdq": pdq()})) for i in range(count)]


def hashes(blocklist: Any) -> set[str]:
    return {row.tobytes().hex() for row in blocklist.hashes.get("pdq", [])}


async def test_first_fetch_pages_through_with_metadata_and_credentials(
    clock: SimpleNamespace, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=ncmec.__name__)
    fake = FakeNcmec()
    images = seeded(fake)
    fake.add(Record("vid1", 7, NOW - 4000, {"md5": "b" * 32}, kind="video"))  # MD5 only: cannot match a stream
    async with serving(fake.app()) as base:
        blocklist = await asyncio.to_thread(source(base, SourceState()).fetch, True)
    assert blocklist is not None
    assert hashes(blocklist) == {r.fingerprints["pdq"] for r in images} and blocklist.skipped == 0
    assert set(blocklist.hashes) == {"pdq"} and dict(blocklist.unmatchable) == {"md5": 6}  # counted, never indexed
    assert len(fake.seen) == 3 and [q.get("start") for q in fake.seen] == [None, "2", "4"]  # 6 entries, 2 a page
    assert fake.seen[0]["from"] == stamp(0) and fake.seen[0]["to"] == stamp(NOW - ncmec.SETTLE_SECONDS)
    expected = "Basic " + base64.b64encode(b"esp-user:" + ENV["NCMEC_PASSWORD"].encode()).decode()
    assert set(fake.auth) == {expected}  # from the environment variables the options name
    assert "6 NCMEC entries read" in caplog.text
    assert "1 entries with no PDQ not enforced" in caplog.text
    by_id = {m["ncmec_id"]: m for m in blocklist.metadata["pdq"]}
    assert by_id["img3"] == {
        "source": "ncmec",
        "ncmec_id": "img3",
        "member_id": "42",
        "entry_type": "image",
        "classification": "A1",
        "entry": "42-img3",
    }


async def test_member_filter_keeps_only_those_members(clock: SimpleNamespace) -> None:
    fake = FakeNcmec()
    seeded(fake, 2)
    other = fake.add(Record("img9", 99, NOW - 3000, {"pdq": pdq()}))
    async with serving(fake.app()) as base:
        blocklist = await asyncio.to_thread(source(base, SourceState(), member_ids=[42]).fetch, True)
    assert blocklist is not None and len(blocklist) == 2 and other.fingerprints["pdq"] not in hashes(blocklist)


async def test_restart_resumes_from_the_checkpoint_and_deletes_are_tombstones(
    tmp_path: Path, clock: SimpleNamespace
) -> None:
    fake = FakeNcmec()
    images = seeded(fake)
    database = tmp_path / "events.db"
    async with serving(fake.app()) as base:
        await asyncio.to_thread(source(base, SourceState(database)).fetch, True)
        first_end = NOW - ncmec.SETTLE_SECONDS
        fake.seen.clear()
        restarted = source(base, SourceState(database))  # a new run on the same SQLite file
        kept = restarted.restore(True)
        assert kept is not None and hashes(kept) == {r.fingerprints["pdq"] for r in images} and not fake.seen
        assert dict(kept.unmatchable) == {"md5": 5}  # the MD5s are kept with their entries
        clock.value += 600
        added = fake.add(Record("img7", 42, first_end + 100, {"pdq": pdq()}))
        fake.add(Record(images[1].id, 42, first_end + 200, {}, deleted=True))
        blocklist = await asyncio.to_thread(restarted.fetch, True)
    assert [q["from"] for q in fake.seen] == [stamp(first_end)]  # the checkpoint, not the beginning
    assert blocklist is not None
    assert hashes(blocklist) == {r.fingerprints["pdq"] for r in images if r is not images[1]} | {
        added.fingerprints["pdq"]
    }
    assert dict(blocklist.unmatchable) == {"md5": 4}  # the deleted entry's MD5 went with it; img7 has none


async def test_md5s_are_on_the_status_and_warned_about_at_each_load(
    clock: SimpleNamespace, caplog: pytest.LogCaptureFixture
) -> None:
    fake = FakeNcmec()
    seeded(fake, 3)
    async with serving(fake.app()) as base:
        spec_source = source(base, SourceState())
        lists = await asyncio.to_thread(lambda: LiveLists([spec_source.spec], list, context=spec_source.context))
        assert lists.status()[0]["unmatchable"] == {"md5": 3} and lists.status()[0]["entries"] == 3
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert warnings == [
            "list 'ncmec': 3 md5 hash(es) loaded but never enforced: a file digest matches only a byte-identical "
            "file, never a re-encoded live stream"
        ]
        clock.value += 600
        fake.add(Record("img8", 42, NOW + 100, {"md5": "c" * 32, "pdq": pdq()}))
        await asyncio.to_thread(lists.reload_if_changed)
    assert lists.status()[0]["unmatchable"] == {"md5": 4}
    assert sum("md5 hash(es) loaded but never enforced" in r.getMessage() for r in caplog.records) == 2


async def test_a_failure_mid_window_resumes_at_the_next_link(tmp_path: Path, clock: SimpleNamespace) -> None:
    fake = FakeNcmec()
    images = seeded(fake)
    database = tmp_path / "events.db"
    fake.fail_at[2] = web.Response(status=500, text="boom")  # the second page
    async with serving(fake.app()) as base:
        with pytest.raises(BlocklistError, match="HTTP 500"):
            await asyncio.to_thread(source(base, SourceState(database)).fetch, True)
        fake.seen.clear()
        blocklist = await asyncio.to_thread(source(base, SourceState(database)).fetch, True)  # a restart
    assert [q.get("start") for q in fake.seen] == ["2", "4"]  # the saved next link: page one is not read again
    assert blocklist is not None and hashes(blocklist) == {r.fingerprints["pdq"] for r in images}


async def test_server_errors_keep_the_previous_list(clock: SimpleNamespace) -> None:
    fake = FakeNcmec()
    seeded(fake)

    def inject(reply: web.StreamResponse) -> None:
        clock.value += 60
        fake.replies = [reply]

    failures = [
        (web.Response(status=500, text="down"), "HTTP 500"),
        (web.Response(text="<queryResult><images", content_type="application/xml"), "malformed XML"),
        (
            web.Response(text="<queryResult><images maxTimestamp='x'><image/></images></queryResult>"),
            "malformed response, not NCMEC's entries XML",
        ),
    ]
    async with serving(fake.app()) as base:
        await failures_keep_the_list(source(base, SourceState()), inject, failures, ENV["NCMEC_PASSWORD"])


async def test_unauthorized_is_a_clear_error_without_the_secret(clock: SimpleNamespace) -> None:
    fake = FakeNcmec()
    seeded(fake)
    wrong = {**ENV, "NCMEC_PASSWORD": "not-the-password-123"}
    async with serving(fake.app()) as base:
        with pytest.raises(BlocklistError) as info:
            await asyncio.to_thread(source(base, SourceState(), env=wrong).fetch, True)
    message = str(info.value)
    assert "HTTP 401" in message and "$NCMEC_USER / $NCMEC_PASSWORD" in message
    assert "not-the-password-123" not in message and len(fake.seen) == 1  # no retries


async def test_rate_limit_is_retry_later_with_the_servers_delay(clock: SimpleNamespace) -> None:
    fake = FakeNcmec()
    fake.replies = [web.Response(status=429, headers={"Retry-After": "120"}, text="slow down")]
    async with serving(fake.app()) as base:
        with pytest.raises(RetryLater) as info:
            await asyncio.to_thread(source(base, SourceState()).fetch, True)
    assert info.value.seconds == 120 and len(fake.seen) == 1  # the client's own retries are off


async def test_a_page_that_never_ends_is_an_error_after_two_pages(clock: SimpleNamespace) -> None:
    fake = FakeNcmec(stuck=True)
    seeded(fake)
    async with serving(fake.app()) as base:
        with pytest.raises(BlocklistError, match="did not move the checkpoint"):
            await asyncio.to_thread(source(base, SourceState()).fetch, True)
    assert len(fake.seen) == 2  # page two links to itself: the checkpoint did not move, stop there


async def test_a_hash_of_the_wrong_length_is_skipped_and_reported(clock: SimpleNamespace) -> None:
    fake = FakeNcmec()
    images = seeded(fake, 4)
    fake.add(Record("img-short", 42, NOW - 4500, {"pdq": "ab" * 30}))
    async with serving(fake.app()) as base:
        blocklist = await asyncio.to_thread(source(base, SourceState()).fetch, True)
    assert blocklist is not None and hashes(blocklist) == {r.fingerprints["pdq"] for r in images}
    assert blocklist.skipped == 1 and "pdq hash must be 64 hex digits, got 60" in blocklist.errors[0]


def test_config_parses_and_a_missing_credential_is_an_error_at_start(tmp_path: Path) -> None:
    text = """
[[lists.source]]
kind = "ncmec"
name = "ncmec-industry"
category = "csam"
action = "slate"
environment = "test_Industry"
user_env = "NCMEC_USER"
password_env = "NCMEC_PASSWORD"
member_ids = [42, 7]
poll_seconds = 120
"""
    (spec,) = config_from(tmp_path, text).lists
    assert (spec.kind, spec.name, spec.category, spec.action, spec.poll_seconds) == (
        "ncmec", "ncmec-industry", "csam", "slate", 120
    )  # fmt: skip
    made = make_source(spec, SourceContext(env=ENV))
    assert isinstance(made, NcmecSource) and spec.where == "ncmec:ncmec-industry"
    assert made._base_url == "https://exttest.cybertip.org/hashsharing"
    with pytest.raises(ValueError, match="the environment variable 'NCMEC_PASSWORD' \\(password_env\\) is not set"):
        LiveLists([spec], list, context=SourceContext(env={"NCMEC_USER": "u"}))
    for extra, message in (
        ('environment = "Moon"\n', "unknown NCMEC environment 'Moon'"),
        ('colour = "red"\n', "ncmec sources have no option 'colour'"),
    ):
        (bad,) = config_from(tmp_path, text.replace('environment = "test_Industry"\n', extra)).lists
        with pytest.raises(ValueError, match=message):
            make_source(bad, SourceContext(env=ENV))

"""What moderators and tools see of the lists: /api/lists, /metrics, lists.stale, /api/lookup, allow lists, floods."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiohttp import web
from harness import ICE, config_error, config_from, serving
from list_server import ThreadedServer

from livesafe.events import LISTS_FLOOD, MATCH_STARTED, GuardEvent
from livesafe.guard.matcher import LiveMatcher, Matcher
from livesafe.guard.stream_guard import GuardSettings
from livesafe.lists import ListSpec, build_blocklist
from livesafe.lists.live import ListWatcher
from livesafe.moderation.flood import FloodWatch
from livesafe.moderation.service import Moderation
from livesafe.moderation.settings import ModerationSettings, Principal
from livesafe.moderation.store.sqlite import SqliteStore
from livesafe.proxy import build_proxy
from livesafe.relay.settings import RelaySettings

MOD = Principal("mo", "moderator", "m" * 20)
OBSERVER = Principal("ob", "observer", "o" * 20)
HASH_A = "ab" * 32
HASH_B = "cd" * 32


def flipped(hex_text: str, bits: int) -> str:
    """``hex_text`` with its first ``bits`` bits inverted."""
    value = bytearray(bytes.fromhex(hex_text))
    for bit in range(bits):
        value[bit // 8] ^= 0x80 >> (bit % 8)
    return value.hex()


class ListServer(ThreadedServer):
    """One list at /list.txt; ``status`` 200 serves ``body``, anything else is an outage."""

    def __init__(self, body: str) -> None:
        super().__init__(self._answer)
        self.body = body
        self.status = 200

    @property
    def url(self) -> str:
        return f"{self.base}/list.txt"

    async def _answer(self, request: web.Request) -> web.Response:
        return web.Response(status=self.status, text=self.body if self.status == 200 else "down")


def proxy_with(lists: LiveMatcher, watcher: ListWatcher | None = None):  # type: ignore[no-untyped-def]
    return build_proxy(
        RelaySettings(ice=ICE),
        lambda: lists.current,
        GuardSettings(),
        ModerationSettings(database=":memory:", tokens=(MOD, OBSERVER)),
        watcher,
        lists=lists,
    )


def auth(principal: Principal) -> dict[str, str]:
    return {"Authorization": f"Bearer {principal.token}"}


async def wait_for(condition: Callable[[], Awaitable[object]], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await condition():
            return True
        await asyncio.sleep(0.05)
    return False


# ------------------------------------------------------------------ status


async def test_api_lists_metrics_and_a_stale_source_paging_then_recovering(tmp_path: Path) -> None:
    """A URL source goes down: the last good list stays in force, its status says so, /metrics counts the
    failures, and once down longer than max_stale_seconds one high-severity lists.stale event goes out;
    when it answers again, lists.recovered."""
    local = tmp_path / "local.txt"
    local.write_text(f"pdq {HASH_A}\n")
    with ListServer(f"pdq {HASH_B}\npdq {flipped(HASH_B, 100)}\n").running() as server:
        lists = LiveMatcher(
            [
                ListSpec(path=local, name="local", category="csam"),
                ListSpec(
                    kind="url", url=server.url, name="remote", category="ncii", poll_seconds=0.1, max_stale_seconds=0.5
                ),
            ]
        )
        proxy = proxy_with(lists, ListWatcher(lists, interval=0.1))
        async with serving(proxy.app) as base, aiohttp.ClientSession() as http:
            async with http.get(f"{base}/api/lists") as reply:
                assert reply.status == 401
            async with http.get(f"{base}/api/lists", headers=auth(OBSERVER)) as reply:
                assert reply.status == 200
                by_name = {entry["name"]: entry for entry in (await reply.json())["lists"]}
            assert by_name["local"]["kind"] == "file" and by_name["local"]["entries"] == 1
            remote = by_name["remote"]
            assert (remote["kind"], remote["source"], remote["entries"]) == ("url", server.url, 2)
            assert remote["last_error"] is None and remote["stale"] is False and remote["last_success"] is not None
            in_force = lists.current

            server.status = 500

            async def events(kind: str) -> list[dict[str, Any]]:
                async with http.get(f"{base}/api/events?type={kind}", headers=auth(OBSERVER)) as reply:
                    return list((await reply.json())["events"])

            assert await wait_for(lambda: events("lists.stale")), "no lists.stale event"
            async with http.get(f"{base}/api/events?type=lists.stale", headers=auth(OBSERVER)) as reply:
                (event,) = (await reply.json())["events"]
            assert event["severity"] == "high" and event["list_name"] == "remote" and event["category"] == "ncii"
            assert "500" in event["last_error"]
            assert lists.current is in_force, "a failing source replaced the list in force"
            async with http.get(f"{base}/api/lists", headers=auth(MOD)) as reply:
                remote = {e["name"]: e for e in (await reply.json())["lists"]}["remote"]
            assert remote["stale"] is True and remote["entries"] == 2 and remote["failures"] >= 1
            assert "500" in remote["last_error"]
            async with http.get(f"{base}/metrics") as reply:
                metrics = await reply.text()
            assert 'livesafe_list_source_entries{list="remote",kind="url"} 2' in metrics
            assert 'livesafe_list_source_entries{list="local",kind="file"} 1' in metrics
            version = lists.current.blocklists[0].version
            assert f'livesafe_list_source_info{{list="local",kind="file",version="{version}"}} 1' in metrics
            assert 'livesafe_list_source_stale{list="remote",kind="url"} 1' in metrics
            assert 'livesafe_list_source_stale{list="local",kind="file"} 0' in metrics
            assert 'livesafe_list_source_failing{list="remote",kind="url"} 1' in metrics
            async with http.get(f"{base}/healthz") as reply:
                assert reply.status == 503, "a stale list source is not healthy"
                health = await reply.json()
            assert health["status"] == "stale_lists" and health["stale_sources"] == ["remote"], health

            server.status = 200

            assert await wait_for(lambda: events("lists.recovered")), "no lists.recovered event"
            assert len(await events("lists.stale")) == 1, "one outage, one page"
            async with http.get(f"{base}/healthz") as reply:
                assert reply.status == 200 and "stale_sources" not in await reply.json()
            async with http.get(f"{base}/metrics") as reply:
                assert 'livesafe_list_source_stale{list="remote",kind="url"} 0' in await reply.text()


# ------------------------------------------------------------------ lookup


async def test_lookup_answers_in_hmas_shape_with_distances_metadata_and_allow_entries(tmp_path: Path) -> None:
    blocked = tmp_path / "blocked.csv"
    blocked.write_text(f"signal_type,signal_str,case\npdq,{HASH_A},case-17\npdq,{flipped(HASH_A, 40)},case-18\n")
    allowed = tmp_path / "allowed.txt"
    allowed.write_text(f"pdq {flipped(HASH_A, 3)}\n")
    other = tmp_path / "other.txt"
    other.write_text(f"pdq {HASH_B}\n")
    lists = LiveMatcher(
        [
            ListSpec(path=blocked, name="blocked", category="csam"),
            ListSpec(path=allowed, name="fp", action="allow"),
            ListSpec(path=other, name="other"),
        ]
    )
    proxy = proxy_with(lists)
    query = flipped(HASH_A, 2)
    async with serving(proxy.app) as base, aiohttp.ClientSession() as http:
        async with http.get(f"{base}/api/lookup?signal_type=pdq&signal={query}") as reply:
            assert reply.status == 401
        for path in ("/api/lookup", "/m/lookup"):
            async with http.get(f"{base}{path}?signal_type=pdq&signal={query}", headers=auth(OBSERVER)) as reply:
                assert reply.status == 200, await reply.text()
                answer = await reply.json()
            assert sorted(answer) == ["blocked", "fp"], answer  # other's entry is 256-ish bits away
            (hit,) = answer["blocked"]  # the entry 40 bits away is beyond pdq's threshold
            assert hit["distance"] == "2" and hit["distance_bits"] == 2 and hit["signal"] == HASH_A
            assert hit["metadata"]["case"] == "case-17" and hit["category"] == "csam"
            assert hit["bank_content_id"] == "line:2"
            (allow,) = answer["fp"]
            assert allow["action"] == "allow" and allow["distance_bits"] == 1
        async with http.get(f"{base}/api/lookup?signal={query}&banks=fp", headers=auth(MOD)) as reply:
            assert sorted(await reply.json()) == ["fp"]
        for bad, says in (
            ("signal_type=pdq&signal=abc", "64 hex digits"),
            ("signal_type=sha1&signal=" + HASH_A, "No such SignalType"),
            ("signal_type=pdq", "signal: required"),
        ):
            async with http.get(f"{base}/api/lookup?{bad}", headers=auth(MOD)) as reply:
                assert reply.status == 400 and says in await reply.text()


# ----------------------------------------------------------- allow lists


def _matcher(*lists: tuple[str, str, list[str]]) -> Matcher:
    return Matcher(
        [
            build_blocklist(ListSpec(name=name, action=action), [("pdq", h, {}) for h in hashes], "v1")
            for name, action, hashes in lists
        ]
    )


def _query(hex_text: str) -> np.ndarray:
    return np.frombuffer(bytes.fromhex(hex_text), np.uint8).reshape(1, -1)


def test_an_allow_list_entry_stops_a_blocklist_matching_that_picture_and_nothing_else() -> None:
    block = ("blocked", "slate", [HASH_A, HASH_B])
    assert [hit[0] for hit in _matcher(block).lookup("pdq", _query(flipped(HASH_A, 5)))] == [0]
    with_allow = _matcher(block, ("fp", "allow", [flipped(HASH_A, 8)]))
    assert with_allow.lookup("pdq", _query(flipped(HASH_A, 5))) == [], "the allow entry did not override"
    (hit,) = with_allow.lookup("pdq", _query(HASH_B))  # another listed picture still matches
    assert hit[1] == 0 and hit[3] == 0
    assert with_allow.lookup("pdq", _query(flipped(HASH_B, 2)), margin=10)  # near hits too, off the allow entry


def test_an_allow_list_alone_makes_the_guard_hash_nothing() -> None:
    only_allow = Matcher([build_blocklist(ListSpec(name="fp", action="allow"), [("phash", "ab" * 8, {})], "v1")])
    assert only_allow.signals == frozenset()


# ------------------------------------------------------------------ floods


def test_flood_watch_quarantines_an_entry_past_its_limit_pages_once_and_lifts_after_the_window() -> None:
    watch = FloodWatch(lambda name: (3, 60.0))
    key = ("l", "pdq", HASH_A)
    verdicts = [watch.saw(key, f"s{i}", 100.0 + i) for i in range(3)]
    assert not any(v.quarantined for v in verdicts)
    assert watch.saw(key, "s0", 104.0).quarantined is False, "the same stream again is not a new one"
    fourth = watch.saw(key, "s3", 105.0)
    assert fourth.quarantined and fourth.page and fourth.streams == 4
    fifth = watch.saw(key, "s4", 106.0)
    assert fifth.quarantined and not fifth.page, "paged twice for one flood"
    assert [q["matched_hash"] for q in watch.quarantined(107.0)] == [HASH_A]
    assert watch.saw(("l", "pdq", HASH_B), "s9", 107.0).quarantined is False, "another entry is not quarantined"
    assert watch.quarantined(200.0) == [], "the quarantine outlived a quiet window"
    again = [watch.saw(key, f"t{i}", 300.0 + i) for i in range(4)]
    assert again[-1].page, "a new flood after the quarantine lifted must page again"


def test_flood_watch_counts_mirrored_matches_but_pages_only_for_its_own() -> None:
    watch = FloodWatch(lambda name: (1, 60.0))
    key = ("l", "pdq", HASH_A)
    assert watch.saw(key, "a", 1.0, own=False).page is False
    assert watch.saw(key, "b", 2.0, own=False).quarantined is True
    watch.paged_elsewhere(key)
    assert watch.saw(key, "c", 3.0).page is False, "another node paged already"


def test_flood_watch_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(FloodWatch, "MAX_TRACKED", 50)
    watch = FloodWatch()
    for i in range(500):
        watch.saw(("l", "pdq", f"{i:064x}"), "s", float(i))
    assert len(watch._entries) == 50


def test_a_hash_matching_too_many_streams_is_quarantined_still_redacting_and_pages_moderators(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    moderation = Moderation(ModerationSettings(database=str(path)), SqliteStore(path))
    moderation.flood.limits = lambda name: (3, 600.0)

    def match(stream: str) -> None:
        moderation.record_fact(
            GuardEvent(
                type=MATCH_STARTED,
                stream_id=stream,
                frame_index=0,
                pts=None,
                media_time=0.0,
                action="slate",
                list_name="popular",
                category="csam",
                signal="pdq",
                distance=4,
                matched_hash=HASH_A,
            )
        )

    try:
        for i in range(6):
            match(f"stream-{i}")
        events = moderation.store.events.read(0, limit=100)
        matches = [e for e in events if e.type == MATCH_STARTED]
        assert len(matches) == 6, "every match is still an event (and still redacts)"
        assert [bool(e.data.get("quarantined")) for e in matches] == [False] * 3 + [True] * 3
        assert [e.severity for e in matches][3:] == ["high"] * 3
        (flood,) = [e for e in events if e.type == LISTS_FLOOD]
        assert flood.severity == "high" and flood.stream_id is None
        assert flood.data["list_name"] == "popular" and flood.data["matched_hash"] == HASH_A
        assert flood.data["streams"] == 4 and flood.data["stream_ids"][:2] == ["stream-0", "stream-1"]
    finally:
        moderation.close()


def test_config_sets_flood_limits_and_allow_lists_per_list(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text(f"pdq {HASH_A}\n")
    config = config_from(
        tmp_path,
        '[[lists.file]]\npath = "a.txt"\ncategory = "csam"\nflood_streams = 3\nflood_window_seconds = 60\n'
        '[[lists.file]]\npath = "a.txt"\nname = "fp"\ncategory = "csam"\naction = "allow"\n',
    )
    first, allow = config.lists
    assert (first.flood_streams, first.flood_window_seconds) == (3, 60)
    assert (allow.action, allow.flood_streams) == ("allow", 10)
    error = config_error(tmp_path, '[[lists.file]]\npath = "a.txt"\ncategory = "csam"\nflood_streams = 0\n')
    assert "flood_streams must be a whole number >= 1" in error
    error = config_error(tmp_path, '[[lists.file]]\npath = "a.txt"\ncategory = "csam"\nallow_empty = "yes"\n')
    assert "allow_empty must be true or false" in error

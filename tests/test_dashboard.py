"""The moderators' dashboard (/dashboard) in a real headless Chromium against a real relay.

It signs in with a token (says why without one, read-only for an observer), shows a
stream, receives its interruption over the live feed without a reload, shows no picture
until a blurred preview is asked for, sends a moderator's action with a reason that
lands in the audit log, shows the server's reason when an action is refused, asks before
terminating, flags a failing webhook, resumes its feed after a relay restart from the
last event it saw -- and shows attacker-chosen text as text.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from harness import FAST_END, ICE, RunningRelay, chromium, publishing, running_relay, serving, wait_for_script

from livesafe.events import STREAM_CUT, STREAM_ENDED, WEBHOOK_FAILED, Event
from livesafe.guard.matcher import LiveMatcher, Matcher
from livesafe.guard.stream_guard import GuardSettings
from livesafe.lists import ListSpec
from livesafe.lists.live import ListWatcher
from livesafe.moderation.settings import ModerationSettings, Principal, WebhookEndpoint
from livesafe.moderation.store.sqlite import SqliteStore
from livesafe.proxy import build_proxy
from livesafe.relay.settings import RelaySettings, StreamAccess

KEY = "s1-stream-key-3c9a7e"
ALICE = Principal("alice", "moderator", "a" * 20)
BOB = Principal("bob", "observer", "b" * 20)
XSS = "<img src=x onerror=window.pwned=1>"
STATE = "window.livesafeDashboard"
ROW = '#streams tr[data-stream="s1"]'
# How s1 is published: the clip over and over (45 s at most); how the publisher ends (terminate cuts it)
# is not the page's business.
LOOPED = {"loop": True, "duration": 45, "tolerate": (Exception,)}


@pytest.fixture(scope="module")
def clip(blocked_cut_360p: Path) -> Path:
    """The sample at 360p (its blocked segment starts at 2.5 s), looped by the publishers."""
    return blocked_cut_360p


# ------------------------------------------------------------------ helpers


def q(selector: str) -> str:
    """JavaScript for the page's first element matching ``selector`` (or null)."""
    return f"document.querySelector({json.dumps(selector)})"


def text(selector: str) -> str:
    return f"{q(selector)}?.textContent"


def shown(selector: str) -> str:
    return f"getComputedStyle({q(selector)}).display !== 'none'"


def _wait(driver: Any, script: str, timeout: float) -> Any:
    return wait_for_script(driver, script, timeout, context=f"return JSON.stringify({STATE})", interval=0.1)


async def wait(driver: Any, script: str, timeout: float = 20.0) -> Any:
    """Poll ``script`` in the page until it returns something truthy (bounded); Selenium blocks, so in a thread."""
    return await asyncio.to_thread(_wait, driver, script, timeout)


async def js(driver: Any, script: str) -> Any:
    return await asyncio.to_thread(driver.execute_script, script)


def _type(driver: Any, selector: str, value: str) -> None:
    field = driver.find_element("css selector", selector)
    field.clear()
    field.send_keys(value)


async def type_into(driver: Any, selector: str, value: str) -> None:
    await asyncio.to_thread(_type, driver, selector, value)


def _dialog(driver: Any) -> Any:
    from selenium.webdriver.support import expected_conditions  # selenium is optional: chromium() skips without it
    from selenium.webdriver.support.wait import WebDriverWait

    return WebDriverWait(driver, 10).until(expected_conditions.alert_is_present())


async def use_token(driver: Any, token: str) -> None:
    await type_into(driver, "#token", token)
    await js(driver, f"{q('#token-save')}.click()")


async def sign_in(driver: Any, token: str, name: str) -> None:
    await use_token(driver, token)
    await wait(driver, f"const w = {STATE}.whoami; return w && w.name === {json.dumps(name)} && {STATE}.feedConnected")


async def press(driver: Any, action: str, reason: str | None) -> None:
    """Type ``reason`` (unless None) into s1's row and press its ``action`` button."""
    if reason is not None:
        await type_into(driver, f"{ROW} input.reason", reason)
    await js(driver, f"{q(f'{ROW} button.act-{action}')}.click()")


@contextlib.asynccontextmanager
async def browser() -> AsyncIterator[Any]:
    driver = await asyncio.to_thread(chromium)
    try:
        yield driver
    finally:
        await asyncio.to_thread(driver.quit)


@contextlib.asynccontextmanager
async def dashboard(r: RunningRelay) -> AsyncIterator[Any]:
    async with browser() as driver:
        await asyncio.to_thread(driver.get, f"{r.base}/dashboard")
        yield driver


# -------------------------------------------------------------------- tests


async def test_a_moderator_sees_the_match_arrive_live_and_keeps_the_redaction_on_the_record(clip: Path):
    settings = RelaySettings(streams={"s1": StreamAccess(key=KEY, profile="child")}, ice=ICE, stream=FAST_END)
    moderation = ModerationSettings(database=":memory:", tokens=(ALICE, BOB), preview=True)
    # Held 5 s after the last match, the looped clip (a 1.5 s match every 6 s) stays redacted: keep is always valid.
    async with (
        running_relay(settings, guard=GuardSettings(hold_seconds=5.0), moderation=moderation) as r,
        dashboard(r) as driver,
    ):
        # Stream keys are set, so the API is not open: without a token, or with a wrong one, the page says why.
        assert "401" in await wait(driver, f"return {text('#error')}")
        await use_token(driver, "not-a-real-token-123")
        assert "unknown token" in await wait(driver, f"const t = {text('#error')}; return t.includes('refused') && t")
        assert await js(driver, f"return {STATE}.whoami") is None

        await sign_in(driver, BOB.token, "bob")
        assert await js(driver, f"return {text('#who')}") == "bob · observer"
        async with publishing(r, clip, "s1", KEY, **LOOPED):
            await wait(driver, f"return {q(ROW)}")
            # An observer reads everything but cannot act.
            assert await js(
                driver, "return [...document.querySelectorAll('#streams button.act')].every((b) => b.disabled)"
            )

            await sign_in(driver, ALICE.token, "alice")
            assert await js(
                driver, "return [...document.querySelectorAll('#streams button.act')].every((b) => !b.disabled)"
            )
            # The token stays in this tab's sessionStorage: not in the URL, not in localStorage.
            assert await js(driver, "return sessionStorage.getItem('livesafe.token')") == ALICE.token
            assert await js(driver, "return localStorage.length") == 0
            assert ALICE.token not in driver.current_url

            # The match arrives over the feed (the page was open before the stream existed).
            await wait(driver, f"return {STATE}.liveTypes['match.started'] > 0")
            match_row = q('#feed tr[data-type="match.started"]')
            assert await js(driver, f"return {match_row}.dataset.live") == "1"
            # The child profile makes it high severity: a red row, an alarm, a marked page title.
            assert await js(driver, f"return {match_row}.classList.contains('high') && {shown('#alarm')}")
            assert "HIGH" in await js(driver, "return document.title")
            match = r.moderation.store.events.read(types=["match.started"])[0]
            feed_text = await js(driver, f"return {q('#feed')}.innerText")
            assert match.data["list_name"] in feed_text and match.data["matched_hash"][:12] in feed_text
            assert match.data["matched_hash"] not in feed_text  # hashes only truncated

            await wait(driver, f"return {text(f'{ROW} .state')} === 'redacted'")
            # No picture anywhere until the moderator asks for the blurred preview; then one, from a revoked object URL.
            assert await js(driver, "return [...document.images].filter((i) => i.src).length") == 0
            await js(driver, f"{q(f'{ROW} button.preview')}.click()")
            await wait(driver, f"const i = {q('#preview-image')}; return i.complete && i.naturalWidth > 0")
            assert await js(driver, f"return {shown('#preview-panel')}")
            revoked = await js(driver, f"return fetch({q('#preview-image')}.src).then(() => 'open', () => 'revoked')")
            assert revoked == "revoked"

            await press(driver, "keep", "matches list; holding while I check the source")
            await wait(driver, f"return {STATE}.lastAction && {STATE}.lastAction.ok")
            await r.wait_for(lambda relay: relay.streams["s1"].guard.kept)
            # In the page's audit log (by alice, who had viewed the preview) and in the kept column...
            audit_row = await wait(driver, f"return {q('#audit tr[data-action=keep]')}?.innerText")
            reason = "matches list; holding while I check the source"
            assert audit_row.split("\t")[1:] == ["alice", "moderator", "keep", "s1", reason, "yes"]
            await wait(driver, f"return {q(f'{ROW} td.kept')}")

            # Confirm records the match as true and changes nothing; a false positive for this stream
            # lifts the redaction, and the next passes of the clip no longer redact it.
            await press(driver, "confirm", "the listed image, verified")
            await wait(driver, f"return {q('#audit tr[data-action=confirm]')}")
            assert r.relay.is_redacting("s1")
            await press(driver, "false_positive-stream", "a lookalike; allowed on this stream")
            await wait(driver, f"return {q('#audit tr[data-action=false_positive]')}")
            await wait(driver, f"return {text(f'{ROW} .state')} === 'live'")
            assert len(r.moderation.allowlist) == 1
            passes = r.relay.streams["s1"].counters.frames_in
            await r.wait_for(
                lambda relay: relay.streams["s1"].counters.frames_in > passes + 200, timeout=20
            )  # > one pass
            assert not r.relay.is_redacting("s1") and len(r.moderation.store.events.read(types=["match.started"])) == 1
            # ... and in the server's, read with alice's token.
            async with aiohttp.ClientSession() as http:
                async with http.get(
                    f"{r.base}/api/audit", headers={"Authorization": f"Bearer {ALICE.token}"}
                ) as response:
                    entries = (await response.json())["entries"]
    assert [
        (e["actor"], e["role"], e["action"], e["stream_id"], e["reason"], e["viewed_content"]) for e in entries
    ] == [
        ("alice", "moderator", "preview", "s1", "viewed the blurred preview", True),
        ("alice", "moderator", "keep", "s1", "matches list; holding while I check the source", True),
        ("alice", "moderator", "confirm", "s1", "the listed image, verified", True),
        ("alice", "moderator", "false_positive", "s1", "a lookalike; allowed on this stream", True),
    ]


async def test_an_attacker_chosen_report_reason_shows_as_text_and_refusals_say_why(clip: Path):
    never_matches = Matcher([])
    receiver = WebhookEndpoint(url="http://127.0.0.1:9/hook", secret="not-used-nobody-listens", name="siem")
    moderation = ModerationSettings(database=":memory:", webhooks=(receiver,))
    async with (
        running_relay(matcher=lambda: never_matches, moderation=moderation) as r,
        dashboard(r) as driver,
    ):  # dev mode
        await wait(driver, f"return {STATE}.feedConnected")
        assert await js(driver, f"return {text('#who')}") == "anonymous (dev mode) · moderator"
        async with publishing(r, clip, "s1", **LOOPED):
            await wait(driver, f"return {text(f'{ROW} .state')} === 'live'")
            async with aiohttp.ClientSession() as http:
                async with http.post(f"{r.base}/api/streams/s1/reports", json={"reason": XSS}) as response:
                    assert response.status == 202
            report_details = text('#feed tr[data-type="report.received"] .details')
            details = await wait(driver, f"return {report_details}")
            assert XSS in details
            assert await js(
                driver, "return window.pwned === undefined && document.querySelectorAll('#feed img').length === 0"
            )
            assert not await js(driver, f"return {shown('#alarm')} || {shown('#error')}")  # a warning is no alarm

            # An empty reason is refused in the page; nothing reaches the server.
            await press(driver, "resume", None)
            assert "type a reason first" in await js(driver, f"return {text(f'{ROW} .row-status')}")
            assert await js(driver, f"return {STATE}.actionsSent") == 0
            # The server refuses to resume a stream that is not redacted, and the page shows its reason.
            await press(driver, "resume", "looks fine")
            status = await wait(
                driver, f"const a = {STATE}.lastAction; return a && !a.ok && {text(f'{ROW} .row-status')}"
            )
            assert "409" in status and "not redacted now" in status
            # The receiver that refuses every delivery is flagged.
            hook = await wait(driver, f"return {q('#webhooks tbody tr:has(.hook.failing)')}?.innerText")
            assert hook.startswith("siem\thttp://127.0.0.1:9/hook\tfailing")
        assert r.moderation.store.audit.read(0) == []
        assert await js(driver, "return window.pwned") is None
        assert await js(driver, f"return {STATE}.blockedByPolicy") == []  # nothing even tried to run

        # "Retry now" on the failing endpoint asks for a reason and lands in the audit log; nobody
        # listens there, so it is still failing afterwards.
        retry = q('#webhooks tbody tr[data-hook="siem"] button.retry')
        await js(driver, f"setTimeout(() => {retry}.click())")
        dialog = await asyncio.to_thread(_dialog, driver)
        assert "Retry webhook siem now?" in dialog.text
        await asyncio.to_thread(dialog.send_keys, "receiver redeployed")
        await asyncio.to_thread(dialog.accept)
        assert "retrying now" in await wait(driver, f"return {text('#webhooks-status')}")
        (entry,) = r.moderation.store.audit.read(0)
        assert (entry.action, entry.reason, entry.details["endpoint"]) == (
            "webhook_retry",
            "receiver redeployed",
            "siem",
        )
        await wait(driver, f"return {q('#audit tbody')}.innerText.includes('webhook_retry')")


async def test_terminate_asks_first_then_ends_the_stream_on_the_record(clip: Path):
    async with running_relay() as r, dashboard(r) as driver, publishing(r, clip, "s1", **LOOPED) as publisher:
        await wait(driver, f"return {text(f'{ROW} .state')} === 'live'")
        for accept in (False, True):
            await type_into(driver, f"{ROW} input.reason", "broadcasting a blocked film")
            # Clicked after the script returns, which the dialog would otherwise hold up.
            await js(driver, f"setTimeout(() => {q(f'{ROW} button.act-terminate')}.click())")
            dialog = await asyncio.to_thread(_dialog, driver)
            assert "Terminate stream s1?" in dialog.text
            await asyncio.to_thread(dialog.accept if accept else dialog.dismiss)
            if not accept:
                assert "cancelled" in await js(driver, f"return {text(f'{ROW} .row-status')}")
                assert r.relay.is_live("s1") and r.moderation.store.audit.read(0) == []
        await wait(driver, f"return {STATE}.lastAction && {STATE}.lastAction.ok")
        await wait(driver, f"return {text(f'{ROW} .state')} === 'ended'")
        await asyncio.wait_for(asyncio.gather(publisher, return_exceptions=True), 10)  # the publisher was hung up on
        audited = [(e.action, e.reason) for e in r.moderation.store.audit.read(0)]
        assert audited == [("terminate", "broadcasting a blocked film")]


async def test_the_feed_resumes_after_a_relay_restart_from_the_last_event_it_saw(tmp_path: Path):
    db, other_db = tmp_path / "events.db", tmp_path / "other.db"
    async with browser() as driver:
        async with running_relay(moderation=ModerationSettings(database=str(db))) as r:
            port = int(r.base.rsplit(":", 1)[1])
            await asyncio.to_thread(driver.get, f"{r.base}/dashboard")
            await wait(driver, f"return {STATE}.feedConnected")
            r.moderation.record(Event(WEBHOOK_FAILED, None, "warning", {"endpoint": "siem", "error": "timed out"}))
            await wait(driver, f"return {STATE}.liveTypes['webhook.failed'] === 1")
        # The relay is down; an event lands in its store meanwhile (as another process sharing it would add one).
        await wait(driver, f"return !{STATE}.feedConnected && {STATE}.reconnects > 0")
        store = SqliteStore(db)
        cut = Event(STREAM_CUT, "s9", "warning", {"details": {"reason": "while the relay restarted"}})
        missed = store.events.append(cut)
        store.close()
        async with running_relay(moderation=ModerationSettings(database=str(db)), port=port):
            # Resumed with Last-Event-ID: the missed event arrives over the feed, the one seen before is not repeated.
            await wait(driver, f"return {STATE}.liveTypes['stream.cut'] === 1")
            assert await js(driver, "return document.querySelectorAll('#feed tbody tr').length") == 2
            assert await js(driver, f"return {STATE}.eventsFromHistory") == 0
        # A relay that never issued that id (a fresh store) answers 410: the page reloads recent history and goes on.
        store = SqliteStore(other_db)
        store.events.append(Event(STREAM_ENDED, "s7", "info", {}))
        store.close()
        async with running_relay(moderation=ModerationSettings(database=str(other_db)), port=port):
            await wait(driver, f"return {STATE}.eventsFromHistory === 1 && {STATE}.feedConnected")
            ended_row = q('#feed tr[data-type="stream.ended"]')
            assert await js(driver, f"return {ended_row}.dataset.live") == "0"
            assert await js(driver, f"return {STATE}.lastEventId") != missed.id


async def test_the_lists_panel_shows_each_source_and_a_stale_one_raises_the_alarm(tmp_path: Path):
    """A list whose source breaks shows as failing, then stale (with its error and the version kept in
    force); its lists.stale event arrives over the feed and raises the alarm, though it has no stream."""
    good, breaking = tmp_path / "good.txt", tmp_path / "breaking.txt"
    good.write_text("pdq " + "ab" * 32 + "\nmd5 " + "12" * 16 + "\n")
    breaking.write_text("pdq " + "cd" * 32 + "\npdq " + "ef" * 32 + "\n")
    lists = LiveMatcher(
        [
            ListSpec(path=good, name="good", category="csam"),
            ListSpec(path=breaking, name="breaking", category="ncii", max_stale_seconds=1.0),
        ]
    )
    proxy = build_proxy(
        RelaySettings(ice=ICE, stream=FAST_END),
        lambda: lists.current,
        GuardSettings(),
        ModerationSettings(database=":memory:", tokens=(ALICE, BOB)),
        ListWatcher(lists, interval=0.1),
        lists=lists,
    )
    async with serving(proxy.app) as base, browser() as driver:
        await asyncio.to_thread(driver.get, f"{base}/dashboard")
        await sign_in(driver, BOB.token, "bob")
        rows = await wait(driver, f"return {STATE}.listsShown === 2 && {q('#lists tbody')}.innerText")
        assert "good\tfile" in rows and "csam" in rows
        good_row = await js(driver, f"return {q('#lists tr[data-list=good]')}.innerText")
        assert "+ 1 md5 (cannot match live)" in good_row, good_row
        breaking_row = '#lists tr[data-list="breaking"]'
        assert await js(driver, f"return {q(breaking_row)}.dataset.state") == "ok"
        assert "2 entries" not in await js(driver, f"return {text('#lists-summary')}")  # 3 in all
        assert "3 entries" in await js(driver, f"return {text('#lists-summary')}")

        breaking.write_text("pdq " + "cd" * 32 + "\nnot a hash\n")
        await wait(driver, f"return {q(breaking_row)}?.dataset.state === 'stale'", timeout=20)
        row = await js(driver, f"return {q(breaking_row)}.innerText")
        assert "breaking.txt:2: too many fields" in row, row
        assert "\t2\t" in row, f"the version kept in force should still show its 2 entries: {row}"
        alarm = await wait(driver, f"return {shown('#alarm')} && {text('#alarm-text')}")
        assert alarm.startswith("HIGH: lists.stale (list breaking)"), alarm
        assert await js(driver, f"return {STATE}.liveTypes['lists.stale']") == 1


# ------------------------------------------------------------ the moderator on shift

NARROW = (800, 900)  # a narrow window (a laptop's half screen)

# Every visible button of the page that fails to be on screen and clickable once scrolled to:
# outside the viewport, or covered / clipped (the point at its centre is not the button).
OFF_SCREEN_BUTTONS = """
const failures = [];
for (const b of document.querySelectorAll(arguments[0])) {
  if (b.offsetParent === null) continue;  // hidden (e.g. no preview configured)
  b.scrollIntoView({ block: "center", inline: "nearest" });
  const r = b.getBoundingClientRect();
  const w = document.documentElement.clientWidth, h = document.documentElement.clientHeight;
  const inside = r.width > 0 && r.height > 0 && r.left >= 0 && r.top >= 0 && r.right <= w && r.bottom <= h;
  const hit = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);
  if (!inside || !(hit === b || b.contains(hit))) failures.push(`${b.textContent} ${JSON.stringify(r)}`);
}
return failures;
"""


def _click(driver: Any, selector: str) -> None:
    """A real click (WebDriver refuses one on an element off screen or covered), unlike element.click() in JS."""
    driver.find_element("css selector", selector).click()


def _choose(driver: Any, select_id: str, value: str) -> None:
    from selenium.webdriver.support.ui import Select

    Select(driver.find_element("id", select_id)).select_by_value(value)


async def test_at_800px_every_action_is_on_screen_and_redact_now_slates_a_clean_stream(clip: Path):
    """Nothing matches (no lists): a moderator's "Redact now" is all that can slate the viewer's picture."""
    from harness import looks_like_slate

    from livesafe.clients import watch

    settings = RelaySettings(streams={"s1": StreamAccess(key=KEY)}, ice=ICE, stream=FAST_END)
    moderation = ModerationSettings(database=":memory:", tokens=(ALICE,))
    empty = Matcher([])
    slated: list[bool] = []
    async with (
        running_relay(settings, matcher=lambda: empty, moderation=moderation) as r,
        publishing(r, clip, "s1", KEY, **LOOPED),
        browser() as driver,
    ):
        await asyncio.to_thread(driver.set_window_size, *NARROW)
        await asyncio.to_thread(driver.get, f"{r.base}/dashboard")
        assert await js(driver, "return window.innerWidth") <= NARROW[0]
        await sign_in(driver, ALICE.token, "alice")
        await wait(driver, f"return {q(ROW + ' button.act-redact')}")
        # No sideways scrolling to reach an action (a scrolled panel would bring a cut-off button into view).
        panel = "const p = document.getElementById('streams-panel'); return [p.scrollWidth, p.clientWidth]"
        wide, shown_width = await js(driver, panel)
        assert wide <= shown_width, "the streams panel scrolls sideways at 800 px"
        assert await asyncio.to_thread(driver.execute_script, OFF_SCREEN_BUTTONS, "button") == []
        names = await js(driver, f"return [...document.querySelectorAll('{ROW} button.act')].map((b) => b.textContent)")
        assert names[0] == "Redact now" and len(names) == 7, names

        viewer = asyncio.ensure_future(
            watch(
                r.url("whep", "s1"),
                ice=ICE,
                duration=30,
                on_frame=lambda f, t: slated.append(looks_like_slate(f.to_ndarray(format="yuv420p")[: f.height])),
            )
        )
        try:
            await r.wait_for(lambda relay: len(slated) >= 30, 15)
            assert not any(slated), "a clean stream reaches its viewer as it is"
            await type_into(driver, f"{ROW} input.reason", "a viewer phoned in")
            await asyncio.to_thread(_click, driver, f"{ROW} button.act-redact")
            await wait(driver, f"return {STATE}.lastAction && {STATE}.lastAction.ok")
            await wait(driver, f"return {text(ROW + ' .state')} === 'redacted'")
            before = len(slated)
            await r.wait_for(lambda relay: sum(slated[before:]) >= 30, 15)  # the viewer gets the slate
            redacted_entry = text('#audit tbody tr[data-action="redact"]')
            await wait(driver, f"return {redacted_entry}")
            assert "a viewer phoned in" in await js(driver, f"return {text('#audit tbody tr')}")

            await type_into(driver, f"{ROW} input.reason", "reviewed: fine")
            await asyncio.to_thread(_click, driver, f"{ROW} button.act-resume")
            await wait(driver, f"return {text(ROW + ' .state')} === 'live'")
            lifted = len(slated)
            await r.wait_for(lambda relay: len(slated) >= lifted + 60, 15)
            assert not any(slated[-30:]), "resume lifted it"
        finally:
            viewer.cancel()
            await asyncio.gather(viewer, return_exceptions=True)
        assert [e.action for e in r.moderation.store.audit.read(stream_id="s1")] == ["redact", "resume"]


async def test_the_feed_scrolls_by_itself_filters_pages_back_and_dates_old_events():
    """A store of 122 events (two of them days old) and then a flood of live ones, in a narrow window."""
    now = time.time()
    async with running_relay(moderation=ModerationSettings(database=":memory:")) as r, browser() as driver:
        record = r.moderation.record
        three_days = record(Event(STREAM_ENDED, "s2", "info", {}, at=now - 3 * 86400))
        yesterday = record(Event(STREAM_CUT, "s2", "warning", {"details": {"reason": "yesterday"}}, at=now - 86400))
        for i in range(120):
            record(
                Event(STREAM_CUT if i % 2 else STREAM_ENDED, "s1", "high" if i % 2 else "info", {}, at=now - 600 + i)
            )
        await asyncio.to_thread(driver.set_window_size, *NARROW)
        await asyncio.to_thread(driver.get, f"{r.base}/dashboard")
        await wait(driver, f"return {STATE}.feedConnected")
        rows = "return document.querySelectorAll('#feed tbody tr').length"
        assert await js(driver, rows) == 50

        # Paging back, from the oldest shown, to the end of the store.
        await asyncio.to_thread(_click, driver, "#feed-older")
        await wait(driver, f"return {STATE}.olderPages === 1")
        assert await js(driver, rows) == 100
        await asyncio.to_thread(_click, driver, "#feed-older")
        await wait(driver, f"return {STATE}.olderPages === 2")
        assert await js(driver, rows) == 122
        assert "no more" in await js(driver, f"return {text('#feed-older-status')}")
        assert await js(driver, f"return {q('#feed-older')}.disabled")
        when = "return document.querySelector('#feed tr[data-id=\"{}\"] td').textContent"
        assert (await js(driver, when.format(yesterday.id))).startswith("yesterday ")
        day = time.strftime("%Y-%m-%d", time.localtime(now - 3 * 86400))  # the browser and we share the zone here
        assert (await js(driver, when.format(three_days.id))).startswith(day + " ")

        # A flood of live events: the feed scrolls inside its own box, the audit log stays right under it.
        box = "const b = document.getElementById('feed-scroll'); return [b.clientHeight, b.scrollHeight]"
        height, _ = await js(driver, box)
        for i in range(200):
            record(Event(STREAM_ENDED, f"flood{i % 5}", "info", {}))
        await wait(driver, f"return {STATE}.eventsLive === 200")
        flooded, content = await js(driver, box)
        assert flooded == height and content > flooded
        assert height <= 0.45 * NARROW[1] + 1
        audit_top, feed_bottom = await js(
            driver,
            "return [document.getElementById('audit-panel').getBoundingClientRect().top,"
            " document.getElementById('feed-panel').getBoundingClientRect().bottom]",
        )
        assert 0 < audit_top - feed_bottom < 40

        # Filters, asked of the server (and applied to live events); each starts again from the newest.
        await asyncio.to_thread(_choose, driver, "filter-stream", "s2")
        await wait(driver, "return document.querySelectorAll('#feed tbody tr').length === 2")
        assert await js(
            driver,
            "return [...document.querySelectorAll('#feed tbody tr td:nth-child(2)')]"
            ".every((c) => c.textContent === 's2')",
        )
        await asyncio.to_thread(_choose, driver, "filter-stream", "s1")
        await asyncio.to_thread(_choose, driver, "filter-severity", "high")
        only_high_cuts = (
            "const rs = [...document.querySelectorAll('#feed tbody tr')];"
            " return rs.length > 0 && rs.every((t) => t.classList.contains('high') && t.dataset.type === 'stream.cut')"
            " && rs.length"
        )
        assert await wait(driver, only_high_cuts) == 50  # a full page: the server filters severity too
        await asyncio.to_thread(_choose, driver, "filter-severity", "")
        await asyncio.to_thread(_choose, driver, "filter-type", "stream.cut")
        assert await wait(driver, only_high_cuts) == 50
        record(Event(STREAM_ENDED, "s1", "info", {}))  # live, but not of the type chosen: counted, not shown
        await wait(driver, f"return {STATE}.eventsLive === 201")
        assert await js(driver, rows) == 50

"""The player page (/watch/{stream}) in a real headless Chromium: it watches a guarded
stream over WHEP through the relay's own CORS and HTTP, frames arrive, the page shows the
stream's state, and leaving the page hangs up."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from harness import FAST_END, ICE, SAMPLES, RunningRelay, chromium, running_relay, wait_for_script

from livesafe.clients import publish
from livesafe.guard.stream_guard import GuardSettings
from livesafe.moderation.reports import ReportDesk
from livesafe.moderation.settings import ModerationSettings, Principal
from livesafe.relay.settings import RelaySettings, StreamAccess


def _wait(driver, script: str, timeout: float = 20.0):
    return wait_for_script(driver, script, timeout, context="return window.livesafe && window.livesafe.error")


@contextlib.asynccontextmanager
async def player_watching_sample(
    stream: str = "s",
    settings: RelaySettings | None = None,
    moderation: ModerationSettings | None = None,
    key: str | None = None,
    view: str | None = None,
) -> AsyncIterator[tuple[RunningRelay, Any]]:
    """A relay with the sample published (looping) as ``stream``, and Chromium on its player page
    (``settings`` and ``moderation`` for the relay, ``key`` to publish with, ``view`` the page's ``?token=``).

    The guard holds a redaction for 30 s after the blocked picture has gone: the page polls the
    stream's state every 2 s, and a loaded machine may reach the page after the sample's 1.5 s
    blocked segment is over, so the test must not depend on catching that segment's own window."""
    async with running_relay(settings, guard=GuardSettings(hold_seconds=30.0), moderation=moderation) as r:
        clip = SAMPLES / "blocked_cut.mp4"
        publisher = asyncio.ensure_future(
            publish(clip, r.url("whip", stream), token=key, ice=ICE, loop=True, duration=40)
        )
        await r.wait_for(lambda relay: stream in relay.streams and relay.streams[stream].counters.frames_in > 0)
        driver = await asyncio.to_thread(chromium)
        try:
            await asyncio.to_thread(driver.get, f"{r.base}/watch/{stream}" + (f"?token={view}" if view else ""))
            yield r, driver
        finally:
            await asyncio.to_thread(driver.quit)
            publisher.cancel()
            await asyncio.gather(publisher, return_exceptions=True)


async def test_the_player_page_plays_a_guarded_stream_and_hangs_up_on_leaving():
    async with player_watching_sample() as (r, driver):
        frames = await asyncio.to_thread(_wait, driver, "return window.livesafe.frames > 30 && window.livesafe.frames")
        assert len(r.relay.streams["s"].viewers) == 1
        size = driver.execute_script("const v = document.getElementById('video'); return [v.videoWidth, v.videoHeight]")
        assert size == [1280, 720]
        # The sample's blocked segment starts at 2.5 s: the page reports the redaction.
        await asyncio.to_thread(_wait, driver, "return document.getElementById('state').textContent === 'redacted'")
        assert frames > 30
        await asyncio.to_thread(driver.get, "about:blank")  # pagehide -> DELETE of the session
        await r.wait_for(lambda relay: not relay.streams["s"].viewers, timeout=10)


async def test_the_player_page_works_for_a_viewer_of_a_private_child_stream_on_the_public_port():
    """Stream keys, a viewer token, moderator tokens and an admin port: the list of streams is not
    the viewer's to read, yet the page plays, shows the redaction and sends a report."""
    settings = RelaySettings(
        streams={"kid": StreamAccess(key="kid-key-51d0", viewer_token="kid-view-8e2a", profile="child")},
        ice=ICE,
        stream=FAST_END,
        admin_port=0,
    )
    moderation = ModerationSettings(database=":memory:", tokens=(Principal("olga", "observer", "o" * 20),))
    async with player_watching_sample("kid", settings, moderation, key="kid-key-51d0", view="kid-view-8e2a") as (
        r,
        driver,
    ):
        await asyncio.to_thread(_wait, driver, "return window.livesafe.frames > 5")
        await asyncio.to_thread(_wait, driver, "return document.getElementById('state').textContent === 'redacted'")
        # (on a thread: the relay answering the fetch runs on this loop)
        listed = await asyncio.to_thread(driver.execute_script, "return fetch('/api/streams').then((r) => r.status)")
        assert listed == 404, "the stream list is on the admin port only"
        await asyncio.to_thread(driver.find_element("id", "report-reason").send_keys, "this should not be here")
        driver.execute_script("document.getElementById('report-send').click()")
        assert await asyncio.to_thread(_wait, driver, "return window.livesafe.lastReport") == 202


async def test_a_viewer_reports_the_stream_from_the_player_page_as_its_own_session():
    async with player_watching_sample() as (r, driver):
        await asyncio.to_thread(_wait, driver, "return window.livesafe.frames > 5")
        session_id = driver.execute_script("return window.livesafe.resource.split('/').pop()")
        driver.execute_script("document.getElementById('report-send').click()")  # empty: refused in the page
        assert "say briefly" in driver.execute_script("return document.getElementById('status').textContent")
        field = driver.find_element("id", "report-reason")
        await asyncio.to_thread(field.send_keys, "someone is filming a screen")
        driver.execute_script("document.getElementById('report-send').click()")
        assert await asyncio.to_thread(_wait, driver, "return window.livesafe.lastReport") == 202
        (report,) = r.moderation.store.events.read(types=["report.received"])
    assert report.data["reason"] == "someone is filming a screen"
    # Counted as this viewer's session (a pseudonym of it), not as the page's address.
    assert report.data["client"] == ReportDesk.client_key(session_id, None)


async def test_the_player_page_says_it_is_waiting_until_the_first_frame_arrives():
    """Opened before the stream publishes, the page says so over the black video; the first frame clears it."""
    waiting = "const w = document.getElementById('waiting'); return !w.hidden && w.offsetHeight > 0 && w.textContent"
    async with running_relay() as r:
        driver = await asyncio.to_thread(chromium)
        try:
            await asyncio.to_thread(driver.get, f"{r.base}/watch/s")
            text = await asyncio.to_thread(_wait, driver, waiting)
            assert "waiting for the stream to start" in text.lower()
            assert driver.execute_script("return window.livesafe.frames") == 0
            publisher = asyncio.ensure_future(
                publish(SAMPLES / "blocked_cut.mp4", r.url("whip", "s"), ice=ICE, loop=True, duration=30)
            )
            try:
                await asyncio.to_thread(_wait, driver, "return window.livesafe.frames > 0")
                assert driver.execute_script("return document.getElementById('waiting').hidden") is True
            finally:
                publisher.cancel()
                await asyncio.gather(publisher, return_exceptions=True)
        finally:
            await asyncio.to_thread(driver.quit)

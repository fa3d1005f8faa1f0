"""The player page (/watch/{stream}) in a real headless Chromium: it watches a guarded
stream over WHEP through the relay's own CORS and HTTP, frames arrive, the page shows the
stream's state, and leaving the page hangs up."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from harness import ICE, SAMPLES, RunningRelay, chromium, running_relay, wait_for_script

from livesafe.clients import publish
from livesafe.guard.stream_guard import GuardSettings
from livesafe.moderation.reports import ReportDesk


def _wait(driver, script: str, timeout: float = 20.0):
    return wait_for_script(driver, script, timeout, context="return window.livesafe && window.livesafe.error")


@contextlib.asynccontextmanager
async def player_watching_sample(stream: str = "s") -> AsyncIterator[tuple[RunningRelay, Any]]:
    """A relay with the sample published (looping) as ``stream``, and Chromium on its player page.

    The guard holds a redaction for 30 s after the blocked picture has gone: the page polls the
    stream's state every 2 s, and a loaded machine may reach the page after the sample's 1.5 s
    blocked segment is over, so the test must not depend on catching that segment's own window."""
    async with running_relay(guard=GuardSettings(hold_seconds=30.0)) as r:
        clip = SAMPLES / "blocked_cut.mp4"
        publisher = asyncio.ensure_future(publish(clip, r.url("whip", stream), ice=ICE, loop=True, duration=40))
        await r.wait_for(lambda relay: stream in relay.streams and relay.streams[stream].counters.frames_in > 0)
        driver = await asyncio.to_thread(chromium)
        try:
            await asyncio.to_thread(driver.get, f"{r.base}/watch/{stream}")
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

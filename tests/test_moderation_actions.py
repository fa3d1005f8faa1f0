"""Moderator actions, viewer reports and policy profiles, through the HTTP API against
live streams: the 360p ``blocked_cut`` clip published on a loop over WHIP (real aiortc
peers on loopback), its blocked segment on screen from 2.5 s to 4.0 s of every 6 s loop.

Timing is pinned to where the publisher is in the clip (frames the relay took in), never
to wall-clock speed: an action is taken while the picture is known to be clean or known
to match, and what must (not) happen next is checked before the next loop's segment."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import cv2
import numpy as np
import pytest
from aiortc import RTCPeerConnection
from harness import (
    FAST_END,
    ICE,
    SAMPLES,
    RunningRelay,
    frames_in,
    looks_like_slate,
    make_offer,
    publishing,
    running_relay,
    sample_lists,
)

from livesafe.clients import ClientError, publish, user_agent, watch
from livesafe.guard.matcher import Matcher
from livesafe.guard.stream_guard import GuardSettings
from livesafe.moderation.settings import ModerationSettings, Principal
from livesafe.moderation.store.records import Allowed
from livesafe.policy import CHILD, DEFAULT
from livesafe.relay.registry import Relay
from livesafe.relay.settings import RelaySettings, StreamAccess

MOD = Principal("mo", "moderator", "m" * 20)
LOOP = 180  # frames per pass of the clip (6 s at 30 fps)
SEGMENT_END = 120  # first frame after the blocked segment (75..119)
NEXT_SEGMENT = LOOP + 75  # where the next pass's blocked segment starts
LOOPED = {"loop": True, "duration": 60}  # how every stream here is published: the clip over and over, 60 s at most


@pytest.fixture(scope="module")
def clip(blocked_cut_360p: Path) -> Path:
    truth = json.loads((SAMPLES / "blocked_cut.truth.json").read_text())
    segment = truth["segments"][0]
    assert (truth["frames"], segment["start"], segment["end"] + 1) == (LOOP, 75, SEGMENT_END), (
        "the timings here follow the clip"
    )
    return blocked_cut_360p


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """conftest's ``http``, bounded: a relay that stops answering fails the test instead of stalling it for minutes."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
        yield session


def moderation(database: str = ":memory:", **options: Any) -> ModerationSettings:
    """With a token configured the API is never open, so every action is the named moderator's."""
    return ModerationSettings(database=database, tokens=(MOD,), **options)


def no_lists() -> Callable[[], Matcher]:
    """Nothing ever matches: any redaction seen must come from reports."""
    empty = Matcher([])
    return lambda: empty


# ------------------------------------------------------------------ helpers


class Api:
    """The moderation API of one running proxy, called as moderator ``MOD``."""

    def __init__(self, http: aiohttp.ClientSession, base: str) -> None:
        self.http, self.base = http, base
        self.auth = {"Authorization": f"Bearer {MOD.token}"}

    async def post(self, path: str, body: dict, *, auth: bool = True) -> tuple[int, Any, Any]:
        """(status, JSON / text / bytes by content type, headers)."""
        headers = self.auth if auth else {}
        async with self.http.post(f"{self.base}{path}", json=body, headers=headers) as response:
            raw = await response.read()
            if response.content_type == "application/json":
                return response.status, json.loads(raw), response.headers
            if response.content_type.startswith("text/"):
                return response.status, raw.decode(), response.headers
            return response.status, raw, response.headers

    async def act(
        self, stream: str, action: str, reason: str = "checked by a moderator", **extra: Any
    ) -> tuple[int, Any]:
        status, data, _ = await self.post(
            f"/api/streams/{stream}/actions", {"action": action, "reason": reason, **extra}
        )
        return status, data

    async def report(
        self, stream: str, session: str | None = None, reason: str = "this looks wrong"
    ) -> tuple[int, Any, Any]:
        body = {"reason": reason} | ({"session": session} if session else {})
        return await self.post(f"/api/streams/{stream}/reports", body, auth=False)

    async def events(self, stream: str, *types: str) -> list[dict]:
        params = {"stream": stream, "limit": "1000"} | ({"type": ",".join(types)} if types else {})
        async with self.http.get(f"{self.base}/api/events", params=params, headers=self.auth) as response:
            assert response.status == 200, await response.text()
            return (await response.json())["events"]

    async def wait_event(
        self, stream: str, kind: str, where: Callable[[dict], bool] = lambda e: True, timeout: float = 15.0
    ) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            found = [e for e in await self.events(stream, kind) if where(e)]
            if found:
                return found[0]
            assert time.monotonic() < deadline, f"no {kind} event on {stream} within {timeout:g} s"
            await asyncio.sleep(0.05)

    async def audit(self, stream: str) -> list[dict]:
        async with self.http.get(f"{self.base}/api/audit", params={"stream": stream}, headers=self.auth) as response:
            assert response.status == 200, await response.text()
            return (await response.json())["entries"]


async def reach(r: RunningRelay, stream: str, frame: int, timeout: float = 20.0) -> None:
    """Wait until the relay has taken in ``frame`` frames of ``stream`` (its place in the clip)."""
    await r.wait_for(lambda relay: frames_in(relay, stream) >= frame, timeout)


async def wait_state(r: RunningRelay, stream: str, state: str, timeout: float = 5.0) -> None:
    await r.wait_for(lambda relay: r.summary(stream)["state"] == state, timeout)


@contextlib.asynccontextmanager
async def watching(
    r: RunningRelay, stream: str, count: int = 1, on_frame: Callable[[Any, float], None] | None = None
) -> AsyncIterator[list[asyncio.Task]]:
    """``count`` viewers of ``stream`` (our WHEP client) while the block runs; hung up on leaving."""
    tasks = [
        asyncio.ensure_future(watch(r.url("whep", stream), ice=ICE, duration=30, on_frame=on_frame))
        for _ in range(count)
    ]
    try:
        yield tasks
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def whep_status(http: aiohttp.ClientSession, r: RunningRelay, stream: str, agent: str) -> tuple[int, str]:
    """POST a WHEP offer as ``agent``; a session it created is hung up again. Returns (status, body)."""
    headers = {"Content-Type": "application/sdp", "User-Agent": agent}
    async with http.post(
        r.url("whep", stream), data=await make_offer(direction="recvonly"), headers=headers
    ) as response:
        status, body, location = response.status, await response.text(), response.headers.get("Location")
    if location:
        async with http.delete(f"{r.base}{location}") as response:
            await response.read()
    return status, body


def whep_sessions(relay: Relay, stream: str) -> list[str]:
    """The stream's connected viewers' session ids (only those count as distinct reporters)."""
    return [
        s.id
        for s in relay.sessions.values()
        if s.kind == "whep" and s.stream_id == stream and s.pc.connectionState == "connected"
    ]


def check_audit(entries: list[dict], expected: list[tuple[str, str, str | None, bool]], stream: str) -> None:
    """``expected``: (action, reason, event_id, viewed_content) in order; every entry is MOD's."""
    assert [(e["action"], e["reason"], e["event_id"], e["viewed_content"]) for e in entries] == expected
    for entry in entries:
        assert (entry["actor"], entry["role"], entry["stream_id"]) == (MOD.name, MOD.role, stream)
        assert entry["id"] and entry["at"] > 0


# -------------------------------------------------------- resume / keep / confirm


async def test_resume_lifts_a_held_redaction_at_once_and_confirm_changes_nothing(clip, http):
    """A 30 s hold would keep the stream redacted well into the next pass; resume, once the
    content is gone, lifts it before that pass begins.  Confirm only records."""
    async with (
        running_relay(guard=GuardSettings(hold_seconds=30.0), moderation=moderation()) as r,
        publishing(r, clip, "s1", **LOOPED),
    ):
        api = Api(http, r.base)
        assert (await api.post("/api/streams/s1/preview", {}))[0] == 404, "previews are off by default"
        started = await api.wait_event("s1", "match.started")
        await reach(r, "s1", SEGMENT_END + 20)  # the blocked picture has been sampled away, the hold runs on
        assert r.summary("s1")["state"] == "redacted"

        status, confirmed = await api.act("s1", "confirm", "it is the listed image")
        assert status == 200, confirmed
        taken = confirmed["event"]
        assert taken["type"] == "action.taken" and taken["action"] == "confirm" and taken["actor"] == MOD.name
        assert (taken["episode"], taken["list_name"], taken["category"]) == (started["id"], "samples", "test")
        assert (await api.events("s1", "action.taken"))[-1]["id"] == taken["id"]
        summary = r.summary("s1")
        assert summary["state"] == "redacted" and not summary["redaction_kept"], "confirm changes nothing"
        assert not await api.events("s1", "match.cleared")

        status, resumed = await api.act("s1", "resume", "content is over")
        assert status == 200, resumed
        cleared = await api.wait_event("s1", "match.cleared", timeout=5)
        assert cleared["details"]["resumed_by"] == MOD.name and cleared["episode"] == started["id"]
        await wait_state(r, "s1", "live")
        assert frames_in(r.relay, "s1") < NEXT_SEGMENT, "lifted before the next pass could have cleared anything"

        status, text = await api.act("s1", "resume", "again")
        assert status == 409 and "not redacted" in text
        check_audit(
            await api.audit("s1"),
            [
                ("confirm", "it is the listed image", started["id"], False),
                ("resume", "content is over", started["id"], False),
            ],
            "s1",
        )


async def test_keep_holds_the_redaction_past_the_hold_until_resumed(clip, http):
    async with (
        running_relay(guard=GuardSettings(hold_seconds=0.5), moderation=moderation()) as r,
        publishing(r, clip, "s1", **LOOPED),
    ):
        api = Api(http, r.base)
        started = await api.wait_event("s1", "match.started")
        status, kept = await api.act("s1", "keep", "hold for review")
        assert status == 200, kept
        # 1 s of clean picture after the segment: twice the hold.
        await reach(r, "s1", SEGMENT_END + 10 + 30)
        summary = r.summary("s1")
        assert summary["state"] == "redacted" and summary["redaction_kept"], summary
        assert not await api.events("s1", "match.cleared")

        status, resumed = await api.act("s1", "resume", "reviewed")
        assert status == 200, resumed
        cleared = await api.wait_event("s1", "match.cleared", timeout=5)
        assert cleared["details"]["resumed_by"] == MOD.name
        await wait_state(r, "s1", "live")
        assert not r.summary("s1")["redaction_kept"]
        assert frames_in(r.relay, "s1") < NEXT_SEGMENT
        check_audit(
            await api.audit("s1"),
            [("keep", "hold for review", started["id"], False), ("resume", "reviewed", started["id"], False)],
            "s1",
        )


# ---------------------------------------------------------------- false positive


async def test_false_positive_allows_the_hash_on_its_stream_or_everywhere(clip, http, tmp_path):
    """s1 marks its match a false positive for itself: it resumes and its next pass is
    clean, while s2 (started after that) still matches.  s2 marks it for every stream:
    after a restart on the same database, a new stream s3 never matches at all.

    (Never three streams at once: the publishers share this process, and the relay's
    admission control counts their CPU as its own.)"""
    database = str(tmp_path / "moderation.db")
    async with running_relay(guard=GuardSettings(hold_seconds=0.5), moderation=moderation(database)) as r:
        api = Api(http, r.base)
        async with publishing(r, clip, "s1", **LOOPED):
            first = await api.wait_event("s1", "match.started")
            status, marked = await api.act("s1", "false_positive", "a cat, not the listed image")
            assert status == 200, marked
            assert marked["audit"]["details"] == {
                "allowed_hash": first["matched_hash"],
                "signal": first["signal"],
                "scope": "stream",
            }
            cleared = await api.wait_event("s1", "match.cleared", timeout=5)
            assert cleared["details"]["resumed_by"] == MOD.name
            await wait_state(r, "s1", "live")
            allowed_from = frames_in(r.relay, "s1")

            async with publishing(r, clip, "s2", **LOOPED):
                other = await api.wait_event("s2", "match.started")
                assert other["matched_hash"] == first["matched_hash"], "s1's allow list entry is its own"
                status, marked = await api.act("s2", "false_positive", "same cat", scope="global")
                assert status == 200 and marked["audit"]["details"]["scope"] == "global", marked
                await wait_state(r, "s2", "live")

            await reach(r, "s1", allowed_from + 20)
            redacted = r.summary("s1")["frames_redacted"]  # the delay buffer has drained
            await reach(r, "s1", NEXT_SEGMENT + 60)  # past the next pass's segment and hold
            assert r.summary("s1")["frames_redacted"] == redacted and r.summary("s1")["state"] == "live"
            assert [e["id"] for e in await api.events("s1", "match.started")] == [first["id"]]
        signal, hash_ = first["signal"], first["matched_hash"]
        allowed = set(r.moderation.store.access.allowlist())
        assert allowed == {Allowed(signal, hash_, "s1"), Allowed(signal, hash_, None)}
        check_audit(
            await api.audit("s1"), [("false_positive", "a cat, not the listed image", first["id"], False)], "s1"
        )
        check_audit(await api.audit("s2"), [("false_positive", "same cat", other["id"], False)], "s2")

    async with running_relay(guard=GuardSettings(hold_seconds=0.5), moderation=moderation(database)) as r:
        api = Api(http, r.base)
        async with publishing(r, clip, "s3", **LOOPED):
            await reach(r, "s3", SEGMENT_END + 20)
            assert not await api.events("s3", "match.started") and r.summary("s3")["frames_redacted"] == 0


# --------------------------------------------------------- terminate, audit, preview


KEY, OTHER_KEY = "k" * 20, "o" * 20
KEYED = RelaySettings(
    streams={"s1": StreamAccess(key=KEY), "s2": StreamAccess(key=OTHER_KEY)}, ice=ICE, stream=FAST_END
)


async def test_terminate_cuts_the_stream_and_revokes_its_key_across_restarts(clip, http, tmp_path):
    database = str(tmp_path / "moderation.db")
    settings = moderation(database, preview=True)
    async with running_relay(KEYED, moderation=settings) as r:
        api = Api(http, r.base)
        async with (
            publishing(r, clip, "s1", KEY, **LOOPED, tolerate=(ClientError,)) as publisher,
            watching(r, "s1") as (viewer,),
        ):
            await r.wait_for(lambda relay: r.summary("s1")["viewers"] == 1)
            started = await api.wait_event("s1", "match.started")
            assert (await api.act("s1", "confirm", "listed image"))[0] == 200

            status, png, headers = await api.post("/api/streams/s1/preview", {})
            assert status == 200 and headers["Content-Type"] == "image/png" and headers["Cache-Control"] == "no-store"
            image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
            assert image.ndim == 2 and image.shape == (90, 160), "a small greyscale thumbnail"

            status, done = await api.act("s1", "terminate", "repeat offender")
            assert status == 200, done
            assert done["audit"]["details"] == {"stream_key_revoked": True}
            assert (await api.wait_event("s1", "stream.cut", timeout=5))["details"][
                "reason"
            ] == f"terminated by {MOD.name}"
            assert (await asyncio.wait_for(viewer, 10)).ended_by_server, "viewers are hung up"
            await api.wait_event("s1", "stream.ended", timeout=10)
            assert r.summary("s1")["state"] == "ended"
            with pytest.raises(ClientError):
                await asyncio.wait_for(publisher, 10)  # the publisher hears it was disconnected

        with pytest.raises(ClientError, match="403.*revoked"):
            await publish(clip, r.url("whip", "s1"), token=KEY, duration=1, ice=ICE)
        async with publishing(r, clip, "s2", OTHER_KEY, **LOOPED):
            assert r.summary("s2")["state"] == "live", "another stream's key still publishes"

        check_audit(
            await api.audit("s1"),
            [
                ("confirm", "listed image", started["id"], False),
                ("preview", "viewed the blurred preview", None, True),
                ("terminate", "repeat offender", started["id"], True),
            ],
            "s1",
        )
    async with running_relay(KEYED, moderation=settings) as r:
        with pytest.raises(ClientError, match="403.*revoked"):
            await publish(clip, r.url("whip", "s1"), token=KEY, duration=1, ice=ICE)


# ----------------------------------------------------------------------- reports


async def test_reports_are_pseudonymous_rate_limited_and_enough_viewers_redact(clip, http):
    """Nothing matches here (no lists), so the redaction can only come from the reports
    of ``reports_to_redact`` different viewers, each a live WHEP session."""
    needed = DEFAULT.reports_to_redact
    async with running_relay(matcher=no_lists(), moderation=moderation()) as r:
        api = Api(http, r.base)
        assert (await api.report("s1"))[0] == 404, "no such stream is live"
        async with publishing(r, clip, "s1", **LOOPED):
            async with watching(r, "s1", needed):
                await r.wait_for(lambda relay: len(whep_sessions(relay, "s1")) == needed)
                sessions = whep_sessions(r.relay, "s1")

                for _ in range(moderation().reports_per_client):
                    status, body, _ = await api.report("s1", sessions[0])
                    assert status == 202 and body["received"], body
                status, text, headers = await api.report("s1", sessions[0])
                assert status == 429 and 1 <= int(headers["Retry-After"]) <= 61, text
                report = (await api.events("s1", "report.received"))[0]
                assert report["severity"] == "warning" and report["reason"] == "this looks wrong"
                assert len(report["client"]) == 16 and report["reporters_in_window"] == 1 and not report["redacts"]
                assert "127.0.0.1" not in json.dumps(report) and sessions[0] not in json.dumps(report)

                for session in sessions[1:-1]:
                    assert (await api.report("s1", session))[0] == 202
                assert r.summary("s1")["state"] == "live" and not await api.events("s1", "redaction.imposed")
                assert (await api.report("s1", sessions[-1]))[0] == 202
                imposed = await api.wait_event("s1", "redaction.imposed", timeout=5)
                assert (
                    imposed["action"] == DEFAULT.report_action
                    and f"{needed} viewer reports" in imposed["details"]["reason"]
                )
                reports = await api.events("s1", "report.received")
                assert len({e["client"] for e in reports}) == needed and reports[-1]["redacts"]
                await wait_state(r, "s1", "redacted")
                assert r.summary("s1")["redaction_kept"]
                await reach(r, "s1", frames_in(r.relay, "s1") + 45)  # three holds' worth of clean picture
                assert r.summary("s1")["state"] == "redacted", "pending review"

                assert (await api.act("s1", "resume", "reviewed the reports"))[0] == 200
                await wait_state(r, "s1", "live")


async def test_a_session_id_that_is_no_viewer_counts_as_the_address(clip, http):
    """Made-up session ids cannot multiply one client: they all share the address's limit."""
    async with (
        running_relay(matcher=no_lists(), moderation=moderation(reports_per_client=2)) as r,
        publishing(r, clip, "s1", **LOOPED),
    ):
        api = Api(http, r.base)
        assert (await api.report("s1", "made-up-1"))[0] == 202
        assert (await api.report("s1"))[0] == 202
        assert (await api.report("s1", "made-up-2"))[0] == 429
        assert len({e["client"] for e in await api.events("s1", "report.received")}) == 1


async def test_an_offered_but_unconnected_viewer_session_counts_as_the_address(clip, http):
    """Offers are cheap to make: only a connected viewer is a reporter of its own."""
    async with (
        running_relay(matcher=no_lists(), moderation=moderation(reports_per_client=2)) as r,
        publishing(r, clip, "s1", **LOOPED),
    ):
        api = Api(http, r.base)
        pc = RTCPeerConnection()
        pc.addTransceiver("video", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        async with http.post(
            r.url("whep", "s1"), data=pc.localDescription.sdp, headers={"Content-Type": "application/sdp"}
        ) as resp:
            assert resp.status == 201
            offered = resp.headers["Location"].rsplit("/", 1)[1]
        await pc.close()  # never connects
        assert offered in r.relay.sessions and r.relay.sessions[offered].pc.connectionState != "connected"
        assert (await api.report("s1"))[0] == 202
        assert (await api.report("s1", offered))[0] == 202
        assert (await api.report("s1", offered))[0] == 429, "the offer's session shares the address's limit"


# ---------------------------------------------------------------- policy profiles


CHILD_KEY = "c" * 20
PROFILED = RelaySettings(
    streams={"kid": StreamAccess(key=CHILD_KEY, profile="child"), "adult": StreamAccess(key=KEY)},
    ice=ICE,
    stream=FAST_END,
)


async def test_child_profile_slates_pages_high_and_refuses_recorders(clip, http):
    """The list says blur: the adult stream blurs, the child's stream is cut to the slate."""
    async with running_relay(PROFILED, matcher=sample_lists("blur"), moderation=moderation()) as r:
        api = Api(http, r.base)
        async with publishing(r, clip, "kid", CHILD_KEY, **LOOPED), publishing(r, clip, "adult", KEY, **LOOPED):
            assert r.summary("kid")["profile"] == "child" and r.summary("adult")["profile"] == "default"
            for agent in ("Lavf/60.3.100", "livesafe-watch/0.1 (recording)", user_agent(recording=True)):
                status, text = await whep_status(http, r, "kid", agent)
                assert status == 403 and "recording" in text, (agent, status, text)
            assert (await whep_status(http, r, "adult", "Lavf/60.3.100"))[0] == 201, (
                "the default profile lets recorders watch"
            )
            seen = asyncio.Event()
            async with watching(r, "kid", on_frame=lambda frame, t: seen.set()):
                await asyncio.wait_for(seen.wait(), 10)  # a normal player is let in and gets pictures

            status, _, _ = await api.report("kid")
            assert status == 202
            assert (await api.events("kid", "report.received"))[0]["severity"] == CHILD.report_severity == "high"

            kid = await api.wait_event("kid", "match.started")
            adult = await api.wait_event("adult", "match.started")
            assert (kid["action"], kid["severity"], kid["profile"]) == ("slate", "high", "child")
            assert (adult["action"], adult["severity"], adult["profile"]) == ("blur", "warning", "default")


# ------------------------------------------------------------------ redact now


async def test_redact_now_slates_a_clean_stream_for_its_viewers_until_resumed(clip, http):
    """Nothing matches (no lists): the slate viewers get can only come from the moderator's "redact"."""
    seen: list[bool] = []  # per frame the viewer got: is it the slate?
    async with (
        running_relay(matcher=no_lists(), moderation=moderation()) as r,
        publishing(r, clip, "s1", **LOOPED),
        watching(
            r,
            "s1",
            on_frame=lambda frame, t: seen.append(looks_like_slate(frame.to_ndarray(format="yuv420p")[: frame.height])),
        ),
    ):
        api = Api(http, r.base)
        await r.wait_for(lambda relay: len(seen) >= 30, 15)
        assert not any(seen), "a clean stream reaches its viewer as it is"
        assert (await api.act("s1", "resume", "nothing to lift"))[0] == 409

        status, redacted = await api.act("s1", "redact", "a viewer phoned in")
        assert status == 200, redacted
        assert redacted["event"]["action"] == "redact" and redacted["event"]["actor"] == MOD.name
        imposed = await api.wait_event("s1", "redaction.imposed", timeout=5)
        assert imposed["action"] == "slate" and "a viewer phoned in" in imposed["details"]["reason"]
        await wait_state(r, "s1", "redacted")
        assert r.summary("s1")["redaction_kept"]
        before = len(seen)
        await r.wait_for(lambda relay: sum(seen[before:]) >= 30, 15)  # the viewer's frames are the slate now
        await reach(r, "s1", frames_in(r.relay, "s1") + 45)  # held, however clean the picture
        assert r.summary("s1")["state"] == "redacted"

        assert (await api.act("s1", "resume", "reviewed: fine"))[0] == 200
        await wait_state(r, "s1", "live")
        lifted = len(seen)
        await r.wait_for(lambda relay: len(seen) >= lifted + 60, 15)
        assert not any(seen[-30:]), "the viewer sees the stream again"
        check_audit(
            await api.audit("s1"),
            [("redact", "a viewer phoned in", None, False), ("resume", "reviewed: fine", imposed["id"], False)],
            "s1",
        )


async def test_only_moderators_may_redact_and_only_a_live_stream(clip, http):
    observer = Principal("ob", "observer", "o" * 20)
    async with running_relay(
        matcher=no_lists(), moderation=ModerationSettings(database=":memory:", tokens=(MOD, observer))
    ) as r:
        api = Api(http, r.base)
        assert (await api.act("s1", "redact", "not live"))[0] == 404
        async with publishing(r, clip, "s1", **LOOPED):
            await reach(r, "s1", 10)
            headers = {"Authorization": f"Bearer {observer.token}"}
            body = {"action": "redact", "reason": "trying"}
            async with http.post(f"{r.base}/api/streams/s1/actions", json=body, headers=headers) as response:
                assert response.status == 403
            async with http.post(f"{r.base}/api/streams/s1/actions", json=body) as response:
                assert response.status == 401
            assert r.summary("s1")["state"] == "live" and not await api.audit("s1")

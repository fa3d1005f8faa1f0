"""Private by default: which streams exist, their profiles and states are for moderators and
observers once any access control is configured; viewers learn only their own stream's state;
and with ``[server] admin_port`` the internal routes (metrics, dashboard, moderation, lists,
banks) leave the public port altogether while publishing and watching stay on it.

Real servers on loopback, real aiortc publishers and viewers (tests/harness.py)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
from harness import (
    FAST_END,
    ICE,
    ROOT,
    SAMPLES,
    config_error,
    config_from,
    make_offer,
    publishing,
    running_relay,
    send,
    unused_port,
)

from livesafe.clients import watch
from livesafe.moderation.settings import ModerationSettings, Principal
from livesafe.relay.settings import RelaySettings, StreamAccess

CLIP = SAMPLES / "benign_mix.mp4"
KEY = "kid-stream-key-6c2e1b"
VIEW = "kid-viewer-token-4a9f0d"
OLGA = Principal("olga", "observer", "o" * 20)
MO = Principal("mo", "moderator", "m" * 20)
KEYED = RelaySettings(
    streams={"kid": StreamAccess(key=KEY, viewer_token=VIEW, profile="child"), "open": StreamAccess(key=KEY)},
    ice=ICE,
    stream=FAST_END,
)
TOKENS = ModerationSettings(database=":memory:", tokens=(OLGA, MO))
LOOPED = {"loop": True, "duration": 20}


async def test_with_tokens_the_stream_list_needs_an_observer_and_a_viewer_sees_only_its_streams_state(http):
    async with running_relay(KEYED, moderation=TOKENS) as r, publishing(r, CLIP, "kid", KEY, **LOOPED):
        for path in ("/api/streams", "/"):
            for token in (None, "not-a-token", VIEW, KEY):  # a viewer token or stream key is no moderator's
                reply = await send(http, "GET", r.base + path, token=token)
                assert reply.status == 401 and "child" not in reply.text, (path, token, reply)
        listed = await send(http, "GET", r.base + "/api/streams", token=OLGA.token)
        assert listed.status == 200
        (kid,) = listed.json()
        assert (kid["id"], kid["profile"]) == ("kid", "child") and kid["state"] in ("live", "redacted")
        index = await send(http, "GET", r.base + "/", token=MO.token)
        assert index.status == 200 and 'href="/watch/kid"' in index.text

        # The player's (and publish page's) view: this stream's state, for its viewers and its publisher.
        state_url = r.base + "/api/streams/kid/state"
        assert (await send(http, "GET", state_url)).status == 401, "the stream has a viewer token"
        assert (await send(http, "GET", state_url, token="wrong")).status == 401
        for token in (VIEW, KEY):
            reply = await send(http, "GET", state_url, token=token)
            assert reply.status == 200 and set(reply.json()) == {"id", "state"}, reply
            assert reply.json()["state"] in ("live", "redacted") and "child" not in reply.text
        assert (await send(http, "GET", r.base + "/api/streams/open/state")).status == 404, "not live: nothing to say"

        # Neither a recorder's refusal nor /metrics (open to scrapers) names the profile or the stream.
        offer = await make_offer(direction="recvonly")
        headers = {"User-Agent": "Lavf/60.3.100"}
        refused = await send(http, "POST", r.url("whep", "kid"), offer, token=VIEW, content_type="application/sdp",
                             headers=headers)  # fmt: skip
        assert refused.status == 403 and "recording" in refused.text and "child" not in refused.text, refused
        metrics = await send(http, "GET", r.base + "/metrics")
        assert metrics.status == 200 and "child" not in metrics.text and "kid" not in metrics.text


async def test_stream_keys_without_moderator_tokens_list_to_no_one(http):
    """Any access control configured (here stream keys only): the list is closed, as the moderation API is."""
    async with running_relay(KEYED) as r, publishing(r, CLIP, "open", KEY, **LOOPED):
        assert (await send(http, "GET", r.base + "/api/streams")).status == 401
        assert (await send(http, "GET", r.base + "/api/streams", token=KEY)).status == 401
        reply = await send(http, "GET", r.base + "/api/streams/open/state")  # no viewer token: anyone may watch
        assert reply.status == 200 and reply.json()["id"] == "open", reply


async def test_a_viewer_token_alone_closes_the_list_and_the_moderation_api(http):
    """Who may watch was decided (a viewer token, no stream key, no moderator token): the stream list and
    the moderation API are not open to anyone, though publishing still is."""
    viewers_only = RelaySettings(streams={"kid": StreamAccess(viewer_token=VIEW)}, ice=ICE, stream=FAST_END)
    async with running_relay(viewers_only) as r:
        for path in ("/api/streams", "/api/events", "/"):
            reply = await send(http, "GET", r.base + path)
            assert reply.status == 401, (path, reply)


async def test_the_demo_without_tokens_still_lists_its_streams(http):
    async with running_relay() as r, publishing(r, CLIP, "demo", **LOOPED):
        listed = await send(http, "GET", r.base + "/api/streams")
        assert listed.status == 200 and [s["id"] for s in listed.json()] == ["demo"], listed
        assert 'href="/watch/demo"' in (await send(http, "GET", r.base + "/")).text


INTERNAL = ["/metrics", "/api/events", "/api/audit", "/api/whoami", "/api/streams", "/", "/dashboard",
            "/web/dashboard.js", "/web/dashboard.css", "/api/banks"]  # fmt: skip


@pytest.mark.parametrize("tokens", [False, True], ids=["demo", "tokens"])
async def test_with_an_admin_port_internal_routes_leave_the_public_port_and_media_stays(http, tokens):
    settings = RelaySettings(ice=ICE, stream=FAST_END, admin_port=0)
    moderation = TOKENS if tokens else ModerationSettings(database=":memory:")
    token = OLGA.token if tokens else None
    async with running_relay(settings, moderation=moderation) as r:
        assert r.admin is not None and r.admin != r.base
        async with publishing(r, CLIP, "cam", **LOOPED):  # WHIP on the public port
            for path in INTERNAL:
                hidden = await send(http, "GET", r.base + path, token=token)
                assert hidden.status == 404, (path, hidden)
                shown = await send(http, "GET", r.admin + path, token=token)
                assert shown.status == 200, (path, shown)
            acted = await send(http, "POST", r.base + "/api/streams/cam/actions", b"{}", token=MO.token,
                               content_type="application/json")  # fmt: skip
            assert acted.status == 404, acted
            metrics = await send(http, "GET", r.admin + "/metrics")
            assert "livesafe_streams" in metrics.text, metrics

            # What a viewer needs stays public: the page, its script, the stream's state, reports, health.
            for path in ("/healthz", "/watch/cam", "/publish/cam", "/web/whip.js", "/api/streams/cam/state"):
                assert (await send(http, "GET", r.base + path)).status == 200, path
            assert (await send(http, "GET", r.base + "/no-such-page")).status == 404

            frames = 0
            enough = asyncio.Event()

            def on_frame(frame: object, t: float) -> None:
                nonlocal frames
                frames += 1
                if frames >= 3:
                    enough.set()

            viewer = asyncio.ensure_future(watch(r.url("whep", "cam"), ice=ICE, duration=15, on_frame=on_frame))
            try:
                await asyncio.wait_for(enough.wait(), 15)  # WHEP on the public port, real frames
            finally:
                viewer.cancel()
                await asyncio.gather(viewer, return_exceptions=True)
            report = await send(http, "POST", r.base + "/api/streams/cam/reports", b'{"reason": "spam"}',
                                content_type="application/json")  # fmt: skip
            assert report.status == 202, report
            events = await send(http, "GET", r.admin + "/api/events?type=report.received", token=token)
            assert [e["stream_id"] for e in events.json()["events"]] == ["cam"], events


# ------------------------------------------------------------------ configuration and the command line


def test_admin_port_and_host_come_from_server_and_bad_ones_are_refused(tmp_path):
    relay = config_from(tmp_path, '[server]\nport = 8080\nadmin_port = 9090\nadmin_host = "10.0.0.5"\n').relay
    assert (relay.admin_port, relay.admin_address) == (9090, ("10.0.0.5", 9090))
    assert config_from(tmp_path, "[server]\nadmin_port = 9090\n").relay.admin_address == ("127.0.0.1", 9090)
    assert config_from(tmp_path, "[server]\n").relay.admin_address is None, "default: one port for everything"
    for text, wanted in (
        ("admin_port = 8080", "admin_port: must differ from port"),
        ("admin_port = 70000", "admin_port 70000: expected a port"),
        ('admin_port = "9090"', "server.admin_port: expected a port number"),
        ("admin_port = true", "server.admin_port: expected a port number"),
        ('admin_host = "10.0.0.5"', "admin_host: set admin_port too"),
        ("admin_port = 9090\nadmin_host = 5", "server.admin_host: expected an address"),
    ):
        assert wanted in config_error(tmp_path, f"[server]\nport = 8080\n{text}\n"), text


def _serve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "livesafe.cli", "serve", "--blocklist", str(SAMPLES / "blocklist.txt"), *args],
        cwd=ROOT, capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})},
    )  # fmt: skip


def test_serve_refuses_an_admin_port_it_cannot_honour_in_one_line(tmp_path):
    port = str(unused_port())
    same = _serve("--port", port, "--admin-port", port, "--db", str(tmp_path / "a.db"))
    assert same.returncode == 2 and "admin_port: must differ from port" in same.stderr, same.stderr
    clustered = _serve("--port", port, "--admin-port", str(unused_port()), "--redis", "redis://127.0.0.1:1/0",
                       "--db", str(tmp_path / "b.db"), env={"LIVESAFE_CLUSTER_SECRET": "s" * 32})  # fmt: skip
    assert clustered.returncode == 2 and "admin_port: not with a cluster" in clustered.stderr, clustered.stderr
    for result in (same, clustered):
        assert "Traceback" not in result.stderr


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_serve_with_admin_port_serves_metrics_and_the_dashboard_only_there(tmp_path):
    port, admin = unused_port(), unused_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "livesafe.cli", "serve", "--port", str(port), "--admin-port", str(admin),
         "--blocklist", str(SAMPLES / "blocklist.txt"), "--db", str(tmp_path / "ev.db")],
        cwd=ROOT, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert server.stderr is not None
        seen = []
        while not any("events stored in" in line for line in seen):  # its last start-up line here
            line = server.stderr.readline()
            assert line or server.poll() is None, "".join(seen)
            seen.append(line)
        printed = "".join(seen)
        assert f"only on http://127.0.0.1:{admin}" in printed and f"http://127.0.0.1:{admin}/dashboard" in printed
        public, inside = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin}"
        assert [_status(public + p) for p in ("/metrics", "/dashboard", "/api/events")] == [404, 404, 404]
        assert [_status(inside + p) for p in ("/metrics", "/dashboard", "/api/events")] == [200, 200, 200]
        assert [_status(public + p) for p in ("/healthz", "/watch/demo")] == [200, 200]
    finally:
        server.send_signal(2)
        code = server.wait(timeout=15)
        assert code == 0, server.stderr.read() if server.stderr else code

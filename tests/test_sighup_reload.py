"""Config reload (``livesafe.reload``, SIGHUP): new keys, lists and webhooks while a stream runs.

The in-process tests drive the proxy ``livesafe serve`` builds through the same
entry point its SIGHUP handler calls (``ConfigReload.reload``), with real aiortc
publishers and a real viewer on loopback; the subprocess test sends a real SIGHUP
to a real ``livesafe serve``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import subprocess
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import av
import harness
import pytest
from aiohttp import web
from harness import BLOCKLIST, ICE, RunningRelay, frames_in, publishing, send, serving, unused_port
from test_relay_cli import LIVESAFE, _start, _stop, _wait_for_line

from livesafe.clients import watch
from livesafe.config import load_config
from livesafe.events import MATCH_STARTED
from livesafe.guard.matcher import LiveMatcher
from livesafe.lists.live import ListWatcher
from livesafe.proxy import build_proxy
from livesafe.reload import ConfigReload

KEY_A = "key-a-0123456789abcdef"
KEY_B = "key-b-0123456789abcdef"
MOD_TOKEN = "moderator-token-0123456789"
UNRELATED = "pdq " + "ab" * 32  # matches nothing in the clips


def _config(
    tmp: Path, *, keys: dict[str, str], lists: list[str], webhook: str | None = None, token: str = MOD_TOKEN
) -> str:
    """A config: ``keys`` stream -> key, ``lists`` of names (L1: an unrelated hash; L2: the sample blocklist)."""
    if not (tmp / "l1.txt").exists():
        (tmp / "l1.txt").write_text(UNRELATED + "\n")
    paths = {"L1": tmp / "l1.txt", "L2": BLOCKLIST}
    text = ['[guard]\nhold_seconds = 0.5\n', '[server.ice]\nhost_addresses = ["127.0.0.1"]\n',
            "[server.stream]\nended_grace_seconds = 1.0\n", '[moderation]\ndatabase = ":memory:"\n',
            f'[moderation.tokens.mod]\ntoken = "{token}"\nrole = "moderator"\n']  # fmt: skip
    text += [f'[streams.{name}]\nkey = "{key}"\n' for name, key in keys.items()]
    text += [f'[[lists.file]]\npath = "{paths[n]}"\nname = "{n}"\ncategory = "test"\naction = "slate"\n' for n in lists]
    if webhook is not None:
        text.append(f'[[webhooks]]\nurl = "{webhook}"\nname = "receiver"\nsecret = "whsec-test-secret"\n')
    return "\n".join(text)


class Receiver:
    """A webhook receiver on loopback: keeps every event body it is sent."""

    def __init__(self) -> None:
        self.events: list[dict] = []
        self.app = web.Application()
        self.app.router.add_post("/hook", self._take)

    async def _take(self, request: web.Request) -> web.Response:
        assert request.headers["webhook-signature"].startswith("v1,")
        self.events.append(await request.json())
        return web.Response(status=204)

    def got(self, kind: str, stream: str, list_name: str | None = None) -> bool:
        return any(
            e["type"] == kind and e["data"]["stream_id"] == stream
            and (list_name is None or e["data"].get("list_name") == list_name)
            for e in self.events
        )  # fmt: skip


@contextlib.asynccontextmanager
async def _serving_reloadable(path: Path) -> AsyncIterator[tuple[RunningRelay, ConfigReload, LiveMatcher]]:
    """The proxy as ``livesafe serve --config path`` builds it, and the reload its SIGHUP runs."""
    config = load_config(path)
    lists = LiveMatcher(config.lists)
    watcher = ListWatcher(lists, config.reload_seconds)
    proxy = build_proxy(config.relay, lambda: lists.current, config.guard, config.moderation, watcher, lists=lists)
    reload = ConfigReload(lambda: load_config(path), config, proxy.relay, proxy.moderation, lists, watcher)
    reload.attach(proxy.app)
    async with serving(proxy.app) as base:
        yield RunningRelay(proxy.relay, base, proxy.moderation), reload, lists


async def _publish_status(http, r: RunningRelay, stream: str, key: str) -> int:  # type: ignore[no-untyped-def]
    """The status WHIP answers a publisher of ``stream`` with ``key`` (the key is checked before the offer)."""
    return (await send(http, "POST", r.url("whip", stream), "v=0", token=key, content_type="application/sdp")).status


def _matched(r: RunningRelay, stream: str, list_name: str) -> bool:
    event = r.moderation.store.events.latest(stream, (MATCH_STARTED,))
    return event is not None and event.data.get("list_name") == list_name


async def test_reload_adds_a_key_a_list_and_a_webhook_without_dropping_the_stream(
    tmp_path, http, blocked_cut_360p, caplog
):
    """Key A and list L1 while A publishes and a viewer watches; the file gains key B, list L2 (the sample
    blocklist) and a webhook; one reload later the viewer is still receiving, B publishes, L2's pictures
    are redacted on both streams and the new webhook hears about it.  Nothing secret is logged."""
    caplog.set_level(logging.INFO, logger="livesafe")
    path = tmp_path / "livesafe.toml"
    path.write_text(_config(tmp_path, keys={"a": KEY_A}, lists=["L1"]))
    receiver = Receiver()
    async with serving(receiver.app) as hooks, _serving_reloadable(path) as (r, reload, lists):
        async with publishing(r, blocked_cut_360p, "a", KEY_A, loop=True):
            frames: list[bool] = []  # per frame the viewer got: was it the slate?

            def seen_by_viewer(frame: av.VideoFrame, _: float) -> None:
                frames.append(harness.looks_like_slate(frame.to_ndarray(format="yuv420p")[: frame.height]))

            viewer = asyncio.ensure_future(watch(r.url("whep", "a"), ice=ICE, duration=90, on_frame=seen_by_viewer))
            try:
                # Past the clip's blocked segment (2.5-4 s) once: L1 does not have it, so nothing matched.
                await r.wait_for(lambda _: frames_in(r.relay, "a") > 150 and len(frames) > 30, 30)
                assert r.moderation.store.events.latest("a", (MATCH_STARTED,)) is None and not any(frames)
                assert await _publish_status(http, r, "b", KEY_B) == 403

                path.write_text(_config(tmp_path, keys={"a": KEY_A, "b": KEY_B}, lists=["L1", "L2"],
                                        webhook=f"{hooks}/hook"))  # fmt: skip
                publisher = r.relay.streams["a"].publisher
                assert await reload.reload()
                seen = len(frames)

                async with publishing(r, blocked_cut_360p, "b", KEY_B):
                    await r.wait_for(lambda _: _matched(r, "b", "L2"), 30)
                    await r.wait_for(lambda _: receiver.got(MATCH_STARTED, "b", "L2"), 15)
                await r.wait_for(lambda _: _matched(r, "a", "L2"), 30)
                await r.wait_for(lambda _: any(frames[seen:]), 15)  # the viewer of A gets the slate now
                await r.wait_for(lambda _: len(frames) > seen + 30, 15)
                assert not viewer.done(), "the viewer was dropped"
                assert r.relay.streams["a"].publisher is publisher, "A's publisher was dropped"
                assert [s.name for s in lists.statuses] == ["L1", "L2"]
            finally:
                viewer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await viewer
        metrics = (await send(http, "GET", f"{r.base}/metrics", token=MOD_TOKEN)).text
        assert 'livesafe_config_reload_total{result="ok"} 1' in metrics
        assert (await send(http, "GET", f"{r.base}/healthz")).json()["config"]["last_reload"] == "ok"
    logged = caplog.text
    assert "config reloaded" in logged and "stream keys 2 (+b)" in logged and "lists 2 (+L2)" in logged
    for secret in (KEY_A, KEY_B, MOD_TOKEN, "whsec-test-secret"):
        assert secret not in logged


@pytest.mark.parametrize(
    "broken, says",
    [
        ("[streams.d]\nkey = 42\n", "streams.d.key"),  # not valid: the file is refused
        ('[[lists.file]]\npath = "missing.txt"\nname = "L3"\ncategory = "test"\n', "missing.txt"),  # unloadable
        ("[server\n", "not valid TOML"),
    ],
)
async def test_a_broken_config_on_reload_changes_nothing_and_says_so(tmp_path, http, caplog, broken, says):
    """Whatever else the file adds (key C here), a mistake anywhere in it keeps everything as it was:
    one ERROR line, the failure counted in /metrics and shown in /healthz; the relay carries on."""
    path = tmp_path / "livesafe.toml"
    path.write_text(_config(tmp_path, keys={"a": KEY_A}, lists=["L1"]))
    async with _serving_reloadable(path) as (r, reload, lists):
        settings, moderation, matcher = r.relay.settings, r.moderation.settings, lists.current
        path.write_text(_config(tmp_path, keys={"a": KEY_A, "c": KEY_B}, lists=["L1", "L2"]) + "\n" + broken)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="livesafe"):
            assert not await reload.reload()
        (line,) = [rec for rec in caplog.records if rec.name.startswith("livesafe") and rec.levelno >= logging.INFO]
        assert line.levelno == logging.ERROR and "nothing changed" in line.getMessage() and says in line.getMessage()
        assert r.relay.settings is settings and r.moderation.settings is moderation and lists.current is matcher
        assert [s.name for s in lists.statuses] == ["L1"]
        assert await _publish_status(http, r, "c", KEY_B) == 403  # no key for c: nobody may publish it
        metrics = (await send(http, "GET", f"{r.base}/metrics", token=MOD_TOKEN)).text
        assert 'livesafe_config_reload_total{result="error"} 1' in metrics
        assert "livesafe_config_last_reload_successful 0" in metrics
        health = await send(http, "GET", f"{r.base}/healthz")
        assert health.status == 200 and health.json()["config"]["last_reload"] == "error"  # still guarding: ok


async def test_a_live_stream_keeps_its_profile_and_a_removed_list_stops_matching(tmp_path, blocked_cut_360p):
    """What runs keeps the rules it started under (its profile: the guard's floor was fixed then); a list
    taken out of the file is out of force at once, for running streams too, and its watcher stops."""
    path = tmp_path / "livesafe.toml"
    path.write_text(_config(tmp_path, keys={"a": KEY_A}, lists=["L1", "L2"]))
    async with _serving_reloadable(path) as (r, reload, lists):
        async with publishing(r, blocked_cut_360p, "a", KEY_A, loop=True):
            assert r.relay.profile("a").name == "default"
            path.write_text(_config(tmp_path, keys={"a": KEY_A}, lists=["L1"]).replace(
                f'key = "{KEY_A}"', f'key = "{KEY_A}"\nprofile = "child"'))  # fmt: skip
            assert await reload.reload()
            assert r.relay.profile("a").name == "default"  # live: as it started
            assert r.relay.settings.profile_for("a").name == "child"  # its next start
            assert [bl.spec.name for bl in lists.current.blocklists] == ["L1"]
            count = r.moderation.matches[("L2", "test")]
            await r.wait_for(lambda _: frames_in(r.relay, "a") > 200, 30)
            assert r.moderation.matches[("L2", "test")] == count


async def test_reload_turns_signed_tokens_and_the_auth_hook_on_changes_and_off(tmp_path, http):
    """``[auth.jwt]`` and ``[auth.hook]`` from the file at each reload: a token (or the hook's answer) that
    was refused is accepted once they are configured, a changed hook is asked afresh (no cached answer
    from the old one), and taking them out refuses again.  Passing the check shows as the offer's 400."""
    from test_auth import SECRET, token

    answers = {"/allow": True, "/deny": False}
    hook = web.Application()

    async def answer(request: web.Request) -> web.Response:
        return web.json_response({"allow": answers[request.path]})

    hook.router.add_post("/{verdict}", answer)
    path = tmp_path / "livesafe.toml"
    base = _config(tmp_path, keys={"a": KEY_A}, lists=["L1"])
    jwt_table = f'[auth.jwt]\nsecret = "{SECRET}"\nissuer = "https://platform.test"\naudience = "livesafe"\n'
    path.write_text(base)
    signed = token("cam", "publish")
    async with serving(hook) as hooks, _serving_reloadable(path) as (r, reload, _):
        assert await _publish_status(http, r, "cam", signed) == 403
        path.write_text(base + jwt_table)
        assert await reload.reload()
        assert await _publish_status(http, r, "cam", signed) == 400  # let through, then the offer is refused
        assert await _publish_status(http, r, "cam", token("other", "publish")) == 403

        path.write_text(base + f'[auth.hook]\nurl = "{hooks}/allow"\n')
        assert await reload.reload()
        assert await _publish_status(http, r, "cam", "opaque-platform-token") == 400
        path.write_text(base + f'[auth.hook]\nurl = "{hooks}/deny"\n')
        assert await reload.reload()
        assert await _publish_status(http, r, "cam", "opaque-platform-token") == 403

        path.write_text(base)
        assert await reload.reload()
        assert await _publish_status(http, r, "cam", signed) == 403
        assert await _publish_status(http, r, "cam", "opaque-platform-token") == 403


async def test_reload_replaces_the_moderator_tokens(tmp_path, http):
    """A token taken out of the file is refused at the next request; the one put in works."""
    path = tmp_path / "livesafe.toml"
    path.write_text(_config(tmp_path, keys={"a": KEY_A}, lists=["L1"]))
    async with _serving_reloadable(path) as (r, reload, _):
        assert (await send(http, "GET", f"{r.base}/api/whoami", token=MOD_TOKEN)).status == 200
        new_token = "rotated-token-9876543210"
        path.write_text(_config(tmp_path, keys={"a": KEY_A}, lists=["L1"], token=new_token))
        assert await reload.reload()
        assert (await send(http, "GET", f"{r.base}/api/whoami", token=MOD_TOKEN)).status == 401
        assert (await send(http, "GET", f"{r.base}/api/whoami", token=new_token)).json()["name"] == "mod"


def test_sighup_to_livesafe_serve_reloads_keys_and_refuses_a_broken_file(tmp_path):
    """A real process and a real signal: key B works after SIGHUP; a broken file then is one ERROR line,
    and the process keeps serving with what it had; a changed port is named as needing a restart."""
    port = unused_port()
    path = tmp_path / "livesafe.toml"
    path.write_text(_config(tmp_path, keys={"a": KEY_A}, lists=["L1"]) + f"\n[server]\nport = {port}\n")
    server = _start("serve", "--config", str(path))
    url = f"http://127.0.0.1:{port}"
    clip = str(Path(BLOCKLIST).parent / "benign_mix.mp4")

    def publish(stream: str, key: str) -> subprocess.CompletedProcess:
        return subprocess.run([*LIVESAFE, "publish", clip, f"{url}/whip/{stream}", "--token", key,
                               "--ice-host", "127.0.0.1", "--duration", "1"],
                              capture_output=True, text=True, timeout=60)  # fmt: skip

    try:
        _wait_for_line(server, "SIGHUP reloads")
        refused = publish("b", KEY_B)
        assert refused.returncode == 2 and "403" in refused.stderr, refused.stderr
        path.write_text(_config(tmp_path, keys={"a": KEY_A, "b": KEY_B}, lists=["L1"]) + f"\n[server]\nport = {port}\n")
        server.send_signal(signal.SIGHUP)
        _wait_for_line(server, "config reloaded")
        ok = publish("b", KEY_B)
        assert ok.returncode == 0, ok.stderr

        path.write_text(_config(tmp_path, keys={"a": KEY_A}, lists=["L1"]) + f"\n[server]\nport = {port + 1}\n")
        server.send_signal(signal.SIGHUP)
        said = _wait_for_line(server, "restart livesafe")
        assert "server.port" in said
        path.write_text("[streams.a]\nkey = \n")
        server.send_signal(signal.SIGHUP)
        said = _wait_for_line(server, "config reload refused")
        assert "ERROR" in said and "not valid TOML" in said
        still = publish("a", KEY_A)
        assert still.returncode == 0, still.stderr
        with urllib.request.urlopen(f"{url}/healthz", timeout=10) as response:
            assert json.loads(response.read())["config"]["last_reload"] == "error"
    finally:
        code = _stop(server)
    rest = server.stderr.read()
    assert code == 0, rest
    assert "Traceback" not in rest and KEY_A not in rest and KEY_B not in rest


def test_docs_say_what_reloads_and_what_needs_a_restart_as_the_code_does():
    """docs/reload.md's two lists against the sets ``livesafe.reload`` applies: a setting added to
    RelaySettings or ModerationSettings must be placed on one side, in the code and in the docs."""
    from dataclasses import fields

    from livesafe.moderation.settings import ModerationSettings
    from livesafe.relay.settings import RelaySettings
    from livesafe.reload import MODERATION_RELOADED, RELAY_RELOADED

    text = (Path(__file__).resolve().parent.parent / "docs" / "reload.md").read_text()
    changes, rest = text.split("## What needs a restart")
    restart = rest.split("## What happens")[0]
    tables = {"streams": "[streams.NAME]", "profiles": "[profiles.NAME]", "jwt": "[auth.jwt]", "hook": "[auth.hook]",
              "ice": "[server.ice]", "stream": "[server.stream]", "overload": "[server.overload]",
              "tokens": "[moderation.tokens.NAME]", "webhooks": "[[webhooks]]"}  # fmt: skip
    for f in fields(RelaySettings):
        name = tables.get(f.name, f"`{f.name}`")
        assert name in (changes if f.name in RELAY_RELOADED else restart), f.name
    for f in fields(ModerationSettings):
        if f.name in MODERATION_RELOADED:
            assert tables[f.name] in changes, f.name
    assert "`database`" in restart and "every `[moderation]` key but the tokens" in restart

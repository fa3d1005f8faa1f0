"""Lists change on disk while a stream runs: the watcher swaps them in whole, for as long as the app runs."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from aiohttp import web
from harness import ICE, eventually

from livesafe.guard.matcher import LiveMatcher
from livesafe.guard.stream_guard import GuardSettings
from livesafe.lists import BlocklistError, ListSpec
from livesafe.lists.live import ListWatcher
from livesafe.moderation.settings import ModerationSettings
from livesafe.proxy import build_proxy
from livesafe.relay.settings import RelaySettings

HASH_A = "pdq " + "ab" * 32
HASH_B = "pdq " + "cd" * 32


def _rewrite(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)  # what list publishers should do: readers never see half a file


def test_an_empty_list_is_refused_at_start_and_never_replaces_a_good_one(tmp_path: Path) -> None:
    """Failing loudly, not open: an empty file (or one of MD5s only) guards nothing, so it is an error at
    start and a refused reload later, the previous version kept and the status saying so while the file
    stays empty; ``allow_empty`` is the way to mean it."""
    path = tmp_path / "list.txt"
    path.write_text("# nothing yet\n")
    with pytest.raises(BlocklistError, match="no hashes: refused, so as not to guard nothing"):
        LiveMatcher([ListSpec(path=path, name="l")])
    assert len(LiveMatcher([ListSpec(path=path, name="l", allow_empty=True)]).current.blocklists[0]) == 0

    path.write_text(HASH_A + "\n")
    lists = LiveMatcher([ListSpec(path=path, name="l")])
    good = lists.current
    _rewrite(path, "md5 " + "12" * 16 + "\n")
    (message,) = lists.refresh(0, force=True)
    assert "kept previous version" in message and "only 1 MD5s" in message
    assert lists.current is good
    assert lists.refresh(0, force=True) == []  # the file is unchanged: still refused, still said
    (status,) = lists.status()
    assert "only 1 MD5s" in str(status["last_error"]) and status["failing_since"] is not None
    _rewrite(path, HASH_B + "\n")
    assert "reloaded" in lists.refresh(0, force=True)[0]
    (status,) = lists.status()
    assert status["last_error"] is None and status["failing_since"] is None


def test_watcher_swaps_changed_list_and_keeps_old_on_error(tmp_path: Path) -> None:
    path = tmp_path / "list.txt"
    path.write_text(HASH_A + "\n")
    lists = LiveMatcher([ListSpec(path=path, name="l")])
    first = lists.current
    watcher = ListWatcher(lists, interval=0.05).start()
    try:
        _rewrite(path, HASH_A + "\n" + HASH_B + "\n")
        assert eventually(lambda: lists.current is not first, 5.0)
        second = lists.current
        assert len(second.blocklists[0]) == 2
        # A broken rewrite: the previous good version stays in force.
        _rewrite(path, HASH_A + "\nnot a hash line\n")
        time.sleep(0.3)
        assert lists.current is second
        assert np.array_equal(second.blocklists[0].hashes["pdq"][1], np.frombuffer(bytes.fromhex("cd" * 32), np.uint8))
    finally:
        watcher.stop()


async def test_the_proxy_app_runs_the_watcher_for_as_long_as_it_runs(tmp_path: Path) -> None:
    """Hot reload belongs to the app's lifecycle: it starts with the app and stops when the app is cleaned up."""
    path = tmp_path / "list.txt"
    path.write_text(HASH_A + "\n")
    lists = LiveMatcher([ListSpec(path=path, name="l")])
    proxy = build_proxy(
        RelaySettings(ice=ICE),
        lambda: lists.current,
        GuardSettings(),
        ModerationSettings(database=":memory:"),
        ListWatcher(lists, interval=0.05),
    )

    def watching() -> bool:
        return any(t.name.startswith("livesafe-list-watcher") for t in threading.enumerate())

    assert not watching()
    runner = web.AppRunner(proxy.app)
    await runner.setup()
    try:
        assert watching()
        first = lists.current
        _rewrite(path, HASH_A + "\n" + HASH_B + "\n")
        assert await asyncio.to_thread(eventually, lambda: lists.current is not first, 5.0)
        assert len(lists.current.blocklists[0]) == 2
    finally:
        await runner.cleanup()
    assert not watching()

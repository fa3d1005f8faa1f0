"""Lists change on disk while a stream runs: the watcher swaps them in whole."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from livesafe.guard.matcher import LiveMatcher
from livesafe.lists import ListSpec
from livesafe.lists.live import ListWatcher

HASH_A = "pdq " + "ab" * 32
HASH_B = "pdq " + "cd" * 32


def _rewrite(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)  # what list publishers should do: readers never see half a file


def _wait_for(condition, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


def test_watcher_swaps_changed_list_and_keeps_old_on_error(tmp_path: Path) -> None:
    path = tmp_path / "list.txt"
    path.write_text(HASH_A + "\n")
    lists = LiveMatcher([ListSpec(path=path, name="l")])
    first = lists.current
    watcher = ListWatcher(lists, interval=0.05).start()
    try:
        _rewrite(path, HASH_A + "\n" + HASH_B + "\n")
        assert _wait_for(lambda: lists.current is not first)
        second = lists.current
        assert len(second.blocklists[0]) == 2
        # A broken rewrite: the previous good version stays in force.
        _rewrite(path, HASH_A + "\nnot a hash line\n")
        time.sleep(0.3)
        assert lists.current is second
        assert np.array_equal(second.blocklists[0].hashes["pdq"][1], np.frombuffer(bytes.fromhex("cd" * 32), np.uint8))
    finally:
        watcher.stop()

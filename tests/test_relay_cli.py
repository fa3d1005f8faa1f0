"""The relay's command line as a user runs it: ``livesafe serve`` / ``demo`` / ``publish`` /
``watch`` as separate processes talking over loopback."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import av
import pytest
from harness import ROOT, SAMPLES, unused_port

LIVESAFE = [sys.executable, "-m", "livesafe.cli"]


def _start(*args: str, cwd: Path = ROOT) -> subprocess.Popen:
    return subprocess.Popen([*LIVESAFE, *args], cwd=cwd, stderr=subprocess.PIPE, text=True)


def _wait_for_line(process: subprocess.Popen, needle: str, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line:
            if process.poll() is not None:
                break
            continue
        seen.append(line)
        if needle in line:
            return "".join(seen)
    raise AssertionError(f"{needle!r} not printed; got:\n{''.join(seen)}")


def _stop(process: subprocess.Popen, sig: int = signal.SIGINT) -> int:
    process.send_signal(sig)
    try:
        return process.wait(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()


def _run(*args: str, timeout: float = 60, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([*LIVESAFE, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def test_serve_checks_stream_keys_and_shuts_down_cleanly(tmp_path):
    port = unused_port()
    server = _start("serve", "--port", str(port), "--blocklist", str(SAMPLES / "blocklist.txt"),
                    "--db", str(tmp_path / "ev.db"), "--ice-host", "127.0.0.1",
                    "--stream-key", "studio=s3cret-key")  # fmt: skip
    try:
        banner = _wait_for_line(server, "relay on")
        assert f"http://127.0.0.1:{port}" in banner
        url = f"http://127.0.0.1:{port}/whip/studio"
        clip = str(SAMPLES / "benign_mix.mp4")
        refused = _run("publish", clip, url, "--token", "wrong", "--ice-host", "127.0.0.1", "--duration", "1")
        assert refused.returncode == 2 and "403" in refused.stderr, refused.stderr
        ok = _run("publish", clip, url, "--token", "s3cret-key", "--ice-host", "127.0.0.1", "--duration", "2")
        assert ok.returncode == 0, ok.stderr
        assert "published" in ok.stderr
    finally:
        code = _stop(server, signal.SIGTERM)
    rest = server.stderr.read()
    assert code == 0
    assert "DEV MODE" not in banner + rest
    assert "s3cret-key" not in banner + rest, "the stream key must never be printed"
    assert "no moderator tokens configured" in banner + rest  # keys but no tokens: the moderation API is closed


def test_serve_without_keys_warns_it_is_in_dev_mode_and_refuses_a_busy_port(tmp_path):
    port = unused_port()
    server = _start(
        "serve", "--port", str(port), "--blocklist", str(SAMPLES / "blocklist.txt"), "--db", str(tmp_path / "ev.db")
    )
    try:
        assert "DEV MODE" in _wait_for_line(server, "DEV MODE")
        assert "/dashboard are open to anyone" in _wait_for_line(server, "moderation API")
        busy = _run(
            "serve", "--port", str(port), "--blocklist", str(SAMPLES / "blocklist.txt"), "--db", str(tmp_path / "b.db")
        )
        assert busy.returncode == 2 and "cannot listen" in busy.stderr
    finally:
        assert _stop(server) == 0


@pytest.mark.parametrize("port", ["99999", "-1", "65536"])
def test_serve_refuses_an_out_of_range_port_in_one_line(tmp_path, port):
    config = tmp_path / "port.toml"
    config.write_text(f"[server]\nport = {port}\n")
    for args in (["--port", port], ["--config", str(config)]):
        result = _run("serve", *args, "--blocklist", str(SAMPLES / "blocklist.txt"), "--db", str(tmp_path / "ev.db"))
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1, result.stderr
        assert lines[0].startswith("livesafe: error: ") and f"port {port}" in lines[0], result.stderr


def test_serve_refuses_a_bad_config_with_a_clear_error(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text("[server.ice]\nudp_ports = [80]\n")
    result = _run("serve", "--config", str(config), "--blocklist", str(SAMPLES / "blocklist.txt"))
    assert result.returncode == 2
    assert "server.ice.udp_ports" in result.stderr and "Traceback" not in result.stderr
    missing = _run("serve")
    assert missing.returncode == 2 and "no blocklist" in missing.stderr


def test_serve_refuses_an_unusable_event_store_with_a_clear_error(tmp_path):
    (tmp_path / "a-file").write_text("")
    (tmp_path / "not-a-db.db").write_text("garbage")
    for database, reason in (
        (tmp_path / "a-file" / "ev.db", "File exists"),
        (tmp_path / "not-a-db.db", "not a database"),
    ):
        result = _run("serve", "--blocklist", str(SAMPLES / "blocklist.txt"), "--db", str(database))
        assert result.returncode == 2 and "event store" in result.stderr and reason in result.stderr, result.stderr
        assert "Traceback" not in result.stderr


def test_the_readme_demo_serves_a_redacting_stream_a_viewer_can_record(tmp_path):
    """README's main command: the relay with the embedded config, a sample published on a loop.

    Run from a directory that is not the checkout: the sample and its blocklist ship in the package.
    """
    port = unused_port()
    database = tmp_path / "livesafe.db"  # README: the event store is livesafe.db in the current directory
    demo = _start("demo", "--port", str(port), cwd=tmp_path)
    try:
        printed = _wait_for_line(demo, "watch it at", timeout=60)
        assert f"http://127.0.0.1:{port}/watch/demo" in printed
        out = tmp_path / "demo.mkv"
        watched = _run("watch", f"http://127.0.0.1:{port}/whep/demo", "--duration", "8", "--record", str(out))
        assert watched.returncode == 0, watched.stderr
        with av.open(str(out)) as recording:
            frames = sum(1 for _ in recording.decode(video=0))
        assert frames > 60
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/events?type=match.started") as response:
            matches = json.load(response)["events"]
        assert matches and matches[0]["list_name"] == "samples" and matches[0]["stream_id"] == "demo"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/dashboard") as response:
            assert response.status == 200 and b"dashboard" in response.read().lower()
    finally:
        assert _stop(demo) == 0
    rest = demo.stderr.read()
    assert "match.started" in rest, "the sample's blocked segment was caught"
    assert f"preparing {ROOT / 'livesafe' / 'samples' / 'blocked_cut.mp4'}" in printed + rest, "the packaged sample"
    with sqlite3.connect(database) as db:  # the interruption outlives the process
        assert db.execute("SELECT COUNT(*) FROM events WHERE type = 'match.started'").fetchone()[0] >= 1


def test_demo_refuses_a_sample_that_is_not_a_video_before_it_serves(tmp_path):
    (tmp_path / "notes.mp4").write_text("not a video")
    for sample, reason in ((tmp_path / "notes.mp4", "cannot open as video"), (tmp_path / "gone.mp4", "no such file")):
        result = _run("demo", "--port", str(unused_port()), "--sample", str(sample), cwd=tmp_path)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and reason in lines[0], result.stderr
        assert lines[0].startswith("livesafe: error: "), result.stderr
    assert not (tmp_path / "livesafe.db").exists(), "refused before the event store was opened"


@pytest.mark.skipif(os.environ.get("LIVESAFE_TEST_NETNS") == "0", reason="needs the private network namespace")
def test_watch_reports_an_unknown_stream_clearly(tmp_path):
    port = unused_port()
    server = _start("serve", "--port", str(port), "--blocklist", str(SAMPLES / "blocklist.txt"),
                    "--ice-host", "127.0.0.1", "--db", str(tmp_path / "ev.db"))  # fmt: skip
    try:
        _wait_for_line(server, "relay on")
        result = _run("watch", f"http://127.0.0.1:{port}/whep/nobody", "--duration", "1")
        assert result.returncode == 2 and "404" in result.stderr and "nobody" in result.stderr
    finally:
        _stop(server)


def test_serve_on_port_0_prints_the_ports_it_bound(tmp_path):
    """``--port 0 --admin-port 0``: free ports, and the banner names them (not ``:0``), so they can be used."""
    server = _start("serve", "--port", "0", "--admin-port", "0", "--blocklist", str(SAMPLES / "blocklist.txt"),
                    "--db", str(tmp_path / "ev.db"), "--stream-key", "studio=s3cret-key")  # fmt: skip
    try:
        said = _wait_for_line(server, "only on")
        public = said.split("relay on http://127.0.0.1:")[1].split()[0]
        admin = said.split("only on http://127.0.0.1:")[1].split()[0]
        assert public.isdigit() and admin.isdigit() and "0" not in (public, admin) and public != admin, said
        with urllib.request.urlopen(f"http://127.0.0.1:{public}/healthz", timeout=10) as health:
            assert json.loads(health.read())["status"] == "ok"
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=10) as metrics:
            assert b"livesafe_streams" in metrics.read()
    finally:
        assert _stop(server) == 0

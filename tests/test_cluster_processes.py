"""Cluster nodes as real ``livesafe serve`` processes, failing as processes do: ``kill -9`` of an origin,
SIGTERM's drain, ``serve --workers`` keeping its workers up behind one port, and the one-line errors.

Everything runs on loopback (the suite's private network namespace) against the suite's
redis-server, or the private one ``--workers`` starts itself.  Cluster timings are shortened
(heartbeat 0.2 s, node TTL 1 s, lease 0.6 s) where the test has a ``[cluster]`` of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis
from cluster_harness import SECRET
from harness import BLOCKLIST, ICE, ROOT, make_offer, unused_port

from livesafe.clients import ClientError, publish, watch

LIVESAFE = [sys.executable, "-m", "livesafe.cli"]
READY = "livesafe: relay on "
ENV = os.environ | {"LIVESAFE_CLUSTER_SECRET": SECRET}


class Process:
    """A ``livesafe`` process whose stderr a thread reads into ``lines`` (so its pipe never fills)."""

    def __init__(self, args: list[str], env: dict[str, str] = ENV) -> None:
        self.process = subprocess.Popen([*LIVESAFE, *args], cwd=ROOT, stderr=subprocess.PIPE, text=True, env=env)
        self.lines: list[str] = []
        self._changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for(self, needle: str, timeout: float = 30.0, count: int = 1) -> None:
        """Until ``needle`` has been printed ``count`` times (AssertionError with the output if not)."""

        def seen() -> bool:
            return sum(needle in line for line in self.lines) >= count

        with self._changed:
            self._changed.wait_for(lambda: seen() or self.process.poll() is not None, timeout)
            if not seen():
                raise AssertionError(f"{needle!r} not printed (x{count}); got:\n{self.output}")

    async def printed(self, needle: str, timeout: float = 30.0, count: int = 1) -> None:
        await asyncio.to_thread(self.wait_for, needle, timeout, count)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def stop(self, sig: int = signal.SIGINT, timeout: float = 20.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()


def cluster_config(tmp_path: Path, redis_url: str, drain_seconds: float = 20.0) -> Path:
    path = tmp_path / "cluster.toml"
    path.write_text(
        "[server.stream]\nended_grace_seconds = 1.0\n\n"
        f'[cluster]\nredis_url = "{redis_url}"\nheartbeat_seconds = 0.2\nnode_ttl_seconds = 1.0\n'
        f"lease_ttl_seconds = 0.6\ndrain_seconds = {drain_seconds}\n"
    )
    return path


class Node(Process):
    def __init__(self, config: Path, name: str, tmp_path: Path, port: int | None = None) -> None:
        self.name, self.port = name, port or unused_port()
        super().__init__(
            ["serve", "--config", str(config), "--node", name, "--port", str(self.port), "--db",
             str(tmp_path / f"{name}.db"), "--ice-host", "127.0.0.1", "--blocklist", str(BLOCKLIST)]
        )  # fmt: skip

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return f"{self.base}/{path}"


@contextlib.contextmanager
def running(*processes: Process) -> Iterator[None]:
    try:
        yield
    finally:
        for process in processes:
            process.stop()


@contextlib.asynccontextmanager
async def background(work: Awaitable[Any]) -> AsyncIterator[asyncio.Future[Any]]:
    task = asyncio.ensure_future(work)
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, ClientError):
            await task


async def until(condition: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s")
        await asyncio.sleep(0.1)


async def streams(url: str) -> dict[str, dict[str, Any]]:
    """``/api/streams`` at ``url`` by id, on a fresh connection (so a shared port picks a process anew)."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
        async with http.get(url + "/api/streams", timeout=aiohttp.ClientTimeout(total=5)) as response:
            return {s["id"]: s for s in await response.json()}


async def guards(base: str, stream: str = "studio") -> bool:
    """Is the node at ``base`` guarding ``stream`` itself, frames flowing (not another node's, listed)?"""
    try:
        listed = (await streams(base)).get(stream)
    except (aiohttp.ClientError, TimeoutError):
        return False
    return listed is not None and "node" not in listed and listed["state"] != "ended" and listed["frames_in"] > 0


async def post_offer(url: str, host: str | None = None) -> tuple[int, str]:
    """An offer POSTed once (no redirect followed); a session it opened is hung up again."""
    async with aiohttp.ClientSession() as http:
        headers = {"Content-Type": "application/sdp"} | ({"Host": host} if host else {})
        async with http.post(url, data=await make_offer(), headers=headers, allow_redirects=False) as response:
            status, location = response.status, response.headers.get("Location", "")
        if status == 201:  # hung up on the worker's own port, whatever name the client used
            async with http.delete(location.replace("relay.example", "127.0.0.1")) as response:
                assert response.status == 200, "the absolute Location is the session on the node holding it"
        return status, location


def owner(client: redis.Redis, stream: str = "studio") -> str | None:
    value = client.get(f"livesafe:stream:{stream}:owner")
    return value.rpartition("|")[0] if value else None


def events_of(database: Path, kind: str) -> int:
    with sqlite3.connect(database) as db:
        return int(db.execute("SELECT COUNT(*) FROM events WHERE type = ?", (kind,)).fetchone()[0])


async def test_a_killed_origin_s_stream_is_placed_on_another_node_and_the_node_rejoins(
    redis_server, tmp_path, blocked_cut_360p
) -> None:
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    config = cluster_config(tmp_path, redis_server.url)
    a, b = Node(config, "a", tmp_path), Node(config, "b", tmp_path)
    restarted: list[Node] = []
    try:
        await asyncio.gather(a.printed(READY), b.printed(READY))
        async with background(publish(blocked_cut_360p, a.url("whip/studio"), loop=True, ice=ICE)):
            await until(lambda: guards(a.base), 15, "the stream live on a")
            assert owner(client) == "a"
            instance = json.loads(client.get("livesafe:node:a"))["instance"]
            a.process.kill()
            a.process.wait(timeout=5)
            killed = time.monotonic()
        # The publisher finds its node gone and starts again through b, retrying while b cannot place it yet.
        retrying = publish(blocked_cut_360p, b.url("whip/studio"), loop=True, ice=ICE, retries=10)
        async with background(retrying):
            await until(lambda: guards(b.base), 10, "the stream live on b after a's kill")
            took = time.monotonic() - killed
            print(f"kill -9 of the origin -> guarded on b in {took:.2f} s")
            assert took < 10
            assert owner(client) == "b"
        # a's name is freed when its key expires; a restarted with its name and database rejoins.
        await until(lambda: _absent(client, "livesafe:node:a"), 5, "a's registration to expire")
        restarted.append(Node(config, "a", tmp_path, port=a.port))
        await restarted[0].printed(READY)
        rejoined = json.loads(client.get("livesafe:node:a"))
        assert rejoined["instance"] != instance and rejoined["url"] == a.base
        assert events_of(tmp_path / "a.db", "stream.started") >= 1  # what a recorded survived the kill
    finally:
        for node in (a, b, *restarted):
            node.stop()


async def _absent(client: redis.Redis, key: str) -> bool:
    return not client.exists(key)


async def test_sigterm_drains_a_node_keeps_its_viewer_then_leaves_the_registry_clean(
    redis_server, tmp_path, blocked_cut_360p
) -> None:
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    config = cluster_config(tmp_path, redis_server.url, drain_seconds=20)
    a, b = Node(config, "a", tmp_path), Node(config, "b", tmp_path)
    with running(a, b):
        await asyncio.gather(a.printed(READY), b.printed(READY))
        async with background(publish(blocked_cut_360p, a.url("whip/studio"), loop=True, ice=ICE)):
            await until(lambda: guards(a.base), 15, "the stream live on a")
            async with background(watch(a.url("whep/studio"), ice=ICE)) as viewer:

                async def watched() -> bool:
                    return (await streams(a.base))["studio"]["viewers"] == 1

                await until(watched, 15, "a viewer on a")
                a.process.send_signal(signal.SIGTERM)
                await a.printed("draining", timeout=5)
                status, location = await post_offer(a.url("whip/other"))
                assert status == 201 and location.startswith(b.url("whip/other")), (status, location)  # proxied
                await asyncio.sleep(1.5)
                assert a.process.poll() is None, "a left while its viewer was still watching"
                assert not viewer.done()
                drained = time.monotonic()
            code = await asyncio.to_thread(a.process.wait, 15)
            left = time.monotonic() - drained
        print(f"the viewer left -> a exited in {left:.2f} s (grace 20 s)")
        assert code == 0, a.output
        assert left < 10
        assert not client.exists("livesafe:node:a") and not client.exists("livesafe:node:a:streams")
        assert "a" not in client.smembers("livesafe:nodes")
        owners = [client.get(key) for key in client.scan_iter("livesafe:stream:*:owner")]
        assert not [o for o in owners if o and o.startswith("a|")], owners


async def test_a_draining_node_alone_refuses_new_streams_and_leaves_when_the_grace_period_ends(
    redis_server, tmp_path, blocked_cut_360p
) -> None:
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    a = Node(cluster_config(tmp_path, redis_server.url, drain_seconds=2), "a", tmp_path)
    with running(a):
        await a.printed(READY)
        async with background(publish(blocked_cut_360p, a.url("whip/studio"), loop=True, ice=ICE)):
            await until(lambda: guards(a.base), 15, "the stream live on a")
            async with background(watch(a.url("whep/studio"), ice=ICE)) as viewer:

                async def watched() -> bool:
                    return (await streams(a.base))["studio"]["viewers"] == 1

                await until(watched, 15, "a viewer on a")
                a.process.send_signal(signal.SIGTERM)
                draining = time.monotonic()
                await a.printed("draining", timeout=5)
                status, _ = await post_offer(a.url("whip/other"))
                assert status == 503  # no other node to send it to
                code = await asyncio.to_thread(a.process.wait, 15)
                took = time.monotonic() - draining
                watched_until_the_end = await asyncio.wait_for(viewer, 15)
                assert watched_until_the_end.ended_by_server  # the viewer stayed; the node hung up as it left
        assert code == 0 and 1.5 < took < 8, (code, took, a.output)
        assert not client.exists("livesafe:node:a") and not list(client.scan_iter("livesafe:stream:*:owner"))


def _children(pid: int) -> dict[int, str]:
    """The processes whose parent is ``pid``: their command lines."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError):
            continue
    return found


def _workers(children: dict[int, str]) -> dict[int, int]:
    """Worker index -> pid, from the supervisor's children's command lines."""
    return {int(cmd.split("--worker-index ")[1].split()[0]): pid for pid, cmd in children.items() if "--worker-" in cmd}


def _alive(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process tree from /proc")
async def test_workers_share_one_port_and_the_supervisor_restarts_a_killed_worker(tmp_path, blocked_cut_360p) -> None:
    public = unused_port()
    env = {k: v for k, v in os.environ.items() if k != "LIVESAFE_CLUSTER_SECRET"}  # a private cluster: its own
    supervisor = Process(
        ["serve", "--workers", "2", "--node", "w", "--port", str(public), "--db", str(tmp_path / "ev.db"),
         "--ice-host", "127.0.0.1", "--blocklist", str(BLOCKLIST)], env=env,
    )  # fmt: skip
    base = f"http://127.0.0.1:{public}"
    own = {i: f"http://127.0.0.1:{public + 1 + i}" for i in range(2)}
    with running(supervisor):
        await supervisor.printed(f"{READY}{base} -- 2 workers", timeout=40)
        children = _children(supervisor.process.pid)
        workers = _workers(children)
        private = [pid for pid, cmd in children.items() if "redis-server" in cmd]
        assert sorted(workers) == [0, 1] and len(private) == 1, children
        socket_dir = Path(children[private[0]].split("unixsocket:")[1].split()[0]).parent
        environ = (Path("/proc") / str(workers[0]) / "environ").read_bytes().split(b"\0")
        secret = next(v for v in environ if v.startswith(b"LIVESAFE_CLUSTER_SECRET=")).split(b"=", 1)[1].decode()
        assert len(secret) >= 32 and not any(secret in cmd for cmd in children.values())  # generated, env only
        # Through the public port an offer is answered by one worker, whose own port the session is on.
        status, location = await post_offer(f"{base}/whip/other")
        assert status == 201 and location.split("/whip/")[0] in own.values(), (status, location)
        # A publisher that reached the machine by another name gets that name, with the worker's port.
        status, location = await post_offer(f"{base}/whip/other", host=f"relay.example:{public}")
        ports = [str(public + 1 + i) for i in own]
        assert status == 201 and location.split("/whip/")[0] in [f"http://relay.example:{p}" for p in ports], location
        # Retrying as a real publisher does: the offers above still count as starting streams (admission's
        # ramp), so a worker that looked roomy a heartbeat ago may answer 503 once.
        async with background(publish(blocked_cut_360p, f"{base}/whip/studio", loop=True, ice=ICE, retries=5)):
            await until(lambda: _any_guards(own), 30, "the stream live on a worker")
            origin = [i for i, url in own.items() if await guards(url)][0]
            other = 1 - origin

            async def listed_elsewhere() -> bool:  # the other worker lists it as guarded by the origin
                return (await streams(own[other])).get("studio", {}).get("node") == f"w-{origin}"

            await until(listed_elsewhere, 5, "the other worker to list the stream")
            for _ in range(6):  # and the public port lists it, whichever worker answers
                assert "studio" in await streams(base)
            os.kill(workers[origin], signal.SIGKILL)
            await supervisor.printed(f"worker w-{origin} stopped (killed by SIGKILL)", timeout=5)
        await supervisor.printed(f"livesafe: w-{origin}: relay on", timeout=30, count=2)
        restarted = _workers(_children(supervisor.process.pid))
        assert restarted[origin] != workers[origin] and restarted[other] == workers[other]
        async with aiohttp.ClientSession() as http:  # the restarted worker reopened its own file: nothing lost
            async with http.get(f"{own[origin]}/api/events?stream=studio&type=stream.started") as response:
                assert (await response.json())["events"], "the worker's events before the kill"
        supervisor.process.send_signal(signal.SIGHUP)  # passed on: each worker reads its config again
        await supervisor.printed("config reloaded from the command line", timeout=15, count=2)
        code = supervisor.stop(signal.SIGINT)
    assert code == 0, supervisor.output
    for pid in (*restarted.values(), *private):
        assert not _alive(pid), f"process {pid} outlived the supervisor"
    assert not socket_dir.exists(), "the private redis-server's directory is removed"
    assert secret not in supervisor.output, "the generated cluster secret is never printed"


async def _any_guards(urls: dict[int, str]) -> bool:
    return any([await guards(url) for url in urls.values()])


def test_a_worker_that_keeps_failing_to_restart_stops_the_supervisor_with_one_line(redis_server, tmp_path) -> None:
    supervisor = Process(
        ["serve", "--workers", "2", "--node", "w", "--port", str(unused_port()), "--redis", redis_server.url,
         "--db", str(tmp_path / "ev.db"), "--blocklist", str(BLOCKLIST)]
    )  # fmt: skip
    with running(supervisor):
        supervisor.wait_for(" -- 2 workers (w-0 on ", timeout=40)
        workers = _workers(_children(supervisor.process.pid))
        redis_server.stop()  # restarts now fail: the worker cannot join
        os.kill(workers[0], signal.SIGKILL)
        code = supervisor.process.wait(timeout=35)
    errors = [line for line in supervisor.lines if line.startswith("livesafe: error:")]
    assert code == 2 and len(errors) == 1, supervisor.output
    assert "worker w-0 failed 5 times in a row" in errors[0] and "cluster: Redis at" in errors[0]
    assert supervisor.output.count("restarting in") == 4
    assert not any(_alive(pid) for pid in workers.values())


def test_a_second_node_with_a_taken_name_exits_2_with_one_line(redis_server, tmp_path) -> None:
    config = cluster_config(tmp_path, redis_server.url)
    first = Node(config, "a", tmp_path)
    with running(first):
        first.wait_for(READY)
        second = Node(config, "a", tmp_path)
        code = second.process.wait(timeout=30)
        second.wait_for("error", timeout=5)
    errors = [line for line in second.lines if "error" in line]
    assert code == 2 and len(errors) == 1 and "'a' is in use" in errors[0], second.output
    assert "Traceback" not in second.output


def _one_error(args: list[str], env: dict[str, str] = ENV) -> str:
    result = subprocess.run([*LIVESAFE, *args], cwd=ROOT, capture_output=True, text=True, timeout=60, env=env)
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert result.returncode == 2 and len(errors) == 1, result.stderr
    assert "Traceback" not in result.stderr and SECRET not in result.stderr
    return errors[0]


def test_workers_refuse_bad_input_with_one_line(tmp_path) -> None:
    serve = ["serve", "--blocklist", str(BLOCKLIST), "--db", str(tmp_path / "ev.db")]
    assert "expected at least 1" in _one_error([*serve, "--workers", "0"])
    assert "'many'" in _one_error([*serve, "--workers", "many"])
    assert "go past 65535" in _one_error([*serve, "--workers", "2", "--port", "65535"])
    assert "the demo runs in one process" in _one_error(["demo", "--workers", "2"])
    no_redis = {k: v for k, v in ENV.items() if k != "PATH"} | {"PATH": str(tmp_path)}
    assert "install redis-server" in _one_error([*serve, "--workers", "2"], env=no_redis)
    # Workers that cannot reach the configured Redis: the workers' own error, shown once.
    unreachable = _one_error(
        [*serve, "--workers", "2", "--port", str(unused_port()), "--redis", "redis://127.0.0.1:1/0"]
    )
    assert "cluster: Redis at redis://127.0.0.1:1/0" in unreachable
    assert not _processes_mentioning(str(tmp_path)), "no worker kept running"


def _processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes with ``text`` in them (workers carry their --db path).

    Not a leftover WAL file: a sibling the supervisor stops while it is still starting leaves one
    without running on.
    """
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            line = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone meanwhile
            continue
        if text in line:
            found.append(line)
    return found

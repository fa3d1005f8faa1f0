"""The moderation path, measured: event store writes, match -> live feed and -> webhook
latency over a real stream, webhook backlog drain, the cost of live-feed subscribers,
and what a /metrics scrape costs as the outbox grows.

Parts (each bounded in count and time; everything on 127.0.0.1):

a. store: ``EventLog.append`` (SQLite) on a file database (WAL, synchronous=NORMAL, as the proxy
   opens it) of realistic ``match.started`` events, one transaction each; with no webhook
   endpoint and with two (two outbox rows per event, same transaction).  Also through
   ``Moderation.record`` (adds the endpoint filter, the feed wake-up and the counters).
b. latency: the whole proxy (``build_proxy``: relay, guard, moderation, file database, one
   webhook endpoint) in a process of its own; a publisher process sends
   ``sample_streams/blocked_cut.mp4`` (720p30, a blocked segment at 2.5-4.0 s of every 6 s
   pass; pre-encoded for WebRTC and sent as packets, so it costs the publisher little) in a
   loop, one match episode per pass.  This process holds an SSE client of
   ``/api/events/stream`` and the webhook receiver (which verifies every signature).
   Latency = the time it received an event - the event's ``at`` (set by the guard's thread
   when the match is found; the same wall clock, one machine).
c. backlog drain: a fresh proxy process; its webhook receiver is down while N events are
   recorded (``Moderation.record``, as the relay would), the dispatcher fails and backs off;
   then the receiver comes up -> time until every delivery is made and ``/metrics`` shows
   no backlog.  Once with one endpoint, once with two.
d. live-feed cost: the proxy of (b), its stream still running; its CPU (utime+stime from
   ``/proc``) over a window with 0 and with 20 SSE subscribers, at the stream's own event
   rate and with synthetic ``report.received`` events recorded inside the proxy at
   ``--rate`` per second (what a busy multi-stream proxy would feed a dashboard).
e. scrape: ``livesafe.metrics.render`` (what ``GET /metrics`` does) against a database
   holding 0 and ``--scrape-rows`` delivered outbox rows (the store counts them per scrape).
f. paced appends: ``EventLog.append`` (two endpoints) at a steady 5, 50, 500 and 2,000
   events/s for ``--paced-seconds`` each: each append's time and the WAL's largest size, so
   the checkpoint thread is measured at the rates a proxy sees, not only flat out as in (a).
g. retention: ``Moderation.prune`` (what the proxy runs hourly, on the event loop) on a
   database of ``--prune-events`` events spread over 60 days, two delivered outbox rows
   each, with 30 days' retention (half of them go): its total time and the longest the
   event loop waited meanwhile (a task ticking every millisecond).

It must run in a private network namespace with loopback only; as root it re-runs itself
under ``unshare --net`` (as bench_relay.py does).

    python benchmarks/bench_moderation.py [--quick] [--parts a,b,c,d,e,f,g] [--json OUT]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import ensure_private_network, print_report, proc_cpu_rss  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "sample_streams"
CACHE = Path(tempfile.gettempdir()) / "livesafe-bench-moderation"
PARTS = ("a", "b", "c", "d", "e", "f", "g")
PACED_RATES = (5.0, 50.0, 500.0, 2000.0)
SECRET = "whsec_" + "YmVuY2gtbW9kZXJhdGlvbi1zZWNyZXQtMTIzNDU2"
CLIP_SECONDS = 6.0  # blocked_cut.mp4: 180 frames at 30 fps, blocked 2.5-4.0 s
GUARD_TYPES = ("stream.started", "stream.ended", "match.started", "match.cleared", "guard.error")


def ice() -> Any:
    from livesafe.relay.ice import IceSettings

    return IceSettings(host_addresses=("127.0.0.1",))  # no STUN, host candidates on loopback only


def sample_event(stream: str = "s1") -> Any:
    """A ``match.started`` as the guard reports it (every field filled), ~0.7 KB of JSON."""
    from livesafe.events import Event, GuardEvent

    guard = GuardEvent(
        type="match.started", stream_id=stream, frame_index=75, pts=225000, media_time=2.5, action="slate",
        list_name="samples", category="test", signal="pdq", distance=12, matched_hash="5f" * 32, query_hash="5e" * 32,
        region=[0, 0, 1280, 720], region_kind="frame", orientation="original", quality=100,
        details={"redacted_from_frame": 75, "redacted_from_time": 2.5},
    )  # fmt: skip
    return Event.of(guard, "high", profile="default")


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=float), q)) if values else float("nan")


def free_port() -> int:
    """A loopback port nothing listens on now (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ------------------------------------------------------------ (a) store


async def _append_all(
    store: Any, settings: Any, events: list[Any], names: list[str], via: str
) -> tuple[np.ndarray, float]:
    """Each event's append (or record) time in ns, and the total seconds; on a running loop, as in the proxy."""
    from livesafe.moderation.service import Moderation

    moderation = Moderation(settings, store)
    times = np.empty(len(events))
    started = time.perf_counter()
    for i, event in enumerate(events):
        t = time.perf_counter_ns()
        if via == "EventLog.append":
            store.events.append(event, names)
        else:
            moderation.record(event)
        times[i] = time.perf_counter_ns() - t
    return times, time.perf_counter() - started


def _spread_us(times_ns: np.ndarray) -> dict[str, float]:
    us = times_ns / 1000
    return {"p50_us": float(np.percentile(us, 50)), "p99_us": float(np.percentile(us, 99)), "max_us": float(us.max())}


async def bench_store(args: Any, workdir: Path) -> tuple[list[str], dict]:
    from livesafe.moderation.settings import ModerationSettings, WebhookEndpoint
    from livesafe.moderation.store.sqlite import SqliteStore

    n = args.store_events
    hooks = tuple(WebhookEndpoint(url=f"http://127.0.0.1:9/{i}", secret=SECRET, name=f"hook{i}") for i in range(2))
    lines = [f"#### a. Event store writes (file database, WAL, synchronous=NORMAL; {n:,} `match.started` events of "
             f"{len(json.dumps(sample_event().data)):,} B of JSON each, one transaction per event)", "",
             "| path | webhook endpoints (= outbox rows per event) | events/s | p50 µs | p99 µs | max µs "
             "| database after |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    report: dict[str, Any] = {}
    for via in ("EventLog.append", "Moderation.record"):
        for endpoints in (0, 2):
            path = workdir / f"store-{via}-{endpoints}.db"
            settings = ModerationSettings(database=str(path), webhooks=hooks[:endpoints])
            store = SqliteStore(path)
            names = [h.name for h in hooks[:endpoints]]
            events = [sample_event() for _ in range(n)]
            times, total = await _append_all(store, settings, events, names, via)
            store.close()
            size = sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))
            row = {"events_per_s": n / total, **_spread_us(times), "db_mib": size / 2**20}
            report[f"{via}/{endpoints}"] = row
            lines.append(f"| {via} | {endpoints} | {row['events_per_s']:,.0f} | {row['p50_us']:.0f} | "
                         f"{row['p99_us']:.0f} | {row['max_us']:,.0f} | {row['db_mib']:.1f} MiB |")  # fmt: skip
    return lines, report


async def bench_paced(args: Any, workdir: Path) -> tuple[list[str], dict]:
    from livesafe.moderation.store.sqlite import SqliteStore

    names = ["hook0", "hook1"]
    lines = [f"#### f. Event store writes at a steady rate ({args.paced_seconds:g} s per rate, 2 webhook endpoints, "
             "`match.started` events, the checkpoint thread running as in the proxy)", "",
             "| events/s | events | p50 µs | p99 µs | max µs | largest WAL |", "|---|---|---|---|---|---|"]  # fmt: skip
    report: dict[str, Any] = {}
    for rate in PACED_RATES:
        path = workdir / f"paced-{rate:g}.db"
        store = SqliteStore(path)
        n = int(rate * args.paced_seconds)
        events = [sample_event() for _ in range(n)]
        times, wal = np.empty(n), 0
        start = time.perf_counter()
        for i, event in enumerate(events):
            await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))  # the loop idles, as in the proxy
            t = time.perf_counter_ns()
            store.events.append(event, names)
            times[i] = time.perf_counter_ns() - t
            wal = max(wal, Path(f"{path}-wal").stat().st_size)
        store.close()
        row = {"events": n, **_spread_us(times), "wal_mib": wal / 2**20}
        report[f"{rate:g}"] = row
        lines.append(f"| {rate:,.0f} | {n:,} | {row['p50_us']:.0f} | {row['p99_us']:.0f} | {row['max_us']:,.0f} | "
                     f"{row['wal_mib']:.1f} MiB |")  # fmt: skip
    return lines, report


async def bench_prune(args: Any, workdir: Path) -> tuple[list[str], dict]:
    from livesafe.moderation.service import PRUNE_BATCH, Moderation
    from livesafe.moderation.settings import ModerationSettings
    from livesafe.moderation.store.sqlite import SqliteStore

    n = args.prune_events
    path = workdir / "prune.db"
    store = SqliteStore(path)
    moderation = Moderation(ModerationSettings(database=str(path), retention_days=30), store)
    db = store.database.connection  # bulk rows for the benchmark only; the proxy never writes this way
    body, now = json.dumps(sample_event().data), time.time()
    db.execute("BEGIN")
    db.executemany("INSERT INTO events (id, type, stream_id, at, severity, body) "
                   "VALUES (?, 'match.started', 's1', ?, 'high', ?)",
                   ((uuid.uuid4().hex, now - 60 * 86400 * (1 - i / n), body) for i in range(n)))  # fmt: skip
    db.execute("INSERT INTO outbox (endpoint, event_seq, state, attempts, next_attempt, finished_at) SELECT h, seq, "
               "'delivered', 1, at, at FROM events, (SELECT 'hook0' AS h UNION ALL SELECT 'hook1')")  # fmt: skip
    db.execute("COMMIT")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()  # not the bulk fill's 300 MB WAL: no proxy writes one
    gaps: list[float] = []

    async def ticker() -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0.001)
            gaps.append(time.perf_counter() - last)
            last = time.perf_counter()

    task = asyncio.ensure_future(ticker())
    await asyncio.sleep(0.01)
    started = time.perf_counter()
    removed = await moderation.prune(now)
    seconds = time.perf_counter() - started
    task.cancel()
    moderation.close()
    row = {"events": n, "removed": removed, "seconds": seconds, "loop_max_wait_ms": max(gaps) * 1000,
           "loop_p99_wait_ms": pct([g * 1000 for g in gaps], 99), "batch": PRUNE_BATCH}  # fmt: skip
    lines = [f"#### g. Retention pruning (`Moderation.prune`, {PRUNE_BATCH} events per transaction; "
             "2 delivered outbox rows per event; 30 of 60 days kept)", "",
             "| events | removed | total s | event loop: longest wait ms | p99 wait ms |", "|---|---|---|---|---|",
             f"| {n:,} | {removed:,} | {seconds:.2f} "
             f"| {row['loop_max_wait_ms']:.1f} | {row['loop_p99_wait_ms']:.1f} |"]  # fmt: skip
    return lines, row


# ------------------------------------------------------------ (e) scrape


async def bench_scrape(args: Any, workdir: Path) -> tuple[list[str], dict]:
    from livesafe.guard.stream_guard import GuardSettings
    from livesafe.metrics import render
    from livesafe.moderation.settings import ModerationSettings, WebhookEndpoint
    from livesafe.proxy import build_proxy
    from livesafe.relay.settings import RelaySettings

    lines = ["#### e. What a `/metrics` scrape costs as the outbox grows (`livesafe.metrics.render`, 2 endpoints)", "",
             "| outbox rows (delivered) | events | render p50 ms | max ms |", "|---|---|---|---|"]  # fmt: skip
    report = {}
    hooks = tuple(WebhookEndpoint(url=f"http://127.0.0.1:9/{i}", secret=SECRET, name=f"hook{i}") for i in range(2))
    for events in (0, args.scrape_rows // 2):
        path = workdir / f"scrape-{events}.db"

        async def run(path: Path = path, events: int = events) -> list[float]:
            proxy = build_proxy(RelaySettings(ice=ice()), lambda: None, GuardSettings(),  # type: ignore[arg-type,return-value]
                                ModerationSettings(database=str(path), webhooks=hooks))  # fmt: skip
            # Bulk rows for the benchmark only; the proxy never writes this way.
            db = proxy.moderation.store.database.connection
            body = json.dumps(sample_event().data)
            now = time.time()
            db.execute("BEGIN")
            db.executemany("INSERT INTO events (id, type, stream_id, at, severity, body) "
                           "VALUES (?, 'match.started', 's1', ?, 'high', ?)",
                           ((uuid.uuid4().hex, now, body) for _ in range(events)))  # fmt: skip
            db.execute("INSERT INTO outbox (endpoint, event_seq, state, attempts, next_attempt, finished_at) "
                       "SELECT h, seq, 'delivered', 1, ?, ? "
                       "FROM events, (SELECT 'hook0' AS h UNION ALL SELECT 'hook1')", (now, now))  # fmt: skip
            db.execute("COMMIT")
            times = []
            for _ in range(args.scrapes):
                t = time.perf_counter()
                render(proxy.relay, proxy.moderation)
                times.append((time.perf_counter() - t) * 1000)
            proxy.moderation.close()
            return times

        times = await run()
        report[str(events * 2)] = {"p50_ms": pct(times, 50), "max_ms": max(times)}
        lines.append(f"| {events * 2:,} | {events:,} | {pct(times, 50):.2f} | {max(times):.2f} |")
    return lines, report


# ------------------------------------------------------- child processes


async def child_proxy() -> None:
    """Role ``proxy``: the whole proxy on 127.0.0.1; config as one JSON line on stdin, then commands."""
    from aiohttp import web

    from livesafe.events import REPORT_RECEIVED, Event
    from livesafe.guard.matcher import LiveMatcher
    from livesafe.guard.stream_guard import GuardSettings
    from livesafe.lists import ListSpec
    from livesafe.moderation.settings import ModerationSettings, WebhookEndpoint
    from livesafe.proxy import build_proxy
    from livesafe.relay.settings import RelaySettings

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    config = json.loads(await reader.readline())
    lists = LiveMatcher([ListSpec(path=SAMPLES / "blocklist.txt", name="samples", category="test", action="slate")])
    hooks = tuple(
        WebhookEndpoint(url=h["url"], secret=SECRET, name=h["name"], types=tuple(h.get("types", ())))
        for h in config["webhooks"]
    )
    settings = ModerationSettings(database=config["db"], webhooks=hooks,
                                  webhook_backoff_seconds=config.get("backoff", 1.0),
                                  webhook_max_backoff_seconds=config.get("max_backoff", 300.0))  # fmt: skip
    proxy = build_proxy(RelaySettings(ice=ice()), lambda: lists.current, GuardSettings(), settings)
    runner = web.AppRunner(proxy.app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    print(f"READY {port}", flush=True)
    synthetic: asyncio.Task | None = None

    def report_event() -> Event:
        return Event(
            REPORT_RECEIVED, "s1", "warning", {"reason": "bench " + "x" * 500, "category": "test", "client": "bench"}
        )

    async def at_rate(per_second: float) -> None:
        step, next_at = 1 / per_second, time.monotonic()
        while True:
            next_at += step
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            proxy.moderation.record(report_event())

    try:
        while True:
            line = (await reader.readline()).decode().split()
            if not line or line[0] == "stop":
                break
            if line[0] == "inject":  # record N events as fast as the loop allows, yielding now and then
                for i in range(int(line[1])):
                    proxy.moderation.record(report_event())
                    if i % 200 == 199:
                        await asyncio.sleep(0)
                print("DONE", flush=True)
            elif line[0] == "rate":
                if synthetic is not None:
                    synthetic.cancel()
                    synthetic = None
                if float(line[1]) > 0:
                    synthetic = asyncio.ensure_future(at_rate(float(line[1])))
                print("DONE", flush=True)
    finally:
        if synthetic is not None:
            synthetic.cancel()
        await runner.cleanup()


async def child_publish(url: str, clip: str, seconds: float) -> None:
    """Role ``publish``: WHIP-publish ``clip`` (WebRTC-ready H.264, sent as packets) in a loop."""
    from livesafe.clients import publish

    await publish(Path(clip), url, loop=True, duration=seconds, passthrough=True, ice=ice())


class Proxy:
    """A proxy child process: spawn, read its port, send commands, measure its CPU, stop it."""

    def __init__(self, workdir: Path, tag: str, config: dict) -> None:
        self.workdir, self.tag, self.config = workdir, tag, config
        self.log = workdir / f"{tag}-proxy.log"
        self.proc: asyncio.subprocess.Process | None = None
        self.base = ""

    async def __aenter__(self) -> Proxy:
        with self.log.open("w") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, str(Path(__file__).resolve()), "--child", "proxy",
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=log,
            )  # fmt: skip
        self.proc.stdin.write((json.dumps(self.config) + "\n").encode())
        line = await asyncio.wait_for(self.proc.stdout.readline(), 60)
        if not line.startswith(b"READY "):
            raise RuntimeError(f"proxy did not start; see {self.log}:\n{self.log.read_text()[-2000:]}")
        self.base = f"http://127.0.0.1:{int(line.split()[1])}"
        return self

    async def command(self, text: str, timeout: float = 120.0) -> None:
        assert self.proc is not None
        self.proc.stdin.write((text + "\n").encode())
        await self.proc.stdin.drain()
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        if line.strip() != b"DONE":
            raise RuntimeError(f"proxy: {text!r} failed; see {self.log}")

    def cpu(self) -> float:
        assert self.proc is not None
        return proc_cpu_rss(self.proc.pid)[0]

    async def __aexit__(self, *exc: Any) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        with contextlib.suppress(ConnectionError, RuntimeError):
            self.proc.stdin.write(b"stop\n")
            await self.proc.stdin.drain()
        try:
            await asyncio.wait_for(self.proc.wait(), 20)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


@contextlib.asynccontextmanager
async def publisher(workdir: Path, url: str, clip: Path, seconds: float):
    log = (workdir / "publisher.log").open("w")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(Path(__file__).resolve()), "--child", "publish", url, str(clip), str(seconds),
        stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log,
    )  # fmt: skip
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        log.close()


# -------------------------------------------------- clients in this process


class Receiver:
    """A webhook receiver on 127.0.0.1 that checks each signature (Standard Webhooks) and notes arrivals."""

    def __init__(self, port: int = 0) -> None:
        self.port = port
        self.arrivals: list[tuple[str, float, float]] = []  # (type, event at, received at)
        self.bad_signatures = 0
        self.ids: set[str] = set()
        self._runner: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def start(self) -> Receiver:
        from aiohttp import web

        from livesafe.moderation.settings import WebhookEndpoint
        from livesafe.moderation.webhooks import signature

        key = WebhookEndpoint(url="http://127.0.0.1/", secret=SECRET).signing_key

        async def hook(request: web.Request) -> web.Response:
            received = time.time()
            body = await request.text()
            message_id, stamp = request.headers["webhook-id"], int(request.headers["webhook-timestamp"])
            expected = signature(key, message_id, stamp, body)
            if request.headers["webhook-signature"] != expected or abs(received - stamp) > 300:
                self.bad_signatures += 1
                return web.Response(status=400)
            data = json.loads(body)["data"]
            self.ids.add(message_id)
            self.arrivals.append((data["type"], data["at"], received))
            return web.Response(status=204)

        app = web.Application()
        app.router.add_post("/hook", hook)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def of(self, kind: str) -> list[tuple[str, float, float]]:
        return [a for a in self.arrivals if a[0] == kind]


class Subscriber:
    """An SSE client of /api/events/stream (as a dashboard holds one); notes each event's arrival."""

    def __init__(self, http: Any, base: str) -> None:
        self.http, self.base = http, base
        self.arrivals: list[tuple[str, float, float]] = []
        self.task: asyncio.Task | None = None
        self.ready = asyncio.Event()

    def start(self) -> Subscriber:
        self.task = asyncio.ensure_future(self._run())
        return self

    async def _run(self) -> None:
        import aiohttp

        async with self.http.get(
            f"{self.base}/api/events/stream", timeout=aiohttp.ClientTimeout(total=None)
        ) as response:
            response.raise_for_status()
            kind, data = None, None
            async for raw in response.content:
                line = raw.decode().rstrip("\n")
                if line.startswith(": livesafe"):
                    self.ready.set()
                elif line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: "):
                    data = line[6:]
                elif not line and data is not None:
                    self.arrivals.append((kind or "", json.loads(data)["at"], time.time()))
                    kind, data = None, None

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task

    def of(self, kind: str) -> list[tuple[str, float, float]]:
        return [a for a in self.arrivals if a[0] == kind]


async def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.05)


async def scrape(http: Any, base: str) -> dict[tuple[str, frozenset], float]:
    from prometheus_client.parser import text_string_to_metric_families

    async with http.get(f"{base}/metrics") as response:
        text = await response.text()
    return {
        (s.name, frozenset(s.labels.items())): s.value for f in text_string_to_metric_families(text) for s in f.samples
    }


# -------------------------------------------------------- (b) and (d)


def latency_row(label: str, arrivals: list[tuple[str, float, float]]) -> tuple[str, dict]:
    ms = [(received - at) * 1000 for _, at, received in arrivals]
    row = {
        "n": len(ms),
        "min": min(ms, default=float("nan")),
        "p50": pct(ms, 50),
        "p95": pct(ms, 95),
        "max": max(ms, default=float("nan")),
    }
    return f"| {label} | {row['n']} | {row['min']:.1f} | {row['p50']:.1f} | {row['p95']:.1f} | {row['max']:.1f} |", row


def guard_histogram_line(metrics: dict[tuple[str, frozenset], float]) -> str:
    """The guard latency histogram as the proxy's /metrics reported it at the end of the run."""
    name = "livesafe_guard_frame_seconds"
    count, total = metrics[(f"{name}_count", frozenset())], metrics[(f"{name}_sum", frozenset())]
    buckets = sorted((float(dict(labels)["le"]), v) for (n, labels), v in metrics.items() if n == f"{name}_bucket")
    shares = ", ".join(
        f"≤ {bound * 1000:g} ms {v / count:.0%}" for bound, v in buckets if bound in (0.001, 0.005, 0.025)
    )
    redacted = metrics[("livesafe_frames_redacted_total", frozenset())]
    guarded = metrics[("livesafe_frames_guarded_total", frozenset())]
    return (f"The proxy's `/metrics` at the end of the run: {count:,.0f} frames through the guard, "
            f"{total / count * 1000:.2f} ms each on average ({shares}); "
            f"{redacted:,.0f} of {guarded:,.0f} guarded frames redacted "
            f"(the 1.5 s segment plus the 3 s hold of every 6 s pass).")  # fmt: skip


async def bench_live(args: Any, workdir: Path, clip: Path, parts: list[str]) -> tuple[list[str], list[str], dict]:
    import aiohttp

    report: dict[str, Any] = {}
    receiver = await Receiver().start()
    config = {
        "db": str(workdir / "live.db"),
        "webhooks": [{"url": receiver.url, "name": "receiver", "types": list(GUARD_TYPES)}],
    }
    windows = [(0, 0.0), (args.subscribers, 0.0), (0, args.rate), (args.subscribers, args.rate)] if "d" in parts else []
    episodes = args.episodes if "b" in parts else 0
    publish_seconds = 5 + episodes * CLIP_SECONDS + len(windows) * (args.window + 4) + 10
    b_lines: list[str] = []
    d_lines: list[str] = []
    try:
        async with Proxy(workdir, "live", config) as proxy, aiohttp.ClientSession() as http:
            feed = Subscriber(http, proxy.base).start()
            await asyncio.wait_for(feed.ready.wait(), 10)
            async with publisher(workdir, f"{proxy.base}/whip/s1", clip, publish_seconds) as pub:
                await wait_until(
                    lambda: bool(feed.of("stream.started")) or pub.returncode is not None, 30, "the stream to start"
                )
                if pub.returncode is not None:
                    raise RuntimeError(f"publisher exited; see {workdir / 'publisher.log'}")
                if episodes:
                    timeout = 15 + episodes * CLIP_SECONDS * 2
                    await wait_until(lambda: len(feed.of("match.started")) >= episodes
                                             and len(receiver.of("match.started")) >= episodes,
                                     timeout, f"{episodes} match episodes")  # fmt: skip
                    await asyncio.sleep(0.5)
                    b_lines = [
                        f"#### b. Match -> live feed and -> webhook receiver, {episodes} episodes of a 720p30 "
                        "stream (event's `at`, set by the guard's thread, to arrival here)", "",
                        "| path | events | min ms | p50 ms | p95 ms | max ms |", "|---|---|---|---|---|---|",
                    ]  # fmt: skip
                    for label, source, kind in (
                        ("match.started -> SSE client", feed, "match.started"),
                        ("match.started -> webhook receiver (signature verified)", receiver, "match.started"),
                        ("match.cleared -> SSE client", feed, "match.cleared"),
                        ("match.cleared -> webhook receiver", receiver, "match.cleared"),
                    ):  # fmt: skip
                        line, row = latency_row(label, source.of(kind)[:episodes])
                        b_lines.append(line)
                        report[f"b/{label}"] = row
                    b_lines.append("")
                    b_lines.append(f"Signatures that failed verification: {receiver.bad_signatures}; "
                                   f"webhook deliveries received: {len(receiver.arrivals)} "
                                   f"({len(receiver.ids)} distinct ids).")  # fmt: skip
                await feed.stop()
                if windows:
                    d_lines = await bench_feed_cost(args, proxy, http, windows, report)
                if pub.returncode is not None:
                    raise RuntimeError(f"publisher exited before the end; see {workdir / 'publisher.log'}")
                metrics = await scrape(http, proxy.base)
                report["metrics_at_end"] = {f"{k[0]}{dict(k[1]) or ''}": v for k, v in metrics.items()}
                if b_lines:
                    b_lines += ["", guard_histogram_line(metrics)]
    finally:
        await receiver.stop()
    return b_lines, d_lines, report


async def bench_feed_cost(
    args: Any, proxy: Proxy, http: Any, windows: list[tuple[int, float]], report: dict
) -> list[str]:
    lines = [f"#### d. Proxy CPU with 0 and {args.subscribers} SSE subscribers, during the 720p30 stream "
             f"({args.window:.0f} s windows)", "",
             "| subscribers | synthetic events/s | events in window | proxy CPU % of a core | SSE deliveries | "
             "feed latency p50 / p99 / max ms |", "|---|---|---|---|---|---|"]  # fmt: skip
    for subscribers, rate in windows:
        await proxy.command(f"rate {rate}")
        subs = [Subscriber(http, proxy.base).start() for _ in range(subscribers)]
        await asyncio.wait_for(asyncio.gather(*(s.ready.wait() for s in subs)), 15)
        await asyncio.sleep(2.0)  # settle
        before = await scrape(http, proxy.base)
        cpu0, t0, wall0 = proxy.cpu(), time.monotonic(), time.time()
        await asyncio.sleep(args.window)
        cpu1, t1, wall1 = proxy.cpu(), time.monotonic(), time.time()
        after = await scrape(http, proxy.base)
        for s in subs:
            await s.stop()
        events = sum(v for (name, _), v in after.items() if name == "livesafe_events_total") - sum(
            v for (name, _), v in before.items() if name == "livesafe_events_total")  # fmt: skip
        got = [a for s in subs for a in s.arrivals if wall0 <= a[1] <= wall1]
        ms = [(received - at) * 1000 for _, at, received in got]
        cpu = (cpu1 - cpu0) / (t1 - t0) * 100
        row = {"subscribers": subscribers, "rate": rate, "events": events, "cpu_pct": cpu, "deliveries": len(got),
               "p50_ms": pct(ms, 50), "p99_ms": pct(ms, 99), "max_ms": max(ms, default=float("nan"))}  # fmt: skip
        report[f"d/{subscribers}/{rate:g}"] = row
        latency = f"{row['p50_ms']:.1f} / {row['p99_ms']:.1f} / {row['max_ms']:.1f}" if ms else "—"
        lines.append(f"| {subscribers} | {rate:g} | {events:.0f} | {cpu:.1f} | {len(got):,} | {latency} |")
        print(
            f"  d: {subscribers} subscribers, {rate:g}/s: CPU {cpu:.1f} %, {events:.0f} events, {len(got)} deliveries",
            flush=True,
        )
    await proxy.command("rate 0")
    return lines


# ------------------------------------------------------------- (c) drain


async def bench_drain(args: Any, workdir: Path) -> tuple[list[str], dict]:
    import aiohttp

    n = args.backlog
    lines = [f"#### c. Backlog drain: {n:,} events recorded while the receiver is down, then it comes up", "",
             "| endpoints | deliveries | receiver up -> first delivery s | first -> last delivery s | deliveries/s | "
             "receiver up -> `/metrics` backlog 0 s | proxy CPU % while draining |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    report = {}
    for endpoints in (1, 2):
        receivers = [Receiver(free_port()) for _ in range(endpoints)]
        config = {"db": str(workdir / f"drain-{endpoints}.db"), "backoff": 0.25, "max_backoff": 1.0,
                  "webhooks": [{"url": r.url, "name": f"drain{i}"} for i, r in enumerate(receivers)]}  # fmt: skip
        async with Proxy(workdir, f"drain{endpoints}", config) as proxy, aiohttp.ClientSession() as http:
            await proxy.command(f"inject {n}")

            async def backlog() -> float:
                return (await scrape(http, proxy.base))[("livesafe_event_backlog", frozenset())]

            deadline = time.monotonic() + 30
            while await backlog() < n * endpoints:
                if time.monotonic() > deadline:
                    raise TimeoutError("events not queued")
                await asyncio.sleep(0.1)
            metrics = await scrape(http, proxy.base)
            failed = sum(v for (name, _), v in metrics.items() if name == "livesafe_webhook_failed_attempts_total")
            if failed < endpoints:
                raise RuntimeError("the dispatcher has not noticed the receivers are down")
            cpu0 = proxy.cpu()
            up = time.time()
            for r in receivers:
                await r.start()
            deadline = time.monotonic() + args.drain_timeout
            drained_at = None
            while True:
                if drained_at is None and await backlog() == 0:
                    drained_at = time.time()
                if drained_at is not None and all(len(r.of("report.received")) >= n for r in receivers):
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"backlog not drained in {args.drain_timeout:.0f} s")
                await asyncio.sleep(0.1)
            cpu = proxy.cpu() - cpu0
            for r in receivers:
                await r.stop()
        arrivals = sorted(a[2] for r in receivers for a in r.arrivals)
        first, last = arrivals[0], arrivals[-1]
        rate = (len(arrivals) - 1) / (last - first)
        bad = sum(r.bad_signatures for r in receivers)
        row = {"deliveries": len(arrivals), "first_s": first - up, "drain_s": last - first, "per_s": rate,
               "backlog_zero_s": drained_at - up, "cpu_pct": cpu / (last - up) * 100,
               "bad_signatures": bad}  # fmt: skip
        report[f"c/{endpoints}"] = row
        lines.append(f"| {endpoints} | {len(arrivals):,} | {row['first_s']:.2f} | {row['drain_s']:.2f} "
                     f"| {rate:,.0f} | {row['backlog_zero_s']:.2f} | {row['cpu_pct']:.0f} |")  # fmt: skip
        print(
            f"  c: {endpoints} endpoint(s): {len(arrivals)} deliveries at {rate:,.0f}/s, {bad} bad signatures",
            flush=True,
        )
    lines += ["", "Every delivery's signature was verified by the receiver; failures: "
              f"{sum(r['bad_signatures'] for r in report.values())}."]  # fmt: skip
    return lines, report


# -------------------------------------------------------------------- main


def parse_args() -> Any:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short smoke run (~1 min)")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    parser.add_argument(
        "--store-events", type=int, default=None, help="(a) events appended per configuration (default 5000)"
    )
    parser.add_argument("--episodes", type=int, default=None, help="(b) match episodes to measure (default 10)")
    parser.add_argument(
        "--backlog", type=int, default=None, help="(c) events queued while the receiver is down (default 5000)"
    )
    parser.add_argument("--drain-timeout", type=float, default=180.0)
    parser.add_argument("--subscribers", type=int, default=20, help="(d) SSE subscribers (default 20)")
    parser.add_argument("--rate", type=float, default=None, help="(d) synthetic events per second (default 50)")
    parser.add_argument("--window", type=float, default=None, help="(d) seconds per measuring window (default 15)")
    parser.add_argument(
        "--scrape-rows", type=int, default=None, help="(e) outbox rows in the big database (default 400000)"
    )
    parser.add_argument("--scrapes", type=int, default=20)
    parser.add_argument("--paced-seconds", type=float, default=None, help="(f) seconds per rate (default 10)")
    parser.add_argument("--prune-events", type=int, default=None, help="(g) events in the database (default 200000)")
    parser.add_argument("--json", type=Path, default=None, help="also write every figure to this JSON file")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (databases, child logs)")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    defaults = {"store_events": (2000, 5000), "episodes": (3, 10), "backlog": (1000, 5000), "rate": (50.0, 50.0),
                "window": (6.0, 15.0), "scrape_rows": (40_000, 400_000), "paced_seconds": (3.0, 10.0),
                "prune_events": (20_000, 200_000)}  # fmt: skip
    for name, (quick, full) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    args.parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    if set(args.parts) - set(PARTS):
        parser.error(f"unknown parts {sorted(set(args.parts) - set(PARTS))}")
    return args


def machine_notes() -> str:
    import aiohttp
    import av

    model = next(
        (line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?"
    )
    mem = next(int(line.split()[1]) for line in open("/proc/meminfo") if line.startswith("MemTotal")) / 2**20
    fs = (
        subprocess.run(["df", "-T", tempfile.gettempdir()], capture_output=True, text=True)
        .stdout.splitlines()[-1]
        .split()[1]
    )
    return (f"{os.cpu_count()} CPUs ({model}), {mem:.0f} GiB, Python {sys.version.split()[0]}, "
            f"SQLite {sqlite3.sqlite_version}, aiohttp {aiohttp.__version__}, PyAV {av.__version__}; "
            f"databases on {fs} ({tempfile.gettempdir()})")  # fmt: skip


async def amain(args: Any) -> None:
    from livesafe.clients import webrtc_h264_copy

    started = time.monotonic()
    CACHE.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="run-", dir=CACHE))
    load = os.getloadavg()[0]
    notes = machine_notes()
    print(f"{notes}; load average {load:.2f}; work directory {workdir}", flush=True)
    report: dict[str, Any] = {
        "machine": notes,
        "load_average_start": load,
        "args": {k: str(v) for k, v in vars(args).items()},
    }
    sections: list[list[str]] = []

    async def single(part: str, what: str, bench: Callable[[Any, Path], Awaitable[tuple[list[str], dict]]]) -> None:
        if part in args.parts:
            print(f"{part}: {what}", flush=True)
            lines, report[part] = await bench(args, workdir)
            sections.append(lines)

    try:
        await single("a", "store appends", bench_store)
        if "b" in args.parts or "d" in args.parts:
            clip = CACHE / "blocked_cut_webrtc.mp4"
            if not clip.exists():
                webrtc_h264_copy(SAMPLES / "blocked_cut.mp4", clip)
            print("b/d: live stream, feed and webhook latency, feed cost", flush=True)
            b_lines, d_lines, report["bd"] = await bench_live(args, workdir, clip, args.parts)
            sections += [s for s in (b_lines, d_lines) if s]
        await single("c", "backlog drain", bench_drain)
        await single("e", "scrape cost", bench_scrape)
        await single("f", "paced store appends", bench_paced)
        await single("g", "retention pruning", bench_prune)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    report["seconds"] = time.monotonic() - started
    report["load_average_end"] = os.getloadavg()[0]
    sections.sort(key=lambda s: s[0])  # a, b, c, ... in order
    header = [f"# bench_moderation{' (--quick)' if args.quick else ''}: {notes}",
              f"load average {load:.2f} -> {report['load_average_end']:.2f}, {report['seconds']:.0f} s"]  # fmt: skip
    print_report(header, sections, report, args.json)


def main() -> None:
    args = parse_args()
    if args.child:
        sys.path.insert(0, str(ROOT))
        if args.child[0] == "proxy":
            asyncio.run(child_proxy())
        else:
            _, url, clip, seconds = args.child
            asyncio.run(child_publish(url, clip, float(seconds)))
        return
    ensure_private_network(__file__)
    asyncio.run(amain(args))


if __name__ == "__main__":
    main()

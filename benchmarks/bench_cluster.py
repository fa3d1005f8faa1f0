"""The cluster (issue 13) on one machine: capacity of 1 vs 2 node processes, edge cost, edge
latency, list propagation, failover after ``kill -9``.

Every node is ``livesafe serve`` itself, a process of its own (``relay_bench_support.py node``
runs ``livesafe.cli.main`` with the usual flags and a ``[cluster]`` config, adding only
``/bench/stats`` and a watch on its matcher), all on one private ``redis-server`` -- the one
``serve --workers`` starts (``livesafe.cluster.workers.PrivateRedis``: a unix socket, no
persistence), fresh for every run.  Default cluster timings (heartbeat 1 s, node TTL 5 s,
lease TTL 3 s) and list reload (``reload_seconds`` 2 s): what a deployment runs.  With N
nodes on the machine each admits streams against ``max_cpu_fraction / N`` of the cores, as
``serve --workers N`` gives its workers.

Publishers, viewers, the clip, the barcodes and the latency/delivery analysis are
``bench_relay``'s (``relay_bench_support`` roles, ``relay_bench_common.analyze``): a pre-encoded
720p30 clip at real-time pace, each frame's number in a barcode, latency = the viewer's time
for frame N minus the publisher's, on the machine-wide monotonic clock.

Phases:

1. capacity: 1 node, then 2, N = 1, 2, ... streams each with one viewer until not sustained
   (bench_relay's rule: every viewer >= 95 % of the frames published in the window, latency
   p95 growth over the window <= 50 ms, a refused stream counts as not delivered).
   Publishers all enter through node 0, 1.2 s apart, and placement spreads them (307); each
   viewer watches its stream's origin.  The nodes' CPU per stream gives cores per stream.
2. edge: one stream guarded on A (published with ``?node=A``, placement's own pin), 1 / 10 /
   30 counting viewers on B, an edge; B's CPU against its idle CPU, per viewer (slope) and per
   pulled stream (intercept minus idle), and B's CPU by kind of thread (no decoder threads).
3. latency: one full viewer on A and one on B at once, same stream; B minus A.
4. lists: 3 nodes; a new hash appended to node 0's list file many times, after a random
   wait (so the file watcher's phase is sampled uniformly); time until each node's matcher
   holds it.  Node 0's own delay is the file watcher's (``reload_seconds``) plus parsing;
   the rest is the cluster's (publish to Redis, pub/sub hint, fetch, install).
5. failover: A origin, a full viewer on edge B that rejoins when its connection is lost (as a
   player would); ``kill -9`` A, the publisher at once republishes through B (a retry loop:
   B redirects to A, whose connection is refused, then waits for A's lease to lapse); time
   from the republish's start until the viewer decodes a frame published after it.

It must run in a private network namespace with loopback only (ICE has no STUN server and
host candidates on 127.0.0.1 only); as root it re-runs itself under ``unshare --net``.

    python benchmarks/bench_cluster.py [--quick] [--phases capacity,edge,latency,lists,failover] [--json OUT]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import shutil
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import relay_bench_support as support
from bench_common import ensure_private_network, print_report, proc_cpu_rss
from relay_bench_common import Child, Outcome, Scenario, analyze, fit_slope, machine_busy, ms

CACHE = Path(tempfile.gettempdir()) / "livesafe-bench-relay"  # bench_relay's clip, built once
PHASES = ("capacity", "edge", "latency", "lists", "failover")
SECRET = "bench-cluster-" + secrets.token_hex(12)
BLOCKLIST = support.SAMPLES / "blocklist.txt"
GRACE = 1.5
STAGGER = 1.2  # seconds between publishers (default): more than a heartbeat, so placement sees each new stream


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def loadavg() -> float:
    return os.getloadavg()[0]


# ------------------------------------------------------------------ cluster


@dataclass
class Node:
    name: str
    port: int
    child: Child
    list_path: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.child.pid


@dataclass
class Cluster:
    """A private redis-server and its nodes; every process here is killed by :meth:`close`."""

    redis: Any
    nodes: list[Node] = field(default_factory=list)
    others: list[Child] = field(default_factory=list)  # publishers, viewers of the run

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    async def close(self) -> None:
        children = [*self.others, *(n.child for n in self.nodes)]
        for child in children:
            child.kill()
        for child in children:
            if child.proc is not None:
                try:
                    await asyncio.wait_for(child.proc.wait(), 10)
                except TimeoutError:
                    pass
        await asyncio.to_thread(self.redis.stop)


async def start_cluster(workdir: Path, tag: str, names: list[str], life: float, *, cpu_share: int) -> Cluster:
    """``names`` as nodes on a fresh private Redis, each with its own copy of the sample list
    and ``max_cpu_fraction = 0.85 / cpu_share`` (as ``serve --workers cpu_share`` would)."""
    from livesafe.cluster.workers import PrivateRedis

    redis = PrivateRedis()
    await asyncio.to_thread(redis.start)
    cluster = Cluster(redis)
    try:
        for name in names:
            home = workdir / tag / name
            home.mkdir(parents=True)
            list_path = home / "blocklist.txt"
            shutil.copy(BLOCKLIST, list_path)
            (home / "livesafe.toml").write_text(
                "[[lists.file]]\n"
                f'path = "{list_path}"\nname = "samples"\ncategory = "test"\naction = "slate"\n\n'
                f"[server.overload]\nmax_cpu_fraction = {0.85 / cpu_share:.4f}\n\n"
                f'[cluster]\nredis_url = "{redis.url}"\n'
            )
            node = Node(name, unused_port(), Child("node", workdir, f"{tag}-{name}"), list_path)
            cluster.nodes.append(node)
        await asyncio.gather(*(n.child.spawn() for n in cluster.nodes))
        await asyncio.gather(
            *(
                n.child.configure(
                    {
                        "argv": [
                            "serve",
                            "--config",
                            str(workdir / tag / n.name / "livesafe.toml"),
                            "--node",
                            n.name,
                            "--port",
                            str(n.port),
                            "--ice-host",
                            "127.0.0.1",
                            "--db",
                            str(workdir / tag / n.name / "events.db"),
                        ],
                        "port": n.port,
                        "secret": SECRET,
                        "max_seconds": life,
                    },
                    90,
                )  # fmt: skip
                for n in cluster.nodes
            )
        )
    except BaseException:
        await cluster.close()
        raise
    return cluster


async def stats(http: Any, node: Node, since: float = 0.0) -> dict:
    import aiohttp

    url = f"{node.base}/bench/stats?since={since}"
    async with http.get(url, timeout=aiohttp.ClientTimeout(total=10)) as response:
        return await response.json()


async def live_streams(http: Any, cluster: Cluster) -> dict[str, str]:
    """stream -> the node guarding it, frames flowing."""
    where: dict[str, str] = {}
    for node in cluster.nodes:
        for s in (await stats(http, node))["streams"]:
            if s["frames_in"] > 0 and s["state"] != "ended":
                where[s["id"]] = node.name
    return where


async def wait_live(http: Any, cluster: Cluster, names: list[str], timeout: float = 30.0) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while True:
        where = await live_streams(http, cluster)
        if all(n in where for n in names):
            return where
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(where)} of {len(names)} admitted streams live on a node: {where}")
        await asyncio.sleep(0.2)


class Window:
    """CPU of some processes and of the machine, and each node's CPU by kind of thread, over a window."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids

    async def __aenter__(self) -> Window:
        self.t0 = time.monotonic()
        self.cpu0 = {k: proc_cpu_rss(p)[0] for k, p in self.pids.items()}
        self.busy0 = machine_busy()
        self.load0 = loadavg()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.t1 = time.monotonic()
        self.seconds = self.t1 - self.t0
        cpu1 = {k: proc_cpu_rss(p)[0] for k, p in self.pids.items()}
        self.cpu = {k: 100 * (cpu1[k] - self.cpu0[k]) / self.seconds for k in self.pids}  # % of a core
        self.machine = 100 * (machine_busy() - self.busy0) / self.seconds
        self.load1 = loadavg()


def thread_split(before: dict, after: dict, seconds: float) -> dict[str, float]:
    a, b = before.get("thread_cpu_s", {}), after.get("thread_cpu_s", {})
    return {k: round(100 * (b[k] - a.get(k, 0.0)) / seconds, 1) for k in b}


def outcome(kind: str, streams: int, viewers: int, mode: str, w: Window, pubs: dict, views: dict) -> Outcome:
    """bench_relay's analysis of what the viewers got over window ``w``."""
    out = Outcome(Scenario(kind, streams, viewers, mode, 0.0, w.seconds))
    out.window = w.seconds
    out.viewer_failures = views.get("failed", [])
    analyze(out, pubs, views, w.t0, w.t1)
    return out


# ----------------------------------------------------------------- capacity


async def capacity_run(args: Any, workdir: Path, nodes: int, streams: int) -> dict:
    import aiohttp

    names = [f"s{k}" for k in range(streams)]
    life = 120 + streams * args.stagger + args.warmup + args.capacity_seconds
    tag = f"cap{nodes}-{streams}"
    cluster = await start_cluster(workdir, tag, [f"n{i}" for i in range(nodes)], life, cpu_share=nodes)
    publisher, viewer = Child("publish", workdir, tag), Child("view", workdir, tag)
    cluster.others += [publisher, viewer]
    result: dict[str, Any] = {"nodes": nodes, "streams": streams}
    try:
        await asyncio.gather(publisher.spawn(), viewer.spawn())
        entry = cluster.nodes[0]
        published = await publisher.configure(
            {"base": entry.base, "streams": names, "clip": str(support.clip_path(CACHE)), "max_seconds": life,
             "stagger": args.stagger},
            60 + streams * args.stagger,
        )  # fmt: skip
        refused = published.get("refused", [])
        admitted = [n for n in names if n not in refused]
        async with aiohttp.ClientSession() as http:
            where = await wait_live(http, cluster, admitted)
            bases = {n.name: n.base for n in cluster.nodes}
            await viewer.configure(
                {"base": entry.base, "targets": [[s, 1, bases[where[s]]] for s in admitted], "mode": "count",
                 "max_seconds": life},
                60 + streams,
            )  # fmt: skip
            await asyncio.sleep(args.warmup)
            before = {n.name: await stats(http, n) for n in cluster.nodes}
            clients = {"clients": publisher.pid, "viewers": viewer.pid}
            async with Window({n.name: n.pid for n in cluster.nodes} | clients) as w:
                await asyncio.sleep(args.capacity_seconds)
            after = {n.name: await stats(http, n, since=w.t0) for n in cluster.nodes}
        await asyncio.sleep(GRACE)
        views, pubs = await viewer.stop(), await publisher.stop()
        if views is None or pubs is None:
            raise RuntimeError(f"no results from the clients; see {viewer.log}, {publisher.log}")
        out = outcome(f"{nodes} node(s)", streams, 1, "count", w, pubs, views)
        out.refused = len(refused)
        node_cpu = {k: v for k, v in w.cpu.items() if k not in ("clients", "viewers")}
        result |= {
            "sustained": out.sustained,
            "delivered_min": out.delivered_min,
            "latency_ms": {f"p{q}": 1000 * out.pct(q) for q in (50, 95)},
            "growth_ms": out.growth_ms,
            "refused": len(refused),
            "placed": {n: sorted(s for s, at in where.items() if at == n) for n in bases},
            "node_cpu_pct": node_cpu,
            "total_cpu_pct": sum(node_cpu.values()),
            "client_cpu_pct": w.cpu["clients"] + w.cpu["viewers"],
            "machine_cpu_pct": w.machine,
            "load": [w.load0, w.load1],
            "thread_cpu_pct": {n: thread_split(before[n], after[n], w.seconds) for n in before},
            "loop_lag_p99_ms": {n: after[n]["loop_lag_ms"]["p99"] for n in after},
            "frames_dropped": sum(int(s.get("frames_dropped") or 0) for a in after.values() for s in a["streams"]),
            "placements": {n: after[n]["placements"] for n in after},
        }
    except Exception as exc:  # noqa: BLE001 - a failed run is reported, the sweep stops there
        result |= {"sustained": False, "error": f"{type(exc).__name__}: {exc}"}
    finally:
        await cluster.close()
    print(f"  capacity {nodes} node(s) x {streams} stream(s): {brief(result)}", flush=True)
    return result


def brief(r: dict) -> str:
    if "error" in r:
        return "FAILED " + r["error"].splitlines()[0]
    return (
        f"sustained {r['sustained']} | delivered >= {100 * r['delivered_min']:.1f}% | p50/p95 "
        f"{r['latency_ms']['p50']:.0f}/{r['latency_ms']['p95']:.0f} ms | growth {r['growth_ms']:+.0f} ms | "
        f"nodes CPU {', '.join(f'{k} {v:.0f}%' for k, v in r['node_cpu_pct'].items())} | machine "
        f"{r['machine_cpu_pct']:.0f}% (clients {r['client_cpu_pct']:.0f}%) | placed {r['placed']} | refused "
        f"{r['refused']} | load {r['load'][0]:.2f}->{r['load'][1]:.2f}"
    )


async def phase_capacity(args: Any, workdir: Path, report: dict) -> list[str]:
    print(
        f"\n== 1. capacity: {args.capacity_nodes} nodes, N streams x 1 viewer ({args.capacity_seconds:g} s each, "
        f"publishers {args.stagger:g} s apart)",
        flush=True,
    )
    runs: dict[int, list[dict]] = {}
    sustained: dict[int, int] = {}
    for nodes in args.capacity_nodes:
        sustained[nodes] = 0
        for n in range(1, args.max_streams + 1):
            r = await capacity_run(args, workdir, nodes, n)
            runs.setdefault(nodes, []).append(r)
            if not r["sustained"]:
                break
            sustained[nodes] = n
    lines = [
        "### 1. Guarded 720p30 streams sustained by 1 and 2 node processes (one viewer each, on the stream's origin)",
        "",
        f"Publishers enter through node 0, {args.stagger:g} s apart. "
        "Sustained as in bench_relay: every viewer ≥ 95 % of the frames published in the window, latency p95 of",
        "the window's last third ≤ 50 ms above its first third; a refused stream (503) counts as not delivered.",
        "",
        "| nodes | streams | placed (streams per node) | node CPU % of a core | total | per stream | delivered (worst) "
        "| latency p50 / p95 ms | p95 growth ms | refused | machine CPU % (clients) | load | sustained |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for nodes, rs in runs.items():
        for r in rs:
            if "error" in r:
                lines.append(f"| {nodes} | {r['streams']} | failed: {r['error'].splitlines()[0]} |")
                continue
            live = r["streams"] - r["refused"]
            lines.append(
                f"| {nodes} | {r['streams']} | {' + '.join(str(len(v)) for v in r['placed'].values())} "
                f"| {' + '.join(f'{v:.0f}' for v in r['node_cpu_pct'].values())} | {r['total_cpu_pct']:.0f} "
                f"| {r['total_cpu_pct'] / max(1, live):.0f} | {100 * r['delivered_min']:.1f} % "
                f"| {r['latency_ms']['p50']:.0f} / {r['latency_ms']['p95']:.0f} | {r['growth_ms']:+.0f} "
                f"| {r['refused']} | {r['machine_cpu_pct']:.0f} ({r['client_cpu_pct']:.0f}) "
                f"| {r['load'][0]:.2f} | {'yes' if r['sustained'] else '**no**'} |"
            )
    costs = {}
    for nodes, rs in runs.items():
        ok = [r for r in rs if r.get("sustained")]
        if len(ok) >= 2:
            costs[nodes] = fit_slope([r["streams"] for r in ok], [r["total_cpu_pct"] for r in ok]) / 100
        elif ok:
            costs[nodes] = ok[-1]["total_cpu_pct"] / 100 / ok[-1]["streams"]
    lines.append("")
    lines.append(
        "Sustained: " + ", ".join(f"{k} node(s) **{v}** streams" for k, v in sustained.items())
        + f" (--max-streams {args.max_streams})."
    )  # fmt: skip
    for nodes, cost in costs.items():
        lines.append(
            f"- {nodes} node(s): **{cost:.2f} cores per stream** (least squares of the nodes' CPU over the sustained "
            f"runs), i.e. **{1 / cost:.1f} streams per core** of CPU spent on nodes."
        )
    report["capacity"] = {"sustained": sustained, "cores_per_stream": costs, "runs": runs}
    return lines


# --------------------------------------------------------- edge and latency


async def edge_session(args: Any, workdir: Path, report: dict, do_edge: bool, do_latency: bool) -> list[list[str]]:
    """One stream guarded on A; counting viewers on edge B (edge phase); full viewers on A and B (latency)."""
    import aiohttp

    life = 120 + args.idle_seconds + len(args.edge_viewers) * (args.warmup + args.edge_seconds + 8)
    life += args.warmup + args.latency_seconds + 10
    cluster = await start_cluster(workdir, "edge", ["a", "b"], life, cpu_share=2)
    a, b = cluster.nodes
    publisher = Child("publish", workdir, "edge")
    cluster.others.append(publisher)
    sections: list[list[str]] = []
    try:
        await publisher.spawn()
        await publisher.configure(
            {"base": a.base, "streams": ["s0"], "clip": str(support.clip_path(CACHE)), "max_seconds": life,
             "whip_query": "?node=a"},
            60,
        )  # fmt: skip
        async with aiohttp.ClientSession() as http:
            where = await wait_live(http, cluster, ["s0"])
            if where["s0"] != "a":
                raise RuntimeError(f"the stream went to {where['s0']}, not a")
            if do_edge:
                sections.append(await edge_phase(args, workdir, http, cluster, publisher, report))
            if do_latency:
                sections.append(await latency_phase(args, workdir, http, cluster, publisher, report))
    finally:
        await cluster.close()
    return sections


async def edge_phase(
    args: Any, workdir: Path, http: Any, cluster: Cluster, publisher: Child, report: dict
) -> list[str]:
    a, b = cluster.nodes
    print(f"\n== 2. edge: stream on a, {args.edge_viewers} counting viewers on b ({args.edge_seconds:g} s)", flush=True)
    await asyncio.sleep(2.0)
    before = await stats(http, b)
    async with Window({"a": a.pid, "b": b.pid}) as idle:
        await asyncio.sleep(args.idle_seconds)
    idle_threads = thread_split(before, await stats(http, b), idle.seconds)
    print(f"  b idle (no link): {idle.cpu['b']:.1f}% of a core; a with the stream: {idle.cpu['a']:.1f}%", flush=True)
    points = []
    for n in args.edge_viewers:
        viewer = Child("view", workdir, f"edge-{n}")
        cluster.others.append(viewer)
        await viewer.spawn()
        joined = await viewer.configure(
            {"base": b.base, "targets": [["s0", n]], "mode": "count", "max_seconds": 120 + args.edge_seconds,
             "connect_concurrency": args.edge_concurrency, "hang_up": True},
            60 + n,
        )  # fmt: skip
        await asyncio.sleep(args.warmup + min(4.0, 0.05 * n))
        s0 = await stats(http, b)
        async with Window({"a": a.pid, "b": b.pid, "viewers": viewer.pid}) as w:
            await asyncio.sleep(args.edge_seconds)
        s1 = await stats(http, b, since=w.t0)
        await asyncio.sleep(GRACE)
        views = await viewer.stop()
        pubs = await publisher_record(publisher)
        out = outcome("edge", 1, n, "count", w, pubs, views or {"viewers": []})
        edge0, edge1 = s0.get("edge") or {}, s1.get("edge") or {}
        point = {
            "viewers": n,
            "failed": joined["failed"],
            "b_cpu_pct": w.cpu["b"],
            "a_cpu_pct": w.cpu["a"],
            "viewer_process_cpu_pct": w.cpu["viewers"],
            "machine_cpu_pct": w.machine,
            "load": [w.load0, w.load1],
            "b_threads_pct": thread_split(s0, s1, w.seconds),
            "b_thread_count": s1["threads"],
            "b_local_streams": len(s1["streams"]),
            "edge": {k: edge1.get(k, 0) - edge0.get(k, 0) if k not in ("streams", "viewers") else edge1.get(k)
                     for k in edge1},
            "delivered_min": out.delivered_min,
            "latency_pkt_ms": {f"p{q}": 1000 * out.pct(q) for q in (50, 95)},
        }  # fmt: skip
        points.append(point)
        print(
            f"  {n} viewer(s) on b: b {w.cpu['b']:.1f}% a {w.cpu['a']:.1f}% viewers {w.cpu['viewers']:.0f}% "
            f"machine {w.machine:.0f}% | delivered >= {100 * out.delivered_min:.1f}% | b threads "
            f"{point['b_threads_pct']} | edge {point['edge']} | load {w.load1:.2f}",
            flush=True,
        )
        deadline = time.monotonic() + 30  # hung up: B's edge drops them, and its link 1 s after the last
        while ((await stats(http, b)).get("edge") or {}).get("viewers") and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.5)
    kept = [p for p in points if p["delivered_min"] >= 0.95]
    slope = fit_slope([p["viewers"] for p in kept], [p["b_cpu_pct"] for p in kept])
    if len(kept) >= 2:
        intercept = float(np.polyfit([p["viewers"] for p in kept], [p["b_cpu_pct"] for p in kept], 1)[1])
    else:
        intercept = float("nan")
    per_stream = intercept - idle.cpu["b"]
    decoders = max((p["b_threads_pct"].get("decoders", 0.0) for p in points), default=0.0)
    guards = max((p["b_threads_pct"].get("guard workers", 0.0) for p in points), default=0.0)
    lines = [
        "### 2. Edge cost: one stream guarded on A, N counting viewers on edge B",
        "",
        f"B idle (registered, no link): **{idle.cpu['b']:.1f} %** of a core (threads: {fmt_threads(idle_threads)}).",
        "",
        "| viewers on B | B CPU % of a core | B by kind of thread (% of a core) | B's own streams | A CPU % "
        "| delivered (worst) | to last packet p50 / p95 ms | packets forwarded / dropped by B | viewer process % "
        "| machine % | load |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in points:
        e = p["edge"]
        lines.append(
            f"| {p['viewers']} | {p['b_cpu_pct']:.1f} | {fmt_threads(p['b_threads_pct'])} | {p['b_local_streams']} "
            f"| {p['a_cpu_pct']:.0f} | {100 * p['delivered_min']:.1f} % "
            f"| {p['latency_pkt_ms']['p50']:.0f} / {p['latency_pkt_ms']['p95']:.0f} "
            f"| {e.get('packets_forwarded', 0)} / {e.get('packets_dropped', 0)} | {p['viewer_process_cpu_pct']:.0f} "
            f"| {p['machine_cpu_pct']:.0f} | {p['load'][1]:.2f} |"
        )
    lines += [
        "",
        f"- B: **{slope:.2f} % of a core per viewer** (least squares over the runs that kept up; goal ≤ 3: "
        f"{'met' if slope <= 3 else 'NOT met'}); **{per_stream:.1f} %** of a core per pulled stream "
        f"(intercept {intercept:.1f} % minus B idle {idle.cpu['b']:.1f} %).",
        f"- No decode on B: decoder threads at most **{decoders:.1f} %** of a core, guard workers "
        f"**{guards:.1f} %**, B guards no stream of its own (its relay's streams: "
        f"{max((p['b_local_streams'] for p in points), default=0)}).",
    ]
    report["edge"] = {
        "b_idle_cpu_pct": idle.cpu["b"],
        "per_viewer_cpu_pct": slope,
        "per_pulled_stream_cpu_pct": per_stream,
        "points": points,
    }
    return lines


def fmt_threads(split: dict[str, float]) -> str:
    short = {"other (codec-internal threads...)": "other"}
    return ", ".join(f"{short.get(k, k)} {v:.1f}" for k, v in sorted(split.items()) if v >= 0.05) or "—"


async def publisher_record(publisher: Child) -> dict:
    """What the still-running publisher has sent so far (its ``dump`` command)."""
    assert publisher.proc is not None and publisher.proc.stdin is not None
    publisher.proc.stdin.write(b"dump\n")
    await publisher.proc.stdin.drain()
    await publisher.line("DUMPED", 20)
    return json.loads(publisher.result_path.read_text())


async def latency_phase(
    args: Any, workdir: Path, http: Any, cluster: Cluster, publisher: Child, report: dict
) -> list[str]:
    a, b = cluster.nodes
    print(
        f"\n== 3. latency: one full viewer on a (origin) and one on b (edge) ({args.latency_seconds:g} s)", flush=True
    )
    viewers = {n.name: Child("view", workdir, f"lat-{n.name}") for n in (a, b)}
    cluster.others += viewers.values()
    await asyncio.gather(*(v.spawn() for v in viewers.values()))
    await asyncio.gather(
        *(
            v.configure(
                {
                    "base": cluster.node(name).base,
                    "targets": [["s0", 1]],
                    "mode": "full",
                    "max_seconds": 120 + args.latency_seconds,
                },
                60,
            )  # fmt: skip
            for name, v in viewers.items()
        )
    )
    await asyncio.sleep(args.warmup)
    async with Window({"a": a.pid, "b": b.pid}) as w:
        await asyncio.sleep(args.latency_seconds)
    await asyncio.sleep(GRACE)
    results = {name: await v.stop() for name, v in viewers.items()}
    pubs = await publisher_record(publisher)
    outs = {name: outcome(name, 1, 1, "full", w, pubs, r or {"viewers": []}) for name, r in results.items()}
    lines = [
        "### 3. Added latency origin → edge → viewer (one full viewer on each node, same stream, same window)",
        "",
        "Latency = publisher hands frame N to its sender → the viewer has decoded frame N (bench_relay's phase 1).",
        "",
        "| viewer on | frames | p50 ms | p95 ms | p99 ms | to last RTP packet p50 / p99 ms | delivered "
        "| barcodes read |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, o in outs.items():
        role = "A (origin)" if name == "a" else "B (edge)"
        c = o.checks
        lines.append(
            f"| {role} | {o.latencies().size} | {ms(o.pct(50))} | {ms(o.pct(95))} | {ms(o.pct(99))} "
            f"| {ms(o.pct(50, 'window_pkt'))} / {ms(o.pct(99, 'window_pkt'))} | {100 * o.delivered_min:.1f} % "
            f"| {c.get('barcode_frames', 0)}/{c.get('decoded', 0)} |"
        )
    d = {q: 1000 * (outs["b"].pct(q) - outs["a"].pct(q)) for q in (50, 95, 99)}
    lines += [
        "",
        f"Edge minus origin: p50 **{d[50]:+.1f} ms**, p95 **{d[95]:+.1f} ms**, p99 **{d[99]:+.1f} ms** "
        f"(goal ≤ +20 ms at p50: {'met' if d[50] <= 20 else 'NOT met'}); machine {w.machine:.0f} % of a core, "
        f"load {w.load0:.2f} → {w.load1:.2f}.",
    ]
    report["latency"] = {
        name: {f"p{q}_ms": 1000 * o.pct(q) for q in (50, 95, 99)} | {"delivered": o.delivered_min, "checks": o.checks}
        for name, o in outs.items()
    } | {"edge_minus_origin_ms": d, "machine_cpu_pct": w.machine, "load": [w.load0, w.load1]}
    return lines


# -------------------------------------------------------------------- lists


async def phase_lists(args: Any, workdir: Path, report: dict) -> list[str]:
    import aiohttp

    print(f"\n== 4. lists: {args.list_changes} hashes appended to n0's list file, 3 nodes", flush=True)
    life = 120 + args.list_changes * 10
    cluster = await start_cluster(workdir, "lists", ["n0", "n1", "n2"], life, cpu_share=3)
    reload_seconds = 2.0  # livesafe.config's default [lists] reload_seconds (the nodes' configs leave it)
    rows: list[dict] = []
    rng = random.Random(13)
    try:
        async with aiohttp.ClientSession() as http:
            await asyncio.sleep(2.0)
            load0 = loadavg()
            for i in range(args.list_changes):
                await asyncio.sleep(rng.uniform(0, reload_seconds))  # sample the watcher's phase uniformly
                digest = secrets.token_hex(32)
                with cluster.nodes[0].list_path.open("a") as f:
                    f.write(f"pdq {digest}\n")
                written = time.monotonic()
                deadline = written + 30
                seen: dict[str, float] = {}
                while len(seen) < len(cluster.nodes) and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                    for node in cluster.nodes:
                        if node.name not in seen:
                            at = (await stats(http, node))["lists_seen"].get(digest)
                            if at is not None:
                                seen[node.name] = at
                row = {"written": written, "seen": {k: v - written for k, v in seen.items()}}
                rows.append(row)
                print(f"  change {i + 1}: " + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in row["seen"].items()))
            load1 = loadavg()
    finally:
        await cluster.close()
    complete = [r for r in rows if len(r["seen"]) == 3]
    local = np.array([r["seen"]["n0"] for r in complete])
    total = np.array([max(r["seen"].values()) for r in complete])
    spread = np.array([max(v for k, v in r["seen"].items() if k != "n0") - r["seen"]["n0"] for r in complete])

    def pcts(x: np.ndarray) -> str:
        if not x.size:
            return "— | — | —"
        return " | ".join(f"{1000 * np.percentile(x, q):.0f}" for q in (50, 99)) + f" | {1000 * x.max():.0f}"

    p99 = float(np.percentile(total, 99)) if total.size else float("nan")
    lines = [
        "### 4. List change → enforcement on every node (3 nodes, one hash appended to node 0's file each time)",
        "",
        f"Time from the append to the hash being in each node's matcher (``lists.current``, watched every 5 ms "
        f"inside each node); a random wait of 0–{reload_seconds:g} s before each append samples the file "
        "watcher's phase.",
        "",
        "| part | p50 ms | p99 ms | max ms |",
        "|---|---|---|---|",
        f"| node 0's file watcher (``reload_seconds`` {reload_seconds:g} s) + parse + compile | {pcts(local)} |",
        f"| cluster propagation: node 0 → the last other node (publish, hint, fetch, install) | {pcts(spread)} |",
        f"| **append → every node enforces it** | {pcts(total)} |",
        "",
        f"{len(complete)} of {len(rows)} changes reached every node within 30 s; load {load0:.2f} → {load1:.2f}. "
        f"Goal p99 ≤ 5 s: {'met' if p99 <= 5 else 'NOT met'} (p99 **{p99:.2f} s**).",
    ]
    report["lists"] = {"reload_seconds": reload_seconds, "changes": rows, "p99_s": p99, "load": [load0, load1]}
    return lines


# ----------------------------------------------------------------- failover


async def failover_once(args: Any, workdir: Path, k: int) -> dict:
    import aiohttp

    tag = f"fail{k}"
    life = 180.0
    cluster = await start_cluster(workdir, tag, ["a", "b"], life, cpu_share=2)
    a, b = cluster.nodes
    publisher, viewer = Child("publish", workdir, tag), Child("view", workdir, tag)
    cluster.others += [publisher, viewer]
    try:
        await asyncio.gather(publisher.spawn(), viewer.spawn())
        await publisher.configure(
            {"base": a.base, "streams": ["s0"], "clip": str(support.clip_path(CACHE)), "max_seconds": life,
             "whip_query": "?node=a"},
            60,
        )  # fmt: skip
        async with aiohttp.ClientSession() as http:
            where = await wait_live(http, cluster, ["s0"])
            if where["s0"] != "a":
                raise RuntimeError(f"the stream went to {where['s0']}, not a")
            await viewer.configure(
                {"base": b.base, "targets": [["s0", 1]], "mode": "full", "max_seconds": life, "reconnect": True,
                 "silence_seconds": 2.0},
                60,
            )  # fmt: skip
            await asyncio.sleep(args.warmup)
            load = loadavg()
            a.child.kill()  # SIGKILL
            killed = time.monotonic()
            assert publisher.proc is not None and publisher.proc.stdin is not None
            publisher.proc.stdin.write(f"republish {b.base}\n".encode())
            await publisher.proc.stdin.drain()
            republished = await publisher.line("REPUBLISHED", 40)
            await asyncio.sleep(args.failover_watch)
            b_stats = await stats(http, b)
        views, pubs = await viewer.stop(), await publisher.stop()
    finally:
        await cluster.close()
    rep = republished["streams"]["s0"]
    started = rep["started"]
    assert views is not None and pubs is not None
    pub = pubs["s0"]
    sent = np.asarray(pub["sent"])
    first = pub["first_seq"]
    # The first frame the viewer decoded, anywhere in its connections, that was published after the
    # republish started: a clip frame (barcode read) reaches a viewer only through a guard's encoder.
    back = None
    for v in views["viewers"]:
        for t_dec, index in zip(v["t_dec"], v["index"], strict=True):
            if t_dec is None or index < 0 or t_dec < started:
                continue
            seqs = [s for s in range(first, first + len(sent)) if s % support.CLIP_FRAMES == index]
            seqs = [s for s in seqs if sent[s - first] <= t_dec + 0.002]
            if seqs and sent[max(seqs) - first] >= started:
                back = t_dec if back is None else min(back, t_dec)
    last_before = max(
        (t for v in views["viewers"] for t, i in zip(v["t_dec"], v["index"], strict=True)
         if t is not None and i >= 0 and t < killed),
        default=None,
    )  # fmt: skip
    result = {
        "kill_to_republish_ms": 1000 * (started - killed),
        "republish_to_answer_s": (rep["answered"] - started) if rep["answered"] else None,
        "republish_to_connected_s": (rep["connected"] - started) if rep["connected"] else None,
        "republish_to_guarded_frames_s": (back - started) if back is not None else None,
        "last_frame_before_kill_ms": 1000 * (killed - last_before) if last_before else None,
        "attempts": rep["attempts"],
        "error_kinds": rep["error_kinds"],
        "viewer_rejoins": views.get("rejoins", []),
        "viewer_connections": len(views["viewers"]),
        "edge": b_stats.get("edge"),
        "load": load,
    }
    print(
        f"  failover {k + 1}: republish -> 201 {fmt_s(result['republish_to_answer_s'])}, -> guarded frames at the "
        f"viewer {fmt_s(result['republish_to_guarded_frames_s'])} | attempts {rep['attempts']} "
        f"{rep['error_kinds']} | viewer connections {result['viewer_connections']} | edge "
        f"{ {k: v for k, v in (b_stats.get('edge') or {}).items() if k in EDGE_LOSS} }"
        f" | load {load:.2f}",
        flush=True,
    )
    return result


EDGE_LOSS = ("origins_lost", "reconnects", "slate_frames")


def gap(r: dict) -> float | None:
    """From the republished publisher's connection to the viewer's first guarded frame."""
    a, b = r.get("republish_to_connected_s"), r.get("republish_to_guarded_frames_s")
    return b - a if a is not None and b is not None else None


def fmt_s(x: float | None) -> str:
    return "—" if x is None else f"{x:.2f} s"


async def phase_failover(args: Any, workdir: Path, report: dict) -> list[str]:
    print(f"\n== 5. failover: kill -9 of the origin, {args.failovers} times", flush=True)
    runs = []
    for k in range(args.failovers):
        try:
            runs.append(await failover_once(args, workdir, k))
        except Exception as exc:  # noqa: BLE001 - reported, the next repetition goes on
            runs.append({"error": f"{type(exc).__name__}: {exc}"})
            print(f"  failover {k + 1}: FAILED {exc}", flush=True)
    lines = [
        "### 5. Failover: publisher on A, a full viewer on edge B; `kill -9` A, the publisher republishes through B",
        "",
        "The republish starts at once after the kill (a retry loop, 0.2 s between attempts) and from the clip's next",
        "IDR (a restarted encoder starts with a keyframe); 'guarded frames' = the",
        "first frame the viewer decodes whose barcode shows it was published after the republish started.",
        "",
        "| run | republish → 201 s | → publisher connected s | → guarded frames at the viewer s "
        "| publisher connected → guarded frames s | attempts (errors) "
        "| viewer | B's edge: origins lost / links restored / slate frames | load |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for k, r in enumerate(runs):
        if "error" in r:
            lines.append(f"| {k + 1} | failed: {r['error'].splitlines()[0]} |")
            continue
        e = r["edge"] or {}
        viewer = (
            f"rejoined {len(r['viewer_rejoins'])}×"
            if r["viewer_rejoins"]
            else "stayed connected (edge slate, then relinked)"
        )
        lines.append(
            f"| {k + 1} | {fmt_s(r['republish_to_answer_s'])} | {fmt_s(r['republish_to_connected_s'])} "
            f"| **{fmt_s(r['republish_to_guarded_frames_s'])}** | {fmt_s(gap(r))} "
            f"| {r['attempts']} ({', '.join(r['error_kinds']) or '—'}) "
            f"| {viewer} | {e.get('origins_lost', '—')} / {e.get('reconnects', '—')} / {e.get('slate_frames', '—')} "
            f"| {r['load']:.2f} |"
        )
    times = [r["republish_to_guarded_frames_s"] for r in runs if r.get("republish_to_guarded_frames_s") is not None]
    worst = max(times, default=float("nan"))
    ok = len(times) == len(runs) and worst <= 5
    lines += [
        "",
        f"Republish → guarded frames: median **{np.median(times) if times else float('nan'):.2f} s**, worst "
        f"**{worst:.2f} s** over {len(times)} of {len(runs)} runs (goal ≤ 5 s: {'met' if ok else 'NOT met'}).",
    ]
    report["failover"] = {"runs": runs, "worst_s": worst}
    return lines


# --------------------------------------------------------------------- main


def parse_args() -> Any:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])

    def ints(text: str) -> list[int]:
        return [int(x) for x in text.split(",") if x]

    parser.add_argument("--quick", action="store_true", help="short smoke run (~4 min)")
    parser.add_argument("--phases", default=",".join(PHASES), help=f"comma-separated subset of {','.join(PHASES)}")
    parser.add_argument("--warmup", type=float, default=None)
    parser.add_argument("--capacity-seconds", type=float, default=None)
    parser.add_argument("--capacity-nodes", type=ints, default=[1, 2])
    parser.add_argument("--max-streams", type=int, default=None)
    parser.add_argument("--stagger", type=float, default=STAGGER, help="seconds between capacity publishers")
    parser.add_argument("--edge-viewers", type=ints, default=None, help="viewer counts on the edge (default 1,10,30)")
    parser.add_argument("--edge-seconds", type=float, default=None)
    parser.add_argument(
        "--edge-concurrency",
        type=int,
        default=1,
        help="edge viewers joining at once (more than 1 can leave a counting viewer, which sends no PLI, "
        "without a keyframe: the edge drops keyframe requests within 0.1 s of the last)",
    )
    parser.add_argument("--idle-seconds", type=float, default=None)
    parser.add_argument("--latency-seconds", type=float, default=None)
    parser.add_argument("--list-changes", type=int, default=None)
    parser.add_argument("--failovers", type=int, default=None)
    parser.add_argument("--failover-watch", type=float, default=6.0, help="seconds watched after the republish")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--keep-logs", action="store_true")
    parser.add_argument("--max-minutes", type=float, default=45.0, help="stop (killing every child) after this long")
    parser.add_argument("--no-netns-check", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    q = args.quick
    defaults = {
        "warmup": 2.0 if q else 4.0,
        "capacity_seconds": 5.0 if q else 12.0,
        "max_streams": 2 if q else 6,
        "edge_viewers": [1, 5] if q else [1, 10, 30],
        "edge_seconds": 5.0 if q else 12.0,
        "idle_seconds": 4.0 if q else 8.0,
        "latency_seconds": 6.0 if q else 20.0,
        "list_changes": 4 if q else 30,
        "failovers": 1 if q else 5,
    }
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    unknown = set(args.phases) - set(PHASES)
    if unknown:
        parser.error(f"unknown phases {sorted(unknown)}")
    return args


async def amain(args: Any) -> None:
    started = time.monotonic()
    support.build_clip(CACHE)
    workdir = Path(tempfile.mkdtemp(prefix="cluster-", dir=CACHE))
    load = loadavg()
    print(f"{os.cpu_count()} CPUs, load average {load:.2f}; child logs in {workdir}", flush=True)
    report: dict[str, Any] = {"cpus": os.cpu_count(), "load_average_start": load, "args": vars(args)}
    sections: list[list[str]] = []
    try:
        if "capacity" in args.phases:
            sections.append(await phase_capacity(args, workdir, report))
        if "edge" in args.phases or "latency" in args.phases:
            sections += await edge_session(args, workdir, report, "edge" in args.phases, "latency" in args.phases)
        if "lists" in args.phases:
            sections.append(await phase_lists(args, workdir, report))
        if "failover" in args.phases:
            sections.append(await phase_failover(args, workdir, report))
    finally:
        if not args.keep_logs:
            shutil.rmtree(workdir, ignore_errors=True)
    report["seconds"] = time.monotonic() - started
    report["load_average_end"] = loadavg()
    header = [
        f"# bench_cluster: livesafe cluster nodes on one machine, 1280x720 30 fps H.264, loopback"
        f"{' (--quick)' if args.quick else ''}",
        f"{os.cpu_count()} CPUs, load average {load:.2f} -> {report['load_average_end']:.2f}, "
        f"{report['seconds']:.0f} s; CPU figures are % of one core.",
    ]
    print_report(header, sections, report, args.json)


def main() -> None:
    args = parse_args()
    ensure_private_network(__file__, allow_visible=args.no_netns_check)
    try:
        asyncio.run(asyncio.wait_for(amain(args), args.max_minutes * 60))
    except TimeoutError:
        sys.exit(f"bench_cluster: stopped after --max-minutes {args.max_minutes:g}")


if __name__ == "__main__":
    main()

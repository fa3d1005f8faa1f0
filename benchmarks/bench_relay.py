"""The guarded relay against a plain aiortc relay, 720p30 over loopback: latency, streams,
viewers, overload.

Both relays run the same way, in a process of their own whose CPU time and memory are read
from ``/proc`` (utime+stime, VmRSS); publishers and viewers run in two other processes:

- guarded: livesafe's ``Relay`` (aiortc decodes -> StreamGuard with its 10-frame delay
  buffer -> one libx264 encoder per stream -> packets to every viewer), default settings,
  the sample blocklist;
- plain: what an aiortc relay usually is, written here: WHIP/WHEP endpoints, the publisher's
  decoded track shared through ``aiortc.contrib.media.MediaRelay`` (default, buffered) and
  each viewer's ``RTCRtpSender`` encoding for itself (aiortc's H264Encoder, 1 Mbit/s).

Publishers send a pre-encoded clip (sample_streams/benign_mix.mp4 looped to 40 s, 1280x720,
H.264 Constrained Baseline, no B-frames, ~1.7 Mbit/s with a 1 Mbit VBV so no frame exceeds
~75 KB, an IDR every 2 s; built once into $TMPDIR/livesafe-bench-relay) as ``av.Packet``s at
real-time pace, so they cost almost nothing.  Every frame carries its number in a barcode
(16 Manchester-coded bits in the bottom 16 rows).  Viewers negotiate H.264 with both relays.
"full" viewers (phase 1) are ordinary aiortc receivers that decode every frame and read the
barcode; "count" viewers (phases 2-4, so that fifty viewers stay cheap) replace aiortc's
receive path with a hook that notes each RTP packet (no jitter buffer, no NACK/PLI/REMB),
decode only keyframes to read their barcode, and number the frames in between by RTP
timestamp -- phase 1 checks that this numbering agrees with the barcodes.  Latency = the
viewer's time for a frame - the time the publisher handed that frame number to its sender,
on the machine-wide monotonic clock: to the decoded picture for full viewers (aiortc's
jitter buffer releases a frame only when the next one starts, ~1 frame more than a browser),
to the arrival of the frame's last RTP packet for count viewers.  The publisher cannot honour
keyframe requests (pre-encoded), so a relay that loses ingest packets waits for the next IDR.

Phases (each run starts a fresh relay process; measurements after a warm-up):

1. latency: one stream, one full viewer, each relay; e2e p50/p95/p99, and for the guarded
   relay the part beyond its delay buffer (delay_frames / 30 fps = 333 ms).
2. capacity: N = 1, 2, ... streams each with one viewer until a run is not sustained:
   every viewer got >= 95 % of the frames published in the window, and latency p95 of the
   last third of the window is at most 50 ms above that of the first third.
3. viewers: one stream with 1, 10, 50 viewers (plain: 1, 2, 3 -- each plain viewer costs an
   encoder); the relay's CPU per extra viewer (least squares over the points).
4. overload: twice the sustained stream count of each relay (or --overload-streams) for
   --overload-seconds; latency of the frames received, frames lost, relay RSS over time.

Besides the tables, each run prints a line with diagnostics: CPU of the publisher and viewer
processes and of the whole machine (other load included), the relay's CPU by kind of thread,
the most frames seen queued inside the relay, how late its event loop ran, UDP datagrams
dropped on full socket buffers, and RTP packets the relay never received from publishers.

It must run in a private network namespace with loopback only (ICE has no STUN server and
host candidates on 127.0.0.1 only); as root it re-runs itself under ``unshare --net``.

    python benchmarks/bench_relay.py [--quick] [--phases latency,capacity,viewers,overload] [--json OUT]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import relay_bench_support as support
from bench_common import ensure_private_network, print_report, proc_cpu_rss
from relay_bench_common import GRACE, Child, Outcome, Scenario, analyze, fit_slope, machine_busy, ms, udp_drops

CACHE = Path(tempfile.gettempdir()) / "livesafe-bench-relay"
PHASES = ("latency", "capacity", "viewers", "overload")


def _delay_buffer_ms() -> float:
    from livesafe.guard.stream_guard import GuardSettings

    return GuardSettings().delay_frames / support.FPS * 1000


def scenario(args: Any, kind: str, streams: int, viewers: int, mode: str, warmup: float, measure: float) -> Scenario:
    return Scenario(
        kind,
        streams,
        viewers,
        mode,
        warmup,
        measure,
        switch_interval=args.relay_switch_interval,
        renice_threads=args.relay_renice_threads,
    )


async def run_scenario(sc: Scenario, workdir: Path, tag: str, verbose: bool = True) -> Outcome:
    import aiohttp

    out = Outcome(sc)
    relay, publisher, viewer = Child("relay", workdir, tag), Child("publish", workdir, tag), Child("view", workdir, tag)
    names = [f"s{k}" for k in range(sc.streams)]
    life = sc.warmup + sc.measure + sc.grace + 120
    samples: list[tuple[float, float, float]] = []
    sampler: asyncio.Task | None = None
    started = time.monotonic()
    try:
        await asyncio.gather(relay.spawn(), publisher.spawn(), viewer.spawn())
        ready = await relay.configure(
            {
                "kind": sc.kind,
                "max_seconds": life,
                "plain_unbuffered": sc.plain_unbuffered,
                "switch_interval": sc.switch_interval,
                "renice_threads": sc.renice_threads,
            },
            60,
        )
        base = f"http://127.0.0.1:{ready['port']}"

        async def sample() -> None:
            while True:
                cpu, rss = proc_cpu_rss(relay.pid)
                samples.append((time.monotonic(), cpu, rss))
                await asyncio.sleep(0.5)

        sampler = asyncio.ensure_future(sample())
        clip = str(support.clip_path(CACHE))
        published = await publisher.configure({"base": base, "streams": names, "clip": clip, "max_seconds": life}, 60)
        out.refused = len(published.get("refused", []))
        names = [n for n in names if n not in published.get("refused", [])]
        async with aiohttp.ClientSession() as http:

            async def stats(since: float = 0.0) -> dict:
                url = f"{base}/bench/stats?since={since}"
                async with http.get(url, timeout=aiohttp.ClientTimeout(total=10)) as response:
                    return await response.json()

            deadline = time.monotonic() + 20
            while True:
                live = [s for s in (await stats())["streams"] if s["frames_in"] > 0]
                if len(live) == len(names):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"only {len(live)} of {len(names)} admitted streams reached the relay")
                await asyncio.sleep(0.2)
            polls: list[dict] = []

            async def poll() -> None:
                while True:
                    await asyncio.sleep(1.0)
                    try:
                        polls.append(await stats())
                    except (aiohttp.ClientError, TimeoutError):
                        pass

            joined = await viewer.configure(
                {"base": base, "targets": [[n, sc.viewers] for n in names], "mode": sc.mode, "max_seconds": life,
                 "connect_concurrency": 4},
                60 + sc.streams * sc.viewers,
            )  # fmt: skip
            out.viewer_failures = joined["failed"]
            await asyncio.sleep(sc.warmup)
            poller = asyncio.ensure_future(poll())
            threads0 = (await stats()).get("thread_cpu_s", {})
            w0 = time.monotonic()
            marks0 = (
                proc_cpu_rss(relay.pid)[0],
                proc_cpu_rss(publisher.pid)[0],
                proc_cpu_rss(viewer.pid)[0],
                machine_busy(),
            )
            drops0 = udp_drops()
            await asyncio.sleep(sc.measure)
            w1 = time.monotonic()
            marks1 = (
                proc_cpu_rss(relay.pid)[0],
                proc_cpu_rss(publisher.pid)[0],
                proc_cpu_rss(viewer.pid)[0],
                machine_busy(),
            )
            out.udp_drops = udp_drops() - drops0
            poller.cancel()
            out.relay_stats = await stats(since=w0)
            threads1 = out.relay_stats.get("thread_cpu_s", {})
            out.thread_cpu = {k: 100 * (threads1[k] - threads0.get(k, 0.0)) / (w1 - w0) for k in threads1}
            for key in (
                "viewer_queue_max_frames",
                "decoder_backlog_frames",
                "ingest_waiting_frames",
                "decoded_waiting_frames",
            ):
                values = [s.get(key) for p in polls + [out.relay_stats] for s in p["streams"] if s.get(key) is not None]
                if values:
                    out.queue_max[key] = max(values)
            out.queue_max["loop_lag_ms"] = out.relay_stats["loop_lag_ms"]["p100"]  # over the window
        out.window = w1 - w0
        out.relay_cpu, out.publisher_cpu, out.viewer_cpu, out.machine_cpu = (
            100 * (b - a) / out.window for a, b in zip(marks0, marks1, strict=True)
        )
        await asyncio.sleep(sc.grace)
        views = await viewer.stop()
        pubs = await publisher.stop()
        if views is None or pubs is None:
            raise RuntimeError(f"no results from the clients; see {viewer.log}, {publisher.log}")
        sampler.cancel()
        out.rss_series = [(t - w0, rss) for t, _, rss in samples]
        analyze(out, pubs, views, w0, w1)
    except Exception as exc:  # noqa: BLE001 - one failed run is reported, the benchmark goes on
        out.error = f"{type(exc).__name__}: {exc}"
        for child in (relay, publisher, viewer):
            if child.tail():
                out.error += f"\n  [{child.role} log tail]\n  " + child.tail(8).replace("\n", "\n  ")
    finally:
        if sampler is not None:
            sampler.cancel()
        for child in (viewer, publisher, relay):
            child.kill()
            if child.proc is not None:
                try:
                    await asyncio.wait_for(child.proc.wait(), 10)
                except TimeoutError:
                    pass
    if verbose:
        print(f"  {describe(out)}  [{time.monotonic() - started:.0f} s]", flush=True)
    return out


def refused(o: Outcome) -> str:
    return f" ({o.refused} refused: at capacity)" if o.refused else ""


def describe(o: Outcome) -> str:
    sc = o.scenario
    head = f"{sc.kind:7s} {sc.streams} stream(s) x {sc.viewers} viewer(s) [{sc.mode}]"
    if o.error:
        return f"{head}: FAILED {o.error}"
    return (
        f"{head}: relay CPU {o.relay_cpu:5.1f}% | latency p50 {1000 * o.pct(50):6.0f} p95 {1000 * o.pct(95):6.0f} "
        f"p99 {1000 * o.pct(99):6.0f} ms | delivered >= {100 * o.delivered_min:5.1f}% "
        f"| p95 growth {o.growth_ms:+.0f} ms | "
        f"RSS {max((r for _, r in o.rss_series), default=float('nan')):.0f} MiB | machine {o.machine_cpu:.0f}% "
        f"(publishers {o.publisher_cpu:.0f}%, viewers {o.viewer_cpu:.0f}%, "
        f"publisher late p99 {o.publisher_late_ms or 0:.0f} ms)"
        + (f" | viewer failures {len(o.viewer_failures)}" if o.viewer_failures else "")
        + " | relay threads "
        + ", ".join(f"{k} {v:.0f}%" for k, v in sorted(o.thread_cpu.items()))
        + f" | max queued: {queues(o)} | UDP drops {o.udp_drops}, "
        f"relay ingest packets lost {o.relay_stream_total('ingest_packets_lost')}"
    )


def queues(o: Outcome) -> str:
    """Most frames seen waiting in the relay: per viewer / in the decoder / decoded, not yet taken."""
    q = o.queue_max
    parts = [f"viewer {q.get('viewer_queue_max_frames', '—')}", f"decoder {q.get('decoder_backlog_frames', '—')}"]
    if "ingest_waiting_frames" in q:
        parts.append(f"ingest {q['ingest_waiting_frames']}")
    if "decoded_waiting_frames" in q:
        parts.append(f"decoded {q['decoded_waiting_frames']}")
    text = " / ".join(parts)
    if q.get("loop_lag_ms") is not None:
        text += f"; event loop late by up to {q['loop_lag_ms']:.0f} ms"
    return text


# ------------------------------------------------------------------ phases


async def phase_latency(args: Any, workdir: Path, report: dict) -> list[str]:
    print(f"\n== 1. latency: one stream, one viewer decoding every frame ({args.latency_seconds:g} s)", flush=True)
    outs = {}
    for kind in args.relays:
        outs[kind] = await run_scenario(
            scenario(args, kind, 1, 1, "full", args.warmup, args.latency_seconds), workdir, f"lat-{kind}"
        )
    buffer = _delay_buffer_ms() / 1000
    lines = [
        "### 1. End-to-end latency, 1 stream, 1 viewer "
        "(publisher hands frame N to its sender -> viewer has decoded frame N)",
        "",
        "| relay | frames | p50 ms | p95 ms | p99 ms | max ms | beyond delay buffer p50 / p95 / p99 ms "
        "| to last RTP packet p50 / p99 ms | relay-internal arrival→fan-out p50 ms | delivered | barcodes read |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for kind, o in outs.items():
        if o.error:
            lines.append(f"| {kind} | failed: {o.error.splitlines()[0]} |")
            continue
        internal = "—"
        if kind == "guarded":
            internal = "/".join(
                f"{s['relay_latency_ms']['p50']:.0f}"
                for s in o.relay_stats["streams"]
                if s["relay_latency_ms"]["p50"] is not None
            )
        beyond = " / ".join(ms(o.pct(q) - buffer) for q in (50, 95, 99)) if kind == "guarded" else "—"
        c = o.checks
        lines.append(
            f"| {kind} | {o.latencies().size} | {ms(o.pct(50))} | {ms(o.pct(95))} | {ms(o.pct(99))} "
            f"| {ms(o.pct(100))} | {beyond} "
            f"| {ms(o.pct(50, 'window_pkt'))} / {ms(o.pct(99, 'window_pkt'))} | {internal} "
            f"| {100 * o.delivered_min:.1f} % | {c['barcode_frames']}/{c['decoded']} |"
        )
    lines.append("")
    lines.append(f"Delay buffer (guard's delay_frames / 30 fps): **{1000 * buffer:.0f} ms**.")
    g, p = outs.get("guarded"), outs.get("plain")
    result: dict[str, Any] = {"delay_buffer_ms": 1000 * buffer}
    for kind, o in outs.items():
        result[kind] = None if o.error else {f"p{q}_ms": 1000 * o.pct(q) for q in (50, 95, 99)} | {"checks": o.checks}
    if g is not None and p is not None and not g.error and not p.error:
        d50 = g.pct(50) - p.pct(50) - buffer
        d99 = g.pct(99) - p.pct(99) - buffer
        lines.append(
            f"Guarded minus plain minus buffer: p50 **{1000 * d50:+.0f} ms** "
            f"(target ≤ +10: {'met' if d50 <= 0.010 else 'NOT met'}), "
            f"p99 **{1000 * d99:+.0f} ms** (target ≤ +33: {'met' if d99 <= 0.033 else 'NOT met'})."
        )
        result["guarded_minus_plain_minus_buffer_ms"] = {"p50": 1000 * d50, "p99": 1000 * d99}
    checks = [o.checks for o in outs.values() if not o.error]
    lines.append(
        "Numbering by RTP timestamp (what count viewers use later) agreed with the barcode on "
        f"{sum(c['rtp_agrees'] for c in checks)} of {sum(c['rtp_agrees'] + c['rtp_disagrees'] for c in checks)} frames."
    )
    report["latency"] = result
    return lines


async def phase_capacity(args: Any, workdir: Path, report: dict) -> tuple[list[str], dict[str, int]]:
    print(
        f"\n== 2. capacity: N streams x 1 viewer, N = 1..{args.max_streams} until not sustained "
        f"({args.capacity_seconds:g} s each)",
        flush=True,
    )
    lines = [
        "### 2. Streams sustained in real time (each with one viewer)",
        "",
        "Sustained = every viewer got ≥ 95 % of the frames published in the window, and latency p95 over the",
        "window's last third is ≤ 50 ms above its first third.",
        "",
        "| relay | streams | relay CPU % of a core | per stream | delivered (worst stream) | latency p50 / p95 ms "
        "| p95 growth ms | relay-dropped frames (whole run) | ingest RTP lost (whole run) | sustained |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    capacity: dict[str, int] = {}
    runs: dict[str, list] = {}
    for kind in args.relays:
        capacity[kind] = 0
        for n in range(1, args.max_streams + 1):
            o = await run_scenario(
                scenario(args, kind, n, 1, "count", args.warmup, args.capacity_seconds), workdir, f"cap-{kind}-{n}"
            )
            runs.setdefault(kind, []).append(o)
            if o.error:
                lines.append(f"| {kind} | {n} | failed: {o.error.splitlines()[0]} |")
                break
            dropped = o.relay_stream_total("frames_dropped") if kind == "guarded" else "—"
            lines.append(
                f"| {kind} | {n} | {o.relay_cpu:.0f} | {o.relay_cpu / n:.0f} "
                f"| {100 * o.delivered_min:.1f} %{refused(o)} | {ms(o.pct(50))} / {ms(o.pct(95))} "
                f"| {o.growth_ms:+.0f} | {dropped} | {o.relay_stream_total('ingest_packets_lost')} "
                f"| {'yes' if o.sustained else '**no**'} |"
            )
            if not o.sustained:
                break
            capacity[kind] = n
    lines.append("")
    lines.append(
        "Sustained: "
        + ", ".join(
            f"{kind} **{n}**{'+ (the most tried)' if n == args.max_streams else ''} streams"
            + (" (target ≥ 4)" if kind == "guarded" else "")
            for kind, n in capacity.items()
        )
        + "."
    )
    report["capacity"] = {
        "sustained": capacity,
        "runs": {k: [run_summary(o) for o in v] for k, v in runs.items()},
    }
    return lines, capacity


async def phase_viewers(args: Any, workdir: Path, report: dict) -> list[str]:
    plan = {"guarded": args.viewers, "plain": args.plain_viewers}
    print(
        f"\n== 3. viewers: one stream, {' / '.join(f'{k} {plan[k]}' for k in args.relays)} viewers "
        f"({args.viewers_seconds:g} s each)",
        flush=True,
    )
    lines = [
        "### 3. One stream, many viewers: relay CPU per extra viewer",
        "",
        "| relay | viewers | relay CPU % of a core | delivered (worst viewer's stream) | latency p50 / p95 ms "
        "| viewer-process CPU % | RSS MiB |",
        "|---|---|---|---|---|---|---|",
    ]
    result: dict[str, Any] = {}
    for kind in args.relays:
        points = []
        for v in plan[kind]:
            # Each joining viewer asks for a keyframe: let the joins settle a little longer with many viewers.
            warmup = args.warmup + min(4.0, 0.05 * v)
            o = await run_scenario(
                scenario(args, kind, 1, v, "count", warmup, args.viewers_seconds), workdir, f"view-{kind}-{v}"
            )
            if o.error:
                lines.append(f"| {kind} | {v} | failed: {o.error.splitlines()[0]} |")
                continue
            points.append((v, o))
            lines.append(
                f"| {kind} | {v} | {o.relay_cpu:.0f} | {100 * o.delivered_min:.1f} % "
                f"| {ms(o.pct(50))} / {ms(o.pct(95))} "
                f"| {o.viewer_cpu:.0f} | {max(r for _, r in o.rss_series):.0f} |"
            )
        kept = [(v, o) for v, o in points if o.delivered_min >= 0.95]
        slope = fit_slope([v for v, _ in kept], [o.relay_cpu for _, o in kept])
        result[kind] = {"per_viewer_cpu_pct": slope, "points": [(v, o.relay_cpu, o.delivered_min) for v, o in points]}
        saturated = [v for v, o in points if o.delivered_min < 0.95]
        note = (
            f" (runs with {', '.join(map(str, saturated))} viewers left out: < 95 % delivered, the relay was saturated)"
            if saturated
            else ""
        )
        result[kind]["note"] = note
    lines.append("")
    for kind, target in (("guarded", "target ≤ 3"), ("plain", "reference ~25–28")):
        if kind not in result:
            continue
        slope = result[kind]["per_viewer_cpu_pct"]
        lines.append(
            f"- {kind}: **{slope:.2f} % of a core per extra viewer** ({target}), "
            f"least squares over the runs that kept up{result[kind]['note']}."
        )
    report["viewers"] = result
    return lines


async def phase_overload(args: Any, workdir: Path, report: dict, capacity: dict[str, int] | None) -> list[str]:
    counts = {}
    for i, kind in enumerate(("guarded", "plain")):
        if kind not in args.relays:
            continue
        if args.overload_streams:
            counts[kind] = args.overload_streams[i]
        elif capacity is not None:
            counts[kind] = min(args.max_overload_streams, max(2, 2 * capacity[kind]))
        else:
            counts[kind] = {"guarded": 8, "plain": 6}[kind]
    print(
        f"\n== 4. overload: {' / '.join(f'{k} {n}' for k, n in counts.items())} streams ({args.overload_seconds:g} s)",
        flush=True,
    )
    buffer = _delay_buffer_ms() / 1000
    capped = [
        k for k in counts if not args.overload_streams and capacity is not None and capacity.get(k) == args.max_streams
    ]
    lines = [
        "### 4. Overload: twice the sustained stream count, each stream with one viewer",
        "",
        *(
            [
                f"Note: the capacity sweep stopped at --max-streams {args.max_streams} for {', '.join(capped)}, "
                "so 2x that may not overload it.",
                "",
            ]
            if capped
            else []
        ),
        "Latency over the frames viewers received during the window; 'last 2 s' = frames received in the",
        "window's last 2 s. Delivered = share of frames published in the window that reached the viewer",
        f"within {GRACE:g} s after it.",
        "",
        "| relay | streams | relay CPU % | latency p50 / p99 ms | p99 beyond buffer ms | last 2 s p50 ms "
        "| delivered (mean / worst) | relay-dropped frames (whole run) | ingest RTP lost (whole run) "
        "| max frames queued in relay | RSS MiB start → max → end | RSS slope MiB/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    result: dict[str, Any] = {}
    series_lines = []
    for kind in args.relays:
        o = await run_scenario(
            scenario(args, kind, counts[kind], 1, "count", 1.0, args.overload_seconds), workdir, f"over-{kind}"
        )
        if o.error:
            lines.append(f"| {kind} | {counts[kind]} | failed: {o.error.splitlines()[0]} |")
            continue
        window = [(t, r) for t, r in o.rss_series if 0 <= t <= o.window]
        rss = [r for _, r in window]
        slope = fit_slope([t for t, _ in window], rss)
        delivered = o.delivered
        beyond = ms(o.pct(99) - buffer) if kind == "guarded" else "—"
        dropped = o.relay_stream_total("frames_dropped") if kind == "guarded" else "— (never drops)"
        lines.append(
            f"| {kind} | {counts[kind]} | {o.relay_cpu:.0f} | {ms(o.pct(50))} / {ms(o.pct(99))} | {beyond} "
            f"| {ms(o.pct(50, 'end'))} "
            f"| {100 * np.mean(delivered):.0f} % / {100 * min(delivered):.0f} %{refused(o)} | {dropped} "
            f"| {o.relay_stream_total('ingest_packets_lost')} | {queues(o)} "
            f"| {rss[0]:.0f} → {max(rss):.0f} → {rss[-1]:.0f} | {slope:+.1f} |"
        )
        step = max(1, round(5 / 0.5))
        series_lines.append(f"- {kind} RSS MiB every 5 s: " + ", ".join(f"{r:.0f}" for _, r in window[::step]))
        result[kind] = run_summary(o) | {
            "rss_slope_mib_s": slope,
            "p99_beyond_buffer_ms": 1000 * (o.pct(99) - buffer) if kind == "guarded" else None,
        }
    lines.append("")
    lines.extend(series_lines)
    if "guarded" in result:
        b = result["guarded"]["p99_beyond_buffer_ms"]
        lines.append(
            f"- guarded p99 latency beyond the {1000 * buffer:.0f} ms delay buffer: **{b:.0f} ms** "
            f"(target ≤ 500: {'met' if b <= 500 else 'NOT met'})."
        )
    report["overload"] = result
    return lines


def run_summary(o: Outcome) -> dict:
    return {
        "kind": o.scenario.kind,
        "streams": o.scenario.streams,
        "viewers_per_stream": o.scenario.viewers,
        "error": o.error,
        "window_s": o.window,
        "relay_cpu_pct": o.relay_cpu,
        "publisher_cpu_pct": o.publisher_cpu,
        "viewer_cpu_pct": o.viewer_cpu,
        "machine_cpu_pct": o.machine_cpu,
        "latency_ms": {f"p{q}": 1000 * o.pct(q) for q in (50, 95, 99)},
        "latency_last_2s_p50_ms": 1000 * o.pct(50, "end"),
        "delivered_min": o.delivered_min,
        "delivered": o.delivered,
        "refused": o.refused,
        "growth_ms": o.growth_ms,
        "sustained": o.sustained,
        "rss_mib": [r for _, r in o.rss_series],
        "publisher_late_p99_ms": o.publisher_late_ms,
        "relay_stats": o.relay_stats,
        "viewer_failures": o.viewer_failures,
        "queue_max_frames": o.queue_max,
        "checks": o.checks,
        "udp_drops": o.udp_drops,
        "relay_thread_cpu_pct": o.thread_cpu,
    }


# -------------------------------------------------------------------- main


def parse_args() -> Any:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])

    def ints(text: str) -> list[int]:
        return [int(x) for x in text.split(",") if x]

    parser.add_argument(
        "--quick",
        action="store_true",
        help="short smoke run (~2-3 min): shorter windows, up to 2 streams, 1 and 8 viewers",
    )
    parser.add_argument("--phases", default=",".join(PHASES), help=f"comma-separated subset of {','.join(PHASES)}")
    parser.add_argument("--warmup", type=float, default=None, help="seconds after viewers join before measuring")
    parser.add_argument("--latency-seconds", type=float, default=None)
    parser.add_argument("--capacity-seconds", type=float, default=None)
    parser.add_argument("--max-streams", type=int, default=None, help="capacity sweep goes up to this many streams")
    parser.add_argument(
        "--viewers", type=ints, default=None, help="guarded viewer counts for phase 3 (default 1,10,50)"
    )
    parser.add_argument(
        "--plain-viewers", type=ints, default=None, help="plain viewer counts for phase 3 (default 1,2,3)"
    )
    parser.add_argument("--viewers-seconds", type=float, default=None)
    parser.add_argument("--overload-seconds", type=float, default=None)
    parser.add_argument(
        "--overload-streams", type=ints, default=None, help="GUARDED,PLAIN stream counts (default: 2x sustained)"
    )
    parser.add_argument("--max-overload-streams", type=int, default=12)
    parser.add_argument("--relays", default="plain,guarded", help="which relays to run: plain,guarded (default both)")
    parser.add_argument("--json", type=Path, default=None, help="also write every figure to this JSON file")
    parser.add_argument("--keep-logs", action="store_true", help="keep child logs and raw results")
    parser.add_argument("--no-netns-check", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--relay-switch-interval",
        type=float,
        default=None,
        help="diagnosis: sys.setswitchinterval in the relay process",
    )
    parser.add_argument(
        "--relay-renice-threads",
        type=int,
        default=None,
        help="diagnosis: nice value for every relay thread but the event loop's",
    )
    args = parser.parse_args()
    quick = args.quick
    defaults = {
        "warmup": 2.0 if quick else 4.0,
        "latency_seconds": 6.0 if quick else 20.0,
        "capacity_seconds": 5.0 if quick else 12.0,
        "max_streams": 2 if quick else 6,
        "viewers": [1, 8] if quick else [1, 10, 50],
        "plain_viewers": [1, 2] if quick else [1, 2, 3],
        "viewers_seconds": 5.0 if quick else 12.0,
        "overload_seconds": 8.0 if quick else 25.0,
    }
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    args.relays = [r.strip() for r in args.relays.split(",") if r.strip()]
    if not args.relays or set(args.relays) - {"plain", "guarded"}:
        parser.error("--relays takes plain, guarded or both")
    unknown = set(args.phases) - set(PHASES)
    if unknown:
        parser.error(f"unknown phases {sorted(unknown)}")
    if args.overload_streams and len(args.overload_streams) != 2:
        parser.error("--overload-streams takes GUARDED,PLAIN")
    return args


async def amain(args: Any) -> None:
    started = time.monotonic()
    support.build_clip(CACHE)
    workdir = Path(tempfile.mkdtemp(prefix="run-", dir=CACHE))
    load = os.getloadavg()
    print(f"{os.cpu_count()} CPUs, load average {load[0]:.2f}; child logs in {workdir}", flush=True)
    report: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "load_average_start": load[0],
        "args": {k: str(v) for k, v in vars(args).items()},
    }
    sections: list[list[str]] = []
    capacity = None
    try:
        if "latency" in args.phases:
            sections.append(await phase_latency(args, workdir, report))
        if "capacity" in args.phases:
            lines, capacity = await phase_capacity(args, workdir, report)
            sections.append(lines)
        if "viewers" in args.phases:
            sections.append(await phase_viewers(args, workdir, report))
        if "overload" in args.phases:
            sections.append(await phase_overload(args, workdir, report, capacity))
    finally:
        if not args.keep_logs:
            shutil.rmtree(workdir, ignore_errors=True)
    report["seconds"] = time.monotonic() - started
    report["load_average_end"] = os.getloadavg()[0]
    header = [
        "# bench_relay: guarded vs plain aiortc relay, 1280x720 30 fps H.264, "
        f"loopback{' (--quick)' if args.quick else ''}",
        f"{os.cpu_count()} CPUs, load average {load[0]:.2f} -> {report['load_average_end']:.2f}, "
        f"{report['seconds']:.0f} s; "
        "CPU figures are % of one core, relay process only.",
    ]
    print_report(header, sections, report, args.json)


def main() -> None:
    args = parse_args()
    ensure_private_network(__file__, allow_visible=args.no_netns_check)
    asyncio.run(amain(args))


if __name__ == "__main__":
    main()

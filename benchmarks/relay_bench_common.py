"""What the relay benchmarks' parent processes share: child processes of relay_bench_support.py,
the scenario/outcome records, and the analysis that numbers frames by barcode and RTP timestamp.

Factored out of ``bench_relay.py`` so ``bench_cluster.py`` measures latency and delivery exactly
the same way (same clip, same numbering, same "sustained" rule) on cluster nodes.
"""

from __future__ import annotations

import asyncio
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import relay_bench_support as support
from bench_common import CLK_TCK

SUPPORT = Path(support.__file__).resolve()
GRACE = 1.5  # seconds after a window for the frames published in it to arrive


# ------------------------------------------------------------- processes


def udp_drops() -> int:
    """UDP datagrams dropped for want of socket buffer, in this network namespace (all our processes)."""
    with open("/proc/net/snmp") as f:
        rows = [line.split() for line in f if line.startswith("Udp:")]
    return int(rows[1][rows[0].index("RcvbufErrors")])


def machine_busy() -> float:
    """CPU seconds the whole machine has been busy (all cores)."""
    with open("/proc/stat") as f:
        values = [int(x) for x in f.readline().split()[1:]]
    return (sum(values[:8]) - values[3] - values[4]) / CLK_TCK


class Child:
    """One child process of relay_bench_support.py: config on stdin, READY line, stop, result file."""

    def __init__(self, role: str, workdir: Path, tag: str) -> None:
        self.role = role
        self.log = workdir / f"{tag}-{role}.log"
        self.result_path = workdir / f"{tag}-{role}.json"
        self.proc: asyncio.subprocess.Process | None = None

    async def spawn(self) -> None:
        with self.log.open("w") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, str(SUPPORT), self.role,
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=log,
            )  # fmt: skip

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def configure(self, config: dict, timeout: float) -> dict:
        assert self.proc is not None and self.proc.stdin is not None and self.proc.stdout is not None
        config = {**config, "result": str(self.result_path)}
        self.proc.stdin.write((json.dumps(config) + "\n").encode())
        await self.proc.stdin.drain()
        try:
            line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        except TimeoutError:
            raise RuntimeError(f"{self.role} not ready within {timeout:.0f} s; see {self.log}") from None
        if not line.startswith(b"READY "):
            raise RuntimeError(f"{self.role} failed; see {self.log}:\n{self.tail()}")
        return json.loads(line[6:])

    async def line(self, prefix: str, timeout: float) -> dict:
        """The JSON of the child's next stdout line starting with ``prefix`` (a report it makes while running)."""
        assert self.proc is not None and self.proc.stdout is not None
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            left = deadline - asyncio.get_running_loop().time()
            try:
                line = await asyncio.wait_for(self.proc.stdout.readline(), max(0.0, left))
            except TimeoutError:
                raise RuntimeError(f"{self.role}: no {prefix} within {timeout:.0f} s; see {self.log}") from None
            if not line:
                raise RuntimeError(f"{self.role} exited before {prefix}; see {self.log}:\n{self.tail()}")
            if line.startswith(prefix.encode() + b" "):
                return json.loads(line[len(prefix) + 1 :])

    async def stop(self, timeout: float = 20.0) -> dict | None:
        if self.proc is None:
            return None
        if self.proc.returncode is None:
            try:
                self.proc.stdin.write(b"stop\n")
                await self.proc.stdin.drain()
            except (ConnectionError, RuntimeError):
                pass
            try:
                await asyncio.wait_for(self.proc.wait(), timeout)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if self.result_path.exists():
            return json.loads(self.result_path.read_text())
        return None

    def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text().splitlines()[-lines:])
        except OSError:
            return ""


# --------------------------------------------------------------- scenario


@dataclass
class Scenario:
    kind: str  # "guarded" or "plain"
    streams: int
    viewers: int  # per stream
    mode: str  # "full" or "count"
    warmup: float
    measure: float
    grace: float = GRACE
    plain_unbuffered: bool = False
    switch_interval: float | None = None
    renice_threads: int | None = None


@dataclass
class Outcome:
    scenario: Scenario
    window: float = 0.0
    relay_cpu: float = float("nan")  # % of one core over the window
    publisher_cpu: float = float("nan")
    viewer_cpu: float = float("nan")
    machine_cpu: float = float("nan")  # % of one core, whole machine (others included)
    rss_series: list[tuple[float, float]] = field(default_factory=list)  # (s since window start, MiB)
    streams: list[dict] = field(default_factory=list)  # per stream: latency and delivery
    relay_stats: dict = field(default_factory=dict)
    viewer_failures: list[str] = field(default_factory=list)
    publisher_late_ms: float | None = None
    checks: dict = field(default_factory=dict)  # barcode vs RTP numbering (full viewers)
    queue_max: dict = field(
        default_factory=dict
    )  # relay-internal queue depths, max over the window (polled each second)
    error: str | None = None
    udp_drops: int = 0  # datagrams dropped on full socket buffers during the window (any process)
    thread_cpu: dict = field(default_factory=dict)  # relay CPU % of a core by kind of thread, over the window
    refused: int = 0  # streams the relay turned away (503, admission control): delivered nothing

    def latencies(self, key: str = "window") -> np.ndarray:
        return np.concatenate([np.asarray(s[key], float) for s in self.streams]) if self.streams else np.zeros(0)

    def pct(self, q: float, key: str = "window") -> float:
        values = self.latencies(key)
        return float(np.percentile(values, q)) if values.size else float("nan")

    @property
    def delivered(self) -> list[float]:
        """Per stream offered, refused ones included (as 0)."""
        return [s["delivered"] for s in self.streams] + [0.0] * self.refused

    @property
    def delivered_min(self) -> float:
        return min(self.delivered, default=0.0)

    @property
    def growth_ms(self) -> float:
        return max((s["growth_ms"] for s in self.streams), default=float("nan"))

    @property
    def sustained(self) -> bool:
        return (
            self.error is None
            and not self.viewer_failures
            and len(self.streams) == self.scenario.streams
            and self.delivered_min >= 0.95
            and self.growth_ms <= 50
        )

    def relay_stream_total(self, key: str) -> int:
        return sum(int(s.get(key) or 0) for s in self.relay_stats.get("streams", []))


def analyze(out: Outcome, pubs: dict, views: dict, w0: float, w1: float) -> None:
    """Number every frame each viewer got, and measure latency and delivery per stream."""
    L = support.CLIP_FRAMES
    late = [p["late_ms"]["p99"] for p in pubs.values() if p["late_ms"]["p99"] is not None]
    out.publisher_late_ms = max(late, default=None)
    agree = disagree = barcode_frames = decoded = lost = packets = incomplete = 0
    per_stream: dict[str, dict] = {}
    nan = float("nan")
    for v in views["viewers"]:
        pub = pubs.get(v["stream"])
        if pub is None:
            continue
        first, sent = pub["first_seq"], np.asarray(pub["sent"], float)
        t_pkt = np.asarray([nan if x is None else x for x in v["t_pkt"]], float)
        t_dec = np.asarray([nan if x is None else x for x in v["t_dec"]], float)
        arrival = t_dec if v["full"] else t_pkt  # full viewers: the decoded picture; light: the last packet
        ts, index, key, complete = v["ts"], v["index"], v["key"], v["complete"]
        lost += v["lost_packets"]
        packets += v["packets"]

        def by_barcode(b: int, t: float, first: int = first, sent: np.ndarray = sent) -> int | None:
            seq = first + (b - first) % L  # the earliest frame number that shows clip frame b
            best = None
            while seq - first < len(sent) and sent[seq - first] <= t + 0.002:
                best, seq = seq, seq + L
            return best

        bars = [by_barcode(b, arrival[i]) if b >= 0 and arrival[i] == arrival[i] else None for i, b in enumerate(index)]
        first_anchor = next(((seq, ts[i]) for i, seq in enumerate(bars) if seq is not None), None)
        anchor: tuple[int, int] | None = None  # (frame number, RTP timestamp) of the last barcode read
        seqs: list[int | None] = []
        for i in range(len(ts)):
            decoded += t_dec[i] == t_dec[i]
            ref = anchor or first_anchor
            from_rtp = ref[0] + round((ts[i] - ref[1]) / support.TICKS) if ref is not None else None
            if not complete[i]:
                incomplete += 1
                seqs.append(None)
            elif bars[i] is not None:
                barcode_frames += 1
                if anchor is not None:
                    agree += from_rtp == bars[i]
                    disagree += from_rtp != bars[i]
                anchor = (bars[i], ts[i])
                seqs.append(bars[i])
            elif key[i] or v["full"]:
                seqs.append(None)  # decoded but no barcode read (slate, corrupt picture): not a clip frame
            else:
                seqs.append(from_rtp)
        s = per_stream.setdefault(
            v["stream"], {"lat": [], "lat_pkt": [], "arr": [], "got": [], "sent": sent, "first": first, "bad": 0}
        )
        got: set[int] = set()
        s["got"].append(got)
        for i, seq in enumerate(seqs):
            if seq is None or not 0 <= seq - first < len(sent) or arrival[i] != arrival[i]:
                s["bad"] += seq is not None
                continue
            lat = arrival[i] - sent[seq - first]
            if lat < -0.002:
                s["bad"] += 1
                continue
            got.add(seq)
            s["lat"].append(lat)
            s["lat_pkt"].append(t_pkt[i] - sent[seq - first])
            s["arr"].append(arrival[i])
    out.checks = {
        "barcode_frames": barcode_frames, "decoded": decoded, "rtp_agrees": agree, "rtp_disagrees": disagree,
        "lost_packets": lost, "packets": packets, "incomplete_frames": incomplete,
    }  # fmt: skip
    third = (w1 - w0) / 3
    for name, s in sorted(per_stream.items()):
        lat, lat_pkt, arr, sent, first = (
            np.asarray(s["lat"]),
            np.asarray(s["lat_pkt"]),
            np.asarray(s["arr"]),
            s["sent"],
            s["first"],
        )
        in_window = (arr >= w0) & (arr <= w1)
        early, late_ = in_window & (arr < w0 + third), in_window & (arr >= w1 - third)
        published = [first + k for k in np.nonzero((sent >= w0) & (sent <= w1))[0]]
        got = min(sum(seq in viewer for seq in published) for viewer in s["got"])  # the worst viewer of the stream

        def p95(m: np.ndarray, lat: np.ndarray = lat) -> float:
            return float(np.percentile(lat[m], 95)) if m.any() else float("inf")

        end = in_window & (arr >= w1 - 2)
        out.streams.append(
            {
                "stream": name,
                "window": lat[in_window].tolist(),
                "window_pkt": lat_pkt[in_window].tolist(),
                "end": lat[end].tolist(),
                "received_fps": float(in_window.sum() / (w1 - w0)),
                "delivered": got / len(published) if published else 0.0,
                "published": len(published),
                "growth_ms": 1000 * (p95(late_) - p95(early)),
                "mislabelled": s["bad"],
            }
        )


def ms(x: float) -> str:
    return "—" if math.isnan(x) else f"{1000 * x:.0f}"


def fit_slope(xs: list[float], ys: list[float]) -> float:
    if len(xs) < 2:
        return float("nan")
    return float(np.polyfit(np.asarray(xs, float), np.asarray(ys, float), 1)[0])

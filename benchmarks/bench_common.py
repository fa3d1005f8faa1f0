"""What the benchmark scripts share: running confined to loopback, reading a process's CPU, printing the report."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def proc_cpu_rss(pid: int) -> tuple[float, float]:
    """(CPU seconds user+system, RSS MiB) of process ``pid`` (all its threads); NaN if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        with open(f"/proc/{pid}/statm") as f:
            rss_pages = int(f.read().split()[1])
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return float("nan"), float("nan")
    return (int(fields[11]) + int(fields[12])) / CLK_TCK, rss_pages * PAGE / 2**20


def _interfaces() -> set[str]:
    # /proc/net/dev belongs to this process's network namespace (/sys/class/net may not).
    with open("/proc/net/dev") as f:
        return {line.split(":", 1)[0].strip() for line in f.readlines()[2:]}


def ensure_private_network(script: str, *, allow_visible: bool = False) -> None:
    """Make sure only loopback is visible: re-run ``script`` under ``unshare --net`` as root, or stop.

    ``allow_visible``: carry on with a warning instead (ICE is confined to 127.0.0.1 anyway).
    """
    interfaces = _interfaces()
    if interfaces == {"lo"}:
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
        return
    if allow_visible:
        print(f"warning: network interfaces {sorted(interfaces)} are visible; ICE still uses 127.0.0.1 only")
        return
    if (
        os.environ.get("LIVESAFE_BENCH_NETNS") != "1"
        and os.geteuid() == 0
        and shutil.which("unshare")
        and shutil.which("ip")
    ):
        print("re-running inside a private network namespace (unshare --net, loopback only)", flush=True)
        os.environ["LIVESAFE_BENCH_NETNS"] = "1"
        os.execvp("unshare", ["unshare", "--net", "sh", "-c", 'ip link set lo up && exec "$0" "$@"',
                              sys.executable, str(Path(script).resolve()), *sys.argv[1:]])  # fmt: skip
    sys.exit(f"network interfaces {sorted(interfaces)} are visible: "
             "run inside a private network namespace with loopback only, e.g.\n"
             f"  unshare --net sh -c 'ip link set lo up && python benchmarks/{Path(script).name}'")  # fmt: skip


def print_report(header: list[str], sections: list[list[str]], report: dict[str, Any], json_path: Path | None) -> None:
    """The header lines, each section's lines (a blank line between), and the figures as JSON if asked."""
    print()
    print("\n".join(header))
    for lines in sections:
        print()
        print("\n".join(lines))
    if json_path:
        json_path.write_text(json.dumps(report, indent=1, default=str))
        print(f"\nJSON: {json_path}")

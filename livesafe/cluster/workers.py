"""``livesafe serve --workers N``: every core of one machine, as N cluster nodes behind one public port.

One Python process guards streams on one event loop plus a thread per stream,
and the GIL keeps most of that work on one core at a time.  The cluster layer
already spreads streams over processes, so a machine's cores are used by
running several nodes on it:

- A supervisor (this module, no relay of its own) starts N copies of the same
  ``livesafe serve`` command line, each told its slot (``--worker-index I``):
  node ``NODE-I`` (NODE: ``--node``, ``[cluster] node_name`` or the host name),
  listening on the public port with ``SO_REUSEPORT`` (the kernel spreads new
  connections over the workers) and on a port of its own, public + 1 + I,
  which it advertises: sessions, placement's hand-offs and the nodes' requests
  of each other must reach one exact process.  Through the public port every
  WHIP and WHEP offer is answered from a worker's own port, with the session's
  ``Location`` there (see ``ClusterNode.hand_off``).
- Coordination is the cluster's: the configured Redis if there is one, else a
  private ``redis-server`` the supervisor starts on a unix socket in a private
  directory (no TCP port, no persistence), with a cluster secret it generates
  and hands to the workers in their environment (never on a command line).
- Each worker keeps its own SQLite file (``livesafe.db`` -> ``livesafe-I.db``):
  SQLite takes one writer at a time, and each node's outbox (webhook
  deliveries not yet made) must be that node's alone to drain.  A restarted
  worker reopens the same file, so nothing it recorded or still owes is lost.
- Each worker admits streams against its share of the cores
  (``max_cpu_fraction / N``), so N workers together stay within the
  machine's budget; placement sends a stream to the worker with room.
- The supervisor forwards SIGINT (stop) and SIGTERM (drain) to the workers,
  restarts a worker that dies (backoff, at most ``MAX_FAILURES`` failed starts
  in a row), stops everything if a worker cannot start the first time (its one
  error line is shown once, exit 2), and stops its private Redis last.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlsplit

from livesafe.cluster.settings import ClusterSettings
from livesafe.config import Config

READY_LINE = "livesafe: relay on "  # what a worker prints once it listens (the supervisor waits for it)
ERROR_LINE = "livesafe: error: "
MAX_FAILURES = 5  # failed starts in a row before the supervisor gives up
STABLE_SECONDS = 10.0  # a worker that ran this long and died is restarted as if for the first time
_BACKOFF_SECONDS = (0.5, 1.0, 2.0, 4.0, 8.0)
_STOP_MARGIN_SECONDS = 15.0  # past the drain: how long workers may take to exit before they are killed
_EXIT_ERROR = 2


class WorkersError(ValueError):
    """Workers cannot run as asked (a one-line error, exit 2)."""


def resolve_workers(flag: str | None, configured: int) -> int:
    """``--workers N|auto`` over ``[server] workers``; ``auto`` is one per core."""
    if flag is None:
        return configured
    if flag == "auto":
        return os.cpu_count() or 1
    try:
        count = int(flag)
    except ValueError:
        raise WorkersError(f"--workers {flag!r}: expected a number of processes or 'auto'") from None
    if count < 1:
        raise WorkersError(f"--workers {count}: expected at least 1")
    return count


def check_ports(public_port: int, count: int) -> None:
    """Workers use ``public_port`` and the ``count`` ports after it; all must be real, fixed ports."""
    if public_port == 0:
        raise WorkersError("--workers needs a fixed --port (each worker listens on port + 1 + its index)")
    if public_port + count > 65535:
        raise WorkersError(
            f"--workers {count} with --port {public_port}: the workers' ports {public_port + 1}-"
            f"{public_port + count} go past 65535"
        )


@dataclass(frozen=True)
class WorkerSlot:
    """Worker ``index`` of ``count`` behind ``public_port``: its name, port, database and share of the CPU."""

    index: int
    count: int
    public_port: int

    def __post_init__(self) -> None:
        if not 0 <= self.index < self.count:
            raise WorkersError(f"--worker-index {self.index}: expected 0..{self.count - 1}")
        check_ports(self.public_port, self.count)

    @property
    def port(self) -> int:
        return self.public_port + 1 + self.index

    def database(self, path: str) -> str:
        if path == ":memory:":
            return path
        file = Path(path)
        return str(file.with_name(f"{file.stem}-{self.index}{file.suffix}"))

    def cluster(self, settings: ClusterSettings) -> ClusterSettings:
        """The node's name and advertised URL: ``NODE-I`` at the advertised host (if any) on its own port."""
        advertise = settings.advertise_url
        if advertise:
            parts = urlsplit(advertise)
            host = f"[{parts.hostname}]" if parts.hostname and ":" in parts.hostname else parts.hostname
            advertise = f"{parts.scheme}://{host}:{self.port}"
        return replace(settings, node_name=f"{settings.node_name}-{self.index}", advertise_url=advertise)

    def config(self, config: Config, cluster: ClusterSettings) -> Config:
        relay = config.relay
        overload = replace(relay.overload, max_cpu_fraction=relay.overload.max_cpu_fraction / self.count)
        return replace(
            config,
            relay=replace(relay, port=self.port, overload=overload),
            moderation=replace(config.moderation, database=self.database(config.moderation.database)),
            cluster=self.cluster(cluster),
        )


def _die_with_parent() -> None:
    """In a child before exec: get SIGTERM if the supervisor dies (even by SIGKILL), so nothing is orphaned."""
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


class PrivateRedis:
    """A ``redis-server`` for this machine's workers only: a unix socket in a 0700 directory, no persistence."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise WorkersError(
                "--workers needs Redis to coordinate the workers: install redis-server "
                "(Debian: apt-get install redis-server) or pass --redis URL"
            )
        self._binary = binary
        self._dir = Path(tempfile.mkdtemp(prefix="livesafe-redis-"))  # mode 0700: only this user reaches it
        self.socket = self._dir / "redis.sock"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def start(self, timeout: float = 10.0) -> None:
        args = [self._binary, "--port", "0", "--unixsocket", str(self.socket), "--unixsocketperm", "700"]
        args += ["--save", "", "--appendonly", "no", "--dir", str(self._dir), "--daemonize", "no"]
        args += ["--loglevel", "warning", "--logfile", str(self._dir / "redis.log")]
        self._process = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, preexec_fn=_die_with_parent, process_group=0
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                break
            if self._answers():
                return
            time.sleep(0.05)
        log = (self._dir / "redis.log").read_text(errors="replace").strip().splitlines()
        self.stop()
        raise WorkersError(f"the private redis-server did not start: {log[-1] if log else 'no output'}")

    def _answers(self) -> bool:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(0.5)
                sock.connect(str(self.socket))
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
        shutil.rmtree(self._dir, ignore_errors=True)


@dataclass
class _Worker:
    index: int
    name: str
    process: asyncio.subprocess.Process | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)


class Supervisor:
    """Runs and keeps running the workers of one ``serve --workers N`` (see the module docstring)."""

    def __init__(
        self,
        serve_argv: Sequence[str],
        names: Sequence[str],
        *,
        public_url: str,
        public_port: int,
        redis: PrivateRedis | None,
        drain_seconds: float,
    ) -> None:
        """``serve_argv``: the user's ``serve ...`` arguments, repeated to each worker with its slot."""
        self._argv = list(serve_argv)
        self._public_url = public_url
        self._public_port = public_port
        self._workers = [_Worker(i, name) for i, name in enumerate(names)]
        self._redis = redis
        self._drain_seconds = drain_seconds
        self._env = dict(os.environ)
        if redis is not None:  # the private Redis' cluster: a secret nobody else ever sees
            self._env[ClusterSettings.SECRET_ENV] = secrets.token_urlsafe(32)
        self._stopping: int | None = None  # the signal we are stopping on
        self._stop = asyncio.Event()
        self._failure: str | None = None

    def _command(self, worker: _Worker) -> list[str]:
        command = [sys.executable, "-m", "livesafe.cli", *self._argv, "--worker-index", str(worker.index)]
        return command + (["--redis", self._redis.url] if self._redis is not None else [])

    async def run(self) -> int:
        """Until SIGINT/SIGTERM (0) or a worker that cannot be (re)started (2, its error printed once)."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_signal, sig)
        loop.add_signal_handler(signal.SIGHUP, self._reload)
        keepers = [asyncio.ensure_future(self._keep(w)) for w in self._workers]
        all_ready = asyncio.ensure_future(self._all_ready())
        stopped = asyncio.ensure_future(self._stop.wait())
        await asyncio.wait([all_ready, stopped], return_when=asyncio.FIRST_COMPLETED)
        if all_ready.done() and not self._stop.is_set():
            self._announce_ready()
        await stopped
        all_ready.cancel()
        await self._shut_down(keepers)
        if self._failure is not None:
            print(f"{ERROR_LINE}{self._failure}", file=sys.stderr)
            return _EXIT_ERROR
        return 0

    async def _all_ready(self) -> None:
        for worker in self._workers:
            await worker.ready.wait()

    def _announce_ready(self) -> None:
        listed = ", ".join(f"{w.name} on {self._public_port + 1 + w.index}" for w in self._workers)
        where = "a private redis-server" if self._redis is not None else "the cluster's Redis"
        print(
            f"{READY_LINE}{self._public_url} -- {len(self._workers)} workers ({listed}), coordinated through {where}",
            file=sys.stderr,
        )

    def _on_signal(self, sig: int) -> None:
        if self._stopping is None:
            self._stopping = sig
        for worker in self._workers:
            if worker.process is not None and worker.process.returncode is None:
                worker.process.send_signal(sig)  # SIGTERM: drain; SIGINT: stop now (again: hurry up)
        self._stop.set()

    def _reload(self) -> None:
        """SIGHUP: each worker reloads its config (``livesafe.reload``); one started later reads it at start."""
        for worker in self._workers:
            if worker.process is not None and worker.process.returncode is None:
                worker.process.send_signal(signal.SIGHUP)

    def _fail(self, reason: str) -> None:
        if self._failure is None and self._stopping is None:
            self._failure = reason
            self._on_signal(signal.SIGINT)

    async def _keep(self, worker: _Worker) -> None:
        """Run ``worker``; restart it when it dies, with backoff, while the supervisor is not stopping."""
        failures, first = 0, True
        while not self._stop.is_set():
            started = time.monotonic()
            worker.process = await asyncio.create_subprocess_exec(
                *self._command(worker),
                stdin=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                env=self._env,
                preexec_fn=_die_with_parent,
                process_group=0,  # signals come from us, once, not also from the terminal
            )
            if self._stopping is not None:  # the signal came while it was being started
                worker.process.send_signal(self._stopping)
            was_ready, last_error = await self._follow(worker, worker.process)
            code = await worker.process.wait()
            if self._stop.is_set():
                return
            if first and not was_ready and code == _EXIT_ERROR:
                self._fail(last_error or f"worker {worker.name} exited with code {code}")
                return
            first = False
            failures = 0 if was_ready and time.monotonic() - started >= STABLE_SECONDS else failures + 1
            how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
            if failures >= MAX_FAILURES:
                self._fail(f"worker {worker.name} failed {failures} times in a row ({how}); last: {last_error}")
                return
            delay = _BACKOFF_SECONDS[min(max(failures - 1, 0), len(_BACKOFF_SECONDS) - 1)]
            detail = f": {last_error}" if last_error and not was_ready else ""
            print(f"livesafe: worker {worker.name} stopped ({how}){detail}; restarting in {delay:g} s", file=sys.stderr)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)

    async def _follow(self, worker: _Worker, process: asyncio.subprocess.Process) -> tuple[bool, str]:
        """Pass the worker's lines on (named) once it is ready; until then keep them, to show one error."""
        assert process.stderr is not None
        ready, kept, last_error = False, [], ""
        async for raw in process.stderr:
            line = raw.decode(errors="replace").rstrip("\n")
            if line.startswith(ERROR_LINE):
                last_error = line.removeprefix(ERROR_LINE)
            if not ready:
                kept.append(line)
                if not line.startswith(READY_LINE):
                    continue
                ready = True
                worker.ready.set()
                for held in kept:
                    self._show(worker, held)
                continue
            self._show(worker, line)
        if not ready and not last_error and kept:
            last_error = kept[-1]
        return ready, last_error

    def _show(self, worker: _Worker, line: str) -> None:
        print(f"livesafe: {worker.name}: {line.removeprefix('livesafe: ')}", file=sys.stderr)

    async def _shut_down(self, keepers: Sequence[asyncio.Future[None]]) -> None:
        """Wait for the workers (a drain may take ``drain_seconds``); kill stragglers."""
        timeout = (self._drain_seconds if self._stopping == signal.SIGTERM else 0) + _STOP_MARGIN_SECONDS
        _, pending = await asyncio.wait(keepers, timeout=timeout)
        for worker in self._workers:
            if worker.process is not None and worker.process.returncode is None:
                print(f"livesafe: worker {worker.name} did not stop in time; killing it", file=sys.stderr)
                worker.process.kill()
        if pending:
            await asyncio.wait(pending, timeout=5)

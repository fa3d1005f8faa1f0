"""``livesafe`` command line: serve | demo | publish | watch | scan | hash | bank.

Errors a user can fix (unreadable input, bad list line, bad config) print one
line ``livesafe: error: ...`` and exit 2 -- never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import logging
import os
import signal
import socket
import sqlite3
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TextIO

import cv2
from aiohttp import web

from livesafe.banks.cli import add_bank_parser
from livesafe.banks.store import BankStore
from livesafe.cli_help import ERROR, INTERRUPTED, add_command, epilog
from livesafe.clients import ClientError, publish, watch, webrtc_h264_copy
from livesafe.cluster.node import listen_url
from livesafe.cluster.nodes import NodeNameTaken, RegistryUnavailable, SecretMismatch
from livesafe.cluster.settings import NODE_NAME, ClusterSettings
from livesafe.cluster.workers import (
    READY_LINE,
    PrivateRedis,
    Supervisor,
    WorkersError,
    WorkerSlot,
    check_ports,
    resolve_workers,
)
from livesafe.config import Config, ConfigError, load_config
from livesafe.guard.matcher import LiveMatcher
from livesafe.listeners import listen_admin
from livesafe.lists import BlocklistError, ListSpec
from livesafe.lists.live import ListWatcher
from livesafe.lists.sources import SourceContext, SourceState
from livesafe.moderation.api import open_access
from livesafe.moderation.settings import WebhookEndpoint
from livesafe.proxy import ADMIN_PORT_IN_CLUSTER, build_proxy
from livesafe.relay.ice import IceSettings
from livesafe.relay.registry import Relay
from livesafe.relay.settings import StreamAccess
from livesafe.reload import ConfigReload
from livesafe.samples import BLOCKLIST, demo_clip
from livesafe.scan import ScanError, ScanResult, open_video, progress_stream, sample_frames, scan_file
from livesafe.signals import SIGNALS, RegionHashes, SignalType, signal_named
from livesafe.signals.pdq import luma_from_rgb

EXIT_CLEAN, EXIT_MATCHED, EXIT_ERROR = 0, 1, 2
EXIT_INCOMPLETE = 3  # scan: nothing matched in the part checked, but part of the file was not checked
SCAN_INCOMPLETE = "scan.incomplete"  # the --events line saying so
_SCAN_EXITS = (
    (EXIT_CLEAN, "clean: the whole file was checked and nothing matched"),
    (EXIT_MATCHED, "something matched (even if part of the file could not be checked)"),
    (EXIT_ERROR, "error: bad input, lists or config (one line livesafe: error: ...), or the check itself failed"),
    (
        EXIT_INCOMPLETE,
        "nothing matched in what was checked, but part of the file was not checked\n"
        "(cut short or damaged): do not call it clean",
    ),
)
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm"}


class UsageError(Exception):
    pass


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # what --workers repeats to each worker
    logging.basicConfig(level=logging.WARNING, format="livesafe: %(levelname)s: %(message)s")
    try:
        return int(args.run(args))
    except (UsageError, ScanError, ConfigError, BlocklistError, WorkersError, ValueError) as exc:
        print(f"livesafe: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="livesafe",
        description="Live-stream safety proxy: hash-match video against blocklists.",
        epilog=epilog(
            [
                (EXIT_CLEAN, "success (scan: clean)"),
                (EXIT_MATCHED, "scan: something matched"),
                ERROR,
                (EXIT_INCOMPLETE, "scan: nothing matched, but part of the file was not checked"),
                INTERRUPTED,
            ],
            [
                "livesafe demo                       # the relay and a sample stream; prints a URL to watch",
                "livesafe serve --config livesafe.toml",
                "livesafe scan clip.mp4 --blocklist my.list",
                "livesafe COMMAND --help             # each command's options, exit statuses, examples",
            ],
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    scan = add_command(
        sub,
        "scan",
        "check a video file; optionally write a redacted copy",
        _SCAN_EXITS,
        [
            "livesafe scan clip.mp4 --blocklist sample_streams/blocklist.txt",
            "livesafe scan clip.mp4 --config livesafe.toml --output redacted.mp4 --events events.jsonl",
            "livesafe scan clip.mp4 --blocklist my.list --events - | jq .type   # events as JSON lines on stdout",
        ],
    )
    scan.add_argument("input", type=Path)
    scan.add_argument(
        "--blocklist", type=Path, action="append", default=[], metavar="FILE", help="list file (repeatable)"
    )
    scan.add_argument("--action", choices=["blur", "slate"], help="action for --blocklist lists (default blur)")
    scan.add_argument("--category", default="test", help="category for --blocklist lists")
    scan.add_argument("--output", type=Path, help="write the redacted video here")
    scan.add_argument("--events", type=Path, help="write events as JSON lines here ('-' for stdout)")
    scan.add_argument("--config", type=Path, help="TOML settings and lists")
    scan.add_argument("--skip-bad-lines", action="store_true", help="load lists without their bad lines (counted)")
    scan.set_defaults(run=_run_scan)

    serve = add_command(
        sub,
        "serve",
        "run the relay: WHIP in, guarded WHEP out",
        [
            (EXIT_CLEAN, "stopped by SIGINT or SIGTERM (on SIGTERM a cluster node drains first)"),
            (
                EXIT_ERROR,
                "error: bad config or lists, a port in use, an unusable event store, the cluster\n"
                "refused this node, or (--workers) a worker could not be started or kept running",
            ),
            (130, "interrupted (Ctrl-C) before the relay was listening"),
        ],
        [
            "livesafe serve --config livesafe.toml",
            "livesafe serve --blocklist my.list --stream-key studio=KEY --port 8080",
            "LIVESAFE_CLUSTER_SECRET=... livesafe serve --config livesafe.toml --redis redis://10.0.0.2:6379/0",
            "livesafe serve --config livesafe.toml --workers auto",
        ],
    )
    _relay_options(serve)
    serve.add_argument(
        "--stream-key",
        action="append",
        default=[],
        metavar="STREAM=KEY",
        help="allow publishing STREAM with bearer token KEY (repeatable; prefer key_env in --config: "
        "command lines are visible to other users)",
    )
    serve.add_argument("--redis", metavar="URL", help="join a cluster through this Redis ([cluster] redis_url)")
    serve.add_argument("--node", metavar="NAME", help="this node's name in the cluster (default: the host name)")
    serve.add_argument("--advertise", metavar="URL", help="how publishers and other nodes reach this node")
    serve.add_argument(
        "--workers",
        metavar="N|auto",
        help="run N processes ('auto': one per core) behind --port, each a cluster node; worker I also "
        "listens on port + 1 + I (open those too); coordinated through --redis, else a private "
        "redis-server ([server] workers; default 1)",
    )
    serve.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)  # set by --workers for each worker
    serve.set_defaults(run=_run_serve)

    demo = add_command(
        sub,
        "demo",
        "the relay plus a sample stream published on a loop; prints a URL to watch",
        [
            (EXIT_CLEAN, "stopped (Ctrl-C or SIGTERM)"),
            (EXIT_ERROR, "error: a sample that cannot be read, bad config or lists, a port in use"),
            (130, "interrupted (Ctrl-C) before the relay was listening"),
        ],
        [
            "livesafe demo                      # the sample shipped with livesafe, from any directory",
            "livesafe demo --port 8090 --sample my-clip.mp4 --blocklist my.list",
        ],
    )
    _relay_options(demo)
    demo.add_argument(
        "--sample",
        type=Path,
        help="video to publish (default: the sample shipped with livesafe; a blocklist.txt beside it is used "
        "when no other list is given)",
    )
    demo.add_argument("--stream", default="demo", help="stream name")
    demo.add_argument("--workers", help=argparse.SUPPRESS)  # refused with a word on what runs several
    demo.set_defaults(run=_run_demo)

    publish = add_command(
        sub,
        "publish",
        "publish a video file over WHIP at real-time pace",
        [
            (EXIT_CLEAN, "published to the file's end (or for --duration)"),
            (EXIT_ERROR, "error: no such file, refused (401/403), no answer, the session failed (after --retry)"),
            INTERRUPTED,
        ],
        [
            "livesafe publish clip.mp4 http://127.0.0.1:8080/whip/studio --token KEY",
            "LIVESAFE_TOKEN=KEY livesafe publish clip.mp4 https://relay.example.com/whip/studio --loop --retry 5",
        ],
    )
    publish.add_argument("file", type=Path)
    publish.add_argument("url", help="WHIP endpoint, e.g. http://127.0.0.1:8080/whip/studio")
    publish.add_argument("--token", help="stream key (or set LIVESAFE_TOKEN)")
    publish.add_argument("--loop", action="store_true", help="repeat the file until interrupted")
    publish.add_argument("--duration", type=float, metavar="SECONDS", help="stop after this long")
    publish.add_argument("--codec", choices=["vp8", "h264"], help="video codec to offer (default: both, VP8 first)")
    publish.add_argument(
        "--passthrough",
        action="store_true",
        help="send the file's H.264 packets without re-encoding (needs H.264 without B-frames)",
    )
    publish.add_argument(
        "--retry",
        type=int,
        default=0,
        metavar="N",
        help="if the server does not answer, answers 5xx/429, or the session drops: start again, up to N times",
    )
    _ice_option(publish)
    publish.set_defaults(run=_run_publish)

    watch = add_command(
        sub,
        "watch",
        "watch a stream over WHEP; optionally record exactly what arrives",
        [
            (EXIT_CLEAN, "watched for --duration, or until the stream ended"),
            (EXIT_ERROR, "error: refused (401/403), not live (404), no answer, the session failed"),
            INTERRUPTED,
        ],
        [
            "livesafe watch http://127.0.0.1:8080/whep/demo --record out.mkv --duration 10",
            "livesafe watch https://relay.example.com/whep/studio --token VIEWER_TOKEN --duration 60",
        ],
    )
    watch.add_argument("url", help="WHEP endpoint, e.g. http://127.0.0.1:8080/whep/studio")
    watch.add_argument("--token", help="viewer token (or set LIVESAFE_TOKEN)")
    watch.add_argument("--record", type=Path, metavar="OUT.mkv", help="lossless recording with the stream's timestamps")
    watch.add_argument("--duration", type=float, metavar="SECONDS", help="stop after this long")
    _ice_option(watch)
    watch.set_defaults(run=_run_watch)

    hash_ = add_command(
        sub,
        "hash",
        "print blocklist lines for images or sampled video frames",
        [
            (EXIT_CLEAN, "lines printed (a picture too flat to hash is said on stderr and skipped)"),
            (EXIT_ERROR, "error: no such file, not an image or video, a bad --every"),
        ],
        [
            "livesafe hash photo.jpg >> my.list",
            "livesafe hash clip.mp4 --every 0.5 --signal phash",
        ],
    )
    hash_.add_argument("files", type=Path, nargs="+")
    hash_.add_argument("--signal", default="pdq", choices=sorted(SIGNALS))
    hash_.add_argument(
        "--every",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="video: one hash per this many seconds, and one at each cut between (default 1)",
    )
    hash_.set_defaults(run=_run_hash)
    add_bank_parser(sub)
    return parser


def _version() -> str:
    """The installed distribution's version (its metadata, so it cannot drift from pyproject.toml)."""
    try:
        return importlib.metadata.version("livesafe")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "(not installed: no package metadata)"


def _relay_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="TOML settings, lists, stream keys")
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to listen on (default 8080)")
    parser.add_argument(
        "--admin-port",
        type=int,
        help="serve /metrics, /dashboard and the moderation API only on this port ([server] admin_port; "
        "on --host unless [server] admin_host); the main port then answers 404 for them",
    )
    parser.add_argument(
        "--blocklist", type=Path, action="append", default=[], metavar="FILE", help="list file (repeatable)"
    )
    parser.add_argument("--action", choices=["blur", "slate"], help="action for --blocklist lists (default blur)")
    parser.add_argument("--category", default="test", help="category for --blocklist lists")
    parser.add_argument("--skip-bad-lines", action="store_true", help="load lists without their bad lines (counted)")
    parser.add_argument("--db", type=Path, metavar="FILE", help="event store (SQLite; default livesafe.db)")
    parser.add_argument("--webhook-url", metavar="URL", help="send signed events here (Standard Webhooks)")
    parser.add_argument(
        "--webhook-secret",
        metavar="SECRET",
        help="its signing secret (or set LIVESAFE_WEBHOOK_SECRET, which keeps it out of the process list)",
    )
    _ice_option(parser)


def _ice_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ice-host",
        action="append",
        default=[],
        metavar="ADDR",
        help="gather ICE host candidates only on this address (repeatable), e.g. 127.0.0.1",
    )


def _ice_settings(args: argparse.Namespace, base: IceSettings | None = None) -> IceSettings:
    base = base or IceSettings()
    return replace(base, host_addresses=tuple(args.ice_host)) if args.ice_host else base


def _config_with_lists(args: argparse.Namespace, default_lists: Sequence[ListSpec] = ()) -> Config:
    """--config plus --blocklist lists (``default_lists`` if there are neither); at least one list."""
    config = load_config(args.config)
    extra = [ListSpec(path=p, category=args.category, action=args.action or "blur") for p in args.blocklist]
    config = config.with_lists(extra or ([] if config.lists else list(default_lists)))
    if not config.lists:
        raise UsageError("no blocklist given (use --blocklist FILE or lists in --config)")
    return config


def _load_lists(
    args: argparse.Namespace, config: Config, state_database: str = ":memory:", bank_database: str | None = None
) -> LiveMatcher:
    """The lists, fetched; sources keep checkpoints and last good copies in ``state_database`` (the event store).

    Bank lists read the banks in ``bank_database`` (the event store; None: no banks).
    """
    try:
        state = SourceState(state_database)
        banks = BankStore(bank_database) if bank_database is not None else None
    except (sqlite3.Error, OSError) as exc:  # not a database, or a directory we cannot create
        raise UsageError(f"event store {bank_database or state_database}: {exc}") from None
    lists = LiveMatcher(
        config.lists,
        skip_bad_lines=args.skip_bad_lines or config.skip_bad_lines,
        context=SourceContext(state=state, banks=banks, env=os.environ),
        reload_seconds=config.reload_seconds,
    )
    for bl in lists.current.blocklists:
        if bl.skipped:
            print(
                f"livesafe: warning: list {bl.spec.name!r}: skipped {bl.skipped} bad line(s), first: {bl.errors[0]}",
                file=sys.stderr,
            )
    return lists


@dataclass(frozen=True)
class _ConfigFile:
    """How ``serve``/``demo`` read their settings, so that ``SIGHUP`` reads them again the same way."""

    load: Callable[[], Config]  # raises ConfigError (or BlocklistError, OSError) if they are not usable
    loaded: Config  # what ``load`` returned at start
    where: str


def _config_file(args: argparse.Namespace, load: Callable[[], Config]) -> _ConfigFile:
    def checked() -> Config:
        try:
            return load()
        except UsageError as exc:  # e.g. the last list removed: one line, as at start
            raise ConfigError(str(exc)) from None

    where = str(args.config) if args.config is not None else "the command line (no --config)"
    return _ConfigFile(checked, checked(), where)


def _relay_config(args: argparse.Namespace, default_lists: Sequence[ListSpec] = ()) -> Config:
    """``--config`` and the relay's flags over it (what ``serve`` and ``demo`` read at start and on SIGHUP)."""
    config = _config_with_lists(args, default_lists)
    relay = config.relay
    keys = dict(relay.streams)
    for item in getattr(args, "stream_key", []):
        name, sep, key = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--stream-key {name}=...: expected STREAM=KEY")
        keys[name] = replace(keys.get(name, StreamAccess()), key=key)
    try:
        relay = replace(
            relay,
            host=args.host or relay.host,
            port=args.port if args.port is not None else relay.port,
            admin_port=args.admin_port if args.admin_port is not None else relay.admin_port,
            streams=keys,
            ice=_ice_settings(args, relay.ice),
        )
    except ValueError as exc:  # --admin-port the same as the port
        raise UsageError(str(exc)) from None
    moderation = config.moderation
    if args.db is not None:
        moderation = replace(moderation, database=str(args.db))
    if args.webhook_url:
        secret = args.webhook_secret or os.environ.get("LIVESAFE_WEBHOOK_SECRET")
        if not secret:
            raise UsageError("--webhook-url needs --webhook-secret SECRET (or LIVESAFE_WEBHOOK_SECRET)")
        moderation = replace(moderation, webhooks=moderation.webhooks + (WebhookEndpoint(args.webhook_url, secret),))
    return replace(config, relay=relay, moderation=moderation)


def _relay_lists(args: argparse.Namespace, config: Config) -> LiveMatcher:
    return _load_lists(args, config, config.moderation.database, config.moderation.database)


def _run_serve(args: argparse.Namespace) -> int:
    file = _config_file(args, lambda: _relay_config(args))
    config = file.loaded
    lists = _relay_lists(args, config)
    workers = resolve_workers(args.workers, config.relay.workers)
    if args.worker_index is not None:
        slot = WorkerSlot(args.worker_index, workers, config.relay.port)
        cluster = _cluster_settings(args, config)
        if cluster is None:
            raise UsageError("--worker-index is set by --workers for its workers, with --redis")
        asyncio.run(_serve(slot.config(config, cluster), lists, file, worker=slot))
        return EXIT_CLEAN
    if workers > 1:
        del lists  # validated; the workers load their own
        return _supervise(args, config, workers)
    if args.workers is None and config.relay.workers == 1 and (os.cpu_count() or 1) > 1:
        print(
            f"livesafe: one process; --workers auto would run one per core ({os.cpu_count()}) behind this port",
            file=sys.stderr,
        )
    config = replace(config, cluster=_cluster_settings(args, config))
    asyncio.run(_serve(config, lists, file))
    return EXIT_CLEAN


def _supervise(args: argparse.Namespace, config: Config, workers: int) -> int:
    """``serve --workers N``: the workers, on the configured Redis or a private one (see cluster.workers)."""
    settings = config.relay
    check_ports(settings.port, workers)
    private = args.redis is None and config.cluster is None
    cluster = None if private else _cluster_settings(args, config)
    base = cluster.node_name if cluster is not None else args.node or socket.gethostname()
    names = [f"{base}-{i}" for i in range(workers)]
    if not NODE_NAME.match(names[-1]):
        raise UsageError(f"node name {base!r}: worker names like {names[-1]!r} must be letters, digits, '.', '_', '-'")
    redis = PrivateRedis() if private else None
    try:
        if redis is not None:
            redis.start()
        supervisor = Supervisor(
            args.argv,
            names,
            public_url=_base_url(settings.host, settings.port),
            public_port=settings.port,
            redis=redis,
            drain_seconds=cluster.drain_seconds if cluster is not None else ClusterSettings.drain_seconds,
        )
        return asyncio.run(supervisor.run())
    finally:
        if redis is not None:
            redis.stop()  # last: the workers have left the cluster through it


def _base_url(host: str, port: int) -> str:
    return f"http://{'[' + host + ']' if ':' in host else host}:{port}"


def _cluster_settings(args: argparse.Namespace, config: Config) -> ClusterSettings | None:
    """``[cluster]`` with ``--redis/--node/--advertise`` over it (the flags alone make a cluster too)."""
    flags = {
        key: value
        for key, value in (("redis_url", args.redis), ("node_name", args.node), ("advertise_url", args.advertise))
        if value
    }
    base = config.cluster
    if base is None and not flags:
        return None
    if base is None and "redis_url" not in flags:
        raise UsageError("--node/--advertise need --redis URL (or [cluster] redis_url in --config)")
    if base is None:
        secret = os.environ.get(ClusterSettings.SECRET_ENV, "")
        if not secret:
            raise UsageError(f"a cluster needs the nodes' shared secret in {ClusterSettings.SECRET_ENV}")
        return ClusterSettings(secret=secret, **flags)
    return replace(base, **flags)


def _run_demo(args: argparse.Namespace) -> int:
    if args.workers is not None:
        raise UsageError("--workers: the demo runs in one process (livesafe serve --workers N runs several)")
    sample = args.sample or demo_clip()
    if not sample.is_file():
        raise UsageError(f"{sample}: no such file")
    with open_video(sample):  # a file that is not a video stops here, with exit 2, not after the relay started
        pass
    samples = sample.parent / BLOCKLIST
    default = (
        [ListSpec(path=samples, name="samples", category="test", action=args.action or "blur")]
        if samples.is_file()
        else []
    )

    def load() -> Config:
        config = _relay_config(args, default)
        if args.config is not None:
            return config
        # The embedded demo config: a 1 s hold, so each pass of the short sample shows
        # the stream going clean -> redacted -> clean.
        return replace(config, guard=replace(config.guard, hold_seconds=1.0))

    file = _config_file(args, load)
    asyncio.run(_serve(file.loaded, _relay_lists(args, file.loaded), file, demo=(sample, args.stream)))
    return EXIT_CLEAN


async def _serve(
    config: Config,
    lists: LiveMatcher,
    file: _ConfigFile,
    demo: tuple[Path, str] | None = None,
    worker: WorkerSlot | None = None,
) -> None:
    """Serve until SIGINT (stop) or SIGTERM (a cluster node drains first); SIGHUP reloads ``file``
    (``livesafe.reload``: keys, tokens, lists, webhooks; streams keep running).

    ``worker``: one of ``serve --workers``: it listens on its own port and, shared
    with its siblings (``SO_REUSEPORT``), on the public one; on SIGTERM it closes
    the shared port first, so the kernel sends new connections to the others.
    """
    settings = config.relay
    logging.getLogger("livesafe").setLevel(logging.INFO)
    if settings.admin_port is not None and config.cluster is not None:
        raise UsageError(ADMIN_PORT_IN_CLUSTER)
    watcher = ListWatcher(lists, config.reload_seconds)
    try:
        proxy = build_proxy(
            settings,
            lambda: lists.current,
            config.guard,
            config.moderation,
            watcher,
            cluster=config.cluster.with_advertise(listen_url(settings.host, settings.port)) if config.cluster else None,
            lists=lists,
            banks=lists.context.banks,
        )
    except (sqlite3.Error, OSError) as exc:  # not a database, or a directory we cannot create
        raise UsageError(f"event store {config.moderation.database}: {exc}") from None
    relay = proxy.relay
    reload = ConfigReload(
        file.load, file.loaded, relay, proxy.moderation, lists, watcher, clustered=proxy.cluster is not None,
        source=file.where,
    )  # fmt: skip
    reload.attach(proxy.app)
    if worker is not None and proxy.cluster is not None and config.cluster is not None:
        proxy.cluster.shared_port = worker.public_port
        # A worker restarted after a crash finds its old name held until the key expires.
        proxy.cluster.claim_wait_seconds = config.cluster.node_ttl_seconds + config.cluster.heartbeat_seconds
    runner = web.AppRunner(proxy.app, access_log=None)
    try:
        await runner.setup()  # a cluster node joins here
    except (RegistryUnavailable, NodeNameTaken, SecretMismatch) as exc:
        await runner.cleanup()  # what started before the join stops again; the event store is closed
        hint = ": give each node its own --node NAME" if isinstance(exc, NodeNameTaken) else ""
        raise UsageError(f"cluster: {exc}{hint}") from None
    admin = settings.admin_address
    if admin is not None:  # first: until it listens, the private routes are refused on every port
        try:
            await listen_admin(runner, *admin)
        except OSError as exc:
            await runner.cleanup()
            raise UsageError(f"cannot listen on {admin[0]}:{admin[1]} (admin_port): {exc.strerror or exc}") from None
        admin = (admin[0], runner.addresses[0][1])  # the port bound (admin_port 0: a free one)
    sites = [(settings.port, web.TCPSite(runner, settings.host, settings.port))]
    if worker is not None:
        sites.append((worker.public_port, web.TCPSite(runner, settings.host, worker.public_port, reuse_port=True)))
    bound = settings.port
    for port, site in sites:
        known = set(runner.addresses)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise UsageError(f"cannot listen on {settings.host}:{port}: {exc.strerror or exc}") from None
        if site is sites[0][1]:
            bound = min(address[1] for address in set(runner.addresses) - known)  # --port 0: the one bound
    base = _base_url(settings.host, bound)
    hashes = sum(len(bl) for bl in lists.current.blocklists)
    behind = f" (worker {worker.index} of {worker.count} behind port {worker.public_port})" if worker else ""
    print(f"{READY_LINE}{base}{behind} -- {len(lists.current.blocklists)} list(s), {hashes} hashes", file=sys.stderr)
    if settings.dev_mode:
        print(
            "livesafe: WARNING: DEV MODE -- no stream key configured, so ANYONE who can reach this port may publish "
            "any stream. Configure [streams.NAME] key_env in --config or --stream-key to turn this off.",
            file=sys.stderr,
        )
    inside = _base_url(*admin) if admin is not None else base
    if admin is not None:
        print(f"livesafe: /metrics, the dashboard and the moderation API only on {inside}", file=sys.stderr)
    if open_access(relay, proxy.moderation):
        print(
            f"livesafe: WARNING: DEV MODE -- the moderation API, the stream list and {inside}/dashboard "
            "are open to anyone too.",
            file=sys.stderr,
        )
    elif not config.moderation.tokens:
        print(
            "livesafe: warning: no moderator tokens configured ([moderation.tokens.NAME]); "
            "the moderation API refuses everyone",
            file=sys.stderr,
        )
    else:
        print(f"livesafe: dashboard at {inside}/dashboard", file=sys.stderr)
    print(f"livesafe: events stored in {config.moderation.database}", file=sys.stderr)
    if proxy.cluster is not None:
        node = proxy.cluster
        print(f"livesafe: cluster node {node.name!r} at {node.settings.advertise_url}", file=sys.stderr)
    stop = asyncio.Event()
    tasks = []
    if demo is not None:
        sample, stream = demo
        token = settings.streams[stream].key if stream in settings.streams else None
        tasks.append(asyncio.ensure_future(_demo_publisher(sample, f"{base}/whip/{stream}", token, settings.ice, stop)))
        print(f"livesafe: preparing {sample} to publish on a loop...", file=sys.stderr)
        tasks.append(asyncio.ensure_future(_announce_when_live(relay, stream, f"{base}/watch/{stream}")))
    loop = asyncio.get_running_loop()
    drain = False

    def _terminate() -> None:
        nonlocal drain
        drain = proxy.cluster is not None  # a cluster node drains first: its viewers finish elsewhere
        stop.set()

    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGTERM, _terminate)
    loop.add_signal_handler(signal.SIGHUP, reload.request)
    print(f"livesafe: SIGHUP reloads {file.where}: stream keys, [auth], tokens, lists, webhooks", file=sys.stderr)
    try:
        await stop.wait()
    finally:
        if drain and proxy.cluster is not None:
            if worker is not None:
                await sites[-1][1].stop()  # the shared port: new connections go to the other workers
            await proxy.cluster.drain(proxy.cluster.settings.drain_seconds)
        print("livesafe: shutting down", file=sys.stderr)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await runner.cleanup()


async def _announce_when_live(relay: Relay, stream: str, url: str) -> None:
    while stream not in relay.streams or relay.streams[stream].counters.frames_in == 0:
        await asyncio.sleep(0.1)
    print(f"livesafe: stream {stream!r} is live -- watch it at {url}", file=sys.stderr)


async def _demo_publisher(sample: Path, url: str, token: str | None, ice: IceSettings, stop: asyncio.Event) -> None:
    """Keep the sample stream up: publish on a loop; if it drops, start again.

    The sample is re-encoded once as WebRTC-ready H.264 and its packets are
    sent as they are, so the demo's publisher costs next to no CPU and the
    machine's cores go to the relay.  A sample that cannot be read stops the demo.
    """
    with tempfile.TemporaryDirectory(prefix="livesafe-demo-") as tmp:
        try:
            ready = await asyncio.to_thread(webrtc_h264_copy, sample, Path(tmp) / "sample.mp4")
        except ClientError as exc:
            print(f"livesafe: error: {exc}", file=sys.stderr)
            stop.set()
            return
        while True:
            try:
                await publish(ready, url, token=token, loop=True, passthrough=True, ice=ice)
            except ClientError as exc:
                print(f"livesafe: demo publisher: {exc}; retrying", file=sys.stderr)
            await asyncio.sleep(1)


def _run_publish(args: argparse.Namespace) -> int:
    if not args.file.is_file():
        raise UsageError(f"{args.file}: no such file")
    if args.retry < 0:
        raise UsageError(f"--retry {args.retry}: expected 0 or more")
    token = args.token or os.environ.get("LIVESAFE_TOKEN")
    try:
        result = asyncio.run(
            publish(
                args.file,
                args.url,
                token=token,
                loop=args.loop,
                duration=args.duration,
                codec=args.codec,
                passthrough=args.passthrough,
                ice=_ice_settings(args),
                retries=args.retry,
            )
        )
    except ClientError as exc:
        raise UsageError(str(exc)) from None
    print(f"livesafe: published {result.frames_sent} frames in {result.seconds:.1f} s", file=sys.stderr)
    return EXIT_CLEAN


def _run_watch(args: argparse.Namespace) -> int:
    token = args.token or os.environ.get("LIVESAFE_TOKEN")
    try:
        result = asyncio.run(
            watch(args.url, token=token, record=args.record, duration=args.duration, ice=_ice_settings(args))
        )
    except ClientError as exc:
        raise UsageError(str(exc)) from None
    sizes = ", ".join(f"{w}x{h}" for w, h in result.sizes) or "none"
    ended = " (stream ended)" if result.ended_by_server else ""
    print(
        f"livesafe: watched {result.seconds:.1f} s{ended}: {result.frames} video frames ({sizes}), "
        f"{result.gaps} gap(s), {result.audio_frames} audio frames"
        + (f"; recorded to {args.record}" if args.record else ""),
        file=sys.stderr,
    )
    return EXIT_CLEAN


def _run_scan(args: argparse.Namespace) -> int:
    config = _config_with_lists(args)
    if not args.input.is_file():
        raise UsageError(f"{args.input}: no such file")
    banked = any(spec.kind == "bank" for spec in config.lists)  # the store is opened only for bank lists
    lists = _load_lists(args, config, bank_database=config.moderation.database if banked else None)
    events_out = None
    if args.events is not None:
        events_out = sys.stdout if str(args.events) == "-" else _open_for_write(args.events)
    try:
        result = scan_file(
            args.input,
            lambda: lists.current,
            config.guard,
            output_path=args.output,
            on_event=(lambda e: print(e.to_json(), file=events_out, flush=True)) if events_out else None,
            progress=progress_stream(),
        )
        unchecked = result.unchecked
        if unchecked is not None and events_out is not None:
            print(_incomplete_event(args.input, result, unchecked), file=events_out, flush=True)
    finally:
        if events_out is not None and events_out is not sys.stdout:
            events_out.close()
    if unchecked is not None:
        print(f"livesafe: warning: {args.input}: incomplete input: {unchecked}", file=sys.stderr)
    started = [e for e in result.events if e.type == "match.started"]
    summary = (
        f"{args.input}: {result.frames} frames, {len(started)} interruption(s), "
        f"{result.frames_redacted} frames redacted ({result.frames_slated} slated)"
        + (f"; NOT the whole file: {unchecked}" if unchecked is not None else "")
    )
    print(summary, file=sys.stderr if events_out is sys.stdout else sys.stdout)
    for e in started:
        print(
            f"  t={e.media_time:7.2f}s frame {e.frame_index}: {e.list_name} ({e.category}) "
            f"{e.signal} distance {e.distance} "
            f"in {e.region_kind} {e.region} [{e.orientation}] -> {e.action}",
            file=sys.stderr if events_out is sys.stdout else sys.stdout,
        )
    if result.guard_errors:
        # Fail closed: those frames were slated, but the file was not checked.
        raise UsageError(
            f"{args.input}: the check failed on {result.guard_errors} frame(s) (slated in the output): "
            f"{result.first_guard_error}"
        )
    if result.matched:
        return EXIT_MATCHED
    return EXIT_INCOMPLETE if unchecked is not None else EXIT_CLEAN


def _incomplete_event(input_path: Path, result: ScanResult, unchecked: str) -> str:
    """The last --events line when the file was not checked whole: a reader of the events alone must know."""
    record = {
        "type": SCAN_INCOMPLETE,
        "stream_id": input_path.name,
        "frames": result.frames,
        "expected_frames": result.expected_frames or None,
        "checked_seconds": round(result.checked_seconds, 3),
        "expected_seconds": round(result.expected_seconds, 3) or None,
        "damaged_packets": result.damaged_packets,
        "reason": unchecked,
    }
    return json.dumps(record, separators=(",", ":"), sort_keys=True)


def _open_for_write(path: Path) -> TextIO:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return path.open("w", encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"{path}: cannot write: {exc.strerror}") from None


def _run_hash(args: argparse.Namespace) -> int:
    signal = signal_named(args.signal)
    if args.every <= 0:
        raise UsageError(f"--every {args.every:g}: expected a positive number of seconds")
    for path in args.files:
        if not path.is_file():
            raise UsageError(f"{path}: no such file")
        if path.suffix.lower() in _IMAGE_SUFFIXES:
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is None:
                raise UsageError(f"{path}: cannot read as an image")
            _print_hash(signal, signal.hash_luma(luma_from_rgb(image[..., ::-1])), f"{path}")
        else:
            _hash_video(signal, path, args.every)
    return EXIT_CLEAN


def _hash_video(signal: SignalType, path: Path, every: float) -> None:
    """One line per ``every`` seconds, and one at each cut between them (a cut to a flat picture has none)."""
    with open_video(path) as container:
        for sample in sample_frames(container.decode(video=0), every, signal):
            label = f"{path}@{sample.time:.2f}s"
            if not sample.cut:
                _print_hash(signal, sample.hashes, label)
            elif sample.hashes.quality >= signal.min_quality:
                _print_hash(signal, sample.hashes, f"{label} (cut)")


def _print_hash(signal: SignalType, hashes: RegionHashes, label: str) -> bool:
    """Print the list line for ``hashes`` (False: too flat to list, said on stderr instead)."""
    if hashes.quality < signal.min_quality:
        print(f"# {label}: quality {hashes.quality} < {signal.min_quality}, too flat to list", file=sys.stderr)
        return False
    print(f"{signal.name} {signal.format_hex(hashes.variants[0])}  # {label} quality={hashes.quality}")
    return True


if __name__ == "__main__":
    sys.exit(main())

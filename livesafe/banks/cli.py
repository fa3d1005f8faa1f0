"""``livesafe bank add | list | remove``: banks in the event store, from the command line.

The CLI writes the same store ``livesafe serve`` reads (``--db``, else the
``[moderation] database`` of ``--config``, else ``livesafe.db``), so a running
proxy enforces an added content at its next list poll.  Every change is also an
entry in the store's audit log, as the HTTP API's are: the actor is
``--actor`` (default: the login name), the role ``operator``.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from livesafe.banks.media import BankError, HashedContent, hash_content, read_limited
from livesafe.banks.store import BankStore, check_bank_name, check_content_id
from livesafe.cli_help import ERROR, add_command
from livesafe.config import load_config
from livesafe.moderation.store.records import AuditEntry
from livesafe.moderation.store.sqlite import SqliteStore
from livesafe.signals import SIGNALS, SignalType, signal_named

DEFAULT_MAX_BYTES = 1 << 30  # a file read into memory to hash: a long video, not a disk image
OPERATOR = "operator"


def add_bank_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    bank = add_command(
        sub,
        "bank",
        "banks of this platform's own content: hashes of images and videos",
        [(0, "done"), ERROR],
        [
            "livesafe bank add ours photo.jpg clip.mp4 --db livesafe.db --reason 'reported by the owner'",
            "livesafe bank list ours --config livesafe.toml",
            "livesafe bank remove ours 3f2a9c0d41b7e865 --reason 'banked by mistake'",
        ],
    )
    actions = bank.add_subparsers(dest="bank_command", required=True)

    add = add_command(
        actions,
        "add",
        "hash images or videos (and their views) into bank NAME",
        [
            (0, "every FILE was hashed and banked"),
            (
                2,
                "error: a FILE unreadable, too large, too flat or not an image or video, banked already,\n"
                "or a bad bank name or --id (one line; then no FILE is banked)",
            ),
        ],
        [
            "livesafe bank add ours photo.jpg --db livesafe.db --reason 'reported by the owner'",
            "livesafe bank add ours clip.mp4 --id case-1234 --every 0.5 --signal phash --config livesafe.toml",
        ],
    )
    add.add_argument("name", metavar="NAME")
    add.add_argument("files", type=Path, nargs="+", metavar="FILE")
    add.add_argument("--id", dest="content_id", help="content id (one FILE only; default: its SHA-256, 16 digits)")
    add.add_argument(
        "--signal",
        action="append",
        choices=sorted(SIGNALS),
        help="also hash with this signal (repeatable; PDQ always): the imagehash signals your lists use",
    )
    add.add_argument(
        "--every",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="video: one frame per this long, and one at each cut",
    )
    add.add_argument("--max-bytes", type=int, default=DEFAULT_MAX_BYTES, help="largest file read")
    _store_options(add)
    add.set_defaults(run=run_add)

    listing = add_command(
        actions,
        "list",
        "the banks, or what bank NAME holds",
        [(0, "listed"), (2, "error: no bank NAME, or an unusable event store")],
        ["livesafe bank list --db livesafe.db", "livesafe bank list ours --json --config livesafe.toml"],
    )
    listing.add_argument("name", nargs="?", metavar="NAME")
    listing.add_argument("--json", action="store_true", help="as JSON")
    _store_options(listing, audited=False)
    listing.set_defaults(run=run_list)

    remove = add_command(
        actions,
        "remove",
        "take a content and its hashes out of bank NAME",
        [(0, "removed"), (2, "error: bank NAME holds no CONTENT_ID, or an unusable event store")],
        ["livesafe bank remove ours 3f2a9c0d41b7e865 --db livesafe.db --reason 'banked by mistake'"],
    )
    remove.add_argument("name", metavar="NAME")
    remove.add_argument("content_id", metavar="CONTENT_ID")
    _store_options(remove)
    remove.set_defaults(run=run_remove)


def _store_options(parser: argparse.ArgumentParser, *, audited: bool = True) -> None:
    parser.add_argument("--db", type=Path, metavar="FILE", help="event store (default: --config's, or livesafe.db)")
    parser.add_argument("--config", type=Path, help="TOML settings (for its [moderation] database)")
    if audited:
        parser.add_argument("--actor", help="who is changing the bank, for the audit log (default: login name)")
        parser.add_argument("--reason", default="", help="why, for the audit log")


def signals_for(names: list[str] | None) -> list[SignalType]:
    """PDQ, and the other signals named (the imagehash ones a platform's lists use)."""
    return [signal_named(name) for name in dict.fromkeys(["pdq", *(names or [])])]


def run_add(args: argparse.Namespace) -> int:
    bank = check_bank_name(args.name)
    if args.content_id is not None and len(args.files) != 1:
        raise BankError("--id names one content: give one FILE with it")
    if args.every <= 0:
        raise BankError(f"--every {args.every}: expected a positive number of seconds")
    signals = signals_for(args.signal)
    items: list[tuple[str, HashedContent]] = []
    for path in args.files:  # every file hashed before any is banked: a bad one banks none
        content = hash_content(read_limited(path, args.max_bytes), str(path), signals, args.every)
        items.append((check_content_id(args.content_id or content.sha256[:16]), content))
    actor = args.actor or getpass.getuser()
    database = _database(args)
    banks = _open(database)
    try:
        added = banks.add(bank, items, actor)
    finally:
        banks.close()
    _audit(database, actor, args.reason, "bank.add", [c.to_dict() for c in added])
    for item, (_, content) in zip(added, items, strict=True):
        print(
            f"bank {bank}: added {item.content_id} ({item.kind}, {item.frames} frame(s), {item.views} views, "
            f"{item.hashes} hashes; {content.flat_views} view(s) too flat to hash)"
        )
    return 0


def run_list(args: argparse.Namespace) -> int:
    banks = _open(_database(args))
    try:
        if args.name is None:
            summaries = banks.banks()
            if args.json:
                print(json.dumps({"banks": [s.to_dict() for s in summaries]}, indent=1))
            for s in [] if args.json else summaries:
                print(f"{s.name}\t{s.contents} content(s)\t{s.hashes} hashes\tv{s.version}\t{_when(s.changed_at)}")
            return 0
        contents = banks.contents(args.name)
    finally:
        banks.close()
    if contents is None:
        raise BankError(f"no bank {args.name!r}")
    if args.json:
        print(json.dumps({"bank": args.name, "contents": [c.to_dict() for c in contents]}, indent=1))
        return 0
    for c in contents:
        print(
            f"{c.content_id}\t{c.kind}\t{c.frames} frame(s)\t{c.views} views\t{c.hashes} hashes\t"
            f"added by {c.added_by} {_when(c.added_at)}"
        )
    return 0


def run_remove(args: argparse.Namespace) -> int:
    database = _database(args)
    banks = _open(database)
    try:
        removed = banks.remove(args.name, args.content_id)
    finally:
        banks.close()
    if removed is None:
        raise BankError(f"bank {args.name!r} holds no content {args.content_id!r}")
    _audit(database, args.actor or getpass.getuser(), args.reason, "bank.remove", [removed.to_dict()])
    print(f"bank {args.name}: removed {removed.content_id} ({removed.hashes} hashes)")
    return 0


def _database(args: argparse.Namespace) -> str:
    if args.db is not None:
        return str(args.db)
    return load_config(args.config).moderation.database


def _open(database: str) -> BankStore:
    try:
        return BankStore(database)
    except (sqlite3.Error, OSError) as exc:
        raise BankError(f"event store {database}: {exc}") from None


def _audit(database: str, actor: str, reason: str, action: str, contents: list[dict[str, object]]) -> None:
    """One audit entry per content, in the store's audit log (after the change: the log says what was done)."""
    store = SqliteStore(database)
    try:
        for details in contents:
            store.audit.append(AuditEntry(actor, OPERATOR, action, None, reason, False, details=details))
    finally:
        store.close()


def _when(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")

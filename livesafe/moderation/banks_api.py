"""Banks over HTTP: moderators add and remove content, observers and moderators read what is banked.

``GET /api/banks``: every bank, its version, content and hash counts.
``GET /api/banks/{bank}``: what the bank holds (content ids, kind, counts, who added it and when).
``POST /api/banks/{bank}/contents`` (moderator): ``multipart/form-data`` with one or more
``file`` fields, a ``reason`` (it goes in the audit log) and optionally ``content_id`` (one file
only; default the SHA-256's first 16 digits), ``signal`` (comma-separated signals to hash with
besides PDQ: the imagehash ones the platform's lists use) and
``every`` (seconds between a video's hashed frames).  All files of one POST together may be at
most ``[moderation] bank_max_upload_bytes`` (413 beyond); a file that is neither an image nor a
video, or too flat to hash, is 422 and banks nothing; a content id or file banked already, 409.
``DELETE /api/banks/{bank}/contents/{content_id}?reason=...`` (moderator).

Uploads are read into memory and hashed there (never written to disk), on a thread: decoding a
video takes seconds and the event loop carries live streams.  Every change is an audit entry
(``bank.add``, ``bank.remove``) naming the bank and the content.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

from aiohttp import BodyPartReader, web

from livesafe.banks.media import BankError, HashedContent, hash_content
from livesafe.banks.store import BankConflict, BankStore, check_bank_name, check_content_id
from livesafe.moderation.actions import ActionError, parse_reason
from livesafe.moderation.api import MODERATION, authorise
from livesafe.moderation.settings import Principal
from livesafe.moderation.store.records import AuditEntry
from livesafe.signals import SignalType, signal_named

BANKS: web.AppKey[BankStore] = web.AppKey("banks")
MAX_FIELD_BYTES = 4096  # a form field other than a file
MAX_FILES = 32


def add_bank_routes(app: web.Application, banks: BankStore) -> None:
    app[BANKS] = banks
    app.router.add_get("/api/banks", api_banks)
    app.router.add_get("/api/banks/{bank}", api_bank)
    app.router.add_post("/api/banks/{bank}/contents", api_bank_add)
    app.router.add_delete("/api/banks/{bank}/contents/{content_id}", api_bank_remove)


async def api_banks(request: web.Request) -> web.Response:
    authorise(request)
    summaries = await asyncio.to_thread(request.app[BANKS].banks)
    return web.json_response({"banks": [s.to_dict() for s in summaries]})


async def api_bank(request: web.Request) -> web.Response:
    authorise(request)
    bank = _bank(request)
    contents = await asyncio.to_thread(request.app[BANKS].contents, bank)
    if contents is None:
        raise web.HTTPNotFound(text=f"no bank {bank!r}\n")
    return web.json_response({"bank": bank, "contents": [c.to_dict() for c in contents]})


async def api_bank_add(request: web.Request) -> web.Response:
    principal = authorise(request, act=True)
    bank = _bank(request)
    if request.content_type != "multipart/form-data":
        raise web.HTTPUnsupportedMediaType(text="expected Content-Type: multipart/form-data with file fields\n")
    limit = request.app[MODERATION].settings.bank_max_upload_bytes
    files, fields = await _form(request, limit)
    try:
        reason = parse_reason({"reason": fields.get("reason")})
    except ActionError as exc:
        raise web.HTTPBadRequest(text=f"{exc}\n") from None
    if not files:
        raise web.HTTPBadRequest(text="file: required (one or more multipart fields named 'file')\n")
    content_id = fields.get("content_id")
    if content_id is not None and len(files) != 1:
        raise web.HTTPBadRequest(text="content_id names one content: send one file with it\n")
    signals, every = _hash_options(fields)
    try:
        hashed = await asyncio.to_thread(_hash_all, files, signals, every)
        items = [(check_content_id(content_id or c.sha256[:16]), c) for c in hashed]
    except BankError as exc:
        raise web.HTTPUnprocessableEntity(text=f"{exc}\n") from None
    except ValueError as exc:
        raise web.HTTPBadRequest(text=f"{exc}\n") from None
    try:
        added = await asyncio.to_thread(request.app[BANKS].add, bank, items, principal.name)
    except BankConflict as exc:
        raise web.HTTPConflict(text=f"{exc}\n") from None
    audit = [_audit(request, principal, "bank.add", reason, c.to_dict()) for c in added]
    return web.json_response({"added": [c.to_dict() for c in added], "audit": audit}, status=201)


async def api_bank_remove(request: web.Request) -> web.Response:
    principal = authorise(request, act=True)
    bank = _bank(request)
    content_id = request.match_info["content_id"]
    try:
        reason = parse_reason({"reason": request.query.get("reason")})
    except ActionError as exc:
        raise web.HTTPBadRequest(text=f"{exc} (?reason=...)\n") from None
    removed = await asyncio.to_thread(request.app[BANKS].remove, bank, content_id)
    if removed is None:
        raise web.HTTPNotFound(text=f"bank {bank!r} holds no content {content_id!r}\n")
    audit = _audit(request, principal, "bank.remove", reason, removed.to_dict())
    return web.json_response({"removed": removed.to_dict(), "audit": audit})


def _bank(request: web.Request) -> str:
    try:
        return check_bank_name(request.match_info["bank"])
    except ValueError as exc:
        raise web.HTTPBadRequest(text=f"{exc}\n") from None


async def _form(request: web.Request, limit: int) -> tuple[list[tuple[str, bytes]], dict[str, str]]:
    """The upload's files (name for errors, bytes) and its other fields, at most ``limit`` bytes of files."""
    files: list[tuple[str, bytes]] = []
    fields: dict[str, str] = {}
    total = 0
    reader = await request.multipart()
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader):
            raise web.HTTPBadRequest(text="a nested multipart body is not a file\n")
        name = part.name or ""
        if name == "file":
            if len(files) == MAX_FILES:
                raise web.HTTPBadRequest(text=f"at most {MAX_FILES} files in one request\n")
            data = await _read(part, limit - total, f"the files (all together) may be at most {limit:,} bytes")
            total += len(data)
            files.append((f"file {len(files) + 1}" + (f" ({part.filename})" if part.filename else ""), data))
        elif name in {"reason", "content_id", "signal", "every"} and name not in fields:
            fields[name] = (await _read(part, MAX_FIELD_BYTES, f"field {name!r}: too long")).decode("utf-8", "replace")
        else:
            known = "file, reason, content_id, signal, every"
            raise web.HTTPBadRequest(text=f"unknown or repeated field {name!r} (fields: {known})\n")
    return files, fields


async def _read(part: BodyPartReader, limit: int, too_big: str) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while chunk := await part.read_chunk(1 << 16):
        size += len(chunk)
        if size > limit:
            raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=size, text=f"{too_big}\n")
        chunks.append(chunk)
    return b"".join(chunks)


def _hash_options(fields: dict[str, str]) -> tuple[list[SignalType], float]:
    try:
        names = [n.strip() for n in fields.get("signal", "").split(",") if n.strip()]
        signals = [signal_named(n) for n in dict.fromkeys(["pdq", *names])]
        every = float(fields.get("every", "1"))
    except ValueError as exc:
        raise web.HTTPBadRequest(text=f"{exc}\n") from None
    if not math.isfinite(every) or every <= 0:
        raise web.HTTPBadRequest(text="every: expected a positive number of seconds\n")
    return signals, every


def _hash_all(files: list[tuple[str, bytes]], signals: list[SignalType], every: float) -> list[HashedContent]:
    return [hash_content(data, label, signals, every) for label, data in files]


def _audit(
    request: web.Request, principal: Principal, action: str, reason: str, details: dict[str, Any]
) -> dict[str, Any]:
    entry = request.app[MODERATION].store.audit.append(
        AuditEntry(principal.name, principal.role, action, None, reason, False, details=details)
    )
    return entry.to_dict()

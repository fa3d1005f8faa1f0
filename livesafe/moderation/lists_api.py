"""The lists as moderators and tools see them: each source's status, and a hash lookup in HMA's shape.

``GET /api/lists``: per list, where it comes from, the version in force, its
entry count, the last successful fetch, the last error and how stale it is
(``SourceStatus``), and the entries flood-quarantined now.

``GET /api/lookup?signal_type=pdq&signal=HEX[&banks=A,B]`` (also at HMA 2.x's
own path, ``/m/lookup``, so tools written for HMA ask unchanged): the entries
of every list within that list's threshold of the hash, as HMA answers --
``{"LIST": [{"bank_content_id": ..., "distance": "4"}]}`` -- with what HMA
does not have beside it: the distance as a number, the matched hash, the list's
category and action, and the entry's metadata from its source.  Allow
(negative) lists are included: a tool asking "would this match?" must see that
an allow entry overrides.  Observer or moderator token, like every read.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from livesafe.guard.matcher import Matcher
from livesafe.lists.live import LiveLists
from livesafe.moderation.api import MODERATION, authorise
from livesafe.signals import SIGNALS

LISTS: web.AppKey[LiveLists[Matcher]] = web.AppKey("lists")
MAX_LOOKUP_MATCHES = 100  # per list


def add_list_routes(app: web.Application, lists: LiveLists[Matcher]) -> None:
    app[LISTS] = lists
    app.router.add_get("/api/lists", api_lists)
    app.router.add_get("/api/lookup", api_lookup)
    app.router.add_get("/m/lookup", api_lookup)


async def api_lists(request: web.Request) -> web.Response:
    authorise(request)
    now = time.time()
    quarantined = request.app[MODERATION].flood.quarantined(now)
    lists = []
    for status in request.app[LISTS].status():
        status["quarantined"] = [q for q in quarantined if q["list_name"] == status["name"]]
        lists.append(status)
    return web.json_response({"lists": lists, "at": now})


async def api_lookup(request: web.Request) -> web.Response:
    authorise(request)
    query = request.query
    signal_type, text = query.get("signal_type", "pdq"), query.get("signal")
    if text is None:
        raise web.HTTPBadRequest(text="signal: required (the hash, in hex)\n")
    signal = SIGNALS.get(signal_type.strip().lower())
    if signal is None:
        raise web.HTTPBadRequest(text=f"No such SignalType {signal_type!r} (known: {', '.join(sorted(SIGNALS))})\n")
    try:
        value = signal.parse_hex(text)
    except ValueError as exc:
        raise web.HTTPBadRequest(text=f"invalid signal: {exc}\n") from None
    wanted = {name for name in query["banks"].split(",") if name} if "banks" in query else None
    matcher = request.app[LISTS].current
    answer: dict[str, list[dict[str, Any]]] = {}
    for blocklist, row, distance in matcher.find(signal.name, value, MAX_LOOKUP_MATCHES):
        spec = blocklist.spec
        if wanted is not None and spec.name not in wanted:
            continue
        entry = blocklist.entry(signal.name, row)
        metadata = dict(entry.metadata)
        answer.setdefault(spec.name, []).append(
            {
                "bank_content_id": metadata.get("entry") or (f"line:{entry.line}" if entry.line else f"row:{row}"),
                "distance": str(distance),
                "distance_bits": distance,
                "signal_type": signal.name,
                "signal": signal.format_hex(entry.value),
                "category": spec.category,
                "action": spec.action,
                "metadata": metadata,
            }
        )
    return web.json_response(answer)

"""NCMEC's hash-sharing API (XML) as a list: PDQ hashes of its entries, read as deltas by time window.

The HTTP and XML work is python-threatexchange's ``NCMECHashAPI`` (its
``get_entries`` request, ``next`` paging and entry parsing), the client HMA
uses, so NCMEC's quirks are handled once, upstream.  ``_Client`` subclasses it
minimally: the client only knows NCMEC's fixed ``NCMECEnvironment`` URLs, so
the base URL is set after construction (``url`` in config: a proxy, or a
loopback server in tests); and its session (60 s timeout, urllib3 retries
that sleep out a 429 inside the call) is rebuilt by ``http.guard`` with the
context's timeout, no retries, a size cap, and 429/503 -> ``RetryLater``.

Paging follows threatexchange's ``NCMECSignalExchangeAPI.fetch_iter``:
NCMEC does not return entries in time order, so a checkpoint may only move
past a time window once the window is exhausted.  A fetch reads the window
[``from``, now - 5 s]; mid-window the checkpoint keeps the window and the
``next`` link (resumed as is, since NCMEC's paging URL is only valid for the
same window), and NCMEC asks not to keep paging URLs long, so one older than
12 hours restarts its window (re-reading entries is harmless: they are
upserts).  Unlike ``fetch_iter`` the window is not shrunk adaptively: one
window pages through in ``next`` steps of NCMEC's own size.

Entries are keyed ``member-id`` as threatexchange keys them (an NCMEC id is
one member's).  An entry's PDQ fingerprint becomes a ``pdq`` entry whose
metadata (member, classification, entry id and type) match events carry; a
deleted entry is a tombstone.  Its MD5 is kept too, as an ``md5`` row keyed
``member-id:md5``: an MD5 matches only a byte-identical file, never a
re-encoded live frame, so the list counts it as unmatchable (the source's
status shows how many, each load warns) and never indexes it.  Other
fingerprints are not loaded; each fetch logs how many entries had no PDQ
(those stop being enforced).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from typing import Any

import requests
from threatexchange.exchanges.clients.ncmec.hash_api import (
    GetEntriesResponse,
    NCMECEntryUpdate,
    NCMECEnvironment,
    NCMECHashAPI,
)

from livesafe.lists.model import BlocklistError, ListSpec
from livesafe.lists.sources import http
from livesafe.lists.sources.base import SourceContext
from livesafe.lists.sources.delta import Delta, DeltaSource
from livesafe.lists.sources.state import Entry

log = logging.getLogger(__name__)

PAGING_URL_SECONDS = 12 * 3600  # NCMEC: do not keep paging URLs long (threatexchange's _NCMECPagingInfo)
SETTLE_SECONDS = 5  # a window ends this far in the past: entries still arriving are not ordered by time


class NcmecSource(DeltaSource):
    KIND = "ncmec"
    OPTIONS = frozenset({"user_env", "password_env", "environment", "member_ids"})

    def __init__(self, spec: ListSpec, context: SourceContext) -> None:
        super().__init__(spec, context)
        self._user_env = str(self.option("user_env"))
        self._password_env = str(self.option("password_env"))
        user, password = self.secret("user_env"), self.secret("password_env")
        assert user is not None and password is not None  # required secrets are never None
        self._base_url = (spec.url or _environment(spec.name, self.option("environment", "Industry")).value).rstrip("/")
        if not self._base_url.startswith(("http://", "https://")):
            raise ValueError(f"list {spec.name!r}: an ncmec source's url must be http(s)://, got {spec.url!r}")
        members = self.option("member_ids", [])
        if not isinstance(members, list) or not all(isinstance(m, int) and not isinstance(m, bool) for m in members):
            raise ValueError(f"list {spec.name!r}: member_ids must list NCMEC member (ESP) ids, got {members!r}")
        self._members = frozenset(members)  # empty: every member's entries
        self._client = _Client(user, password, self._base_url, spec.where, context)

    def deltas(self, checkpoint: Mapping[str, Any] | None) -> Iterator[Delta]:
        now = int(time.time())
        start = int(checkpoint["from"]) if checkpoint else 0
        end = now - SETTLE_SECONDS
        next_ = ""
        paged_at = now
        if checkpoint and checkpoint.get("next") and now - int(checkpoint.get("paged_at", 0)) <= PAGING_URL_SECONDS:
            end, next_, paged_at = int(checkpoint["to"]), str(checkpoint["next"]), int(checkpoint["paged_at"])
        if start >= end:
            return
        counts = {"entries": 0, "no_pdq": 0}
        while True:
            page = self._page(start, end, next_)
            upserts, deletes = self._read(page.updates, counts)
            next_ = page.next
            if next_:
                yield Delta({"from": start, "to": end, "next": next_, "paged_at": paged_at}, upserts, deletes)
                continue
            yield Delta({"from": end}, upserts, deletes)
            break
        log.info(
            "list %r: %d NCMEC entries read; %d entries with no PDQ not enforced",
            self.spec.name,
            counts["entries"],
            counts["no_pdq"],
        )

    def _page(self, start: int, end: int, next_: str) -> GetEntriesResponse:
        try:
            with http.client_errors(self.spec.where, self.context.http_timeout, "NCMEC's entries XML"):
                return self._client.get_entries(start_timestamp=start, end_timestamp=end, next_=next_)
        except BlocklistError as exc:
            if not exc.reason.startswith(("HTTP 401", "HTTP 403")):
                raise
            raise BlocklistError(
                self.spec.where,
                f"{exc.reason}: NCMEC refused the user and password in ${self._user_env} / ${self._password_env}",
            ) from None

    def _read(self, updates: list[NCMECEntryUpdate], counts: dict[str, int]) -> tuple[dict[str, Entry], frozenset[str]]:
        upserts: dict[str, Entry] = {}
        deletes: set[str] = set()
        for update in updates:
            key = f"{update.member_id}-{update.id}"
            counts["entries"] += 1
            fingerprints = {name.lower(): value.strip() for name, value in update.fingerprints.items()}
            gone = update.deleted or (bool(self._members) and update.member_id not in self._members)
            metadata = {
                "source": "ncmec",
                "ncmec_id": update.id,
                "member_id": str(update.member_id),
                "entry_type": update.entry_type.value,
                "classification": update.classification or "",
            }
            if not gone and not fingerprints.get("pdq"):
                counts["no_pdq"] += 1
            for signal, row_key in (("pdq", key), ("md5", f"{key}:md5")):
                value = fingerprints.get(signal)
                if gone or not value:  # an update without it: it may have had one before
                    deletes.add(row_key)
                    upserts.pop(row_key, None)
                else:
                    deletes.discard(row_key)
                    upserts[row_key] = (signal, value, metadata)
        return upserts, frozenset(deletes)


class _Client(NCMECHashAPI):
    """``NCMECHashAPI`` at any base URL, its sessions held to livesafe's limits (see the module docstring)."""

    def __init__(self, user: str, password: str, base_url: str, where: str, context: SourceContext) -> None:
        super().__init__(user, password, NCMECEnvironment.Industry)
        self._base_url = base_url
        self._where = where
        self._context = context

    def _get_session(self) -> requests.Session:
        session = super()._get_session()  # its basic auth, then our adapter and checks in place of its retries
        return http.guard(session, self._base_url, self._where, self._context)


def _environment(name: str, value: Any) -> NCMECEnvironment:
    try:
        return NCMECEnvironment[str(value)]
    except KeyError:
        known = ", ".join(e.name for e in NCMECEnvironment)
        raise ValueError(f"list {name!r}: unknown NCMEC environment {value!r} (known: {known})") from None

"""Meta's ThreatExchange (Graph API) as a list: the PDQ hashes of one privacy group, read from ``/threat_updates``.

The HTTP work is python-threatexchange's ``ThreatExchangeAPI`` (its
``get_threat_updates`` request and ``paging.next`` cursor), and the reading
of each update is its ``fb_threatexchange_api`` module's (``ThreatUpdateJSON``
for tombstones, ``FBThreatExchangeIndicatorRecord`` for the opinions of the
descriptors), as HMA uses them.  ``_Client`` changes two things: the client's
``get_json_from_url`` calls ``requests.get`` rather than its own session (so
its timeout and retries never applied), here it uses a session held to
livesafe's limits by ``http.guard``; and a ``paging.next`` link to another
host than the configured URL's is refused (it carries the access token).

The shapes followed (https://developers.facebook.com/docs/threat-exchange/reference/apis/threat-updates/
and threatexchange's ``FBThreatExchangeSignalExchangeAPI.fetch_iter``):
``GET /{privacy_group}/threat_updates/?access_token&start_time&limit&fields&types``
answers ``{"data": [update...], "paging": {"next": url}}``; updates are
ordered by ``last_updated``, so the checkpoint after a page is the highest
``last_updated`` read, and a walk resumes there as ``fetch_iter`` does (the
last second's updates may be read again: a re-read changes nothing).  An update
with ``should_delete`` (or no ``descriptors``) is a tombstone.  ThreatExchange
keeps tombstones 90 days, so a checkpoint not refreshed for 85 days
(``FBThreatExchangeCheckpoint.is_stale``) starts over from nothing with
``replace``: deletes older than that can no longer be learnt.  The checkpoint
keeps when the walk that saved it began (refreshed at the end of every walk,
so a quiet group does not go stale) and, mid-walk, an id of the next link
(without its token) so a server repeating its link is caught.

Entries are keyed ``type:indicator``, as threatexchange keys them.  Only
``HASH_PDQ`` is asked for (threatexchange's ``PdqSignal.INDICATOR_TYPE``);
anything else the server sends is counted in the log and not loaded.  An
indicator whose every opinion is ``NEGATIVE_CLASS`` (its descriptors say
``NON_MALICIOUS``: a known false positive) is not enforced, nor one with no
opinion this app can see (threatexchange drops those too).  An update that
cannot be read (a field missing or of the wrong type) is skipped and counted
in the log: one bad update must not stop every later one.  Match events
carry the privacy group, indicator id, owners' opinions and tags.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import requests
from threatexchange.exchanges.clients.fb_threatexchange.api import ThreatExchangeAPI, is_valid_app_token
from threatexchange.exchanges.clients.fb_threatexchange.threat_updates import ThreatUpdateJSON
from threatexchange.exchanges.fetch_state import SignalOpinionCategory
from threatexchange.exchanges.impl.fb_threatexchange_api import FBThreatExchangeIndicatorRecord

from livesafe.lists.model import BlocklistError, ListSpec
from livesafe.lists.sources import http
from livesafe.lists.sources.base import RetryLater, SourceContext
from livesafe.lists.sources.delta import Delta, DeltaSource
from livesafe.lists.sources.state import Entry

log = logging.getLogger(__name__)

PDQ_TYPE = "HASH_PDQ"
PAGE_SIZE = 100  # fetch_iter's
STALE_SECONDS = 85 * 24 * 3600  # FBThreatExchangeCheckpoint.is_stale: tombstones are kept 90 days
SHAPE = "ThreatExchange's threat_updates JSON"


class ThreatExchangeSource(DeltaSource):
    KIND = "threatexchange"
    OPTIONS = frozenset({"token_env", "privacy_group"})

    def __init__(self, spec: ListSpec, context: SourceContext) -> None:
        super().__init__(spec, context)
        self._token_env = str(self.option("token_env"))
        token = self.secret("token_env")
        assert token is not None  # a required secret is never None
        if not is_valid_app_token(token):
            raise ValueError(
                f"list {spec.name!r}: ${self._token_env} is not a ThreatExchange app access token (app-id|secret)"
            )
        group = self.option("privacy_group")
        if isinstance(group, bool) or not isinstance(group, int) or group <= 0:
            raise ValueError(f"list {spec.name!r}: privacy_group must be a ThreatPrivacyGroup id, got {group!r}")
        self._group = group
        base = spec.url.rstrip("/") or ThreatExchangeAPI._TE_BASE_URL
        if not base.startswith(("http://", "https://")):
            raise ValueError(f"list {spec.name!r}: a threatexchange source's url must be http(s)://, got {spec.url!r}")
        self._client = _Client(token, base, spec.where, context)

    def deltas(self, checkpoint: Mapping[str, Any] | None) -> Iterator[Delta]:
        began = time.time()
        fresh = checkpoint is not None and began - float(checkpoint["last_fetch_time"]) <= STALE_SECONDS
        if checkpoint is not None and not fresh:
            log.warning(
                "list %r: the ThreatExchange checkpoint is over %d days old (tombstones are kept 90): refetching all",
                self.spec.name,
                STALE_SECONDS // 86400,
            )
        start = int(checkpoint["update_time"]) if checkpoint is not None and fresh else None
        highest = start or 0
        counts = {"updates": 0, "other": 0, "negative": 0, "unreadable": 0}
        with self._errors():
            cursor = self._client.get_threat_updates(
                self._group,
                start_time=start,
                page_size=PAGE_SIZE,
                fields=FBThreatExchangeIndicatorRecord.te_threat_updates_fields(),
                types=(PDQ_TYPE,),
                decode_fn=ThreatUpdateJSON,
            )
        replace = not fresh  # the first page starts the list afresh (an empty group too)
        while not cursor.done:
            with self._errors():
                batch: list[ThreatUpdateJSON] = cursor.next()  # type: ignore[no-untyped-call] # unannotated
                upserts, deletes, highest = self._read(batch, highest, counts)
            done = {"update_time": highest, "last_fetch_time": began}
            if not cursor.done:
                yield Delta({**done, "page": self._client.page_id(cursor.next_url)}, upserts, deletes, replace)
            elif replace or checkpoint is None or done != dict(checkpoint):
                yield Delta(done, upserts, deletes, replace)
            replace = False
        log.info(
            "list %r: %d ThreatExchange updates read; %d of other types than HASH_PDQ not loaded; "
            "%d PDQ indicators only ever called NON_MALICIOUS not enforced; %d updates unreadable, skipped",
            self.spec.name,
            counts["updates"],
            counts["other"],
            counts["negative"],
            counts["unreadable"],
        )

    def _read(
        self, batch: list[ThreatUpdateJSON], highest: int, counts: dict[str, int]
    ) -> tuple[dict[str, Entry], frozenset[str], int]:
        upserts: dict[str, Entry] = {}
        deletes: set[str] = set()
        for update in batch:
            counts["updates"] += 1
            try:
                when, key, entry = self._entry(update, counts)
            except (KeyError, TypeError, ValueError, AttributeError):
                counts["unreadable"] += 1  # skipped: one bad update must not stop every later one
                continue
            highest = max(highest, when)
            if key is None:
                continue
            if entry is None:
                deletes.add(key)
                upserts.pop(key, None)
            else:
                deletes.discard(key)
                upserts[key] = entry
        return upserts, frozenset(deletes), highest

    def _entry(self, update: ThreatUpdateJSON, counts: dict[str, int]) -> tuple[int, str | None, Entry | None]:
        """``(last_updated, key, entry)`` of one update: key None if not PDQ, entry None for a tombstone."""
        when = update.time
        if update.threat_type != PDQ_TYPE:
            counts["other"] += 1
            return when, None, None
        indicator = update.indicator.strip()
        key = f"{PDQ_TYPE}:{indicator.lower()}"
        record = FBThreatExchangeIndicatorRecord.from_threatexchange_json(self._client.app_id, update)
        opinions = record.opinions if record is not None else []
        if all(o.category is SignalOpinionCategory.NEGATIVE_CLASS for o in opinions):
            counts["negative"] += bool(opinions)
            return when, key, None
        meta = {
            "source": "threatexchange",
            "privacy_group": str(self._group),
            "indicator_id": str(update.raw_json.get("id", "")),
            "last_updated": str(when),
            "opinions": ",".join(sorted(f"{o.owner_app_id}:{o.category.name.lower()}" for o in opinions)),
            "tags": ",".join(sorted({tag for o in opinions for tag in o.tags})),
        }
        return when, key, ("pdq", indicator, meta)

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """``http.client_errors``, saying what a refusal or a 500 most likely means on ThreatExchange."""
        try:
            with http.client_errors(self.spec.where, self.context.http_timeout, SHAPE):
                yield
        except RetryLater:
            raise
        except BlocklistError as exc:
            if exc.reason.startswith(("HTTP 400", "HTTP 401", "HTTP 403")):
                hint = f"ThreatExchange refused the token in ${self._token_env} for privacy group {self._group}"
            elif exc.reason.startswith("HTTP 500"):
                hint = f"ThreatExchange answers 500 when privacy group {self._group} has no /threat_updates"
            else:
                raise
            raise BlocklistError(self.spec.where, f"{exc.reason}: {hint}") from None


class _Client(ThreatExchangeAPI):
    """``ThreatExchangeAPI`` whose requests go through one session held to livesafe's limits (module docstring)."""

    def __init__(self, token: str, base_url: str, where: str, context: SourceContext) -> None:
        super().__init__(token, endpoint_override=base_url)
        parts = urllib.parse.urlsplit(base_url)
        self._origin = f"{parts.scheme}://{parts.netloc}/"  # where paging.next may point (any API version)
        self._where = where
        self._context = context

    def _get_session(self) -> requests.Session:
        session = requests.Session()  # the client's own adds only its retrying adapter, replaced here
        return http.guard(session, self._origin, self._where, self._context)

    def get_json_from_url(
        self, url: str, params: Mapping[str, Any] | None = None, *, json_obj_hook: Callable[..., Any] | None = None
    ) -> Any:
        if not url.startswith(self._origin):
            raise BlocklistError(self._where, "paging.next leaves the configured host; refused (it carries the token)")
        with self._get_session() as session:
            return session.get(url, params=dict(params or {})).json(object_hook=json_obj_hook)

    def page_id(self, url: str | None) -> str:
        """A short id of a next link without its access token: what the checkpoint may keep of it."""
        parts = urllib.parse.urlsplit(url or "")
        query = [(k, v) for k, v in urllib.parse.parse_qsl(parts.query) if k != "access_token"]
        kept = urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))
        return hashlib.sha256(kept.encode()).hexdigest()[:16]

"""StopNCII.org's hash API (JSON REST) as a list: the PDQ hashes people submitted, read as deltas by time.

The HTTP and JSON work is python-threatexchange's ``StopNCIIAPI`` (its
``FetchHashes`` call, function and subscription key headers, record
parsing), the client HMA uses.  It takes a base URL already
(``base_url_override``: ``url`` in config, a loopback server in tests); only
its session (60 s timeout, urllib3 retries that sleep out a 429 inside the
call) is held to livesafe's limits by ``http.guard``, in ``_Client``.
``fetch_hashes`` is called page by page rather than ``fetch_hashes_iter``,
which cannot resume from a saved ``nextPageToken``.

The checkpoint is the API's own: the ``startTimestamp`` the walk began at and
the ``nextPageToken`` to go on with; when the walk ends, its last page's
``nextSetTimestamp`` becomes the next ``startTimestamp`` (as
threatexchange's ``StopNCIICheckpoint``).  Tokens are not valid for long, so
one saved more than ``TOKEN_SECONDS`` ago restarts its walk.

A record is keyed ``signalType:hashValue``, its identity in the API (a later
record of the same pair replaces it).  ``ImagePDQ`` records become ``pdq``
entries with their case numbers, status and CSP feedback as metadata; a
record whose status is ``Withdrawn`` or ``Deleted`` is a tombstone.
``VideoMD5`` records become ``md5`` rows the same way, but a video MD5
matches only a byte-identical file, never a re-encoded live stream: the list
counts them as unmatchable (the source's status shows how many, each load
warns) and never indexes them.  Other types are not loaded; each fetch logs
how many.  A record the client cannot parse is dropped (and logged) by the
client itself.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from typing import Any

import requests
from threatexchange.exchanges.clients.stopncii.api import (
    FetchHashesResponse,
    StopNCIIAPI,
    StopNCIICaseStatus,
    StopNCIICSPFeedbackValue,
    StopNCIIEndpoint,
    StopNCIIHashRecord,
    StopNCIISignalType,
)

from livesafe.lists.model import BlocklistError, ListSpec
from livesafe.lists.sources import http
from livesafe.lists.sources.base import SourceContext
from livesafe.lists.sources.delta import Delta, DeltaSource
from livesafe.lists.sources.state import Entry

log = logging.getLogger(__name__)

TOKEN_SECONDS = 3600  # a nextPageToken older than this is not resumed ("not valid over long periods of time")
MAX_PAGE_SIZE = 1000
GONE = (StopNCIICaseStatus.Withdrawn, StopNCIICaseStatus.Deleted)
SIGNALS = {StopNCIISignalType.ImagePDQ: "pdq", StopNCIISignalType.VideoMD5: "md5"}


class StopNciiSource(DeltaSource):
    KIND = "stopncii"
    OPTIONS = frozenset({"key_env", "subscription_key_env", "page_size"})

    def __init__(self, spec: ListSpec, context: SourceContext) -> None:
        super().__init__(spec, context)
        self._key_envs = f"${self.option('key_env')} / ${self.option('subscription_key_env')}"
        function_key, subscription_key = self.secret("key_env"), self.secret("subscription_key_env")
        assert function_key is not None and subscription_key is not None  # required secrets are never None
        if spec.url and not spec.url.startswith(("http://", "https://")):
            raise ValueError(f"list {spec.name!r}: a stopncii source's url must be http(s)://, got {spec.url!r}")
        page_size = self.option("page_size", 800)  # the client's default
        if isinstance(page_size, bool) or not isinstance(page_size, int) or not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"list {spec.name!r}: page_size must be 1..{MAX_PAGE_SIZE} records, got {page_size!r}")
        self._page_size = page_size
        self._client = _Client(subscription_key, function_key, spec.url.rstrip("/") or None, spec.where, context)

    def deltas(self, checkpoint: Mapping[str, Any] | None) -> Iterator[Delta]:
        now = int(time.time())
        start = int(checkpoint["startTimestamp"]) if checkpoint else StopNCIIAPI.DEFAULT_START_TIME
        token, token_at = "", now
        if checkpoint and checkpoint.get("nextPageToken") and now - int(checkpoint["tokenAt"]) <= TOKEN_SECONDS:
            token, token_at = str(checkpoint["nextPageToken"]), int(checkpoint["tokenAt"])
        counts = {"records": 0, "other": 0}
        while True:
            page = self._page(start, token)
            upserts, deletes = _read(page.hashRecords, counts)
            if page.hasMoreRecords:
                if not page.nextPageToken:
                    raise BlocklistError(self.spec.where, "hasMoreRecords without a nextPageToken: cannot go on")
                token = page.nextPageToken
                yield Delta({"startTimestamp": start, "nextPageToken": token, "tokenAt": token_at}, upserts, deletes)
                continue
            done = {"startTimestamp": page.nextSetTimestamp}
            if checkpoint is None or done != dict(checkpoint):  # else nothing newer than the last walk's end
                yield Delta(done, upserts, deletes)
            break
        log.info(
            "list %r: %d StopNCII records read; %d records of other types not loaded",
            self.spec.name,
            counts["records"],
            counts["other"],
        )

    def _page(self, start: int, token: str) -> FetchHashesResponse:
        try:
            with http.client_errors(self.spec.where, self.context.http_timeout, "StopNCII's FetchHashes JSON"):
                return self._client.fetch_hashes(page_size=self._page_size, start_timestamp=start, next_page=token)
        except BlocklistError as exc:
            if not exc.reason.startswith(("HTTP 401", "HTTP 403")):
                raise
            raise BlocklistError(
                self.spec.where, f"{exc.reason}: StopNCII refused the keys in {self._key_envs}"
            ) from None


def _read(records: list[StopNCIIHashRecord], counts: dict[str, int]) -> tuple[dict[str, Entry], frozenset[str]]:
    upserts: dict[str, Entry] = {}
    deletes: set[str] = set()
    for record in records:
        counts["records"] += 1
        key = f"{record.signalType.value}:{record.hashValue}"
        signal = SIGNALS.get(record.signalType)
        if signal is None:
            counts["other"] += 1
            continue
        if record.hashStatus in GONE:
            deletes.add(key)
            upserts.pop(key, None)
            continue
        deletes.discard(key)
        feedback = sorted(
            f"{'+' if f.feedbackValue is StopNCIICSPFeedbackValue.Blocked else '-'}{f.source}"
            for f in record.CSPFeedbacks
            if f.feedbackValue in (StopNCIICSPFeedbackValue.Blocked, StopNCIICSPFeedbackValue.NotBlocked)
        )
        upserts[key] = (
            signal,
            record.hashValue.strip(),
            {
                "source": "stopncii",
                "signal_type": record.signalType.value,
                "hash_status": record.hashStatus.value,
                "case_numbers": ",".join(sorted(c for c, s in record.caseNumbers.items() if s not in GONE)),
                "last_modified": str(record.lastModtimestamp),
                "csp_feedback": ",".join(feedback),
            },
        )
    return upserts, frozenset(deletes)


class _Client(StopNCIIAPI):
    """``StopNCIIAPI`` with its sessions held to livesafe's limits (see the module docstring)."""

    def __init__(
        self, subscription_key: str, function_key: str, base_url: str | None, where: str, context: SourceContext
    ) -> None:
        super().__init__(subscription_key, function_key, base_url_override=base_url)
        self._where = where
        self._context = context

    def _get_session(self, endpoint: StopNCIIEndpoint) -> requests.Session:
        session = super()._get_session(endpoint)  # its key headers, then our adapter and checks in place of retries
        return http.guard(session, self._base_url, self._where, self._context)

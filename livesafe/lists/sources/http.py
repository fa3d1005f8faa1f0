"""One careful HTTP GET for list sources: bounded in size and time, errors said in one line.

A list download is untrusted input from the network: it may never end, be
2 GB, stall between bytes or answer 500 for an hour.  ``get`` reads at most
``max_bytes`` (then refuses the whole response), gives up after ``timeout``
seconds without a byte, and turns every failure into a ``BlocklistError`` that
names the source, so the caller keeps its previous list.  429 and 503 become
``RetryLater`` with the server's ``Retry-After`` (seconds or an HTTP date).
"""

from __future__ import annotations

import contextlib
import email.utils
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from xml.etree import ElementTree

import requests
from threatexchange.exchanges.clients.utils.common import TimeoutHTTPAdapter

from livesafe.lists.model import BlocklistError
from livesafe.lists.sources.base import RetryLater, SourceContext

DEFAULT_RETRY_SECONDS = 30.0
MAX_RETRY_SECONDS = 3600.0


@dataclass(frozen=True)
class Response:
    status: int
    headers: Mapping[str, str]
    body: bytes


def get(
    url: str,
    *,
    where: str,
    timeout: float,
    max_bytes: int,
    headers: Mapping[str, str] | None = None,
    session: requests.Session | None = None,
) -> Response:
    """GET ``url``: a 2xx/304 response, or BlocklistError / RetryLater saying why not."""
    http = session or requests
    try:
        with http.get(url, headers=dict(headers or {}), timeout=timeout, stream=True, allow_redirects=True) as reply:
            return Response(reply.status_code, dict(reply.headers), check(reply, where, max_bytes))
    except requests.exceptions.RequestException as exc:
        raise failure(exc, where, timeout) from None


def check(reply: requests.Response, where: str, max_bytes: int) -> bytes:
    """The body of a streamed response read within ``max_bytes``, or BlocklistError / RetryLater saying why not."""
    if reply.status_code in (429, 503):
        seconds = retry_after(reply.headers.get("Retry-After"))
        raise RetryLater(where, f"HTTP {reply.status_code} {reply.reason}", seconds)
    if reply.status_code >= 400:
        raise BlocklistError(where, f"HTTP {reply.status_code} {reply.reason}")
    declared = reply.headers.get("Content-Length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise BlocklistError(where, f"response of {int(declared)} bytes is over the {max_bytes}-byte limit")
    chunks: list[bytes] = []
    size = 0
    for chunk in reply.iter_content(chunk_size=1 << 16):
        size += len(chunk)
        if size > max_bytes:
            raise BlocklistError(where, f"response is over the {max_bytes}-byte limit; refused")
        chunks.append(chunk)
    return b"".join(chunks)


def guard(session: requests.Session, prefix: str, where: str, context: SourceContext) -> requests.Session:
    """``session`` with every request under ``prefix`` held to ``get``'s rules: for an exchange's own client.

    The threatexchange clients build their sessions with a 60 s timeout and
    urllib3 retries that sleep out a 429's ``Retry-After`` inside the call;
    here the adapter for ``prefix`` has the context's ``http_timeout`` and no
    retries (a failed poll is retried on the next poll, or after
    ``RetryLater``), and a response hook reads each body within
    ``max_bytes`` and turns an HTTP error into BlocklistError / RetryLater
    before the client sees it.
    """
    adapter = TimeoutHTTPAdapter(timeout=context.http_timeout)  # type: ignore[no-untyped-call] # unannotated
    session.mount(prefix, adapter)
    max_bytes = context.max_bytes

    def checked(reply: requests.Response, *args: object, **kwargs: object) -> requests.Response:
        try:
            reply._content = check(reply, where, max_bytes)  # what ``reply.content`` then answers
        finally:
            reply.close()
        return reply

    session.hooks["response"].append(checked)
    return session


def failure(exc: requests.exceptions.RequestException, where: str, timeout: float) -> BlocklistError:
    """A requests failure as one line naming the source (no URL query, no headers: nothing secret)."""
    if isinstance(exc, requests.exceptions.Timeout):
        return BlocklistError(where, f"no answer within {timeout:g} s")
    return BlocklistError(where, f"cannot fetch: {_reason(exc)}")


@contextlib.contextmanager
def client_errors(where: str, timeout: float, shape: str) -> Iterator[None]:
    """Whatever an exchange client's call raises, as one BlocklistError line (HTTP errors come from ``guard``)."""
    try:
        yield
    except BlocklistError:
        raise
    except requests.exceptions.JSONDecodeError as exc:
        raise BlocklistError(where, f"malformed JSON: {exc}") from None
    except ElementTree.ParseError as exc:
        raise BlocklistError(where, f"malformed XML: {exc}") from None
    except requests.exceptions.RequestException as exc:
        raise failure(exc, where, timeout) from None
    except Exception as exc:  # noqa: BLE001 - the clients raise bare Exception (and worse) on a shape they cannot parse
        cause = exc.__cause__ or exc.__context__
        detail = type(exc).__name__ + (f" from {type(cause).__name__}: {cause}" if cause is not None else f": {exc}")
        raise BlocklistError(where, f"malformed response, not {shape} ({detail[:160]})") from None


def retry_after(value: str | None, now: float | None = None) -> float:
    """Seconds to wait from a ``Retry-After`` header (RFC 9110 §10.2.3), within [1 s, 1 h]."""
    if not value:
        return DEFAULT_RETRY_SECONDS
    value = value.strip()
    if value.isdigit():
        seconds = float(value)
    else:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return DEFAULT_RETRY_SECONDS
        seconds = when.timestamp() - (now if now is not None else time.time())
    return min(MAX_RETRY_SECONDS, max(1.0, seconds))


def _reason(exc: Exception) -> str:
    """The innermost cause's message: requests nests them (MaxRetryError > NewConnectionError > OSError)."""
    while exc.__cause__ is not None or exc.__context__ is not None:
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    text = str(exc)
    return text.split("] ", 1)[-1] if text.startswith("[") else text

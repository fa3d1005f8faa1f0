"""A list at a URL: conditional GETs, size and truncation limits, rate limits, Ed25519 signatures, restarts."""

from __future__ import annotations

import base64
import sqlite3
from pathlib import Path

import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from list_server import ThreadedServer

from livesafe.lists import BlocklistError, ListSpec
from livesafe.lists.sources import RetryLater, SourceContext, SourceState, UrlSource

LIST_V1 = b"pdq " + b"ab" * 32 + b"\n"
LIST_V2 = LIST_V1 + b"pdq " + b"cd" * 32 + b"\n"
SECRET = "token-that-must-never-be-seen-9f2c"


class Lists(ThreadedServer):
    """Serves ``body`` at /list.txt with an ETag, ``signature`` at /list.txt.sig; ``mode`` breaks it on purpose."""

    def __init__(self, body: bytes = LIST_V1) -> None:
        super().__init__(self._answer)
        self.body = body
        self.signature: bytes | None = None
        self.mode = "ok"

    @property
    def url(self) -> str:
        return f"{self.base}/list.txt"

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        if request.path == "/list.txt.sig":
            if self.signature is None:
                return web.Response(status=404)
            return web.Response(body=self.signature)
        etag = f'"{len(self.body)}-{hash(self.body) & 0xFFFF:x}"'
        if self.mode == "rate-limited":
            return web.Response(status=429, headers={"Retry-After": "120"})
        if self.mode == "error":
            return web.Response(status=500, text="internal error")
        if self.mode == "endless":  # chunked, no length: 64 KiB pieces until the client gives up
            response = web.StreamResponse()
            await response.prepare(request)
            for _ in range(4096):  # 256 MiB at most: bounded even if the client never stopped
                try:
                    await response.write(b"pdq " + b"ef" * 32 + b"\n" * (65536 - 68))
                except ConnectionError:
                    break
            return response
        if self.mode == "truncated":  # promises the whole list, sends half, hangs up
            response = web.StreamResponse(headers={"Content-Length": str(len(self.body))})
            await response.prepare(request)
            await response.write(self.body[: len(self.body) // 2])
            assert request.transport is not None
            request.transport.close()
            return response
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers={"ETag": etag})
        return web.Response(body=self.body, headers={"ETag": etag})


def source(
    url: str, state: SourceState | None = None, env: dict[str, str] | None = None, **options: object
) -> UrlSource:
    spec = ListSpec(kind="url", url=url, name="remote", options=options)
    return UrlSource(spec, SourceContext(state=state or SourceState(), env=env or {}, max_bytes=1 << 20))


def keypair() -> tuple[Ed25519PrivateKey, str]:
    private = Ed25519PrivateKey.generate()
    pem = private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, pem.decode()


def test_a_conditional_get_answers_unchanged_and_a_new_body_is_a_new_list() -> None:
    with Lists().running() as server:
        remote = source(server.url)
        first = remote.fetch(False)
        assert first is not None and len(first) == 1
        assert remote.fetch(False) is None, "an unchanged list (304) is not a new version"
        assert "If-None-Match" in server.requests[-1][1]
        assert not remote.still_failing
        server.body = LIST_V2
        second = remote.fetch(False)
        assert second is not None and len(second) == 2 and second.version != first.version


@pytest.mark.parametrize(
    ("mode", "says"),
    [
        ("error", "HTTP 500"),
        ("endless", "over the 1048576-byte limit"),
        ("truncated", "cannot fetch"),
    ],
)
def test_a_failed_oversized_or_truncated_download_is_an_error_naming_the_source(mode: str, says: str) -> None:
    with Lists().running() as server:
        remote = source(server.url)
        assert remote.fetch(False) is not None
        server.mode = mode
        with pytest.raises(BlocklistError) as caught:
            remote.fetch(False)
        assert says in str(caught.value) and server.url in str(caught.value)


def test_a_malformed_list_is_refused_with_its_line() -> None:
    with Lists(LIST_V1 + b"pdq 1234\n").running() as server:
        with pytest.raises(BlocklistError, match=r"list.txt:2: pdq hash must be 64 hex digits"):
            source(server.url).fetch(False)
        assert len(source(server.url).fetch(True) or []) == 1, "skip_bad_lines loads the rest"


def test_rate_limited_is_retry_later_with_the_servers_delay() -> None:
    with Lists().running() as server:
        server.mode = "rate-limited"
        with pytest.raises(RetryLater) as caught:
            source(server.url).fetch(False)
        assert caught.value.seconds == 120


def test_the_token_is_sent_from_the_environment_and_never_shown() -> None:
    with Lists().running() as server:
        remote = source(server.url, env={"PARTNER_TOKEN": SECRET}, token_env="PARTNER_TOKEN")
        remote.fetch(False)
        assert server.requests[-1][1]["Authorization"] == f"Bearer {SECRET}"
        server.mode = "error"
        with pytest.raises(BlocklistError) as caught:
            remote.fetch(False)
        assert SECRET not in str(caught.value)
    with pytest.raises(ValueError, match="'PARTNER_TOKEN'"):
        source("http://127.0.0.1:9/list.txt", token_env="PARTNER_TOKEN")  # set nowhere: an error at start


@pytest.mark.parametrize("encoding", ["pem", "hex", "base64"])
def test_a_signed_list_is_accepted_only_with_a_good_signature(encoding: str) -> None:
    private, pem = keypair()
    raw = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    key = {"pem": pem, "hex": raw.hex(), "base64": base64.b64encode(raw).decode()}[encoding]
    with Lists().running() as server:
        remote = source(server.url, public_key=key)
        with pytest.raises(BlocklistError, match="signature .*HTTP 404"):
            remote.fetch(False)  # unsigned: refused
        server.signature = private.sign(LIST_V1)
        assert remote.fetch(False) is not None
        server.body, server.signature = LIST_V2, private.sign(LIST_V1)  # a new list, the old signature
        with pytest.raises(BlocklistError, match="bad signature"):
            remote.fetch(False)
        server.signature = Ed25519PrivateKey.generate().sign(LIST_V2)  # signed, by someone else
        with pytest.raises(BlocklistError, match="bad signature"):
            remote.fetch(False)
        server.signature = private.sign(LIST_V2).hex().encode()  # hex on the wire is fine too
        updated = remote.fetch(False)
        assert updated is not None and len(updated) == 2


def test_a_signature_url_option_is_where_the_signature_is_read() -> None:
    private, pem = keypair()
    with Lists().running() as server:
        server.signature = private.sign(LIST_V1)
        remote = source(server.url, public_key=pem, signature_url=f"{server.base}/list.txt.sig?detached=1")
        assert remote.fetch(False) is not None
        assert server.requests[-1][0] == "/list.txt.sig?detached=1"


def test_a_restart_while_the_url_is_down_enforces_the_last_verified_copy(tmp_path: Path) -> None:
    private, pem = keypair()
    database = tmp_path / "events.db"
    with Lists().running() as server:
        server.signature = private.sign(LIST_V1)
        first = source(server.url, SourceState(database), public_key=pem).fetch(False)
        assert first is not None
    # The server is gone; a new process reads what the first kept.
    restarted = source(server.url, SourceState(database), public_key=pem)
    with pytest.raises(BlocklistError, match="cannot fetch"):
        restarted.fetch(False)
    kept = restarted.restore(False)
    assert kept is not None and len(kept) == 1 and kept.version == first.version
    # Someone edits the kept copy on disk: it no longer verifies, and is refused.
    with sqlite3.connect(database) as db:
        db.execute("UPDATE list_source_copies SET body = ?", (LIST_V2,))
    with pytest.raises(BlocklistError, match="bad signature"):
        source(server.url, SourceState(database), public_key=pem).restore(False)


def test_a_bad_public_key_or_url_is_an_error_at_start() -> None:
    with pytest.raises(ValueError, match="public_key is not an Ed25519 public key"):
        source("http://127.0.0.1:9/list.txt", public_key="not a key")
    with pytest.raises(ValueError, match="needs an http"):
        source("ftp://127.0.0.1/list.txt")
    with pytest.raises(ValueError, match="no option 'publickey'"):
        source("http://127.0.0.1:9/list.txt", publickey="typo")

"""A list file served over HTTP(S), polled with ETag / If-Modified-Since, optionally signed.

A download replaces the list only once it is whole, parses, and (when the
spec has a ``public_key``) carries a valid detached Ed25519 signature: a bad
or partial download, an unsigned or badly signed update, is refused and
reported, and the previous version stays in force.  The signature is fetched
from ``signature_url`` (default: the list's URL + ``.sig``) and may be raw
64 bytes, hex or base64; the key is the raw 32-byte public key in hex or
base64, or a PEM ``PUBLIC KEY``.  The last good download is kept in the state
store, so a restart while the URL is down still enforces it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from livesafe.lists.loader import parse_list
from livesafe.lists.model import Blocklist, BlocklistError, ListSpec
from livesafe.lists.sources import http
from livesafe.lists.sources.base import RetryLater, Source, SourceContext


class UrlSource(Source):
    KIND = "url"
    OPTIONS = frozenset({"public_key", "signature_url", "token_env"})
    DEFAULT_POLL_SECONDS = 60.0

    def __init__(self, spec: ListSpec, context: SourceContext) -> None:
        super().__init__(spec, context)
        if not spec.url.startswith(("http://", "https://")):
            raise ValueError(f"list {spec.name!r}: a url source needs an http(s):// url, got {spec.url!r}")
        key = self.option("public_key")
        self._key = load_public_key(key, spec.name) if key is not None else None
        self._signature_url = str(self.option("signature_url", spec.url + ".sig"))
        token = self.secret("token_env", required=False)
        self._auth = {"Authorization": f"Bearer {token}"} if token else {}
        self._validators: dict[str, str] = {}  # ETag / Last-Modified of the version in force

    def fetch(self, skip_bad_lines: bool) -> Blocklist | None:
        headers = dict(self._auth)
        if "etag" in self._validators:
            headers["If-None-Match"] = self._validators["etag"]
        if "last_modified" in self._validators:
            headers["If-Modified-Since"] = self._validators["last_modified"]
        reply = self._get(self.spec.url, headers)
        if reply.status == 304:
            return None
        signature = self._verify(reply.body)
        blocklist = parse_list(self.spec, reply.body, skip_bad_lines)
        validators = {
            name: value
            for name, value in (
                ("etag", reply.headers.get("ETag")),
                ("last_modified", reply.headers.get("Last-Modified")),
            )
            if value
        }
        self.context.state.keep_copy(self.spec.name, reply.body, {**validators, "signature": signature})
        self._validators = validators
        return blocklist

    def restore(self, skip_bad_lines: bool) -> Blocklist | None:
        kept = self.context.state.copy(self.spec.name)
        if kept is None:
            return None
        body, meta = kept
        if self._key is not None:  # the key may have changed since: the copy must still verify
            self._check_signature(body, _decode_signature(str(meta.get("signature") or ""), self.spec.where))
        blocklist = parse_list(self.spec, body, skip_bad_lines)
        self._validators = {k: str(v) for k, v in meta.items() if k in ("etag", "last_modified") and v}
        return blocklist

    def _get(self, url: str, headers: dict[str, str]) -> http.Response:
        return http.get(
            url,
            where=self.spec.where,
            timeout=self.context.http_timeout,
            max_bytes=self.context.max_bytes,
            headers=headers,
        )

    def _verify(self, body: bytes) -> str | None:
        """The signature (hex) that verifies ``body``, None when unsigned lists are accepted; raises otherwise."""
        if self._key is None:
            return None
        try:
            reply = self._get(self._signature_url, self._auth)
        except RetryLater:
            raise
        except BlocklistError as exc:  # said as the signature's problem: the list itself downloaded fine
            raise BlocklistError(self.spec.where, f"signature {self._signature_url}: {exc.reason}; refused") from None
        if reply.status != 200:
            raise BlocklistError(self.spec.where, f"signature {self._signature_url}: HTTP {reply.status}; refused")
        signature = _decode_signature(reply.body.decode("ascii", "replace").strip(), self._signature_url, reply.body)
        self._check_signature(body, signature)
        return signature.hex()

    def _check_signature(self, body: bytes, signature: bytes) -> None:
        assert self._key is not None
        try:
            self._key.verify(signature, body)
        except InvalidSignature:
            digest = hashlib.sha256(body).hexdigest()[:16]
            raise BlocklistError(
                self.spec.where, f"bad signature: the list (sha256 {digest}…) was not signed by the configured key"
            ) from None


def load_public_key(value: Any, name: str) -> Ed25519PublicKey:
    """An Ed25519 public key from config: PEM, or the raw 32 bytes in hex or base64."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"list {name!r}: public_key must be an Ed25519 public key (PEM, hex or base64)")
    text = value.strip()
    try:
        if text.startswith("-----BEGIN"):
            key = serialization.load_pem_public_key(text.encode())
            if not isinstance(key, Ed25519PublicKey):
                raise ValueError("not an Ed25519 key")
            return key
        raw = _decode_bytes(text, 32)
        if raw is None:
            raise ValueError("not 32 bytes of hex or base64")
        return Ed25519PublicKey.from_public_bytes(raw)
    except ValueError as exc:
        raise ValueError(f"list {name!r}: public_key is not an Ed25519 public key ({exc})") from None


def _decode_signature(text: str, where: str, raw: bytes | None = None) -> bytes:
    if raw is not None and len(raw) == 64:
        return raw
    signature = _decode_bytes(text, 64)
    if signature is None:
        raise BlocklistError(where, "signature is not 64 bytes (raw, hex or base64): refused")
    return signature


def _decode_bytes(text: str, size: int) -> bytes | None:
    for decode in (bytes.fromhex, lambda t: base64.b64decode(t, validate=True)):
        try:
            value = decode(text)
        except (ValueError, binascii.Error):
            continue
        if len(value) == size:
            return value
    return None

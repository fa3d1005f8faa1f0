"""Nodes sign what they ask of each other: HMAC-SHA256 over the request, with a shared secret.

A signature covers the method, the path and query, the *receiving* node's name,
a timestamp, a nonce and the body's digest, so it is good for one request to
one node within ``MAX_SKEW_SECONDS``: a forged request fails the HMAC, and a
replayed one is refused by nonce (each node remembers the nonces it accepted
for as long as their timestamps are valid).  Compared in constant time; the
secret is never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict

HEADER = "X-Livesafe-Cluster"
PEER = "livesafe.cluster.peer"  # request key: the node a verified inter-node request came from
MAX_SKEW_SECONDS = 30.0
_MAX_NONCES = 200_000  # bounded: at ~1000 inter-node requests/s, a minute of them


class ClusterAuthError(Exception):
    """An inter-node request that is not signed, forged, stale or replayed (message says which)."""


def _digest(secret: bytes, method: str, path: str, node: str, ts: str, nonce: str, body: bytes) -> str:
    message = "\n".join((method.upper(), path, node, ts, nonce, hashlib.sha256(body).hexdigest()))
    return hmac.new(secret, message.encode(), hashlib.sha256).hexdigest()


class ClusterAuth:
    """Signs requests to other nodes and checks the ones this node (``node``) receives."""

    def __init__(self, secret: str, node: str) -> None:
        self._secret = secret.encode()
        self._node = node
        self._nonces: OrderedDict[str, float] = OrderedDict()  # nonce -> when its timestamp expires

    def __repr__(self) -> str:
        return f"ClusterAuth(node={self._node!r})"  # never the secret

    def sign(self, method: str, path: str, to_node: str, body: bytes = b"", now: float | None = None) -> dict[str, str]:
        """Headers that make this request acceptable to ``to_node`` (``path`` with its query string)."""
        ts = f"{time.time() if now is None else now:.3f}"
        nonce = secrets.token_hex(16)
        signature = _digest(self._secret, method, path, to_node, ts, nonce, body)
        return {HEADER: f"v1 from={self._node} ts={ts} nonce={nonce} sig={signature}"}

    def verify(self, method: str, path: str, header: str | None, body: bytes = b"", now: float | None = None) -> str:
        """The sending node's name, if ``header`` signs this request to us; raises ClusterAuthError otherwise."""
        if not header:
            raise ClusterAuthError(f"inter-node request without {HEADER}")
        version, _, rest = header.partition(" ")
        fields = dict(item.partition("=")[::2] for item in rest.split(" ") if "=" in item)
        if version != "v1" or not {"from", "ts", "nonce", "sig"} <= fields.keys():
            raise ClusterAuthError(f"malformed {HEADER} header")
        now = time.time() if now is None else now
        try:
            ts = float(fields["ts"])
        except ValueError:
            raise ClusterAuthError(f"malformed {HEADER} header") from None
        expected = _digest(self._secret, method, path, self._node, fields["ts"], fields["nonce"], body)
        if not hmac.compare_digest(expected.encode(), fields["sig"].encode()):
            raise ClusterAuthError("inter-node signature does not match (wrong secret, or not for this node)")
        if abs(now - ts) > MAX_SKEW_SECONDS:
            raise ClusterAuthError(f"inter-node request is stale (timestamp {now - ts:+.0f} s off)")
        while self._nonces and (next(iter(self._nonces.values())) < now or len(self._nonces) >= _MAX_NONCES):
            self._nonces.popitem(last=False)
        if fields["nonce"] in self._nonces:
            raise ClusterAuthError("inter-node request replayed")
        self._nonces[fields["nonce"]] = ts + MAX_SKEW_SECONDS
        return fields["from"]

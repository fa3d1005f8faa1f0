"""Signed access tokens (JWT): the platform mints them, the relay only verifies them.

Why tokens: a platform with many broadcasters cannot edit the config and
restart for each new stream; it signs ``{stream, role, exp}`` with a secret
(HS256) or an Ed25519 key (EdDSA) and the relay checks the signature.

``stream`` is one exact stream name, never a pattern: a token is a bearer
credential (the player page carries it in its URL), and a leaked wildcard view
token would open every stream, children's included.  Minting one token per
stream costs the platform nothing; the HTTP hook is there for anything richer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

ROLES = ("publish", "view")


class TokenError(Exception):
    """Why a presented token was refused; ``status`` 401 (not a valid token) or 403 (valid, not for this)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class JwtSettings:
    """``[auth.jwt]``: at least one of ``secret`` (HS256) and ``public_key`` (EdDSA, PEM)."""

    secret: str | None = field(default=None, repr=False)
    public_key: str | None = field(default=None, repr=False)  # PEM text (read from a file by the config loader)
    issuer: str | None = None
    audience: str | None = None
    leeway_seconds: float = 0.0

    def __post_init__(self) -> None:
        if self.secret is None and self.public_key is None:
            raise ValueError("auth.jwt: give secret_env (HS256) or public_key (EdDSA), or both")
        if self.secret is not None and len(self.secret.encode()) < 32:
            raise ValueError("auth.jwt: the HS256 secret must be at least 32 bytes (RFC 7518 section 3.2)")
        if not 0 <= self.leeway_seconds <= 300:
            raise ValueError("auth.jwt.leeway_seconds: expected 0-300")


@dataclass(frozen=True)
class Claims:
    stream: str
    role: str
    profile: str | None  # the policy profile the platform chose for this stream, if it chose one


def looks_like_jwt(token: str) -> bool:
    """Three dot-separated parts: the only shape a JWS compact token has (a stream key rarely does)."""
    return token.count(".") == 2


class TokenVerifier:
    """Checks a token's signature, expiry, issuer and audience, then its stream and role."""

    def __init__(self, settings: JwtSettings) -> None:
        self._settings = settings
        self._keys: dict[str, Any] = {}
        if settings.secret is not None:
            self._keys["HS256"] = settings.secret
        if settings.public_key is not None:
            try:
                key = serialization.load_pem_public_key(settings.public_key.encode())
            except (ValueError, TypeError) as exc:
                raise ValueError(f"auth.jwt.public_key: not a public key in PEM ({exc})") from None
            if not isinstance(key, Ed25519PublicKey):
                raise ValueError("auth.jwt.public_key: expected an Ed25519 public key (EdDSA)")
            self._keys["EdDSA"] = key

    def verify(self, token: str, stream_id: str, role: str) -> Claims:
        claims = self._decode(token)
        stream, granted = claims.get("stream"), claims.get("role")
        profile = claims.get("profile")
        if not isinstance(stream, str) or granted not in ROLES or not (profile is None or isinstance(profile, str)):
            raise TokenError(401, "token: claims 'stream' (a name) and 'role' (publish or view) are required")
        if stream != stream_id:
            raise TokenError(403, "this token is for another stream")
        if granted != role:
            raise TokenError(403, f"this token may {granted}, not {role}")
        return Claims(stream, granted, profile)

    def _decode(self, token: str) -> dict[str, Any]:
        """The verified claims; the algorithm is the one configured for the key, never the token's choice."""
        settings = self._settings
        try:
            algorithm = jwt.get_unverified_header(token).get("alg")
            key = self._keys.get(algorithm) if isinstance(algorithm, str) else None
            if key is None or not isinstance(algorithm, str):
                raise TokenError(401, f"token: algorithm {algorithm!r} is not accepted here")
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                issuer=settings.issuer,
                audience=settings.audience,
                leeway=settings.leeway_seconds,
                options={"require": ["exp", "stream", "role"], "verify_aud": settings.audience is not None},
            )
        except jwt.ExpiredSignatureError:
            raise TokenError(401, "token: expired") from None
        except jwt.InvalidTokenError as exc:
            raise TokenError(401, f"token: {exc}") from None
        return claims

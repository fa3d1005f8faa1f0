"""Settings of the moderation side: the store, who may read and act, where webhooks go.

Tokens and webhook secrets live here and never in a ``repr``; tokens are
compared in constant time (:meth:`ModerationSettings.principal`).
"""

from __future__ import annotations

import base64
import binascii
import hmac
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from livesafe.events import Event
from livesafe.policy import SEVERITIES

ROLES = ("observer", "moderator")  # observer: read events and audit; moderator: also act


@dataclass(frozen=True)
class Principal:
    """Someone holding an API token: ``name`` is what the audit log records."""

    name: str
    role: str
    token: str = field(repr=False)

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"role {self.role!r}: expected one of {', '.join(ROLES)}")
        if len(self.token) < 16:
            raise ValueError(f"token of {self.name!r}: use at least 16 characters")

    @property
    def may_act(self) -> bool:
        return self.role == "moderator"


@dataclass(frozen=True)
class WebhookEndpoint:
    """A receiver of signed events (Standard Webhooks).

    ``categories``/``types``/``min_severity`` filter what it gets; with
    ``categories`` set, only events carrying one of them (matches and what
    moderators do about them) are sent.
    """

    url: str = field(repr=False)  # may carry credentials: shown as display_url
    secret: str = field(repr=False)
    name: str = ""
    categories: tuple[str, ...] = ()
    types: tuple[str, ...] = ()
    min_severity: str = "info"

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"webhook url {self.url!r}: expected http(s)://host/...")
        if self.min_severity not in SEVERITIES:
            raise ValueError(f"min_severity {self.min_severity!r}: expected one of {', '.join(SEVERITIES)}")
        if not self.secret:
            raise ValueError(f"webhook {self.url!r}: a secret is required (receivers must be able to verify)")
        _ = self.signing_key  # raises on a malformed whsec_ secret
        if not self.name:
            object.__setattr__(self, "name", self.display_url.split("://", 1)[1])

    @property
    def signing_key(self) -> bytes:
        """Standard Webhooks secrets are ``whsec_<base64>``; any other string is used as is."""
        if self.secret.startswith("whsec_"):
            try:
                return base64.b64decode(self.secret[len("whsec_") :], validate=True)
            except binascii.Error:
                raise ValueError("webhook secret starting whsec_ must be base64 after the prefix") from None
        return self.secret.encode()

    @property
    def display_url(self) -> str:
        """The URL without credentials or query string (those may hold secrets)."""
        parts = urlsplit(self.url)
        host = f"[{parts.hostname}]" if ":" in (parts.hostname or "") else parts.hostname or ""
        return f"{parts.scheme}://{host}{':' + str(parts.port) if parts.port else ''}{parts.path}"

    def accepts(self, event: Event) -> bool:
        if self.types and event.type not in self.types:
            return False
        if self.categories and event.category not in self.categories:
            return False
        return SEVERITIES.index(event.severity) >= SEVERITIES.index(self.min_severity)


@dataclass(frozen=True)
class ModerationSettings:
    database: str = "livesafe.db"  # SQLite file (WAL); ":memory:" keeps nothing across restarts
    retention_days: float = 30.0  # events and finished webhook deliveries
    audit_retention_days: float = 365.0
    tokens: tuple[Principal, ...] = ()
    webhooks: tuple[WebhookEndpoint, ...] = ()
    webhook_timeout_seconds: float = 5.0
    webhook_backoff_seconds: float = 1.0  # first retry; doubles each time up to the maximum
    webhook_max_backoff_seconds: float = 300.0
    webhook_give_up_hours: float = 24.0  # a delivery still failing this long after its event is marked failed
    reports_per_client: int = 3  # per client and stream within report_client_window_seconds
    report_client_window_seconds: float = 60.0
    preview: bool = False  # moderators may view a blurred greyscale thumbnail (each view audited)
    bank_max_upload_bytes: int = 64 * 2**20  # one POST to a bank (livesafe.moderation.banks_api), all files together

    def __post_init__(self) -> None:
        names = [p.name for p in self.tokens]
        if len(set(names)) != len(names):
            raise ValueError("token names must be unique")
        tokens = [p.token for p in self.tokens]
        if len(set(tokens)) != len(tokens):
            raise ValueError("two token holders share a token: give each their own (the audit log names the holder)")
        if not self.database.strip():
            raise ValueError("database: expected a file name (or ':memory:')")
        hooks = [w.name for w in self.webhooks]
        if len(set(hooks)) != len(hooks):
            raise ValueError("webhook names must be unique")
        for key in (
            "retention_days",
            "audit_retention_days",
            "webhook_timeout_seconds",
            "webhook_backoff_seconds",
            "webhook_max_backoff_seconds",
            "webhook_give_up_hours",
            "report_client_window_seconds",
        ):
            if getattr(self, key) <= 0:
                raise ValueError(f"{key} must be > 0")
        if self.reports_per_client < 1:
            raise ValueError("reports_per_client must be at least 1")
        if self.bank_max_upload_bytes < 1:
            raise ValueError("bank_max_upload_bytes must be at least 1")

    def principal(self, token: str | None) -> Principal | None:
        """The holder of ``token``; every configured token is compared, so timing says nothing."""
        found = None
        given = (token or "").encode()
        for principal in self.tokens:
            if hmac.compare_digest(given, principal.token.encode()) and token:
                found = principal
        return found
